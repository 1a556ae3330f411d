#!/usr/bin/env python3
"""Handshake-flood tools for the interop scenarios (written for Warren; standard library only).

  hsflood.py flood HOST PORT RESPONDER_PUBKEY RATE SECONDS
      Sends WireGuard handshake initiations (message type 1) to HOST:PORT at RATE per second for
      SECONDS (or until SIGTERM or SIGINT). Each carries a valid MAC1 for RESPONDER_PUBKEY (base64), so that the responder has
      to take it seriously, but random contents otherwise: a random sender index and random
      "ephemeral", "encrypted static" and "encrypted timestamp" fields, and MAC2 all zero. The
      socket also counts what comes back (cookie replies, message type 3). Prints one JSON line:
      {"sent": N, "seconds": S, "rate": R, "cookie_replies": C, "other_replies": O}.

  hsflood.py watch INTERFACE
      Counts the WireGuard messages on INTERFACE (an AF_PACKET socket, both directions, IPv4 UDP)
      until SIGTERM or SIGINT, then prints one JSON object: counts keyed by
      "SRC:PORT>DST:PORT type-N" (with " mac2" appended for an initiation or response whose MAC2
      is not all zero, i.e. that carries a cookie).

Message layout (WireGuard whitepaper, section 5.4.2 and 5.4.4):
  initiation = 0x01 | 3 zero bytes | sender index (4, LE) | ephemeral (32) | encrypted static (48)
               | encrypted timestamp (28) | mac1 (16) | mac2 (16)          -> 148 bytes
  mac1       = MAC(HASH("mac1----" || responder public key), initiation[0:116])
  HASH       = BLAKE2s with a 32-byte output; MAC(key, m) = keyed BLAKE2s with a 16-byte output
"""
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

LABEL_MAC1 = b"mac1----"
INITIATION_LENGTH = 148


def mac1_key(responder_public):
    return hashlib.blake2s(LABEL_MAC1 + responder_public, digest_size=32).digest()


def bogus_initiation(key):
    body = bytes([1, 0, 0, 0]) + os.urandom(4 + 32 + 48 + 28)
    mac1 = hashlib.blake2s(body, key=key, digest_size=16).digest()
    return body + mac1 + bytes(16)


def flood(host, port, responder_b64, rate, seconds):
    responder = base64.b64decode(responder_b64)
    if len(responder) != 32:
        sys.exit("the responder public key must be 32 bytes of base64")
    key = mac1_key(responder)
    # A pool of distinct messages (distinct sender indices and ephemerals), reused in turn.
    pool = [bogus_initiation(key) for _ in range(4096)]
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sock.setblocking(False)
    target = (host, port)
    sent = cookies = others = 0
    start = time.monotonic()
    end = start + seconds
    tick = 0.002
    per_tick = max(1, int(rate * tick))
    next_tick = start
    i = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        if now < next_tick:
            time.sleep(next_tick - now)
        next_tick += tick
        for _ in range(per_tick):
            try:
                sock.sendto(pool[i], target)
                sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass
            i = (i + 1) % len(pool)
        # Drain what came back.
        while True:
            try:
                reply = sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                break
            if len(reply) == 64 and reply[0] == 3:
                cookies += 1
            else:
                others += 1
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": round(elapsed, 2), "rate": round(sent / elapsed),
                      "cookie_replies": cookies, "other_replies": others}), flush=True)


def watch(interface):
    # ETH_P_ALL: a tap for one protocol only sees incoming frames; this one sees both directions.
    ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.settimeout(0.2)
    counts = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("watching", interface, file=sys.stderr, flush=True)
    while not stop:
        try:
            packet, address = sock.recvfrom(65535)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if address[1] != ETH_P_IP or len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 17:
            continue
        ihl = (packet[0] & 15) * 4
        if len(packet) < ihl + 8 + 4:
            continue
        src = socket.inet_ntoa(packet[12:16])
        dst = socket.inet_ntoa(packet[16:20])
        sport, dport = struct.unpack("!HH", packet[ihl:ihl + 4])
        payload = packet[ihl + 8:]
        kind = payload[0]
        if kind not in (1, 2, 3, 4) or payload[1:4] != b"\0\0\0":
            continue
        label = f"{src}:{sport}>{dst}:{dport} type-{kind}"
        if (kind == 1 and len(payload) == 148) or (kind == 2 and len(payload) == 92):
            if any(payload[-16:]):
                label += " mac2"
        counts[label] = counts.get(label, 0) + 1
    print(json.dumps(counts, sort_keys=True), flush=True)


def main(argv):
    if len(argv) == 6 and argv[0] == "flood":
        flood(argv[1], int(argv[2]), argv[3], float(argv[4]), float(argv[5]))
    elif len(argv) == 2 and argv[0] == "watch":
        watch(argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
