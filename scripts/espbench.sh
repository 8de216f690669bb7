#!/usr/bin/env bash
# Encrypted against plain, in one run (issue 18): two `vxmesh run` nodes (release build) in a
# namespace lab, a plain network (c11 -> c21) and an encrypted one (s11 -> s21), AF_XDP containers
# on both; iperf3 TCP on each, alternating, RUNS times; the nodes' CPU (utime + stime from
# /proc/PID/stat) over each run. Prints throughput and CPU seconds per gigabit for both, and the
# ratios; writes them to target/espbench/<timestamp>.md. Root. Usage:
#   scripts/espbench.sh [--runs N (3)] [--seconds S (10)] [--only plain|encrypted]
#                       [--transport esp|udp (esp: IP protocol 50; udp: ESP in UDP 4500)]
# Everything lives in namespaces with the prefix `eb$$-`, removed (and the processes it started
# killed by PID) on exit, also on error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 secs=10 sides="plain encrypted" transport=esp
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --only) sides=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--seconds S] [--only plain|encrypted]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "espbench.sh needs root (namespaces, AF_XDP, raw sockets)" >&2; exit 2; }
. scripts/packages.sh
need_packages iperf3 iproute2 protobuf-compiler libprotobuf-dev
cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-lab
target="${CARGO_TARGET_DIR:-target}/release"
P="eb$$-"
. scripts/procs.sh
pids=()
dir=$(mktemp -d)
cfg="$dir/cluster.toml"
cleanup() {
  stop_pids "${pids[@]:-}"
  "$target/vxmesh-lab" lab down --config "$cfg" --prefix "$P" >/dev/null 2>&1 || true
  rm_node_files "$P" n1 n2
  rm -rf "$dir"
}
# On an interrupt, clean up once and stop (a trap on INT alone would run the cleanup and carry on).
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
{
  sed "s/{P}/$P/g" tests/fixtures/cluster.toml | sed '/^\[\[ingress\]\]/,$d'
  cat <<EOF
[[network]]
name = "secnet"
vni = 4098
subnet = "10.0.10.0/24"
encrypted = true

[[endpoint]]
name = "s11"
node = "n1"
network = "secnet"
ip = "10.0.10.11"
attach = "afxdp:vs11"
netns = "${P}s11"

[[endpoint]]
name = "s21"
node = "n2"
network = "secnet"
ip = "10.0.10.21"
attach = "afxdp:vs21"
netns = "${P}s21"

[encryption]
keys = ["$(head -c 20 /dev/urandom | base64)"]
transport = "$transport"
EOF
} > "$cfg"
"$target/vxmesh-lab" lab up --config "$cfg" --prefix "$P" >/dev/null
for n in n1 n2; do
  ip netns exec "${P}$n" "$target/vxmesh" run --config "$cfg" --node "$n" \
    --control "/run/vxmesh/${P}$n.sock" 2>"$dir/$n.log" &
  pids+=($!)
done
for n in n1 n2; do
  for _ in $(seq 100); do [ -S "/run/vxmesh/${P}$n.sock" ] && break; sleep 0.1; done
  [ -S "/run/vxmesh/${P}$n.sock" ] || { cat "$dir/$n.log" >&2; exit 1; }
done
node_pids=("${pids[@]}")
for ns in c21 s21; do
  ip netns exec "${P}$ns" iperf3 -s -p 5201 >/dev/null 2>&1 &
  pids+=($!)
done
sleep 1
ip netns exec "${P}c11" ping -c 2 -W 2 10.0.9.21 >/dev/null
ip netns exec "${P}s11" ping -c 2 -W 2 10.0.10.21 >/dev/null
ticks() { # utime + stime of the two nodes, in clock ticks
  local t=0 p
  for p in "${node_pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)
declare -A gbps cpu
for r in $(seq "$runs"); do
  for side in $sides; do
    if [ $side = plain ]; then ns=c11 dst=10.0.9.21; else ns=s11 dst=10.0.10.21; fi
    t0=$(ticks)
    bps=$(timeout $((secs + 15)) ip netns exec "${P}$ns" iperf3 -c "$dst" -p 5201 -t "$secs" -J | \
      python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    t1=$(ticks)
    g=$(python3 -c "print(f'{$bps/1e9:.3f}')")
    c=$(python3 -c "print(f'{($t1-$t0)/$hz/($bps*$secs/1e9):.3f}')")
    gbps[$side]="${gbps[$side]:-} $g"; cpu[$side]="${cpu[$side]:-} $c"
    echo "run $r $side: $g Gbit/s, $c CPU s per Gbit (both nodes)"
  done
done
[ "$sides" = "plain encrypted" ] || exit 0
out="${CARGO_TARGET_DIR:-target}/espbench"; mkdir -p "$out"
report="$out/$(date +%Y%m%d-%H%M%S).md"
python3 - "$runs" "$secs" "${gbps[plain]}" "${gbps[encrypted]}" "${cpu[plain]}" "${cpu[encrypted]}" "$transport" > "$report" <<'EOF'
import statistics, sys
runs, secs = sys.argv[1], sys.argv[2]
gp, ge, cp, ce = ([float(x) for x in a.split()] for a in sys.argv[3:7])
m = statistics.median
print(f"# Encrypted (transport {sys.argv[7]}) against plain: TCP, AF_XDP containers, {runs} runs of {secs} s, alternating\n")
print("| | plain | encrypted | encrypted / plain |\n|---|---|---|---|")
print(f"| TCP throughput, Gbit/s (median; runs) | {m(gp):.2f} ({', '.join(f'{x:.2f}' for x in gp)}) | {m(ge):.2f} ({', '.join(f'{x:.2f}' for x in ge)}) | {m(ge)/m(gp):.2f} |")
print(f"| CPU s per Gbit, both nodes (median) | {m(cp):.3f} | {m(ce):.3f} | {m(ce)/m(cp):.2f} |")
EOF
cat "$report"
echo "written: $report"
