#!/usr/bin/env bash
# One command: the longest pause of forwarding that control commands cause on a running node,
# end to end (issue 13). Two real `vxmesh run` nodes in a namespace lab; a `ping -i 0.001` from a
# container on n1 to one on n2 while n1 is idle, lists 100,000 connections (`conntrack show
# --json`), reloads +50,000 / -50,000 remote endpoints, attaches and detaches 10 AF_XDP
# containers, and (the control) runs nothing while every CPU is busy; then all again with the
# nodes' poll threads at real-time priority. Medians and the worst of the runs as tables,
# results.md + results.json + raw/ in target/pause/<timestamp>/. Root. Arguments go to the
# program (`--help`), among them:
#   --runs N (3) | --interval SECS (0.001) | --poll-priority N (40; 0: no second pass)
#   | --quiet-pct P (15) | --conns N | --remote N | --attach N | --out DIR | --vxmesh PATH
# docs/performance.md ("The forwarding pause, end to end") says how to read it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "pause.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi

# Debian packages: iproute2 (namespaces, veths), iputils-ping (the probe, -D timestamps),
# util-linux (chrt: the probe at real-time priority), git (the commit in the results), protoc
# (protobuf-compiler, libprotobuf-dev: the etcd client is built with it).
. scripts/packages.sh
need_packages iproute2 iputils-ping util-linux git protobuf-compiler libprotobuf-dev

cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-pause
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/vxmesh-pause" "$@"
