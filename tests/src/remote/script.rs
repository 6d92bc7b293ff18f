//! `rr.py`: the Python side of the remote-stack tests. One program plays every role: the
//! native service on host B, the redirected clients on host A, and hostile peers of the stack
//! server's TCP port.
//!
//! Data is a deterministic pseudo-random stream (`random.Random(seed)`), so a transfer is
//! checked by comparing the SHA-256 the sender computed with the one the receiver computed,
//! without keeping either copy. Every mode prints a line when it is ready or done.

use std::path::PathBuf;

use crate::TempDir;

/// Writes `rr.py` into `dir` and returns its path.
pub fn write_remote_helper(dir: &TempDir) -> PathBuf {
    dir.write("rr.py", SCRIPT)
}

const SCRIPT: &str = r#"
import errno, fcntl, hashlib, os, random, select, socket, sys, threading, time

CHUNK = 1 << 16
HALFCLOSE_REPLY = 300000
HALFCLOSE_SENT = 100000

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET

def say(*words):
    print(" ".join(str(w) for w in words), flush=True)

def errname(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return errno.errorcode.get(e.errno, str(e))

def show(addr):
    host, port = addr[0], addr[1]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)

def stream(n, seed):
    rng = random.Random(seed)
    left = n
    while left:
        size = min(CHUNK, left)
        yield rng.randbytes(size)
        left -= size

def digest_of(n, seed):
    h = hashlib.sha256()
    for chunk in stream(n, seed):
        h.update(chunk)
    return h.hexdigest()

def send_stream(conn, n, seed):
    h = hashlib.sha256()
    for chunk in stream(n, seed):
        conn.sendall(chunk)
        h.update(chunk)
    return h.hexdigest()

def recv_all(conn):
    h = hashlib.sha256()
    n = 0
    while True:
        data = conn.recv(CHUNK)
        if not data:
            return h.hexdigest(), n
        h.update(data)
        n += len(data)

def read_line(conn):
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line.decode(errors="replace").strip()

def connect(host, port, timeout=60):
    return socket.create_connection((host, port), timeout=timeout)

# --- the native service on host B -------------------------------------------------------

def handle(conn):
    with conn:
        words = read_line(conn).split()
        say("conn", *words)
        if not words:
            return
        if words[0] == "echo":
            while True:
                data = conn.recv(CHUNK)
                if not data:
                    return
                conn.sendall(data)
        elif words[0] == "sink":
            digest, n = recv_all(conn)
            conn.sendall(("sha256 %s %d\n" % (digest, n)).encode())
        elif words[0] == "source":
            n, seed = int(words[1]), int(words[2])
            send_stream(conn, n, seed)
            say("source-done", seed, n)
        elif words[0] == "halfclose":
            digest, n = recv_all(conn)
            conn.sendall(("got %d %s\n" % (n, digest)).encode())
            send_stream(conn, HALFCLOSE_REPLY, 7)

def safe_handle(conn):
    try:
        handle(conn)
    except OSError as e:
        say("conn-error", errname(e))

def accept_loop(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=safe_handle, args=(conn,), daemon=True).start()

def udp_loop(sock):
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)

def serve(port, hosts):
    for host in hosts:
        tcp = socket.socket(family(host), socket.SOCK_STREAM)
        if ":" in host:
            tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        tcp.listen(128)
        threading.Thread(target=accept_loop, args=(tcp,), daemon=True).start()
        udp = socket.socket(family(host), socket.SOCK_DGRAM)
        udp.bind((host, port))
        threading.Thread(target=udp_loop, args=(udp,), daemon=True).start()
    say("listening")
    threading.Event().wait()

# --- clients ------------------------------------------------------------------------------

def echo_once(host, port, tag):
    with connect(host, port, timeout=20) as conn:
        conn.sendall(("echo %s\n" % tag).encode())
        conn.sendall(tag.encode())
        got = b""
        while len(got) < len(tag):
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
        say("echo", got.decode(errors="replace"))

def pingpong(host, port, rounds):
    """One connection, ROUNDS small messages each answered before the next is sent."""
    with connect(host, port, timeout=20) as conn:
        conn.sendall(b"echo\n")
        for i in range(rounds):
            msg = ("ping-%d-" % i).encode() + b"x" * (i % 50)
            conn.sendall(msg)
            got = b""
            try:
                while len(got) < len(msg):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except OSError as e:
                say("round", i, "err", errname(e))
                sys.exit(1)
            if got != msg:
                say("round", i, "got", got[:40])
                sys.exit(1)
        say("pingpong ok", rounds)

def upload(host, port, n, seed):
    with connect(host, port) as conn:
        conn.sendall(b"sink\n")
        sent = send_stream(conn, n, seed)
        conn.shutdown(socket.SHUT_WR)
        reply = read_line(conn).split()
        say("sent", sent, n)
        say("received", *reply[1:])

def download(host, port, n, seed):
    with connect(host, port) as conn:
        conn.sendall(("source %d %d\n" % (n, seed)).encode())
        digest, got = recv_all(conn)
        say("sent", digest_of(n, seed), n)
        say("received", digest, got)

def datagrams(sock, payloads, send, recv):
    for payload in payloads:
        send(payload)
    got, peers = [], set()
    for _ in payloads:
        data, peer = recv()
        got.append(data)
        if peer is not None:
            peers.add(show(peer))
    sizes = ",".join(str(len(d)) for d in got)
    return sizes, got == payloads, peers

def udp(port, hosts):
    payloads = [bytes([i + 1]) * size for i, size in enumerate([37, 1400, 9000])]
    for host in hosts:
        with socket.socket(family(host), socket.SOCK_DGRAM) as sock:
            sock.settimeout(20)
            sizes, intact, peers = datagrams(
                sock, payloads,
                lambda p: sock.sendto(p, (host, port)),
                lambda: sock.recvfrom(65535))
            say("sendto", host, "sizes=" + sizes, "intact=%s" % intact,
                "from=" + ",".join(sorted(peers)))
        with socket.socket(family(host), socket.SOCK_DGRAM) as sock:
            sock.settimeout(20)
            sock.connect((host, port))
            sizes, intact, _ = datagrams(
                sock, payloads, sock.send, lambda: (sock.recv(65535), None))
            say("connected", host, "sizes=" + sizes, "intact=%s" % intact,
                "peer=" + show(sock.getpeername()))

def nb_connect(host, port, at_creation=False):
    if at_creation:
        # SOCK_NONBLOCK at creation must make the program's descriptor non-blocking.
        sock = socket.socket(family(host), socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
        say("created", "nonblock=%d" % bool(flags & os.O_NONBLOCK))
    else:
        sock = socket.socket(family(host), socket.SOCK_STREAM)
        sock.setblocking(False)
    rc = sock.connect_ex((host, port))
    first = errno.errorcode.get(rc, str(rc)) if rc else "0"
    if rc not in (0, errno.EINPROGRESS):
        return sock, first, "-"
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    if not poller.poll(20000):
        return sock, first, "poll-timeout"
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return sock, first, errno.errorcode.get(err, str(err)) if err else "0"

def nonblocking(host, port, closed_port):
    sock, first, err = nb_connect(host, port)
    say("open", "connect=" + first, "so_error=" + err)
    if err == "0":
        sock.sendall(b"echo\nping-nb")
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        got, end = b"", "ok"
        while len(got) < len(b"ping-nb"):
            if not poller.poll(20000):
                end = "poll-timeout"
                break
            chunk = sock.recv(4096)
            if not chunk:
                end = "eof"
                break
            got += chunk
        say("open", "echo=" + got.decode(errors="replace"), "end=" + end)
    sock.close()
    sock, first, err = nb_connect(host, closed_port, at_creation=True)
    say("closed", "connect=" + first, "so_error=" + err)
    sock.close()

def halfclose(host, port):
    with connect(host, port) as conn:
        conn.sendall(b"halfclose\n")
        sent = send_stream(conn, HALFCLOSE_SENT, 3)
        conn.shutdown(socket.SHUT_WR)
        reply = read_line(conn)
        digest, n = recv_all(conn)
        again = conn.recv(10)
        say("reply", reply)
        say("expected", "got", HALFCLOSE_SENT, sent)
        say("rest", digest, n, "eof-again=%s" % (again == b""))
        say("want", digest_of(HALFCLOSE_REPLY, 7), HALFCLOSE_REPLY, "eof-again=True")

def stall(host, port, flood_n, fast_n):
    slow = connect(host, port)
    slow.sendall(("source %d 11\n" % flood_n).encode())
    poller = select.poll()
    poller.register(slow, select.POLLIN)
    if not poller.poll(20000):
        say("flood never started")
        sys.exit(1)
    say("flooding")
    fast = connect(host, port, timeout=30)
    fast.sendall(("source %d 12\n" % fast_n).encode())
    started = time.monotonic()
    try:
        digest, n = recv_all(fast)
    except OSError as e:
        say("fast err", errname(e), "after %.1f s" % (time.monotonic() - started))
        sys.exit(1)
    say("fast", "got=%s:%d" % (digest, n), "want=%s:%d" % (digest_of(fast_n, 12), fast_n),
        "ms=%d" % ((time.monotonic() - started) * 1000))
    digest, n = recv_all(slow)
    say("slow", "got=%s:%d" % (digest, n), "want=%s:%d" % (digest_of(flood_n, 11), flood_n))

def interactive(host, port):
    conn = None
    say("ready")
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        started = time.monotonic()
        def done(*words):
            say(cmd, *words, "ms=%d" % ((time.monotonic() - started) * 1000))
        try:
            if cmd == "connect":
                conn = connect(host, port, timeout=40)
                conn.sendall(b"echo\n")
                done("ok")
            elif cmd == "echo":
                conn.sendall(arg.encode())
                data = conn.recv(4096)
                done("got=" + data.decode() if data else "eof")
            elif cmd == "socket":
                socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
                done("ok")
            elif cmd == "exit":
                return
            else:
                done("unknown")
        except OSError as e:
            done("err", errname(e))

# --- hostile peers of the stack server ----------------------------------------------------

def garbage(host, port, kind):
    if kind == "random":
        payload = b"\xff" + random.Random(5).randbytes(4095)
    elif kind == "http":
        payload = b"GET / HTTP/1.0\r\nHost: rump\r\n\r\n"
    else:
        payload = bytes(65536)
    with connect(host, port, timeout=20) as conn:
        try:
            conn.sendall(payload)
            while True:
                if not conn.recv(4096):
                    say("dropped eof")
                    return
        except OSError as e:
            say("kept-open" if isinstance(e, socket.timeout) else "dropped " + errname(e))

def no_secret(host, port):
    # Completes TLS as a client would, then offers a proof made without the secret.
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with connect(host, port, timeout=20) as raw:
        with ctx.wrap_socket(raw) as conn:
            conn.sendall(b"RHRELAY1" + bytes(32))
            try:
                answer = conn.recv(1)
                rest = conn.recv(4096)
            except (OSError, ssl.SSLError) as e:
                say("dropped", type(e).__name__)
                return
            say("answer", answer.hex() or "eof", "then", "eof" if not rest else "more")

def idle(host, port):
    conn = connect(host, port)
    say("idle connected")
    sys.stdin.read()
    conn.close()

def main(argv):
    mode, args = argv[0], argv[1:]
    if mode == "serve":
        serve(int(args[0]), args[1:])
    elif mode == "echo-once":
        echo_once(args[0], int(args[1]), args[2])
    elif mode == "pingpong":
        pingpong(args[0], int(args[1]), int(args[2]))
    elif mode == "upload":
        upload(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "download":
        download(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "udp":
        udp(int(args[0]), args[1:])
    elif mode == "nonblocking":
        nonblocking(args[0], int(args[1]), int(args[2]))
    elif mode == "halfclose":
        halfclose(args[0], int(args[1]))
    elif mode == "stall":
        stall(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "interactive":
        interactive(args[0], int(args[1]))
    elif mode == "garbage":
        garbage(args[0], int(args[1]), args[2])
    elif mode == "no-secret":
        no_secret(args[0], int(args[1]))
    elif mode == "idle":
        idle(args[0], int(args[1]))
    else:
        sys.exit("rr.py: unknown mode " + mode)

main(sys.argv[1:])
"#;
