//! The socket calls the relay makes, as small wrappers returning `Result<_, errno>`.
//!
//! Addresses and option values travel as raw bytes, exactly as the program passed them, so
//! these wrappers take and return byte buffers rather than typed addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::frame::{MAX_OPTION, MAX_SOCKADDR};

/// An errno value.
pub type Errno = i32;

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(rc: libc::c_int) -> Result<libc::c_int, Errno> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

fn check_size(rc: isize) -> Result<usize, Errno> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc as usize)
    }
}

/// socket(2), non-blocking and close-on-exec whatever `ty` says.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, Errno> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes plain integers.
    let fd = check(unsafe { libc::socket(domain, ty | flags, protocol) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// socketpair(2) in `AF_UNIX`, close-on-exec.
pub fn socketpair(ty: i32) -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe {
        libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    })?;
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    // SAFETY: fcntl(2) on a descriptor we borrow.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}

/// Whether the open file has `O_NONBLOCK`.
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fcntl(2) on a descriptor we borrow.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// connect(2) with a raw address.
pub fn connect(fd: BorrowedFd<'_>, addr: &[u8]) -> Result<(), Errno> {
    // SAFETY: `addr` holds `addr.len()` readable bytes.
    check(unsafe { libc::connect(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) })
        .map(drop)
}

/// bind(2) with a raw address.
pub fn bind(fd: BorrowedFd<'_>, addr: &[u8]) -> Result<(), Errno> {
    // SAFETY: `addr` holds `addr.len()` readable bytes.
    check(unsafe { libc::bind(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) }).map(drop)
}

/// listen(2).
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> Result<(), Errno> {
    // SAFETY: listen(2) takes plain integers.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// accept4(2), non-blocking and close-on-exec; the peer's address with it.
pub fn accept(fd: BorrowedFd<'_>) -> Result<(OwnedFd, Vec<u8>), Errno> {
    let mut addr = [0u8; MAX_SOCKADDR];
    let mut len = MAX_SOCKADDR as libc::socklen_t;
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `addr` has room for `len` bytes, which the kernel updates.
    let conn =
        check(unsafe { libc::accept4(fd.as_raw_fd(), addr.as_mut_ptr().cast(), &mut len, flags) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    Ok((conn, addr[..(len as usize).min(MAX_SOCKADDR)].to_vec()))
}

/// getsockname(2) (`peer` false) or getpeername(2).
pub fn name(fd: BorrowedFd<'_>, peer: bool) -> Result<Vec<u8>, Errno> {
    let mut addr = [0u8; MAX_SOCKADDR];
    let mut len = MAX_SOCKADDR as libc::socklen_t;
    let call = if peer {
        libc::getpeername
    } else {
        libc::getsockname
    };
    // SAFETY: `addr` has room for `len` bytes, which the kernel updates.
    check(unsafe { call(fd.as_raw_fd(), addr.as_mut_ptr().cast(), &mut len) })?;
    Ok(addr[..(len as usize).min(MAX_SOCKADDR)].to_vec())
}

/// getsockopt(2) with a buffer of `len` bytes (at most [`MAX_OPTION`]).
pub fn getsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, len: usize) -> Result<Vec<u8>, Errno> {
    let mut value = vec![0u8; len.min(MAX_OPTION)];
    let mut len = value.len() as libc::socklen_t;
    // SAFETY: `value` has room for `len` bytes, which the kernel updates.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    value.truncate(len as usize);
    Ok(value)
}

/// setsockopt(2).
pub fn setsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: `value` holds `value.len()` readable bytes.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// An int-valued socket option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32, Errno> {
    let raw = getsockopt(fd, level, name, 4)?;
    Ok(i32::from_ne_bytes(
        raw.try_into().map_err(|_| libc::EINVAL)?,
    ))
}

/// shutdown(2).
pub fn shutdown(fd: BorrowedFd<'_>, how: i32) -> Result<(), Errno> {
    // SAFETY: shutdown(2) takes plain integers.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), how) }).map(drop)
}

/// recv(2) into `buf`.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> Result<usize, Errno> {
    // SAFETY: `buf` has room for `buf.len()` bytes.
    check_size(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) })
}

/// recvfrom(2) into `buf`, with the sender's address.
pub fn recvfrom(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Vec<u8>), Errno> {
    let mut addr = [0u8; MAX_SOCKADDR];
    let mut len = MAX_SOCKADDR as libc::socklen_t;
    // SAFETY: `buf` and `addr` have room for the lengths given.
    let n = check_size(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC,
            addr.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    Ok((n, addr[..(len as usize).min(MAX_SOCKADDR)].to_vec()))
}

/// send(2) without `SIGPIPE`.
pub fn send(fd: BorrowedFd<'_>, data: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `data` holds `data.len()` readable bytes.
    check_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// sendto(2) without `SIGPIPE`.
pub fn sendto(fd: BorrowedFd<'_>, data: &[u8], addr: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `data` and `addr` hold the lengths given.
    check_size(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    })
}

/// The inode number of the file open at `fd`.
pub fn inode(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    // SAFETY: `st` is plain old data that fstat(2) fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_ino)
}

/// Keeps freed memory in the process: the relay frees and reallocates a frame buffer of up
/// to 128 KiB per frame on several threads, and glibc's defaults hand such memory back to
/// the kernel (`madvise`, `munmap`) only to fault it in again for the next frame, which cost
/// a quarter of the server's time. mallopt(3).
pub fn keep_heap() {
    // SAFETY: mallopt takes plain integers and only changes allocator thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Registers `fd` with the current tokio runtime.
pub fn register(fd: OwnedFd) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, Errno> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open while registered and is
    // deregistered before it closes (AsyncFd's drop does both, in that order).
    unsafe { tokio::io::unix::AsyncFd::register(fd) }
        .map_err(|e| std::io::Error::from(e).raw_os_error().unwrap_or(libc::EIO))
}

/// An IPv4 or IPv6 socket address from its raw bytes; `None` for other families or a short
/// buffer.
pub fn parse_inet(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(..2)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET if raw.len() >= 8 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let octets: [u8; 16] = raw[8..24].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_addresses_parse() {
        let v4 = [2u8, 0, 0x1f, 0x90, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_inet(&v4), Some("10.0.0.2:8080".parse().unwrap()));
        let mut v6 = vec![10u8, 0, 0, 80, 0, 0, 0, 0];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(parse_inet(&v6), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse_inet(&[1, 0, b'/', 0]), None);
        assert_eq!(parse_inet(&[2, 0, 0]), None);
    }
}
