//! Stack servers reached over TCP: a program on host A runs under `rumphijack run --server
//! tcp://B:PORT` with its sockets in host B's stack, their data relayed over one TLS
//! connection authenticated with a shared secret.
//!
//! Hosts are two network namespaces joined by a veth pair (`TwoHosts`); the stack server and
//! every native service run inside B. A service listening on B's loopback proves that a
//! connection was made in B's stack: nothing on A reaches it natively. Each test makes its
//! own pair of namespaces, so the tests run in parallel and no packet leaves them.

use std::ffi::OsStr;
use std::time::Duration;

use rumphijack_tests::hostile::env_count;
use rumphijack_tests::remote::{
    curl, curl_argv, http_server_argv, native_py, remote_hijack, write_private,
    write_remote_helper, write_secret, write_www, Listen, Remote, RemoteServer, TwoHosts,
    EXIT_CONFIG, EXIT_SERVER_UNAVAILABLE, SECRET_ENV, SERVER_PORT,
};
use rumphijack_tests::{
    exit_code, require_program, require_root, rumphijack_cmd, run, Finished, Spawned, TempDir,
    TIMEOUT,
};

/// Deadline for a program that moves tens of MiB through the relay (debug builds, 2 vCPUs).
const BULK_DEADLINE: Duration = Duration::from_secs(180);

/// How long a lost link may take to be noticed. The relay's TCP keepalive and user timeout
/// notice it within seconds to tens of seconds (15 s measured); this only catches a hang.
const LOSS_DEADLINE: Duration = Duration::from_secs(60);

const HTTP_PORT: u16 = 8000;
const SERVICE_PORT: u16 = 9000;
/// Nothing listens here in B.
const CLOSED_PORT: u16 = 9999;

/// curl's status for "failed to connect".
const CURL_COULDNT_CONNECT: i32 = 7;

const MIB: u64 = 1 << 20;

/// The words of a line after `prefix`, or a failure showing the whole output.
fn after<'a>(out: &'a Finished, prefix: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{out}"))
        .trim()
}

// --- the fixture itself -------------------------------------------------------------------

/// The wire between A and B carries IPv4 and IPv6, and each host's loopback is its own.
/// Nothing here runs under rumphijack: it checks the fixture the other tests stand on.
#[test]
fn two_hosts_reach_each_other_natively() {
    let test = "two_hosts_reach_each_other_natively";
    if !require_root(test) || !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let hosts = TwoHosts::create();
    let script = write_remote_helper(&dir);
    let (b_v4, b_v6) = (hosts.b_v4(), hosts.b_v6());
    let port = SERVICE_PORT.to_string();
    let serve = native_py(
        &hosts.b,
        &script,
        &["serve", &port, "127.0.0.1", &b_v4, &b_v6],
    );
    let mut service = Spawned::start(serve, dir.path(), "serve");
    service.wait_for_line(TIMEOUT, |l| l == "listening");

    for host in [&b_v4, &b_v6] {
        let out = run(
            native_py(&hosts.a, &script, &["echo-once", host, &port, "wire"]),
            TIMEOUT,
        );
        out.assert_success(&format!("native echo from A to {host}"));
        assert_eq!(out.stdout.trim(), "echo wire", "{out}");
    }
    let out = run(
        native_py(&hosts.a, &script, &["echo-once", "127.0.0.1", &port, "x"]),
        TIMEOUT,
    );
    assert!(
        out.code() != 0 && out.stderr.contains("ConnectionRefusedError"),
        "A's loopback must not reach B's service\n{out}"
    );
    let out = run(
        native_py(&hosts.b, &script, &["echo-once", "127.0.0.1", &port, "lo"]),
        TIMEOUT,
    );
    assert_eq!(
        out.stdout.trim(),
        "echo lo",
        "B's own loopback reaches it\n{out}"
    );
}

// --- connections made in B's stack -----------------------------------------------------------

/// curl on A, pointed at the server by `RUMP_SERVER=tcp://…`, fetches a page from a server
/// that listens on B's loopback only; curl run natively on A cannot.
#[test]
fn curl_on_a_fetches_a_page_from_b_loopback() {
    let test = "curl_on_a_fetches_a_page_from_b_loopback";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let page = format!("served from B's loopback to {test}\n");
    let _http = remote.http_on_b("127.0.0.1", HTTP_PORT, &page);
    let url = format!("http://127.0.0.1:{HTTP_PORT}/page.txt");

    let mut cmd = rumphijack_cmd();
    cmd.args(["run", "--"])
        .args(curl_argv(&url, &[]))
        .env("RUMP_SERVER", remote.url())
        .env(SECRET_ENV, &remote.secret);
    let out = run(remote.hosts.on_a(&cmd), TIMEOUT);
    out.assert_success("curl on A under rumphijack, RUMP_SERVER=tcp://B");
    assert_eq!(out.stdout, page, "{out}");

    // Natively A has no such listener, and B's is bound to B's loopback only.
    let over_wire = format!("http://{}:{HTTP_PORT}/page.txt", remote.hosts.b_v4());
    for url in [url, over_wire] {
        let out = run(remote.hosts.on_a(&curl(&url, &[])), TIMEOUT);
        out.assert_code(CURL_COULDNT_CONNECT, &format!("native curl on A, {url}"));
    }
}

/// `python3 -m http.server --bind 0.0.0.0` on A listens in B's stack: curl run natively in B
/// fetches from B's loopback, curl run natively on A reaches it over the wire at B's address,
/// and A's own loopback has nothing.
#[test]
fn a_listener_on_a_lives_in_b_stack() {
    let test = "a_listener_on_a_lives_in_b_stack";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let page = format!("served by a program on A in {test}\n");
    let www = write_www(&remote.dir, &page);
    let argv = http_server_argv(&www, "0.0.0.0", HTTP_PORT);
    let mut http = Spawned::start(remote.hijacked(argv), remote.dir.path(), "http-a");
    http.wait_for_line(TIMEOUT, |l| l.starts_with("Serving HTTP"));

    let b_loopback = format!("http://127.0.0.1:{HTTP_PORT}/page.txt");
    let b_address = format!("http://{}:{HTTP_PORT}/page.txt", remote.hosts.b_v4());
    for url in [&b_loopback, &b_address] {
        let out = run(remote.hosts.on_b(&curl(url, &[])), TIMEOUT);
        out.assert_success(&format!("native curl in B, {url}\n{}", http.diagnostics()));
        assert_eq!(out.stdout, page, "{out}");
    }
    let out = run(remote.hosts.on_a(&curl(&b_address, &[])), TIMEOUT);
    out.assert_success("native curl on A over the wire to B's listener");
    assert_eq!(out.stdout, page, "{out}");

    let out = run(remote.hosts.on_a(&curl(&b_loopback, &[])), TIMEOUT);
    out.assert_code(CURL_COULDNT_CONNECT, "A's own loopback has no listener");
}

/// Three datagrams of different sizes sent before any is read come back as three, intact,
/// from the echo server's address — with `sendto`/`recvfrom` and with a connected socket —
/// on B's loopback and on B's wire address.
#[test]
fn udp_datagrams_keep_their_boundaries_and_source_address() {
    let test = "udp_datagrams_keep_their_boundaries_and_source_address";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let b_v4 = remote.hosts.b_v4();
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1", &b_v4]);
    let port = SERVICE_PORT.to_string();

    let out = run(
        remote.hijacked_py(&["udp", &port, "127.0.0.1", &b_v4]),
        TIMEOUT,
    );
    out.assert_success("UDP client on A under rumphijack");
    for host in ["127.0.0.1", b_v4.as_str()] {
        let sizes = "sizes=37,1400,9000 intact=True";
        let lines = [
            format!("sendto {host} {sizes} from={host}:{port}"),
            format!("connected {host} {sizes} peer={host}:{port}"),
        ];
        for line in lines {
            assert!(
                out.stdout.lines().any(|l| l == line),
                "want {line:?}\n{out}"
            );
        }
    }
}

/// The stack server listens on an IPv6 address, and IPv6 sockets work through it: curl -6
/// to B's `::1`, and UDP on `::1` and B's IPv6 wire address.
#[test]
fn ipv6_server_address_and_ipv6_sockets() {
    let test = "ipv6_server_address_and_ipv6_sockets";
    let Some(remote) = Remote::start(test, Listen::V6) else {
        return;
    };
    assert!(remote.url().starts_with("tcp://[fd77:"), "{}", remote.url());
    let page = format!("served on B's ::1 in {test}\n");
    let _http = remote.http_on_b("::1", HTTP_PORT, &page);
    let url = format!("http://[::1]:{HTTP_PORT}/page.txt");

    let out = run(remote.hijacked(curl_argv(&url, &["-6", "-g"])), TIMEOUT);
    out.assert_success("curl -6 on A under rumphijack");
    assert_eq!(out.stdout, page, "{out}");
    let out = run(remote.hosts.on_a(&curl(&url, &["-6", "-g"])), TIMEOUT);
    out.assert_code(CURL_COULDNT_CONNECT, "native curl -6 on A");

    let b_v6 = remote.hosts.b_v6();
    let _service = remote.serve_on_b(SERVICE_PORT, &["::1", &b_v6]);
    let port = SERVICE_PORT.to_string();
    let out = run(remote.hijacked_py(&["udp", &port, "::1", &b_v6]), TIMEOUT);
    out.assert_success("IPv6 UDP client on A under rumphijack");
    for host in ["::1", b_v6.as_str()] {
        let line = format!("sendto {host} sizes=37,1400,9000 intact=True from=[{host}]:{port}");
        assert!(
            out.stdout.lines().any(|l| l == line),
            "want {line:?}\n{out}"
        );
    }
}

/// A non-blocking connect reports progress the way the kernel does: `EINPROGRESS` (or an
/// immediate success), `POLLOUT` when done, `SO_ERROR` 0 and a working socket; to a closed
/// port `ECONNREFUSED`, either at once or through `SO_ERROR`.
#[test]
fn nonblocking_connect_with_poll() {
    let test = "nonblocking_connect_with_poll";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let (port, closed) = (SERVICE_PORT.to_string(), CLOSED_PORT.to_string());
    let args = ["nonblocking", "127.0.0.1", &port, &closed];

    // The same program run natively in B shows what the kernel itself answers.
    let native = run(remote.native_py(&remote.hosts.b, &args), TIMEOUT);
    native.assert_success("non-blocking connects natively in B");
    eprintln!("{test}: natively:\n{}", native.stdout);

    let out = run(remote.hijacked_py(&args), TIMEOUT);
    out.assert_success("non-blocking connects on A under rumphijack");
    let open = after(&out, "open connect=");
    assert!(
        open == "EINPROGRESS so_error=0" || open == "0 so_error=0",
        "connect to a listener\n{out}"
    );
    assert_eq!(after(&out, "open echo="), "ping-nb end=ok", "{out}");
    assert_eq!(
        after(&out, "created nonblock="),
        "1",
        "SOCK_NONBLOCK\n{out}"
    );
    let closed = after(&out, "closed connect=");
    assert!(
        closed == "EINPROGRESS so_error=ECONNREFUSED" || closed == "ECONNREFUSED so_error=-",
        "connect to a closed port\n{out}"
    );
}

/// Small messages go through at once, not when more data or the end of the stream comes:
/// 200 round trips on one connection, each a short message echoed by B before the next.
#[test]
fn small_messages_are_delivered_without_waiting_for_more() {
    let test = "small_messages_are_delivered_without_waiting_for_more";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let port = SERVICE_PORT.to_string();

    let out = run(
        remote.hijacked_py(&["pingpong", "127.0.0.1", &port, "200"]),
        TIMEOUT,
    );
    out.assert_success("request-response client on A under rumphijack");
    assert_eq!(out.stdout.trim(), "pingpong ok 200", "{out}");
}

/// `shutdown(SHUT_WR)` reaches the peer as end of file while the other direction stays open:
/// the server in B reads to EOF, replies 300 000 bytes and closes; the client reads them all,
/// then EOF, twice.
#[test]
fn half_close_delivers_eof_and_keeps_the_reply_direction() {
    let test = "half_close_delivers_eof_and_keeps_the_reply_direction";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let port = SERVICE_PORT.to_string();

    let out = run(
        remote.hijacked_py(&["halfclose", "127.0.0.1", &port]),
        TIMEOUT,
    );
    out.assert_success("half-closing client on A under rumphijack");
    assert_eq!(
        after(&out, "reply"),
        after(&out, "expected"),
        "the server saw all the client sent, then EOF\n{out}"
    );
    assert_eq!(
        after(&out, "rest"),
        after(&out, "want"),
        "the client got the whole reply, then EOF\n{out}"
    );
}

/// The SHA-256 of `N` pseudo-random bytes is the same on both ends, in both directions.
/// `RH_REMOTE_BULK_MIB` sets N in MiB (default 64).
#[test]
fn bulk_transfers_arrive_intact_both_ways() {
    let test = "bulk_transfers_arrive_intact_both_ways";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let port = SERVICE_PORT.to_string();
    let bytes = (env_count("RH_REMOTE_BULK_MIB", 64) * MIB).to_string();

    for (direction, seed) in [("upload", "41"), ("download", "42")] {
        let args = [direction, "127.0.0.1", &port, &bytes, seed];
        let out = run(remote.hijacked_py(&args), BULK_DEADLINE);
        out.assert_success(&format!("{direction} of {bytes} bytes"));
        let sent = after(&out, "sent");
        assert!(sent.ends_with(&format!(" {bytes}")), "{out}");
        assert_eq!(
            after(&out, "received"),
            sent,
            "{direction}: content differs\n{out}"
        );
    }
}

/// One connection whose reader never reads (16 MiB waiting for it) does not hold up another:
/// a 32 MiB download on a second connection completes intact meanwhile, and the stalled data
/// is all there afterwards. The deadline only catches a hang; speed is the benchmarks' job.
#[test]
fn a_stalled_receiver_does_not_block_another_socket() {
    let test = "a_stalled_receiver_does_not_block_another_socket";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let port = SERVICE_PORT.to_string();
    let (stalled, fast) = ((16 * MIB).to_string(), (32 * MIB).to_string());

    let out = run(
        remote.hijacked_py(&["stall", "127.0.0.1", &port, &stalled, &fast]),
        BULK_DEADLINE,
    );
    out.assert_success("two connections, one stalled");
    for name in ["fast", "slow"] {
        let line = after(&out, name);
        let got = line.split_whitespace().find_map(|w| w.strip_prefix("got="));
        let want = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("want="));
        assert!(got.is_some() && got == want, "{name} connection\n{out}");
    }
}

// --- authentication ---------------------------------------------------------------------

/// A client with `tag` in B's echo service through the stack server: must succeed.
fn good_client(remote: &Remote, tag: &str) {
    let port = SERVICE_PORT.to_string();
    let out = run(
        remote.hijacked_py(&["echo-once", "127.0.0.1", &port, tag]),
        TIMEOUT,
    );
    out.assert_success(&format!("a client with the right secret ({tag})"));
    assert_eq!(out.stdout.trim(), format!("echo {tag}"), "{out}");
}

/// Runs the echo client on A with `secret` (or none) and checks that rumphijack refuses it:
/// status 69, a message that says "authentication", and no reply from B.
fn assert_refused(remote: &Remote, secret: Option<&std::path::Path>, what: &str) {
    let port = SERVICE_PORT.to_string();
    let argv = remote.py_argv(&["echo-once", "127.0.0.1", &port, "intruder"]);
    let out = run(
        remote
            .hosts
            .on_a(&remote_hijack(remote.url(), secret, argv)),
        TIMEOUT,
    );
    out.assert_code(EXIT_SERVER_UNAVAILABLE, &format!("a client with {what}"));
    assert!(
        out.stderr.to_lowercase().contains("authentication"),
        "{what}: the message must say authentication failed\n{out}"
    );
    assert!(!out.stdout.contains("echo intruder"), "{what}\n{out}");
}

/// A wrong secret: rumphijack exits with 69 and says "authentication", the program's
/// connection is never made, the server logs the refusal and goes on serving good clients.
#[test]
fn a_wrong_secret_is_refused_and_the_server_keeps_serving() {
    let test = "a_wrong_secret_is_refused_and_the_server_keeps_serving";
    let Some(mut remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let mut service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    good_client(&remote, "first");

    let wrong = write_secret(&remote.dir, "wrong-secret");
    for n in 0..2 {
        assert_refused(&remote, Some(&wrong), "a wrong secret");
        good_client(&remote, &format!("after-{n}"));
    }

    // The service in B saw exactly the good clients, in order.
    for tag in ["first", "after-0", "after-1"] {
        let line = service.next_line(TIMEOUT);
        assert_eq!(
            line,
            format!("conn echo {tag}"),
            "{}",
            service.diagnostics()
        );
    }
    assert!(remote.server.is_running(), "{}", remote.server.log());
    assert!(
        remote.server.log().to_lowercase().contains("authentic"),
        "the server logs refused clients\n{}",
        remote.server.log()
    );
}

/// No secret at all is refused the same way, before anything reaches B.
#[test]
fn a_missing_secret_is_refused() {
    let test = "a_missing_secret_is_refused";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let mut service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);

    // rumphijack without a secret refuses to start: a configuration error, nothing sent.
    let port = SERVICE_PORT.to_string();
    let argv = remote.py_argv(&["echo-once", "127.0.0.1", &port, "intruder"]);
    let out = run(
        remote.hosts.on_a(&remote_hijack(remote.url(), None, argv)),
        TIMEOUT,
    );
    out.assert_code(EXIT_CONFIG, "a client without a secret");
    assert!(out.stderr.contains("RUMPHIJACK_SECRET_FILE"), "{out}");
    assert!(!out.stdout.contains("echo intruder"), "{out}");

    // A peer that speaks TLS but holds no secret gets the refusal byte and the door.
    let server_port = SERVER_PORT.to_string();
    let b_v4 = remote.hosts.b_v4();
    let out = run(
        remote.native_py(&remote.hosts.a, &["no-secret", &b_v4, &server_port]),
        TIMEOUT,
    );
    assert_eq!(
        out.stdout.trim(),
        "answer 01 then eof",
        "a proof without the secret is refused\n{out}\n--- server ---\n{}",
        remote.server.log()
    );
    assert!(
        remote.server.log().contains("client's proof"),
        "the server logs the refusal\n{}",
        remote.server.log()
    );

    good_client(&remote, "after");
    let line = service.next_line(TIMEOUT);
    assert_eq!(line, "conn echo after", "{}", service.diagnostics());
}

/// Bytes that are not the protocol get the connection dropped, and a connection that never
/// says anything does not stop the server from serving others.
#[test]
fn garbage_and_idle_peers_of_the_server_port_are_dropped() {
    let test = "garbage_and_idle_peers_of_the_server_port_are_dropped";
    let Some(mut remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let (b_v4, server_port) = (remote.hosts.b_v4(), SERVER_PORT.to_string());

    let idle_cmd = remote.native_py(&remote.hosts.a, &["idle", &b_v4, &server_port]);
    let mut idle = Spawned::start(idle_cmd, remote.dir.path(), "idle");
    idle.wait_for_line(TIMEOUT, |l| l == "idle connected");
    good_client(&remote, "next-to-idle");

    for kind in ["random", "http", "zeros"] {
        let args = ["garbage", b_v4.as_str(), &server_port, kind];
        let out = run(remote.native_py(&remote.hosts.a, &args), TIMEOUT);
        assert!(
            out.stdout.starts_with("dropped"),
            "{kind} bytes must get the connection dropped\n{out}\n--- server ---\n{}",
            remote.server.log()
        );
        good_client(&remote, &format!("after-{kind}"));
    }
    drop(idle);
    good_client(&remote, "last");
    assert!(remote.server.is_running(), "{}", remote.server.log());
}

/// `rump_server` will not listen on TCP with a secret anyone else can read, one too short to
/// resist guessing, a missing file, or no secret at all.
#[test]
fn the_server_refuses_weak_or_missing_secrets() {
    let test = "the_server_refuses_weak_or_missing_secrets";
    if !require_root(test) {
        return;
    }
    let dir = TempDir::new(test);
    let hosts = TwoHosts::create();
    let url = format!("tcp://{}:{SERVER_PORT}", hosts.b_v4());
    let strong = b"0123456789abcdef0123456789abcdef\n";
    let cases = [
        (
            "readable by others",
            write_private(&dir.join("s644"), strong, 0o644),
        ),
        (
            "readable by the group",
            write_private(&dir.join("s640"), strong, 0o640),
        ),
        (
            "8 bytes long",
            write_private(&dir.join("short"), b"01234567", 0o600),
        ),
        ("missing", dir.join("missing")),
    ];
    for (what, path) in &cases {
        let args = [OsStr::new("--secret-file"), path.as_os_str()];
        let refusal = RemoteServer::refused(&hosts.b, &dir, "refused", &args, &url);
        assert!(
            refusal.code.is_some_and(|c| c != 0),
            "a secret file {what} must be refused: {refusal:?}"
        );
        assert!(
            refusal.log.contains(&*path.to_string_lossy()),
            "the error names the file ({what})\n{}",
            refusal.log
        );
    }
    let refusal = RemoteServer::refused(&hosts.b, &dir, "refused", &[], &url);
    assert!(
        refusal.code.is_some_and(|c| c != 0),
        "tcp:// without --secret-file must be refused: {refusal:?}"
    );

    // The control: the same server with a good secret starts.
    let good = write_private(&dir.join("good"), strong, 0o600);
    let args = [OsStr::new("--secret-file"), good.as_os_str()];
    drop(RemoteServer::start(&hosts.b, &dir, "good", &args, &url));
}

// --- losing the link ----------------------------------------------------------------------

/// `rr.py interactive` on A under rumphijack with one connection open to B's echo service,
/// driven line by line. Fields drop in order: client, service, then the hosts and server.
struct Cut {
    client: Spawned,
    _service: Spawned,
    remote: Remote,
}

impl Cut {
    fn start(test: &str, retry: Option<&str>) -> Option<Cut> {
        let remote = Remote::start(test, Listen::V4)?;
        let service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
        let port = SERVICE_PORT.to_string();
        let mut cmd = remote.hijacked_py(&["interactive", "127.0.0.1", &port]);
        match retry {
            Some(retry) => cmd.env("RUMPHIJACK_RETRYCONNECT", retry),
            None => cmd.env_remove("RUMPHIJACK_RETRYCONNECT"),
        };
        let mut client = Spawned::start(cmd, remote.dir.path(), "client");
        client.wait_for_line(TIMEOUT, |l| l == "ready");
        let mut cut = Cut {
            client,
            _service: service,
            remote,
        };
        cut.expect("connect", "connect ok");
        cut.expect("echo before", "echo got=before");
        cut.expect("socket", "socket ok");
        Some(cut)
    }

    /// Sends `command`; returns the answer without its `ms=` field, and the milliseconds.
    fn ask(&mut self, command: &str, timeout: Duration) -> (String, u64) {
        self.client.send_line(command).expect("client stdin");
        let line = self.client.next_line(timeout);
        let (answer, ms) = line.rsplit_once(" ms=").unwrap_or((&line, "0"));
        (answer.to_string(), ms.parse().unwrap_or(0))
    }

    fn expect(&mut self, command: &str, want: &str) {
        let (answer, _) = self.ask(command, LOSS_DEADLINE);
        assert_eq!(answer, want, "{command}\n{}", self.diagnostics());
    }

    fn diagnostics(&self) -> String {
        format!(
            "{}\n--- stack server ---\n{}",
            self.client.diagnostics(),
            self.remote.server.log()
        )
    }

    /// Takes the wire down; the open relayed connection then ends (EOF, ECONNRESET or EPIPE)
    /// once the loss is noticed, instead of hanging.
    fn cut_link_and_lose_the_connection(&mut self) {
        self.remote.hosts.set_link(false);
        let (answer, ms) = self.ask("echo after-cut", LOSS_DEADLINE);
        assert!(
            ["echo eof", "echo err ECONNRESET", "echo err EPIPE"].contains(&answer.as_str()),
            "an open connection must end when the link is lost, got {answer:?}\n{}",
            self.diagnostics()
        );
        eprintln!("loss noticed by the open connection after {ms} ms: {answer}");
    }

    fn exit_cleanly(mut self) {
        self.client.send_line("exit").expect("client stdin");
        let status = self.client.wait(TIMEOUT);
        assert_eq!(exit_code(status), 0, "{}", self.diagnostics());
    }
}

#[test]
fn link_lost_without_retry_new_sockets_fail_with_enotconn() {
    let test = "link_lost_without_retry_new_sockets_fail_with_enotconn";
    let Some(mut cut) = Cut::start(test, None) else {
        return;
    };
    cut.cut_link_and_lose_the_connection();
    cut.expect("socket", "socket err ENOTCONN");

    // Unset means no reconnect, even once the wire is back.
    cut.remote.hosts.set_link(true);
    cut.expect("socket", "socket err ENOTCONN");
    cut.exit_cleanly();
}

#[test]
fn link_lost_with_retry_die_kills_the_program() {
    let test = "link_lost_with_retry_die_kills_the_program";
    let Some(mut cut) = Cut::start(test, Some("die")) else {
        return;
    };
    cut.remote.hosts.set_link(false);

    // The program may be killed while it waits on its open connection or at its next
    // socket(); it may already be gone when these lines are written.
    let _ = cut.client.send_line("echo after-cut");
    let _ = cut.client.send_line("socket");
    let status = cut.client.wait(LOSS_DEADLINE);
    assert_eq!(
        exit_code(status),
        128 + libc::SIGKILL,
        "die: the program is killed and the status mirrors it\n{}",
        cut.diagnostics()
    );
}

#[test]
fn link_lost_with_retry_seconds_gives_up() {
    let test = "link_lost_with_retry_seconds_gives_up";
    let Some(mut cut) = Cut::start(test, Some("3")) else {
        return;
    };
    cut.cut_link_and_lose_the_connection();
    let (answer, ms) = cut.ask("socket", LOSS_DEADLINE);
    assert_eq!(answer, "socket err ENOTCONN", "{}", cut.diagnostics());
    eprintln!("{test}: socket() gave up after {ms} ms");

    // After the window the connection stays lost.
    cut.remote.hosts.set_link(true);
    cut.expect("socket", "socket err ENOTCONN");
    cut.exit_cleanly();
}

#[test]
fn link_lost_with_retry_inftime_reconnects_when_it_is_back() {
    let test = "link_lost_with_retry_inftime_reconnects_when_it_is_back";
    let Some(mut cut) = Cut::start(test, Some("inftime")) else {
        return;
    };
    cut.cut_link_and_lose_the_connection();

    // socket() waits for the server while the wire is down, and succeeds once it is back.
    cut.client.send_line("socket").expect("client stdin");
    std::thread::sleep(Duration::from_secs(2));
    cut.remote.hosts.set_link(true);
    let line = cut.client.next_line(LOSS_DEADLINE);
    assert!(
        line.starts_with("socket ok"),
        "{line}\n{}",
        cut.diagnostics()
    );

    cut.expect("connect", "connect ok");
    cut.expect("echo again", "echo got=again");
    cut.exit_cleanly();
}

#[test]
fn link_lost_with_retry_once_fails_and_stays_lost() {
    let test = "link_lost_with_retry_once_fails_and_stays_lost";
    let Some(mut cut) = Cut::start(test, Some("once")) else {
        return;
    };
    cut.cut_link_and_lose_the_connection();

    // The one attempt is made while the wire is down and fails; from then on the
    // connection stays lost, even once the wire is back.
    cut.expect("socket", "socket err ENOTCONN");
    cut.remote.hosts.set_link(true);
    cut.expect("socket", "socket err ENOTCONN");
    cut.exit_cleanly();
}

/// `rump_server --policy` binds remote clients whatever their own supervisor allows, and a
/// remote client gets Internet sockets only.
#[test]
fn the_servers_policy_binds_remote_clients() {
    let test = "the_servers_policy_binds_remote_clients";
    let Some(remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let mut service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let policy = remote.dir.write(
        "server-policy.toml",
        &format!(
            "default = \"allow\"\n\n[[rule]]\nop = \"connect\"\nport = {SERVICE_PORT}\n\
             action = \"deny\"\nerrno = \"ECONNREFUSED\"\n"
        ),
    );
    let url = format!("tcp://{}:{}", remote.hosts.b_v4(), SERVER_PORT + 1);
    let args = [
        OsStr::new("--secret-file"),
        remote.secret.as_os_str(),
        OsStr::new("--policy"),
        policy.as_os_str(),
    ];
    let guarded = RemoteServer::start(&remote.hosts.b, &remote.dir, "guarded", &args, &url);

    // The client's supervisor has no policy; the server's refuses the connection.
    let port = SERVICE_PORT.to_string();
    let argv = remote.py_argv(&["echo-once", "127.0.0.1", &port, "denied"]);
    let out = run(
        remote
            .hosts
            .on_a(&remote_hijack(guarded.url(), Some(&remote.secret), argv)),
        TIMEOUT,
    );
    assert!(
        !out.status.success() && out.stderr.contains("ConnectionRefusedError"),
        "the server's policy refuses the connect\n{out}\n--- server ---\n{}",
        guarded.log()
    );

    // A family other than IPv4/IPv6 is refused by the remote server (EAFNOSUPPORT).
    let probe =
        "import socket\ntry:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n    \
                 print('made')\nexcept OSError as e:\n    print('refused', e.errno)\n";
    let script = remote.dir.write("netlink.py", probe);
    let argv = vec!["python3".into(), script.into_os_string()];
    let out = run(
        remote
            .hosts
            .on_a(&remote_hijack(guarded.url(), Some(&remote.secret), argv)),
        TIMEOUT,
    );
    out.assert_success("the netlink probe");
    assert_eq!(
        out.stdout.trim(),
        format!("refused {}", libc::EAFNOSUPPORT),
        "{out}"
    );

    // The same client through the server without a policy gets through.
    good_client(&remote, "unguarded");
    let line = service.next_line(TIMEOUT);
    assert_eq!(line, "conn echo unguarded", "{}", service.diagnostics());
}
