//! Operations that may block (a `connect` to a slow host, an `accept` waiting for a peer, a
//! `send` into a full buffer), performed by the supervisor on the program's behalf.
//!
//! Each runs on the worker that took its notification, after the service has made sure
//! another worker is free to take the next one ([`crate::notify`]), so it never holds up
//! other threads' calls. While it
//! runs, the program's thread sits in the kernel waiting for our answer; with
//! `WAIT_KILLABLE_RECV` only a fatal signal can end that wait, so a signal the program
//! *handles* (an `alarm()` guarding a connect) would stay pending until we answer. The
//! [`Watcher`] therefore looks at each waiting thread every [`TICK`]: when a caught, unblocked
//! signal is pending for it (`/proc/TID/status`), or its call is no longer pending (the thread
//! died), it interrupts our operation with [`INTERRUPT_SIGNAL`], and we answer the way the
//! kernel would have: `ERESTARTSYS`, which the kernel turns into a restart for an
//! `SA_RESTART` handler and into `EINTR` otherwise.
//!
//! ## Limitations
//!
//! * Interruption is noticed within one tick (10 ms), not at once.
//! * A signal directed at the whole process, in a program with several threads, is answered
//!   with `EINTR` even when its handler has `SA_RESTART`: the kernel may deliver it to another
//!   thread, and an `ERESTARTSYS` with no signal to deliver would reach the program as an
//!   unknown errno.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tracing::debug;

use crate::sys;

/// How often waiting threads are looked at.
pub const TICK: Duration = Duration::from_millis(10);

/// `ERESTARTSYS`: the kernel-internal "restart if SA_RESTART, else EINTR" (linux/errno.h).
const ERESTARTSYS: i32 = 512;

/// The signal the watcher sends to one of our operation threads to break its system call.
/// Its handler does nothing and is installed without `SA_RESTART`.
pub fn interrupt_signal() -> i32 {
    libc::SIGRTMIN() + 6
}

extern "C" fn on_interrupt(_: libc::c_int) {}

/// Installs the no-op handler for [`interrupt_signal`]; call once before any operation.
pub fn install_interrupt_handler() -> Result<(), nix::errno::Errno> {
    // SAFETY: sigaction is plain old data; zeroed means no flags and an empty mask.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_interrupt as *const () as usize;
    // SAFETY: `action` is a valid sigaction whose handler is async-signal-safe (it does
    // nothing); the old action is not needed.
    let r = unsafe { libc::sigaction(interrupt_signal(), &action, std::ptr::null_mut()) };
    nix::errno::Errno::result(r).map(drop)
}

/// Why the watcher interrupted an operation.
const RUNNING: u8 = 0;
const SIGNALLED_RESTARTABLE: u8 = 1;
const SIGNALLED_EINTR: u8 = 2;
const CALLER_GONE: u8 = 3;

struct Entry {
    tid: i32,
    notif_id: u64,
    thread: libc::pthread_t,
    reason: Arc<AtomicU8>,
}

/// Watches the threads that wait for a blocking operation.
pub struct Watcher {
    listener: Arc<OwnedFd>,
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts the watcher thread for `listener`.
    pub fn start(listener: Arc<OwnedFd>) -> Arc<Watcher> {
        let w = Arc::new(Watcher {
            listener,
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let watcher = w.clone();
        thread::Builder::new()
            .name("blocking-watch".into())
            .spawn(move || watcher.watch())
            .expect("spawning the watcher thread");
        w
    }

    /// Runs `op` on the calling thread on behalf of thread `tid`'s notification
    /// `notif_id`, interruptible as the module docs describe; an interruption is mapped to
    /// the errno the program should see.
    pub fn run<T, F>(&self, tid: i32, notif_id: u64, op: F) -> Result<T, i32>
    where
        F: FnOnce() -> Result<T, i32>,
    {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let reason = Arc::new(AtomicU8::new(RUNNING));
        let entry = Entry {
            tid,
            notif_id,
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            reason: reason.clone(),
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, entry);

        // Only this thread, only while it runs the operation, can take the interrupt.
        set_interrupt_blocked(false);
        let result = op();
        set_interrupt_blocked(true);

        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        match (result, reason.load(Ordering::SeqCst)) {
            (Err(libc::EINTR), SIGNALLED_RESTARTABLE) => Err(ERESTARTSYS),
            (Err(libc::EINTR), _) => Err(libc::EINTR),
            (other, _) => other,
        }
    }

    /// Looks at every waiting thread once a tick. Ticking unconditionally (a hundred cheap
    /// wake-ups a second) spares each blocking operation a wake-up of this thread.
    fn watch(&self) {
        loop {
            thread::sleep(TICK);
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries.values() {
                self.check(entry);
            }
        }
    }

    fn check(&self, entry: &Entry) {
        let reason = if !sys::notif_id_valid(self.listener_fd(), entry.notif_id) {
            CALLER_GONE
        } else {
            match pending_caught_signal(entry.tid) {
                Some(true) => SIGNALLED_RESTARTABLE,
                Some(false) => SIGNALLED_EINTR,
                None => return,
            }
        };
        if entry.reason.swap(reason, Ordering::SeqCst) == RUNNING {
            debug!(tid = entry.tid, reason, "interrupting a blocking operation");
        }
        // Sent on every tick while the condition holds: a signal that lands just before the
        // operation enters the kernel is otherwise lost.
        // SAFETY: the thread is alive: it removes its entry (under the lock we hold) before
        // it exits.
        unsafe { libc::pthread_kill(entry.thread, interrupt_signal()) };
    }

    fn listener_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the listener lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.listener.as_raw_fd()) }
    }
}

fn set_interrupt_blocked(blocked: bool) {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use; the calls
    // only change this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, interrupt_signal());
        let how = if blocked {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Reads `/proc/TID/status`: `Some(restartable)` when a signal the thread catches is
/// pending for it and not blocked; `restartable` says whether `ERESTARTSYS` is safe (the
/// signal is directed at this thread, or the process has only this thread).
fn pending_caught_signal(tid: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let threads: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let deliverable = !field("SigBlk:") & field("SigCgt:");
    let own = field("SigPnd:") & deliverable;
    let shared = field("ShdPnd:") & deliverable;
    if own != 0 {
        Some(true)
    } else if shared != 0 {
        Some(threads == 1)
    } else {
        None
    }
}
