//! The client loops: one per scenario.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Instant;

use crate::timing::{self, run};
use crate::{sys, Options};

/// Bytes per `write` in the bulk transfer: large enough that the per-call cost vanishes.
const CHUNK: usize = 128 * 1024;
/// The request `http-client` sends.
const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: bench-load\r\n\r\n";
/// Payload of one datagram.
const DATAGRAM: [u8; 64] = [0x5a; 64];

fn server(opts: &Options) -> io::Result<SocketAddrV4> {
    if opts.port == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--port is required",
        ));
    }
    Ok(SocketAddrV4::new(opts.host, opts.port))
}

/// Blocks until a line (or end of file) arrives on standard input.
fn wait_for_go(opts: &Options) -> io::Result<()> {
    if opts.wait_stdin {
        io::stdin().lock().read_line(&mut String::new())?;
    }
    Ok(())
}

pub fn socket_close(opts: &Options) -> io::Result<()> {
    run(opts, 16, || {
        drop(sys::socket(libc::AF_INET, libc::SOCK_STREAM)?);
        Ok(0)
    })
}

pub fn getppid(opts: &Options) -> io::Result<()> {
    run(opts, 256, || {
        std::hint::black_box(sys::getppid());
        Ok(0)
    })
}

pub fn connect_close(opts: &Options) -> io::Result<()> {
    let addr = server(opts)?;
    wait_for_go(opts)?;
    run(opts, 4, || {
        let fd = sys::socket(libc::AF_INET, libc::SOCK_STREAM)?;
        sys::connect(&fd, addr)?;
        Ok(0)
    })
}

/// Writes for the configured time, then half-closes and waits for the sink to close, so that
/// the time covers every byte being received, not just queued.
pub fn tcp_send(opts: &Options) -> io::Result<()> {
    let addr = server(opts)?;
    wait_for_go(opts)?;
    let chunk = vec![0xa5u8; CHUNK];

    let start = Instant::now();
    let mut stream = connect_when_routed(addr)?;
    let (mut writes, mut bytes) = (0u64, 0u64);
    while writes < opts.max_ops && start.elapsed() < opts.duration {
        stream.write_all(&chunk)?;
        writes += 1;
        bytes += CHUNK as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let trailing = stream.read(&mut [0u8; 16])?;
    if trailing != 0 {
        return Err(io::Error::other("the sink sent data instead of closing"));
    }
    timing::report(writes, start.elapsed(), bytes, 0);
    Ok(())
}

/// Connects, retrying for up to a second while the network is unreachable: slirp4netns may
/// report ready a moment before the namespace's route is in place.
fn connect_when_routed(addr: SocketAddrV4) -> io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == io::ErrorKind::NetworkUnreachable && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

pub fn http_client(opts: &Options) -> io::Result<()> {
    let addr = server(opts)?;
    wait_for_go(opts)?;
    let mut response = Vec::with_capacity(1024);
    run(opts, 1, || {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(REQUEST)?;
        response.clear();
        stream.read_to_end(&mut response)?;
        if !response.starts_with(b"HTTP/1.0 200 ") {
            return Err(io::Error::other("the server did not answer 200"));
        }
        Ok(response.len() as u64)
    })
}

pub fn udp_sendto(opts: &Options) -> io::Result<()> {
    let addr = server(opts)?;
    wait_for_go(opts)?;
    let socket = UdpSocket::bind((opts.host, 0))?;
    run(opts, 16, || Ok(socket.send_to(&DATAGRAM, addr)? as u64))
}
