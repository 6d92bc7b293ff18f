//! Helpers for the hostile-program, fault and load tests: a listener in the host's stack that
//! tells a host-stack socket from a redirected one, running as an ordinary user, and reading a
//! process's resource use from `/proc`.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::process::Command;

use crate::bins::rumphijack;

/// The uid and gid the unprivileged tests run as (`nobody` on Debian).
pub const NOBODY: &str = "65534";

/// A TCP listener on `127.0.0.1` in the host's (the test's) stack. A supervised program whose
/// socket connects here got a host-stack socket: the servers the tests start host stacks in
/// which nothing listens on this port. Connections are queued by the kernel, never accepted.
#[derive(Debug)]
pub struct HostListener {
    listener: TcpListener,
}

impl HostListener {
    pub fn bind() -> HostListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 on the host");
        HostListener { listener }
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("local_addr").port()
    }

    /// The port as an argument word.
    pub fn arg(&self) -> String {
        self.port().to_string()
    }
}

/// `setpriv --reuid 65534 --regid 65534 --clear-groups PROGRAM ARGS...`, with the client
/// environment cleared as [`crate::rumphijack_cmd`] does.
pub fn as_nobody<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(program)
        .args(args);
    for var in [
        "RUMP_SERVER",
        "RUMPHIJACK",
        "RUMPHIJACK_RETRYCONNECT",
        "RUMPHIJACK_POLICY",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `rumphijack run --server URL -- ARGV...` as uid 65534.
pub fn hijack_as_nobody<I, S>(server_url: &str, argv: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut args: Vec<std::ffi::OsString> = ["run", "--server", server_url, "--"]
        .iter()
        .map(Into::into)
        .collect();
    args.extend(argv.into_iter().map(|a| a.as_ref().to_owned()));
    as_nobody(rumphijack(), args)
}

/// A numeric field of `/proc/PID/status` (`Threads`, or `VmRSS` in kB).
pub fn status_field(pid: u32, name: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {path}"))
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads")
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
}

/// A count from the environment variable `var`, or `default`.
pub fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a count"))
    })
}

/// The `key=value` words of the first line of `text` starting with `prefix`.
pub fn report_line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}
