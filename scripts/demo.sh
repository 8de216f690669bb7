#!/usr/bin/env bash
# The main job (README): builds vxmesh (and vxmesh-lab, which carries the demo) and runs `vxmesh demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the demo uses: iproute2 (namespaces, veths), iputils-ping, etcd-server (its
# second part runs the cluster on a store); the build needs protoc (protobuf-compiler,
# libprotobuf-dev) for the etcd client's generated gRPC code.
. scripts/packages.sh
need_packages iproute2 iputils-ping etcd-server protobuf-compiler libprotobuf-dev || true # without root, `vxmesh demo` says what it needs
# `vxmesh demo` runs the vxmesh-lab program next to vxmesh: build both.
cargo build --release --quiet --workspace --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/vxmesh" demo "$@"
