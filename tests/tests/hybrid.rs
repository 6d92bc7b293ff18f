//! Hybrid mode (`rumphijack run --preload`): a dynamically linked program's socket calls are
//! handled by the preload library in its own process — the supervisor serves none of them —
//! while a static child it starts is still redirected through the seccomp filter.
//!
//! The stack is isolated (only `lo`), so every successful connection proves redirection; the
//! supervisor's `--stats` counters prove who served each call.

use std::time::Duration;

use rumphijack_tests::{
    require_program, require_root, rumphijack_cmd, run, Finished, Server, TempDir,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// Python: serve HTTP on 127.0.0.1:PORT in a thread, fetch it itself through urllib, then
/// have static busybox wget fetch it too. Prints one line per client that succeeded.
const PROGRAM: &str = r#"
import http.server, socketserver, subprocess, sys, threading, urllib.request
port = int(sys.argv[1])
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
server = socketserver.TCPServer(("127.0.0.1", port), Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
print("python fetched", len(body), "bytes", flush=True)
out = subprocess.run(["busybox", "wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/"],
                     capture_output=True, timeout=20)
print("busybox exit", out.returncode, "bytes", len(out.stdout), flush=True)
server.shutdown()
"#;

fn stats_of(file: &std::path::Path) -> serde_like::Stats {
    let text = std::fs::read_to_string(file).expect("rumphijack wrote --stats");
    serde_like::parse(&text)
}

/// A tiny reader for the flat `{"name": number, …}` object `--stats` writes.
mod serde_like {
    #[derive(Debug)]
    pub struct Stats(pub Vec<(String, u64)>);

    impl Stats {
        pub fn get(&self, name: &str) -> u64 {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("--stats has no {name:?}: {self:?}"))
        }
    }

    pub fn parse(text: &str) -> Stats {
        let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
        Stats(
            inner
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once(':')?;
                    Some((
                        k.trim().trim_matches('"').to_owned(),
                        v.trim().parse().ok()?,
                    ))
                })
                .collect(),
        )
    }
}

fn run_program(dir: &TempDir, extra: &[&str], stats: &std::path::Path, port: u16) -> Finished {
    let script = dir.write("hybrid.py", PROGRAM);
    let mut cmd = rumphijack_cmd();
    cmd.arg("run")
        .args(extra)
        .arg("--stats")
        .arg(stats)
        .arg("--");
    cmd.arg("python3").arg(&script).arg(port.to_string());
    run(cmd, DEADLINE)
}

fn assert_both_fetched(out: &Finished, why: &str) {
    out.assert_success(why);
    assert!(
        out.stdout.contains("python fetched"),
        "{why}: python could not fetch\n{out}"
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("busybox exit 0 ")),
        "{why}: static busybox wget could not fetch\n{out}"
    );
}

fn hybrid_case(extra: &[&str], name: &str) {
    if !require_root(name) || !require_program(name, "busybox") {
        return;
    }
    let dir = TempDir::new(name);
    let stats = dir.path().join("stats.json");
    let port = 18080;

    // Control: the supervisor alone serves every socket() of python and of busybox.
    let mut supervised: Vec<&str> = extra.to_vec();
    supervised.retain(|a| *a != "--preload");
    let out = run_program(&dir, &supervised, &stats, port);
    assert_both_fetched(&out, "supervisor only");
    let alone = stats_of(&stats);
    assert!(
        alone.get("socket") >= 3,
        "without --preload the supervisor serves python's sockets too: {alone:?}"
    );

    // Hybrid: python's calls stay in-process; only busybox's socket() reaches the supervisor.
    // Another port: with an external server the stack outlives the control run, and its
    // connections linger in TIME_WAIT on the first port.
    let out = run_program(&dir, extra, &stats, port + 1);
    assert_both_fetched(&out, "hybrid");
    let hybrid = stats_of(&stats);
    assert_eq!(
        hybrid.get("socket"),
        1,
        "in hybrid mode the supervisor serves only the static child's socket: {hybrid:?}\n{out}"
    );
}

#[test]
fn hybrid_with_the_embedded_isolated_server() {
    hybrid_case(
        &["--isolated", "--preload"],
        "hybrid_with_the_embedded_isolated_server",
    );
}

#[test]
fn hybrid_with_an_external_server() {
    let name = "hybrid_with_an_external_server";
    if !require_root(name) {
        return;
    }
    let dir = TempDir::new(name);
    let server = Server::isolated(dir.path(), "a");
    let url = server.url();
    hybrid_case(&["--server", &url, "--preload"], name);
}

#[test]
fn hybrid_under_a_policy_decides_in_process_and_still_denies() {
    let name = "hybrid_under_a_policy_decides_in_process_and_still_denies";
    if !require_root(name) {
        return;
    }
    let dir = TempDir::new(name);
    // Both rules log, so any connect the supervisor decides shows in the audit file. Counting
    // notifications would not do: glibc's own internal connects (its nscd client, reached
    // when Python looks up the user without HOME) never pass through the library and are
    // rightly trapped, and how many there are depends on the machine's NSS setup.
    let policy = dir.write(
        "policy.toml",
        "default = \"allow\"\n\n\
         [[rule]]\nop = \"connect\"\nport = 18081\naction = \"allow\"\nlog = true\n\n\
         [[rule]]\nop = \"connect\"\nport = 9\naction = \"deny\"\n\
         errno = \"ECONNREFUSED\"\nlog = true\n",
    );
    let audit = dir.path().join("audit.jsonl");
    let script = dir.write(
        "deny.py",
        "import ctypes, socket\n\
         srv = socket.socket()\nsrv.bind(('127.0.0.1', 18081))\nsrv.listen()\n\
         socket.create_connection(('127.0.0.1', 18081), timeout=5)\nprint('allowed')\n\
         try:\n    socket.create_connection(('127.0.0.1', 9), timeout=5)\n\
         except OSError as e:\n    print('denied', e.errno)\n\
         # connect(2) straight to the kernel, without the library's mark.\n\
         raw = socket.socket()\n\
         addr = bytes([2, 0, 18081 >> 8, 18081 & 255, 127, 0, 0, 1]) + bytes(8)\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         rc = libc.syscall(42, raw.fileno(), addr, len(addr))\n\
         print('raw', rc, ctypes.get_errno())\n",
    );
    let mut cmd = rumphijack_cmd();
    cmd.args(["run", "--isolated", "--preload", "--policy"])
        .arg(&policy)
        .arg("--audit")
        .arg(&audit)
        .arg("--")
        .arg("python3")
        .arg(&script);
    let out = run(cmd, DEADLINE);
    out.assert_success("hybrid under a policy");
    assert!(
        out.stdout.contains("allowed")
            && out
                .stdout
                .contains(&format!("denied {}", libc::ECONNREFUSED))
            && out.stdout.contains("raw 0 0"),
        "the library applies the policy in-process\n{out}"
    );
    let records = std::fs::read_to_string(&audit).expect("the supervisor writes its audit file");
    let decided: Vec<&str> = records
        .lines()
        .filter(|line| line.contains("\"op\":\"connect\""))
        .collect();
    // Exactly one connect reached the supervisor: the raw one. The library's two connects
    // carried the cookie and were decided in-process only.
    assert_eq!(
        decided.len(),
        1,
        "only the unmarked connect is trapped:\n{records}"
    );
    assert!(
        decided[0].contains("\"port\":18081") && decided[0].contains("\"action\":\"allow\""),
        "the trapped connect is the raw one:\n{records}"
    );
}
