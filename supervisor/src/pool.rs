//! Sockets a stack server made ahead of time, so that a program's `socket()` need not wait
//! for a round trip to another process (two cross-CPU wake-ups, tens of microseconds on a
//! virtual machine).
//!
//! The first `socket()` of a common kind (IPv4 or IPv6, stream or datagram, protocol 0, TCP or
//! UDP) asks the server for a batch of [`BATCH`] and keeps the rest, at most [`KEEP`] per
//! kind. Kept sockets are fresh and unconnected; `SOCK_NONBLOCK` is applied on hand-out (the
//! server makes them blocking) and `SOCK_CLOEXEC` by the descriptor injection, as for any
//! other socket.
//!
//! When a hand-out leaves fewer than [`LOW`] sockets of its kind, a refiller thread asks the
//! server for the next batch while the program goes on, so that a program making sockets
//! one after another does not wait for the server's round trip. A `socket()` that finds the
//! pool empty while that batch is on its way waits for it rather than asking again.
//!
//! Kept sockets belong to the stack the server hosted when it made them. They are handed
//! out only while the server has not hung up (one poll(2), or the client's own finding when
//! a request is in flight), and all of them are dropped as soon as the client has
//! reconnected, possibly to another stack. A server that dies therefore makes the next
//! `socket()` follow `RUMPHIJACK_RETRYCONNECT` exactly as without the pool; the refiller
//! never decides anything about a lost connection, it only leaves the pool empty.
//!
//! ## Limitations
//!
//! * The supervisor holds up to `KEEP` unused sockets of each kind it has served, in the
//!   server's stack, for as long as it runs.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rumpclient::client::{CallError, Client};
use tracing::debug;

/// Sockets asked for at once: the most one request may ask for (`MAX_SOCKET_BATCH`), since
/// each refill is a round trip with two wake-ups of another process.
pub const BATCH: usize = rumpclient::protocol::MAX_SOCKET_BATCH as usize;

/// Most sockets kept per kind.
pub const KEEP: usize = 32;

/// Fewer kept sockets of a kind than this start a refill in the background.
pub const LOW: usize = KEEP / 2;

/// `(domain, type without flags, protocol)`.
type Kind = (i32, i32, i32);

/// A stack server's client, with the sockets it made ahead of time.
#[derive(Debug)]
pub struct ServerSockets {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    kept: Mutex<Kept>,
    /// Signalled when a refill is asked for and when one ends.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Kept {
    /// `Client::connections()` when these sockets were made.
    connection: u64,
    kinds: HashMap<Kind, Vec<OwnedFd>>,
    /// Kinds the refiller is asked to top up, oldest first, and the one it is topping up.
    wanted: Vec<Kind>,
    refilling: Option<Kind>,
}

impl Kept {
    /// Whether a batch of `kind` is asked for or on its way.
    fn coming(&self, kind: Kind) -> bool {
        self.refilling == Some(kind) || self.wanted.contains(&kind)
    }
}

impl ServerSockets {
    /// Wraps `client` and starts the refiller thread, which lives as long as the supervisor.
    pub fn new(client: Client) -> Self {
        let shared = Arc::new(Shared {
            client,
            kept: Mutex::new(Kept::default()),
            changed: Condvar::new(),
        });
        let refiller = shared.clone();
        let started = std::thread::Builder::new()
            .name("pool-refill".into())
            .spawn(move || refiller.refill_forever());
        if let Err(e) = started {
            // Without it every batch is fetched by the socket() that finds the pool empty.
            debug!(error = %e, "no refiller thread; refilling on demand");
        }
        ServerSockets { shared }
    }

    /// A socket as `socket(domain, ty, protocol)` would make it in the server's stack
    /// (`ty` without `SOCK_CLOEXEC`). `before_blocking` runs before waiting for the server.
    pub fn create(
        &self,
        domain: i32,
        ty: i32,
        protocol: i32,
        before_blocking: impl FnOnce(),
    ) -> Result<OwnedFd, CallError> {
        let shared = &self.shared;
        let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        let nonblock = ty & libc::SOCK_NONBLOCK != 0;
        let kind = (domain, base, protocol);
        if !poolable(kind) {
            before_blocking();
            return shared.client.create_socket(domain, ty, protocol);
        }

        let mut before_blocking = Some(before_blocking);
        if shared.client.connection_quiet() {
            let mut kept = shared.lock();
            loop {
                if let Some(fd) = shared.take(&mut kept, kind) {
                    return with_flags(fd, nonblock);
                }
                if !kept.coming(kind) || kept.connection != shared.client.connections() {
                    break;
                }
                // The batch is on its way: wait for it rather than ask a second time.
                if let Some(f) = before_blocking.take() {
                    drop(kept);
                    f();
                    kept = shared.lock();
                    continue;
                }
                kept = shared.changed.wait(kept).unwrap_or_else(|e| e.into_inner());
            }
        }

        if let Some(f) = before_blocking.take() {
            f();
        }
        let mut batch = shared
            .client
            .create_sockets(domain, base, protocol, BATCH)?;
        let connection = shared.client.connections();
        let first = batch.pop().ok_or(CallError::Errno(libc::EIO))?;
        shared.keep(&mut shared.lock(), kind, batch, connection);
        with_flags(first, nonblock)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept socket of `kind` from the current connection; asks for the next batch when few
    /// are left.
    fn take(&self, kept: &mut Kept, kind: Kind) -> Option<OwnedFd> {
        if kept.connection != self.client.connections() {
            return None;
        }
        let pool = kept.kinds.get_mut(&kind)?;
        let fd = pool.pop()?;
        if pool.len() < LOW && !kept.coming(kind) {
            kept.wanted.push(kind);
            self.changed.notify_all();
        }
        Some(fd)
    }

    /// Keeps `fds`, made on connection number `connection`, unless a reconnect has happened
    /// since (they may then belong to another stack).
    fn keep(&self, kept: &mut Kept, kind: Kind, fds: Vec<OwnedFd>, connection: u64) {
        if connection != self.client.connections() {
            return;
        }
        if kept.connection != connection {
            // Made by an earlier connection, perhaps in another stack.
            kept.kinds.clear();
            kept.connection = connection;
        }
        let pool = kept.kinds.entry(kind).or_default();
        let room = KEEP.saturating_sub(pool.len());
        pool.extend(fds.into_iter().take(room));
    }

    /// The refiller: fetches each batch asked for, one at a time.
    fn refill_forever(&self) {
        loop {
            let (kind, count) = {
                let mut kept = self.lock();
                while kept.wanted.is_empty() {
                    kept = self.changed.wait(kept).unwrap_or_else(|e| e.into_inner());
                }
                let kind = kept.wanted.remove(0);
                kept.refilling = Some(kind);
                let have = kept.kinds.get(&kind).map_or(0, Vec::len);
                (kind, KEEP.saturating_sub(have).clamp(1, BATCH))
            };

            let batch = self.client.create_sockets(kind.0, kind.1, kind.2, count);
            let connection = self.client.connections();
            let mut kept = self.lock();
            kept.refilling = None;
            match batch {
                Ok(fds) => self.keep(&mut kept, kind, fds, connection),
                // What a failure means (reconnect, ENOTCONN, die) is the next socket()'s to
                // find out on its own request, as without the pool.
                Err(e) => debug!(?kind, ?e, "background refill failed"),
            }
            self.changed.notify_all();
        }
    }
}

fn poolable((domain, base, protocol): Kind) -> bool {
    matches!(domain, libc::AF_INET | libc::AF_INET6)
        && matches!(
            (base, protocol),
            (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) | (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP)
        )
}

/// Applies `SOCK_NONBLOCK` to a socket the server made blocking.
fn with_flags(fd: OwnedFd, nonblock: bool) -> Result<OwnedFd, CallError> {
    if nonblock {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| CallError::Errno(e as i32))?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| CallError::Errno(e as i32))?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rumpclient::{Identity, RetryPolicy};
    use server::ServeOptions;

    /// A pool over a real stack server serving this process's namespace on a thread.
    fn pool() -> (ServerSockets, std::thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let opts = ServeOptions {
                check_peer: false,
                ..ServeOptions::default()
            };
            let _ = server::serve_connection(theirs, &opts);
        });
        let id = Identity {
            pid: std::process::id(),
            program: "pool-test".into(),
        };
        let client = Client::from_stream(ours, RetryPolicy::Never, id).unwrap();
        (ServerSockets::new(client), server)
    }

    fn inode(fd: &OwnedFd) -> u64 {
        nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_ino
    }

    #[test]
    fn every_socket_handed_out_is_fresh_and_of_its_kind() {
        let (pool, _server) = pool();
        let waits = AtomicUsize::new(0);
        let mut seen = HashSet::new();
        let mut held = Vec::new();
        for i in 0..200 {
            let (ty, want_nonblock) = if i % 3 == 0 {
                (libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, true)
            } else {
                (libc::SOCK_STREAM, false)
            };
            let fd = pool
                .create(libc::AF_INET, ty, 0, || {
                    waits.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
            let kind = crate::sys::sock::getsockopt_int(fd.as_fd(), libc::SO_TYPE).unwrap();
            assert_eq!(kind, ty & !libc::SOCK_NONBLOCK, "socket {i}");
            assert_eq!(crate::sys::sock::is_nonblocking(fd.as_fd()), want_nonblock);
            assert!(seen.insert(inode(&fd)), "socket {i} was handed out twice");
            // Keep them open, so that an inode number cannot come back.
            held.push(fd);
        }
        // The first socket of each kind waits for a batch; afterwards the refiller keeps up
        // most of the time, so far fewer than one call in four waits for the server.
        assert!(waits.load(Ordering::Relaxed) < 200 / 4, "{waits:?}");
    }
}
