#!/usr/bin/env bash
# Early drop for a receiver that cannot keep up (issue 20, part 3): where the loss of a UDP flood
# to a slow receiver is taken, with the receiver watcher on (the default) and off.
# Two real nodes in namespaces (the shared fixture). For each setting the nodes are started
# afresh; a receiver in c21 (AF_XDP, on n2) reads --rate datagrams a second; c11 (on n1) sends
# 18-byte datagrams to it as fast as one Python process can for --secs seconds. Reported per run:
# datagrams sent and read, the receiver kernel's socket drops (UDP RcvbufErrors in c21), the
# switch's drop_receiver_full on n2, and the whole machine's CPU (cores busy) during the flood.
# Settings alternate (on, off, off, on, ...). Root. Results: target/slowrecv/<UTC timestamp>/.
# Usage: scripts/slowrecv.sh [--runs N] [--rate N] [--secs S] [--vxmesh PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "slowrecv.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

runs=3
rate=3000
secs=3
vxmesh=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --secs) secs="$2"; shift 2 ;;
    --vxmesh) vxmesh="$2"; shift 2 ;;
    *) echo "slowrecv.sh: unknown argument $1 (--runs N, --rate N, --secs S, --vxmesh PATH)" >&2; exit 2 ;;
  esac
done

. scripts/packages.sh
need_packages iproute2 iputils-ping python3 protobuf-compiler libprotobuf-dev

if [ -z "$vxmesh" ]; then
  cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-lab
  vxmesh="${CARGO_TARGET_DIR:-target}/release/vxmesh"
fi

P="vxs$$-"
out="target/slowrecv/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
recv_pid=""
lab_extra_cleanup() {
  [ -n "$recv_pid" ] && kill "$recv_pid" 2>/dev/null || true
}
. scripts/lab-nodes.sh

cat > "$out/recv.py" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5001))
s.settimeout(0.2)
rate, end, n = float(sys.argv[1]), time.time() + float(sys.argv[2]), 0
while time.time() < end:
    try:
        s.recv(2048)
        n += 1
    except socket.timeout:
        pass
    time.sleep(1.0 / rate)
print(n)
EOF
cat > "$out/send.py" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, n = time.time() + float(sys.argv[1]), 0
while time.time() < end:
    for _ in range(100):
        s.sendto(b"x" * 18, ("10.0.9.21", 5001))
    n += 100
print(n)
EOF

rcvbuf_errors() { ip netns exec "${P}c21" awk '/^Udp:/ { v = $6 } END { print v }' /proc/net/snmp; }
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
hz=$(getconf CLK_TCK)

measure() { # SETTING RUN ARGS...
  local setting="$1" run="$2"; shift 2
  start_nodes "$@"
  local e0 e1 b0 b1 sent got gated t0 t1
  e0=$(rcvbuf_errors)
  ip netns exec "${P}c21" python3 "$out/recv.py" "$rate" "$((secs + 2))" > "$out/recv.out" &
  recv_pid=$!
  sleep 0.5
  b0=$(busy); t0=$(date +%s.%N)
  sent=$(ip netns exec "${P}c11" python3 "$out/send.py" "$secs")
  b1=$(busy); t1=$(date +%s.%N)
  wait "$recv_pid" || true
  recv_pid=""
  got=$(cat "$out/recv.out")
  e1=$(rcvbuf_errors)
  gated=$("$vxmesh" --control "/run/vxmesh/${P}n2.sock" stats --json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(next(x for x in s["stages"] if x["name"]=="output")["drops"].get("drop_receiver_full", 0))')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$setting" "$run" "$sent" "$got" "$((e1 - e0))" "$gated" \
    "$(awk -v b="$((b1 - b0))" -v hz="$hz" -v a="$t0" -v c="$t1" 'BEGIN { printf "%.2f", b / hz / (c - a) }')" >> "$out/raw.tsv"
  stop_nodes
}

printf 'setting\trun\tsent\tread\tsocket_drops\tdrop_receiver_full\tcores_busy\n' > "$out/raw.tsv"
for r in $(seq "$runs"); do
  if [ $((r % 2)) = 1 ]; then order="on off"; else order="off on"; fi
  for s in $order; do
    case "$s" in
      on) measure on "$r" ;;
      off) measure off "$r" --receiver-watch-us 0 ;;
    esac
    echo "run $r: watcher $s done" >&2
  done
done

{
  echo "# A UDP flood to a slow receiver ($(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F), $runs runs, medians)"
  echo
  echo "c11 -> c21 (AF_XDP containers on two nodes), 18-byte datagrams for $secs s from one Python sender; the receiver reads $rate a second. \`scripts/slowrecv.sh --runs $runs --rate $rate --secs $secs\`."
  echo
  echo "| receiver watcher | sent | read | dropped by the container's kernel (RcvbufErrors) | dropped by the switch (drop_receiver_full) | share of the loss the switch counts | cores busy |"
  echo "|---|---|---|---|---|---|---|"
  for s in on off; do
    awk -F'\t' -v s="$s" '
      function median(col,   n, i, j, t, a) {
        n = split(vals[col], a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n ? a[int((n + 1) / 2)] : "-"
      }
      $1 == s { for (c = 3; c <= 7; c++) vals[c] = vals[c] " " $c; share = share " " (($5 + $6) ? $6 / ($5 + $6) : 0) }
      END {
        vals[8] = share
        printf "| %s (%s) | %s | %s | %s | %s | %.1f%% | %s |\n", s, (s == "on" ? "default, 1 ms" : "--receiver-watch-us 0"),
          median(3), median(4), median(5), median(6), 100 * median(8), median(7)
      }' "$out/raw.tsv"
  done
} > "$out/results.md"
cat "$out/results.md"
echo "results in $out" >&2
