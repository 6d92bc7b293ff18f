//! Race-free enforcement: while one thread of the program calls `connect` or `sendto`, another
//! keeps rewriting the destination's port between an allowed and a denied one. A supervisor
//! that let the kernel read the address again after checking it would let some of them
//! through; the listeners on the denied port, outside the policy, count what really arrived.
//!
//! `RH_RACE_N` lowers the number of attempts for local runs (default 100 000 per call).

use std::time::{Duration, Instant};

use rumphijack_tests::policy::hijack_with_policy;
use rumphijack_tests::{field, free_host_port, hijack, probe, run, Server, Spawned, TempDir};

const DEFAULT_ATTEMPTS: u64 = 100_000;

/// Generous: each attempt is several trapped calls on a loaded 2-vCPU machine.
const RACE_TIMEOUT: Duration = Duration::from_secs(900);

fn attempts() -> u64 {
    std::env::var("RH_RACE_N")
        .ok()
        .map(|n| n.parse().expect("RH_RACE_N must be a number"))
        .unwrap_or(DEFAULT_ATTEMPTS)
}

/// A stack with counting listeners (TCP and UDP) on an allowed and a denied port, and a
/// policy that allows only the first, denying with `EPERM`.
struct RaceSetup {
    dir: TempDir,
    server: Server,
    arrivals: Spawned,
    allowed: u16,
    denied: u16,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Arrivals {
    tcp: u64,
    udp: u64,
}

impl RaceSetup {
    fn start(test: &str) -> RaceSetup {
        let dir = TempDir::new(test);
        let server = Server::isolated(dir.path(), "stack");
        let allowed = free_host_port();
        let denied = loop {
            let port = free_host_port();
            if port != allowed {
                break port;
            }
        };
        let args = [
            probe!().to_string(),
            "arrivals".into(),
            allowed.to_string(),
            denied.to_string(),
        ];
        let mut arrivals = Spawned::start(hijack(&server.url(), args), dir.path(), "arrivals");
        arrivals.wait_for_line(rumphijack_tests::TIMEOUT, |l| l == "listening");
        RaceSetup {
            dir,
            server,
            arrivals,
            allowed,
            denied,
        }
    }

    fn policy(&self) -> std::path::PathBuf {
        let text = format!(
            "[default]\naction = \"deny\"\nerrno = \"EPERM\"\n\n[[rule]]\n\
             comment = \"the only destination\"\nop = [\"connect\", \"send\"]\n\
             addr = \"127.0.0.1\"\nport = {}\naction = \"allow\"\n",
            self.allowed
        );
        self.dir.write("race.toml", &text)
    }

    /// Current counts for (allowed, denied).
    fn report(&mut self) -> (Arrivals, Arrivals) {
        self.arrivals
            .send_line("report")
            .expect("arrivals is running");
        let mut counts = Vec::new();
        loop {
            let line = self.arrivals.next_line(rumphijack_tests::TIMEOUT);
            if line == "end" {
                break;
            }
            let number = |key| {
                field(&line, key)
                    .and_then(|v| v.parse().ok())
                    .expect("count")
            };
            let port: u16 = number("port") as u16;
            counts.push((
                port,
                Arrivals {
                    tcp: number("tcp"),
                    udp: number("udp"),
                },
            ));
        }
        let of = |port| {
            counts
                .iter()
                .find(|(p, _)| *p == port)
                .expect("port reported")
                .1
        };
        (of(self.allowed), of(self.denied))
    }

    /// Reports until `done` holds for the allowed port's counts or 20 s pass: connections
    /// still queued and datagrams still buffered are counted before the verdict.
    fn settle(&mut self, done: impl Fn(Arrivals) -> bool) -> (Arrivals, Arrivals) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counts = self.report();
            if done(counts.0) || Instant::now() >= deadline {
                return counts;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn race(&self, subcommand: &str, n: u64) -> String {
        let args = [
            probe!().to_string(),
            subcommand.to_string(),
            self.allowed.to_string(),
            self.denied.to_string(),
            n.to_string(),
        ];
        let policy = self.policy();
        let started = Instant::now();
        let out = run(
            hijack_with_policy(&self.server.url(), &policy, None, args),
            RACE_TIMEOUT,
        );
        out.assert_success(&format!("{subcommand} under the policy"));
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(subcommand))
            .unwrap_or_else(|| panic!("no {subcommand} report\n{out}"))
            .to_string();
        eprintln!("{line} elapsed={:?}", started.elapsed());
        line
    }
}

fn count(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn flipping_the_connect_destination_never_reaches_the_denied_port() {
    let mut setup = RaceSetup::start("flipping_the_connect_destination");
    let n = attempts();
    let line = setup.race("race-connect", n);
    let connected = count(&line, "allowed");
    let (allowed, denied) = setup.settle(|a| a.tcp >= connected);
    eprintln!(
        "race-connect arrivals: allowed port tcp={} denied port tcp={} udp={}",
        allowed.tcp, denied.tcp, denied.udp
    );

    assert_eq!(
        count(&line, "breach"),
        0,
        "a connect reached the denied port: {line}"
    );
    assert_eq!(
        denied,
        Arrivals { tcp: 0, udp: 0 },
        "the denied port's listener received something during the race: {line}"
    );
    assert!(
        connected > 0 && count(&line, "denied") > 0,
        "both ports must have been tried: {line}"
    );
    assert_eq!(
        count(&line, "other"),
        0,
        "every connect must be allowed or denied with EPERM: {line}"
    );
    assert_eq!(
        allowed.tcp, connected,
        "every allowed connect must arrive at the allowed port: {line}"
    );
}

#[test]
fn flipping_the_sendto_destination_never_reaches_the_denied_port() {
    let mut setup = RaceSetup::start("flipping_the_sendto_destination");
    let n = attempts();
    let line = setup.race("race-sendto", n);
    let sent = count(&line, "sent");
    let (allowed, denied) = setup.settle(|a| a.udp >= sent);
    eprintln!(
        "race-sendto arrivals: allowed port udp={} denied port tcp={} udp={}",
        allowed.udp, denied.tcp, denied.udp
    );

    assert_eq!(
        denied,
        Arrivals { tcp: 0, udp: 0 },
        "a datagram reached the denied port during the race: {line}"
    );
    assert!(
        sent > 0 && count(&line, "denied") > 0,
        "both ports must have been tried: {line}"
    );
    assert_eq!(
        count(&line, "other"),
        0,
        "every sendto must be sent or denied: {line}"
    );
    // Only a lossless run proves that no denied datagram slipped through and was dropped.
    assert_eq!(
        allowed.udp, sent,
        "every datagram sent must be counted at the allowed port, or the check above is \
         inconclusive (receive queue overflow?): {line}"
    );
}
