//! A validated rule and how it matches a query.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::cidr::{Cidr, NamedSet};
use crate::model::{Action, Operation, Protocol, Query};

/// Which socket protocols a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolMatch {
    /// Every protocol, including [`Protocol::Other`].
    Any,
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
}

impl ProtocolMatch {
    fn matches(self, protocol: Protocol) -> bool {
        match self {
            ProtocolMatch::Any => true,
            ProtocolMatch::Tcp => protocol == Protocol::Tcp,
            ProtocolMatch::Udp => protocol == Protocol::Udp,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ProtocolMatch::Any => "any",
            ProtocolMatch::Tcp => "tcp",
            ProtocolMatch::Udp => "udp",
        }
    }
}

/// Which address families a rule matches, after IPv4-mapped addresses become IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyMatch {
    /// Both.
    Any,
    /// IPv4, including IPv4-mapped IPv6 addresses.
    Inet,
    /// IPv6 other than IPv4-mapped.
    Inet6,
}

impl FamilyMatch {
    fn matches(self, ip: IpAddr) -> bool {
        match self {
            FamilyMatch::Any => true,
            FamilyMatch::Inet => ip.is_ipv4(),
            FamilyMatch::Inet6 => ip.is_ipv6(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            FamilyMatch::Any => "any",
            FamilyMatch::Inet => "inet",
            FamilyMatch::Inet6 => "inet6",
        }
    }
}

/// One entry of a rule's `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrItem {
    /// A named set.
    Set(NamedSet),
    /// A prefix or single address.
    Prefix(Cidr),
}

impl AddrItem {
    fn contains(self, ip: IpAddr) -> bool {
        match self {
            AddrItem::Set(set) => set.contains(ip),
            AddrItem::Prefix(cidr) => cidr.contains(ip),
        }
    }
}

impl fmt::Display for AddrItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrItem::Set(set) => f.write_str(set.name()),
            AddrItem::Prefix(cidr) => cidr.fmt(f),
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The lowest port matched.
    pub first: u16,
    /// The highest port matched.
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The part of a query a rule does not match; the first one in the order the fields are
/// checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The rule names other operations.
    Operation,
    /// The rule is for another protocol.
    Protocol,
    /// The rule is for the other address family.
    Family,
    /// The address is outside the rule's addresses.
    Address,
    /// The port is outside the rule's ports.
    Port,
}

/// One `[[rule]]` of a policy file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Position among the rules, from 1.
    pub index: usize,
    /// Line of the rule's `[[rule]]` header (or inline table) in the file, from 1.
    pub line: usize,
    /// Column of the same, from 1.
    pub column: usize,
    /// The rule's `comment`.
    pub comment: Option<String>,
    /// What the rule does with the operations it matches.
    pub action: Action,
    /// Whether its decisions are logged.
    pub log: bool,
    pub(crate) origin: Arc<str>,
    pub(crate) ops: Vec<Operation>,
    pub(crate) protocol: ProtocolMatch,
    pub(crate) family: FamilyMatch,
    /// Empty: every address.
    pub(crate) addrs: Vec<AddrItem>,
    /// Empty: every port.
    pub(crate) ports: Vec<PortRange>,
}

impl Rule {
    /// True when the rule names `op`.
    pub fn names(&self, op: Operation) -> bool {
        self.ops.contains(&op)
    }

    /// True when the rule matches `query`, normalised as in [`Query::normalized`].
    pub fn matches(&self, query: &Query) -> bool {
        self.mismatch(&query.normalized()).is_none()
    }

    /// `file:line:column` of the rule.
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.origin, self.line, self.column)
    }

    /// The operations the rule names.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// The first field of an already normalised query the rule does not match.
    pub(crate) fn mismatch(&self, query: &Query) -> Option<Mismatch> {
        let ip = query.addr.ip();
        let port = query.addr.port();
        if !self.names(query.op) {
            Some(Mismatch::Operation)
        } else if !self.protocol.matches(query.protocol) {
            Some(Mismatch::Protocol)
        } else if !self.family.matches(ip) {
            Some(Mismatch::Family)
        } else if !self.addrs.is_empty() && !self.addrs.iter().any(|a| a.contains(ip)) {
            Some(Mismatch::Address)
        } else if !self.ports.is_empty()
            && !self
                .ports
                .iter()
                .any(|r| (r.first..=r.last).contains(&port))
        {
            Some(Mismatch::Port)
        } else {
            None
        }
    }

    /// Why the rule does not match a normalised query, for `explain`.
    pub(crate) fn explain_mismatch(&self, query: &Query, mismatch: Mismatch) -> String {
        match mismatch {
            Mismatch::Operation => format!("the operation is {}", query.op),
            Mismatch::Protocol => format!(
                "the protocol is {}, the rule is for {}",
                query.protocol,
                self.protocol.name()
            ),
            Mismatch::Family => format!(
                "the address is {}, the rule is for {}",
                if query.addr.is_ipv4() { "IPv4" } else { "IPv6" },
                self.family.name()
            ),
            Mismatch::Address => {
                format!("{} is not in {}", query.addr.ip(), list(&self.addrs, "any"))
            }
            Mismatch::Port => format!(
                "port {} is not in {}",
                query.addr.port(),
                list(&self.ports, "any")
            ),
        }
    }
}

fn list<T: fmt::Display>(items: &[T], empty: &str) -> String {
    if items.is_empty() {
        return empty.to_owned();
    }
    let texts: Vec<String> = items.iter().map(T::to_string).collect();
    texts.join(",")
}

/// One line: action, operations, protocol, family if restricted, addresses, ports if
/// restricted, `log` if logged: `allow send udp 127.0.0.0/8 port 53`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.action,
            list(&self.ops, "none"),
            self.protocol.name()
        )?;
        if self.family != FamilyMatch::Any {
            write!(f, " {}", self.family.name())?;
        }
        write!(f, " {}", list(&self.addrs, "any"))?;
        if !self.ports.is_empty() {
            write!(f, " port {}", list(&self.ports, "any"))?;
        }
        if self.log {
            f.write_str(" log")?;
        }
        Ok(())
    }
}
