//! Checked socket calls: `connect`, `bind`, `listen`, `accept`/`accept4`, and sends that
//! carry (or may carry) a destination address.
//!
//! Every checked call follows the same race-free sequence, and is never answered with
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (the kernel would read the program's memory a second
//! time, after another thread may have rewritten the address):
//!
//! 1. open a pidfd for the calling thread, then check the notification is still pending, so
//!    the pidfd cannot name a recycled thread id;
//! 2. duplicate the program's socket with `pidfd_getfd`;
//! 3. copy the arguments out of the program's memory (bounded lengths; `EFAULT` for bad
//!    pointers, `EINVAL` for impossible lengths, as the kernel answers), then check the
//!    notification again so the copy belongs to this call;
//! 4. decide on the copy;
//! 5. perform the call on the duplicate with the copied bytes and answer with its result.
//!
//! Calls on sockets that are not IPv4/IPv6 (an `AF_UNIX` socket, say) are not subject to the
//! policy but still go through steps 1–3 and 5, so they keep working. For a relative
//! `AF_UNIX` path, the supervisor thread first moves into the program's working directory.
//!
//! ## Limitations
//!
//! * Data sent through a trapped `sendto`/`sendmsg`/`sendmmsg` is copied, at most
//!   [`MAX_SEND`] bytes per message: a stream socket then sees a short send, a datagram larger
//!   than that fails with `EMSGSIZE`.
//! * `SCM_CREDENTIALS` in a trapped `sendmsg` is refused with `EPERM` (the supervisor would
//!   otherwise vouch for credentials it cannot check), and a receiver that asks for peer
//!   credentials (`SO_PASSCRED`) sees the supervisor's pid on trapped sends.
//! * An `AF_UNIX` socket file created by a trapped `bind` belongs to the supervisor's user,
//!   and a peer of a trapped `AF_UNIX` `connect` sees the supervisor's pid and uid in
//!   `SO_PEERCRED` (services that decide by peer credentials, such as D-Bus, see that).
//! * A trapped `bind` to a port below 1024 is allowed only when the program holds
//!   `CAP_NET_BIND_SERVICE` in its own namespace; `ip_unprivileged_port_start` and the
//!   stack's user namespace are not consulted, so some binds the kernel would allow are
//!   refused with `EACCES`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use policy::{Action, Operation, Protocol, Query};

use crate::notify::Service;
use crate::sys::{self, sock, Notif};

/// Largest `sockaddr` the kernel accepts (`sizeof(struct sockaddr_storage)`).
const MAX_SOCKADDR: u64 = 128;

/// Most data copied for one trapped send.
pub const MAX_SEND: usize = 256 * 1024;

/// `UIO_MAXIOV`: most iovecs (and sendmmsg messages) one call takes.
const MAX_IOV: u64 = 1024;

/// Most ancillary data copied for one message (the kernel's default `optmem_max` is 20 KiB).
const MAX_CONTROL: u64 = 64 * 1024;

/// A checked call in progress.
pub struct Call<'s> {
    svc: &'s Arc<Service>,
    notif: Notif,
    pidfd: Option<Arc<OwnedFd>>,
}

/// Most thread handles kept between calls; past this the cache starts afresh.
const MAX_CACHED_THREADS: usize = 4096;

/// Pidfds of program threads, kept between calls so a checked call need not open one (and
/// re-check the notification) every time.
///
/// Only handles on the thread itself (`PIDFD_THREAD`) are kept. Such a handle names exactly
/// the thread it was opened for: while that thread lives, no other thread has its id, so a
/// later notification from the same id is from the same thread; once it has exited,
/// `pidfd_getfd` through the handle fails with `ESRCH` and a fresh one is opened. A handle
/// on a whole process could, after the thread exited and its id was reused elsewhere, name
/// the wrong process, so those are never kept.
#[derive(Debug, Default)]
pub struct ThreadHandles {
    map: std::sync::Mutex<std::collections::HashMap<i32, Arc<OwnedFd>>>,
}

impl ThreadHandles {
    fn get(&self, tid: i32) -> Option<Arc<OwnedFd>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tid)
            .cloned()
    }

    fn keep(&self, tid: i32, fd: Arc<OwnedFd>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED_THREADS {
            map.clear();
        }
        map.insert(tid, fd);
    }

    fn forget(&self, tid: i32) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tid);
    }
}

type Errno32 = i32;

impl<'s> Call<'s> {
    pub fn new(svc: &'s Arc<Service>, notif: Notif) -> Self {
        Call {
            svc,
            notif,
            pidfd: None,
        }
    }

    /// The notification being served.
    pub(crate) fn notif(&self) -> &Notif {
        &self.notif
    }

    /// The service serving it.
    pub(crate) fn service(&self) -> &'s Arc<Service> {
        self.svc
    }

    /// Lets the kernel run the call as the program made it.
    pub(crate) fn proceed(&self) {
        match sys::notif_continue(self.svc.listener(), self.notif.id) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => tracing::warn!(pid = self.notif.pid, %errno, "continuing a call failed"),
        }
    }

    pub(crate) fn tid(&self) -> i32 {
        self.notif.pid as i32
    }

    pub(crate) fn arg(&self, i: usize) -> u64 {
        self.notif.data.args[i]
    }

    /// The argument as the C `int` the kernel takes.
    pub(crate) fn int_arg(&self, i: usize) -> i32 {
        self.arg(i) as u32 as i32
    }

    pub(crate) fn still_pending(&self) -> Result<(), Errno32> {
        if sys::notif_id_valid(self.svc.listener(), self.notif.id) {
            Ok(())
        } else {
            Err(libc::ENOENT)
        }
    }

    /// Steps 1 and 2: the program's descriptor `fd`, duplicated into the supervisor.
    pub(crate) fn socket(&mut self, fd: i32) -> Result<OwnedFd, Errno32> {
        let tid = self.tid();
        if self.pidfd.is_none() {
            if let Some(kept) = self.svc.threads().get(tid) {
                match sys::pidfd_getfd(kept.as_fd(), fd) {
                    // The thread that handle was for has exited: open a fresh one below.
                    Err(Errno::ESRCH) => self.svc.threads().forget(tid),
                    other => {
                        self.pidfd = Some(kept);
                        return other.map_err(getfd_errno);
                    }
                }
            }
            let (pidfd, per_thread) =
                sys::pidfd_open(tid, || tgid_of(tid)).map_err(|e| e as i32)?;
            // The id could have been reused before the open: only a pending notification
            // proves the handle names the caller.
            self.still_pending()?;
            let pidfd = Arc::new(pidfd);
            if per_thread {
                self.svc.threads().keep(tid, pidfd.clone());
            }
            self.pidfd = Some(pidfd);
        }
        let pidfd = self.pidfd.as_ref().expect("set above");
        sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(getfd_errno)
    }

    pub(crate) fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno32> {
        let mut buf = vec![0u8; len];
        sys::read_memory(self.tid(), addr, &mut buf).map_err(|e| match e {
            Errno::ESRCH => libc::ENOENT,
            _ => libc::EFAULT,
        })?;
        Ok(buf)
    }

    /// Up to `len` bytes at `addr`: as many as are readable before the first page that
    /// faults, `EFAULT` if none is. For a value the kernel reads only part of (an option
    /// whose length the program overstated), where a full read would fault and the
    /// kernel's own would not.
    pub(crate) fn read_prefix(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno32> {
        let mut buf = vec![0u8; len];
        let n = sys::read_memory_prefix(self.tid(), addr, &mut buf).map_err(|e| match e {
            Errno::ESRCH => libc::ENOENT,
            _ => libc::EFAULT,
        })?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Step 3 for a `(pointer, length)` socket address, with the kernel's checks
    /// (`move_addr_to_kernel`): a length outside 0..=128 is `EINVAL`.
    pub(crate) fn read_sockaddr(&self, ptr: u64, len: u64) -> Result<Vec<u8>, Errno32> {
        let len = len as u32 as i32;
        if !(0..=MAX_SOCKADDR as i32).contains(&len) {
            return Err(libc::EINVAL);
        }
        self.read(ptr, len as usize)
    }

    /// Step 4: the policy's verdict for `op` on `sock` concerning `addr`; `Ok` to go ahead.
    fn check(&self, op: Operation, sock: &OwnedFd, addr: &[u8]) -> Result<(), Errno32> {
        let Some(addr) = parse_inet(addr) else {
            return Ok(());
        };
        let query = Query {
            op,
            protocol: protocol_of(sock),
            addr,
        };
        let decision = self.svc.policy().decide(&query);
        self.svc.audit().record(self.tid(), &query, &decision);
        match decision.action {
            Action::Allow => Ok(()),
            Action::Deny { errno } => Err(errno),
        }
    }

    pub(crate) fn respond(&self, result: sys::SysResult) {
        self.svc.respond(&self.notif, result);
    }

    /// Runs `op` and answers with its result; when it may block, first makes sure another
    /// worker takes the next notifications, and lets a signal for the program interrupt it.
    pub(crate) fn perform<F>(self, may_block: bool, op: F)
    where
        F: FnOnce() -> sys::SysResult,
    {
        if !may_block {
            return self.respond(op());
        }
        self.svc.before_blocking();
        let result = self.svc.watcher().run(self.tid(), self.notif.id, op);
        self.respond(result);
    }
}

/// The errno the program sees for a descriptor we could not take: the kernel answers a bad
/// descriptor number with `EBADF`, whatever the reason.
fn getfd_errno(e: Errno) -> Errno32 {
    match e {
        Errno::EBADF | Errno::ENOENT => libc::EBADF,
        e => e as i32,
    }
}

/// The transport protocol of `sock`, as the policy names it.
fn protocol_of(sock: &OwnedFd) -> Protocol {
    match sock::getsockopt_int(sock.as_fd(), libc::SO_PROTOCOL) {
        Ok(libc::IPPROTO_TCP) => Protocol::Tcp,
        Ok(libc::IPPROTO_UDP) => Protocol::Udp,
        _ => Protocol::Other,
    }
}

/// The thread group of thread `tid`, from `/proc/TID/status`.
fn tgid_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The IPv4 or IPv6 address in raw `sockaddr` bytes, if that is what they hold.
pub fn parse_inet(raw: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]));
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match family {
        libc::AF_INET if raw.len() >= 8 => {
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        // The kernel accepts the 24-byte RFC 2133 form without a scope id.
        libc::AF_INET6 if raw.len() >= 24 => {
            let octets: [u8; 16] = raw[8..24].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

/// Whether `raw` is an `AF_UNIX` address with a relative path.
fn is_relative_unix_path(raw: &[u8]) -> bool {
    raw.len() > 2
        && i32::from(u16::from_ne_bytes([raw[0], raw[1]])) == libc::AF_UNIX
        && raw[2] != 0
        && raw[2] != b'/'
}

/// Moves the calling supervisor thread into thread `tid`'s working directory, on a private
/// copy of the filesystem context so no other supervisor thread is affected.
fn enter_cwd_of(tid: i32) -> Result<(), Errno32> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(|e| e as i32)?;
    nix::unistd::chdir(format!("/proc/{tid}/cwd").as_str()).map_err(|e| e as i32)
}

fn may_block(sock: &OwnedFd, dontwait: bool) -> bool {
    !dontwait && !sock::is_nonblocking(sock.as_fd())
}

/// `connect(fd, addr, addrlen)`.
pub fn connect(mut call: Call<'_>) {
    let prepared = (|| {
        let sock = call.socket(call.int_arg(0))?;
        let addr = call.read_sockaddr(call.arg(1), call.arg(2))?;
        call.still_pending()?;
        call.check(Operation::Connect, &sock, &addr)?;
        Ok((sock, addr))
    })();
    let (sock, addr) = match prepared {
        Ok(p) => p,
        Err(e) => return call.respond(Err(e)),
    };
    let tid = call.tid();
    // Only connection-oriented sockets wait in connect(); a datagram connect returns at once.
    let blocking = is_stream(&sock) && may_block(&sock, false);
    call.perform(blocking, move || {
        if is_relative_unix_path(&addr) {
            enter_cwd_of(tid)?;
        }
        sock::connect(sock.as_fd(), &addr)
    });
}

/// `bind(fd, addr, addrlen)`.
pub fn bind(mut call: Call<'_>) {
    let prepared = (|| {
        let sock = call.socket(call.int_arg(0))?;
        let addr = call.read_sockaddr(call.arg(1), call.arg(2))?;
        call.still_pending()?;
        call.check(Operation::Bind, &sock, &addr)?;
        call.check_privileged_port(&addr)?;
        Ok((sock, addr))
    })();
    match prepared {
        Err(e) => call.respond(Err(e)),
        Ok((sock, addr)) => {
            let tid = call.tid();
            call.perform(false, move || {
                if is_relative_unix_path(&addr) {
                    enter_cwd_of(tid)?;
                }
                sock::bind(sock.as_fd(), &addr)
            })
        }
    }
}

/// `listen(fd, backlog)`: decided on the address the socket is bound to.
pub fn listen(mut call: Call<'_>) {
    let prepared = (|| {
        let sock = call.socket(call.int_arg(0))?;
        let local = sock::getsockname(sock.as_fd())?;
        call.check(Operation::Listen, &sock, &local)?;
        Ok(sock)
    })();
    match prepared {
        Err(e) => call.respond(Err(e)),
        Ok(sock) => {
            let backlog = call.int_arg(1);
            call.perform(false, move || sock::listen(sock.as_fd(), backlog))
        }
    }
}

/// `accept(fd, addr, addrlen)` and `accept4(…, flags)`: the supervisor accepts on its
/// duplicate, checks the peer, and hands an allowed connection to the program. A denied
/// peer's connection is closed and the wait goes on, as if it had never arrived.
pub fn accept(mut call: Call<'_>, with_flags: bool) {
    let flags = if with_flags { call.int_arg(3) } else { 0 };
    let (addr_ptr, len_ptr) = (call.arg(1), call.arg(2));
    let prepared = (|| {
        if flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 {
            return Err(libc::EINVAL);
        }
        let sock = call.socket(call.int_arg(0))?;
        // The kernel reads the buffer length before it accepts.
        let user_len = if addr_ptr != 0 {
            let raw = call.read(len_ptr, 4)?;
            let len = i32::from_ne_bytes(raw.try_into().expect("4 bytes"));
            if len < 0 {
                return Err(libc::EINVAL);
            }
            Some(len as usize)
        } else {
            None
        };
        call.still_pending()?;
        Ok((sock, user_len))
    })();
    let (sock, user_len) = match prepared {
        Ok(p) => p,
        Err(e) => return call.respond(Err(e)),
    };

    let svc = call.svc.clone();
    let notif = call.notif;
    let tid = call.tid();
    let nonblocking = sock::is_nonblocking(sock.as_fd());
    let protocol = protocol_of(&sock);
    let op = {
        let svc = svc.clone();
        move || loop {
            let (conn, peer) = sock::accept4(sock.as_fd(), flags | libc::SOCK_CLOEXEC)?;
            if let Some(peer_addr) = parse_inet(&peer) {
                let query = Query {
                    op: Operation::Accept,
                    protocol,
                    addr: peer_addr,
                };
                let decision = svc.policy().decide(&query);
                svc.audit().record(tid, &query, &decision);
                if let Action::Deny { .. } = decision.action {
                    drop(conn);
                    continue;
                }
            }
            return Ok((conn, peer));
        }
    };
    let deliver = move |result: Result<(OwnedFd, Vec<u8>), i32>| {
        let (conn, peer) = match result {
            Ok(r) => r,
            Err(e) => return svc.respond(&notif, Err(e)),
        };
        // The wait may have been long: write only into the thread that is still waiting
        // (its id could otherwise belong to another process by now).
        if !sys::notif_id_valid(svc.listener(), notif.id) {
            return;
        }
        if let Some(user_len) = user_len {
            let n = peer.len().min(user_len);
            let len_bytes = (peer.len() as u32).to_ne_bytes();
            let written = sys::write_memory(tid, addr_ptr, &peer[..n])
                .and_then(|()| sys::write_memory(tid, len_ptr, &len_bytes));
            if written.is_err() {
                // As in the kernel: the connection is dropped and the call fails.
                return svc.respond(&notif, Err(libc::EFAULT));
            }
        }
        svc.install(&notif, conn, flags & libc::SOCK_CLOEXEC != 0);
    };
    if nonblocking {
        deliver(op());
    } else {
        call.svc.before_blocking();
        deliver(call.svc.watcher().run(tid, notif.id, op));
    }
}

/// One message to send, copied out of the program.
struct Outgoing {
    name: Vec<u8>,
    data: Vec<u8>,
    control: Vec<u8>,
    /// Our duplicates of descriptors passed with `SCM_RIGHTS`, kept open until sent.
    _passed: Vec<OwnedFd>,
}

impl Outgoing {
    fn send(&self, sock: &OwnedFd, flags: i32) -> sys::SysResult {
        let mut iov = libc::iovec {
            iov_base: self.data.as_ptr().cast_mut().cast(),
            iov_len: self.data.len(),
        };
        // SAFETY: msghdr is plain old data; every field is set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        if !self.name.is_empty() {
            msg.msg_name = self.name.as_ptr().cast_mut().cast();
            msg.msg_namelen = self.name.len() as u32;
        }
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !self.control.is_empty() {
            msg.msg_control = self.control.as_ptr().cast_mut().cast();
            msg.msg_controllen = self.control.len();
        }
        sock::sendmsg(sock.as_fd(), &msg, flags | libc::MSG_NOSIGNAL)
    }
}

impl Call<'_> {
    /// Copies up to `len` bytes of data; `stream` sockets may be sent short.
    fn read_data(&self, iovs: &[(u64, u64)], stream: bool) -> Result<Vec<u8>, Errno32> {
        let total: u64 = iovs.iter().map(|&(_, l)| l).fold(0u64, u64::saturating_add);
        if total > MAX_SEND as u64 && !stream {
            return Err(libc::EMSGSIZE);
        }
        let mut data = Vec::with_capacity(total.min(MAX_SEND as u64) as usize);
        for &(base, len) in iovs {
            let room = MAX_SEND - data.len();
            let take = (len as usize).min(room);
            if take == 0 {
                continue;
            }
            data.extend_from_slice(&self.read(base, take)?);
        }
        Ok(data)
    }

    /// Reads the `struct msghdr` at `ptr` and everything it points to.
    fn read_msghdr(&mut self, ptr: u64, stream: bool) -> Result<Outgoing, Errno32> {
        const MSGHDR: usize = std::mem::size_of::<libc::msghdr>();
        let raw = self.read(ptr, MSGHDR)?;
        let word = |off: usize| u64::from_ne_bytes(raw[off..off + 8].try_into().expect("8"));
        let (name_ptr, name_len) = (
            word(0),
            u64::from(u32::from_ne_bytes(raw[8..12].try_into().expect("4"))),
        );
        let (iov_ptr, iov_len) = (word(16), word(24));
        let (control_ptr, control_len) = (word(32), word(40));

        // As copy_msghdr_from_user: a negative length is EINVAL, a long one is cut to fit.
        let name_len = match name_len as u32 as i32 {
            n if n < 0 => return Err(libc::EINVAL),
            n => (n as u64).min(MAX_SOCKADDR),
        };
        let name = if name_ptr != 0 && name_len != 0 {
            self.read_sockaddr(name_ptr, name_len)?
        } else {
            Vec::new()
        };
        if iov_len > MAX_IOV {
            return Err(libc::EMSGSIZE);
        }
        let iov_raw = self.read(iov_ptr, iov_len as usize * 16)?;
        let iovs: Vec<(u64, u64)> = iov_raw
            .chunks_exact(16)
            .map(|c| {
                let base = u64::from_ne_bytes(c[..8].try_into().expect("8"));
                let len = u64::from_ne_bytes(c[8..].try_into().expect("8"));
                (base, len)
            })
            .collect();
        if iovs.iter().any(|&(_, l)| (l as i64) < 0) {
            return Err(libc::EINVAL);
        }
        let data = self.read_data(&iovs, stream)?;

        if control_len > MAX_CONTROL {
            return Err(libc::ENOBUFS);
        }
        let control = if control_ptr != 0 && control_len != 0 {
            self.read(control_ptr, control_len as usize)?
        } else {
            Vec::new()
        };
        let (control, passed) = self.translate_control(control)?;
        Ok(Outgoing {
            name,
            data,
            control,
            _passed: passed,
        })
    }

    /// Replaces the program's descriptor numbers in `SCM_RIGHTS` with our duplicates.
    fn translate_control(
        &mut self,
        mut control: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), Errno32> {
        const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
        let mut passed = Vec::new();
        let mut off = 0;
        while off + HDR <= control.len() {
            let len = usize::from_ne_bytes(control[off..off + 8].try_into().expect("8"));
            let level = i32::from_ne_bytes(control[off + 8..off + 12].try_into().expect("4"));
            let kind = i32::from_ne_bytes(control[off + 12..off + 16].try_into().expect("4"));
            // `len` is the program's: compare without adding, so no value can overflow.
            if len < HDR || len > control.len() - off {
                return Err(libc::EINVAL);
            }
            if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
                return Err(libc::EPERM);
            }
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                for at in (off + HDR..off + len).step_by(4) {
                    if at + 4 > off + len {
                        break;
                    }
                    let fd = i32::from_ne_bytes(control[at..at + 4].try_into().expect("4"));
                    let ours = self.socket(fd)?;
                    control[at..at + 4].copy_from_slice(&ours.as_raw_fd().to_ne_bytes());
                    passed.push(ours);
                }
            }
            // CMSG_ALIGN; `len` fits in the buffer, so this cannot overflow.
            off += (len + 7) & !7;
        }
        Ok((control, passed))
    }
}

/// What a send with a destination does: with `MSG_FASTOPEN` on a stream socket it opens a
/// connection (TCP Fast Open, tcp(7)), so the `connect` rules decide it; otherwise it is a
/// datagram to that address.
fn send_operation(flags: i32, stream: bool) -> Operation {
    if stream && flags & libc::MSG_FASTOPEN != 0 {
        Operation::Connect
    } else {
        Operation::Send
    }
}

/// Whether `sock` is connection-oriented (stream or seqpacket).
fn is_stream(sock: &OwnedFd) -> bool {
    matches!(
        sock::getsockopt_int(sock.as_fd(), libc::SO_TYPE),
        Ok(libc::SOCK_STREAM | libc::SOCK_SEQPACKET)
    )
}

impl Call<'_> {
    /// Sends `out` now when that cannot block; otherwise on a thread of its own. A datagram
    /// is first tried without waiting, since a full send buffer is rare for datagrams and a
    /// thread per datagram would be costly; a stream could then be sent short, so it goes
    /// straight to the thread when it may block.
    fn send(self, sock: OwnedFd, out: Outgoing, flags: i32, stream: bool) {
        if !may_block(&sock, flags & libc::MSG_DONTWAIT != 0) {
            return self.respond(out.send(&sock, flags));
        }
        if !stream {
            match out.send(&sock, flags | libc::MSG_DONTWAIT) {
                Err(libc::EAGAIN) => {}
                done => return self.respond(done),
            }
        }
        self.perform(true, move || out.send(&sock, flags))
    }

    /// Refuses a bind to a port below 1024 unless the program could bind it itself: the
    /// supervisor may hold `CAP_NET_BIND_SERVICE` when the program does not.
    fn check_privileged_port(&self, addr: &[u8]) -> Result<(), Errno32> {
        let Some(addr) = parse_inet(addr) else {
            return Ok(());
        };
        if addr.port() == 0 || addr.port() >= 1024 {
            return Ok(());
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.tid()))
            .map_err(|_| libc::ENOENT)?;
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        const CAP_NET_BIND_SERVICE: u32 = 10;
        if cap_eff & (1 << CAP_NET_BIND_SERVICE) != 0 {
            Ok(())
        } else {
            Err(libc::EACCES)
        }
    }
}

/// `sendto(fd, buf, len, flags, dest, addrlen)` with a destination (the filter lets the
/// address-less form through untouched).
pub fn sendto(mut call: Call<'_>) {
    let flags = call.int_arg(3);
    let prepared = (|| {
        let sock = call.socket(call.int_arg(0))?;
        let stream = is_stream(&sock);
        let name = call.read_sockaddr(call.arg(4), call.arg(5))?;
        let data = call.read_data(&[(call.arg(1), call.arg(2))], stream)?;
        call.still_pending()?;
        call.check(send_operation(flags, stream), &sock, &name)?;
        let out = Outgoing {
            name,
            data,
            control: Vec::new(),
            _passed: Vec::new(),
        };
        Ok((sock, out, stream))
    })();
    match prepared {
        Err(e) => call.respond(Err(e)),
        Ok((sock, out, stream)) => call.send(sock, out, flags, stream),
    }
}

/// `sendmsg(fd, msg, flags)`. Trapped whatever the message holds: the filter cannot look
/// inside the `msghdr`, and letting an address-less message through would let another thread
/// add an address before the kernel reads it.
pub fn sendmsg(mut call: Call<'_>) {
    let flags = call.int_arg(2);
    let prepared = (|| {
        let sock = call.socket(call.int_arg(0))?;
        let stream = is_stream(&sock);
        let out = call.read_msghdr(call.arg(1), stream)?;
        call.still_pending()?;
        if !out.name.is_empty() {
            call.check(send_operation(flags, stream), &sock, &out.name)?;
        }
        Ok((sock, out, stream))
    })();
    match prepared {
        Err(e) => call.respond(Err(e)),
        Ok((sock, out, stream)) => call.send(sock, out, flags, stream),
    }
}

/// `sendmmsg(fd, msgvec, vlen, flags)`: each message is checked and sent in turn; like the
/// kernel, a failure after the first message ends the call with the count sent so far.
pub fn sendmmsg(mut call: Call<'_>) {
    const MMSGHDR: u64 = std::mem::size_of::<libc::mmsghdr>() as u64;
    let flags = call.int_arg(3);
    let vec_ptr = call.arg(1);
    let count = call.arg(2).min(MAX_IOV) as u32 as u64;
    let prepared = (|| {
        let sock = call.socket(call.int_arg(0))?;
        let stream = is_stream(&sock);
        let mut messages = Vec::new();
        for i in 0..count {
            // A pointer near the top of the address space wraps like the kernel's arithmetic
            // and then fails to read (EFAULT) instead of overflowing here.
            let ptr = vec_ptr.wrapping_add(i * MMSGHDR);
            let out = call.read_msghdr(ptr, stream).and_then(|out| {
                if !out.name.is_empty() {
                    call.check(send_operation(flags, stream), &sock, &out.name)?;
                }
                Ok(out)
            });
            match out {
                Ok(out) => messages.push((ptr, out)),
                Err(e) if messages.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        call.still_pending()?;
        Ok((sock, messages))
    })();
    let (sock, messages) = match prepared {
        Ok(p) => p,
        Err(e) => return call.respond(Err(e)),
    };
    let tid = call.tid();
    let (listener, notif_id) = (call.svc.listener_handle(), call.notif.id);
    let blocking = may_block(&sock, flags & libc::MSG_DONTWAIT != 0);
    call.perform(blocking, move || {
        let mut sent = 0i64;
        for (ptr, out) in &messages {
            match out.send(&sock, flags) {
                Ok(n) => {
                    if !sys::notif_id_valid(listener.as_fd(), notif_id) {
                        break;
                    }
                    // msg_len follows the msghdr in struct mmsghdr.
                    let at = ptr.wrapping_add(std::mem::size_of::<libc::msghdr>() as u64);
                    if sys::write_memory(tid, at, &(n as u32).to_ne_bytes()).is_err() {
                        break;
                    }
                    sent += 1;
                }
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut raw = vec![0u8; 16];
        raw[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        raw[2..4].copy_from_slice(&port.to_be_bytes());
        raw[4..8].copy_from_slice(&ip);
        raw
    }

    #[test]
    fn inet_addresses_are_parsed_from_raw_bytes() {
        assert_eq!(
            parse_inet(&v4([127, 0, 0, 1], 8080)),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let mut raw6 = vec![0u8; 24];
        raw6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        raw6[2..4].copy_from_slice(&443u16.to_be_bytes());
        raw6[23] = 1;
        assert_eq!(parse_inet(&raw6), Some("[::1]:443".parse().unwrap()));
    }

    #[test]
    fn short_or_foreign_addresses_are_not_inet() {
        assert_eq!(parse_inet(&v4([1, 2, 3, 4], 1)[..6]), None);
        assert_eq!(parse_inet(&[]), None);
        let mut unix = vec![0u8; 10];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        unix[2] = b'x';
        assert_eq!(parse_inet(&unix), None);
        assert!(is_relative_unix_path(&unix));
        unix[2] = b'/';
        assert!(!is_relative_unix_path(&unix));
    }
}
