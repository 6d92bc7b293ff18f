//! `--seccomp-floor`: the client under the least a seccomp user-notification supervisor can
//! do, so that the report can tell the cost of the kernel interface from rumphijack's own.
//!
//! The process forks. The child loads a four-instruction filter — `socket()` gives
//! `SECCOMP_RET_USER_NOTIF`, everything else `SECCOMP_RET_ALLOW` — with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, as rumphijack
//! does, and runs the client. The parent takes the listener with pidfd_getfd(2), asks for
//! synchronous wake-ups (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`), and answers each `socket()`:
//! socket(2) with the same arguments, `SECCOMP_IOCTL_NOTIF_ADDFD` with
//! `SECCOMP_ADDFD_FLAG_SEND`, close(2) of its copy. No policy, no second stack, no pool. Two
//! threads wait for notifications, as two of rumphijack's workers do, and they run as
//! `SCHED_BATCH`, as those workers do: with one thread, a call often waits for it to come back
//! from the other CPU, and a worker that preempts the program right after answering costs two
//! context switches (see the supervisor's `turn` and `notify` modules). Without the same
//! choices the floor would not be one.
//!
//! Every call but `socket()` is allowed by a filter whose verdict does not depend on the
//! arguments, so the kernel answers it from its action cache (Linux 5.11) without running
//! the filter: `getppid()` here costs what any seccomp filter costs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19).
const WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;
/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS`, `_IOW('!', 4, __u64)` (Linux 6.6).
const NOTIF_SET_FLAGS: libc::Ioctl = 0x4008_2104;
/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.
const SYNC_WAKE_UP: libc::c_ulong = 1;
/// `AUDIT_ARCH_X86_64`.
const ARCH_X86_64: u32 = 0xc000_003e;

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Runs `client` in a child process under the minimal supervisor; returns its result as
/// this process's.
pub fn run(client: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array it is given.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: both were just returned by pipe2 and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };

    // SAFETY: this process has one thread, so the child may run anything.
    let child = check(unsafe { libc::fork() }.into())? as libc::pid_t;
    if child == 0 {
        drop(read_end);
        let status = match child_side(write_end, client) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench-load --seccomp-floor: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the parent's exit handlers twice.
        unsafe { libc::_exit(status) };
    }
    drop(write_end);
    let listener = std::sync::Arc::new(take_listener(child, &read_end)?);
    for _ in 0..2 {
        let listener = listener.clone();
        std::thread::spawn(move || serve(&listener));
    }

    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid place for its status.
    check(unsafe { libc::waitpid(child, &mut status, 0) }.into())?;
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "client ended with status {status:#x}"
        )))
    }
}

/// Loads the filter, tells the parent the listener's number, runs the client.
fn child_side(report: OwnedFd, client: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let program = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(libc::BPF_JEQ, ARCH_X86_64, 1, 0),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(libc::BPF_JEQ, libc::SYS_socket as u32, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())?;
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | WAIT_KILLABLE_RECV;
    // SAFETY: `fprog` points at `program`, which outlives the call.
    let listener = check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    })? as RawFd;

    let bytes = listener.to_ne_bytes();
    // SAFETY: writes four bytes from a live array to our own pipe.
    check(unsafe { libc::write(report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) } as _)?;
    drop(report);
    client()
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The child's listener, duplicated into this process.
fn take_listener(child: libc::pid_t, report: &OwnedFd) -> io::Result<OwnedFd> {
    let mut bytes = [0u8; 4];
    // SAFETY: reads at most four bytes into a live array.
    let n = unsafe { libc::read(report.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
    if n != 4 {
        return Err(io::Error::other("the child loaded no filter"));
    }
    let number = RawFd::from_ne_bytes(bytes);
    // SAFETY: pidfd_open(2) and pidfd_getfd(2) take integers only.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) })? as RawFd;
    // SAFETY: as above; `pidfd` is closed right after.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, number, 0) };
    // SAFETY: `pidfd` is ours and used no more.
    unsafe { libc::close(pidfd) };
    let listener = check(got)? as RawFd;
    // SAFETY: `listener` was just returned by pidfd_getfd and is owned by nothing else.
    let listener = unsafe { OwnedFd::from_raw_fd(listener) };
    // Older kernels refuse the flag; the floor is then measured without it, as rumphijack
    // would run.
    // SAFETY: the ioctl takes the flags by value.
    unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SET_FLAGS, SYNC_WAKE_UP) };
    Ok(listener)
}

/// Answers `socket()` notifications until the child is gone.
fn serve(listener: &OwnedFd) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is valid for the call; pid 0 is this thread. Failure changes nothing
    // but the speed.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    loop {
        // SAFETY: seccomp_notif is plain data; zeroed is what NOTIF_RECV requires.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV fills the struct it is given.
        let rc = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut notif,
            )
        };
        if rc < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                _ => return,
            }
        }
        let [domain, ty, protocol] = [0, 1, 2].map(|i| notif.data.args[i] as i32);
        // SAFETY: socket(2) takes integers only.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            answer_error(listener, notif.id, errno);
            continue;
        }
        let mut addfd = libc::seccomp_notif_addfd {
            id: notif.id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: fd as u32,
            newfd: 0,
            newfd_flags: 0,
        };
        // SAFETY: ADDFD reads the struct it is given; `fd` is open.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                &mut addfd,
            );
            libc::close(fd);
        }
    }
}

fn answer_error(listener: &OwnedFd, id: u64, errno: i32) {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: NOTIF_SEND reads the struct it is given.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp,
        )
    };
}
