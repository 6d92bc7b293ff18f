//! `rumphijack policy explain`: how a policy decides one query, step by step.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::model::{errno_name, Action, Operation, Protocol, Query};
use crate::policy::{describe_rule, Policy};

const QUERY_SYNTAX: &str =
    "expected OPERATION PROTOCOL ADDRESS, such as \"connect tcp 10.1.2.3:443\" or \
     \"send udp [::1]:53\"";

/// Parses `OPERATION PROTOCOL ADDRESS`: `connect tcp 10.1.2.3:443`, `send udp [::1]:53`,
/// `accept any 1.2.3.4:0`. The protocol is `tcp`, `udp`, or `any`/`other` for a socket of
/// neither; the address is `IP:PORT`, `[IPV6]:PORT`, or an IP alone for port 0.
pub fn parse_query(s: &str) -> Result<Query, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let [op, protocol, addr] = words[..] else {
        return Err(format!("{s:?} is not a query; {QUERY_SYNTAX}"));
    };

    let op = Operation::from_name(op).ok_or_else(|| {
        format!("unknown operation {op:?}; expected connect, bind, listen, accept or send")
    })?;
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "any" | "other" => Protocol::Other,
        _ => {
            return Err(format!(
                "unknown protocol {protocol:?}; expected tcp, udp or any"
            ))
        }
    };
    let addr = match addr.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match addr.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 0),
            Err(_) => {
                return Err(format!(
                    "{addr:?} is not an address; expected IP:PORT, [IPV6]:PORT or an IP"
                ))
            }
        },
    };
    Ok(Query { op, protocol, addr })
}

/// Explains how `policy` decides `query`, one line per step: the query, its normalised form
/// if different, each rule tried and why it did not match, and the decision.
pub fn explain(policy: &Policy, query: &Query) -> String {
    let mut out = String::new();
    let normalized = query.normalized();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "query: {query}");
    if normalized != *query {
        let _ = writeln!(
            out,
            "  matched as: {normalized} ({})",
            why_normalized(query)
        );
    }

    let mut decided_by = None;
    for rule in policy.rules() {
        match rule.mismatch(&normalized) {
            Some(mismatch) => {
                let why = rule.explain_mismatch(&normalized, mismatch);
                let _ = writeln!(out, "  {}: {rule}: no, {why}", describe_rule(rule));
            }
            None => {
                let _ = writeln!(out, "  {}: {rule}: MATCHES", describe_rule(rule));
                decided_by = Some(rule);
                break;
            }
        }
    }

    let decision = policy.decide(query);
    let by = match decided_by {
        Some(rule) => describe_rule(rule),
        None => {
            let default = policy.default_rule();
            if default.line == 0 {
                "the default (no rule matches)".to_owned()
            } else {
                format!(
                    "the default at {}:{}:{} (no rule matches)",
                    policy.origin(),
                    default.line,
                    default.column
                )
            }
        }
    };
    let action = match decision.action {
        Action::Allow => "allow".to_owned(),
        Action::Deny { errno } => format!("deny with {} (errno {errno})", errno_name(errno)),
    };
    let logged = if decision.log { "logged" } else { "not logged" };
    let _ = writeln!(out, "decision: {action}, {logged}, by {by}");
    out
}

fn why_normalized(query: &Query) -> &'static str {
    match query.addr.ip() {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            if query.normalized().addr.ip().is_loopback() && query.op.has_destination() {
                "an IPv4-mapped address is IPv4, and the unspecified destination is loopback"
            } else {
                "an IPv4-mapped address is IPv4"
            }
        }
        ip if ip.is_unspecified() => "the kernel sends to an unspecified destination on loopback",
        _ => "the IPv6 scope and flow label do not matter",
    }
}

#[cfg(test)]
mod tests;
