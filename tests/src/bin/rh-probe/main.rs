//! `rh-probe`: a small program the end-to-end tests run under `rumphijack run`.
//!
//! Each subcommand exercises one property of a redirected socket and prints a line-oriented
//! report (`key=value` pairs) that the tests parse. Failures print `rh-probe: <what>` to stderr
//! and exit 1.
//!
//! * `flags` — `SOCK_NONBLOCK`/`SOCK_CLOEXEC` are honoured, and a `SOCK_CLOEXEC` socket does
//!   not survive `execve(2)` while a plain one does (re-executes itself as `check-fd`).
//! * `epoll PORT` — one epoll set over a redirected TCP socket and a pipe.
//! * `stress N [--restart|--no-restart]` — N `socket()`+`close()` while a signal handler counts.
//! * `netns-ino` — the network namespace an `AF_INET` socket belongs to, and our own.
//! * `io-uring` — the errno of a raw `io_uring_setup(2)`.
//! * `unix-pair` — `AF_UNIX` socketpair and listener round trips.
//! * `foreign-abi` — `socket()` through the i386 (`int 0x80`) and x32 entry points.
//!
//! For the policy tests (one module each):
//!
//! * `arrivals PORT...` — counts TCP connections and UDP datagrams arriving on 127.0.0.1.
//! * `race-connect|race-sendto ALLOWED DENIED N` — the destination flips while it is used.
//! * `bad-pointers` — unreadable addresses and impossible lengths.
//! * `blocking-connect SILENT_IP PORT N` — a silent host must not stall other threads.
//!
//! For the hostile-program and fault tests: `own-filter`, `own-listener`, `attack`,
//! `after-supervisor` ([`hostile`]); `vfork-socket`, `exec-race`, `dup2-race` ([`races`]);
//! `blocked-connects`, `killed-child`, `tree` ([`load`]); `churn`, `signal-storm`, `outage`
//! ([`longrun`]).

mod arrivals;
mod bad_pointers;
mod blocking;
mod hostile;
mod load;
mod longrun;
mod race;
mod races;

use std::collections::HashSet;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

type Result<T> = std::result::Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("flags") => flags(),
        Some("check-fd") => check_fd(rest),
        Some("epoll") => epoll(rest),
        Some("stress") => stress(rest),
        Some("netns-ino") => netns_ino(),
        Some("io-uring") => io_uring(),
        Some("unix-pair") => unix_pair(),
        Some("foreign-abi") => foreign_abi(),
        Some("arrivals") => arrivals::run(rest),
        Some("race-connect") => race::connect(rest),
        Some("race-sendto") => race::sendto(rest),
        Some("bad-pointers") => bad_pointers::run(),
        Some("blocking-connect") => blocking::run(rest),
        Some("own-filter") => hostile::own_filter(rest),
        Some("own-listener") => hostile::own_listener(rest),
        Some("attack") => hostile::attack(rest),
        Some("after-supervisor") => hostile::after_supervisor(rest),
        Some("vfork-socket") => races::vfork_socket(rest),
        Some("exec-race") => races::exec_race(rest),
        Some("dup2-race") => races::dup2_race(rest),
        Some("blocked-connects") => load::blocked_connects(rest),
        Some("killed-child") => load::killed_child(rest),
        Some("tree") => load::tree(rest),
        Some("churn") => longrun::churn(rest),
        Some("signal-storm") => longrun::signal_storm(rest),
        Some("outage") => longrun::outage(rest),
        _ => Err(
            "usage: rh-probe flags|check-fd N..|epoll PORT|stress N [--restart|\
                  --no-restart]|netns-ino|io-uring|unix-pair|\
                  foreign-abi|arrivals PORT..|race-connect A D N|race-sendto A D N|\
                  bad-pointers|blocking-connect IP PORT N"
                .to_string(),
        ),
    };
    if let Err(e) = result {
        eprintln!("rh-probe: {e}");
        std::process::exit(1);
    }
}

/// Creates one `AF_INET` socket with `SOCK_NONBLOCK | SOCK_CLOEXEC` and one without, reports
/// their flags, then re-executes itself so `check-fd` can report which survived `execve`.
fn flags() -> Result<()> {
    let flagged = inet_socket(SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC)?;
    let plain = inet_socket(SockFlag::empty())?;
    for (name, fd) in [("flagged", &flagged), ("plain", &plain)] {
        let fd = fd.as_raw_fd();
        let status = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL {fd}: {e}"))?;
        let fdflags = fcntl(fd, FcntlArg::F_GETFD).map_err(|e| format!("F_GETFD {fd}: {e}"))?;
        println!(
            "{name} fd={fd} nonblock={} cloexec={} domain={} netns={}",
            u8::from(status & OFlag::O_NONBLOCK.bits() != 0),
            u8::from(fdflags & FdFlag::FD_CLOEXEC.bits() != 0),
            sockopt_int(fd, libc::SO_DOMAIN).map_err(|e| format!("SO_DOMAIN {fd}: {e}"))?,
            netns_relation(fd),
        );
    }
    io::stdout().flush().map_err(|e| e.to_string())?;

    // The descriptors must stay open up to execve: that is the point of the check.
    let (flagged, plain) = (flagged.into_raw_fd(), plain.into_raw_fd());
    let err = std::process::Command::new("/proc/self/exe")
        .args(["check-fd", &flagged.to_string(), &plain.to_string()])
        .exec();
    Err(format!("re-exec for check-fd: {err}"))
}

/// Reports, for each descriptor number given, whether it is open and what socket it is.
fn check_fd(fds: &[String]) -> Result<()> {
    for fd in fds {
        let fd: RawFd = fd.parse().map_err(|e| format!("bad fd {fd:?}: {e}"))?;
        match fcntl(fd, FcntlArg::F_GETFD) {
            Err(Errno::EBADF) => println!("after-exec fd={fd} open=0"),
            Err(e) => return Err(format!("F_GETFD {fd}: {e}")),
            Ok(_) => println!(
                "after-exec fd={fd} open=1 domain={}",
                sockopt_int(fd, libc::SO_DOMAIN).map_err(|e| format!("SO_DOMAIN {fd}: {e}"))?
            ),
        }
    }
    Ok(())
}

/// Connects to 127.0.0.1:PORT (an echo server), then waits in one epoll set for the echo on
/// the socket and for a byte written to a pipe.
fn epoll(args: &[String]) -> Result<()> {
    let port: u16 = args
        .first()
        .and_then(|p| p.parse().ok())
        .ok_or("epoll needs a PORT")?;
    let sock = inet_socket(SockFlag::SOCK_CLOEXEC)?;
    connect(sock.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port))
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    println!("connected netns={}", netns_relation(sock.as_raw_fd()));
    let (pipe_r, pipe_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;

    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
    ep.add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, 1))
        .map_err(|e| format!("epoll add socket: {e}"))?;
    ep.add(&pipe_r, EpollEvent::new(EpollFlags::EPOLLIN, 2))
        .map_err(|e| format!("epoll add pipe: {e}"))?;

    // Nothing has been sent yet, so nothing may be ready.
    let mut events = [EpollEvent::empty(); 4];
    let idle = ep
        .wait(&mut events, 0u16)
        .map_err(|e| format!("epoll_wait: {e}"))?;
    println!("idle events={idle}");

    nix::unistd::write(&sock, b"ping").map_err(|e| format!("write socket: {e}"))?;
    nix::unistd::write(&pipe_w, b"x").map_err(|e| format!("write pipe: {e}"))?;

    let (mut pipe_ready, mut data) = (false, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(pipe_ready && data.len() >= 4) && Instant::now() < deadline {
        let n = ep
            .wait(&mut events, 100u16)
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in &events[..n] {
            let mut buf = [0u8; 64];
            let fd = if ev.data() == 1 {
                sock.as_raw_fd()
            } else {
                pipe_r.as_raw_fd()
            };
            let got = nix::unistd::read(fd, &mut buf).map_err(|e| format!("read {fd}: {e}"))?;
            if ev.data() == 1 {
                data.extend_from_slice(&buf[..got]);
            } else {
                pipe_ready = true;
            }
        }
    }
    println!(
        "pipe={} socket={} data={}",
        u8::from(pipe_ready),
        u8::from(!data.is_empty()),
        String::from_utf8_lossy(&data)
    );
    Ok(())
}

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Creates and closes N `AF_INET` sockets while SIGUSR1 is counted by a handler, checking
/// every returned descriptor is a new `AF_INET` stream socket.
///
/// Protocol with the test: prints `ready` and waits for a line on stdin; prints `ok ...` (or
/// `fail ...`) and `done`, then waits for EOF on stdin so the test can sample descriptor counts
/// while the program is still alive.
fn stress(args: &[String]) -> Result<()> {
    let n: u64 = args
        .first()
        .and_then(|n| n.parse().ok())
        .ok_or("stress needs a count")?;
    let restart = !args.iter().any(|a| a == "--no-restart");
    let flags = if restart {
        SaFlags::SA_RESTART
    } else {
        SaFlags::empty()
    };
    let action = SigAction::new(SigHandler::Handler(count_signal), flags, SigSet::empty());
    // SAFETY: the handler only increments an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.map_err(|e| format!("sigaction: {e}"))?;

    // One socket before `ready`, so the supervisor's connection to the server exists when the
    // test takes its first descriptor counts.
    drop(inet_socket(SockFlag::empty())?);
    let preexisting = open_fds()?;
    println!("ready restart={}", u8::from(restart));
    let mut stdin = io::stdin().lock();
    stdin
        .read_line(&mut String::new())
        .map_err(|e| e.to_string())?;

    let mut eintr = 0u64;
    let mut failure = None;
    'calls: for i in 0..n {
        let fd = loop {
            match socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::empty(),
                None,
            ) {
                Ok(fd) => break fd,
                // A handler without SA_RESTART may interrupt a call the supervisor has not
                // received yet (seccomp_unotify(2)); the call had no effect, so retry it.
                Err(Errno::EINTR) if !restart => eintr += 1,
                Err(e) => {
                    failure = Some(format!("call={i} socket() failed: {e}"));
                    break 'calls;
                }
            }
        };
        if let Err(why) = check_new_socket(&fd, &preexisting) {
            failure = Some(format!("call={i} fd={}: {why}", fd.as_raw_fd()));
            std::mem::forget(fd);
            break;
        }
    }
    let signals = SIGNALS.load(Ordering::Relaxed);
    match failure {
        None => println!("ok {n} signals={signals} eintr={eintr}"),
        Some(f) => println!("fail {f} signals={signals} eintr={eintr}"),
    }
    println!("done");
    io::stdout().flush().map_err(|e| e.to_string())?;
    stdin
        .read_to_end(&mut Vec::new())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A descriptor returned by `socket()` must be a fresh `AF_INET` stream socket: not one that
/// was already open (such as stdin), not something else.
fn check_new_socket(fd: &OwnedFd, preexisting: &HashSet<RawFd>) -> Result<()> {
    let raw = fd.as_raw_fd();
    if preexisting.contains(&raw) {
        return Err("descriptor was already open before the call".into());
    }
    let domain = sockopt_int(raw, libc::SO_DOMAIN).map_err(|e| format!("SO_DOMAIN: {e}"))?;
    let ty = sockopt_int(raw, libc::SO_TYPE).map_err(|e| format!("SO_TYPE: {e}"))?;
    if domain != libc::AF_INET || ty != libc::SOCK_STREAM {
        return Err(format!(
            "domain={domain} type={ty}, expected AF_INET SOCK_STREAM"
        ));
    }
    Ok(())
}

/// Prints the inode of the network namespace of a new `AF_INET` socket and of our own.
fn netns_ino() -> Result<()> {
    let sock = inet_socket(SockFlag::empty())?;
    let socket_ns = socket_netns(sock.as_raw_fd()).map_err(|e| format!("SIOCGSKNS: {e}"))?;
    println!(
        "socket={socket_ns} self={}",
        own_netns().map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Issues `io_uring_setup(2)` directly (no liburing) and reports the result.
fn io_uring() -> Result<()> {
    // struct io_uring_params is 120 bytes; all-zero asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes at most sizeof(struct io_uring_params) bytes
    // at the pointer, which is a live 120-byte buffer.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if ret < 0 {
        let errno = Errno::last();
        println!("io_uring_setup errno={} ({errno})", errno as i32);
    } else {
        println!("io_uring_setup ok fd={ret}");
    }
    Ok(())
}

/// Tries `socket(AF_INET, SOCK_STREAM, 0)` through the i386 entry point (`int 0x80`, syscall
/// 359) and the x32 one (`syscall` with `__X32_SYSCALL_BIT`), which a filter written for the
/// native ABI alone would let through to the program's own stack. Prints the raw results;
/// for a descriptor, also its namespace relation.
#[cfg(target_arch = "x86_64")]
fn foreign_abi() -> Result<()> {
    const I386_SOCKET: u32 = 359;
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    let (domain, ty) = (libc::AF_INET as u32, libc::SOCK_STREAM as u32);

    let ret: i32;
    // SAFETY: the i386 socket call takes three integers and touches no memory of ours. rbx is
    // reserved by LLVM, so the first argument is swapped in and out around the trap; r8-r11
    // are declared clobbered because older kernels did not preserve them across int 0x80.
    unsafe {
        std::arch::asm!(
            "xchg {arg1:r}, rbx",
            "int 0x80",
            "xchg {arg1:r}, rbx",
            arg1 = inout(reg) u64::from(domain) => _,
            inlateout("eax") I386_SOCKET as i32 => ret,
            in("ecx") ty,
            in("edx") 0u32,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
        );
    }
    report_raw("int80-socket", i64::from(ret));

    // SAFETY: socket(2) through the x32 table takes three integers; no memory is passed.
    let ret = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_socket, domain, ty, 0) };
    let ret = if ret < 0 {
        -i64::from(Errno::last() as i32)
    } else {
        ret
    };
    report_raw("x32-socket", ret);
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn foreign_abi() -> Result<()> {
    Err("foreign-abi is only meaningful on x86_64".into())
}

/// Prints `NAME=RET`, a negative RET being -errno, plus the namespace of a returned socket.
fn report_raw(name: &str, ret: i64) {
    match RawFd::try_from(ret) {
        Ok(fd) if fd >= 0 => println!("{name}={fd} netns={}", netns_relation(fd)),
        _ => println!("{name}={ret}"),
    }
}

/// Round trips over an `AF_UNIX` socketpair and over a listener bound to a path.
fn unix_pair() -> Result<()> {
    let (a, b) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    roundtrip(&a, &b).map_err(|e| format!("socketpair roundtrip: {e}"))?;
    println!("socketpair=ok netns={}", netns_relation(a.as_raw_fd()));

    let path = std::env::temp_dir().join(format!("rh-probe-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("bind {path:?}: {e}"))?;
    let client = UnixStream::connect(&path).map_err(|e| format!("connect {path:?}: {e}"));
    let _ = std::fs::remove_file(&path);
    let (server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    roundtrip(&client?, &server).map_err(|e| format!("listener roundtrip: {e}"))?;
    println!("listener=ok netns={}", netns_relation(listener.as_raw_fd()));
    Ok(())
}

fn roundtrip(a: &UnixStream, b: &UnixStream) -> io::Result<()> {
    let mut buf = [0u8; 5];
    (&*a).write_all(b"hello")?;
    (&*b).read_exact(&mut buf)?;
    if &buf != b"hello" {
        return Err(io::Error::other("payload changed in transit"));
    }
    Ok(())
}

fn inet_socket(flags: SockFlag) -> Result<OwnedFd> {
    socket(AddressFamily::Inet, SockType::Stream, flags, None)
        .map_err(|e| format!("socket(AF_INET, SOCK_STREAM, {flags:?}): {e}"))
}

/// `getsockopt(fd, SOL_SOCKET, opt)` for an integer option.
fn sockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live locals; len tells the kernel the buffer's real size.
    let ret =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut value).cast(), &mut len) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The inode of the network namespace a socket belongs to: `ioctl(SIOCGSKNS)` (socket(7),
/// Linux 4.9) opens that namespace, and an open namespace file's inode identifies it.
/// Needs `CAP_NET_ADMIN` over the namespace.
fn socket_netns(fd: RawFd) -> io::Result<u64> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument pointer; it returns a new descriptor or -1.
    let ret = unsafe { libc::ioctl(fd, SIOCGSKNS as _) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl just returned this descriptor to us; nothing else owns it.
    let ns: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(ret) };
    Ok(std::fs::File::from(ns).metadata()?.ino())
}

fn own_netns() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

/// `same`, `differs` or `unknown` (when `SIOCGSKNS` is not permitted) for a socket's
/// namespace relative to ours.
fn netns_relation(fd: RawFd) -> &'static str {
    match (socket_netns(fd), own_netns()) {
        (Ok(a), Ok(b)) if a == b => "same",
        (Ok(_), Ok(_)) => "differs",
        _ => "unknown",
    }
}

/// Descriptors open now. The directory stream's own descriptor shows up in the listing but is
/// closed by the time we return, so each entry is checked again.
fn open_fds() -> Result<HashSet<RawFd>> {
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| format!("/proc/self/fd: {e}"))?;
    let listed: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    Ok(listed
        .into_iter()
        .filter(|&fd| fcntl(fd, FcntlArg::F_GETFD).is_ok())
        .collect())
}
