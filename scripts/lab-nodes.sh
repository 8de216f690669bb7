# Sourced by the scripts that measure two `vxmesh run` nodes in a namespace lab (latency.sh,
# latency-trace.sh, slowrecv.sh, tcp-pairs.sh). The caller sets `vxmesh` (the executable), `P` (the
# namespaces' prefix) and `out` (its results directory). This makes the lab from the shared
# fixture (`$cfg`), and removes it on exit: the caller's `lab_extra_cleanup` first if it defines
# one, then the nodes, then the namespaces. `start_nodes ARGS...` starts both nodes with ARGS
# and returns once c11 pings c21; `stop_nodes` stops them.
cfg="$out/cluster.toml"
sed "s/{P}/$P/g" tests/fixtures/cluster.toml > "$cfg"
pids=()
# The lab is made and removed by the same program (tcp-pairs.sh switches `vxmesh` between
# binaries while it measures).
lab_vxmesh="$vxmesh"
. scripts/procs.sh

stop_nodes() {
  stop_pids "${pids[@]:-}"
  pids=()
}
lab_cleanup() {
  if declare -F lab_extra_cleanup >/dev/null; then lab_extra_cleanup; fi
  stop_nodes
  "$lab_vxmesh" lab down --config "$cfg" --prefix "$P" >/dev/null 2>&1 || true
  rm_node_files "$P" n1 n2
}
# On an interrupt, clean up once and stop (a trap on INT alone would run the cleanup and carry on).
trap lab_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$lab_vxmesh" lab up --config "$cfg" --prefix "$P" >/dev/null

start_nodes() { # ARGS...
  for n in n1 n2; do
    ip netns exec "${P}$n" "$vxmesh" run --config "$cfg" --node "$n" \
      --control "/run/vxmesh/${P}$n.sock" "$@" >>"$out/nodes.log" 2>&1 &
    pids+=("$!")
  done
  for n in n1 n2; do
    for _ in $(seq 100); do
      [ -S "/run/vxmesh/${P}$n.sock" ] && break
      sleep 0.1
    done
  done
  # Both nodes forward before anything is measured; the page cache a build just dirtied is
  # written out now, not 30 s later in the middle of a measurement (docs/compare.md).
  sync
  ip netns exec "${P}c11" ping -c 3 -i 0.2 -W 1 10.0.9.21 >/dev/null
}
