//! Load on the supervisor: many threads blocked in a checked `connect` at once, processes
//! killed in the middle of one, a tree of processes, a long run of connections (descriptors
//! and memory stay flat), and a storm of signals while connecting.
//!
//! Every program runs under a policy with a `connect` rule, so each `connect` is trapped and
//! performed by the supervisor. Counts scale with environment variables, defaults in brackets:
//! `RH_BLOCKED_N` [1000] threads, `RH_TREE_N` [200] processes, `RH_LONG_N` [200 000]
//! connections (raise to 1 000 000 by hand), `RH_STORM_N` [5 000] connections.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rumphijack_tests::hostile::{env_count, report_line, rss_kib, threads};
use rumphijack_tests::policy::{hijack_with_policy, SubnetStack, SILENT_V4};
use rumphijack_tests::{
    assert_fds_flat, exit_code, fd_count, field, free_host_port, probe, require_root, run, Server,
    Spawned, TempDir, TIMEOUT,
};

/// These tests load the same two CPUs; one at a time gives each its budget.
static SERIAL: Mutex<()> = Mutex::new(());

/// Allows everything, but has a `connect` rule, so every `connect` is trapped and checked.
fn checked_connect_policy(dir: &TempDir) -> PathBuf {
    dir.write(
        "checked.toml",
        "[default]\naction = \"allow\"\n\n[[rule]]\ncomment = \"makes connect trapped\"\n\
         op = \"connect\"\naddr = \"any\"\naction = \"allow\"\n",
    )
}

fn count(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Samples `pid`'s thread count every 10 ms while `during` runs; returns its result and
/// the highest count seen.
fn peak_threads<T>(pid: u32, during: impl FnOnce() -> T) -> (T, u64) {
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(0);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(n) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
                    {
                        peak.fetch_max(n, Ordering::Relaxed);
                    }
                }
                sleep(Duration::from_millis(10));
            }
        });
        let result = during();
        stop.store(true, Ordering::Relaxed);
        result
    });
    (result, peak.load(Ordering::Relaxed))
}

#[test]
fn a_thousand_blocked_connects_keep_the_supervisor_bounded() {
    let test = "a_thousand_blocked_connects_keep_the_supervisor_bounded";
    if !require_root(test) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = env_count("RH_BLOCKED_N", 1000);
    let dir = TempDir::new(test);
    let stack = SubnetStack::start(&dir, "subnet");
    let policy = checked_connect_policy(&dir);
    let port = free_host_port().to_string();

    for ending in ["interrupt", "exit"] {
        let args = [
            probe!(),
            "blocked-connects",
            SILENT_V4,
            &port,
            &n.to_string(),
        ];
        let cmd = hijack_with_policy(&stack.url(), &policy, None, args);
        let mut program = Spawned::start(cmd, dir.path(), ending);
        let supervisor = program.pid();
        let idle = threads(supervisor);

        let (line, peak) = peak_threads(supervisor, || {
            program.wait_for_line(Duration::from_secs(50), |l| l.starts_with("blocked"))
        });
        assert_eq!(
            count(&line, "n"),
            n,
            "every thread must sit in connect: {line}"
        );

        // A thread shows connect(2) as soon as it is trapped; the supervisor may still be
        // starting the operations. Wait for them (one thread each) to be under way.
        let (reached, more) = peak_threads(supervisor, || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while threads(supervisor) < n.min(1024) && Instant::now() < deadline {
                sleep(Duration::from_millis(20));
            }
            threads(supervisor)
        });
        let peak = peak.max(more);
        eprintln!("{ending}: {line}; supervisor threads {reached} once all were trapped");

        program.send_line(ending).expect("program stdin");
        let started = Instant::now();
        if ending == "interrupt" {
            let line =
                program.wait_for_line(Duration::from_secs(40), |l| l.starts_with("interrupted"));
            assert!(
                line.contains("unfinished=0 "),
                "every connect must end: {line}"
            );
            assert!(
                line.contains(&format!("results=EINTR:{n} ")),
                "every blocked connect must end with EINTR: {line}"
            );
            program.close_stdin();
        }
        let status = program.wait(Duration::from_secs(40));
        assert_eq!(exit_code(status), 0, "{}", program.diagnostics());
        eprintln!(
            "{ending}: supervisor threads idle={idle} peak={peak} (bound: 1024 operation \
             threads + its own), ended in {:?}",
            started.elapsed()
        );
        assert!(
            peak <= 1024 + 16,
            "supervisor threads must stay bounded by its in-flight limit: {peak}"
        );
    }
}

#[test]
fn a_child_killed_inside_a_checked_connect_does_not_stop_the_service() {
    let test = "a_child_killed_inside_a_checked_connect";
    if !require_root(test) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(test);
    let stack = SubnetStack::start(&dir, "subnet");
    let policy = checked_connect_policy(&dir);
    let port = free_host_port().to_string();
    let args = [probe!(), "killed-child", SILENT_V4, &port, "20"];
    let out = run(
        hijack_with_policy(&stack.url(), &policy, None, args),
        Duration::from_secs(60),
    );
    out.assert_success("killed-child");
    let line = report_line(&out.stdout, "killed-child");
    eprintln!("{line}");
    assert_eq!(count(line, "failed"), 0, "{out}");
    assert_eq!(count(line, "served"), 100, "{out}");
    assert!(
        count(line, "max_ms") < 5000,
        "service must not stall: {line}"
    );
}

#[test]
fn a_tree_of_processes_is_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("a_tree_of_processes_is_served");
    let server = Server::isolated(dir.path(), "a");
    let n = env_count("RH_TREE_N", 200).to_string();
    let cmd = rumphijack_tests::hijack(&server.url(), [probe!(), "tree", &n]);
    let out = run(cmd, Duration::from_secs(60));
    out.assert_success("tree");
    let line = report_line(&out.stdout, "tree");
    eprintln!("{line}");
    assert_eq!(field(line, "reported"), Some(n.as_str()), "{out}");
    assert_eq!(
        field(line, "ok"),
        Some(n.as_str()),
        "every process got AF_INET sockets\n{out}"
    );
}

#[test]
fn a_long_run_leaves_descriptors_and_memory_flat() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("a_long_run_leaves_descriptors_and_memory_flat");
    let server = Server::isolated(dir.path(), "a");
    let policy = checked_connect_policy(&dir);
    let n = env_count("RH_LONG_N", 200_000);
    let cmd = hijack_with_policy(
        &server.url(),
        &policy,
        None,
        [probe!(), "churn", &n.to_string()],
    );
    let mut program = Spawned::start(cmd, dir.path(), "churn");
    program.wait_for_line(TIMEOUT, |l| l == "ready");

    let (sup, srv) = (program.pid(), server.pid());
    let sample = || {
        (
            fd_count(sup),
            fd_count(srv),
            rss_kib(sup),
            rss_kib(srv),
            threads(sup),
        )
    };
    let before = sample();
    program.send_line("go").expect("start");
    let report = program.wait_for_line(Duration::from_secs(600), |l| {
        l.starts_with("ok ") || l.starts_with("fail ")
    });
    program.wait_for_line(TIMEOUT, |l| l == "done");
    sleep(Duration::from_millis(200));
    let after = sample();
    eprintln!(
        "long run {report}: (fds supervisor, fds server, RSS KiB supervisor, RSS KiB server, \
         supervisor threads) before {before:?} after {after:?}"
    );
    assert!(
        report.starts_with(&format!("ok {n} ")),
        "{report}\n{}",
        program.diagnostics()
    );
    assert_fds_flat(before.0, after.0, "supervisor");
    assert_fds_flat(before.1, after.1, "server");
    // Allocator caches and thread stacks may grow a little; a leak per call would not fit.
    let slack = 8 * 1024;
    assert!(
        after.2 <= before.2 + slack,
        "supervisor RSS grew: {before:?} -> {after:?}"
    );
    assert!(
        after.3 <= before.3 + slack,
        "server RSS grew: {before:?} -> {after:?}"
    );
    program.close_stdin();
    assert_eq!(exit_code(program.wait(TIMEOUT)), 0);
}

#[test]
fn a_sigurg_storm_neither_fails_nor_repeats_a_connect() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("a_sigurg_storm_neither_fails_nor_repeats_a_connect");
    let server = Server::isolated(dir.path(), "a");
    let policy = checked_connect_policy(&dir);
    let n = env_count("RH_STORM_N", 5_000);
    let args = [probe!(), "signal-storm", &n.to_string()];
    let out = run(
        hijack_with_policy(&server.url(), &policy, None, args),
        Duration::from_secs(60),
    );
    out.assert_success("signal-storm");
    let line = report_line(&out.stdout, "storm");
    eprintln!("{line}");
    assert!(
        count(line, "handled") > 1000,
        "the storm must reach the program: {line}"
    );
    assert_eq!(
        field(line, "outcomes"),
        Some(format!("ok:{n}").as_str()),
        "no connect may fail under SIGURG (SA_RESTART): {line}"
    );
    assert_eq!(
        count(line, "accepted"),
        n,
        "each connect must happen exactly once: {line}"
    );
}
