//! A session with a stack server, reconnecting as `RUMPHIJACK_RETRYCONNECT` says.
//!
//! A [`Client`] owns one connection. Many threads may share it (`Arc<Client>`); requests are
//! serialised, one in flight at a time, because the protocol matches replies to requests by
//! order alone.
//!
//! # Losing the server
//!
//! A connection is *lost* when the peer hangs up, a frame is malformed, the server sends
//! `Error`, or a reply breaks the protocol (a success without a descriptor, a descriptor on
//! an error, a descriptor that is not the socket that was asked for). A stream in any of
//! these states cannot be trusted to be in step, so it is closed. Then the [`RetryPolicy`]
//! decides, within the call that noticed the loss:
//!
//! * `Never`: this call and every later one fail with `ENOTCONN`.
//! * `Die`: this call and every later one return [`CallError::Die`]; the caller ends the
//!   program, as NetBSD's rumphijack does.
//! * `Once`: one reconnect attempt; if it fails, the client is dead (`ENOTCONN`).
//! * `For(d)`: attempts spaced by [`Backoff`] until `d` has passed since the loss.
//! * `Forever`: attempts until the server is back; the call (and every thread waiting to
//!   make one) blocks meanwhile.
//!
//! A client made with [`Client::from_stream`] has no address to go back to and is dead after
//! a loss whatever the policy (`Die` still means `Die`).
//!
//! # Re-sending after a reconnect
//!
//! The request that was in flight may or may not have reached the old server. It is sent
//! again on the new connection only if doing it twice cannot be observed: see
//! [`Request::safe_to_resend`]. `CreateSocket` and `CreateSockets` qualify, because a socket
//! created by the old server either reached us (and then there was no loss) or died with the
//! connection.
//!
//! # Batches
//!
//! [`Client::create_sockets`] asks for several sockets of one kind in one round trip
//! (protocol version 2). On a connection to a version 1 server it asks for one socket the old
//! way, so callers need not care which server they reached.
//! A request that leaves state behind on the server would return `ENOTCONN` instead.
//!
//! # A batch asked for ahead
//!
//! [`Client::send_ahead`] sends a `CreateSockets` request and returns at once; the server
//! makes the sockets while the caller goes on, and [`Client::take_ahead`] collects them
//! later, waiting only if they have not arrived yet. At most one such request is outstanding.
//! Replies come in request order, so any other request first reads that reply and keeps it
//! for `take_ahead`; a loss found while reading it is handled by whichever request comes next,
//! as the policy says. Sockets asked for ahead on a connection that is then lost die with it.
//!
//! # Notices
//!
//! The program's user is told, through the notice sink (stderr by default), when the
//! connection is lost, at most every [`STILL_TRYING_EVERY`] while reconnecting, and when it is
//! back. The same events are logged with `tracing`.
//!
//! # Limitations
//!
//! * A slow request holds up every other thread's request on the same client. Socket
//!   creation is fast; requests that can block (a `connect` to a slow host) will need one
//!   connection per caller or tagged replies.
//! * A reconnect attempt may overrun the `For(d)` deadline by up to the handshake timeout
//!   (10 s) when a server accepts the connection but never answers.
//! * Every received descriptor is checked with `getsockopt(SO_DOMAIN)`, `getsockopt(SO_TYPE)`
//!   and `fcntl(F_GETFL)`: three extra system calls per socket, the price of never handing a
//!   program a descriptor other than the socket it asked for.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::protocol::{
    ErrorCode, Message, BATCH_PROTOCOL_VERSION, MAX_SOCKET_BATCH, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use crate::retry::{Backoff, RetryPolicy};
use crate::url::ServerUrl;
use crate::wire::{self, WireError};
use crate::{retry, sys};

/// How long the server has to answer `Hello`. Requests themselves have no timeout: a server
/// may legitimately take long (a blocking operation in its stack).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest interval between two "still trying" notices.
pub const STILL_TRYING_EVERY: Duration = Duration::from_secs(120);

/// How many times one call re-sends its request after reconnecting, so that a server that
/// breaks every connection cannot keep a call (and the connection lock) forever.
const MAX_RESENDS: u32 = 3;

/// Who the client acts for, announced to the server in `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Pid of the program.
    pub pid: u32,
    /// Short name of the program.
    pub program: String,
}

impl Identity {
    /// The calling process: its pid and the file name of its executable (from
    /// `/proc/self/exe`, else `argv[0]`).
    pub fn of_current_process() -> Identity {
        let base = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let program = std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|exe| base(&exe))
            .or_else(|| std::env::args_os().next().and_then(|a| base(Path::new(&a))))
            .unwrap_or_else(|| "unknown".to_owned());
        Identity {
            pid: std::process::id(),
            program,
        }
    }
}

/// Why a request did not produce a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The error the program's call returns, unchanged (the server's errno, or `ENOTCONN`
    /// when the server is gone).
    #[error("{}", io::Error::from_raw_os_error(*.0))]
    Errno(i32),
    /// The server is gone and the policy is `die`: the caller must terminate the program.
    #[error("connection to the stack server lost and RUMPHIJACK_RETRYCONNECT=die")]
    Die,
}

/// The server a client talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A server reached through its URL.
    Url(ServerUrl),
    /// An in-process server on the other end of a socket pair.
    Embedded,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(url) => url.fmt(f),
            Endpoint::Embedded => f.write_str("the embedded server"),
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// connect(2) failed.
    #[error("{}", describe_connect_failure(url, source))]
    Connect {
        /// The server.
        url: Endpoint,
        /// What connect(2) returned.
        source: io::Error,
    },
    /// The server answered `Hello` with `Error`, or with a protocol version this client does
    /// not speak.
    #[error("{url} refused the session: {code}: {message}")]
    Refused {
        /// The server.
        url: Endpoint,
        /// Class of the refusal.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// Sending `Hello` or receiving the answer failed.
    #[error("handshake with {url} failed")]
    Handshake {
        /// The server.
        url: Endpoint,
        /// What went wrong on the wire.
        source: WireError,
    },
    /// The server accepted the connection but did not answer `Hello` in time.
    #[error("{url} did not answer the handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    HandshakeTimeout {
        /// The server.
        url: Endpoint,
    },
    /// The server answered `Hello` with something other than `Welcome` or `Error`.
    #[error("{url} answered the handshake with {reply}")]
    UnexpectedReply {
        /// The server.
        url: Endpoint,
        /// What it sent.
        reply: String,
    },
    /// The handshake timeout could not be set or cleared on the socket.
    #[error("cannot set the handshake timeout on the connection to {url}")]
    Timeout {
        /// The server.
        url: Endpoint,
        /// What setsockopt(SO_RCVTIMEO) returned.
        source: io::Error,
    },
}

fn describe_connect_failure(url: &Endpoint, err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOENT) => format!("no server at {url} (the socket does not exist)"),
        Some(libc::ECONNREFUSED) => format!("no server listening at {url}"),
        Some(libc::EACCES | libc::EPERM) => format!("not allowed to connect to {url}"),
        _ => format!("cannot connect to {url}"),
    }
}

/// Prepares each new connection to the server before its handshake, the first one and every
/// reconnect: the preload library moves it to a descriptor number programs do not use and
/// records which socket it is. An error fails that connection attempt.
pub type ConnectionSetup = Arc<dyn Fn(UnixStream) -> io::Result<UnixStream> + Send + Sync>;

/// A session with a stack server. See the module docs for what happens when it is lost.
pub struct Client {
    endpoint: Endpoint,
    setup: Option<ConnectionSetup>,
    retry: RetryPolicy,
    id: Identity,
    conn: Mutex<Conn>,
    /// Connections made so far: 1, plus one per reconnect.
    connections: AtomicU64,
    /// Set by the thread holding `conn` from the moment its request finds the connection
    /// lost until it has reconnected or given up, so that others can tell without the lock.
    recovering: AtomicBool,
    /// Kept apart from `conn` so that reading it never waits for a request or a reconnect.
    stack: Mutex<String>,
    notice: Box<dyn Fn(&str) + Send + Sync>,
}

enum Conn {
    /// Connected; the protocol version the server agreed to; the batch asked for ahead.
    Up(UnixStream, u16, Option<Box<Ahead>>),
    /// Lost for good: no address to reconnect to, or the policy said stop.
    Dead,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("retry", &self.retry)
            .field("id", &self.id)
            .field("stack", &*lock(&self.stack))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `url` and does the handshake. A failure here is returned, never retried:
    /// the policy is about losing a server, not about finding one at start-up.
    pub fn connect(
        url: ServerUrl,
        retry: RetryPolicy,
        id: Identity,
    ) -> Result<Client, ConnectError> {
        let (stream, welcome) = open(&url, &id, None)?;
        tracing::info!(%url, stack = %welcome.stack, "connected to stack server");
        Ok(Client::new(Endpoint::Url(url), stream, welcome, retry, id))
    }

    /// Like [`Client::connect`], but every connection, this one and each reconnect, passes
    /// through `setup` before the handshake.
    pub fn connect_with_setup(
        url: ServerUrl,
        retry: RetryPolicy,
        id: Identity,
        setup: ConnectionSetup,
    ) -> Result<Client, ConnectError> {
        let (stream, welcome) = open(&url, &id, Some(&setup))?;
        tracing::info!(%url, stack = %welcome.stack, "connected to stack server");
        let mut client = Client::new(Endpoint::Url(url), stream, welcome, retry, id);
        client.setup = Some(setup);
        Ok(client)
    }

    /// Uses an already connected stream, typically one end of a socket pair whose other end
    /// an in-process server serves. Such a client cannot reconnect.
    pub fn from_stream(
        stream: UnixStream,
        retry: RetryPolicy,
        id: Identity,
    ) -> Result<Client, ConnectError> {
        let welcome = handshake(&stream, &Endpoint::Embedded, &id)?;
        tracing::info!(stack = %welcome.stack, "connected to embedded stack server");
        Ok(Client::new(Endpoint::Embedded, stream, welcome, retry, id))
    }

    fn new(
        endpoint: Endpoint,
        stream: UnixStream,
        welcome: Welcome,
        retry: RetryPolicy,
        id: Identity,
    ) -> Client {
        Client {
            endpoint,
            setup: None,
            retry,
            id,
            conn: Mutex::new(Conn::Up(stream, welcome.version, None)),
            connections: AtomicU64::new(1),
            recovering: AtomicBool::new(false),
            stack: Mutex::new(welcome.stack),
            notice: Box::new(|line| eprintln!("rumpclient: {line}")),
        }
    }

    /// The server's description of its stack, from the latest handshake.
    pub fn stack(&self) -> String {
        lock(&self.stack).clone()
    }

    /// The server's URL; `None` for an embedded server.
    pub fn url(&self) -> Option<&ServerUrl> {
        match &self.endpoint {
            Endpoint::Url(url) => Some(url),
            Endpoint::Embedded => None,
        }
    }

    /// The reconnect policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Sets where connection notices go (default: a line on stderr, prefixed `rumpclient: `).
    pub fn set_notice_sink(&mut self, sink: Box<dyn Fn(&str) + Send + Sync>) {
        self.notice = sink;
    }

    /// socket(2) in the server's stack. `ty` may include `SOCK_NONBLOCK`; `SOCK_CLOEXEC` is
    /// stripped before sending, since it concerns the receiving process only (the returned
    /// descriptor is close-on-exec here in any case).
    pub fn create_socket(&self, domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, CallError> {
        let request = Request::CreateSocket {
            domain,
            ty: ty & !libc::SOCK_CLOEXEC,
            protocol,
        };
        match self.call(&request)? {
            Reply::Socket(fd) => Ok(fd),
            Reply::Sockets(_) => unreachable!("create-socket is answered with one socket"),
        }
    }

    /// Up to `count` sockets as [`Client::create_socket`] makes them, in one round trip;
    /// `count` is capped at [`MAX_SOCKET_BATCH`] and raised to 1. The result holds at least
    /// one socket: fewer than asked when the server's socket(2) failed midway (the error is
    /// dropped: the next request meets it again), and `Err` with that error when it failed
    /// at the first. A version 1 server is asked for one socket.
    pub fn create_sockets(
        &self,
        domain: i32,
        ty: i32,
        protocol: i32,
        count: usize,
    ) -> Result<Vec<OwnedFd>, CallError> {
        let request = Request::CreateSockets {
            domain,
            ty: ty & !libc::SOCK_CLOEXEC,
            protocol,
            count: count.clamp(1, usize::from(MAX_SOCKET_BATCH)) as u8,
        };
        match self.call(&request)? {
            Reply::Socket(fd) => Ok(vec![fd]),
            Reply::Sockets(fds) => Ok(fds),
        }
    }

    /// Asks for up to `count` sockets as [`Client::create_sockets`] would, without waiting
    /// for them: [`Client::take_ahead`] collects them. Returns false, having sent nothing,
    /// when a batch is already asked for, another thread holds the connection, the connection
    /// is down, or the server speaks protocol version 1.
    pub fn send_ahead(&self, domain: i32, ty: i32, protocol: i32, count: usize) -> bool {
        let Ok(mut conn) = self.conn.try_lock() else {
            return false;
        };
        let Conn::Up(stream, version, ahead) = &mut *conn else {
            return false;
        };
        if ahead.is_some() || *version < BATCH_PROTOCOL_VERSION {
            return false;
        }
        let request = Request::CreateSockets {
            domain,
            ty: ty & !libc::SOCK_CLOEXEC,
            protocol,
            count: count.clamp(1, usize::from(MAX_SOCKET_BATCH)) as u8,
        };
        let sent = wire::send(stream, &request.message(), None);
        let reply = match sent {
            Ok(()) => None,
            // The stream may hold part of a frame now: the next request finds it lost.
            Err(e) => Some(Err(Lost::Wire(e))),
        };
        *ahead = Some(Box::new(Ahead { request, reply }));
        true
    }

    /// The sockets of the batch asked for ahead, if it was of this kind (`ty` without
    /// `SOCK_CLOEXEC`) and on the current connection; waits for them if they have not come
    /// yet. `None` otherwise, and when the connection turned out to be lost: the caller then
    /// asks the usual way, and that request applies the retry policy.
    pub fn take_ahead(
        &self,
        domain: i32,
        ty: i32,
        protocol: i32,
    ) -> Option<Result<Vec<OwnedFd>, CallError>> {
        let mut conn = lock(&self.conn);
        let Conn::Up(stream, _, ahead) = &mut *conn else {
            return None;
        };
        let wanted = ahead.as_ref().is_some_and(|a| {
            let Request::CreateSockets {
                domain: d,
                ty: t,
                protocol: p,
                ..
            } = a.request
            else {
                return false;
            };
            (d, t, p) == (domain, ty & !libc::SOCK_CLOEXEC, protocol)
        });
        if !wanted {
            return None;
        }
        let taken = ahead.as_mut().map(|a| {
            a.read_reply(stream);
            a.reply.take()
        });
        match taken.flatten() {
            Some(Ok(Ok(Reply::Sockets(fds)))) => {
                *ahead = None;
                Some(Ok(fds))
            }
            Some(Ok(Ok(Reply::Socket(fd)))) => {
                *ahead = None;
                Some(Ok(vec![fd]))
            }
            Some(Ok(Err(errno))) => {
                *ahead = None;
                Some(Err(CallError::Errno(errno)))
            }
            // Kept for the next request, which handles the loss.
            Some(Err(lost)) => {
                if let Some(a) = ahead.as_mut() {
                    a.reply = Some(Err(lost));
                }
                None
            }
            None => None,
        }
    }

    /// Whether a batch asked for ahead has not been read yet (so that a reply is expected on
    /// the connection). False when another thread holds the connection.
    pub fn awaiting_ahead(&self) -> bool {
        let Ok(conn) = self.conn.try_lock() else {
            return false;
        };
        matches!(&*conn, Conn::Up(_, _, Some(a)) if a.reply.is_none())
    }

    /// How many connections this client has made: 1, plus one per reconnect. A caller that
    /// keeps sockets from the server can tell by a change that they came from an earlier
    /// connection, possibly to another stack.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// Whether sockets kept from this client may still be handed out: the connection is up
    /// and the server has sent nothing unasked (it only ever does so to say it is closing).
    /// Costs one poll(2). Never waits: while another thread's request is in flight, true
    /// unless that request has found the connection lost (it is then reconnecting or giving
    /// up); the request itself notices a hang-up as soon as it reads.
    pub fn connection_quiet(&self) -> bool {
        let Ok(mut conn) = self.conn.try_lock() else {
            return !self.recovering.load(Ordering::Acquire);
        };
        let Conn::Up(stream, _, ahead) = &mut *conn else {
            return false;
        };
        if !readable(stream) {
            return true;
        }
        // The reply to a batch asked for ahead is expected, not a sign of trouble: read it, and
        // look again.
        match ahead {
            Some(a) if a.reply.is_none() => {
                a.read_reply(stream);
                matches!(a.reply, Some(Ok(_))) && !readable(stream)
            }
            _ => false,
        }
    }

    /// The protocol version of the current connection; `None` when there is none.
    pub fn protocol_version(&self) -> Option<u16> {
        match &*lock(&self.conn) {
            Conn::Up(_, version, _) => Some(*version),
            Conn::Dead => None,
        }
    }

    /// Sends `request` and reads its reply, handling a loss as the policy says.
    fn call(&self, request: &Request) -> Result<Reply, CallError> {
        let mut conn = lock(&self.conn);
        let mut resends = 0;
        loop {
            let Conn::Up(stream, version, ahead) = &mut *conn else {
                return Err(self.dead_error());
            };
            // The reply to a batch asked for ahead comes first: keep it for take_ahead.
            let outcome = match settle(stream, ahead) {
                Ok(()) => exchange(stream, &request.for_version(*version)),
                Err(lost) => Err(lost),
            };
            let lost = match outcome {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(errno)) => return Err(CallError::Errno(errno)),
                Err(lost) => lost,
            };

            // Close the broken stream before anything else, so the server sees the hang-up
            // even if reconnecting takes long.
            self.recovering.store(true, Ordering::Release);
            *conn = Conn::Dead;
            let recovered = self.recover(&lost);
            if let Some((stream, version)) = recovered {
                *conn = Conn::Up(stream, version, None);
                self.connections.fetch_add(1, Ordering::AcqRel);
            }
            self.recovering.store(false, Ordering::Release);
            if matches!(*conn, Conn::Dead) {
                return Err(self.dead_error());
            }

            if !request.safe_to_resend() || resends == MAX_RESENDS {
                tracing::debug!(?request, resends, "not re-sending after reconnect");
                return Err(CallError::Errno(libc::ENOTCONN));
            }
            resends += 1;
            tracing::debug!(?request, "re-sending after reconnect");
        }
    }

    fn dead_error(&self) -> CallError {
        match self.retry {
            RetryPolicy::Die => CallError::Die,
            _ => CallError::Errno(libc::ENOTCONN),
        }
    }

    fn notice(&self, line: &str) {
        (self.notice)(line);
    }

    /// Decides what a loss means under the policy; returns a new connection and its protocol
    /// version, or `None` when the client is now dead.
    fn recover(&self, lost: &Lost) -> Option<(UnixStream, u16)> {
        let endpoint = &self.endpoint;
        tracing::info!(server = %endpoint, error = %lost, policy = %self.retry, "connection lost");
        let url = match (&self.endpoint, self.retry) {
            (_, RetryPolicy::Die) => {
                self.notice(&format!(
                    "connection to {endpoint} lost: {lost}; terminating the program \
                     ({}=die)",
                    retry::RUMPHIJACK_RETRYCONNECT
                ));
                return None;
            }
            (_, RetryPolicy::Never) => {
                self.notice(&format!(
                    "connection to {endpoint} lost: {lost}; not reconnecting ({} is unset); \
                     socket calls now fail with ENOTCONN",
                    retry::RUMPHIJACK_RETRYCONNECT
                ));
                return None;
            }
            (Endpoint::Embedded, _) => {
                self.notice(&format!(
                    "connection to {endpoint} lost: {lost}; an embedded server cannot be \
                     reconnected; socket calls now fail with ENOTCONN"
                ));
                return None;
            }
            (Endpoint::Url(url), policy) => {
                self.notice(&format!(
                    "connection to {url} lost: {lost}; reconnecting ({}={policy})",
                    retry::RUMPHIJACK_RETRYCONNECT
                ));
                url
            }
        };
        self.reconnect(url)
    }

    /// Tries to reach `url` again until the policy gives up.
    fn reconnect(&self, url: &ServerUrl) -> Option<(UnixStream, u16)> {
        let lost_at = Instant::now();
        let mut last_notice = lost_at;
        let mut backoff = Backoff::new();
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            let error = match open(url, &self.id, self.setup.as_ref()) {
                Ok((stream, Welcome { version, stack })) => {
                    let secs = lost_at.elapsed().as_secs_f64();
                    tracing::info!(%url, %stack, attempts, secs, "reconnected to stack server");
                    self.notice(&format!(
                        "reconnected to {url} after {secs:.1}s; stack: {stack}"
                    ));
                    *lock(&self.stack) = stack;
                    return Some((stream, version));
                }
                Err(e) => error_chain(&e),
            };
            tracing::debug!(%url, attempts, %error, "reconnect attempt failed");

            // How long to wait before the next attempt, or stop.
            let elapsed = lost_at.elapsed();
            let delay = match self.retry {
                RetryPolicy::Forever => Some(backoff.next_delay()),
                RetryPolicy::For(limit) if elapsed < limit => {
                    Some(backoff.next_delay().min(limit - elapsed))
                }
                _ => None,
            };
            let Some(delay) = delay else {
                let secs = elapsed.as_secs_f64();
                tracing::info!(%url, attempts, secs, %error, "giving up reconnecting");
                self.notice(&format!(
                    "giving up on {url} after {attempts} attempt(s), {secs:.1}s: {error}; \
                     socket calls now fail with ENOTCONN"
                ));
                return None;
            };
            std::thread::sleep(delay);

            if last_notice.elapsed() >= STILL_TRYING_EVERY {
                last_notice = Instant::now();
                let secs = lost_at.elapsed().as_secs();
                tracing::info!(%url, attempts, secs, %error, "still trying to reconnect");
                self.notice(&format!(
                    "still trying to reach {url} after {attempts} attempts, {secs}s: {error}"
                ));
            }
        }
    }
}

/// Locks a mutex whether or not a thread panicked while holding it: the data behind these
/// locks is valid at every point a panic could occur.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error and its causes, joined with ": ", for one-line notices.
pub fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// What the server said in `Welcome`.
#[derive(Debug)]
struct Welcome {
    /// The protocol version of the session.
    version: u16,
    /// The server's description of its stack.
    stack: String,
}

/// Connects to `url`, passes the stream through `setup`, and does the handshake.
fn open(
    url: &ServerUrl,
    id: &Identity,
    setup: Option<&ConnectionSetup>,
) -> Result<(UnixStream, Welcome), ConnectError> {
    let endpoint = || Endpoint::Url(url.clone());
    let connect_error = |source| ConnectError::Connect {
        url: endpoint(),
        source,
    };
    let mut stream = UnixStream::connect(url.path()).map_err(connect_error)?;
    if let Some(setup) = setup {
        stream = setup(stream).map_err(connect_error)?;
    }
    let welcome = handshake(&stream, &endpoint(), id)?;
    Ok((stream, welcome))
}

/// Sends `Hello` and waits (at most [`HANDSHAKE_TIMEOUT`]) for `Welcome`.
fn handshake(stream: &UnixStream, url: &Endpoint, id: &Identity) -> Result<Welcome, ConnectError> {
    let timeout_err = |source| ConnectError::Timeout {
        url: url.clone(),
        source,
    };
    let wire_err = |source| ConnectError::Handshake {
        url: url.clone(),
        source,
    };

    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(timeout_err)?;
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        pid: id.pid,
        program: id.program.clone(),
    };
    if let Err(send_error) = wire::send(stream, &hello, None) {
        // A server that refuses a peer (SO_PEERCRED) writes its reason and closes without
        // reading our hello; the reason is still queued for us, and is the better error.
        if let Ok((Message::Error { code, message }, _)) = wire::recv(stream) {
            return Err(ConnectError::Refused {
                url: url.clone(),
                code,
                message,
            });
        }
        return Err(wire_err(send_error));
    }
    let (reply, fd) = wire::recv(stream).map_err(|e| match &e {
        WireError::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock => {
            ConnectError::HandshakeTimeout { url: url.clone() }
        }
        _ => wire_err(e),
    })?;
    // Requests may block for as long as the server needs.
    stream.set_read_timeout(None).map_err(timeout_err)?;

    if fd.is_some() {
        return Err(ConnectError::UnexpectedReply {
            url: url.clone(),
            reply: format!("{} with a descriptor attached", reply.kind_name()),
        });
    }
    match reply {
        Message::Welcome { version, stack }
            if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) =>
        {
            Ok(Welcome { version, stack })
        }
        Message::Welcome { version, .. } => Err(ConnectError::Refused {
            url: url.clone(),
            code: ErrorCode::Version,
            message: format!(
                "server speaks protocol version {version}, this client {PROTOCOL_VERSION}"
            ),
        }),
        Message::Error { code, message } => Err(ConnectError::Refused {
            url: url.clone(),
            code,
            message,
        }),
        other => Err(ConnectError::UnexpectedReply {
            url: url.clone(),
            reply: other.kind_name().to_owned(),
        }),
    }
}

/// A request a client sends after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    CreateSocket {
        domain: i32,
        ty: i32,
        protocol: i32,
    },
    CreateSockets {
        domain: i32,
        ty: i32,
        protocol: i32,
        count: u8,
    },
}

/// The successful result of a request.
#[derive(Debug)]
enum Reply {
    Socket(OwnedFd),
    /// At least one socket.
    Sockets(Vec<OwnedFd>),
}

/// Why a connection can no longer be used.
#[derive(Debug)]
enum Lost {
    /// Sending or receiving failed, or a frame was malformed.
    Wire(WireError),
    /// The server ended the session with `Error`.
    Server { code: ErrorCode, message: String },
    /// A well-formed reply that breaks the protocol.
    Violation(String),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Wire(e) => e.fmt(f),
            Lost::Server { code, message } => {
                write!(f, "server ended the session: {code}: {message}")
            }
            Lost::Violation(what) => write!(f, "protocol violation: {what}"),
        }
    }
}

impl Request {
    fn message(&self) -> Message {
        match *self {
            Request::CreateSocket {
                domain,
                ty,
                protocol,
            } => Message::CreateSocket {
                domain,
                ty,
                protocol,
            },
            Request::CreateSockets {
                domain,
                ty,
                protocol,
                count,
            } => Message::CreateSockets {
                domain,
                ty,
                protocol,
                count,
            },
        }
    }

    /// The request as a server speaking `version` understands it: a batch becomes a single
    /// socket for a version 1 server.
    fn for_version(&self, version: u16) -> Request {
        match *self {
            Request::CreateSockets {
                domain,
                ty,
                protocol,
                ..
            } if version < BATCH_PROTOCOL_VERSION => Request::CreateSocket {
                domain,
                ty,
                protocol,
            },
            other => other,
        }
    }

    /// True when sending the request again on a new connection cannot do anything twice:
    /// whatever the old server did for it ended with the old connection.
    ///
    /// `CreateSocket` qualifies: a socket the old server created either reached us (and the
    /// call succeeded) or was closed with the connection. A future request that leaves state
    /// on the server (a bound port, a registration) must return `false`, so that its caller
    /// gets `ENOTCONN` instead of a possible duplicate.
    fn safe_to_resend(&self) -> bool {
        match self {
            Request::CreateSocket { .. } | Request::CreateSockets { .. } => true,
        }
    }

    /// Reads the reply: `Ok(Ok(_))` success, `Ok(Err(errno))` the server's errno, `Err(_)` the
    /// reply breaks the session.
    fn interpret(&self, reply: Message, fds: Vec<OwnedFd>) -> Result<Result<Reply, i32>, Lost> {
        if let Message::Error { code, message } = reply {
            return Err(Lost::Server { code, message });
        }
        match *self {
            Request::CreateSocket { domain, ty, .. } => interpret_single(domain, ty, reply, fds),
            Request::CreateSockets {
                domain, ty, count, ..
            } => interpret_batch(domain, ty, count, reply, fds),
        }
    }
}

/// The reply to `CreateSocket`: `SocketReply` with one descriptor exactly when it succeeded.
fn interpret_single(
    domain: i32,
    ty: i32,
    reply: Message,
    fds: Vec<OwnedFd>,
) -> Result<Result<Reply, i32>, Lost> {
    let Message::SocketReply { errno } = reply else {
        return Err(Lost::Violation(format!(
            "{} in reply to create-socket",
            reply.kind_name()
        )));
    };
    // Dropping descriptors that should not be there closes them.
    let mut fds = fds.into_iter();
    match (errno, fds.next(), fds.len()) {
        (0, Some(fd), 0) => {
            check_socket(&fd, domain, ty).map_err(Lost::Violation)?;
            Ok(Ok(Reply::Socket(fd)))
        }
        (0, None, _) => Err(Lost::Violation(
            "socket reply reports success but carries no descriptor".into(),
        )),
        (0, Some(_), extra) => Err(Lost::Violation(format!(
            "socket reply carries {} descriptors",
            extra + 1
        ))),
        (errno, Some(_), _) => Err(Lost::Violation(format!(
            "socket reply reports errno {errno} but carries a descriptor"
        ))),
        (errno, None, _) => Ok(Err(errno)),
    }
}

/// The reply to `CreateSockets`: `SocketsReply` with as many descriptors as it announces, no
/// more than were asked for, each the socket asked for.
fn interpret_batch(
    domain: i32,
    ty: i32,
    asked: u8,
    reply: Message,
    fds: Vec<OwnedFd>,
) -> Result<Result<Reply, i32>, Lost> {
    let Message::SocketsReply { count, errno } = reply else {
        return Err(Lost::Violation(format!(
            "{} in reply to create-sockets",
            reply.kind_name()
        )));
    };
    if usize::from(count) != fds.len() || count > asked {
        return Err(Lost::Violation(format!(
            "sockets reply announces {count} of {asked} sockets but carries {} descriptors",
            fds.len()
        )));
    }
    if fds.is_empty() {
        return Ok(Err(errno));
    }
    for fd in &fds {
        check_socket(fd, domain, ty).map_err(Lost::Violation)?;
    }
    Ok(Ok(Reply::Sockets(fds)))
}

/// A batch asked for with [`Client::send_ahead`], and its reply once read: the sockets or the
/// server's errno, or why the connection is lost.
#[derive(Debug)]
struct Ahead {
    request: Request,
    reply: Option<Result<Result<Reply, i32>, Lost>>,
}

impl Ahead {
    /// Reads and checks the reply, unless it was read already.
    fn read_reply(&mut self, stream: &UnixStream) {
        if self.reply.is_none() {
            let read = wire::recv_with_fds(stream).map_err(Lost::Wire);
            self.reply = Some(read.and_then(|(reply, fds)| self.request.interpret(reply, fds)));
        }
    }
}

/// Brings the stream in step for a new request: reads the reply to the batch asked for ahead
/// (kept for `take_ahead`), or returns the loss found while reading it.
fn settle(stream: &UnixStream, ahead: &mut Option<Box<Ahead>>) -> Result<(), Lost> {
    let Some(a) = ahead else {
        return Ok(());
    };
    a.read_reply(stream);
    if matches!(a.reply, Some(Err(_))) {
        if let Some(Err(lost)) = ahead.take().and_then(|a| a.reply) {
            return Err(lost);
        }
    }
    Ok(())
}

/// Whether the server has sent something (or hung up): one poll(2) that does not wait.
fn readable(stream: &UnixStream) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        stream.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    !matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
        Ok(0)
    )
}

/// Sends one request and reads its reply.
fn exchange(stream: &UnixStream, request: &Request) -> Result<Result<Reply, i32>, Lost> {
    wire::send(stream, &request.message(), None).map_err(Lost::Wire)?;
    let (reply, fds) = wire::recv_with_fds(stream).map_err(Lost::Wire)?;
    request.interpret(reply, fds)
}

/// Checks that `fd` is a socket of the family and type that were asked for, with
/// `O_NONBLOCK` set exactly when `SOCK_NONBLOCK` was requested.
fn check_socket(fd: &OwnedFd, domain: i32, ty: i32) -> Result<(), String> {
    let sockopt = |name, what| {
        sys::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, name)
            .map_err(|e| format!("received descriptor: getsockopt({what}): {e}"))
    };
    let got_domain = sockopt(libc::SO_DOMAIN, "SO_DOMAIN")?;
    let got_type = sockopt(libc::SO_TYPE, "SO_TYPE")?;
    let want_type = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if got_domain != domain || got_type != want_type {
        return Err(format!(
            "received socket has family {got_domain} type {got_type}, \
             asked for family {domain} type {want_type}"
        ));
    }

    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| format!("received descriptor: fcntl(F_GETFL): {e}"))?;
    let nonblocking = flags & libc::O_NONBLOCK != 0;
    if nonblocking != (ty & libc::SOCK_NONBLOCK != 0) {
        return Err(format!(
            "received socket has O_NONBLOCK {}, asked for SOCK_NONBLOCK {}",
            if nonblocking { "set" } else { "clear" },
            if nonblocking { "clear" } else { "set" },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
