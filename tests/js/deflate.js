// permessage-deflate with centrifuge-js over `ws` (perMessageDeflate: true), run by
// tests/it/ws_deflate.rs against a server with `websocket.compression` on.
//
// Usage: node deflate.js WS_URL API_URL API_KEY CHANNEL
//
// Connects (client.insecure), subscribes to CHANNEL, has the server API publish a large
// compressible publication, publishes a large one itself (ws compresses messages of 1 KiB and
// more), and prints one JSON line: the handshake's extension header, the publications' data,
// and the bytes the socket read while the large publications arrived. The Rust test checks.

'use strict';

const WebSocket = require('ws');
const { Centrifuge } = require('centrifuge');

const [wsUrl, apiUrl, apiKey, channel] = process.argv.slice(2);

function fail(e) {
  process.stdout.write(JSON.stringify({ fatal: String(e && e.stack ? e.stack : e) }) + '\n');
  process.exit(1);
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
setTimeout(() => fail('timed out'), 20000).unref();

const result = { header: null, received: [], read: [] };
const sockets = [];

class DeflateWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { perMessageDeflate: true });
    sockets.push(this);
    this.on('upgrade', (res) => {
      result.header = res.headers['sec-websocket-extensions'] || null;
    });
  }
}

const big = { text: 'compressible '.repeat(4000) };

async function apiPublish(data) {
  const r = await fetch(`${apiUrl}/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const reply = await r.json();
  if (reply.error) throw new Error(`publish: ${JSON.stringify(reply)}`);
}

const centrifuge = new Centrifuge(wsUrl, { websocket: DeflateWebSocket });
const sub = centrifuge.newSubscription(channel);
let step = 0;
let readBefore = 0;

sub.on('publication', async (ctx) => {
  const bytesRead = sockets[0]._socket.bytesRead;
  result.received.push(JSON.stringify(ctx.data) === JSON.stringify(big) ? 'big' : ctx.data);
  result.read.push(bytesRead - readBefore);
  step += 1;
  if (step === 1) {
    readBefore = sockets[0]._socket.bytesRead;
    await sub.publish(big);
  } else {
    centrifuge.disconnect();
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(0);
  }
});
sub.on('subscribed', async () => {
  readBefore = sockets[0]._socket.bytesRead;
  await apiPublish(big);
});
sub.on('error', (ctx) => fail(`subscription error: ${JSON.stringify(ctx.error)}`));
centrifuge.on('error', (ctx) => fail(`client error: ${JSON.stringify(ctx.error)}`));
sub.subscribe();
centrifuge.connect();
