#!/usr/bin/env bash
# bench/watch.sh: watch benchmarks, etcd then cairn in one run, with ratios.
# See bench/README.md ("Watch benchmarks") and docs/benchmarks.md ("Watch").
#
#   bench/watch.sh                 # full (~6 min idle, 10-13 min on a busy 2-core box)
#   QUICK=1 bench/watch.sh         # smoke test (~2-3 min)
#   SERVERS=cairn QUICK=1 bench/watch.sh
#
# For each server (fresh data dir, one process for all tests): one unrecorded warm-up
# put run (fills the key space), then REPEAT rounds of:
#   put-base  benchmark put, PUT_CLIENTS clients / PUT_CONNS conns, no watchers
#   slow      (see below)
#   lat-1     watchbench latency: 1 watcher on one key, LAT1_PUTS puts at LAT1_RATE/s
#   lat-10k   watchbench latency: LATN_WATCHERS watchers on one key (LATN_STREAMS streams,
#             LATN_CONNS conns), LATN_PUTS puts at LATN_RATE/s
#   idle      watchbench idle: IDLE_WATCHERS watchers on distinct keys; server VmRSS
#             before and after they are confirmed created; then the same put run
#   slow:     watchbench slow: SLOW_STALLED watchers that never read + SLOW_SLOW watchers
#             that read one response per SLOW_INTERVAL, all on the whole key space (every
#             put is theirs); the same put run with server VmRSS sampled every 0.25 s;
#             at the end every watcher drains and its events are checked for gaps
# Rounds interleave the tests so that drift hits all of them alike; the summary
# shows medians and every value.
#
# Env (defaults in brackets):
#   TESTS [put-base slow lat-1 lat-10k idle]; also idle-prefix: IDLE_WATCHERS watchers each
#                on its own prefix (range watchers) that nothing writes, and the put run
#   SERVERS [etcd cairn]  QUICK [0]  NICE [0]  REPEAT [3; QUICK 2]
#   OUT [/tmp/cairn-bench/watch-<UTC timestamp>]  ANCHOR_DIR [/tmp/anchors]  ANCHORS
#   CAIRN_BIN (prebuilt cairn)  ETCD_FLAGS / CAIRN_FLAGS (extra server flags)
#   CLIENT_PORT [42379]  PEER_PORT [42380]   (not 2379: bench/run.sh may run meanwhile)
#   PUT_TOTAL [50000; QUICK 10000]  PUT_CLIENTS [100]  PUT_CONNS [100]
#   LAT1_PUTS [500; QUICK 200]  LAT1_RATE [100]
#   LATN_WATCHERS [10000]  LATN_STREAMS [100]  LATN_CONNS [10]  LATN_PUTS [50; QUICK 20]  LATN_RATE [5]
#   IDLE_WATCHERS [100000]  IDLE_STREAMS [100]  IDLE_CONNS [10]
#   SLOW_STALLED [2]  SLOW_SLOW [2]  SLOW_INTERVAL [100ms]
#   QUIET_IDLE [80] / QUIET_MAX [5; QUICK 3]: before each test wait up to QUIET_MAX s
#                for the machine to be QUIET_IDLE % idle; 0 disables
#   PPROF=1      start both servers with --enable-pprof; in round 1 save a CPU profile of the
#                server during each put run (<server>/<test>-cpu.pprof, the first
#                PUT_TOTAL/5000 s, 3..30) and a heap profile right after it (<test>-heap.pprof)
#   KEEP_DATA=1  keep the data dirs
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
[ -d "$ANCHORS" ] || { echo "watch.sh: anchors scripts not found at $ANCHORS (set ANCHORS=)" >&2; exit 1; }
ANCHORS=$(cd "$ANCHORS" && pwd)
ANCHOR_DIR=${ANCHOR_DIR:-/tmp/anchors}
BIN=$ANCHOR_DIR/bin
SERVERS=${SERVERS:-etcd cairn}
QUICK=${QUICK:-0}
NICE=${NICE:-0}
q() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; }
REPEAT=${REPEAT:-$(q 3 2)}
PUT_TOTAL=${PUT_TOTAL:-$(q 50000 10000)}
PUT_CLIENTS=${PUT_CLIENTS:-100}
PUT_CONNS=${PUT_CONNS:-100}
LAT1_PUTS=${LAT1_PUTS:-$(q 500 200)}
LAT1_RATE=${LAT1_RATE:-100}
LATN_WATCHERS=${LATN_WATCHERS:-10000}
LATN_STREAMS=${LATN_STREAMS:-100}
LATN_CONNS=${LATN_CONNS:-10}
LATN_PUTS=${LATN_PUTS:-$(q 50 20)}
LATN_RATE=${LATN_RATE:-5}
IDLE_WATCHERS=${IDLE_WATCHERS:-100000}
IDLE_STREAMS=${IDLE_STREAMS:-100}
IDLE_CONNS=${IDLE_CONNS:-10}
SLOW_STALLED=${SLOW_STALLED:-2}
SLOW_SLOW=${SLOW_SLOW:-2}
SLOW_INTERVAL=${SLOW_INTERVAL:-100ms}
QUIET_IDLE=${QUIET_IDLE:-80}
QUIET_MAX=${QUIET_MAX:-$(q 5 3)}
CLIENT_PORT=${CLIENT_PORT:-42379}
PEER_PORT=${PEER_PORT:-42380}
PPROF=${PPROF:-0}
READY_TIMEOUT=${READY_TIMEOUT:-30}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-180}
EP=127.0.0.1:$CLIENT_PORT
if [ -z "${OUT:-}" ]; then
  OUT=/tmp/cairn-bench/watch-$(date -u +%Y%m%dT%H%M%SZ)
  [ -e "$OUT" ] && OUT+="-$$"
fi
for s in $SERVERS; do
  case "$s" in etcd|cairn) ;; *) echo "watch.sh: unknown server '$s' (etcd, cairn)" >&2; exit 2 ;; esac
done
TESTS=${TESTS:-put-base slow lat-1 lat-10k idle}
for t in $TESTS; do
  case "$t" in put-base|slow|lat-1|lat-10k|idle|idle-prefix) ;;
    *) echo "watch.sh: unknown test '$t' (put-base slow lat-1 lat-10k idle idle-prefix)" >&2; exit 2 ;; esac
done
want() { [[ " $TESTS " == *" $1 "* ]]; }

CMDLINE="SERVERS='$SERVERS' TESTS='$TESTS' QUICK=$QUICK NICE=$NICE REPEAT=$REPEAT PUT_TOTAL=$PUT_TOTAL PUT_CLIENTS=$PUT_CLIENTS PUT_CONNS=$PUT_CONNS"
CMDLINE+=" LAT1_PUTS=$LAT1_PUTS LAT1_RATE=$LAT1_RATE LATN_WATCHERS=$LATN_WATCHERS LATN_STREAMS=$LATN_STREAMS LATN_CONNS=$LATN_CONNS"
CMDLINE+=" LATN_PUTS=$LATN_PUTS LATN_RATE=$LATN_RATE IDLE_WATCHERS=$IDLE_WATCHERS IDLE_STREAMS=$IDLE_STREAMS IDLE_CONNS=$IDLE_CONNS"
CMDLINE+=" SLOW_STALLED=$SLOW_STALLED SLOW_SLOW=$SLOW_SLOW SLOW_INTERVAL=$SLOW_INTERVAL"
[ "$PPROF" = 1 ] && CMDLINE+=" PPROF=1"
[ -n "${ETCD_FLAGS:-}" ] && CMDLINE+=" ETCD_FLAGS='$ETCD_FLAGS'"
[ -n "${CAIRN_FLAGS:-}" ] && CMDLINE+=" CAIRN_FLAGS='$CAIRN_FLAGS'"
[ -n "${CAIRN_BIN:-}" ] && CMDLINE+=" CAIRN_BIN='$CAIRN_BIN'"
CMDLINE+=" OUT=$OUT bench/watch.sh"

log() { echo "[$(date -u +%T)] $*" >&2; }
die() { echo "watch.sh: $*" >&2; exit 1; }

mkdir -p "$OUT/bin"
echo "command: $CMDLINE"
echo "$CMDLINE" > "$OUT/command.txt"
log "output: $OUT"

# ---- cleanup ------------------------------------------------------------------------
SERVER_PID=""
BG_PIDS=()   # watchbench holders, RSS samplers, profilers
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-wbench-data.XXXXXX")
kill_bg() {
  local p
  for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  BG_PIDS=()
}
cleanup() {
  local rc=$?
  kill_bg
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "killing server pid $SERVER_PID"
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${KEEP_DATA:-0}" = 1 ]; then log "data kept in $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- binaries ------------------------------------------------------------------------
missing=""
for b in etcdctl benchmark etcd; do [ -x "$BIN/$b" ] || missing+=" $b"; done
if [ -n "$missing" ]; then
  log "missing in $BIN:$missing; building with $ANCHORS/build.sh $ANCHOR_DIR (~2.5 min)"
  mkdir -p "$ANCHOR_DIR"
  flock "$ANCHOR_DIR/.build.lock" "$ANCHORS/build.sh" "$ANCHOR_DIR" > "$OUT/anchors-build.log" 2>&1 \
    || { tail -20 "$OUT/anchors-build.log" >&2; die "anchors build failed"; }
fi
CAIRN_REV="$(cd "$ROOT" && { git rev-parse --short HEAD 2>/dev/null || echo 'no commit'; })"
if [ -n "$(cd "$ROOT" && git status --porcelain -- . ':(exclude)bench' 2>/dev/null | head -1)" ]; then
  CAIRN_REV+=" + uncommitted changes"
fi
declare -A SRV_BIN
SRV_BIN[etcd]=$BIN/etcd
if [ -n "${CAIRN_BIN:-}" ]; then
  SRV_BIN[cairn]=$CAIRN_BIN
elif [[ " $SERVERS " == *" cairn "* ]]; then
  log "building cairn: go build -o $OUT/bin/cairn ./cmd/cairn"
  (cd "$ROOT" && go build -o "$OUT/bin/cairn" ./cmd/cairn) > "$OUT/cairn-build.log" 2>&1 \
    || { cat "$OUT/cairn-build.log" >&2; die "cairn build failed"; }
  SRV_BIN[cairn]=$OUT/bin/cairn
fi
(cd "$ROOT" && go build -o "$OUT/bin/watchbench" ./bench/watchbench) > "$OUT/watchbench-build.log" 2>&1 \
  || { cat "$OUT/watchbench-build.log" >&2; die "watchbench build failed"; }
WB=$OUT/bin/watchbench
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
write_versions

srv_ticks() { awk '{print $14+$15}' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0; }
port_busy() { ss -Htln "( sport = :$1 )" 2>/dev/null | grep -q .; }

start_server() { # $1=server $2=data dir $3=log
  local s=$1 dir=$2 logf=$3 extra p t0
  for p in "$CLIENT_PORT" "$PEER_PORT"; do
    for _ in $(seq 1 50); do port_busy "$p" || break; sleep 0.2; done
    port_busy "$p" && die "port 127.0.0.1:$p is busy; stop whatever listens there or set CLIENT_PORT/PEER_PORT"
  done
  rm -rf "$dir"
  if [ "$s" = etcd ]; then extra=${ETCD_FLAGS:-}; else extra=${CAIRN_FLAGS:-}; fi
  [ "$PPROF" = 1 ] && extra+=" --enable-pprof"
  # shellcheck disable=SC2086
  nice -n "$NICE" "${SRV_BIN[$s]}" --name default --data-dir "$dir" \
    --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$PEER_PORT" --log-level warn $extra \
    > "$logf" 2>&1 < /dev/null &
  SERVER_PID=$!
  t0=$SECONDS
  while :; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$logf" >&2; SERVER_PID=""; log "$s exited before becoming ready"; return 1; }
    if "$BIN/etcdctl" --endpoints="$EP" --dial-timeout=1s --command-timeout=2s get watch-bench-ready-probe >/dev/null 2>&1; then
      log "$s ready (pid $SERVER_PID, data $dir)"; return 0
    fi
    [ $((SECONDS - t0)) -lt "$READY_TIMEOUT" ] || { tail -20 "$logf" >&2; log "$s not ready after $READY_TIMEOUT s"; return 1; }
    sleep 0.2
  done
}
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local pid=$SERVER_PID rc
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null && rc=0 || rc=$?
  log "stopped pid $pid (exit $rc)"
  SERVER_PID=""
}

# ---- one measurement = lines "server round test key value" in $OUT/results.tsv --------
rec() { printf "%s\t%s\t%s\t%s\t%s\n" "$S" "$R" "$1" "$2" "$3" >> "$OUT/results.tsv"; }
rec_kv() { # test "k=v k=v ..." [keys to keep]
  local t=$1 kv=$2 k v pair
  shift 2
  for pair in $kv; do
    k=${pair%%=*}; v=${pair#*=}
    if [ $# = 0 ] || [[ " $* " == *" $k "* ]]; then rec "$t" "$k" "$v"; fi
  done
}

# wait for "READY" in $1 (a watchbench holder's output) from pid $2
wait_ready() {
  local f=$1 pid=$2 t0=$SECONDS
  while ! grep -q '^READY' "$f" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$f" >&2; return 1; }
    [ $((SECONDS - t0)) -lt 180 ] || { log "watchers not ready after 180 s"; return 1; }
    sleep 0.2
  done
}

# put run with RSS sampling: $1 = test name. Records qps, p99, srv CPU µs/op, rss growth.
put_run() {
  local t=$1 f idle s0 s1 b0 b1 rss0 sampler prof="" res qps p99 err rc=0
  f=$D/$t-r$R.txt
  idle=$(quiet_wait)
  rss0=$(rss_kib)
  ( while kill -0 "$SERVER_PID" 2>/dev/null; do awk '/^VmRSS/{print $2}' "/proc/$SERVER_PID/status" 2>/dev/null; sleep 0.25; done ) \
    > "$D/$t-r$R.rss" &
  sampler=$!
  if [ "$PPROF" = 1 ] && [ "$R" = 1 ]; then
    local secs; secs=$(awk -v n="$PUT_TOTAL" 'BEGIN{s=int(n/5000); if(s<3)s=3; if(s>30)s=30; print s}')
    curl -s -o "$D/$t-cpu.pprof" "http://$EP/debug/pprof/profile?seconds=$secs" &
    prof=$!
  fi
  s0=$(srv_ticks); b0=$(busy_ticks)
  ( TIMEFORMAT='%U %S'
    time timeout "$BENCH_TIMEOUT" nice -n "$NICE" "$BIN/benchmark" --precise --endpoints="$EP" \
      --clients="$PUT_CLIENTS" --conns="$PUT_CONNS" put --key-size=8 --val-size=256 \
      --sequential-keys --key-space-size=100000 --total="$PUT_TOTAL" > "$f" 2>&1 ) 2> "${f%.txt}.time" || rc=$?
  s1=$(srv_ticks); b1=$(busy_ticks)
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  if [ -n "$prof" ]; then
    wait "$prof" || true
    curl -s -o "$D/$t-heap.pprof" "http://$EP/debug/pprof/heap" || true
  fi
  res=$("$ANCHORS/parse-bench.sh" "$f")
  qps=$(cut -f2 <<< "$res"); p99=$(cut -f5 <<< "$res"); err=$(cut -f7 <<< "$res")
  [ "$rc" = 0 ] || err="rc=$rc"
  local scpu peak other bcpu
  scpu=$(awk -v a="$s0" -v b="$s1" -v t="$TICK" -v n="$PUT_TOTAL" 'BEGIN{printf "%.0f", (b-a)/t*1e6/n}')
  bcpu=$(awk '{printf "%.1f", $1+$2}' "${f%.txt}.time" 2>/dev/null); bcpu=${bcpu:-0}
  # CPU of everything else on the machine (other sessions, the watch holders) during the run
  other=$(awk -v a="$b0" -v b="$b1" -v s0="$s0" -v s1="$s1" -v t="$TICK" -v c="$bcpu" 'BEGIN{o=((b-a)-(s1-s0))/t-c; if(o<0)o=0; printf "%.1f", o}')
  peak=$(sort -n "$D/$t-r$R.rss" | tail -1); peak=${peak:-$rss0}
  rec "$t" qps "$qps"; rec "$t" p99_ms "$p99"; rec "$t" errors "$err"; rec "$t" srv_us_per_put "$scpu"
  rec "$t" rss_growth_mib "$(awk -v a="$rss0" -v b="$peak" 'BEGIN{printf "%.1f", (b-a)/1024}')"
  rec "$t" idle_before "$idle"; rec "$t" bench_cpu_s "$bcpu"; rec "$t" other_cpu_s "$other"
  log "$S r$R $t: $qps req/s p99 ${p99}ms errors=$err srv ${scpu}µs/put rss $((rss0/1024))->$((peak/1024)) MiB idle_before=${idle}% other_cpu=${other}s"
}

lat_run() { # $1 test name, then watchbench latency flags
  local t=$1 f idle line rc=0
  shift
  f=$D/$t-r$R.txt
  idle=$(quiet_wait)
  timeout "$BENCH_TIMEOUT" nice -n "$NICE" "$WB" latency -endpoint "$EP" "$@" > "$f" 2>&1 || rc=$?
  line=$(grep '^RESULT' "$f" | sed 's/^RESULT //') || true
  rec_kv "$t" "$line" p50_ms p99_ms p999_ms max_ms create_s events expected
  rec "$t" rc "$rc"; rec "$t" idle_before "$idle"
  log "$S r$R $t: $(tr ' ' '\n' <<< "$line" | grep -E '^(p50_ms|p99_ms|events|expected)=' | paste -sd' ') rc=$rc idle_before=${idle}%"
}

idle_run() { # $1 = idle (one key per watcher) or idle-prefix (one prefix per watcher)
  local t=$1 f pid r0 r1 flag=""
  f=$D/$t-r$R.out
  [ "$t" = idle-prefix ] && flag=-prefix-watch
  quiet_wait > /dev/null
  r0=$(rss_kib)
  # shellcheck disable=SC2086
  nice -n "$NICE" "$WB" idle -endpoint "$EP" -watchers "$IDLE_WATCHERS" -streams "$IDLE_STREAMS" -conns "$IDLE_CONNS" $flag > "$f" 2>&1 &
  pid=$!; BG_PIDS=("$pid")
  if ! wait_ready "$f" "$pid"; then rec "$t" ok 0; kill_bg; return 1; fi
  sleep 3 # let the server settle (GC) after the burst of creates
  r1=$(rss_kib)
  rec "$t" rss_before_mib "$(awk -v a="$r0" 'BEGIN{printf "%.1f", a/1024}')"
  rec "$t" rss_after_mib "$(awk -v a="$r1" 'BEGIN{printf "%.1f", a/1024}')"
  rec "$t" bytes_per_watcher "$(awk -v a="$r0" -v b="$r1" -v n="$IDLE_WATCHERS" 'BEGIN{printf "%.0f", (b-a)*1024/n}')"
  rec_kv "$t" "$(grep '^READY' "$f" | sed 's/^READY //')" create_s
  log "$S r$R $t: $IDLE_WATCHERS watchers, VmRSS $((r0/1024)) -> $((r1/1024)) MiB ($(( (r1-r0)*1024/IDLE_WATCHERS )) B/watcher)"
  put_run "put-$t"
  kill_bg
  rec_kv "$t" "$(grep '^RESULT' "$f" | sed 's/^RESULT //')" events
}

slow_run() {
  local f=$D/slow-r$R.out pid line
  quiet_wait > /dev/null
  nice -n "$NICE" "$WB" slow -endpoint "$EP" -stalled "$SLOW_STALLED" -slow "$SLOW_SLOW" -slow-interval "$SLOW_INTERVAL" > "$f" 2>&1 &
  pid=$!; BG_PIDS=("$pid")
  if ! wait_ready "$f" "$pid"; then rec slow ok 0; kill_bg; return 1; fi
  put_run put-slow
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  BG_PIDS=()
  line=$(grep '^RESULT' "$f" | sed 's/^RESULT //') || true
  rec_kv slow "$line" drain_s bad
  rec slow slow_reader_events_during_run "$(awk '/^WATCHER/ && / kind=slow /{for(i=1;i<=NF;i++) if($i ~ /^during_run_events=/){sub(/.*=/,"",$i); s+=$i; n++}} END{printf "%d", (n?s/n:0)}' "$f")"
  log "$S r$R slow: $line"
}

# ---- main ------------------------------------------------------------------------------
: > "$OUT/results.tsv"
for S in $SERVERS; do
  D=$OUT/$S; mkdir -p "$D"
  log "=== $S: $REPEAT rounds"
  if ! start_server "$S" "$WORK/$S" "$D/server.log"; then echo "server did not start" > "$D/FAILED"; continue; fi
  R=0 put_run put-warmup # not in the summary: fills the key space, memtables and heap once
  for R in $(seq 1 "$REPEAT"); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died" > "$D/FAILED"; break; }
    want put-base && put_run put-base
    if want slow; then slow_run || log "$S r$R slow: watchers not created"; fi
    want lat-1 && lat_run lat-1 -watchers 1 -streams 1 -conns 1 -puts "$LAT1_PUTS" -rate "$LAT1_RATE"
    want lat-10k && lat_run lat-10k -watchers "$LATN_WATCHERS" -streams "$LATN_STREAMS" -conns "$LATN_CONNS" -puts "$LATN_PUTS" -rate "$LATN_RATE"
    if want idle; then idle_run idle || log "$S r$R idle: watchers not created"; fi
    if want idle-prefix; then idle_run idle-prefix || log "$S r$R idle-prefix: watchers not created"; fi
  done
  kill -0 "$SERVER_PID" 2>/dev/null || echo "server died" > "$D/FAILED"
  stop_server
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "${WORK:?}/$S"
done

# ---- summary ----------------------------------------------------------------------------
vals() { # server test key -> values of all rounds, space separated
  awk -F'\t' -v s="$1" -v t="$2" -v k="$3" '$1==s && $3==t && $4==k {printf "%s%s", (n++?" ":""), $5}' "$OUT/results.tsv"
}
median() { tr ' ' '\n' | { grep -E '^-?[0-9.]+$' || true; } | sort -g | awk '{a[n++]=$1} END{ if(!n){print "-"; exit} if(n%2) m=a[(n-1)/2]; else m=(a[n/2-1]+a[n/2])/2; m=sprintf("%.3f", m); sub(/\.?0+$/, "", m); print m }'; }
med() { vals "$1" "$2" "$3" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a+0 > 0) printf "%.2f", b/a; else printf "-" }'; }
row() { # label test key better(lower|higher)
  local e c
  e=$(med etcd "$2" "$3"); c=$(med cairn "$2" "$3")
  printf "| %s | %s | %s | %s | %s | %s / %s |\n" "$1" "$e" "$c" "$(ratio "$e" "$c")" "$4" \
    "$(vals etcd "$2" "$3" | tr ' ' ',')" "$(vals cairn "$2" "$3" | tr ' ' ',')"
}
SUMMARY=$OUT/summary.md
{
  echo "# watch benchmarks: cairn vs etcd"
  echo
  echo "command: \`$CMDLINE\`"
  echo
  sed 's/^/    /' "$OUT/versions.txt"
  echo
  echo "Medians of $REPEAT rounds (all values in the last column, etcd / cairn). ratio = cairn / etcd."
  echo
  echo "| metric | etcd | cairn | ratio | better | all rounds etcd / cairn |"
  echo "|---|---:|---:|---:|---|---|"
  row "put-to-event p50 ms, 1 watcher" lat-1 p50_ms lower
  row "put-to-event p99 ms, 1 watcher" lat-1 p99_ms lower
  row "put-to-event p50 ms, $LATN_WATCHERS watchers on 1 key" lat-10k p50_ms lower
  row "put-to-event p99 ms, $LATN_WATCHERS watchers on 1 key" lat-10k p99_ms lower
  row "events received / expected ($LATN_WATCHERS watchers)" lat-10k events higher
  row "VmRSS before $IDLE_WATCHERS idle watchers, MiB" idle rss_before_mib lower
  row "VmRSS with $IDLE_WATCHERS idle watchers, MiB" idle rss_after_mib lower
  row "bytes per idle watcher" idle bytes_per_watcher lower
  row "create $IDLE_WATCHERS watchers, s" idle create_s lower
  row "put QPS, no watchers" put-base qps higher
  row "put QPS, $IDLE_WATCHERS idle watchers" put-idle qps higher
  row "put QPS, slow watchers ($SLOW_STALLED stalled + $SLOW_SLOW slow)" put-slow qps higher
  if want idle-prefix; then
    row "VmRSS with $IDLE_WATCHERS idle prefix watchers, MiB" idle-prefix rss_after_mib lower
    row "bytes per idle prefix watcher" idle-prefix bytes_per_watcher lower
    row "put QPS, $IDLE_WATCHERS idle prefix watchers" put-idle-prefix qps higher
    row "put p99 ms, idle prefix watchers" put-idle-prefix p99_ms lower
    row "server CPU µs/put, idle prefix watchers" put-idle-prefix srv_us_per_put lower
  fi
  row "put p99 ms, no watchers" put-base p99_ms lower
  row "put p99 ms, idle watchers" put-idle p99_ms lower
  row "put p99 ms, slow watchers" put-slow p99_ms lower
  row "server CPU µs/put, no watchers" put-base srv_us_per_put lower
  row "server CPU µs/put, idle watchers" put-idle srv_us_per_put lower
  row "server CPU µs/put, slow watchers" put-slow srv_us_per_put lower
  row "VmRSS growth during put run, no watchers, MiB" put-base rss_growth_mib lower
  row "VmRSS growth during put run, slow watchers, MiB" put-slow rss_growth_mib lower
  row "events a slow reader got during the put run" slow slow_reader_events_during_run -
  row "slow watchers' catch-up after the run, s" slow drain_s lower
  row "slow watchers with a gap or not caught up" slow bad lower
  row "machine idle % before the put run, no watchers" put-base idle_before -
  row "CPU s used by other processes during the put run (noise), no watchers" put-base other_cpu_s -
  row "CPU s used by other processes during the put run (noise), idle watchers" put-idle other_cpu_s -
  row "CPU s used by other processes during the put run (noise), slow watchers" put-slow other_cpu_s -
  echo
  echo "Own ratios (same server): put QPS with idle watchers / without: etcd $(ratio "$(med etcd put-base qps)" "$(med etcd put-idle qps)"), cairn $(ratio "$(med cairn put-base qps)" "$(med cairn put-idle qps)");"
  echo "with slow watchers / without: etcd $(ratio "$(med etcd put-base qps)" "$(med etcd put-slow qps)"), cairn $(ratio "$(med cairn put-base qps)" "$(med cairn put-slow qps)")."
  echo
  echo "\"CPU s used by other processes\" excludes the server and the benchmark client (it includes the watchbench holder,"
  echo "small, and everything else running on the machine): large values mean the row is disturbed."
  for s in $SERVERS; do
    if [ -f "$OUT/$s/FAILED" ]; then echo; echo "**$s: $(cat "$OUT/$s/FAILED")** (log $OUT/$s/server.log)"; fi
  done
  echo
  echo "Raw: $OUT/results.tsv, $OUT/<server>/ (benchmark and watchbench outputs, RSS samples)."
} > "$SUMMARY"
echo
cat "$SUMMARY"
for s in $SERVERS; do [ -f "$OUT/$s/FAILED" ] && exit 1; done
if awk -F'\t' '($4=="errors" && $5!="0") || ($4=="rc" && $5!="0") || ($4=="bad" && $5!="0") {bad=1} END{exit !bad}' "$OUT/results.tsv"; then
  echo "watch.sh: some measurements failed or had errors (see results.tsv)" >&2; exit 3
fi
exit 0
