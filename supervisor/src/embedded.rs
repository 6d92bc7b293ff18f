//! The stack server the supervisor hosts itself when no `--server` or `RUMP_SERVER` is given.
//!
//! The supervisor talks to it over a socket pair with the same protocol as to an external
//! server, so the notification path is identical in both cases.
//!
//! * Current namespace: no server at all — the notification workers create the sockets
//!   themselves ([`crate::notify::SocketSource::Direct`]), which spares every `socket()` a
//!   round trip; in hybrid mode a [`serve_library`] thread serves the preload library.
//! * `--isolated` / `--netns`: the server runs in a forked child, because creating a user
//!   namespace (needed for `--isolated` without privileges) requires a single-threaded
//!   process, and joining a namespace would otherwise move a supervisor thread. The child
//!   dies with the supervisor (`PR_SET_PDEATHSIG`).
//!
//! In hybrid mode the preload library in the program needs a server it can reach itself, so
//! the embedded server then also listens on a socket file in a private directory
//! ([`prepare`]'s `path`), in the same stack.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;

use nix::unistd::{fork, ForkResult};
use server::{ServeOptions, StackServer};
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

/// Why the embedded server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// socketpair(2) failed.
    #[error("socketpair: {0}")]
    SocketPair(std::io::Error),
    /// fork(2) failed.
    #[error("fork: {0}")]
    Fork(nix::errno::Errno),
    /// The socket file for the preload library could not be served.
    #[error("listening for the preload library: {0}")]
    Listen(server::ServerError),
    /// No thread could be started for it.
    #[error("starting the listener thread: {0}")]
    Thread(String),
}

/// Starts an embedded server for `stack` (isolated or joined) in a child process and returns
/// the client's end of its connection and the child's pid. With `path`, the server also
/// listens there.
///
/// Must be called while the supervisor is single-threaded (it forks).
pub fn prepare(
    stack: &EmbeddedStack,
    path: Option<&Path>,
) -> Result<(UnixStream, nix::unistd::Pid), EmbeddedError> {
    let (client_end, server_end) = UnixStream::pair().map_err(EmbeddedError::SocketPair)?;

    // SAFETY: the caller guarantees a single-threaded process, so the child is consistent.
    match unsafe { fork() }.map_err(EmbeddedError::Fork)? {
        ForkResult::Child => {
            drop(client_end);
            let code = serve_in_child(stack, server_end, path);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok((client_end, child)),
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

/// Binds the socket file for the preload library in the current stack. Binding happens
/// here, before the program exists, so its first connect finds the file; serving starts
/// with [`serve_library`].
pub fn bind_for_library(path: &Path) -> Result<StackServer, EmbeddedError> {
    StackServer::bind(path, ServeOptions::default()).map_err(EmbeddedError::Listen)
}

/// Serves `server` on a thread of its own until the process ends.
pub fn serve_library(server: StackServer) -> Result<(), EmbeddedError> {
    thread::Builder::new()
        .name("embedded-listener".into())
        .spawn(move || {
            if let Err(e) = server.run(None) {
                warn!(error = %e, "embedded server listener failed");
            }
        })
        .map_err(|e| EmbeddedError::Thread(e.to_string()))?;
    Ok(())
}

fn listen_on(path: &Path) -> Result<(), EmbeddedError> {
    serve_library(bind_for_library(path)?)
}

fn serve_in_child(stack: &EmbeddedStack, stream: UnixStream, path: Option<&Path>) -> i32 {
    // SAFETY: PR_SET_PDEATHSIG takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };

    // The supervisor made itself non-dumpable and the child inherited that; a
    // non-dumpable process's /proc/self files belong to root, so an unprivileged one could
    // not write its new user namespace's uid_map. Dumpable only while it does.
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    let entered = match stack {
        EmbeddedStack::Isolated => server::netns::isolate(),
        EmbeddedStack::Netns(path) => server::netns::join(path),
        EmbeddedStack::Current => Ok(()),
    };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if let Err(e) = entered {
        // The client sees the connection close during its handshake and reports that; this
        // line says why.
        eprintln!("rumphijack: embedded server: {e}");
        return 1;
    }
    if let Some(path) = path {
        if let Err(e) = listen_on(path) {
            eprintln!("rumphijack: embedded server: {e}");
            return 1;
        }
    }
    serve(stream);
    0
}
