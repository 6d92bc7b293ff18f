//! `blocking-connect SILENT_IP PORT N`: a connect that never completes must not hold up
//! other threads, and must stay interruptible.
//!
//! 1. A non-blocking socket's connect to SILENT_IP:PORT reports `nonblocking errno=...`
//!    (`EINPROGRESS` natively, at once).
//! 2. Thread A (this one) makes a blocking connect to SILENT_IP:PORT. Thread B waits until A
//!    is inside `connect` (per `/proc/self/task/TID/syscall`), makes N connects to a
//!    listener of our own on 127.0.0.1, prints `B done ... a_returned=0|1`, and calls
//!    `alarm(1)`.
//! 3. SIGALRM, blocked in B and handled in A without `SA_RESTART`, interrupts A's connect:
//!    `A returned errno=EINTR b_done=1 alarms=1` natively.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{
    pthread_sigmask, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::Result;

static ALARMS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_alarm(_: libc::c_int) {
    ALARMS.fetch_add(1, Ordering::Relaxed);
}

/// x86_64 `connect(2)`, as shown first in `/proc/PID/task/TID/syscall` (proc(5)).
const SYS_CONNECT: &str = "42";

pub fn run(args: &[String]) -> Result<()> {
    let [ip, port, n] = args else {
        return Err("blocking-connect needs SILENT_IP PORT N".into());
    };
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("bad address {ip:?}: {e}"))?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    let n: u32 = n.parse().map_err(|e| format!("bad count {n:?}: {e}"))?;
    let silent = SockaddrIn::from(std::net::SocketAddrV4::new(ip, port));

    // No SA_RESTART: the interrupted connect must fail with EINTR (signal(7)).
    let action = SigAction::new(
        SigHandler::Handler(count_alarm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only increments an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGALRM, &action) }.map_err(|e| format!("sigaction: {e}"))?;

    let nonblocking = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let started = Instant::now();
    let result = errno_of(connect(
        std::os::fd::AsRawFd::as_raw_fd(&nonblocking),
        &silent,
    ));
    println!(
        "nonblocking errno={result} elapsed_ms={}",
        started.elapsed().as_millis()
    );

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;

    // B inherits the mask at spawn: only A can take the SIGALRM.
    let mut alarm_set = SigSet::empty();
    alarm_set.add(Signal::SIGALRM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&alarm_set), None)
        .map_err(|e| format!("block SIGALRM: {e}"))?;
    let accepting = listener
        .try_clone()
        .map_err(|e| format!("dup listener: {e}"))?;
    thread::spawn(move || accepting.incoming().for_each(drop));
    let a_tid = nix::unistd::gettid();
    let a_returned = AtomicBool::new(false);
    let b_done = AtomicBool::new(false);

    thread::scope(|s| {
        s.spawn(|| {
            wait_until_in_connect(a_tid);
            let ok = (0..n).filter(|_| TcpStream::connect(local).is_ok()).count();
            println!(
                "B done connects={n} ok={ok} a_returned={}",
                u8::from(a_returned.load(Ordering::SeqCst))
            );
            let _ = std::io::stdout().flush();
            b_done.store(true, Ordering::SeqCst);
            // SAFETY: alarm(2) only arms a timer.
            unsafe { libc::alarm(1) };
        });

        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&alarm_set), None);
        let blocking = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .map_err(|e| format!("socket: {e}"))?;
        println!("A connecting to {silent}");
        let _ = std::io::stdout().flush();
        let result = errno_of(connect(std::os::fd::AsRawFd::as_raw_fd(&blocking), &silent));
        a_returned.store(true, Ordering::SeqCst);
        println!(
            "A returned errno={result} b_done={} alarms={}",
            u8::from(b_done.load(Ordering::SeqCst)),
            ALARMS.load(Ordering::Relaxed)
        );
        Ok(())
    })
}

fn errno_of(result: nix::Result<()>) -> String {
    match result {
        Ok(()) => "none".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// Polls thread `tid`'s current system call until it is `connect`: from then on A is blocked
/// in the kernel or waiting for the supervisor. Gives up after 10 s (B then runs anyway, and
/// the test sees A's result arrive first).
fn wait_until_in_connect(tid: nix::unistd::Pid) {
    let path = format!("/proc/self/task/{tid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current.split_whitespace().next() == Some(SYS_CONNECT) {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    println!("B gave up waiting for A to enter connect");
}
