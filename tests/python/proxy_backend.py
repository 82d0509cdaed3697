"""An application backend for the proxy tests (tests/it/proxy.rs): the same decisions served
over HTTP (the proxy protocol's JSON, one POST per call) and gRPC (`CentrifugoProxy` from
proto/proxy.proto, stubs generated at start by grpcio-tools into a temporary directory).

Usage: proxy_backend.py [--http-port N] [--grpc-port M] [--proto PATH] [--slow SECONDS]

Ports 0 (the default) are chosen by the OS; without --proto there is no gRPC server. Once
both listen it prints {"ev":"ready","http_port":N,"grpc_port":M|null} on stdout, then exits
when stdin ends or sends {"op":"exit"}. An exception prints {"ev":"fatal",...}.

HTTP: POST on any path; the path's last segment names the kind (connect, refresh, subscribe,
publish, sub_refresh, rpc, map_publish, map_remove, shared_poll_refresh). GET /requests?kind=K&protocol=P lists
what was received (JSON array; both filters optional), GET /clear forgets it,
GET /control?... sets a mode (below).

Every call is recorded as {"n", "kind", "protocol": "http"|"grpc", "path" (HTTP path or gRPC
method), "t" (unix time, float), "headers" (HTTP headers or gRPC metadata, lower-case names;
a repeated name gives a list), "body"}. `body` is the JSON request; for gRPC it is the message
as MessageToDict(preserving_proto_field_name=True) writes it, with the bytes fields `data`,
`meta` (raw JSON payloads) decoded back into JSON values, so both protocols read alike.
Subscription streams record kind `subscribe_stream` (body + "bidirectional"), each client
publication into a bidirectional stream as `stream_publication` ({"channel","client","data"})
and the end of every stream as `stream_end` ({"channel","client","ended": "eof"|"error"|
"refused"|"cancelled"}).

Decisions, from the request (so the tests read on their own):
* The payload (`data`, or `b64data` decoded) of connect / subscribe / publish / rpc / stream
  requests, when an object, may hold
    "fail": "500" (any HTTP status) | "garbage" | "slow" | "close" → that failure (below);
    "error": {...} / "disconnect": {...} → that answer;  "empty": true → `{}` (no result).
* Otherwise the channel's (or the RPC method's) `:`-separated words decide:
    deny → error 403 "denied"          kick → disconnect 4403 "kicked"
    busy → error 1001 "busy" (temporary)  empty → `{}`
    fail / slow / garbage / close → that failure
    rewrite (publish) → result data {"rewritten": <original data>}
    error (rpc) → error 1000 "custom error"
  For map_publish / map_remove the key's words decide too (before the channel's), and rewrite
  answers key "rewritten" (with map_publish data {"rewritten": <original data>} and tags
  {"via": "proxy"}).
* Otherwise a result:
    connect: the payload's user, info, b64info, data, b64data, channels, subs, meta,
      expire_at, and expire_at_in (seconds from now → expire_at); no payload → user "".
    subscribe / stream: the payload's info, b64info, data, b64data, override, expire_at,
      expire_at_in.
    publish, map_publish, map_remove: `{}` (the client's key and data are written).
    rpc: data = the request's data.
    refresh / sub_refresh: per mode (default extend:60), set with
      GET /control?kind=refresh|sub_refresh&mode=M[&user=U|&channel=C][&info=JSON][&meta=JSON]
      (a mode for a user (refresh) or channel (sub_refresh) wins over the one without):
      extend:N → expire_at now+N (with info / meta when given), expired → expired:true,
      zero → result {} (expire_at 0), empty → `{}`, error / disconnect → those answers,
      fail / slow / garbage / close → that failure.
* shared_poll_refresh (HTTP, or gRPC `SharedPollRefresh`): the items set with
  GET /poll?key=K&data=JSON&version=N (or &removed=1), and the epoch set with GET /poll?epoch=E:
  each requested key that is set answers {"key","removed":true} when removed, else
  {"key","data","version"} when its version is above the requested one; unset keys are left
  out; the result has the epoch when one is set.
* Stream (gRPC) payload extras: "pubs": [data, ...] or [{"data":..,"tags":{..}}, ...] sent
  after the subscribe answer, then "end": "eof" (return) | "error" (status UNAVAILABLE) |
  absent (hold until the client goes). Bidirectional streams answer each client publication
  with a publication {"echo": <data>} to that client. A stream's `garbage` sends a first
  message without a subscribe answer.

Failures: over HTTP "500"/any status → that status; garbage → 200 with a body that is not
JSON; slow → the answer only after --slow seconds (default 2.5); close → the connection is
closed without an answer. Over gRPC: status UNAVAILABLE (fail, close), DATA_LOSS (garbage),
and slow sleeps as over HTTP.
"""

import argparse
import base64
import importlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fatal(where, e):
    out({"ev": "fatal", "where": where, "message": "".join(traceback.format_exception(e))})
    os._exit(1)


parser = argparse.ArgumentParser()
parser.add_argument("--http-port", type=int, default=0)
parser.add_argument("--grpc-port", type=int, default=0)
parser.add_argument("--proto", default="")
parser.add_argument("--slow", type=float, default=2.5)
args = parser.parse_args()

lock = threading.Lock()
records = []
modes = {}  # (kind, key) -> {"mode": str, "info": ..., "meta": ...}; key "" = any
poll = {"items": {}, "epoch": ""}  # shared poll refresh: key -> {"data", "version"} | {"removed"}

KINDS = ("connect", "refresh", "subscribe", "publish", "sub_refresh", "rpc", "map_publish", "map_remove",
         "shared_poll_refresh")
WORDS = ("deny", "kick", "busy", "empty", "fail", "slow", "garbage", "close", "rewrite", "error")


def record(kind, protocol, path, headers, body):
    with lock:
        r = {"n": len(records), "kind": kind, "protocol": protocol, "path": path, "t": time.time(),
             "headers": headers, "body": body}
        records.append(r)
        return r


class Failure(Exception):
    """The backend fails the call this way (see the module doc)."""

    def __init__(self, how):
        super().__init__(how)
        self.how = str(how)


def payload(body):
    """The request's payload as JSON: `data`, or `b64data` decoded; None when absent."""
    if "data" in body:
        return body["data"]
    b = body.get("b64data")
    if b:
        raw = base64.b64decode(b)
        try:
            return json.loads(raw)
        except ValueError:
            return {"bytes": raw.decode("utf-8", "replace")}
    return None


def now():
    return int(time.time())


def pick(src, keys):
    out = {k: src[k] for k in keys if k in src}
    if "expire_at_in" in src:
        out["expire_at"] = now() + int(src["expire_at_in"])
    return out


def word(name):
    for w in (name or "").split(":"):
        if w in WORDS:
            return w
    return None


def failure_or(how, answer):
    if how in ("fail", "slow", "garbage", "close") or how.isdigit():
        raise Failure("500" if how == "fail" else how)
    return answer


def by_payload(p):
    if not isinstance(p, dict):
        return None
    if "fail" in p:
        raise Failure(p["fail"])
    if "disconnect" in p:
        return {"disconnect": p["disconnect"]}
    if "error" in p:
        return {"error": p["error"]}
    if p.get("empty"):
        return {}
    return None


def by_word(kind, w, p):
    if w is None:
        return None
    if w == "deny":
        return {"error": {"code": 403, "message": "denied"}}
    if w == "kick":
        return {"disconnect": {"code": 4403, "reason": "kicked"}}
    if w == "busy":
        return {"error": {"code": 1001, "message": "busy", "temporary": True}}
    if w == "empty":
        return {}
    if w == "rewrite" and kind == "publish":
        return {"result": {"data": {"rewritten": p}}}
    if w == "rewrite" and kind == "map_publish":
        return {"result": {"key": "rewritten", "data": {"rewritten": p}, "tags": {"via": "proxy"}}}
    if w == "rewrite" and kind == "map_remove":
        return {"result": {"key": "rewritten"}}
    if w == "error" and kind == "rpc":
        return {"error": {"code": 1000, "message": "custom error"}}
    if w in ("fail", "slow", "garbage", "close"):
        raise Failure("500" if w == "fail" else w)
    return None


def by_mode(kind, key):
    with lock:
        m = modes.get((kind, key)) or modes.get((kind, "")) or {"mode": "extend:60"}
    mode = m["mode"]
    if mode.startswith("extend:"):
        r = {"expire_at": now() + int(mode.split(":", 1)[1])}
        for k in ("info", "meta"):
            if k in m:
                r[k] = m[k]
        return {"result": r}
    if mode == "expired":
        return {"result": {"expired": True}}
    if mode == "zero":
        return {"result": {}}
    if mode == "empty":
        return {}
    if mode == "error":
        return {"error": {"code": 1000, "message": "custom error"}}
    if mode == "disconnect":
        return {"disconnect": {"code": 4403, "reason": "kicked"}}
    return failure_or(mode, {"result": {}})


def poll_refresh(body):
    """The shared poll refresh result for request `body` (see the module doc)."""
    items = []
    with lock:
        for it in body.get("items", []):
            key = it.get("key", "")
            v = poll["items"].get(key)
            if v is None:
                continue
            if v.get("removed"):
                items.append({"key": key, "removed": True})
            elif v["version"] > int(it.get("version", 0)):
                items.append({"key": key, "data": v["data"], "version": v["version"]})
        result = {"items": items}
        if poll["epoch"]:
            result["epoch"] = poll["epoch"]
    return result


def decide(kind, body):
    """The answer envelope for a call of `kind` with request `body`; raises Failure."""
    if kind == "shared_poll_refresh":
        return {"result": poll_refresh(body)}
    p = payload(body)
    if kind == "refresh":
        return by_mode("refresh", body.get("user", ""))
    if kind == "sub_refresh":
        return by_mode("sub_refresh", body.get("channel", ""))
    a = by_payload(p)
    if a is not None:
        return a
    name = body.get("method", "") if kind == "rpc" else body.get("channel", "")
    if kind in ("map_publish", "map_remove"):
        name = body.get("key", "") + ":" + name
    a = by_word(kind, word(name), p)
    if a is not None:
        return a
    if kind == "connect":
        if not isinstance(p, dict):
            return {"result": {"user": ""}}
        keys = ("user", "info", "b64info", "data", "b64data", "channels", "subs", "meta", "expire_at")
        return {"result": pick(p, keys)}
    if kind in ("subscribe", "subscribe_stream"):
        if not isinstance(p, dict):
            return {"result": {}}
        return {"result": pick(p, ("info", "b64info", "data", "b64data", "override", "expire_at"))}
    if kind in ("publish", "map_publish", "map_remove"):
        return {"result": {}}
    if kind == "rpc":
        return {"result": {"data": p}} if p is not None else {"result": {}}
    return {}


def headers_of(pairs):
    h = {}
    for k, v in pairs:
        k = k.lower()
        if k in h:
            h[k] = (h[k] if isinstance(h[k], list) else [h[k]]) + [v]
        else:
            h[k] = v
    return h


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, status, body, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            # The caller gave up (a slow answer after its timeout).
            self.close_connection = True

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/requests":
            with lock:
                rs = [r for r in records
                      if r["kind"] == q.get("kind", r["kind"]) and r["protocol"] == q.get("protocol", r["protocol"])]
            return self.send(200, rs)
        if u.path == "/clear":
            with lock:
                records.clear()
            return self.send(200, {})
        if u.path == "/poll":
            with lock:
                if "epoch" in q:
                    poll["epoch"] = q["epoch"]
                if "key" in q:
                    v = {"removed": True} if q.get("removed") else {"data": json.loads(q["data"]),
                                                                     "version": int(q.get("version", "0"))}
                    poll["items"][q["key"]] = v
            return self.send(200, {})
        if u.path == "/control":
            kind = q.get("kind")
            if kind not in ("refresh", "sub_refresh") or "mode" not in q:
                return self.send(400, {"error": "kind=refresh|sub_refresh and mode are needed"})
            m = {"mode": q["mode"]}
            for k in ("info", "meta"):
                if k in q:
                    m[k] = json.loads(q[k])
            with lock:
                modes[(kind, q.get("user", q.get("channel", "")))] = m
            return self.send(200, {})
        return self.send(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        path = urllib.parse.urlsplit(self.path).path
        kind = path.rstrip("/").rsplit("/", 1)[-1]
        try:
            body = json.loads(raw)
        except ValueError:
            record(kind, "http", path, headers_of(self.headers.items()), {"not_json": raw.decode("utf-8", "replace")})
            return self.send(400, {"error": "the body is not JSON"})
        record(kind, "http", path, headers_of(self.headers.items()), body)
        if kind not in KINDS:
            return self.send(404, {"error": f"unknown kind {kind}"})
        try:
            answer = decide(kind, body)
        except Failure as f:
            if f.how == "garbage":
                return self.send(200, "<html>this is not JSON</html>", "text/html")
            if f.how == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return None
            if f.how == "slow":
                time.sleep(args.slow)
                return self.send(200, {"result": {}})
            return self.send(int(f.how), {"error": "backend failure"})
        return self.send(200, answer)


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A server opens many connections at once (every expiring subscription of a session, every
    # worker's pool): the default backlog of 5 would drop connection attempts, which then
    # arrive only after the caller's timeout.
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # A caller that went away mid-request is not the backend's problem.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


# ---------------------------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------------------------

METHOD_KINDS = {"Connect": "connect", "Refresh": "refresh", "Subscribe": "subscribe", "Publish": "publish",
                "RPC": "rpc", "SubRefresh": "sub_refresh", "MapPublish": "map_publish",
                "MapRemove": "map_remove", "SharedPollRefresh": "shared_poll_refresh"}


def start_grpc(proto):
    import grpc
    from google.protobuf import json_format
    from grpc_tools import protoc

    gen = tempfile.mkdtemp(prefix="gyre-proxy-backend-")
    d, f = os.path.split(os.path.abspath(proto))
    rc = protoc.main(["protoc", f"-I{d}", f"--python_out={gen}", f"--grpc_python_out={gen}", os.path.join(d, f)])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with {rc} on {proto}")
    sys.path.insert(0, gen)
    mod = os.path.splitext(f)[0]
    pb = importlib.import_module(f"{mod}_pb2")
    pb_grpc = importlib.import_module(f"{mod}_pb2_grpc")

    def to_dict(msg):
        body = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        for k in ("data", "meta"):
            if k in body:
                raw = base64.b64decode(body[k])
                try:
                    body[k] = json.loads(raw)
                except ValueError:
                    body[k] = {"bytes": raw.decode("utf-8", "replace")}
        return body

    def bytes_fields(r):
        """JSON payloads (`info`, `data`, `meta`) as the base64 ParseDict wants for bytes."""
        r = dict(r)
        for k in ("info", "data", "meta"):
            if k in r:
                r[k] = base64.b64encode(json.dumps(r[k]).encode()).decode()
        if "subs" in r:
            r["subs"] = {ch: bytes_fields(o) for ch, o in r["subs"].items()}
        return r

    def envelope(cls, answer):
        a = dict(answer)
        if "result" in a:
            a["result"] = bytes_fields(a["result"])
        return json_format.ParseDict(a, cls(), ignore_unknown_fields=True)

    def fail(context, f):
        if f.how == "slow":
            time.sleep(args.slow)
            return
        if f.how == "garbage":
            context.abort(grpc.StatusCode.DATA_LOSS, "garbage")
        context.abort(grpc.StatusCode.UNAVAILABLE, "backend failure")

    def unary(method):
        kind = METHOD_KINDS[method]
        resp_cls = getattr(pb, f"{method}Response")

        def handle(self, request, context):
            body = to_dict(request)
            record(kind, "grpc", method, headers_of(context.invocation_metadata()), body)
            try:
                answer = decide(kind, body)
            except Failure as f:
                fail(context, f)
                return resp_cls()
            return envelope(resp_cls, answer)

        return handle

    def shared_poll_refresh(self, request, context):
        body = to_dict(request)
        record("shared_poll_refresh", "grpc", "SharedPollRefresh", headers_of(context.invocation_metadata()), body)
        r = poll_refresh(body)
        items = [pb.SharedPollRefreshResultItem(key=i["key"], removed=i.get("removed", False),
                                                data=json.dumps(i["data"]).encode() if "data" in i else b"",
                                                version=i.get("version", 0)) for i in r["items"]]
        return pb.SharedPollRefreshResponse(result=pb.SharedPollRefreshResult(items=items, epoch=r.get("epoch", "")))

    def pub_message(p):
        if isinstance(p, dict) and "data" in p:
            data, tags = p["data"], p.get("tags", {})
        else:
            data, tags = p, {}
        return pb.StreamSubscribeResponse(publication=pb.Publication(data=json.dumps(data).encode(), tags=tags))

    def stream(request, context, bidirectional, incoming):
        body = to_dict(request)
        body["bidirectional"] = bidirectional
        record("subscribe_stream", "grpc", "SubscribeBidirectional" if bidirectional else "SubscribeUnidirectional",
               headers_of(context.invocation_metadata()), body)
        who = {"channel": body.get("channel", ""), "client": body.get("client", "")}
        ended = {"how": "cancelled"}
        context.add_callback(lambda: record("stream_end", "grpc", "", {}, dict(who, ended=ended["how"])))
        p = payload(body)
        try:
            answer = decide("subscribe_stream", body)
        except Failure as f:
            if f.how == "garbage":
                ended["how"] = "refused"
                yield pub_message({"garbage": True})
                return
            fail(context, f)
            ended["how"] = "refused"
            return
        yield pb.StreamSubscribeResponse(subscribe_response=envelope(pb.SubscribeResponse, answer))
        if "result" not in answer:
            ended["how"] = "refused"
            return
        opts = p if isinstance(p, dict) else {}
        for item in opts.get("pubs", []):
            time.sleep(0.05)
            yield pub_message(item)
        end = opts.get("end")
        if end == "eof":
            ended["how"] = "eof"
            return
        if end == "error":
            ended["how"] = "error"
            context.abort(grpc.StatusCode.UNAVAILABLE, "stream failure")
        if incoming is None:
            while context.is_active():
                time.sleep(0.05)
            return
        for msg in incoming:
            if not msg.HasField("publication"):
                continue
            raw = msg.publication.data
            try:
                data = json.loads(raw)
            except ValueError:
                data = {"bytes": raw.decode("utf-8", "replace")}
            record("stream_publication", "grpc", "SubscribeBidirectional", {}, dict(who, data=data))
            yield pub_message({"echo": data})

    class Servicer(pb_grpc.CentrifugoProxyServicer):
        Connect = unary("Connect")
        Refresh = unary("Refresh")
        Subscribe = unary("Subscribe")
        Publish = unary("Publish")
        RPC = unary("RPC")
        SubRefresh = unary("SubRefresh")
        MapPublish = unary("MapPublish")
        MapRemove = unary("MapRemove")
        SharedPollRefresh = shared_poll_refresh

        def SubscribeUnidirectional(self, request, context):
            yield from stream(request, context, False, None)

        def SubscribeBidirectional(self, request_iterator, context):
            first = next(request_iterator, None)
            if first is None or not first.HasField("subscribe_request"):
                record("subscribe_stream", "grpc", "SubscribeBidirectional", headers_of(context.invocation_metadata()),
                       {"bad_first_message": True})
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must carry subscribe_request")
            yield from stream(first.subscribe_request, context, True, request_iterator)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    pb_grpc.add_CentrifugoProxyServicer_to_server(Servicer(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on 127.0.0.1:{args.grpc_port}")
    server.start()
    return server, port


def main():
    httpd = HTTPServer(("127.0.0.1", args.http_port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    grpc_port = None
    if args.proto:
        _server, grpc_port = start_grpc(args.proto)
    out({"ev": "ready", "http_port": httpd.server_address[1], "grpc_port": grpc_port})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if json.loads(line).get("op") == "exit":
            break
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        fatal("main", e)
