//! A redirected socket is an ordinary descriptor in the program: flags asked for at creation
//! are honoured, `SOCK_CLOEXEC` ends it at `execve`, and epoll mixes it with a pipe.

use rumphijack_tests::{
    echo_server, field, free_host_port, hijack, probe, require_program, run, Server, TempDir,
    TIMEOUT,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn line_starting<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
}

#[test]
fn sock_nonblock_and_sock_cloexec_are_honoured() {
    let dir = TempDir::new("sock_nonblock_and_sock_cloexec_are_honoured");
    let a = Server::isolated(dir.path(), "a");
    let out = run(hijack(&a.url(), [probe!(), "flags"]), TIMEOUT);
    out.assert_success("rh-probe flags under rumphijack");

    let flagged = line_starting(&out.stdout, "flagged ");
    let plain = line_starting(&out.stdout, "plain ");
    assert_eq!(
        field(flagged, "nonblock"),
        Some("1"),
        "SOCK_NONBLOCK → O_NONBLOCK\n{out}"
    );
    assert_eq!(
        field(flagged, "cloexec"),
        Some("1"),
        "SOCK_CLOEXEC → FD_CLOEXEC\n{out}"
    );
    assert_eq!(
        field(plain, "nonblock"),
        Some("0"),
        "no SOCK_NONBLOCK → blocking\n{out}"
    );
    assert_eq!(
        field(plain, "cloexec"),
        Some("0"),
        "no SOCK_CLOEXEC → inherited\n{out}"
    );
    for line in [flagged, plain] {
        assert_eq!(
            field(line, "domain"),
            Some("2"),
            "must be an AF_INET socket\n{out}"
        );
        if is_root() {
            assert_eq!(
                field(line, "netns"),
                Some("differs"),
                "must be redirected\n{out}"
            );
        }
    }

    let after = |fd: &str| {
        let wanted = format!("after-exec fd={fd} ");
        let line = out.stdout.lines().find(|l| l.starts_with(&wanted));
        line.unwrap_or_else(|| panic!("no after-exec report for fd {fd}\n{out}"))
    };
    let flagged_fd = field(flagged, "fd").expect("fd of flagged socket");
    let plain_fd = field(plain, "fd").expect("fd of plain socket");
    assert_eq!(
        field(after(flagged_fd), "open"),
        Some("0"),
        "CLOEXEC socket gone\n{out}"
    );
    assert_eq!(
        field(after(plain_fd), "open"),
        Some("1"),
        "plain socket survives\n{out}"
    );
    assert_eq!(
        field(after(plain_fd), "domain"),
        Some("2"),
        "still the socket\n{out}"
    );
}

#[test]
fn epoll_over_redirected_socket_and_pipe() {
    let test = "epoll_over_redirected_socket_and_pipe";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let _echo = echo_server(&dir, &a.url(), port, &["127.0.0.1"]);

    let out = run(
        hijack(&a.url(), [probe!(), "epoll", &port.to_string()]),
        TIMEOUT,
    );
    out.assert_success("rh-probe epoll under rumphijack");
    assert!(
        out.stdout.contains("idle events=0"),
        "nothing ready before sending\n{out}"
    );
    assert!(
        out.stdout.contains("pipe=1 socket=1 data=ping"),
        "one epoll set must report both the pipe and the echo on the socket\n{out}"
    );
    if is_root() {
        let connected = line_starting(&out.stdout, "connected");
        assert_eq!(
            field(connected, "netns"),
            Some("differs"),
            "redirected\n{out}"
        );
    }
}
