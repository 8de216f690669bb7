#!/usr/bin/env bash
# The receive deferral's trade-off as a curve (`vxmesh run --afxdp-napi-defer-us`, issue 20):
# for each deferral, `vxmesh-compare --only vxmesh` on the comparison's lab (ping at 500/s, the
# 64-byte UDP flood with its CPU accounting, HTTP through the VIP), --runs R each, the values
# alternated in order set by set. Medians over every run of a value in
# target/napi-defer/<UTC timestamp>/results.md, raw per-run JSON beside it, and the curves
# (CPU per packet, ping, HTTP against the deferral) in curves.svg (scripts/plot-napi-defer.py).
# Root. Usage: scripts/napi-defer.sh [--sets N] [--runs R] [--values "0 25 50 100 200 400"]
#   [--vxmesh PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "napi-defer.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

sets=2
runs=1
values="0 25 50 100 200 400"
vxmesh=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sets) sets="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --values) values="$2"; shift 2 ;;
    --vxmesh) vxmesh="$2"; shift 2 ;;
    *) echo "napi-defer.sh: unknown argument $1 (--sets N, --runs R, --values LIST, --vxmesh PATH)" >&2; exit 2 ;;
  esac
done

. scripts/packages.sh
need_packages iperf3 nginx-light wrk nftables iproute2 iputils-ping conntrack python3 protobuf-compiler libprotobuf-dev

cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-compare
target="${CARGO_TARGET_DIR:-target}"
[ -n "$vxmesh" ] || vxmesh="$target/release/vxmesh"
out="$target/napi-defer/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "napi-defer: values ($values) us, $sets sets of --runs $runs, into $out"

for s in $(seq 1 "$sets"); do
  order=$values
  # Every other set runs the values backwards, so no value always follows the same one.
  [ $((s % 2)) -eq 0 ] && order=$(echo "$values" | tr ' ' '\n' | tac | tr '\n' ' ')
  for v in $order; do
    echo "napi-defer: set $s, --afxdp-napi-defer-us $v"
    "$target/release/vxmesh-compare" --only vxmesh --runs "$runs" --tests ping,udp64,http \
      --afxdp-napi-defer-us "$v" --vxmesh "$vxmesh" --out "$out/s$s-d$v" > "$out/s$s-d$v.log" 2>&1 \
      || { echo "napi-defer: the run failed, see $out/s$s-d$v.log" >&2; exit 1; }
  done
done
python3 scripts/plot-napi-defer.py "$out" "$values"
echo "napi-defer: $out/results.md, $out/curves.svg"
