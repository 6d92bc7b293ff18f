//! Descriptors the caller leaves open across `rumphijack run`.
//!
//! The filter acts on system calls, not on descriptors that already exist, so a host-stack
//! socket inherited by the program keeps working in the host's stack. That is the default,
//! as with `env` and `timeout` (docs/security.md, "Descriptors passed in from outside");
//! `rumphijack run --close-fds` closes every descriptor above 2 before the program starts.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use rumphijack_tests::{
    field, python3, require_program, rumphijack_cmd, run, Finished, Server, TempDir, TIMEOUT,
};

/// The descriptor number the inherited socket gets in `rumphijack` and its program.
const INHERITED_FD: i32 = 5;

/// Run by the program: uses the inherited descriptor 5 (`getsockname`, then `accept` of the
/// connection the test queued and a greeting on it), makes a socket of its own that tries
/// the same port, and lists every other descriptor above 2 it holds.
const SCRIPT: &str = r#"
import errno, os, socket, sys

def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))

port = int(sys.argv[1])
try:
    s = socket.socket(fileno=5)
except OSError as e:
    print("fd5 err %s" % name(e), flush=True)
else:
    host, got = s.getsockname()
    print("fd5 sockname=%s:%d" % (host, got), flush=True)
    conn, peer = s.accept()
    conn.sendall(b"hello from fd 5")
    conn.close()
    print("fd5 accepted peer=%s" % peer[0], flush=True)
    s.detach()
try:
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    print("new-socket connected", flush=True)
except OSError as e:
    print("new-socket err %s" % name(e), flush=True)
extra = []
for fd in range(3, 1024):
    try:
        os.fstat(fd)
    except OSError:
        continue
    extra.append(str(fd))
print("open=%s" % (",".join(extra) or "none"), flush=True)
"#;

/// `rumphijack run [--close-fds] --server URL -- python3 -c SCRIPT PORT`, with `listener`
/// installed as descriptor [`INHERITED_FD`] (close-on-exec cleared) in `rumphijack`.
fn run_with_inherited(server: &Server, listener: &TcpListener, close_fds: bool) -> Finished {
    let port = listener.local_addr().expect("local_addr").port();
    let mut cmd = rumphijack_cmd();
    cmd.arg("run");
    if close_fds {
        cmd.arg("--close-fds");
    }
    cmd.args(["--server", &server.url(), "--"])
        .arg(python3())
        .args(["-c", SCRIPT, &port.to_string()]);
    let source = listener.as_raw_fd();
    // SAFETY: runs in the forked child before exec; dup2 and fcntl are async-signal-safe and
    // touch only the child's descriptor table. The listener is close-on-exec in the test
    // process, so only this child (and what it executes) inherits it, as descriptor 5.
    unsafe {
        cmd.pre_exec(move || {
            if source != INHERITED_FD {
                nix::unistd::dup2(source, INHERITED_FD)?;
            }
            fcntl(INHERITED_FD, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    run(cmd, TIMEOUT)
}

/// The first line of the program's output starting with `prefix`; fails with the program's
/// output when there is none.
fn line<'a>(out: &'a Finished, prefix: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{out}"))
}

/// Descriptors above 2 of the test process without close-on-exec: what every child inherits.
fn inheritable_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .filter(|&fd| {
            fcntl(fd, FcntlArg::F_GETFD)
                .is_ok_and(|flags| !FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
        })
        .collect()
}

#[test]
fn inherited_host_socket_stays_usable_by_default() {
    let test = "inherited_host_socket_stays_usable_by_default";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "stack");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 on the host");
    let port = listener.local_addr().expect("local_addr").port();
    // Queued by the kernel in the host stack; the program accepts it through descriptor 5.
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");

    let out = run_with_inherited(&server, &listener, false);
    out.assert_success("the program uses its inherited descriptor 5");
    let sockname = format!("127.0.0.1:{port}");
    assert_eq!(
        field(line(&out, "fd5 sockname"), "sockname"),
        Some(sockname.as_str()),
        "descriptor 5 is the test's host-stack listener\n{out}"
    );
    assert_eq!(
        field(line(&out, "fd5 accepted"), "peer"),
        Some("127.0.0.1"),
        "{out}"
    );
    let mut greeting = String::new();
    client
        .read_to_string(&mut greeting)
        .expect("read what the program sent on the accepted connection");
    assert_eq!(greeting, "hello from fd 5", "{out}");

    // The program's own sockets still come from the server's stack, where nothing listens.
    assert_eq!(
        line(&out, "new-socket"),
        "new-socket err ECONNREFUSED",
        "a socket the program makes itself is redirected\n{out}"
    );
    // The supervisor adds none of its own descriptors: the program holds descriptor 5 and
    // whatever the test's own caller left open for children (a CI runner may leave some).
    let mut expected = inheritable_fds();
    expected.push(INHERITED_FD);
    expected.sort_unstable();
    expected.dedup();
    let expected: Vec<String> = expected.iter().map(i32::to_string).collect();
    assert_eq!(
        line(&out, "open="),
        format!("open={}", expected.join(",")),
        "only inherited descriptors are open above 2\n{out}"
    );
}

#[test]
fn close_fds_closes_the_inherited_host_socket() {
    let test = "close_fds_closes_the_inherited_host_socket";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "stack");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 on the host");

    // Control: the same command without --close-fds gets the socket (the test above checks
    // what it can do with it), so the harness really passes it down.
    let port = listener.local_addr().expect("local_addr").port();
    let _queued = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
    let control = run_with_inherited(&server, &listener, false);
    control.assert_success("control run without --close-fds");
    assert!(
        line(&control, "fd5").starts_with("fd5 sockname="),
        "without --close-fds descriptor 5 must be the listener\n{control}"
    );

    let out = run_with_inherited(&server, &listener, true);
    out.assert_success("the program runs with --close-fds");
    assert_eq!(
        line(&out, "fd5"),
        "fd5 err EBADF",
        "--close-fds must close descriptor 5 before the program starts\n{out}"
    );
    assert_eq!(
        line(&out, "open="),
        "open=none",
        "--close-fds leaves nothing open above 2\n{out}"
    );
    assert_eq!(
        line(&out, "new-socket"),
        "new-socket err ECONNREFUSED",
        "redirection still works with --close-fds\n{out}"
    );
}
