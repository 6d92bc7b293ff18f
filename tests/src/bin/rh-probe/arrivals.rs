//! `arrivals PORT...`: the receiving side of the race test.
//!
//! Binds a TCP listener and a UDP socket on `127.0.0.1:PORT` for every port and counts the
//! connections and datagrams that arrive. Prints `listening` once all are bound; each
//! `report` line on stdin is answered with one `port=P tcp=N udp=M` line per port and `end`.
//! Exits at the end of stdin.

use std::io::{self, BufRead, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use nix::sys::socket::{listen, setsockopt, sockopt, Backlog};

use super::Result;

/// Room for tens of thousands of queued datagrams, so a burst from the sender is counted
/// rather than dropped by a full receive queue (needs `CAP_NET_ADMIN`; falls back silently to
/// the default size, which the test detects as lost datagrams).
const UDP_RCVBUF: usize = 64 << 20;

#[derive(Debug, Default)]
struct Counts {
    tcp: AtomicU64,
    udp: AtomicU64,
}

pub fn run(args: &[String]) -> Result<()> {
    let ports = args
        .iter()
        .map(|p| p.parse::<u16>().map_err(|e| format!("bad port {p:?}: {e}")))
        .collect::<Result<Vec<u16>>>()?;
    if ports.is_empty() {
        return Err("arrivals needs at least one PORT".into());
    }

    let mut counts = Vec::new();
    for &port in &ports {
        let count = Arc::new(Counts::default());
        count_connections(port, Arc::clone(&count))?;
        count_datagrams(port, Arc::clone(&count))?;
        counts.push(count);
    }
    println!("listening");
    io::stdout().flush().map_err(|e| e.to_string())?;

    for line in io::stdin().lock().lines() {
        if line.map_err(|e| e.to_string())?.trim() != "report" {
            continue;
        }
        for (port, count) in ports.iter().zip(&counts) {
            println!(
                "port={port} tcp={} udp={}",
                count.tcp.load(Ordering::Relaxed),
                count.udp.load(Ordering::Relaxed)
            );
        }
        println!("end");
        io::stdout().flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn count_connections(port: u16, count: Arc<Counts>) -> Result<()> {
    let listener =
        TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("bind tcp {port}: {e}"))?;
    // A deep queue: the sender connects faster than one thread accepts.
    listen(&listener, Backlog::MAXCONN).map_err(|e| format!("listen {port}: {e}"))?;
    thread::spawn(move || {
        for conn in listener.incoming() {
            if conn.is_ok() {
                count.tcp.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok(())
}

fn count_datagrams(port: u16, count: Arc<Counts>) -> Result<()> {
    let sock = UdpSocket::bind(("127.0.0.1", port)).map_err(|e| format!("bind udp {port}: {e}"))?;
    let _ = setsockopt(&sock, sockopt::RcvBufForce, &UDP_RCVBUF);
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        while sock.recv_from(&mut buf).is_ok() {
            count.udp.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(())
}
