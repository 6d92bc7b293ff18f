//! Client tests against a fake server: a thread that speaks the protocol over a real Unix
//! socket and creates real sockets for the client.

use super::*;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

/// A directory for one test's socket, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rc-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("s")
    }

    fn url(&self) -> ServerUrl {
        ServerUrl::Unix(self.sock())
    }

    fn listen(&self) -> UnixListener {
        UnixListener::bind(self.sock()).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id() -> Identity {
    Identity {
        pid: 4242,
        program: "test".into(),
    }
}

/// Accepts one client and answers its `Hello` with `Welcome`.
fn accept_and_welcome(listener: &UnixListener, stack: &str) -> UnixStream {
    let (stream, _) = listener.accept().unwrap();
    welcome(&stream, stack);
    stream
}

fn welcome(stream: &UnixStream, stack: &str) {
    let (hello, _) = wire::recv(stream).unwrap();
    assert!(
        matches!(hello, Message::Hello { pid: 4242, .. }),
        "{hello:?}"
    );
    let reply = Message::Welcome {
        version: PROTOCOL_VERSION,
        stack: stack.into(),
    };
    wire::send(stream, &reply, None).unwrap();
}

/// Answers `n` requests with real sockets (or socket(2)'s errno); returns the requests.
fn serve(stream: &UnixStream, n: usize) -> Vec<Message> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let (request, _) = wire::recv(stream).unwrap();
        let Message::CreateSocket {
            domain,
            ty,
            protocol,
        } = request
        else {
            panic!("unexpected request {request:?}");
        };
        match sys::socket(domain, ty, protocol) {
            Ok(fd) => wire::send(stream, &Message::SocketReply { errno: 0 }, Some(fd.as_fd())),
            Err(e) => {
                let errno = e.raw_os_error().unwrap();
                wire::send(stream, &Message::SocketReply { errno }, None)
            }
        }
        .unwrap();
        seen.push(request);
    }
    seen
}

/// One server life: welcome a client, answer `n` requests, then vanish (connection closed,
/// listener closed, socket file removed).
fn one_life(dir: &TempDir, listener: UnixListener, n: usize) {
    let stream = accept_and_welcome(&listener, "first life");
    serve(&stream, n);
    drop(stream);
    drop(listener);
    std::fs::remove_file(dir.sock()).unwrap();
}

/// Collects notices for inspection.
fn capture(client: &mut Client) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    client.set_notice_sink(Box::new(move |l| sink.lock().unwrap().push(l.to_owned())));
    lines
}

/// Asks for a Unix stream socket; the descriptor itself is closed at once.
fn stream_socket(client: &Client) -> Result<(), CallError> {
    client
        .create_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)
        .map(drop)
}

/// Starts a server that lives for one request and then vanishes; returns a connected client
/// that has made that request, and a receiver that fires once the server is gone.
fn client_of_dying_server(
    dir: &Arc<TempDir>,
    retry: RetryPolicy,
) -> (Client, mpsc::Receiver<()>, thread::JoinHandle<()>) {
    let listener = dir.listen();
    let (gone_tx, gone_rx) = mpsc::channel();
    let server_dir = Arc::clone(dir);
    let server = thread::spawn(move || {
        one_life(&server_dir, listener, 1);
        gone_tx.send(()).unwrap();
    });
    let client = Client::connect(dir.url(), retry, id()).unwrap();
    stream_socket(&client).unwrap();
    (client, gone_rx, server)
}

#[test]
fn client_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
}

#[test]
fn handshake_reports_the_stack() {
    let dir = TempDir::new("hs");
    let listener = dir.listen();
    let server = thread::spawn(move || drop(accept_and_welcome(&listener, "netns 1: lo up")));
    let client = Client::connect(dir.url(), RetryPolicy::Never, id()).unwrap();
    server.join().unwrap();
    assert_eq!(client.stack(), "netns 1: lo up");
    assert_eq!(client.url(), Some(&dir.url()));
}

#[test]
fn missing_server_is_a_connect_error() {
    let dir = TempDir::new("missing");
    let err = Client::connect(dir.url(), RetryPolicy::Forever, id()).unwrap_err();
    assert!(matches!(&err, ConnectError::Connect { source, .. }
        if source.raw_os_error() == Some(libc::ENOENT)));
    assert!(
        err.to_string().starts_with("no server at unix:///"),
        "{err}"
    );
}

#[test]
fn error_reply_to_hello_is_a_refusal() {
    let dir = TempDir::new("refused");
    let listener = dir.listen();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        wire::recv(&stream).unwrap();
        let reply = Message::Error {
            code: ErrorCode::Permission,
            message: "uid 1000 may not use this server".into(),
        };
        wire::send(&stream, &reply, None).unwrap();
    });
    let err = Client::connect(dir.url(), RetryPolicy::Never, id()).unwrap_err();
    server.join().unwrap();
    assert!(
        matches!(&err, ConnectError::Refused { code: ErrorCode::Permission, message, .. }
            if message.contains("uid 1000")),
        "{err:?}"
    );
}

#[test]
fn version_mismatch_is_a_refusal() {
    let dir = TempDir::new("version");
    let listener = dir.listen();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        wire::recv(&stream).unwrap();
        let reply = Message::Welcome {
            version: PROTOCOL_VERSION + 1,
            stack: "future".into(),
        };
        wire::send(&stream, &reply, None).unwrap();
    });
    let err = Client::connect(dir.url(), RetryPolicy::Never, id()).unwrap_err();
    server.join().unwrap();
    assert!(
        matches!(
            err,
            ConnectError::Refused {
                code: ErrorCode::Version,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn server_errno_is_passed_through() {
    let dir = TempDir::new("errno");
    let listener = dir.listen();
    let server = thread::spawn(move || serve(&accept_and_welcome(&listener, "s"), 1));
    let client = Client::connect(dir.url(), RetryPolicy::Never, id()).unwrap();
    // No family has number 4242, so the server's socket(2) fails with EAFNOSUPPORT.
    let err = client
        .create_socket(4242, libc::SOCK_STREAM, 0)
        .unwrap_err();
    assert_eq!(err, CallError::Errno(libc::EAFNOSUPPORT));
    server.join().unwrap();
}

#[test]
fn descriptor_is_received_with_flags_honoured() {
    let dir = TempDir::new("fd");
    let listener = dir.listen();
    let server = thread::spawn(move || serve(&accept_and_welcome(&listener, "s"), 1));
    let client = Client::connect(dir.url(), RetryPolicy::Never, id()).unwrap();

    let ty = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let fd = client.create_socket(libc::AF_UNIX, ty, 0).unwrap();
    let requests = server.join().unwrap();

    let sent_ty = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK;
    assert_eq!(
        requests,
        [Message::CreateSocket {
            domain: libc::AF_UNIX,
            ty: sent_ty,
            protocol: 0
        }],
        "SOCK_CLOEXEC is stripped, SOCK_NONBLOCK kept"
    );
    check_socket(&fd, libc::AF_UNIX, sent_ty).unwrap();
    let fd_flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
}

#[test]
fn concurrent_callers_each_get_their_own_socket() {
    const THREADS: usize = 4;
    const CALLS: usize = 25;
    let dir = TempDir::new("concurrent");
    let listener = dir.listen();
    let server = thread::spawn(move || serve(&accept_and_welcome(&listener, "s"), THREADS * CALLS));
    let client = Arc::new(Client::connect(dir.url(), RetryPolicy::Never, id()).unwrap());
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let client = Arc::clone(&client);
            // Alternate types so a reply delivered to the wrong caller would be caught.
            let ty = [libc::SOCK_STREAM, libc::SOCK_DGRAM][i % 2];
            thread::spawn(move || {
                for _ in 0..CALLS {
                    let fd = client.create_socket(libc::AF_UNIX, ty, 0).unwrap();
                    check_socket(&fd, libc::AF_UNIX, ty).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(server.join().unwrap().len(), THREADS * CALLS);
}

#[test]
fn loss_without_policy_is_enotconn_forever() {
    let dir = Arc::new(TempDir::new("never"));
    let (mut client, gone, server) = client_of_dying_server(&dir, RetryPolicy::Never);
    let notices = capture(&mut client);
    gone.recv().unwrap();
    server.join().unwrap();

    assert_eq!(
        stream_socket(&client),
        Err(CallError::Errno(libc::ENOTCONN))
    );
    // Even with a server back, a client without a policy stays dead.
    let listener = dir.listen();
    assert_eq!(
        stream_socket(&client),
        Err(CallError::Errno(libc::ENOTCONN))
    );
    drop(listener);

    let notices = notices.lock().unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("lost") && notices[0].contains("not reconnecting"));
}

#[test]
fn loss_with_die_policy_is_die_forever() {
    let dir = Arc::new(TempDir::new("die"));
    let (mut client, gone, server) = client_of_dying_server(&dir, RetryPolicy::Die);
    let notices = capture(&mut client);
    gone.recv().unwrap();
    server.join().unwrap();

    assert_eq!(stream_socket(&client), Err(CallError::Die));
    assert_eq!(stream_socket(&client), Err(CallError::Die));
    assert!(notices.lock().unwrap()[0].contains("terminating the program"));
}

#[test]
fn once_reconnects_to_a_restarted_server_and_resends() {
    let dir = Arc::new(TempDir::new("once-ok"));
    let (mut client, gone, server) = client_of_dying_server(&dir, RetryPolicy::Once);
    let notices = capture(&mut client);
    gone.recv().unwrap();
    server.join().unwrap();

    let listener = dir.listen();
    let second = thread::spawn(move || serve(&accept_and_welcome(&listener, "second life"), 1));
    stream_socket(&client).unwrap();
    assert_eq!(second.join().unwrap().len(), 1, "the request was sent once");
    assert_eq!(client.stack(), "second life");

    let notices = notices.lock().unwrap();
    assert!(notices[0].contains("reconnecting (RUMPHIJACK_RETRYCONNECT=once)"));
    assert!(
        notices[1].starts_with("reconnected to unix:///"),
        "{notices:?}"
    );
}

#[test]
fn once_without_a_server_gives_up() {
    let dir = Arc::new(TempDir::new("once-gone"));
    let (mut client, gone, server) = client_of_dying_server(&dir, RetryPolicy::Once);
    let notices = capture(&mut client);
    gone.recv().unwrap();
    server.join().unwrap();

    assert_eq!(
        stream_socket(&client),
        Err(CallError::Errno(libc::ENOTCONN))
    );
    // Dead for good: a server that comes back later is not used.
    let _listener = dir.listen();
    assert_eq!(
        stream_socket(&client),
        Err(CallError::Errno(libc::ENOTCONN))
    );
    let notices = notices.lock().unwrap();
    assert!(notices[1].contains("giving up") && notices[1].contains("1 attempt"));
}

#[test]
fn timed_policy_waits_for_a_server_restarted_later() {
    let dir = Arc::new(TempDir::new("for"));
    let (mut client, gone, server) =
        client_of_dying_server(&dir, RetryPolicy::For(Duration::from_secs(2)));
    let notices = capture(&mut client);
    gone.recv().unwrap();
    server.join().unwrap();

    let restart_dir = Arc::clone(&dir);
    let second = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let listener = restart_dir.listen();
        serve(&accept_and_welcome(&listener, "second life"), 1)
    });
    let started = Instant::now();
    stream_socket(&client).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(second.join().unwrap().len(), 1);
    assert!(notices.lock().unwrap()[1].starts_with("reconnected"));
}

#[test]
fn timed_policy_gives_up_after_its_time() {
    let dir = Arc::new(TempDir::new("for-gone"));
    let (mut client, gone, server) =
        client_of_dying_server(&dir, RetryPolicy::For(Duration::from_secs(1)));
    let notices = capture(&mut client);
    gone.recv().unwrap();
    server.join().unwrap();

    let started = Instant::now();
    assert_eq!(
        stream_socket(&client),
        Err(CallError::Errno(libc::ENOTCONN))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(notices.lock().unwrap()[1].contains("giving up"));
}

#[test]
fn forever_policy_waits_for_the_server() {
    let dir = Arc::new(TempDir::new("forever"));
    let (client, gone, server) = client_of_dying_server(&dir, RetryPolicy::Forever);
    gone.recv().unwrap();
    server.join().unwrap();

    let restart_dir = Arc::clone(&dir);
    let second = thread::spawn(move || {
        thread::sleep(Duration::from_millis(400));
        let listener = restart_dir.listen();
        serve(&accept_and_welcome(&listener, "second life"), 1)
    });
    stream_socket(&client).unwrap();
    second.join().unwrap();
}

#[test]
fn embedded_server_is_never_reconnected() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        welcome(&theirs, "embedded");
        serve(&theirs, 1);
    });
    let mut client = Client::from_stream(ours, RetryPolicy::Forever, id()).unwrap();
    let notices = capture(&mut client);
    assert_eq!(client.url(), None);
    stream_socket(&client).unwrap();
    server.join().unwrap();

    assert_eq!(
        stream_socket(&client),
        Err(CallError::Errno(libc::ENOTCONN))
    );
    assert!(notices.lock().unwrap()[0].contains("embedded server cannot be reconnected"));
}

/// Makes one request to an embedded-style server that answers it with `reply` (and `fd`);
/// returns what the client made of the answer.
fn answer_with(reply: Message, fd: Option<OwnedFd>) -> Result<(), CallError> {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        welcome(&theirs, "liar");
        wire::recv(&theirs).unwrap();
        wire::send(&theirs, &reply, fd.as_ref().map(|f| f.as_fd())).unwrap();
        // Keep the connection open until the client has judged the reply.
        let _ = wire::recv(&theirs);
    });
    let mut client = Client::from_stream(ours, RetryPolicy::Never, id()).unwrap();
    capture(&mut client);
    let result = stream_socket(&client);
    drop(client);
    server.join().unwrap();
    result
}

#[test]
fn descriptor_that_is_not_the_requested_socket_is_refused() {
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let result = answer_with(Message::SocketReply { errno: 0 }, Some(pipe_r));
    assert_eq!(result.unwrap_err(), CallError::Errno(libc::ENOTCONN));

    let dgram = sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0).unwrap();
    let result = answer_with(Message::SocketReply { errno: 0 }, Some(dgram));
    assert_eq!(result.unwrap_err(), CallError::Errno(libc::ENOTCONN));
}

#[test]
fn success_without_descriptor_breaks_the_session() {
    let result = answer_with(Message::SocketReply { errno: 0 }, None);
    assert_eq!(result.unwrap_err(), CallError::Errno(libc::ENOTCONN));
}

#[test]
fn error_with_descriptor_breaks_the_session() {
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).unwrap();
    let result = answer_with(Message::SocketReply { errno: libc::EPERM }, Some(fd));
    assert_eq!(result.unwrap_err(), CallError::Errno(libc::ENOTCONN));
}

#[test]
fn server_error_frame_breaks_the_session() {
    let reply = Message::Error {
        code: ErrorCode::ShuttingDown,
        message: "bye".into(),
    };
    assert_eq!(
        answer_with(reply, None).unwrap_err(),
        CallError::Errno(libc::ENOTCONN)
    );
}

#[test]
fn identity_names_this_test_binary() {
    let me = Identity::of_current_process();
    assert_eq!(me.pid, std::process::id());
    assert!(me.program.starts_with("rumpclient"), "{}", me.program);
}

/// Makes one batch request for `asked` Unix stream sockets to an embedded-style server that
/// welcomes with `version` and answers with `reply` and `fds`; returns the request the server
/// saw and what the client made of the answer.
fn batch_answered_with(
    version: u16,
    asked: usize,
    reply: Message,
    fds: Vec<OwnedFd>,
) -> (Message, Result<Vec<OwnedFd>, CallError>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        wire::recv(&theirs).unwrap();
        let welcome = Message::Welcome {
            version,
            stack: "batch".into(),
        };
        wire::send(&theirs, &welcome, None).unwrap();
        let (request, _) = wire::recv(&theirs).unwrap();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        wire::send_with_fds(&theirs, &reply, &borrowed).unwrap();
        let _ = wire::recv(&theirs);
        request
    });
    let mut client = Client::from_stream(ours, RetryPolicy::Never, id()).unwrap();
    capture(&mut client);
    let result = client.create_sockets(libc::AF_UNIX, libc::SOCK_STREAM, 0, asked);
    drop(client);
    (server.join().unwrap(), result)
}

fn unix_streams(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).unwrap())
        .collect()
}

#[test]
fn batch_arrives_whole_in_one_round_trip() {
    let reply = Message::SocketsReply { count: 4, errno: 0 };
    let (request, result) = batch_answered_with(PROTOCOL_VERSION, 4, reply, unix_streams(4));
    assert!(
        matches!(request, Message::CreateSockets { count: 4, .. }),
        "{request:?}"
    );
    assert_eq!(result.unwrap().len(), 4);
}

#[test]
fn batch_size_is_capped() {
    let reply = Message::SocketsReply { count: 1, errno: 0 };
    let (request, result) = batch_answered_with(PROTOCOL_VERSION, 1000, reply, unix_streams(1));
    assert!(
        matches!(request, Message::CreateSockets { count, .. } if count == MAX_SOCKET_BATCH),
        "{request:?}"
    );
    assert_eq!(result.unwrap().len(), 1);
}

#[test]
fn partial_batch_is_a_success_and_empty_one_the_errno() {
    let reply = Message::SocketsReply {
        count: 2,
        errno: libc::EMFILE,
    };
    let (_, result) = batch_answered_with(PROTOCOL_VERSION, 8, reply, unix_streams(2));
    assert_eq!(result.unwrap().len(), 2);

    let reply = Message::SocketsReply {
        count: 0,
        errno: libc::EMFILE,
    };
    let (_, result) = batch_answered_with(PROTOCOL_VERSION, 8, reply, Vec::new());
    assert_eq!(result.unwrap_err(), CallError::Errno(libc::EMFILE));
}

#[test]
fn batch_that_disagrees_with_its_descriptors_breaks_the_session() {
    let lost = Err(CallError::Errno(libc::ENOTCONN));
    let reply = Message::SocketsReply { count: 3, errno: 0 };
    let (_, result) = batch_answered_with(PROTOCOL_VERSION, 4, reply, unix_streams(2));
    assert_eq!(result.map(|v| v.len()), lost);

    let reply = Message::SocketsReply { count: 3, errno: 0 };
    let (_, result) = batch_answered_with(PROTOCOL_VERSION, 2, reply, unix_streams(3));
    assert_eq!(result.map(|v| v.len()), lost, "more than asked for");

    let reply = Message::SocketReply { errno: 0 };
    let (_, result) = batch_answered_with(PROTOCOL_VERSION, 2, reply, unix_streams(1));
    assert_eq!(result.map(|v| v.len()), lost, "single reply to a batch");

    let mut fds = unix_streams(1);
    fds.push(sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0).unwrap());
    let reply = Message::SocketsReply { count: 2, errno: 0 };
    let (_, result) = batch_answered_with(PROTOCOL_VERSION, 2, reply, fds);
    assert_eq!(
        result.map(|v| v.len()),
        lost,
        "one socket of the wrong type"
    );
}

#[test]
fn version_1_server_is_asked_for_one_socket_at_a_time() {
    let reply = Message::SocketReply { errno: 0 };
    let (request, result) = batch_answered_with(1, 8, reply, unix_streams(1));
    assert!(
        matches!(request, Message::CreateSocket { .. }),
        "{request:?}"
    );
    assert_eq!(result.unwrap().len(), 1);
}

#[test]
fn quiet_while_another_request_is_in_flight_but_not_while_reconnecting() {
    // A request in flight: the server holds its answer until told.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        welcome(&theirs, "slow");
        let (request, _) = wire::recv(&theirs).unwrap();
        go_rx.recv().unwrap();
        let Message::CreateSocket { domain, ty, .. } = request else {
            panic!("{request:?}");
        };
        let fd = sys::socket(domain, ty, 0).unwrap();
        wire::send(
            &theirs,
            &Message::SocketReply { errno: 0 },
            Some(fd.as_fd()),
        )
        .unwrap();
        theirs
    });
    let client = Arc::new(Client::from_stream(ours, RetryPolicy::Never, id()).unwrap());
    assert!(client.connection_quiet());
    let caller = {
        let client = Arc::clone(&client);
        thread::spawn(move || stream_socket(&client))
    };
    while client.conn.try_lock().is_ok() {
        thread::yield_now();
    }
    assert!(
        client.connection_quiet(),
        "a request in flight says nothing against the connection"
    );
    go_tx.send(()).unwrap();
    caller.join().unwrap().unwrap();
    let theirs = server.join().unwrap();

    // The server hangs up while nothing is in flight.
    drop(theirs);
    assert!(!client.connection_quiet());

    // A request that found the connection lost and is reconnecting.
    let dir = Arc::new(TempDir::new("quiet"));
    let (client, gone, server) = client_of_dying_server(&dir, RetryPolicy::Forever);
    let client = Arc::new(client);
    gone.recv().unwrap();
    server.join().unwrap();
    let caller = {
        let client = Arc::clone(&client);
        thread::spawn(move || stream_socket(&client))
    };
    while !client.recovering.load(Ordering::Acquire) {
        thread::yield_now();
    }
    assert!(!client.connection_quiet(), "reconnecting is not quiet");
    let listener = dir.listen();
    let stream = accept_and_welcome(&listener, "second life");
    serve(&stream, 1);
    caller.join().unwrap().unwrap();
    assert!(client.connection_quiet());
}

/// Answers requests of both kinds with real Unix stream sockets until the client hangs up;
/// `stop_after` requests, then the server hangs up itself.
fn serve_any(stream: &UnixStream, stop_after: usize) {
    for _ in 0..stop_after {
        let Ok((request, _)) = wire::recv(stream) else {
            return;
        };
        let (reply, fds) = match request {
            Message::CreateSocket { .. } => (
                Message::SocketReply { errno: 0 },
                vec![sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).unwrap()],
            ),
            Message::CreateSockets { count, .. } => (
                Message::SocketsReply { count, errno: 0 },
                unix_streams(count.into()),
            ),
            other => panic!("unexpected request {other:?}"),
        };
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        wire::send_with_fds(stream, &reply, &borrowed).unwrap();
    }
}

fn embedded_client(
    serve: impl FnOnce(UnixStream) + Send + 'static,
) -> (Client, thread::JoinHandle<()>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        welcome(&theirs, "ahead");
        serve(theirs);
    });
    let mut client = Client::from_stream(ours, RetryPolicy::Never, id()).unwrap();
    capture(&mut client);
    (client, server)
}

#[test]
fn a_batch_asked_for_ahead_is_collected_after_other_requests() {
    let (client, server) = embedded_client(|s| serve_any(&s, usize::MAX));
    let (unix, stream) = (libc::AF_UNIX, libc::SOCK_STREAM);
    assert!(client.send_ahead(unix, stream, 0, 5));
    assert!(
        !client.send_ahead(unix, stream, 0, 5),
        "one batch ahead at a time"
    );

    // A request of its own in between: the batch's reply is read first and kept.
    stream_socket(&client).unwrap();
    assert!(client.connection_quiet());
    assert!(
        client.take_ahead(unix, libc::SOCK_DGRAM, 0).is_none(),
        "another kind"
    );
    let batch = client.take_ahead(unix, stream | libc::SOCK_CLOEXEC, 0);
    assert_eq!(batch.unwrap().unwrap().len(), 5);
    assert!(client.take_ahead(unix, stream, 0).is_none(), "taken once");

    // Collected without any other request, waiting for it if need be.
    assert!(client.send_ahead(unix, stream, 0, 3));
    assert_eq!(
        client.take_ahead(unix, stream, 0).unwrap().unwrap().len(),
        3
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn quiet_reads_the_reply_it_expects_and_not_a_hang_up() {
    let (client, server) = embedded_client(|s| serve_any(&s, 1));
    assert!(client.send_ahead(libc::AF_UNIX, libc::SOCK_STREAM, 0, 2));
    server.join().unwrap();
    // The reply arrived, then the server hung up.
    assert!(!client.connection_quiet());
    assert!(!client.awaiting_ahead());
    assert_eq!(
        client
            .take_ahead(libc::AF_UNIX, libc::SOCK_STREAM, 0)
            .unwrap()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_loss_found_by_the_batch_ahead_is_handled_by_the_next_request() {
    // The server reads the batch request and hangs up without answering.
    let (client, server) = embedded_client(|s| {
        let _ = wire::recv(&s);
    });
    assert!(client.send_ahead(libc::AF_UNIX, libc::SOCK_STREAM, 0, 4));
    server.join().unwrap();
    assert!(client
        .take_ahead(libc::AF_UNIX, libc::SOCK_STREAM, 0)
        .is_none());
    assert_eq!(
        stream_socket(&client),
        Err(CallError::Errno(libc::ENOTCONN))
    );
    assert!(!client.connection_quiet());
}
