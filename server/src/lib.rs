//! The rump stack server: hosts a TCP/IP stack (a Linux network namespace) and creates
//! sockets in it for clients, handing each over as a descriptor (`SCM_RIGHTS`).
//!
//! * [`netns`]: which stack the server hosts — its own namespace, an existing one, or a
//!   fresh isolated one — and [`describe_stack`].
//! * [`session`]: one client session ([`serve_connection`]) and who may connect
//!   ([`ServeOptions`]).
//! * [`listener`]: [`StackServer`], the listening socket and a thread per client.
//! * [`daemon`]: what the `rump_server` binary needs to start as a service: detaching and
//!   telling its starter that it is ready.
//! * [`systemd`]: socket activation and readiness notification under systemd.
//! * [`cli`]: the binary's command line, shared with the man page and completion generator.
//!
//! The crate is a library so that `rumphijack run` can embed a server in-process; the
//! binary is a thin shell around it. All `unsafe` code is in the private `sys` module.
//!
//! # Threads and namespaces
//!
//! A socket belongs to the network namespace of the thread that creates it. Enter the
//! namespace ([`netns::join`], [`netns::isolate`]) and bind ([`StackServer::bind`], which
//! sets the process-wide umask for a moment) before starting threads; the server's own
//! threads inherit the namespace of the thread that calls [`StackServer::run`].

pub mod cli;
pub mod daemon;
pub mod listener;
pub mod netns;
pub mod session;
mod sys;
pub mod systemd;

pub use listener::{ServerError, ShutdownHandle, StackServer, Stopped, MAX_CLIENTS};
pub use netns::{describe_stack, NetnsError};
pub use session::{serve_connection, ServeOptions, SessionEnd, SessionError};
