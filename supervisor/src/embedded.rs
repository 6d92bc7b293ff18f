//! The stack server the supervisor hosts itself when no `--server` or `RUMP_SERVER` is given.
//!
//! The supervisor talks to it over a socket pair with the same protocol as to an external
//! server, so the notification path is identical in both cases.
//!
//! * Current namespace: the server runs on a thread of the supervisor.
//! * `--isolated` / `--netns`: the server runs in a forked child, because creating a user
//!   namespace (needed for `--isolated` without privileges) requires a single-threaded
//!   process, and joining a namespace would otherwise move a supervisor thread. The child
//!   dies with the supervisor (`PR_SET_PDEATHSIG`).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;

use nix::unistd::{fork, ForkResult};
use server::ServeOptions;
use tracing::{debug, warn};

/// Which stack the embedded server hosts.
#[derive(Debug, Clone)]
pub enum EmbeddedStack {
    /// The supervisor's own network namespace.
    Current,
    /// A fresh namespace with only `lo` up.
    Isolated,
    /// An existing namespace, joined by path.
    Netns(PathBuf),
}

/// An embedded server whose thread has not been started yet.
#[derive(Debug)]
pub enum Embedded {
    /// Serve on a thread once [`Embedded::start`] is called (after the program is forked).
    Pending(UnixStream),
    /// Already serving in a child process.
    Running,
}

/// Why the embedded server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// socketpair(2) failed.
    #[error("socketpair: {0}")]
    SocketPair(std::io::Error),
    /// fork(2) failed.
    #[error("fork: {0}")]
    Fork(nix::errno::Errno),
}

/// Prepares an embedded server for `stack` and returns the client's end of its connection.
///
/// Must be called while the supervisor is single-threaded (it may fork).
pub fn prepare(stack: &EmbeddedStack) -> Result<(UnixStream, Embedded), EmbeddedError> {
    let (client_end, server_end) = UnixStream::pair().map_err(EmbeddedError::SocketPair)?;
    if let EmbeddedStack::Current = stack {
        return Ok((client_end, Embedded::Pending(server_end)));
    }

    // SAFETY: the caller guarantees a single-threaded process, so the child is consistent.
    match unsafe { fork() }.map_err(EmbeddedError::Fork)? {
        ForkResult::Child => {
            drop(client_end);
            let code = serve_in_child(stack, server_end);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { .. } => Ok((client_end, Embedded::Running)),
    }
}

impl Embedded {
    /// Starts the in-process server thread, if this server runs in-process.
    pub fn start(self) {
        if let Embedded::Pending(stream) = self {
            thread::Builder::new()
                .name("embedded-server".into())
                .spawn(move || serve(stream))
                .expect("spawning the embedded server thread");
        }
    }
}

fn serve(stream: UnixStream) {
    // The peer is this very process; there is nobody else to check.
    let opts = ServeOptions {
        check_peer: false,
        ..ServeOptions::default()
    };
    match server::serve_connection(stream, &opts) {
        Ok(end) => debug!(?end, "embedded server session ended"),
        Err(e) => warn!(error = %e, "embedded server session failed"),
    }
}

fn serve_in_child(stack: &EmbeddedStack, stream: UnixStream) -> i32 {
    // SAFETY: PR_SET_PDEATHSIG takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };

    let entered = match stack {
        EmbeddedStack::Isolated => server::netns::isolate(),
        EmbeddedStack::Netns(path) => server::netns::join(path),
        EmbeddedStack::Current => Ok(()),
    };
    if let Err(e) = entered {
        // The client sees the connection close during its handshake and reports that; this
        // line says why.
        eprintln!("rumphijack: embedded server: {e}");
        return 1;
    }
    serve(stream);
    0
}
