//! Faults of the stack server: killed and restarted under load, and fed malformed traffic.
//!
//! The outage tests host a namespace made by the test (`rump_server --netns`), so the
//! restarted server serves the same stack and the program's listener survives in it.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rumphijack_tests::{
    field, hijack, probe, require_root, run, NetNs, Server, Spawned, TempDir, TIMEOUT,
};

fn count(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// 50 open connections and a new one every 20 ms; the server is killed 2 s in and restarted
/// 1.5 s later. Returns the `new` lines and the two summaries.
fn outage(test: &str, retry: &str) -> Option<(Vec<String>, String, String)> {
    if !require_root(test) {
        return None;
    }
    let dir = TempDir::new(test);
    let netns = NetNs::create();
    let path = netns.path();
    let mut server = Server::start(&dir.join("s.sock"), &["--netns", path.to_str()?]);
    let mut cmd = hijack(&server.url(), [probe!(), "outage", "50", "8"]);
    cmd.env("RUMPHIJACK_RETRYCONNECT", retry);
    let mut program = Spawned::start(cmd, dir.path(), "outage");
    program.wait_for_line(TIMEOUT, |l| l.starts_with("ready"));

    sleep(Duration::from_secs(2));
    server.kill();
    sleep(Duration::from_millis(1500));
    server.restart();

    let mut news = Vec::new();
    let summary = loop {
        let line = program.next_line(Duration::from_secs(30));
        if line.starts_with("new-summary") {
            break line;
        }
        news.push(line);
    };
    let old = program.wait_for_line(Duration::from_secs(30), |l| l.starts_with("outage-summary"));
    let status = program.wait(TIMEOUT);
    assert!(status.success(), "{}", program.diagnostics());
    eprintln!("{test}: {summary}; {old}");
    drop(server);
    drop(netns);
    Some((news, summary, old))
}

fn assert_open_connections_survived(old: &str) {
    assert_eq!(
        count(old, "old_fail"),
        0,
        "open connections must keep working: {old}"
    );
}

#[test]
fn server_restart_under_load_with_inftime() {
    let test = "server_restart_under_load_with_inftime";
    let Some((news, summary, old)) = outage(test, "inftime") else {
        return;
    };
    assert_open_connections_survived(&old);
    assert_eq!(
        count(&summary, "err"),
        0,
        "inftime: every new socket waits and succeeds\n{news:?}"
    );
    // The longest wait is the outage itself (1.5 s) plus the reconnect back-off (≤ 1 s).
    assert!(count(&summary, "max_ms") < 6000, "{summary}");
}

#[test]
fn server_restart_under_load_with_once() {
    let test = "server_restart_under_load_with_once";
    let Some((news, summary, old)) = outage(test, "once") else {
        return;
    };
    assert_open_connections_survived(&old);
    assert!(
        count(&summary, "max_ms") < 5000,
        "once: nothing may hang: {summary}"
    );
    // `once` is one reconnection attempt: it is made by the first socket() after the loss,
    // while the server is still down, and fails; from then on new sockets fail with
    // ENOTCONN, even once the server is back.
    let results: Vec<&str> = news.iter().filter_map(|l| field(l, "result")).collect();
    let first_failure = results.iter().position(|&r| r != "ok");
    let first_failure = first_failure.expect("once: sockets made during the outage fail");
    assert!(
        results[first_failure..].iter().all(|&r| r == "ENOTCONN"),
        "once: after the failed attempt every new socket fails with ENOTCONN\n{news:#?}"
    );
    eprintln!(
        "{test}: {first_failure} ok before the loss, {} ENOTCONN after it",
        results.len() - first_failure
    );
}

/// A deterministic byte stream (xorshift) so a failure can be reproduced.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Frames a fuzzer would send: garbage, oversized lengths, a hello with the wrong magic or
/// version, a request before the hello, truncated frames.
fn malformed_frames(seed: u64) -> Vec<Vec<u8>> {
    let frame = |kind: u8, body: &[u8]| {
        let mut f = ((body.len() + 1) as u32).to_le_bytes().to_vec();
        f.push(kind);
        f.extend_from_slice(body);
        f
    };
    let mut hello_bad_version = b"RUMP".to_vec();
    hello_bad_version.extend_from_slice(&999u16.to_le_bytes());
    vec![
        noise(seed, 64),
        u32::MAX.to_le_bytes().to_vec(),
        4097u32.to_le_bytes().to_vec(),
        0u32.to_le_bytes().to_vec(),
        frame(1, b"XXXX"),
        frame(1, &hello_bad_version),
        frame(3, &[2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
        frame(200, &noise(seed + 1, 100)),
        frame(1, b"RUMP")[..6].to_vec(),
    ]
}

/// `socket()` under rumphijack against `server`, timed.
fn normal_client(server: &Server) -> Duration {
    let started = Instant::now();
    let out = run(hijack(&server.url(), [probe!(), "netns-ino"]), TIMEOUT);
    out.assert_success("a normal client next to hostile ones");
    started.elapsed()
}

#[test]
fn malformed_and_idle_clients_do_not_starve_a_normal_one() {
    let dir = TempDir::new("malformed_and_idle_clients_do_not_starve_a_normal_one");
    let server = Server::isolated(dir.path(), "a");
    let baseline = normal_client(&server);
    raise_nofile_limit();

    // Fuzzed frames from many clients at once.
    let fuzzers: Vec<_> = (0..32u64)
        .map(|i| {
            let path = server.socket_path().to_path_buf();
            std::thread::spawn(move || {
                for frame in malformed_frames(i) {
                    if let Ok(mut s) = UnixStream::connect(&path) {
                        let _ = s.write_all(&frame);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let _ = std::io::Read::read(&mut s, &mut [0u8; 64]);
                    }
                }
            })
        })
        .collect();
    for f in fuzzers {
        f.join().expect("fuzzer thread");
    }

    // A client that connects and never speaks, then many idle ones.
    let idle_n = rumphijack_tests::hostile::env_count("RH_IDLE_N", 1000) as usize;
    let mut idle = Vec::new();
    for _ in 0..idle_n {
        match UnixStream::connect(server.socket_path()) {
            Ok(s) => idle.push(s),
            Err(e) => panic!(
                "idle client {} could not connect: {e}\n{}",
                idle.len(),
                server.log()
            ),
        }
    }
    let loaded = normal_client(&server);
    eprintln!("normal client: {baseline:?} alone, {loaded:?} next to {idle_n} idle clients");
    assert!(
        loaded < Duration::from_secs(5),
        "a normal client must be served while {idle_n} clients idle: took {loaded:?}\n{}",
        server.log()
    );
    drop(idle);
}

/// Lifts this process's descriptor limit to the hard limit, for the idle clients.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit, a live local.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}
