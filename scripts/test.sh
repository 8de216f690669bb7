#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh Debian machine, then runs
# formatting and lint checks and every test of the workspace. Namespace tests need root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: iproute2 (namespaces, veth, the kernel VXLAN/bridge peer), iputils-ping, tshark (decodes
# what went on the underlay), procps (ps, for cleanup of what tests started), and the real peers of the
# end-to-end tests: nginx-light (backends), curl, iperf3, nftables (to show the nodes hold no rules).
need=(iproute2 iputils-ping tshark procps nginx-light curl iperf3 nftables)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
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
