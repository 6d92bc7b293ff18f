//! The ways a workload is run: natively, under each rumphijack mode, and under peers.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::setup::Bench;

/// Variables the workload never inherits from the harness's environment: each mode sets the
/// ones it is about.
const CLIENT_ENV: [&str; 6] = [
    "RUMP_SERVER",
    "RUMPHIJACK",
    "RUMPHIJACK_POLICY",
    "RUMPHIJACK_RETRYCONNECT",
    "RUST_LOG",
    "LD_PRELOAD",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The program alone.
    Native,
    /// The program alone, but in the benchmark's stack (`nsenter --net`): separates the cost
    /// of interception from the difference between the host's stack and a fresh one.
    NativeInStack,
    /// `rumphijack run --netns STACK -- P`: the embedded server hosting the benchmark's stack.
    Supervisor,
    /// `rumphijack run --server URL -- P` against the harness's `rump_server --isolated`.
    SupervisorExt,
    /// `LD_PRELOAD=librumphijack.so RUMP_SERVER=URL P` against the same external server.
    Preload,
    /// `rumphijack run --netns STACK --preload -- P`: embedded server, preload library.
    Hybrid,
    /// `strace -f --seccomp-bpf -e trace=socket,connect`: the ptrace per-call baseline.
    Strace,
    /// `bench-load … --seccomp-floor`: the client under a minimal seccomp supervisor of
    /// bench-load's own, the cost of the kernel interface without rumphijack.
    SeccompFloor,
    /// Client in its own network namespace, reaching the host's loopback via slirp4netns.
    Slirp4netns,
    /// Client in its own network namespace, reaching the host's loopback via pasta.
    Pasta,
    /// Client natively in namespace A, its server in B across a veth pair (`relay` module):
    /// the reference of the relay scenarios.
    Direct,
    /// Client in A under `rumphijack run --server tcp://B`: its socket lives in B's stack.
    Relay,
}

impl Mode {
    /// Every mode, for looking one up by its label.
    pub const ALL: [Mode; 10] = [
        Mode::Native,
        Mode::NativeInStack,
        Mode::Supervisor,
        Mode::SupervisorExt,
        Mode::Preload,
        Mode::Hybrid,
        Mode::Strace,
        Mode::SeccompFloor,
        Mode::Slirp4netns,
        Mode::Pasta,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::NativeInStack => "native-in-stack",
            Mode::Supervisor => "supervisor",
            Mode::SupervisorExt => "supervisor-ext",
            Mode::Preload => "preload",
            Mode::Hybrid => "hybrid",
            Mode::Strace => "strace",
            Mode::SeccompFloor => "seccomp-floor",
            Mode::Slirp4netns => "slirp4netns",
            Mode::Pasta => "pasta",
            Mode::Direct => "direct",
            Mode::Relay => "relay",
        }
    }

    /// Peers run only the client in a namespace of their own; its server stays on the host.
    pub fn is_peer(self) -> bool {
        matches!(self, Mode::Slirp4netns | Mode::Pasta)
    }

    /// The relay scenarios' modes: client in namespace A, server natively in B.
    pub fn between_namespaces(self) -> bool {
        matches!(self, Mode::Direct | Mode::Relay)
    }

    /// Whether `--stats` can count the calls the supervisor served in this mode.
    pub fn has_supervisor(self) -> bool {
        matches!(
            self,
            Mode::Supervisor | Mode::SupervisorExt | Mode::Hybrid | Mode::Relay
        )
    }

    /// Why this mode cannot run here, as the table cell says it, or `None`.
    pub fn unavailable(self, bench: &Bench) -> Option<String> {
        let tools = &bench.tools;
        let missing = |what: &str| Some(format!("n/a: {what} not installed"));
        match self {
            Mode::Native | Mode::SeccompFloor => None,
            Mode::NativeInStack if tools.nsenter.is_none() => missing("nsenter"),
            Mode::NativeInStack | Mode::Supervisor => no_stack(bench),
            Mode::SupervisorExt => bench.server_error.clone(),
            Mode::Preload if tools.library.is_none() => {
                Some("n/a: librumphijack.so not built".into())
            }
            Mode::Preload => bench.server_error.clone(),
            Mode::Hybrid if tools.library.is_none() => {
                Some("n/a: librumphijack.so not built".into())
            }
            Mode::Hybrid => no_stack(bench),
            Mode::Strace if tools.strace.is_none() => missing("strace"),
            Mode::Strace => None,
            Mode::Slirp4netns if tools.slirp4netns.is_none() => missing("slirp4netns"),
            Mode::Slirp4netns if tools.unshare.is_none() => missing("unshare"),
            Mode::Slirp4netns => None,
            Mode::Pasta if tools.pasta.is_none() => missing("pasta (package passt)"),
            Mode::Pasta => None,
            Mode::Direct | Mode::Relay => bench.two_stacks().unavailable(),
        }
    }

    /// The command that runs `argv` in this mode. `stats`, for modes with a supervisor, asks
    /// it to count the calls it served. Peers are not handled here (see `measure`).
    pub fn command(
        self,
        bench: &Bench,
        argv: &[OsString],
        policy: Option<&Path>,
        stats: Option<&Path>,
    ) -> Command {
        let tools = &bench.tools;
        let mut cmd = match self {
            Mode::Native | Mode::Slirp4netns | Mode::Pasta => plain(argv),
            Mode::SeccompFloor => {
                let mut cmd = plain(argv);
                cmd.arg("--seccomp-floor");
                cmd
            }
            Mode::Supervisor | Mode::SupervisorExt | Mode::Hybrid => {
                let mut cmd = Command::new(&tools.rumphijack);
                cmd.arg("run");
                if self == Mode::SupervisorExt {
                    cmd.arg("--server").arg(&bench.server_url);
                } else if let Some(netns) = &bench.stack_netns {
                    // Without a stack option the embedded server hosts the current namespace,
                    // and rumphijack then pins the program there without trapping socket().
                    cmd.arg("--netns").arg(netns);
                }
                if self == Mode::Hybrid {
                    cmd.arg("--preload");
                    if let Some(lib) = &tools.library {
                        cmd.arg("--library").arg(lib);
                    }
                }
                if let Some(policy) = policy {
                    cmd.arg("--policy").arg(policy);
                }
                if let Some(stats) = stats {
                    cmd.arg("--stats").arg(stats);
                }
                cmd.arg("--").args(argv);
                cmd
            }
            Mode::Preload => plain(argv),
            Mode::NativeInStack => {
                let nsenter = tools.nsenter.as_deref().unwrap_or(Path::new("nsenter"));
                let mut cmd = Command::new(nsenter);
                if let Some(netns) = &bench.stack_netns {
                    cmd.arg(format!("--net={}", netns.display()));
                }
                cmd.arg("--").args(argv);
                cmd
            }
            Mode::Direct | Mode::Relay => bench
                .two_stacks()
                .client_command(bench, self, argv, policy, stats),
            Mode::Strace => {
                // --seccomp-bpf stops the tracee only at the traced calls, as a ptrace
                // redirector with a seccomp pre-filter (graftcp) does; without it every
                // system call, getppid included, would stop twice.
                let strace = tools.strace.as_deref().unwrap_or(Path::new("strace"));
                let mut cmd = Command::new(strace);
                cmd.args(["-f", "-qq", "--seccomp-bpf", "-e", "trace=socket,connect"])
                    .args(["-o", "/dev/null", "--"])
                    .args(argv);
                cmd
            }
        };
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }

        // After the removals: the preload library reads its configuration from these.
        if self == Mode::Preload {
            if let Some(lib) = &tools.library {
                cmd.env("LD_PRELOAD", lib);
            }
            cmd.env("RUMP_SERVER", &bench.server_url);
            if let Some(policy) = policy {
                cmd.env("RUMPHIJACK_POLICY", policy);
            }
        }
        cmd
    }
}

fn no_stack(bench: &Bench) -> Option<String> {
    match (&bench.server_error, &bench.stack_netns) {
        (Some(e), _) => Some(e.clone()),
        (None, None) => Some("n/a: the benchmark stack's namespace was not found".into()),
        (None, Some(_)) => None,
    }
}

fn plain(argv: &[OsString]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}
