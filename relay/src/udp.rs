//! What the kernel refuses a UDP send for before anything leaves (udp_sendmsg and
//! udpv6_sendmsg in Linux 6.x, net/ipv4/udp.c and net/ipv6/udp.c).
//!
//! A relayed datagram is sent by the server later, where a failure reaches nobody, so the
//! client makes these checks itself and the program gets the errno a native socket gives.
//!
//! ## Limitations
//!
//! The size limits assume no IP options or IPv6 extension headers, and an IPv6 socket is
//! assumed not to be `IPV6_V6ONLY` (with it, a native send to an IPv4 address fails with
//! `ENETUNREACH`; relayed, the datagram is dropped). `AF_UNSPEC` on an IPv6 socket means
//! "no address", which only the server knows how to answer; it is passed on unchecked.

use crate::sys::Errno;

/// Largest UDP payload over IPv4: 65535 less the IPv4 and UDP headers.
pub const MAX_IPV4_PAYLOAD: usize = 65_535 - 20 - 8;

/// Largest UDP payload over IPv6 without jumbograms: 65535 less the UDP header.
pub const MAX_IPV6_PAYLOAD: usize = 65_535 - 8;

/// The errno a UDP socket of `domain` refuses a `len`-byte datagram to `addr` (raw
/// `sockaddr` bytes, as the program passed them) with, in the kernel's order of checks.
pub fn check_send(domain: i32, addr: &[u8], len: usize) -> Result<(), Errno> {
    let family = |addr: &[u8]| i32::from(u16::from_ne_bytes([addr[0], addr[1]]));
    match domain {
        libc::AF_INET => check_ipv4(addr, len),
        libc::AF_INET6 => {
            // offsetof(struct sockaddr, sa_data): the family must be there at least.
            if addr.len() < 2 {
                return Err(libc::EINVAL);
            }
            match family(addr) {
                libc::AF_INET6 => check_ipv6(addr, len),
                libc::AF_INET => check_ipv4(addr, len),
                libc::AF_UNSPEC => Ok(()),
                _ => Err(libc::EINVAL),
            }
        }
        _ => Ok(()),
    }
}

/// udp_sendmsg: size, then the address, then the payload limit of ip_append_data.
fn check_ipv4(addr: &[u8], len: usize) -> Result<(), Errno> {
    if len > 0xffff {
        return Err(libc::EMSGSIZE);
    }
    if addr.len() < std::mem::size_of::<libc::sockaddr_in>() {
        return Err(libc::EINVAL);
    }
    let family = i32::from(u16::from_ne_bytes([addr[0], addr[1]]));
    if family != libc::AF_INET && family != libc::AF_UNSPEC {
        return Err(libc::EAFNOSUPPORT);
    }
    if addr[2..4] == [0, 0] {
        return Err(libc::EINVAL);
    }
    if len > MAX_IPV4_PAYLOAD {
        return Err(libc::EMSGSIZE);
    }
    Ok(())
}

/// udpv6_sendmsg with an `AF_INET6` address: an IPv4-mapped one goes the IPv4 way.
fn check_ipv6(addr: &[u8], len: usize) -> Result<(), Errno> {
    // SIN6_LEN_RFC2133: the address without its scope id is enough.
    if addr.len() < 24 {
        return Err(libc::EINVAL);
    }
    let mapped = addr[8..18].iter().all(|b| *b == 0) && addr[18..20] == [0xff, 0xff];
    if mapped {
        return check_ipv4(&ipv4_of_mapped(addr), len);
    }
    if addr[2..4] == [0, 0] {
        return Err(libc::EINVAL);
    }
    if len > MAX_IPV6_PAYLOAD {
        return Err(libc::EMSGSIZE);
    }
    Ok(())
}

/// The `sockaddr_in` the kernel makes of an IPv4-mapped `sockaddr_in6`.
fn ipv4_of_mapped(addr: &[u8]) -> Vec<u8> {
    let mut v4 = vec![0u8; std::mem::size_of::<libc::sockaddr_in>()];
    v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    v4[2..4].copy_from_slice(&addr[2..4]);
    v4[4..8].copy_from_slice(&addr[20..24]);
    v4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(port: u16) -> Vec<u8> {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend(port.to_be_bytes());
        a.extend([127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        a
    }

    fn v6(port: u16, ip: [u8; 16]) -> Vec<u8> {
        let mut a = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        a.extend(port.to_be_bytes());
        a.extend([0; 4]);
        a.extend(ip);
        a.extend([0; 4]);
        a
    }

    const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const MAPPED: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];

    #[test]
    fn ipv4_socket() {
        let inet = libc::AF_INET;
        assert_eq!(check_send(inet, &v4(9), 10), Ok(()));
        assert_eq!(check_send(inet, &v4(9), MAX_IPV4_PAYLOAD), Ok(()));
        assert_eq!(
            check_send(inet, &v4(9), MAX_IPV4_PAYLOAD + 1),
            Err(libc::EMSGSIZE)
        );
        assert_eq!(check_send(inet, &[], 10), Err(libc::EINVAL));
        assert_eq!(check_send(inet, &v4(9)[..8], 10), Err(libc::EINVAL));
        assert_eq!(check_send(inet, &v4(0), 10), Err(libc::EINVAL));
        assert_eq!(
            check_send(inet, &v6(9, LOOPBACK6), 10),
            Err(libc::EAFNOSUPPORT)
        );
        // The size is checked before the address.
        assert_eq!(check_send(inet, &[], 1 << 20), Err(libc::EMSGSIZE));
    }

    #[test]
    fn ipv6_socket() {
        let inet6 = libc::AF_INET6;
        assert_eq!(
            check_send(inet6, &v6(9, LOOPBACK6), MAX_IPV6_PAYLOAD),
            Ok(())
        );
        assert_eq!(
            check_send(inet6, &v6(9, LOOPBACK6), MAX_IPV6_PAYLOAD + 1),
            Err(libc::EMSGSIZE)
        );
        assert_eq!(check_send(inet6, &v6(0, LOOPBACK6), 1), Err(libc::EINVAL));
        assert_eq!(
            check_send(inet6, &v6(9, LOOPBACK6)[..20], 1),
            Err(libc::EINVAL)
        );
        assert_eq!(check_send(inet6, &[10], 1), Err(libc::EINVAL));
        let mapped = v6(9, MAPPED);
        assert_eq!(check_send(inet6, &mapped, MAX_IPV4_PAYLOAD), Ok(()));
        assert_eq!(
            check_send(inet6, &mapped, MAX_IPV4_PAYLOAD + 1),
            Err(libc::EMSGSIZE)
        );
        assert_eq!(check_send(inet6, &v4(9), 10), Ok(()));
        assert_eq!(check_send(inet6, &v4(9)[..8], 10), Err(libc::EINVAL));
        let mut unix = v4(9);
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(check_send(inet6, &unix, 10), Err(libc::EINVAL));
    }
}
