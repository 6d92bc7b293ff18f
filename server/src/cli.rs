//! The command line of the `rump_server` binary: every option and help text.
//!
//! It lives in the library so that the man page and the shell completions are generated
//! from the very [`clap::Command`] the binary parses with (`dist/`, `make`): `--help`,
//! `rump_server(8)` and the completions cannot disagree. The help texts follow the
//! conventions described in `rumphijack_cli` (sections, `  TERM  text` lists, `  $ command`
//! examples).

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{CommandFactory, Parser};

/// Clean shutdown after SIGINT or SIGTERM.
pub const EXIT_OK: u8 = 0;
/// The server could not start or failed while running.
pub const EXIT_FAILURE: u8 = 1;
/// Bad command line or server URL (clap uses the same code for its own errors).
pub const EXIT_USAGE: u8 = 2;

const LONG_ABOUT: &str = "\
Hosts a TCP/IP stack for rumphijack clients. The stack is a Linux network namespace: the
one rump_server runs in, an existing one (--netns), or a fresh one with only loopback up
(--isolated; unprivileged users get it through a user namespace). Clients connect to the
Unix socket named by URL (unix:///abs/path or unix://relative/path), and every socket they
ask for is created in that stack and passed back as a descriptor.

With URL tcp://ADDR:PORT (an IPv4 literal or [IPv6] literal) the server listens on TCP for
remote supervisors instead: it keeps the sockets itself and relays their data. Every such
connection is TLS 1.3, and both sides prove they hold the secret in --secret-file (at least
16 bytes, not readable by group or others) without sending it. Remote clients get Internet
sockets only; --policy restricts what they may connect to, bind, listen on, accept and send
to, whatever their own supervisor allows.

The socket file is created with mode 0600; peers other than root, the server's own uid and
--allow-uid uids are refused. A stale socket file is replaced; a live server is not.

Readiness: with --ready-fd FD the line READY is written to FD, which is then closed; with
--detach the command returns only once the server is ready. SIGINT and SIGTERM stop the
server: in-flight requests finish, the socket file is removed.

Under systemd: when the service is socket-activated, rump_server serves the listening
socket systemd passes (LISTEN_FDS, one ListenStream= socket) instead of binding one, and
leaves its file in place at exit; URL may then be left out. With Type=notify it reports
READY=1 to the service manager once it serves (NOTIFY_SOCKET).";

const AFTER_LONG_HELP: &str = "\
Environment:
  LISTEN_FDS  number of sockets passed by systemd socket activation, from descriptor 3 on;
              rump_server takes exactly one, a listening AF_UNIX stream socket bound to a
              path. Used only when LISTEN_PID is rump_server's pid; both are then removed
              from the environment.
  LISTEN_PID  the pid the passed sockets are meant for.
  NOTIFY_SOCKET  where to send readiness (sd_notify protocol): an AF_UNIX datagram
                 socket path, or an abstract name starting with @.
  RUST_LOG  log filter, overriding -v.

Exit status:
  0  clean shutdown after SIGINT or SIGTERM (or the detached server became ready)
  1  the server could not start (namespace, bind, live server present, unusable
     systemd socket) or failed
  2  usage error or bad URL

Examples:
  $ rump_server --isolated --detach --pidfile /run/stack.pid unix:///run/stack.sock
  $ RUMP_SERVER=unix:///run/stack.sock rumphijack run -- curl http://127.0.0.1:8080/
  $ systemctl enable --now rump_server.socket
  $ rump_server --secret-file /etc/rump.secret tcp://192.0.2.10:7000

See also:
  rumphijack(1), librumphijack(3), systemd.socket(5), sd_notify(3), network_namespaces(7)";

/// `0.1.0 (protocol 2, accepts 1 to 2)`.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        rumpclient::protocol::versions_summary()
    )
});

/// `rump_server`.
#[derive(Debug, Parser)]
#[command(
    name = "rump_server",
    version = VERSION.as_str(),
    about = "Host a network stack for rumphijack",
    long_about = LONG_ABOUT,
    after_help = "See 'rump_server --help' for the environment and exit status.",
    after_long_help = AFTER_LONG_HELP
)]
pub struct ServerArgs {
    /// Create a fresh network namespace with only loopback up.
    #[arg(long, conflicts_with = "netns")]
    pub isolated: bool,

    /// Join the network namespace at PATH (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,

    /// Also allow clients with this uid (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uid: Vec<u32>,

    /// Write "READY\n" to this inherited descriptor once listening, then close it.
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<RawFd>,

    /// Run in the background; return once the server is ready.
    #[arg(long)]
    pub detach: bool,

    /// Write the server's pid to PATH (removed on clean exit).
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,

    /// For a tcp:// URL: the file holding the secret clients must prove.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// For a tcp:// URL: a policy file deciding what remote clients may do.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// More logging: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Where to listen: unix:///abs/path, unix://relative/path or tcp://ADDR:PORT. Optional
    /// when systemd passes the socket; given then, it must name that socket.
    #[arg(value_name = "URL")]
    pub url: Option<String>,
}

/// The command-line definition `rump_server` parses with, for generating its man page and
/// completions.
pub fn command() -> clap::Command {
    ServerArgs::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn version_reports_the_protocol() {
        let version = command().render_version();
        let expected = format!("rump_server {} (protocol ", env!("CARGO_PKG_VERSION"));
        assert!(version.starts_with(&expected), "{version}");
    }
}
