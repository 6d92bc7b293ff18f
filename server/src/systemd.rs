//! Running under systemd: socket activation and readiness notification, implemented from
//! their documented protocols (sd_listen_fds(3), sd_notify(3)) without libsystemd.
//!
//! * Socket activation: systemd binds and listens on the socket of a `.socket` unit and
//!   starts the service with it as descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` set to the
//!   service's pid. [`take_listen_fds`] checks both, takes the descriptor, makes sure it is a
//!   listening `AF_UNIX` stream socket bound to a path, and removes the variables so that
//!   nothing started later mistakes them for its own.
//! * Readiness: with `Type=notify` systemd waits for `READY=1` on the datagram socket named
//!   by `NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). A
//!   [`Notifier`] sends such state lines. Its socket must be made before the process enters
//!   another network namespace: abstract names are looked up in the namespace of the
//!   sending socket (unix(7)).
//!
//! Both read and change the environment, which is only sound while the process is
//! single-threaded: call them first thing in `main`.
//!
//! # Limitations
//!
//! * One socket only: a socket unit with several `Listen*=` lines is refused.
//! * `NOTIFY_SOCKET` of the `vsock:` kind (a service in a virtual machine) is refused.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;

use nix::errno::Errno;

use crate::sys;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// Why the environment systemd set up could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// `LISTEN_FDS` or `LISTEN_PID` is not a number.
    #[error("{name}={value:?} is not a number")]
    BadNumber {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: OsString,
    },
    /// More than one socket was passed.
    #[error("systemd passed {0} sockets (LISTEN_FDS); rump_server serves exactly one")]
    TooManySockets(u32),
    /// The passed descriptor cannot be taken.
    #[error("socket passed by systemd (descriptor {LISTEN_FDS_START}): {0}")]
    Adopt(Errno),
    /// The passed descriptor is not what rump_server can serve on.
    #[error(
        "socket passed by systemd (descriptor {LISTEN_FDS_START}) is not {expected} ({found})"
    )]
    WrongSocket {
        /// What it must be.
        expected: &'static str,
        /// What it is, or the error that kept us from finding out.
        found: String,
    },
    /// `NOTIFY_SOCKET` names something other than a Unix datagram socket.
    #[error("NOTIFY_SOCKET={0:?}: only a socket path or an @abstract name is supported")]
    NotifySocket(OsString),
    /// The notification socket could not be created.
    #[error("creating a socket for NOTIFY_SOCKET: {0}")]
    NotifySetup(io::Error),
}

/// The listening socket systemd passed, and the path it is bound to.
#[derive(Debug)]
pub struct Activation {
    /// The socket, close-on-exec.
    pub listener: UnixListener,
    /// Its file, which belongs to the socket unit.
    pub path: PathBuf,
}

/// Takes the socket systemd passed, if any was passed to this process: `Ok(None)` when
/// `LISTEN_PID` is unset or names another process, or `LISTEN_FDS` is unset or 0. Removes
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment in every case.
///
/// Call it before the process opens any descriptor and before it starts threads.
pub fn take_listen_fds() -> Result<Option<Activation>, SystemdError> {
    let pid = std::env::var_os("LISTEN_PID");
    let fds = std::env::var_os("LISTEN_FDS");
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Sound: the process is still single-threaded (documented calling rule).
        std::env::remove_var(name);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if number("LISTEN_PID", &pid)? != std::process::id() {
        return Ok(None);
    }
    match number("LISTEN_FDS", &fds)? {
        0 => return Ok(None),
        1 => {}
        n => return Err(SystemdError::TooManySockets(n)),
    }

    let fd = sys::adopt_inherited_fd(LISTEN_FDS_START).map_err(SystemdError::Adopt)?;
    check_listening_unix_stream(&fd)?;
    let listener = UnixListener::from(fd);
    let wrong = |found: String| SystemdError::WrongSocket {
        expected: "bound to a path",
        found,
    };
    let addr = listener.local_addr().map_err(|e| wrong(e.to_string()))?;
    let path = addr
        .as_pathname()
        .ok_or_else(|| wrong("it is unnamed or abstract".to_owned()))?
        .to_path_buf();
    Ok(Some(Activation { listener, path }))
}

fn number(name: &'static str, value: &OsStr) -> Result<u32, SystemdError> {
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| SystemdError::BadNumber {
            name,
            value: value.to_owned(),
        })
}

/// The socket(7) options that make a socket one rump_server can accept clients on.
fn check_listening_unix_stream(fd: &OwnedFd) -> Result<(), SystemdError> {
    let checks = [
        (libc::SO_DOMAIN, libc::AF_UNIX, "an AF_UNIX socket"),
        (
            libc::SO_TYPE,
            libc::SOCK_STREAM,
            "a stream socket (ListenStream=)",
        ),
        (libc::SO_ACCEPTCONN, 1, "a listening socket"),
    ];
    for (opt, wanted, expected) in checks {
        match sys::getsockopt_int(fd.as_fd(), opt) {
            Ok(value) if value == wanted => {}
            Ok(value) => {
                return Err(SystemdError::WrongSocket {
                    expected,
                    found: format!("option value {value}"),
                })
            }
            Err(errno) => {
                return Err(SystemdError::WrongSocket {
                    expected,
                    found: errno.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Sends state lines to the service manager over `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// Reads and removes `NOTIFY_SOCKET`: `Ok(None)` when it is unset or empty.
    ///
    /// Call it before the process starts threads.
    pub fn from_env() -> Result<Option<Notifier>, SystemdError> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        // Sound: the process is still single-threaded (documented calling rule).
        std::env::remove_var("NOTIFY_SOCKET");
        if value.is_empty() {
            return Ok(None);
        }
        let bytes = value.as_bytes();
        let addr = match bytes[0] {
            b'/' => SocketAddr::from_pathname(&value),
            b'@' => SocketAddr::from_abstract_name(&bytes[1..]),
            _ => return Err(SystemdError::NotifySocket(value)),
        }
        .map_err(|_| SystemdError::NotifySocket(value.clone()))?;
        let socket = UnixDatagram::unbound().map_err(SystemdError::NotifySetup)?;
        Ok(Some(Notifier { socket, addr }))
    }

    /// Sends `state`, newline-separated `KEY=value` assignments such as `READY=1`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        if sent != state.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                state.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_be_decimal() {
        assert_eq!(number("LISTEN_FDS", OsStr::new("1")).unwrap(), 1);
        let err = number("LISTEN_PID", OsStr::new("12x")).unwrap_err();
        assert_eq!(err.to_string(), "LISTEN_PID=\"12x\" is not a number");
    }

    #[test]
    fn a_socket_that_does_not_listen_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = check_listening_unix_stream(&OwnedFd::from(a)).unwrap_err();
        assert!(err.to_string().contains("a listening socket"), "{err}");

        let dgram = UnixDatagram::unbound().unwrap();
        let err = check_listening_unix_stream(&OwnedFd::from(dgram)).unwrap_err();
        assert!(err.to_string().contains("a stream socket"), "{err}");
    }

    #[test]
    fn a_notifier_reaches_an_abstract_socket() {
        let name = format!("rump-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr,
        };
        notifier.notify("READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
