//! The process's connection to the stack server: opened lazily, never shared with a child,
//! and never confused with a descriptor the program manages.
//!
//! # The connection descriptor
//!
//! Each connection (the first and every reconnect inside [`rumpclient::Client`]) is moved to
//! a close-on-exec descriptor numbered [`HIGH_FD`] or above (below `RLIMIT_NOFILE`), and its
//! device and inode are recorded. Before a request the descriptor is checked with fstat(2):
//! when the program has closed it (a daemon closing every descriptor) or put something else
//! at that number (`dup2`), the session is forgotten *without closing anything* — the number
//! may now be the program's — and a new one is opened.
//!
//! The check is skipped while another thread has a request in flight, because the client may
//! be between closing a broken connection and opening the next.
//!
//! # Fork
//!
//! The session records the pid that opened it. A process that finds another pid there is a
//! forked child: it closes its inherited copy of the connection (when the check above shows
//! it is still ours), forgets the session without touching it, and opens its own. The state
//! lock is taken in a `pthread_atfork` prepare handler and released in both processes, so a
//! child never inherits it locked.
//!
//! # Connecting
//!
//! The first connection of a process follows `RUMPHIJACK_RETRYCONNECT` as a lost one would:
//! unset, one attempt; `once`, one more; `N`, attempts for N seconds; `inftime`, until the
//! server answers; `die`, the program is killed if the attempt fails. A process whose
//! connection failed for good answers every later redirected `socket()` with `ENOTCONN`.
//!
//! # Limitations
//!
//! * `fork()` in one thread waits while another thread is connecting (which, under
//!   `inftime`, lasts as long as the server is away).
//! * A session forgotten after the program closed its descriptor stays allocated (a few
//!   hundred bytes), since dropping it could close a descriptor that is now the program's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

/// Serial number of the next session opened in this process.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::time::Instant;

use rumpclient::{Backoff, CallError, Client, ConnectionSetup, Identity, RetryPolicy, ServerUrl};

use crate::config::Config;
use crate::{pool, sys};

/// Lowest descriptor number the connection is moved to.
pub const HIGH_FD: i32 = 768;

/// The lowest number the library's own descriptors are moved to: [`HIGH_FD`], or half the
/// soft `RLIMIT_NOFILE` when that is lower.
pub fn high_floor() -> i32 {
    HIGH_FD.min(sys::open_files_limit() / 2).max(3)
}

/// Which descriptor the current connection is, as recorded when it was set up. The fields are
/// updated one by one: a reader that sees a mix of two connections finds a mismatch and opens
/// a new session, which is safe.
#[derive(Debug, Default)]
struct Recorded {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
}

impl Recorded {
    /// True when `fd` still refers to the recorded socket.
    fn still_ours(&self) -> bool {
        let fd = self.fd.load(Ordering::Acquire);
        let want = (
            self.dev.load(Ordering::Acquire),
            self.ino.load(Ordering::Acquire),
        );
        fd > 0 && sys::file_identity(fd) == Some(want)
    }

    /// Moves a fresh connection to a high close-on-exec descriptor and records it.
    fn place(&self, stream: UnixStream) -> std::io::Result<UnixStream> {
        let high = sys::dup_cloexec_at_least(stream.as_raw_fd(), high_floor())
            .map_err(std::io::Error::from_raw_os_error)?;
        drop(stream);
        let (dev, ino) = sys::file_identity(high).unwrap_or_default();
        self.dev.store(dev, Ordering::Release);
        self.ino.store(ino, Ordering::Release);
        self.fd.store(high, Ordering::Release);
        // SAFETY: `high` was just returned by F_DUPFD_CLOEXEC and nothing else owns it.
        Ok(UnixStream::from(unsafe { OwnedFd::from_raw_fd(high) }))
    }
}

/// An open session and what is known about its descriptor.
#[derive(Debug)]
struct Session {
    /// Tells this session from the ones before it, for [`Epoch`].
    serial: u64,
    client: Client,
    recorded: Arc<Recorded>,
    in_flight: AtomicUsize,
}

impl Session {
    /// Lets go of a session without dropping it: dropping would close the recorded
    /// descriptor number, which may now be the program's.
    fn forget(self: Arc<Self>) {
        std::mem::forget(self);
    }
}

#[derive(Debug)]
enum Link {
    /// No connection yet in this process.
    Unconnected,
    Up(Arc<Session>),
    /// Connecting failed for good, or the connection was lost and the policy gave up.
    Dead(CallError),
}

#[derive(Debug)]
struct State {
    /// The process the link belongs to.
    pid: i32,
    link: Link,
}

static STATE: Mutex<State> = Mutex::new(State {
    pid: 0,
    link: Link::Unconnected,
});

fn lock() -> MutexGuard<'static, State> {
    static ATFORK: Once = Once::new();
    ATFORK.call_once(register_atfork);
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The locks the forking thread holds from the prepare handler until the parent and child
/// handlers release them: the session's, then the socket pool's.
type ForkLocks = (MutexGuard<'static, State>, pool::ForkGuard);

thread_local! {
    static HELD_OVER_FORK: std::cell::RefCell<Option<ForkLocks>> =
        const { std::cell::RefCell::new(None) };
}

extern "C" fn before_fork() {
    let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let locks = (state, pool::hold_over_fork());
    HELD_OVER_FORK.with(|held| *held.borrow_mut() = Some(locks));
}

extern "C" fn after_fork() {
    HELD_OVER_FORK.with(|held| drop(held.borrow_mut().take()));
}

fn register_atfork() {
    // SAFETY: the handlers are `extern "C"` functions with no arguments that live as long as
    // the library (which is never unloaded: it is preloaded).
    let rc = unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    if rc != 0 {
        sys::write_stderr("librumphijack: pthread_atfork failed; fork may deadlock\n");
    }
}

/// Which connection to the server a socket came from: the session and its client's
/// connection count. Sockets of different epochs may belong to different stacks (a restarted
/// server), so sockets kept for later are dropped when the epoch changes.
pub type Epoch = (u64, u64);

/// A socket from the server's stack: socket(2) with `ty` (`SOCK_CLOEXEC` already removed).
pub fn create_socket(
    config: &Config,
    url: &ServerUrl,
    domain: i32,
    ty: i32,
    protocol: i32,
) -> Result<OwnedFd, CallError> {
    request(config, url, |client| {
        client.create_socket(domain, ty, protocol)
    })
    .map(|(fd, _)| fd)
}

/// Up to `count` sockets from the server's stack in one round trip (at least one on
/// success), and the epoch they belong to.
pub fn create_sockets(
    config: &Config,
    url: &ServerUrl,
    domain: i32,
    ty: i32,
    protocol: i32,
    count: usize,
) -> Result<(Vec<OwnedFd>, Epoch), CallError> {
    request(config, url, |client| {
        client.create_sockets(domain, ty, protocol, count)
    })
}

/// Asks for a batch of `count` sockets without waiting for it ([`take_ahead`] collects it).
/// Returns whether the request was sent: not when another batch is on its way, or the
/// session is busy or down.
pub fn send_ahead(
    config: &Config,
    url: &ServerUrl,
    domain: i32,
    ty: i32,
    protocol: i32,
    count: usize,
) -> bool {
    let sent = request(config, url, |client| {
        Ok(client.send_ahead(domain, ty, protocol, count))
    });
    matches!(sent, Ok((true, _)))
}

/// The batch of this kind asked for with [`send_ahead`], and the epoch it belongs to; waits
/// for it if it has not come yet. `None` when there is none on the current connection, when
/// the connection turned out to be lost, or when the server could make no socket: the
/// caller then asks the usual way, which applies the retry policy or returns the errno.
pub fn take_ahead(
    config: &Config,
    url: &ServerUrl,
    domain: i32,
    ty: i32,
    protocol: i32,
) -> Option<(Vec<OwnedFd>, Epoch)> {
    let taken = request(config, url, |client| {
        Ok(client.take_ahead(domain, ty, protocol))
    });
    match taken {
        Ok((Some(Ok(fds)), epoch)) if !fds.is_empty() => Some((fds, epoch)),
        _ => None,
    }
}

/// True when the current connection may be gone: none is open, or the server has hung up or
/// sent something unasked (it only ever sends `Error` on its own, before closing). Never
/// true merely because another thread is waiting for a reply, or because the reply to a
/// batch asked for ahead has come. Costs one poll(2).
pub fn connection_in_doubt() -> bool {
    let state = lock();
    match &state.link {
        Link::Up(session) if session.in_flight.load(Ordering::Acquire) > 0 => false,
        Link::Up(session) => {
            let fd = session.recorded.fd.load(Ordering::Acquire);
            if session.client.awaiting_ahead() {
                sys::hung_up(fd)
            } else {
                !sys::quiet(fd)
            }
        }
        Link::Unconnected | Link::Dead(_) => true,
    }
}

/// Runs one request on the current session (opened if need be); returns its result and the
/// epoch it ran in.
fn request<T>(
    config: &Config,
    url: &ServerUrl,
    call: impl FnOnce(&Client) -> Result<T, CallError>,
) -> Result<(T, Epoch), CallError> {
    let session = acquire(config, url)?;
    let result = call(&session.client);
    let epoch = (session.serial, session.client.connections());

    // A connection the client gave up on stays given up on: record it before this call stops
    // counting as in flight, so that no other thread mistakes the closed descriptor for one
    // the program closed.
    if let Err(e @ (CallError::Die | CallError::Errno(libc::ENOTCONN))) = result {
        let mut state = lock();
        if matches!(&state.link, Link::Up(s) if Arc::ptr_eq(s, &session)) {
            state.link = Link::Dead(e);
        }
    }
    session.in_flight.fetch_sub(1, Ordering::AcqRel);
    result.map(|value| (value, epoch))
}

/// The session to send a request on, counted as in flight; opened if need be.
fn acquire(config: &Config, url: &ServerUrl) -> Result<Arc<Session>, CallError> {
    let mut state = lock();
    let pid = sys::getpid();

    // A forked child: close the inherited copy of the parent's connection, if it is still
    // ours, and start afresh. The parent's connection is never used here.
    if state.pid != pid {
        if let Link::Up(inherited) = std::mem::replace(&mut state.link, Link::Unconnected) {
            if inherited.recorded.still_ours() {
                sys::close(inherited.recorded.fd.load(Ordering::Acquire));
            }
            inherited.forget();
        }
        state.pid = pid;
    }

    // The program closed the descriptor or reused its number: forget, do not close.
    if let Link::Up(session) = &state.link {
        let idle = session.in_flight.load(Ordering::Acquire) == 0;
        if idle && !session.recorded.still_ours() {
            crate::config::debug(config, || {
                "the server connection's descriptor was closed or replaced; reconnecting".into()
            });
            if let Link::Up(session) = std::mem::replace(&mut state.link, Link::Unconnected) {
                session.forget();
            }
        }
    }

    if let Link::Unconnected = state.link {
        state.link = match open(config, url) {
            Ok(session) => Link::Up(session),
            Err(e) => Link::Dead(e),
        };
    }
    match &state.link {
        Link::Up(session) => {
            session.in_flight.fetch_add(1, Ordering::AcqRel);
            Ok(session.clone())
        }
        Link::Dead(e) => Err(*e),
        Link::Unconnected => unreachable!("a link is opened above"),
    }
}

/// Opens a session, retrying as `RUMPHIJACK_RETRYCONNECT` says.
fn open(config: &Config, url: &ServerUrl) -> Result<Arc<Session>, CallError> {
    let recorded = Arc::new(Recorded::default());
    let setup: ConnectionSetup = {
        let recorded = recorded.clone();
        Arc::new(move |stream| recorded.place(stream))
    };
    let started = Instant::now();
    let mut backoff = Backoff::new();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let id = Identity::of_current_process();
        let error = match Client::connect_with_setup(url.clone(), config.retry, id, setup.clone()) {
            Ok(mut client) => {
                client.set_notice_sink(Box::new(|line| {
                    sys::write_stderr(&format!("librumphijack: {line}\n"))
                }));
                if attempts > 1 {
                    notice(&format!("connected to {url} after {attempts} attempts"));
                }
                return Ok(Arc::new(Session {
                    serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
                    client,
                    recorded,
                    in_flight: AtomicUsize::new(0),
                }));
            }
            Err(e) => rumpclient::client::error_chain(&e),
        };

        let elapsed = started.elapsed();
        let retry_after = match config.retry {
            RetryPolicy::Never => None,
            RetryPolicy::Die => {
                notice(&format!(
                    "{error}; terminating the program (RUMPHIJACK_RETRYCONNECT=die)"
                ));
                sys::kill_program();
            }
            RetryPolicy::Once if attempts < 2 => Some(backoff.next_delay()),
            RetryPolicy::Once => None,
            RetryPolicy::For(limit) if elapsed < limit => {
                Some(backoff.next_delay().min(limit - elapsed))
            }
            RetryPolicy::For(_) => None,
            RetryPolicy::Forever => Some(backoff.next_delay()),
        };
        let Some(delay) = retry_after else {
            notice(&format!(
                "{error}; redirected sockets fail with ENOTCONN (RUMPHIJACK_RETRYCONNECT={})",
                config.retry
            ));
            return Err(CallError::Errno(libc::ENOTCONN));
        };
        if attempts == 1 {
            notice(&format!(
                "{error}; retrying (RUMPHIJACK_RETRYCONNECT={})",
                config.retry
            ));
        }
        std::thread::sleep(delay);
    }
}

fn notice(line: &str) {
    sys::write_stderr(&format!("librumphijack: {line}\n"));
}
