#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh Debian machine, then runs
# formatting and lint checks and every test of the workspace. Namespace tests need root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: iproute2 (namespaces, veth, the kernel VXLAN/bridge peer), iputils-ping, tshark (decodes
# what went on the underlay), procps (ps, for cleanup of what tests started), and the real peers of the
# end-to-end tests: nginx-light (backends), curl, iperf3, nftables (to show the nodes hold no rules),
# dnsutils (dig, the DNS client of the service-discovery test), dnsmasq-base (the upstream resolver
# of the relay's test); etcd-server and etcd-client (the
# cluster store's tests start a real etcd); protobuf-compiler and libprotobuf-dev (protoc, which the
# etcd client's gRPC code is generated with at build time); podman, runc, containernetworking-plugins
# and busybox-static (the CNI plugin's test runs real containers from a busybox root filesystem);
# systemd (systemd-analyze verify checks the unit), man-db (the package test's `man -w`) and prometheus
# (promtool and a real server check and scrape `vxmesh run --metrics`).
. scripts/packages.sh
need_packages iproute2 iputils-ping tshark procps nginx-light curl iperf3 nftables dnsutils dnsmasq-base python3-scapy prometheus \
  etcd-server etcd-client protobuf-compiler libprotobuf-dev \
  podman runc containernetworking-plugins busybox-static systemd man-db
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The module docs say where each piece sits; their links must resolve.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo test --workspace

# Every example runs and exits 0 (each asserts what it prints; see examples/README.md).
for f in examples/*.rs; do
  name=$(basename "$f" .rs)
  if ! out=$(cargo run --quiet --example "$name" 2>&1); then
    printf '%s\n' "$out"
    echo "example $name failed" >&2
    exit 1
  fi
  echo "example $name: ok"
done
