//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rumpclient::protocol::{Message, PROTOCOL_VERSION};
use rumpclient::wire;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rump-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    /// Lets every user reach files inside (for servers or clients run as another uid).
    pub fn open_to_all(&self) {
        fs::set_permissions(&self.0, fs::Permissions::from_mode(0o777)).unwrap();
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Announces a skipped test on the real stderr: the harness captures `eprintln!` of
/// passing tests, and a skip must never look like a pass.
pub fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn hello() -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
        program: "server-tests".into(),
    }
}

/// Sends `Hello` and returns the stack description from `Welcome`.
pub fn handshake(client: &UnixStream) -> String {
    wire::send(client, &hello(), None).unwrap();
    match wire::recv(client).unwrap() {
        (Message::Welcome { version, stack }, None) => {
            assert_eq!(version, PROTOCOL_VERSION);
            stack
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Asks for a socket; `Ok(fd)` or `Err(errno)`.
pub fn create_socket(
    client: &UnixStream,
    domain: i32,
    ty: i32,
    protocol: i32,
) -> Result<std::os::fd::OwnedFd, i32> {
    let req = Message::CreateSocket {
        domain,
        ty,
        protocol,
    };
    wire::send(client, &req, None).unwrap();
    match wire::recv(client).unwrap() {
        (Message::SocketReply { errno: 0 }, Some(fd)) => Ok(fd),
        (Message::SocketReply { errno }, None) if errno != 0 => Err(errno),
        other => panic!("unexpected reply {other:?}"),
    }
}
