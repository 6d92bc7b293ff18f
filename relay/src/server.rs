//! The server's side of a relay: `rump_server tcp://ADDR:PORT`.
//!
//! Each client connection is TLS, then the shared-secret handshake ([`crate::auth`]), then
//! frames. The sockets a client opens are real sockets in the server's stack, driven without
//! blocking: per socket, one task writes what the client sends and one reads what the peer
//! sends, each within its window, so a socket whose peer stalls holds up nothing else.
//!
//! Remote clients get Internet sockets only (`AF_INET`, `AF_INET6`; stream and datagram):
//! a Unix-domain or raw socket on the server's host is not theirs to have. A server policy
//! (`--policy`) decides `connect`, `bind`, `listen`, `accept` and addressed sends here as
//! well, whatever the client's own supervisor decided.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use policy::{Action, Operation, Policy, Protocol, Query};
use rumpclient::client::error_chain;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::auth::{self, Secret};
use crate::frame::{self, Frame, MAX_DATAGRAM, SERVER_IDS};
use crate::sys::{self, Errno};
use crate::window::{Window, INCOMING_WINDOW, WINDOW};

/// Time a new connection has for TLS and authentication together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest data frame sent.
const CHUNK: u32 = frame::CHUNK as u32;

/// What the server needs to serve relay clients.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The shared secret clients must prove.
    pub secret: Secret,
    /// What remote clients may do, if restricted.
    pub policy: Option<Arc<Policy>>,
    /// The description sent to clients.
    pub stack: String,
}

/// Serves relay clients on `listener` until `stop` becomes readable.
pub fn serve(
    listener: std::net::TcpListener,
    settings: Settings,
    stop: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let tls = tokio_rustls::TlsAcceptor::from(
        auth::server_config().map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    sys::keep_heap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay")
        .enable_all()
        .build()?;
    let stop = match stop {
        Some(fd) => Some(fd.try_clone_to_owned()?),
        None => None,
    };
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let settings = Arc::new(settings);
        let stopped = async {
            match stop {
                Some(fd) => match sys::register(fd) {
                    Ok(fd) => drop(fd.readable().await),
                    Err(e) => warn!(error = %e, "cannot watch the stop descriptor"),
                },
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tokio::spawn(session(tcp, peer, tls.clone(), settings.clone()));
                    }
                    Err(e) => {
                        warn!(error = %e, "accepting a relay client failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    })
}

/// Keepalive settings that notice a vanished client within about half a minute.
pub fn tune_tcp(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_fd();
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 5),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
        // Unacknowledged data for this long also ends the connection (tcp(7)).
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 15_000),
    ] {
        let _ = sys::setsockopt(fd, level, name, &i32::to_ne_bytes(value));
    }
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    settings: Arc<Settings>,
) {
    tune_tcp(&tcp);
    let handshake = async {
        let mut stream = tls.accept(tcp).await.map_err(auth::AuthError::Io)?;
        let exported = auth::exported(stream.get_ref().1)?;
        auth::server_handshake(&mut stream, &settings.secret, &exported, &settings.stack).await?;
        Ok::<_, auth::AuthError>(stream)
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return warn!(%peer, "relay client refused: {}", error_chain(&e)),
        Err(_) => return warn!(%peer, "relay client refused: no handshake within 10 s"),
    };
    info!(%peer, "relay client authenticated");

    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let writing = tokio::spawn(async move { frame::write_frames(&mut writer, &mut rx).await });

    let session = Arc::new(Session {
        tx,
        sockets: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(SERVER_IDS),
        policy: settings.policy.clone(),
        peer,
    });
    loop {
        match frame::read_frame(&mut reader).await {
            Ok(Some(frame)) => session.handle(frame),
            Ok(None) => {
                info!(%peer, "relay client left");
                break;
            }
            Err(e) => {
                warn!(%peer, "relay client dropped: {}", error_chain(&e));
                break;
            }
        }
    }
    // The sockets' tasks hold references to them: stop the tasks, and the sockets close.
    let sockets = std::mem::take(&mut *session.sockets.lock().unwrap_or_else(|e| e.into_inner()));
    for sock in sockets.values() {
        sock.stop();
    }
    writing.abort();
}

/// What one socket's writer is asked to do.
#[derive(Debug)]
enum Out {
    Data(Vec<u8>),
    DataTo(Vec<u8>, Vec<u8>),
    Eof,
    /// The client closed the socket: after the data before it is written.
    Close,
}

/// One relayed socket.
///
/// The socket joins the runtime's epoll set only once it is connected, listening or a
/// datagram socket: a fresh TCP socket polls as hung up (tcp_poll reports `EPOLLHUP` in the
/// closed state), and tokio keeps a hang-up as lasting readiness, which would make every wait
/// on the socket return at once.
struct Sock {
    id: u32,
    raw: OwnedFd,
    io: std::sync::OnceLock<Arc<AsyncFd<OwnedFd>>>,
    stream: bool,
    protocol: Protocol,
    /// Bytes we may still send the client.
    to_client: Arc<Window>,
    /// Connections we may still announce (listening sockets).
    incoming: Arc<Window>,
    listening: AtomicBool,
    stopped: AtomicBool,
    out: mpsc::UnboundedSender<Out>,
    connected: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Sock {
    /// Stops the socket's tasks (they hold references to it, so dropping the table's
    /// reference alone would not end them).
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.to_client.close();
        self.incoming.close();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    fn raw(&self) -> BorrowedFd<'_> {
        self.raw.as_fd()
    }

    /// The socket in the runtime's epoll set, added on first use.
    fn io(&self) -> Result<&Arc<AsyncFd<OwnedFd>>, Errno> {
        if let Some(io) = self.io.get() {
            return Ok(io);
        }
        let dup = self
            .raw
            .try_clone()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let io = Arc::new(sys::register(dup)?);
        Ok(self.io.get_or_init(|| io))
    }

    /// Keeps `task` to stop with the socket; a socket already stopped stops it at once (a
    /// connect that finishes after the client left starts its reader too late).
    fn add_task(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(Ordering::SeqCst) {
            task.abort();
        } else {
            tasks.push(task);
        }
    }
}

struct Session {
    tx: mpsc::UnboundedSender<Frame>,
    sockets: Mutex<HashMap<u32, Arc<Sock>>>,
    next_id: AtomicU32,
    policy: Option<Arc<Policy>>,
    peer: SocketAddr,
}

fn reply(id: u32, req: u32, result: Result<(i64, Vec<u8>), Errno>) -> Frame {
    match result {
        Ok((value, data)) => Frame::Reply {
            id,
            req,
            errno: 0,
            value,
            data,
        },
        Err(errno) => Frame::Reply {
            id,
            req,
            errno,
            value: -1,
            data: Vec::new(),
        },
    }
}

impl Session {
    fn send(&self, frame: Frame) {
        let _ = self.tx.send(frame);
    }

    /// Drops socket `sock` and stops its tasks.
    fn forget(&self, sock: &Sock) {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sock.id);
        sock.stop();
    }

    fn sock(&self, id: u32) -> Option<Arc<Sock>> {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The server policy's verdict; `Ok` to go ahead.
    fn check(&self, op: Operation, sock: &Sock, addr: &[u8]) -> Result<(), Errno> {
        let (Some(policy), Some(addr)) = (&self.policy, sys::parse_inet(addr)) else {
            return Ok(());
        };
        let query = Query {
            op,
            protocol: sock.protocol,
            addr,
        };
        let decision = policy.decide(&query);
        match decision.action {
            Action::Allow => Ok(()),
            Action::Deny { errno } => {
                info!(peer = %self.peer, ?op, %addr, "server policy denies");
                Err(errno)
            }
        }
    }

    fn handle(self: &Arc<Self>, frame: Frame) {
        let id = frame.id();
        if !matches!(frame, Frame::Data { .. } | Frame::Credit { .. }) {
            tracing::trace!(peer = %self.peer, ?frame, "frame");
        }
        if let Frame::Open {
            req,
            domain,
            ty,
            protocol,
            ..
        } = frame
        {
            let result = self.open(id, domain, ty, protocol);
            return self.send(reply(id, req, result.map(|()| (0, Vec::new()))));
        }
        let Some(sock) = self.sock(id) else {
            // A socket closed meanwhile: answer requests, drop the rest.
            if let Some(req) = request_number(&frame) {
                self.send(reply(id, req, Err(libc::EBADF)));
            }
            return;
        };
        match frame {
            Frame::Connect { req, addr, .. } => self.connect(sock, req, addr),
            Frame::Bind { req, addr, .. } => {
                let result = self
                    .check(Operation::Bind, &sock, &addr)
                    .and_then(|()| sys::bind(sock.raw(), &addr));
                self.send(reply(id, req, result.map(|()| (0, Vec::new()))));
            }
            Frame::Listen { req, backlog, .. } => self.listen(sock, req, backlog),
            Frame::Name { req, peer, .. } => {
                let result = sys::name(sock.raw(), peer);
                self.send(reply(id, req, result.map(|a| (0, a))));
            }
            Frame::GetOpt {
                req,
                level,
                name,
                len,
                ..
            } => {
                let result = option_allowed(level, name)
                    .and_then(|()| sys::getsockopt(sock.raw(), level, name, len as usize));
                self.send(reply(id, req, result.map(|v| (0, v))));
            }
            Frame::SetOpt {
                req,
                level,
                name,
                value,
                ..
            } => {
                let result = option_allowed(level, name)
                    .and_then(|()| sys::setsockopt(sock.raw(), level, name, &value));
                self.send(reply(id, req, result.map(|()| (0, Vec::new()))));
            }
            Frame::Eof { .. } => drop(sock.out.send(Out::Eof)),
            Frame::Close { .. } => {
                if sock.out.send(Out::Close).is_err() {
                    self.forget(&sock);
                }
            }
            Frame::Data { data, .. } => drop(sock.out.send(Out::Data(data))),
            Frame::DataTo { addr, data, .. } => {
                if self.check(Operation::Send, &sock, &addr).is_ok() {
                    drop(sock.out.send(Out::DataTo(addr, data)));
                } else {
                    // Nobody is waiting for an answer; give the window back.
                    self.send(Frame::Credit {
                        id,
                        bytes: data.len() as u32,
                    });
                }
            }
            Frame::Credit { bytes, .. } => {
                if sock.listening.load(Ordering::SeqCst) {
                    sock.incoming.give(bytes);
                } else {
                    sock.to_client.give(bytes);
                }
            }
            other => debug!(peer = %self.peer, ?other, "unexpected frame from a client"),
        }
    }

    fn open(self: &Arc<Self>, id: u32, domain: i32, ty: i32, protocol: i32) -> Result<(), Errno> {
        if id >= SERVER_IDS {
            return Err(libc::EINVAL);
        }
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            return Err(libc::EAFNOSUPPORT);
        }
        let kind = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        if kind != libc::SOCK_STREAM && kind != libc::SOCK_DGRAM {
            return Err(libc::EPROTONOSUPPORT);
        }
        let fd = sys::socket(domain, kind, protocol)?;
        let sock = self.register(id, fd, kind == libc::SOCK_STREAM, false)?;
        if !sock.stream {
            self.start_reading(&sock);
        }
        Ok(())
    }

    /// Records a socket and starts its writer.
    fn register(
        self: &Arc<Self>,
        id: u32,
        fd: OwnedFd,
        stream: bool,
        connected: bool,
    ) -> Result<Arc<Sock>, Errno> {
        let protocol = match sys::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_PROTOCOL) {
            Ok(libc::IPPROTO_TCP) => Protocol::Tcp,
            Ok(libc::IPPROTO_UDP) => Protocol::Udp,
            _ => Protocol::Other,
        };
        let (out, inbox) = mpsc::unbounded_channel();
        let sock = Arc::new(Sock {
            id,
            raw: fd,
            io: std::sync::OnceLock::new(),
            stream,
            protocol,
            to_client: Arc::new(Window::new(WINDOW)),
            incoming: Arc::new(Window::new(INCOMING_WINDOW)),
            listening: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            out,
            connected: watch::channel(connected).0,
            tasks: Mutex::new(Vec::new()),
        });
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if sockets.contains_key(&id) {
            return Err(libc::EEXIST);
        }
        if connected || !stream {
            sock.io()?;
        }
        sockets.insert(id, sock.clone());
        drop(sockets);
        sock.add_task(tokio::spawn(write_pump(
            self.clone(),
            sock.clone(),
            inbox,
            sock.connected.subscribe(),
        )));
        Ok(sock)
    }

    fn start_reading(self: &Arc<Self>, sock: &Arc<Sock>) {
        let task = if sock.stream {
            tokio::spawn(read_stream(self.clone(), sock.clone()))
        } else {
            tokio::spawn(read_datagrams(self.clone(), sock.clone()))
        };
        sock.add_task(task);
    }

    fn connect(self: &Arc<Self>, sock: Arc<Sock>, req: u32, addr: Vec<u8>) {
        let id = sock.id;
        if let Err(errno) = self.check(Operation::Connect, &sock, &addr) {
            return self.send(reply(id, req, Err(errno)));
        }
        let session = self.clone();
        let task = tokio::spawn(async move {
            let result = connect_socket(&sock, &addr).await;
            session.send(reply(id, req, result.map(|()| (0, Vec::new()))));
            if result.is_ok() && sock.stream && !*sock.connected.borrow() {
                sock.connected.send_replace(true);
                session.start_reading(&sock);
            }
        });
        // Not kept in the socket's tasks: dropping the socket must not hide the answer.
        drop(task);
    }

    fn listen(self: &Arc<Self>, sock: Arc<Sock>, req: u32, backlog: i32) {
        let id = sock.id;
        let fd = sock.raw();
        let result = sys::name(fd, false)
            .and_then(|local| self.check(Operation::Listen, &sock, &local))
            .and_then(|()| sys::listen(fd, backlog))
            .and_then(|()| sock.io().map(drop));
        let ok = result.is_ok();
        self.send(reply(id, req, result.map(|()| (0, Vec::new()))));
        if ok && !sock.listening.swap(true, Ordering::SeqCst) {
            sock.add_task(tokio::spawn(accept_loop(self.clone(), sock.clone())));
        }
    }
}

/// Whether a client may get or set option `name` at `level` on its socket here:
/// `ENOPROTOOPT` for the options that act on something of the server's rather than on the
/// socket. Socket filters take a pointer or a descriptor, which the server's kernel would
/// look up in the server process; an `IPPROTO_IP` or `IPPROTO_IPV6` option the protocol does
/// not know is handed to netfilter (ip_setsockopt, ipv6_setsockopt), whose options from 64
/// up replace the host's firewall tables (ip(7) lists none of its own from 64 up; ipv6(7)
/// has some from 66 up, but 64 and 65 are ip6tables').
fn option_allowed(level: i32, name: i32) -> Result<(), Errno> {
    let allowed = match level {
        libc::SOL_SOCKET => !matches!(
            name,
            libc::SO_ATTACH_FILTER
                | libc::SO_ATTACH_BPF
                | libc::SO_ATTACH_REUSEPORT_CBPF
                | libc::SO_ATTACH_REUSEPORT_EBPF
        ),
        libc::IPPROTO_IP => (0..64).contains(&name),
        libc::IPPROTO_IPV6 => (0..64).contains(&name) || (66..96).contains(&name),
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(libc::ENOPROTOOPT)
    }
}

fn request_number(frame: &Frame) -> Option<u32> {
    match frame {
        Frame::Connect { req, .. }
        | Frame::Bind { req, .. }
        | Frame::Listen { req, .. }
        | Frame::Name { req, .. }
        | Frame::GetOpt { req, .. }
        | Frame::SetOpt { req, .. } => Some(*req),
        _ => None,
    }
}

async fn connect_socket(sock: &Sock, addr: &[u8]) -> Result<(), Errno> {
    let started = sys::connect(sock.raw(), addr);
    if !sock.stream {
        return started;
    }
    match started {
        Ok(()) => return sock.io().map(drop),
        Err(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // Connecting, so no longer in the closed state: safe to add to the epoll set.
    let io = sock.io()?;
    loop {
        let mut guard = io
            .writable()
            .await
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        match sys::getsockopt_int(sock.raw(), libc::SOL_SOCKET, libc::SO_ERROR)? {
            0 if sys::name(sock.raw(), true).is_ok() => return Ok(()),
            0 => guard.clear_ready(),
            e => return Err(e),
        }
    }
}

/// Runs `op` when the socket is ready for `interest`, until it stops saying `EAGAIN`.
async fn when_ready<T>(
    sock: &Sock,
    readable: bool,
    mut op: impl FnMut(BorrowedFd<'_>) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let fd = sock.io()?;
    loop {
        let guard = if readable {
            fd.readable().await
        } else {
            fd.writable().await
        };
        let mut guard = guard.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        match op(fd.get_ref().as_fd()) {
            Err(libc::EAGAIN) => guard.clear_ready(),
            other => return other,
        }
    }
}

/// Writes what the client sends, then grants the client as many bytes again.
async fn write_pump(
    session: Arc<Session>,
    sock: Arc<Sock>,
    mut inbox: mpsc::UnboundedReceiver<Out>,
    mut connected: watch::Receiver<bool>,
) {
    let id = sock.id;
    while let Some(out) = inbox.recv().await {
        if sock.stream && !matches!(out, Out::Close) && connected.wait_for(|c| *c).await.is_err() {
            return;
        }
        let (result, granted) = match &out {
            Out::Data(data) if sock.stream => {
                let mut done = 0;
                let mut result = Ok(());
                while done < data.len() {
                    match when_ready(&sock, false, |fd| sys::send(fd, &data[done..])).await {
                        Ok(n) => done += n,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                (result, data.len())
            }
            Out::Data(data) => {
                // A datagram that cannot go is lost, as UDP loses it.
                let sent = when_ready(&sock, false, |fd| sys::send(fd, data)).await;
                if let Err(e) = sent {
                    debug!(id, errno = e, "datagram not sent");
                }
                (Ok(()), data.len())
            }
            Out::DataTo(addr, data) => {
                let sent = when_ready(&sock, false, |fd| sys::sendto(fd, data, addr)).await;
                if let Err(e) = sent {
                    debug!(id, errno = e, "datagram not sent");
                }
                (Ok(()), data.len())
            }
            Out::Eof => (sys::shutdown(sock.raw(), libc::SHUT_WR), 0),
            Out::Close => return session.forget(&sock),
        };
        if let Err(errno) = result {
            session.send(Frame::Close { id, errno });
            return;
        }
        if granted > 0 {
            session.send(Frame::Credit {
                id,
                bytes: granted as u32,
            });
        }
    }
}

/// Sends a connected stream's bytes to the client, within the window.
async fn read_stream(session: Arc<Session>, sock: Arc<Sock>) {
    let id = sock.id;
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let allowed = sock.to_client.take(CHUNK).await;
        if allowed == 0 {
            return;
        }
        let result = when_ready(&sock, true, |fd| {
            sys::recv(fd, &mut buf[..allowed as usize], 0)
        })
        .await;
        match result {
            Ok(0) => return session.send(Frame::Eof { id }),
            Ok(n) => {
                sock.to_client.give(allowed - n as u32);
                session.send(Frame::Data {
                    id,
                    data: buf[..n].to_vec(),
                });
            }
            Err(errno) => return session.send(Frame::Close { id, errno }),
        }
    }
}

/// Sends each datagram with its sender; one the window has no room for is dropped.
async fn read_datagrams(session: Arc<Session>, sock: Arc<Sock>) {
    let id = sock.id;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match when_ready(&sock, true, |fd| sys::recvfrom(fd, &mut buf)).await {
            Ok((n, addr)) => {
                let n = n.min(buf.len());
                if sock.to_client.try_take(n as u32) {
                    session.send(Frame::DataFrom {
                        id,
                        addr,
                        data: buf[..n].to_vec(),
                    });
                }
            }
            // ICMP errors (ECONNREFUSED on a connected socket) end nothing.
            Err(libc::ECONNREFUSED) | Err(libc::EHOSTUNREACH) | Err(libc::ENETUNREACH) => {}
            Err(errno) => return session.send(Frame::Close { id, errno }),
        }
    }
}

/// Accepts connections ahead of the program, at most as many as the client has room for.
async fn accept_loop(session: Arc<Session>, sock: Arc<Sock>) {
    loop {
        if sock.incoming.take(1).await == 0 {
            return;
        }
        let accepted = when_ready(&sock, true, sys::accept).await;
        let (conn, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                debug!(id = sock.id, errno = e, "accept failed");
                sock.incoming.give(1);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if session.check(Operation::Accept, &sock, &peer).is_err() {
            sock.incoming.give(1);
            continue;
        }
        let conn_id = session.next_id.fetch_add(1, Ordering::SeqCst);
        match session.register(conn_id, conn, true, true) {
            Ok(new) => {
                session.send(Frame::Incoming {
                    id: sock.id,
                    conn: conn_id,
                    peer,
                });
                session.start_reading(&new);
            }
            Err(e) => {
                debug!(errno = e, "registering an accepted connection failed");
                sock.incoming.give(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_reach_past_the_socket_are_refused() {
        const IPT_SO_SET_REPLACE: i32 = 64;
        const IP6T_SO_SET_REPLACE: i32 = 64;
        const ARPT_SO_SET_REPLACE: i32 = 96;
        const IP_VS_SO_SET_ADD: i32 = 1024 + 64 + 2;
        for (level, name) in [
            (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
            (libc::SOL_SOCKET, libc::SO_ATTACH_BPF),
            (libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_CBPF),
            (libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_EBPF),
            (libc::IPPROTO_IP, IPT_SO_SET_REPLACE),
            (libc::IPPROTO_IP, ARPT_SO_SET_REPLACE),
            (libc::IPPROTO_IP, IP_VS_SO_SET_ADD),
            (libc::IPPROTO_IP, -1),
            (libc::IPPROTO_IPV6, IP6T_SO_SET_REPLACE),
            (libc::IPPROTO_IPV6, IP6T_SO_SET_REPLACE + 1),
        ] {
            assert_eq!(
                option_allowed(level, name),
                Err(libc::ENOPROTOOPT),
                "{level} {name}"
            );
        }
        for (level, name) in [
            (libc::SOL_SOCKET, libc::SO_REUSEADDR),
            (libc::SOL_SOCKET, libc::SO_RCVBUF),
            (libc::IPPROTO_IP, libc::IP_TOS),
            (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP),
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            (libc::IPPROTO_IPV6, libc::IPV6_FREEBIND),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY),
            (libc::IPPROTO_UDP, libc::UDP_SEGMENT),
        ] {
            assert_eq!(option_allowed(level, name), Ok(()), "{level} {name}");
        }
    }
}
