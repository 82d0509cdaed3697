// Fossil deltas per key on a map channel with centrifuge-js (5.8) against Gyre, driven by
// tests/it/map_writes.rs.
//
// Usage: node map_delta.js '{"url":WS_URL,"api":HTTP_BASE,"key":API_KEY,"protobuf":bool,"ch":CHANNEL}'
// Seeds two keys holding a large document, then a client subscribes with `delta: 'fossil'`
// and another without; the server API changes one field of each key several times (with
// `delta: true`), removes one key and sets it again. Prints, as one JSON object, what each
// client ends with (`state`: key → document), the updates it saw, and the delta client's
// `deltaStats()`. An exception prints {"fatal":..} and exits 1.

'use strict';

const WebSocket = require('ws');
const json = require('centrifuge');
const protobuf = require('centrifuge/build/protobuf');
const { until, run } = require('./wait');

const cfg = JSON.parse(process.argv[2]);
const { Centrifuge } = cfg.protobuf ? protobuf : json;
const dec = (d) => (cfg.protobuf ? JSON.parse(new TextDecoder().decode(d)) : d);

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

function doc(key, n) {
  const d = { key, n };
  for (let i = 0; i < 40; i++) d[`field${i}`] = `a fairly long value number ${i} of ${key}`;
  return d;
}

function client(delta) {
  const c = new Centrifuge(cfg.url, { websocket: WebSocket });
  const sub = c.newMapSubscription(cfg.ch, delta ? { delta: 'fossil' } : {});
  const me = { c, sub, state: new Map(), updates: [], synced: false };
  sub.on('sync', (ctx) => {
    me.state = new Map(ctx.entries.map((e) => [e.key, dec(e.data)]));
    me.synced = true;
  });
  sub.on('update', (ctx) => {
    if (ctx.removed) me.state.delete(ctx.key);
    else me.state.set(ctx.key, dec(ctx.data));
    me.updates.push({ key: ctx.key, removed: !!ctx.removed, n: ctx.removed ? null : dec(ctx.data).n });
  });
  sub.on('error', (ctx) => me.updates.push({ error: ctx.error }));
  c.connect();
  sub.subscribe();
  return me;
}

async function main() {
  await api('map_publish', { channel: cfg.ch, key: 'a', data: doc('a', 0) });
  await api('map_publish', { channel: cfg.ch, key: 'b', data: doc('b', 0) });
  const d = client(true);
  const f = client(false);
  await until(() => d.synced && f.synced, 'both synced');
  for (let n = 1; n <= 3; n++) {
    await api('map_publish', { channel: cfg.ch, key: 'a', data: doc('a', n), delta: true });
    await api('map_publish', { channel: cfg.ch, key: 'b', data: doc('b', n), delta: true });
  }
  await api('map_remove', { channel: cfg.ch, key: 'b' });
  await api('map_publish', { channel: cfg.ch, key: 'b', data: doc('b', 10), delta: true });
  await api('map_publish', { channel: cfg.ch, key: 'b', data: doc('b', 11), delta: true });
  const done = (c) => c.updates.length >= 9;
  await until(() => done(d) && done(f), 'all updates');
  const out = {};
  for (const [name, c] of [['delta', d], ['full', f]]) {
    out[name] = { state: Object.fromEntries(c.state), updates: c.updates };
  }
  out.stats = d.sub.deltaStats();
  out.want = { a: doc('a', 3), b: doc('b', 11) };
  d.c.disconnect();
  f.c.disconnect();
  return out;
}

run(main);
