//! Races against the supervisor: processes and descriptors that change under a trapped call.
//!
//! * `vfork-socket PORT N` — N times `vfork`; the child, which shares our memory and runs
//!   while we are suspended, makes a socket and connects it to `127.0.0.1:PORT` (a host
//!   listener, see `hostile`), then exits with a code for what happened.
//! * `exec-race PORT ROUNDS` — threads create sockets in a loop while the main thread
//!   re-executes the program; after each `execve` every inherited socket is checked (it must
//!   not be a host-stack socket) and one new socket is probed.
//! * `dup2-race PORT N` — one thread `connect`s descriptor D to `127.0.0.1:PORT` N times while
//!   another keeps replacing D (`dup2`) by a TCP, a UDP and an `AF_UNIX` socket. The policy
//!   denies TCP to PORT only; a supervisor that decided on one socket and acted on another
//!   would let a TCP connection arrive there. The connecting thread goes on past N until the
//!   other has made [`MIN_SWAPS`] rounds, so that a loaded machine, which may run all N
//!   connects while the swapping thread waits for a CPU, cannot make the race vacuous.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;

use super::hostile::{errno_name, host_probe};
use super::Result;

fn number<T: std::str::FromStr>(arg: Option<&String>, what: &str) -> Result<T> {
    arg.and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("needs {what}"))
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_IN_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as _;

/// Exit codes of the vfork child.
const CHILD_REACHED: i32 = 10;
const CHILD_OTHER_STACK: i32 = 11;
const CHILD_NO_SOCKET: i32 = 12;
const CHILD_OTHER_ERROR: i32 = 13;

extern "C" fn vfork_child(arg: *mut libc::c_void) -> libc::c_int {
    // Only raw system calls here: this child borrows the parent's memory and stack frames.
    let port = arg as usize as u16;
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        // SAFETY: _exit ends this child without touching the shared memory.
        unsafe { libc::_exit(CHILD_NO_SOCKET) };
    }
    let addr = loopback(port);
    // SAFETY: `addr` is a live sockaddr_in on this child's stack.
    let ret = unsafe { libc::connect(fd, (&raw const addr).cast(), SOCKADDR_IN_LEN) };
    let code = match (ret, Errno::last()) {
        (0, _) => CHILD_REACHED,
        (_, Errno::ECONNREFUSED) => CHILD_OTHER_STACK,
        _ => CHILD_OTHER_ERROR,
    };
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

pub fn vfork_socket(args: &[String]) -> Result<()> {
    let port: u16 = number(args.first(), "PORT")?;
    let n: u32 = number(args.get(1), "N")?;
    let mut stack = vec![0u8; 64 * 1024];
    let mut outcomes: BTreeMap<i32, u32> = BTreeMap::new();
    for _ in 0..n {
        // SAFETY: the child runs `vfork_child` on `stack` (the top is 16-byte aligned after
        // rounding down) and only makes raw system calls; CLONE_VFORK suspends us until it
        // exits, so the stack stays alive and unused by anyone else meanwhile.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(stack.len());
            let top = (top as usize & !15) as *mut libc::c_void;
            libc::clone(
                vfork_child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                port as usize as *mut libc::c_void,
            )
        };
        if pid < 0 {
            return Err(format!("clone(CLONE_VFORK): {}", Errno::last()));
        }
        let mut status = 0;
        // SAFETY: waits for our own child; status is a live local.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        };
        *outcomes.entry(code).or_default() += 1;
    }
    let get = |c| outcomes.get(&c).copied().unwrap_or(0);
    let known = get(CHILD_REACHED) + get(CHILD_OTHER_STACK) + get(CHILD_NO_SOCKET);
    println!(
        "vfork n={n} reached={} other_stack={} no_socket={} other={} raw={outcomes:?}",
        get(CHILD_REACHED),
        get(CHILD_OTHER_STACK),
        get(CHILD_NO_SOCKET),
        n - known,
    );
    Ok(())
}

fn sockopt_int(fd: RawFd, opt: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live locals; len is the buffer's real size.
    let r =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut value).cast(), &mut len) };
    (r == 0).then_some(value)
}

/// Inherited descriptors above 2, each checked and closed. Returns (sockets, reached).
fn check_inherited(port: u16) -> (u32, u32) {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (mut sockets, mut reached) = (0, 0);
    for fd in listed.into_iter().filter(|&fd| fd > 2) {
        if sockopt_int(fd, libc::SO_DOMAIN) == Some(libc::AF_INET) {
            sockets += 1;
            let addr = loopback(port);
            // SAFETY: `addr` is a live sockaddr_in.
            if unsafe { libc::connect(fd, (&raw const addr).cast(), SOCKADDR_IN_LEN) } == 0 {
                reached += 1;
            }
        }
        // SAFETY: closing a descriptor we inherited and own; nothing else uses it.
        unsafe { libc::close(fd) };
    }
    (sockets, reached)
}

pub fn exec_race(args: &[String]) -> Result<()> {
    let port: u16 = number(args.first(), "PORT")?;
    let rounds: u32 = number(args.get(1), "ROUNDS")?;
    let round: u32 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(0);
    let reached_so_far: u32 = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(0);
    let survivors_so_far: u32 = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(0);

    let (sockets, reached) = check_inherited(port);
    let fresh = host_probe(port);
    let reached = reached_so_far + reached + u32::from(fresh == "reached");
    let survivors = survivors_so_far + sockets;
    if round == rounds {
        println!("exec-race rounds={rounds} survivors={survivors} reached={reached} last={fresh}");
        return Ok(());
    }

    // Threads making plain (inheritable) sockets as fast as they can; one lands mid-exec.
    for _ in 0..3 {
        thread::spawn(|| loop {
            // SAFETY: socket(2) and close(2) on a descriptor we just made.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if fd >= 0 {
                    libc::close(fd);
                }
            }
        });
    }
    thread::sleep(Duration::from_micros(200 + u64::from(round % 7) * 300));
    let err = std::process::Command::new("/proc/self/exe")
        .args(["exec-race", &port.to_string(), &rounds.to_string()])
        .arg((round + 1).to_string())
        .arg(reached.to_string())
        .arg(survivors.to_string())
        .exec();
    Err(format!("re-exec: {err}"))
}

/// Rounds of replacement `dup2-race` waits for, whatever N: each round puts a fresh TCP
/// socket at D once.
const MIN_SWAPS: u64 = 64;

pub fn dup2_race(args: &[String]) -> Result<()> {
    let port: u16 = number(args.first(), "PORT")?;
    let n: u64 = number(args.get(1), "N")?;
    let new = |domain, ty| -> Result<OwnedFd> {
        // SAFETY: socket(2) takes integers only.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(format!("socket({domain}, {ty}): {}", Errno::last()));
        }
        // SAFETY: a new descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let target = new(libc::AF_INET, libc::SOCK_STREAM)?;
    let udp = new(libc::AF_INET, libc::SOCK_DGRAM)?;
    let unix = new(libc::AF_UNIX, libc::SOCK_STREAM)?;
    let d = target.as_raw_fd();
    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let addr = loopback(port);
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut made = 0u64;

    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(tcp) = new(libc::AF_INET, libc::SOCK_STREAM) {
                    // SAFETY: dup2 onto D, which this program owns for the whole run.
                    unsafe { libc::dup2(tcp.as_raw_fd(), d) };
                }
                thread::yield_now();
                for other in [&udp, &unix] {
                    // SAFETY: as above.
                    unsafe { libc::dup2(other.as_raw_fd(), d) };
                    thread::yield_now();
                }
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        while made < n || swaps.load(Ordering::Relaxed) < MIN_SWAPS {
            // SAFETY: `addr` is a live sockaddr_in; D stays a valid descriptor throughout.
            let r = unsafe { libc::connect(d, (&raw const addr).cast(), SOCKADDR_IN_LEN) };
            let key = if r == 0 {
                "ok".into()
            } else {
                errno_name(Errno::last())
            };
            *tally.entry(key).or_default() += 1;
            made += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    let swaps = swaps.into_inner();
    let list: Vec<String> = tally.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "dup2-race n={made} swaps={swaps} results={}",
        list.join(",")
    );
    Ok(())
}
