//! Sockets the server made ahead of time, so that a redirected `socket()` usually costs no
//! round trip to it.
//!
//! # What is pooled
//!
//! One pool per kind of socket programs make all the time: `AF_INET` or `AF_INET6`, with
//! `SOCK_STREAM` (protocol 0 or `IPPROTO_TCP`) or `SOCK_DGRAM` (protocol 0 or `IPPROTO_UDP`).
//! Protocol 0 and the named default make the same socket, so they share a pool. Every other
//! kind goes to the server one socket at a time ([`session::create_socket`]).
//!
//! When the pool of a kind is empty, one request ([`session::create_sockets`]) brings
//! [`POOL_SIZE`] sockets: the first is handed out, the rest are kept. The refill happens in the
//! calling thread, when it needs a socket: the library starts no threads. So that the program
//! does not wait for the server to make them, the next batch is asked for ahead
//! ([`session::send_ahead`]) once a hand-out leaves fewer than [`LOW`] sockets of the kind,
//! and collected when the pool runs empty ([`session::take_ahead`]): by then the server has
//! usually made it, on another CPU.
//!
//! # Keeping them
//!
//! Pooled sockets are plain, blocking, close-on-exec sockets moved to descriptor numbers at or
//! above the library's high floor (like its own connection), each recorded with the device
//! and inode fstat(2) reports. Before one is handed out it is checked again: if the program
//! closed that number (a daemon closing every descriptor) or put something else there
//! (`dup2`), the entry is dropped *without closing anything*, since the number may now be
//! the program's.
//!
//! # Handing one out
//!
//! The pooled socket is duplicated to the lowest free number with `fcntl(F_DUPFD)` — or
//! `F_DUPFD_CLOEXEC` when the program asked for `SOCK_CLOEXEC` — and the pooled number is
//! closed, so the program sees the number native socket(2) would have given it.
//! `SOCK_NONBLOCK` is applied with `fcntl(F_SETFL)`. A socket that never left the pool is
//! fresh: unbound, unconnected, with default options.
//!
//! # Which server they came from
//!
//! Sockets belong to the stack of the server that made them. So that a program never gets a
//! socket of a server it is no longer connected to, the pool is emptied (its sockets closed)
//! whenever a request reveals a new connection (a reconnect, or a new session after the
//! program closed the old connection's descriptor), or that the connection is lost for good;
//! and before each hand-out the connection is polled once: a server that hung up or is
//! shutting down sends the call down the server path, which finds out what happened.
//!
//! # Fork
//!
//! The pools record the pid that filled them. A process that finds another pid there is a
//! child: it closes its inherited copies (those that still pass the check above) and starts
//! empty, so parent and child never hand out the same socket. The pool lock is held over
//! `fork()` by `pthread_atfork` handlers, as the session lock is.
//!
//! # Cost and accounting
//!
//! Each process that creates sockets of a pooled kind holds up to `POOL_SIZE - 1` unused
//! sockets of that kind in the server's stack: unbound and unconnected, they use no port and
//! no traffic, only memory in the stack and entries in the process's descriptor table (which
//! count against its `RLIMIT_NOFILE`, high numbers included). A batch asked for ahead adds up
//! to `POOL_SIZE` more, received (and counted) once it is collected or another request reads
//! past it; a process that stops making sockets of that kind keeps it until it exits.
//!
//! # Limitations
//!
//! * Another thread of the program that closes a pooled number and reuses it between the
//!   check and the duplication could have its own descriptor handed out; only a program
//!   closing descriptors it does not own can do that.
//! * A thread that forks while another is refilling leaves that refill's sockets open, unused,
//!   in the child until it exits or execs.
//! * A process made by a raw `vfork`/`clone(CLONE_VM)` that calls `socket()` through libc
//!   before it execs empties its parent's pools (shared memory) and leaves the parent's
//!   copies open but forgotten.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use libc::c_int;
use rumpclient::{CallError, ServerUrl};

use crate::config::Config;
use crate::session::{self, Epoch};
use crate::sys::{self, Errno};

/// Sockets one refill asks for, and the most a pool keeps plus the one handed out at once:
/// the most one request may ask for (`MAX_SOCKET_BATCH`). A refill is a round trip to another
/// process that wakes it on another CPU; on a 2-vCPU virtual machine, halving the refills
/// (16 to 32) took a socket()+close() loop from 5.4 to 4.1 µs.
pub const POOL_SIZE: usize = rumpclient::protocol::MAX_SOCKET_BATCH as usize;

/// Fewer pooled sockets of a kind than this after a hand-out ask for the next batch ahead.
pub const LOW: usize = POOL_SIZE / 2;

/// Number of pooled kinds: two families times two types.
const KINDS: usize = 4;

/// A pooled socket and what it was when it was put there.
#[derive(Debug, Clone, Copy)]
struct Entry {
    fd: c_int,
    dev: u64,
    ino: u64,
}

impl Entry {
    /// Moves a received socket to a high close-on-exec number and records it.
    fn place(fd: OwnedFd, floor: c_int) -> Option<Entry> {
        let high = sys::dup_cloexec_at_least(fd.as_raw_fd(), floor).ok()?;
        drop(fd);
        match sys::file_identity(high) {
            Some((dev, ino)) => Some(Entry { fd: high, dev, ino }),
            None => {
                sys::close(high);
                None
            }
        }
    }

    /// True when the number still holds the socket that was pooled.
    fn still_ours(&self) -> bool {
        sys::file_identity(self.fd) == Some((self.dev, self.ino))
    }

    /// Closes the pooled socket if the number is still ours; otherwise leaves it alone.
    fn discard(self) {
        if self.still_ours() {
            sys::close(self.fd);
        }
    }
}

#[derive(Debug)]
struct Pools {
    /// The process the pools belong to; 0 before the first refill.
    pid: i32,
    /// The connection their sockets came from.
    epoch: Option<Epoch>,
    kinds: [Vec<Entry>; KINDS],
    /// The kind whose next batch this process has asked for ahead.
    asked: Option<usize>,
}

impl Pools {
    fn empty_all(&mut self) {
        for kind in &mut self.kinds {
            kind.drain(..).for_each(Entry::discard);
        }
    }

    /// Starts afresh in a forked child, closing the inherited copies.
    fn adopt(&mut self, pid: i32) {
        if self.pid != pid {
            self.empty_all();
            self.pid = pid;
            self.epoch = None;
            self.asked = None;
        }
    }
}

static POOLS: Mutex<Pools> = Mutex::new(Pools {
    pid: 0,
    epoch: None,
    kinds: [Vec::new(), Vec::new(), Vec::new(), Vec::new()],
    asked: None,
});

fn lock() -> MutexGuard<'static, Pools> {
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pool lock, taken by the session's fork handlers after the session lock and held over
/// `fork()`, so a child never inherits it locked. The pool lock is never held while the
/// session lock is taken, so that order cannot deadlock.
pub(crate) struct ForkGuard {
    _pools: MutexGuard<'static, Pools>,
}

pub(crate) fn hold_over_fork() -> ForkGuard {
    ForkGuard { _pools: lock() }
}

/// The pool for `socket(domain, ty, protocol)`, if that kind is pooled.
fn kind_of(domain: c_int, ty: c_int, protocol: c_int) -> Option<usize> {
    let family = match domain {
        libc::AF_INET => 0,
        libc::AF_INET6 => 2,
        _ => return None,
    };
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let ty = match (base, protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => 0,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => 1,
        _ => return None,
    };
    Some(family + ty)
}

/// A redirected socket(2) answered from the pool; `None` when the kind is not pooled and the
/// caller must ask the server for this one socket.
pub fn socket(
    config: &Config,
    url: &ServerUrl,
    domain: c_int,
    ty: c_int,
    protocol: c_int,
) -> Option<Result<c_int, CallError>> {
    let kind = kind_of(domain, ty, protocol)?;
    let cloexec = ty & libc::SOCK_CLOEXEC != 0;
    let nonblock = ty & libc::SOCK_NONBLOCK != 0;

    let base_ty = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);

    // A connection in doubt sends the call to the server, which settles the doubt.
    let in_doubt = session::connection_in_doubt();
    let pooled = if in_doubt { None } else { take(kind) };
    let result = match pooled {
        Some((entry, ask_ahead)) => {
            let result = hand_out(entry.fd, cloexec, nonblock);
            if ask_ahead && session::send_ahead(config, url, domain, base_ty, 0, POOL_SIZE) {
                lock().asked = Some(kind);
            }
            result
        }
        None => refill(config, url, domain, base_ty, kind, !in_doubt).and_then(|fd| {
            let result = finish(fd.as_raw_fd(), cloexec, nonblock);
            // The received descriptor is already at the lowest free number.
            result.map(|()| fd.into_raw_fd())
        }),
    };
    Some(result.map_err(|e| match e {
        Failure::Server(e) => e,
        Failure::Local(errno) => CallError::Errno(errno),
    }))
}

/// Why a pooled socket could not be handed out.
enum Failure {
    Server(CallError),
    Local(Errno),
}

/// A checked entry of pool `kind`, if any, and whether to ask for the next batch ahead (few
/// are left and none is asked for yet); entries that fail the check are dropped unclosed.
fn take(kind: usize) -> Option<(Entry, bool)> {
    let mut pools = lock();
    pools.adopt(sys::getpid());
    while let Some(entry) = pools.kinds[kind].pop() {
        if entry.still_ours() {
            let ask = pools.kinds[kind].len() < LOW && pools.asked.is_none();
            return Some((entry, ask));
        }
    }
    None
}

/// Moves pooled `fd` to the lowest free number with the program's flags.
fn hand_out(fd: c_int, cloexec: bool, nonblock: bool) -> Result<c_int, Failure> {
    let low = sys::dup_lowest(fd, cloexec);
    sys::close(fd);
    let low = low.map_err(Failure::Local)?;
    if nonblock {
        if let Err(errno) = sys::set_nonblocking(low) {
            sys::close(low);
            return Err(Failure::Local(errno));
        }
    }
    Ok(low)
}

/// Gives a freshly received (close-on-exec, blocking) socket the program's flags.
fn finish(fd: c_int, cloexec: bool, nonblock: bool) -> Result<(), Failure> {
    if !cloexec {
        sys::set_cloexec(fd, false).map_err(Failure::Local)?;
    }
    if nonblock {
        sys::set_nonblocking(fd).map_err(Failure::Local)?;
    }
    Ok(())
}

/// Asks the server for a batch of `kind`: returns the first socket, pools the others. The
/// batch asked for ahead is used only when `use_ahead`: not when the connection is in doubt,
/// since that batch may come from a server that has gone since.
fn refill(
    config: &Config,
    url: &ServerUrl,
    domain: c_int,
    base_ty: c_int,
    kind: usize,
    use_ahead: bool,
) -> Result<OwnedFd, Failure> {
    let ahead = if use_ahead {
        session::take_ahead(config, url, domain, base_ty, 0)
    } else {
        None
    };
    // Taken, or lost with its connection, or never to be taken: ask anew from now on.
    {
        let mut pools = lock();
        if pools.asked == Some(kind) || !use_ahead {
            pools.asked = None;
        }
    }
    let result = match ahead {
        Some(batch) => Ok(batch),
        None => session::create_sockets(config, url, domain, base_ty, 0, POOL_SIZE),
    };
    let (fds, epoch) = match result {
        Ok(batch) => batch,
        Err(e) => {
            // Lost for good (or `die`): what is pooled came from a server that is gone.
            if matches!(e, CallError::Die | CallError::Errno(libc::ENOTCONN)) {
                lock().empty_all();
            }
            return Err(Failure::Server(e));
        }
    };
    let mut fds = fds.into_iter();
    let first = fds.next().ok_or(Failure::Local(libc::EIO))?;

    // Move the rest out of the program's low numbers before taking the lock.
    let floor = session::high_floor();
    let placed: Vec<Entry> = fds.filter_map(|fd| Entry::place(fd, floor)).collect();

    let mut pools = lock();
    pools.adopt(sys::getpid());
    if pools.epoch != Some(epoch) {
        pools.empty_all();
        pools.epoch = Some(epoch);
    }
    let pool = &mut pools.kinds[kind];
    for entry in placed {
        if pool.len() < POOL_SIZE - 1 {
            pool.push(entry);
        } else {
            sys::close(entry.fd);
        }
    }
    Ok(first)
}
