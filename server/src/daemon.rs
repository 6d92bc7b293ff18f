//! Starting as a service: detaching from the starter, telling it when the server is ready,
//! and the pid file.
//!
//! Readiness is one line, `READY\n`, written to a descriptor the starter holds the other
//! end of, which is then closed. A script waits for it with a plain blocking read; no
//! polling of the socket path and no sleeps.
//!
//! # Limitations
//!
//! * [`detach`] keeps the working directory and standard output and error (so logs still
//!   go where the starter sent them); only standard input is replaced by `/dev/null`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::sys::{self, Forked};

/// The line that announces readiness.
pub const READY_LINE: &[u8] = b"READY\n";

/// Why the process could not detach or take its readiness descriptor.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The `--ready-fd` descriptor cannot be used.
    #[error("ready descriptor {fd}: {errno}")]
    ReadyFd {
        /// The number given.
        fd: RawFd,
        /// `EBADF`: not open or a standard stream; `EBUSY`: taken already.
        errno: Errno,
    },
    /// A system call of the detaching sequence failed.
    #[error("detaching: {call}: {errno}")]
    Detach {
        /// The call.
        call: &'static str,
        /// What it said; `EBUSY` from `fork` means the process already had threads.
        errno: Errno,
    },
}

/// Where to announce readiness: a descriptor inherited from the starter, or the pipe to
/// the parent that [`detach`] left waiting.
#[derive(Debug)]
pub struct ReadyNotifier(OwnedFd);

impl ReadyNotifier {
    /// Takes ownership of inherited descriptor `fd` (marking it close-on-exec).
    ///
    /// Call it first thing in `main`, before the process opens any file: only then is it
    /// sure that nothing else in the process owns that descriptor number.
    pub fn from_inherited_fd(fd: RawFd) -> Result<Self, DaemonError> {
        sys::adopt_inherited_fd(fd)
            .map(ReadyNotifier)
            .map_err(|errno| DaemonError::ReadyFd { fd, errno })
    }

    /// Writes [`READY_LINE`] and closes the descriptor.
    pub fn ready(self) -> io::Result<()> {
        File::from(self.0).write_all(READY_LINE)
    }

    /// Writes `message` (one line) instead of the ready line and closes the descriptor:
    /// the starter learns why the server did not start. Best effort.
    pub fn failed(self, message: &str) {
        let _ = writeln!(File::from(self.0), "{message}");
    }
}

/// The outcome of [`detach`] in each of the two processes.
#[derive(Debug)]
pub enum Detached {
    /// The original process, after the child reported: `Ok` once it was ready, `Err` with
    /// its message when it failed or exited before.
    Parent(Result<(), String>),
    /// The detached child, in a new session; it must report through the notifier.
    Child(ReadyNotifier),
}

/// Forks; the child leaves the starter's session (setsid(2)) and the parent waits until
/// the child reports readiness or failure through a pipe.
///
/// Must be called while the process is single-threaded; otherwise it fails with `EBUSY`
/// without forking.
pub fn detach() -> Result<Detached, DaemonError> {
    let err = |call| move |errno| DaemonError::Detach { call, errno };
    let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err("pipe2"))?;
    match sys::fork().map_err(err("fork"))? {
        Forked::Parent => {
            drop(tx);
            Ok(Detached::Parent(wait_for_child(File::from(rx))))
        }
        Forked::Child => {
            drop(rx);
            nix::unistd::setsid().map_err(err("setsid"))?;
            let null = File::open("/dev/null").map_err(|e| DaemonError::Detach {
                call: "open /dev/null",
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
            nix::unistd::dup2(null.as_raw_fd(), libc::STDIN_FILENO).map_err(err("dup2"))?;
            Ok(Detached::Child(ReadyNotifier(tx)))
        }
    }
}

/// Reads the child's report: the ready line, or anything else up to end-of-file.
fn wait_for_child(mut pipe: File) -> Result<(), String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the server's report: {e}")),
        }
        if got.as_slice() == READY_LINE {
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&got).trim().to_owned();
    if text.is_empty() {
        Err("the server exited before it was ready".to_owned())
    } else {
        Err(text)
    }
}

/// A pid file, removed again when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes the current pid and a newline to `path`, replacing any previous content.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_sees_ready_or_the_childs_message() {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        ReadyNotifier(tx).ready().unwrap();
        assert_eq!(wait_for_child(File::from(rx)), Ok(()));

        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        ReadyNotifier(tx).failed("rump_server: boom");
        assert_eq!(
            wait_for_child(File::from(rx)),
            Err("rump_server: boom".to_owned())
        );

        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        drop(tx);
        assert!(wait_for_child(File::from(rx))
            .unwrap_err()
            .contains("exited"));
    }

    #[test]
    fn fork_is_refused_in_a_multithreaded_process() {
        // The test harness runs this on a worker thread beside the main thread.
        if sys::thread_count().unwrap() > 1 {
            assert!(matches!(
                detach(),
                Err(DaemonError::Detach {
                    call: "fork",
                    errno: Errno::EBUSY
                })
            ));
        }
    }

    #[test]
    fn pid_file_holds_the_pid_and_goes_away() {
        let path = std::env::temp_dir().join(format!("rump-pid-{}", std::process::id()));
        let pid_file = PidFile::create(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(pid_file);
        assert!(!path.exists());
    }
}
