//! The servers the clients talk to. Each listens on `--host` (127.0.0.1 unless told) with an
//! ephemeral port in the stack it was started in, prints `PORT P`, and exits when its standard
//! input is closed.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;

use crate::{sys, Options};

/// The fixed answer of `http-server`: a small page, as a static file server would send.
const RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nServer: bench-load\r\nContent-Type: text/html\r\n\
Content-Length: 45\r\nConnection: close\r\n\r\n<html><body><p>bench-load</p></body></html>\n\n";
/// Listen backlog (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;
/// Threads accepting connections: two, one per vCPU of the reference machine, plus one so
/// that a thread blocked in a slow `close` does not stall the accept queue.
const ACCEPT_THREADS: usize = 3;

fn listen(opts: &Options) -> io::Result<TcpListener> {
    let listener = TcpListener::bind((opts.host, 0))?;
    sys::raise_backlog(&listener, BACKLOG)?;
    announce(listener.local_addr()?.port());
    Ok(listener)
}

/// Prints the port, then starts the thread that ends the process at end of input.
fn announce(port: u16) {
    println!("PORT {port}");
    io::stdout().flush().ok();
    thread::spawn(|| {
        let _ = io::stdin().lock().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
}

/// Runs `serve` on each accepted connection, on `ACCEPT_THREADS` threads, forever.
fn accept_loop(listener: TcpListener, serve: fn(TcpStream)) -> io::Result<()> {
    let workers: Vec<_> = (0..ACCEPT_THREADS)
        .map(|_| {
            let listener = listener.try_clone()?;
            Ok(thread::spawn(move || loop {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("bench-load: accept: {e}");
                        std::process::exit(1);
                    }
                }
            }))
        })
        .collect::<io::Result<_>>()?;
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// Accepts and closes at once: the other end of `connect-close`.
pub fn accept_sink(opts: &Options) -> io::Result<()> {
    accept_loop(listen(opts)?, drop)
}

/// Reads each connection to its end, then closes it: the other end of `tcp-send`.
pub fn tcp_sink(opts: &Options) -> io::Result<()> {
    accept_loop(listen(opts)?, |mut stream| {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    })
}

/// Reads a request up to its blank line, writes the fixed response, closes.
pub fn http_server(opts: &Options) -> io::Result<()> {
    accept_loop(listen(opts)?, |mut stream| {
        let mut request = [0u8; 2048];
        let mut len = 0;
        while len < request.len() {
            match stream.read(&mut request[len..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => len += n,
            }
            if request[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let _ = stream.write_all(RESPONSE);
    })
}

/// Receives and discards datagrams: the other end of `udp-sendto`.
pub fn udp_sink(opts: &Options) -> io::Result<()> {
    let socket = UdpSocket::bind((opts.host, 0))?;
    announce(socket.local_addr()?.port());
    let mut buf = [0u8; 2048];
    loop {
        socket.recv_from(&mut buf)?;
    }
}
