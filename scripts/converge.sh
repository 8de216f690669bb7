#!/usr/bin/env bash
# One command: how long a write to the cluster store takes to reach every node, at 10, 100 and
# 1,000 simulated nodes with 50 endpoints each (issue 14). A real etcd in a namespace of its own;
# every simulated node runs the node's own store follower, view and plan code with its own etcd
# client and watch, no dataplane. Results (write -> all nodes p50/p99/max, per-node times, CPU
# of the watchers and of etcd per change, memory, watch bytes) in target/converge/results.md and
# results.json. Root. Arguments go to the program (`--help`), among them:
#   --nodes 10,100,1000 | --endpoints 50 | --writes 40 | --one-network | --out DIR
# docs/store.md ("What a change costs a node, and convergence at scale") says how to read it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "converge.sh needs root: it makes a network namespace for etcd" >&2
  exit 2
fi

# Debian packages: etcd-server (the store), iproute2 (the namespace), protoc (protobuf-compiler,
# libprotobuf-dev: the etcd client is built with it).
. scripts/packages.sh
need_packages etcd-server protobuf-compiler libprotobuf-dev iproute2

cargo build --release --quiet -p vxmesh-lab --bin vxmesh-converge
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/vxmesh-converge" "$@"
