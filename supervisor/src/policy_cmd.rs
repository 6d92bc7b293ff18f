//! `rumphijack policy check` and `rumphijack policy explain`.

use std::process::ExitCode;

use policy::Policy;

use crate::{Failure, PolicyCommand};

/// Exit status of `policy check` for an invalid policy.
const INVALID: u8 = 2;

/// Runs a `policy` subcommand and returns its exit status.
pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { file } => match Policy::load(&file) {
            Ok(policy) => {
                println!("{}: ok ({} rules)", file.display(), policy.rules().len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(INVALID)
            }
        },
        PolicyCommand::Explain { file, query } => {
            let policy = match Policy::load(&file) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(INVALID);
                }
            };
            match policy::parse_query(&query.join(" ")) {
                Ok(q) => {
                    print!("{}", policy::explain(&policy, &q));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rumphijack: bad query {:?}: {e}", query.join(" "));
                    ExitCode::from(Failure::Usage as u8)
                }
            }
        }
    }
}
