#!/usr/bin/env bash
# A container's entrypoint. A sidecar rump_server hosts the network namespace that has the
# network; the application runs under rumphijack with every socket in the sidecar's stack,
# and rumphijack is process 1: it passes signals on, reaps orphans and exits with the
# application's status.
#
#   examples/container-entrypoint.sh PROGRAM [ARGS...]
#
# Environment:
#   STACK_NETNS   the namespace the sidecar hosts, e.g. /run/netns/NAME (default: the
#                 container's own)
#   RUMP_SOCKET   the sidecar's socket (default: /run/rumphijack/stack.sock)
#   POLICY        a policy file for the application (default: none)
#
# In a real container this is the image's ENTRYPOINT and the runtime makes the PID
# namespace. Run anywhere else, the script makes one for itself (unshare, which needs root),
# so that the sidecar ends with the application as it would with the container.
set -euo pipefail

if (($# == 0)); then
  echo "usage: $0 PROGRAM [ARGS...]" >&2
  exit 64
fi
if (($$ != 1)); then
  exec unshare --pid --fork --kill-child --mount-proc "$0" "$@"
fi

# Process 1 from here on. common.sh is not used: its clean-up would need a shell that
# outlives the application, and rumphijack replaces this shell.
examples_dir=$(cd "$(dirname "$0")" && pwd)
bin_dir=${RUMPHIJACK_BIN_DIR:-}
if [[ -z $bin_dir ]]; then
  for dir in "$examples_dir/../target/release" "$examples_dir/../target/debug"; do
    [[ -x $dir/rumphijack ]] && { bin_dir=$dir; break; }
  done
fi
rumphijack=${bin_dir:+$bin_dir/}rumphijack
rump_server=${bin_dir:+$bin_dir/}rump_server

socket=${RUMP_SOCKET:-/run/rumphijack/stack.sock}
mkdir -p "$(dirname "$socket")"

# The sidecar: --detach returns once it serves. It is not waited for: when process 1
# exits, the kernel ends every other process of the namespace, the sidecar included.
"$rump_server" ${STACK_NETNS:+--netns "$STACK_NETNS"} --detach "unix://$socket"
echo "entrypoint: sidecar rump_server serves unix://$socket" \
  "(stack: ${STACK_NETNS:-this namespace})" >&2

exec "$rumphijack" run --server "unix://$socket" ${POLICY:+--policy "$POLICY"} -- "$@"
