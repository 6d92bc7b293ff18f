//! The listening socket of a stack server and the threads that serve its clients.
//!
//! One thread polls the listener, a wake-up pipe and, optionally, a descriptor of the
//! caller's (the binary passes a signalfd). Each accepted client gets its own thread with
//! a small stack, so a slow or hostile client holds up nobody but itself.
//!
//! # Limitations
//!
//! * At most [`MAX_CLIENTS`] clients are served at once; others are told "too many
//!   clients" and disconnected, and must retry.
//! * A client that neither reads its replies nor closes its end can keep its thread past
//!   the stop deadline; the server then forces its connection shut and returns anyway.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{umask, Mode};
use rumpclient::protocol::{ErrorCode, Message};
use rumpclient::wire;

use crate::session::{ServeOptions, Session, SessionEnd, HELLO_TIMEOUT};

/// Most clients served at the same time.
pub const MAX_CLIENTS: usize = 4096;

/// Stack size of a client thread: a session needs a few frames and one 4 KiB buffer.
const CLIENT_STACK: usize = 256 * 1024;

/// How long [`StackServer::run`] waits for sessions to finish once it stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Least time between two warnings about failing accept(2) calls.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Back-off when accept(2) keeps failing for want of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why a stack server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another server answers at the path.
    #[error("a live server already answers at {}", path.display())]
    LiveServer {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path.
    #[error("{} exists and is not a socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file-system call on the path failed.
    #[error("{op} {}: {source}", path.display())]
    Path {
        /// What was attempted: `inspecting`, `probing`, `removing stale socket`, `binding`,
        /// `chmod 0600`, `setting O_NONBLOCK on`.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The wake-up pipe or the listener's flags could not be set up.
    #[error("setting up the listener: {0}")]
    Setup(Errno),
    /// poll(2) failed.
    #[error("poll on the listener: {0}")]
    Poll(Errno),
    /// accept(2) failed in a way that is not about one client.
    #[error("accept on {}: {source}", path.display())]
    Accept {
        /// The socket path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
}

/// Why [`StackServer::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A [`ShutdownHandle`] asked for it.
    Requested,
    /// The caller's stop descriptor became readable; it has not been read.
    StopFd,
}

/// Asks a running (or not yet running) [`StackServer`] to stop. Cheap to clone, usable
/// from any thread and from several at once.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    wake: Arc<OwnedFd>,
}

impl ShutdownHandle {
    /// Makes [`StackServer::run`] stop accepting, finish in-flight requests and return.
    /// Calling it more than once, or before `run`, is fine.
    pub fn stop(&self) {
        // One byte is enough and the pipe is never drained; a full pipe (EAGAIN) means a
        // stop is already pending.
        let _ = nix::unistd::write(self.wake.as_fd(), &[1]);
    }
}

/// A listening stack server on a Unix socket path.
///
/// Every socket its clients ask for is created in the network namespace of the thread
/// that calls [`StackServer::run`] (client threads inherit it).
#[derive(Debug)]
pub struct StackServer {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we bound, so we never unlink a successor's; `None`
    /// for a socket someone else bound (systemd), whose file is not ours to remove.
    identity: Option<(u64, u64)>,
    wake_rx: OwnedFd,
    handle: ShutdownHandle,
    opts: ServeOptions,
}

impl StackServer {
    /// Binds a listening socket at `path`, readable and writable by its owner only.
    ///
    /// An existing socket file is replaced if nothing answers on it (a crashed server's),
    /// and refused if a server answers. Any other kind of file there is refused.
    ///
    /// The mode is set through the umask around bind(2) so the socket is never reachable
    /// by others, not even briefly. The umask is process-wide: call this before other
    /// threads start, or at least while none of them creates files.
    pub fn bind(path: &Path, opts: ServeOptions) -> Result<StackServer, ServerError> {
        let path_err = |op, source| ServerError::Path {
            op,
            path: path.to_owned(),
            source,
        };

        // 1. Clear the way: only a dead server's socket may be replaced.
        remove_stale_socket(path)?;

        // 2. Bind with an owner-only mode, then make sure of it whatever the umask did.
        let old_mask = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old_mask);
        let listener = bound.map_err(|e| path_err("binding", e))?;
        let meta = fs::symlink_metadata(path).map_err(|e| path_err("inspecting", e))?;
        if meta.mode() & 0o777 != 0o600 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(|e| path_err("chmod 0600", e))?;
        }

        StackServer::new(listener, path, Some((meta.dev(), meta.ino())), opts)
    }

    /// Serves on a socket that is already bound to `path` and listening, such as the one
    /// systemd passes to a socket-activated service. Its file is left in place when the
    /// server stops: it belongs to whoever bound it.
    pub fn from_listener(
        listener: UnixListener,
        path: &Path,
        opts: ServeOptions,
    ) -> Result<StackServer, ServerError> {
        StackServer::new(listener, path, None, opts)
    }

    fn new(
        listener: UnixListener,
        path: &Path,
        identity: Option<(u64, u64)>,
        opts: ServeOptions,
    ) -> Result<StackServer, ServerError> {
        // Non-blocking, so a client that vanishes between poll and accept cannot block us.
        listener
            .set_nonblocking(true)
            .map_err(|e| ServerError::Path {
                op: "setting O_NONBLOCK on",
                path: path.to_owned(),
                source: e,
            })?;
        let flags = OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let (wake_rx, wake_tx) = nix::unistd::pipe2(flags).map_err(ServerError::Setup)?;
        Ok(StackServer {
            listener,
            path: path.to_owned(),
            identity,
            wake_rx,
            handle: ShutdownHandle {
                wake: Arc::new(wake_tx),
            },
            opts,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops [`run`](Self::run).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Serves clients until a [`ShutdownHandle`] is used or `stop_fd` becomes readable.
    ///
    /// Then it stops accepting, removes the socket path (if it bound it), shuts the read side
    /// of every client connection (a request already sent still gets its reply; the client
    /// then reads `Error { ShuttingDown }`) and waits up to 2 seconds for sessions to end.
    pub fn run(self, stop_fd: Option<BorrowedFd<'_>>) -> Result<Stopped, ServerError> {
        let shared = Arc::new(Shared {
            opts: self.opts.clone(),
            stopping: AtomicBool::new(false),
            clients: Mutex::new(Clients::default()),
            idle: Condvar::new(),
        });
        let mut acceptor = Acceptor::new(&self.listener, &self.path, &shared);
        let stopped = loop {
            let mut fds = vec![PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN)];
            fds.extend(stop_fd.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
            let watch_listener = !acceptor.backing_off();
            let timeout = if watch_listener {
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                PollTimeout::NONE
            } else {
                PollTimeout::try_from(ACCEPT_BACKOFF).unwrap_or(PollTimeout::NONE)
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ServerError::Poll(e)),
            }
            let ready = |i: usize| fds.get(i).and_then(|f| f.any()).unwrap_or(false);
            if ready(0) {
                break Stopped::Requested;
            }
            if stop_fd.is_some() && ready(1) {
                break Stopped::StopFd;
            }
            if watch_listener && ready(fds.len() - 1) {
                acceptor.accept_pending()?;
            }
        };
        tracing::info!(path = %self.path.display(), ?stopped, "stopping");
        self.unlink();
        acceptor.turn_away_backlog();
        stop_sessions(&shared);
        Ok(stopped)
    }

    /// Removes the socket path if it is still the file this server bound.
    fn unlink(&self) {
        let Some(identity) = self.identity else {
            return;
        };
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == identity)
            .unwrap_or(false);
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove socket");
            }
        }
    }
}

impl Drop for StackServer {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Refuses a live server or a non-socket at `path`; removes a socket nobody answers on.
fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    let path_err = |op, source| ServerError::Path {
        op,
        path: path.to_owned(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(path_err("inspecting", e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_owned(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::LiveServer {
            path: path.to_owned(),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            tracing::info!(path = %path.display(), "replacing stale socket");
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(path_err("removing stale socket", e))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(path_err("probing", e)),
    }
}

/// State the accept loop shares with client threads.
struct Shared {
    opts: ServeOptions,
    stopping: AtomicBool,
    clients: Mutex<Clients>,
    /// Signalled whenever a client thread ends.
    idle: Condvar,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, Clients> {
        // A poisoned lock only means a client thread panicked; the map is still valid.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Live client connections, each a duplicate descriptor kept for shutdown(2) at stop.
#[derive(Default)]
struct Clients {
    next_id: u64,
    conns: HashMap<u64, UnixStream>,
}

/// Removes a client from [`Clients`] when its thread ends, however it ends.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.clients().conns.remove(&self.id);
        self.shared.idle.notify_all();
    }
}

/// Accepts clients and starts their threads.
struct Acceptor<'a> {
    listener: &'a UnixListener,
    path: &'a Path,
    shared: &'a Arc<Shared>,
    /// A descriptor held in reserve, given up to accept and close a client when the
    /// process is out of descriptors, so the pending connection does not make poll(2)
    /// report the listener ready forever.
    spare: Option<fs::File>,
    backoff_until: Option<Instant>,
    last_warning: Option<Instant>,
}

impl<'a> Acceptor<'a> {
    fn new(listener: &'a UnixListener, path: &'a Path, shared: &'a Arc<Shared>) -> Self {
        Acceptor {
            listener,
            path,
            shared,
            spare: fs::File::open("/dev/null").ok(),
            backoff_until: None,
            last_warning: None,
        }
    }

    fn backing_off(&self) -> bool {
        self.backoff_until.is_some_and(|t| Instant::now() < t)
    }

    /// Accepts every connection waiting in the backlog.
    fn accept_pending(&mut self) -> Result<(), ServerError> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.start_client(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        self.shed_one(&e);
                        return Ok(());
                    }
                    _ => {
                        return Err(ServerError::Accept {
                            path: self.path.to_owned(),
                            source: e,
                        })
                    }
                },
            }
        }
    }

    /// Tells clients still waiting in the backlog that the server is going away.
    fn turn_away_backlog(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let msg = Message::Error {
                code: ErrorCode::ShuttingDown,
                message: "server is shutting down".to_owned(),
            };
            if stream.set_nonblocking(true).is_ok() {
                let _ = wire::send(&stream, &msg, None);
            }
        }
    }

    /// Out of resources: turn one client away using the spare descriptor, or back off.
    fn shed_one(&mut self, err: &io::Error) {
        let now = Instant::now();
        let warned_recently = self.last_warning.is_some_and(|t| now - t < WARN_INTERVAL);
        if !warned_recently {
            tracing::warn!(error = %err, "cannot accept clients; turning them away");
            self.last_warning = Some(now);
        }
        if self.spare.take().is_some() {
            if let Ok((stream, _)) = self.listener.accept() {
                refuse_now(&stream, "server is out of descriptors");
            }
            self.spare = fs::File::open("/dev/null").ok();
        }
        if self.spare.is_none() {
            self.backoff_until = Some(now + ACCEPT_BACKOFF);
        }
    }

    fn start_client(&mut self, stream: UnixStream) {
        let shared = self.shared;

        // 1. Register a duplicate for shutdown at stop, within the client limit.
        let dup = match stream.try_clone() {
            Ok(dup) => dup,
            Err(_) => return refuse_now(&stream, "server is out of descriptors"),
        };
        let id = {
            let mut clients = shared.clients();
            if clients.conns.len() >= MAX_CLIENTS {
                drop(clients);
                return refuse_now(&stream, "too many clients");
            }
            clients.next_id += 1;
            let id = clients.next_id;
            clients.conns.insert(id, dup);
            id
        };
        let registration = Registration {
            shared: Arc::clone(shared),
            id,
        };

        // 2. Serve it on its own thread.
        let spawned = thread::Builder::new()
            .name(format!("rump-client-{id}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || serve_client(stream, registration));
        if let Err(e) = spawned {
            // The closure, and with it the stream and the registration, is gone; tell the
            // client through the duplicate if it is still registered.
            tracing::warn!(error = %e, "cannot start a client thread");
            if let Some(dup) = shared.clients().conns.remove(&id) {
                refuse_now(&dup, "server cannot start a thread");
            }
        }
    }
}

fn serve_client(stream: UnixStream, registration: Registration) {
    let shared = &registration.shared;
    let session = Session::new(stream, &shared.opts, &shared.stopping, HELLO_TIMEOUT);
    match session.run() {
        Ok(SessionEnd::Refused { code, message }) => {
            tracing::debug!(%code, message, "client refused");
        }
        Ok(end) => tracing::debug!(?end, "client session ended"),
        Err(e) => tracing::debug!(error = %e, "client session failed"),
    }
}

/// Tells a client it is turned away, without ever blocking the accept loop.
fn refuse_now(stream: &UnixStream, message: &str) {
    let msg = Message::Error {
        code: ErrorCode::Other,
        message: message.to_owned(),
    };
    if stream.set_nonblocking(true).is_ok() {
        let _ = wire::send(stream, &msg, None);
    }
}

/// Shuts the read side of every session, then waits (bounded) for their threads.
fn stop_sessions(shared: &Shared) {
    shared.stopping.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + STOP_GRACE;
    let mut clients = shared.clients();
    for conn in clients.conns.values() {
        // Reading then returns end-of-file once queued requests are consumed, and the
        // client can send no more (its sends fail with EPIPE); replies still go out.
        let _ = conn.shutdown(Shutdown::Read);
    }
    while !clients.conns.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                clients = clients.conns.len(),
                "clients did not finish in time; closing their connections"
            );
            for conn in clients.conns.values() {
                let _ = conn.shutdown(Shutdown::Both);
            }
            return;
        }
        clients = match shared.idle.wait_timeout(clients, left) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}
