#!/usr/bin/env bash
# bench/run.sh: run the same benchmarks against etcd and cairn, one server after
# the other, and print a comparison table. See bench/README.md.
#
#   bench/run.sh                          # full comparison (about 10 minutes)
#   TESTS=lease bench/run.sh              # leases: keepalive throughput, 100,000-lease expiry storm
#   SERVERS=etcd QUICK=1 bench/run.sh     # smoke test, etcd only (about 1 minute)
#   TESTS="put-seq-c1 range-l-c1" bench/run.sh
#   MODE=cluster bench/run.sh             # 3 members per server: writes -> leader, reads -> all
#
# Env (defaults in brackets):
#   MODE         single | cluster                          [single]
#   SERVERS      servers to run, in this order            ["etcd cairn"]
#   TESTS        "default", "all" or a list of test names [default]
#                default = put-seq-c1 put-seq-c100 range-l-c1 range-s-c1
#                          range-l-c500 range-s-c500 txn-put-c100 load-1m
#                all     = default + put-seq-c500 put-rand-c1 put-rand-c500 watch-latency
#                MODE=cluster: default = put-seq-c1 put-seq-c100 range-l-c1 range-s-c1
#                          range-l-c100 range-s-c100 range-l-c500 range-s-c500 txn-put-c100
#                          lease-keepalive-c1 lease-keepalive-c100
#                          lease-keepalive-follower-c1 lease-keepalive-follower-c100
#                          all = default + put-seq-c500 put-rand-c1 put-rand-c500 watch-latency
#                          (no load-1m in cluster mode)
#                lease   = lease-keepalive-c1 lease-keepalive-c100 lease-storm
#                          MODE=cluster: lease-keepalive-{,follower-}c{1,100} (no lease-storm)
#                lease-keepalive-*: sent to the leader; lease-keepalive-follower-*: sent to
#                          one follower, which forwards them to the leader (MODE=cluster only)
#                lease-storm: LEASE_STORM_LEASES leases with one key each, granted in a burst;
#                          put throughput before and during their expiry, and the time to revoke
#                          them all (bench/leasestorm; single mode only)
#   CLUSTER_CLIENT_PORTS / CLUSTER_PEER_PORTS  MODE=cluster ports of m1 m2 m3
#                ["12379 22379 32379" / "12380 22380 32380"]
#   QUICK=1      about 1/10 of the requests, and LOAD_TOTAL 20000 instead of 1,000,000
#   NICE         nice level for the servers and the benchmark tool (same for both) [0]
#   OUT          output dir                               [/tmp/cairn-bench/<UTC timestamp>]
#   ANCHOR_DIR   where etcd/etcdctl/benchmark live (in ANCHOR_DIR/bin); built there
#                with ../shared/anchors/build.sh if missing [/tmp/anchors]
#   ANCHORS      the anchors scripts dir                  [<repo>/../shared/anchors]
#   CAIRN_BIN    use this cairn binary instead of building ./cmd/cairn
#   ETCD_FLAGS / CAIRN_FLAGS   extra flags for that server only
#   LOAD_TOTAL, LOAD_CLIENTS [500], LOAD_CONNS [100], LOAD_TIMEOUT [300]  the load-1m test
#   LEASE_STORM_LEASES [100000; QUICK 10000], LEASE_STORM_TTL [90; QUICK 30], LEASE_STORM_TIMEOUT [600]
#   BENCH_TIMEOUT  per-test wall limit in seconds          [150]
#   READY_TIMEOUT  seconds to wait for a server to answer  [30]
#   QUIET_IDLE / QUIET_MAX  before each test wait up to QUIET_MAX s [30; QUICK 5]
#                  until the machine is QUIET_IDLE % idle [80]; 0 disables
#   KEEP_DATA=1  keep the servers' data dirs (otherwise deleted on exit)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
[ -d "$ANCHORS" ] || { echo "run.sh: anchors scripts not found at $ANCHORS (set ANCHORS=)" >&2; exit 1; }
ANCHORS=$(cd "$ANCHORS" && pwd)
ANCHOR_DIR=${ANCHOR_DIR:-/tmp/anchors}
BIN=$ANCHOR_DIR/bin
MODE=${MODE:-single}
case "$MODE" in single|cluster) ;; *) echo "run.sh: MODE must be single or cluster (got '$MODE')" >&2; exit 2 ;; esac
SERVERS=${SERVERS:-etcd cairn}
TESTS=${TESTS:-default}
QUICK=${QUICK:-0}
NICE=${NICE:-0}
if [ -z "${OUT:-}" ]; then
  OUT=/tmp/cairn-bench/$(date -u +%Y%m%dT%H%M%SZ)
  [ -e "$OUT" ] && OUT+="-$$"
fi
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150}
READY_TIMEOUT=${READY_TIMEOUT:-30}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
QUIET_IDLE=${QUIET_IDLE:-80}
if [ "$QUICK" = 1 ]; then QUIET_MAX=${QUIET_MAX:-5}; else QUIET_MAX=${QUIET_MAX:-30}; fi
if [ "$QUICK" = 1 ]; then LOAD_TOTAL=${LOAD_TOTAL:-20000}; else LOAD_TOTAL=${LOAD_TOTAL:-1000000}; fi
LOAD_CLIENTS=${LOAD_CLIENTS:-500}
LOAD_CONNS=${LOAD_CONNS:-100}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
if [ "$QUICK" = 1 ]; then LEASE_STORM_LEASES=${LEASE_STORM_LEASES:-10000}; LEASE_STORM_TTL=${LEASE_STORM_TTL:-30}
else LEASE_STORM_LEASES=${LEASE_STORM_LEASES:-100000}; LEASE_STORM_TTL=${LEASE_STORM_TTL:-90}; fi
LEASE_STORM_TIMEOUT=${LEASE_STORM_TIMEOUT:-600}
CLIENT_PORT=2379
PEER_PORT=2380
EP=127.0.0.1:$CLIENT_PORT
# MODE=cluster: members m1 m2 m3
CLUSTER_CLIENT_PORTS=${CLUSTER_CLIENT_PORTS:-12379 22379 32379}
CLUSTER_PEER_PORTS=${CLUSTER_PEER_PORTS:-12380 22380 32380}
read -r -a CPORTS <<< "$CLUSTER_CLIENT_PORTS"
read -r -a PPORTS <<< "$CLUSTER_PEER_PORTS"
MEMBERS=(m1 m2 m3)
if [ "$MODE" = cluster ]; then
  [ "${#CPORTS[@]}" = 3 ] && [ "${#PPORTS[@]}" = 3 ] \
    || { echo "run.sh: CLUSTER_CLIENT_PORTS and CLUSTER_PEER_PORTS need 3 ports each" >&2; exit 2; }
fi
ALL_EPS=""; INITIAL_CLUSTER=""
for i in 0 1 2; do
  ALL_EPS+="${ALL_EPS:+,}127.0.0.1:${CPORTS[$i]}"
  INITIAL_CLUSTER+="${INITIAL_CLUSTER:+,}${MEMBERS[$i]}=http://127.0.0.1:${PPORTS[$i]}"
done
LEADER_EP=""    # MODE=cluster: client endpoint of the current leader
LEADER_NAME=""
STOP_MSG=""

# The exact, reproducible command line (every knob that shapes the numbers).
CMDLINE=""
if [ "$MODE" = cluster ]; then
  CMDLINE+="MODE=cluster "
  if [ "$CLUSTER_CLIENT_PORTS" != "12379 22379 32379" ]; then CMDLINE+="CLUSTER_CLIENT_PORTS='$CLUSTER_CLIENT_PORTS' "; fi
  if [ "$CLUSTER_PEER_PORTS" != "12380 22380 32380" ]; then CMDLINE+="CLUSTER_PEER_PORTS='$CLUSTER_PEER_PORTS' "; fi
fi
CMDLINE+="SERVERS='$SERVERS' TESTS='$TESTS' QUICK=$QUICK NICE=$NICE"
if [ "$MODE" = single ]; then CMDLINE+=" LOAD_TOTAL=$LOAD_TOTAL"; fi
if [ -n "${ETCD_FLAGS:-}" ]; then CMDLINE+=" ETCD_FLAGS='$ETCD_FLAGS'"; fi
if [ -n "${CAIRN_FLAGS:-}" ]; then CMDLINE+=" CAIRN_FLAGS='$CAIRN_FLAGS'"; fi
if [ -n "${CAIRN_BIN:-}" ]; then CMDLINE+=" CAIRN_BIN='$CAIRN_BIN'"; fi
CMDLINE+=" OUT=$OUT bench/run.sh"

# ---- test table: same names and benchmark arguments as ../shared/anchors/bench-etcd.sh
RANGE_KEY=anchor-range-key
PUTF="--key-size=8 --val-size=256"
n() { if [ "$QUICK" = 1 ]; then echo $(($1 / 10)); else echo "$1"; fi; }
# name|clients|conns|requests|benchmark subcommand + flags
# (MODE=cluster: put/txn/watch go to the leader, range to all three members)
SUITE=(
  "put-seq-c1|1|1|$(n 10000)|put $PUTF --sequential-keys --key-space-size=100000 --total=$(n 10000)"
  "put-seq-c100|100|10|$(n 50000)|put $PUTF --sequential-keys --key-space-size=100000 --total=$(n 50000)"
  "put-seq-c500|500|100|$(n 100000)|put $PUTF --sequential-keys --key-space-size=100000 --total=$(n 100000)"
  "put-rand-c1|1|1|$(n 10000)|put $PUTF --key-space-size=100000 --total=$(n 10000)"
  "put-rand-c500|500|100|$(n 100000)|put $PUTF --key-space-size=100000 --total=$(n 100000)"
  "range-l-c1|1|1|$(n 10000)|range $RANGE_KEY --consistency=l --total=$(n 10000)"
  "range-s-c1|1|1|$(n 10000)|range $RANGE_KEY --consistency=s --total=$(n 10000)"
  "range-l-c100|100|10|$(n 50000)|range $RANGE_KEY --consistency=l --total=$(n 50000)"
  "range-s-c100|100|10|$(n 50000)|range $RANGE_KEY --consistency=s --total=$(n 50000)"
  "range-l-c500|500|100|$(n 100000)|range $RANGE_KEY --consistency=l --total=$(n 100000)"
  "range-s-c500|500|100|$(n 100000)|range $RANGE_KEY --consistency=s --total=$(n 100000)"
  "txn-put-c100|100|10|$(n 50000)|txn-put $PUTF --key-space-size=100000 --total=$(n 50000)"
  "watch-latency|1|1|$(n 2000)|watch-latency --streams=10 --watchers-per-stream=10 --put-rate=200 --put-total=$(n 2000) --val-size=256"
  "lease-keepalive-c1|1|1|$(n 10000)|lease-keepalive --total=$(n 10000)"
  "lease-keepalive-c100|100|10|$(n 100000)|lease-keepalive --total=$(n 100000)"
  "lease-keepalive-follower-c1|1|1|$(n 10000)|lease-keepalive --total=$(n 10000)"
  "lease-keepalive-follower-c100|100|10|$(n 100000)|lease-keepalive --total=$(n 100000)"
)
DEFAULT_TESTS="put-seq-c1 put-seq-c100 range-l-c1 range-s-c1 range-l-c500 range-s-c500 txn-put-c100 load-1m"
ALL_TESTS="put-seq-c1 put-seq-c100 put-seq-c500 put-rand-c1 put-rand-c500 range-l-c1 range-s-c1 range-l-c500 range-s-c500 txn-put-c100 watch-latency load-1m"
KNOWN_TESTS="$ALL_TESTS range-l-c100 range-s-c100 lease-keepalive-c1 lease-keepalive-c100 lease-storm"
if [ "$MODE" = cluster ]; then
  CLUSTER_LEASE_TESTS="lease-keepalive-c1 lease-keepalive-c100 lease-keepalive-follower-c1 lease-keepalive-follower-c100"
  DEFAULT_TESTS="put-seq-c1 put-seq-c100 range-l-c1 range-s-c1 range-l-c100 range-s-c100 range-l-c500 range-s-c500 txn-put-c100 $CLUSTER_LEASE_TESTS"
  ALL_TESTS="put-seq-c1 put-seq-c100 put-seq-c500 put-rand-c1 put-rand-c500 range-l-c1 range-s-c1 range-l-c100 range-s-c100 range-l-c500 range-s-c500 txn-put-c100 watch-latency $CLUSTER_LEASE_TESTS"
  KNOWN_TESTS="$ALL_TESTS"
fi
case "$TESTS" in
  default) SELECTED=$DEFAULT_TESTS ;;
  all) SELECTED=$ALL_TESTS ;;
  lease) if [ "$MODE" = cluster ]; then SELECTED=$CLUSTER_LEASE_TESTS; else SELECTED="lease-keepalive-c1 lease-keepalive-c100 lease-storm"; fi ;;
  *) SELECTED=$TESTS ;;
esac
for t in $SELECTED; do
  if [ "$MODE" = cluster ] && [ "$t" = load-1m ]; then echo "run.sh: load-1m is not available with MODE=cluster" >&2; exit 2; fi
  if [ "$MODE" = cluster ] && [ "$t" = lease-storm ]; then echo "run.sh: lease-storm is not available with MODE=cluster" >&2; exit 2; fi
  [[ " $KNOWN_TESTS " == *" $t "* ]] || { echo "run.sh: unknown test '$t' (known: $KNOWN_TESTS)" >&2; exit 2; }
done
for s in $SERVERS; do
  case "$s" in etcd|cairn) ;; *) echo "run.sh: unknown server '$s' (etcd, cairn)" >&2; exit 2 ;; esac
done
want() { [[ " $SELECTED " == *" $1 "* ]]; }
want_suite() { local t; for t in $SELECTED; do [ "$t" != load-1m ] && [ "$t" != lease-storm ] && return 0; done; return 1; }

log() { echo "[$(date -u +%T)] $*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

mkdir -p "$OUT"
echo "command: $CMDLINE"
echo "$CMDLINE" > "$OUT/command.txt"
log "output: $OUT"

# ---- cleanup: kill whatever server we started, drop data dirs ----------------
SERVER_PID=""
CLUSTER_PIDS=()  # MODE=cluster: pids of m1 m2 m3 ("" once gone)
CHILD_PID=""  # a running benchmark/load job, started in the background so that traps fire at once
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-data.XXXXXX")
cleanup() {
  local rc=$?
  # a running job's children (timeout -> benchmark) first; timeout passes the TERM on
  if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then kill_child; fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "killing server pid $SERVER_PID"
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  local p live=""
  for p in "${CLUSTER_PIDS[@]}"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then live+=" $p"; fi
  done
  if [ -n "$live" ]; then
    log "killing cluster member pids$live"
    for p in $live; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
      local any=0
      for p in $live; do kill -0 "$p" 2>/dev/null && any=1; done
      [ $any = 1 ] || break; sleep 0.1
    done
    for p in $live; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  if [ "${KEEP_DATA:-0}" = 1 ]; then log "data kept in $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- binaries ------------------------------------------------------------------
need_anchor_bins="etcdctl benchmark"
if [[ " $SERVERS " == *" etcd "* ]]; then need_anchor_bins+=" etcd"; fi
missing=""
for b in $need_anchor_bins; do [ -x "$BIN/$b" ] || missing+=" $b"; done
if [ -n "$missing" ]; then
  log "missing in $BIN:$missing; building with $ANCHORS/build.sh $ANCHOR_DIR (~2.5 min, log $OUT/anchors-build.log)"
  mkdir -p "$ANCHOR_DIR"
  # flock: two bench runs must not build into the same dir at once (build.sh rm -rf's its sources)
  if ! flock "$ANCHOR_DIR/.build.lock" "$ANCHORS/build.sh" "$ANCHOR_DIR" > "$OUT/anchors-build.log" 2>&1; then
    tail -20 "$OUT/anchors-build.log" >&2; die "anchors build failed (log $OUT/anchors-build.log)"
  fi
  for b in $need_anchor_bins; do [ -x "$BIN/$b" ] || die "$BIN/$b still missing after build"; done
fi

# cairn source version, taken before the build (the tree may change while we run)
CAIRN_REV="$(cd "$ROOT" && { git rev-parse --short HEAD 2>/dev/null || echo 'no commit'; })"
if [ -n "$(cd "$ROOT" && git status --porcelain -- . ':(exclude)bench' 2>/dev/null | head -1)" ]; then
  CAIRN_REV+=" + uncommitted changes"
fi
mkdir -p "$OUT/bin"
declare -A SRV_BIN
SRV_BIN[etcd]=$BIN/etcd
if [[ " $SERVERS " == *" cairn "* ]]; then
  if [ -n "${CAIRN_BIN:-}" ]; then
    [ -x "$CAIRN_BIN" ] || die "CAIRN_BIN=$CAIRN_BIN is not executable"
    SRV_BIN[cairn]=$CAIRN_BIN
  else
    log "building cairn: (cd $ROOT && go build -o $OUT/bin/cairn ./cmd/cairn)"
    (cd "$ROOT" && go build -o "$OUT/bin/cairn" ./cmd/cairn) > "$OUT/cairn-build.log" 2>&1 \
      || { cat "$OUT/cairn-build.log" >&2; die "cairn build failed"; }
    SRV_BIN[cairn]=$OUT/bin/cairn
  fi
fi

if want lease-storm; then
  log "building bench/leasestorm"
  (cd "$ROOT" && go build -o "$OUT/bin/leasestorm" ./bench/leasestorm) > "$OUT/leasestorm-build.log" 2>&1 \
    || { cat "$OUT/leasestorm-build.log" >&2; die "leasestorm build failed"; }
fi

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
write_versions

# the running server's pids: one, or the 3 members in MODE=cluster
srv_pids() { if [ "$MODE" = cluster ]; then echo "${CLUSTER_PIDS[*]}"; else echo "$SERVER_PID"; fi; }
srv_ticks() { # user+sys CPU ticks, summed over all members
  local t=0 p v
  for p in $(srv_pids); do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null) || v=0; t=$((t + ${v:-0})); done
  echo $t
}
srv_rss() { # MiB; MODE=cluster: m1/m2/m3
  if [ "$MODE" != cluster ]; then
    awk '/^VmRSS/{printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status" 2>/dev/null || echo "?"; return
  fi
  local out="" p r
  for p in "${CLUSTER_PIDS[@]}"; do
    r=""; [ -n "$p" ] && r=$(awk '/^VmRSS/{printf "%.0f", $2/1024}' "/proc/$p/status" 2>/dev/null)
    out+="${out:+/}${r:-?}"
  done
  echo "$out"
}
# all server processes alive? (MODE=cluster: all three members)
srv_alive() {
  local p
  if [ "$MODE" != cluster ]; then kill -0 "$SERVER_PID" 2>/dev/null; return; fi
  [ "${#CLUSTER_PIDS[@]}" = 3 ] || return 1
  for p in "${CLUSTER_PIDS[@]}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 1; done
}

# ---- server lifecycle -------------------------------------------------------------
port_busy() { ss -Htln "( sport = :$1 )" 2>/dev/null | grep -q .; }
STOPPED_ONE=0
check_ports() {
  local p ports="$CLIENT_PORT $PEER_PORT"
  if [ "$MODE" = cluster ]; then ports="${CPORTS[*]} ${PPORTS[*]}"; fi
  for p in $ports; do
    if [ "$STOPPED_ONE" = 1 ]; then  # the server we just stopped may linger a moment
      for _ in $(seq 1 50); do port_busy "$p" || break; sleep 0.2; done
    fi
    if port_busy "$p"; then
      ss -Htlnp "( sport = :$p )" >&2 || true
      die "port 127.0.0.1:$p is busy (another etcd/cairn running?); stop it first"
    fi
  done
}

start_server() { # $1=server $2=data dir $3=log file
  local s=$1 dir=$2 logf=$3 extra
  check_ports
  rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
  if [ "$s" = etcd ]; then extra=${ETCD_FLAGS:-}; else extra=${CAIRN_FLAGS:-}; fi
  # shellcheck disable=SC2086
  nice -n "$NICE" "${SRV_BIN[$s]}" --name default --data-dir "$dir" \
    --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$PEER_PORT" --log-level warn $extra \
    > "$logf" 2>&1 < /dev/null &
  SERVER_PID=$!
  local t0=$SECONDS
  while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
      SERVER_PID=""
      tail -20 "$logf" >&2
      echo "run.sh: $s exited (rc=$rc) before becoming ready; log $logf" >&2
      return 1
    fi
    # health (Range + AlarmList), or at least a plain Range
    if "$BIN/etcdctl" --endpoints="$EP" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1 \
      || "$BIN/etcdctl" --endpoints="$EP" --dial-timeout=1s --command-timeout=2s get cairn-bench-ready-probe >/dev/null 2>&1; then
      log "$s ready (pid $SERVER_PID, $((SECONDS - t0)) s, data $dir)"
      return 0
    fi
    if [ $((SECONDS - t0)) -ge "$READY_TIMEOUT" ]; then
      tail -20 "$logf" >&2
      echo "run.sh: $s not ready after $READY_TIMEOUT s; log $logf" >&2
      return 1
    fi
    sleep 0.2
  done
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local pid=$SERVER_PID rc
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored SIGTERM for $STOP_TIMEOUT s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null && rc=0 || rc=$?
  log "stopped pid $pid (exit $rc)"
  SERVER_PID=""
  STOPPED_ONE=1
}

# ---- MODE=cluster: 3 members ---------------------------------------------------------
# leader_of: prints "<endpoint> <member name>" of the member whose endpoint status says
# MemberID == Leader (as ../shared/anchors/etcd-cluster.sh does); fails if none does.
leader_of() {
  local i ep f mid lid
  for i in 0 1 2; do
    ep=127.0.0.1:${CPORTS[$i]}
    f=$("$BIN/etcdctl" --endpoints="$ep" --dial-timeout=1s --command-timeout=3s endpoint status -w fields 2>/dev/null) || continue
    mid=$(awk -F' : ' '/^"MemberID"/{print $2}' <<< "$f")
    lid=$(awk -F' : ' '/^"Leader"/{print $2}' <<< "$f")
    if [ -n "$mid" ] && [ "$mid" != 0 ] && [ "$mid" = "$lid" ]; then echo "$ep ${MEMBERS[$i]}"; return 0; fi
  done
  return 1
}
# find_leader: sets LEADER_EP/LEADER_NAME (retrying up to $1 s, default 10)
find_leader() {
  local deadline=$((SECONDS + ${1:-10})) l
  while :; do
    if l=$(leader_of); then LEADER_EP=${l% *}; LEADER_NAME=${l#* }; return 0; fi
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
# follower_ep: the client endpoint of the first member that is not the leader
follower_ep() {
  local i
  for i in 0 1 2; do
    if [ "127.0.0.1:${CPORTS[$i]}" != "$LEADER_EP" ]; then echo "127.0.0.1:${CPORTS[$i]}"; return; fi
  done
}
dead_members() { # names of members whose process is gone
  local i out=""
  for i in 0 1 2; do kill -0 "${CLUSTER_PIDS[$i]:-0}" 2>/dev/null || out+=" ${MEMBERS[$i]}"; done
  echo "${out# }"
}
note_dead_members() { # $1 = server: records the dead members in $OUT/$1/FAILED (once)
  local d; d=$(dead_members)
  [ -n "$d" ] || return 1
  grep -q 'died' "$OUT/$1/FAILED" 2>/dev/null && return 0
  cluster_log_tails "$OUT/$1"
  echo "member(s) $d died during the suite (logs$(for m in $d; do printf ' %s' "$OUT/$1/$m.log"; done))" >> "$OUT/$1/FAILED"
}
cluster_log_tails() { # $1 = log dir
  local m
  for m in "${MEMBERS[@]}"; do echo "--- $1/$m.log (last 20 lines)"; tail -20 "$1/$m.log" 2>/dev/null; done >&2
}

start_cluster() { # $1=server $2=data root $3=log dir
  local s=$1 root=$2 logd=$3 extra i m rc t0 dead
  check_ports
  rm -rf "$root"; mkdir -p "$root" "$logd"
  if [ "$s" = etcd ]; then extra=${ETCD_FLAGS:-}; else extra=${CAIRN_FLAGS:-}; fi
  CLUSTER_PIDS=()
  for i in 0 1 2; do
    m=${MEMBERS[$i]}
    # shellcheck disable=SC2086
    nice -n "$NICE" "${SRV_BIN[$s]}" --name "$m" --data-dir "$root/$m" \
      --listen-client-urls "http://127.0.0.1:${CPORTS[$i]}" --advertise-client-urls "http://127.0.0.1:${CPORTS[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${PPORTS[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${PPORTS[$i]}" \
      --initial-cluster "$INITIAL_CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
      --log-level warn $extra > "$logd/$m.log" 2>&1 < /dev/null &
    CLUSTER_PIDS+=($!)
  done
  t0=$SECONDS
  while :; do
    dead=""
    for i in 0 1 2; do kill -0 "${CLUSTER_PIDS[$i]}" 2>/dev/null || dead+=" ${MEMBERS[$i]}"; done
    if [ -n "$dead" ]; then
      cluster_log_tails "$logd"
      echo "run.sh: $s member(s)$dead exited before the cluster became ready; logs $logd/m{1,2,3}.log" >&2
      stop_cluster; return 1
    fi
    # every member healthy (Range + AlarmList), or at least answering a linearizable get
    if { "$BIN/etcdctl" --endpoints="$ALL_EPS" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1 \
         || ( for i in 0 1 2; do "$BIN/etcdctl" --endpoints="127.0.0.1:${CPORTS[$i]}" --dial-timeout=1s --command-timeout=2s \
                get cairn-bench-ready-probe >/dev/null 2>&1 || exit 1; done ); } \
       && find_leader 0; then
      log "$s cluster ready ($((SECONDS - t0)) s; pids ${CLUSTER_PIDS[*]}; leader $LEADER_NAME $LEADER_EP; data $root)"
      return 0
    fi
    if [ $((SECONDS - t0)) -ge "$READY_TIMEOUT" ]; then
      "$BIN/etcdctl" --endpoints="$ALL_EPS" --dial-timeout=1s --command-timeout=2s endpoint health >&2 || true
      "$BIN/etcdctl" --endpoints="$ALL_EPS" --dial-timeout=1s --command-timeout=2s endpoint status -w table >&2 || true
      cluster_log_tails "$logd"
      echo "run.sh: $s cluster not ready (all healthy + a leader in endpoint status) after $READY_TIMEOUT s; logs $logd/m{1,2,3}.log" >&2
      stop_cluster; return 1
    fi
    sleep 0.2
  done
}

stop_cluster() { # SIGTERM all members at once, wait; SIGKILL after STOP_TIMEOUT
  [ "${#CLUSTER_PIDS[@]}" -gt 0 ] || return 0
  local i p rc any msg=""
  for p in "${CLUSTER_PIDS[@]}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
    any=0; for p in "${CLUSTER_PIDS[@]}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && any=1; done
    [ $any = 1 ] || break; sleep 0.1
  done
  for i in "${!CLUSTER_PIDS[@]}"; do
    p=${CLUSTER_PIDS[$i]}; [ -n "$p" ] || continue
    if kill -0 "$p" 2>/dev/null; then log "${MEMBERS[$i]} pid $p ignored SIGTERM for $STOP_TIMEOUT s: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null && rc=0 || rc=$?
    msg+=" ${MEMBERS[$i]}=$p(exit $rc)"
  done
  log "stopped cluster:$msg"
  STOP_MSG=$msg
  CLUSTER_PIDS=()
  STOPPED_ONE=1
}

kill_child() {
  local c
  for c in $(ps -o pid= --ppid "$CHILD_PID" 2>/dev/null); do kill -TERM "$c" 2>/dev/null || true; done
  kill -TERM "$CHILD_PID" 2>/dev/null || true
}
# Wait for the background job CHILD_PID; if the server dies meanwhile, stop the
# job at once instead of letting the benchmark retry until BENCH_TIMEOUT.
wait_child_or_server_death() {
  local rc=0
  while kill -0 "$CHILD_PID" 2>/dev/null; do
    if ! srv_alive; then
      log "server pid(s) $(srv_pids): one died during the test; stopping the benchmark"
      kill_child
      break
    fi
    sleep 0.2
  done
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  return $rc
}

# ---- the suite against one running server -----------------------------------------
run_suite() { # $1=server ; writes $OUT/$1/suite.tsv
  local s=$1 dir=$OUT/$1 line name clients conns reqs args rc idle b0 b1 s0 s1 scpu bcpu ocpu rss
  local eps=$EP wep=$EP cols="" extra="" i prev
  # MODE=cluster adds two columns: the leader at the start of the test, and the endpoints used
  if [ "$MODE" = cluster ]; then cols="\tleader\tendpoints"; wep=$LEADER_EP; fi
  printf "test\tclients\tconns\trequests\ttotal_s\tqps\tavg_ms\tp50_ms\tp99_ms\tp999_ms\terrors\trss_mib\tsrv_cpu_s\tbench_cpu_s\tother_cpu_s\tidle_before\trc$cols\n" > "$dir/suite.tsv"
  VAL256=$(head -c 256 /dev/zero | tr '\0' 'v')
  "$BIN/etcdctl" --endpoints="$wep" put "$RANGE_KEY" "$VAL256" > /dev/null 2> "$dir/seed.err" \
    || { cat "$dir/seed.err" >&2; log "$s: seed put failed; range tests will fail"; }
  if [ "$MODE" = cluster ]; then # a linearizable get on each member: all have applied the seed
    for i in 0 1 2; do
      "$BIN/etcdctl" --endpoints="127.0.0.1:${CPORTS[$i]}" get "$RANGE_KEY" > /dev/null 2>> "$dir/seed.err" \
        || log "$s: seed get on ${MEMBERS[$i]} failed: $(tail -1 "$dir/seed.err")"
    done
  fi
  for line in "${SUITE[@]}"; do
    IFS='|' read -r name clients conns reqs args <<< "$line"
    want "$name" || continue
    if ! srv_alive; then
      log "$s: server is gone, skipping $name"
      if [ "$MODE" = cluster ]; then
        note_dead_members "$s" || true
        extra="\t-\t-"
      else
        grep -q 'died' "$dir/FAILED" 2>/dev/null || echo "server died during the suite (see server-suite.log)" >> "$dir/FAILED"
      fi
      printf "%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tserver-dead$extra\n" "$name" "$clients" "$conns" "$reqs" >> "$dir/suite.tsv"
      continue
    fi
    if [ "$MODE" = cluster ]; then
      prev=$LEADER_NAME
      find_leader 10 || log "$s: no leader in endpoint status before $name; still using $prev $LEADER_EP"
      if [ "$LEADER_NAME" != "$prev" ]; then
        log "$s: LEADER CHANGED $prev -> $LEADER_NAME ($LEADER_EP) before $name"
        echo "$prev -> $LEADER_NAME before $name" >> "$dir/leader-changes"
      fi
      case "$name" in range-*) eps=$ALL_EPS ;; *-follower-*) eps=$(follower_ep) ;; *) eps=$LEADER_EP ;; esac
      extra="\t$LEADER_NAME\t$eps"
    fi
    idle=$(quiet_wait)
    b0=$(busy_ticks); s0=$(srv_ticks)
    rc=0
    # shellcheck disable=SC2086
    ( TIMEFORMAT='%U %S'
      time timeout "$BENCH_TIMEOUT" nice -n "$NICE" "$BIN/benchmark" --precise --endpoints="$eps" \
        --clients="$clients" --conns="$conns" $args > "$dir/$name.txt" 2>&1 ) 2> "$dir/$name.time" &
    CHILD_PID=$!
    wait_child_or_server_death || rc=$?
    b1=$(busy_ticks); s1=$(srv_ticks)
    bcpu=$(awk '{printf "%.1f", $1+$2}' "$dir/$name.time")
    scpu=$(awk -v a="$s0" -v b="$s1" -v t="$TICK" 'BEGIN{printf "%.2f", (b-a)/t}')
    ocpu=$(awk -v a="$b0" -v b="$b1" -v t="$TICK" -v s="$scpu" -v c="$bcpu" 'BEGIN{o=(b-a)/t-s-c; if(o<0)o=0; printf "%.1f", o}')
    rss=$(srv_rss)
    res=$("$ANCHORS/parse-bench.sh" "$dir/$name.txt")
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s$extra\n" "$name" "$clients" "$conns" "$reqs" "$res" \
      "$rss" "$scpu" "$bcpu" "$ocpu" "$idle" "$rc" >> "$dir/suite.tsv"
    log "$s $name: $(tr '\t' ' ' <<< "$res" | awk '{printf "%s req/s, p99 %s ms, errors %s", $2, $5, $7}') rss=${rss}MiB srv_cpu=${scpu}s other_cpu=${ocpu}s idle_before=${idle}% rc=$rc"
  done
}

# ---- main loop ----------------------------------------------------------------------
for s in $SERVERS; do
  mkdir -p "$OUT/$s"
  if [ "$MODE" = cluster ]; then
    log "=== $s: 3-member cluster, suite ($SELECTED)"
    if start_cluster "$s" "$WORK/$s-cluster" "$OUT/$s"; then
      echo "$(srv_rss)" > "$OUT/$s/idle-rss-mib"
      echo "$LEADER_NAME $LEADER_EP" > "$OUT/$s/leader-start"
      run_suite "$s"
      if note_dead_members "$s"; then :
      else
        prev=$LEADER_NAME
        if find_leader 10; then
          echo "$LEADER_NAME $LEADER_EP" > "$OUT/$s/leader-end"
          [ "$LEADER_NAME" = "$prev" ] || echo "$prev -> $LEADER_NAME after the last test" >> "$OUT/$s/leader-changes"
        else
          echo "none" > "$OUT/$s/leader-end"
        fi
      fi
      STOP_MSG=""
      stop_cluster
      echo "${STOP_MSG# }" > "$OUT/$s/member-exits"
      du -sb "$WORK/$s-cluster" | cut -f1 > "$OUT/$s/suite-datadir-bytes"
      [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$WORK/$s-cluster"
    else
      echo "cluster did not start (logs $OUT/$s/m1.log m2.log m3.log)" > "$OUT/$s/FAILED"
    fi
    continue
  fi
  if want_suite; then
    log "=== $s: suite ($SELECTED)"
    if start_server "$s" "$WORK/$s-suite" "$OUT/$s/server-suite.log"; then
      echo "$(srv_rss)" > "$OUT/$s/idle-rss-mib"
      run_suite "$s"
      stop_server
      du -sb "$WORK/$s-suite" | cut -f1 > "$OUT/$s/suite-datadir-bytes"
      rm -rf "$WORK/$s-suite"
    else
      echo "server did not start" > "$OUT/$s/FAILED"
    fi
  fi
  if want load-1m; then
    log "=== $s: load-1m ($LOAD_TOTAL keys, fresh data dir)"
    if start_server "$s" "$WORK/$s-load" "$OUT/$s/server-load.log"; then
      BIN=$BIN NICE=$NICE TOTAL=$LOAD_TOTAL CLIENTS=$LOAD_CLIENTS CONNS=$LOAD_CONNS LOAD_TIMEOUT=$LOAD_TIMEOUT \
        "$ANCHORS/load-1m.sh" "$OUT/$s/load-1m" "$EP" "$SERVER_PID" "$WORK/$s-load" > "$OUT/$s/load-1m.stdout" 2>&1 &
      CHILD_PID=$!
      wait_child_or_server_death || true
      sed 's/^/    /' "$OUT/$s/load-1m/load-1m.txt" >&2 || true
      stop_server
      [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$WORK/$s-load"
    else
      echo "server did not start (load)" >> "$OUT/$s/FAILED"
    fi
  fi
  if want lease-storm; then
    log "=== $s: lease-storm ($LEASE_STORM_LEASES leases, TTL $LEASE_STORM_TTL s, fresh data dir)"
    if start_server "$s" "$WORK/$s-lease" "$OUT/$s/server-lease.log"; then
      quiet_wait > /dev/null
      timeout "$LEASE_STORM_TIMEOUT" nice -n "$NICE" "$OUT/bin/leasestorm" --endpoints="$EP" \
        --leases="$LEASE_STORM_LEASES" --ttl="$LEASE_STORM_TTL" > "$OUT/$s/lease-storm.txt" 2> "$OUT/$s/lease-storm.log" &
      CHILD_PID=$!
      wait_child_or_server_death || true
      sed 's/^/    /' "$OUT/$s/lease-storm.txt" >&2 || true
      stop_server
      [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$WORK/$s-lease"
    else
      echo "server did not start (lease-storm)" >> "$OUT/$s/FAILED"
    fi
  fi
done

# ---- summary ----------------------------------------------------------------------------
field() { # server test column-name -> value from suite.tsv ("" if none)
  local f=$OUT/$1/suite.tsv
  [ -f "$f" ] || return 0
  awk -F'\t' -v t="$2" -v c="$3" 'NR==1{for(i=1;i<=NF;i++) col[$i]=i; next} $1==t{print $(col[c]); exit}' "$f"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a+0 > 0) printf "%.2f", b/a; else printf "-" }'; }
cell() { local v=$1; [ -n "$v" ] && echo "$v" || echo "-"; }
cpu_per_op() { # server test -> server CPU µs per request
  local c r; c=$(field "$1" "$2" srv_cpu_s); r=$(field "$1" "$2" requests)
  awk -v c="$c" -v r="$r" 'BEGIN{ if (c ~ /^[0-9.]+$/ && r+0 > 0) printf "%.0f", c*1e6/r; else printf "-" }'
}
qps_cell() { # QPS, flagged when the run had errors or a non-zero exit
  local q e rc; q=$(field "$1" "$2" qps); e=$(field "$1" "$2" errors); rc=$(field "$1" "$2" rc)
  q=$(cell "$q")
  if [ -n "$rc" ] && [ "$rc" != 0 ]; then q+=" (rc=$rc)"; fi
  if [ -n "$e" ] && [ "$e" != 0 ] && [ "$e" != - ]; then q+=" (${e} err)"; fi
  echo "$q"
}
storm_val() { # server key -> value from lease-storm.txt
  local f=$OUT/$1/lease-storm.txt
  [ -f "$f" ] || return 0
  awk -F= -v k="$2" '$1==k{print $2; exit}' "$f"
}
load_val() { # server key -> value from load-1m.txt
  local f=$OUT/$1/load-1m/load-1m.txt
  [ -f "$f" ] || { echo ""; return 0; }
  case "$2" in
    qps) awk -F' = ' '/^bench rc=/{split($2,a," "); print a[2]}' "$f" ;;
    p99) awk -F' = ' '/^bench rc=/{split($2,a," "); print a[5]}' "$f" ;;
    errors) awk -F' = ' '/^bench rc=/{split($2,a," "); print a[7]}' "$f" ;;
    load_s) awk -F' = ' '/^bench rc=/{split($2,a," "); print a[1]}' "$f" ;;
    rss) awk '/^after-load /{for(i=1;i<=NF;i++) if($i ~ /^VmRSS=/){sub(/VmRSS=/,"",$i); sub(/MiB/,"",$i); print $i}}' "$f" ;;
    hwm) awk '/^after-load /{for(i=1;i<=NF;i++) if($i ~ /^VmHWM=/){sub(/VmHWM=/,"",$i); sub(/MiB/,"",$i); print $i}}' "$f" ;;
    rss_idle) awk '/^after-10s-idle /{for(i=1;i<=NF;i++) if($i ~ /^VmRSS=/){sub(/VmRSS=/,"",$i); sub(/MiB/,"",$i); print $i}}' "$f" ;;
    du) awk '/^du /{printf "%.1f", $(NF-2)/1e6}' "$f" ;;
    dbsize) awk -F' : ' '/"DBSize"/{printf "%.1f", $2/1e6}' "$f" ;;
    keys) awk -F': ' '/^key count:/{print $2}' "$f" ;;
  esac
}

SUMMARY=$OUT/summary.md
cluster_summary() {
  local s line name clients conns reqs eps
  echo "# cairn vs etcd: 3-member cluster on 127.0.0.1 (writes -> leader, reads -> all three)"
  echo
  echo "command: \`$CMDLINE\`"
  echo
  sed 's/^/    /' "$OUT/versions.txt"
  echo
  echo "Members m1 m2 m3: clients ${ALL_EPS//,/ }, peers ${CLUSTER_PEER_PORTS// /\/}; flags for both servers:"
  echo "\`--initial-cluster $INITIAL_CLUSTER --initial-cluster-state new --initial-cluster-token bench --log-level warn\`."
  for s in $SERVERS; do
    [ -f "$OUT/$s/leader-start" ] || continue
    printf -- "- %s: leader %s at start, %s at end" "$s" "$(cut -d' ' -f1 "$OUT/$s/leader-start")" \
      "$(cut -d' ' -f1 "$OUT/$s/leader-end" 2>/dev/null || echo '?')"
    if [ -s "$OUT/$s/leader-changes" ]; then printf "; **leader changed**: %s" "$(paste -sd';' "$OUT/$s/leader-changes")"; fi
    printf "; idle RSS MiB m1/m2/m3 %s; exit codes at stop (SIGTERM): %s\n" "$(cat "$OUT/$s/idle-rss-mib" 2>/dev/null || echo -)" \
      "$(cat "$OUT/$s/member-exits" 2>/dev/null || echo -)"
  done
  echo
  echo "## Throughput and latency (ratio = cairn QPS / etcd QPS: >1 means cairn is faster)"
  echo
  echo "| test | etcd QPS | cairn QPS | ratio (cairn/etcd) | etcd p99 ms | cairn p99 ms | etcd p50 ms | cairn p50 ms | clients/conns | requests | to | srv CPU µs/op (3 members) etcd / cairn | other CPU s etcd / cairn |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|"
  for line in "${SUITE[@]}"; do
    IFS='|' read -r name clients conns reqs _ <<< "$line"
    want "$name" || continue
    case "$name" in range-*) eps="all 3" ;; *-follower-*) eps="follower" ;; *) eps="leader" ;; esac
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s/%s | %s | %s | %s / %s | %s / %s |\n" "$name" \
      "$(qps_cell etcd "$name")" "$(qps_cell cairn "$name")" \
      "$(ratio "$(field etcd "$name" qps)" "$(field cairn "$name" qps)")" \
      "$(cell "$(field etcd "$name" p99_ms)")" "$(cell "$(field cairn "$name" p99_ms)")" \
      "$(cell "$(field etcd "$name" p50_ms)")" "$(cell "$(field cairn "$name" p50_ms)")" \
      "$clients" "$conns" "$reqs" "$eps" \
      "$(cpu_per_op etcd "$name")" "$(cpu_per_op cairn "$name")" \
      "$(cell "$(field etcd "$name" other_cpu_s)")" "$(cell "$(field cairn "$name" other_cpu_s)")"
  done
  echo
  echo "Server CPU is user+sys of the three member processes together, per request."
  echo "\"other CPU s\" is CPU used by other processes on the machine during the test: large values mean the number is disturbed."
  echo
  for s in $SERVERS; do
    if [ -f "$OUT/$s/FAILED" ]; then echo "**$s: $(paste -sd';' "$OUT/$s/FAILED")** (logs in $OUT/$s/)"; echo; fi
  done
  echo "Raw outputs: $OUT/<server>/ (suite.tsv, <test>.txt, m1.log m2.log m3.log, leader-*, member-exits)."
}
if [ "$MODE" = cluster ]; then cluster_summary > "$SUMMARY"; else
{
  echo "# cairn vs etcd"
  echo
  echo "command: \`$CMDLINE\`"
  echo
  sed 's/^/    /' "$OUT/versions.txt"
  echo
  if want_suite; then
    echo "## Throughput and latency (ratio = cairn QPS / etcd QPS: >1 means cairn is faster)"
    echo
    echo "| test | etcd QPS | cairn QPS | ratio (cairn/etcd) | etcd p99 ms | cairn p99 ms | clients/conns | requests | srv CPU µs/op etcd / cairn | other CPU s etcd / cairn |"
    echo "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"
    for line in "${SUITE[@]}"; do
      IFS='|' read -r name clients conns reqs _ <<< "$line"
      want "$name" || continue
      printf "| %s | %s | %s | %s | %s | %s | %s/%s | %s | %s / %s | %s / %s |\n" "$name" \
        "$(qps_cell etcd "$name")" "$(qps_cell cairn "$name")" \
        "$(ratio "$(field etcd "$name" qps)" "$(field cairn "$name" qps)")" \
        "$(cell "$(field etcd "$name" p99_ms)")" "$(cell "$(field cairn "$name" p99_ms)")" \
        "$clients" "$conns" "$reqs" \
        "$(cpu_per_op etcd "$name")" "$(cpu_per_op cairn "$name")" \
        "$(cell "$(field etcd "$name" other_cpu_s)")" "$(cell "$(field cairn "$name" other_cpu_s)")"
    done
    echo
    echo "Idle RSS at start (MiB): etcd $(cat "$OUT/etcd/idle-rss-mib" 2>/dev/null || echo -), cairn $(cat "$OUT/cairn/idle-rss-mib" 2>/dev/null || echo -)."
    echo "\"other CPU s\" is CPU used by other processes on the machine during the test: large values mean the number is disturbed."
    echo
  fi
  if want load-1m; then
    echo "## After loading $LOAD_TOTAL keys (8 B sequential keys, 256 B values, $LOAD_CLIENTS clients/$LOAD_CONNS conns, fresh data dir)"
    echo
    echo "Memory/disk ratio = cairn / etcd: **lower is better** (<1 means cairn uses less). Load-QPS ratio: higher is better."
    echo
    echo "| metric | etcd | cairn | ratio (cairn/etcd) |"
    echo "|---|---:|---:|---:|"
    for m in "rss|VmRSS after load, MiB" "rss_idle|VmRSS after 10 s idle, MiB" "hwm|VmHWM (peak RSS), MiB" \
             "du|data dir (du -sb), MB" "dbsize|DBSize (endpoint status), MB" \
             "qps|load QPS (higher is better)" "p99|load p99 ms" "load_s|load time s" "errors|load errors" "keys|key count"; do
      IFS='|' read -r k label <<< "$m"
      e=$(load_val etcd "$k"); c=$(load_val cairn "$k")
      r="-"; case "$k" in rss|rss_idle|hwm|du|dbsize|qps) r=$(ratio "$e" "$c") ;; esac
      printf "| %s | %s | %s | %s |\n" "$label" "$(cell "$e")" "$(cell "$c")" "$r"
    done
    echo
  fi
  if want lease-storm; then
    echo "## Lease expiry storm ($LEASE_STORM_LEASES leases with one key each, TTL $LEASE_STORM_TTL s, granted in a burst; 100 writers, 256 B puts)"
    echo
    echo "| metric | etcd | cairn | ratio (cairn/etcd) |"
    echo "|---|---:|---:|---:|"
    for m in "grant_s|grant+put burst, s" "steady_qps|puts/s before expiry" "storm_qps|puts/s during the storm" \
             "storm_over_steady|storm / steady (target >= 0.8)" "steady_p99_ms|p99 ms before" "storm_p99_ms|p99 ms during" \
             "revoke_rate|leases revoked per s" "drain_s|time to revoke all, s" "left_after_drain|keys left"; do
      IFS='|' read -r k label <<< "$m"
      e=$(storm_val etcd "$k"); c=$(storm_val cairn "$k")
      r="-"; case "$k" in steady_qps|storm_qps|storm_over_steady) r=$(ratio "$e" "$c") ;; esac
      printf "| %s | %s | %s | %s |\n" "$label" "$(cell "$e")" "$(cell "$c")" "$r"
    done
    echo
  fi
  for s in $SERVERS; do
    if [ -f "$OUT/$s/FAILED" ]; then echo "**$s: $(paste -sd';' "$OUT/$s/FAILED")** (logs in $OUT/$s/)"; echo; fi
  done
  echo "Raw outputs: $OUT/<server>/ (suite.tsv, <test>.txt, load-1m/, server-*.log)."
} > "$SUMMARY"
fi
echo
cat "$SUMMARY"

# exit status: 1 if a server failed to start or died, 3 if a benchmark failed or had errors
for s in $SERVERS; do
  if [ -f "$OUT/$s/FAILED" ]; then echo "run.sh: FAILED: $s: $(paste -sd';' "$OUT/$s/FAILED")" >&2; exit 1; fi
done
bad=""
for s in $SERVERS; do
  if [ -f "$OUT/$s/suite.tsv" ]; then
    bad+=$(awk -F'\t' -v s="$s" 'NR>1 && ($17 != "0" || ($11 != "0" && $11 != "-")) {printf " %s/%s(rc=%s,errors=%s)", s, $1, $17, $11}' "$OUT/$s/suite.tsv")
  fi
  if [ -f "$OUT/$s/load-1m/load-1m.txt" ]; then
    e=$(load_val "$s" errors); q=$(load_val "$s" qps)
    if [ "${e:-x}" != 0 ] || [ -z "$q" ] || [ "$q" = - ]; then bad+=" $s/load-1m(errors=${e:-?},qps=${q:-?})"; fi
  elif want load-1m; then bad+=" $s/load-1m(no output)"; fi
  if want lease-storm; then
    l=$(storm_val "$s" left_after_drain)
    if [ "${l:-x}" != 0 ]; then bad+=" $s/lease-storm(left=${l:-no output})"; fi
  fi
done
if [ -n "$bad" ]; then echo "run.sh: some benchmarks failed or had errors:$bad" >&2; exit 3; fi
