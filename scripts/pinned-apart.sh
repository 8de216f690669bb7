#!/usr/bin/env bash
# A `vxmesh` for `vxmesh-compare --vxmesh`: each node's poll thread on a CPU of its own
# (`vxmesh run --node n1` gets `--cpus 0`, n2 `--cpus 1`, ...; `vxmesh-compare --cpus` gives
# every node the same list). Every other command goes to vxmesh unchanged.
#   vxmesh-compare --runs 3 --only vxmesh --tests ping --vxmesh scripts/pinned-apart.sh
# VXMESH: the binary (default target/release/vxmesh of this checkout).
set -eu
bin=${VXMESH:-$(cd "$(dirname "$0")/.." && pwd)/target/release/vxmesh}
node="" prev=""
for a in "$@"; do
  [ "$prev" = --node ] && node=$a
  prev=$a
done
if [ "${1:-}" = run ] && [[ "$node" =~ ^n([0-9]+)$ ]]; then
  cpus=$(nproc --all)
  exec "$bin" "$@" --cpus $(( (BASH_REMATCH[1] - 1) % cpus ))
fi
exec "$bin" "$@"
