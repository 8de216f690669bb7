#!/usr/bin/env bash
# The main job (README): builds vxmesh and runs `vxmesh demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec ./target/release/vxmesh demo "$@"
