//! Serving the program's trapped system calls.
//!
//! A small pool of workers reads notifications from the listener and answers them on the
//! spot, two of them at a time waiting for the next ([`crate::turn`]); before an operation that
//! may block, a worker passes its turn to another ([`crate::blocking`]). The workers share one
//! way of making sockets ([`SocketSource`]).
//!
//! Every thread here runs with all signals blocked (the supervisor blocks them before it
//! starts any thread, and threads inherit the mask). A signal that interrupts
//! `SECCOMP_IOCTL_NOTIF_ADDFD` while the kernel installs a descriptor has been seen to leave
//! the program's `socket()` returning 0 with nothing installed; with signals blocked these
//! ioctls cannot be interrupted that way.
//!
//! A watcher thread notes when the listener reports `POLLHUP`: every process that carried the
//! filter is gone, and no notification can arrive any more.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use policy::Policy;
use rumpclient::client::{CallError, Client};
use tracing::{debug, trace, warn};

use crate::audit::Audit;
use crate::blocking::Watcher;
use crate::mediate::{self, Call, ThreadHandles};
use crate::pool::ServerSockets;
use crate::sys::{self, Notif};
use crate::turn::{PassOnDrop, ReceiveTurn};

/// Number of worker threads kept for answering notifications: two wait for the next, the
/// others are ready to take over when one starts an operation that may block.
const WORKERS: usize = 4;

/// Most workers at once, counting those busy with a blocking operation: past this, new
/// notifications wait in the kernel until a worker is free.
pub const MAX_WORKERS: usize = 1024;

/// What the service asks of the rest of the supervisor.
pub trait Events: Send + Sync + 'static {
    /// The server connection is lost and the retry policy is `die`: the program must end.
    /// `caller` is the thread whose call found the connection gone.
    fn server_lost_die(&self, caller: u32);
}

/// The system calls the filter can trap, in the order [`Stats`] counts them.
const TRAPPED: [(i64, &str); 14] = [
    (libc::SYS_socket, "socket"),
    (libc::SYS_connect, "connect"),
    (libc::SYS_bind, "bind"),
    (libc::SYS_listen, "listen"),
    (libc::SYS_accept, "accept"),
    (libc::SYS_accept4, "accept4"),
    (libc::SYS_sendto, "sendto"),
    (libc::SYS_sendmsg, "sendmsg"),
    (libc::SYS_sendmmsg, "sendmmsg"),
    (libc::SYS_recvfrom, "recvfrom"),
    (libc::SYS_getsockname, "getsockname"),
    (libc::SYS_getpeername, "getpeername"),
    (libc::SYS_getsockopt, "getsockopt"),
    (libc::SYS_setsockopt, "setsockopt"),
];

/// How many notifications of each trapped call the supervisor served.
#[derive(Debug, Default)]
pub struct Stats {
    counts: [AtomicU64; TRAPPED.len()],
}

impl Stats {
    fn count(&self, nr: i64) {
        if let Some(i) = TRAPPED.iter().position(|&(n, _)| n == nr) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts as a JSON object: `{"socket": 3, "connect": 0, …, "total": 3}`.
    pub fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        let mut total = 0;
        for (i, (_, name)) in TRAPPED.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            total += n;
            map.insert((*name).into(), n.into());
        }
        map.insert("total".into(), total.into());
        serde_json::Value::Object(map).to_string()
    }
}

/// Where the sockets the program asks for come from.
#[derive(Debug)]
pub enum SocketSource {
    /// A stack server, over the protocol, with sockets it made ahead of time.
    Server(ServerSockets),
    /// The supervisor's own network namespace: the embedded server for the current stack
    /// reduced to its essence, a socket(2) on the worker's thread, with no round trip.
    Direct,
    /// Another namespace the supervisor may enter (it holds `CAP_SYS_ADMIN` over it): each
    /// worker thread joins it once and then makes sockets there itself. A thread that cannot
    /// join asks the server instead.
    Namespace {
        /// The namespace.
        netns: OwnedFd,
        /// The server hosting it, for threads that cannot join.
        server: Client,
    },
    /// A remote stack over TCP: the program gets a local stand-in whose data is relayed.
    Relay(relay::Relay),
}

thread_local! {
    /// Whether this worker thread has joined the stack's namespace (`None`: not tried yet).
    static JOINED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

impl SocketSource {
    /// A socket as `socket(domain, ty, protocol)` makes it in the stack (`ty` without
    /// `SOCK_CLOEXEC`). `before_blocking` runs first if the socket must come from the server,
    /// which may keep us waiting (a reconnect under `RUMPHIJACK_RETRYCONNECT=inftime`).
    fn create(
        &self,
        domain: i32,
        ty: i32,
        protocol: i32,
        before_blocking: impl FnOnce(),
    ) -> Result<OwnedFd, CallError> {
        match self {
            SocketSource::Server(server) => server.create(domain, ty, protocol, before_blocking),
            SocketSource::Direct => sys::sock::socket(domain, ty | libc::SOCK_CLOEXEC, protocol)
                .map_err(CallError::Errno),
            SocketSource::Namespace { netns, server } => {
                let joined = join_once(netns.as_fd());
                if joined {
                    sys::sock::socket(domain, ty | libc::SOCK_CLOEXEC, protocol)
                        .map_err(CallError::Errno)
                } else {
                    before_blocking();
                    server.create_socket(domain, ty, protocol)
                }
            }
            SocketSource::Relay(relay) => relay.open(domain, ty, protocol).map_err(|e| match e {
                relay::OpenError::Errno(errno) => CallError::Errno(errno),
                relay::OpenError::Die => CallError::Die,
            }),
        }
    }
}

/// Joins `netns` on the first call in this thread; says whether this thread is in it.
fn join_once(netns: BorrowedFd<'_>) -> bool {
    JOINED.with(|joined| {
        if let Some(known) = joined.get() {
            return known;
        }
        let result = sys::setns_net(netns);
        if let Err(e) = &result {
            debug!(error = %e, "cannot join the stack's namespace; using the server");
        }
        joined.set(Some(result.is_ok()));
        result.is_ok()
    })
}

/// Everything the workers share.
pub struct Service {
    listener: Arc<OwnedFd>,
    sockets: SocketSource,
    policy: Policy,
    audit: Audit,
    events: Arc<dyn Events>,
    watcher: Arc<Watcher>,
    stats: Arc<Stats>,
    threads: ThreadHandles,
    /// Which workers wait in `SECCOMP_IOCTL_NOTIF_RECV`.
    turn: ReceiveTurn,
    /// Workers running, and how many of them wait for a notification (or for a turn to
    /// wait for one).
    workers: AtomicUsize,
    idle: AtomicUsize,
    /// Workers inside `SECCOMP_IOCTL_NOTIF_RECV` right now.
    receiving: AtomicUsize,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// The notification listener.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// A shared handle on the listener, for work that outlives the borrow.
    pub fn listener_handle(&self) -> Arc<OwnedFd> {
        self.listener.clone()
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Where decisions are recorded.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Handles on program threads, kept between calls.
    pub fn threads(&self) -> &ThreadHandles {
        &self.threads
    }

    /// Runs operations that may block.
    pub fn watcher(&self) -> &Arc<Watcher> {
        &self.watcher
    }

    /// Called by a worker about to run an operation that may block: makes sure another worker
    /// waits for notifications meanwhile, so the program's other calls are still served. One
    /// already in the ioctl is enough; otherwise this worker passes its turn on, which wakes a
    /// waiting worker (or starts one when none is left).
    pub fn before_blocking(self: &Arc<Self>) {
        if self.receiving.load(Ordering::SeqCst) == 0 {
            self.turn.pass();
        }
        if self.idle.load(Ordering::SeqCst) == 0
            && self.workers.load(Ordering::SeqCst) < MAX_WORKERS
        {
            spawn_worker(self);
        }
    }

    /// Answers `notif` with a return value or an errno.
    pub fn respond(&self, notif: &Notif, result: sys::SysResult) {
        respond(self.listener(), notif, result);
    }

    /// Installs `fd` in the program and answers `notif` with its number in one step
    /// (`SECCOMP_ADDFD_FLAG_SEND`), so the program never sees a number that was not
    /// installed. Our copy closes when `fd` drops, leaving the program's the only one: its
    /// close() really ends the socket.
    pub fn install(&self, notif: &Notif, fd: OwnedFd, cloexec: bool) {
        match sys::notif_addfd_send(self.listener(), notif.id, fd.as_fd(), cloexec) {
            Ok(installed) => trace!(pid = notif.pid, fd = installed, "descriptor installed"),
            Err(Errno::ENOENT) => debug!(pid = notif.pid, "caller gone before its descriptor"),
            Err(errno) => {
                // For instance EMFILE: the program is at its descriptor limit.
                debug!(pid = notif.pid, %errno, "installing a descriptor failed");
                self.respond(notif, Err(errno as i32));
            }
        }
    }
}

/// Starts the receiver and the workers. They run until the listener hangs up. Returns the
/// counters they keep.
pub fn start(
    listener: OwnedFd,
    sockets: SocketSource,
    policy: Policy,
    audit: Audit,
    events: Arc<dyn Events>,
) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let listener = Arc::new(listener);
    let watcher = Watcher::start(listener.clone());
    let svc = Arc::new(Service {
        listener,
        sockets,
        policy,
        audit,
        events,
        watcher,
        stats: stats.clone(),
        threads: ThreadHandles::default(),
        turn: ReceiveTurn::default(),
        workers: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        receiving: AtomicUsize::new(0),
    });
    // Answers then wake the program on the CPU the answering thread runs on, and a
    // notification wakes a waiting worker on the program thread's CPU (Linux 6.6). On a
    // virtual machine a cross-CPU wake-up costs tens of microseconds, several times the
    // rest of the round trip. Older kernels refuse the flag; the service works without it.
    if let Err(e) = sys::notif_set_sync_wakeup(svc.listener()) {
        debug!(error = %e, "synchronous wake-ups unavailable");
    }

    // Each worker reads notifications itself: a hand-off between a reader and a worker
    // would add a wake-up to every call. Only those holding a turn read.
    for _ in 0..WORKERS {
        spawn_worker(&svc);
    }
    thread::Builder::new()
        .name("notif-hangup".into())
        .spawn(move || wait_for_hangup(svc.listener()))
        .expect("spawning the hang-up watcher");
    stats
}

fn spawn_worker(svc: &Arc<Service>) {
    svc.workers.fetch_add(1, Ordering::SeqCst);
    let worker_svc = svc.clone();
    let spawned = thread::Builder::new()
        .name("notif-worker".into())
        .stack_size(256 * 1024)
        .spawn(move || worker(&worker_svc));
    if let Err(e) = spawned {
        svc.workers.fetch_sub(1, Ordering::SeqCst);
        warn!(error = %e, "cannot start another worker");
    }
}

/// Whether the listener has hung up (`POLLHUP` right now, without waiting).
fn hung_up(listener: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(listener, PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Returns when every process that carried the filter is gone (`POLLHUP`). Polls for
/// hang-up only, so the wake-ups of ordinary notifications do not reach this thread.
fn wait_for_hangup(listener: BorrowedFd<'_>) {
    loop {
        let mut fds = [PollFd::new(listener, PollFlags::empty())];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return warn!(error = %e, "poll on the seccomp listener failed"),
            Ok(_) => {}
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return debug!("seccomp listener hung up: no supervised process is left");
        }
    }
}

fn worker(svc: &Arc<Service>) {
    // However this worker ends, another gets its turn.
    let _pass = PassOnDrop(&svc.turn);

    // Answering with a descriptor (SECCOMP_IOCTL_NOTIF_ADDFD) wakes this thread again once the
    // program has installed it, while the program is still running; preempting the program
    // then costs two context switches per call for work (closing our copy, going back to the
    // ioctl) that can wait for its next trapped call. socket()+close(), native 1.5 µs:
    // 8.9 -> 7.5 µs on an idle machine, 7.5 -> 5.9 µs with both CPUs busy.
    if let Err(e) = sys::set_sched_batch() {
        debug!(error = %e, "workers keep the default scheduling policy");
    }
    loop {
        // A worker started for a blocking operation retires once enough others wait.
        if svc.workers.load(Ordering::SeqCst) > WORKERS
            && svc.idle.load(Ordering::SeqCst) >= WORKERS
        {
            svc.workers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        svc.idle.fetch_add(1, Ordering::SeqCst);
        svc.turn.take();
        svc.receiving.fetch_add(1, Ordering::SeqCst);
        let received = sys::notif_recv(svc.listener());
        svc.receiving.fetch_sub(1, Ordering::SeqCst);
        svc.idle.fetch_sub(1, Ordering::SeqCst);
        let notif = match received {
            Ok(notif) => notif,
            // The calling thread was interrupted or died before we read its notification —
            // or nobody is left: after a hang-up every read fails at once with ENOENT.
            Err(Errno::ENOENT) if hung_up(svc.listener()) => return,
            Err(Errno::ENOENT) | Err(Errno::EINTR) => continue,
            Err(e) => return warn!(error = %e, "reading a seccomp notification failed"),
        };
        svc.stats.count(i64::from(notif.data.nr));

        // A bug reachable from a hostile program's arguments must not cost a worker (four
        // such calls would leave none) nor leave the calling thread waiting forever.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(svc, notif)));
        if served.is_err() {
            warn!(
                pid = notif.pid,
                nr = notif.data.nr,
                "serving a call panicked; answering EIO"
            );
            svc.respond(&notif, Err(libc::EIO));
        }
    }
}

/// Serves one notification.
fn serve(svc: &Arc<Service>, notif: Notif) {
    let call = || Call::new(svc, notif);
    let nr = i64::from(notif.data.nr);
    if let SocketSource::Relay(relay) = &svc.sockets {
        if nr != libc::SYS_socket && !matches!(nr, libc::SYS_sendmsg | libc::SYS_sendmmsg) {
            return crate::remote::serve(svc, relay, notif);
        }
    }
    match nr {
        libc::SYS_socket => handle_socket(svc, &notif),
        libc::SYS_connect => mediate::connect(call()),
        libc::SYS_bind => mediate::bind(call()),
        libc::SYS_listen => mediate::listen(call()),
        libc::SYS_accept => mediate::accept(call(), false),
        libc::SYS_accept4 => mediate::accept(call(), true),
        libc::SYS_sendto => mediate::sendto(call()),
        libc::SYS_sendmsg => mediate::sendmsg(call()),
        libc::SYS_sendmmsg => mediate::sendmmsg(call()),
        other => {
            // The filter traps nothing else; answer rather than leave the thread hanging.
            warn!(
                nr = other,
                pid = notif.pid,
                "unexpected trapped system call"
            );
            svc.respond(&notif, Err(libc::ENOSYS));
        }
    }
}

/// `socket(domain, type, protocol)`: the socket comes from the server and is installed in
/// the program in place of the one it asked for.
fn handle_socket(svc: &Arc<Service>, notif: &Notif) {
    // socket(2) takes ints; the kernel ignores the upper halves of the registers.
    let [domain, ty, protocol] = [0, 1, 2].map(|i| notif.data.args[i] as u32 as i32);
    let cloexec = ty & libc::SOCK_CLOEXEC != 0;
    trace!(pid = notif.pid, domain, ty, protocol, "socket");

    // A server may keep us waiting: another worker then serves the program's other calls.
    let before_blocking = || svc.before_blocking();
    match svc
        .sockets
        .create(domain, ty & !libc::SOCK_CLOEXEC, protocol, before_blocking)
    {
        Ok(fd) => svc.install(notif, fd, cloexec),
        Err(CallError::Errno(errno)) => {
            trace!(pid = notif.pid, domain, errno, "server refused socket");
            svc.respond(notif, Err(errno));
        }
        Err(CallError::Die) => {
            svc.respond(notif, Err(libc::ENOTCONN));
            svc.events.server_lost_die(notif.pid);
        }
    }
}

fn respond(listener: BorrowedFd<'_>, notif: &Notif, result: Result<i64, i32>) {
    match sys::notif_send(listener, notif.id, result) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => warn!(pid = notif.pid, %errno, "answering a notification failed"),
    }
}
