//! Hostile programs: each tries to get a socket in the host's stack, or to take over the
//! supervisor, and reports what happened as `key=value` words.
//!
//! A "host probe" makes an `AF_INET` stream socket and connects it to `127.0.0.1:PORT`, where
//! the test listens in the host's stack: `host=reached` means the attack got a host-stack
//! socket; `host=ECONNREFUSED` means the socket belongs to another stack, where nothing
//! listens on that port; `host=nosocket-ERRNO` means `socket()` itself failed.
//!
//! * `own-filter PORT` — installs a filter of its own that allows everything, then probes.
//! * `own-listener PORT` — installs a filter whose listener it serves itself, answering each
//!   `socket()` with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`, then probes.
//! * `attack PID` (or `attack parent`) — ptrace, `pidfd_getfd`, `process_vm_writev`,
//!   `/proc/PID/mem` and signals against PID, each reported as `refused` or `permitted`.
//! * `after-supervisor PORT [--kill-parent]` — waits until its parent (the supervisor) is
//!   gone, or kills it, then tries every way it knows to a host socket.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::Result;

/// `SECCOMP_RET_*` actions and the classic-BPF opcodes of seccomp(2)'s examples.
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (Linux 5.5): let the kernel run the call itself.
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// The name of an errno, as the tests match it (`ECONNREFUSED`).
pub fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

/// `socket(AF_INET, SOCK_STREAM)` + `connect(127.0.0.1:port)`: see the module docs.
pub fn host_probe(port: u16) -> String {
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return format!("nosocket-{}", errno_name(Errno::last()));
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a live sockaddr_in of `len` bytes.
    let ret = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    if ret == 0 {
        "reached".into()
    } else {
        errno_name(Errno::last())
    }
}

fn parse_port(arg: Option<&String>) -> Result<u16> {
    arg.and_then(|p| p.parse().ok())
        .ok_or_else(|| "needs a PORT".to_string())
}

fn no_new_privs() {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only; under the supervisor it is set already.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`; returns the raw result.
fn load_filter(
    program: &[libc::sock_filter],
    flags: libc::c_ulong,
) -> std::result::Result<i64, Errno> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const prog,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A later filter returning `ALLOW` cannot weaken an earlier `USER_NOTIF`: the kernel runs
/// every filter and takes the action of highest precedence (seccomp(2)).
pub fn own_filter(args: &[String]) -> Result<()> {
    let port = parse_port(args.first())?;
    no_new_privs();
    let install = match load_filter(&[insn(BPF_RET_K, 0, 0, RET_ALLOW)], 0) {
        Ok(_) => "ok".to_string(),
        Err(e) => errno_name(e),
    };
    println!("own-filter install={install} host={}", host_probe(port));
    Ok(())
}

/// Installs `socket() → USER_NOTIF` with a listener of our own and serves it, answering
/// every notification with `CONTINUE`. Returns the installation's outcome.
fn install_own_listener() -> std::result::Result<(), Errno> {
    no_new_privs();
    let program = [
        // seccomp_data.nr is at offset 0.
        insn(BPF_LD_W_ABS, 0, 0, 0),
        insn(BPF_JEQ_K, 0, 1, libc::SYS_socket as u32),
        insn(BPF_RET_K, 0, 0, RET_USER_NOTIF),
        insn(BPF_RET_K, 0, 0, RET_ALLOW),
    ];
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let fd = load_filter(&program, flags)?;
    // SAFETY: with NEW_LISTENER seccomp(2) returned a new descriptor nobody else owns.
    let listener = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    thread::spawn(move || continue_everything(listener));
    Ok(())
}

fn continue_everything(listener: OwnedFd) {
    loop {
        // SAFETY: seccomp_notif is plain old data; the kernel wants it zeroed.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into the live local.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut notif,
            )
        };
        if r < 0 {
            if Errno::last() == Errno::ENOENT || Errno::last() == Errno::EINTR {
                continue;
            }
            return;
        }
        let mut resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: 0,
            flags: USER_NOTIF_FLAG_CONTINUE,
        };
        // SAFETY: SEND reads one seccomp_notif_resp from the live local.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp,
            )
        };
    }
}

pub fn own_listener(args: &[String]) -> Result<()> {
    let port = parse_port(args.first())?;
    let install = match install_own_listener() {
        Ok(()) => "ok".to_string(),
        Err(e) => errno_name(e),
    };
    println!("own-listener install={install} host={}", host_probe(port));
    Ok(())
}

fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() }
}

/// Waits up to 20 s for the parent to change (it died and we were re-parented).
fn wait_orphaned(parent: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if parent_pid() != parent {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

pub fn after_supervisor(args: &[String]) -> Result<()> {
    let port = parse_port(args.first())?;
    let parent = parent_pid();
    if args.iter().any(|a| a == "--kill-parent") {
        // SAFETY: kill(2) takes integers only.
        let r = unsafe { libc::kill(parent, libc::SIGKILL) };
        let outcome = if r == 0 {
            "ok".into()
        } else {
            errno_name(Errno::last())
        };
        println!("kill-parent={outcome}");
    } else {
        println!("ready parent={parent}");
    }
    io::stdout().flush().map_err(|e| e.to_string())?;
    if !wait_orphaned(parent) {
        return Err(format!("parent {parent} still alive after 20 s"));
    }
    println!("orphaned");

    // The plain call, which the supervisor used to answer.
    println!("plain host={}", host_probe(port));
    println!("io-uring errno={}", io_uring_errno());
    let install = match install_own_listener() {
        Ok(()) => "ok".to_string(),
        Err(e) => errno_name(e),
    };
    println!("own-listener install={install} host={}", host_probe(port));
    Ok(())
}

fn io_uring_errno() -> String {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) (120) bytes.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if ret < 0 {
        errno_name(Errno::last())
    } else {
        // SAFETY: the ring's descriptor is ours; it is closed at once.
        drop(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        "none".into()
    }
}

/// `refused-ERRNO` for a failure whose errno is a permission check, `permitted` otherwise.
fn verdict(ret: i64, permission_errnos: &[Errno]) -> String {
    if ret >= 0 {
        return "permitted".into();
    }
    let e = Errno::last();
    if permission_errnos.contains(&e) {
        format!("refused-{}", errno_name(e))
    } else {
        format!("permitted-{}", errno_name(e))
    }
}

pub fn attack(args: &[String]) -> Result<()> {
    let pid: i32 = match args.first().map(String::as_str) {
        Some("parent") => parent_pid(),
        Some(p) => p.parse().map_err(|e| format!("bad pid {p:?}: {e}"))?,
        None => return Err("attack needs PID or `parent`".into()),
    };
    let denied = [Errno::EPERM, Errno::EACCES];
    println!("target pid={pid}");
    println!("ptrace-attach={}", ptrace_attach(pid));

    // pidfd_open needs no permission; pidfd_getfd checks PTRACE_MODE_ATTACH_REALCREDS.
    // SAFETY: pidfd_open takes integers only.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        println!("pidfd-getfd=nopidfd-{}", errno_name(Errno::last()));
    } else {
        // SAFETY: a new descriptor that nobody else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        let (mut got, mut last) = (0, String::from("-"));
        for target in 0..256 {
            // SAFETY: pidfd_getfd takes descriptors' numbers; a result is a new descriptor.
            let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
            if r >= 0 {
                got += 1;
                // SAFETY: the duplicate is ours; close it.
                drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
            } else if Errno::last() != Errno::EBADF {
                last = errno_name(Errno::last());
            }
        }
        let outcome = if got == 0 {
            format!("refused-{last}")
        } else {
            format!("permitted-{got}")
        };
        println!("pidfd-getfd={outcome}");
    }

    // One byte to an address that cannot be mapped: EFAULT would mean the permission check
    // passed (and a real address would have been written); EPERM means it did not.
    let byte = [0u8; 1];
    let local = libc::iovec {
        iov_base: byte.as_ptr().cast_mut().cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: 8usize as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: the local iovec names a live 1-byte buffer; the remote one is only an address
    // in the target, which the kernel checks.
    let r = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    println!("process-vm-writev={}", verdict(r as i64, &denied));

    let mem = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"));
    println!("proc-mem-write={}", io_verdict(mem.map(drop), &denied));
    let fd0 = std::fs::File::open(format!("/proc/{pid}/fd/0"));
    println!("proc-fd-open={}", io_verdict(fd0.map(drop), &denied));
    let environ = std::fs::read(format!("/proc/{pid}/environ"));
    println!("proc-environ={}", io_verdict(environ.map(drop), &denied));

    println!("sigstop={}", stop_and_continue(pid));
    Ok(())
}

fn io_verdict(result: io::Result<()>, denied: &[Errno]) -> String {
    match result {
        Ok(()) => "permitted".into(),
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
            if denied.contains(&errno) {
                format!("refused-{}", errno_name(errno))
            } else {
                format!("permitted-{}", errno_name(errno))
            }
        }
    }
}

/// `PTRACE_ATTACH`, and when it works, waits for the stop and detaches at once.
fn ptrace_attach(pid: i32) -> String {
    // SAFETY: PTRACE_ATTACH takes a pid; the address and data arguments are ignored.
    let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) };
    if r < 0 {
        return verdict(-1, &[Errno::EPERM, Errno::EACCES]);
    }
    let mut status = 0;
    // SAFETY: waits for our new tracee's attach stop; status is a live local.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    // SAFETY: detaching a tracee stopped by us, delivering no signal.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize) };
    "permitted".into()
}

/// Sends `SIGSTOP`, reports whether the target stopped, and sends `SIGCONT`.
fn stop_and_continue(pid: i32) -> String {
    // SAFETY: kill(2) takes integers only.
    if unsafe { libc::kill(pid, libc::SIGSTOP) } < 0 {
        return verdict(-1, &[Errno::EPERM]);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut stopped = false;
    while Instant::now() < deadline && !stopped {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stopped = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            == Some("T");
        thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    if stopped {
        "permitted-stopped".into()
    } else {
        "permitted-not-stopped".into()
    }
}
