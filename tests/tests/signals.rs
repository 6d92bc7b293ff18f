//! Exit status mirrors the program's, and signals sent to rumphijack reach the program.

use nix::sys::signal::Signal;
use rumphijack_tests::{
    exit_code, field, probe, require_root, rumphijack_cmd, run, Spawned, TempDir, TIMEOUT,
};

/// `rumphijack run [EXTRA...] -- ARGV...` with the embedded server.
fn embedded(extra: &[&str], argv: &[&str]) -> std::process::Command {
    let mut cmd = rumphijack_cmd();
    cmd.arg("run").args(extra).arg("--").args(argv);
    cmd
}

#[test]
fn exit_status_mirrors_the_program() {
    run(embedded(&[], &["sh", "-c", "exit 7"]), TIMEOUT).assert_code(7, "exit 7 → 7");
    run(embedded(&[], &["true"]), TIMEOUT).assert_success("true → 0");
    run(embedded(&[], &["sh", "-c", "kill -TERM $$"]), TIMEOUT)
        .assert_code(143, "a program killed by SIGTERM → 128+15");
}

#[test]
fn forwarded_signals_reach_the_program() {
    let dir = TempDir::new("forwarded_signals_reach_the_program");
    let signals = [
        (Signal::SIGINT, "INT", 41),
        (Signal::SIGTERM, "TERM", 42),
        (Signal::SIGHUP, "HUP", 43),
        (Signal::SIGQUIT, "QUIT", 44),
        (Signal::SIGUSR1, "USR1", 45),
        (Signal::SIGUSR2, "USR2", 46),
    ];
    for (signal, name, code) in signals {
        // The trap runs once the short sleep returns; the loop never ends on its own.
        let script = format!("trap 'exit {code}' {name}; echo ready; while :; do sleep 0.05; done");
        let cmd = embedded(&[], &["sh", "-c", &script]);
        let mut program = Spawned::start(cmd, dir.path(), &format!("trap-{name}"));
        program.wait_for_line(TIMEOUT, |l| l == "ready");
        program.signal(signal);
        let status = program.wait(TIMEOUT);
        assert_eq!(
            exit_code(status),
            code,
            "{signal} sent to rumphijack must reach the program's trap\n{}",
            program.diagnostics()
        );
    }
}

#[test]
fn forwarded_sigterm_kills_an_untrapping_program_with_143() {
    let dir = TempDir::new("forwarded_sigterm_kills_an_untrapping_program");
    let cmd = embedded(&[], &["sh", "-c", "echo ready; exec sleep 30"]);
    let mut program = Spawned::start(cmd, dir.path(), "sleeper");
    program.wait_for_line(TIMEOUT, |l| l == "ready");
    // Whether the shell or the exec'd sleep gets it, SIGTERM's default action ends it.
    program.signal(Signal::SIGTERM);
    let status = program.wait(TIMEOUT);
    assert_eq!(
        exit_code(status),
        143,
        "SIGTERM → 143\n{}",
        program.diagnostics()
    );
}

#[test]
fn embedded_server_uses_current_or_isolated_namespace() {
    let test = "embedded_server_uses_current_or_isolated_namespace";
    if !require_root(test) {
        return;
    }
    let current = run(embedded(&[], &[probe!(), "netns-ino"]), TIMEOUT);
    current.assert_success("embedded server, current namespace");
    let line = current.stdout.trim();
    assert_eq!(
        field(line, "socket"),
        field(line, "self"),
        "same stack\n{current}"
    );

    let isolated = run(embedded(&["--isolated"], &[probe!(), "netns-ino"]), TIMEOUT);
    isolated.assert_success("embedded server, --isolated");
    let line = isolated.stdout.trim();
    assert_ne!(
        field(line, "socket"),
        field(line, "self"),
        "fresh stack\n{isolated}"
    );
}
