#!/usr/bin/env bash
# The criterion suite (README, Performance): every bench of the workspace, then where the HTML
# reports are. Per stage and whole-pipeline at bursts 1, 8, 32 (benches/suite.rs), the L2 switch
# and FDB (vswitch), VXLAN (vxlan), the load balancer with conntrack at 1K/100K/1M (lb).
# Arguments go to criterion, e.g. `scripts/bench.sh --warm-up-time 1 --measurement-time 3`.
set -euo pipefail
cd "$(dirname "$0")/.."
# protoc builds the etcd client's gRPC code.
. scripts/packages.sh
need_packages protobuf-compiler libprotobuf-dev
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--warm-up-time 1 --measurement-time 3)
cargo bench --workspace -- "${args[@]}"
echo "HTML reports: $(pwd)/target/criterion/report/index.html"
