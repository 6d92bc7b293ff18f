//! `rump_server`: host a network stack and hand its sockets to rumphijack clients.

use std::io::IsTerminal;
use std::os::fd::{AsFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rumpclient::url::StackUrl;
use server::daemon::{self, Detached, PidFile, ReadyNotifier};
use server::{describe_stack, netns, ServeOptions, StackServer, Stopped};
use tracing_subscriber::EnvFilter;

/// Clean shutdown after SIGINT or SIGTERM.
const EXIT_OK: u8 = 0;
/// The server could not start or failed while running.
const EXIT_FAILURE: u8 = 1;
/// Bad command line or server URL (clap uses the same code for its own errors).
const EXIT_USAGE: u8 = 2;

const LONG_ABOUT: &str = "\
Hosts a TCP/IP stack for rumphijack clients. The stack is a Linux network namespace: the
one rump_server runs in, an existing one (--netns), or a fresh one with only loopback up
(--isolated; unprivileged users get it through a user namespace). Clients connect to the
Unix socket named by URL (unix:///abs/path or unix://relative/path), and every socket they
ask for is created in that stack and passed back as a descriptor.

With URL tcp://ADDR:PORT (an IPv4 literal or [IPv6] literal) the server listens on TCP for
remote supervisors instead: it keeps the sockets itself and relays their data. Every such
connection is TLS 1.3, and both sides prove they hold the secret in --secret-file (at least
16 bytes, not readable by group or others) without sending it. Remote clients get Internet
sockets only; --policy restricts what they may connect to, bind, listen on, accept and send
to, whatever their own supervisor allows.

The socket file is created with mode 0600; peers other than root, the server's own uid and
--allow-uid uids are refused. A stale socket file is replaced; a live server is not.

Readiness: with --ready-fd FD the line READY is written to FD, which is then closed; with
--detach the command returns only once the server is ready. SIGINT and SIGTERM stop the
server: in-flight requests finish, the socket file is removed.

Exit status:
  0  clean shutdown after SIGINT or SIGTERM (or the detached server became ready)
  1  the server could not start (namespace, bind, live server present) or failed
  2  usage error or bad URL";

#[derive(Debug, Parser)]
#[command(
    name = "rump_server",
    version,
    about = "Host a network stack for rumphijack"
)]
#[command(long_about = LONG_ABOUT)]
struct Args {
    /// Create a fresh network namespace with only loopback up.
    #[arg(long, conflicts_with = "netns")]
    isolated: bool,

    /// Join the network namespace at PATH (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,

    /// Also allow clients with this uid (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,

    /// Write "READY\n" to this inherited descriptor once listening, then close it.
    #[arg(long, value_name = "FD")]
    ready_fd: Option<RawFd>,

    /// Run in the background; return once the server is ready.
    #[arg(long)]
    detach: bool,

    /// Write the server's pid to PATH (removed on clean exit).
    #[arg(long, value_name = "PATH")]
    pidfile: Option<PathBuf>,

    /// For tcp:// URLs: the file holding the secret clients must prove.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,

    /// For tcp:// URLs: a policy file deciding what remote clients may do.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// More logging: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Where to listen: unix:///abs/path, unix://relative/path or tcp://ADDR:PORT.
    url: String,
}

/// Who waits to hear that the server is ready.
#[derive(Debug, Default)]
struct Starter {
    ready_fd: Option<ReadyNotifier>,
    detach_pipe: Option<ReadyNotifier>,
}

impl Starter {
    fn ready(&mut self) -> anyhow::Result<()> {
        if let Some(fd) = self.ready_fd.take() {
            fd.ready().context("writing READY to --ready-fd")?;
        }
        if let Some(pipe) = self.detach_pipe.take() {
            pipe.ready()
                .context("telling the starting process we are ready")?;
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
    let args = Args::parse();

    // The inherited descriptor must be claimed before this process opens any file.
    let mut starter = Starter::default();
    if let Some(fd) = args.ready_fd {
        match ReadyNotifier::from_inherited_fd(fd) {
            Ok(notifier) => starter.ready_fd = Some(notifier),
            Err(e) => return fail(&mut starter, EXIT_USAGE, &e.into()),
        }
    }
    init_logging(args.verbose);
    let url = match StackUrl::parse(&args.url) {
        Ok(url) => url,
        Err(e) => return fail(&mut starter, EXIT_USAGE, &e.into()),
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

    match serve(&args, &url, relay, &mut starter) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => fail(&mut starter, EXIT_FAILURE, &e),
    }
}

/// The secret and policy a tcp:// server needs; `None` for a Unix-domain server.
fn relay_settings(args: &Args, url: &StackUrl) -> anyhow::Result<Option<relay::server::Settings>> {
    let StackUrl::Tcp(_) = url else {
        if args.secret_file.is_some() || args.policy.is_some() {
            anyhow::bail!("--secret-file and --policy apply to tcp:// servers only");
        }
        return Ok(None);
    };
    let Some(path) = &args.secret_file else {
        anyhow::bail!("a tcp:// server needs --secret-file FILE");
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

fn serve(
    args: &Args,
    url: &StackUrl,
    relay: Option<relay::server::Settings>,
    starter: &mut Starter,
) -> anyhow::Result<()> {
    // 1. Enter the stack, while this is the only thread (see server::netns).
    if let Some(path) = &args.netns {
        netns::join(path)?;
    } else if args.isolated {
        netns::isolate()?;
    }

    // 2. Block SIGINT/SIGTERM before any thread exists, so every thread inherits the mask
    //    and the signals are only ever consumed through the signalfd.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().context("blocking SIGINT and SIGTERM")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("creating a signalfd")?;

    // 3. Listen (this sets the umask for a moment; still single-threaded here).
    let url = match (url, relay) {
        (StackUrl::Tcp(addr), Some(mut settings)) => {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("listening on tcp://{addr}"))?;
            let _pid_file = pid_file(args)?;
            settings.stack = describe_stack();
            tracing::info!("listening on tcp://{addr} (stack: {})", settings.stack);
            starter.ready()?;
            relay::server::serve(listener, settings, Some(signals.as_fd()))
                .with_context(|| format!("serving tcp://{addr}"))?;
            tracing::info!("stopped");
            return Ok(());
        }
        (StackUrl::Unix(url), _) => url,
        (StackUrl::Tcp(_), None) => unreachable!("relay_settings requires settings for tcp"),
    };
    let opts = ServeOptions {
        allowed_uids: args.allow_uid.clone(),
        check_peer: true,
    };
    let server = StackServer::bind(url.path(), opts)?;
    let _pid_file = pid_file(args)?;

    // 4. Tell whoever started us, then serve.
    tracing::info!("listening on {url} (stack: {})", describe_stack());
    starter.ready()?;
    let stopped = server.run(Some(signals.as_fd()))?;
    if stopped == Stopped::StopFd {
        if let Ok(Some(info)) = signals.read_signal() {
            let name = Signal::try_from(info.ssi_signo as i32).map_or("signal", |s| s.as_str());
            tracing::info!("stopped by {name}");
        }
    }
    Ok(())
}

fn pid_file(args: &Args) -> anyhow::Result<Option<PidFile>> {
    match &args.pidfile {
        Some(path) => {
            Ok(Some(PidFile::create(path).with_context(|| {
                format!("writing pid file {}", path.display())
            })?))
        }
        None => Ok(None),
    }
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
