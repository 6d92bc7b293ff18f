//! One client session: check the peer, shake hands, then create sockets on request.
//!
//! The protocol is in [`rumpclient::protocol`]. A session runs on one thread and blocks;
//! the thread's network namespace is the stack every socket of the session is created in.
//! Anything a client sends, however broken, ends at worst in an [`Message::Error`] reply
//! and a closed connection: the session never panics on input.
//!
//! # Versions and batches
//!
//! Clients of every protocol version from [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`]
//! are served; `Welcome` repeats the client's version. A batch request
//! ([`Message::CreateSockets`], version 2) makes up to [`MAX_SOCKET_BATCH`] sockets — the
//! decoder refuses larger counts, and the session caps them again — and sends them all in
//! one reply. When socket(2) fails partway (`EMFILE`, `ENFILE`, `ENOBUFS`), the sockets made
//! so far are sent with the errno that stopped the batch; when it fails at once, none are.
//!
//! # Made ahead of time
//!
//! A client that asks for a batch will likely ask for the same kind again soon, and waits for
//! the answer. So once a batch reply is sent, the session makes the next batch of that kind
//! (the same count) while the client is busy using the last one, and answers the next
//! request of that kind from it, topping it up if the client asks for more. Sockets made
//! ahead of time are created in the session's stack like any other and are fresh when handed
//! over. At most [`PREPARED_KINDS`] kinds are kept per session, the oldest dropped first, so
//! a session holds at most `PREPARED_KINDS × MAX_SOCKET_BATCH` unused sockets; they close
//! with the session.
//!
//! ## Limitations
//!
//! * Sockets made ahead of time count against the server's `RLIMIT_NOFILE`. A session stops
//!   making them ahead at the first failure (such as `EMFILE`), and makes each batch on
//!   request from then on.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::geteuid;
use std::os::fd::OwnedFd;

use rumpclient::protocol::{
    ErrorCode, Message, MAX_SOCKET_BATCH, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use rumpclient::wire::{self, WireError};

use crate::netns::describe_stack;
use crate::sys;

/// Most kinds of socket one session keeps a batch of, made ahead of time.
pub const PREPARED_KINDS: usize = 2;

/// The arguments of socket(2) that make one kind of socket.
type Kind = (i32, i32, i32);

/// How long a new client may take to send its `Hello`.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may use a server, and whether to check at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Uids allowed in addition to the server's own effective uid and root.
    pub allowed_uids: Vec<u32>,
    /// Check the peer's uid with `SO_PEERCRED` (unix(7)). Turn it off only for a
    /// connection whose peer is already known, such as one end of a socketpair.
    pub check_peer: bool,
}

impl ServeOptions {
    /// Peers are checked; only the server's own uid and root are allowed.
    pub fn new() -> Self {
        ServeOptions {
            allowed_uids: Vec::new(),
            check_peer: true,
        }
    }

    /// Whether a peer with effective uid `uid` may use the server.
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == geteuid().as_raw() || self.allowed_uids.contains(&uid)
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// How a session ended without a failure on the server's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed the connection; it had been given `sockets` sockets.
    Closed {
        /// Sockets handed to the client during the session.
        sockets: u64,
    },
    /// The server refused the client and told it so with `Error { code, message }`.
    Refused {
        /// Class of the refusal.
        code: ErrorCode,
        /// The message sent to the client.
        message: String,
    },
    /// The server stopped while the client was connected.
    ShuttingDown,
}

/// Why a session failed on the server's side.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `SO_PEERCRED` could not be read.
    #[error("reading SO_PEERCRED of the client: {0}")]
    PeerCredentials(Errno),
    /// `SO_RCVTIMEO` could not be set or cleared.
    #[error("setting SO_RCVTIMEO on the client connection: {0}")]
    Timeout(Errno),
    /// Receiving a frame failed for a reason other than the client's fault.
    #[error("receiving from client pid {pid}: {source}")]
    Recv {
        /// The client's pid, 0 before the handshake.
        pid: u32,
        /// What went wrong.
        source: WireError,
    },
    /// A reply could not be sent.
    #[error("sending {what} to client pid {pid}: {source}")]
    Send {
        /// The kind of reply.
        what: &'static str,
        /// The client's pid, 0 before the handshake.
        pid: u32,
        /// What went wrong.
        source: WireError,
    },
}

/// Serves one client on the calling thread until it disconnects or breaks the protocol.
///
/// Sockets are created in the calling thread's network namespace. The peer check uses the
/// credentials the kernel recorded at connect(2) time; the first frame must be `Hello`
/// and arrive within 10 seconds.
pub fn serve_connection(
    stream: UnixStream,
    opts: &ServeOptions,
) -> Result<SessionEnd, SessionError> {
    let stopping = AtomicBool::new(false);
    Session::new(stream, opts, &stopping, HELLO_TIMEOUT).run()
}

/// The state of one session.
pub(crate) struct Session<'a> {
    stream: UnixStream,
    opts: &'a ServeOptions,
    /// Set when the server stops, so a read cut short by shutdown(2) is told apart from
    /// the client's own close.
    stopping: &'a AtomicBool,
    hello_timeout: Duration,
    pid: u32,
    sockets: u64,
    /// Batches made ahead of time, oldest first.
    prepared: Vec<(Kind, Vec<OwnedFd>)>,
    /// False once making a batch ahead of time has failed.
    prepare: bool,
}

/// What to do after a received frame.
enum Step {
    Continue,
    End(SessionEnd),
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        stream: UnixStream,
        opts: &'a ServeOptions,
        stopping: &'a AtomicBool,
        hello_timeout: Duration,
    ) -> Self {
        Session {
            stream,
            opts,
            stopping,
            hello_timeout,
            pid: 0,
            sockets: 0,
            prepared: Vec::new(),
            prepare: true,
        }
    }

    pub(crate) fn run(mut self) -> Result<SessionEnd, SessionError> {
        // 1. Who is calling: the credentials the kernel recorded at connect(2).
        let cred = getsockopt(&self.stream, sockopt::PeerCredentials)
            .map_err(SessionError::PeerCredentials)?;
        if self.opts.check_peer && !self.opts.allows(cred.uid()) {
            let message = format!("uid {} is not allowed to use this server", cred.uid());
            tracing::info!(
                pid = cred.pid(),
                uid = cred.uid(),
                "refused client: {message}"
            );
            return self.refuse(ErrorCode::Permission, message);
        }

        // 2. The handshake, under a deadline so a silent peer does not hold a thread.
        self.set_recv_timeout(Some(self.hello_timeout))?;
        let first = wire::recv(&self.stream);
        self.set_recv_timeout(None)?;
        let (version, pid, program) = match first {
            Ok((
                Message::Hello {
                    version,
                    pid,
                    program,
                },
                None,
            )) => (version, pid, program),
            Ok((Message::Hello { .. }, Some(_))) => return self.refuse_unexpected_fd(),
            Ok((other, _)) => {
                let message = format!("expected hello, got {}", other.kind_name());
                return self.refuse(ErrorCode::Sequence, message);
            }
            Err(WireError::Io { source, .. }) if source.raw_os_error() == Some(libc::EAGAIN) => {
                let secs = self.hello_timeout.as_secs_f32();
                return self.refuse(ErrorCode::Other, format!("no hello within {secs} s"));
            }
            Err(e) => return self.recv_failed(e),
        };
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            let message = format!(
                "client speaks protocol {version}, server speaks \
                 {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            );
            return self.refuse(ErrorCode::Version, message);
        }
        self.pid = pid;
        tracing::debug!(pid, uid = cred.uid(), program, version, "client connected");
        let welcome = Message::Welcome {
            version,
            stack: describe_stack(),
        };
        self.send("welcome", &welcome, None)?;

        // 3. Requests, one at a time, until the client leaves or breaks the protocol.
        loop {
            let step = match wire::recv(&self.stream) {
                Ok((msg, None)) => self.handle(msg)?,
                Ok((_, Some(_))) => return self.refuse_unexpected_fd(),
                Err(e) => return self.recv_failed(e),
            };
            if let Step::End(end) = step {
                return Ok(end);
            }
        }
    }

    fn handle(&mut self, msg: Message) -> Result<Step, SessionError> {
        tracing::trace!(pid = self.pid, ?msg, "request");
        match msg {
            Message::CreateSocket {
                domain,
                ty,
                protocol,
            } => {
                self.create_socket(domain, ty, protocol)?;
                Ok(Step::Continue)
            }
            Message::CreateSockets {
                domain,
                ty,
                protocol,
                count,
            } => {
                self.create_sockets(domain, ty, protocol, count)?;
                Ok(Step::Continue)
            }
            other => {
                let message = format!("unexpected {} after the handshake", other.kind_name());
                self.refuse(ErrorCode::Sequence, message).map(Step::End)
            }
        }
    }

    /// Creates the socket and hands it over; the server's copy closes when this returns.
    fn create_socket(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<(), SessionError> {
        // The client's SOCK_CLOEXEC means nothing here; the server's copy must never leak
        // into a child, so it is always set. The receiver chooses its own flag.
        let ty = (ty & !libc::SOCK_CLOEXEC) | libc::SOCK_CLOEXEC;
        match sys::socket(domain, ty, protocol) {
            Ok(sock) => {
                tracing::debug!(pid = self.pid, domain, ty, protocol, "created socket");
                let reply = Message::SocketReply { errno: 0 };
                self.send("socket reply", &reply, Some(sock.as_fd()))?;
                self.sockets += 1;
                Ok(())
            }
            Err(errno) => {
                tracing::debug!(pid = self.pid, domain, ty, protocol, %errno, "socket failed");
                let reply = Message::SocketReply {
                    errno: errno as i32,
                };
                self.send("socket reply", &reply, None)
            }
        }
    }

    /// Creates up to `count` sockets and hands them over in one reply; the server's copies
    /// close when this returns.
    fn create_sockets(
        &mut self,
        domain: i32,
        ty: i32,
        protocol: i32,
        count: u8,
    ) -> Result<(), SessionError> {
        // As in `create_socket`: the server's copies are always close-on-exec.
        let ty = (ty & !libc::SOCK_CLOEXEC) | libc::SOCK_CLOEXEC;
        let kind = (domain, ty, protocol);
        let count = count.min(MAX_SOCKET_BATCH);

        // Made ahead of time first, then fresh ones for the rest.
        let mut made = self.take_prepared(kind, usize::from(count));
        let missing = count - made.len() as u8;
        let (fresh, errno) = make_batch(missing, || sys::socket(domain, ty, protocol));
        made.extend(fresh);
        tracing::debug!(
            pid = self.pid,
            domain,
            ty,
            protocol,
            asked = count,
            made = made.len(),
            errno,
            "created sockets"
        );
        let reply = Message::SocketsReply {
            count: made.len() as u8,
            errno,
        };
        let fds: Vec<_> = made.iter().map(AsFd::as_fd).collect();
        wire::send_with_fds(&self.stream, &reply, &fds).map_err(|source| SessionError::Send {
            what: "sockets reply",
            pid: self.pid,
            source,
        })?;
        self.sockets += made.len() as u64;
        drop(made);

        // The client is busy with this batch: make its next one now.
        if errno == 0 && self.prepare {
            self.prepare_batch(kind, count);
        }
        Ok(())
    }

    /// Up to `count` sockets of `kind` made ahead of time.
    fn take_prepared(&mut self, kind: Kind, count: usize) -> Vec<OwnedFd> {
        let Some(at) = self.prepared.iter().position(|(k, _)| *k == kind) else {
            return Vec::new();
        };
        let ready = &mut self.prepared[at].1;
        let keep = ready.len().saturating_sub(count);
        ready.split_off(keep)
    }

    /// Makes `count` sockets of `kind` for a later request, dropping the oldest kind kept
    /// when there are too many.
    fn prepare_batch(&mut self, kind: Kind, count: u8) {
        let at = match self.prepared.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                if self.prepared.len() == PREPARED_KINDS {
                    self.prepared.remove(0);
                }
                self.prepared.push((kind, Vec::new()));
                self.prepared.len() - 1
            }
        };
        let ready = &mut self.prepared[at].1;
        let missing = usize::from(count).saturating_sub(ready.len()) as u8;
        let (domain, ty, protocol) = kind;
        let (fresh, errno) = make_batch(missing, || sys::socket(domain, ty, protocol));
        ready.extend(fresh);
        if errno != 0 {
            tracing::debug!(
                pid = self.pid,
                errno,
                "no longer making sockets ahead of time"
            );
            self.prepare = false;
        }
    }

    fn set_recv_timeout(&self, timeout: Option<Duration>) -> Result<(), SessionError> {
        // A zero timeval means "no timeout" (socket(7)).
        let tv = TimeVal::from(libc::timeval {
            tv_sec: timeout.map_or(0, |t| t.as_secs() as libc::time_t),
            tv_usec: timeout.map_or(0, |t| t.subsec_micros() as libc::suseconds_t),
        });
        setsockopt(&self.stream, sockopt::ReceiveTimeout, &tv).map_err(SessionError::Timeout)
    }

    /// Ends the session after a failed receive, telling the client why when it is its fault.
    fn recv_failed(&self, err: WireError) -> Result<SessionEnd, SessionError> {
        match err {
            WireError::Closed if self.stopping.load(Ordering::SeqCst) => {
                let message = "server is shutting down".to_owned();
                let _ = self.refuse(ErrorCode::ShuttingDown, message);
                Ok(SessionEnd::ShuttingDown)
            }
            WireError::Closed => Ok(SessionEnd::Closed {
                sockets: self.sockets,
            }),
            WireError::Malformed(e) => self.refuse(ErrorCode::Malformed, e.to_string()),
            WireError::UnexpectedAncillary => self.refuse_unexpected_fd(),
            WireError::TruncatedFrame => {
                tracing::debug!(pid = self.pid, "client closed in the middle of a frame");
                Ok(SessionEnd::Closed {
                    sockets: self.sockets,
                })
            }
            source => Err(SessionError::Recv {
                pid: self.pid,
                source,
            }),
        }
    }

    fn refuse_unexpected_fd(&self) -> Result<SessionEnd, SessionError> {
        let message = "clients may not send descriptors".to_owned();
        self.refuse(ErrorCode::Malformed, message)
    }

    /// Sends `Error { code, message }` (best effort: the client may be gone already) and
    /// ends the session.
    fn refuse(&self, code: ErrorCode, message: String) -> Result<SessionEnd, SessionError> {
        tracing::debug!(pid = self.pid, %code, message, "ending session");
        let msg = Message::Error {
            code,
            message: message.clone(),
        };
        if let Err(e) = wire::send(&self.stream, &msg, None) {
            tracing::debug!(pid = self.pid, error = %e, "could not send the error");
        }
        Ok(SessionEnd::Refused { code, message })
    }

    fn send(
        &self,
        what: &'static str,
        msg: &Message,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), SessionError> {
        wire::send(&self.stream, msg, fd).map_err(|source| SessionError::Send {
            what,
            pid: self.pid,
            source,
        })
    }
}

/// Calls `make` up to `count` times (at most [`MAX_SOCKET_BATCH`]), stopping at the first
/// failure: the sockets made, and 0 or the errno that stopped the batch.
fn make_batch(count: u8, mut make: impl FnMut() -> Result<OwnedFd, Errno>) -> (Vec<OwnedFd>, i32) {
    let count = count.min(MAX_SOCKET_BATCH);
    let mut made = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        match make() {
            Ok(fd) => made.push(fd),
            Err(errno) => return (made, errno as i32),
        }
    }
    (made, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn silent_client_is_dropped_after_the_hello_timeout() {
        let (server, client) = UnixStream::pair().unwrap();
        let stopping = AtomicBool::new(false);
        let opts = ServeOptions::new();
        let timeout = Duration::from_millis(50);
        let end = Session::new(server, &opts, &stopping, timeout)
            .run()
            .unwrap();
        assert!(matches!(
            end,
            SessionEnd::Refused {
                code: ErrorCode::Other,
                ..
            }
        ));
        let (msg, _) = wire::recv(&client).unwrap();
        assert!(
            matches!(
                msg,
                Message::Error {
                    code: ErrorCode::Other,
                    ..
                }
            ),
            "{msg:?}"
        );
    }

    #[test]
    fn shutdown_of_the_read_side_while_stopping_says_so() {
        let (server, mut client) = UnixStream::pair().unwrap();
        let stopping = AtomicBool::new(true);
        let opts = ServeOptions::new();
        server.shutdown(std::net::Shutdown::Read).unwrap();
        let end = Session::new(server, &opts, &stopping, HELLO_TIMEOUT)
            .run()
            .unwrap();
        assert_eq!(end, SessionEnd::ShuttingDown);
        let (msg, _) = wire::recv(&client).unwrap();
        assert!(matches!(
            msg,
            Message::Error {
                code: ErrorCode::ShuttingDown,
                ..
            }
        ));
        assert_eq!(
            client.read(&mut [0; 8]).unwrap(),
            0,
            "connection closed after"
        );
    }

    /// Runs a session on one end of a socket pair and shakes hands as `version` on the other.
    fn session_pair(version: u16) -> (UnixStream, std::thread::JoinHandle<SessionEnd>) {
        let (server, client) = UnixStream::pair().unwrap();
        let session = std::thread::spawn(move || {
            let stopping = AtomicBool::new(false);
            let opts = ServeOptions::new();
            Session::new(server, &opts, &stopping, HELLO_TIMEOUT)
                .run()
                .unwrap()
        });
        let hello = Message::Hello {
            version,
            pid: 1,
            program: "test".into(),
        };
        wire::send(&client, &hello, None).unwrap();
        (client, session)
    }

    #[test]
    fn batch_of_sockets_arrives_in_one_reply() {
        let (client, session) = session_pair(PROTOCOL_VERSION);
        let (welcome, _) = wire::recv(&client).unwrap();
        assert!(matches!(
            welcome,
            Message::Welcome {
                version: PROTOCOL_VERSION,
                ..
            }
        ));
        let request = Message::CreateSockets {
            domain: libc::AF_UNIX,
            ty: libc::SOCK_DGRAM | libc::SOCK_NONBLOCK,
            protocol: 0,
            count: MAX_SOCKET_BATCH,
        };
        wire::send(&client, &request, None).unwrap();
        let (reply, fds) = wire::recv_with_fds(&client).unwrap();
        let full = Message::SocketsReply {
            count: MAX_SOCKET_BATCH,
            errno: 0,
        };
        assert_eq!(reply, full);
        assert_eq!(fds.len(), usize::from(MAX_SOCKET_BATCH));
        for fd in &fds {
            let ty = getsockopt(fd, sockopt::SockType).unwrap();
            assert_eq!(ty, nix::sys::socket::SockType::Datagram);
            let fl = nix::fcntl::fcntl(std::os::fd::AsRawFd::as_raw_fd(fd), nix::fcntl::F_GETFL);
            assert_ne!(fl.unwrap() & libc::O_NONBLOCK, 0, "SOCK_NONBLOCK honoured");
        }
        drop(client);
        let end = session.join().unwrap();
        let sockets = u64::from(MAX_SOCKET_BATCH);
        assert_eq!(end, SessionEnd::Closed { sockets });
    }

    #[test]
    fn next_batch_is_made_ahead_of_time_and_topped_up() {
        let (client, session) = session_pair(PROTOCOL_VERSION);
        wire::recv(&client).unwrap();
        let ask = |count| {
            let request = Message::CreateSockets {
                domain: libc::AF_UNIX,
                ty: libc::SOCK_STREAM,
                protocol: 0,
                count,
            };
            wire::send(&client, &request, None).unwrap();
            let (reply, fds) = wire::recv_with_fds(&client).unwrap();
            assert_eq!(reply, Message::SocketsReply { count, errno: 0 });
            assert_eq!(fds.len(), usize::from(count));
            fds
        };
        // 2 made on request, 2 ahead; then 2 from those and 3 fresh.
        let mut all = ask(2);
        all.extend(ask(5));
        all.extend(ask(1));
        let inodes: std::collections::HashSet<_> = all
            .iter()
            .map(|fd| {
                nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(fd))
                    .unwrap()
                    .st_ino
            })
            .collect();
        assert_eq!(
            inodes.len(),
            8,
            "every socket handed over is a distinct one"
        );
        drop(client);
        assert_eq!(session.join().unwrap(), SessionEnd::Closed { sockets: 8 });
    }

    #[test]
    fn batch_that_fails_at_once_carries_only_the_errno() {
        let (client, session) = session_pair(PROTOCOL_VERSION);
        wire::recv(&client).unwrap();
        let request = Message::CreateSockets {
            domain: 4242,
            ty: libc::SOCK_STREAM,
            protocol: 0,
            count: 4,
        };
        wire::send(&client, &request, None).unwrap();
        let (reply, fds) = wire::recv_with_fds(&client).unwrap();
        let none = Message::SocketsReply {
            count: 0,
            errno: libc::EAFNOSUPPORT,
        };
        assert_eq!(reply, none);
        assert!(fds.is_empty());
        drop(client);
        session.join().unwrap();
    }

    #[test]
    fn batch_over_the_cap_is_refused_as_malformed() {
        let (client, session) = session_pair(PROTOCOL_VERSION);
        wire::recv(&client).unwrap();
        let mut frame = Message::CreateSockets {
            domain: libc::AF_UNIX,
            ty: libc::SOCK_STREAM,
            protocol: 0,
            count: 1,
        }
        .encode();
        *frame.last_mut().unwrap() = MAX_SOCKET_BATCH + 1;
        std::io::Write::write_all(&mut &client, &frame).unwrap();
        let (reply, fds) = wire::recv_with_fds(&client).unwrap();
        assert!(fds.is_empty());
        assert!(
            matches!(
                reply,
                Message::Error {
                    code: ErrorCode::Malformed,
                    ..
                }
            ),
            "{reply:?}"
        );
        assert!(matches!(
            session.join().unwrap(),
            SessionEnd::Refused {
                code: ErrorCode::Malformed,
                ..
            }
        ));
    }

    #[test]
    fn partial_batch_stops_at_the_first_failure() {
        let mut left = 3;
        let (made, errno) = make_batch(8, || {
            if left == 0 {
                return Err(Errno::EMFILE);
            }
            left -= 1;
            sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)
        });
        assert_eq!((made.len(), errno), (3, libc::EMFILE));

        let mut calls = 0;
        let (made, errno) = make_batch(u8::MAX, || {
            calls += 1;
            sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)
        });
        assert_eq!((made.len(), errno), (usize::from(MAX_SOCKET_BATCH), 0));
        assert_eq!(calls, usize::from(MAX_SOCKET_BATCH), "the cap holds");
    }

    #[test]
    fn version_1_clients_are_still_served() {
        let (client, session) = session_pair(1);
        let (welcome, _) = wire::recv(&client).unwrap();
        assert!(
            matches!(welcome, Message::Welcome { version: 1, .. }),
            "{welcome:?}"
        );
        let request = Message::CreateSocket {
            domain: libc::AF_UNIX,
            ty: libc::SOCK_STREAM,
            protocol: 0,
        };
        wire::send(&client, &request, None).unwrap();
        let (reply, fd) = wire::recv(&client).unwrap();
        assert_eq!(reply, Message::SocketReply { errno: 0 });
        assert!(fd.is_some());
        drop(client);
        assert_eq!(session.join().unwrap(), SessionEnd::Closed { sockets: 1 });
    }

    #[test]
    fn version_0_clients_are_refused() {
        let (client, session) = session_pair(0);
        let (reply, _) = wire::recv(&client).unwrap();
        assert!(
            matches!(
                reply,
                Message::Error {
                    code: ErrorCode::Version,
                    ..
                }
            ),
            "{reply:?}"
        );
        session.join().unwrap();
    }

    #[test]
    fn own_uid_and_root_are_always_allowed() {
        let opts = ServeOptions::new();
        assert!(opts.allows(0));
        assert!(opts.allows(geteuid().as_raw()));
        let others = ServeOptions {
            allowed_uids: vec![4242],
            ..ServeOptions::new()
        };
        assert!(others.allows(4242));
        assert!(!opts.allows(4242) || geteuid().as_raw() == 4242);
    }
}
