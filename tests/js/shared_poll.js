// Shared poll subscriptions with centrifuge-js (5.8) against Gyre, driven by
// tests/it/shared_poll_sdk.rs.
//
// Usage: node shared_poll.js '{"url":WS_URL,"backend":HTTP_BASE,"secret":HMAC_KEY,
//                              "channel":CHANNEL,"protobuf":bool,"delta":bool}'
// With `delta` the subscriptions ask for fossil deltas and the data set is larger.
// The application backend (the Rust test's) answers Gyre's refresh calls; `POST /set` on it
// changes a key (`{"key","data","version"}`, `{"key","removed":true}`). Signatures are made
// here as a backend would: `iat:exp:` + hex HMAC-SHA256 of
// `iat NUL exp NUL user NUL channel NUL hex(sha256(keys joined by NUL))`, user "" (anonymous).
//
// Runs one scenario with two clients (A, B) and prints what the SDK saw as one JSON object on
// stdout (the Rust test decides what is right): per client the `update` events in order
// (`{key, data, version, removed}`), `error` events (`{type, code}`), `subscribed` events,
// the keys of each getSignature call, and over JSON the wire: the `pub` pushes received
// (`{key, version, removed}`) and the `sub_refresh` commands sent with their replies. `steps`
// holds what each step of the scenario saw. An exception prints {"fatal":..} and exits 1.

'use strict';

const crypto = require('crypto');
const WebSocket = require('ws');
const json = require('centrifuge');
const protobuf = require('centrifuge/build/protobuf');
const { sleep, until, run } = require('./wait');

const cfg = JSON.parse(process.argv[2]);
const { Centrifuge } = cfg.protobuf ? protobuf : json;
const dec = (d) => (cfg.protobuf && d != null ? JSON.parse(new TextDecoder().decode(d)) : d);
const ch = cfg.channel;

const now = () => Math.floor(Date.now() / 1000);

function sign(keys, { iat = now(), exp = now() + 3600, secret = cfg.secret, channel = ch } = {}) {
  const keysHash = crypto.createHash('sha256').update(keys.join('\0')).digest('hex');
  const payload = `${iat}\0${exp}\0\0${channel}\0${keysHash}`;
  const mac = crypto.createHmac('sha256', secret).update(payload).digest('hex');
  return `${iat}:${exp}:${mac}`;
}

// With `delta`: data set here carries a long field, so changes make patches smaller than the
// data; update events are checked for it and shown without it.
const PAD = 'a long and mostly unchanging part of the document. '.repeat(20);

async function set(body) {
  if (cfg.delta && body.data) body = { ...body, data: { ...body.data, pad: PAD } };
  const r = await fetch(`${cfg.backend}/set`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  await r.text();
}

// A WebSocket class for client `me`: keeps its sockets (to cut them) and, over JSON, the
// `pub` pushes of the channel received and the `sub_refresh` commands sent with their replies.
function socketClass(me) {
  return class extends WebSocket {
    constructor(...args) {
      super(...args);
      me.sockets.push(this);
      const send = this.send.bind(this);
      this.send = (data, ...rest) => {
        if (typeof data === 'string') {
          for (const line of data.split('\n').filter(Boolean)) {
            const cmd = JSON.parse(line);
            if (cmd.sub_refresh) {
              const r = cmd.sub_refresh;
              const sent = {
                type: r.type,
                track: (r.track || []).map((b) => b.items.map((i) => (i.version ? `${i.key}@${i.version}` : i.key))),
                untrack: r.untrack || [],
                reply: null,
              };
              me.wire.refreshes.push(sent);
              me.pending.set(cmd.id, sent);
            }
          }
        }
        return send(data, ...rest);
      };
      this.on('message', (data, isBinary) => {
        if (isBinary) return;
        for (const line of data.toString().split('\n').filter(Boolean)) {
          const m = JSON.parse(line);
          if (m.id && me.pending.has(m.id)) {
            me.pending.get(m.id).reply = m.error ? { error: m.error.code } : m.sub_refresh || {};
            me.pending.delete(m.id);
          }
          if (m.id && m.subscribe) me.wire.epochs.push(m.subscribe.epoch || '');
          const p = m.push;
          if (p && p.channel === ch && p.pub) {
            const w = { key: p.pub.key };
            if (p.pub.version !== undefined) w.version = p.pub.version;
            if (p.pub.removed) w.removed = true;
            me.wire.pubs.push(w);
          }
        }
      });
    }
  };
}

function client(name) {
  const me = {
    name, sockets: [], updates: [], errors: [], subscribed: 0, signatures: [], pending: new Map(),
    wire: { pubs: [], refreshes: [], epochs: [] },
  };
  me.c = new Centrifuge(cfg.url, { websocket: socketClass(me), minReconnectDelay: 100, maxReconnectDelay: 300 });
  me.sub = me.c.newSharedPollSubscription(ch, {
    ...(cfg.delta ? { delta: 'fossil' } : {}),
    getSignature: async ({ keys }) => {
      me.signatures.push(keys.slice());
      return { keys, signature: sign(keys) };
    },
  });
  me.sub.on('update', (ctx) => {
    const u = { key: ctx.key, data: ctx.removed ? null : dec(ctx.data) };
    if (cfg.delta && u.data && u.data.pad !== undefined) {
      if (u.data.pad !== PAD) u.badPad = true;
      delete u.data.pad;
    }
    if (ctx.version !== undefined) u.version = ctx.version;
    if (ctx.removed) u.removed = true;
    if (ctx.channel !== ch) u.channel = ctx.channel;
    me.updates.push(u);
  });
  me.sub.on('error', (ctx) => me.errors.push({ type: ctx.type, code: ctx.error.code }));
  me.sub.on('subscribed', () => me.subscribed++);
  me.c.connect();
  me.sub.subscribe();
  return me;
}

const has = (me, key, version) => me.updates.some((u) => u.key === key && u.version === version);
const removed = (me, key) => me.updates.some((u) => u.key === key && u.removed);
// Over JSON: every sub_refresh sent has its reply.
const replied = (me) => until(() => cfg.protobuf || me.wire.refreshes.every((r) => r.reply), `${me.name}'s replies`);
const tracked = (me) => [...me.sub.trackedKeys()].sort();

// What `me` saw since `mark` (taken with `marks(me)`).
const marks = (me) => ({ updates: me.updates.length, errors: me.errors.length, signatures: me.signatures.length,
  pubs: me.wire.pubs.length, refreshes: me.wire.refreshes.length });
const since = (me, m) => ({
  updates: me.updates.slice(m.updates),
  errors: me.errors.slice(m.errors),
  signatures: me.signatures.slice(m.signatures),
  pubs: cfg.protobuf ? null : me.wire.pubs.slice(m.pubs),
  refreshes: cfg.protobuf ? null : me.wire.refreshes.slice(m.refreshes),
  tracked: tracked(me),
});

async function main() {
  const steps = {};
  // 1. Track two keys: their data comes at once.
  const a = client('a');
  await a.sub.ready(5000);
  let ma = marks(a);
  a.sub.track(['a', 'b']);
  await until(() => has(a, 'a', 1) && has(a, 'b', 3), 'a and b');
  steps.track = since(a, ma);

  // 2. A new version, a removal.
  ma = marks(a);
  await set({ key: 'a', data: { k: 'a', v: 2 }, version: 2 });
  await until(() => has(a, 'a', 2), 'a v2');
  await set({ key: 'b', removed: true });
  await until(() => removed(a, 'b'), 'b removed');
  steps.change = since(a, ma);

  // 3. A second client tracking `a` gets its current data; the next version reaches both.
  const b = client('b');
  await b.sub.ready(5000);
  let mb = marks(b);
  b.sub.track(['a']);
  await until(() => has(b, 'a', 2), 'b gets a v2');
  steps.second = since(b, mb);
  ma = marks(a);
  mb = marks(b);
  await set({ key: 'a', data: { k: 'a', v: 3 }, version: 3 });
  await until(() => has(a, 'a', 3) && has(b, 'a', 3), 'a v3 at both');
  steps.both = { a: since(a, ma), b: since(b, mb) };

  // 4. A untracks `a`: the next version reaches B only.
  ma = marks(a);
  mb = marks(b);
  a.sub.untrack(['a']);
  await replied(a);
  await sleep(100);
  await set({ key: 'a', data: { k: 'a', v: 4 }, version: 4 });
  await until(() => has(b, 'a', 4), 'b gets a v4');
  await sleep(700);
  steps.untrack = { a: since(a, ma), b: since(b, mb) };

  // 5. A cut: the SDK reconnects, subscribes again and tracks its keys again; a change made
  // meanwhile arrives; a key tracked after the reconnect comes with its current data.
  ma = marks(a);
  a.sub.track(['d']);
  await until(() => has(a, 'd', 1), 'd v1');
  const beforeCut = since(a, ma);
  ma = marks(a);
  const subscribedBefore = a.subscribed;
  const open = a.sockets.filter((s) => s.readyState === WebSocket.OPEN);
  open[0].terminate();
  await set({ key: 'd', data: { k: 'd', v: 2 }, version: 2 });
  await until(() => a.subscribed > subscribedBefore, 'a subscribed again');
  await until(() => has(a, 'd', 2), 'd v2 after the cut');
  const afterCut = since(a, ma);
  ma = marks(a);
  a.sub.track(['a']);
  await until(() => has(a, 'a', 4), 'a v4 tracked again');
  steps.cut = {
    before: beforeCut, after: afterCut, retrack: since(a, ma),
    sockets: a.sockets.length, openBefore: open.length, subscribed: a.subscribed - subscribedBefore,
    state: a.c.state,
  };

  // 6. An explicit signature.
  ma = marks(a);
  a.sub.track([{ key: 'c', version: 0 }], sign(['c']));
  await until(() => has(a, 'c', 1), 'c v1');
  steps.explicit = since(a, ma);

  // 7. A wrong signature: a `track` error and the key untracked; an expired one: another
  // error, and the SDK asks getSignature for all its keys and tracks them again.
  ma = marks(a);
  a.sub.track([{ key: 'e', version: 0 }], sign(['e'], { secret: 'not-the-secret' }));
  await until(() => a.errors.length > ma.errors && removed(a, 'e'), 'the error of e');
  await sleep(300);
  await replied(a);
  steps.invalid = since(a, ma);
  ma = marks(a);
  a.sub.track([{ key: 'f', version: 0 }], sign(['f'], { iat: now() - 100, exp: now() - 10 }));
  await until(() => a.errors.length > ma.errors && has(a, 'f', 1), 'the error of f, then f');
  await sleep(700);
  await replied(a);
  steps.expired = since(a, ma);

  const out = (me) => ({
    updates: me.updates, errors: me.errors, signatures: me.signatures, subscribed: me.subscribed,
    tracked: tracked(me), state: me.sub.state, wire: cfg.protobuf ? null : me.wire,
    delta: cfg.delta ? me.sub.deltaStats() : null,
  });
  const result = { steps, a: out(a), b: out(b) };
  a.c.disconnect();
  b.c.disconnect();
  return result;
}

run(main);
