//! Running programs with `LD_PRELOAD=librumphijack.so` and no supervisor.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use crate::bins::bin_dir;
use crate::{argv, python3, write_helper, Spawned, TempDir, TIMEOUT};

/// Variables the library reads; a test sets the ones it is about and inherits none.
const LIBRARY_ENV: [&str; 8] = [
    "RUMP_SERVER",
    "RUMPHIJACK",
    "RUMPHIJACK_RETRYCONNECT",
    "RUMPHIJACK_POLICY",
    "RUMPHIJACK_HYBRID_COOKIE",
    "RUMPHIJACK_DEBUG",
    "RUST_LOG",
    "LD_PRELOAD",
];

/// `librumphijack.so`, next to the `rumphijack` binary.
pub fn library() -> PathBuf {
    let path = bin_dir().join("librumphijack.so");
    assert!(
        path.is_file(),
        "librumphijack.so not found at {}: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// `ARGV...` with the library preloaded and `RUMP_SERVER` set to `server_url` (left unset for
/// `None`), in an environment otherwise free of the library's variables.
pub fn preload<I, S>(server_url: Option<&str>, argv: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut argv = argv.into_iter();
    let program = argv.next().expect("a program to run");
    let mut cmd = Command::new(program);
    cmd.args(argv);
    for var in LIBRARY_ENV {
        cmd.env_remove(var);
    }
    cmd.env("LD_PRELOAD", library());
    if let Some(url) = server_url {
        cmd.env("RUMP_SERVER", url);
    }
    cmd
}

/// `rh.py echo-server PORT HOSTS...` with the library preloaded against `server_url`: a TCP
/// and UDP echo service that exists only in that server's stack. Returns once it listens.
pub fn preload_echo_server(dir: &TempDir, server_url: &str, port: u16, hosts: &[&str]) -> Spawned {
    let script = write_helper(dir);
    let mut args = argv![python3(), "-u", script, "echo-server", port.to_string()];
    args.extend(hosts.iter().map(std::ffi::OsString::from));
    let mut echo = Spawned::start(preload(Some(server_url), args), dir.path(), "echo-server");
    echo.wait_for_line(TIMEOUT, |l| l == "listening");
    echo
}
