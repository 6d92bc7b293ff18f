//! `rumphijack-dist OUT_DIR`: writes the files an installation needs besides the binaries,
//! generated from the programs' own command-line definitions (`rumphijack_cli::command`,
//! `server::cli::command`), so `--help`, the man pages and the completions cannot disagree.
//!
//! ```text
//! OUT_DIR/man/rumphijack.1  rump_server.8  librumphijack.3
//! OUT_DIR/completions/bash/rumphijack  rump_server
//! OUT_DIR/completions/zsh/_rumphijack  _rump_server
//! OUT_DIR/completions/fish/rumphijack.fish  rump_server.fish
//! ```
//!
//! `librumphijack(3)` is written by hand (`dist/man/librumphijack.3`): a library has no
//! command line to generate it from. It is copied here so that every page reaches the
//! installation by the same way. `make` runs this program; see the Makefile.

mod completions;
mod man;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use clap_complete::Shell;

/// The hand-written page of the preload library.
const LIBRUMPHIJACK_3: &str = include_str!("../man/librumphijack.3");

/// Write the man pages and shell completions of rumphijack and rump_server.
#[derive(Debug, Parser)]
#[command(name = "rumphijack-dist", version)]
struct Args {
    /// Directory to write man/ and completions/ into (created if missing).
    out_dir: PathBuf,
}

/// A program of the installation, with its command line.
struct Program {
    name: &'static str,
    command: clap::Command,
    section: &'static str,
    manual: &'static str,
}

fn programs() -> [Program; 2] {
    [
        Program {
            name: "rumphijack",
            command: rumphijack_cli::command(),
            section: "1",
            manual: "User Commands",
        },
        Program {
            name: "rump_server",
            command: server::cli::command(),
            section: "8",
            manual: "System Administration",
        },
    ]
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args.out_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rumphijack-dist: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> io::Result<()> {
    let man_dir = out.join("man");
    create_dir(&man_dir)?;
    let date = build_date()?;
    for program in programs() {
        let page = man::render(&program.command, program.section, &date, program.manual);
        write(
            &man_dir.join(format!("{}.{}", program.name, program.section)),
            &page,
        )?;
    }
    write(&man_dir.join("librumphijack.3"), LIBRUMPHIJACK_3)?;

    for (shell, dir, file_name) in [
        (Shell::Bash, "bash", "{}"),
        (Shell::Zsh, "zsh", "_{}"),
        (Shell::Fish, "fish", "{}.fish"),
    ] {
        let dir = out.join("completions").join(dir);
        create_dir(&dir)?;
        for mut program in programs() {
            let script = completions::script(shell, &mut program.command, program.name)?;
            let path = dir.join(file_name.replace("{}", program.name));
            write(&path, &script)?;
        }
    }
    Ok(())
}

/// The date a page carries: `SOURCE_DATE_EPOCH` when set (reproducible builds), else today,
/// as `YYYY-MM-DD` in UTC.
fn build_date() -> io::Result<String> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value.parse::<u64>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds"),
            )
        })?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let (year, month, day) = civil_date(seconds / 86_400);
    Ok(format!("{year:04}-{month:02}-{day:02}"))
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (the days-to-civil
/// conversion on 400-year eras of 146 097 days, each starting on a 1 March).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn create_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir).map_err(|e| with_path(e, "creating", dir))
}

fn write(path: &Path, contents: &str) -> io::Result<()> {
    fs::write(path, contents).map_err(|e| with_path(e, "writing", path))
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_454), (2026, 1, 1));
    }
}
