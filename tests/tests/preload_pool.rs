//! The preload library's socket pool: sockets made ahead of time by the server and handed out
//! without a round trip must be indistinguishable from ones asked for one by one — fresh, of
//! the kind and flags asked for, numbered as native socket(2) numbers them, from the server's
//! stack — and must never be shared between a forked child and its parent, nor survive a
//! program that closes or reuses every descriptor.
//!
//! The programs are Python, calling libc's `socket` through `ctypes` so that the exact `type`
//! flags reach the library. The stack is isolated, so a socket's network namespace (from the
//! `SIOCGSKNS` ioctl, which needs root) tells a redirected socket from a host one.

use rumphijack_tests::preload::preload;
use rumphijack_tests::{argv, python3, require_program, rumphijack_cmd, run, Server, TempDir};

const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Python helpers shared by the programs below.
const HELPERS: &str = r#"
import ctypes, fcntl, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
SIOCGSKNS = 0x894C
HOST_NS = os.stat("/proc/self/ns/net").st_ino
CAN_SEE_NS = os.geteuid() == 0

def lowest_free():
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    return fd

def make(domain, ty, proto=0):
    fd = libc.socket(domain, ty, proto)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "socket")
    return fd

def describe(fd):
    s = socket.socket(fileno=fd)
    try:
        dom = s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        ty = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        name = s.getsockname()
        reuse = s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    finally:
        s.detach()
    nonblock = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
    cloexec = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    return dom, ty, name, reuse, nonblock, cloexec

def in_server_stack(fd):
    if not CAN_SEE_NS:
        return True
    ns = fcntl.ioctl(fd, SIOCGSKNS)
    try:
        return os.fstat(ns).st_ino != HOST_NS
    finally:
        os.close(ns)

def check_kinds(rounds):
    kinds = [(socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_INET6, socket.SOCK_STREAM, 6),
             (socket.AF_INET, socket.SOCK_DGRAM, 17), (socket.AF_INET6, socket.SOCK_DGRAM, 0)]
    flag_sets = [0, socket.SOCK_NONBLOCK, socket.SOCK_CLOEXEC,
                 socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC]
    count = 0
    for r in range(rounds):
        for dom, ty, proto in kinds:
            for flags in flag_sets:
                want = lowest_free()
                fd = make(dom, ty | flags, proto)
                assert fd == want, f"got fd {fd}, native would give {want}"
                got = describe(fd)
                assert got[0] == dom and got[1] == ty, f"kind {got} for {dom} {ty}"
                assert got[2][1] == 0 and got[3] == 0, f"not fresh: {got}"
                assert got[4] == bool(flags & socket.SOCK_NONBLOCK), f"O_NONBLOCK {got}"
                assert got[5] == bool(flags & socket.SOCK_CLOEXEC), f"FD_CLOEXEC {got}"
                assert in_server_stack(fd), "socket from the host stack"
                os.close(fd)
                count += 1
    return count
"#;

fn program(body: &str) -> String {
    format!("{HELPERS}\n{body}")
}

#[test]
fn pooled_sockets_have_the_kind_flags_and_number_asked_for() {
    let test = "pooled_sockets_have_the_kind_flags_and_number_asked_for";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "a");

    // 40 rounds of 16 sockets: every kind's pool is emptied and refilled several times.
    let code = program("print('checked', check_kinds(40), flush=True)");
    let out = run(
        preload(Some(&server.url()), argv![python3(), "-c", code]),
        DEADLINE,
    );
    out.assert_success("pooled sockets must be what was asked for");
    assert!(out.stdout.contains("checked 640"), "{out}");
    assert!(out.stderr.is_empty(), "no library messages\n{out}");
}

#[test]
fn hybrid_pooled_sockets_have_the_kind_flags_and_number_asked_for() {
    let test = "hybrid_pooled_sockets_have_the_kind_flags_and_number_asked_for";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "a");
    let code = program("print('checked', check_kinds(10), flush=True)");
    let mut cmd = rumphijack_cmd();
    cmd.args(["run", "--preload", "--server", &server.url(), "--"])
        .arg(python3())
        .args(["-c", &code]);
    let out = run(cmd, DEADLINE);
    out.assert_success("pooled sockets in hybrid mode must be what was asked for");
    assert!(out.stdout.contains("checked 160"), "{out}");
}

#[test]
fn forked_child_and_parent_never_get_the_same_socket() {
    let test = "forked_child_and_parent_never_get_the_same_socket";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "a");

    // The parent fills its pools first, so the child inherits pooled sockets. Both then take
    // sockets and bind each one: a shared socket would fail its second bind, and shows as the
    // same inode in both lists.
    let body = r#"
def take(n):
    got = []
    for _ in range(n):
        fd = make(socket.AF_INET, socket.SOCK_STREAM)
        s = socket.socket(fileno=fd)
        s.bind(("127.0.0.1", 0))
        s.detach()
        got.append(os.fstat(fd).st_ino)
    return got

os.close(make(socket.AF_INET, socket.SOCK_STREAM))
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, (" ".join(map(str, take(40)))).encode())
    os._exit(0)
os.close(w)
mine = take(40)
theirs = b""
while True:
    chunk = os.read(r, 65536)
    if not chunk:
        break
    theirs += chunk
_, status = os.waitpid(pid, 0)
assert status == 0, f"child failed: {status}"
theirs = list(map(int, theirs.split()))
assert len(theirs) == 40 and len(set(mine)) == 40 and len(set(theirs)) == 40
shared = set(mine) & set(theirs)
assert not shared, f"parent and child got the same sockets: {shared}"
print("distinct", len(mine) + len(theirs), flush=True)
"#;
    let out = run(
        preload(Some(&server.url()), argv![python3(), "-c", program(body)]),
        DEADLINE,
    );
    out.assert_success("a child must never hand out a socket its parent holds");
    assert!(out.stdout.contains("distinct 80"), "{out}");
}

#[test]
fn program_that_closes_or_reuses_every_descriptor_still_gets_sockets() {
    let test = "program_that_closes_or_reuses_every_descriptor_still_gets_sockets";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let server = Server::isolated(dir.path(), "a");

    // First a dup2 over every pooled number (the library must leave the program's
    // /dev/null there alone), then a daemon-style close of 3..1024.
    let body = r#"
os.close(make(socket.AF_INET, socket.SOCK_STREAM))
os.close(make(socket.AF_INET, socket.SOCK_DGRAM))
pooled = [int(n) for n in os.listdir("/proc/self/fd")
          if int(n) >= 64 and os.readlink(f"/proc/self/fd/{n}").startswith("socket:")]
null = os.open("/dev/null", os.O_RDONLY)
for n in pooled:
    os.dup2(null, n)
for _ in range(40):
    os.close(make(socket.AF_INET, socket.SOCK_STREAM))
    os.close(make(socket.AF_INET, socket.SOCK_DGRAM))
for n in pooled:
    assert os.readlink(f"/proc/self/fd/{n}") == "/dev/null", f"fd {n} was touched"
print("reused", len(pooled), flush=True)

os.closerange(3, 1024)
print("checked", check_kinds(3), flush=True)
"#;
    let out = run(
        preload(Some(&server.url()), argv![python3(), "-c", program(body)]),
        DEADLINE,
    );
    out.assert_success("sockets must keep working after the program reuses our numbers");
    assert!(out.stdout.contains("checked 48"), "{out}");
    assert!(
        !out.stdout.contains("reused 0"),
        "the pool must have held sockets\n{out}"
    );
}
