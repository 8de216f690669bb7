#!/usr/bin/env bash
# One command: vxmesh against the Linux kernel's own overlay parts (bridge + VXLAN device, nftables
# DNAT for the VIP) on the same namespace topology, alternating runs, medians and spreads, a table of
# vxmesh / kernel ratios, results.json + results.md + ratios.svg in target/compare/<timestamp>/.
# Method: docs/compare.md. Root. Arguments go to the program:
#   --runs N (5) | --quick (short, 1 run) | --out DIR | --only vxmesh|kernel | --vxmesh PATH | --perf
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "compare.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

# Debian packages: the load generators and servers (iperf3, wrk, nginx-light), the kernel side's
# parts (iproute2: bridge, vxlan, namespaces; nftables: the VIP's DNAT; conntrack: flushed before
# each HTTP run), ping. Optional: librsvg2-bin (a PNG of the chart), linux-perf (--perf).
need=(iperf3 nginx-light wrk nftables iproute2 iputils-ping conntrack)
for a in "$@"; do [ "$a" = "--perf" ] && need+=(linux-perf); done
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Installing nginx must not start a server in the root namespace: deny service starts for the
  # duration of the install unless the machine already has a policy.
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
    trap '[ $added_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ $added_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; added_policy=0; fi
fi

cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-compare
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/vxmesh-compare" "$@"
