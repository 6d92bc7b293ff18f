//! Properties of decisions against a model of the rules, and a parser that never panics.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use policy::{parse_query, Action, Operation, Policy, Protocol, Query};
use proptest::prelude::*;

const ERRNOS: [(&str, i32); 4] = [
    ("EACCES", libc::EACCES),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("EPERM", libc::EPERM),
];

/// An IPv4-only rule, as the model sees it.
#[derive(Debug, Clone)]
struct ModelRule {
    ops: Vec<Operation>,
    /// `None`: any protocol.
    protocol: Option<Protocol>,
    network: u32,
    prefix_len: u32,
    /// Written as `::ffff:a.b.c.d/(96 + len)` instead of `a.b.c.d/len`.
    mapped_spelling: bool,
    ports: Option<(u16, u16)>,
    /// `None`: allow; otherwise an index into `ERRNOS`.
    deny: Option<usize>,
    log: bool,
}

impl ModelRule {
    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - self.prefix_len).unwrap_or(0)
    }

    fn matches(&self, op: Operation, protocol: Protocol, addr: u32, port: u16) -> bool {
        self.ops.contains(&op)
            && self.protocol.iter().all(|&p| p == protocol)
            && addr & self.mask() == self.network
            && self.ports.iter().all(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    fn action(&self) -> Action {
        match self.deny {
            None => Action::Allow,
            Some(i) => Action::Deny { errno: ERRNOS[i].1 },
        }
    }

    fn toml(&self, out: &mut String) {
        let ops: Vec<String> = self.ops.iter().map(|op| format!("\"{op}\"")).collect();
        let _ = writeln!(out, "[[rule]]\nop = [{}]", ops.join(", "));
        if let Some(protocol) = self.protocol {
            let _ = writeln!(out, "proto = \"{protocol}\"");
        }
        let network = Ipv4Addr::from(self.network);
        if self.mapped_spelling {
            let _ = writeln!(out, "addr = \"::ffff:{network}/{}\"", self.prefix_len + 96);
        } else {
            let _ = writeln!(out, "addr = \"{network}/{}\"", self.prefix_len);
        }
        if let Some((lo, hi)) = self.ports {
            let _ = writeln!(out, "port = \"{lo}-{hi}\"");
        }
        match self.deny {
            None => out.push_str("action = \"allow\"\n"),
            Some(i) => {
                let _ = writeln!(out, "action = \"deny\"\nerrno = \"{}\"", ERRNOS[i].0);
            }
        }
        let _ = writeln!(out, "log = {}", self.log);
    }
}

fn operation() -> impl Strategy<Value = Operation> {
    prop::sample::select(Operation::ALL.to_vec())
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Other])
}

/// Addresses and ports from a small pool, so that rules and queries meet often.
fn addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![0x7f00_0001, 0x0a00_0001, 0x0a01_0203, 0xc000_0201]),
        any::<u32>(),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![0u16, 53, 80, 443, 8080]),
        any::<u16>()
    ]
}

fn model_rule() -> impl Strategy<Value = ModelRule> {
    (
        prop::sample::subsequence(Operation::ALL.to_vec(), 1..=5),
        prop::option::of(prop::sample::select(vec![Protocol::Tcp, Protocol::Udp])),
        (addr(), 0u32..=32, any::<bool>()),
        prop::option::of((port(), port())),
        prop::option::of(0..ERRNOS.len()),
        any::<bool>(),
    )
        .prop_map(
            |(ops, protocol, (addr, prefix_len, mapped_spelling), ports, deny, log)| {
                let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
                ModelRule {
                    ops,
                    protocol,
                    network: addr & mask,
                    prefix_len,
                    mapped_spelling,
                    ports: ports.map(|(a, b)| (a.min(b), a.max(b))),
                    deny,
                    log,
                }
            },
        )
}

/// Rules, and whether the default is deny.
fn model_policy() -> impl Strategy<Value = (Vec<ModelRule>, bool)> {
    (prop::collection::vec(model_rule(), 0..8), any::<bool>())
}

fn policy_text(rules: &[ModelRule], default_deny: bool) -> String {
    let mut text = String::new();
    let default = if default_deny { "deny" } else { "allow" };
    let _ = writeln!(text, "default = \"{default}\"");
    for rule in rules {
        rule.toml(&mut text);
    }
    text
}

fn v4(addr: u32, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr)), port)
}

fn mapped(addr: u32, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv4Addr::from(addr).to_ipv6_mapped()), port)
}

proptest! {
    /// The first model rule that matches decides, else the default; whichever way the
    /// address is spelled.
    #[test]
    fn first_match_wins_else_default(
        (rules, default_deny) in model_policy(),
        op in operation(),
        protocol in protocol(),
        addr in addr(),
        port in port(),
    ) {
        let text = policy_text(&rules, default_deny);
        let policy = Policy::parse(&text, "gen.toml").unwrap();

        let expected = rules.iter().position(|r| r.matches(op, protocol, addr, port));
        let expected_action = match expected {
            Some(i) => rules[i].action(),
            None if default_deny => Action::Deny { errno: libc::EACCES },
            None => Action::Allow,
        };

        for spelled in [v4(addr, port), mapped(addr, port)] {
            let decision = policy.decide(&Query { op, protocol, addr: spelled });
            prop_assert_eq!(decision.rule.map(|r| r.index - 1), expected, "{}", spelled);
            prop_assert_eq!(decision.action, expected_action);
            prop_assert_eq!(decision.log, expected.is_some_and(|i| rules[i].log));
        }
    }

    /// An unspecified destination is decided as loopback, in every spelling.
    #[test]
    fn unspecified_destination_is_loopback(
        (rules, default_deny) in model_policy(),
        op in prop::sample::select(vec![Operation::Connect, Operation::Send]),
        protocol in protocol(),
        port in port(),
    ) {
        let policy = Policy::parse(&policy_text(&rules, default_deny), "gen.toml").unwrap();
        let decide = |addr: SocketAddr| {
            let decision = policy.decide(&Query { op, protocol, addr });
            (decision.action, decision.log, decision.rule.map(|r| r.index))
        };
        let loopback4 = decide(v4(0x7f00_0001, port));
        prop_assert_eq!(decide(v4(0, port)), loopback4);
        prop_assert_eq!(decide(mapped(0, port)), loopback4);
        let loopback6 = decide(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
        let unspecified6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        prop_assert_eq!(decide(unspecified6), loopback6);
    }

    /// The parser returns an error with a position, never panics, on arbitrary text.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_parse(&text)?;
    }

    /// The same for text made of the characters TOML gives meaning to.
    #[test]
    fn toml_like_text_never_panics(text in "[\\[\\]{}=,\"'\n #a-z0-9./:-]{0,200}") {
        check_parse(&text)?;
    }

    /// The same for the examples with characters deleted, inserted and replaced.
    #[test]
    fn mutated_examples_never_panic(
        example in prop::sample::select(EXAMPLES.to_vec()),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, interesting_char()),
            1..6,
        ),
    ) {
        let mut text: Vec<char> = example.chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(text.len() + 1);
            match kind {
                0 if i < text.len() => { text.remove(i); }
                1 if i < text.len() => text[i] = c,
                _ => text.insert(i, c),
            }
        }
        check_parse(&text.into_iter().collect::<String>())?;
    }

    /// `parse_query` never panics, and what it accepts prints back to the same query.
    #[test]
    fn parse_query_never_panics(
        text in "(connect|send|bind|x) (tcp|udp|any|) [0-9a-f:.\\[\\]]{0,30}",
    ) {
        if let Ok(query) = parse_query(&text) {
            prop_assert_eq!(parse_query(&query.to_string()), Ok(query));
        }
    }
}

const EXAMPLES: [&str; 4] = [
    include_str!("../examples/deny-all-but-loopback.toml"),
    include_str!("../examples/web-client.toml"),
    include_str!("../examples/server-only.toml"),
    include_str!("../examples/audit-only.toml"),
];

/// Characters TOML or the policy syntax give meaning to.
fn interesting_char() -> impl Strategy<Value = char> {
    prop::sample::select(
        "[]{}=,\"'\n #\\acdeilnoprstuy0123456789./:é-"
            .chars()
            .collect::<Vec<_>>(),
    )
}

fn check_parse(text: &str) -> Result<(), TestCaseError> {
    if let Err(err) = Policy::parse(text, "fuzz.toml") {
        let lines = text.split('\n').count();
        prop_assert!(err.line >= 1 && err.line <= lines, "{err} for {text:?}");
        prop_assert!(err.column >= 1, "{err} for {text:?}");
        prop_assert!(
            !err.message.is_empty() && !err.message.contains('\n'),
            "{err}"
        );
    }
    Ok(())
}
