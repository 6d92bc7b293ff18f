//! Running programs with deadlines.
//!
//! Every program is started in a process group of its own; on timeout or drop the whole group
//! gets `SIGKILL`, so a supervised program left behind by a broken supervisor dies too. Signals
//! a test sends on purpose go to one pid only.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// A shell's view of an exit status: the code, or 128+N for death by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .expect("an exit status is either a code or a signal")
}

/// Number of open descriptors of `pid`, from `/proc/PID/fd`.
pub fn fd_count(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .count()
}

/// How far a process's descriptor count may drift between two samples without a leak.
/// Sockets made ahead of time come and go in batches: the supervisor keeps at most 32 of a
/// kind, a server session prepares at most one batch of 32 per kind, and the tests that use
/// this make sockets of one kind. A leak of one descriptor per call over the 100 000 and more
/// calls they make would exceed it three-thousandfold.
pub const KEPT_SOCKETS_SLACK: usize = 32;

/// Asserts that `after` is within [`KEPT_SOCKETS_SLACK`] of `before`.
pub fn assert_fds_flat(before: usize, after: usize, what: &str) {
    assert!(
        before.abs_diff(after) <= KEPT_SOCKETS_SLACK,
        "{what}: descriptor count went from {before} to {after}"
    );
}

/// A TCP port nothing listens on in this (the host's) stack right now. Tests use it inside
/// their private stacks too, so the same number is known to be closed on the host.
pub fn free_host_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A program that has finished, with what it printed.
#[derive(Debug)]
pub struct Finished {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code as a shell reports it (see [`exit_code`]).
    pub fn code(&self) -> i32 {
        exit_code(self.status)
    }

    /// Panics with `why` and the program's output unless it exited with `expected`.
    pub fn assert_code(&self, expected: i32, why: &str) {
        assert_eq!(self.code(), expected, "{why}\n{self}");
    }

    pub fn assert_success(&self, why: &str) {
        self.assert_code(0, why);
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.code(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

fn read_all_in_thread(mut from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Runs `cmd` to completion with stdin from /dev/null. After `timeout` its process group is
/// killed and the test fails with everything it printed.
pub fn run(mut cmd: Command, timeout: Duration) -> Finished {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{what}`: {e}"));
    let stdout = read_all_in_thread(child.stdout.take().expect("piped stdout"));
    let stderr = read_all_in_thread(child.stderr.take().expect("piped stderr"));

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };

    // Whatever is left of the group (background children still holding our pipes) goes too.
    let _ = killpg(pid_of(&child), Signal::SIGKILL);
    let killed_status = child.wait().expect("wait");
    let collect =
        |rx: Receiver<String>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let finished = Finished {
        what,
        status: status.unwrap_or(killed_status),
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    if status.is_none() {
        panic!("timed out after {timeout:?}, killed\n{finished}");
    }
    finished
}

/// The child's pid, which is also its process group id (`process_group(0)`).
fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// A long-running program the test talks to line by line: stdin is a pipe, each stdout line is
/// collected by a thread, stderr goes to a log file shown when something fails.
#[derive(Debug)]
pub struct Spawned {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
    stderr_log: PathBuf,
    exited: bool,
}

impl Spawned {
    /// Starts `cmd`, logging its stderr to `<log_dir>/<name>.stderr`.
    pub fn start(mut cmd: Command, log_dir: &Path, name: &str) -> Spawned {
        let what = describe(&cmd);
        let stderr_log = log_dir.join(format!("{name}.stderr"));
        let log = File::create(&stderr_log).expect("create stderr log");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{what}`: {e}"));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned {
            what,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Arc::default(),
            stderr_log,
            exited: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the program printed so far, for failure messages.
    pub fn diagnostics(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        format!(
            "`{}`\n--- stdout lines read ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.seen.lock().unwrap().join("\n"),
            stderr.trim_end()
        )
    }

    /// Writes one line to the program's stdin. Errors (the program is gone) are returned, not
    /// fatal: some tests expect the program to have died.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line; fails the test on timeout or end of output.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.lock().unwrap().push(line.clone());
                line
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("no output line within {timeout:?}\n{}", self.diagnostics())
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("program closed stdout\n{}", self.diagnostics())
            }
        }
    }

    /// Skips lines until one satisfies `wanted`, which is returned.
    pub fn wait_for_line(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left);
            if wanted(&line) {
                return line;
            }
        }
    }

    /// Sends `signal` to the program's own pid (not its group).
    pub fn signal(&self, signal: Signal) {
        kill(pid_of(&self.child), signal).unwrap_or_else(|e| panic!("kill {signal}: {e}"));
    }

    /// Waits for the program to exit; fails the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = true;
                return status;
            }
            if Instant::now() >= deadline {
                panic!("did not exit within {timeout:?}\n{}", self.diagnostics());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = killpg(pid_of(&self.child), Signal::SIGKILL);
        if !self.exited {
            let _ = self.child.wait();
        }
    }
}
