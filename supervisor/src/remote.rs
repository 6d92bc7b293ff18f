//! Calls on relayed sockets (`RUMP_SERVER=tcp://…`).
//!
//! With a remote stack the filter traps [`crate::filter::RELAYED_CALLS`] on every
//! descriptor, and `sendto`/`recvfrom` when they carry an address. Each trapped call first
//! finds out whether its descriptor is the program's end of a relayed socket (by the open
//! file's inode, through a `pidfd_getfd` duplicate):
//!
//! * a relayed socket: the call is answered from the remote stack through
//!   [`relay::Relayed`], after the policy's check where the policy has one;
//! * any other descriptor: the policy's race-free checks ([`crate::mediate`]) when the policy
//!   decides about the call, else the kernel runs it as made
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`: nothing is decided, so nothing can be raced).
//!
//! Reads and writes, `poll`, `shutdown` and `close` on a relayed socket are never trapped:
//! they act on the program's end, and the relay carries their effect.
//!
//! ## Limitations
//!
//! * `sendmsg`/`recvmsg` on a relayed datagram socket neither carry nor report addresses:
//!   use `sendto`/`recvfrom`, or `connect` the socket.
//! * Options are passed to the remote socket as bytes of at most 256; options that carry
//!   pointers (socket filters) are refused with `ENOPROTOOPT`.
//! * A datagram sent with `sendto` is checked here as udp_sendmsg would check it
//!   ([`relay::udp`]), then relayed without an answer: what fails only on the server drops
//!   the datagram instead of failing the call.
//! * `recvfrom` and `accept` read the address length before they wait, where the kernel
//!   reads it after receiving: a bad length fails at once and consumes nothing.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use policy::{Action, Operation, Protocol, Query};
use relay::{Relay, Relayed};

use crate::mediate::{self, Call};
use crate::notify::Service;
use crate::sys::{self, sock};

/// Largest datagram read for one `sendto`.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Largest option value passed on.
const MAX_OPTION: usize = 256;

/// Serves a call trapped because sockets are relayed.
pub fn serve(svc: &Arc<Service>, relay: &Relay, notif: sys::Notif) {
    let mut call = Call::new(svc, notif);
    let nr = i64::from(notif.data.nr);
    let fd = call.int_arg(0);
    let found = call
        .socket(fd)
        .ok()
        .and_then(|own| relay.find(own.as_fd()).map(|sock| (own, sock)));
    let Some((own, sock)) = found else {
        return not_relayed(call, nr);
    };
    match nr {
        libc::SYS_connect => connect(call, &sock, &own),
        libc::SYS_bind => bind(call, &sock),
        libc::SYS_listen => listen(call, &sock),
        libc::SYS_accept => accept(call, sock, own, false),
        libc::SYS_accept4 => accept(call, sock, own, true),
        libc::SYS_getsockname => name(call, &sock, false),
        libc::SYS_getpeername => name(call, &sock, true),
        libc::SYS_getsockopt => getsockopt(call, sock),
        libc::SYS_setsockopt => setsockopt(call, &sock, &own),
        libc::SYS_sendto => sendto(call, &sock, own),
        libc::SYS_recvfrom => recvfrom(call, sock, own),
        _ => call.respond(Err(libc::ENOSYS)),
    }
}

/// A call on a descriptor that is not relayed.
fn not_relayed(call: Call<'_>, nr: i64) {
    let traps = |op| call.service().policy().traps(op);
    match nr {
        libc::SYS_connect if traps(Operation::Connect) => mediate::connect(call),
        libc::SYS_bind if traps(Operation::Bind) => mediate::bind(call),
        libc::SYS_listen if traps(Operation::Listen) => mediate::listen(call),
        libc::SYS_accept if traps(Operation::Accept) => mediate::accept(call, false),
        libc::SYS_accept4 if traps(Operation::Accept) => mediate::accept(call, true),
        libc::SYS_sendto if traps(Operation::Send) => mediate::sendto(call),
        _ => call.proceed(),
    }
}

/// The policy's verdict for `op` on a relayed socket; `Ok` to go ahead.
fn check(call: &Call<'_>, sock: &Relayed, op: Operation, addr: &[u8]) -> Result<(), i32> {
    let Some(addr) = mediate::parse_inet(addr) else {
        return Ok(());
    };
    let svc = call.service();
    if !svc.policy().traps(op) {
        return Ok(());
    }
    let query = Query {
        op,
        protocol: if sock.is_stream() {
            Protocol::Tcp
        } else {
            Protocol::Udp
        },
        addr,
    };
    let decision = svc.policy().decide(&query);
    svc.audit().record(call.tid(), &query, &decision);
    match decision.action {
        Action::Allow => Ok(()),
        Action::Deny { errno } => Err(errno),
    }
}

/// Reads the `socklen_t` at `ptr` (a value-result length), refusing negative values.
fn read_len(call: &Call<'_>, ptr: u64) -> Result<usize, i32> {
    let raw = call.read(ptr, 4)?;
    let len = i32::from_ne_bytes(raw.try_into().expect("4 bytes"));
    usize::try_from(len).map_err(|_| libc::EINVAL)
}

/// Writes a value-result buffer: as much of `value` as fits `room`, then its full length.
fn write_result(
    call: &Call<'_>,
    ptr: u64,
    len_ptr: u64,
    room: usize,
    value: &[u8],
) -> Result<(), i32> {
    let n = value.len().min(room);
    sys::write_memory(call.tid(), ptr, &value[..n]).map_err(|_| libc::EFAULT)?;
    sys::write_memory(call.tid(), len_ptr, &(value.len() as u32).to_ne_bytes())
        .map_err(|_| libc::EFAULT)
}

fn connect(call: Call<'_>, sock: &Relayed, own: &OwnedFd) {
    let prepared = (|| {
        let addr = call.read_sockaddr(call.arg(1), call.arg(2))?;
        call.still_pending()?;
        check(&call, sock, Operation::Connect, &addr)?;
        Ok(addr)
    })();
    let addr = match prepared {
        Ok(addr) => addr,
        Err(e) => return call.respond(Err(e)),
    };
    if sock::is_nonblocking(own.as_fd()) {
        return call.respond(sock.connect(&addr, true).map(|()| 0));
    }
    let sock = sock.clone();
    call.perform(true, move || sock.connect(&addr, false).map(|()| 0));
}

fn bind(call: Call<'_>, sock: &Relayed) {
    let result = (|| {
        let addr = call.read_sockaddr(call.arg(1), call.arg(2))?;
        call.still_pending()?;
        check(&call, sock, Operation::Bind, &addr)?;
        sock.bind(&addr).map(|()| 0)
    })();
    call.respond(result);
}

fn listen(call: Call<'_>, sock: &Relayed) {
    let result = (|| {
        if call.service().policy().traps(Operation::Listen) {
            let local = sock.name(false)?;
            check(&call, sock, Operation::Listen, &local)?;
        }
        sock.listen(call.int_arg(1)).map(|()| 0)
    })();
    call.respond(result);
}

fn name(call: Call<'_>, sock: &Relayed, peer: bool) {
    let result = (|| {
        let (ptr, len_ptr) = (call.arg(1), call.arg(2));
        // The kernel asks the protocol first and reads the length after (getpeername(2) on
        // a socket that has no peer is ENOTCONN whatever the pointers).
        let addr = sock.name(peer)?;
        let room = read_len(&call, len_ptr)?;
        call.still_pending()?;
        write_result(&call, ptr, len_ptr, room, &addr).map(|()| 0)
    })();
    call.respond(result);
}

fn getsockopt(call: Call<'_>, sock: Relayed) {
    let (level, name) = (call.int_arg(1), call.int_arg(2));
    let (ptr, len_ptr) = (call.arg(3), call.arg(4));
    let room = match read_len(&call, len_ptr) {
        Ok(room) => room,
        Err(e) => return call.respond(Err(e)),
    };
    if level == libc::SOL_SOCKET && name == libc::SO_ERROR {
        // Waits for a connect in progress: poll(2) reports the program's end writable at
        // once, so this is where a non-blocking connect's outcome is learnt.
        let tid = call.tid();
        let svc = call.service().clone();
        let notif = *call.notif();
        svc.before_blocking();
        let result = svc.watcher().run(tid, notif.id, || sock.take_error());
        let result = result.and_then(|errno| {
            write_result(&call, ptr, len_ptr, room, &errno.to_ne_bytes()).map(|()| 0)
        });
        return call.respond(result);
    }
    let result = sock
        .getsockopt(level, name, room.min(MAX_OPTION) as u32)
        .and_then(|value| write_result(&call, ptr, len_ptr, room, &value).map(|()| 0));
    call.respond(result);
}

/// Options that govern the program's end itself (its timeouts and wake-up thresholds): set
/// there as well as on the remote socket.
fn is_local_option(level: i32, name: i32) -> bool {
    level == libc::SOL_SOCKET
        && matches!(
            name,
            libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_RCVTIMEO_NEW
                | libc::SO_SNDTIMEO_NEW
                | libc::SO_RCVLOWAT
        )
}

fn setsockopt(call: Call<'_>, sock: &Relayed, own: &OwnedFd) {
    let (level, name) = (call.int_arg(1), call.int_arg(2));
    let result = (|| {
        if level == libc::SOL_SOCKET
            && matches!(
                name,
                libc::SO_ATTACH_FILTER | libc::SO_ATTACH_BPF | libc::SO_ATTACH_REUSEPORT_CBPF
            )
        {
            return Err(libc::ENOPROTOOPT);
        }
        // The kernel reads only as much of the value as the option takes (an int option
        // succeeds with optlen 1 << 30), so a long optlen is cut rather than refused, and
        // the value is read only as far as it is readable.
        let len = usize::try_from(call.int_arg(4)).map_err(|_| libc::EINVAL)?;
        let wanted = len.min(MAX_OPTION);
        let value = call.read_prefix(call.arg(3), wanted)?;
        let cut = value.len() < wanted;
        let set = (|| {
            if is_local_option(level, name) {
                relay::sys::setsockopt(own.as_fd(), level, name, &value)?;
            }
            sock.setsockopt(level, name, &value)
        })();
        match set {
            // Too short for the option because the rest could not be read: where the
            // kernel reads it, that is a fault.
            Err(libc::EINVAL) if cut => Err(libc::EFAULT),
            other => other.map(|()| 0),
        }
    })();
    call.respond(result);
}

fn sendto(call: Call<'_>, sock: &Relayed, own: OwnedFd) {
    let flags = call.int_arg(3);
    if sock.is_stream() {
        // A stream ignores the address, as TCP does: the data goes to the program's end.
        let data = match call.read(call.arg(1), (call.arg(2) as usize).min(mediate::MAX_SEND)) {
            Ok(data) => data,
            Err(e) => return call.respond(Err(e)),
        };
        let may_block = flags & libc::MSG_DONTWAIT == 0 && !sock::is_nonblocking(own.as_fd());
        let flags = flags & (libc::MSG_DONTWAIT | libc::MSG_MORE);
        return call.perform(may_block, move || {
            // SAFETY: `data` holds `data.len()` readable bytes.
            let n = unsafe {
                libc::send(
                    std::os::fd::AsRawFd::as_raw_fd(&own),
                    data.as_ptr().cast(),
                    data.len(),
                    flags | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO))
            } else {
                Ok(n as i64)
            }
        });
    }
    let result = (|| {
        // The kernel's order (__sys_sendto, then udp_sendmsg): the address, then the
        // datagram's size, and only then the data.
        let addr = call.read_sockaddr(call.arg(4), call.arg(5))?;
        let len = call.arg(2) as usize;
        sock.check_datagram(&addr, len)?;
        if len > MAX_DATAGRAM {
            return Err(libc::EMSGSIZE);
        }
        let data = call.read(call.arg(1), len)?;
        call.still_pending()?;
        check(&call, sock, Operation::Send, &addr)?;
        sock.send_to(&addr, &data).map(|n| n as i64)
    })();
    call.respond(result);
}

fn recvfrom(call: Call<'_>, sock: Relayed, own: OwnedFd) {
    if sock.is_stream() {
        // A stream reports no sender, relayed or not.
        return call.proceed();
    }
    let (buf, len, flags) = (call.arg(1), call.arg(2) as usize, call.int_arg(3));
    let (addr_ptr, len_ptr) = (call.arg(4), call.arg(5));
    let room = match read_len(&call, len_ptr) {
        Ok(room) => room,
        Err(e) => return call.respond(Err(e)),
    };
    let nonblocking = sock::is_nonblocking(own.as_fd());
    let svc = call.service().clone();
    let notif = *call.notif();
    let received = if nonblocking || flags & libc::MSG_DONTWAIT != 0 {
        sock.recv_from(own.as_fd(), len, flags, true)
    } else {
        svc.before_blocking();
        svc.watcher().run(call.tid(), notif.id, || {
            sock.recv_from(own.as_fd(), len, flags, false)
        })
    };
    let result = received.and_then(|(data, full, sender)| {
        if !sys::notif_id_valid(svc.listener(), notif.id) {
            return Err(libc::ENOENT);
        }
        sys::write_memory(call.tid(), buf, &data).map_err(|_| libc::EFAULT)?;
        write_result(&call, addr_ptr, len_ptr, room, &sender)?;
        Ok(if flags & libc::MSG_TRUNC != 0 {
            full
        } else {
            data.len()
        } as i64)
    });
    call.respond(result);
}

fn accept(call: Call<'_>, sock: Relayed, own: OwnedFd, with_flags: bool) {
    let flags = if with_flags { call.int_arg(3) } else { 0 };
    let (addr_ptr, len_ptr) = (call.arg(1), call.arg(2));
    let prepared = (|| {
        if flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 {
            return Err(libc::EINVAL);
        }
        if addr_ptr != 0 {
            read_len(&call, len_ptr).map(Some)
        } else {
            Ok(None)
        }
    })();
    let room = match prepared {
        Ok(room) => room,
        Err(e) => return call.respond(Err(e)),
    };

    let svc = call.service().clone();
    let notif = *call.notif();
    let tid = call.tid();
    let nonblocking = sock::is_nonblocking(own.as_fd());
    let op = || loop {
        let (conn, peer) = sock.accept(own.as_fd(), nonblocking)?;
        if check(&call, &sock, Operation::Accept, &peer).is_ok() {
            return Ok((conn, peer));
        }
        // A denied peer's connection is closed, as if it had never arrived.
        drop(conn);
    };
    let accepted = if nonblocking {
        op()
    } else {
        svc.before_blocking();
        svc.watcher().run(tid, notif.id, op)
    };
    let (conn, peer) = match accepted {
        Ok(a) => a,
        Err(e) => return call.respond(Err(e)),
    };
    if !sys::notif_id_valid(svc.listener(), notif.id) {
        return;
    }
    if let Some(room) = room {
        if let Err(e) = write_result(&call, addr_ptr, len_ptr, room, &peer) {
            return call.respond(Err(e));
        }
    }
    if flags & libc::SOCK_NONBLOCK != 0 {
        if let Err(e) = relay::sys::set_nonblocking(conn.as_fd(), true) {
            return call.respond(Err(e));
        }
    }
    svc.install(&notif, conn, flags & libc::SOCK_CLOEXEC != 0);
}
