//! The raw system calls the loops time, each behind a safe wrapper named after the call.
//!
//! The loops call libc directly (not `std::net`) so that one iteration is exactly the calls
//! the scenario names, with no extra `setsockopt` or `fcntl` that std adds.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{FromRawFd, OwnedFd};

/// socket(2) with `SOCK_CLOEXEC`.
pub fn socket(domain: i32, kind: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers and touches no memory of ours.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), so it is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// getppid(2): a system call no rumphijack filter traps.
pub fn getppid() -> i32 {
    // SAFETY: getppid(2) has no arguments and cannot fail.
    unsafe { libc::getppid() }
}

/// connect(2) of a TCP/IPv4 socket.
pub fn connect(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sin = sockaddr_in(addr);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is a valid `sockaddr_in` that outlives the call, and `len` is its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(sin).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// listen(2) again on a listening socket, to raise its backlog: std uses 128, which a
/// connect loop on another CPU overruns, and an overrun costs a one-second SYN retransmit.
pub fn raise_backlog(listener: &std::net::TcpListener, backlog: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) takes an open descriptor, which `listener` keeps alive, and an int.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
