//! The notification probe of `rumphijack doctor`: user notification end to end.
//!
//! It follows `rumphijack run` step by step with a child that makes one
//! trapped `socket(AF_INET)` call: the child loads the real filter with the real flags, the
//! parent takes the listener with `pidfd_getfd`, receives the notification, reads the
//! child's memory and answers with an `AF_UNIX` socket through `SECCOMP_IOCTL_NOTIF_ADDFD`
//! with `SECCOMP_ADDFD_FLAG_SEND`; the child then checks that the descriptor it got is that
//! socket. A step that cannot run because an earlier one failed is reported as not tried.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use policy::{HijackSpec, Policy};

use super::probes::{Probe, STEP_TIMEOUT};
use crate::filter::{self, Redirect};
use crate::sys::{self, sock};

/// Bytes the parent reads back out of the child's memory; fork keeps them at the same address.
static MEMORY_MARKER: [u8; 16] = *b"rumphijack probe";

/// Everything the notification probe found out.
#[derive(Debug)]
pub struct NotificationProbe {
    /// libseccomp compiled the filter `rumphijack run` uses by default.
    pub filter: Probe,
    /// seccomp(2) gave a listener and a trapped call reached it.
    pub notification: Probe,
    /// The kernel accepted `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`.
    pub wait_killable: Probe,
    /// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND` installed the socket.
    pub addfd_send: Probe,
    /// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` accepted `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.
    pub sync_wakeup: Probe,
    /// `pidfd_open` and `pidfd_getfd` copied the child's listener.
    pub pidfd_getfd: Probe,
    /// `pidfd_open` accepted `PIDFD_THREAD`.
    pub pidfd_thread: Probe,
    /// `process_vm_readv` read the child's memory.
    pub read_memory: Probe,
}

fn not_tried(missing: &str) -> Probe {
    Err(format!("not tried, since {missing} is missing"))
}

/// The child's report after loading the filter: tag, errno, wait-killable flag, listener.
const STATUS_LEN: usize = 10;
const TAG_LISTENER: u8 = 0;
const TAG_NNP_FAILED: u8 = 1;
const TAG_SECCOMP_FAILED: u8 = 2;
/// The child's report of its trapped socket() call: errno (0: none), descriptor, domain.
const RESULT_LEN: usize = 12;

impl NotificationProbe {
    /// Runs the probe. Must be called while the process is single-threaded (it forks).
    pub fn run() -> NotificationProbe {
        let mut found = NotificationProbe {
            filter: Ok(()),
            notification: not_tried("libseccomp"),
            wait_killable: not_tried("seccomp user notification"),
            addfd_send: not_tried("seccomp user notification"),
            sync_wakeup: not_tried("seccomp user notification"),
            pidfd_getfd: not_tried("seccomp user notification"),
            pidfd_thread: not_tried("seccomp user notification"),
            read_memory: not_tried("seccomp user notification"),
        };
        let hijack = HijackSpec::default();
        let program = match filter::build(Redirect::Trap(&hijack), &Policy::allow_all(), None) {
            Ok(program) => program,
            Err(e) => {
                found.filter = Err(e.to_string());
                return found;
            }
        };
        // Errors of the child as a whole (fork, its status frame) come before any trapped
        // call was received: the notification step is the one that failed.
        if let Err(e) = found.with_child(&program) {
            found.notification = Err(e);
        }
        found
    }

    /// Starts the child and takes it through the steps; `Err` when the child could not be
    /// started or did not report.
    fn with_child(&mut self, program: &[sys::BpfInstruction]) -> Result<(), String> {
        let (parent_end, child_end) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        parent_end
            .set_read_timeout(Some(STEP_TIMEOUT))
            .map_err(|e| format!("setting a read timeout: {e}"))?;

        // SAFETY: the documented precondition of `run`: the process is single-threaded, so
        // the child is a consistent copy and may run ordinary code until it exits.
        let child = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                drop(parent_end);
                let code = child_side(child_end, program);
                // SAFETY: _exit ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Reaped::new(child),
        };
        drop(child_end);
        self.parent_side(&parent_end, child.pid)
    }

    fn parent_side(&mut self, sock: &UnixStream, child: Pid) -> Result<(), String> {
        // 1. The child's filter and its listener.
        let mut status = [0u8; STATUS_LEN];
        read_frame(sock, &mut status, "the child's filter status")?;
        let errno = Errno::from_raw(i32::from_le_bytes(status[1..5].try_into().expect("4")));
        match status[0] {
            TAG_LISTENER => {}
            TAG_NNP_FAILED => {
                self.notification = Err(format!("prctl(PR_SET_NO_NEW_PRIVS): {errno}"));
                return Ok(());
            }
            TAG_SECCOMP_FAILED => {
                self.notification = Err(format!(
                    "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER): {errno}"
                ));
                return Ok(());
            }
            tag => return Err(format!("the child sent an unknown status {tag}")),
        }
        self.wait_killable = if status[5] != 0 {
            Ok(())
        } else {
            Err("seccomp(2) refused the flag with EINVAL".to_owned())
        };
        let number = i32::from_le_bytes(status[6..10].try_into().expect("4"));

        // 2. The listener, copied out of the child as `rumphijack run` does.
        let listener = match self.take_listener(child, number) {
            Some(listener) => listener,
            None => {
                self.notification = not_tried("pidfd_getfd");
                self.sync_wakeup = not_tried("pidfd_getfd");
                return Ok(());
            }
        };
        self.sync_wakeup = sys::notif_set_sync_wakeup(listener.as_fd()).map_err(|e| e.to_string());

        // 3. Let the child make its trapped call, and receive it.
        (&*sock)
            .write_all(&[1])
            .map_err(|e| format!("sending the go-ahead: {e}"))?;
        let notif = match receive(&listener) {
            Ok(notif) => notif,
            Err(e) => {
                self.notification = Err(e);
                return Ok(());
            }
        };
        self.notification = Ok(());

        // 4. Read the child's memory while the call is pending.
        let mut copy = [0u8; MEMORY_MARKER.len()];
        let addr = MEMORY_MARKER.as_ptr() as u64;
        self.read_memory = match sys::read_memory(notif.pid as i32, addr, &mut copy) {
            Ok(()) if copy == MEMORY_MARKER => Ok(()),
            Ok(()) => Err("read back different bytes".to_owned()),
            Err(errno) => Err(format!("{errno} (ptrace access to the program denied?)")),
        };

        // 5. Answer with a socket the child can recognise.
        self.addfd_send = answer_with_socket(&listener, notif.id, sock);
        Ok(())
    }

    fn take_listener(&mut self, child: Pid, number: i32) -> Option<OwnedFd> {
        let (pidfd, per_thread) = match sys::pidfd_open(child.as_raw(), || Some(child.as_raw())) {
            Ok(opened) => opened,
            Err(errno) => {
                self.pidfd_getfd = Err(format!("pidfd_open: {errno}"));
                return None;
            }
        };
        self.pidfd_thread = if per_thread {
            Ok(())
        } else {
            Err("pidfd_open refused the flag with EINVAL".to_owned())
        };
        match sys::pidfd_getfd(pidfd.as_fd(), number) {
            Ok(listener) => {
                self.pidfd_getfd = Ok(());
                Some(listener)
            }
            Err(errno) => {
                self.pidfd_getfd = Err(format!("pidfd_getfd: {errno}"));
                None
            }
        }
    }
}

/// Waits (bounded) for the child's trapped call and checks that it is the `socket()` call.
fn receive(listener: &OwnedFd) -> Result<sys::Notif, String> {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(STEP_TIMEOUT).unwrap_or(PollTimeout::NONE);
    match poll(&mut fds, timeout) {
        Ok(0) => return Err(format!("no notification within {STEP_TIMEOUT:?}")),
        Ok(_) => {}
        Err(errno) => return Err(format!("poll on the listener: {errno}")),
    }
    let notif =
        sys::notif_recv(listener.as_fd()).map_err(|e| format!("SECCOMP_IOCTL_NOTIF_RECV: {e}"))?;
    if notif.data.nr != libc::SYS_socket as i32 {
        return Err(format!(
            "notified of system call {} instead of socket",
            notif.data.nr
        ));
    }
    Ok(notif)
}

/// Installs a fresh `AF_UNIX` socket as the result of notification `id` and reads back what
/// the child received.
fn answer_with_socket(listener: &OwnedFd, id: u64, sock: &UnixStream) -> Probe {
    let answer = sock::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        .map_err(|errno| format!("socket(AF_UNIX): {}", Errno::from_raw(errno)))?;
    let installed = match sys::notif_addfd_send(listener.as_fd(), id, answer.as_fd(), true) {
        Ok(number) => number,
        Err(errno) => {
            // Release the child's call, which is still waiting for an answer.
            let _ = sys::notif_send(listener.as_fd(), id, Err(libc::ENOSYS));
            return Err(format!("SECCOMP_IOCTL_NOTIF_ADDFD: {errno}"));
        }
    };
    let mut result = [0u8; RESULT_LEN];
    read_frame(sock, &mut result, "the child's socket() result")?;
    let word = |i: usize| i32::from_le_bytes(result[i..i + 4].try_into().expect("4"));
    let (errno, fd, domain) = (word(0), word(4), word(8));
    if errno != 0 {
        return Err(format!(
            "the child's socket() failed with {}",
            Errno::from_raw(errno)
        ));
    }
    if fd != installed || domain != libc::AF_UNIX {
        return Err(format!(
            "the child got descriptor {fd} of family {domain}, not the AF_UNIX socket {installed}"
        ));
    }
    Ok(())
}

fn read_frame(sock: &UnixStream, buf: &mut [u8], what: &str) -> Result<(), String> {
    (&*sock)
        .read_exact(buf)
        .map_err(|e| format!("reading {what}: {e}"))
}

/// The probe child: loads the filter as `rumphijack run`'s child does, reports, waits for
/// the go-ahead, makes one trapped `socket()` call and reports what it got. Returns its exit
/// code.
fn child_side(sock: UnixStream, program: &[sys::BpfInstruction]) -> i32 {
    // Plain write(2), which the filter never traps.
    let report = |frame: &[u8]| (&sock).write_all(frame).is_ok();
    let status = |tag: u8, errno: i32, killable: bool, fd: i32| {
        let mut frame = [0u8; STATUS_LEN];
        frame[0] = tag;
        frame[1..5].copy_from_slice(&errno.to_le_bytes());
        frame[5] = u8::from(killable);
        frame[6..10].copy_from_slice(&fd.to_le_bytes());
        frame
    };

    if let Err(errno) = sys::set_no_new_privs() {
        report(&status(TAG_NNP_FAILED, errno as i32, false, -1));
        return 1;
    }
    let base = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let killable = base | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    let loaded = match sys::seccomp_set_mode_filter(program, killable) {
        Err(Errno::EINVAL) => sys::seccomp_set_mode_filter(program, base).map(|fd| (fd, false)),
        other => other.map(|fd| (fd, true)),
    };
    let listener = match loaded {
        Ok((listener, killable)) => {
            report(&status(TAG_LISTENER, 0, killable, listener.as_raw_fd()));
            listener
        }
        Err(errno) => {
            report(&status(TAG_SECCOMP_FAILED, errno as i32, false, -1));
            return 1;
        }
    };

    // The parent copies the listener before it sends the go-ahead.
    let mut go = [0u8; 1];
    if (&sock).read_exact(&mut go).is_err() {
        return 1;
    }
    drop(listener);

    let mut frame = [0u8; RESULT_LEN];
    match sock::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) {
        Ok(fd) => {
            let domain = sock::getsockopt_int(fd.as_fd(), libc::SO_DOMAIN).unwrap_or(-1);
            frame[4..8].copy_from_slice(&fd.as_raw_fd().to_le_bytes());
            frame[8..12].copy_from_slice(&domain.to_le_bytes());
        }
        Err(errno) => frame[0..4].copy_from_slice(&errno.to_le_bytes()),
    }
    report(&frame);
    0
}

/// A child process that is killed and reaped when this goes out of scope.
struct Reaped {
    pid: Pid,
}

impl Reaped {
    fn new(pid: Pid) -> Reaped {
        Reaped { pid }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // The child exits on its own once it has reported; a child stuck in a step that
        // failed on our side is not worth waiting for.
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}
