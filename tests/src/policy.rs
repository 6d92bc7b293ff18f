//! Running programs under a policy, the `policy` subcommands, and a stack with a
//! non-loopback address.
//!
//! Every policy test writes its policy into its own temporary directory, so the rules each
//! test relies on are stated in the test itself.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::{rumphijack_cmd, NetNs, Server, TempDir};

/// `rumphijack run` exit status for an invalid policy (`EX_CONFIG`).
pub const EXIT_POLICY_INVALID: i32 = 78;

/// `rumphijack policy check` exit status for an invalid policy.
pub const EXIT_CHECK_INVALID: i32 = 2;

/// `rumphijack run --policy POLICY [--audit AUDIT] --server URL -- ARGV...`.
pub fn hijack_with_policy<I, S>(
    server_url: &str,
    policy: &Path,
    audit: Option<&Path>,
    argv: I,
) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = rumphijack_cmd();
    cmd.env_remove("RUMPHIJACK_POLICY")
        .args(["run", "--policy"])
        .arg(policy);
    if let Some(audit) = audit {
        cmd.arg("--audit").arg(audit);
    }
    cmd.args(["--server", server_url, "--"]).args(argv);
    cmd
}

/// `rumphijack policy ARGS...`.
pub fn policy_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = rumphijack_cmd();
    cmd.env_remove("RUMPHIJACK_POLICY").arg("policy").args(args);
    cmd
}

/// A stack server hosting a namespace made by the test, with a veth pair `v0`/`v0p` inside
/// it: `v0` carries [`LOCAL_V4`] and [`LOCAL_V6`], `v0p` has no address. Connections to the
/// local addresses stay inside the namespace. [`SILENT_V4`] has a permanent neighbour entry
/// pointing at `v0p`, which drops what it receives: a host that swallows every SYN without
/// an ARP failure or an ICMP error. No packet leaves the namespace. Needs root.
///
/// (A `dummy` link would be simpler, but not every kernel ships that link type.)
#[derive(Debug)]
pub struct SubnetStack {
    // Field order is drop order: the server leaves the namespace before it is deleted.
    pub server: Server,
    pub netns: NetNs,
}

/// An address of the stack that is not loopback.
pub const LOCAL_V4: &str = "10.99.0.1";
/// An IPv6 address of the stack that is not loopback.
pub const LOCAL_V6: &str = "fd00:99::1";
/// An address on `d0`'s subnet that nothing answers for.
pub const SILENT_V4: &str = "10.99.0.2";

impl SubnetStack {
    pub fn start(dir: &TempDir, name: &str) -> SubnetStack {
        let netns = NetNs::create();
        let setup: [&[&str]; 6] = [
            &["link", "add", "v0", "type", "veth", "peer", "name", "v0p"],
            &["addr", "add", "10.99.0.1/24", "dev", "v0"],
            // nodad: the address is usable at once instead of after duplicate detection.
            &["addr", "add", "fd00:99::1/64", "dev", "v0", "nodad"],
            &["link", "set", "v0", "up"],
            &["link", "set", "v0p", "up"],
            &[
                "neigh",
                "add",
                SILENT_V4,
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "v0",
                "nud",
                "permanent",
            ],
        ];
        for args in setup {
            let out = netns.command("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?} in {}: {out:?}",
                netns.name()
            );
        }
        let path = netns.path();
        let server = Server::start(
            &dir.join(&format!("{name}.sock")),
            &["--netns", path.to_str().expect("utf-8 netns path")],
        );
        SubnetStack { server, netns }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// The `FILE:LINE:COL` positions mentioned in `text` for `file`, in order.
pub fn positions(text: &str, file: &Path) -> Vec<(u32, u32)> {
    let prefix = format!("{}:", file.display());
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        rest = &rest[at + prefix.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().and_then(|l| l.parse().ok());
        let col = parts.next().and_then(|c| {
            let digits: String = c.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        if let (Some(line), Some(col)) = (line, col) {
            found.push((line, col));
        }
    }
    found
}

/// One record of an `--audit` file, flattened by `rh.py audit-fields` into
/// `key=<json value>` words (strings keep their quotes, null stays `null`).
pub fn audit_records(dir: &TempDir, audit: &Path) -> Vec<String> {
    let script = crate::write_helper(dir);
    let mut cmd = Command::new(crate::python3());
    cmd.arg(script).arg("audit-fields").arg(audit);
    let out = crate::run(cmd, crate::TIMEOUT);
    out.assert_success("every line of the audit file must be a JSON object");
    out.stdout.lines().map(str::to_string).collect()
}
