//! One measurement: a scenario run once in one mode.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::launch::{self, Server};
use crate::modes::Mode;
use crate::relay;
use crate::scenarios::{Scenario, Workload};
use crate::setup::Bench;

/// How long a server may take to report its port (a supervisor starting, strace attaching).
const SERVER_START: Duration = Duration::from_secs(20);
/// Time a client may take beyond its own duration before it counts as hung.
const CLIENT_SLACK: Duration = Duration::from_secs(60);
/// The host's address as seen from a slirp4netns namespace: it maps to the host's
/// 127.0.0.1, so the client's traffic never leaves this machine.
const SLIRP_HOST_LOOPBACK: &str = "10.0.2.2";

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Timed part of one client run (multiplied by the scenario's factor).
    pub duration: Duration,
    /// Launches of `true` per start-up measurement.
    pub launches: u32,
}

/// The figure of one run, and how many operations the process performed (warm-up included,
/// to relate to the supervisor's counters).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub value: f64,
    pub ops: u64,
}

/// Runs `scenario` once in `mode`. With `stats`, a supervisor counts the calls it served.
pub fn once(
    bench: &Bench,
    scenario: &Scenario,
    mode: Mode,
    plan: &Plan,
    stats: Option<&Path>,
) -> Result<Sample> {
    match scenario.workload {
        Workload::Startup => startup(bench, mode, plan.launches, stats),
        Workload::Load { client, server } => {
            let duration = plan.duration * scenario.duration_factor;
            let output = load(bench, scenario, mode, client, server, duration, stats)?;
            parse(scenario, &output)
        }
    }
}

fn load_argv(bench: &Bench, command: &str, args: &[String]) -> Vec<OsString> {
    let mut argv = vec![bench.tools.load.clone().into_os_string(), command.into()];
    argv.extend(args.iter().map(OsString::from));
    argv
}

fn load(
    bench: &Bench,
    scenario: &Scenario,
    mode: Mode,
    client: &str,
    server: Option<&str>,
    duration: Duration,
    stats: Option<&Path>,
) -> Result<Output> {
    let policy = scenario.policy.map(|rule| bench.policy(rule));
    let policy = policy.as_deref();

    // The server runs in the same mode as the client, so that both are in the same stack;
    // a peer's server is on the host, where the peer forwards to.
    let server = match server {
        Some(name) if mode.between_namespaces() => {
            let argv = load_argv(bench, name, &[]);
            let mut cmd = bench.two_stacks().server_command(bench, &argv);
            Some(Server::start(&mut cmd, SERVER_START).context("start the server in B")?)
        }
        Some(name) => {
            let server_mode = if mode.is_peer() { Mode::Native } else { mode };
            let argv = load_argv(bench, name, &[]);
            let mut cmd = server_mode.command(bench, &argv, policy, None);
            Some(Server::start(&mut cmd, SERVER_START).context("start the server")?)
        }
        None => None,
    };

    let mut args = vec!["--ms".to_string(), duration.as_millis().to_string()];
    if let Some(server) = &server {
        args.extend(["--port".to_string(), server.port.to_string()]);
    }
    if mode.between_namespaces() {
        args.extend(relay::client_args());
    }
    let timeout = duration + CLIENT_SLACK;
    let output = match mode {
        Mode::Slirp4netns => slirp4netns(bench, client, args, timeout),
        Mode::Pasta => {
            let port = server.as_ref().map_or(0, |s| s.port);
            let argv = load_argv(bench, client, &args);
            launch::run_captured(&mut pasta(bench, port, &argv), timeout)
        }
        _ => {
            let argv = load_argv(bench, client, &args);
            launch::run_captured(&mut mode.command(bench, &argv, policy, stats), timeout)
        }
    };

    let server_log = server.map(Server::stop).unwrap_or_default();
    let output = output?;
    if !output.status.success() {
        bail!(
            "client exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            if server_log.is_empty() {
                String::new()
            } else {
                format!("; server: {server_log}")
            }
        );
    }
    Ok(output)
}

/// `pasta -T PORT -- ARGV`: ARGV in a new network namespace whose 127.0.0.1:PORT pasta
/// forwards to the host's 127.0.0.1:PORT (connections spliced between loopback sockets).
fn pasta(bench: &Bench, port: u16, argv: &[OsString]) -> Command {
    let mut cmd = Command::new(bench.tools.pasta.as_deref().unwrap_or(Path::new("pasta")));
    // As root pasta switches to nobody unless told otherwise, and then cannot read a binary
    // under a private home directory.
    if is_root() {
        cmd.args(["--runas", "0"]);
    }
    cmd.args(["-q", "-T", &port.to_string(), "--"]).args(argv);
    cmd
}

/// The client in a new network namespace (unshare), connected to the host by slirp4netns;
/// it starts once slirp4netns reports the tap device configured.
fn slirp4netns(
    bench: &Bench,
    client: &str,
    mut args: Vec<String>,
    timeout: Duration,
) -> Result<Output> {
    let tools = &bench.tools;
    args.extend([
        "--host".into(),
        SLIRP_HOST_LOOPBACK.into(),
        "--wait-stdin".into(),
    ]);
    let mut cmd = Command::new(tools.unshare.as_deref().context("unshare")?);
    if !is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--net", "--"])
        .args(load_argv(bench, client, &args));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;

    // unshare(1) without --fork execs the client, so its pid names the namespace.
    let mut slirp = Command::new(tools.slirp4netns.as_deref().context("slirp4netns")?);
    slirp
        .args(["--configure", "--mtu", "65520", "--ready-fd", "3"])
        .arg(child.id().to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let slirp = launch::spawn_until_ready(&mut slirp, Duration::from_secs(10));
    let mut slirp = match slirp {
        Ok(slirp) => slirp,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };

    // Start the client, let it run, then stop slirp4netns.
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"go\n")?;
    }
    let output = launch::collect(child, timeout);
    let _ = slirp.kill();
    let _ = slirp.wait();
    output
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Launches `true` `launches` times in `mode` and returns the mean wall time per launch.
fn startup(bench: &Bench, mode: Mode, launches: u32, stats: Option<&Path>) -> Result<Sample> {
    let argv = [bench.tools.truth.clone().into_os_string()];
    let start = Instant::now();
    for _ in 0..launches {
        let mut cmd = mode.command(bench, &argv, None, stats);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = launch::collect(cmd.spawn()?, CLIENT_SLACK)?;
        ensure!(
            output.status.success(),
            "{cmd:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let per_launch = start.elapsed().as_nanos() as f64 / f64::from(launches);
    Ok(Sample {
        value: per_launch,
        ops: u64::from(launches),
    })
}

/// The figure from the client's `RESULT ops=N elapsed_ns=T bytes=B` line.
fn parse(scenario: &Scenario, output: &Output) -> Result<Sample> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("no RESULT line in the client's output: {stdout:?}"))?;
    let field = |key: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("no {key} in {line:?}"))?
            .parse()
            .with_context(|| format!("bad {key} in {line:?}"))
    };
    let (ops, elapsed, bytes) = (field("ops")?, field("elapsed_ns")?, field("bytes")?);
    ensure!(ops > 0 && elapsed > 0, "empty run: {line:?}");
    Ok(Sample {
        value: scenario.metric.figure(ops, elapsed, bytes),
        ops: ops + field("warmup")?,
    })
}
