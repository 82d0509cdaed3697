// examples/browser.html in headless Chromium, used as a person would: fill in the server URL,
// the token and the channel, press Connect, watch publications appear. Run by
// tests/it/examples.rs.
//
// Environment: WS_URL (the server's ws://.../connection/websocket), CLIENT_TOKEN, CHANNEL,
// PAGE_PORT (a free port: the page's own origin, which the server must allow), SCREENSHOT (a
// PNG path), CHROMIUM (the browser binary).
//
// Serves examples/ on http://127.0.0.1:PAGE_PORT, with the SDK's browser bundle
// (tests/js/node_modules/centrifuge/dist/centrifuge.js) as centrifuge.js beside the page.
// Any other request the page makes (a CDN) is refused, so the page must use the local SDK.
//
// Line protocol (JSON lines): out {"ev":"ready"}; {"ev":"subscribed","state":..} once the page
// says so; {"ev":"publication","items":[text of each list item, newest first]} when the
// first publication is listed (after the screenshot); {"ev":"fatal",...} on any failure (the
// process exits 1). In: {"op":"exit"}.

'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const readline = require('readline');

const wsUrl = process.env.WS_URL;
const token = process.env.CLIENT_TOKEN;
const channel = process.env.CHANNEL;
const pagePort = Number(process.env.PAGE_PORT);
const screenshot = process.env.SCREENSHOT;
const WAIT = 15000; // under the test's 20 s per line, so that a failure here is the one reported

const { out, shutdown, fatal, listen, launch } = require('./driver');

const files = {
  '/browser.html': [path.join(__dirname, '../../examples/browser.html'), 'text/html; charset=utf-8'],
  '/centrifuge.js': [path.join(__dirname, 'node_modules/centrifuge/dist/centrifuge.js'), 'text/javascript'],
};

async function main() {
  out({ ev: 'ready' });
  const server = http.createServer((req, res) => {
    const f = files[req.url];
    if (!f) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { 'Content-Type': f[1] });
    res.end(fs.readFileSync(f[0]));
  });
  await listen(server, pagePort);

  const page = await launch({ viewport: { width: 800, height: 700 } });
  page.setDefaultTimeout(WAIT);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  const origin = `http://127.0.0.1:${pagePort}`;
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('ws')) return route.continue();
    return route.abort();
  });
  await page.goto(origin + '/browser.html');
  await page.fill('#url', wsUrl);
  await page.fill('#token', token);
  await page.fill('#channel', channel);
  await page.click('#connect');
  await page.waitForFunction((ch) => document.querySelector('#sub-state').textContent === 'Subscribed to ' + ch + '.', channel)
    .catch(async (e) => {
      const said = [await page.textContent('#state'), await page.textContent('#sub-state')];
      throw new Error('the page says ' + JSON.stringify(said) + '; ' + pageErrors.join('; ') + ' ' + e);
    });
  out({ ev: 'subscribed', state: await page.textContent('#sub-state') });
  await page.waitForSelector('#publications li', { timeout: WAIT });
  if (pageErrors.length) throw new Error('page errors: ' + pageErrors.join('; '));
  if (screenshot) {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot });
  }
  const items = await page.$$eval('#publications li', (lis) => lis.map((li) => li.textContent));
  out({ ev: 'publication', items });

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() && JSON.parse(line).op === 'exit') shutdown(0);
  });
  rl.on('close', () => shutdown(0));
}

main().catch((e) => fatal('main', e));
