//! A `rump_server` for one test.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::bins::rump_server;
use crate::process::exit_code;

/// How long a server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `rump_server`, started with `--ready-fd` and waited for; killed (whole process
/// group) and reaped on drop. Its stderr is appended to `<socket path>.log`.
#[derive(Debug)]
pub struct Server {
    socket: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// `rump_server --isolated unix://<dir>/<name>.sock`: a fresh stack with only `lo`.
    pub fn isolated(dir: &Path, name: &str) -> Server {
        Server::start(&dir.join(format!("{name}.sock")), &["--isolated"])
    }

    /// Starts `rump_server EXTRA_ARGS... unix://SOCKET` and waits until it is ready.
    pub fn start(socket: &Path, extra_args: &[&str]) -> Server {
        let mut server = Server {
            socket: socket.to_path_buf(),
            args: extra_args.iter().map(OsString::from).collect(),
            log: socket.with_extension("log"),
            child: None,
        };
        server.launch();
        server
    }

    /// The `RUMP_SERVER` URL of this server.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `SIGKILL`: the server dies without cleaning up (its socket file stays behind).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the server's pid and returns its exit status.
    pub fn stop_with(&mut self, signal: Signal, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal rump_server");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                panic!(
                    "rump_server ignored {signal} for {timeout:?}\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the server again with the same arguments at the same path.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");

        let mut cmd = Command::new(rump_server());
        cmd.args(&self.args)
            .arg("--ready-fd")
            .arg(ready_w.as_raw_fd().to_string())
            .arg(self.url())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0);
        let ready_fd = ready_w.as_raw_fd();
        // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and touches
        // only the child's descriptor table. The pipe is CLOEXEC in the parent so that children
        // spawned concurrently by other tests never inherit it; only this child keeps it.
        unsafe {
            cmd.pre_exec(move || {
                fcntl(ready_fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn rump_server");
        drop(ready_w);
        self.child = Some(child);

        match read_ready_line(ready_r, READY_TIMEOUT) {
            Some(line) if line == "READY\n" => {}
            outcome => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.kill();
                panic!(
                    "rump_server {} did not become ready within {READY_TIMEOUT:?} \
                     (read {outcome:?}, status {:?})\n--- server log ---\n{}",
                    self.url(),
                    status.map(exit_code),
                    self.log()
                );
            }
        }
    }
}

/// Reads the readiness pipe until EOF or a newline; None on timeout.
pub(crate) fn read_ready_line(fd: OwnedFd, timeout: Duration) -> Option<String> {
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
