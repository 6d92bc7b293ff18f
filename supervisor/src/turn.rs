//! Which workers may wait for the next notification.
//!
//! `SECCOMP_IOCTL_NOTIF_RECV` sleeps on the listener's wait queue as a non-exclusive waiter
//! (`recv_wait_event` in kernel/seccomp.c, Linux 6.6 and later), so each new notification
//! wakes *every* thread blocked in it; all but one find the request taken and sleep again.
//! On a 2-vCPU virtual machine a bare round trip (trap, receive, answer) took 1.7 µs with one
//! thread waiting in the ioctl and 4.5 µs with four.
//!
//! One waiter is not enough either. The notification wakes a waiter on the caller's CPU
//! (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`), but the wake-ups of an answer that installs a
//! descriptor (`SECCOMP_IOCTL_NOTIF_ADDFD`) are ordinary ones, which the scheduler sends to an
//! idle CPU: the worker may then still be on its way back, on the other CPU, when the next
//! call comes, and that call waits for a cross-CPU wake-up (a pipe ping-pong between the two
//! vCPUs of that machine: 60–80 µs, against 1.8 µs on one). A second waiter, already asleep
//! in the ioctl, is pulled to the caller's CPU instead. socket()+close() (native 1.6 µs), with
//! 1, 2, 3 and 4 waiters: 17.8, 8.6, 8.4 and 10.4 µs on an otherwise idle machine; 4.8, 4.9,
//! 6.4 and 8.0 µs with another process busy on the second CPU.
//!
//! So at most [`WAITERS`] workers at a time, those holding a turn, wait in the ioctl; the others
//! wait on a condition variable, which wakes exactly one of them when a turn is passed. A holder
//! keeps its turn while it serves a call that finishes quickly and goes straight back to the
//! ioctl, so a busy program's calls cost no hand-off between threads. Before anything that may
//! block (a round trip to the server, a `connect` the supervisor performs) it makes sure that
//! another worker waits for the next notification meanwhile: the other holder, if it is in the
//! ioctl; otherwise it passes its turn on.
//!
//! ## Limitations
//!
//! * At most two calls are served at once unless one of them may block.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, PoisonError};

thread_local! {
    /// Whether this thread holds the turn. Each worker thread serves one listener for its
    /// whole life, so one flag per thread is enough.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Workers waiting in `SECCOMP_IOCTL_NOTIF_RECV` at most.
pub const WAITERS: usize = 2;

/// The right to wait in `SECCOMP_IOCTL_NOTIF_RECV`, held by [`WAITERS`] workers at most.
#[derive(Debug, Default)]
pub struct ReceiveTurn {
    /// Turns held.
    taken: Mutex<usize>,
    passed: Condvar,
}

impl ReceiveTurn {
    /// Waits until the calling thread holds a turn; returns at once if it already does.
    pub fn take(&self) {
        if HOLDING.get() {
            return;
        }
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken >= WAITERS {
            taken = self
                .passed
                .wait(taken)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *taken += 1;
        HOLDING.set(true);
    }

    /// Gives the calling thread's turn to one waiting worker (or to the next that asks); does
    /// nothing if it holds none.
    pub fn pass(&self) {
        if !HOLDING.replace(false) {
            return;
        }
        *self.taken.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.passed.notify_one();
    }

    /// Whether the calling thread holds a turn.
    #[cfg(test)]
    pub fn held(&self) -> bool {
        HOLDING.get()
    }
}

/// Passes the turn when dropped: a worker that ends, however it ends, never keeps one.
#[derive(Debug)]
pub struct PassOnDrop<'a>(pub &'a ReceiveTurn);

impl Drop for PassOnDrop<'_> {
    fn drop(&mut self) {
        self.0.pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn taking_twice_in_one_thread_does_not_wait() {
        let turn = ReceiveTurn::default();
        turn.take();
        turn.take();
        assert!(turn.held());
        turn.pass();
        assert!(!turn.held());
        // Passing a turn one does not hold changes nothing.
        turn.pass();
        turn.take();
        turn.pass();
    }

    #[test]
    fn no_more_holders_than_waiters() {
        let turn = Arc::new(ReceiveTurn::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (turn, inside, most) = (turn.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        turn.take();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(50));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        turn.pass();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(most.load(Ordering::SeqCst) <= WAITERS);
    }

    #[test]
    fn a_thread_that_ends_passes_the_turn() {
        let turn = Arc::new(ReceiveTurn::default());
        for _ in 0..WAITERS + 1 {
            let holder = turn.clone();
            std::thread::spawn(move || {
                holder.take();
                let _pass = PassOnDrop(&holder);
            })
            .join()
            .unwrap();
        }
        assert_eq!(*turn.taken.lock().unwrap(), 0);
    }
}
