#!/usr/bin/env python3
"""A TCP transfer whose two ends print the byte count and SHA-256 of what went through.

  tcpcheck.py recv PORT                  listen on all addresses, accept one connection, read to EOF
  tcpcheck.py send HOST PORT BYTES [RATE] send BYTES random bytes (RATE bytes/s, 0 = unlimited)

Both print "<bytes> <sha256 hex>" on stdout.
"""
import hashlib
import os
import socket
import sys
import time


def recv(port):
    family = socket.AF_INET6
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", port))
    server.listen(1)
    server.settimeout(60)
    conn, _ = server.accept()
    conn.settimeout(60)
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest())


def send(host, port, count, rate):
    # The receiver may still be starting on a busy machine: retry a refused connection for 10 s.
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=60)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    digest = hashlib.sha256()
    sent = 0
    start = time.monotonic()
    block = 1 << 16
    while sent < count:
        chunk = os.urandom(min(block, count - sent))
        conn.sendall(chunk)
        digest.update(chunk)
        sent += len(chunk)
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    conn.shutdown(socket.SHUT_WR)
    # Wait for the receiver to close, so that everything was delivered.
    conn.settimeout(60)
    while conn.recv(4096):
        pass
    print(sent, digest.hexdigest())


def main(argv):
    if len(argv) >= 2 and argv[0] == "recv":
        recv(int(argv[1]))
    elif len(argv) >= 4 and argv[0] == "send":
        send(argv[1], int(argv[2]), int(argv[3]), int(argv[4]) if len(argv) > 4 else 0)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
