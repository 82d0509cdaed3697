"""A gateway backend written against the documented `/ws/v1` protocol, driven by
tests/it/gateway.rs.

It holds any number of named backend connections (`/ws/v1` WebSockets, opened with the
`websockets` package) and does what a real backend of the gateway does: discovers the grid's
nodes through `GET /v1/nodes`, pops queue topics, calls `conn.call` / `mesh.send` /
`mesh.publish` and answers `ping` with nothing but expects `pong` back.

Commands, one JSON object a line, on stdin:
  {"op":"open","b":NAME,"url":WS_URL,"headers"?:{..}}
      → {"ev":"open","b":NAME} or {"ev":"open_failed","b":NAME,"status":HTTP_STATUS|null,"error":..}
  {"op":"discover","url":HTTP_BASE,"headers"?:{..},"prefix":P}
      GET HTTP_BASE/v1/nodes, then opens one connection per node, named P + node id
      → {"ev":"discovered","nodes":[..],"opened":[NAMES]}
  {"op":"call","b":NAME,"m":METHOD,"p":PARAMS,"i":ID,"id_key"?:"i"|"id"}
      sends {"m","p",id_key: ID}; the reply (matched by its "i") is reported as
      {"ev":"reply","b":NAME,"i":ID,"E":..,"r":..}
  {"op":"ping","b":NAME}   sends the text `ping` → {"ev":"pong","b":NAME} when `pong` comes back
  {"op":"text","b":NAME,"text":T}   sends T as it is (replies are reported as above)
  {"op":"close","b":NAME}  → {"ev":"closed","b":NAME}
  {"op":"exit"}

Every queued message a connection receives is reported as
  {"ev":"event","b":NAME,"n":..,"c":..,"t":..,"d":..}
after checking the documented event shape ({"e":"queue.pop","p":{n,c,t,d},"id":null}). A frame
that is neither a reply, an event nor `pong` is reported as {"ev":"bad","b":NAME,"frame":TEXT};
a binary frame as {"ev":"bad","b":NAME,"binary":true}. When the server closes a connection:
{"ev":"server_closed","b":NAME,"code":..}. An exception prints {"ev":"fatal",..} and exits 1.
"""

import asyncio
import json
import os
import sys
import traceback
import urllib.request

import websockets
from websockets.asyncio.client import connect


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fatal(where, e):
    out({"ev": "fatal", "where": where, "message": "".join(traceback.format_exception(e))})
    os._exit(1)


conns = {}  # name -> websocket connection
tasks = set()


def spawn(coro):
    t = asyncio.ensure_future(coro)
    tasks.add(t)

    def done(t):
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            fatal("task", t.exception())

    t.add_done_callback(done)


def check_event(msg):
    """True when `msg` is a queue event exactly as documented."""
    p = msg.get("p")
    return (
        msg.get("e") == "queue.pop"
        and "id" in msg
        and msg["id"] is None
        and "i" not in msg
        and isinstance(p, dict)
        and all(k in p for k in ("n", "c", "t", "d"))
        and isinstance(p["c"], str)
        and isinstance(p["t"], str)
    )


def check_reply(msg):
    """True when `msg` is a command reply: {"E":null,"r":..,"i":..} or {"E":{"c","m"},"i":..}."""
    if "E" not in msg or "i" not in msg:
        return False
    e = msg["E"]
    if e is None:
        return "r" in msg
    return isinstance(e, dict) and isinstance(e.get("c"), int) and isinstance(e.get("m"), str)


async def reader(name, ws):
    try:
        async for frame in ws:
            if isinstance(frame, bytes):
                out({"ev": "bad", "b": name, "binary": True})
                continue
            if frame == "pong":
                out({"ev": "pong", "b": name})
                continue
            try:
                msg = json.loads(frame)
            except ValueError:
                out({"ev": "bad", "b": name, "frame": frame})
                continue
            if isinstance(msg, dict) and check_event(msg):
                p = msg["p"]
                out({"ev": "event", "b": name, "n": p["n"], "c": p["c"], "t": p["t"], "d": p["d"]})
            elif isinstance(msg, dict) and check_reply(msg):
                out({"ev": "reply", "b": name, "i": msg["i"], "E": msg["E"], "r": msg.get("r")})
            else:
                out({"ev": "bad", "b": name, "frame": frame})
    except websockets.exceptions.ConnectionClosed:
        pass
    code = ws.close_code
    if conns.get(name) is ws:
        out({"ev": "server_closed", "b": name, "code": code})


async def open_conn(name, url, headers):
    try:
        ws = await connect(url, additional_headers=headers or None, proxy=None, open_timeout=10, max_size=None)
    except websockets.exceptions.InvalidStatus as e:
        out({"ev": "open_failed", "b": name, "status": e.response.status_code, "error": str(e)})
        return False
    except Exception as e:  # noqa: BLE001 - reported to the test
        out({"ev": "open_failed", "b": name, "status": None, "error": f"{type(e).__name__}: {e}"})
        return False
    conns[name] = ws
    spawn(reader(name, ws))
    return True


def get_json(url, headers):
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as r:
        return json.loads(r.read())


async def discover(cmd):
    base = cmd["url"].rstrip("/")
    headers = cmd.get("headers") or {}
    body = await asyncio.get_running_loop().run_in_executor(None, get_json, base + "/v1/nodes", headers)
    opened = []
    for node in body["nodes"]:
        name = cmd["prefix"] + str(node["id"])
        if await open_conn(name, f"ws://{node['api_server']}/ws/v1", headers):
            opened.append(name)
    out({"ev": "discovered", "nodes": body["nodes"], "opened": opened})


async def handle(cmd):
    op = cmd["op"]
    if op == "open":
        if await open_conn(cmd["b"], cmd["url"], cmd.get("headers")):
            out({"ev": "open", "b": cmd["b"]})
    elif op == "discover":
        spawn(discover(cmd))
    elif op == "call":
        msg = {"m": cmd["m"], "p": cmd.get("p"), cmd.get("id_key", "i"): cmd["i"]}
        await conns[cmd["b"]].send(json.dumps(msg))
    elif op == "ping":
        await conns[cmd["b"]].send("ping")
    elif op == "text":
        await conns[cmd["b"]].send(cmd["text"])
    elif op == "close":
        ws = conns.pop(cmd["b"])
        await ws.close()
        out({"ev": "closed", "b": cmd["b"]})
    elif op == "exit":
        for ws in list(conns.values()):
            await ws.close()
        os._exit(0)
    else:
        raise ValueError(f"unknown op {op}")


async def main():
    loop = asyncio.get_running_loop()
    rd = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(rd), sys.stdin)
    out({"ev": "ready", "websockets": websockets.__version__})
    while True:
        line = await rd.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            await handle(cmd)
        except Exception as e:  # noqa: BLE001
            fatal(cmd.get("op"), e)
    os._exit(0)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        fatal("main", e)
