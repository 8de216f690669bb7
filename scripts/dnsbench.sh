#!/usr/bin/env bash
# One command: DNS queries per second answered by one node's switch (the dns stage, at the
# network's resolver address) against dnsmasq serving the same names, in the same run on the
# same machine, measured with dnsperf from a container (issue 16). Two real `vxmesh run` nodes
# in a namespace lab; dnsmasq in a namespace of its own, reached over a second veth from the same
# container; runs alternate. Answers/s, average/p50/p99 latency, CPU of n1's poll thread and of
# dnsmasq: results.md + results.json + raw/ in target/dnsbench/<timestamp>/. Root. Arguments go
# to the program (`--help`), among them:
#   --runs N (3) | --secs S (10) | --clients N (4) | --outstanding N (100)
#   | --rate QPS (20000; 0: no fixed-rate runs) | --container NAME (c11) | --out DIR
# docs/performance.md ("Service discovery: the switch against dnsmasq") says how to read it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "dnsbench.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

# Debian packages: dnsperf (the load), dnsmasq-base (the reference resolver), iproute2
# (namespaces, veths), git (the commit in the results), protoc (protobuf-compiler,
# libprotobuf-dev: the etcd client is built with it).
. scripts/packages.sh
need_packages dnsperf dnsmasq-base protobuf-compiler libprotobuf-dev iproute2 git

cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-dnsbench
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/vxmesh-dnsbench" "$@"
