//! Which worker may wait for the next notification.
//!
//! `SECCOMP_IOCTL_NOTIF_RECV` sleeps on the listener's wait queue as a non-exclusive waiter
//! (`recv_wait_event` in kernel/seccomp.c, Linux 6.6 and later), so each new notification
//! wakes *every* thread blocked in it; all but one find the request taken and sleep again.
//! On a 2-vCPU virtual machine a bare round trip (trap, receive, answer) took 1.7 µs with one
//! thread waiting in the ioctl and 4.5 µs with four: the useless wake-ups cost more than the
//! rest of the round trip. So only one worker at a time, the one holding the turn, waits in
//! the ioctl; the others wait on a condition variable, which wakes exactly one of them when
//! the turn is passed.
//!
//! The holder keeps the turn while it serves a call that finishes quickly and goes straight
//! back to the ioctl, so a busy program's calls cost no hand-off between threads at all. It
//! passes the turn before anything that may block (a round trip to the server, a `connect`
//! the supervisor performs), so another worker takes the next notification meanwhile.
//!
//! ## Limitations
//!
//! * Quick calls of different program threads are served one after the other, by the
//!   holder, rather than by several workers at once.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, PoisonError};

thread_local! {
    /// Whether this thread holds the turn. Each worker thread serves one listener for its
    /// whole life, so one flag per thread is enough.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// The right to wait in `SECCOMP_IOCTL_NOTIF_RECV`, held by one worker at a time.
#[derive(Debug, Default)]
pub struct ReceiveTurn {
    taken: Mutex<bool>,
    passed: Condvar,
}

impl ReceiveTurn {
    /// Waits until the calling thread holds the turn; returns at once if it already does.
    pub fn take(&self) {
        if HOLDING.get() {
            return;
        }
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken {
            taken = self
                .passed
                .wait(taken)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *taken = true;
        HOLDING.set(true);
    }

    /// Gives the turn to one waiting worker (or to the next that asks); does nothing if the
    /// calling thread does not hold it.
    pub fn pass(&self) {
        if !HOLDING.replace(false) {
            return;
        }
        *self.taken.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.passed.notify_one();
    }

    /// Whether the calling thread holds the turn.
    #[cfg(test)]
    pub fn held(&self) -> bool {
        HOLDING.get()
    }
}

/// Passes the turn when dropped: a worker that ends, however it ends, never keeps it.
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
    fn one_holder_at_a_time() {
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
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_thread_that_ends_passes_the_turn() {
        let turn = Arc::new(ReceiveTurn::default());
        let holder = turn.clone();
        std::thread::spawn(move || {
            holder.take();
            let _pass = PassOnDrop(&holder);
        })
        .join()
        .unwrap();
        // Would wait forever if the ended thread still held it.
        turn.take();
        turn.pass();
    }
}
