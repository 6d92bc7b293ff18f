//! Long runs against a listener of the program's own (in its stack).
//!
//! * `churn N` — N times `socket` + `connect` + `close` (a reset, so no `TIME_WAIT` piles
//!   up). Prints `ready`, waits for a stdin line, prints `ok N ...` or `fail ...` and `done`,
//!   then waits for the end of stdin so the test can sample the supervisor while we live.
//! * `signal-storm N` — a helper thread sends `SIGURG` to every thread of the process about
//!   every 100 µs (Go's preemption signal, handled with `SA_RESTART` as Go does) while two
//!   threads make N connections in all; counts outcomes and connections accepted.
//! * `outage CONNS SECS` — CONNS connections to an echo listener stay open and are pinged
//!   every 50 ms while a new socket is connected every 20 ms, for SECS seconds; one line per
//!   new socket (`new t=MS result=ok|ERRNO dur=MS`) and a summary.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

use super::load::accepting_listener;
use super::Result;

fn number<T: std::str::FromStr>(arg: Option<&String>, what: &str) -> Result<T> {
    arg.and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("needs {what}"))
}

/// Connects to `addr` and closes with a reset.
fn connect_and_reset(addr: SocketAddrV4) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(&stream, sockopt::Linger, &linger);
    Ok(())
}

pub fn churn(args: &[String]) -> Result<()> {
    let n: u64 = number(args.first(), "N")?;
    let (local, _) = accepting_listener()?;
    connect_and_reset(local).map_err(|e| format!("warm-up connect: {e}"))?;
    println!("ready");
    io::stdout().flush().map_err(|e| e.to_string())?;
    let mut stdin = io::stdin().lock();
    stdin
        .read_line(&mut String::new())
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut failure = None;
    for i in 0..n {
        if let Err(e) = connect_and_reset(local) {
            failure = Some(format!("call={i} {e}"));
            break;
        }
    }
    let elapsed = started.elapsed().as_millis();
    match failure {
        None => println!("ok {n} elapsed_ms={elapsed}"),
        Some(f) => println!("fail {f} elapsed_ms={elapsed}"),
    }
    println!("done");
    io::stdout().flush().map_err(|e| e.to_string())?;
    stdin
        .read_to_end(&mut Vec::new())
        .map_err(|e| e.to_string())?;
    Ok(())
}

static URGS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_urg(_: libc::c_int) {
    URGS.fetch_add(1, Ordering::Relaxed);
}

/// Sends SIGURG to every thread of the process about every 100 µs until `stop`; the thread
/// list is refreshed every 10 ms. Returns how many signals were sent.
fn storm(stop: &AtomicBool) -> u64 {
    let pid = std::process::id() as i32;
    let mut sent = 0;
    let mut tids: Vec<i32> = Vec::new();
    let mut listed = Instant::now() - Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        if listed.elapsed() > Duration::from_millis(10) {
            tids = std::fs::read_dir("/proc/self/task")
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            listed = Instant::now();
        }
        for &tid in &tids {
            // SAFETY: tgkill to a thread of our own process; a gone thread gives ESRCH.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGURG) } == 0 {
                sent += 1;
            }
        }
        thread::sleep(Duration::from_micros(100));
    }
    sent
}

pub fn signal_storm(args: &[String]) -> Result<()> {
    let n: u64 = number(args.first(), "N")?;
    // SAFETY: zeroed sigaction is valid; the handler only increments an atomic.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = count_urg as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut());
    }
    let (local, accepted) = accepting_listener()?;
    let stop = AtomicBool::new(false);
    let outcomes = Mutex::new(BTreeMap::<String, u64>::new());
    let started = Instant::now();

    let sent = thread::scope(|s| {
        let stormer = s.spawn(|| storm(&stop));
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let outcomes = &outcomes;
                s.spawn(move || {
                    let share = n / 2 + if w == 0 { n % 2 } else { 0 };
                    for _ in 0..share {
                        let key = match connect_and_reset(local) {
                            Ok(()) => "ok".to_string(),
                            Err(e) => e.to_string(),
                        };
                        *outcomes.lock().unwrap().entry(key).or_default() += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        stop.store(true, Ordering::Relaxed);
        stormer.join().unwrap_or(0)
    });
    let outcomes = outcomes.into_inner().unwrap();
    let ok = outcomes.get("ok").copied().unwrap_or(0);

    // Accepts trail the connects by the time the accept thread is scheduled.
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) < ok && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(100));
    let list: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "storm n={n} ok={ok} accepted={} outcomes={} sent={sent} handled={} elapsed_ms={}",
        accepted.load(Ordering::SeqCst),
        list.join(",").replace(' ', "_"),
        URGS.load(Ordering::Relaxed),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// An echo listener in the program's stack: every connection gets a thread of its own.
fn echo_listener() -> Result<SocketAddrV4> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let std::net::SocketAddr::V4(local) = listener.local_addr().map_err(|e| e.to_string())? else {
        return Err("not an IPv4 listener".into());
    };
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = (&conn).read(&mut buf) {
                    if (&conn).write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(local)
}

fn ping(conn: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    (&*conn).write_all(b"p").is_ok() && (&*conn).read_exact(&mut byte).is_ok() && byte == *b"p"
}

pub fn outage(args: &[String]) -> Result<()> {
    let conns: usize = number(args.first(), "CONNS")?;
    let secs: u64 = number(args.get(1), "SECS")?;
    let local = echo_listener()?;
    let open: Vec<TcpStream> = (0..conns)
        .map(|_| TcpStream::connect(local))
        .collect::<io::Result<_>>()
        .map_err(|e| format!("connect the first {conns}: {e}"))?;
    for c in &open {
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
    }
    println!("ready port={}", local.port());
    io::stdout().flush().map_err(|e| e.to_string())?;

    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (old_fail, pings, max_ping_ms) = thread::scope(|s| {
        let pinger = s.spawn(|| {
            let (mut fail, mut pings, mut max_ms) = (0u64, 0u64, 0u128);
            while Instant::now() < end {
                for c in &open {
                    let t = Instant::now();
                    fail += u64::from(!ping(c));
                    pings += 1;
                    max_ms = max_ms.max(t.elapsed().as_millis());
                }
                thread::sleep(Duration::from_millis(50));
            }
            (fail, pings, max_ms)
        });
        let (mut new_ok, mut new_err, mut max_new_ms) = (0u64, 0u64, 0u128);
        while Instant::now() < end {
            let t = Instant::now();
            let result = match TcpStream::connect(local) {
                Ok(c) if ping(&c) => "ok".to_string(),
                Ok(_) => "noecho".to_string(),
                Err(e) => e.raw_os_error().map_or("other".into(), |n| {
                    format!("{:?}", nix::errno::Errno::from_raw(n))
                }),
            };
            let dur = t.elapsed().as_millis();
            max_new_ms = max_new_ms.max(dur);
            if result == "ok" {
                new_ok += 1;
            } else {
                new_err += 1;
            }
            println!(
                "new t={} result={result} dur={dur}",
                t.duration_since(start).as_millis()
            );
            let _ = io::stdout().flush();
            thread::sleep(Duration::from_millis(20));
        }
        println!("new-summary ok={new_ok} err={new_err} max_ms={max_new_ms}");
        pinger.join().unwrap_or((u64::MAX, 0, 0))
    });
    println!("outage-summary old_fail={old_fail} pings={pings} max_ping_ms={max_ping_ms}");
    Ok(())
}
