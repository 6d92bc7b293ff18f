//! `bad-pointers`: `connect`, `sendto`, `sendmsg` and `sendmmsg` with addresses the kernel
//! refuses to read, then one ordinary `connect` to show the calls are still served.
//!
//! Prints `NAME errno=ERRNO` or `NAME ret=N` for each call; the test compares the results
//! with what the kernel itself answers (connect(2), sendmsg(2): `EFAULT` for an unreadable
//! address, `EINVAL` for a length above `sizeof(struct sockaddr_storage)` or negative;
//! `sendmsg` truncates an oversized `msg_namelen` instead, and sends).

use std::mem::{size_of, zeroed};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::ptr;

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::Result;

const SOCKADDR_IN_LEN: libc::socklen_t = size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// Larger than any socket address the kernel accepts.
const HUGE_LEN: libc::socklen_t = 100_000;

/// An address that is never mapped in a user process (the first page is reserved).
const BAD_POINTER: *const libc::sockaddr = ptr::dangling();

pub fn run() -> Result<()> {
    // A listener of our own in whatever stack we are in, for the final ordinary connect.
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let valid = loopback(port);
    let valid_ptr = (&valid as *const libc::sockaddr_in).cast::<libc::sockaddr>();

    let tcp = new_socket(SockType::Stream)?;
    let tcp = tcp.as_raw_fd();
    // SAFETY: the kernel checks the pointer itself; an unreadable one fails the call with
    // EFAULT without touching our memory. The same holds for every bad call below.
    let ret = unsafe { libc::connect(tcp, BAD_POINTER, SOCKADDR_IN_LEN) };
    report("connect-bad-pointer", ret as isize);
    // SAFETY: a valid address with an impossible length: the call fails with EINVAL.
    let ret = unsafe { libc::connect(tcp, valid_ptr, HUGE_LEN) };
    report("connect-huge-len", ret as isize);
    // SAFETY: as above; a negative length is huge as socklen_t.
    let ret = unsafe { libc::connect(tcp, valid_ptr, -1i32 as libc::socklen_t) };
    report("connect-negative-len", ret as isize);

    let udp = new_socket(SockType::Datagram)?;
    let udp = udp.as_raw_fd();
    let payload = b"bad-pointers";
    // SAFETY: the payload is a live buffer of the given length; the address pointer is
    // validated by the kernel, which fails the call with EFAULT.
    report("sendto-bad-pointer", unsafe {
        libc::sendto(
            udp,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            BAD_POINTER,
            16,
        )
    });
    // SAFETY: as above, with a valid address and an impossible length.
    report("sendto-huge-len", unsafe {
        libc::sendto(
            udp,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            valid_ptr,
            HUGE_LEN,
        )
    });

    let hole = unmapped_page()?;
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let unmapped = message(&mut iov, hole, SOCKADDR_IN_LEN);
    // SAFETY: the header and the iovec it points to are live; msg_name is unmapped on
    // purpose and only ever read by the kernel.
    report("sendmsg-unmapped-name", unsafe {
        libc::sendmsg(udp, &unmapped, 0)
    });
    let huge = message(&mut iov, valid_ptr.cast_mut().cast(), HUGE_LEN);
    // SAFETY: as above; the name is valid but its length is impossible.
    report("sendmsg-huge-namelen", unsafe {
        libc::sendmsg(udp, &huge, 0)
    });

    let negative = message(
        &mut iov,
        valid_ptr.cast_mut().cast(),
        -1i32 as libc::socklen_t,
    );
    // SAFETY: as above; a negative length (msg_namelen is an int in the kernel).
    let ret = unsafe { libc::sendmsg(udp, &negative, 0) };
    report("sendmsg-negative-namelen", ret);

    // Natively the first datagram is sent and the call reports 1 (sendmmsg(2)).
    let good = message(&mut iov, valid_ptr.cast_mut().cast(), SOCKADDR_IN_LEN);
    let mut batch = [
        libc::mmsghdr {
            msg_hdr: good,
            msg_len: 0,
        },
        libc::mmsghdr {
            msg_hdr: unmapped,
            msg_len: 0,
        },
    ];
    // SAFETY: two live headers; the second one's name is unmapped on purpose.
    report(
        "sendmmsg-second-bad",
        unsafe { libc::sendmmsg(udp, batch.as_mut_ptr(), 2, 0) } as isize,
    );

    // SAFETY: a valid sockaddr_in of the right length.
    report(
        "connect-after",
        unsafe { libc::connect(tcp, valid_ptr, SOCKADDR_IN_LEN) } as isize,
    );
    match listener.accept() {
        Ok((_, peer)) => println!("accepted peer={peer}"),
        Err(e) => println!("accept error={e}"),
    }
    Ok(())
}

fn report(name: &str, ret: isize) {
    if ret < 0 {
        println!("{name} errno={:?}", Errno::last());
    } else {
        println!("{name} ret={ret}");
    }
}

fn new_socket(ty: SockType) -> Result<std::os::fd::OwnedFd> {
    socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("socket({ty:?}): {e}"))
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn message(
    iov: &mut libc::iovec,
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = name;
    msg.msg_namelen = namelen;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg
}

/// The address of a page that was mapped and then unmapped: nothing lives there.
fn unmapped_page() -> Result<*mut libc::c_void> {
    // SAFETY: a fresh anonymous mapping that aliases nothing; unmapping it right away leaves
    // only its address, which is never dereferenced by us.
    unsafe {
        let page = libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if page == libc::MAP_FAILED {
            return Err(format!("mmap: {}", Errno::last()));
        }
        if libc::munmap(page, 4096) != 0 {
            return Err(format!("munmap: {}", Errno::last()));
        }
        Ok(page)
    }
}
