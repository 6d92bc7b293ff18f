//! Small safe wrappers over the system calls the client makes directly.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// getsockopt(2) for an option whose value is a C `int` (`SO_DOMAIN`, `SO_TYPE`, …).
pub(crate) fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; `value` and `len` are
    // valid for writes, and `len` tells the kernel the buffer holds exactly one c_int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// socket(2); the fake servers in the tests create real sockets with it.
#[cfg(test)]
pub(crate) fn socket(domain: i32, ty: i32, protocol: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;

    // SAFETY: socket(2) takes plain integers and touches no memory of ours.
    let fd = unsafe { libc::socket(domain, ty, protocol) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) just returned `fd`, a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
