#!/usr/bin/env bash
# A sandboxed launch. A stack server hosts a fresh network stack with nothing but loopback;
# a web server runs in it, and a client runs in it under a policy that lets it reach that
# web server and nothing else. Each step prints what it shows.
#
#   examples/sandboxed-launch.sh
#
# Needs root, or unprivileged user namespaces, for rump_server --isolated; python3 and curl.
# Every packet stays on the loopback interface of the stack the script creates.
set -euo pipefail
source "$(dirname "$0")/common.sh"

policy=$examples_dir/sandbox-policy.toml
url=unix://$work/stack.sock

# 1. The stack: --detach returns once the server listens, so nothing waits on a timer.
"$rump_server" --isolated --detach --pidfile "$work/server.pid" "$url"
echo "stack: rump_server --isolated serves $url"

# 2. A web server inside it, serving one file.
mkdir "$work/site"
echo "hello from the sandbox" >"$work/site/hello.txt"
"$rumphijack" run --server "$url" -- python3 -u -m http.server 8080 --bind 127.0.0.1 \
  --directory "$work/site" >"$work/web.log" 2>&1 &
background_pids+=($!)
wait_for_line "$work/web.log" "Serving HTTP"
echo "web server: python3 -m http.server on 127.0.0.1:8080 of that stack"

# 3. The client under the policy: the web server is allowed...
sandboxed() {
  "$rumphijack" run --server "$url" --policy "$policy" --audit "$work/audit.jsonl" -- "$@"
}
echo "allowed: $(sandboxed curl -sS --max-time 10 http://127.0.0.1:8080/hello.txt)"

# 4. ...anything else is refused by the supervisor before the kernel sees it.
if out=$(sandboxed curl -sS --max-time 10 http://192.0.2.1/ 2>&1); then
  echo "unexpected: the policy let curl reach 192.0.2.1: $out" >&2
  exit 1
fi
echo "denied: $(grep -o 'curl: .*' <<<"$out" | head -1)"
echo "audit: $(grep '"deny"' "$work/audit.jsonl" | head -1)"
