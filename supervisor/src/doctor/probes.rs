//! The probes of `rumphijack doctor` other than the notification probe
//! ([`super::notification`]): what the system is, `close_range`, and namespaces as
//! `--isolated` makes them, each a real use of the feature in a child process where it
//! changes the process.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Uid};

use crate::sys;

/// The outcome of one probe: what went wrong, in words.
pub type Probe = Result<(), String>;

/// How long the parent waits for any step of a child.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The kernel, the libseccomp in use and who runs the probes, in one line.
pub fn describe_system() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
    };
    let libseccomp = match libseccomp::ScmpVersion::current() {
        Ok(v) => format!("{}.{}.{}", v.major, v.minor, v.micro),
        Err(_) => "?".to_owned(),
    };
    format!(
        "Linux {} {}, libseccomp {libseccomp} (API level {}), uid {}",
        read("/proc/sys/kernel/osrelease"),
        std::env::consts::ARCH,
        libseccomp::get_api(),
        nix::unistd::geteuid()
    )
}

/// `close_range(2)` with `CLOSE_RANGE_CLOEXEC`, on a descriptor number that is never open,
/// as `rumphijack run --close-fds` uses it.
pub fn close_range() -> Probe {
    sys::close_range(u32::MAX, u32::MAX, sys::CLOSE_RANGE_CLOEXEC).map_err(|e| e.to_string())
}

/// Creates a stack the way `--isolated` does ([`server::netns::isolate`]) in a child
/// process, as the current user or, with `as_nobody`, after becoming uid and gid 65534.
pub fn isolated_stack(as_nobody: bool) -> Probe {
    in_child(move || {
        if as_nobody {
            const NOBODY: u32 = 65534;
            nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
            nix::unistd::setgid(Gid::from_raw(NOBODY)).map_err(|e| format!("setgid: {e}"))?;
            nix::unistd::setuid(Uid::from_raw(NOBODY)).map_err(|e| format!("setuid: {e}"))?;
            // Changing credentials made the process non-dumpable, which would keep it from
            // writing its own uid_map; a user logging in starts dumpable.
            sys::set_dumpable().map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
        }
        server::netns::isolate().map_err(|e| e.to_string())
    })
    .map_err(|e| match user_namespace_hint() {
        Some(hint) => format!("{e} ({hint})"),
        None => e,
    })
}

/// The setting that explains missing unprivileged user namespaces, if one does.
fn user_namespace_hint() -> Option<String> {
    let setting = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let known = [
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        ),
    ];
    known.iter().find_map(|(path, blocking)| {
        (setting(path).as_deref() == Some(*blocking)).then(|| {
            let name = path.trim_start_matches("/proc/sys/").replace('/', ".");
            format!("{name} = {blocking}")
        })
    })
}

/// Runs `probe` in a forked child and returns its outcome, passed back through a pipe.
fn in_child(probe: impl FnOnce() -> Probe) -> Probe {
    let (mut rx, tx) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    rx.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(|e| format!("setting a read timeout: {e}"))?;

    // SAFETY: callers run the probes while the process is single-threaded (see `run`).
    let child = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(rx);
            let message = match probe() {
                Ok(()) => String::new(),
                Err(message) => message,
            };
            let _ = (&tx).write_all(message.as_bytes());
            // SAFETY: _exit ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(tx);

    let mut message = String::new();
    let read = rx.read_to_string(&mut message);
    if read.is_err() {
        // Stuck or unreadable: do not wait for it forever.
        let _ = kill(child, Signal::SIGKILL);
    }
    let status = waitpid(child, None);
    match (read, status) {
        (Ok(_), Ok(WaitStatus::Exited(_, 0))) if message.is_empty() => Ok(()),
        (Ok(_), Ok(WaitStatus::Exited(_, 0))) => Err(message),
        (_, status) => Err(format!("the probe process ended abnormally: {status:?}")),
    }
}
