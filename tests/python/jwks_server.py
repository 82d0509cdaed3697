"""A JWKS endpoint for tests/it/token_keys.rs: serves {"keys": [...]} over HTTP, or HTTPS with
`--tls CERT KEY`, on 127.0.0.1 (a free port), at any path.

Reads commands, one JSON object a line, from stdin; answers each with one JSON line:
  {"op": "keys", "keys": [{"kid": K, "file": PUBLIC_PEM, "alg"?: A, "use"?: U}, ..]}
      the set served from now on (`use` defaults to "sig"; "" leaves it out); each PEM file
      is turned into a JWK by PyJWT (RSA, EC or OKP)      -> {"ev": "ok"}
  {"op": "count"}                                         -> {"ev": "count", "fetches": N, "paths": [..]}
  {"op": "stop"}  closes the listening socket (an outage) -> {"ev": "stopped", "fetches": N}
Prints {"ev": "ready", "port": P, "url": BASE} first.
"""

import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

state = {"doc": b'{"keys":[]}', "fetches": 0, "paths": []}
lock = threading.Lock()


def jwk_of(spec):
    with open(spec["file"], "rb") as f:
        key = load_pem_public_key(f.read())
    if isinstance(key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    else:
        raise ValueError("unsupported key " + spec["file"])
    jwk["kid"] = spec["kid"]
    use = spec.get("use", "sig")
    if use:
        jwk["use"] = use
    if spec.get("alg"):
        jwk["alg"] = spec["alg"]
    return jwk


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            state["fetches"] += 1
            state["paths"].append(self.path)
            body = state["doc"]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def out(v):
    sys.stdout.write(json.dumps(v) + "\n")
    sys.stdout.flush()


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = "localhost" if scheme == "https" else "127.0.0.1"
    out({"ev": "ready", "port": port, "url": f"{scheme}://{host}:{port}"})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "keys":
                doc = json.dumps({"keys": [jwk_of(k) for k in cmd["keys"]]}).encode()
                with lock:
                    state["doc"] = doc
                out({"ev": "ok"})
            elif op == "count":
                with lock:
                    out({"ev": "count", "fetches": state["fetches"], "paths": state["paths"]})
            elif op == "stop":
                server.shutdown()
                server.server_close()
                out({"ev": "stopped", "fetches": state["fetches"]})
            else:
                out({"ev": "bad", "message": "unknown op " + op})
        except Exception as e:  # report, do not die silently
            out({"ev": "fatal", "message": repr(e)})


if __name__ == "__main__":
    main()
