#!/usr/bin/env bash
# Before and after in one session: an older commit's vxmesh against this checkout's, both against
# the kernel's overlay and OVS userspace from the same machine's run (`vxmesh-compare`).
#   scripts/compare-ab.sh BASE [--runs R] [--tests LIST]
# BASE (a commit) is built in a worktree under target/ab/ (its own target directory, kept for the
# next call). The order brackets this checkout's run with the base's, so that a machine that
# drifts during the hour moves both alike:
#   1. the base, `--only vxmesh`, R runs
#   2. this checkout, every side (vxmesh, kernel, OVS, the wire), R runs
#   3. the base again, `--only vxmesh`, R runs
# Then scripts/compare-ab.py writes target/ab/<UTC timestamp>/results.md: per figure the base's
# median (both base sets), this checkout's, the kernel's and OVS's, and the ratios.
# A `vxmesh run` option this checkout's comparison passes that the base does not have is
# dropped by the wrapper target/ab/BASE/vxmesh (only `--afxdp-offloads`, whose rows then measure
# the base's default again: results.md leaves them out). Root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "compare-ab.sh needs root: it builds network namespaces, veths and AF_XDP sockets" >&2
  exit 2
fi
[ $# -ge 1 ] || { echo "usage: scripts/compare-ab.sh BASE [--runs R] [--tests LIST]" >&2; exit 2; }
base=$(git rev-parse --short "$1^{commit}") || { echo "compare-ab.sh: $1 is not a commit" >&2; exit 2; }
shift
runs=3
tests=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --tests) tests=(--tests "$2"); shift 2 ;;
    *) echo "compare-ab.sh: unknown argument $1 (--runs R, --tests LIST)" >&2; exit 2 ;;
  esac
done

. scripts/packages.sh
need_packages iperf3 nginx-light wrk nftables iproute2 iputils-ping conntrack openvswitch-switch \
  python3 protobuf-compiler libprotobuf-dev

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p vxmesh --bin vxmesh -p vxmesh-lab --bin vxmesh-compare

# The base, built once per commit.
ab="$(pwd)/$target/ab"
src="$ab/src-$base"
mkdir -p "$ab/$base"
if [ ! -x "$ab/$base/vxmesh.bin" ]; then
  git worktree prune
  [ -d "$src" ] || git worktree add --detach "$src" "$base" > /dev/null
  (cd "$src" && CARGO_TARGET_DIR="$ab/target-$base" cargo build --release --quiet --bin vxmesh)
  cp "$ab/target-$base/release/vxmesh" "$ab/$base/vxmesh.bin"
  git worktree remove --force "$src"
fi
wrapper="$ab/$base/vxmesh"
if "$ab/$base/vxmesh.bin" run --help 2>/dev/null | grep -q -- --afxdp-offloads; then
  ln -sf vxmesh.bin "$wrapper"
else
  cat > "$wrapper" <<EOF
#!/usr/bin/env bash
# vxmesh at $base for vxmesh-compare: without --afxdp-offloads, which it does not have.
args=()
for a in "\$@"; do [ "\$a" = --afxdp-offloads ] || args+=("\$a"); done
exec "$ab/$base/vxmesh.bin" "\${args[@]}"
EOF
  chmod +x "$wrapper"
fi

out="$ab/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "compare-ab: $base against $(git rev-parse --short HEAD)$(git diff --quiet || echo +changes), --runs $runs, into $out"
sync # a build's writeback must not land in the first measurements (docs/compare.md)
step() { # NAME ARGS...: one comparison into $out/NAME
  local name=$1
  shift
  echo "compare-ab: $name"
  "$target/release/vxmesh-compare" --runs "$runs" "${tests[@]}" "$@" --out "$out/$name" \
    > "$out/$name.log" 2>&1 || { echo "compare-ab: $name failed, see $out/$name.log" >&2; exit 1; }
}
step base-1 --only vxmesh --vxmesh "$wrapper"
step after
step base-2 --only vxmesh --vxmesh "$wrapper"
python3 scripts/compare-ab.py "$out" "$base"
echo "compare-ab: $out/results.md"
