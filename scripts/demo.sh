#!/usr/bin/env bash
# The main job (README): builds vxmesh (and vxmesh-lab, which carries the demo) and runs `vxmesh demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the demo uses: iproute2 (namespaces, veths) and iputils-ping.
need=(iproute2 iputils-ping)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# `vxmesh demo` runs the vxmesh-lab program next to vxmesh: build both.
cargo build --release --quiet --workspace --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/vxmesh" demo "$@"
