//! Policy decisions made inside the program, on copies of its addresses.
//!
//! The address is copied out of the program's memory once, the decision is made on the copy,
//! and the copy is what the kernel receives, so that another thread rewriting the address in
//! between cannot slip a different one past the check. (This is tidiness, not security: the
//! program can bypass the library altogether, see the crate docs.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libc::{c_int, sockaddr, socklen_t};
use policy::{Action, Operation, Protocol, Query};

use crate::config::{self, Config};
use crate::sys::{self, Errno};

/// `sizeof(struct sockaddr_storage)`: the most the kernel reads of an address.
const MAX_SOCKADDR: usize = 128;

/// A program's socket address, copied.
#[derive(Debug, Clone)]
pub struct AddrCopy {
    storage: libc::sockaddr_storage,
    len: socklen_t,
}

impl AddrCopy {
    /// Copies `len` bytes at `addr`. `None` for a null pointer; `EINVAL` for a length the
    /// kernel would refuse (`move_addr_to_kernel` in net/socket.c).
    ///
    /// # Safety
    /// `addr` must be null or readable for `len` bytes.
    pub unsafe fn from_program(
        addr: *const sockaddr,
        len: socklen_t,
    ) -> Result<Option<AddrCopy>, Errno> {
        if addr.is_null() {
            return Ok(None);
        }
        if len as usize > MAX_SOCKADDR || (len as c_int) < 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: sockaddr_storage is plain data.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: the caller guarantees `len` readable bytes at `addr`; `storage` has room for
        // MAX_SOCKADDR bytes and the regions are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr.cast::<u8>(),
                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                len as usize,
            )
        };
        Ok(Some(AddrCopy { storage, len }))
    }

    pub fn as_ptr(&self) -> *const sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    pub fn len(&self) -> socklen_t {
        self.len
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `storage` is MAX_SOCKADDR bytes and `len` is at most that.
        unsafe { std::slice::from_raw_parts(self.as_ptr().cast::<u8>(), self.len as usize) }
    }
}

/// The IPv4 or IPv6 address in raw `sockaddr` bytes, if that is what they hold. An IPv4
/// address needs its 8 meaningful bytes, an IPv6 one the 24 of RFC 2133; shorter ones are not
/// decided here and the kernel refuses them with `EINVAL`.
pub fn parse_inet(raw: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]));
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    let ip = match family {
        libc::AF_INET if raw.len() >= 8 => {
            IpAddr::V4(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]))
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let octets: [u8; 16] = raw[8..24].try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The protocol of `fd` as policies name it; `Err` when `fd` is not a socket (the caller then
/// lets the kernel report that).
pub fn protocol_of(fd: c_int) -> Result<Protocol, Errno> {
    Ok(match sys::getsockopt_int(fd, libc::SO_PROTOCOL)? {
        libc::IPPROTO_TCP => Protocol::Tcp,
        libc::IPPROTO_UDP => Protocol::Udp,
        _ => Protocol::Other,
    })
}

/// The policy's verdict on `op` by `fd` concerning `addr`: `Ok` to go ahead, `Err(errno)` to
/// fail the call. Allowed when there is no policy, the address is not IPv4/IPv6, or `fd` is
/// not a socket (the kernel will say so).
pub fn decide(config: &Config, op: Operation, fd: c_int, addr: &[u8]) -> Result<(), Errno> {
    let Some(policy) = &config.policy else {
        return Ok(());
    };
    let Some(addr) = parse_inet(addr) else {
        return Ok(());
    };
    let Ok(protocol) = protocol_of(fd) else {
        return Ok(());
    };
    let query = Query { op, protocol, addr };
    let decision = policy.decide(&query);
    if decision.log || decision.action != Action::Allow {
        config::debug(config, || {
            format!("{query}: {} by {}", decision.action, decision.describe())
        });
    }
    match decision.action {
        Action::Allow => Ok(()),
        Action::Deny { errno } => Err(errno),
    }
}

/// [`decide`] on a copied address, if any.
pub fn decide_copy(
    config: &Config,
    op: Operation,
    fd: c_int,
    addr: Option<&AddrCopy>,
) -> Result<(), Errno> {
    match addr {
        Some(addr) => decide(config, op, fd, addr.bytes()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_inet;

    #[test]
    fn inet_addresses_parse_from_raw_bytes() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(parse_inet(&v4), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_inet(&v4[..7]), None);

        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(parse_inet(&v6), Some("[::1]:443".parse().unwrap()));
        assert_eq!(parse_inet(&v6[..20]), None);
    }

    #[test]
    fn other_families_are_not_inet() {
        let mut unix = vec![0u8; 12];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse_inet(&unix), None);
        assert_eq!(parse_inet(&[]), None);
    }
}
