//! The preload library when its stack server is killed or was never there, for each value of
//! `RUMPHIJACK_RETRYCONNECT`. Established connections live on in the kernel; new sockets
//! follow the policy.
//!
//! The program is `rh.py interactive` with the library preloaded, driven line by line. Its
//! peer is a preloaded echo server in the same stack, which survives the stack server.

use std::thread::sleep;
use std::time::Duration;

use rumphijack_tests::preload::{preload, preload_echo_server};
use rumphijack_tests::{
    argv, exit_code, free_host_port, python3, require_program, write_helper, Server, Spawned,
    TempDir, TIMEOUT,
};

/// Fields drop in order: client, echo server, stack server, then the directory.
struct Scenario {
    client: Spawned,
    _echo: Spawned,
    server: Server,
    _dir: TempDir,
}

impl Scenario {
    /// Stack A, an echo server in it, and a connected interactive client.
    fn start(test: &str, retry: Option<&str>) -> Option<Scenario> {
        if !require_program(test, "python3") {
            return None;
        }
        let dir = TempDir::new(test);
        let server = Server::isolated(dir.path(), "a");
        let port = free_host_port();
        let echo = preload_echo_server(&dir, &server.url(), port, &["127.0.0.1"]);
        let client = interactive(&dir, &server.url(), retry);
        let mut scenario = Scenario {
            client,
            _echo: echo,
            server,
            _dir: dir,
        };
        assert_eq!(scenario.ask(&format!("connect {port}")), "connected");
        assert_eq!(scenario.ask("echo before"), "echo before");
        Some(scenario)
    }

    fn ask(&mut self, command: &str) -> String {
        ask(&mut self.client, command)
    }

    /// After the server's death, the established connection still carries data.
    fn kill_server_and_check_connection(&mut self) {
        self.server.kill();
        assert_eq!(
            self.ask("echo after-kill"),
            "echo after-kill",
            "an established connection must survive the server\n{}",
            self.client.diagnostics()
        );
    }

    /// A socket() made while the server is down blocks until it is back.
    fn socket_during_outage_succeeds_after_restart(&mut self, outage: Duration) {
        self.client.send_line("socket").expect("client stdin");
        sleep(outage);
        self.server.restart();
        let answer = self.client.next_line(TIMEOUT);
        assert_eq!(answer, "socket ok", "{}", self.client.diagnostics());
        assert_eq!(self.ask("echo still"), "echo still");
    }
}

fn interactive(dir: &TempDir, url: &str, retry: Option<&str>) -> Spawned {
    let script = write_helper(dir);
    let mut cmd = preload(Some(url), argv![python3(), "-u", script, "interactive"]);
    if let Some(retry) = retry {
        cmd.env("RUMPHIJACK_RETRYCONNECT", retry);
    }
    let mut client = Spawned::start(cmd, dir.path(), "client");
    client.wait_for_line(TIMEOUT, |l| l == "ready");
    client
}

fn ask(client: &mut Spawned, command: &str) -> String {
    client.send_line(command).expect("client stdin");
    client.next_line(TIMEOUT)
}

#[test]
fn preload_unset_retry_new_socket_fails_with_enotconn() {
    let test = "preload_unset_retry_new_socket_fails_with_enotconn";
    let Some(mut s) = Scenario::start(test, None) else {
        return;
    };
    s.kill_server_and_check_connection();
    assert_eq!(
        s.ask("socket"),
        "socket err ENOTCONN",
        "{}",
        s.client.diagnostics()
    );

    // Unset means no reconnect, even once a server is back at the same path.
    s.server.restart();
    assert_eq!(
        s.ask("socket"),
        "socket err ENOTCONN",
        "{}",
        s.client.diagnostics()
    );
    assert_eq!(s.ask("echo end"), "echo end");
}

#[test]
fn preload_retry_once_reconnects_to_a_restarted_server() {
    let test = "preload_retry_once_reconnects_to_a_restarted_server";
    let Some(mut s) = Scenario::start(test, Some("once")) else {
        return;
    };
    let before = nix::unistd::geteuid().is_root().then(|| s.ask("netns"));
    s.kill_server_and_check_connection();
    s.server.restart();
    assert_eq!(s.ask("socket"), "socket ok", "{}", s.client.diagnostics());

    // The restarted server is a new isolated stack, and new sockets belong to it.
    if let Some(before) = before {
        let after = s.ask("netns");
        assert!(after.starts_with("netns "), "{}", s.client.diagnostics());
        assert_ne!(
            before, after,
            "new sockets must come from the restarted server"
        );
    }
}

#[test]
fn preload_retry_seconds_reconnects_within_the_window() {
    let test = "preload_retry_seconds_reconnects_within_the_window";
    let Some(mut s) = Scenario::start(test, Some("5")) else {
        return;
    };
    s.kill_server_and_check_connection();
    s.socket_during_outage_succeeds_after_restart(Duration::from_millis(500));
}

#[test]
fn preload_retry_inftime_reconnects_after_an_outage() {
    let test = "preload_retry_inftime_reconnects_after_an_outage";
    let Some(mut s) = Scenario::start(test, Some("inftime")) else {
        return;
    };
    s.kill_server_and_check_connection();
    s.socket_during_outage_succeeds_after_restart(Duration::from_millis(1500));
}

#[test]
fn preload_retry_die_kills_the_program_when_the_server_is_lost() {
    let test = "preload_retry_die_kills_the_program_when_the_server_is_lost";
    let Some(mut s) = Scenario::start(test, Some("die")) else {
        return;
    };
    s.server.kill();
    // The program may be gone before it answers; a failed write is fine.
    let _ = s.client.send_line("socket");
    let status = s.client.wait(TIMEOUT);
    assert_eq!(
        exit_code(status),
        128 + libc::SIGKILL,
        "{}",
        s.client.diagnostics()
    );
}

/// A server that is not there when the program makes its first socket: the first connection
/// follows the retry policy like a lost one.
#[test]
fn preload_server_absent_at_first_socket_follows_the_retry_policy() {
    let test = "preload_server_absent_at_first_socket_follows_the_retry_policy";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let socket = dir.join("late.sock");
    let url = format!("unix://{}", socket.display());

    // Unset, `once` and a number of seconds give up with ENOTCONN, and stay given up.
    for retry in [None, Some("once"), Some("1")] {
        let mut client = interactive(&dir, &url, retry);
        assert_eq!(
            ask(&mut client, "socket"),
            "socket err ENOTCONN",
            "{retry:?}"
        );
        assert_eq!(
            ask(&mut client, "socket"),
            "socket err ENOTCONN",
            "{retry:?}"
        );
        // The program itself carries on.
        client.close_stdin();
        assert_eq!(
            exit_code(client.wait(TIMEOUT)),
            0,
            "{}",
            client.diagnostics()
        );
    }

    // `die` kills the program at its first redirected socket.
    let mut client = interactive(&dir, &url, Some("die"));
    let _ = client.send_line("socket");
    assert_eq!(exit_code(client.wait(TIMEOUT)), 128 + libc::SIGKILL);

    // `inftime` waits for the server to appear.
    let mut client = interactive(&dir, &url, Some("inftime"));
    client.send_line("socket").expect("client stdin");
    sleep(Duration::from_millis(700));
    let _server = Server::start(&socket, &["--isolated"]);
    assert_eq!(
        client.next_line(TIMEOUT),
        "socket ok",
        "{}",
        client.diagnostics()
    );
}
