#!/usr/bin/env bash
# Where a ping's round trip goes through two vxmesh nodes (issue 20, goal 1): ping c11 -> c21
# (AF_XDP containers on two nodes, default busy-poll window) for --count pings at -i 0.002 while
# `perf record -a` takes the scheduler's wake-ups and the system calls and XDP redirects of the
# path; each round trip is then cut into its six segments (ping's send to n1's send on the
# underlay, the underlay to n2, n2 through c21 and back, the underlay to n1, n1 to ping woken,
# woken to read) and the medians printed, split by whether ping was woken by the poll thread on
# its own CPU or from idle on another (an inter-processor interrupt to a halted vCPU).
# Tracing adds to every segment: the figures are shares, not the untraced RTT.
# Root; needs linux-perf. Usage: scripts/latency-trace.sh [--count N] [--vxmesh PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "latency-trace.sh needs root: namespaces, AF_XDP sockets and perf -a" >&2
  exit 2
fi

count=700
vxmesh=""
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --vxmesh) vxmesh="$2"; shift 2 ;;
    *) echo "latency-trace.sh: unknown argument $1 (--count N, --vxmesh PATH)" >&2; exit 2 ;;
  esac
done

. scripts/packages.sh
need_packages iproute2 iputils-ping linux-perf python3 protobuf-compiler libprotobuf-dev

if [ -z "$vxmesh" ]; then
  cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-lab
  vxmesh="${CARGO_TARGET_DIR:-target}/release/vxmesh"
fi

P="vxt$$-"
out="target/latency-trace/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
ping_pid=""
lab_extra_cleanup() {
  [ -n "$ping_pid" ] && kill "$ping_pid" 2>/dev/null || true
}
. scripts/lab-nodes.sh
start_nodes

secs=$(awk -v c="$count" 'BEGIN { printf "%.1f", c * 0.002 * 0.7 }')
ip netns exec "${P}c11" ping -c "$count" -i 0.002 -W 1 10.0.9.21 > "$out/ping.txt" &
ping_pid=$!
sleep 0.3
perf record -q -a -o "$out/perf.data" \
  -e sched:sched_wakeup -e sched:sched_switch \
  -e syscalls:sys_enter_sendto -e syscalls:sys_enter_sendmmsg \
  -e syscalls:sys_exit_recvmmsg -e syscalls:sys_exit_recvmsg -e xdp:xdp_redirect \
  -- sleep "$secs" >/dev/null 2>&1
wait "$ping_pid" || true
perf script -i "$out/perf.data" -F comm,tid,cpu,time,event,trace > "$out/trace.txt" 2>/dev/null

python3 - "$out/trace.txt" > "$out/results.md" <<'PY'
import re, statistics as st, sys
ev = []
for line in open(sys.argv[1]):
    m = re.match(r'\s*(\S+)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)', line)
    if m:
        comm, tid, cpu, t, e, rest = m.groups()
        ev.append((float(t) * 1e6, comm, int(tid), int(cpu), e, rest.strip()))
trips, cur, n1 = [], None, None
for t, comm, tid, cpu, e, rest in ev:
    if comm == 'ping' and e == 'syscalls:sys_enter_sendto':
        cur = {'send': t}
        continue
    if cur is None:
        continue
    got = e == 'syscalls:sys_exit_recvmmsg' and rest not in ('0x0',) and not rest.endswith('fff5')
    if comm.startswith('vxmesh-poll'):
        if e == 'syscalls:sys_enter_sendmmsg':
            if 'n1s' not in cur:
                cur['n1s'], n1 = t, tid
            elif tid != n1 and 'n2r' in cur and 'n2s' not in cur:
                cur['n2s'] = t
        elif got and 'n1s' in cur and 'n2r' not in cur and tid != n1:
            cur['n2r'] = t
        elif got and 'n2s' in cur and 'n1r' not in cur and tid == n1:
            cur['n1r'] = t
    if e == 'sched:sched_wakeup' and 'comm=ping' in rest and 'n1r' in cur and 'wake' not in cur:
        cur['wake'], cur['waker'] = t, comm
    if comm == 'ping' and e == 'syscalls:sys_exit_recvmsg' and rest == '0x54' and 'wake' in cur:
        cur['recv'] = t
        trips.append(cur)
        cur = None
full = [c for c in trips if all(k in c for k in ('n1s', 'n2r', 'n2s', 'n1r', 'wake', 'recv'))]
seg = [('send', 'n1s', "ping's send -> n1 sends it on the underlay"),
       ('n1s', 'n2r', 'the underlay -> n2 has it'),
       ('n2r', 'n2s', 'n2 -> c21 -> echo reply -> n2 sends it on the underlay'),
       ('n2s', 'n1r', 'the underlay -> n1 has it'),
       ('n1r', 'wake', 'n1 -> c11 -> ping woken'),
       ('wake', 'recv', 'ping woken -> ping reads the reply'),
       ('send', 'recv', 'round trip (traced)')]
print(f"# Where a ping's round trip goes ({len(full)} round trips, traced; µs)\n")
print("| segment | p50 | p90 |\n|---|---|---|")
for a, b, name in seg:
    d = sorted(c[b] - c[a] for c in full)
    print(f"| {name} | {st.median(d):.0f} | {d[int(len(d) * 0.9)]:.0f} |")
print("\n| ping woken | round trips | last two segments p50 | round trip p50 |\n|---|---|---|---|")
for name, s in (('by the poll thread, on its own CPU', [c for c in full if c['waker'] != 'swapper']),
                ('from idle, on the other CPU (IPI to a halted vCPU)', [c for c in full if c['waker'] == 'swapper'])):
    if s:
        print(f"| {name} | {len(s)} | {st.median([c['recv'] - c['n1r'] for c in s]):.0f} | {st.median([c['recv'] - c['send'] for c in s]):.0f} |")
PY
cat "$out/results.md"
echo "results in $out (ping's own summary, while traced: $(tail -1 "$out/ping.txt"))" >&2
