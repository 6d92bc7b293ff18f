//! Starting the processes of a measurement, with deadlines so that a hung run fails instead
//! of stalling the whole benchmark.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys;

/// Runs `cmd` to completion with its output captured; kills it after `timeout`.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    collect(child, timeout)
}

/// Waits for a child whose stdout and stderr are pipes, reading both; kills it after
/// `timeout`.
pub fn collect(mut child: Child, timeout: Duration) -> Result<Output> {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_deadline(&mut child, timeout)?;
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child`, killing it when `timeout` passes first. Sleeps in poll(2) on a pidfd
/// until the child exits, so that the harness does not wake up during a timed run (it polled
/// every 2 ms before, waking the otherwise idle vCPU 500 times a second); without pidfds it
/// looks every 2 ms.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    let pidfd = sys::pidfd_open(child.id()).ok();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let now = Instant::now();
        if let (Some(fd), Some(left)) = (&pidfd, deadline.checked_duration_since(now)) {
            sys::wait_readable(fd, left)?;
            continue;
        }
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "pid {} did not finish within {timeout:?}; killed",
                child.id()
            );
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Spawns `cmd` with a pipe on descriptor 3 and waits until the child writes to it (the
/// `--ready-fd` convention of rump_server and slirp4netns).
pub fn spawn_until_ready(cmd: &mut Command, timeout: Duration) -> Result<Child> {
    let (read_end, write_end) = sys::pipe()?;
    sys::pass_as_ready_fd(cmd, &write_end);
    let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;

    // Our copy of the write end must go, or end of file would never come.
    drop(write_end);

    if !sys::wait_readable(&read_end, timeout)? {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{cmd:?} was not ready within {timeout:?}");
    }
    let mut byte = [0u8; 1];
    if std::fs::File::from(read_end).read(&mut byte)? == 0 {
        let status = child.wait()?;
        bail!("{cmd:?} exited before it was ready ({status})");
    }
    Ok(child)
}

/// A `bench-load` server: listening once its `PORT` line came, stopped by closing its stdin.
#[derive(Debug)]
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: thread::JoinHandle<Vec<u8>>,
    pub port: u16,
}

impl Server {
    pub fn start(cmd: &mut Command, timeout: Duration) -> Result<Server> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stderr = drain(child.stderr.take());

        // The first line is the port; read it on a thread so that a silent server times out.
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(timeout).unwrap_or_default();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok());

        let server = Server {
            child,
            stdin,
            stderr,
            port: port.unwrap_or(0),
        };
        if port.is_none() {
            let err = server.stop();
            bail!("{cmd:?} did not report its port (got {line:?}): {err}");
        }
        Ok(server)
    }

    /// Closes the server's stdin and waits for it; returns its stderr (for error messages).
    pub fn stop(mut self) -> String {
        drop(self.stdin.take());
        let status = wait_deadline(&mut self.child, Duration::from_secs(10));
        let stderr = self.stderr.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        match status {
            Ok(s) if s.success() => stderr,
            Ok(s) => format!("server exited with {s}; {stderr}"),
            Err(e) => format!("{e}; {stderr}"),
        }
    }
}
