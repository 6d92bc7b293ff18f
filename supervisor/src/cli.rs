//! The command line of `rumphijack`: every option, subcommand and help text.
//!
//! This is a library of its own (`rumphijack_cli`) so that the man page and the shell
//! completions are generated from the very [`clap::Command`] the binary parses with
//! (`dist/`, `make`): `--help`, `rumphijack(1)` and the completions cannot disagree.
//!
//! The help texts follow a few conventions the man page generator relies on: in
//! `after_long_help`, a line with no indentation ending in `:` starts a section, a line
//! `  TERM  text` (two spaces, the term, two or more spaces) is an item of a list, a deeper
//! indented line continues it, and a line `  $ command` is an example command.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Exit statuses of rumphijack's own failures. The program's own status is passed through
/// unchanged, so these overlap with whatever it might return, as with env(1) and timeout(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Bad command line (sysexits EX_USAGE).
    Usage = 64,
    /// The stack server cannot be reached or refused us (EX_UNAVAILABLE).
    ServerUnavailable = 69,
    /// An operating-system facility failed: fork, seccomp, threads (EX_OSERR).
    Os = 71,
    /// Bad `RUMP_SERVER`, `RUMPHIJACK`, `RUMPHIJACK_RETRYCONNECT` or policy (EX_CONFIG).
    Config = 78,
    /// The program exists but cannot be executed (as in sh(1)).
    NotExecutable = 126,
    /// The program was not found (as in sh(1)).
    NotFound = 127,
}

/// The exit statuses of `rumphijack run`, shown by `rumphijack run --help`.
pub const EXIT_CODES: &str = "\
Exit status:
  N    the program's own status, or 128+N when it was killed by signal N
  64   usage error
  69   the stack server cannot be reached or refused the connection
  71   operating-system failure (fork, seccomp, threads)
  78   bad RUMP_SERVER, RUMPHIJACK, RUMPHIJACK_RETRYCONNECT, policy or secret file, or no
       preload library for --preload
  126  the program exists but cannot be executed
  127  the program was not found
  As with env(1) and timeout(1), the program itself may exit with one of these values.
  rumphijack policy check exits with 2 for an invalid policy; rumphijack doctor with 1
  when the kernel lacks something rumphijack run needs.";

const LONG_ABOUT: &str = "\
Runs an unmodified program so that its network sockets live in a different TCP/IP stack: a
Linux network namespace hosted by a stack server (rump_server(8)), an existing namespace
(--netns) or a fresh one with only loopback up (--isolated). The program runs under a
seccomp filter; each socket it creates in a redirected family is created in that stack
instead and installed in the program, so everything it does with the socket afterwards is
an ordinary kernel operation at native speed. This works for every program: dynamic,
static, Go, anything that makes raw system calls.

A policy (--policy) decides which connects, binds, listens, accepts and addressed sends the
program may make; the supervisor checks each such call on its own copy of the address and
performs it itself, so the program cannot change the address after the check.

There are three ways to use it: the supervisor alone (rumphijack run, the default, and the
only one that is a security boundary); the preload library alone
(LD_PRELOAD=librumphijack.so, see librumphijack(3)), which sees calls through libc only;
and hybrid mode (rumphijack run --preload), where the library handles libc's calls
in-process and the seccomp filter catches the rest.";

const RUN_LONG_ABOUT: &str = "\
Runs PROGRAM with its sockets created in the stack server's network namespace.

The stack is the server at --server or RUMP_SERVER; without either, rumphijack hosts it
itself (an embedded server): the namespace it runs in, a fresh one (--isolated) or an
existing one (--netns). Signals INT, TERM, HUP, QUIT, USR1 and USR2 sent to rumphijack are
passed on to the program, and every child that exits is reaped, so rumphijack can be a
container's first process.";

const DOCTOR_LONG_ABOUT: &str = "\
Checks, by trying each one, the kernel features rumphijack relies on: seccomp user
notification, installing descriptors with SECCOMP_IOCTL_NOTIF_ADDFD and
SECCOMP_ADDFD_FLAG_SEND, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, pidfd_open and
pidfd_getfd, reading a process's memory, user and network namespaces, and a few optional
ones. Prints one line per feature, ok or missing, with what depends on it; the probes run
in short-lived child processes.

Exit status is 0 when everything rumphijack run needs is present (optional features may be
missing), 1 when something it needs is missing.";

const ENVIRONMENT: &str = "\
Environment:
  RUMP_SERVER  stack server URL, unix:///abs/path, unix://relative/path or tcp://ADDR:PORT
               (as --server). Without it and without --server, rumphijack run hosts the
               stack itself.
  RUMPHIJACK_SECRET_FILE  for a tcp:// server, the file holding the shared secret (as
                          --secret-file).
  RUMPHIJACK  the socket families to redirect, in NetBSD's syntax: socket=all:nolocal
              (the default: every family but AF_UNIX), socket=inet:inet6, socket=none:netlink.
              Unknown keys and families are errors.
  RUMPHIJACK_RETRYCONNECT  what to do when the server connection is lost: inftime (retry
                           forever), once, N (retry for N seconds), die (kill the program).
                           Unset: do not reconnect; new sockets fail with ENOTCONN.
  RUMPHIJACK_POLICY  policy file, as --policy.
  RUST_LOG  log filter for rumphijack's own messages, overriding -v.";

const FILES: &str = "\
Files:
  librumphijack.so  the preload library of --preload, when --library is not given: first
                    next to the rumphijack executable, then in ../lib relative to it (so
                    PREFIX/bin/rumphijack finds PREFIX/lib/librumphijack.so).";

const SEE_ALSO: &str = "\
See also:
  rump_server(8), librumphijack(3), seccomp_unotify(2), network_namespaces(7)";

/// Everything `rumphijack --help` shows after the options; the man page's ENVIRONMENT,
/// EXIT STATUS, FILES and SEE ALSO sections.
static AFTER_LONG_HELP: LazyLock<String> =
    LazyLock::new(|| [ENVIRONMENT, EXIT_CODES, FILES, SEE_ALSO].join("\n\n"));

/// `0.1.0 (protocol 2, accepts 1 to 2)`.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        rumpclient::protocol::versions_summary()
    )
});

/// `rumphijack`.
#[derive(Debug, Parser)]
#[command(
    name = "rumphijack",
    version = VERSION.as_str(),
    about = "Run a program with its network sockets in another network stack",
    long_about = LONG_ABOUT,
    after_help = "See 'rumphijack --help' for the environment, exit status and files.",
    after_long_help = AFTER_LONG_HELP.as_str(),
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run PROGRAM with its sockets created in the stack server's network namespace.
    #[command(long_about = RUN_LONG_ABOUT, after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Validate or query a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check that this kernel has what rumphijack needs, and say what will not work.
    #[command(long_about = DOCTOR_LONG_ABOUT)]
    Doctor,
}

/// `rumphijack policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check FILE; print FILE:LINE:COL and what was expected for each error.
    /// Exit status 0 when valid, 2 when not.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Show which rule of FILE decides QUERY, e.g. `connect tcp 10.1.2.3:443`,
    /// `send udp [::1]:53`, `bind tcp 0.0.0.0:8080`, `accept tcp 192.0.2.7:0`.
    Explain {
        /// The policy file.
        file: PathBuf,
        /// Operation, protocol and address, as separate words or one string.
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
    },
}

/// Options of `rumphijack run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stack server URL (unix:///path, unix://relative, or tcp://ADDR:PORT for a remote
    /// stack whose sockets are relayed); overrides RUMP_SERVER.
    #[arg(long, value_name = "URL", conflicts_with_all = ["isolated", "netns"])]
    pub server: Option<String>,

    /// For a tcp:// server: the file holding the shared secret (at least 16 bytes, not
    /// readable by group or others).
    #[arg(long, value_name = "FILE", env = "RUMPHIJACK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// With the embedded server: host a fresh network namespace with only `lo` up.
    #[arg(long, conflicts_with = "netns")]
    pub isolated: bool,

    /// With the embedded server: host the network namespace at PATH (/run/netns/NAME).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,

    /// Policy file deciding which network operations are allowed (see docs/policy.md);
    /// default: RUMPHIJACK_POLICY, else everything is allowed.
    #[arg(long, value_name = "FILE", env = "RUMPHIJACK_POLICY")]
    pub policy: Option<PathBuf>,

    /// Hybrid mode: also load librumphijack.so into the program so that its libc socket
    /// calls are handled in-process; the seccomp filter still catches everything else. Faster,
    /// but not a security boundary.
    #[arg(long)]
    pub preload: bool,

    /// The preload library for --preload (default: next to rumphijack, else in ../lib
    /// relative to it).
    #[arg(long, value_name = "PATH", requires = "preload")]
    pub library: Option<PathBuf>,

    /// Close every inherited descriptor above 2 before the program starts, so no host-stack
    /// socket the caller left open reaches it.
    #[arg(long)]
    pub close_fds: bool,

    /// At exit, write how many calls of each kind the supervisor served to FILE (JSON).
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,

    /// Append every policy decision to FILE as a JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The program to run.
    #[arg(required = true, value_name = "PROGRAM", value_hint = clap::ValueHint::CommandName)]
    pub program: OsString,

    /// Its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS",
        value_hint = clap::ValueHint::CommandWithArguments
    )]
    pub args: Vec<OsString>,
}

/// The command-line definition `rumphijack` parses with, for generating its man page and
/// completions.
pub fn command() -> clap::Command {
    Cli::command()
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
        assert!(
            version.starts_with(&format!(
                "rumphijack {} (protocol ",
                env!("CARGO_PKG_VERSION")
            )),
            "{version}"
        );
    }

    #[test]
    fn run_takes_the_program_and_its_hyphenated_arguments() {
        let cli = Cli::try_parse_from(["rumphijack", "run", "--", "curl", "-s", "--fail"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run: {cli:?}")
        };
        assert_eq!(args.program, "curl");
        assert_eq!(args.args, ["-s", "--fail"]);
    }
}
