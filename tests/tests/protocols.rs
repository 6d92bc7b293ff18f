//! UDP, IPv6 and netlink are redirected; AF_UNIX is not.

use std::process::Command;

use rumphijack_tests::{
    argv, echo_server, field, free_host_port, hijack, probe, python3, require_program,
    require_root, run, write_helper, NetNs, Server, Spawned, TempDir, TIMEOUT,
};

#[test]
fn udp_and_ipv6_echo_in_the_server_stack() {
    let test = "udp_and_ipv6_echo_in_the_server_stack";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let _echo = echo_server(&dir, &a.url(), port, &["127.0.0.1", "::1"]);
    let script = write_helper(&dir);

    for (proto, host, msg) in [
        ("udp", "127.0.0.1", "udp-v4"),
        ("tcp", "::1", "tcp-v6"),
        ("udp", "::1", "udp-v6"),
    ] {
        let args = argv![python3(), script, proto, host, port.to_string(), msg];
        let out = run(hijack(&a.url(), args), TIMEOUT);
        out.assert_success(&format!("{proto} echo via {host} in stack A"));
        assert_eq!(out.stdout.trim(), msg, "{proto} echo via {host}\n{out}");
    }

    // The same IPv6 listener does not exist on the host.
    let mut native = Command::new(python3());
    native
        .arg(&script)
        .args(["tcp", "::1", &port.to_string(), "native"]);
    let out = run(native, TIMEOUT);
    assert_ne!(
        out.code(),
        0,
        "native [::1]:{port} must not reach stack A\n{out}"
    );
}

/// Interface names from `ip -o link` output ("1: lo: <LOOPBACK..." → "lo").
fn link_names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

#[test]
fn netlink_lists_the_server_stack_interfaces() {
    let test = "netlink_lists_the_server_stack_interfaces";
    if !require_root(test) || !require_program(test, "ip") {
        return;
    }
    let dir = TempDir::new(test);
    let ns = NetNs::create();
    ns.add_link("rhextra0");
    let isolated = Server::isolated(dir.path(), "isolated");

    // Natively, the client's namespace has lo and the extra link.
    let mut native = ns.command("ip");
    native.args(["-o", "link"]);
    let out = run(native, TIMEOUT);
    out.assert_success("ip -o link in the test namespace");
    let names = link_names(&out.stdout);
    assert!(
        names.iter().any(|n| n == "rhextra0"),
        "control: extra link exists\n{out}"
    );

    // Under rumphijack, the netlink socket lives in the isolated stack: only lo.
    let mut hijacked = ns.command(rumphijack_tests::rumphijack());
    for var in ["RUMP_SERVER", "RUMPHIJACK", "RUMPHIJACK_RETRYCONNECT"] {
        hijacked.env_remove(var);
    }
    hijacked.args(["run", "--server", &isolated.url(), "--", "ip", "-o", "link"]);
    let out = run(hijacked, TIMEOUT);
    out.assert_success("ip -o link under rumphijack");
    assert_eq!(
        link_names(&out.stdout),
        ["lo"],
        "isolated stack has only lo\n{out}"
    );

    // A server joined to the namespace with --netns shows that namespace's links.
    let joined = Server::start(
        &dir.join("joined.sock"),
        &["--netns", ns.path().to_str().expect("utf-8")],
    );
    let out = run(hijack(&joined.url(), ["ip", "-o", "link"]), TIMEOUT);
    out.assert_success("ip -o link against a --netns server");
    let names = link_names(&out.stdout);
    assert!(
        names.iter().any(|n| n == "rhextra0"),
        "--netns server must host the joined namespace's stack\n{out}"
    );
}

#[test]
fn unix_sockets_are_not_redirected() {
    let dir = TempDir::new("unix_sockets_are_not_redirected");
    let a = Server::isolated(dir.path(), "a");

    let out = run(hijack(&a.url(), [probe!(), "unix-pair"]), TIMEOUT);
    out.assert_success("AF_UNIX socketpair and listener under rumphijack");
    for prefix in ["socketpair=ok", "listener=ok"] {
        let line = out.stdout.lines().find(|l| l.starts_with(prefix));
        let line = line.unwrap_or_else(|| panic!("missing {prefix}\n{out}"));
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                field(line, "netns"),
                Some("same"),
                "AF_UNIX stays local\n{out}"
            );
        }
    }
}

#[test]
fn socat_unix_pair_works_under_rumphijack() {
    let test = "socat_unix_pair_works_under_rumphijack";
    if !require_program(test, "socat") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let path = dir.join("echo.sock");
    let listen = format!("UNIX-LISTEN:{},fork", path.display());
    let _listener = Spawned::start(
        hijack(&a.url(), ["socat", &listen, "PIPE"]),
        dir.path(),
        "socat-listener",
    );

    // socat prints nothing when it listens: retry the client (bounded) until it is up.
    let client = format!(
        "echo hello-unix | socat -t 2 - UNIX-CONNECT:{}",
        path.display()
    );
    let mut last = None;
    for _ in 0..50 {
        let out = run(hijack(&a.url(), ["sh", "-c", &client]), TIMEOUT);
        let done = out.code() == 0;
        last = Some(out);
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = last.expect("one client run");
    out.assert_success("socat UNIX-CONNECT under rumphijack must reach the UNIX-LISTEN side");
    assert_eq!(out.stdout.trim(), "hello-unix", "echo over AF_UNIX\n{out}");
}
