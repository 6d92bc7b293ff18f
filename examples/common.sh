# Sourced by the example scripts: finds the programs and gives each script a private work
# directory that is removed, with everything started in it, when the script exits.
#
# rumphijack and rump_server are taken from $RUMPHIJACK_BIN_DIR when set, else from the build
# of the source tree the examples are in (target/release, then target/debug), else from PATH
# (an installation).

examples_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

find_program() {
  local name=$1 dir dirs
  if [[ -n ${RUMPHIJACK_BIN_DIR:-} ]]; then
    dirs=("$RUMPHIJACK_BIN_DIR")
  else
    dirs=("$examples_dir/../target/release" "$examples_dir/../target/debug")
  fi
  for dir in "${dirs[@]}"; do
    if [[ -x $dir/$name ]]; then
      echo "$dir/$name"
      return
    fi
  done
  if [[ -z ${RUMPHIJACK_BIN_DIR:-} ]] && command -v "$name" >/dev/null; then
    command -v "$name"
    return
  fi
  echo "$0: cannot find $name: build it (make) or install it (make install)" >&2
  return 1
}

rumphijack=$(find_program rumphijack)
rump_server=$(find_program rump_server)

# Processes to stop at exit, by pid file or pid.
work=$(mktemp -d "${TMPDIR:-/tmp}/rumphijack-example.XXXXXX")
background_pids=()
cleanup() {
  local pid
  for pid in "${background_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ -f $work/server.pid ]]; then
    kill "$(cat "$work/server.pid")" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for_line FILE PATTERN: waits (up to 10 s) until FILE has a line matching PATTERN.
wait_for_line() {
  local _
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return
    sleep 0.1
  done
  echo "$0: timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}
