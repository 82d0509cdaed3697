// The admin web interface in a real browser: headless Chromium driven by playwright-core,
// plus a centrifuge-js client subscribed to a channel. Run by tests/it/admin.rs.
//
// Environment: GYRE_URL (http://127.0.0.1:PORT), ADMIN_PASSWORD, CLIENT_TOKEN (a connection
// JWT for the SDK client), CHANNEL, SCREENSHOTS (a directory), CHROMIUM (the browser binary).
//
// Steps, each checked: a wrong password is refused; the right one opens the nodes page; the
// node's client count goes from 0 to 1 live when the SDK client connects; the channels page
// finds the channel with its subscriber; the live tail follows it; the actions page publishes
// to it and shows the reply; the SDK client receives exactly that publication and the tail
// shows it. A screenshot of each page is saved. Prints {"ok":true,...} as its last line, or
// {"ok":false,"error":...} and exits 1.

'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');
const WebSocket = require('ws');
const { Centrifuge } = require('centrifuge');

const base = process.env.GYRE_URL;
const password = process.env.ADMIN_PASSWORD;
const token = process.env.CLIENT_TOKEN;
const channel = process.env.CHANNEL || 'news';
const shots = process.env.SCREENSHOTS;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP = 15000;

const steps = [];
function step(name) {
  steps.push(name);
  process.stderr.write('step: ' + name + '\n');
}

function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error('timed out: ' + what)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  let client = null;
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP);
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  try {
    step('login page');
    await page.goto(base + '/');
    await page.waitForSelector('#login-form', { state: 'visible' });
    await page.screenshot({ path: path.join(shots, 'admin-login.png') });

    step('wrong password refused');
    await page.fill('#password', 'not-the-password');
    await page.click('#login-button');
    await page.waitForSelector('#login-error', { state: 'visible' });

    step('sign in');
    await page.fill('#password', password);
    await page.click('#login-button');
    await page.waitForSelector('#page-nodes', { state: 'visible' });
    await page.waitForFunction(() => document.querySelector('#stat-clients').textContent.trim() === '0');
    await page.waitForSelector('#nodes-table tbody tr');

    step('SDK client connects and subscribes');
    const received = [];
    let gotPublication;
    const publication = new Promise((resolve) => { gotPublication = resolve; });
    client = new Centrifuge(base.replace(/^http/, 'ws') + '/connection/websocket', { websocket: WebSocket, token });
    const sub = client.newSubscription(channel);
    sub.on('publication', (ctx) => {
      received.push(ctx.data);
      gotPublication(ctx.data);
    });
    const subscribed = new Promise((resolve, reject) => {
      sub.on('subscribed', resolve);
      sub.on('error', (ctx) => reject(new Error('subscription error ' + JSON.stringify(ctx.error))));
    });
    sub.subscribe();
    client.connect();
    await withTimeout(subscribed, STEP, 'SDK subscribed');

    step('node page shows the client live');
    await page.waitForFunction(() => document.querySelector('#stat-clients').textContent.trim() === '1');
    await page.waitForFunction(() => document.querySelector('#stat-subs').textContent.trim() === '1');
    const nodeRow = await page.textContent('#nodes-table tbody tr');
    if (!nodeRow.includes('this node')) throw new Error('node row: ' + nodeRow);
    await page.waitForFunction(() => /\d/.test(document.querySelector('#stat-memory').textContent));
    await page.waitForFunction(() => document.querySelector('#stat-rate').textContent.trim() !== '–');
    await page.screenshot({ path: path.join(shots, 'admin-nodes.png') });

    step('channels page finds the channel');
    await page.click('nav a[data-page="channels"]');
    await page.fill('#channels-pattern', channel.slice(0, 2) + '*');
    await page.click('#channels-form button[type="submit"]');
    const row = await page.waitForSelector(`#channels-table tbody tr:has-text("${channel}")`);
    const rowText = (await row.textContent()).replace(/\s+/g, ' ');
    if (!rowText.includes(channel + '1')) throw new Error('channel row: ' + rowText);
    await page.screenshot({ path: path.join(shots, 'admin-channels.png') });

    step('live tail follows the channel');
    await page.click('nav a[data-page="tail"]');
    await page.fill('#tail-channel', channel);
    await page.click('#tail-start');
    await page.waitForFunction((ch) => document.querySelector('#tail-state').textContent === 'following ' + ch, channel);

    step('actions page publishes');
    await page.click('nav a[data-page="actions"]');
    await page.selectOption('#action-method', 'publish');
    const data = { text: 'from the admin page', n: 42 };
    await page.fill('#action-params', JSON.stringify({ channel, data }));
    await page.click('#action-run');
    await page.waitForFunction(() => document.querySelector('#action-status').textContent === 'ok');
    const reply = JSON.parse(await page.textContent('#action-reply'));
    if (!reply.result) throw new Error('publish reply: ' + JSON.stringify(reply));
    await page.screenshot({ path: path.join(shots, 'admin-actions.png') });

    step('the SDK client received the publication');
    const got = await withTimeout(publication, STEP, 'publication at the SDK client');
    if (JSON.stringify(got) !== JSON.stringify(data)) throw new Error('SDK got ' + JSON.stringify(got));

    step('the live tail shows it');
    await page.click('nav a[data-page="tail"]');
    await page.waitForSelector('#tail-table tbody tr:has-text("from the admin page")');
    await page.screenshot({ path: path.join(shots, 'admin-tail.png') });

    step('an API error is shown as such');
    await page.click('nav a[data-page="actions"]');
    await page.selectOption('#action-method', 'history');
    await page.fill('#action-params', JSON.stringify({ channel: 'nohist:x' }));
    await page.click('#action-run');
    await page.waitForFunction(() => document.querySelector('#action-status').textContent === 'error 108');

    if (consoleErrors.length) throw new Error('page errors: ' + consoleErrors.join('; '));
    console.log(JSON.stringify({ ok: true, steps, received, reply }));
  } catch (e) {
    await page.screenshot({ path: path.join(shots, 'admin-failure.png') }).catch(() => {});
    console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), steps }));
    process.exitCode = 1;
  } finally {
    if (client) client.disconnect();
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), steps }));
  process.exit(1);
});
