//! What a program sees when its stack server dies: established connections live on in the
//! kernel; new sockets follow `RUMPHIJACK_RETRYCONNECT`.
//!
//! The program is `rh.py interactive` under rumphijack, driven line by line from the test, so
//! every step happens at a known moment. Its peer is an echo server in the same stack (also
//! under rumphijack, never creating sockets after it listens), which survives the server.

use std::thread::sleep;
use std::time::Duration;

use rumphijack_tests::{
    argv, echo_server, exit_code, free_host_port, hijack, python3, require_program, write_helper,
    Server, Spawned, TempDir, TIMEOUT,
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
        let echo = echo_server(&dir, &server.url(), port, &["127.0.0.1"]);

        let script = write_helper(&dir);
        let mut cmd = hijack(&server.url(), argv![python3(), "-u", script, "interactive"]);
        if let Some(retry) = retry {
            cmd.env("RUMPHIJACK_RETRYCONNECT", retry);
        }
        let mut client = Spawned::start(cmd, dir.path(), "client");
        client.wait_for_line(TIMEOUT, |l| l == "ready");
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
        self.client.send_line(command).expect("client stdin");
        self.client.next_line(TIMEOUT)
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

    /// A new socket() made while the server is down blocks until it is back.
    fn socket_during_outage_succeeds_after_restart(&mut self, outage: Duration) {
        self.client.send_line("socket").expect("client stdin");
        sleep(outage);
        self.server.restart();
        let answer = self.client.next_line(TIMEOUT);
        assert_eq!(
            answer,
            "socket ok",
            "reconnected\n{}",
            self.client.diagnostics()
        );
        assert_eq!(
            self.ask("echo still"),
            "echo still",
            "old connection unaffected"
        );
    }
}

#[test]
fn default_no_reconnect_new_socket_fails_with_enotconn() {
    let test = "default_no_reconnect_new_socket_fails_with_enotconn";
    let Some(mut s) = Scenario::start(test, None) else {
        return;
    };
    s.kill_server_and_check_connection();
    let diag = |s: &Scenario| s.client.diagnostics();

    let answer = s.ask("socket");
    assert_eq!(
        answer,
        "socket err ENOTCONN",
        "server gone, no retry\n{}",
        diag(&s)
    );

    // Unset means no reconnect at all, even once a server is back at the same path.
    s.server.restart();
    let answer = s.ask("socket");
    assert_eq!(
        answer,
        "socket err ENOTCONN",
        "no reconnect when unset\n{}",
        diag(&s)
    );
    assert_eq!(s.ask("echo end"), "echo end");
}

#[test]
fn retry_once_reconnects_to_a_restarted_server() {
    let test = "retry_once_reconnects_to_a_restarted_server";
    let Some(mut s) = Scenario::start(test, Some("once")) else {
        return;
    };
    let before = nix::unistd::geteuid().is_root().then(|| s.ask("netns"));
    s.kill_server_and_check_connection();
    s.server.restart();
    assert_eq!(
        s.ask("socket"),
        "socket ok",
        "once: reconnected\n{}",
        s.client.diagnostics()
    );

    // The new server is a new isolated stack: new sockets belong to it, not the old one.
    if let Some(before) = before {
        let after = s.ask("netns");
        assert!(
            after.starts_with("netns "),
            "netns report\n{}",
            s.client.diagnostics()
        );
        assert_ne!(
            before, after,
            "new sockets must come from the restarted server"
        );
    }
}

#[test]
fn retry_seconds_reconnects_within_the_window() {
    let test = "retry_seconds_reconnects_within_the_window";
    let Some(mut s) = Scenario::start(test, Some("5")) else {
        return;
    };
    s.kill_server_and_check_connection();
    s.socket_during_outage_succeeds_after_restart(Duration::from_millis(500));
}

#[test]
fn retry_inftime_reconnects_after_an_outage() {
    let test = "retry_inftime_reconnects_after_an_outage";
    let Some(mut s) = Scenario::start(test, Some("inftime")) else {
        return;
    };
    s.kill_server_and_check_connection();
    s.socket_during_outage_succeeds_after_restart(Duration::from_millis(1500));
}

#[test]
fn retry_die_ends_the_program_when_the_server_is_lost() {
    let test = "retry_die_ends_the_program_when_the_server_is_lost";
    let Some(mut s) = Scenario::start(test, Some("die")) else {
        return;
    };
    s.server.kill();

    // The supervisor may notice the loss at once or at the next request; give it one. The
    // program may already be gone, so a failed write is fine.
    let _ = s.client.send_line("socket");
    let status = s.client.wait(TIMEOUT);
    assert_eq!(
        exit_code(status),
        128 + libc::SIGKILL,
        "die: the program is killed and the status mirrors it\n{}",
        s.client.diagnostics()
    );
}
