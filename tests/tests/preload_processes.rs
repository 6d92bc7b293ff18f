//! The preload library in real process trees: forked workers, exec'd pipelines, a daemon that
//! closes every descriptor, 32 threads at once, and programs that never touch the network.

use std::process::Command;

use rumphijack_tests::preload::{preload, preload_echo_server};
use rumphijack_tests::{
    argv, free_host_port, python3, require_program, run, write_helper, Server, TempDir, TIMEOUT,
};

#[test]
fn preloaded_forked_workers_all_reach_the_server_stack() {
    let test = "preloaded_forked_workers_all_reach_the_server_stack";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let _echo = preload_echo_server(&dir, &a.url(), port, &["127.0.0.1"]);
    let script = write_helper(&dir);

    // The parent connects first, so every child inherits a live server connection it must
    // not use; then each child connects on its own.
    let program = r#"
import os, socket, sys
sys.argv = [sys.argv[0]] + sys.argv[1:]
exec(open(sys.argv[1]).read().replace("main(sys.argv[1:])", ""))
assert tcp_echo("127.0.0.1", int(sys.argv[2]), "parent") == "parent"
pids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        ok = all(tcp_echo("127.0.0.1", int(sys.argv[2]), "w%d-%d" % (i, j)) == "w%d-%d" % (i, j)
                 for j in range(3))
        os._exit(0 if ok else 1)
    pids.append(pid)
failed = sum(1 for pid in pids if os.waitpid(pid, 0)[1] != 0)
assert tcp_echo("127.0.0.1", int(sys.argv[2]), "parent-again") == "parent-again"
print("workers ok" if not failed else "workers failed %d" % failed, flush=True)
sys.exit(1 if failed else 0)
"#;
    let args = argv![python3(), "-c", program, &script, port.to_string()];
    let out = run(preload(Some(&a.url()), args), TIMEOUT);
    out.assert_success("every forked worker's connections must reach stack A");
    assert!(out.stdout.contains("workers ok"), "{out}");
    assert!(out.stderr.is_empty(), "no library messages\n{out}");
}

#[test]
fn preloaded_shell_pipeline_of_exec_d_tools_is_redirected() {
    let test = "preloaded_shell_pipeline_of_exec_d_tools_is_redirected";
    for program in ["python3", "socat", "curl"] {
        if !require_program(test, program) {
            return;
        }
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let _echo = preload_echo_server(&dir, &a.url(), port, &["127.0.0.1"]);
    let script = write_helper(&dir);

    // sh execs socat, whose echo goes through a nested sh into python3, and curl.
    let pipeline = r#"set -e
printf pipe-word | socat -t 5 - "TCP:127.0.0.1:$PORT" \
  | sh -c 'exec "$PY" "$RH" tcp 127.0.0.1 "$PORT" "$(cat)-again"'
rc=0; curl -s --max-time 5 "http://127.0.0.1:$PORT/" >/dev/null || rc=$?; echo "curl-exit=$rc"
exec "$PY" "$RH" udp 127.0.0.1 "$PORT" from-exec"#;
    let mut cmd = preload(Some(&a.url()), ["sh", "-c", pipeline]);
    cmd.env("PY", python3())
        .env("RH", &script)
        .env("PORT", port.to_string());
    let out = run(cmd, TIMEOUT);
    out.assert_success("every tool in the pipeline must be redirected");
    assert!(out.stdout.contains("pipe-word-again"), "{out}");
    assert!(out.stdout.contains("from-exec"), "{out}");
    // curl talks HTTP to an echo server and gets its own request back, which is no HTTP
    // answer; what matters is that it connected (natively it fails with 7, "couldn't
    // connect"), which only the redirection makes possible.
    let curl_exit = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("curl-exit="));
    assert!(matches!(curl_exit, Some(code) if code != "7"), "{out}");
}

#[test]
fn preloaded_daemon_that_closes_every_descriptor_still_connects() {
    let test = "preloaded_daemon_that_closes_every_descriptor_still_connects";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let _echo = preload_echo_server(&dir, &a.url(), port, &["127.0.0.1"]);
    let script = write_helper(&dir);

    // After a first redirected socket, the library's connection is the lowest high socket.
    // The daemon closes everything, puts /dev/null at that number, and connects again: the
    // library must reconnect and leave the program's /dev/null alone.
    let program = r#"
import os, socket, sys
exec(open(sys.argv[1]).read().replace("main(sys.argv[1:])", ""))
port = int(sys.argv[2])
socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
def high_sockets():
    fds = [int(f) for f in os.listdir("/proc/self/fd")]
    link = lambda fd: os.readlink("/proc/self/fd/%d" % fd)
    return [fd for fd in fds if fd >= 256 and link(fd).startswith("socket:")]
# The library's connection takes the first high number; pooled sockets sit above it.
ours = [min(high_sockets())]
os.closerange(3, 65536)
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, ours[0])
os.close(null)
assert tcp_echo("127.0.0.1", port, "after-close") == "after-close"
assert os.readlink("/proc/self/fd/%d" % ours[0]) == "/dev/null", "program's fd replaced"
assert tcp_echo("127.0.0.1", port, "again") == "again"
os.closerange(3, 65536)
assert tcp_echo("127.0.0.1", port, "after-second-close") == "after-second-close"
print("daemon ok", flush=True)
"#;
    let args = argv![python3(), "-c", program, &script, port.to_string()];
    let out = run(preload(Some(&a.url()), args), TIMEOUT);
    out.assert_success("a daemon that closed all descriptors must still reach stack A");
    assert!(out.stdout.contains("daemon ok"), "{out}");
}

#[test]
fn preloaded_32_threads_connect_at_once() {
    let test = "preloaded_32_threads_connect_at_once";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let _echo = preload_echo_server(&dir, &a.url(), port, &["127.0.0.1"]);
    let script = write_helper(&dir);

    for round in 0..3 {
        let args = argv![python3(), &script, "threads", "32", port.to_string()];
        let out = run(preload(Some(&a.url()), args), TIMEOUT);
        out.assert_success(&format!("round {round}: every thread must reach stack A"));
        assert!(out.stdout.contains("threads ok 32"), "{out}");
    }
}

#[test]
fn programs_without_network_run_unchanged_with_no_server() {
    let test = "programs_without_network_run_unchanged_with_no_server";
    if !require_program(test, "python3") || !require_program(test, "ls") {
        return;
    }
    let dir = TempDir::new(test);
    dir.write("a-file", "x");
    let missing = format!("unix://{}", dir.join("no-server.sock").display());

    let programs = [
        // Not -a: the link count of `..` (/tmp) changes as other tests make directories.
        argv!["ls", "-l", dir.path()],
        argv![python3(), "-c", "print(1)"],
        argv!["sh", "-c", "echo $((6 * 7)); ls / >/dev/null"],
    ];
    for program in programs {
        let mut native = Command::new(&program[0]);
        native.args(&program[1..]);
        let native = run(native, TIMEOUT);
        native.assert_success("native run");

        for retry in [None, Some("die"), Some("inftime")] {
            let mut cmd = preload(Some(&missing), &program);
            if let Some(retry) = retry {
                cmd.env("RUMPHIJACK_RETRYCONNECT", retry);
            }
            let out = run(cmd, TIMEOUT);
            out.assert_success("with the library and no server");
            assert_eq!(out.stdout, native.stdout, "same output as natively\n{out}");
            assert_eq!(out.stderr, "", "nothing on stderr\n{out}");
        }
    }
}
