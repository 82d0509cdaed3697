// Shared poll subscriptions with centrifuge-js (5.8) against Gyre, driven by
// tests/it/shared_poll.rs.
//
// Usage: node shared_poll.js '{"url":WS_URL,"api":HTTP_BASE,"key":API_KEY,"protobuf":bool}'
// Gyre has no shared poll namespaces: the script subscribes with `newSharedPollSubscription`
// (keys tracked before subscribing, a getSignature callback) to a stream namespace and to an
// unknown one, beside a plain subscription on the same connection, and prints what the SDK saw
// as one JSON object on stdout (the Rust test decides what is right): each shared poll
// subscription's `unsubscribed` events, `error` events and final state, whether getSignature
// was called, the `sub_refresh` (track/untrack) commands sent, and the publication the plain
// subscription got afterwards. An exception prints {"fatal":..} and exits 1.

'use strict';

const WebSocket = require('ws');
const json = require('centrifuge');
const protobuf = require('centrifuge/build/protobuf');

const cfg = JSON.parse(process.argv[2]);
const { Centrifuge } = cfg.protobuf ? protobuf : json;
const dec = (d) => (cfg.protobuf ? JSON.parse(new TextDecoder().decode(d)) : d);

let subRefreshes = 0;
class CountingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    const send = this.send.bind(this);
    this.send = (data, ...rest) => {
      // Track/untrack go in sub_refresh commands (JSON only: protobuf frames are binary).
      if (typeof data === 'string') {
        for (const line of data.split('\n')) {
          if (line.includes('"sub_refresh"')) subRefreshes++;
        }
      }
      return send(data, ...rest);
    };
  }
}

async function api(method, params) {
  const r = await fetch(`${cfg.api}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': cfg.key, 'Content-Type': 'application/json' },
    body: JSON.stringify(params),
  });
  const body = await r.json();
  if (body.error) throw new Error(`${method}: ${JSON.stringify(body.error)}`);
  return body.result;
}

function until(pred, what, ms = 5000) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() - start > ms) return reject(new Error(`timeout waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

async function main() {
  const c = new Centrifuge(cfg.url, { websocket: CountingWebSocket });
  const plain = c.newSubscription('plain:a');
  const pubs = [];
  plain.on('publication', (ctx) => pubs.push(dec(ctx.data)));
  let signatures = 0;
  const shared = (ch) => {
    const sub = c.newSharedPollSubscription(ch, {
      getSignature: async (ctx) => {
        signatures++;
        return { keys: ctx.keys, signature: 'not-checked' };
      },
    });
    const me = { sub, unsubscribed: [], errors: [], updates: 0 };
    sub.on('unsubscribed', (ctx) => me.unsubscribed.push({ code: ctx.code, reason: ctx.reason }));
    sub.on('error', (ctx) => me.errors.push({ type: ctx.type, code: ctx.error.code }));
    sub.on('update', () => me.updates++);
    return me;
  };
  plain.subscribe();
  c.connect();
  await plain.ready(5000);
  const sp = shared('plain:poll');
  sp.sub.track([{ key: 'k1', version: 0 }, { key: 'k2', version: 0 }], 'sig');
  sp.sub.subscribe();
  const unknown = shared('nope:poll');
  unknown.sub.subscribe();
  await until(() => sp.unsubscribed.length > 0 && unknown.unsubscribed.length > 0, 'the refusals');
  // The connection goes on: the plain subscription still gets publications.
  await api('publish', { channel: 'plain:a', data: { after: 1 } });
  await until(() => pubs.length > 0, 'a publication after the refusals');
  const out = (me) => ({ unsubscribed: me.unsubscribed, errors: me.errors, state: me.sub.state, updates: me.updates });
  const result = {
    shared: out(sp), unknown: out(unknown), tracked: [...sp.sub.trackedKeys()].sort(), signatures,
    subRefreshes, pubs, client: c.state,
  };
  c.disconnect();
  return result;
}

main().then(
  (r) => { console.log(JSON.stringify(r)); process.exit(0); },
  (e) => { console.log(JSON.stringify({ fatal: String(e && e.stack || e) })); process.exit(1); },
);
