//! Choosing the network stack the server hosts: the namespace it runs in, an existing one
//! ([`join`]), or a fresh private one ([`isolate`]).
//!
//! On Linux a network namespace is a whole TCP/IP stack (network_namespaces(7)), and a
//! socket belongs for its whole life to the namespace of the thread that created it.
//!
//! # Threads
//!
//! Namespaces are a property of each thread, and a new thread starts in the namespaces of
//! the thread that spawned it. Call [`join`] or [`isolate`] while the process is still
//! single-threaded, before the server (or anything else) spawns threads:
//!
//! * unshare(2) of a user namespace fails with `EINVAL` in a multi-threaded process;
//! * setns(2) and unshare(2) of a network namespace move only the calling thread, so
//!   threads started earlier would keep creating sockets in the old stack.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{getegid, geteuid};

use crate::sys;

/// Why the server could not enter the requested network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// What open(2) said.
        source: io::Error,
    },
    /// setns(2) refused the namespace.
    #[error("setns(CLONE_NEWNET) into {path}: {errno}")]
    Setns {
        /// The path given.
        path: PathBuf,
        /// What setns(2) said (`EINVAL`: not a network namespace; `EPERM`: no privilege).
        errno: Errno,
    },
    /// unshare(2) failed.
    #[error("unshare({flags}): {errno}")]
    Unshare {
        /// The namespaces asked for.
        flags: &'static str,
        /// What unshare(2) said (`EINVAL` when the process is multi-threaded, `EPERM` or
        /// `ENOSPC` when user namespaces are disabled or exhausted).
        errno: Errno,
    },
    /// Writing an identity map of the new user namespace failed.
    #[error("writing {what} of the new user namespace: {source}")]
    IdMap {
        /// `setgroups`, `uid_map` or `gid_map`.
        what: &'static str,
        /// What write(2) said.
        source: io::Error,
    },
    /// Loopback could not be brought up.
    #[error("bringing loopback up with {call}: {errno}")]
    Loopback {
        /// The call that failed.
        call: &'static str,
        /// What it said.
        errno: Errno,
    },
}

/// Moves the calling thread into the network namespace at `path` (a bind mount such as
/// `/run/netns/NAME`, or `/proc/PID/ns/net`).
///
/// Needs `CAP_SYS_ADMIN` over the namespace's user namespace. Call it while the process is
/// single-threaded (see the [module docs](self)).
pub fn join(path: &Path) -> Result<(), NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| {
        NetnsError::Setns {
            path: path.to_owned(),
            errno,
        }
    })?;
    tracing::info!(path = %path.display(), "joined network namespace");
    Ok(())
}

/// Moves the calling thread into a fresh network namespace whose only interface is `lo`,
/// brought up: a stack nothing else uses.
///
/// As root this is unshare(`CLONE_NEWNET`). Otherwise the thread first enters a new user
/// namespace in which its own uid and gid map to themselves (so files it creates keep
/// their owner) and it holds `CAP_NET_ADMIN` over the new network namespace
/// (user_namespaces(7)); `setgroups` is denied there, as the kernel requires before an
/// unprivileged process may write `gid_map`.
///
/// Call it while the process is single-threaded (see the [module docs](self)).
pub fn isolate() -> Result<(), NetnsError> {
    let (uid, gid) = (geteuid(), getegid());
    if uid.is_root() {
        unshare(CloneFlags::CLONE_NEWNET, "CLONE_NEWNET")?;
    } else {
        let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET;
        unshare(flags, "CLONE_NEWUSER|CLONE_NEWNET")?;
        write_id_map("setgroups", "deny")?;
        write_id_map("uid_map", &format!("{uid} {uid} 1"))?;
        write_id_map("gid_map", &format!("{gid} {gid} 1"))?;
    }
    bring_loopback_up()?;
    tracing::info!(stack = %describe_stack(), "created an isolated network namespace");
    Ok(())
}

fn unshare(flags: CloneFlags, name: &'static str) -> Result<(), NetnsError> {
    nix::sched::unshare(flags).map_err(|errno| NetnsError::Unshare { flags: name, errno })
}

fn write_id_map(what: &'static str, content: &str) -> Result<(), NetnsError> {
    // The maps take one write(2) each (user_namespaces(7)), which fs::write does for a
    // buffer this small.
    fs::write(format!("/proc/self/{what}"), content)
        .map_err(|source| NetnsError::IdMap { what, source })
}

/// Sets `IFF_UP` on `lo` (netdevice(7)); a new namespace starts with it down.
fn bring_loopback_up() -> Result<(), NetnsError> {
    let dgram = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
    let sock = sys::socket(libc::AF_INET, dgram, 0).map_err(|errno| NetnsError::Loopback {
        call: "socket",
        errno,
    })?;
    let lo = c"lo";
    let flags =
        sys::ioctl_siocgifflags(sock.as_fd(), lo).map_err(|errno| NetnsError::Loopback {
            call: "SIOCGIFFLAGS",
            errno,
        })?;
    let up = flags | libc::IFF_UP as i16;
    sys::ioctl_siocsifflags(sock.as_fd(), lo, up).map_err(|errno| NetnsError::Loopback {
        call: "SIOCSIFFLAGS",
        errno,
    })
}

/// Describes the stack the calling thread creates sockets in, for people: the network
/// namespace as the kernel names it and the interfaces in it, such as
/// `"netns net:[4026532501], interfaces: lo"`. Parts that cannot be read are shown as `?`.
pub fn describe_stack() -> String {
    // thread-self, not self: the namespace of this thread is the one that matters.
    let ns = fs::read_link("/proc/thread-self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let interfaces = match nix::net::if_::if_nameindex() {
        Ok(list) => {
            let names: Vec<_> = list.iter().map(|i| i.name().to_string_lossy()).collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        }
        Err(_) => "?".to_owned(),
    };
    format!("netns {ns}, interfaces: {interfaces}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_names_the_namespace_and_loopback() {
        let text = describe_stack();
        assert!(text.starts_with("netns net:["), "{text}");
        assert!(text.contains("lo"), "{text}");
    }

    #[test]
    fn joining_a_file_that_is_not_a_namespace_fails_with_einval() {
        let err = join(Path::new("/proc/self/stat")).unwrap_err();
        match err {
            NetnsError::Setns { errno, .. } => assert_eq!(errno, Errno::EINVAL),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn joining_the_current_namespace_keeps_the_stack() {
        if !geteuid().is_root() {
            use std::io::Write;
            let _ = writeln!(
                io::stderr(),
                "SKIPPED: needs root (setns needs CAP_SYS_ADMIN)"
            );
            return;
        }
        let before = describe_stack();
        join(Path::new("/proc/thread-self/ns/net")).unwrap();
        assert_eq!(describe_stack(), before);
    }

    #[test]
    fn joining_a_missing_path_names_it() {
        let err = join(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }
}
