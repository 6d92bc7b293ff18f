//! The question a policy answers and the answer it gives.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A network operation the supervisor checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// connect(2): the address is the destination.
    Connect,
    /// bind(2): the address is the local one being bound.
    Bind,
    /// listen(2): the address is the local one the socket is bound to.
    Listen,
    /// accept(2), accept4(2): the address is the peer's.
    Accept,
    /// sendto(2), sendmsg(2), sendmmsg(2) with a destination address: the address is the
    /// destination.
    Send,
}

impl Operation {
    /// Every operation, in the order of the documentation.
    pub const ALL: [Operation; 5] = [
        Operation::Connect,
        Operation::Bind,
        Operation::Listen,
        Operation::Accept,
        Operation::Send,
    ];

    /// The name used in policy files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Connect => "connect",
            Operation::Bind => "bind",
            Operation::Listen => "listen",
            Operation::Accept => "accept",
            Operation::Send => "send",
        }
    }

    /// The operation called `name` in policy files.
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// True when the address is where data goes, so that the kernel reads an unspecified
    /// address as loopback (`tcp_v4_connect`, `ip4_datagram_connect`, `udp_sendmsg` route
    /// `0.0.0.0` to the local host; `tcp_v6_connect` and `udpv6_sendmsg` replace `::` by `::1`).
    pub fn has_destination(self) -> bool {
        matches!(self, Operation::Connect | Operation::Send)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The transport protocol of the socket being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A stream socket of `AF_INET`/`AF_INET6` (TCP, and MPTCP which falls back to it).
    Tcp,
    /// A datagram socket of `AF_INET`/`AF_INET6`.
    Udp,
    /// Anything else (raw, SCTP, ICMP datagram sockets); only `proto = "any"` rules match it.
    Other,
}

impl Protocol {
    /// The name used in logs and by [`crate::parse_query`].
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Other => "other",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Query {
    /// What the program does.
    pub op: Operation,
    /// The protocol of its socket.
    pub protocol: Protocol,
    /// The address the operation concerns: see [`Operation`] for which one.
    pub addr: SocketAddr,
}

impl Query {
    /// The query as rules see it, so that no spelling of an address dodges a rule:
    ///
    /// * an IPv4-mapped IPv6 address `::ffff:a.b.c.d` becomes the IPv4 address `a.b.c.d`,
    ///   which is where the kernel sends the traffic (ipv6(7), "IPv4-mapped addresses");
    /// * for `connect` and `send`, the unspecified address of either family becomes that
    ///   family's loopback address, where the kernel delivers it.
    ///
    /// The port is kept; an IPv6 scope and flow label are dropped, as no rule matches them.
    pub fn normalized(&self) -> Query {
        let ip = match self.addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let ip = match ip {
            IpAddr::V4(v4) if v4.is_unspecified() && self.op.has_destination() => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            IpAddr::V6(v6) if v6.is_unspecified() && self.op.has_destination() => {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        };
        Query {
            addr: SocketAddr::new(ip, self.addr.port()),
            ..*self
        }
    }
}

/// The syntax [`crate::parse_query`] reads: `connect tcp 10.1.2.3:443`.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.op, self.protocol, self.addr)
    }
}

/// What to do with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Perform it.
    Allow,
    /// Fail it with this errno.
    Deny {
        /// A positive errno value, one of [`DENY_ERRNOS`].
        errno: i32,
    },
}

impl fmt::Display for Action {
    /// `allow`, or `deny` and the errno name: `deny EACCES`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow => f.write_str("allow"),
            Action::Deny { errno } => write!(f, "deny {}", errno_name(*errno)),
        }
    }
}

/// The errnos a policy may deny with, by name. Each is one the operations can fail with
/// natively, so programs already handle them.
pub const DENY_ERRNOS: [(&str, i32); 4] = [
    ("EACCES", libc::EACCES),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("EPERM", libc::EPERM),
];

/// The errno a `deny` without `errno` returns.
pub const DEFAULT_DENY_ERRNO: i32 = libc::EACCES;

/// Names of errnos that appear in decisions and in the supervisor's logs.
const ERRNO_NAMES: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("EINTR", libc::EINTR),
    ("EBADF", libc::EBADF),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("EINVAL", libc::EINVAL),
    ("EPIPE", libc::EPIPE),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTSOCK", libc::ENOTSOCK),
    ("EDESTADDRREQ", libc::EDESTADDRREQ),
    ("EMSGSIZE", libc::EMSGSIZE),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EADDRINUSE", libc::EADDRINUSE),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("ECONNRESET", libc::ECONNRESET),
    ("EISCONN", libc::EISCONN),
    ("ENOTCONN", libc::ENOTCONN),
    ("ETIMEDOUT", libc::ETIMEDOUT),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("EHOSTUNREACH", libc::EHOSTUNREACH),
    ("EALREADY", libc::EALREADY),
    ("EINPROGRESS", libc::EINPROGRESS),
];

/// The symbolic name of `errno` (`"EACCES"`), or `"unknown errno"`.
pub fn errno_name(errno: i32) -> &'static str {
    ERRNO_NAMES
        .iter()
        .find(|(_, value)| *value == errno)
        .map_or("unknown errno", |(name, _)| name)
}

/// The errno a policy may deny with, by name.
pub(crate) fn deny_errno_by_name(name: &str) -> Option<i32> {
    DENY_ERRNOS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| *value)
}
