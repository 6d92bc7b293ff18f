//! Inbound rules: a server under a policy may bind and listen only where the policy says, and
//! only accepts connections from allowed peers. Clients run in the same stack without a
//! policy.

use rumphijack_tests::policy::hijack_with_policy;
use rumphijack_tests::{
    argv, free_host_port, hijack, python3, require_program, run, write_helper, Server, Spawned,
    TempDir, TIMEOUT,
};

/// Three distinct ports free on the host.
fn three_ports() -> [u16; 3] {
    let mut ports = Vec::new();
    while ports.len() < 3 {
        let port = free_host_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    [ports[0], ports[1], ports[2]]
}

#[test]
fn bind_listen_and_accept_follow_the_policy() {
    let test = "bind_listen_and_accept_follow_the_policy";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "stack");
    let script = write_helper(&dir);
    let [service, bind_only, forbidden] = three_ports();
    let policy = dir.write(
        "inbound.toml",
        &format!(
            "default = \"deny\"\n\n\
             [[rule]]\nop = \"bind\"\nproto = \"tcp\"\nport = [{service}, {bind_only}]\n\
             action = \"allow\"\n\n\
             [[rule]]\nop = \"listen\"\nproto = \"tcp\"\nport = {service}\naction = \"allow\"\n\n\
             [[rule]]\ncomment = \"local clients only\"\nop = \"accept\"\naddr = \"127.0.0.1\"\n\
             action = \"allow\"\n"
        ),
    );

    // The recorder tries every endpoint and reports each failure with its errno.
    let log = dir.join("recorder.log");
    let endpoint = |proto: &str, port: u16| format!("{proto}:127.0.0.1:{port}");
    let args = argv![
        python3(),
        "-u",
        &script,
        "recorder",
        &log,
        endpoint("tcp", service),
        endpoint("tcp", bind_only),
        endpoint("tcp", forbidden),
        endpoint("udp", service)
    ];
    let mut recorder = Spawned::start(
        hijack_with_policy(&server.url(), &policy, None, args),
        dir.path(),
        "recorder",
    );
    let mut setup = Vec::new();
    while setup.last().map(String::as_str) != Some("listening") {
        setup.push(recorder.next_line(TIMEOUT));
    }
    let denied = "err EACCES PermissionError [Errno 13] Permission denied";
    for expected in [
        format!("listen {} ok", endpoint("tcp", service)),
        format!("listen {} {denied}", endpoint("tcp", bind_only)),
        format!("bind {} {denied}", endpoint("tcp", forbidden)),
        format!("bind {} {denied}", endpoint("udp", service)),
    ] {
        assert!(
            setup.contains(&expected),
            "recorder setup under the policy: missing `{expected}`\n{}",
            recorder.diagnostics()
        );
    }

    // A client from 127.0.0.2 completes the handshake with the kernel, but the supervisor
    // must not hand that connection to the program.
    let client = |source: &str| {
        let args = argv![
            python3(),
            &script,
            "try",
            "connect",
            "tcp",
            "127.0.0.1",
            service.to_string(),
            source
        ];
        run(hijack(&server.url(), args), TIMEOUT)
    };
    let refused_peer = client("127.0.0.2");
    assert!(
        !refused_peer.stdout.contains("reply recorded"),
        "a connection from 127.0.0.2 must not be delivered to the program\n{refused_peer}\n{}",
        recorder.diagnostics()
    );
    let allowed_peer = client("127.0.0.1");
    assert!(
        allowed_peer.stdout.contains("reply recorded 127.0.0.1:"),
        "a connection from 127.0.0.1 must be delivered to the program\n{allowed_peer}\n{}",
        recorder.diagnostics()
    );

    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let accepted: Vec<&str> = logged.lines().filter(|l| l.starts_with("tcp ")).collect();
    assert!(
        accepted.len() == 1 && accepted[0].contains(" from 127.0.0.1:"),
        "the program must have accepted exactly the one connection from 127.0.0.1\n{logged}"
    );
}
