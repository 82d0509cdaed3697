"""permessage-deflate with the `websockets` client, which offers it by default, run by
tests/it/ws_deflate.rs against a server with `websocket.compression` on.

Usage: ws_deflate.py WS_URL API_URL API_KEY CHANNEL

Connects (client.insecure), subscribes to CHANNEL, has the server API publish a small and a
large publication, publishes a large one itself (sent compressed), and prints one JSON line of
what it saw: the handshake's extension header, the negotiated extensions, the data received,
and how many data frames arrived with and without RSV1. The Rust test checks the values.
"""

import json
import sys
import urllib.request

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.sync.client import connect

frames = {"rsv1": 0, "plain": 0}
sent = {"rsv1": 0}
_decode = PerMessageDeflate.decode
_encode = PerMessageDeflate.encode


def counting_decode(self, frame, *, max_size=None):
    if frame.opcode.name in ("TEXT", "BINARY"):
        frames["rsv1" if frame.rsv1 else "plain"] += 1
    return _decode(self, frame, max_size=max_size)


def counting_encode(self, frame):
    out = _encode(self, frame)
    if out.rsv1:
        sent["rsv1"] += 1
    return out


PerMessageDeflate.decode = counting_decode
PerMessageDeflate.encode = counting_encode


def api_publish(api_url, key, channel, data):
    body = json.dumps({"channel": channel, "data": data}).encode()
    req = urllib.request.Request(
        api_url + "/publish", data=body, headers={"X-API-Key": key, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        reply = json.loads(r.read())
    if "error" in reply:
        raise RuntimeError(f"publish: {reply}")


def reply(ws, want_id):
    """The reply with id `want_id`; pushes before it are returned too."""
    pushes = []
    while True:
        for line in ws.recv(timeout=10).split("\n"):
            if not line:
                continue
            msg = json.loads(line)
            if msg.get("id") == want_id:
                return msg, pushes
            if msg:
                pushes.append(msg)


def publications(ws, n, pushes):
    """Data of the next `n` publications (starting with those already read)."""
    got = [p["push"]["pub"]["data"] for p in pushes if "pub" in p.get("push", {})]
    while len(got) < n:
        for line in ws.recv(timeout=10).split("\n"):
            if line:
                msg = json.loads(line)
                if "pub" in msg.get("push", {}):
                    got.append(msg["push"]["pub"]["data"])
    return got


def main():
    ws_url, api_url, key, channel = sys.argv[1:5]
    big = {"text": "compressible " * 2000}
    with connect(ws_url, open_timeout=10, max_size=2**22) as ws:
        result = {
            "header": ws.response.headers.get("Sec-WebSocket-Extensions"),
            "extensions": [e.name for e in ws.protocol.extensions],
        }
        ws.send(json.dumps({"id": 1, "connect": {}}))
        result["connect"], _ = reply(ws, 1)
        ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        result["subscribe"], pushes = reply(ws, 2)
        api_publish(api_url, key, channel, {"n": 1})
        api_publish(api_url, key, channel, big)
        got = publications(ws, 2, pushes)
        # A large client publish: websockets compresses every message it sends.
        ws.send(json.dumps({"id": 3, "publish": {"channel": channel, "data": big}}))
        result["publish"], pushes = reply(ws, 3)
        got += publications(ws, 1, pushes)
        result["received"] = [
            d if d == {"n": 1} else ("big" if d == big else "unexpected") for d in got
        ]
    result["frames"] = frames
    result["sent"] = sent
    print(json.dumps(result))


if __name__ == "__main__":
    main()
