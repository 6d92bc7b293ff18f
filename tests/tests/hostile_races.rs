//! Races between the supervisor's handling of a call and the program changing under it:
//! `vfork` children, `execve` while other threads are in `socket()`, and a descriptor number
//! that is swapped to another socket while its `connect` is being checked.
//!
//! `RH_RACE_ROUNDS` scales the vfork and exec rounds (default 200), `RH_DUP2_N` the number of
//! racing connects (default 20 000).

use std::process::Command;
use std::time::Duration;

use rumphijack_tests::hostile::{env_count, report_line, HostListener};
use rumphijack_tests::policy::hijack_with_policy;
use rumphijack_tests::{
    field, free_host_port, hijack, probe, run, Finished, Server, Spawned, TempDir, TIMEOUT,
};

fn native(args: &[&str]) -> Finished {
    let mut cmd = Command::new(probe!());
    cmd.args(args);
    run(cmd, TIMEOUT)
}

fn count(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn a_vfork_child_gets_a_redirected_socket() {
    let dir = TempDir::new("a_vfork_child_gets_a_redirected_socket");
    let server = Server::isolated(dir.path(), "a");
    let host = HostListener::bind();
    let n = env_count("RH_RACE_ROUNDS", 200).to_string();

    let control = native(&["vfork-socket", &host.arg(), "3"]);
    let line = report_line(&control.stdout, "vfork");
    assert_eq!(
        count(line, "reached"),
        3,
        "control: natively the child reaches the host"
    );

    let out = run(
        hijack(&server.url(), [probe!(), "vfork-socket", &host.arg(), &n]),
        TIMEOUT,
    );
    out.assert_success("vfork-socket under rumphijack");
    let line = report_line(&out.stdout, "vfork");
    assert_eq!(
        count(line, "reached"),
        0,
        "a vfork child reached the host stack\n{out}"
    );
    assert_eq!(
        field(line, "other_stack"),
        Some(n.as_str()),
        "every vfork child's socket must come from the server's stack\n{out}"
    );
}

#[test]
fn sockets_made_while_another_thread_execs_stay_redirected() {
    let dir = TempDir::new("sockets_made_while_another_thread_execs_stay_redirected");
    let server = Server::isolated(dir.path(), "a");
    let host = HostListener::bind();
    let rounds = env_count("RH_RACE_ROUNDS", 200).to_string();

    let control = native(&["exec-race", &host.arg(), "2"]);
    let line = report_line(&control.stdout, "exec-race");
    assert!(
        count(line, "reached") > 0,
        "control: natively sockets reach the host\n{control}"
    );

    let args = [probe!(), "exec-race", &host.arg(), &rounds];
    let out = run(hijack(&server.url(), args), Duration::from_secs(60));
    out.assert_success("exec-race under rumphijack");
    let line = report_line(&out.stdout, "exec-race");
    eprintln!("exec race: {line}");
    assert_eq!(
        count(line, "reached"),
        0,
        "a socket that survived execve, or one made after it, is a host socket\n{out}"
    );
    assert_eq!(field(line, "last"), Some("ECONNREFUSED"), "{out}");
}

/// A TCP listener and a UDP socket on PORT in the server's stack, counting arrivals.
fn arrivals(dir: &TempDir, server: &Server, port: u16) -> Spawned {
    let args = [probe!().to_string(), "arrivals".into(), port.to_string()];
    let mut arrivals = Spawned::start(hijack(&server.url(), args), dir.path(), "arrivals");
    arrivals.wait_for_line(TIMEOUT, |l| l == "listening");
    arrivals
}

fn tcp_arrivals(arrivals: &mut Spawned) -> u64 {
    arrivals.send_line("report").expect("arrivals is running");
    let line = arrivals.wait_for_line(TIMEOUT, |l| l.starts_with("port="));
    arrivals.wait_for_line(TIMEOUT, |l| l == "end");
    count(&line, "tcp")
}

#[test]
fn swapping_the_descriptor_during_a_checked_connect_never_reaches_a_denied_peer() {
    let test = "swapping_the_descriptor_during_a_checked_connect";
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let mut counter = arrivals(&dir, &server, port);
    let n = env_count("RH_DUP2_N", 20_000).to_string();

    // TCP to PORT is denied; UDP (a connect sends nothing) and AF_UNIX (the kernel refuses an
    // inet address) are allowed. Only a decision taken on one socket and carried out on
    // another lets a TCP connection arrive.
    let policy = dir.write(
        "p.toml",
        &format!(
            "[default]\naction = \"allow\"\n\n[[rule]]\nop = \"connect\"\nproto = \"tcp\"\n\
             addr = \"127.0.0.1\"\nport = {port}\naction = \"deny\"\nerrno = \"EPERM\"\n"
        ),
    );

    // Control: without a policy, the same program's TCP connects do arrive.
    let out = run(
        hijack(
            &server.url(),
            [probe!(), "dup2-race", &port.to_string(), "200"],
        ),
        TIMEOUT,
    );
    out.assert_success("dup2-race without a policy");
    assert!(
        tcp_arrivals(&mut counter) > 0,
        "control: TCP connects arrive\n{out}"
    );
    counter.close_stdin();
    drop(counter);
    let mut counter = arrivals(&dir, &server, port);

    let args = [probe!(), "dup2-race", &port.to_string(), &n];
    let cmd = hijack_with_policy(&server.url(), &policy, None, args);
    let out = run(cmd, Duration::from_secs(60));
    out.assert_success("dup2-race under the policy");
    let line = report_line(&out.stdout, "dup2-race");
    eprintln!("dup2 race: {line}");
    assert!(
        line.contains("EPERM:"),
        "some connects must have met a TCP socket and been denied: {line}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        tcp_arrivals(&mut counter),
        0,
        "a TCP connection reached the denied port\n{out}"
    );
}
