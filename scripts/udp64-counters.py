#!/usr/bin/env python3
"""One line per vxmesh-compare result directory of the UDP 64 B test (`--tests udp64`): what
iperf3 received and sent (pkt/s), the CPU per million frames into c21's eth0 and per million
iperf3-received, n2's drop_receiver_full, c21's receiver_socket_drops, and the switch's share
of the loss (docs/performance.md, "Admitting the receiver's share").

Usage: scripts/udp64-counters.py DIR [DIR ...]
"""
import json
import sys

for d in sys.argv[1:]:
    run = json.load(open(f"{d}/results.json"))["runs"][0]
    v = run["values"]
    n = run["notes"].get("udp64_vxmesh_counter_deltas", {})
    gate = n.get("n2.stages.output.drops.drop_receiver_full", 0)
    sock = n.get("n2.ports.c21.counters.receiver_socket_drops", 0)
    share = gate / max(gate + sock, 1)
    print(
        f"{d:22} rx {v['udp64_rx_pps']:9.0f} tx {v['udp64_tx_pps']:9.0f} "
        f"cpu/eth0 {v['udp64_cpu_s_per_mpkt']:5.2f} cpu/iperf {v['udp64_cpu_s_per_mpkt_iperf']:5.2f} "
        f"gate {gate:7} sock {sock:7} share {share:.3f}"
    )
