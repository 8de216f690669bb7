#!/usr/bin/env bash
# A `vxmesh` for `vxmesh-compare --vxmesh` that adds $VXMESH_RUN_ARGS to every `vxmesh run`
# (options the comparison has no flag for), e.g. the A/B of docs/performance.md, "The VXLAN
# source port":
#   for v in 16 0 0 16 16 0; do
#     VXMESH_RUN_ARGS="--vxlan-source-ports $v" ./target/release/vxmesh-compare --runs 1 \
#       --only vxmesh --tests ping,udp64,http,tcp,tcp-tap --vxmesh scripts/with-run-args.sh --out DIR/$v-$((i++))
#   done
# VXMESH: the binary (default target/release/vxmesh of this checkout). Every other command
# goes to vxmesh unchanged.
set -eu
bin=${VXMESH:-$(cd "$(dirname "$0")/.." && pwd)/target/release/vxmesh}
if [ "${1:-}" = run ]; then
  # Word splitting of the options is wanted here.
  # shellcheck disable=SC2086
  exec "$bin" "$@" ${VXMESH_RUN_ARGS:-}
fi
exec "$bin" "$@"
