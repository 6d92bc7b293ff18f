//! 100 000 `socket()`+`close()` under 1 kHz of forwarded signals: every call returns a real new
//! socket, and neither the supervisor nor the server leaks a descriptor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rumphijack_tests::{
    assert_fds_flat, exit_code, fd_count, field, hijack, probe, Server, Spawned, TempDir,
};

/// The two stress tests compete for the same two CPUs; run them one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

const DEFAULT_CALLS: u64 = 100_000;

fn calls() -> u64 {
    std::env::var("RH_STRESS_N")
        .ok()
        .map_or(DEFAULT_CALLS, |n| {
            n.parse()
                .unwrap_or_else(|_| panic!("RH_STRESS_N={n:?} is not a count"))
        })
}

/// Sends SIGUSR1 to `pid` about every millisecond until dropped.
struct SignalStorm {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
}

impl SignalStorm {
    fn start(pid: u32) -> SignalStorm {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(Ordering::Relaxed) {
                if kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).is_err() {
                    break;
                }
                sent += 1;
                thread::sleep(Duration::from_millis(1));
            }
            sent
        });
        SignalStorm {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("signal thread"))
    }
}

impl Drop for SignalStorm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn stress(test: &str, mode: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = calls();
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "a");
    let cmd = hijack(&server.url(), [probe!(), "stress", &n.to_string(), mode]);
    let mut program = Spawned::start(cmd, dir.path(), "stress");
    program.wait_for_line(Duration::from_secs(30), |l| l.starts_with("ready"));

    // The probe made one socket before `ready`, so every connection already exists.
    let supervisor = program.pid();
    let before = (fd_count(supervisor), fd_count(server.pid()));

    let storm = SignalStorm::start(supervisor);
    program.send_line("go").expect("start the probe");
    // Generous: 100 000 notifications take seconds in a release build, more in debug.
    let report = program.wait_for_line(Duration::from_secs(600), |l| {
        l.starts_with("ok ") || l.starts_with("fail ")
    });
    let sent = storm.stop();
    program.wait_for_line(Duration::from_secs(30), |l| l == "done");
    let after = (fd_count(supervisor), fd_count(server.pid()));

    assert!(
        report.starts_with(&format!("ok {n} ")),
        "every socket() must return a new AF_INET socket: {report}\n{}",
        program.diagnostics()
    );
    let received: u64 = field(&report, "signals")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        received > 0,
        "{sent} SIGUSR1 sent to rumphijack, none reached the program: {report}"
    );
    if mode == "--restart" {
        assert_eq!(
            field(&report, "eintr"),
            Some("0"),
            "SA_RESTART: no EINTR: {report}"
        );
    }
    assert_fds_flat(before.0, after.0, "rumphijack");
    assert_fds_flat(before.1, after.1, "rump_server");

    program.close_stdin();
    let status = program.wait(Duration::from_secs(30));
    assert_eq!(
        exit_code(status),
        0,
        "probe exit\n{}",
        program.diagnostics()
    );
    eprintln!("{test}: {report}; {sent} signals sent; fds (supervisor, server) {before:?}");
}

#[test]
fn stress_sockets_under_signals_with_sa_restart() {
    stress("stress_sockets_under_signals_with_sa_restart", "--restart");
}

#[test]
fn stress_sockets_under_signals_without_sa_restart() {
    stress(
        "stress_sockets_under_signals_without_sa_restart",
        "--no-restart",
    );
}
