"""Serves the socket systemd passes (fd 3): answers each connection, counts them in a file."""
import socket
import sys

srv = socket.socket(fileno=3)
hits = 0
while True:
    conn, _ = srv.accept()
    hits += 1
    with open(sys.argv[1], "w") as f:
        f.write(f"{hits}\n")
    conn.sendall(b"hello %d\n" % hits)
    conn.close()
