//! `rumphijack`: run a program with its sockets in a stack server's network stack.

mod audit;
mod blocking;
mod doctor;
mod embedded;
mod filter;
mod hybrid;
mod launch;
mod mediate;
mod notify;
mod policy_cmd;
mod pool;
mod remote;
mod run;
mod sys;
mod turn;

use std::process::ExitCode;

use clap::Parser;
use rumphijack_cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

pub use rumphijack_cli::{Failure, PolicyCommand, RunArgs};

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
        Command::Doctor => doctor::run(),
    }
}
