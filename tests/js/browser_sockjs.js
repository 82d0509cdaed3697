// centrifuge-js 2.8.5 with sockjs-client 1.6.1 in headless Chromium (playwright-core), each
// SockJS transport in turn. Run by tests/it/legacy_protocol.rs.
//
// Environment: GYRE_URL (http://127.0.0.1:PORT of the server), PAGE_PORT (a free port for the
// page's own origin, allowed by the server's client.allowed_origins), SECRET (the HMAC key of
// connection tokens), CHANNEL, CHROMIUM (the browser binary).
//
// Serves a page with the two browser bundles (centrifuge2/dist/centrifuge.js,
// sockjs-client/dist/sockjs.min.js) on http://127.0.0.1:PAGE_PORT, so every request to the
// server is cross-origin. For websocket, xhr-streaming and xhr-polling the page connects with
// only that SockJS transport, subscribes, publishes into CHANNEL and waits for its own
// publication to come back. Prints {"ev":"done","runs":[{transport,data}..],"pageErrors":[..]}
// (or {"ev":"fatal",...} and exits 1).

'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const jwt = require('jsonwebtoken');

const { out, shutdown, fatal, listen, launch } = require('./driver');

const gyre = process.env.GYRE_URL;
const pagePort = Number(process.env.PAGE_PORT);
const channel = process.env.CHANNEL;
const token = jwt.sign({ sub: 'browser', exp: Math.floor(Date.now() / 1000) + 3600 }, process.env.SECRET, {
  algorithm: 'HS256',
});

const files = {
  '/centrifuge.js': path.join(__dirname, 'node_modules/centrifuge2/dist/centrifuge.js'),
  '/sockjs.js': path.join(__dirname, 'node_modules/sockjs-client/dist/sockjs.min.js'),
};
const html = '<!doctype html><html><head><meta charset="utf-8"><title>sockjs</title>' +
  '<script src="/sockjs.js"></script><script src="/centrifuge.js"></script></head><body>sockjs</body></html>';

async function main() {
  const server = http.createServer((req, res) => {
    if (files[req.url]) {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      return res.end(fs.readFileSync(files[req.url]));
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
  page.on('pageerror', (e) => pageErrors.push(String((e && e.message) || e)));
  await page.goto(`http://127.0.0.1:${pagePort}/`);
  const runs = [];
  for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
    const r = await page.evaluate(
      (args) =>
        new Promise((resolve, reject) => {
          const c = new Centrifuge(args.gyre + '/connection/sockjs', {
            sockjs: SockJS,
            sockjsTransports: [args.transport],
          });
          c.setToken(args.token);
          let done = false;
          const sub = c.subscribe(args.channel, (ctx) => {
            done = true;
            const t = c._transportName;
            c.disconnect();
            resolve({ transport: t, data: ctx.data });
          });
          // (Its reply may come after the publication: the disconnect then rejects it.)
          sub.on('subscribe', () => sub.publish({ from: args.transport }).catch(() => {}));
          sub.on('error', (ctx) => reject(new Error('subscribe: ' + JSON.stringify(ctx))));
          c.on('disconnect', (ctx) => {
            if (!done && !ctx.reconnect) reject(new Error('disconnect: ' + ctx.reason));
          });
          c.connect();
          setTimeout(() => reject(new Error('timeout over ' + args.transport)), 15000);
        }),
      { gyre, token, channel, transport },
    );
    runs.push(r);
  }
  out({ ev: 'done', runs, pageErrors });
  await shutdown(0);
}

main().catch((e) => fatal('main', e));
