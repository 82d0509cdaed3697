// centrifuge-js in a real browser falling back from WebSocket to HTTP-streaming: headless
// Chromium driven by playwright-core. Run by tests/it/sdk_transports.rs.
//
// Environment: GYRE_URL (http://127.0.0.1:PORT of the server), PAGE_PORT (a free port for the
// page's own origin, allowed by the server's client.allowed_origins), CLIENT_TOKEN, CHANNEL,
// CHROMIUM (the browser binary).
//
// Serves a page and the SDK's browser bundle (centrifuge/dist/centrifuge.js) on
// http://127.0.0.1:PAGE_PORT, so every request to the server is cross-origin. The page
// connects with [websocket, http_stream, sse]; the WebSocket endpoint is one the server
// answers 404, so the browser's WebSocket never opens and the SDK moves on.
//
// Speaks the line protocol of the SDK agents (JSON lines; stdout events, stdin commands):
//   out: {"ev":"ready"}, then what the page reports: {"ev":"connected","transport":..},
//        {"ev":"subscribed","ch":..}, {"ev":"publication","data":..},
//        {"ev":"disconnected","code","reason"}, {"ev":"error","type","message"};
//        {"ev":"fatal",...} on any failure (the process exits 1)
//   in:  {"op":"publish","data":ANY} → the page publishes into CHANNEL, then
//        {"ev":"published","error"?:..} and
//        {"ev":"report","websocketAttempts":N,"websocketOpened":N,"pageErrors":[..]}
//        (WebSocket attempts of the page as the browser saw them; opened = frames received)
//        {"op":"exit"}

'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const readline = require('readline');

const gyre = process.env.GYRE_URL;
const pagePort = Number(process.env.PAGE_PORT);
const token = process.env.CLIENT_TOKEN;
const channel = process.env.CHANNEL;

const { out, shutdown, fatal, listen, launch } = require('./driver');

const bundle = fs.readFileSync(path.join(__dirname, 'node_modules/centrifuge/dist/centrifuge.js'));
const html = '<!doctype html><html><head><meta charset="utf-8"><title>fallback</title>' +
  '<script src="/centrifuge.js"></script></head><body>fallback</body></html>';

async function main() {
  out({ ev: 'ready' });
  const server = http.createServer((req, res) => {
    if (req.url === '/centrifuge.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      return res.end(bundle);
    }
    if (req.url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      return res.end(html);
    }
    res.writeHead(404);
    res.end();
  });
  await listen(server, pagePort);

  const page = await launch({});
  const pageErrors = [];
  let websocketAttempts = 0;
  let websocketOpened = 0;
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('websocket', (ws) => {
    websocketAttempts += 1;
    ws.on('framereceived', () => {
      websocketOpened += 1;
    });
  });
  await page.exposeFunction('report', (obj) => out(obj));
  await page.goto(`http://127.0.0.1:${pagePort}/`);
  await page.evaluate(({ gyre, token, channel }) => {
    const wsBase = gyre.replace(/^http/, 'ws');
    const c = new Centrifuge([
      { transport: 'websocket', endpoint: wsBase + '/connection/no-websocket-here' },
      { transport: 'http_stream', endpoint: gyre + '/connection/http_stream' },
      { transport: 'sse', endpoint: gyre + '/connection/sse' },
    ], { token, emulationEndpoint: gyre + '/emulation' });
    c.on('connected', (ctx) => report({ ev: 'connected', transport: ctx.transport, client: ctx.client }));
    c.on('disconnected', (ctx) => report({ ev: 'disconnected', code: ctx.code, reason: ctx.reason }));
    c.on('error', (ctx) => report({ ev: 'error', type: ctx.type, message: String(ctx.error && ctx.error.message) }));
    const sub = c.newSubscription(channel);
    sub.on('subscribed', () => report({ ev: 'subscribed', ch: channel }));
    sub.on('publication', (ctx) => report({ ev: 'publication', data: ctx.data }));
    sub.on('error', (ctx) => report({ ev: 'sub.error', message: String(ctx.error && ctx.error.message) }));
    sub.subscribe();
    c.connect();
    window.gyreSub = sub;
  }, { gyre, token, channel });

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    if (cmd.op === 'exit') return shutdown(0);
    if (cmd.op !== 'publish') return fatal('command', new Error('unknown op ' + cmd.op));
    const error = await page.evaluate(async (data) => {
      try {
        await window.gyreSub.publish(data);
        return null;
      } catch (e) {
        return { code: e.code, message: e.message };
      }
    }, cmd.data);
    out({ ev: 'published', error });
    out({ ev: 'report', websocketAttempts, websocketOpened, pageErrors });
  });
  rl.on('close', () => shutdown(0));
}

main().catch((e) => fatal('main', e));
