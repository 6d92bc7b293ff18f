//! Absurd arguments to the calls the supervisor answers for relayed sockets: bad pointers,
//! huge and negative lengths, invalid flags. A program on host A under `rumphijack run
//! --server tcp://B` makes each call with raw syscalls (ctypes), so nothing in between
//! checks the arguments; the same script run natively in B gives the reference. Every call
//! must fail (or succeed) with the errno the kernel gives a native socket, and afterwards the
//! same program must still make relayed connections and move data: the supervisor and the
//! server survived, and the supervisor's descriptors did not grow. One answer differs on
//! purpose: the server refuses a client the options that reach past its socket (netfilter's).

use rumphijack_tests::remote::{native_py, py_argv, Listen, Remote};
use rumphijack_tests::{run, TIMEOUT};

const SERVICE_PORT: u16 = 9000;

/// What the kernel answers natively, for the probes whose answer the test is about: a change
/// in the kernel shows here rather than silently changing what "the same as native" means.
const NATIVE: &[(&str, &str)] = &[
    ("connect-bad-pointer", "EFAULT"),
    ("connect-len-huge", "EINVAL"),
    ("connect-len-negative", "EINVAL"),
    ("connect-len-zero", "EINVAL"),
    ("connect-len-short", "EINVAL"),
    ("bind-bad-pointer", "EFAULT"),
    ("bind-len-huge", "EINVAL"),
    ("bind-len-zero", "EINVAL"),
    ("accept4-bad-flags", "EINVAL"),
    ("getsockname-bad-pointer", "EFAULT"),
    ("getsockname-bad-len-pointer", "EFAULT"),
    ("getpeername-bad-pointer", "EFAULT"),
    ("getsockopt-bad-len-pointer", "EFAULT"),
    ("getsockopt-bad-pointer", "EFAULT"),
    ("getsockopt-len-huge", "ok len=4 value=1"),
    ("getsockopt-len-negative", "EINVAL"),
    ("setsockopt-len-huge", "ok"),
    ("setsockopt-bad-pointer", "EFAULT"),
    ("setsockopt-past-page-end", "ok"),
    ("setsockopt-linger-past-page-end", "EFAULT"),
    ("getpeername-listener-bad-len-pointer", "ENOTCONN"),
    ("sendto-len-huge-bad-buffer", "EMSGSIZE"),
    ("sendto-bad-buffer", "EFAULT"),
    ("sendto-address-len-zero", "EINVAL"),
    ("sendto-address-len-short", "EINVAL"),
    ("sendto-address-wrong-family", "EAFNOSUPPORT"),
    ("sendto-len-over-ipv4-limit", "EMSGSIZE"),
    ("recvfrom-bad-address", "EFAULT"),
];

/// The probes: `badargs.py HOST PORT ROUNDS` prints `NAME RESULT` per call, the same in
/// every round, then `fds` lines and `alive` lines.
const SCRIPT: &str = r#"
import ctypes, errno, os, platform, socket, struct, sys, time

if platform.machine() != "x86_64":
    sys.exit("badargs.py: x86_64 syscall numbers only")
SYS = dict(sendto=44, recvfrom=45, connect=42, bind=49, listen=50, getsockname=51,
           getpeername=52, setsockopt=54, getsockopt=55, accept4=288)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = 4096
HUGE = 1 << 30
NEG = 0xffffffff

def syscall(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(SYS[name], *[ctypes.c_long(a) for a in args])
    if r < 0:
        return None, errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return r, "ok"

def probe(name, call, *args):
    r, result = syscall(call, *args)
    say(name, result)
    return r

def say(*words):
    print(" ".join(str(w) for w in words), flush=True)

def addr(x):
    return ctypes.addressof(x)

# An address that faults: a page mapped with no access at all.
BAD = libc.mmap(None, PAGE, 0, 0x22, -1, 0)
# A readable and writable page followed by one that faults: EDGE is 4 bytes before the fault.
two = libc.mmap(None, 2 * PAGE, 3, 0x22, -1, 0)
libc.mprotect(two + PAGE, PAGE, 0)
EDGE = two + PAGE - 4
ctypes.memmove(EDGE, struct.pack("i", 1), 4)

def sockaddr(host, port):
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host)
    return ctypes.create_string_buffer(raw + bytes(8), 16)

def int_out(value):
    return ctypes.c_int(value)

def drain(s):
    s.setblocking(False)
    try:
        while True:
            s.recv(65536)
    except OSError:
        pass

def rounds(host, port):
    lo = sockaddr("127.0.0.1", 0)
    service = sockaddr(host, port)
    one = int_out(1)

    tcp = socket.socket()
    fd = tcp.fileno()
    probe("connect-bad-pointer", "connect", fd, BAD, 16)
    probe("connect-len-huge", "connect", fd, addr(service), HUGE)
    probe("connect-len-negative", "connect", fd, addr(service), NEG)
    probe("connect-len-zero", "connect", fd, addr(service), 0)
    probe("connect-len-zero-bad-pointer", "connect", fd, BAD, 0)
    probe("connect-len-short", "connect", fd, addr(service), 8)
    probe("bind-bad-pointer", "bind", fd, BAD, 16)
    probe("bind-len-huge", "bind", fd, addr(lo), HUGE)
    probe("bind-len-zero", "bind", fd, addr(lo), 0)
    probe("bind-len-short", "bind", fd, addr(lo), 8)
    tcp.close()

    # A listener with one connection waiting, and the client's end of it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    lfd = listener.fileno()
    client = socket.create_connection(listener.getsockname(), timeout=20)
    cfd = client.fileno()
    time.sleep(0.2)
    probe("accept4-bad-flags", "accept4", lfd, 0, 0, 0x1234)
    probe("accept4-flags-all-bits", "accept4", lfd, 0, 0, NEG)

    name = ctypes.create_string_buffer(128)
    for call in ("getsockname", "getpeername"):
        for sock, what in ((lfd, "listener"), (cfd, "client")):
            tag = "%s-%s" % (call, what) if what == "listener" else call
            n = int_out(16)
            probe(tag + "-bad-pointer", call, sock, BAD, addr(n))
            probe(tag + "-bad-len-pointer", call, sock, addr(name), BAD)
            n = int_out(NEG - (1 << 32))
            probe(tag + "-len-negative", call, sock, addr(name), addr(n))
            n = int_out(HUGE)
            r = probe(tag + "-len-huge", call, sock, addr(name), addr(n))
            if r is not None:
                say(tag + "-len-huge-len", n.value)
            n = int_out(0)
            r = probe(tag + "-len-zero-bad-pointer", call, sock, BAD, addr(n))
            if r is not None:
                say(tag + "-len-zero-bad-pointer-len", n.value)

    value = ctypes.c_int(0)
    sol, reuse = socket.SOL_SOCKET, socket.SO_REUSEADDR
    nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
    client.setsockopt(sol, reuse, 1)
    n = int_out(4)
    probe("getsockopt-bad-len-pointer", "getsockopt", cfd, sol, reuse, addr(value), BAD)
    probe("getsockopt-bad-pointer", "getsockopt", cfd, sol, reuse, BAD, addr(n))
    n = int_out(HUGE)
    r, result = syscall("getsockopt", cfd, sol, reuse, addr(value), addr(n))
    say("getsockopt-len-huge", result, *(["len=%d" % n.value, "value=%d" % value.value]
                                         if r is not None else []))
    n = int_out(NEG - (1 << 32))
    probe("getsockopt-len-negative", "getsockopt", cfd, sol, reuse, addr(value), addr(n))
    n = int_out(0)
    r, result = syscall("getsockopt", cfd, *nodelay, addr(value), addr(n))
    say("getsockopt-len-zero", result, *(["len=%d" % n.value] if r is not None else []))
    probe("setsockopt-len-huge", "setsockopt", cfd, sol, reuse, addr(one), HUGE)
    probe("setsockopt-tcp-len-huge", "setsockopt", cfd, *nodelay, addr(one), HUGE)
    probe("setsockopt-bad-pointer", "setsockopt", cfd, sol, reuse, BAD, 4)
    probe("setsockopt-bad-pointer-len-huge", "setsockopt", cfd, sol, reuse, BAD, HUGE)
    probe("setsockopt-len-negative", "setsockopt", cfd, sol, reuse, addr(one), NEG)
    probe("setsockopt-len-short", "setsockopt", cfd, sol, reuse, addr(one), 2)
    probe("setsockopt-at-page-end", "setsockopt", cfd, sol, reuse, EDGE, 4)
    probe("setsockopt-past-page-end", "setsockopt", cfd, sol, reuse, EDGE, 64)
    # SO_LINGER reads 8 bytes: past the end of the readable page.
    probe("setsockopt-linger-past-page-end", "setsockopt", cfd, sol, 13, EDGE, 8)

    # Accepting with an address that faults: the connection is taken, then EFAULT.
    n = int_out(16)
    probe("accept4-bad-pointer", "accept4", lfd, BAD, addr(n), 0)
    client.close()
    listener.close()

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    ufd = udp.fileno()
    me = sockaddr(*udp.getsockname())
    data = ctypes.create_string_buffer(70000)
    probe("sendto-len-huge-bad-buffer", "sendto", ufd, BAD, HUGE, 0, addr(me), 16)
    probe("sendto-len-huge", "sendto", ufd, addr(data), HUGE, 0, addr(me), 16)
    probe("sendto-len-over-64k", "sendto", ufd, addr(data), 70000, 0, addr(me), 16)
    probe("sendto-bad-buffer", "sendto", ufd, BAD, 100, 0, addr(me), 16)
    probe("sendto-bad-address", "sendto", ufd, addr(data), 100, 0, BAD, 16)
    probe("sendto-address-len-huge", "sendto", ufd, addr(data), 100, 0, addr(me), HUGE)
    probe("sendto-len-past-page-end", "sendto", ufd, EDGE, 64, 0, addr(me), 16)
    probe("sendto-address-len-zero", "sendto", ufd, addr(data), 10, 0, addr(me), 0)
    probe("sendto-address-len-short", "sendto", ufd, addr(data), 10, 0, addr(me), 8)
    six = ctypes.create_string_buffer(struct.pack("=H", socket.AF_INET6) + bytes(26), 28)
    probe("sendto-address-wrong-family", "sendto", ufd, addr(data), 10, 0, addr(six), 28)
    probe("sendto-len-over-ipv4-limit", "sendto", ufd, addr(data), 65508, 0, addr(me), 16)
    time.sleep(0.2)
    drain(udp)

    # Datagrams to itself, waiting to be read when the faulty recvfrom comes.
    buf = ctypes.create_string_buffer(256)
    n16, negative = int_out(16), int_out(-1)
    for what, args in (
        ("bad-address", (addr(buf), 256, 0, BAD, addr(n16))),
        ("bad-len-pointer", (addr(buf), 256, 0, addr(name), BAD)),
        ("len-negative", (addr(buf), 256, 0, addr(name), addr(negative))),
        ("bad-buffer", (BAD, 256, 0, addr(name), addr(n16))),
    ):
        udp.sendto(b"x" * 10, udp.getsockname())
        time.sleep(0.2)
        probe("recvfrom-" + what, "recvfrom", ufd, *args)
        drain(udp)
        udp.setblocking(True)
    udp.close()

def fds(pid):
    with open("/proc/%d/comm" % pid) as comm:
        return "%s:%d" % (comm.read().strip(), len(os.listdir("/proc/%d/fd" % pid)))

def alive(host, port, tag):
    with socket.create_connection((host, port), timeout=20) as conn:
        conn.sendall(("echo %s\n" % tag).encode() + tag.encode())
        got = b""
        while len(got) < len(tag):
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(20)
    u.sendto(tag.encode(), (host, port))
    back, sender = u.recvfrom(4096)
    u.close()
    say("alive tcp=%s udp=%s" % (got == tag.encode(), back == tag.encode()))

def netfilter():
    # IPT_SO_SET_REPLACE: an IP option the protocol does not know goes to netfilter, which
    # would replace the firewall of the host the socket lives on.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        blob = ctypes.create_string_buffer(256)
        probe("setsockopt-netfilter-replace", "setsockopt", s.fileno(), 0, 64, addr(blob), 256)

def main(host, port, count, supervisor):
    for i in range(count):
        rounds(host, port)
        say("end of round")
        if supervisor:
            # The supervisor drops a closed socket's relay end asynchronously: let it.
            time.sleep(0.5)
            say("fds round=%d supervisor=%s" % (i, fds(os.getppid())))
    if supervisor:
        netfilter()
    alive(host, port, "still-here")

main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "supervised")
"#;

/// The lines of one round: up to the first `end of round`.
fn first_round(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .take_while(|l| *l != "end of round")
        .collect()
}

fn result<'a>(round: &[&'a str], probe: &str) -> Option<&'a str> {
    round
        .iter()
        .find_map(|l| l.strip_prefix(probe)?.strip_prefix(' '))
}

#[test]
fn absurd_arguments_on_relayed_sockets_fail_as_natively_and_lose_nothing() {
    let test = "absurd_arguments_on_relayed_sockets_fail_as_natively_and_lose_nothing";
    let Some(mut remote) = Remote::start(test, Listen::V4) else {
        return;
    };
    let _service = remote.serve_on_b(SERVICE_PORT, &["127.0.0.1"]);
    let script = remote.dir.write("badargs.py", SCRIPT);
    let port = SERVICE_PORT.to_string();

    // The reference: the same script, natively in B, against the same service.
    let native = run(
        native_py(
            &remote.hosts.b,
            &script,
            &["127.0.0.1", &port, "1", "native"],
        ),
        TIMEOUT,
    );
    native.assert_success("the probes natively in B");
    let want = first_round(&native.stdout);
    for (probe, answer) in NATIVE {
        assert_eq!(
            result(&want, probe),
            Some(*answer),
            "the kernel's own answer to {probe} changed\n{native}"
        );
    }

    // Three rounds under the supervisor, which must give the native answers every time and
    // hold no more descriptors after the last round than after the first.
    let argv = py_argv(&script, &["127.0.0.1", &port, "3", "supervised"]);
    let relayed = run(remote.hijacked(argv), TIMEOUT * 3);
    relayed.assert_success("the probes on A under rumphijack, sockets in B's stack");
    let rounds: Vec<&str> = relayed.stdout.split("end of round\n").collect();
    assert_eq!(rounds.len(), 4, "three rounds and the rest\n{relayed}");
    let mut wrong = Vec::new();
    for round in &rounds[..3] {
        let got: Vec<&str> = round.lines().filter(|l| !l.starts_with("fds ")).collect();
        for (want_line, got_line) in want.iter().zip(&got) {
            let line = format!("native {want_line:?}, relayed {got_line:?}");
            if want_line != got_line && !wrong.contains(&line) {
                wrong.push(line);
            }
        }
        assert_eq!(want.len(), got.len(), "{relayed}");
    }
    assert!(
        wrong.is_empty(),
        "relayed sockets answer differently:\n{}\n{relayed}",
        wrong.join("\n")
    );

    let fds: Vec<&str> = relayed
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("fds "))
        .collect();
    let count = |line: &str| -> usize {
        let (_, n) = line.rsplit_once(':').expect("supervisor=COMM:COUNT");
        n.parse().expect("a descriptor count")
    };
    assert_eq!(fds.len(), 3, "{relayed}");
    assert!(
        fds[0].contains("rumphijack:"),
        "the program's parent is the supervisor"
    );
    assert!(
        count(fds[2]) <= count(fds[0]),
        "the supervisor's descriptors grew between rounds\n{relayed}"
    );
    assert!(
        relayed.stdout.contains("alive tcp=True udp=True"),
        "after the probes, a relayed connection and a datagram still work\n{relayed}"
    );
    assert!(
        relayed
            .stdout
            .contains("setsockopt-netfilter-replace ENOPROTOOPT"),
        "the server hands firewall options to no client\n{relayed}"
    );
    assert!(remote.server.is_running(), "{}", remote.server.log());
    assert!(
        remote.server.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        remote.server.log()
    );
}
