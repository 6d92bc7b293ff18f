//! The system calls the server needs that have no safe wrapper in `std` or `nix`.
//!
//! Every `unsafe` block of the crate lives here. Each wrapper is named after the call it
//! wraps, takes owned or borrowed descriptors rather than raw numbers where it can, and
//! returns the kernel's errno unchanged; callers add the context.

use std::ffi::CStr;
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::errno::Errno;

/// socket(2) with the caller's raw `domain`, `ty` and `protocol`, exactly as a client sent
/// them; the kernel validates all three and its errno is returned as is.
pub(crate) fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: socket(2) takes no pointers; any integer arguments are valid input for it.
    let fd = unsafe { libc::socket(domain, ty, protocol) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just allocated `fd` for this call and nothing else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Interface request for the `SIOC[GS]IFFLAGS` ioctls, built for one interface name.
fn ifreq_for(name: &CStr) -> Result<libc::ifreq, Errno> {
    let bytes = name.to_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(Errno::ENAMETOOLONG);
    }
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers and
    // addresses); all-zero bytes are a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// ioctl(2) `SIOCGIFFLAGS` (netdevice(7)): the flags of interface `name`.
pub(crate) fn ioctl_siocgifflags(sock: BorrowedFd<'_>, name: &CStr) -> Result<i16, Errno> {
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name from and writes the flags into
    // the `ifreq` we pass, which is valid and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: after a successful SIOCGIFFLAGS the kernel has set `ifru_flags`, and every
    // bit pattern is a valid `c_short`.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

/// ioctl(2) `SIOCSIFFLAGS` (netdevice(7)): sets the flags of interface `name`.
pub(crate) fn ioctl_siocsifflags(
    sock: BorrowedFd<'_>,
    name: &CStr,
    flags: i16,
) -> Result<(), Errno> {
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: SIOCSIFFLAGS only reads the `ifreq` we pass, which is valid for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Number of threads in this process, from `/proc/self/task` (proc(5)).
pub(crate) fn thread_count() -> std::io::Result<usize> {
    Ok(fs::read_dir("/proc/self/task")?.count())
}

/// Which side of a [`fork`] the caller is on.
#[derive(Debug)]
pub(crate) enum Forked {
    /// The original process.
    Parent,
    /// The new process.
    Child,
}

/// fork(2), refused with `EBUSY` unless the process has exactly one thread.
///
/// In a single-threaded process the child is an exact copy with no lock held by a thread
/// that does not exist in it, so it may go on running ordinary Rust code; that is what
/// makes this wrapper safe to call.
pub(crate) fn fork() -> Result<Forked, Errno> {
    match thread_count() {
        Ok(1) => {}
        Ok(_) => return Err(Errno::EBUSY),
        Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
    }
    // SAFETY: the process has exactly one thread (checked above, and only that thread
    // could start another), so the child inherits no lock held by a vanished thread.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// Inherited descriptors taken so far (see [`adopt_inherited_fd`]).
static INHERITED_FDS_TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Takes ownership of a descriptor the process inherited from whoever started it, such as
/// the `--ready-fd` of a supervising script or a socket passed by systemd. Marks it
/// close-on-exec.
///
/// Refuses standard input, output and error (`EBADF`), descriptors that are not open
/// (`EBADF`) and a descriptor taken before in the process (`EBUSY`).
///
/// Call it before the process opens any descriptor of its own: only then is every open
/// descriptor above 2 an inherited one that nothing in the process owns yet.
pub(crate) fn adopt_inherited_fd(fd: RawFd) -> Result<OwnedFd, Errno> {
    if fd <= 2 {
        return Err(Errno::EBADF);
    }
    // SAFETY: F_GETFD takes no pointer argument and only reads the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Errno::last());
    }
    {
        // A panic while holding the lock cannot leave the list inconsistent.
        let mut taken = INHERITED_FDS_TAKEN
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if taken.contains(&fd) {
            return Err(Errno::EBUSY);
        }
        taken.push(fd);
    }
    // SAFETY: `fd` is open (checked above), is not one of the standard streams that `std`
    // uses, and the process has not opened descriptors of its own yet (the documented
    // calling rule), so no other owner exists; the list above makes this its only take.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD with an integer argument touches only the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(Errno::last());
    }
    Ok(owned)
}

/// getsockopt(2) `SOL_SOCKET` option `opt` whose value is an `int` (socket(7)), such as
/// `SO_DOMAIN`, `SO_TYPE` or `SO_ACCEPTCONN`.
pub(crate) fn getsockopt_int(sock: BorrowedFd<'_>, opt: libc::c_int) -> Result<i32, Errno> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and describe each other; the kernel
    // writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn socket_returns_the_kernel_errno_unchanged() {
        assert_eq!(
            socket(9999, libc::SOCK_STREAM, 0).unwrap_err(),
            Errno::EAFNOSUPPORT
        );
        let s = socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0).unwrap();
        assert!(s.as_raw_fd() > 2);
    }

    #[test]
    fn interface_names_longer_than_ifnamsiz_are_refused() {
        let s = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0).unwrap();
        let long = c"an-interface-name-too-long";
        assert_eq!(
            ioctl_siocgifflags(s.as_fd(), long).unwrap_err(),
            Errno::ENAMETOOLONG
        );
        let flags = ioctl_siocgifflags(s.as_fd(), c"lo").unwrap();
        assert_ne!(flags as i32 & libc::IFF_LOOPBACK, 0);
    }

    #[test]
    fn standard_streams_cannot_be_adopted() {
        assert_eq!(adopt_inherited_fd(1).unwrap_err(), Errno::EBADF);
    }

    #[test]
    fn a_descriptor_is_adopted_once() {
        let (rx, tx) = nix::unistd::pipe().unwrap();
        let number = rx.as_raw_fd();
        // The adopted descriptor takes over ownership from `rx`.
        std::mem::forget(rx);
        let adopted = adopt_inherited_fd(number).unwrap();
        assert_eq!(adopt_inherited_fd(number).unwrap_err(), Errno::EBUSY);
        drop((adopted, tx));
    }

    #[test]
    fn socket_options_describe_a_listening_unix_socket() {
        let dir = std::env::temp_dir().join(format!("rump-sockopt-{}", std::process::id()));
        let _ = fs::remove_file(&dir);
        let listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let fd = listener.as_fd();
        assert_eq!(getsockopt_int(fd, libc::SO_DOMAIN), Ok(libc::AF_UNIX));
        assert_eq!(getsockopt_int(fd, libc::SO_TYPE), Ok(libc::SOCK_STREAM));
        assert_eq!(getsockopt_int(fd, libc::SO_ACCEPTCONN), Ok(1));
        let _ = fs::remove_file(&dir);
    }
}
