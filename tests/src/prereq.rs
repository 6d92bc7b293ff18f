//! Prerequisites: skip loudly when one is missing, and fail instead under CI.

use std::env;
use std::path::PathBuf;

/// True when running as root. Otherwise prints `SKIPPED: <test>: needs root` and returns false
/// — or panics when the `CI` variable is set, since CI must run every test.
pub fn require_root(test: &str) -> bool {
    nix::unistd::geteuid().is_root() || skip(test, "needs root")
}

/// True when `program` is found in `PATH`; otherwise skips like [`require_root`].
pub fn require_program(test: &str, program: &str) -> bool {
    find_in_path(program).is_some() || skip(test, &format!("`{program}` not found in PATH"))
}

/// True when `path` exists (a file a package installs, such as a library of scripts);
/// otherwise skips like [`require_root`].
pub fn require_path(test: &str, path: &std::path::Path) -> bool {
    path.exists() || skip(test, &format!("{} not found", path.display()))
}

/// The first executable named `program` in `PATH`.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn skip(test: &str, reason: &str) -> bool {
    if env::var_os("CI").is_some() {
        panic!("{test}: missing prerequisite under CI (tests may not skip there): {reason}");
    }
    eprintln!("SKIPPED: {test}: {reason}");
    false
}
