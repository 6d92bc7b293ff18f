//! Named network namespaces made by a test (`ip netns`), so no test touches the host's own
//! interfaces.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `ip netns add rh-<pid>-<n>`; `ip netns del` on drop. Needs root.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn create() -> NetNs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("rh-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, usable as `rump_server --netns PATH`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME PROGRAM` — a command to complete with arguments.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Adds an extra interface named `link` so the namespace differs from a fresh one.
    /// Tries `dummy`, then `bridge`, then `veth`: kernels ship different link types.
    pub fn add_link(&self, link: &str) {
        let attempts: [&[&str]; 3] = [
            &["ip", "link", "add", link, "type", "dummy"],
            &["ip", "link", "add", link, "type", "bridge"],
            &[
                "ip",
                "link",
                "add",
                link,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{link}p"),
            ],
        ];
        for argv in attempts {
            if self
                .command(argv[0])
                .args(&argv[1..])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return;
            }
        }
        panic!("could not add any interface {link} to netns {}", self.name);
    }

    fn exec(&self, argv: &[&str]) {
        let out = self
            .command(argv[0])
            .args(&argv[1..])
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "ip netns exec {} {argv:?}: {out:?}",
            self.name
        );
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?} failed: {out:?}");
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
