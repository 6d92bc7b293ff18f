//! `StackServer`: the socket file, the accept loop, concurrency and stopping.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{create_socket, handshake, TempDir};
use rumpclient::protocol::{ErrorCode, Message};
use rumpclient::wire;
use server::{ServeOptions, ServerError, ShutdownHandle, StackServer, Stopped};

struct Running {
    handle: ShutdownHandle,
    thread: JoinHandle<Result<Stopped, ServerError>>,
}

impl Running {
    fn start(path: &Path) -> Running {
        let server = StackServer::bind(path, ServeOptions::new()).unwrap();
        let handle = server.shutdown_handle();
        let thread = thread::spawn(move || server.run(None));
        Running { handle, thread }
    }

    fn stop(self) -> Stopped {
        self.handle.stop();
        self.thread.join().unwrap().unwrap()
    }
}

#[test]
fn socket_file_is_owner_only() {
    let dir = TempDir::new("mode");
    let path = dir.join("sock");
    let server = StackServer::bind(&path, ServeOptions::new()).unwrap();
    let meta = fs::metadata(server.path()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.join("sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a dead listener leaves its file behind");

    let running = Running::start(&path);
    let client = UnixStream::connect(&path).unwrap();
    handshake(&client);
    assert_eq!(running.stop(), Stopped::Requested);
}

#[test]
fn second_server_on_a_live_path_is_refused() {
    let dir = TempDir::new("live");
    let path = dir.join("sock");
    let running = Running::start(&path);
    let err = StackServer::bind(&path, ServeOptions::new()).unwrap_err();
    assert!(matches!(err, ServerError::LiveServer { .. }), "{err}");
    assert!(
        err.to_string().contains("a live server already answers at"),
        "{err}"
    );

    // The refused attempt left the first server's socket alone.
    let client = UnixStream::connect(&path).unwrap();
    handshake(&client);
    running.stop();
}

#[test]
fn something_else_at_the_path_is_refused() {
    let dir = TempDir::new("notsock");
    let path = dir.join("sock");
    fs::write(&path, "precious").unwrap();
    let err = StackServer::bind(&path, ServeOptions::new()).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn stop_removes_the_path_and_drop_does_too() {
    let dir = TempDir::new("unlink");
    let path = dir.join("sock");
    let running = Running::start(&path);
    assert!(path.exists());
    assert_eq!(running.stop(), Stopped::Requested);
    assert!(!path.exists());

    drop(StackServer::bind(&path, ServeOptions::new()).unwrap());
    assert!(!path.exists());
}

#[test]
fn stop_before_run_returns_at_once() {
    let dir = TempDir::new("early");
    let server = StackServer::bind(&dir.join("sock"), ServeOptions::new()).unwrap();
    server.shutdown_handle().stop();
    assert_eq!(server.run(None).unwrap(), Stopped::Requested);
}

#[test]
fn stop_fd_ends_the_loop() {
    let dir = TempDir::new("stopfd");
    let server = StackServer::bind(&dir.join("sock"), ServeOptions::new()).unwrap();
    let (rx, tx) = nix::unistd::pipe().unwrap();
    nix::unistd::write(&tx, b"x").unwrap();
    assert_eq!(
        server.run(Some(std::os::fd::AsFd::as_fd(&rx))).unwrap(),
        Stopped::StopFd
    );
}

#[test]
fn silent_client_does_not_stall_others() {
    let dir = TempDir::new("silent");
    let path = dir.join("sock");
    let running = Running::start(&path);

    // Connected, and never says a word.
    let silent = UnixStream::connect(&path).unwrap();

    let busy = UnixStream::connect(&path).unwrap();
    handshake(&busy);
    for _ in 0..10 {
        create_socket(&busy, libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    }

    // Stopping does not wait for the silent client's hello timeout either.
    let started = Instant::now();
    running.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    match wire::recv(&silent).unwrap() {
        (Message::Error { code, .. }, None) => assert_eq!(code, ErrorCode::ShuttingDown),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn many_clients_at_once() {
    let dir = TempDir::new("many");
    let path = dir.join("sock");
    let running = Running::start(&path);
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let path = path.clone();
            thread::spawn(move || {
                let client = UnixStream::connect(&path).unwrap();
                handshake(&client);
                create_socket(&client, libc::AF_INET6, libc::SOCK_STREAM, 0).unwrap();
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    running.stop();
}

#[test]
fn connected_client_hears_about_the_shutdown() {
    let dir = TempDir::new("inflight");
    let path = dir.join("sock");
    let running = Running::start(&path);
    let client = UnixStream::connect(&path).unwrap();
    handshake(&client);

    running.stop();
    match wire::recv(&client).unwrap() {
        (Message::Error { code, .. }, None) => assert_eq!(code, ErrorCode::ShuttingDown),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!path.exists());
}
