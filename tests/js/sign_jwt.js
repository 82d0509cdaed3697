// Signs JWTs with the `jsonwebtoken` package for tests/it/token_keys.rs.
//
// Reads one JSON array from stdin: [{"alg": A, "key": PEM_FILE or HMAC secret, "claims": {..},
// "kid"?: K}, ..] and prints a JSON array of the tokens, in order.
'use strict';

const fs = require('fs');
const jwt = require('jsonwebtoken');

const reqs = JSON.parse(fs.readFileSync(0, 'utf8'));
const tokens = reqs.map((r) => {
  const key = r.alg.startsWith('HS') ? r.key : fs.readFileSync(r.key);
  const opts = { algorithm: r.alg, noTimestamp: true };
  if (r.kid) opts.keyid = r.kid;
  return jwt.sign(r.claims, key, opts);
});
process.stdout.write(JSON.stringify(tokens) + '\n');
