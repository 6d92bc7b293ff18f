//! `bench-load`: the workload the benchmark harness runs natively and under every mode.
//!
//! Clients run a timed loop and print one line, `RESULT ops=N elapsed_ns=T bytes=B warmup=W`, from
//! which the harness computes ns per operation or a rate. Servers listen on `--host` (default
//! 127.0.0.1) with an ephemeral port, print `PORT P`, and serve until their standard input
//! reaches end of file, so that the harness can stop them through any wrapper (`rumphijack`,
//! `strace`, …) by closing a pipe.
//!
//! Usage: `bench-load COMMAND [--ms MS] [--ops N] [--port P] [--host ADDR] [--wait-stdin]
//! [--seccomp-floor]`
//!
//! | command | one operation |
//! |---|---|
//! | `socket-close` | `socket(AF_INET, SOCK_STREAM)` + `close` |
//! | `getppid` | `getppid()` |
//! | `connect-close` | `socket` + `connect` to `--port` + `close` |
//! | `tcp-send` | one 128 KiB `write` on a connection to `--port` (bytes counted) |
//! | `http-client` | connect, `GET / HTTP/1.0`, read the whole response, close |
//! | `udp-sendto` | one 64-byte `sendto` to `--port` with the address given |
//! | `accept-sink`, `tcp-sink`, `http-server`, `udp-sink` | servers for the above |
//!
//! `--seccomp-floor` runs the command under a minimal seccomp supervisor of this program's
//! own (see the `floor` module): the cost of the kernel interface alone.

mod clients;
mod floor;
mod servers;
mod sys;
mod timing;

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

/// Options shared by every command.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the timed part of a client runs.
    pub duration: Duration,
    /// Stop earlier after this many operations.
    pub max_ops: u64,
    /// The server's port (clients).
    pub port: u16,
    /// The server's address: clients connect to it, servers listen on it.
    pub host: Ipv4Addr,
    /// Wait for a line on standard input before starting (lets a wrapper finish its set-up).
    pub wait_stdin: bool,
    /// Run under the minimal seccomp supervisor ([`floor`]).
    pub seccomp_floor: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        duration: Duration::from_millis(300),
        max_ops: u64::MAX,
        port: 0,
        host: Ipv4Addr::LOCALHOST,
        wait_stdin: false,
        seccomp_floor: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--wait-stdin" {
            opts.wait_stdin = true;
            continue;
        }
        if flag == "--seccomp-floor" {
            opts.seccomp_floor = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--ms" => opts.duration = Duration::from_millis(value.parse().map_err(|e| bad(&e))?),
            "--ops" => opts.max_ops = value.parse().map_err(|e| bad(&e))?,
            "--port" => opts.port = value.parse().map_err(|e| bad(&e))?,
            "--host" => opts.host = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("usage: bench-load COMMAND [OPTIONS] (see the crate docs)");
        return ExitCode::from(2);
    };
    let opts = match parse(rest) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("bench-load: {e}");
            return ExitCode::from(2);
        }
    };

    if !COMMANDS.contains(&command.as_str()) {
        eprintln!("bench-load: unknown command {command}");
        return ExitCode::from(2);
    }

    let result = if opts.seccomp_floor {
        floor::run(|| run_command(command, &opts))
    } else {
        run_command(command, &opts)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-load {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every command [`run_command`] knows.
const COMMANDS: [&str; 10] = [
    "socket-close",
    "getppid",
    "connect-close",
    "tcp-send",
    "http-client",
    "udp-sendto",
    "accept-sink",
    "tcp-sink",
    "http-server",
    "udp-sink",
];

fn run_command(command: &str, opts: &Options) -> std::io::Result<()> {
    match command {
        "socket-close" => clients::socket_close(opts),
        "getppid" => clients::getppid(opts),
        "connect-close" => clients::connect_close(opts),
        "tcp-send" => clients::tcp_send(opts),
        "http-client" => clients::http_client(opts),
        "udp-sendto" => clients::udp_sendto(opts),
        "accept-sink" => servers::accept_sink(opts),
        "tcp-sink" => servers::tcp_sink(opts),
        "http-server" => servers::http_server(opts),
        "udp-sink" => servers::udp_sink(opts),
        other => unreachable!("{other} is not in COMMANDS"),
    }
}
