//! One client session: check the peer, shake hands, then create sockets on request.
//!
//! The protocol is in [`rumpclient::protocol`]. A session runs on one thread and blocks;
//! the thread's network namespace is the stack every socket of the session is created in.
//! Anything a client sends, however broken, ends at worst in an [`Message::Error`] reply
//! and a closed connection: the session never panics on input.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::geteuid;
use rumpclient::protocol::{ErrorCode, Message, PROTOCOL_VERSION};
use rumpclient::wire::{self, WireError};

use crate::netns::describe_stack;
use crate::sys;

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
                let message = format!("expected hello, got {}", kind_name(&other));
                return self.refuse(ErrorCode::Sequence, message);
            }
            Err(WireError::Io { source, .. }) if source.raw_os_error() == Some(libc::EAGAIN) => {
                let secs = self.hello_timeout.as_secs_f32();
                return self.refuse(ErrorCode::Other, format!("no hello within {secs} s"));
            }
            Err(e) => return self.recv_failed(e),
        };
        if version != PROTOCOL_VERSION {
            let message =
                format!("client speaks protocol {version}, server speaks {PROTOCOL_VERSION}");
            return self.refuse(ErrorCode::Version, message);
        }
        self.pid = pid;
        tracing::debug!(pid, uid = cred.uid(), program, "client connected");
        let welcome = Message::Welcome {
            version: PROTOCOL_VERSION,
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
            other => {
                let message = format!("unexpected {} after the handshake", kind_name(&other));
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

fn kind_name(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "hello",
        Message::Welcome { .. } => "welcome",
        Message::CreateSocket { .. } => "create-socket",
        Message::SocketReply { .. } => "socket reply",
        Message::Error { .. } => "error",
    }
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
