"""The program of examples/hybrid.sh: a TCP echo server and 20 clients in one process."""

import socket

CLIENTS = 20

loaded = any("librumphijack" in line for line in open("/proc/self/maps"))
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(CLIENTS)
port = server.getsockname()[1]
for i in range(CLIENTS):
    client = socket.create_connection(("127.0.0.1", port))
    peer, _ = server.accept()
    client.sendall(b"ping %d" % i)
    assert peer.recv(64) == b"ping %d" % i
    client.close()
    peer.close()
interfaces = [name for _, name in socket.if_nameindex()]
print(f"{CLIENTS} connections over {', '.join(interfaces)}; "
      f"librumphijack.so loaded: {'yes' if loaded else 'no'}")
