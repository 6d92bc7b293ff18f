//! The remote-stack scenarios: a program in namespace A whose sockets live in namespace B.
//!
//! The harness makes two network namespaces, A (10.200.0.1/24) and B (10.200.0.2/24), joined
//! by a veth pair with the kernel's default MTU (1500), and starts `rump_server tcp://` in B
//! with a secret file in the work directory. The load server (`tcp-sink`, `http-server`)
//! runs natively in B on B's address; the client runs in A in one of two modes:
//!
//! * `direct`: natively, connecting across the veth pair: the reference of the ratios;
//! * `relay`: under `rumphijack run --server tcp://10.200.0.2:PORT`, so that its socket is
//!   made in B's stack by the server and its data crosses the veth pair inside the relay's
//!   TLS connection.
//!
//! Both modes connect to the same address, B's, so the only difference is the relay.
//!
//! Namespaces are made with `ip netns add`, which needs root; without it both modes show
//! `n/a`. They are named after the harness's pid, deleted on drop, and ones a killed run left
//! behind are deleted by the next run.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::launch;
use crate::modes::Mode;
use crate::setup::{self, Bench};
use crate::sys;

/// How the relay scenarios run, for the Method section of BENCHMARKS.md.
pub const METHOD: &str = "\
Remote stacks (scenario 8): the harness makes two network namespaces, A (10.200.0.1/24) and \
B (10.200.0.2/24), joined by a veth pair (default MTU, 1500), and starts `rump_server \
--secret-file FILE tcp://10.200.0.2:7300` in B. The load server runs natively in B on \
10.200.0.2; the client runs in A, in mode `direct` natively (`nsenter --net=A`), its \
connection crossing the veth pair, or in mode `relay` under `rumphijack run --server \
tcp://10.200.0.2:7300`, its socket made in B's stack by the server and its data carried \
across the veth pair by the relay's one TLS 1.3 connection. Both connect to 10.200.0.2. The \
reference of these rows' ratios (the × native column) is `direct`; no bar applies to them.";

/// A's address on the veth pair; the client's side.
const A_ADDR: &str = "10.200.0.1";
/// B's address on the veth pair: where `rump_server` and the load servers listen.
pub const B_ADDR: &str = "10.200.0.2";
const PREFIX_LEN: u8 = 24;
/// `rump_server`'s port in B; B is ours alone, so a fixed port cannot clash.
const SERVER_PORT: u16 = 7300;
/// Prefix of the namespaces' names, followed by the harness's pid.
const NETNS_PREFIX: &str = "rhbench-";
/// The veth ends, made directly inside the namespaces (so the names clash with nothing).
const VETH_A: &str = "veth-a";
const VETH_B: &str = "veth-b";

/// Namespaces A and B, the veth pair between them and the `rump_server` in B. Dropping it
/// stops the server and deletes the namespaces (with them the veth pair).
#[derive(Debug)]
pub struct TwoStacks {
    /// `ip` (iproute2), once found.
    ip: Option<PathBuf>,
    /// Names of the namespaces made so far (A first), for `ip netns`.
    made: Vec<String>,
    server: Option<Child>,
    secret: PathBuf,
    /// Why the relay scenarios cannot run, as a table cell.
    error: Option<String>,
}

impl TwoStacks {
    /// Sets up both namespaces and the server; a failure is kept as the modes' `n/a`.
    pub fn new(bench: &Bench) -> TwoStacks {
        let mut stacks = TwoStacks {
            ip: None,
            made: Vec::new(),
            server: None,
            secret: bench.workdir.join("relay-secret"),
            error: None,
        };
        if let Err(e) = stacks.set_up(bench) {
            eprintln!("bench: relay scenarios unavailable: {e:#}");
            stacks.error = Some(format!("n/a: {e:#}"));
        }
        stacks
    }

    fn set_up(&mut self, bench: &Bench) -> Result<()> {
        let ip = setup::in_path("ip").context("ip (iproute2) not installed")?;
        self.ip = Some(ip.clone());
        let nsenter = bench
            .tools
            .nsenter
            .as_deref()
            .context("nsenter not installed")?;
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            bail!("ip netns needs root");
        }
        delete_stale(&ip);

        // The namespaces, then the veth pair made with its ends already inside them.
        for side in ["a", "b"] {
            let name = format!("{NETNS_PREFIX}{}-{side}", std::process::id());
            run_ip(&ip, &["netns", "add", &name])?;
            self.made.push(name);
        }
        let (a, b) = (self.made[0].clone(), self.made[1].clone());
        run_ip(
            &ip,
            &[
                "link", "add", VETH_A, "netns", &a, "type", "veth", "peer", "name", VETH_B,
                "netns", &b,
            ],
        )?;
        for (ns, dev, addr) in [(&a, VETH_A, A_ADDR), (&b, VETH_B, B_ADDR)] {
            let cidr = format!("{addr}/{PREFIX_LEN}");
            run_ip(&ip, &["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            run_ip(&ip, &["-n", ns, "link", "set", dev, "up"])?;
            run_ip(&ip, &["-n", ns, "link", "set", "lo", "up"])?;
        }

        // The secret must exist, private, before the server reads it.
        write_secret(&self.secret)?;
        let mut cmd = Command::new(nsenter);
        cmd.arg(format!("--net={}", netns_path(&b).display()))
            .arg("--")
            .arg(&bench.tools.rump_server)
            .arg("--secret-file")
            .arg(&self.secret)
            .arg("--ready-fd")
            .arg(sys::READY_FD.to_string())
            .arg(format!("tcp://{B_ADDR}:{SERVER_PORT}"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        self.server = Some(launch::spawn_until_ready(
            &mut cmd,
            Duration::from_secs(10),
        )?);
        Ok(())
    }

    /// Why `direct` and `relay` cannot run here, or `None`.
    pub fn unavailable(&self) -> Option<String> {
        self.error.clone()
    }

    /// The client's command in `mode` (`direct` or `relay`), entered into namespace A.
    pub fn client_command(
        &self,
        bench: &Bench,
        mode: Mode,
        argv: &[OsString],
        policy: Option<&Path>,
        stats: Option<&Path>,
    ) -> Command {
        let mut cmd = self.enter(bench, 0);
        if mode == Mode::Relay {
            cmd.arg(&bench.tools.rumphijack)
                .arg("run")
                .arg("--server")
                .arg(format!("tcp://{B_ADDR}:{SERVER_PORT}"))
                .arg("--secret-file")
                .arg(&self.secret);
            if let Some(policy) = policy {
                cmd.arg("--policy").arg(policy);
            }
            if let Some(stats) = stats {
                cmd.arg("--stats").arg(stats);
            }
            cmd.arg("--");
        }
        cmd.args(argv);
        cmd
    }

    /// A load server's command: natively in namespace B, listening on B's address.
    pub fn server_command(&self, bench: &Bench, argv: &[OsString]) -> Command {
        let mut cmd = self.enter(bench, 1);
        cmd.args(argv).args(["--host", B_ADDR]);
        cmd
    }

    /// `nsenter --net=NS --`, for the namespace made `index`-th (0: A, 1: B).
    fn enter(&self, bench: &Bench, index: usize) -> Command {
        let nsenter = bench
            .tools
            .nsenter
            .as_deref()
            .unwrap_or(Path::new("nsenter"));
        let mut cmd = Command::new(nsenter);
        if let Some(name) = self.made.get(index) {
            cmd.arg(format!("--net={}", netns_path(name).display()));
        }
        cmd.arg("--");
        cmd
    }
}

impl Drop for TwoStacks {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            sys::terminate(server.id());
            if launch::wait_deadline(&mut server, Duration::from_secs(5)).is_err() {
                eprintln!("bench: rump_server in namespace B did not stop on SIGTERM; killed");
            }
        }

        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        if let Some(ip) = &self.ip {
            for name in self.made.drain(..).rev() {
                let _ = run_ip(ip, &["netns", "del", &name]);
            }
        }
    }
}

/// The arguments that point a client at B's address.
pub fn client_args() -> [String; 2] {
    ["--host".into(), B_ADDR.into()]
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn run_ip(ip: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(ip)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {}", ip.display()))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes namespaces of earlier runs whose harness is gone (killed before its clean-up).
fn delete_stale(ip: &Path) {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_ip(ip, &["netns", "del", &name]);
        }
    }
}

/// 32 random bytes, hex-encoded, in a file of mode 0600 (rump_server refuses a secret that
/// group or others can read).
fn write_secret(path: &Path) -> Result<()> {
    let mut random = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("read /dev/urandom")?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use crate::modes::Mode;
    use crate::results::{Cell, Row};
    use crate::scenarios::ALL;

    #[test]
    fn relay_scenarios_are_measured_against_direct() {
        let relayed: Vec<_> = ALL
            .iter()
            .filter(|s| s.modes.iter().any(|m| m.between_namespaces()))
            .collect();
        assert_eq!(relayed.len(), 2);
        for s in relayed {
            assert_eq!(s.reference(), Mode::Direct, "{}", s.name);
            assert!(s.modes.iter().all(|m| m.between_namespaces()), "{}", s.name);
        }
        assert!(ALL
            .iter()
            .filter(|s| !s.modes.contains(&Mode::Direct))
            .all(|s| s.reference() == Mode::Native));
    }

    #[test]
    fn a_relay_at_half_the_rate_of_direct_costs_twice() {
        let scenario = ALL.iter().find(|s| s.name == "relay-bulk").unwrap();
        let cell = |mode, value| Cell {
            mode,
            samples: vec![value],
            status: None,
            served: None,
        };
        let row = Row {
            scenario,
            cells: vec![cell(Mode::Direct, 10e9), cell(Mode::Relay, 5e9)],
        };
        assert_eq!(row.cost_ratio(Mode::Relay), Some(2.0));
        assert_eq!(row.cost_ratio(Mode::Direct), Some(1.0));
    }
}
