//! Regression tests for defects found in review, one per defect, named after what broke.

use std::ffi::OsStr;
use std::time::Duration;

use rumphijack_tests::policy::hijack_with_policy;
use rumphijack_tests::preload::preload;
use rumphijack_tests::{require_program, require_root, rumphijack_cmd, run, Server, TempDir};

const DEADLINE: Duration = Duration::from_secs(30);

/// Listens on 127.0.0.1:PORT with TCP Fast Open enabled, then sends "hi" to it with
/// `MSG_FASTOPEN` from a fresh socket, and reports whether any connection arrived.
const FASTOPEN: &str = r#"
import socket, sys
port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
srv.bind(("127.0.0.1", port)); srv.listen(); srv.settimeout(1)
c = socket.socket()
try:
    c.sendto(b"hi", socket.MSG_FASTOPEN, ("127.0.0.1", port))
    print("sent")
except OSError as e:
    print("refused", e.errno)
try:
    srv.accept()
    print("arrived")
except socket.timeout:
    print("nothing arrived")
"#;

fn deny_connect_policy(dir: &TempDir, port: u16) -> std::path::PathBuf {
    dir.write(
        "deny.toml",
        &format!(
            "default = \"allow\"\n\n[[rule]]\nop = \"connect\"\naddr = \"loopback\"\n\
             port = {port}\naction = \"deny\"\n"
        ),
    )
}

fn assert_fastopen_refused(out: &rumphijack_tests::Finished, how: &str) {
    out.assert_success(how);
    assert!(
        out.stdout.contains(&format!("refused {}", libc::EACCES))
            && out.stdout.contains("nothing arrived"),
        "{how}: a MSG_FASTOPEN send must be decided by the connect rules\n{out}"
    );
}

#[test]
fn tcp_fast_open_send_is_checked_against_connect_rules() {
    let name = "tcp_fast_open_send_is_checked_against_connect_rules";
    if !require_root(name) {
        return;
    }
    let dir = TempDir::new(name);
    let server = Server::isolated(dir.path(), "a");
    let script = dir.write("fastopen.py", FASTOPEN);
    let policy = deny_connect_policy(&dir, 9911);

    let argv = [
        OsStr::new("python3"),
        script.as_os_str(),
        OsStr::new("9911"),
    ];
    let cmd = hijack_with_policy(&server.url(), &policy, None, argv);
    assert_fastopen_refused(&run(cmd, DEADLINE), "supervisor");

    let url = server.url();
    let mut cmd = preload(Some(url.as_str()), argv);
    cmd.env("RUMPHIJACK_POLICY", &policy);
    assert_fastopen_refused(&run(cmd, DEADLINE), "preload library");
}

#[test]
fn pinned_program_cannot_setns_with_a_set_of_namespace_types() {
    let name = "pinned_program_cannot_setns_with_a_set_of_namespace_types";
    if !require_root(name) || !require_program(name, "unshare") {
        return;
    }
    // A process in another network namespace to aim at.
    let mut target = std::process::Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .spawn()
        .expect("start unshare -n sleep");
    let script = format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         fd = os.pidfd_open({pid})\n\
         for flags in (0x40000000, 0x40000000 | 0x10000000, 0):\n\
         \x20   r = libc.setns(fd, flags)\n\
         \x20   print(hex(flags), r, ctypes.get_errno())\n",
        pid = target.id()
    );
    let mut cmd = rumphijack_cmd();
    cmd.args(["run", "--", "python3", "-c", &script]);
    let out = run(cmd, DEADLINE);
    let _ = target.kill();
    let _ = target.wait();
    out.assert_success("setns under the pinned supervisor");
    for flags in ["0x40000000", "0x50000000", "0x0"] {
        assert!(
            out.stdout.contains(&format!("{flags} -1 {}", libc::EPERM)),
            "setns({flags}) must be refused with EPERM\n{out}"
        );
    }
}

#[test]
fn a_cmsg_length_near_the_top_of_the_range_gets_einval_and_service_continues() {
    let name = "a_cmsg_length_near_the_top_of_the_range_gets_einval_and_service_continues";
    if !require_root(name) {
        return;
    }
    let dir = TempDir::new(name);
    let server = Server::isolated(dir.path(), "a");
    let policy = dir.write(
        "send.toml",
        "default = \"allow\"\n\n[[rule]]\nop = \"send\"\naddr = \"loopback\"\naction = \"allow\"\n",
    );
    // Two control messages: a well-formed empty one, then one claiming 2^64-16 bytes.
    let script = r#"
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
name = socket.inet_aton("127.0.0.1")
addr = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(s.getsockname()[1]), name)
control = struct.pack("=Qii", 16, socket.SOL_SOCKET, 1) + struct.pack("=Qii", 2**64 - 16, 1, 1)
data = ctypes.create_string_buffer(b"x")
iov = struct.pack("=QQ", ctypes.addressof(data), 1)
abuf, ibuf, cbuf = (ctypes.create_string_buffer(b, len(b)) for b in (addr, iov, control))
msg = struct.pack("=QI4xQQQQi4x", ctypes.addressof(abuf), len(addr), ctypes.addressof(ibuf), 1,
                  ctypes.addressof(cbuf), len(control), 0)
mbuf = ctypes.create_string_buffer(msg, len(msg))
for _ in range(6):
    r = libc.sendmsg(s.fileno(), mbuf, 0)
    print("sendmsg", r, ctypes.get_errno())
print("after", s.sendto(b"ok", s.getsockname()))
"#;
    let cmd = hijack_with_policy(&server.url(), &policy, None, ["python3", "-c", script]);
    let out = run(cmd, DEADLINE);
    out.assert_success("hostile control length");
    assert_eq!(
        out.stdout
            .matches(&format!("sendmsg -1 {}", libc::EINVAL))
            .count(),
        6,
        "each call fails with EINVAL, as natively\n{out}"
    );
    assert!(
        out.stdout.contains("after 2"),
        "the supervisor keeps serving\n{out}"
    );
}

#[test]
fn the_program_starts_with_sigpipe_at_its_default() {
    let name = "the_program_starts_with_sigpipe_at_its_default";
    let native = run(
        {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", "grep SigIgn /proc/self/status"]);
            c
        },
        DEADLINE,
    );
    let mut cmd = rumphijack_cmd();
    cmd.args(["run", "--", "sh", "-c", "grep SigIgn /proc/self/status"]);
    let supervised = run(cmd, DEADLINE);
    supervised.assert_success(name);
    assert_eq!(
        supervised.stdout, native.stdout,
        "ignored signals must be the caller's, not the supervisor's (SIGPIPE)"
    );
}
