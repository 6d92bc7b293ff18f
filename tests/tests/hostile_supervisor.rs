//! Attacks on the supervisor by the program it supervises, run as uid 65534 (supervisor and
//! program alike) so that root's capabilities do not hide a missing protection.
//!
//! The same attacks against a dumpable parent of the same user (`sh`) succeed: that control
//! run shows that what refuses them under rumphijack is the supervisor's protection.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rumphijack_tests::hostile::{as_nobody, hijack_as_nobody, report_line, HostListener, NOBODY};
use rumphijack_tests::{
    exit_code, field, probe, require_program, require_root, run, Server, Spawned, TempDir, TIMEOUT,
};

/// A stack server that uid 65534 may use.
fn server_for_nobody(dir: &TempDir) -> Server {
    let server = Server::start(&dir.join("a.sock"), &["--isolated", "--allow-uid", NOBODY]);
    // The file mode would keep uid 65534 out before SO_PEERCRED is even asked.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(server.socket_path(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod the server socket");
    server
}

fn prerequisites(test: &str) -> bool {
    require_root(test) && require_program(test, "setpriv")
}

const ATTACKS: [&str; 6] = [
    "ptrace-attach",
    "pidfd-getfd",
    "process-vm-writev",
    "proc-mem-write",
    "proc-fd-open",
    "proc-environ",
];

#[test]
fn same_user_attacks_on_the_supervisor_are_refused() {
    let test = "same_user_attacks_on_the_supervisor_are_refused";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let server = server_for_nobody(&dir);

    // Control: the parent is an ordinary dumpable process of the same user.
    let script = format!("{} attack parent; true", probe!());
    let control = run(as_nobody("sh", ["-c", &script]), TIMEOUT);
    control.assert_success("native control");
    for attack in ATTACKS {
        let verdict = field(report_line(&control.stdout, attack), attack).unwrap_or("");
        assert!(
            verdict.starts_with("permitted"),
            "control: {attack} must work against a dumpable parent\n{control}"
        );
    }

    let out = run(
        hijack_as_nobody(&server.url(), [probe!(), "attack", "parent"]),
        TIMEOUT,
    );
    out.assert_success("rh-probe attack parent under rumphijack as uid 65534");
    for attack in ATTACKS {
        let verdict = field(report_line(&out.stdout, attack), attack).unwrap_or("");
        assert!(
            verdict.starts_with("refused"),
            "{attack} against the supervisor must be refused\n{out}"
        );
    }
    // Signals are not refused: a program may stop or kill its own supervisor. That is a
    // denial of service to itself only; what follows a kill is tested below.
    eprintln!("{test}:\n{}", out.stdout.trim_end());
}

/// `rumphijack run -- rh-probe after-supervisor PORT [EXTRA]` as uid 65534; returns the
/// program's report once its supervisor is gone (killed by the test unless `EXTRA` says the
/// program kills it itself).
fn after_supervisor(test: &str, program_kills: bool) -> Option<String> {
    if !prerequisites(test) {
        return None;
    }
    let dir = TempDir::new(test);
    let server = server_for_nobody(&dir);
    let host = HostListener::bind();
    let mut args = vec![probe!().to_string(), "after-supervisor".into(), host.arg()];
    if program_kills {
        args.push("--kill-parent".into());
    }
    let mut program = Spawned::start(hijack_as_nobody(&server.url(), args), dir.path(), "p");
    if !program_kills {
        program.wait_for_line(TIMEOUT, |l| l.starts_with("ready"));
        kill(Pid::from_raw(program.pid() as i32), Signal::SIGKILL).expect("kill rumphijack");
    }
    let status = program.wait(TIMEOUT);
    assert_eq!(
        exit_code(status),
        128 + libc::SIGKILL,
        "the supervisor was killed"
    );

    let mut report = Vec::new();
    loop {
        let line = program.next_line(Duration::from_secs(20));
        let last = line.starts_with("own-listener");
        report.push(line);
        if last {
            break;
        }
    }
    Some(report.join("\n"))
}

fn assert_no_host_socket(report: &str) {
    let plain = report_line(report, "plain");
    assert_eq!(
        field(plain, "host"),
        Some("nosocket-ENOSYS"),
        "a trapped socket() with nobody to answer must fail with ENOSYS\n{report}"
    );
    let ring = report_line(report, "io-uring");
    assert_eq!(field(ring, "errno"), Some("ENOSYS"), "{report}");
    let own = report_line(report, "own-listener");
    assert_ne!(
        field(own, "host"),
        Some("reached"),
        "with its supervisor dead, the program installed a notify filter of its own, answered \
         CONTINUE and got a host-stack socket\n{report}"
    );
}

#[test]
fn after_the_supervisor_is_killed_no_host_socket() {
    let test = "after_the_supervisor_is_killed_no_host_socket";
    if let Some(report) = after_supervisor(test, false) {
        eprintln!("{test}:\n{report}");
        assert_no_host_socket(&report);
    }
}

#[test]
fn a_program_that_kills_its_supervisor_gets_no_host_socket() {
    let test = "a_program_that_kills_its_supervisor_gets_no_host_socket";
    if let Some(report) = after_supervisor(test, true) {
        eprintln!("{test}:\n{report}");
        assert!(
            report.contains("kill-parent=ok"),
            "same-user SIGKILL works\n{report}"
        );
        assert_no_host_socket(&report);
    }
}
