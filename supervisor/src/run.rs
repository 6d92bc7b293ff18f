//! `rumphijack run`: configuration, start-up order, and waiting for the program.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use policy::{HijackSpec, Policy};
use rumpclient::client::{Client, Identity};
use rumpclient::retry::RetryPolicy;
use rumpclient::url::StackUrl;
use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::blocking;
use crate::embedded::{self, EmbeddedStack};
use crate::filter::Redirect;
use crate::launch::{self, LaunchError};
use crate::notify::SocketSource;
use crate::pool::ServerSockets;
use crate::{filter, hybrid, notify, sys, Failure, RunArgs};

/// A failure of rumphijack itself, with the exit status it maps to.
#[derive(Debug)]
pub struct RunError {
    /// Exit status class.
    pub failure: Failure,
    /// What went wrong, with context.
    pub error: anyhow::Error,
}

trait OrFail<T> {
    fn or_fail(self, failure: Failure) -> Result<T, RunError>;
}

impl<T, E: Into<anyhow::Error>> OrFail<T> for Result<T, E> {
    fn or_fail(self, failure: Failure) -> Result<T, RunError> {
        self.map_err(|e| RunError {
            failure,
            error: e.into(),
        })
    }
}

/// Signals that are passed on to the program when the supervisor receives them.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Runs the program to completion and returns the exit status to report.
pub fn run(args: RunArgs) -> Result<u8, RunError> {
    // Configuration first: a bad variable or policy is an error before anything starts.
    let policy = match &args.policy {
        Some(path) => Policy::load(path).or_fail(Failure::Config)?,
        None => Policy::allow_all(),
    };
    // RUMPHIJACK overrides the policy file's selection, which overrides the default.
    let hijack = match (std::env::var_os("RUMPHIJACK"), policy.hijack()) {
        (None, Some(spec)) => spec,
        _ => HijackSpec::from_env()
            .context("RUMPHIJACK")
            .or_fail(Failure::Config)?,
    };
    let audit = Audit::open(args.audit.as_deref())
        .with_context(|| {
            format!(
                "audit file {}",
                args.audit.as_deref().unwrap_or(Path::new("")).display()
            )
        })
        .or_fail(Failure::Config)?;
    let retry = RetryPolicy::from_env()
        .context("RUMPHIJACK_RETRYCONNECT")
        .or_fail(Failure::Config)?;
    let endpoint = match &args.server {
        Some(s) => Some(
            StackUrl::parse(s)
                .context("--server")
                .or_fail(Failure::Config)?,
        ),
        None => StackUrl::from_env()
            .context("RUMP_SERVER")
            .or_fail(Failure::Config)?,
    };
    let (url, remote) = match endpoint {
        Some(StackUrl::Unix(url)) => (Some(url), None),
        Some(StackUrl::Tcp(addr)) => {
            let secret = match &args.secret_file {
                Some(path) => relay::Secret::from_file(path),
                None => Err(relay::auth::AuthError::Missing),
            }
            .or_fail(Failure::Config)?;
            if args.preload {
                return Err(anyhow!(
                    "--preload cannot be used with a tcp:// server: the preload library \
                     needs a unix:// server to pass it descriptors"
                ))
                .or_fail(Failure::Usage);
            }
            (None, Some((addr, secret)))
        }
        None => (None, None),
    };
    let stack = match (&args.netns, args.isolated) {
        (Some(path), _) => EmbeddedStack::Netns(path.clone()),
        (None, true) => EmbeddedStack::Isolated,
        (None, false) => EmbeddedStack::Current,
    };
    if (url.is_some() || remote.is_some()) && !matches!(stack, EmbeddedStack::Current) {
        return Err(anyhow!(
            "--isolated and --netns choose the embedded server's stack; they cannot be used \
             with a server URL (unset RUMP_SERVER or drop --server)"
        ))
        .or_fail(Failure::Usage);
    }

    // Keep other processes of this user (the program included) from ptrace-attaching to the
    // supervisor or reading its memory and descriptors through /proc.
    sys::set_not_dumpable().or_fail(Failure::Os)?;

    // Block every signal before the first thread or child exists: threads inherit the mask,
    // so no supervisor thread can be interrupted inside a notification ioctl, and the main
    // thread collects the signals it forwards with sigwait.
    let original_mask = SigSet::thread_get_mask().or_fail(Failure::Os)?;
    SigSet::all().thread_block().or_fail(Failure::Os)?;
    blocking::install_interrupt_handler().or_fail(Failure::Os)?;

    // Hybrid mode: the library needs the cookie, and a server it can reach by path.
    let hybrid = if args.preload {
        let library = hybrid::find_library(args.library.as_deref()).or_fail(Failure::Config)?;
        let cookie = hybrid::random_cookie().or_fail(Failure::Os)?;
        Some((library, cookie))
    } else {
        None
    };
    let private_dir = match (&hybrid, &url) {
        (Some(_), None) => Some(hybrid::private_dir().or_fail(Failure::Os)?),
        _ => None,
    };
    let library_socket = private_dir.as_ref().map(|d| d.join("stack"));
    let library_url = match (&url, &library_socket) {
        (Some(url), _) => url.to_string(),
        (None, Some(path)) => format!("unix://{}", path.display()),
        (None, None) => String::new(),
    };

    let identity = Identity {
        pid: std::process::id(),
        program: program_name(&args.program),
    };
    let mut library_server = None;
    let sockets = match (url, &stack) {
        (None, _) if remote.is_some() => {
            let (addr, secret) = remote.expect("checked");
            let relay =
                relay::Relay::connect(addr, secret, retry).or_fail(Failure::ServerUnavailable)?;
            info!(%addr, stack = %relay.stack(), "connected to remote stack server");
            SocketSource::Relay(relay)
        }
        (Some(url), _) => {
            let shown = url.to_string();
            let client = Client::connect(url, retry, identity)
                .with_context(|| format!("stack server {shown}"))
                .or_fail(Failure::ServerUnavailable)?;
            SocketSource::Server(ServerSockets::new(client))
        }
        // The current namespace needs no server: the workers make the sockets themselves.
        (None, EmbeddedStack::Current) => {
            if let Some(path) = &library_socket {
                library_server = Some(embedded::bind_for_library(path).or_fail(Failure::Os)?);
            }
            SocketSource::Direct
        }
        (None, _) => {
            let (stream, child) =
                embedded::prepare(&stack, library_socket.as_deref()).or_fail(Failure::Os)?;
            let client = Client::from_stream(stream, retry, identity)
                .context("embedded stack server")
                .or_fail(Failure::ServerUnavailable)?;
            // The handshake is answered from inside the stack, so the child's namespace is
            // final now. Workers that may enter it make sockets without a round trip.
            let netns = match &stack {
                EmbeddedStack::Netns(path) => path.clone(),
                _ => format!("/proc/{child}/ns/net").into(),
            };
            match std::fs::File::open(&netns) {
                Ok(file) => SocketSource::Namespace {
                    netns: file.into(),
                    server: client,
                },
                Err(_) => SocketSource::Server(ServerSockets::new(client)),
            }
        }
    };

    let env = match &hybrid {
        Some((library, cookie)) => Some(
            hybrid::program_env(library, &library_url, *cookie, args.policy.as_deref())
                .or_fail(Failure::Config)?,
        ),
        None => None,
    };
    // Without a server and without a stack of its own, the program's sockets belong in the
    // namespace it already runs in: pin it there rather than trap every socket().
    let redirect = match (&sockets, &hybrid) {
        (SocketSource::Direct, None) => Redirect::Pinned,
        (SocketSource::Relay(_), _) => Redirect::Relay(&hijack),
        _ => Redirect::Trap(&hijack),
    };
    let program = filter::build(redirect, &policy, hybrid.as_ref().map(|h| h.1))
        .context("building the seccomp filter")
        .or_fail(Failure::Os)?;
    debug!(instructions = program.len(), %hijack, "filter built");

    let launched = launch::spawn(
        &args.program,
        &args.args,
        env.as_deref(),
        args.close_fds,
        &program,
        &original_mask,
    )
    .map_err(launch_failure)?;
    if !launched.wait_killable {
        warn!(
            "the kernel lacks SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19): a signal \
             to the program during a trapped call may repeat that call"
        );
    }
    info!(pid = launched.pid.as_raw(), program = ?args.program, "program started");
    if let Some(server) = library_server {
        embedded::serve_library(server).or_fail(Failure::Os)?;
    }

    let events = Arc::new(DieOnLoss {
        program: launched.pid,
        announced: AtomicBool::new(false),
    });
    let stats = notify::start(launched.listener, sockets, policy, audit, events);

    let status = wait_for(launched.pid).or_fail(Failure::Os)?;
    info!(status, "program exited");

    if let Some(dir) = &private_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some(path) = &args.stats {
        std::fs::write(path, stats.to_json() + "\n")
            .with_context(|| format!("writing statistics to {}", path.display()))
            .or_fail(Failure::Os)?;
    }
    Ok(status)
}

fn launch_failure(e: LaunchError) -> RunError {
    let failure = match &e {
        LaunchError::Exec { errno, .. } => match *errno {
            Errno::ENOENT | Errno::ENOTDIR => Failure::NotFound,
            _ => Failure::NotExecutable,
        },
        LaunchError::NulInArgument(_) => Failure::Usage,
        _ => Failure::Os,
    };
    RunError {
        failure,
        error: e.into(),
    }
}

fn program_name(program: &OsStr) -> String {
    let base = Path::new(program)
        .file_name()
        .map_or(program.as_bytes(), |n| n.as_bytes());
    String::from_utf8_lossy(base).into_owned()
}

/// Ends the program when the server is lost under `RUMPHIJACK_RETRYCONNECT=die`.
struct DieOnLoss {
    program: Pid,
    announced: AtomicBool,
}

impl notify::Events for DieOnLoss {
    fn server_lost_die(&self, caller: u32) {
        if !self.announced.swap(true, Ordering::SeqCst) {
            eprintln!(
                "rumphijack: lost the stack server and RUMPHIJACK_RETRYCONNECT=die: \
                 killing the program"
            );
        }
        // kill(2) on a thread id signals that thread's whole process.
        let _ = kill(Pid::from_raw(caller as i32), Signal::SIGKILL);
        let _ = kill(self.program, Signal::SIGKILL);
    }
}

/// Forwards signals to the program and reaps children until the program exits; returns its
/// status in the shell's convention (128+N for a signal).
///
/// Any other child that exits is reaped too, which is what a container's PID 1 (or a
/// subreaper) must do for orphans reparented to it.
fn wait_for(program: Pid) -> Result<u8, Errno> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for sig in FORWARDED {
        set.add(sig);
    }

    loop {
        // Reap before waiting: the program may have exited before SIGCHLD was blocked.
        while let Some((pid, status)) = reap_one()? {
            if pid == program {
                return Ok(status);
            }
            debug!(pid = pid.as_raw(), status, "reaped a descendant");
        }

        let sig = set.wait()?;
        if sig != Signal::SIGCHLD {
            debug!(?sig, "forwarding signal to the program");
            match kill(program, sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => warn!(?sig, error = %e, "forwarding a signal failed"),
            }
        }
    }
}

/// Reaps one exited child without blocking: `None` when no child has exited.
fn reap_one() -> Result<Option<(Pid, u8)>, Errno> {
    loop {
        return match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => Ok(Some((pid, code as u8))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => Ok(Some((pid, 128 + sig as u8))),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => Ok(None),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e),
        };
    }
}
