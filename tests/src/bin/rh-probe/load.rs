//! Load and faults: many threads or processes in trapped calls at once.
//!
//! * `blocked-connects SILENT_IP PORT N` — N threads each block in `connect` to a host that
//!   never answers; prints `blocked n=K` once K of them sit in `connect`, then on a stdin line
//!   `interrupt` signals each (a handler without `SA_RESTART`) and reports how they ended, or
//!   on `exit` ends the process at once.
//! * `killed-child SILENT_IP PORT ROUNDS` — each round a forked child blocks in `connect` to
//!   the silent host and is killed there; the parent then connects to a listener of its own.
//! * `tree N` — a tree of N processes, each making and checking sockets.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::hostile::errno_name;
use super::Result;

fn number<T: std::str::FromStr>(arg: Option<&String>, what: &str) -> Result<T> {
    arg.and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("needs {what}"))
}

fn silent_addr(args: &[String]) -> Result<SocketAddrV4> {
    let ip: Ipv4Addr = number(args.first(), "SILENT_IP")?;
    let port: u16 = number(args.get(1), "PORT")?;
    Ok(SocketAddrV4::new(ip, port))
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A blocking `socket()` + `connect()`; `Ok` or the errno's name.
fn connect_once(addr: SocketAddrV4) -> std::result::Result<OwnedFd, String> {
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket-{}", errno_name(Errno::last())));
    }
    // SAFETY: a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = sockaddr(addr);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a live sockaddr_in of `len` bytes.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) } < 0 {
        return Err(errno_name(Errno::last()));
    }
    Ok(fd)
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Threads of this process currently in `connect(2)` (x86_64 number 42, proc(5)).
fn threads_in_connect() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("syscall")).ok())
        .filter(|s| s.split_whitespace().next() == Some("42"))
        .count()
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

pub fn blocked_connects(args: &[String]) -> Result<()> {
    let silent = silent_addr(args)?;
    let n: usize = number(args.get(2), "N")?;
    // SAFETY: zeroed sigaction is valid; the handler does nothing and is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }

    let tids = Arc::new(Mutex::new(Vec::new()));
    let results = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..n {
        let (tids, results) = (tids.clone(), results.clone());
        let spawned = thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                tids.lock().unwrap().push(gettid());
                let key = match connect_once(silent) {
                    Ok(_) => "connected".to_string(),
                    Err(e) => e,
                };
                *results.lock().unwrap().entry(key).or_default() += 1;
            })
            .map_err(|e| format!("spawn thread: {e}"))?;
        handles.push(spawned);
    }

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut inside = threads_in_connect();
    while inside < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        inside = threads_in_connect();
    }
    println!(
        "blocked n={inside} after_ms={}",
        started.elapsed().as_millis()
    );
    io::stdout().flush().map_err(|e| e.to_string())?;

    let mut command = String::new();
    io::stdin()
        .lock()
        .read_line(&mut command)
        .map_err(|e| e.to_string())?;
    if command.trim() != "interrupt" {
        // SAFETY: ends the process with every thread still blocked: the fault under test.
        unsafe { libc::_exit(0) };
    }

    let interrupted = Instant::now();
    let pid = std::process::id() as i32;
    while handles.iter().any(|h| !h.is_finished()) && interrupted.elapsed().as_secs() < 30 {
        for &tid in tids.lock().unwrap().iter() {
            // SAFETY: tgkill to a thread of our own; a finished thread's id gives ESRCH.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
        }
        thread::sleep(Duration::from_millis(100));
    }
    let unfinished = handles.iter().filter(|h| !h.is_finished()).count();
    let list: Vec<String> = results
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    println!(
        "interrupted unfinished={unfinished} results={} elapsed_ms={}",
        list.join(","),
        interrupted.elapsed().as_millis()
    );
    io::stdout().flush().map_err(|e| e.to_string())?;
    io::stdin()
        .lock()
        .read_to_end(&mut Vec::new())
        .map_err(|e| e.to_string())?;
    if unfinished > 0 {
        // Blocked threads cannot be joined; leave at once.
        // SAFETY: _exit ends the process.
        unsafe { libc::_exit(0) };
    }
    Ok(())
}

/// A listener in the program's stack that accepts and drops connections, counting them.
pub fn accepting_listener() -> Result<(SocketAddrV4, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let local = match listener.local_addr().map_err(|e| e.to_string())? {
        std::net::SocketAddr::V4(a) => a,
        other => return Err(format!("unexpected local address {other}")),
    };
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            if conn.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    Ok((local, accepted))
}

pub fn killed_child(args: &[String]) -> Result<()> {
    let silent = silent_addr(args)?;
    let rounds: u32 = number(args.get(2), "ROUNDS")?;
    let (local, _) = accepting_listener()?;
    let (mut served, mut failed, mut max_ms) = (0u32, 0u32, 0u128);
    for _ in 0..rounds {
        // SAFETY: the child only makes system calls and exits; it never returns here.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let _ = connect_once(silent);
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) };
        }
        if child < 0 {
            return Err(format!("fork: {}", Errno::last()));
        }
        // Kill it while the supervisor works on its connect.
        let path = format!("/proc/{child}/syscall");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = std::fs::read_to_string(&path).unwrap_or_default();
            if now.split_whitespace().next() == Some("42") {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(30));
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }

        for _ in 0..5 {
            let start = Instant::now();
            match TcpStream::connect(local) {
                Ok(_) => served += 1,
                Err(_) => failed += 1,
            }
            max_ms = max_ms.max(start.elapsed().as_millis());
        }
    }
    println!("killed-child rounds={rounds} served={served} failed={failed} max_ms={max_ms}");
    Ok(())
}

/// One node of the tree: forks the children's subtrees, then makes sockets itself.
fn tree_node(size: u32, report: &OwnedFd) -> ! {
    let rest = size - 1;
    let mut children = Vec::new();
    for part in [rest / 2, rest - rest / 2] {
        if part == 0 {
            continue;
        }
        // SAFETY: this process is single-threaded; the child continues in tree_node.
        match unsafe { libc::fork() } {
            0 => tree_node(part, report),
            pid if pid > 0 => children.push(pid),
            _ => {}
        }
    }
    let mut ok = true;
    for _ in 0..3 {
        // SAFETY: socket(2) takes integers only.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            ok = false;
            continue;
        }
        // SAFETY: a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut domain: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: domain and len are live locals.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&raw mut domain).cast(),
                &mut len,
            )
        };
        ok &= r == 0 && domain == libc::AF_INET;
    }
    let byte = if ok { b"o" } else { b"f" };
    // SAFETY: a one-byte write to the shared pipe is atomic; waitpid on our own children.
    unsafe {
        libc::write(report.as_raw_fd(), byte.as_ptr().cast(), 1);
        for pid in children {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        libc::_exit(0)
    }
}

pub fn tree(args: &[String]) -> Result<()> {
    let n: u32 = number(args.first(), "N")?;
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let started = Instant::now();
    // SAFETY: the probe is single-threaded here; the child builds the tree and exits.
    let root = unsafe { libc::fork() };
    if root == 0 {
        drop(read_end);
        tree_node(n, &write_end);
    }
    drop(write_end);
    let mut bytes = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read reports: {e}"))?;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(root, std::ptr::null_mut(), 0) };
    let ok = bytes.iter().filter(|&&b| b == b'o').count();
    println!(
        "tree n={n} reported={} ok={ok} elapsed_ms={}",
        bytes.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}
