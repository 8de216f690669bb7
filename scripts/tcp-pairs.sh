#!/usr/bin/env bash
# TCP between every kind of container pair vxmesh serves (issue 20, part 2): on one node and
# across the underlay, AF_XDP and TAP containers each way. Two real nodes in namespaces (the
# shared fixture: c11 AF_XDP and c12 TAP on n1, c21 AF_XDP and c22 TAP on n2). For each binary
# the nodes are started afresh; each pair runs iperf3 for --secs seconds. With --before PATH,
# the two binaries alternate (after, before, before, after, ...) for an A/B on one machine.
# Reported: the median Gbit/s of each pair and binary, and the AF_XDP ports' super-frame
# counters (tx_gro_frames, tx_gso_frames, rx_gso_frames). --args/--before-args give each binary's
# nodes extra `vxmesh run` arguments (e.g. --args --afxdp-offloads with --before the same binary,
# for an A/B of an option). Root. Results: target/tcp-pairs/<UTC timestamp>/.
# Usage: scripts/tcp-pairs.sh [--runs N] [--secs S] [--vxmesh PATH] [--before PATH]
#   [--args "ARGS"] [--before-args "ARGS"]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "tcp-pairs.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

runs=3
secs=3
vxmesh=""
before=""
after_args=""
before_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --secs) secs="$2"; shift 2 ;;
    --vxmesh) vxmesh="$2"; shift 2 ;;
    --before) before="$2"; shift 2 ;;
    --args) after_args="$2"; shift 2 ;;
    --before-args) before_args="$2"; shift 2 ;;
    *) echo "tcp-pairs.sh: unknown argument $1 (--runs N, --secs S, --vxmesh PATH, --before PATH, --args ARGS, --before-args ARGS)" >&2; exit 2 ;;
  esac
done

. scripts/packages.sh
need_packages iproute2 iputils-ping iperf3 python3 protobuf-compiler libprotobuf-dev

if [ -z "$vxmesh" ]; then
  cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-lab
  vxmesh="${CARGO_TARGET_DIR:-target}/release/vxmesh"
fi
after="$vxmesh"

P="vxt$$-"
out="target/tcp-pairs/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
srv_pid=""
lab_extra_cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null || true
}
. scripts/lab-nodes.sh

# from to to_ip: on one node, then across the underlay.
pairs=(
  "c12 c11 10.0.9.11"
  "c11 c12 10.0.9.12"
  "c11 c21 10.0.9.21"
  "c11 c22 10.0.9.22"
  "c12 c21 10.0.9.21"
  "c12 c22 10.0.9.22"
)
order=(after)
[ -n "$before" ] && order=(after before before after)
echo "binary,run,from,to,gbps" > "$out/runs.csv"
for ((r = 1; r <= runs; r++)); do
  for which in "${order[@]}"; do
    if [ "$which" = after ]; then vxmesh="$after"; args="$after_args"; else vxmesh="$before"; args="$before_args"; fi
    # shellcheck disable=SC2086 # the arguments are words
    start_nodes $args
    for pair in "${pairs[@]}"; do
      read -r from to ip <<<"$pair"
      ip netns exec "${P}$to" iperf3 -s -1 -p 5301 >/dev/null 2>&1 &
      srv_pid=$!
      sleep 0.3
      json="$out/$which-r$r-$from-$to.json"
      gbps=0
      if ip netns exec "${P}$from" timeout $((secs + 10)) iperf3 -c "$ip" -p 5301 -t "$secs" -J >"$json" 2>/dev/null; then
        gbps=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['end']['sum_received']['bits_per_second']/1e9, 2))" "$json")
      fi
      kill "$srv_pid" 2>/dev/null || true
      wait "$srv_pid" 2>/dev/null || true
      srv_pid=""
      echo "$which,$r,$from,$to,$gbps" >> "$out/runs.csv"
      echo "$which run $r: $from -> $to $gbps Gbit/s"
    done
    for n in n1 n2; do
      "$vxmesh" stats --control "/run/vxmesh/${P}$n.sock" --json > "$out/$which-r$r-stats-$n.json" || true
    done
    stop_nodes
  done
done

python3 - "$out" <<'EOF' | tee "$out/results.md"
import csv, json, glob, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/runs.csv")))
binaries = sorted({r["binary"] for r in rows}, key=lambda b: b != "before")
pairs = list(dict.fromkeys((r["from"], r["to"]) for r in rows))
print("| pair | " + " | ".join(f"{b}: median Gbit/s (min-max)" for b in binaries)
      + (" | after / before |" if len(binaries) == 2 else " |"))
print("|---" * (len(binaries) + 1 + (len(binaries) == 2)) + "|")
for f, t in pairs:
    med = {}
    cells = []
    for b in binaries:
        v = [float(r["gbps"]) for r in rows if r["binary"] == b and (r["from"], r["to"]) == (f, t)]
        med[b] = statistics.median(v)
        cells.append(f"{med[b]:.2f} ({min(v):.2f}-{max(v):.2f})")
    ratio = f" | {med['after'] / med['before']:.2f}" if len(binaries) == 2 and med["before"] else ""
    print(f"| {f} -> {t} | " + " | ".join(cells) + ratio + " |")
for b in binaries:
    tot = {}
    for path in glob.glob(f"{out}/{b}-r*-stats-*.json"):
        for p in json.load(open(path))["ports"]:
            for k in ("tx_gro_frames", "tx_gro_segments", "tx_gso_frames", "rx_gso_frames"):
                if k in p.get("counters", {}) and p["name"] in ("c11", "c21"):
                    tot[k] = tot.get(k, 0) + p["counters"][k]
    print(f"\n{b}: AF_XDP ports' super-frame counters over its runs: {tot or 'none (no such counters)'}")
EOF
echo "results: $out/results.md"
