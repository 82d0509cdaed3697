// A centrifuge-js client for tests/it/gateway.rs: the Centrifugo side of the gateway tests
// (publications from mesh.publish, async messages from mesh.send, `send` into a queue topic).
//
// Commands, one JSON object a line, on stdin:
//   {"op":"connect","c":NAME,"url":URL,"token":JWT}   → {"ev":"connected","c","client"}
//   {"op":"sub","c":NAME,"ch":CHANNEL}                 → {"ev":"subscribed","c","ch"}
//   {"op":"send","c":NAME,"id":N,"data":ANY}           centrifuge.send(data) → {"ev":"sent","c","id"}
//   {"op":"publish","c":NAME,"id":N,"ch":CHANNEL,"data":ANY}
//                                                       centrifuge.publish(ch, data) → {"ev":"published","c","id"}
//   {"op":"exit"}
// Reported as they happen: {"ev":"publication","c","ch","data"}, {"ev":"message","c","data"},
// {"ev":"error"|"disconnected"|"sub.error",...}. An exception prints {"ev":"fatal",...} and
// exits 1.

'use strict';

const readline = require('readline');
const WebSocket = require('ws');
const { Centrifuge } = require('centrifuge');

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fatal(where, e) {
  out({ ev: 'fatal', where, message: String(e && e.stack ? e.stack : e) });
  process.exit(1);
}

process.on('uncaughtException', (e) => fatal('uncaughtException', e));
process.on('unhandledRejection', (e) => fatal('unhandledRejection', e));

const clients = new Map();

function client(name) {
  const c = clients.get(name);
  if (!c) throw new Error(`no client ${name}`);
  return c;
}

function handle(cmd) {
  const c = cmd.c;
  switch (cmd.op) {
    case 'connect': {
      const centrifuge = new Centrifuge(cmd.url, { websocket: WebSocket, token: cmd.token, minReconnectDelay: 100 });
      centrifuge.on('connected', (ctx) => out({ c, ev: 'connected', client: ctx.client }));
      centrifuge.on('disconnected', (ctx) => out({ c, ev: 'disconnected', code: ctx.code, reason: ctx.reason }));
      centrifuge.on('error', (ctx) => out({ c, ev: 'error', type: ctx.type, message: String(ctx.error && ctx.error.message) }));
      centrifuge.on('message', (ctx) => out({ c, ev: 'message', data: ctx.data }));
      clients.set(c, centrifuge);
      centrifuge.connect();
      break;
    }
    case 'sub': {
      const s = client(c).newSubscription(cmd.ch);
      s.on('subscribed', () => out({ c, ev: 'subscribed', ch: cmd.ch }));
      s.on('publication', (ctx) => out({ c, ev: 'publication', ch: cmd.ch, data: ctx.data }));
      s.on('error', (ctx) => out({ c, ev: 'sub.error', ch: cmd.ch, message: String(ctx.error && ctx.error.message) }));
      s.subscribe();
      break;
    }
    case 'send':
      client(c)
        .send(cmd.data)
        .then(() => out({ c, ev: 'sent', id: cmd.id }))
        .catch((e) => out({ c, ev: 'send_failed', id: cmd.id, message: String(e && e.message ? e.message : e) }));
      break;
    case 'publish':
      client(c)
        .publish(cmd.ch, cmd.data)
        .then(() => out({ c, ev: 'published', id: cmd.id }))
        .catch((e) => out({ c, ev: 'publish_failed', id: cmd.id, message: String(e && e.message ? e.message : e) }));
      break;
    case 'exit':
      for (const cl of clients.values()) cl.disconnect();
      process.exit(0);
      break;
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
