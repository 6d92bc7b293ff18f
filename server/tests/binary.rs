//! The `rump_server` binary: readiness, signals, exit codes and `--isolated`.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{create_socket, handshake, is_root, skip, TempDir};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, SockaddrIn};
use nix::unistd::Pid;
use rumpclient::protocol::{ErrorCode, Message};
use rumpclient::wire;

const BIN: &str = env!("CARGO_BIN_EXE_rump_server");

/// A server started with `--ready-fd`, killed if the test ends early.
struct Server {
    child: Child,
    path: PathBuf,
}

impl Server {
    /// Starts the binary with `extra` arguments and waits for its READY line.
    fn start(path: &Path, extra: &[&str], as_nobody: bool) -> Server {
        let (rx, tx) = nix::unistd::pipe().unwrap();
        // The write end must survive exec in the child; the read end must not.
        fcntl(tx.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        fcntl(rx.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(extra)
            .arg("--ready-fd")
            .arg(tx.as_raw_fd().to_string())
            .arg(format!("unix://{}", path.display()));
        if as_nobody {
            cmd.uid(65534).gid(65534);
        }
        let child = cmd.spawn().unwrap();
        drop(tx);
        assert_eq!(read_all(rx), "READY\n");
        Server {
            child,
            path: path.to_owned(),
        }
    }

    fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.path).unwrap()
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_all(fd: OwnedFd) -> String {
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text).unwrap();
    text
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the binary with `--detach`: the detached server keeps the standard streams it
/// inherited, so they go to a file rather than a pipe that would never see end-of-file.
fn run_detached(dir: &TempDir, args: &[&str]) -> (Option<i32>, String) {
    let log = dir.join("stderr");
    let status = Command::new(BIN)
        .arg("--detach")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .status()
        .unwrap();
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

#[test]
fn ready_fd_then_sigterm_exits_cleanly_and_removes_the_socket() {
    let dir = TempDir::new("bin-ready");
    let path = dir.join("sock");
    let server = Server::start(&path, &[], false);
    let client = server.connect();
    handshake(&client);

    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(!path.exists(), "socket removed on SIGTERM");
    match wire::recv(&client).unwrap() {
        (Message::Error { code, .. }, None) => assert_eq!(code, ErrorCode::ShuttingDown),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_url_is_a_usage_error() {
    let out = run(&["tcp://127.0.0.1:1234"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("rump_server: "), "{stderr}");

    assert_eq!(run(&["--bogus-flag", "unix:///x"]).status.code(), Some(2));
    assert_eq!(
        run(&["--isolated", "--netns", "/x", "unix:///x"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit status"));
}

#[test]
fn live_server_present_is_a_failure() {
    let dir = TempDir::new("bin-live");
    let path = dir.join("sock");
    let first = Server::start(&path, &[], false);
    let out = run(&[&format!("unix://{}", path.display())]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a live server already answers at"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(first.terminate().code(), Some(0));
}

#[test]
fn missing_netns_is_a_failure_naming_the_path() {
    let out = run(&["--netns", "/nonexistent/ns", "unix:///tmp/rump-never-bound"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ns"));
}

/// Kills a detached server if the test fails before stopping it.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

#[test]
fn detach_returns_once_ready_and_writes_the_pid_file() {
    let dir = TempDir::new("bin-detach");
    let path = dir.join("sock");
    let pid_path = dir.join("pid");
    let url = format!("unix://{}", path.display());
    let pid_arg = pid_path.display().to_string();
    let (code, stderr) = run_detached(&dir, &["--pidfile", &pid_arg, &url]);
    assert_eq!(code, Some(0), "{stderr}");

    // Ready means connectable, right now.
    let client = UnixStream::connect(&path).unwrap();
    handshake(&client);
    let pid: i32 = std::fs::read_to_string(&pid_path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _reaper = KillOnDrop(pid);
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    match wire::recv(&client).unwrap() {
        (Message::Error { code, .. }, None) => assert_eq!(code, ErrorCode::ShuttingDown),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!path.exists());
}

#[test]
fn detach_reports_the_childs_failure() {
    let dir = TempDir::new("bin-detach-fail");
    std::fs::write(dir.join("sock"), "not a socket").unwrap();
    let url = format!("unix://{}", dir.join("sock").display());
    let (code, stderr) = run_detached(&dir, &[&url]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "reported once, by the parent: {stderr}"
    );
}

/// A socket from the server, listening on 127.0.0.1 in the server's stack: the host cannot
/// reach it, another socket from the same server can.
fn assert_stack_is_private(server: &Server) {
    let client = server.connect();
    let stack = handshake(&client);
    assert!(stack.ends_with("interfaces: lo"), "{stack}");
    assert_ne!(
        stack,
        server::describe_stack(),
        "a different namespace than the host's"
    );

    let listener = create_socket(&client, libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let loopback = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    socket::bind(listener.as_raw_fd(), &loopback).unwrap();
    socket::listen(&listener.as_fd(), socket::Backlog::new(4).unwrap()).unwrap();
    let port = socket::getsockname::<SockaddrIn>(listener.as_raw_fd())
        .unwrap()
        .port();

    let from_host = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
    assert_eq!(from_host.unwrap_err().kind(), ErrorKind::ConnectionRefused);

    let inside = create_socket(&client, libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let target = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    socket::connect(inside.as_raw_fd(), &target).expect("connect inside the stack");
}

#[test]
fn isolated_stack_is_not_reachable_from_the_host() {
    // As root this is a plain new network namespace, otherwise one inside a user namespace.
    let dir = TempDir::new("bin-iso");
    let server = Server::start(&dir.join("sock"), &["--isolated"], false);
    assert_stack_is_private(&server);
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn isolated_without_privilege_uses_a_user_namespace() {
    if !is_root() {
        skip("needs root (starts the server as uid 65534)");
        return;
    }
    let dir = TempDir::new("bin-iso-user");
    dir.open_to_all();
    let path = dir.join("sock");
    let server = Server::start(&path, &["--isolated"], true);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        65534,
        "identity kept"
    );
    assert_stack_is_private(&server);
    assert_eq!(server.terminate().code(), Some(0));
}
