//! Serving the program's trapped system calls.
//!
//! One receiver thread reads notifications from the listener and hands them to a small pool
//! of workers over a channel; a worker answers each one. The workers share one connection to
//! the stack server.
//!
//! Every thread here runs with all signals blocked (the supervisor blocks them before it
//! starts any thread, and threads inherit the mask). A signal that interrupts
//! `SECCOMP_IOCTL_NOTIF_ADDFD` while the kernel installs a descriptor has been seen to leave
//! the program's `socket()` returning 0 with nothing installed; with signals blocked these
//! ioctls cannot be interrupted that way.
//!
//! The receiver stops when the listener reports `POLLHUP`: every process that carried the
//! filter is gone, and no notification can arrive any more.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rumpclient::client::{CallError, Client};
use tracing::{debug, trace, warn};

use crate::sys::{self, Notif};

/// Number of worker threads answering notifications.
const WORKERS: usize = 4;

/// What the service asks of the rest of the supervisor.
pub trait Events: Send + Sync + 'static {
    /// The server connection is lost and the retry policy is `die`: the program must end.
    /// `caller` is the thread whose call found the connection gone.
    fn server_lost_die(&self, caller: u32);
}

/// Starts the receiver and the workers. They run until the listener hangs up.
pub fn start(listener: OwnedFd, client: Arc<Client>, events: Arc<dyn Events>) {
    let listener = Arc::new(listener);
    let (tx, rx) = crossbeam_channel::bounded::<Notif>(256);

    for n in 0..WORKERS {
        let (listener, client, events, rx) =
            (listener.clone(), client.clone(), events.clone(), rx.clone());
        thread::Builder::new()
            .name(format!("notif-worker-{n}"))
            .spawn(move || worker(listener.as_fd(), &client, &*events, rx))
            .expect("spawning a worker thread");
    }
    thread::Builder::new()
        .name("notif-receiver".into())
        .spawn(move || receiver(listener.as_fd(), tx))
        .expect("spawning the receiver thread");
}

fn receiver(listener: BorrowedFd<'_>, tx: Sender<Notif>) {
    loop {
        let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => {
                warn!(error = %e, "poll on the seccomp listener failed; stopping");
                return;
            }
            Ok(_) => {}
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLIN) {
            if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                debug!("seccomp listener hung up: no supervised process is left");
                return;
            }
            continue;
        }

        match sys::notif_recv(listener) {
            Ok(notif) => {
                if tx.send(notif).is_err() {
                    return;
                }
            }
            // The calling thread was interrupted or died before we read its notification.
            Err(Errno::ENOENT) | Err(Errno::EINTR) => continue,
            Err(e) => {
                warn!(error = %e, "reading a seccomp notification failed; stopping");
                return;
            }
        }
    }
}

fn worker(listener: BorrowedFd<'_>, client: &Client, events: &dyn Events, rx: Receiver<Notif>) {
    for notif in rx {
        match i64::from(notif.data.nr) {
            libc::SYS_socket => handle_socket(listener, client, events, &notif),
            other => {
                // The filter traps nothing else; answer rather than leave the thread hanging.
                warn!(
                    nr = other,
                    pid = notif.pid,
                    "unexpected trapped system call"
                );
                respond(listener, &notif, Err(libc::ENOSYS));
            }
        }
    }
}

/// `socket(domain, type, protocol)`: the socket comes from the server and is installed in
/// the program in place of the one it asked for.
fn handle_socket(listener: BorrowedFd<'_>, client: &Client, events: &dyn Events, notif: &Notif) {
    // socket(2) takes ints; the kernel ignores the upper halves of the registers.
    let [domain, ty, protocol] = [0, 1, 2].map(|i| notif.data.args[i] as u32 as i32);
    let cloexec = ty & libc::SOCK_CLOEXEC != 0;
    trace!(pid = notif.pid, domain, ty, protocol, "socket");

    let fd = match client.create_socket(domain, ty & !libc::SOCK_CLOEXEC, protocol) {
        Ok(fd) => fd,
        Err(CallError::Errno(errno)) => {
            trace!(pid = notif.pid, domain, errno, "server refused socket");
            return respond(listener, notif, Err(errno));
        }
        Err(CallError::Die) => {
            respond(listener, notif, Err(libc::ENOTCONN));
            return events.server_lost_die(notif.pid);
        }
    };

    // Installs the descriptor and answers the call in one step, so the program can never see
    // a descriptor number that was not installed (ADDFD_FLAG_SEND, Linux 5.14). Our copy is
    // closed when `fd` drops, leaving the program's the only one: its close() ends the socket.
    match sys::notif_addfd_send(listener, notif.id, fd.as_fd(), cloexec) {
        Ok(installed) => trace!(pid = notif.pid, fd = installed, "socket installed"),
        Err(Errno::ENOENT) => debug!(pid = notif.pid, "caller gone before its socket arrived"),
        Err(errno) => {
            // For instance EMFILE: the program is at its descriptor limit.
            debug!(pid = notif.pid, %errno, "installing the socket failed");
            respond(listener, notif, Err(errno as i32));
        }
    }
}

fn respond(listener: BorrowedFd<'_>, notif: &Notif, result: Result<i64, i32>) {
    match sys::notif_send(listener, notif.id, result) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => warn!(pid = notif.pid, %errno, "answering a notification failed"),
    }
}
