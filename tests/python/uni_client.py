"""Consumers of the unidirectional transports, as an application writes them, driven by
tests/it/transports.rs.

Reads commands, one JSON object a line, from stdin; prints what it sees, one JSON object a
line, on stdout. Each stream runs in its own thread and is named by the command's `id`.

Commands:
  {"op":"open","id":ID,"transport":T,"url":URL,"req"?:{ConnectRequest},"raw"?:TEXT,
   "proto_dir"?:DIR}
      T is one of
        uni_http_stream  requests.post(url, data=JSON, stream=True), one push per line
        uni_sse          requests.get(url, params={"cf_connect": JSON}, stream=True), SSE events
        uni_sse_post     requests.post(url, data=JSON, stream=True), SSE events
        uni_websocket    websockets.sync.client.connect(url), the request as the first message
        uni_grpc         a client generated with grpcio-tools from DIR/unistream.proto,
                         Consume(ConnectRequest) on the address URL
      `raw` is sent as the body instead of the JSON of `req`.
  {"op":"close","id":ID}   the consumer goes away (closes its connection)
  {"op":"exit"}

Output:
  {"ev":"ready"}
  {"ev":"status","id":ID,"status":N,"body":TEXT}   a response that is not 200 (then "end")
  {"ev":"push","id":ID,"push":{...}}                 each push (a ping is {}); uni_grpc pushes
                                                     are shown as the JSON protocol writes them
  {"ev":"end","id":ID,"code"?:N,"reason"?:S,"status"?:S}
      the stream ended: uni_websocket with the close code and reason, uni_grpc with the RPC's
      status name
  {"ev":"fatal","where":...,"message":...}           an exception; the process exits 1
"""

import base64
import importlib
import json
import os
import sys
import tempfile
import threading
import traceback

import requests
import websockets.sync.client

lock = threading.Lock()
streams = {}


def out(obj):
    with lock:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def fatal(where, e):
    out({"ev": "fatal", "where": where, "message": "".join(traceback.format_exception(e))})
    os._exit(1)


# Loopback only: proxies from the environment must not reroute the requests.
session = requests.Session()
session.trust_env = False


def body_of(cmd):
    if "raw" in cmd:
        return cmd["raw"].encode()
    return json.dumps(cmd.get("req", {})).encode()


def check_status(sid, r):
    if r.status_code != 200:
        out({"ev": "status", "id": sid, "status": r.status_code, "body": r.text})
        out({"ev": "end", "id": sid})
        return False
    return True


def run_lines(sid, cmd):
    r = session.post(cmd["url"], data=body_of(cmd), stream=True, timeout=(5, None))
    streams[sid] = r
    if not check_status(sid, r):
        return
    # iter_lines splits on \r too; the stream is \n-delimited JSON, so split by hand.
    buf = b""
    for chunk in r.iter_content(chunk_size=None):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            out({"ev": "push", "id": sid, "push": json.loads(line)})
    if buf:
        raise AssertionError(f"the stream ended inside a line: {buf!r}")
    out({"ev": "end", "id": sid})


def run_sse(sid, cmd, post):
    if post:
        r = session.post(cmd["url"], data=body_of(cmd), stream=True, timeout=(5, None))
    else:
        params = {"cf_connect": body_of(cmd).decode()}
        r = session.get(cmd["url"], params=params, stream=True, timeout=(5, None))
    streams[sid] = r
    if not check_status(sid, r):
        return
    ctype = r.headers.get("Content-Type", "")
    if not ctype.startswith("text/event-stream"):
        raise AssertionError(f"SSE Content-Type {ctype!r}")
    data = []
    for line in r.iter_lines(chunk_size=1, decode_unicode=False):
        line = line.decode()
        if line == "":
            if data:
                out({"ev": "push", "id": sid, "push": json.loads("\n".join(data))})
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field != "data":
            raise AssertionError(f"unexpected SSE field {line!r}")
        data.append(value[1:] if value.startswith(" ") else value)
    out({"ev": "end", "id": sid})


def run_ws(sid, cmd):
    ws = websockets.sync.client.connect(cmd["url"], open_timeout=5, proxy=None)
    streams[sid] = ws
    ws.send(body_of(cmd).decode())
    try:
        for msg in ws:
            out({"ev": "push", "id": sid, "push": json.loads(msg)})
    except websockets.exceptions.ConnectionClosedError:
        pass
    out({"ev": "end", "id": sid, "code": ws.close_code, "reason": ws.close_reason})


def load_unistream(proto_dir):
    from grpc_tools import protoc

    gen = tempfile.mkdtemp(prefix="gyre-unistream-")
    rc = protoc.main(
        ["protoc", f"-I{proto_dir}", f"--python_out={gen}", f"--grpc_python_out={gen}", f"{proto_dir}/unistream.proto"]
    )
    if rc != 0:
        raise AssertionError(f"grpc_tools.protoc failed with {rc}")
    sys.path.insert(0, gen)
    return importlib.import_module("unistream_pb2"), importlib.import_module("unistream_pb2_grpc")


def grpc_push_json(push):
    """A unistream Push as the JSON protocol writes it: payloads as JSON, defaults left out."""
    from google.protobuf.json_format import MessageToDict

    d = MessageToDict(push, preserving_proto_field_name=True)

    def data(obj, key):
        if key in obj:
            obj[key] = json.loads(base64.b64decode(obj[key]))

    def pub(p):
        data(p, "data")
        if "offset" in p:
            p["offset"] = int(p["offset"])

    if "pub" in d:
        pub(d["pub"])
    if "connect" in d:
        c = d["connect"]
        data(c, "data")
        for s in c.get("subs", {}).values():
            for p in s.get("publications", []):
                pub(p)
            if "offset" in s:
                s["offset"] = int(s["offset"])
    return d


def run_grpc(sid, cmd):
    import grpc

    pb2, pb2_grpc = load_unistream(cmd["proto_dir"])
    req = pb2.ConnectRequest()
    r = cmd.get("req", {})
    if "token" in r:
        req.token = r["token"]
    if "name" in r:
        req.name = r["name"]
    channel = grpc.insecure_channel(cmd["url"], options=[("grpc.enable_http_proxy", 0)])
    stub = pb2_grpc.CentrifugoUniStreamStub(channel)
    call = stub.Consume(req)
    streams[sid] = call
    try:
        for push in call:
            out({"ev": "push", "id": sid, "push": grpc_push_json(push)})
        out({"ev": "end", "id": sid, "status": call.code().name})
    except grpc.RpcError as e:
        out({"ev": "end", "id": sid, "status": e.code().name, "details": e.details()})


def run(cmd):
    sid = cmd["id"]
    t = cmd["transport"]
    try:
        if t == "uni_http_stream":
            run_lines(sid, cmd)
        elif t == "uni_sse":
            run_sse(sid, cmd, post=False)
        elif t == "uni_sse_post":
            run_sse(sid, cmd, post=True)
        elif t == "uni_websocket":
            run_ws(sid, cmd)
        elif t == "uni_grpc":
            run_grpc(sid, cmd)
        else:
            raise AssertionError(f"unknown transport {t}")
    except Exception as e:  # noqa: BLE001 - everything is reported
        if streams.get(sid) == "closed":
            out({"ev": "end", "id": sid, "closed": True})
        else:
            fatal(f"{t} {sid}", e)


def close(sid):
    s = streams.get(sid)
    streams[sid] = "closed"
    if s is None or s == "closed":
        return
    if hasattr(s, "cancel"):
        s.cancel()
    else:
        s.close()


def main():
    out({"ev": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "open":
            threading.Thread(target=run, args=(cmd,), daemon=True).start()
        elif op == "close":
            close(cmd["id"])
        elif op == "exit":
            break
        else:
            fatal("command", AssertionError(f"unknown op {op}"))
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        fatal("main", e)
