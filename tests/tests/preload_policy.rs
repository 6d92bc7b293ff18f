//! `RUMPHIJACK_POLICY` with the preload library alone: decisions are made in the program's
//! process, and a denied call fails there with the rule's errno.

use rumphijack_tests::preload::{preload, preload_echo_server};
use rumphijack_tests::{
    argv, free_host_port, python3, require_program, run, write_helper, Server, TempDir, TIMEOUT,
};

/// `EX_CONFIG`: the library's exit status for an invalid configuration.
const EXIT_CONFIG: i32 = 78;

#[test]
fn preload_policy_denies_in_process_with_the_rule_errno() {
    let test = "preload_policy_denies_in_process_with_the_rule_errno";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let (open_port, closed_port) = (free_host_port(), free_host_port());
    let _echo = preload_echo_server(&dir, &a.url(), open_port, &["127.0.0.1"]);
    let _other = preload_echo_server(&dir, &a.url(), closed_port, &["127.0.0.1"]);
    let script = write_helper(&dir);
    let policy = dir.write(
        "policy.toml",
        &format!(
            r#"default = "allow"

[[rule]]
comment = "the closed service"
op = "connect"
proto = "tcp"
port = {closed_port}
action = "deny"
errno = "ENETUNREACH"

[[rule]]
op = "send"
proto = "udp"
port = {closed_port}
action = "deny"
errno = "EPERM"
"#
        ),
    );
    let attempt = |op: &str, proto: &str, port: u16| {
        let args = argv![
            python3(),
            &script,
            "try",
            op,
            proto,
            "127.0.0.1",
            port.to_string()
        ];
        let mut cmd = preload(Some(&a.url()), args);
        cmd.env("RUMPHIJACK_POLICY", &policy);
        run(cmd, TIMEOUT)
    };

    // Both services exist in stack A; only the policy tells them apart.
    let out = attempt("connect", "tcp", open_port);
    out.assert_success("connect to an allowed port");
    assert!(out.stdout.contains("connect ok"), "{out}");
    let out = attempt("connect", "tcp", closed_port);
    assert!(out.stdout.contains("connect err ENETUNREACH"), "{out}");
    let out = attempt("sendto", "udp", closed_port);
    assert!(out.stdout.contains("sendto err EPERM"), "{out}");
    let out = attempt("sendto", "udp", open_port);
    assert!(out.stdout.contains("sendto ok"), "{out}");
}

#[test]
fn preload_invalid_policy_ends_the_program_at_its_first_socket_call() {
    let test = "preload_invalid_policy_ends_the_program_at_its_first_socket_call";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let policy = dir.write("bad.toml", "default = \"maybe\"\n");
    let missing = format!("unix://{}", dir.join("none.sock").display());
    let python = |code: &str| {
        let mut cmd = preload(Some(&missing), argv![python3(), "-c", code]);
        cmd.env("RUMPHIJACK_POLICY", &policy);
        run(cmd, TIMEOUT)
    };

    let out = python("print(1)");
    out.assert_success("a program without socket calls is not affected");
    assert_eq!(out.stderr, "", "{out}");

    let out = python("import socket; socket.socket(socket.AF_UNIX); print('unreached')");
    out.assert_code(EXIT_CONFIG, "the first socket call ends the program");
    assert!(out.stderr.starts_with("librumphijack: "), "{out}");
    assert!(
        out.stderr.contains("bad.toml"),
        "the error names the file\n{out}"
    );
    assert!(!out.stdout.contains("unreached"), "{out}");
}

/// With `RUMPHIJACK_HYBRID_COOKIE` set and no supervisor, the library's raw system calls
/// (sendto as sendmsg, send as write) behave as libc's functions: the same programs work and
/// the same policy decisions hold. The supervisor's side of hybrid mode is tested elsewhere.
#[test]
fn preload_cookie_route_performs_the_same_operations() {
    let test = "preload_cookie_route_performs_the_same_operations";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let (port, denied) = (free_host_port(), free_host_port());
    let _echo = preload_echo_server(&dir, &a.url(), port, &["127.0.0.1", "::1"]);
    let script = write_helper(&dir);
    let policy = dir.write(
        "policy.toml",
        &format!(
            "default = \"allow\"\n\n[[rule]]\nop = [\"connect\", \"send\"]\nport = {denied}\n\
             action = \"deny\"\nerrno = \"EPERM\"\n"
        ),
    );
    let cookie = "0x1234abcd5678ef90";
    let with_cookie = |args: Vec<std::ffi::OsString>, policy_file: bool| {
        let mut cmd = preload(Some(&a.url()), args);
        cmd.env("RUMPHIJACK_HYBRID_COOKIE", cookie);
        if policy_file {
            cmd.env("RUMPHIJACK_POLICY", &policy);
        }
        run(cmd, TIMEOUT)
    };

    for (proto, host) in [("tcp", "127.0.0.1"), ("udp", "127.0.0.1"), ("tcp", "::1")] {
        for policy_file in [false, true] {
            let word = format!("cookie-{proto}");
            let args = argv![python3(), &script, proto, host, port.to_string(), &word];
            let out = with_cookie(args, policy_file);
            out.assert_success(&format!("{proto} to {host}, policy {policy_file}"));
            assert!(out.stdout.contains(&word), "{out}");
        }
    }
    for (op, proto) in [("connect", "tcp"), ("sendto", "udp")] {
        let args = argv![
            python3(),
            &script,
            "try",
            op,
            proto,
            "127.0.0.1",
            denied.to_string()
        ];
        let out = with_cookie(args, true);
        assert!(out.stdout.contains(&format!("{op} err EPERM")), "{out}");
    }

    // An unparsable cookie is a configuration error.
    let mut cmd = preload(
        Some(&a.url()),
        argv![python3(), &script, "tcp", "127.0.0.1", "1", "x"],
    );
    cmd.env("RUMPHIJACK_HYBRID_COOKIE", "not-hex");
    let out = run(cmd, TIMEOUT);
    out.assert_code(EXIT_CONFIG, "bad cookie");
    assert!(out.stderr.contains("RUMPHIJACK_HYBRID_COOKIE"), "{out}");
}
