//! `rh.py`: the Python side of the tests (echo server, clients, an interactive client).
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
    else:
        sys.exit("rh.py: unknown mode " + mode)

main(sys.argv[1:])
"#;
