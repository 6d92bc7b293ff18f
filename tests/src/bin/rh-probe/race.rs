//! `race-connect ALLOWED DENIED N` and `race-sendto ALLOWED DENIED N`: a second thread
//! keeps rewriting the port of the `sockaddr_in` that the first thread passes to `connect`
//! (a new socket each time) or `sendto`, alternating between ALLOWED and DENIED on
//! 127.0.0.1. A supervisor that checked one copy of the address and let the kernel read it
//! again would sooner or later let a DENIED destination through.
//!
//! The policy must deny with `EPERM`, which neither call returns on loopback otherwise.
//! Reports one line of counts; after a successful `connect`, `getpeername` tells which port
//! was really reached (`breach` counts DENIED ones).

use std::collections::BTreeMap;
use std::hint;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::thread;

use nix::errno::Errno;
use nix::sys::socket::{
    getpeername, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

use super::Result;

/// Laid out exactly like `struct sockaddr_in`, with the port written atomically by the
/// flipping thread while the kernel or the supervisor may be reading it.
#[repr(C)]
struct FlippingSockaddr {
    family: libc::sa_family_t,
    port: AtomicU16,
    addr: libc::in_addr,
    zero: [u8; 8],
}

const _: () = assert!(size_of::<FlippingSockaddr>() == size_of::<libc::sockaddr_in>());

const SOCKADDR_IN_LEN: libc::socklen_t = size_of::<libc::sockaddr_in>() as libc::socklen_t;

impl FlippingSockaddr {
    fn loopback(port: u16) -> FlippingSockaddr {
        FlippingSockaddr {
            family: libc::AF_INET as libc::sa_family_t,
            port: AtomicU16::new(port.to_be()),
            addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            zero: [0; 8],
        }
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (self as *const FlippingSockaddr).cast()
    }

    /// Alternates the port until `stop`, holding each value for a varying number of spins so
    /// that the switch lands at every point of the callers' system calls.
    fn flip(&self, allowed: u16, denied: u16, stop: &AtomicBool) {
        let mut spins = 0u32;
        while !stop.load(Ordering::Relaxed) {
            for port in [allowed, denied] {
                self.port.store(port.to_be(), Ordering::Relaxed);
                for _ in 0..spins % 13 {
                    hint::spin_loop();
                }
                spins = spins.wrapping_add(7);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    allowed: u64,
    denied: u64,
    breach: u64,
    other: BTreeMap<String, u64>,
}

impl Tally {
    fn other(&mut self, what: String) {
        *self.other.entry(what).or_default() += 1;
    }

    fn other_total(&self) -> u64 {
        self.other.values().sum()
    }

    fn other_list(&self) -> String {
        let list: Vec<String> = self.other.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        if list.is_empty() {
            "-".into()
        } else {
            list.join(",")
        }
    }
}

fn parse(args: &[String]) -> Result<(u16, u16, u64)> {
    let [allowed, denied, n] = args else {
        return Err("race-* needs ALLOWED_PORT DENIED_PORT N".into());
    };
    let port = |p: &String| p.parse::<u16>().map_err(|e| format!("bad port {p:?}: {e}"));
    let n = n.parse().map_err(|e| format!("bad count {n:?}: {e}"))?;
    Ok((port(allowed)?, port(denied)?, n))
}

/// Runs `attempt` N times while another thread flips the destination.
fn race(
    args: &[String],
    mut attempt: impl FnMut(&FlippingSockaddr, &mut Tally) -> Result<()>,
) -> Result<(u64, Tally)> {
    let (allowed, denied, n) = parse(args)?;
    let target = FlippingSockaddr::loopback(allowed);
    let stop = AtomicBool::new(false);
    let mut tally = Tally::default();
    let result = thread::scope(|s| {
        s.spawn(|| target.flip(allowed, denied, &stop));
        let result = (0..n).try_for_each(|_| attempt(&target, &mut tally));
        stop.store(true, Ordering::Relaxed);
        result
    });
    result.map(|()| (n, tally))
}

pub fn connect(args: &[String]) -> Result<()> {
    let (allowed, denied, _) = parse(args)?;
    let (n, tally) = race(args, |target, tally| {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("socket: {e}"))?;
        // SAFETY: `target` lives for the whole call and has the size and layout of a
        // sockaddr_in; the call only reads it, and the concurrent writes are atomic stores.
        let ret = unsafe { libc::connect(fd.as_raw_fd(), target.as_ptr(), SOCKADDR_IN_LEN) };
        if ret == 0 {
            match getpeername::<SockaddrIn>(fd.as_raw_fd()).map(|peer| peer.port()) {
                Ok(port) if port == allowed => tally.allowed += 1,
                Ok(port) if port == denied => tally.breach += 1,
                Ok(port) => tally.other(format!("peer-port-{port}")),
                Err(e) => tally.other(format!("getpeername-{e:?}")),
            }
        } else {
            match Errno::last() {
                Errno::EPERM => tally.denied += 1,
                e => tally.other(format!("{e:?}")),
            }
        }
        close_with_reset(fd);
        Ok(())
    })?;
    println!(
        "race-connect attempts={n} allowed={} denied={} breach={} other={} errors={}",
        tally.allowed,
        tally.denied,
        tally.breach,
        tally.other_total(),
        tally.other_list()
    );
    Ok(())
}

/// Closes with `SO_LINGER` 0: a reset instead of `TIME_WAIT`, so 100 000 connections do not
/// exhaust the ephemeral ports.
fn close_with_reset(fd: OwnedFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(&fd, sockopt::Linger, &linger);
}

pub fn sendto(args: &[String]) -> Result<()> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let (n, tally) = race(args, |target, tally| {
        // SAFETY: the payload is a live 1-byte buffer; `target` as in `connect` above.
        let ret = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                b"r".as_ptr().cast(),
                1,
                0,
                target.as_ptr(),
                SOCKADDR_IN_LEN,
            )
        };
        match ret {
            1 => tally.allowed += 1,
            _ => match Errno::last() {
                Errno::EPERM => tally.denied += 1,
                e => tally.other(format!("{e:?}")),
            },
        }
        Ok(())
    })?;
    println!(
        "race-sendto attempts={n} sent={} denied={} other={} errors={}",
        tally.allowed,
        tally.denied,
        tally.other_total(),
        tally.other_list()
    );
    Ok(())
}
