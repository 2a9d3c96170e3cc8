# bench/lib.sh: what bench/run.sh and bench/watch.sh share (sourced, not run).
# Needs: BIN (etcd, etcdctl, benchmark), OUT, ROOT, CAIRN_REV, CAIRN_BIN (optional),
# QUIET_IDLE, QUIET_MAX.

# write_versions: the machine and the binaries of this run, into $OUT/versions.txt.
write_versions() {
  {
    echo "date: $(date -u +%FT%TZ)  host: $(hostname)  nproc: $(nproc)  $(go version 2>/dev/null || true)"
    echo "cpu: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)  mem: $(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    if [ -n "${CAIRN_BIN:-}" ]; then echo "cairn: $CAIRN_BIN (prebuilt)"; else echo "cairn source: $CAIRN_REV"; fi
    echo "etcd: $("$BIN/etcd" --version 2>/dev/null | sed -n 1p)"
    echo "etcdctl: $("$BIN/etcdctl" version 2>/dev/null | sed -n 1p)"
    [ -f "$BIN/VERSIONS" ] && grep '^benchmark:' "$BIN/VERSIONS"
  } > "$OUT/versions.txt" 2>&1 || true
}

# ---- machine load accounting (as in ../shared/anchors/bench-etcd.sh) ----------------
TICK=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# idle_pct S: the machine's idle % over the next S seconds.
idle_pct() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat); sleep "$1"
  b=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); t=y[1]-x[1]; printf "%.0f", (t>0?100*(y[2]-x[2])/t:100)}'
}
# quiet_wait: wait up to QUIET_MAX s for the machine to be QUIET_IDLE % idle; prints the idle %.
quiet_wait() {
  [ "$QUIET_IDLE" -gt 0 ] || { echo "-"; return; }
  local deadline=$((SECONDS + QUIET_MAX)) i
  while :; do
    i=$(idle_pct 1)
    if [ "$i" -ge "$QUIET_IDLE" ] || [ $SECONDS -ge $deadline ]; then echo "$i"; return; fi
  done
}
