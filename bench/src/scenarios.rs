//! The scenarios of the benchmark: what runs, what is measured, under which modes.

use crate::modes::Mode;

/// What a scenario's figure is, and so which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Nanoseconds per operation: lower is better.
    NsPerOp,
    /// Operations per second: higher is better.
    OpsPerSec,
    /// Payload bytes per second: higher is better.
    BytesPerSec,
}

impl Metric {
    /// The cost of `value` relative to `native`, higher is worse whatever the metric:
    /// time ratio for times, inverse rate ratio for rates.
    pub fn cost_ratio(self, value: f64, native: f64) -> f64 {
        match self {
            Metric::NsPerOp => value / native,
            Metric::OpsPerSec | Metric::BytesPerSec => native / value,
        }
    }

    /// Computes the figure from a client's result line.
    pub fn figure(self, ops: u64, elapsed_ns: u64, bytes: u64) -> f64 {
        let secs = elapsed_ns as f64 / 1e9;
        match self {
            Metric::NsPerOp => elapsed_ns as f64 / ops as f64,
            Metric::OpsPerSec => ops as f64 / secs,
            Metric::BytesPerSec => bytes as f64 / secs,
        }
    }
}

/// Policy a scenario runs with, written by the harness into its work directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRule {
    /// Default allow, and a rule allowing `connect` to loopback: `connect` is trapped.
    Connect,
    /// Default allow, and a rule allowing `send` to loopback: `sendto` with an address is
    /// trapped.
    Send,
}

/// How a scenario runs.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// `bench-load CLIENT`, after `bench-load SERVER` (if any) under the same mode reported
    /// its port.
    Load {
        client: &'static str,
        server: Option<&'static str>,
    },
    /// Launches of `true`, timed by the harness.
    Startup,
}

/// One row group of the report.
#[derive(Debug)]
pub struct Scenario {
    /// Name for `--scenario`.
    pub name: &'static str,
    /// Number in the list (3, 6 and 8 have two variants each).
    pub number: u8,
    pub title: &'static str,
    /// One or two sentences for BENCHMARKS.md.
    pub what: &'static str,
    pub workload: Workload,
    pub metric: Metric,
    pub policy: Option<PolicyRule>,
    /// The modes it runs under; the first is the reference of its ratios.
    pub modes: &'static [Mode],
    /// Multiplies the base duration of a timed run.
    pub duration_factor: u32,
}

impl Scenario {
    /// The mode the others are compared with: `native`, or `direct` for the relay scenarios.
    pub fn reference(&self) -> Mode {
        self.modes.first().copied().unwrap_or(Mode::Native)
    }
}

use Mode::*;

const WITH_STRACE: &[Mode] = &[
    Native,
    NativeInStack,
    Supervisor,
    SupervisorExt,
    Preload,
    Hybrid,
    Strace,
];
/// With the minimal supervisor, for the scenarios whose cost is the seccomp interface's.
const WITH_FLOOR: &[Mode] = &[
    Native,
    NativeInStack,
    Supervisor,
    SupervisorExt,
    Preload,
    Hybrid,
    Strace,
    SeccompFloor,
];
const PLAIN: &[Mode] = &[
    Native,
    NativeInStack,
    Supervisor,
    SupervisorExt,
    Preload,
    Hybrid,
];

/// Every scenario, in report order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "socket-close",
        number: 1,
        title: "socket()+close()",
        what: "`socket(AF_INET, SOCK_STREAM)` and `close()` in a loop: the cost of one \
               redirected socket creation.",
        workload: Workload::Load {
            client: "socket-close",
            server: None,
        },
        metric: Metric::NsPerOp,
        policy: None,
        modes: WITH_FLOOR,
        duration_factor: 1,
    },
    Scenario {
        name: "getppid",
        number: 2,
        title: "untrapped syscall (getppid)",
        what: "`getppid()` in a loop: a call no filter traps, so this is the seccomp filter's \
               own cost on every system call.",
        workload: Workload::Load {
            client: "getppid",
            server: None,
        },
        metric: Metric::NsPerOp,
        policy: None,
        modes: WITH_FLOOR,
        duration_factor: 1,
    },
    Scenario {
        name: "connect",
        number: 3,
        title: "connect()+close(), no policy",
        what: "`socket()`, `connect()` to a listener on 127.0.0.1 in the same stack (a \
               `bench-load accept-sink` under the same mode), `close()`.",
        workload: Workload::Load {
            client: "connect-close",
            server: Some("accept-sink"),
        },
        metric: Metric::NsPerOp,
        policy: None,
        modes: WITH_STRACE,
        duration_factor: 1,
    },
    Scenario {
        name: "connect-rule",
        number: 3,
        title: "connect()+close(), connect rule",
        what: "As above, with a policy of default allow and a `connect` rule allowing \
               loopback, so every `connect()` is checked and performed by the supervisor.",
        workload: Workload::Load {
            client: "connect-close",
            server: Some("accept-sink"),
        },
        metric: Metric::NsPerOp,
        policy: Some(PolicyRule::Connect),
        modes: WITH_STRACE,
        duration_factor: 1,
    },
    Scenario {
        name: "tcp-bulk",
        number: 4,
        title: "bulk TCP throughput",
        what: "One connection, 128 KiB `write()`s for the run's duration, then a half-close; \
               timed until the sink (`bench-load tcp-sink`, same mode) has read everything \
               and closed. Peers: the sender in its own network namespace reaching the sink on \
               the host's 127.0.0.1 through slirp4netns (gateway 10.0.2.2, MTU 65520) or \
               pasta (`-T PORT`, namespace loopback forwarded to host loopback).",
        workload: Workload::Load {
            client: "tcp-send",
            server: Some("tcp-sink"),
        },
        metric: Metric::BytesPerSec,
        policy: None,
        modes: &[
            Native,
            NativeInStack,
            Supervisor,
            SupervisorExt,
            Preload,
            Hybrid,
            Slirp4netns,
            Pasta,
        ],
        duration_factor: 2,
    },
    Scenario {
        name: "http",
        number: 5,
        title: "HTTP request rate, new connection each",
        what: "`bench-load http-client`: connect, `GET / HTTP/1.0`, read the 148-byte answer \
               to its end, close; against `bench-load http-server` (three threads accepting) \
               under the same mode.",
        workload: Workload::Load {
            client: "http-client",
            server: Some("http-server"),
        },
        metric: Metric::OpsPerSec,
        policy: None,
        modes: PLAIN,
        duration_factor: 1,
    },
    Scenario {
        name: "udp",
        number: 6,
        title: "UDP sendto() datagrams, no policy",
        what: "64-byte `sendto()` with a destination address to a `bench-load udp-sink` under \
               the same mode.",
        workload: Workload::Load {
            client: "udp-sendto",
            server: Some("udp-sink"),
        },
        metric: Metric::OpsPerSec,
        policy: None,
        modes: PLAIN,
        duration_factor: 1,
    },
    Scenario {
        name: "udp-rule",
        number: 6,
        title: "UDP sendto() datagrams, send rule",
        what: "As above, with a policy of default allow and a `send` rule allowing loopback, \
               so every `sendto()` is checked and performed by the supervisor.",
        workload: Workload::Load {
            client: "udp-sendto",
            server: Some("udp-sink"),
        },
        metric: Metric::OpsPerSec,
        policy: Some(PolicyRule::Send),
        modes: PLAIN,
        duration_factor: 1,
    },
    Scenario {
        name: "startup",
        number: 7,
        title: "start-up (run `true`)",
        what: "Wall time of launching `true` and waiting for it, averaged over a batch of \
               launches: `true` against `rumphijack run -- true` and the other wrappers.",
        workload: Workload::Startup,
        metric: Metric::NsPerOp,
        policy: None,
        modes: WITH_STRACE,
        duration_factor: 1,
    },
    // Remote stacks over TCP: namespaces A and B, set up by `crate::relay`.
    Scenario {
        name: "relay-bulk",
        number: 8,
        title: "remote stack: bulk TCP",
        what: "Scenario 4's `tcp-send` against a `tcp-sink` running natively in namespace B \
               on 10.200.0.2, the sender in namespace A: `direct` across the veth pair, or \
               `relay` with its socket in B's stack, served by `rump_server tcp://`. The \
               ratio is to `direct`.",
        workload: Workload::Load {
            client: "tcp-send",
            server: Some("tcp-sink"),
        },
        metric: Metric::BytesPerSec,
        policy: None,
        modes: &[Direct, Relay],
        duration_factor: 2,
    },
    Scenario {
        name: "relay-http",
        number: 8,
        title: "remote stack: HTTP request rate",
        what: "Scenario 5's `http-client` in namespace A against an `http-server` running \
               natively in namespace B on 10.200.0.2, `direct` or `relay` as above: every \
               request opens a new relayed socket. The ratio is to `direct`.",
        workload: Workload::Load {
            client: "http-client",
            server: Some("http-server"),
        },
        metric: Metric::OpsPerSec,
        policy: None,
        modes: &[Direct, Relay],
        duration_factor: 1,
    },
];

/// The scenarios `--scenario` selects: by name, or by number (3, 6 and 8 select both
/// variants).
pub fn select(wanted: &[String]) -> Result<Vec<&'static Scenario>, String> {
    if wanted.is_empty() {
        return Ok(ALL.iter().collect());
    }
    let mut chosen: Vec<&'static Scenario> = Vec::new();
    for want in wanted {
        let matching: Vec<_> = ALL
            .iter()
            .filter(|s| s.name == want || s.number.to_string() == *want)
            .collect();
        if matching.is_empty() {
            let names: Vec<_> = ALL.iter().map(|s| s.name).collect();
            return Err(format!(
                "unknown scenario {want}; one of: {}",
                names.join(", ")
            ));
        }
        for s in matching {
            if !chosen.iter().any(|c| std::ptr::eq(*c, s)) {
                chosen.push(s);
            }
        }
    }
    Ok(chosen)
}
