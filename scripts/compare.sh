#!/usr/bin/env bash
# One command: vxmesh against the Linux kernel's own overlay parts (bridge + VXLAN device, nftables
# DNAT for the VIP) and against Open vSwitch's userspace datapath (its own daemons per node, inside
# the node's namespace) on the same namespace topology, alternating runs, medians and spreads, a
# table of vxmesh / kernel and vxmesh / OVS ratios, results.json + results.md + ratios.svg +
# ratios-ovs.svg in target/compare/<timestamp>/.
# Method: docs/compare.md. Root. Arguments go to the program:
#   --runs N (5) | --quick (short, 1 run) | --out DIR | --only vxmesh|kernel|ovs | --vxmesh PATH | --perf |
#   --perf-test udp64|tcp|tcp-tap (what --perf profiles) | --tests ping,tcp,tcp-tap,udp64,http (only these) |
#   --ovs-pmd-maxsleep MICROS (OVS's PMDs sleep under low load) | --workers N (poll threads per vxmesh node) |
#   --receiver-watch-us MICROS (vxmesh's receiver watcher; 0: off) |
#   --afxdp-offloads on|off (vxmesh run --afxdp-offloads for every test; default off: its own rows) |
#   --afxdp-napi-defer-us MICROS (vxmesh run --afxdp-napi-defer-us for every test but the --afxdp-offloads rows)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "compare.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

# Debian packages: the load generators and servers (iperf3, wrk, nginx-light), the kernel side's
# parts (iproute2: bridge, vxlan, namespaces; nftables: the VIP's DNAT; conntrack: flushed before
# each HTTP run), ping, openvswitch-switch (the OVS side; installing it starts no service here:
# packages.sh denies service starts while installing, and the comparison runs its own daemons in
# its namespaces, never the system's). Optional: librsvg2-bin (a PNG of the chart), linux-perf (--perf).
need=(iperf3 nginx-light wrk nftables iproute2 iputils-ping conntrack openvswitch-switch protobuf-compiler libprotobuf-dev)
for a in "$@"; do [ "$a" = "--perf" ] && need+=(linux-perf); done
. scripts/packages.sh
need_packages "${need[@]}"

cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-compare
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/vxmesh-compare" "$@"
