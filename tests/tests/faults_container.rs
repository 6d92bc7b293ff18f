//! Container use: `rumphijack run` as PID 1 of a PID namespace, and everything as an
//! ordinary user (uid 65534) with user namespaces instead of privileges.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rumphijack_tests::bins::{rump_server, rumphijack};
use rumphijack_tests::hostile::{as_nobody, report_line, HostListener};
use rumphijack_tests::{
    exit_code, field, probe, require_program, require_root, run, Spawned, TempDir, TIMEOUT,
};

fn prerequisites(test: &str) -> bool {
    require_root(test) && require_program(test, "unshare") && require_program(test, "setpriv")
}

/// `unshare --pid --fork --mount-proc rumphijack run -- sh -c SCRIPT`, embedded server.
fn as_pid1(script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(rumphijack())
        .args(["run", "--", "sh", "-c", script])
        .env_remove("RUMP_SERVER");
    cmd
}

#[test]
fn pid1_reaps_orphans_and_exits_with_the_program_status() {
    let test = "pid1_reaps_orphans_and_exits_with_the_program_status";
    if !prerequisites(test) {
        return;
    }
    // The inner sh exits at once; its background sleep is orphaned, re-parented to PID 1
    // (rumphijack) and exits 0.3 s later. Nobody else could reap it.
    let script = "sh -c 'sleep 0.3 &'; sleep 1; \
                  echo zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l); \
                  echo pid1=$(cat /proc/1/comm); exit 7";
    let out = run(as_pid1(script), TIMEOUT);
    out.assert_code(7, "the exit status is the program's");
    let line = report_line(&out.stdout, "zombies");
    assert_eq!(
        field(line, "zombies"),
        Some("0"),
        "an orphan was left a zombie\n{out}"
    );
    assert!(
        out.stdout.contains("pid1=rumphijack"),
        "rumphijack must be PID 1\n{out}"
    );
}

/// The pid (in our namespace) of the only child of `parent`.
fn only_child(parent: u32) -> u32 {
    let path = format!("/proc/{parent}/task/{parent}/children");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{parent} has no child"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pid1_forwards_sigterm_to_the_program() {
    let test = "pid1_forwards_sigterm_to_the_program";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let script = "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done";
    let mut program = Spawned::start(as_pid1(script), dir.path(), "pid1");
    program.wait_for_line(TIMEOUT, |l| l == "ready");
    let supervisor = only_child(program.pid());
    kill(Pid::from_raw(supervisor as i32), Signal::SIGTERM).expect("SIGTERM to PID 1");
    let status = program.wait(TIMEOUT);
    assert_eq!(
        exit_code(status),
        42,
        "SIGTERM to PID 1 must reach the program (its trap exits 42)\n{}",
        program.diagnostics()
    );
}

#[test]
fn unprivileged_isolated_supervisor_works() {
    let test = "unprivileged_isolated_supervisor_works";
    if !prerequisites(test) {
        return;
    }
    let host = HostListener::bind();
    let args = [
        "run",
        "--isolated",
        "--",
        probe!(),
        "own-filter",
        &host.arg(),
    ];
    let out = run(as_nobody(rumphijack(), args), TIMEOUT);
    eprintln!("{test}:\n{out}");
    out.assert_success(
        "`rumphijack run --isolated` as uid 65534 must work through a user namespace",
    );
    let line = report_line(&out.stdout, "own-filter");
    assert_eq!(field(line, "host"), Some("ECONNREFUSED"), "{out}");
}

#[test]
fn unprivileged_isolated_server_works() {
    let test = "unprivileged_isolated_server_works";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let own = dir.join("nobody");
    std::fs::create_dir(&own).expect("mkdir");
    std::os::unix::fs::chown(&own, Some(65534), Some(65534)).expect("chown to 65534");
    let socket = own.join("s.sock");
    let pidfile = own.join("s.pid");
    let url = format!("unix://{}", socket.display());

    let start = as_nobody(
        rump_server(),
        [
            "--isolated".as_ref(),
            "--detach".as_ref(),
            "--pidfile".as_ref(),
            pidfile.as_os_str(),
            url.as_ref(),
        ],
    );
    let out = run(start, TIMEOUT);
    out.assert_success("`rump_server --isolated --detach` as uid 65534");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("a pid");
    let stop = StopOnDrop(pid);

    let host = HostListener::bind();
    let args = [
        "run",
        "--server",
        &url,
        "--",
        probe!(),
        "own-filter",
        &host.arg(),
    ];
    let out = run(as_nobody(rumphijack(), args), TIMEOUT);
    out.assert_success("a client of the unprivileged server, as uid 65534");
    let line = report_line(&out.stdout, "own-filter");
    assert_eq!(field(line, "host"), Some("ECONNREFUSED"), "{out}");
    drop(stop);
}

/// Sends SIGTERM to a detached server on drop.
struct StopOnDrop(i32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGTERM);
    }
}
