//! What a benchmark run needs before it measures: the binaries, a work directory with the
//! policy files, and the external stack server.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::launch;
use crate::relay::TwoStacks;
use crate::scenarios::PolicyRule;
use crate::sys;

/// Default allow; `connect` to loopback allowed by a rule, so that `connect` is trapped.
const CONNECT_POLICY: &str = "\
# Written by the benchmark harness: every connect() is checked (and allowed).
default = \"allow\"

[[rule]]
comment = \"benchmark: connections to loopback\"
op = \"connect\"
addr = \"loopback\"
action = \"allow\"
";

/// Default allow; `send` to loopback allowed by a rule, so that `sendto` is trapped.
const SEND_POLICY: &str = "\
# Written by the benchmark harness: every sendto() with an address is checked (and allowed).
default = \"allow\"

[[rule]]
comment = \"benchmark: datagrams to loopback\"
op = \"send\"
addr = \"loopback\"
action = \"allow\"
";

/// Where each program is; optional ones are `None` when not installed or not built.
#[derive(Debug)]
pub struct Tools {
    pub bin_dir: PathBuf,
    pub rumphijack: PathBuf,
    pub rump_server: PathBuf,
    pub load: PathBuf,
    pub library: Option<PathBuf>,
    pub truth: PathBuf,
    pub strace: Option<PathBuf>,
    pub slirp4netns: Option<PathBuf>,
    pub pasta: Option<PathBuf>,
    pub unshare: Option<PathBuf>,
    pub nsenter: Option<PathBuf>,
}

impl Tools {
    /// Finds the workspace binaries in `bin_dir` (default: next to this executable) and the
    /// peers in `PATH`.
    pub fn find(bin_dir: Option<&Path>) -> Result<Tools> {
        let bin_dir = match bin_dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .context("the harness executable has no directory")?
                .to_path_buf(),
        };
        let product = |name: &str| -> Result<PathBuf> {
            let path = bin_dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{name} not found in {}: build the workspace first (cargo build --release)",
                bin_dir.display()
            );
            Ok(path)
        };
        let library = Some(bin_dir.join("librumphijack.so")).filter(|p| p.is_file());
        Ok(Tools {
            rumphijack: product("rumphijack")?,
            rump_server: product("rump_server")?,
            load: product("bench-load")?,
            library,
            truth: in_path("true").context("`true` not found in PATH")?,
            strace: in_path("strace"),
            slirp4netns: in_path("slirp4netns"),
            pasta: in_path("pasta"),
            unshare: in_path("unshare"),
            nsenter: in_path("nsenter"),
            bin_dir,
        })
    }
}

/// The first executable called `name` in `PATH`.
pub fn in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Everything a measurement refers to. Dropping it stops the server and removes the files.
#[derive(Debug)]
pub struct Bench {
    pub tools: Tools,
    pub workdir: PathBuf,
    /// The external server's URL (supervisor-ext and preload modes).
    pub server_url: String,
    /// Why the external server is not there, as a table cell.
    pub server_error: Option<String>,
    /// The network namespace the external server hosts, which the embedded-server modes
    /// host too (`--netns`), so that every redirected mode uses the same fresh stack.
    pub stack_netns: Option<PathBuf>,
    server: Option<Child>,
    /// The server's child that holds the namespace.
    stack: Option<u32>,
    /// Namespaces A and B of the relay scenarios, made when a scenario first needs them.
    two_stacks: OnceLock<TwoStacks>,
}

impl Bench {
    pub fn new(tools: Tools) -> Result<Bench> {
        let workdir = std::env::temp_dir().join(format!("rumphijack-bench.{}", std::process::id()));
        fs::create_dir_all(&workdir).with_context(|| format!("create {}", workdir.display()))?;
        fs::write(workdir.join("connect-rule.toml"), CONNECT_POLICY)?;
        fs::write(workdir.join("send-rule.toml"), SEND_POLICY)?;
        let server_url = format!("unix://{}", workdir.join("stack").display());

        let mut bench = Bench {
            tools,
            workdir,
            server_url,
            server_error: None,
            stack_netns: None,
            stack: None,
            server: None,
            two_stacks: OnceLock::new(),
        };
        match bench.start_server() {
            Ok(child) => {
                bench.stack = find_stack(child.id());
                bench.stack_netns = bench.stack.map(|pid| format!("/proc/{pid}/ns/net").into());
                bench.server = Some(child);
            }
            Err(e) => bench.server_error = Some(format!("n/a: rump_server failed: {e:#}")),
        }
        Ok(bench)
    }

    /// `rump_server --isolated`: a fresh namespace with only `lo`, shared by every
    /// supervisor-ext and preload run (and their servers) of this invocation.
    fn start_server(&self) -> Result<Child> {
        let mut cmd = Command::new(&self.tools.rump_server);
        cmd.arg("--isolated")
            .arg("--ready-fd")
            .arg(sys::READY_FD.to_string())
            .arg(&self.server_url)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        launch::spawn_until_ready(&mut cmd, Duration::from_secs(10))
    }

    /// Namespaces A and B joined by a veth pair, with `rump_server tcp://` in B: set up on the
    /// first call (only runs with a relay scenario need root for it).
    pub fn two_stacks(&self) -> &TwoStacks {
        self.two_stacks.get_or_init(|| TwoStacks::new(self))
    }

    /// The policy file for `rule`.
    pub fn policy(&self, rule: PolicyRule) -> PathBuf {
        self.workdir.join(match rule {
            PolicyRule::Connect => "connect-rule.toml",
            PolicyRule::Send => "send-rule.toml",
        })
    }
}

/// The process holding the namespace `rump_server --isolated` (pid `server`) hosts: the
/// server itself when it entered the namespace, else its child in another namespace (how it
/// does it depends on how it was started). A child may appear only after READY.
fn find_stack(server: u32) -> Option<u32> {
    for _ in 0..200 {
        if let Some(pid) = stack_child(server) {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn stack_child(server: u32) -> Option<u32> {
    // Any thread of the server may have forked it, and each lists its own children.
    let mut children = String::new();
    for task in fs::read_dir(format!("/proc/{server}/task")).ok()?.flatten() {
        children += &fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.push(' ');
    }
    let host = fs::read_link("/proc/self/ns/net").ok()?;
    let own = server.to_string();
    std::iter::once(own.as_str())
        .chain(children.split_whitespace())
        .filter_map(|pid| pid.parse().ok())
        .find(|pid| fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|id| id != host))
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            sys::terminate(server.id());
            if launch::wait_deadline(&mut server, Duration::from_secs(5)).is_err() {
                eprintln!("bench: rump_server did not stop on SIGTERM; killed");
            }
        }

        // The namespace's process can outlive the server it was forked by.
        if let Some(stack) = self.stack.take() {
            if Path::new(&format!("/proc/{stack}")).exists() {
                sys::terminate(stack);
            }
        }
        let _ = fs::remove_dir_all(&self.workdir);
    }
}
