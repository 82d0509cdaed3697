"""A WebSocket client over TLS that stops reading, then sends a corrupt TLS record.

Usage: tls_garbage.py PORT CA_FILE

It connects, subscribes to `big:1`, prints "subscribed", and reads nothing more. Once a line
arrives on stdin (the test has published more than the socket buffers hold, so the server is
in the middle of writing to it), it sends a TLS record that cannot be decrypted, prints "sent
garbage" and waits a second. The server must close that connection and nothing else.
"""
import json
import os
import socket
import ssl
import sys
import time

port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
raw = socket.create_connection(("127.0.0.1", port))
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="localhost")


def flush():
    data = out.read()
    if data:
        raw.sendall(data)


def pump():
    flush()
    chunk = raw.recv(65536)
    if not chunk:
        sys.exit("eof")
    inc.write(chunk)


while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        pump()
flush()


def frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81, 0x80 | len(payload)]) if len(payload) < 126 else bytes([0x81, 0xFE]) + len(payload).to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


tls.write(
    b"GET /connection/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
tls.write(frame(json.dumps({"id": 1, "connect": {}})))
tls.write(frame(json.dumps({"id": 2, "subscribe": {"channel": "big:1"}})))
flush()
seen = b""
while b'"id":2' not in seen:
    try:
        seen += tls.read(65536)
    except ssl.SSLWantReadError:
        pump()
print("subscribed", flush=True)
sys.stdin.readline()
time.sleep(0.3)
raw.sendall(b"\x17\x03\x03\x00\x40" + b"\x5a" * 64)
print("sent garbage", flush=True)
time.sleep(1)
