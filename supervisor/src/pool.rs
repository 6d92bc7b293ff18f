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
//! Kept sockets belong to the stack the server hosted when it made them. They are handed
//! out only while the connection is idle and the server has not hung up (one poll(2)), and
//! all of them are dropped as soon as the client has reconnected, possibly to another stack.
//! A server that dies therefore makes the next `socket()` follow `RUMPHIJACK_RETRYCONNECT`
//! exactly as without the pool.
//!
//! ## Limitations
//!
//! * The supervisor holds up to `KEEP` unused sockets of each kind it has served, in the
//!   server's stack, for as long as it runs.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use rumpclient::client::{CallError, Client};

/// Sockets asked for at once: the most one request may ask for (`MAX_SOCKET_BATCH`), since
/// each refill is a round trip with two wake-ups of another process.
pub const BATCH: usize = rumpclient::protocol::MAX_SOCKET_BATCH as usize;

/// Most sockets kept per kind.
pub const KEEP: usize = 32;

/// `(domain, type without flags, protocol)`.
type Kind = (i32, i32, i32);

/// A stack server's client, with the sockets it made ahead of time.
#[derive(Debug)]
pub struct ServerSockets {
    client: Client,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// `Client::connections()` when these sockets were made.
    connection: u64,
    kinds: HashMap<Kind, Vec<OwnedFd>>,
}

impl ServerSockets {
    /// Wraps `client`.
    pub fn new(client: Client) -> Self {
        ServerSockets {
            client,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// A socket as `socket(domain, ty, protocol)` would make it in the server's stack
    /// (`ty` without `SOCK_CLOEXEC`). `before_blocking` runs before a round trip to the server.
    pub fn create(
        &self,
        domain: i32,
        ty: i32,
        protocol: i32,
        before_blocking: impl FnOnce(),
    ) -> Result<OwnedFd, CallError> {
        let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        let nonblock = ty & libc::SOCK_NONBLOCK != 0;
        let kind = (domain, base, protocol);
        if !poolable(kind) {
            before_blocking();
            return self.client.create_socket(domain, ty, protocol);
        }

        if self.client.connection_quiet() {
            if let Some(fd) = self.take(kind) {
                return with_flags(fd, nonblock);
            }
        }

        before_blocking();
        let mut batch = self.client.create_sockets(domain, base, protocol, BATCH)?;
        let first = batch.pop().ok_or(CallError::Errno(libc::EIO))?;
        self.keep(kind, batch);
        with_flags(first, nonblock)
    }

    fn take(&self, kind: Kind) -> Option<OwnedFd> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.connection != self.client.connections() {
            return None;
        }
        kept.kinds.get_mut(&kind).and_then(Vec::pop)
    }

    fn keep(&self, kind: Kind, fds: Vec<OwnedFd>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let connection = self.client.connections();
        if kept.connection != connection {
            // Made by an earlier connection, perhaps in another stack.
            kept.kinds.clear();
            kept.connection = connection;
        }
        let pool = kept.kinds.entry(kind).or_default();
        let room = KEEP.saturating_sub(pool.len());
        pool.extend(fds.into_iter().take(room));
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
