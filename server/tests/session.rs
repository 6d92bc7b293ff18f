//! `serve_connection` against a real kernel over socket pairs and a real listener.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::{self, JoinHandle};

use common::{create_socket, handshake, hello, is_root, skip, TempDir};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{self, getsockopt, sockopt, SockType, SockaddrIn};
use rumpclient::protocol::{ErrorCode, Message, PROTOCOL_VERSION};
use rumpclient::wire;
use server::{serve_connection, ServeOptions, SessionEnd, SessionError};

type Served = JoinHandle<Result<SessionEnd, SessionError>>;

fn start(opts: ServeOptions) -> (UnixStream, Served) {
    let (server_end, client) = UnixStream::pair().unwrap();
    let served = thread::spawn(move || serve_connection(server_end, &opts));
    (client, served)
}

/// Reads the `Error` that ends a session, then checks that the server closed its end.
fn expect_error(mut client: UnixStream, served: Served, want: ErrorCode) -> String {
    let message = match wire::recv(&client).unwrap() {
        (Message::Error { code, message }, None) if code == want => message,
        other => panic!("expected Error {{ {want:?} }}, got {other:?}"),
    };
    assert_eq!(
        client.read(&mut [0; 16]).unwrap(),
        0,
        "server closes after an error"
    );
    match served.join().expect("session must not panic").unwrap() {
        SessionEnd::Refused { code, .. } => assert_eq!(code, want),
        other => panic!("unexpected end {other:?}"),
    }
    message
}

#[test]
fn handshake_then_a_nonblocking_tcp_socket() {
    let (client, served) = start(ServeOptions::new());
    let stack = handshake(&client);
    assert!(stack.starts_with("netns net:["), "{stack}");

    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK;
    let sock = create_socket(&client, libc::AF_INET, ty, 0).expect("socket created");
    let flags = OFlag::from_bits_truncate(fcntl(sock.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
    assert!(flags.contains(OFlag::O_NONBLOCK), "SOCK_NONBLOCK honoured");
    assert_eq!(
        getsockopt(&sock, sockopt::SockType).unwrap(),
        SockType::Stream
    );

    drop(client);
    let end = served.join().unwrap().unwrap();
    assert_eq!(end, SessionEnd::Closed { sockets: 1 });
}

#[test]
fn server_keeps_no_copy_of_a_socket_it_handed_over() {
    let (client, _served) = start(ServeOptions::new());
    handshake(&client);
    let sock = create_socket(&client, libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    // One more round trip: the server answers requests in order, so it has finished
    // with the first one (and dropped its copy) once the second is answered.
    let _ = create_socket(&client, 9999, 0, 0);
    let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    socket::bind(sock.as_raw_fd(), &any).unwrap();
    socket::listen(&sock.as_fd(), socket::Backlog::new(1).unwrap()).unwrap();
    let addr: SockaddrIn = socket::getsockname(sock.as_raw_fd()).unwrap();

    // Closing our copy must close the listener: nobody else holds it.
    drop(sock);
    let err = TcpStream::connect((Ipv4Addr::LOCALHOST, addr.port())).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
}

#[test]
fn socket_errors_come_back_unchanged() {
    let (client, served) = start(ServeOptions::new());
    handshake(&client);
    let stream = libc::SOCK_STREAM;
    let udp = libc::IPPROTO_UDP;
    assert_eq!(
        create_socket(&client, libc::AF_INET, stream, udp).unwrap_err(),
        libc::EPROTONOSUPPORT
    );
    assert_eq!(
        create_socket(&client, 9999, stream, 0).unwrap_err(),
        libc::EAFNOSUPPORT
    );
    assert_eq!(
        create_socket(&client, libc::AF_INET, 0x7fff, 0).unwrap_err(),
        libc::EINVAL
    );

    // The session goes on after failures.
    assert!(create_socket(&client, libc::AF_INET6, libc::SOCK_DGRAM, 0).is_ok());
    drop(client);
    assert_eq!(
        served.join().unwrap().unwrap(),
        SessionEnd::Closed { sockets: 1 }
    );
}

#[test]
fn wrong_version_is_refused() {
    let (client, served) = start(ServeOptions::new());
    let hello = Message::Hello {
        version: PROTOCOL_VERSION + 1,
        pid: 1,
        program: "old".into(),
    };
    wire::send(&client, &hello, None).unwrap();
    let message = expect_error(client, served, ErrorCode::Version);
    assert!(message.contains(&PROTOCOL_VERSION.to_string()), "{message}");
}

#[test]
fn request_before_hello_is_out_of_sequence() {
    let (client, served) = start(ServeOptions::new());
    let req = Message::CreateSocket {
        domain: libc::AF_INET,
        ty: libc::SOCK_STREAM,
        protocol: 0,
    };
    wire::send(&client, &req, None).unwrap();
    expect_error(client, served, ErrorCode::Sequence);
}

#[test]
fn second_hello_is_out_of_sequence() {
    let (client, served) = start(ServeOptions::new());
    handshake(&client);
    wire::send(&client, &hello(), None).unwrap();
    expect_error(client, served, ErrorCode::Sequence);
}

#[test]
fn server_to_client_message_from_a_client_is_out_of_sequence() {
    let (client, served) = start(ServeOptions::new());
    handshake(&client);
    wire::send(&client, &Message::SocketReply { errno: 0 }, None).unwrap();
    expect_error(client, served, ErrorCode::Sequence);
}

#[test]
fn garbage_frame_is_malformed() {
    let (mut client, served) = start(ServeOptions::new());
    client.write_all(&[3, 0, 0, 0, 99, 1, 2]).unwrap();
    expect_error(client, served, ErrorCode::Malformed);
}

#[test]
fn oversized_length_prefix_is_malformed() {
    let (mut client, served) = start(ServeOptions::new());
    handshake(&client);
    client.write_all(&u32::MAX.to_le_bytes()).unwrap();
    expect_error(client, served, ErrorCode::Malformed);
}

#[test]
fn hello_without_magic_is_malformed() {
    let (mut client, served) = start(ServeOptions::new());
    let mut frame = hello().encode();
    frame[5..9].copy_from_slice(b"HTTP");
    client.write_all(&frame).unwrap();
    expect_error(client, served, ErrorCode::Malformed);
}

#[test]
fn descriptor_sent_by_a_client_is_malformed() {
    let (client, served) = start(ServeOptions::new());
    handshake(&client);
    let req = Message::CreateSocket {
        domain: libc::AF_INET,
        ty: libc::SOCK_STREAM,
        protocol: 0,
    };
    let stray = std::fs::File::open("/dev/null").unwrap();
    wire::send(&client, &req, Some(stray.as_fd())).unwrap();
    expect_error(client, served, ErrorCode::Malformed);
}

#[test]
fn client_closing_mid_frame_ends_the_session_quietly() {
    let (mut client, served) = start(ServeOptions::new());
    handshake(&client);
    client.write_all(&[13, 0, 0, 0, 3]).unwrap();
    drop(client);
    let end = served.join().unwrap().unwrap();
    assert_eq!(end, SessionEnd::Closed { sockets: 0 });
}

/// Connects to `path` from a thread whose effective uid is `uid`.
fn connect_as(uid: u32, path: std::path::PathBuf) -> UnixStream {
    thread::spawn(move || {
        // SAFETY: the raw setresuid system call changes the credentials of the calling
        // thread only (glibc's wrapper would change every thread of the process); this
        // thread does nothing but connect and then exits.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, -1, uid, -1) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        UnixStream::connect(path).unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn peer_with_another_uid_is_refused_unless_allowed() {
    if !is_root() {
        skip("needs root (connects as uid 65534 to test SO_PEERCRED)");
        return;
    }
    let dir = TempDir::new("peer");
    dir.open_to_all();
    let path = dir.join("sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    // Refused by default.
    let client = connect_as(65534, path.clone());
    let (conn, _) = listener.accept().unwrap();
    let served = thread::spawn(move || serve_connection(conn, &ServeOptions::new()));
    let message = expect_error(client, served, ErrorCode::Permission);
    assert_eq!(message, "uid 65534 is not allowed to use this server");

    // Served once allowed.
    let client = connect_as(65534, path);
    let (conn, _) = listener.accept().unwrap();
    let opts = ServeOptions {
        allowed_uids: vec![65534],
        check_peer: true,
    };
    thread::spawn(move || serve_connection(conn, &opts));
    handshake(&client);
}
