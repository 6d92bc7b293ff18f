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

/// `ioctl(SECCOMP_IOCTL_NOTIF_SEND)` with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the kernel runs
/// the call as the program made it (Linux 5.5). Only for calls the supervisor decides
/// nothing about: the kernel reads the arguments again, after the program may have changed
/// them (seccomp_unotify(2)).
pub fn notif_continue(listener: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
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

/// `prctl(PR_SET_DUMPABLE, 1)`: undoes [`set_not_dumpable`], and what the kernel does when a
/// process changes its credentials, so that the process may be inspected by its own user
/// again (pidfd_getfd(2), /proc/self files such as `uid_map`).
pub fn set_dumpable() -> Result<(), Errno> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    Errno::result(ret).map(drop)
}

/// `sched_setscheduler(0, SCHED_BATCH)` for the calling thread (sched(7)): the same share of
/// the CPU as `SCHED_OTHER`, but its wake-ups never preempt the running thread. Allowed
/// without privileges.
pub fn set_sched_batch() -> Result<(), Errno> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the
    // calling thread.
    let ret = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    Errno::result(ret).map(drop)
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)` (Linux 6.6):
/// the kernel wakes the other side of each hand-off on the waker's CPU.
pub fn notif_set_sync_wakeup(listener: BorrowedFd<'_>) -> Result<(), Errno> {
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;
    // SAFETY: this request takes its flags by value, not through a pointer.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    Errno::result(ret).map(drop)
}

/// `CLOSE_RANGE_CLOEXEC` (linux/close_range.h): mark the descriptors close-on-exec instead
/// of closing them.
pub const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// `close_range(first, last, flags)` (Linux 5.9; `CLOSE_RANGE_CLOEXEC` 5.11): closes, or with
/// [`CLOSE_RANGE_CLOEXEC`] marks close-on-exec, every open descriptor from `first` to `last`.
///
/// Closing descriptors that other code owns breaks it: only call it where nothing else of the
/// process runs any more (between fork and exec) or with the `CLOEXEC` flag.
pub fn close_range(first: u32, last: u32, flags: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: close_range takes integer arguments only; the caller keeps the ownership rule
    // stated above.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    Errno::result(ret).map(drop)
}

/// `setns(fd, CLONE_NEWNET)`: moves the calling thread (only) into that network namespace.
pub fn setns_net(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: integer arguments only; the descriptor is borrowed for the call.
    let ret = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    Errno::result(ret).map(drop)
}

/// `ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)`: whether notification `id` is still pending, i.e.
/// the thread is still blocked in that call, so memory read from it belongs to that call.
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id).is_ok()
}

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread rather than a thread-group leader.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// `pidfd_open(tid, PIDFD_THREAD)`: a stable handle on thread `tid`, falling back to the
/// thread's process (`tgid`) on kernels without `PIDFD_THREAD`. The flag says whether the
/// handle is for the thread itself.
pub fn pidfd_open(tid: i32, tgid: impl FnOnce() -> Option<i32>) -> Result<(OwnedFd, bool), Errno> {
    let open = |pid: i32, flags: libc::c_uint| {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
        if ret < 0 {
            Err(Errno::last())
        } else {
            // SAFETY: the descriptor was just created for us and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
        }
    };
    match open(tid, PIDFD_THREAD) {
        Err(Errno::EINVAL) => open(tgid().ok_or(Errno::ESRCH)?, 0).map(|fd| (fd, false)),
        other => other.map(|fd| (fd, true)),
    }
}

/// `pidfd_getfd(pidfd, fd, 0)` (Linux 5.6): a duplicate of descriptor `fd` of that process,
/// close-on-exec, referring to the same open file.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd takes two descriptors' numbers and flags; it returns a new fd.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the descriptor was just created for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// `process_vm_readv`: copies `buf.len()` bytes at `addr` in thread `tid`'s address space.
/// A short copy is reported as `EFAULT`, as copy_from_user would.
pub fn read_memory(tid: i32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
    match read_memory_prefix(tid, addr, buf)? {
        n if n == buf.len() => Ok(()),
        _ => Err(Errno::EFAULT),
    }
}

/// `process_vm_readv` that keeps a short copy: the number of bytes at the start of `buf`
/// that could be read before the first page that faults (process_vm_readv(2) stops there
/// and reports what it copied). Nothing readable is `EFAULT`.
pub fn read_memory_prefix(tid: i32, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we own mutably; the remote range is only read
    // by the kernel on the other process's behalf and is checked there.
    let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    match n {
        n if n > 0 => Ok(n as usize),
        0 => Err(Errno::EFAULT),
        _ => Err(Errno::last()),
    }
}

/// `process_vm_writev`: copies `data` to `addr` in thread `tid`'s address space.
pub fn write_memory(tid: i32, addr: u64, data: &[u8]) -> Result<(), Errno> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: the kernel only reads from `local` (our `data`) and writes the remote range
    // in the other process, which it checks there.
    let n = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
    match n {
        n if n as usize == data.len() => Ok(()),
        n if n >= 0 => Err(Errno::EFAULT),
        _ => Err(Errno::last()),
    }
}

/// A raw result of a socket call: the return value, or the errno.
pub type SysResult = Result<i64, i32>;

fn sys_result(ret: isize) -> SysResult {
    if ret < 0 {
        Err(Errno::last() as i32)
    } else {
        Ok(ret as i64)
    }
}

/// Socket calls performed on the supervisor's duplicate of the program's socket, with the
/// address bytes the supervisor copied and checked. Each returns what the call returned.
pub mod sock {
    use super::*;

    /// `socket(domain, type, protocol)` in the calling thread's network namespace.
    pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, i32> {
        // SAFETY: integer arguments only.
        let fd = unsafe { libc::socket(domain, ty, protocol) };
        if fd < 0 {
            return Err(Errno::last() as i32);
        }
        // SAFETY: socket(2) returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `connect(fd, addr, len)`.
    pub fn connect(fd: BorrowedFd<'_>, addr: &[u8]) -> SysResult {
        // SAFETY: `addr` is a readable buffer of exactly the length passed.
        let r = unsafe { libc::connect(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) };
        sys_result(r as isize)
    }

    /// `bind(fd, addr, len)`.
    pub fn bind(fd: BorrowedFd<'_>, addr: &[u8]) -> SysResult {
        // SAFETY: `addr` is a readable buffer of exactly the length passed.
        let r = unsafe { libc::bind(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) };
        sys_result(r as isize)
    }

    /// `listen(fd, backlog)`.
    pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> SysResult {
        // SAFETY: integer arguments only.
        sys_result(unsafe { libc::listen(fd.as_raw_fd(), backlog) } as isize)
    }

    /// `accept4(fd, &peer, &len, flags)`: the new descriptor and the peer's address bytes.
    pub fn accept4(fd: BorrowedFd<'_>, flags: i32) -> Result<(OwnedFd, Vec<u8>), i32> {
        // SAFETY: sockaddr_storage is plain old data.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        // SAFETY: `storage` and `len` are valid for writes and describe each other.
        let r = unsafe {
            libc::accept4(
                fd.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
                flags,
            )
        };
        if r < 0 {
            return Err(Errno::last() as i32);
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let new = unsafe { OwnedFd::from_raw_fd(r) };
        // SAFETY: the kernel wrote `len` bytes (at most the storage size) into `storage`.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&storage as *const libc::sockaddr_storage).cast::<u8>(),
                (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
            )
        };
        Ok((new, bytes.to_vec()))
    }

    /// `getsockname(fd)`: the local address bytes.
    pub fn getsockname(fd: BorrowedFd<'_>) -> Result<Vec<u8>, i32> {
        // SAFETY: sockaddr_storage is plain old data.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        // SAFETY: `storage` and `len` are valid for writes and describe each other.
        let r = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(Errno::last() as i32);
        }
        // SAFETY: the kernel wrote `len` bytes (at most the storage size) into `storage`.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&storage as *const libc::sockaddr_storage).cast::<u8>(),
                (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
            )
        };
        Ok(bytes.to_vec())
    }

    /// `sendmsg(fd, msg, flags)` with a message the supervisor assembled from its copies.
    pub fn sendmsg(fd: BorrowedFd<'_>, msg: &libc::msghdr, flags: i32) -> SysResult {
        // SAFETY: every pointer in `msg` refers to buffers the caller owns and keeps alive
        // for the duration of the call.
        sys_result(unsafe { libc::sendmsg(fd.as_raw_fd(), msg, flags) })
    }

    /// `getsockopt(fd, SOL_SOCKET, opt)` for an int-valued option.
    pub fn getsockopt_int(fd: BorrowedFd<'_>, opt: i32) -> Result<i32, i32> {
        let mut val: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as u32;
        // SAFETY: `val` and `len` are valid for writes and describe each other.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&mut val as *mut i32).cast(),
                &mut len,
            )
        };
        if r < 0 {
            Err(Errno::last() as i32)
        } else {
            Ok(val)
        }
    }

    /// Whether the open file has `O_NONBLOCK` (fcntl `F_GETFL`).
    pub fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: F_GETFL takes no pointer argument.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        flags >= 0 && flags & libc::O_NONBLOCK != 0
    }
}
