#!/usr/bin/env bash
# Hybrid mode. The same program runs twice in a fresh stack of its own: under the supervisor
# alone, where each socket() it makes is a round trip through the supervisor, and with
# --preload, where librumphijack.so makes its socket calls in-process and the supervisor's
# seccomp filter only catches what goes around the library (here the netlink socket that
# glibc's if_nameindex() opens internally). The supervisor's own count of the calls it served
# (--stats) shows the difference.
#
#   examples/hybrid.sh
#
# Needs root, or unprivileged user namespaces, for --isolated; python3. rumphijack finds
# librumphijack.so next to itself or in ../lib. Hybrid mode is for speed: unlike the
# supervisor alone it is not a security boundary.
set -euo pipefail
source "$(dirname "$0")/common.sh"

program=(python3 "$examples_dir/hybrid-client.py")

# served FILE: the socket() calls the supervisor served, from its --stats file.
served() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["socket"])' "$1"
}

echo "supervisor: $("$rumphijack" run --isolated --stats "$work/supervisor.json" -- \
  "${program[@]}")"
echo "supervisor: served $(served "$work/supervisor.json") socket() calls"

echo "hybrid: $("$rumphijack" run --isolated --preload --stats "$work/hybrid.json" -- \
  "${program[@]}")"
echo "hybrid: served $(served "$work/hybrid.json") socket() calls"
