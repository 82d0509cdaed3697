// Map subscriptions with centrifuge-js (5.8) against Gyre, driven by tests/it/map_subs.rs.
//
// Usage: node map_subs.js '{"url":WS_URL,"api":HTTP_BASE,"key":API_KEY,"protobuf":bool,
//                           "ch":CHANNEL,"ttlCh":CHANNEL,"recoverable":bool,
//                           "url2":WS_URL,"pubApi":HTTP_BASE}'
// With two nodes: client B connects to `url2`, and the server API's map_publish/map_remove
// go to `pubApi` (both default to the first node).
// Runs one scenario and prints what the SDK saw as one JSON object on stdout (the Rust test
// decides what is right): `sync` (the first sync's keys → data), `pages` (state page
// requests sent), the `updates` seen by client A and B, B's `sync`, the state after a cut
// and reconnect (`recovered`, `afterCut`), and the TTL expiry (`expired`). An exception prints
// {"fatal":..} and exits 1.

'use strict';

const WebSocket = require('ws');
const json = require('centrifuge');
const protobuf = require('centrifuge/build/protobuf');
const { sleep, until, run } = require('./wait');

const cfg = JSON.parse(process.argv[2]);
const { Centrifuge } = cfg.protobuf ? protobuf : json;
const enc = (v) => (cfg.protobuf ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (d) => (cfg.protobuf ? JSON.parse(new TextDecoder().decode(d)) : d);

const sockets = [];
let pages = 0;
class TrackedWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    sockets.push(this);
    const send = this.send.bind(this);
    this.send = (data, ...rest) => {
      // Count map state page requests (JSON only: protobuf frames are binary).
      if (typeof data === 'string') {
        for (const line of data.split('\n')) {
          if (line.includes('"phase":2')) pages++;
        }
      }
      return send(data, ...rest);
    };
  }
}

async function api(method, params) {
  const base = method === 'map_stats' ? cfg.api : cfg.pubApi || cfg.api;
  const r = await fetch(`${base}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': cfg.key, 'Content-Type': 'application/json' },
    body: JSON.stringify(params),
  });
  const body = await r.json();
  if (body.error) throw new Error(`${method}: ${JSON.stringify(body.error)}`);
  return body.result;
}

// A client with one map subscription; `state` follows sync and update events.
function client(name, ch, pageSize) {
  const url = name === 'b' ? cfg.url2 || cfg.url : cfg.url;
  const c = new Centrifuge(url, { websocket: TrackedWebSocket, minReconnectDelay: 100, maxReconnectDelay: 300 });
  const sub = c.newMapSubscription(ch, { pageSize });
  const me = { c, sub, state: new Map(), syncs: [], updates: [], subscribed: [] };
  sub.on('sync', (ctx) => {
    me.state = new Map(ctx.entries.map((e) => [e.key, dec(e.data)]));
    me.syncs.push(Object.fromEntries(me.state));
  });
  sub.on('update', (ctx) => {
    if (ctx.removed) me.state.delete(ctx.key);
    else me.state.set(ctx.key, dec(ctx.data));
    me.updates.push({ key: ctx.key, removed: !!ctx.removed, data: ctx.removed ? null : dec(ctx.data) });
  });
  sub.on('subscribed', (ctx) => me.subscribed.push({ recovered: !!ctx.recovered, wasRecovering: !!ctx.wasRecovering }));
  sub.on('error', (ctx) => me.updates.push({ error: ctx.error }));
  c.connect();
  sub.subscribe();
  return me;
}

async function main() {
  const out = {};
  for (let i = 0; i < 23; i++) {
    await api('map_publish', { channel: cfg.ch, key: `k${String(i).padStart(3, '0')}`, data: { v: i } });
  }
  const a = client('a', cfg.ch, 5);
  await until(() => a.syncs.length === 1, 'a sync');
  out.sync = a.syncs[0];
  out.pages = pages;

  await api('map_publish', { channel: cfg.ch, key: 'k001', data: { v: 100 } });
  await api('map_remove', { channel: cfg.ch, key: 'k002' });
  await until(() => a.updates.length >= 2, 'a updates');

  const b = client('b', cfg.ch, 0);
  await until(() => b.syncs.length === 1, 'b sync');
  out.bSync = b.syncs[0];

  await a.sub.publish('k100', enc({ v: 7 }));
  await until(() => b.state.has('k100'), 'b sees k100');
  await b.sub.remove('k100');
  // Both see the removal (on two nodes each hears it from Redis in its own time).
  const sawRemoval = (c) => !c.state.has('k100') && c.updates.some((u) => u.key === 'k100' && u.removed);
  await until(() => sawRemoval(a) && sawRemoval(b), 'a and b see the removal');
  out.aUpdates = a.updates.slice();
  out.bUpdates = b.updates.slice();

  // A cut: changes made while A is away reach it on reconnect.
  const aUpdatesBefore = a.updates.length;
  const syncsBefore = a.syncs.length;
  const subscribedBefore = a.subscribed.length;
  for (const s of sockets.filter((s) => s.readyState === WebSocket.OPEN).slice(0, 1)) s.terminate();
  await api('map_publish', { channel: cfg.ch, key: 'k003', data: { v: 300 } });
  await api('map_remove', { channel: cfg.ch, key: 'k004' });
  await until(() => a.subscribed.length > subscribedBefore, 'a resubscribed');
  await until(() => a.state.get('k003') && a.state.get('k003').v === 300 && !a.state.has('k004'), 'a caught up');
  out.afterCut = {
    subscribed: a.subscribed[a.subscribed.length - 1],
    resynced: a.syncs.length > syncsBefore,
    updates: a.updates.slice(aUpdatesBefore),
  };
  out.aState = Object.fromEntries(a.state);
  out.bState = Object.fromEntries(b.state);
  out.stats = await api('map_stats', { channel: cfg.ch });

  // Key TTL: a key published once is removed when its TTL passes.
  if (cfg.ttlCh) {
    const t = client('t', cfg.ttlCh, 0);
    await until(() => t.syncs.length === 1, 't sync');
    await api('map_publish', { channel: cfg.ttlCh, key: 'x', data: { v: 1 } });
    await until(() => t.state.has('x'), 't sees x');
    const seen = Date.now();
    await until(() => !t.state.has('x'), 'x expires', 8000);
    out.expired = { afterMs: Date.now() - seen, updates: t.updates.slice() };
    t.c.disconnect();
  }
  a.c.disconnect();
  b.c.disconnect();
  return out;
}

run(main);
