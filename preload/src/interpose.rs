//! The libc entry points the library replaces.
//!
//! Each one runs its body inside [`entry`], which sets `errno` the way libc does (the error
//! on failure, the caller's value untouched on success) and turns a panic into a message and
//! `abort()`, since unwinding into C is undefined behaviour.
//!
//! While the library itself is at work (talking to the server, which calls `socket`,
//! `connect` and `sendmsg` through these very symbols), a thread-local flag sends every
//! nested call straight to the kernel's route without any check or redirection.

use std::cell::Cell;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use libc::{c_int, c_uint, c_void, mmsghdr, msghdr, sockaddr, socklen_t, ssize_t};
use policy::Operation;
use rumpclient::CallError;

use crate::check::{self, AddrCopy};
use crate::config::{self, Config};
use crate::sys::{self, Errno};
use crate::{pool, session};

/// `UIO_MAXIOV`: the most messages one sendmmsg(2) sends.
const MAX_MMSG: c_uint = 1024;

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread as inside the library until dropped.
struct Busy;

impl Busy {
    /// `None` when the thread already is: the call is the library's own.
    fn enter() -> Option<Busy> {
        BUSY.with(|busy| (!busy.replace(true)).then_some(Busy))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|busy| busy.set(false));
    }
}

/// Runs the body of the libc function `name`: `Ok(v)` returns `v` with `errno` as the caller
/// left it, `Err(e)` returns `failure` with `errno` set to `e`.
fn entry<T>(name: &str, failure: T, body: impl FnOnce() -> Result<T, Errno>) -> T {
    let saved = sys::errno();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => {
            sys::set_errno(saved);
            value
        }
        Ok(Err(errno)) => {
            sys::set_errno(errno);
            failure
        }
        Err(_) => {
            sys::write_stderr(&format!(
                "librumphijack: internal error (panic) in {name}(); aborting\n"
            ));
            std::process::abort()
        }
    }
}

/// The configuration and, when the call is the program's own, a [`Busy`] mark; `None` for
/// the mark when checks must be skipped.
fn begin() -> (&'static Config, Option<Busy>) {
    let config = config::get();
    (config, Busy::enter())
}

fn checks_apply(config: &Config, busy: &Option<Busy>) -> bool {
    busy.is_some() && config.policy.is_some()
}

/// socket(2): created by the stack server when the family is redirected.
///
/// # Safety
/// Called by C code as libc's `socket`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    entry("socket", -1, || {
        let (config, busy) = begin();
        if config.server.is_none() {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                config::debug(config, || {
                    "RUMP_SERVER is not set: sockets are created in the host's stack".into()
                })
            });
        }
        let (Some(_busy), Some(url)) = (busy, config.server.as_ref()) else {
            return sys::socket(domain, ty, protocol);
        };
        if !config.redirects(domain) {
            return sys::socket(domain, ty, protocol);
        }

        let asked_cloexec = ty & libc::SOCK_CLOEXEC != 0;
        let result = match pool::socket(config, url, domain, ty, protocol) {
            Some(pooled) => pooled,
            None => session::create_socket(config, url, domain, ty & !libc::SOCK_CLOEXEC, protocol)
                .and_then(|fd| {
                    // The received descriptor is close-on-exec (MSG_CMSG_CLOEXEC); keep that
                    // only if the program asked for it.
                    if !asked_cloexec {
                        sys::set_cloexec(fd.as_raw_fd(), false).map_err(CallError::Errno)?;
                    }
                    Ok(fd.into_raw_fd())
                }),
        };
        match result {
            Ok(fd) => Ok(fd),
            Err(CallError::Errno(errno)) => Err(errno),
            Err(CallError::Die) => {
                sys::write_stderr(
                    "librumphijack: the stack server is gone and RUMPHIJACK_RETRYCONNECT=die; \
                     killing the program\n",
                );
                sys::kill_program()
            }
        }
    })
}

/// connect(2), checked against the policy.
///
/// # Safety
/// Called by C code as libc's `connect`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    entry("connect", -1, || {
        let (config, busy) = begin();
        if !checks_apply(config, &busy) {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::connect(config.route, fd, addr, len) };
        }
        // SAFETY: connect(2) requires `len` readable bytes at `addr`.
        let Some(copy) = (unsafe { AddrCopy::from_program(addr, len)? }) else {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::connect(config.route, fd, addr, len) };
        };
        check::decide_copy(config, Operation::Connect, fd, Some(&copy))?;
        // SAFETY: `copy` holds `copy.len()` bytes.
        unsafe { sys::connect(config.route, fd, copy.as_ptr(), copy.len()) }
    })
}

/// bind(2), checked against the policy.
///
/// # Safety
/// Called by C code as libc's `bind`.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    entry("bind", -1, || {
        let (config, busy) = begin();
        if !checks_apply(config, &busy) {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::bind(config.route, fd, addr, len) };
        }
        // SAFETY: bind(2) requires `len` readable bytes at `addr`.
        let Some(copy) = (unsafe { AddrCopy::from_program(addr, len)? }) else {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::bind(config.route, fd, addr, len) };
        };
        check::decide_copy(config, Operation::Bind, fd, Some(&copy))?;
        // SAFETY: `copy` holds `copy.len()` bytes.
        unsafe { sys::bind(config.route, fd, copy.as_ptr(), copy.len()) }
    })
}

/// listen(2), checked against the policy on the socket's local address.
///
/// # Safety
/// Called by C code as libc's `listen`.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    entry("listen", -1, || {
        let (config, busy) = begin();
        if checks_apply(config, &busy) {
            // A descriptor without a local address gets the kernel's own error below.
            if let Ok(local) = sys::getsockname(fd) {
                check::decide(config, Operation::Listen, fd, &local)?;
            }
        }
        sys::listen(config.route, fd, backlog)
    })
}

/// accept(2) and accept4(2): a connection from a peer the policy denies is closed and the
/// call waits for the next one (or, on a non-blocking socket, reports `EAGAIN` once none is
/// pending), as if the denied peer had never connected.
///
/// # Safety
/// `addr` and `len` as accept(2) requires.
unsafe fn accept_checked(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: Option<c_int>,
) -> Result<c_int, Errno> {
    let (config, busy) = begin();
    if !checks_apply(config, &busy) {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { sys::accept4(config.route, fd, addr, len, flags) };
    }

    // The kernel's checks on the program's length (move_addr_to_user in net/socket.c).
    let room = if addr.is_null() {
        None
    } else if len.is_null() {
        return Err(libc::EFAULT);
    } else {
        // SAFETY: accept(2) requires `len` to be readable when `addr` is not null.
        let room = unsafe { len.read() } as c_int;
        if room < 0 {
            return Err(libc::EINVAL);
        }
        Some(room as usize)
    };

    loop {
        // SAFETY: sockaddr_storage is plain data.
        let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut peer_len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        let peer_ptr = (&mut peer as *mut libc::sockaddr_storage).cast::<sockaddr>();
        // SAFETY: `peer` and `peer_len` are ours and sized as the kernel expects.
        let conn = unsafe { sys::accept4(config.route, fd, peer_ptr, &mut peer_len, flags)? };
        let stored = (peer_len as usize).min(std::mem::size_of_val(&peer));
        // SAFETY: the kernel wrote `stored` bytes of `peer`.
        let raw = unsafe { std::slice::from_raw_parts(peer_ptr.cast::<u8>(), stored) };
        if check::decide(config, Operation::Accept, conn, raw).is_err() {
            sys::close(conn);
            continue;
        }
        if let Some(room) = room {
            // SAFETY: accept(2) lets the kernel write up to `*len` bytes at `addr` and the
            // full length at `len`; we write no more than that.
            unsafe {
                std::ptr::copy_nonoverlapping(raw.as_ptr(), addr.cast::<u8>(), stored.min(room));
                len.write(peer_len);
            }
        }
        return Ok(conn);
    }
}

/// accept(2).
///
/// # Safety
/// Called by C code as libc's `accept`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the program's arguments, as accept(2) requires them.
    entry("accept", -1, || unsafe {
        accept_checked(fd, addr, len, None)
    })
}

/// accept4(2).
///
/// # Safety
/// Called by C code as libc's `accept4`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the program's arguments, as accept4(2) requires them.
    entry("accept4", -1, || unsafe {
        accept_checked(fd, addr, len, Some(flags))
    })
}

/// send(2): never checked (no address); replaced only so that in hybrid mode it takes the
/// cookie route instead of a trapped sendto(2).
///
/// # Safety
/// Called by C code as libc's `send`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> ssize_t {
    entry("send", -1, || {
        let config = config::get();
        // SAFETY: the program's arguments, passed on unchanged.
        unsafe { sys::send(config.route, fd, buf, len, flags) }
    })
}

/// sendto(2), checked when it carries an address.
///
/// # Safety
/// Called by C code as libc's `sendto`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const sockaddr,
    addr_len: socklen_t,
) -> ssize_t {
    entry("sendto", -1, || {
        let (config, busy) = begin();
        if !checks_apply(config, &busy) || addr.is_null() {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::sendto(config.route, fd, buf, len, flags, addr, addr_len) };
        }
        // SAFETY: sendto(2) requires `addr_len` readable bytes at a non-null `addr`.
        let copy = unsafe { AddrCopy::from_program(addr, addr_len)? };
        check::decide_copy(config, send_operation(flags), fd, copy.as_ref())?;
        let (name, name_len) = copy
            .as_ref()
            .map_or((addr, addr_len), |c| (c.as_ptr(), c.len()));
        // SAFETY: the program's buffer, and an address we hold.
        unsafe { sys::sendto(config.route, fd, buf, len, flags, name, name_len) }
    })
}

/// The program's message with its destination copied and checked; `Ok(None)` when it has
/// none.
///
/// # Safety
/// `msg` must point to a readable `msghdr` whose `msg_name` is valid for `msg_namelen`.
unsafe fn checked_name(
    config: &Config,
    fd: c_int,
    msg: *const msghdr,
    flags: c_int,
) -> Result<Option<AddrCopy>, Errno> {
    if msg.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the caller's obligation.
    let (name, name_len) = unsafe { ((*msg).msg_name, (*msg).msg_namelen) };
    if name.is_null() || name_len == 0 {
        return Ok(None);
    }
    // SAFETY: the caller's obligation.
    let copy = unsafe { AddrCopy::from_program(name.cast(), name_len)? };
    check::decide_copy(config, send_operation(flags), fd, copy.as_ref())?;
    Ok(copy)
}

/// What a send with a destination does: with `MSG_FASTOPEN` it opens a TCP connection (TCP
/// Fast Open, tcp(7)), which the `connect` rules decide; otherwise it sends a datagram.
fn send_operation(flags: c_int) -> Operation {
    if flags & libc::MSG_FASTOPEN != 0 {
        Operation::Connect
    } else {
        Operation::Send
    }
}

/// sendmsg(2), checked when the message carries an address.
///
/// # Safety
/// Called by C code as libc's `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    entry("sendmsg", -1, || {
        let (config, busy) = begin();
        if !checks_apply(config, &busy) {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::sendmsg(config.route, fd, msg, flags) };
        }
        // SAFETY: sendmsg(2) requires a valid `msg`.
        let Some(name) = (unsafe { checked_name(config, fd, msg, flags)? }) else {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::sendmsg(config.route, fd, msg, flags) };
        };
        // SAFETY: `msg` is valid (above); the copy differs only in pointing at our address.
        let mut ours = unsafe { msg.read() };
        ours.msg_name = name.as_ptr().cast_mut().cast();
        ours.msg_namelen = name.len();
        // SAFETY: `ours` points at the program's buffers and at `name`, both alive.
        unsafe { sys::sendmsg(config.route, fd, &ours, flags) }
    })
}

/// sendmmsg(2), each message with an address checked. As the kernel does when a message
/// fails, a denied message ends the batch: the messages before it are sent and counted, and
/// the call fails with the rule's errno only when the first one is denied.
///
/// # Safety
/// Called by C code as libc's `sendmmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    entry("sendmmsg", -1, || {
        let (config, busy) = begin();
        if !checks_apply(config, &busy) || vec.is_null() {
            // SAFETY: the program's arguments, passed on unchanged.
            return unsafe { sys::sendmmsg(config.route, fd, vec, vlen, flags) };
        }

        // Copy the headers and destinations, stopping at the first denied message.
        let count = vlen.min(MAX_MMSG) as usize;
        let mut headers: Vec<mmsghdr> = Vec::with_capacity(count);
        let mut names: Vec<Option<AddrCopy>> = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: sendmmsg(2) requires `vlen` readable headers at `vec`.
            let header = unsafe { vec.add(i).read() };
            // SAFETY: as above, for the message inside.
            match unsafe { checked_name(config, fd, &header.msg_hdr, flags) } {
                Ok(name) => {
                    headers.push(header);
                    names.push(name);
                }
                Err(errno) if i == 0 => return Err(errno),
                Err(_) => break,
            }
        }
        for (header, name) in headers.iter_mut().zip(&names) {
            if let Some(name) = name {
                header.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
                header.msg_hdr.msg_namelen = name.len();
            }
        }

        let n = headers.len() as c_uint;
        // SAFETY: `headers` holds `n` headers pointing at the program's buffers and our names.
        let sent = unsafe { sys::sendmmsg(config.route, fd, headers.as_mut_ptr(), n, flags)? };
        for (i, header) in headers.iter().take(sent as usize).enumerate() {
            // SAFETY: sendmmsg(2) lets the kernel write `msg_len` of each header it sent.
            unsafe { (*vec.add(i)).msg_len = header.msg_len };
        }
        Ok(sent)
    })
}
