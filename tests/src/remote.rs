//! Two hosts joined by a wire, for stack servers reached over TCP (`tcp://HOST:PORT`).
//!
//! [`TwoHosts`] is a pair of network namespaces made by the test, A and B, joined by a veth
//! pair (`vethA` in A, `vethB` in B) with IPv4 `10.77.X.1/24`, `10.77.X.2/24` and IPv6
//! `fd77:X::1/64`, `fd77:X::2/64`; X differs between the tests of one run. No packet leaves
//! the two namespaces. [`RemoteServer`] is `rump_server --secret-file FILE tcp://…` running
//! inside B (`ip netns exec`), so both its TCP listener and the stack it hosts are B's.
//! [`Remote`] puts the two together with a secret and the `rr.py` helper, for tests that run
//! a program on A under rumphijack with its sockets in B's stack.

mod script;

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::bins::{hijack, python3, rump_server};
use crate::process::exit_code;
use crate::server::read_ready_line;
use crate::{require_program, require_root, NetNs, Spawned, TempDir, TIMEOUT};

pub use script::write_remote_helper;

/// The variable naming the client's secret file.
pub const SECRET_ENV: &str = "RUMPHIJACK_SECRET_FILE";

/// `rumphijack run` exit status when the stack server cannot be reached or refuses the
/// client (`EX_UNAVAILABLE`).
pub const EXIT_SERVER_UNAVAILABLE: i32 = 69;
/// rumphijack's exit status for a configuration error (a missing secret, say).
pub const EXIT_CONFIG: i32 = 78;

/// The port the stack server listens on in B.
pub const SERVER_PORT: u16 = 7000;

/// The veth end in A; the one in B is `vethB`.
pub const LINK_A: &str = "vethA";
const LINK_B: &str = "vethB";

/// How long a stack server may take to say it is ready, or to exit when it refuses to start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespaces A and B and the wire between them. Needs root.
#[derive(Debug)]
pub struct TwoHosts {
    pub a: NetNs,
    pub b: NetNs,
    subnet: u8,
}

impl TwoHosts {
    pub fn create() -> TwoHosts {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        let subnet = NEXT.fetch_add(1, Ordering::Relaxed);
        let hosts = TwoHosts {
            a: NetNs::create(),
            b: NetNs::create(),
            subnet,
        };

        // The pair is made inside A with its peer moved straight into B, so the fixed link
        // names never meet another test's in the host's namespace.
        ip(&[
            "-n",
            hosts.a.name(),
            "link",
            "add",
            LINK_A,
            "type",
            "veth",
            "peer",
            "name",
            LINK_B,
            "netns",
            hosts.b.name(),
        ]);
        for (ns, link, host) in [(&hosts.a, LINK_A, 1), (&hosts.b, LINK_B, 2)] {
            let v4 = format!("10.77.{subnet}.{host}/24");
            let v6 = format!("fd77:{subnet:x}::{host}/64");
            ip(&["-n", ns.name(), "addr", "add", &v4, "dev", link]);
            // nodad: the address is usable at once instead of after duplicate detection.
            ip(&["-n", ns.name(), "addr", "add", &v6, "dev", link, "nodad"]);
            ip(&["-n", ns.name(), "link", "set", link, "up"]);
        }
        hosts
    }

    pub fn a_v4(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    pub fn b_v4(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }

    pub fn b_v6(&self) -> String {
        format!("fd77:{:x}::2", self.subnet)
    }

    /// `cmd` run inside A.
    pub fn on_a(&self, cmd: &Command) -> Command {
        inside(&self.a, cmd)
    }

    /// `cmd` run inside B.
    pub fn on_b(&self, cmd: &Command) -> Command {
        inside(&self.b, cmd)
    }

    /// Takes A's end of the wire down or up (`ip link set vethA down|up`). Down, B's end
    /// loses its carrier too, and A's IPv4 routes to B go away.
    pub fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", self.a.name(), "link", "set", LINK_A, state]);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?} failed: {out:?}");
}

/// `ip netns exec NS` in front of `cmd`, keeping its arguments, environment changes and
/// working directory. `ip netns exec` replaces itself with the program, so the pid (and the
/// process group a [`Spawned`] kills) is the program's own.
pub fn inside(ns: &NetNs, cmd: &Command) -> Command {
    let mut wrapped = ns.command(cmd.get_program());
    wrapped.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Writes a fresh secret (32 random bytes, hex) to `<dir>/<name>`, mode 0600.
pub fn write_secret(dir: &TempDir, name: &str) -> PathBuf {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&dir.join(name), format!("{hex}\n").as_bytes(), 0o600)
}

/// Writes `contents` to `path` with `mode`, replacing any earlier file.
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> PathBuf {
    let _ = std::fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents).expect("write secret");
    path.to_path_buf()
}

/// `rumphijack run --server URL -- ARGV...` with `RUMPHIJACK_SECRET_FILE` set to `secret`, or
/// removed when it is `None`. Run it inside A with [`TwoHosts::on_a`].
pub fn remote_hijack<I, S>(url: &str, secret: Option<&Path>, argv: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = hijack(url, argv);
    match secret {
        Some(secret) => cmd.env(SECRET_ENV, secret),
        None => cmd.env_remove(SECRET_ENV),
    };
    cmd
}

/// A `rump_server` listening on a `tcp://` URL inside a namespace, started with `--ready-fd`
/// and waited for; killed (whole process group) and reaped on drop. Its stderr goes to
/// `<dir>/<name>.log`.
#[derive(Debug)]
pub struct RemoteServer {
    url: String,
    log: PathBuf,
    child: Option<Child>,
}

/// How a server that was expected to refuse to start ended.
#[derive(Debug)]
pub struct Refusal {
    /// The exit code, or `None` when it became ready instead (it is then killed).
    pub code: Option<i32>,
    pub log: String,
}

impl RemoteServer {
    /// `rump_server ARGS... URL` inside `ns`; fails the test unless it becomes ready.
    pub fn start(ns: &NetNs, dir: &TempDir, name: &str, args: &[&OsStr], url: &str) -> Self {
        let (mut server, ready_pipe) = RemoteServer::spawn(ns, dir, name, args, url);
        let ready = read_ready_line(ready_pipe, READY_TIMEOUT);
        if ready.as_deref() != Some("READY\n") {
            let status = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            server.kill();
            panic!(
                "rump_server {url} did not become ready within {READY_TIMEOUT:?} \
                 (read {ready:?}, status {:?})\n--- server log ---\n{}",
                status.map(exit_code),
                server.log()
            );
        }
        server
    }

    /// `rump_server ARGS... URL` inside `ns`, expected to refuse to start: returns its exit
    /// code and log, or `code: None` if it became ready after all.
    pub fn refused(ns: &NetNs, dir: &TempDir, name: &str, args: &[&OsStr], url: &str) -> Refusal {
        let (mut server, ready_pipe) = RemoteServer::spawn(ns, dir, name, args, url);
        let ready = read_ready_line(ready_pipe, READY_TIMEOUT);
        if ready.as_deref() == Some("READY\n") {
            server.kill();
            return Refusal {
                code: None,
                log: server.log(),
            };
        }
        let mut child = server.child.take().expect("just spawned");
        let deadline = Instant::now() + READY_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                panic!(
                    "rump_server {url} neither became ready nor exited\n{}",
                    server.log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        Refusal {
            code: Some(exit_code(status)),
            log: server.log(),
        }
    }

    /// Starts the server; returns it and the read end of its readiness pipe.
    fn spawn(ns: &NetNs, dir: &TempDir, name: &str, args: &[&OsStr], url: &str) -> (Self, OwnedFd) {
        let log_path = dir.join(&format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open server log");
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");

        let mut cmd = ns.command(rump_server());
        cmd.args(args)
            .arg("--ready-fd")
            .arg(ready_w.as_raw_fd().to_string())
            .arg(url)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0);
        let ready_fd = ready_w.as_raw_fd();
        // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and touches
        // only the child's descriptor table. The pipe is CLOEXEC in the parent so that children
        // spawned concurrently by other tests never inherit it; only this child keeps it, and
        // `ip netns exec` passes it on to rump_server when it execs.
        unsafe {
            cmd.pre_exec(move || {
                fcntl(ready_fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn ip netns exec rump_server");
        drop(ready_w);
        let server = RemoteServer {
            url: url.to_string(),
            log: log_path,
            child: Some(child),
        };
        (server, ready_r)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything the server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the server process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for RemoteServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two hosts, a stack server in B listening on [`SERVER_PORT`], its secret, and `rr.py`.
/// Fields drop in order: the server leaves B before the namespaces go, the directory last.
#[derive(Debug)]
pub struct Remote {
    pub server: RemoteServer,
    pub hosts: TwoHosts,
    pub secret: PathBuf,
    pub script: PathBuf,
    pub dir: TempDir,
}

/// Which of B's addresses the stack server listens on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Listen {
    V4,
    V6,
}

impl Remote {
    /// The whole setup, or `None` (after a loud skip) when root or a program is missing.
    pub fn start(test: &str, listen: Listen) -> Option<Remote> {
        if !require_root(test) {
            return None;
        }
        for program in ["ip", "python3", "curl"] {
            if !require_program(test, program) {
                return None;
            }
        }
        let dir = TempDir::new(test);
        let hosts = TwoHosts::create();
        let secret = write_secret(&dir, "secret");
        let url = match listen {
            Listen::V4 => format!("tcp://{}:{SERVER_PORT}", hosts.b_v4()),
            Listen::V6 => format!("tcp://[{}]:{SERVER_PORT}", hosts.b_v6()),
        };
        let args = [OsStr::new("--secret-file"), secret.as_os_str()];
        let server = RemoteServer::start(&hosts.b, &dir, "rump_server", &args, &url);
        Some(Remote {
            server,
            hosts,
            secret,
            script: write_remote_helper(&dir),
            dir,
        })
    }

    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// `ARGV` on A under rumphijack with the right secret, its sockets in B's stack.
    pub fn hijacked(&self, argv: Vec<OsString>) -> Command {
        self.hosts
            .on_a(&remote_hijack(self.url(), Some(&self.secret), argv))
    }

    /// `python3 rr.py ARGS...` on A under rumphijack.
    pub fn hijacked_py(&self, args: &[&str]) -> Command {
        self.hijacked(self.py_argv(args))
    }

    /// `python3 rr.py ARGS...` run natively in `ns`.
    pub fn native_py(&self, ns: &NetNs, args: &[&str]) -> Command {
        native_py(ns, &self.script, args)
    }

    /// `python3 -u rr.py ARGS...` as a list, for wrapping in other commands.
    pub fn py_argv(&self, args: &[&str]) -> Vec<OsString> {
        py_argv(&self.script, args)
    }

    /// `python3 -m http.server --bind BIND PORT` natively in B, serving `page.txt` with
    /// `page` in it. Returns once it listens.
    pub fn http_on_b(&self, bind: &str, port: u16, page: &str) -> Spawned {
        let www = write_www(&self.dir, page);
        let argv = http_server_argv(&www, bind, port);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let mut http = Spawned::start(inside(&self.hosts.b, &cmd), self.dir.path(), "http-b");
        http.wait_for_line(TIMEOUT, |l| l.starts_with("Serving HTTP"));
        http
    }

    /// `rr.py serve PORT HOSTS...` natively in B: TCP (echo, sink, source, half-close) and UDP
    /// echo on each host. Returns once it listens.
    pub fn serve_on_b(&self, port: u16, hosts: &[&str]) -> Spawned {
        let mut args = vec!["serve".to_string(), port.to_string()];
        args.extend(hosts.iter().map(|h| h.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cmd = self.native_py(&self.hosts.b, &args);
        let mut service = Spawned::start(cmd, self.dir.path(), &format!("serve-{port}"));
        service.wait_for_line(TIMEOUT, |l| l == "listening");
        service
    }
}

/// `python3 -u SCRIPT ARGS...` as a list.
pub fn py_argv(script: &Path, args: &[&str]) -> Vec<OsString> {
    let mut argv = vec![
        python3().as_os_str().to_owned(),
        "-u".into(),
        script.as_os_str().to_owned(),
    ];
    argv.extend(args.iter().map(OsString::from));
    argv
}

/// `python3 -u SCRIPT ARGS...` run natively in `ns`.
pub fn native_py(ns: &NetNs, script: &Path, args: &[&str]) -> Command {
    let argv = py_argv(script, args);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    inside(ns, &cmd)
}

/// Writes `<dir>/www/page.txt` holding `page` and returns the `www` directory.
pub fn write_www(dir: &TempDir, page: &str) -> PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("create www");
    std::fs::write(www.join("page.txt"), page).expect("write page.txt");
    www
}

/// `python3 -u -m http.server --bind BIND --directory WWW PORT`; it prints a line starting
/// with `Serving HTTP` once it listens.
pub fn http_server_argv(www: &Path, bind: &str, port: u16) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![python3().into(), "-u".into(), "-m".into()];
    for arg in ["http.server", "--bind", bind, "--directory"] {
        argv.push(arg.into());
    }
    argv.push(www.into());
    argv.push(port.to_string().into());
    argv
}

/// `curl -sS --noproxy '*' --max-time 20 EXTRA... URL`: fails with status 7 when the
/// connection is refused.
pub fn curl(url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "20"])
        .args(extra)
        .arg(url);
    cmd
}

/// [`curl`] as an argument list, for running under rumphijack.
pub fn curl_argv(url: &str, extra: &[&str]) -> Vec<OsString> {
    let cmd = curl(url, extra);
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_owned)
        .collect()
}
