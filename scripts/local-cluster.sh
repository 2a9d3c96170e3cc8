#!/usr/bin/env bash
# Runs a 3-member Cairn cluster on this machine (127.0.0.1), the way the
# README describes.
#
#   scripts/local-cluster.sh start [DATA_ROOT]   # build, start 3 members, wait until healthy
#   scripts/local-cluster.sh stop                # SIGTERM all three
#   scripts/local-cluster.sh status              # etcdctl endpoint status for each member
#
# Clients: 127.0.0.1:12379, :22379, :32379; peers: :12380, :22380, :32380.
# Logs: DATA_ROOT/m{1,2,3}.log (DATA_ROOT defaults to ./local-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${2:-${DATA_ROOT:-$PWD/local-cluster}}
ENDPOINTS=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
CLUSTER=m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380

ctl() { go tool etcdctl --endpoints "$ENDPOINTS" "$@"; }

case "${1:-}" in
start)
  mkdir -p "$ROOT" bin
  go build -o bin/cairn ./cmd/cairn
  for i in 1 2 3; do
    ./bin/cairn --name m$i --data-dir "$ROOT/m$i.cairn" \
      --listen-client-urls http://127.0.0.1:${i}2379 --advertise-client-urls http://127.0.0.1:${i}2379 \
      --listen-peer-urls http://127.0.0.1:${i}2380 --initial-advertise-peer-urls http://127.0.0.1:${i}2380 \
      --initial-cluster "$CLUSTER" --initial-cluster-token cairn-local --initial-cluster-state new ${CAIRN_EXTRA_FLAGS:-} \
      >"$ROOT/m$i.log" 2>&1 &
    echo $! >"$ROOT/m$i.pid"
  done
  for _ in $(seq 1 60); do
    if ctl endpoint health >/dev/null 2>&1; then
      ctl endpoint status -w table
      exit 0
    fi
    sleep 0.5
  done
  echo "cluster did not become healthy; see $ROOT/m*.log" >&2
  exit 1
  ;;
stop)
  for i in 1 2 3; do
    [ -f "$ROOT/m$i.pid" ] && kill "$(cat "$ROOT/m$i.pid")" 2>/dev/null || true
    rm -f "$ROOT/m$i.pid"
  done
  ;;
status)
  ctl endpoint status -w table
  ;;
*)
  echo "usage: $0 start|stop|status [DATA_ROOT]" >&2
  exit 2
  ;;
esac
