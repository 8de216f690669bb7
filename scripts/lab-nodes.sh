# Sourced by the scripts that measure two `vxmesh run` nodes in a namespace lab (latency.sh,
# latency-trace.sh, slowrecv.sh, tcp-pairs.sh). The caller sets `vxmesh` (the executable), `P` (the
# namespaces' prefix) and `out` (its results directory). This makes the lab from the shared
# fixture (`$cfg`), and removes it on exit: the caller's `lab_extra_cleanup` first if it defines
# one, then the nodes, then the namespaces. `start_nodes ARGS...` starts both nodes with ARGS
# and returns once c11 pings c21; `stop_nodes` stops them.
cfg="$out/cluster.toml"
sed "s/{P}/$P/g" tests/fixtures/cluster.toml > "$cfg"
pids=()

stop_nodes() {
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  pids=()
}
lab_cleanup() {
  if declare -F lab_extra_cleanup >/dev/null; then lab_extra_cleanup; fi
  stop_nodes
  "$vxmesh" lab down --config "$cfg" --prefix "$P" >/dev/null 2>&1 || true
  # What the nodes keep beside their control sockets for a restart (the connection table, one
  # per worker, the ESP epoch, CNI attachments, interface settings): this lab's nodes only.
  for n in n1 n2; do
    rm -f "/run/vxmesh/${P}$n.sock" "/run/vxmesh/${P}$n.conntrack" "/run/vxmesh/${P}$n".w*.conntrack \
      "/run/vxmesh/${P}$n.esp" "/run/vxmesh/${P}$n.cni.json" "/run/vxmesh/${P}$n.ifsaved"
  done
}
trap lab_cleanup EXIT INT TERM

"$vxmesh" lab up --config "$cfg" --prefix "$P" >/dev/null

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
