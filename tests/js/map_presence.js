// Presence maps with centrifuge-js (5.8) against Gyre, driven by tests/it/map_writes.rs.
//
// Usage: node map_presence.js '{"url":WS_URL,"url2":WS_URL,"protobuf":bool,"ch":CHANNEL,
//                               "clientsCh":CHANNEL,"usersCh":CHANNEL,
//                               "tokens":{"w":JWT,"a":JWT,"b":JWT,"c":JWT}}'
// A watcher (`w`) subscribes to the clients and users presence maps of `ch`; clients `a` and
// `b` (one user, two connections) and `c` (anonymous: no token) subscribe to `ch` itself
// (`b` on `url2`, another node when given). Prints what the watcher saw as one JSON object:
// the state once all three are in (`clients`: client id → user, `users`: keys), after `a`
// leaves (`kept`: still there 3 s later, past the keys' TTL), after `b` and `c` leave, and once the user's key expired (`userGoneMs` after the
// last of its connections left). An exception prints {"fatal":..} and exits 1.

'use strict';

const WebSocket = require('ws');
const json = require('centrifuge');
const protobuf = require('centrifuge/build/protobuf');
const { until, run } = require('./wait');

const cfg = JSON.parse(process.argv[2]);
const { Centrifuge } = cfg.protobuf ? protobuf : json;

function connect(name, url) {
  const opts = { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 300 };
  if (cfg.tokens[name]) opts.token = cfg.tokens[name];
  const c = new Centrifuge(url, opts);
  c.connect();
  return c;
}

// A presence map subscription whose `state` follows sync and update events.
function watch(c, sub) {
  const me = { sub, state: new Map(), updates: [], errors: [] };
  sub.on('sync', (ctx) => {
    me.state = new Map(ctx.entries.map((e) => [e.key, e.info ? e.info.user : null]));
  });
  sub.on('update', (ctx) => {
    if (ctx.removed) me.state.delete(ctx.key);
    else me.state.set(ctx.key, ctx.info ? ctx.info.user : null);
    me.updates.push({ key: ctx.key, removed: !!ctx.removed });
  });
  sub.on('error', (ctx) => me.errors.push(ctx.error));
  sub.subscribe();
  return me;
}

async function member(name, url) {
  const c = connect(name, url);
  const sub = c.newSubscription(cfg.ch);
  sub.subscribe();
  await until(() => sub.state === 'subscribed', `${name} subscribed`);
  return c;
}

async function main() {
  const out = {};
  const w = connect('w', cfg.url);
  const clients = watch(w, w.newMapClientsSubscription(cfg.clientsCh));
  const users = watch(w, w.newMapUsersSubscription(cfg.usersCh));
  await until(() => clients.sub.state === 'subscribed' && users.sub.state === 'subscribed', 'watcher subscribed');
  out.initial = { clients: Object.fromEntries(clients.state), users: [...users.state.keys()] };

  const a = await member('a', cfg.url);
  const b = await member('b', cfg.url2 || cfg.url);
  const c = await member('c', cfg.url);
  await until(() => clients.state.size === 3 && users.state.size === 1, 'three clients, one user');
  out.ids = { a: a._client, b: b._client, c: c._client };
  out.all = { clients: Object.fromEntries(clients.state), users: [...users.state.keys()].sort() };
  out.userUpdates = users.updates.slice();
  // Longer than the keys' TTL: kept alive while the members stay.
  await new Promise((r) => setTimeout(r, 3000));
  out.kept = { clients: clients.state.size, users: users.state.size, updates: clients.updates.length };

  a.disconnect();
  await until(() => clients.state.size === 2, 'a gone');
  out.afterA = { clients: Object.fromEntries(clients.state), users: [...users.state.keys()].sort() };

  b.disconnect();
  c.disconnect();
  await until(() => clients.state.size === 0, 'b and c gone');
  out.afterAll = { clients: Object.fromEntries(clients.state), users: [...users.state.keys()].sort() };
  const left = Date.now();
  await until(() => users.state.size === 0, 'the user key expires', 8000);
  out.userGoneMs = Date.now() - left;
  out.clientUpdates = clients.updates.slice();
  out.userUpdatesAll = users.updates.slice();
  out.errors = clients.errors.concat(users.errors);
  w.disconnect();
  return out;
}

run(main);
