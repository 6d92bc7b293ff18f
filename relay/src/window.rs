//! Send windows: how many data bytes one side may still send for one socket.
//!
//! The receiver grants bytes as it delivers them (to the real socket on the server, to the
//! program's end on the client), so what waits in its queues for one socket never exceeds
//! [`WINDOW`], and a socket whose reader stalls stops only its own sender.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Bytes a sender may have outstanding per socket and direction.
pub const WINDOW: u32 = 512 * 1024;

/// Connections a listening socket may announce before the client takes them.
pub const INCOMING_WINDOW: u32 = 128;

/// A send window.
#[derive(Debug)]
pub struct Window {
    state: Mutex<(u32, bool)>,
    changed: Notify,
}

impl Window {
    /// A window of `bytes`.
    pub fn new(bytes: u32) -> Window {
        Window {
            state: Mutex::new((bytes, false)),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until at least one byte may be sent, then takes up to `max`; 0 once closed.
    pub async fn take(&self, max: u32) -> u32 {
        loop {
            let notified = self.changed.notified();
            {
                let mut state = self.lock();
                if state.1 {
                    return 0;
                }
                if state.0 > 0 {
                    let n = state.0.min(max);
                    state.0 -= n;
                    return n;
                }
            }
            notified.await;
        }
    }

    /// Takes exactly `n` bytes if the window has them (a datagram is sent whole or not at
    /// all).
    pub fn try_take(&self, n: u32) -> bool {
        let mut state = self.lock();
        if !state.1 && state.0 >= n {
            state.0 -= n;
            true
        } else {
            false
        }
    }

    /// Returns `n` bytes to the window.
    pub fn give(&self, n: u32) {
        let mut state = self.lock();
        state.0 = state.0.saturating_add(n);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Ends every wait: the socket is gone.
    pub fn close(&self) {
        self.lock().1 = true;
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_is_there_and_waits_for_more() {
        let w = std::sync::Arc::new(Window::new(10));
        assert_eq!(w.take(4).await, 4);
        assert_eq!(w.take(100).await, 6);
        assert!(!w.try_take(1));
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.take(100).await })
        };
        tokio::task::yield_now().await;
        w.give(3);
        assert_eq!(waiter.await.unwrap(), 3);
        w.close();
        assert_eq!(w.take(1).await, 0);
    }
}
