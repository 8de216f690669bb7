#!/usr/bin/env bash
# Latency and CPU against packet rate (issue 20, goal 1): the busy-poll policies of `vxmesh run`
# side by side on one lab. Two real nodes in namespaces (the shared fixture); for each policy the
# nodes are started afresh, then
#   - idle: no traffic for 10 s, CPU of both node processes (% of one core, summed);
#   - for each ping interval (10, 5, 2, 1, 0.5 ms): ping c11 -> c21 (AF_XDP containers on the two
#     nodes), p50 and p99 of the RTTs, and the nodes' CPU during the ping.
# Policies: fixed (--busy-poll-max-us 200: a 200 µs window, the old default), adaptive (the
# default, --busy-poll-max-us 5000: the window follows the gaps between frames up to 5 ms),
# polling (--busy-poll-us max: never sleeps). Repeated --runs times, alternating the
# order; medians in target/latency/<UTC timestamp>/results.md (raw numbers in raw.tsv), and as
# curves in curves.svg (scripts/plot-latency.py).
# Root. Usage: scripts/latency.sh [--runs N] [--count N] [--vxmesh PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "latency.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

runs=3
count=600
vxmesh=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --vxmesh) vxmesh="$2"; shift 2 ;;
    *) echo "latency.sh: unknown argument $1 (--runs N, --count N, --vxmesh PATH)" >&2; exit 2 ;;
  esac
done

. scripts/packages.sh
need_packages iproute2 iputils-ping python3 protobuf-compiler libprotobuf-dev

if [ -z "$vxmesh" ]; then
  cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-lab
  vxmesh="${CARGO_TARGET_DIR:-target}/release/vxmesh"
fi

P="vxl$$-"
out="target/latency/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
. scripts/lab-nodes.sh

# CPU ticks (user + system) of the node processes.
ticks() {
  local t=0 p f
  for p in "${pids[@]}"; do
    read -r -a f < "/proc/$p/stat"
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)
cpu_pct() { # TICKS SECONDS -> percent of one core
  awk -v t="$1" -v s="$2" -v hz="$hz" 'BEGIN { printf "%.1f", 100 * t / hz / s }'
}

measure() { # POLICY RUN ARGS...
  local policy="$1" run="$2"; shift 2
  start_nodes "$@"
  sleep 2
  local t0 t1 s0 s1
  t0=$(ticks); s0=$(date +%s.%N)
  sleep 10
  t1=$(ticks); s1=$(date +%s.%N)
  printf '%s\t%s\tidle\t-\t-\t%s\n' "$policy" "$run" \
    "$(cpu_pct $((t1 - t0)) "$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')")" >> "$out/raw.tsv"
  for iv in 0.01 0.005 0.002 0.001 0.0005; do
    n=$(awk -v c="$count" -v i="$iv" 'BEGIN { n = int(3 / i); print (n < c ? n : c) }')
    t0=$(ticks); s0=$(date +%s.%N)
    rtts=$(ip netns exec "${P}c11" ping -c "$n" -i "$iv" -W 1 10.0.9.21 2>/dev/null |
      sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' || true)
    t1=$(ticks); s1=$(date +%s.%N)
    read -r p50 p99 < <(printf '%s\n' "$rtts" | sort -g | awk '
      { v[NR] = $1 * 1000 }
      END { if (NR == 0) { print "- -"; exit }
            i50 = int(0.5 * NR + 0.5); i99 = int(0.99 * NR + 0.5)
            if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
            printf "%.0f %.0f\n", v[i50], v[i99] }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$policy" "$run" "$iv" "$p50" "$p99" \
      "$(cpu_pct $((t1 - t0)) "$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')")" >> "$out/raw.tsv"
  done
  stop_nodes
}

printf 'policy\trun\tinterval\tp50_us\tp99_us\tcpu_pct\n' > "$out/raw.tsv"
for r in $(seq "$runs"); do
  if [ $((r % 2)) = 1 ]; then order="fixed adaptive polling"; else order="polling adaptive fixed"; fi
  for policy in $order; do
    case "$policy" in
      fixed) measure fixed "$r" --busy-poll-us 200 --busy-poll-max-us 200 ;;
      adaptive) measure adaptive "$r" --busy-poll-max-us 5000 ;;
      polling) measure polling "$r" --busy-poll-us max ;;
    esac
    echo "run $r: $policy done" >&2
  done
done

# Medians over the runs.
{
  echo "# Latency and CPU against packet rate ($(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F), $runs runs, medians)"
  echo
  echo "ping c11 -> c21 (AF_XDP containers on two nodes), RTT in µs; CPU of both node processes in % of one core (ping's own and the kernel's softirq not counted). \`scripts/latency.sh --runs $runs\`."
  echo
  echo "| policy | idle CPU | 100 pps p50 / p99 / CPU | 200 pps | 500 pps | 1000 pps | 2000 pps |"
  echo "|---|---|---|---|---|---|---|"
  for policy in fixed adaptive polling; do
    awk -F'\t' -v p="$policy" '
      function median(key,   n, i, j, t, a) {
        n = split(vals[key], a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n ? a[int((n + 1) / 2)] : "-"
      }
      $1 == p { vals[$3 ",p50"] = vals[$3 ",p50"] " " $4; vals[$3 ",p99"] = vals[$3 ",p99"] " " $5; vals[$3 ",cpu"] = vals[$3 ",cpu"] " " $6 }
      END {
        printf "| %s | %s%% ", p, median("idle,cpu")
        split("0.01 0.005 0.002 0.001 0.0005", ivs, " ")
        for (k = 1; k <= 5; k++) printf "| %s / %s / %s%% ", median(ivs[k] ",p50"), median(ivs[k] ",p99"), median(ivs[k] ",cpu")
        print "|"
      }' "$out/raw.tsv"
  done
} > "$out/results.md"
cat "$out/results.md"
# The same medians as curves (latency and CPU against the rate).
python3 scripts/plot-latency.py "$out/results.md" "$out/curves.svg"
echo "results in $out (curves.svg: the curves)" >&2
