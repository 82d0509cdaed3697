// Map publish and remove proxies with centrifuge-js (5.8) against Gyre, driven by
// tests/it/map_proxy.rs: what applications see when the backend decides.
//
// Usage: node map_proxy.js '{"url":WS_URL,"protobuf":bool,"ch":CHANNEL}'
// Client A publishes and removes keys of a map subscription; client B, subscribed too, follows
// the changes. Prints one JSON object: `published` (A's publish of key `rewrite` resolved),
// `bUpdates` (what B saw), `denied` / `failed` (the errors A's publish of `deny` / `fail` was
// rejected with), `bState` (B's keys → data at the end). An exception prints {"fatal":..}.

'use strict';

const WebSocket = require('ws');
const json = require('centrifuge');
const protobuf = require('centrifuge/build/protobuf');
const { until, run } = require('./wait');

const cfg = JSON.parse(process.argv[2]);
const { Centrifuge } = cfg.protobuf ? protobuf : json;
const enc = (v) => (cfg.protobuf ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (d) => (cfg.protobuf ? JSON.parse(new TextDecoder().decode(d)) : d);

function client() {
  const c = new Centrifuge(cfg.url, { websocket: WebSocket });
  const sub = c.newMapSubscription(cfg.ch, {});
  const me = { c, sub, state: new Map(), synced: false, updates: [] };
  sub.on('sync', (ctx) => {
    me.state = new Map(ctx.entries.map((e) => [e.key, dec(e.data)]));
    me.synced = true;
  });
  sub.on('update', (ctx) => {
    if (ctx.removed) me.state.delete(ctx.key);
    else me.state.set(ctx.key, dec(ctx.data));
    me.updates.push({ key: ctx.key, removed: !!ctx.removed, data: ctx.removed ? null : dec(ctx.data) });
  });
  c.connect();
  sub.subscribe();
  return me;
}

const rejection = (p) => p.then(() => null, (e) => ({ code: e.code, message: e.message }));

async function main() {
  const out = {};
  const a = client();
  const b = client();
  await until(() => a.synced && b.synced, 'a and b synced');
  await a.sub.publish('rewrite', enc({ x: 1 }));
  out.published = true;
  await until(() => b.state.has('rewritten'), 'b sees the rewritten key');
  await a.sub.remove('rm-rewrite');
  await until(() => !b.state.has('rewritten'), 'b sees the removal');
  out.denied = await rejection(a.sub.publish('deny', enc({ x: 2 })));
  out.failed = await rejection(a.sub.publish('fail', enc({ x: 3 })));
  await a.sub.publish('empty', enc({ x: 4 }));
  await until(() => b.state.has('empty'), 'b sees key empty');
  out.bUpdates = b.updates.slice();
  out.bState = Object.fromEntries(b.state);
  a.c.disconnect();
  b.c.disconnect();
  return out;
}

run(main);
