"""A centrifuge-python agent driven by tests/it/sdk.rs.

Speaks the same line protocol as tests/js/agent.js: commands, one JSON object a line, on
stdin; what the SDK reports, one JSON object a line, on stdout. Every output line has `ev`
and, for client `c`'s events, `c` (subscription events also `ch`). An exception anywhere
prints {"ev":"fatal",...} and exits 1.

Commands:
  {"op":"connect","c":NAME,"url":URL,"token"?:JWT,"tokens"?:[JWT..],"protobuf"?:bool,
   "data"?:ANY,"headers"?:{NAME:VALUE,..}}
      `data`: the connect command's data; `headers`: sent with the WebSocket upgrade. The
      `connected` event has the connect reply's `data` when there is some.
  {"op":"sub","c":NAME,"ch":CHANNEL,"opts"?:{"recoverable":..,"positioned":..,"join_leave":..,
   "data":ANY,"delta":"fossil","tagsFilter":NODE}}
                               `data`: the subscribe command's data; `delta`: ask for
                               fossil delta compression; `tagsFilter`: a filter node as the
                               protocol writes it (op/key/cmp/val/vals/nodes)
  {"op":"unsub","c":NAME,"ch":CHANNEL}
  {"op":"call","c":NAME,"id":N,"method":"publish"|"presence"|"presenceStats"|"history",
   "ch":CHANNEL,"data"?:ANY,"opts"?:{"limit":N,"reverse":bool}}
  {"op":"call","c":NAME,"id":N,"method":"rpc","rpc":METHOD,"data"?:ANY}
                               client.rpc(METHOD, data) → "ok": {"data": ..}; an error reply
                               also has "temporary"
  {"op":"cut","c":NAME}        abort the socket (no close frame); the SDK reconnects
  {"op":"disconnect","c":NAME}
  {"op":"exit"}
"""

import asyncio
import json
import sys
import traceback
from importlib import metadata

import centrifuge
from centrifuge import (
    Client,
    ClientEventHandler,
    SubscriptionEventHandler,
)
from centrifuge.filter import FilterNode


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fatal(where, e):
    out({"ev": "fatal", "where": where, "message": "".join(traceback.format_exception(e))})
    sys.stdout.flush()
    import os

    os._exit(1)


def data(d):
    """Protobuf connections carry data as bytes: show them as the JSON they hold."""
    if isinstance(d, (bytes, bytearray)):
        text = bytes(d).decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return {"bytes": text}
    return d


def info(i):
    if i is None:
        return None
    o = {"client": i.client, "user": i.user}
    if i.conn_info is not None:
        o["connInfo"] = data(i.conn_info)
    if i.chan_info is not None:
        o["chanInfo"] = data(i.chan_info)
    return o


def pub(p):
    o = {"data": data(p.data)}
    if p.offset:
        o["offset"] = p.offset
    if p.info is not None:
        o["info"] = info(p.info)
    if p.tags:
        o["tags"] = p.tags
    return o


def subscribed(ctx):
    o = {
        "recoverable": ctx.recoverable,
        "positioned": ctx.positioned,
        "wasRecovering": ctx.was_recovering,
        "recovered": ctx.recovered,
    }
    if ctx.stream_position is not None:
        o["offset"] = ctx.stream_position.offset
        o["epoch"] = ctx.stream_position.epoch
    if ctx.data is not None:
        o["data"] = data(ctx.data)
    return o


def err(e):
    code = getattr(e, "code", None)
    if isinstance(code, int):
        return {"code": code, "message": getattr(e, "message", str(e))}
    return {"code": -1, "message": f"{type(e).__name__}: {e}"}


class Events(ClientEventHandler):
    def __init__(self, c):
        self.c = c

    async def on_connecting(self, ctx):
        out({"c": self.c, "ev": "connecting", "code": ctx.code, "reason": ctx.reason})

    async def on_connected(self, ctx):
        o = {"c": self.c, "ev": "connected", "client": ctx.client}
        if ctx.data is not None:
            o["data"] = data(ctx.data)
        out(o)

    async def on_disconnected(self, ctx):
        out({"c": self.c, "ev": "disconnected", "code": ctx.code, "reason": ctx.reason})

    async def on_error(self, ctx):
        out({"c": self.c, "ev": "error", "error": err(ctx.error), "code": ctx.code})

    async def on_subscribing(self, ctx):
        out({"c": self.c, "ev": "server.subscribing", "ch": ctx.channel})

    async def on_subscribed(self, ctx):
        out({"c": self.c, "ev": "server.subscribed", "ch": ctx.channel, **subscribed(ctx)})

    async def on_unsubscribed(self, ctx):
        out({"c": self.c, "ev": "server.unsubscribed", "ch": ctx.channel})

    async def on_publication(self, ctx):
        out({"c": self.c, "ev": "server.publication", "ch": ctx.channel, **pub(ctx.pub)})

    async def on_join(self, ctx):
        out({"c": self.c, "ev": "server.join", "ch": ctx.channel, "info": info(ctx.info)})

    async def on_leave(self, ctx):
        out({"c": self.c, "ev": "server.leave", "ch": ctx.channel, "info": info(ctx.info)})


class SubEvents(SubscriptionEventHandler):
    def __init__(self, c, ch):
        self.c = c
        self.ch = ch

    def o(self, ev, **kw):
        out({"c": self.c, "ch": self.ch, "ev": ev, **kw})

    async def on_subscribing(self, ctx):
        self.o("sub.subscribing", code=ctx.code, reason=ctx.reason)

    async def on_subscribed(self, ctx):
        self.o("sub.subscribed", **subscribed(ctx))

    async def on_unsubscribed(self, ctx):
        self.o("sub.unsubscribed", code=ctx.code, reason=ctx.reason)

    async def on_publication(self, ctx):
        self.o("sub.publication", **pub(ctx.pub))

    async def on_join(self, ctx):
        self.o("sub.join", info=info(ctx.info))

    async def on_leave(self, ctx):
        self.o("sub.leave", info=info(ctx.info))

    async def on_error(self, ctx):
        self.o("sub.error", error=err(ctx.error), code=ctx.code)


clients = {}  # name -> (Client, protobuf)
tasks = set()


def spawn(coro):
    t = asyncio.ensure_future(coro)
    tasks.add(t)

    def done(t):
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            fatal("task", t.exception())

    t.add_done_callback(done)


def connect(cmd):
    c = cmd["c"]
    kw = {}
    if "tokens" in cmd:
        tokens = list(cmd["tokens"])
        last = [""]

        async def get_token():
            out({"c": c, "ev": "getToken"})
            if tokens:
                last[0] = tokens.pop(0)
            return last[0]

        kw["get_token"] = get_token
    if "data" in cmd:
        d = cmd["data"]
        kw["data"] = json.dumps(d).encode() if cmd.get("protobuf") else d
    if "headers" in cmd:
        kw["headers"] = cmd["headers"]
    client = Client(
        cmd["url"],
        events=Events(c),
        token=cmd.get("token", ""),
        use_protobuf=bool(cmd.get("protobuf")),
        min_reconnect_delay=0.1,
        max_reconnect_delay=0.5,
        proxy=None,
        **kw,
    )
    clients[c] = (client, bool(cmd.get("protobuf")))
    spawn(client.connect())


async def call(cmd):
    client, proto = clients[cmd["c"]]
    ch = cmd.get("ch", "")
    method = cmd["method"]
    try:
        if method == "publish":
            d = cmd.get("data")
            await client.publish(ch, json.dumps(d).encode() if proto else d)
            r = {}
        elif method == "presence":
            p = await client.presence(ch)
            r = {"clients": {k: info(v) for k, v in p.clients.items()}}
        elif method == "presenceStats":
            p = await client.presence_stats(ch)
            r = {"numClients": p.num_clients, "numUsers": p.num_users}
        elif method == "history":
            opts = cmd.get("opts", {})
            h = await client.history(ch, limit=opts.get("limit", 0), reverse=opts.get("reverse", False))
            r = {"publications": [pub(p) for p in h.publications], "offset": h.offset, "epoch": h.epoch}
        elif method == "rpc":
            d = cmd.get("data")
            res = await client.rpc(cmd["rpc"], json.dumps(d).encode() if proto else d)
            r = {"data": data(res.data)}
        else:
            raise ValueError(f"unknown method {method}")
        out({"c": cmd["c"], "ev": "result", "id": cmd["id"], "ok": r})
    except Exception as e:  # noqa: BLE001 - reported to the test
        e_out = err(e)
        if method == "rpc" and hasattr(e, "temporary"):
            e_out["temporary"] = bool(e.temporary)
        out({"c": cmd["c"], "ev": "result", "id": cmd["id"], "err": e_out})


async def handle(cmd):
    op = cmd["op"]
    if op == "connect":
        connect(cmd)
    elif op == "sub":
        client, _ = clients[cmd["c"]]
        opts = cmd.get("opts", {})
        s = client.new_subscription(
            cmd["ch"],
            events=SubEvents(cmd["c"], cmd["ch"]),
            recoverable=bool(opts.get("recoverable")),
            positioned=bool(opts.get("positioned")),
            join_leave=bool(opts.get("joinLeave")),
            **({"data": opts["data"]} if "data" in opts else {}),
            **({"delta": centrifuge.DeltaType(opts["delta"])} if "delta" in opts else {}),
            **({"tags_filter": FilterNode(opts["tagsFilter"])} if "tagsFilter" in opts else {}),
        )
        spawn(s.subscribe())
    elif op == "unsub":
        client, _ = clients[cmd["c"]]
        spawn(client.get_subscription(cmd["ch"]).unsubscribe())
    elif op == "call":
        spawn(call(cmd))
    elif op == "cut":
        client, _ = clients[cmd["c"]]
        conn = client._conn  # noqa: SLF001 - no public way to break the transport
        n = 0
        if conn is not None:
            conn.transport.abort()
            n = 1
        out({"c": cmd["c"], "ev": "cut", "sockets": n})
    elif op == "disconnect":
        client, _ = clients[cmd["c"]]
        spawn(client.disconnect())
    elif op == "exit":
        for client, _ in clients.values():
            await client.disconnect()
        sys.stdout.flush()
        import os

        os._exit(0)
    else:
        raise ValueError(f"unknown op {op}")


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out({"ev": "ready", "sdk": "centrifuge-python", "version": metadata.version("centrifuge-python")})
    while True:
        line = await reader.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError as e:
            fatal("parse", e)
        try:
            await handle(cmd)
        except Exception as e:  # noqa: BLE001
            fatal(cmd.get("op"), e)
    import os

    os._exit(0)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        fatal("main", e)
