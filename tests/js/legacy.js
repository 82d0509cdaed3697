// One scenario of the Centrifugo 2.x/3.x client (`centrifuge` 2.8.5, installed as
// `centrifuge2`) against Gyre, driven by tests/it/legacy_protocol.rs.
//
// Usage: node legacy.js '<json>' with
//   {"url": WS or SockJS URL, "api": "http://host:port/api", "key": API key,
//    "secret": HMAC secret, "protobuf"?: bool, "sockjs"?: "websocket"|"xhr-streaming"|"xhr-polling"}
// Prints one JSON object on stdout: what the SDK saw (the Rust test checks it). Any failure
// prints {"fatal": ...} and exits 1.

'use strict';

const WebSocket = require('ws');
const jwt = require('jsonwebtoken');

const args = JSON.parse(process.argv[2]);
const Centrifuge = args.protobuf ? require('centrifuge2/dist/centrifuge.protobuf') : require('centrifuge2');
const SockJS = args.sockjs ? require('sockjs-client') : null;

const out = { events: [] };
const log = (ev) => out.events.push(ev);

function fail(e) {
  console.log(JSON.stringify({ fatal: String((e && e.stack) || e), partial: out }));
  process.exit(1);
}
process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);
setTimeout(() => fail('timeout'), 40000).unref();

function token(user, extra) {
  return jwt.sign(Object.assign({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 }, extra || {}), args.secret, {
    algorithm: 'HS256',
  });
}

function client(tok) {
  const opts = { minRetry: 300, maxRetry: 600, debug: false };
  if (SockJS) {
    opts.sockjs = SockJS;
    opts.sockjsTransports = [args.sockjs];
  } else {
    opts.websocket = WebSocket;
  }
  const c = new Centrifuge(args.url, opts);
  c.setToken(tok);
  return c;
}

function once(emitter, name, pred) {
  return new Promise((resolve) => {
    const h = (ctx) => {
      if (!pred || pred(ctx)) {
        emitter.removeListener(name, h);
        resolve(ctx);
      }
    };
    emitter.on(name, h);
  });
}

async function api(method, params) {
  const r = await fetch(args.api, {
    method: 'POST',
    headers: { Authorization: 'apikey ' + args.key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ method, params }),
  });
  const j = await r.json();
  if (j.error) throw new Error(method + ': ' + JSON.stringify(j.error));
  return j.result;
}

// Client payloads: JSON values, or their bytes for protobuf clients.
const enc = (v) => (args.protobuf ? Buffer.from(JSON.stringify(v)) : v);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  // `info` as JSON for JSON clients; `b64info` (bytes) for protobuf ones.
  const info = args.protobuf ? { b64info: Buffer.from('{"name":"alice"}').toString('base64') } : { info: { name: 'alice' } };
  const a = client(token('alice', info));
  const pubs = [];
  const joins = [];
  const leaves = [];
  const aConnected = once(a, 'connect');
  a.connect();
  const ac = await aConnected;
  out.connect = { client: ac.client, transport: ac.transport };

  const sub = a.subscribe('chat:room');
  sub.on('publish', (ctx) => pubs.push({ data: decodeData(ctx.data), offset: num(ctx.offset) }));
  sub.on('join', (ctx) => joins.push(ctx.info));
  sub.on('leave', (ctx) => leaves.push(ctx.info));
  const s1 = await once(sub, 'subscribe');
  out.subscribe = { recoverable: !!sub._recoverable, recovered: !!s1.recovered, isResubscribe: !!s1.isResubscribe };

  const b = client(token('bob'));
  const bConnected = once(b, 'connect');
  b.connect();
  await bConnected;
  const bsub = b.subscribe('chat:room');
  await once(bsub, 'subscribe');
  for (let i = 0; i < 50 && joins.length === 0; i++) await sleep(20);

  for (let i = 1; i <= 3; i++) await api('publish', { channel: 'chat:room', data: { n: i } });
  await bsub.publish(enc({ n: 4, from: 'bob' }));
  for (let i = 0; i < 100 && pubs.length < 4; i++) await sleep(20);
  out.live = pubs.slice();

  const pr = await sub.presence();
  out.presence = Object.values(pr.presence).map((p) => ({ user: p.user, info: decodeInfo(p.conn_info || p.connInfo) }));
  out.presence_stats = await sub.presenceStats();
  const h = await sub.history({ limit: 10 });
  // Without a limit: the position only, unless use_unlimited_history_by_default.
  out.history_nolimit = (await sub.history()).publications.length;
  out.history = { n: h.publications.length, offset: num(h.offset), epoch: !!h.epoch, first: decodeData(h.publications[0].data) };
  out.rpc = await a.rpc(enc({ q: 1 })).then((r) => ({ ok: r }), (e) => ({ err: e }));

  b.disconnect();
  // A polling client that stops polling is gone after the disconnect delay (5 s).
  for (let i = 0; i < 400 && leaves.length === 0; i++) await sleep(20);
  out.joins = joins.map((i) => i.user);
  out.leaves = leaves.map((i) => i.user);

  // Recovery: the transport breaks, two publications come while the client is away, and
  // the resubscription recovers them.
  const resub = once(sub, 'subscribe');
  const disc = once(a, 'disconnect');
  a._transport.close();
  await disc;
  await api('publish', { channel: 'chat:room', data: { n: 5 } });
  await api('publish', { channel: 'chat:room', data: { n: 6 } });
  const s2 = await resub;
  for (let i = 0; i < 100 && pubs.length < 6; i++) await sleep(20);
  out.recovery = { recovered: !!s2.recovered, isResubscribe: !!s2.isResubscribe, pubs: pubs.slice(4) };
  a.disconnect();

  // A token signed with another key: disconnected for good with "invalid token".
  const bad = client(jwt.sign({ sub: 'eve' }, 'another-secret', { algorithm: 'HS256' }));
  const badDisc = once(bad, 'disconnect');
  bad.connect();
  const bd = await badDisc;
  out.bad_token = { reason: bd.reason, reconnect: bd.reconnect };
  bad.disconnect();

  console.log(JSON.stringify(out));
  process.exit(0);
}

function decodeData(d) {
  if (d && typeof d === 'object' && typeof d.length === 'number') return JSON.parse(Buffer.from(d).toString());
  return d;
}

// protobuf's uint64 arrives as a Long.
function num(v) {
  return v && typeof v === 'object' ? v.toNumber() : v;
}

function decodeInfo(i) {
  if (!i || i.length === 0) return null;
  return decodeData(i);
}

main().catch(fail);
