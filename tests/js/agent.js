// A centrifuge-js agent driven by tests/it/sdk.rs, tests/it/redis.rs and tests/it/gateway.rs.
//
// Reads commands, one JSON object a line, from stdin and prints what the SDK reports, one
// JSON object a line, on stdout. Every output line has `ev` and, for client `c`'s events, `c`
// (for subscription events also `ch`). The Rust test decides what is right; this file only
// reports. An exception anywhere prints {"ev":"fatal",...} and exits 1. Besides the SDK's
// events, `ws.open` reports the URL of every socket that opens, and `message` the data of
// every async message from the server.
//
// Commands:
//   {"op":"connect","c":NAME,"url":URL,"token"?:JWT,"tokens"?:[JWT..],"protobuf"?:bool,"opts"?:{..}}
//       new Centrifuge(url, {websocket, token, getToken?, ...opts}).connect(); with `tokens`
//       getToken hands them out in order (the last one again when they run out) and reports
//       {"ev":"getToken"} on every call.
//   {"op":"connect","c":NAME,"transports":[{"transport":"websocket"|"http_stream"|"sse",
//    "endpoint":URL},..],"emulationEndpoint":URL,...}
//       the same with the list as the first argument (the SDK tries the transports in order):
//       fetch (Node's), ReadableStream and the `eventsource` package's EventSource are passed
//       in, each wrapped to report what it opens: {"ev":"http.open","url","status"} for a
//       stream request answered, {"ev":"es.open","url"} for an EventSource that opened,
//       {"ev":"emulation","status"} for each answered request to emulationEndpoint. The
//       `connected` event names the transport the SDK chose (and has the connect reply's
//       `data` when there is some).
//   {"op":"connect",...,"wsHeaders":{NAME:VALUE,..}}
//       the same, with these headers on every WebSocket upgrade request (Node's `ws`).
//   (`opts.data` is the connect command's data; a `sub` command's `opts.data` the
//   subscribe command's.)
//   {"op":"sub","c":NAME,"ch":CHANNEL,"opts"?:{..},"states"?:[{offset,epoch}..]}
//                                newSubscription(ch, opts).subscribe(); with `states`
//                                getState hands them out in order (the last one again when
//                                they run out) and reports {"ev":"getState"} on every call
//   {"op":"unsub","c":NAME,"ch":CHANNEL}
//   {"op":"deltaStats","c":NAME,"ch":CHANNEL}
//                                → {"ev":"deltaStats","stats":sub.deltaStats()}
//   {"op":"call","c":NAME,"id":N,"method":"publish"|"presence"|"presenceStats"|"history"|"send",
//    "ch":CHANNEL,"data"?:ANY,"opts"?:{..}}            → {"ev":"result","id":N,"ok"|"err":..}
//                                `send` (no channel): an async message to the server
//   {"op":"call","c":NAME,"id":N,"method":"rpc","rpc":METHOD,"data"?:ANY}
//                                centrifuge.rpc(METHOD, data) → "ok": {"data": ..}
//   {"op":"cut","c":NAME,"block"?:bool}
//                                terminate the underlying socket (no close frame), abort the
//                                HTTP stream or fail the EventSource: the SDK sees a
//                                transport failure and reconnects by itself; with `block` its
//                                reconnect attempts fail (they are sent to a path the server
//                                answers 404) until
//   {"op":"unblock","c":NAME}
//   {"op":"retarget","c":NAME,"url":URL}
//                                the client's next sockets connect to URL instead of the
//                                url it was created with (another node of a cluster); the
//                                live socket is left alone (`cut` it to move). WebSocket only.
//   {"op":"disconnect","c":NAME} centrifuge.disconnect()
//   {"op":"exit"}

'use strict';

const readline = require('readline');
const WebSocket = require('ws');
const json = require('centrifuge');
const protobuf = require('centrifuge/build/protobuf');
const { ReadableStream } = require('node:stream/web');
const { EventSource } = require('eventsource');

// Where a blocked client's connection requests go: a path the server answers 404.
const BLOCKED = '/connection/blocked-by-test';

function blockedUrl(url) {
  const u = new URL(url);
  u.pathname = BLOCKED;
  return u.toString();
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fatal(where, e) {
  out({ ev: 'fatal', where, message: String(e && e.stack ? e.stack : e) });
  process.exit(1);
}

process.on('uncaughtException', (e) => fatal('uncaughtException', e));
process.on('unhandledRejection', (e) => fatal('unhandledRejection', e));

// Protobuf connections carry data as bytes: show them as the JSON they hold.
function data(d) {
  if (d instanceof Uint8Array) {
    const text = Buffer.from(d).toString('utf8');
    try {
      return JSON.parse(text);
    } catch (_) {
      return { bytes: text };
    }
  }
  return d;
}

function info(i) {
  if (!i) return undefined;
  const o = { client: i.client, user: i.user };
  if (i.connInfo !== undefined) o.connInfo = data(i.connInfo);
  if (i.chanInfo !== undefined) o.chanInfo = data(i.chanInfo);
  return o;
}

function pub(ctx) {
  const o = { data: data(ctx.data) };
  if (ctx.offset !== undefined) o.offset = Number(ctx.offset);
  if (ctx.info) o.info = info(ctx.info);
  if (ctx.tags) o.tags = ctx.tags;
  return o;
}

function subscribed(ctx) {
  const o = {
    recoverable: ctx.recoverable,
    positioned: ctx.positioned,
    wasRecovering: ctx.wasRecovering,
    recovered: ctx.recovered,
    hasRecoveredPublications: ctx.hasRecoveredPublications,
  };
  if (ctx.streamPosition) {
    o.offset = Number(ctx.streamPosition.offset);
    o.epoch = ctx.streamPosition.epoch;
  }
  if (ctx.data !== undefined) o.data = data(ctx.data);
  return o;
}

function err(e) {
  if (e && typeof e.code === 'number') return { code: e.code, message: e.message };
  return { code: -1, message: String(e && e.message ? e.message : e) };
}

const clients = new Map(); // name -> { centrifuge, sockets: [], proto }

function connect(cmd) {
  const c = cmd.c;
  const sockets = [];
  const state = { blocked: false, url: null };
  // A WebSocket class that remembers its instances, so `cut` can kill the live one.
  class TrackedWebSocket extends WebSocket {
    constructor(url, ...args) {
      const blocked = state.blocked;
      if (state.url) url = state.url;
      const target = blocked ? url.replace('/connection/websocket', '/connection/blocked-by-test') : url;
      if (cmd.wsHeaders) super(target, args[0], { headers: cmd.wsHeaders });
      else super(target, ...args);
      if (blocked) out({ c, ev: 'blocked' });
      sockets.push(this);
      this.on('open', () => out({ c, ev: 'ws.open', url: this.url }));
      this.on('close', (code, reason) => out({ c, ev: 'ws.close', code, reason: reason.toString() }));
      // A JSON server ping is an empty object `{}` (possibly batched with other messages).
      this.on('message', (d, isBinary) => {
        if (!isBinary && d.toString().split('\n').some((l) => l.trim() === '{}')) out({ c, ev: 'ws.ping' });
      });
    }
  }
  // HTTP streams and event sources, tracked like the sockets.
  const streams = []; // { abort() }
  const emulation = cmd.emulationEndpoint;
  const trackedFetch = (url, options) => {
    const target = String(url);
    if (emulation && target === emulation) {
      return fetch(url, options).then((r) => {
        out({ c, ev: 'emulation', status: r.status });
        return r;
      });
    }
    const blocked = state.blocked;
    if (blocked) out({ c, ev: 'blocked' });
    const ctl = new AbortController();
    const signals = [ctl.signal];
    if (options && options.signal) signals.push(options.signal);
    const stream = { abort: () => ctl.abort(), live: true };
    // The SDK has one transport at a time: a new stream replaces the last one.
    for (const s of streams) s.live = false;
    streams.push(stream);
    const o = Object.assign({}, options, { signal: AbortSignal.any(signals) });
    return fetch(blocked ? blockedUrl(target) : url, o).then(
      (r) => {
        out({ c, ev: 'http.open', url: target, status: r.status });
        return r;
      },
      (e) => {
        stream.live = false;
        throw e;
      },
    );
  };
  class TrackedEventSource extends EventSource {
    constructor(url, init) {
      const blocked = state.blocked;
      super(blocked ? blockedUrl(url) : url, init);
      if (blocked) out({ c, ev: 'blocked' });
      const stream = {
        live: true,
        // Closed under the SDK, which hears of it as of any failed EventSource.
        abort: () => {
          this.close();
          if (this.onerror) this.onerror(new Event('error'));
        },
      };
      for (const s of streams) s.live = false;
      streams.push(stream);
      this.addEventListener('open', () => out({ c, ev: 'es.open', url: this.url }));
      this.addEventListener('error', () => {
        stream.live = false;
      });
    }
  }
  const lib = cmd.protobuf ? protobuf : json;
  const opts = Object.assign({ websocket: TrackedWebSocket, minReconnectDelay: 100, maxReconnectDelay: 500 }, cmd.opts || {});
  if (cmd.transports) {
    Object.assign(opts, { fetch: trackedFetch, readableStream: ReadableStream, eventsource: TrackedEventSource });
    if (emulation) opts.emulationEndpoint = emulation;
  }
  // Protobuf connections carry the connect data as bytes: the JSON of `opts.data`.
  if (cmd.protobuf && opts.data !== undefined) opts.data = new TextEncoder().encode(JSON.stringify(opts.data));
  if (cmd.token !== undefined) opts.token = cmd.token;
  if (cmd.tokens) {
    const tokens = cmd.tokens.slice();
    let last = '';
    opts.getToken = async () => {
      out({ c, ev: 'getToken' });
      if (tokens.length) last = tokens.shift();
      return last;
    };
  }
  const centrifuge = new lib.Centrifuge(cmd.transports || cmd.url, opts);
  centrifuge.on('connecting', (ctx) => out({ c, ev: 'connecting', code: ctx.code, reason: ctx.reason }));
  centrifuge.on('connected', (ctx) => {
    const o = { c, ev: 'connected', client: ctx.client, transport: ctx.transport };
    if (ctx.data !== undefined) o.data = data(ctx.data);
    out(o);
  });
  centrifuge.on('disconnected', (ctx) => out({ c, ev: 'disconnected', code: ctx.code, reason: ctx.reason }));
  centrifuge.on('error', (ctx) => out({ c, ev: 'error', type: ctx.type, error: err(ctx.error) }));
  centrifuge.on('message', (ctx) => out({ c, ev: 'message', data: data(ctx.data) }));
  // Server-side subscriptions.
  centrifuge.on('subscribing', (ctx) => out({ c, ev: 'server.subscribing', ch: ctx.channel }));
  centrifuge.on('subscribed', (ctx) => out(Object.assign({ c, ev: 'server.subscribed', ch: ctx.channel }, subscribed(ctx))));
  centrifuge.on('unsubscribed', (ctx) => out({ c, ev: 'server.unsubscribed', ch: ctx.channel }));
  centrifuge.on('publication', (ctx) => out(Object.assign({ c, ev: 'server.publication', ch: ctx.channel }, pub(ctx))));
  centrifuge.on('join', (ctx) => out({ c, ev: 'server.join', ch: ctx.channel, info: info(ctx.info) }));
  centrifuge.on('leave', (ctx) => out({ c, ev: 'server.leave', ch: ctx.channel, info: info(ctx.info) }));
  clients.set(c, { centrifuge, sockets, streams, state, proto: !!cmd.protobuf });
  centrifuge.connect();
}

function client(name) {
  const cl = clients.get(name);
  if (!cl) throw new Error(`no client ${name}`);
  return cl;
}

function sub(cmd) {
  const { c, ch } = cmd;
  const opts = Object.assign({}, cmd.opts || {});
  if (cmd.states) {
    const states = cmd.states.slice();
    let last = null;
    opts.getState = async () => {
      out({ c, ch, ev: 'getState' });
      if (states.length) last = states.shift();
      return last;
    };
  }
  const s = client(c).centrifuge.newSubscription(ch, opts);
  s.on('subscribing', (ctx) => out({ c, ch, ev: 'sub.subscribing', code: ctx.code, reason: ctx.reason }));
  s.on('subscribed', (ctx) => out(Object.assign({ c, ch, ev: 'sub.subscribed' }, subscribed(ctx))));
  s.on('unsubscribed', (ctx) => out({ c, ch, ev: 'sub.unsubscribed', code: ctx.code, reason: ctx.reason }));
  s.on('error', (ctx) => out({ c, ch, ev: 'sub.error', type: ctx.type, error: err(ctx.error) }));
  s.on('publication', (ctx) => out(Object.assign({ c, ch, ev: 'sub.publication' }, pub(ctx))));
  s.on('join', (ctx) => out({ c, ch, ev: 'sub.join', info: info(ctx.info) }));
  s.on('leave', (ctx) => out({ c, ch, ev: 'sub.leave', info: info(ctx.info) }));
  s.subscribe();
}

async function call(cmd) {
  const cl = client(cmd.c);
  const centrifuge = cl.centrifuge;
  const id = cmd.id;
  try {
    let r;
    // Protobuf connections carry data as bytes: the JSON of `data`.
    const payload = () => (cl.proto ? new TextEncoder().encode(JSON.stringify(cmd.data)) : cmd.data);
    switch (cmd.method) {
      case 'publish':
        await centrifuge.publish(cmd.ch, payload());
        r = {};
        break;
      case 'send':
        await centrifuge.send(payload());
        r = {};
        break;
      case 'presence': {
        const p = await centrifuge.presence(cmd.ch);
        const clients = {};
        for (const [k, v] of Object.entries(p.clients)) clients[k] = info(v);
        r = { clients };
        break;
      }
      case 'presenceStats': {
        const p = await centrifuge.presenceStats(cmd.ch);
        r = { numClients: p.numClients, numUsers: p.numUsers };
        break;
      }
      case 'history': {
        const h = await centrifuge.history(cmd.ch, cmd.opts || {});
        r = { publications: h.publications.map(pub), offset: Number(h.offset), epoch: h.epoch };
        break;
      }
      case 'rpc': {
        const res = await centrifuge.rpc(cmd.rpc, payload());
        r = { data: data(res.data) };
        break;
      }
      default:
        throw new Error(`unknown method ${cmd.method}`);
    }
    out({ c: cmd.c, ev: 'result', id, ok: r });
  } catch (e) {
    out({ c: cmd.c, ev: 'result', id, err: err(e) });
  }
}

function handle(cmd) {
  switch (cmd.op) {
    case 'connect':
      return connect(cmd);
    case 'sub':
      return sub(cmd);
    case 'unsub':
      return client(cmd.c).centrifuge.getSubscription(cmd.ch).unsubscribe();
    case 'deltaStats':
      return out({ c: cmd.c, ch: cmd.ch, ev: 'deltaStats', stats: client(cmd.c).centrifuge.getSubscription(cmd.ch).deltaStats() });
    case 'call':
      return call(cmd);
    case 'cut': {
      const cl = client(cmd.c);
      if (cmd.block) cl.state.blocked = true;
      const live = cl.sockets.filter((s) => s.readyState === WebSocket.OPEN);
      for (const s of live) s.terminate();
      const streams = cl.streams.filter((s) => s.live);
      for (const s of streams) {
        s.live = false;
        s.abort();
      }
      return out({ c: cmd.c, ev: 'cut', sockets: live.length + streams.length });
    }
    case 'unblock':
      client(cmd.c).state.blocked = false;
      return out({ c: cmd.c, ev: 'unblocked' });
    case 'retarget':
      client(cmd.c).state.url = cmd.url;
      return out({ c: cmd.c, ev: 'retargeted', url: cmd.url });
    case 'disconnect':
      return client(cmd.c).centrifuge.disconnect();
    case 'exit':
      for (const { centrifuge } of clients.values()) centrifuge.disconnect();
      return process.exit(0);
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    fatal('parse', e);
  }
  try {
    handle(cmd);
  } catch (e) {
    fatal(cmd.op, e);
  }
});
rl.on('close', () => process.exit(0));
out({ ev: 'ready', sdk: 'centrifuge-js', version: JSON.parse(require('fs').readFileSync(require('path').join(__dirname, 'node_modules/centrifuge/package.json'))).version });
