# Sourced by the scripts of this folder: `need_packages PKG...` installs the Debian packages of the
# list that are missing (root only; without root it names them and returns 1). Services must not
# start in the root namespace while installing (nginx-light would): service starts are denied
# for the duration of the install unless the machine already has a policy (policy-rc.d).
need_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages (install them as root): ${missing[*]}" >&2
    return 1
  fi
  echo "installing: ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d added=0 rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
  fi
  # In a subshell whose exit (also by Ctrl-C or TERM) removes the policy file it added: left
  # behind, it would keep every service on the host from starting.
  (
    [ $added = 1 ] && trap 'rm -f "$policy"' EXIT
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
  ) || rc=$?
  [ $added = 1 ] && rm -f "$policy"
  return $rc
}
