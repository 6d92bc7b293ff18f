//! A program that installs seccomp filters of its own cannot undo the supervisor's trap.
//!
//! Each attack is first run natively, as a control: there it does get a socket in the host's
//! stack (it connects to a listener of the test's). Under rumphijack the same program must
//! end up with a socket from the server's stack, where nothing listens on that port.

use rumphijack_tests::hostile::{report_line, HostListener};
use rumphijack_tests::{field, hijack, probe, run, Server, TempDir, TIMEOUT};
use std::process::Command;

fn native(args: &[&str]) -> String {
    let mut cmd = Command::new(probe!());
    cmd.args(args);
    let out = run(cmd, TIMEOUT);
    out.assert_success("native control run");
    out.stdout
}

#[test]
fn a_later_allow_filter_does_not_undo_the_trap() {
    let dir = TempDir::new("a_later_allow_filter_does_not_undo_the_trap");
    let server = Server::isolated(dir.path(), "a");
    let host = HostListener::bind();

    let control = native(&["own-filter", &host.arg()]);
    let line = report_line(&control, "own-filter");
    assert_eq!(field(line, "host"), Some("reached"), "control: {line}");

    let out = run(
        hijack(&server.url(), [probe!(), "own-filter", &host.arg()]),
        TIMEOUT,
    );
    out.assert_success("own-filter under rumphijack");
    let line = report_line(&out.stdout, "own-filter");
    assert_eq!(
        field(line, "install"),
        Some("ok"),
        "the filter itself loads: {line}"
    );
    assert_eq!(
        field(line, "host"),
        Some("ECONNREFUSED"),
        "an ALLOW filter loaded later must not turn the trapped socket() into a host socket\n{out}"
    );
}

#[test]
fn an_own_listener_cannot_be_installed_under_the_supervisor() {
    let dir = TempDir::new("an_own_listener_cannot_be_installed_under_the_supervisor");
    let server = Server::isolated(dir.path(), "a");
    let host = HostListener::bind();

    // Natively, a listener of one's own answering CONTINUE hands out host sockets.
    let control = native(&["own-listener", &host.arg()]);
    let line = report_line(&control, "own-listener");
    assert_eq!(field(line, "install"), Some("ok"), "control: {line}");
    assert_eq!(field(line, "host"), Some("reached"), "control: {line}");

    // Under the supervisor the kernel allows one listener per filter chain (EBUSY), and the
    // newest filter would otherwise win a tie between two USER_NOTIF actions.
    let args = [probe!(), "own-listener", &host.arg()];
    let out = run(hijack(&server.url(), args), TIMEOUT);
    out.assert_success("own-listener under rumphijack");
    let line = report_line(&out.stdout, "own-listener");
    assert_ne!(
        field(line, "host"),
        Some("reached"),
        "a program's own notify filter must not get it a host socket\n{out}"
    );
    eprintln!("own listener under the supervisor: {line}");
}
