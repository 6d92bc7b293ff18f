//! The client's side of a relay, run by the supervisor for `RUMP_SERVER=tcp://…`.
//!
//! Each relayed socket is a pair of connected Unix-domain sockets: the program gets one end
//! (a stream pair for a stream socket, a `SOCK_SEQPACKET` pair for a datagram socket, which
//! keeps message boundaries), and the relay moves bytes between the other end and the real
//! socket on the server. The program's `read`, `write`, `send`, `recv`, `poll` and `epoll` on
//! its end are native calls; what only the server can answer (connect, bind, listen, accept,
//! names, options, addressed datagrams) the supervisor traps and passes to a [`Relayed`]
//! handle.
//!
//! A listening socket's end receives one byte per connection the server has accepted for
//! it, so `poll` reports it readable exactly when `accept` has something to return.
//!
//! Calls that wait (a blocking `connect`, `accept`, `recvfrom`) wait in `poll(2)` on a
//! descriptor, so a signal for the program interrupts them ([`crate::client`] callers map
//! `EINTR` as the supervisor's blocking operations do).
//!
//! # Limitations
//!
//! * A connection reset by the remote peer shows as end-of-file to the program's reads and
//!   `EPIPE` to its writes; `SO_ERROR` reports `ECONNRESET`.
//! * Datagrams that do not fit the send window are dropped, as a congested UDP path drops
//!   them.
//! * The sender's address of a datagram is known to `recvfrom`, not to `recvmsg`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rumpclient::retry::{Backoff, RetryPolicy};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::auth::{self, AuthError, Secret};
use crate::frame::{self, Frame, MAX_DATAGRAM};
use crate::sys::{self, Errno};
use crate::window::{Window, WINDOW};

/// Time allowed for TCP, TLS and authentication together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest data frame sent.
const CHUNK: u32 = frame::CHUNK as u32;

/// How often a half-closed socket is checked for the program's close.
const CLOSE_CHECK: Duration = Duration::from_millis(50);

/// Most datagram senders remembered per socket for `recvfrom`.
const MAX_SENDERS: usize = 1024;

/// Why the relay could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP failed.
    #[error("cannot reach relay server {addr}")]
    Tcp { addr: SocketAddr, source: io::Error },
    /// TLS or authentication failed.
    #[error("relay server {addr}")]
    Auth { addr: SocketAddr, source: AuthError },
    /// Nothing within [`CONNECT_TIMEOUT`].
    #[error("relay server {addr}: no answer within {}s", CONNECT_TIMEOUT.as_secs())]
    Timeout { addr: SocketAddr },
}

/// What a failed `open` means for the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Return this errno.
    Errno(Errno),
    /// The connection is gone and the policy is `die`.
    Die,
}

/// The relay connection of one supervisor, with reconnects as the retry policy says.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    secret: Secret,
    retry: RetryPolicy,
    tls: tokio_rustls::TlsConnector,
    conn: Mutex<Arc<Conn>>,
    /// Held by the thread that is reconnecting.
    reconnecting: Mutex<()>,
    /// A `once` reconnect has been spent on the current loss.
    spent: AtomicBool,
    stack: Mutex<String>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Relay {
    /// Connects and authenticates to the relay server at `addr`.
    pub fn connect(
        addr: SocketAddr,
        secret: Secret,
        retry: RetryPolicy,
    ) -> Result<Relay, ConnectError> {
        sys::keep_heap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("relay")
            .enable_all()
            .build()
            .map_err(|source| ConnectError::Tcp { addr, source })?;
        let tls = tokio_rustls::TlsConnector::from(
            auth::client_config().map_err(|source| ConnectError::Auth { addr, source })?,
        );
        let (conn, stack) = runtime.block_on(Conn::establish(addr, &secret, &tls))?;
        Ok(Relay {
            inner: Arc::new(Inner {
                runtime,
                addr,
                secret,
                retry,
                tls,
                conn: Mutex::new(conn),
                reconnecting: Mutex::new(()),
                spent: AtomicBool::new(false),
                stack: Mutex::new(stack),
            }),
        })
    }

    /// The server's description of its stack.
    pub fn stack(&self) -> String {
        lock(&self.inner.stack).clone()
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A live connection, reconnecting as the retry policy allows.
    fn live(&self) -> Result<Arc<Conn>, OpenError> {
        let inner = &self.inner;
        let current = lock(&inner.conn).clone();
        if current.alive.load(Ordering::SeqCst) {
            inner.spent.store(false, Ordering::SeqCst);
            return Ok(current);
        }

        // One thread reconnects; the others wait for its outcome. The table lock is not held
        // meanwhile, so calls on sockets of the lost connection still get their answers.
        let _reconnecting = lock(&inner.reconnecting);
        let latest = lock(&inner.conn).clone();
        if latest.alive.load(Ordering::SeqCst) {
            return Ok(latest);
        }
        let lost_at = latest.lost_at().unwrap_or_else(Instant::now);
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            let allowed = match inner.retry {
                RetryPolicy::Never => false,
                RetryPolicy::Die => return Err(OpenError::Die),
                RetryPolicy::Once => !inner.spent.swap(true, Ordering::SeqCst),
                RetryPolicy::Forever => true,
                RetryPolicy::For(limit) => lost_at.elapsed() < limit,
            };
            if !allowed {
                if attempts > 0 {
                    notice(&format!(
                        "giving up on relay server {} after {attempts} attempt(s) \
                         (RUMPHIJACK_RETRYCONNECT={}); socket calls now fail with ENOTCONN",
                        inner.addr, inner.retry
                    ));
                }
                return Err(OpenError::Errno(libc::ENOTCONN));
            }
            attempts += 1;
            let attempt = Conn::establish(inner.addr, &inner.secret, &inner.tls);
            match inner.runtime.block_on(attempt) {
                Ok((conn, stack)) => {
                    notice(&format!(
                        "reconnected to relay server {} after {:.1}s; stack: {stack}",
                        inner.addr,
                        lost_at.elapsed().as_secs_f64()
                    ));
                    *lock(&inner.stack) = stack;
                    *lock(&inner.conn) = conn.clone();
                    return Ok(conn);
                }
                Err(e) => debug!(error = %rumpclient::client::error_chain(&e), "reconnect failed"),
            }
            if inner.retry != RetryPolicy::Once {
                std::thread::sleep(backoff.next_delay());
            }
        }
    }

    /// socket(2) in the server's stack: the program's end of the new relayed socket.
    pub fn open(&self, domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, OpenError> {
        let conn = self.live()?;
        let _guard = self.inner.runtime.enter();
        conn.open(domain, ty, protocol).map_err(OpenError::Errno)
    }

    /// The relayed socket whose program end is the open file `fd` (a duplicate of the
    /// program's descriptor), if it is one.
    pub fn find(&self, fd: BorrowedFd<'_>) -> Option<Relayed> {
        let ino = sys::inode(fd).ok()?;
        let conn = lock(&self.inner.conn).clone();
        let sock = lock(&conn.sockets).by_inode.get(&ino).cloned()?;
        Some(Relayed { conn, sock })
    }
}

fn notice(text: &str) {
    eprintln!("rumphijack: {text}");
}

/// A server's answer: a value and bytes, or an errno.
type Answer = Result<(i64, Vec<u8>), Errno>;

/// An answer the waiting thread picks up; waiting happens in `poll(2)` on an eventfd, which
/// a signal interrupts.
#[derive(Debug)]
struct Completion {
    event: OwnedFd,
    value: Mutex<Option<Answer>>,
}

impl Completion {
    fn new() -> Result<Arc<Completion>, Errno> {
        // SAFETY: eventfd(2) takes plain integers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        Ok(Arc::new(Completion {
            // SAFETY: a fresh descriptor that nothing else owns.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
            value: Mutex::new(None),
        }))
    }

    fn complete(&self, value: Answer) {
        let mut slot = lock(&self.value);
        if slot.is_none() {
            *slot = Some(value);
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a local buffer.
            unsafe { libc::write(self.event.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }

    fn peek(&self) -> Option<Answer> {
        lock(&self.value).clone()
    }

    /// Waits for the answer; `Err(EINTR)` when a signal interrupts.
    fn wait(&self) -> Answer {
        loop {
            if let Some(value) = self.peek() {
                return value;
            }
            wait_readable(self.event.as_fd())?;
        }
    }
}

/// Waits in poll(2) until `fd` is readable (or hung up); `Err(EINTR)` on a signal.
pub fn wait_readable(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

/// What the relay writes into our end of a socket.
#[derive(Debug)]
enum Down {
    Data(Vec<u8>),
    Datagram(Vec<u8>, Vec<u8>),
    Eof,
    Failed(Errno),
}

/// How far a stream's connect has come.
#[derive(Debug, Clone)]
enum Connecting {
    Idle,
    Pending(Arc<Completion>),
    Connected,
}

/// A connection the server accepted, waiting for the program's `accept`.
#[derive(Debug)]
struct Accepted {
    program_end: OwnedFd,
    peer: Vec<u8>,
}

#[derive(Debug)]
struct LocalSock {
    id: u32,
    stream: bool,
    /// The domain of a UDP socket, whose sends are checked here as the kernel would
    /// ([`crate::udp`]).
    udp: Option<i32>,
    /// Our end.
    ours: Arc<AsyncFd<OwnedFd>>,
    program_inode: u64,
    /// Bytes we may still send the server.
    up: Arc<Window>,
    down: mpsc::UnboundedSender<Down>,
    connecting: Mutex<Connecting>,
    /// The server's answer to the socket's creation, when socket() did not wait for it.
    opening: Mutex<Option<Arc<Completion>>>,
    /// The pending error `SO_ERROR` reports (0 for none).
    error: AtomicI32,
    accepted: Mutex<VecDeque<Accepted>>,
    senders: Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl LocalSock {
    /// Stops the socket's tasks (they hold references to it, so dropping the table's
    /// reference alone would not end them).
    fn stop(&self) {
        self.up.close();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<u32, Arc<LocalSock>>,
    by_inode: HashMap<u64, Arc<LocalSock>>,
}

/// One TLS connection to the server and the sockets that live on it.
#[derive(Debug)]
struct Conn {
    tx: mpsc::UnboundedSender<Frame>,
    alive: AtomicBool,
    lost: Mutex<Option<Instant>>,
    pending: Mutex<HashMap<u32, Arc<Completion>>>,
    sockets: Mutex<Table>,
    next_id: AtomicU32,
    next_req: AtomicU32,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Conn {
    async fn establish(
        addr: SocketAddr,
        secret: &Secret,
        tls: &tokio_rustls::TlsConnector,
    ) -> Result<(Arc<Conn>, String), ConnectError> {
        let setup = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            crate::server::tune_tcp(&tcp);
            let mut stream =
                tls.connect(auth::server_name(), tcp)
                    .await
                    .map_err(|e| ConnectError::Auth {
                        addr,
                        source: AuthError::Io(e),
                    })?;
            let exported = auth::exported(stream.get_ref().1)
                .map_err(|source| ConnectError::Auth { addr, source })?;
            let stack = auth::client_handshake(&mut stream, secret, &exported)
                .await
                .map_err(|source| ConnectError::Auth { addr, source })?;
            Ok::<_, ConnectError>((stream, stack))
        };
        let (stream, stack) = tokio::time::timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| ConnectError::Timeout { addr })??;
        info!(%addr, %stack, "connected to relay server");

        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let conn = Arc::new(Conn {
            tx,
            alive: AtomicBool::new(true),
            lost: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            sockets: Mutex::new(Table::default()),
            next_id: AtomicU32::new(1),
            next_req: AtomicU32::new(1),
            tasks: Mutex::new(Vec::new()),
        });
        let writing = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let _ = frame::write_frames(&mut writer, &mut rx).await;
                conn.lose(addr, "the connection failed while sending");
            })
        };
        let reading = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let why = loop {
                    match frame::read_frame(&mut reader).await {
                        Ok(Some(frame)) => conn.dispatch(frame),
                        Ok(None) => break "the server closed the connection".to_string(),
                        Err(e) => break rumpclient::client::error_chain(&e),
                    }
                };
                conn.lose(addr, &why);
            })
        };
        lock(&conn.tasks).extend([writing, reading]);
        Ok((conn, stack))
    }

    fn lost_at(&self) -> Option<Instant> {
        *lock(&self.lost)
    }

    /// The connection is gone: every waiting call fails and every relayed socket ends.
    fn lose(&self, addr: SocketAddr, why: &str) {
        if !self.alive.swap(false, Ordering::SeqCst) {
            return;
        }
        *lock(&self.lost) = Some(Instant::now());
        notice(&format!(
            "lost the connection to relay server {addr}: {why}; its sockets are reset"
        ));
        for (_, waiting) in lock(&self.pending).drain() {
            waiting.complete(Err(libc::ECONNRESET));
        }
        let table = std::mem::take(&mut *lock(&self.sockets));
        for sock in table.by_id.values() {
            sock.error.store(libc::ECONNRESET, Ordering::SeqCst);
            if let Connecting::Pending(c) = &*lock(&sock.connecting) {
                c.complete(Err(libc::ECONNRESET));
            }
            let _ = sys::shutdown(sock.ours.get_ref().as_fd(), libc::SHUT_RDWR);
            sock.stop();
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    fn send(&self, frame: Frame) {
        let _ = self.tx.send(frame);
    }

    fn sock(&self, id: u32) -> Option<Arc<LocalSock>> {
        lock(&self.sockets).by_id.get(&id).cloned()
    }

    fn dispatch(self: &Arc<Self>, frame: Frame) {
        let id = frame.id();
        match frame {
            Frame::Reply {
                req,
                errno,
                value,
                data,
                ..
            } => {
                if let Some(waiting) = lock(&self.pending).remove(&req) {
                    waiting.complete(if errno == 0 {
                        Ok((value, data))
                    } else {
                        Err(errno)
                    });
                }
            }
            Frame::Credit { bytes, .. } => {
                if let Some(sock) = self.sock(id) {
                    sock.up.give(bytes);
                }
            }
            Frame::Incoming { conn, peer, .. } => self.incoming(id, conn, peer),
            Frame::Data { data, .. } => self.down(id, Down::Data(data)),
            Frame::DataFrom { addr, data, .. } => self.down(id, Down::Datagram(addr, data)),
            Frame::Eof { .. } => self.down(id, Down::Eof),
            Frame::Close { errno, .. } => self.down(id, Down::Failed(errno)),
            other => debug!(?other, "unexpected frame from the relay server"),
        }
    }

    fn down(&self, id: u32, what: Down) {
        if let Some(sock) = self.sock(id) {
            let _ = sock.down.send(what);
        }
    }

    /// A request and the completion its answer will fill.
    fn request(&self, make: impl FnOnce(u32) -> Frame) -> Result<Arc<Completion>, Errno> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(libc::ECONNRESET);
        }
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let completion = Completion::new()?;
        lock(&self.pending).insert(req, completion.clone());
        self.send(make(req));
        // The connection may have been lost between the check and the insertion.
        if !self.alive.load(Ordering::SeqCst) {
            completion.complete(Err(libc::ECONNRESET));
        }
        Ok(completion)
    }

    fn call(&self, make: impl FnOnce(u32) -> Frame) -> Answer {
        self.request(make)?.wait()
    }

    fn open(self: &Arc<Self>, domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, Errno> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let opening = self.request(|req| Frame::Open {
            id,
            req,
            domain,
            ty,
            protocol,
        })?;
        // A kind of socket every server makes is not waited for: the answer would cost a
        // round trip per socket, and the only failures left are the server running out of
        // descriptors or memory, which the socket's first call then reports. Anything else
        // waits, so the program sees the server's errno from socket() itself.
        let certain = ordinary_socket(domain, ty, protocol);
        if !certain {
            opening.wait()?;
        }
        let stream = ty & 0xf == libc::SOCK_STREAM;
        let udp = (certain && !stream).then_some(domain);
        let attached = self.attach(id, stream, udp).and_then(|program_end| {
            // O_NONBLOCK belongs to the open file the program gets (SOCK_CLOEXEC is the
            // descriptor's, set when it is installed).
            if ty & libc::SOCK_NONBLOCK != 0 {
                sys::set_nonblocking(program_end.as_fd(), true)?;
            }
            Ok(program_end)
        });
        match attached {
            Ok(program_end) => {
                if certain {
                    if let Some(sock) = self.sock(id) {
                        *lock(&sock.opening) = Some(opening);
                    }
                }
                Ok(program_end)
            }
            Err(e) => {
                self.send(Frame::Close { id, errno: 0 });
                Err(e)
            }
        }
    }

    /// Makes the socket pair for relayed socket `id` and starts moving its data.
    fn attach(self: &Arc<Self>, id: u32, stream: bool, udp: Option<i32>) -> Result<OwnedFd, Errno> {
        let kind = if stream {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_SEQPACKET
        };
        let (program_end, ours) = sys::socketpair(kind)?;
        sys::set_nonblocking(ours.as_fd(), true)?;
        let program_inode = sys::inode(program_end.as_fd())?;
        let ours = Arc::new(sys::register(ours)?);
        let (down, rx) = mpsc::unbounded_channel();
        let sock = Arc::new(LocalSock {
            id,
            stream,
            udp,
            ours,
            program_inode,
            up: Arc::new(Window::new(WINDOW)),
            down,
            connecting: Mutex::new(Connecting::Idle),
            opening: Mutex::new(None),
            error: AtomicI32::new(0),
            accepted: Mutex::new(VecDeque::new()),
            senders: Mutex::new(VecDeque::new()),
            tasks: Mutex::new(Vec::new()),
        });
        {
            let mut table = lock(&self.sockets);
            table.by_id.insert(id, sock.clone());
            table.by_inode.insert(program_inode, sock.clone());
        }
        let up = tokio::spawn(uplink(self.clone(), sock.clone()));
        let down = tokio::spawn(downlink(self.clone(), sock.clone(), rx));
        lock(&sock.tasks).extend([up, down]);
        Ok(program_end)
    }

    fn forget(&self, sock: &LocalSock) {
        let mut table = lock(&self.sockets);
        table.by_id.remove(&sock.id);
        table.by_inode.remove(&sock.program_inode);
        drop(table);
        sock.stop();
    }

    fn incoming(self: &Arc<Self>, listen_id: u32, conn: u32, peer: Vec<u8>) {
        let Some(listener) = self.sock(listen_id) else {
            return self.send(Frame::Close { id: conn, errno: 0 });
        };
        match self.attach(conn, true, None) {
            Ok(program_end) => {
                lock(&listener.accepted).push_back(Accepted { program_end, peer });
                // One byte per waiting connection makes the listener's end readable.
                let _ = sys::send(listener.ours.get_ref().as_fd(), &[0]);
            }
            Err(e) => {
                debug!(errno = e, "cannot attach an accepted connection");
                self.send(Frame::Close { id: conn, errno: 0 });
                self.send(Frame::Credit {
                    id: listen_id,
                    bytes: 1,
                });
            }
        }
    }
}

/// A TCP or UDP socket over IPv4 or IPv6, which a relay server always makes unless it runs
/// out of resources.
fn ordinary_socket(domain: i32, ty: i32, protocol: i32) -> bool {
    let kind = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    inet && match kind {
        libc::SOCK_STREAM => protocol == 0 || protocol == libc::IPPROTO_TCP,
        libc::SOCK_DGRAM => protocol == 0 || protocol == libc::IPPROTO_UDP,
        _ => false,
    }
}

/// Runs `op` on our end when it is ready, until it stops saying `EAGAIN`.
async fn when_ready<T>(
    fd: &AsyncFd<OwnedFd>,
    interest: Interest,
    mut op: impl FnMut(BorrowedFd<'_>) -> Result<T, Errno>,
) -> Result<T, Errno> {
    loop {
        let mut guard = fd
            .ready(interest)
            .await
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        match op(fd.get_ref().as_fd()) {
            Err(libc::EAGAIN) => guard.clear_ready(),
            other => return other,
        }
    }
}

/// Whether the program has closed its end (both directions shut).
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    (unsafe { libc::poll(&mut pfd, 1, 0) }) > 0 && pfd.revents & libc::POLLHUP != 0
}

/// Whether the program's end can send no more (it shut down writing, or closed).
fn read_hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    (unsafe { libc::poll(&mut pfd, 1, 0) }) > 0
        && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// Sends what the program writes, within the window.
async fn uplink(conn: Arc<Conn>, sock: Arc<LocalSock>) {
    let id = sock.id;
    let mut buf = vec![
        0u8;
        if sock.stream {
            CHUNK as usize
        } else {
            MAX_DATAGRAM
        }
    ];
    loop {
        let allowed = if sock.stream {
            match sock.up.take(CHUNK).await {
                0 => return,
                n => n as usize,
            }
        } else {
            buf.len()
        };
        // MSG_TRUNC makes a datagram read report the datagram's full length.
        let flags = if sock.stream { 0 } else { libc::MSG_TRUNC };
        let got = when_ready(&sock.ours, Interest::READABLE, |fd| {
            sys::recv(fd, &mut buf[..allowed], flags)
        })
        .await;
        match got {
            // An empty datagram is a datagram; end of file shows as a read-side hang-up.
            Ok(0) if !sock.stream && !read_hung_up(sock.ours.get_ref().as_fd()) => {
                conn.send(Frame::Data {
                    id,
                    data: Vec::new(),
                });
            }
            Ok(0) | Err(_) => break,
            Ok(n) if sock.stream => {
                sock.up.give((allowed - n) as u32);
                conn.send(Frame::Data {
                    id,
                    data: buf[..n].to_vec(),
                });
            }
            Ok(n) => {
                let n = n.min(buf.len());
                if sock.up.try_take(n as u32) {
                    conn.send(Frame::Data {
                        id,
                        data: buf[..n].to_vec(),
                    });
                }
            }
        }
    }

    // End of file: the program shut down its writing side or closed the socket.
    if sock.stream {
        conn.send(Frame::Eof { id });
    }
    // Then wait for the close. tokio keeps a half-close as lasting readiness, so readiness
    // cannot tell a close apart: look every so often instead.
    while !hung_up(sock.ours.get_ref().as_fd()) {
        tokio::time::sleep(CLOSE_CHECK).await;
    }
    conn.send(Frame::Close { id, errno: 0 });
    conn.forget(&sock);
}

/// Writes what the server sends into our end, and grants the server as much again.
async fn downlink(conn: Arc<Conn>, sock: Arc<LocalSock>, mut rx: mpsc::UnboundedReceiver<Down>) {
    let id = sock.id;
    let fd = &sock.ours;
    while let Some(what) = rx.recv().await {
        match what {
            Down::Data(data) => {
                let mut done = 0;
                while done < data.len() {
                    let sent =
                        when_ready(fd, Interest::WRITABLE, |f| sys::send(f, &data[done..])).await;
                    match sent {
                        Ok(n) if sock.stream => done += n,
                        Ok(_) => break,
                        // The program closed its end: nothing can reach it any more.
                        Err(_) => return,
                    }
                }
                conn.send(Frame::Credit {
                    id,
                    bytes: data.len() as u32,
                });
            }
            Down::Datagram(addr, data) => {
                let len = data.len() as u32;
                {
                    let mut senders = lock(&sock.senders);
                    if senders.len() >= MAX_SENDERS {
                        senders.pop_front();
                    }
                    senders.push_back((addr, data.clone()));
                }
                if when_ready(fd, Interest::WRITABLE, |f| sys::send(f, &data))
                    .await
                    .is_err()
                {
                    return;
                }
                conn.send(Frame::Credit { id, bytes: len });
            }
            Down::Eof => {
                let _ = sys::shutdown(fd.get_ref().as_fd(), libc::SHUT_WR);
            }
            Down::Failed(errno) => {
                sock.error.store(errno, Ordering::SeqCst);
                let _ = sys::shutdown(fd.get_ref().as_fd(), libc::SHUT_RDWR);
            }
        }
    }
}

/// A relayed socket, found from the program's descriptor.
#[derive(Debug, Clone)]
pub struct Relayed {
    conn: Arc<Conn>,
    sock: Arc<LocalSock>,
}

impl Relayed {
    /// The errno the server's creation of the socket failed with, if it did (socket() may
    /// have returned before the answer came).
    fn creation(&self) -> Result<(), Errno> {
        let opening = lock(&self.sock.opening).clone();
        match opening.and_then(|c| c.peek()) {
            Some(Err(errno)) => Err(errno),
            _ => Ok(()),
        }
    }

    /// Whether it is a stream socket.
    pub fn is_stream(&self) -> bool {
        self.sock.stream
    }

    /// connect(2). A non-blocking stream connect returns `EINPROGRESS` and finishes in the
    /// background; `SO_ERROR` then waits for its outcome.
    pub fn connect(&self, addr: &[u8], nonblocking: bool) -> Result<(), Errno> {
        self.creation()?;
        let id = self.sock.id;
        let completion = {
            let mut state = lock(&self.sock.connecting);
            match &*state {
                Connecting::Connected if self.sock.stream => return Err(libc::EISCONN),
                Connecting::Pending(_) if nonblocking => return Err(libc::EALREADY),
                Connecting::Pending(c) => c.clone(),
                _ => {
                    let c = self.conn.request(|req| Frame::Connect {
                        id,
                        req,
                        addr: addr.to_vec(),
                    })?;
                    *state = Connecting::Pending(c.clone());
                    c
                }
            }
        };
        if nonblocking && self.sock.stream {
            return Err(libc::EINPROGRESS);
        }
        let result = completion.wait();
        self.settle(&completion, &result);
        result.map(drop)
    }

    /// Records the outcome of a connect once it is known.
    fn settle(&self, completion: &Arc<Completion>, result: &Answer) {
        let mut state = lock(&self.sock.connecting);
        if let Connecting::Pending(c) = &*state {
            if Arc::ptr_eq(c, completion) {
                *state = match result {
                    Ok(_) => Connecting::Connected,
                    Err(_) => Connecting::Idle,
                };
            }
        }
    }

    /// `getsockopt(SOL_SOCKET, SO_ERROR)`: the outcome of a connect in progress (waiting for
    /// it), else the error the socket met, cleared by reading it.
    pub fn take_error(&self) -> Result<i32, Errno> {
        if let Err(errno) = self.creation() {
            return Ok(errno);
        }
        let pending = match &*lock(&self.sock.connecting) {
            Connecting::Pending(c) => Some(c.clone()),
            _ => None,
        };
        if let Some(completion) = pending {
            let result = completion.wait();
            self.settle(&completion, &result);
            if let Err(errno) = result {
                return Ok(errno);
            }
        }
        Ok(self.sock.error.swap(0, Ordering::SeqCst))
    }

    /// Whether a connect is in progress, for `poll` emulation and `EALREADY`.
    pub fn connect_pending(&self) -> bool {
        match &*lock(&self.sock.connecting) {
            Connecting::Pending(c) => c.peek().is_none(),
            _ => false,
        }
    }

    /// bind(2).
    pub fn bind(&self, addr: &[u8]) -> Result<(), Errno> {
        self.creation()?;
        let id = self.sock.id;
        self.conn
            .call(|req| Frame::Bind {
                id,
                req,
                addr: addr.to_vec(),
            })
            .map(drop)
    }

    /// listen(2).
    pub fn listen(&self, backlog: i32) -> Result<(), Errno> {
        self.creation()?;
        let id = self.sock.id;
        self.conn
            .call(|req| Frame::Listen { id, req, backlog })
            .map(drop)
    }

    /// getsockname(2) or getpeername(2).
    pub fn name(&self, peer: bool) -> Result<Vec<u8>, Errno> {
        self.creation()?;
        let id = self.sock.id;
        self.conn
            .call(|req| Frame::Name { id, req, peer })
            .map(|(_, addr)| addr)
    }

    /// getsockopt(2) on the real socket.
    pub fn getsockopt(&self, level: i32, name: i32, len: u32) -> Result<Vec<u8>, Errno> {
        self.creation()?;
        let id = self.sock.id;
        self.conn
            .call(|req| Frame::GetOpt {
                id,
                req,
                level,
                name,
                len,
            })
            .map(|(_, value)| value)
    }

    /// setsockopt(2) on the real socket.
    pub fn setsockopt(&self, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
        self.creation()?;
        let id = self.sock.id;
        self.conn
            .call(|req| Frame::SetOpt {
                id,
                req,
                level,
                name,
                value: value.to_vec(),
            })
            .map(drop)
    }

    /// What the kernel would refuse a `len`-byte datagram to `addr` for before sending it
    /// (the address's length and family, the datagram's size), in its order. The server
    /// sends the datagram later, where its refusal would reach nobody.
    pub fn check_datagram(&self, addr: &[u8], len: usize) -> Result<(), Errno> {
        match self.sock.udp {
            Some(domain) => crate::udp::check_send(domain, addr, len),
            None => Ok(()),
        }
    }

    /// A datagram to `addr`. Like UDP, a datagram the path has no room for is dropped.
    /// The caller has made [`Relayed::check_datagram`] first, before reading the data, which
    /// is where the kernel makes those checks.
    pub fn send_to(&self, addr: &[u8], data: &[u8]) -> Result<usize, Errno> {
        self.creation()?;
        if data.len() > MAX_DATAGRAM {
            return Err(libc::EMSGSIZE);
        }
        if !self.conn.alive.load(Ordering::SeqCst) {
            return Err(libc::ECONNRESET);
        }
        if self.sock.up.try_take(data.len() as u32) {
            self.conn.send(Frame::DataTo {
                id: self.sock.id,
                addr: addr.to_vec(),
                data: data.to_vec(),
            });
        }
        Ok(data.len())
    }

    /// accept(2): the program end of the next connection the server accepted, and its
    /// peer. `program_end` is the listening socket's end in the program (a duplicate).
    pub fn accept(
        &self,
        program_end: BorrowedFd<'_>,
        nonblocking: bool,
    ) -> Result<(OwnedFd, Vec<u8>), Errno> {
        loop {
            let mut token = [0u8; 1];
            match sys::recv(program_end, &mut token, libc::MSG_DONTWAIT) {
                Ok(1) => break,
                Ok(_) => return Err(libc::ECONNABORTED),
                Err(libc::EAGAIN) if nonblocking => return Err(libc::EAGAIN),
                Err(libc::EAGAIN) => wait_readable(program_end)?,
                Err(e) => return Err(e),
            }
        }
        let accepted = lock(&self.sock.accepted)
            .pop_front()
            .ok_or(libc::ECONNABORTED)?;
        self.conn.send(Frame::Credit {
            id: self.sock.id,
            bytes: 1,
        });
        Ok((accepted.program_end, accepted.peer))
    }

    /// recvfrom(2) with the sender's address: reads the next datagram from the program's
    /// end and finds who sent it. Returns the bytes that fit `len`, the datagram's full
    /// length and the sender.
    pub fn recv_from(
        &self,
        program_end: BorrowedFd<'_>,
        len: usize,
        flags: i32,
        nonblocking: bool,
    ) -> Result<(Vec<u8>, usize, Vec<u8>), Errno> {
        let mut buf = vec![0u8; len.min(MAX_DATAGRAM)];
        let peek = flags & libc::MSG_PEEK != 0;
        let read_flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC | (flags & libc::MSG_PEEK);
        let full = loop {
            match sys::recv(program_end, &mut buf, read_flags) {
                Ok(n) => break n,
                Err(libc::EAGAIN) if nonblocking || flags & libc::MSG_DONTWAIT != 0 => {
                    return Err(libc::EAGAIN)
                }
                Err(libc::EAGAIN) => wait_readable(program_end)?,
                Err(e) => return Err(e),
            }
        };
        buf.truncate(full.min(buf.len()));

        // Datagrams read without an address (plain recv) left their senders behind: skip
        // to the first one whose bytes match.
        let mut senders = lock(&self.sock.senders);
        let matches = |(_, data): &(Vec<u8>, Vec<u8>)| data.len() == full && data.starts_with(&buf);
        let sender = match senders.iter().position(matches) {
            Some(i) if peek => senders[i].0.clone(),
            Some(i) => {
                senders.drain(..i);
                senders.pop_front().map(|(a, _)| a).unwrap_or_default()
            }
            None => Vec::new(),
        };
        Ok((buf, full, sender))
    }
}
