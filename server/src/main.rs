//! `rump_server`: host a network stack and hand its sockets to rumphijack clients.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rumpclient::url::{ServerUrl, StackUrl};
use server::cli::{ServerArgs, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use server::daemon::{self, Detached, PidFile, ReadyNotifier};
use server::systemd::{self, Activation, Notifier};
use server::{describe_stack, netns, ServeOptions, StackServer, Stopped};
use tracing_subscriber::EnvFilter;

/// Who waits to hear that the server is ready.
#[derive(Debug, Default)]
struct Starter {
    ready_fd: Option<ReadyNotifier>,
    detach_pipe: Option<ReadyNotifier>,
    systemd: Option<Notifier>,
}

impl Starter {
    fn ready(&mut self, url: &dyn std::fmt::Display) -> anyhow::Result<()> {
        if let Some(fd) = self.ready_fd.take() {
            fd.ready().context("writing READY to --ready-fd")?;
        }
        if let Some(pipe) = self.detach_pipe.take() {
            pipe.ready()
                .context("telling the starting process we are ready")?;
        }
        if let Some(systemd) = self.systemd.take() {
            let state = format!("READY=1\nSTATUS=serving on {url}");
            systemd
                .notify(&state)
                .context("sending READY=1 to NOTIFY_SOCKET")?;
        }
        Ok(())
    }

    /// Reports a fatal error: to the waiting parent when detached, else on stderr.
    fn failed(&mut self, message: &str) {
        drop(self.ready_fd.take());
        match self.detach_pipe.take() {
            Some(pipe) => pipe.failed(message),
            None => eprintln!("{message}"),
        }
    }
}

fn main() -> ExitCode {
    let args = ServerArgs::parse();

    // Inherited descriptors are claimed before this process opens any file (then no other
    // part of it can own them), and the variables describing them are read and removed
    // while it is still single-threaded.
    let mut starter = Starter::default();
    let activation = match systemd::take_listen_fds() {
        Ok(activation) => activation,
        Err(e) => return fail(&mut starter, EXIT_FAILURE, &e.into()),
    };
    if let Some(fd) = args.ready_fd {
        match ReadyNotifier::from_inherited_fd(fd) {
            Ok(notifier) => starter.ready_fd = Some(notifier),
            Err(e) => return fail(&mut starter, EXIT_USAGE, &e.into()),
        }
    }
    // The notification socket is made here, in the namespace systemd runs in: an abstract
    // NOTIFY_SOCKET name means nothing in the namespace --isolated or --netns enters.
    match Notifier::from_env() {
        Ok(notifier) => starter.systemd = notifier,
        Err(e) => return fail(&mut starter, EXIT_FAILURE, &e.into()),
    }
    init_logging(args.verbose);
    let url = match listen_url(args.url.as_deref(), activation.as_ref()) {
        Ok(url) => url,
        Err(e) => return fail(&mut starter, EXIT_USAGE, &e),
    };
    let relay = match relay_settings(&args, &url) {
        Ok(settings) => settings,
        Err(e) => return fail(&mut starter, EXIT_USAGE, &e),
    };

    // Detach first: fork needs a single-threaded process, and so does what follows.
    if args.detach {
        match daemon::detach() {
            Ok(Detached::Parent(Ok(()))) => return ExitCode::from(EXIT_OK),
            Ok(Detached::Parent(Err(message))) => {
                eprintln!("{message}");
                return ExitCode::from(EXIT_FAILURE);
            }
            Ok(Detached::Child(pipe)) => starter.detach_pipe = Some(pipe),
            Err(e) => return fail(&mut starter, EXIT_FAILURE, &e.into()),
        }
    }

    let served = match (&url, relay) {
        (StackUrl::Tcp(addr), Some(settings)) => serve_relay(&args, *addr, settings, &mut starter),
        (StackUrl::Unix(url), _) => serve(&args, url, activation, &mut starter),
        (StackUrl::Tcp(_), None) => unreachable!("relay_settings requires settings for tcp"),
    };
    match served {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => fail(&mut starter, EXIT_FAILURE, &e),
    }
}

/// The URL the server answers at: the one given, or that of the socket systemd passed. When
/// both are there they must name the same socket file.
fn listen_url(given: Option<&str>, activation: Option<&Activation>) -> anyhow::Result<StackUrl> {
    let given = given.map(StackUrl::parse).transpose()?;
    let Some(activation) = activation else {
        return given.ok_or_else(|| {
            anyhow!("a URL to listen on is required, unless systemd passes the socket")
        });
    };
    let passed = ServerUrl::Unix(activation.path.clone());
    let given = match given {
        None => return Ok(StackUrl::Unix(passed)),
        Some(StackUrl::Unix(url)) => url,
        Some(StackUrl::Tcp(_)) => {
            return Err(anyhow!(
                "systemd passed a Unix socket; a tcp:// URL cannot name it"
            ))
        }
    };
    let identity = |url: &ServerUrl| {
        std::fs::metadata(url.path())
            .map(|m| (m.dev(), m.ino()))
            .with_context(|| format!("inspecting {}", url.path().display()))
    };
    let mismatch = || {
        format!(
            "{given} must name the socket systemd passed, which is bound to {}",
            activation.path.display()
        )
    };
    if identity(&given).with_context(mismatch)? != identity(&passed)? {
        return Err(anyhow!(mismatch()));
    }
    Ok(StackUrl::Unix(given))
}

/// The secret and policy a tcp:// server needs; `None` for a Unix-domain server.
fn relay_settings(
    args: &ServerArgs,
    url: &StackUrl,
) -> anyhow::Result<Option<relay::server::Settings>> {
    let StackUrl::Tcp(_) = url else {
        if args.secret_file.is_some() || args.policy.is_some() {
            return Err(anyhow!(
                "--secret-file and --policy apply to tcp:// servers only"
            ));
        }
        return Ok(None);
    };
    let Some(path) = &args.secret_file else {
        return Err(anyhow!("a tcp:// server needs --secret-file FILE"));
    };
    let secret = relay::Secret::from_file(path)?;
    let policy = match &args.policy {
        Some(path) => Some(std::sync::Arc::new(policy::Policy::load(path)?)),
        None => None,
    };
    Ok(Some(relay::server::Settings {
        secret,
        policy,
        stack: String::new(),
    }))
}

/// Enters the stack (as `serve` does) and blocks SIGINT and SIGTERM, returning the signalfd
/// that reports them. Must run while the process has a single thread.
fn enter_stack(args: &ServerArgs) -> anyhow::Result<SignalFd> {
    if let Some(path) = &args.netns {
        netns::join(path)?;
    } else if args.isolated {
        netns::isolate()?;
    }
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().context("blocking SIGINT and SIGTERM")?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("creating a signalfd")
}

/// Serves remote supervisors on `addr`, relaying their sockets.
fn serve_relay(
    args: &ServerArgs,
    addr: std::net::SocketAddr,
    mut settings: relay::server::Settings,
    starter: &mut Starter,
) -> anyhow::Result<()> {
    let signals = enter_stack(args)?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("listening on tcp://{addr}"))?;
    let _pid_file = pid_file(args)?;
    settings.stack = describe_stack();
    tracing::info!("listening on tcp://{addr} (stack: {})", settings.stack);
    starter.ready(&format!("tcp://{addr}"))?;
    relay::server::serve(listener, settings, Some(signals.as_fd()))
        .with_context(|| format!("serving tcp://{addr}"))?;
    tracing::info!("stopped");
    Ok(())
}

fn pid_file(args: &ServerArgs) -> anyhow::Result<Option<PidFile>> {
    match &args.pidfile {
        Some(path) => {
            Ok(Some(PidFile::create(path).with_context(|| {
                format!("writing pid file {}", path.display())
            })?))
        }
        None => Ok(None),
    }
}

fn serve(
    args: &ServerArgs,
    url: &ServerUrl,
    activation: Option<Activation>,
    starter: &mut Starter,
) -> anyhow::Result<()> {
    // 1. Enter the stack, while this is the only thread (see server::netns), and block
    //    SIGINT/SIGTERM before any thread exists, so every thread inherits the mask and the
    //    signals are only ever consumed through the signalfd. A socket systemd passed stays
    //    usable: a path socket belongs to the file system, not to a network namespace.
    let signals = enter_stack(args)?;

    // 2. Listen (binding sets the umask for a moment; still single-threaded here).
    let opts = ServeOptions {
        allowed_uids: args.allow_uid.clone(),
        check_peer: true,
    };
    let server = match activation {
        Some(passed) => StackServer::from_listener(passed.listener, &passed.path, opts)?,
        None => StackServer::bind(url.path(), opts)?,
    };
    let _pid_file = pid_file(args)?;

    // 3. Tell whoever started us, then serve. The socket listens already, so a client that
    //    connects as soon as it hears waits in the backlog until the loop accepts it.
    tracing::info!("listening on {url} (stack: {})", describe_stack());
    starter.ready(url)?;
    let stopped = server.run(Some(signals.as_fd()))?;
    if stopped == Stopped::StopFd {
        if let Ok(Some(info)) = signals.read_signal() {
            let name = Signal::try_from(info.ssi_signo as i32).map_or("signal", |s| s.as_str());
            tracing::info!("stopped by {name}");
        }
    }
    Ok(())
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
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn fail(starter: &mut Starter, code: u8, err: &anyhow::Error) -> ExitCode {
    starter.failed(&format!("rump_server: {}", chain(err)));
    ExitCode::from(code)
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message
/// before it already includes.
fn chain(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
