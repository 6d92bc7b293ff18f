//! Thin safe wrappers over the system calls the supervisor needs that neither `std` nor `nix`
//! covers: seccomp(2) filter loading and the user-notification ioctls of seccomp_unotify(2).
//!
//! Every wrapper names the call it wraps and returns the raw `Errno` on failure; callers add
//! the context (pid, notification id, descriptor).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// One classic-BPF instruction, as in `struct sock_filter` (linux/filter.h).
pub type BpfInstruction = libc::sock_filter;

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)`: installs `program` on the calling thread
/// and returns the notification listener when `flags` asks for one.
///
/// The caller must have set `PR_SET_NO_NEW_PRIVS` (or hold `CAP_SYS_ADMIN`).
pub fn seccomp_set_mode_filter(
    program: &[BpfInstruction],
    flags: libc::c_ulong,
) -> Result<OwnedFd, Errno> {
    let len = u16::try_from(program.len()).map_err(|_| Errno::E2BIG)?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the
    // instructions before returning and does not keep the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the return value is a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// A notification read from the listener (`struct seccomp_notif`).
pub type Notif = libc::seccomp_notif;

fn ioctl<T>(listener: BorrowedFd<'_>, request: libc::Ioctl, arg: *mut T) -> Result<i32, Errno> {
    // SAFETY: every caller passes the request code together with a pointer to the structure
    // that request reads or writes, valid for the duration of the call.
    let ret = unsafe { libc::ioctl(listener.as_raw_fd(), request, arg) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_RECV)`: waits for the next notification.
///
/// `ENOENT` means the thread that made the call went away before it was read.
pub fn notif_recv(listener: BorrowedFd<'_>) -> Result<Notif, Errno> {
    // The kernel refuses a buffer that is not zeroed (seccomp_unotify(2)).
    // SAFETY: seccomp_notif is plain old data; all-zero is a valid value.
    let mut notif: Notif = unsafe { std::mem::zeroed() };
    ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif)?;
    Ok(notif)
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_SEND)`: answers notification `id` with a return value or an
/// error. `errno` is positive; the program sees `-1` and that errno.
pub fn notif_send(
    listener: BorrowedFd<'_>,
    id: u64,
    result: Result<i64, i32>,
) -> Result<(), Errno> {
    let (val, error) = match result {
        Ok(val) => (val, 0),
        Err(errno) => (0, -errno),
    };
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags: 0,
    };
    ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp).map(drop)
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_ADDFD)` with `SECCOMP_ADDFD_FLAG_SEND`: installs `fd` in the
/// notifying process and, in the same step, answers notification `id` with the new
/// descriptor number (Linux 5.14). Returns that number.
///
/// `cloexec` sets `O_CLOEXEC` on the installed descriptor. The file status flags
/// (`O_NONBLOCK`) travel with the open file itself.
pub fn notif_addfd_send(
    listener: BorrowedFd<'_>,
    id: u64,
    fd: BorrowedFd<'_>,
    cloexec: bool,
) -> Result<i32, Errno> {
    let mut addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: fd.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut addfd)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: required before an unprivileged process may install a
/// seccomp filter; it also keeps set-uid programs from gaining privileges under the filter.
pub fn set_no_new_privs() -> Result<(), Errno> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Errno::result(ret).map(drop)
}

/// `prctl(PR_SET_DUMPABLE, 0)`: keeps processes of the same user from attaching with ptrace
/// or opening this process's memory and descriptors through /proc.
pub fn set_not_dumpable() -> Result<(), Errno> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    Errno::result(ret).map(drop)
}
