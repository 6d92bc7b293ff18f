//! `rh.py`: the Python side of the tests (echo server, clients, an interactive client, a
//! recorder that logs every connection and datagram it receives, audit-file flattening).
//!
//! Every mode prints a line when it is ready or done, so tests synchronise on output rather
//! than on sleeps.

use std::path::PathBuf;

use crate::TempDir;

/// Writes `rh.py` into `dir` and returns its path.
pub fn write_helper(dir: &TempDir) -> PathBuf {
    dir.write("rh.py", SCRIPT)
}

const SCRIPT: &str = r#"
import errno, fcntl, os, socket, sys, threading

SIOCGSKNS = 0x894C

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET

def echo_stream(conn):
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)

def accept_loop(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo_stream, args=(conn,), daemon=True).start()

def udp_loop(sock):
    while True:
        data, peer = sock.recvfrom(4096)
        sock.sendto(data, peer)

def echo_server(port, hosts):
    for host in hosts:
        tcp = socket.socket(family(host), socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        tcp.listen(128)
        threading.Thread(target=accept_loop, args=(tcp,), daemon=True).start()
        udp = socket.socket(family(host), socket.SOCK_DGRAM)
        udp.bind((host, port))
        threading.Thread(target=udp_loop, args=(udp,), daemon=True).start()
    print("listening", flush=True)
    threading.Event().wait()

def tcp_echo(host, port, msg):
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(msg.encode())
        got = b""
        while len(got) < len(msg):
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
        return got.decode()

def udp_echo(host, port, msg):
    with socket.socket(family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        for _ in range(5):
            sock.sendto(msg.encode(), (host, port))
            try:
                return sock.recvfrom(4096)[0].decode()
            except socket.timeout:
                continue
        raise OSError("no UDP reply")

def threads(n, port):
    barrier = threading.Barrier(n)
    results = [None] * n
    def one(i):
        barrier.wait()
        try:
            results[i] = tcp_echo("127.0.0.1", port, "thread-%d" % i) == "thread-%d" % i
        except OSError as e:
            results[i] = e
    workers = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    bad = [r for r in results if r is not True]
    print("threads ok %d" % n if not bad else "threads failed %r" % bad, flush=True)
    sys.exit(1 if bad else 0)

def forks(n, port):
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                ok = tcp_echo("127.0.0.1", port, "fork-%d" % i) == "fork-%d" % i
            except OSError:
                ok = False
            os._exit(0 if ok else 1)
        pids.append(pid)
    failed = sum(1 for pid in pids if os.waitpid(pid, 0)[1] != 0)
    print("forks ok %d" % n if not failed else "forks failed %d" % failed, flush=True)
    sys.exit(1 if failed else 0)

def netns_of_new_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        nsfd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
        try:
            return os.fstat(nsfd).st_ino
        finally:
            os.close(nsfd)

def interactive():
    conn = None
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "connect":
                conn = socket.create_connection(("127.0.0.1", int(arg)), timeout=5)
                print("connected", flush=True)
            elif cmd == "echo":
                conn.sendall(arg.encode())
                print("echo " + conn.recv(4096).decode(), flush=True)
            elif cmd == "socket":
                socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
                print("socket ok", flush=True)
            elif cmd == "netns":
                print("netns %d" % netns_of_new_socket(), flush=True)
            elif cmd == "exit":
                return
            else:
                print("unknown command " + cmd, flush=True)
        except OSError as e:
            print("%s err %s" % (cmd, errno.errorcode.get(e.errno, e)), flush=True)

def split_endpoint(spec):
    """'tcp:[::1]:80' -> ('tcp', '::1', 80)."""
    proto, rest = spec.split(":", 1)
    host, port = rest.rsplit(":", 1)
    return proto, host.strip("[]"), int(port)

def show(addr):
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)

def failure(e):
    return "%s %s %s" % (errno.errorcode.get(e.errno, e.errno), type(e).__name__, e)

def recorder(log_path, specs):
    """Listens on every endpoint it can, logs each connection and datagram, answers TCP with
    a tiny HTTP response and echoes UDP. Bind/listen failures are reported, not fatal."""
    lock = threading.Lock()
    log = open(log_path, "a")
    def record(line):
        with lock:
            log.write(line + "\n")
            log.flush()
    def serve(conn, local, peer):
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(4096)
            except OSError:
                pass
            body = ("recorded %s\n" % peer).encode()
            head = "HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            try:
                conn.sendall((head % len(body)).encode() + body)
            except OSError:
                pass
    def accept_loop(sock):
        while True:
            try:
                conn, peer = sock.accept()
            except OSError as e:
                record("accept-error %s" % failure(e))
                continue
            local, peer = show(conn.getsockname()), show(peer)
            record("tcp %s from %s" % (local, peer))
            threading.Thread(target=serve, args=(conn, local, peer), daemon=True).start()
    def datagram_loop(sock):
        local = show(sock.getsockname())
        while True:
            data, peer = sock.recvfrom(4096)
            record("udp %s from %s data %s" % (local, show(peer), data.decode(errors="replace")))
            sock.sendto(data, peer)
    for spec in specs:
        proto, host, port = split_endpoint(spec)
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(family(host), kind)
        if ":" in host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            print("bind %s err %s" % (spec, failure(e)), flush=True)
            continue
        if proto == "udp":
            threading.Thread(target=datagram_loop, args=(sock,), daemon=True).start()
            print("bind %s ok" % spec, flush=True)
            continue
        try:
            sock.listen(128)
        except OSError as e:
            print("listen %s err %s" % (spec, failure(e)), flush=True)
            continue
        threading.Thread(target=accept_loop, args=(sock,), daemon=True).start()
        print("listen %s ok" % spec, flush=True)
    print("listening", flush=True)
    threading.Event().wait()

def attempt(op, proto, host, port, source):
    """One connect or sendto; prints `OP ok ...` or `OP err ERRNAME TYPE MESSAGE`."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family(host), kind) as sock:
        sock.settimeout(5)
        try:
            if source:
                sock.bind((source, 0))
            if op == "sendto":
                sock.sendto(b"python", (host, port))
                print("sendto ok", flush=True)
                return 0
            sock.connect((host, port))
        except OSError as e:
            print("%s err %s" % (op, failure(e)), flush=True)
            return 1
        print("connect ok", flush=True)
        try:
            sock.sendall(b"python\n")
            reply = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            body = reply.decode(errors="replace").rsplit("\r\n\r\n", 1)[-1].strip()
            print("reply %s" % (body or "<nothing>"), flush=True)
        except OSError as e:
            print("reply err %s" % failure(e), flush=True)
        return 0

def audit_fields(path):
    """Each JSON line as sorted `key=<json value>` words; spaces inside values become `_`."""
    import json
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if not isinstance(record, dict):
                sys.exit("audit line is not an object: " + line)
            words = ["%s=%s" % (k, json.dumps(v).replace(" ", "_"))
                     for k, v in sorted(record.items())]
            print(" ".join(words), flush=True)

def main(argv):
    mode = argv[0]
    if mode == "echo-server":
        echo_server(int(argv[1]), argv[2:] or ["127.0.0.1"])
    elif mode == "tcp":
        print(tcp_echo(argv[1], int(argv[2]), argv[3]), flush=True)
    elif mode == "udp":
        print(udp_echo(argv[1], int(argv[2]), argv[3]), flush=True)
    elif mode == "threads":
        threads(int(argv[1]), int(argv[2]))
    elif mode == "forks":
        forks(int(argv[1]), int(argv[2]))
    elif mode == "interactive":
        interactive()
    elif mode == "recorder":
        recorder(argv[1], argv[2:])
    elif mode == "try":
        source = argv[5] if len(argv) > 5 else None
        sys.exit(attempt(argv[1], argv[2], argv[3], int(argv[4]), source))
    elif mode == "audit-fields":
        audit_fields(argv[1])
    else:
        sys.exit("rh.py: unknown mode " + mode)

main(sys.argv[1:])
"#;
