//! Address prefixes (`10.0.0.0/8`, `fd00::/8`) and the named sets built from them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address prefix. The address has no bits set after the prefix length, and an
/// IPv4-mapped IPv6 prefix of length 96 or more is stored as the IPv4 prefix it denotes, so
/// that it matches the normalised queries of [`crate::Query::normalized`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            len,
        }
    }

    const fn v6(first: u16, len: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0)),
            len,
        }
    }

    const fn v6_host_loopback() -> Cidr {
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            len: 128,
        }
    }

    /// Parses `ADDRESS` (a host: /32 or /128) or `ADDRESS/LENGTH`. The error says what was
    /// expected.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!(
                "{addr_text:?} is not an IPv4 or IPv6 address; expected an address or prefix \
                 such as 192.0.2.1, 10.0.0.0/8 or fd00::/8, or a named set ({})",
                NamedSet::NAMES
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(len) => parse_prefix_len(len, max)?,
        };

        let cidr = Cidr { addr, len };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "{text} has bits set after the first {len}; expected the prefix's first \
                 address, {network}/{len}"
            ));
        }
        Ok(cidr.unmapped())
    }

    /// The prefix's first address: `addr` with the bits after `len` cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(self.len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(self.len))),
        }
    }

    /// `::ffff:a.b.c.d/N` with N ≥ 96 as the IPv4 prefix `a.b.c.d/(N-96)`.
    fn unmapped(self) -> Cidr {
        match self.addr {
            IpAddr::V6(v6) if self.len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    len: self.len - 96,
                },
                None => self,
            },
            _ => self,
        }
    }

    /// True when `ip` is in the prefix. An IPv4 address is never in an IPv6 prefix, nor the
    /// reverse: callers normalise mapped addresses first.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & mask32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

fn parse_prefix_len(text: &str, max: u8) -> Result<u8, String> {
    let expected = format!("expected a prefix length from 0 to {max}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "prefix length {text:?} is not a number; {expected}"
        ));
    }
    match text.parse::<u8>() {
        Ok(len) if len <= max => Ok(len),
        _ => Err(format!("prefix length {text} is too long; {expected}")),
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// `10.0.0.0/8`; a host prefix is written as the bare address.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.len == host {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// A set of addresses with a name, usable wherever a prefix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamedSet {
    /// Every address of both families.
    Any,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 and RFC 4193: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`.
    Private,
    /// RFC 3927 and RFC 4291: `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
}

const ANY: &[Cidr] = &[Cidr::v4(0, 0, 0, 0, 0), Cidr::v6(0, 0)];
const LOOPBACK: &[Cidr] = &[Cidr::v4(127, 0, 0, 0, 8), Cidr::v6_host_loopback()];
const PRIVATE: &[Cidr] = &[
    Cidr::v4(10, 0, 0, 0, 8),
    Cidr::v4(172, 16, 0, 0, 12),
    Cidr::v4(192, 168, 0, 0, 16),
    Cidr::v6(0xfc00, 7),
];
const LINK_LOCAL: &[Cidr] = &[Cidr::v4(169, 254, 0, 0, 16), Cidr::v6(0xfe80, 10)];

impl NamedSet {
    /// The names, for messages.
    pub const NAMES: &'static str = "loopback, any, private, link-local";

    /// The set called `name` in policy files.
    pub fn from_name(name: &str) -> Option<NamedSet> {
        match name {
            "any" => Some(NamedSet::Any),
            "loopback" => Some(NamedSet::Loopback),
            "private" => Some(NamedSet::Private),
            "link-local" => Some(NamedSet::LinkLocal),
            _ => None,
        }
    }

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            NamedSet::Any => "any",
            NamedSet::Loopback => "loopback",
            NamedSet::Private => "private",
            NamedSet::LinkLocal => "link-local",
        }
    }

    /// The prefixes making up the set.
    pub fn prefixes(self) -> &'static [Cidr] {
        match self {
            NamedSet::Any => ANY,
            NamedSet::Loopback => LOOPBACK,
            NamedSet::Private => PRIVATE,
            NamedSet::LinkLocal => LINK_LOCAL,
        }
    }

    /// True when `ip` is in the set.
    pub fn contains(self, ip: IpAddr) -> bool {
        self.prefixes().iter().any(|cidr| cidr.contains(ip))
    }
}

#[cfg(test)]
mod tests;
