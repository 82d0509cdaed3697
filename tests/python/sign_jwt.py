"""Signs JWTs with PyJWT (the `cryptography` backend) for tests/it/token_keys.rs.

Reads one JSON array from stdin: [{"alg": A, "key": PEM_FILE or HMAC secret, "claims": {..},
"kid"?: K}, ..] and prints a JSON array of the tokens, in order.
"""

import json
import sys

import jwt

reqs = json.load(sys.stdin)
tokens = []
for r in reqs:
    key = r["key"]
    if not r["alg"].startswith("HS"):
        with open(key, "rb") as f:
            key = f.read()
    headers = {"kid": r["kid"]} if r.get("kid") else None
    tokens.append(jwt.encode(r["claims"], key, algorithm=r["alg"], headers=headers))
print(json.dumps(tokens))
