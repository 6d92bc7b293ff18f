//! rump_server started the way systemd starts a socket-activated `Type=notify` service: the
//! test binds and listens on the socket itself, passes it as descriptor 3 with
//! `LISTEN_FDS=1` and `LISTEN_PID` set to the server's pid, and waits for `READY=1` on a
//! `NOTIFY_SOCKET` of its own. Then real programs run through the server. The example units
//! in `examples/systemd/` are checked with `systemd-analyze verify`.

use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::Signal;
use rumphijack_tests::bins::{bin_dir, rump_server};
use rumphijack_tests::{
    exit_code, hijack, python3, require_program, require_root, run, Spawned, TempDir, TIMEOUT,
};

/// Where systemd would tell the service to report: an abstract name or a socket file.
enum NotifyTarget {
    Abstract(String),
    Path(PathBuf),
}

/// The service manager's end of `NOTIFY_SOCKET`.
struct ServiceManager {
    socket: UnixDatagram,
    env_value: String,
}

impl ServiceManager {
    fn new(target: NotifyTarget) -> ServiceManager {
        let (addr, env_value) = match target {
            NotifyTarget::Abstract(name) => (
                SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address"),
                format!("@{name}"),
            ),
            NotifyTarget::Path(path) => (
                SocketAddr::from_pathname(&path).expect("path address"),
                path.display().to_string(),
            ),
        };
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the notification socket");
        socket
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout on the notification socket");
        ServiceManager { socket, env_value }
    }

    /// The next state message the service sent.
    fn next_state(&self, server: &Spawned) -> String {
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!(
                "no notification from rump_server: {e}\n{}",
                server.diagnostics()
            ),
        }
    }
}

fn unique_name(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("rumphijack-test-{test}-{}-{n}", std::process::id())
}

/// `rump_server ARGS...` as systemd starts it: `listening` as descriptor 3, `LISTEN_FDS=1`,
/// `LISTEN_PID` the server's own pid (set by the shell that becomes the server through
/// exec, since only it knows that pid) and `NOTIFY_SOCKET`.
fn activated(listening: RawFd, notify: &str, listen_pid: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    let set_pid = match listen_pid {
        Some(pid) => format!("LISTEN_PID={pid}"),
        None => "LISTEN_PID=$$".to_owned(),
    };
    cmd.arg("-c")
        .arg(format!("{set_pid} exec \"$0\" \"$@\""))
        .arg(rump_server())
        .args(args)
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", notify)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("RUST_LOG");
    // SAFETY: runs in the forked child before exec and only calls dup2 and fcntl, which are
    // async-signal-safe and touch nothing but the child's descriptor table.
    unsafe {
        cmd.pre_exec(move || pass_as_fd3(listening));
    }
    cmd
}

/// Makes `fd` the child's descriptor 3, open across exec (dup2 clears close-on-exec on the
/// copy; a descriptor that already is 3 needs the flag cleared by hand).
fn pass_as_fd3(fd: RawFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    if fd == 3 {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    } else {
        nix::unistd::dup2(fd, 3)?;
    }
    Ok(())
}

/// A listening socket at `dir/stack.sock`, as a `.socket` unit makes it.
fn socket_unit(dir: &TempDir) -> (UnixListener, PathBuf) {
    let path = dir.join("stack.sock");
    let listener = UnixListener::bind(&path).expect("bind the activation socket");
    (listener, path)
}

/// A python program that makes a TCP connection to itself over 127.0.0.1 in the stack it
/// runs in and prints that stack's interfaces.
const LOOPBACK_ROUND_TRIP: &str = "\
import socket
server = socket.socket()
server.bind(('127.0.0.1', 0))
server.listen(1)
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
client.sendall(b'ping')
assert peer.recv(4) == b'ping'
print('interfaces:', ' '.join(name for _, name in socket.if_nameindex()))
";

fn prerequisites(test: &str) -> bool {
    require_root(test) && require_program(test, "python3")
}

#[test]
fn socket_activated_server_reports_ready_and_serves_a_program() {
    let test = "socket_activated_server_reports_ready_and_serves_a_program";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let (listener, path) = socket_unit(&dir);
    let manager = ServiceManager::new(NotifyTarget::Abstract(unique_name("notify")));

    let cmd = activated(
        listener.as_raw_fd(),
        &manager.env_value,
        None,
        &["--isolated"],
    );
    let mut server = Spawned::start(cmd, dir.path(), "rump_server");
    let state = manager.next_state(&server);
    assert!(
        state.lines().any(|l| l == "READY=1"),
        "READY=1 expected, got {state:?}"
    );
    let url = format!("unix://{}", path.display());
    assert!(state.contains(&url), "the status names {url}: {state:?}");

    // A program under rumphijack gets its sockets from the isolated stack behind the socket.
    let out = run(
        hijack(
            &url,
            [
                python3().as_os_str(),
                "-c".as_ref(),
                LOOPBACK_ROUND_TRIP.as_ref(),
            ],
        ),
        TIMEOUT,
    );
    out.assert_success("a program through the socket-activated server");
    assert_eq!(out.stdout.trim(), "interfaces: lo", "{out}");

    // SIGTERM stops it cleanly and leaves the socket file, which is the socket unit's.
    server.signal(Signal::SIGTERM);
    let status = server.wait(TIMEOUT);
    assert_eq!(exit_code(status), 0, "{}", server.diagnostics());
    assert!(
        path.exists(),
        "the socket file belongs to systemd and must stay"
    );

    // systemd restarts the service on the same socket.
    let cmd = activated(listener.as_raw_fd(), &manager.env_value, None, &[]);
    let server = Spawned::start(cmd, dir.path(), "rump_server-again");
    let state = manager.next_state(&server);
    assert!(state.starts_with("READY=1"), "{state:?}");
    let out = run(
        hijack(
            &url,
            [
                python3().as_os_str(),
                "-c".as_ref(),
                LOOPBACK_ROUND_TRIP.as_ref(),
            ],
        ),
        TIMEOUT,
    );
    out.assert_success("a program through the restarted server");
}

#[test]
fn readiness_reaches_a_notify_socket_given_as_a_path() {
    let test = "readiness_reaches_a_notify_socket_given_as_a_path";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let (listener, path) = socket_unit(&dir);
    let manager = ServiceManager::new(NotifyTarget::Path(dir.join("notify")));
    let url = format!("unix://{}", path.display());

    // The URL may be given as well, as long as it names the passed socket.
    let cmd = activated(listener.as_raw_fd(), &manager.env_value, None, &[&url]);
    let server = Spawned::start(cmd, dir.path(), "rump_server");
    let state = manager.next_state(&server);
    assert!(state.starts_with("READY=1\n"), "{state:?}");
}

#[test]
fn a_passed_socket_that_does_not_listen_is_refused() {
    let test = "a_passed_socket_that_does_not_listen_is_refused";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let datagram = UnixDatagram::bind(dir.join("dgram.sock")).expect("bind a datagram socket");
    let notify = format!("@{}", unique_name("unused"));

    let out = run(activated(datagram.as_raw_fd(), &notify, None, &[]), TIMEOUT);
    assert_eq!(out.code(), 1, "{out}");
    assert!(
        out.stderr
            .contains("socket passed by systemd (descriptor 3) is not a stream socket"),
        "{out}"
    );
}

#[test]
fn sockets_meant_for_another_process_are_left_alone() {
    let test = "sockets_meant_for_another_process_are_left_alone";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let (listener, _path) = socket_unit(&dir);
    let notify = format!("@{}", unique_name("unused"));

    // LISTEN_PID names process 1: the socket is not for rump_server, which then needs a URL.
    let out = run(
        activated(listener.as_raw_fd(), &notify, Some("1"), &[]),
        TIMEOUT,
    );
    assert_eq!(out.code(), 2, "{out}");
    assert!(
        out.stderr.contains("a URL to listen on is required"),
        "{out}"
    );
}

#[test]
fn a_url_naming_another_socket_than_the_passed_one_is_refused() {
    let test = "a_url_naming_another_socket_than_the_passed_one_is_refused";
    if !prerequisites(test) {
        return;
    }
    let dir = TempDir::new(test);
    let (listener, path) = socket_unit(&dir);
    let other = dir.join("other.sock");
    let _other = UnixListener::bind(&other).expect("bind another socket");
    let notify = format!("@{}", unique_name("unused"));

    let url = format!("unix://{}", other.display());
    let out = run(
        activated(listener.as_raw_fd(), &notify, None, &[&url]),
        TIMEOUT,
    );
    assert_eq!(out.code(), 2, "{out}");
    let expected = format!(
        "must name the socket systemd passed, which is bound to {}",
        path.display()
    );
    assert!(out.stderr.contains(&expected), "{out}");
}

#[test]
fn example_units_pass_systemd_analyze_verify() {
    let test = "example_units_pass_systemd_analyze_verify";
    if !require_program(test, "systemd-analyze") {
        return;
    }
    let dir = TempDir::new(test);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd");

    // The units name the installed binary; point them at the one under test.
    let installed = "ExecStart=/usr/local/bin/rump_server";
    let mut units = Vec::new();
    for name in ["rump_server.socket", "rump_server.service"] {
        let text = std::fs::read_to_string(examples.join(name))
            .unwrap_or_else(|e| panic!("read examples/systemd/{name}: {e}"));
        if name.ends_with(".service") {
            assert!(text.contains(installed), "{name} runs {installed}");
        }
        let here = format!("ExecStart={}", bin_dir().join("rump_server").display());
        units.push(dir.write(name, &text.replace(installed, &here)));
    }

    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", "--man=no"]).args(&units);
    let out = run(verify, TIMEOUT);
    out.assert_success("systemd-analyze verify of the example units");
    assert_eq!(out.stderr.trim(), "", "no complaints expected\n{out}");
}
