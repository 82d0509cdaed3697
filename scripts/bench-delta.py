#!/usr/bin/env python3
"""Delta compression end to end: bytes on the wire and server CPU for a ~4 KB JSON document
that changes one field per publication, with and without `delta: "fossil"`, in one run.

Starts Gyre (pinned to CPU 0 with taskset when there is one), connects N WebSocket
subscribers (JSON), publishes P publications through the HTTP API at a fixed rate, and reads
what the subscribers received and the CPU time the server used (/proc/PID/stat). The two
phases (plain subscribers, delta subscribers) run one after the other on the same server.

    target/pyenv/bin/python scripts/bench-delta.py [--subs 50] [--pubs 1000] [--rate 500]

Needs `websockets` (installed into target/pyenv by .ci/run) and a release build
(`cargo build --release`).
"""

import argparse
import asyncio
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import websockets


def doc(n):
    fields = {f"field{i}": (n if i == 7 else f"value of field {i}, unchanged text") for i in range(80)}
    return fields


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / tick


async def subscriber(port, channel, delta, ready, counts, i, pubs):
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", max_size=None,
                                  compression=None) as ws:
        sub = {"channel": channel}
        if delta:
            sub["delta"] = "fossil"
        await ws.send(json.dumps({"id": 1, "connect": {}}) + "\n" + json.dumps({"id": 2, "subscribe": sub}))
        replies = 0
        while replies < 2:
            msg = await ws.recv()
            replies += sum(1 for line in msg.split("\n") if '"id":' in line)
        ready.release()
        got, nbytes = 0, 0
        while got < pubs:
            msg = await ws.recv()
            nbytes += len(msg.encode() if isinstance(msg, str) else msg)
            got += sum(1 for line in msg.split("\n") if '"pub":' in line)
        counts[i] = nbytes


async def phase(pid, port, name, delta, subs, pubs, rate):
    channel = f"doc:{name}"
    ready = asyncio.Semaphore(0)
    counts = [0] * subs
    tasks = [asyncio.create_task(subscriber(port, channel, delta, ready, counts, i, pubs)) for i in range(subs)]
    for _ in range(subs):
        await ready.acquire()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def publish_all():
        start = time.monotonic()
        for n in range(1, pubs + 1):
            body = json.dumps({"channel": channel, "data": doc(n), "delta": delta})
            conn.request("POST", "/api/publish", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200, r.read()
            r.read()
            wait = start + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    await asyncio.get_running_loop().run_in_executor(None, publish_all)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    cpu = cpu_seconds(pid) - cpu0
    wall = time.monotonic() - t0
    total = sum(counts)
    return {
        "mode": name,
        "bytes_per_publication": total / (subs * pubs),
        "total_mb": total / 1e6,
        "server_cpu_s": cpu,
        "cpu_us_per_delivery": cpu / (subs * pubs) * 1e6,
        "wall_s": wall,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="target/release/gyre")
    ap.add_argument("--subs", type=int, default=50)
    ap.add_argument("--pubs", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=500.0, help="publications per second")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    port = free_port()
    cfg = {
        "http_server": {"port": port},
        "http_api": {"insecure": True},
        "client": {"insecure": True},
        "log": {"level": "error"},
        "workers": a.workers,
        "channel": {"namespaces": [{"name": "doc", "allowed_delta_types": ["fossil"],
                                    "history_size": 10, "history_ttl": "300s"}]},
    }
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    cmd = [a.server, "-c", path]
    if shutil.which("taskset") and os.cpu_count() > 1:
        cmd = ["taskset", "-c", "0"] + cmd
    server = subprocess.Popen(cmd)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        if shutil.which("taskset") and os.cpu_count() > 1:
            os.sched_setaffinity(0, set(range(1, os.cpu_count())))
        rows = []
        for name, delta in (("plain", False), ("delta", True)):
            rows.append(asyncio.run(phase(server.pid, port, name, delta, a.subs, a.pubs, a.rate)))
        print(f"{a.subs} subscribers, {a.pubs} publications at {a.rate:g}/s, document {len(json.dumps(doc(1)))} B")
        print(f"{'mode':6} {'B/publication':>14} {'MB total':>9} {'server CPU s':>13} {'µs/delivery':>12}")
        for r in rows:
            print(f"{r['mode']:6} {r['bytes_per_publication']:14.0f} {r['total_mb']:9.1f} "
                  f"{r['server_cpu_s']:13.2f} {r['cpu_us_per_delivery']:12.2f}")
        p, d = rows
        print(f"delta/plain: bytes {d['total_mb'] / p['total_mb']:.3f}x, server CPU {d['server_cpu_s'] / max(p['server_cpu_s'], 1e-9):.2f}x")
        print(json.dumps(rows))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
