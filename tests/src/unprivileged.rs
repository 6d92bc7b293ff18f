//! Running the stack server and programs as an ordinary user (uid 65534) with no privilege at
//! all: a `rump_server --isolated` of that user, in a directory that user owns, and a python
//! interpreter that user may execute.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::bins::{python3, rump_server};
use crate::hostile::as_nobody;
use crate::process::exit_code;
use crate::{run, TempDir, TIMEOUT};

/// The numeric uid and gid of [`crate::hostile::NOBODY`].
pub const NOBODY_ID: u32 = 65534;

/// How long the server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A python3 that uid 65534 can execute: the tests' own interpreter when that user may run it
/// (a version manager under `/root` is out of its reach), else the system's. `None` (after
/// printing why) when there is none; under CI that is a failure, as for [`crate::prereq`].
pub fn python_for_nobody(test: &str) -> Option<PathBuf> {
    let candidates = [
        python3().to_path_buf(),
        PathBuf::from("/usr/bin/python3"),
        PathBuf::from("/usr/local/bin/python3"),
    ];
    let found = candidates.into_iter().find(|python| {
        // Through env: setpriv itself was seen to execute a path that the user's own
        // processes then cannot (`env: Permission denied`), so test what the programs do.
        python.is_file()
            && as_nobody("env", [python.as_os_str(), "-c".as_ref(), "pass".as_ref()])
                .output()
                .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        let reason = "no python3 that uid 65534 may execute";
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: missing prerequisite under CI (tests may not skip there): {reason}"
        );
        eprintln!("SKIPPED: {test}: {reason}");
    }
    found
}

/// A directory inside `dir` owned by uid 65534 (mode 0700), for its sockets and files.
pub fn nobody_dir(dir: &TempDir, name: &str) -> PathBuf {
    let own = dir.join(name);
    std::fs::create_dir(&own).unwrap_or_else(|e| panic!("mkdir {}: {e}", own.display()));
    std::os::unix::fs::chown(&own, Some(NOBODY_ID), Some(NOBODY_ID))
        .unwrap_or_else(|e| panic!("chown {} to {NOBODY_ID}: {e}", own.display()));
    own
}

/// The inode of the network namespace of `pid` (as `SIOCGSKNS` + `fstat` reports it).
pub fn netns_inode(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/ns/net");
    std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("stat {path}: {e}"))
        .ino()
}

/// `setpriv --reuid 65534 … rump_server --isolated --ready-fd N unix://<dir>/stack.sock`,
/// waited for; its process group is killed on drop. Its output goes to `<dir>/stack.log`,
/// in a directory owned by uid 65534.
#[derive(Debug)]
pub struct NobodyServer {
    socket: PathBuf,
    log: PathBuf,
    child: Child,
}

impl NobodyServer {
    /// Starts the server with its socket in a new directory `<dir>/<name>` owned by 65534.
    pub fn isolated(dir: &TempDir, name: &str) -> NobodyServer {
        let own = nobody_dir(dir, name);
        let socket = own.join("stack.sock");
        let log = dir.join(&format!("{name}.log"));
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open server log");
        let url = format!("unix://{}", socket.display());
        let args: Vec<OsString> = vec![
            "--isolated".into(),
            "--ready-fd".into(),
            ready_w.as_raw_fd().to_string().into(),
            url.into(),
        ];
        let mut cmd = as_nobody(rump_server(), args);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .process_group(0);
        let ready_fd = ready_w.as_raw_fd();
        // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and touches
        // only the child's descriptor table. The pipe is close-on-exec in the test process so
        // that children spawned by other tests never inherit it; setpriv keeps it open for
        // rump_server.
        unsafe {
            cmd.pre_exec(move || {
                fcntl(ready_fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn setpriv rump_server");
        drop(ready_w);
        let mut server = NobodyServer { socket, log, child };
        match read_line(ready_r, READY_TIMEOUT) {
            Some(line) if line == "READY\n" => server,
            outcome => {
                let status = server.child.try_wait().ok().flatten().map(exit_code);
                server.kill();
                panic!(
                    "rump_server as uid 65534 did not become ready within {READY_TIMEOUT:?} \
                     (read {outcome:?}, status {status:?})\n--- server log ---\n{}",
                    server.log()
                );
            }
        }
    }

    /// The `RUMP_SERVER` URL of this server.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The server's pid (setpriv executes rump_server in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for NobodyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `fd` up to a newline or EOF; `None` on timeout.
fn read_line(fd: OwnedFd, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut file = File::from(fd);
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = file.read(&mut byte) {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    });
    rx.recv_timeout(timeout).ok()
}

/// `id -u` as uid 65534 really says 65534: the test's way of running as that user works.
pub fn assert_setpriv_works() {
    let out = run(as_nobody("id", ["-u"]), TIMEOUT);
    out.assert_success("setpriv to uid 65534");
    assert_eq!(out.stdout.trim(), NOBODY_ID.to_string(), "{out}");
}
