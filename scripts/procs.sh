# Sourced by the scripts that start nodes and other processes of their own (lab-nodes.sh,
# espbench.sh). Test safety (SPEC.md): only what the script started, by PID; bounded; and what
# its nodes kept on disk removed by name.
#
# stop_pids PID...: SIGTERM to each, up to 5 s for it to go, then SIGKILL; then reap it.
stop_pids() {
  local p i
  for p in "$@"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "$@"; do
    [ -n "$p" ] || continue
    for i in $(seq 50); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}

# rm_node_files PREFIX NODE...: what `vxmesh run --control /run/vxmesh/PREFIXNODE.sock` keeps
# beside its socket for a restart (the connection table, one per worker, the ESP epoch, CNI
# attachments, interface settings; `daemon::node_files`), and the socket itself.
rm_node_files() {
  local pre="$1" n f
  shift
  for n in "$@"; do
    f="/run/vxmesh/${pre}$n"
    rm -f "$f.sock" "$f.conntrack" "$f".w*.conntrack "$f.esp" "$f.cni.json" "$f.ifsaved"
  done
}
