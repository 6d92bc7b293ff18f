//! `rumphijack`: run a program with its sockets in a stack server's network stack.

mod audit;
mod blocking;
mod embedded;
mod filter;
mod hybrid;
mod launch;
mod mediate;
mod notify;
mod policy_cmd;
mod pool;
mod run;
mod sys;
mod turn;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

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

const EXIT_CODES: &str = "\
Exit status:
  the program's own status, or 128+N when it was killed by signal N
  64   usage error
  69   the stack server cannot be reached or refused the connection
  71   operating-system failure (fork, seccomp, threads)
  78   bad RUMP_SERVER, RUMPHIJACK, RUMPHIJACK_RETRYCONNECT or policy file
  126  the program cannot be executed
  127  the program was not found";

#[derive(Debug, Parser)]
#[command(
    name = "rumphijack",
    version,
    about = "Run a program with its network sockets in a rump_server's stack",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run PROGRAM with its sockets created in the stack server's network namespace.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Validate or query a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
    /// Stack server URL (unix:///path or unix://relative); overrides RUMP_SERVER.
    #[arg(long, value_name = "URL", conflicts_with_all = ["isolated", "netns"])]
    pub server: Option<String>,

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

    /// The preload library for --preload (default: next to rumphijack, or ../lib).
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
    #[arg(required = true, value_name = "PROGRAM")]
    pub program: OsString,

    /// Its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Prints a command-line error as one `rumphijack:` line (help and version as clap renders
/// them) and returns the status for it.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(Failure::Usage as u8)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("rumphijack: {first} (try 'rumphijack run --help')");
            ExitCode::from(Failure::Usage as u8)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Run(args) => {
            init_logging(args.verbose);
            match run::run(args) {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    eprintln!("rumphijack: {:#}", e.error);
                    ExitCode::from(e.failure as u8)
                }
            }
        }
        Command::Policy(cmd) => policy_cmd::run(cmd),
    }
}
