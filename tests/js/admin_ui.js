// The admin web interface in a real browser: headless Chromium driven by playwright-core,
// plus a centrifuge-js client subscribed to a channel. Run by tests/it/admin.rs.
//
// Environment: GYRE_URL (http://127.0.0.1:PORT), ADMIN_PASSWORD, CLIENT_TOKEN (a connection
// JWT for the SDK client, user "watcher"), CHANNEL, SCREENSHOTS (a directory), CHROMIUM (the
// browser binary).
//
// At desktop width (1280x800), each step checked: a wrong password is refused; the right one
// opens the nodes page; the node's client count goes from 0 to 1 live when the SDK client
// connects; the channels page finds the channel with its subscriber; the live tail follows
// it; the actions page's publish form publishes to it, shows the request and the reply; the
// SDK client receives exactly that publication and the tail shows it; bad JSON in a form or
// in raw JSON mode is refused with no request sent; an API error is shown as such. Then at
// phone width (375x812): no page scrolls sideways, the navigation opens from its menu button,
// controls are at least 44 px tall, and every method's form submits and renders its reply.
// Screenshots of each page at both widths: SCREENSHOTS/<page>-<desktop|phone>.png. Prints
// {"ok":true,...} as its last line, or {"ok":false,"error":...} and exits 1.

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

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };

// The page's state at the current width: sideways overflow, controls shorter than a thumb.
async function layoutProblems(page) {
  return page.evaluate(() => {
    const problems = [];
    const se = document.scrollingElement;
    if (se.scrollWidth > window.innerWidth) problems.push('page scrolls sideways: ' + se.scrollWidth + ' > ' + window.innerWidth);
    if (window.innerWidth <= 400) {
      const sel = 'button, select, input:not([type="checkbox"]), label.check, .top nav a, a.link';
      for (const el of document.querySelectorAll(sel)) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) continue; // not shown
        if (r.height < 44) problems.push((el.id || el.textContent.trim() || el.tagName) + ' is ' + r.height + ' px tall');
        if (r.right > window.innerWidth + 1) problems.push((el.id || el.tagName) + ' sticks out to ' + r.right);
      }
    }
    return problems;
  });
}

async function checkLayout(page, what) {
  const problems = await layoutProblems(page);
  if (problems.length) throw new Error(what + ': ' + problems.join('; '));
}

async function shot(page, name, width) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(shots, name + '-' + width + '.png'), fullPage: true });
}

// Opens a page through the navigation: at phone width, through its menu button first.
async function go(page, name) {
  if (await page.isVisible('#nav-toggle')) {
    if (await page.isVisible(`nav a[data-page="${name}"]`)) throw new Error('the menu is open before its button was pressed');
    await page.click('#nav-toggle');
    await page.waitForSelector(`nav a[data-page="${name}"]`, { state: 'visible' });
    await checkLayout(page, 'menu open');
  }
  await page.click(`nav a[data-page="${name}"]`);
  await page.waitForSelector('#page-' + name, { state: 'visible' });
  if (await page.isVisible('#nav-toggle') && await page.isVisible(`nav a[data-page="${name}"]`)) {
    throw new Error('the menu stays open after choosing a page');
  }
}

async function signIn(page) {
  await page.fill('#password', password);
  await page.click('#login-button');
  await page.waitForSelector('#app', { state: 'visible' });
}

// Runs the selected method's form with `fields` ({field name: text}) and returns the reply.
async function runForm(page, method, fields) {
  await page.selectOption('#action-method', method);
  for (const [name, value] of Object.entries(fields)) await page.fill('#f-' + name, value);
  await page.click('#action-run');
  await page.waitForFunction(() => !['running', ''].includes(document.querySelector('#action-status').textContent));
  const status = await page.textContent('#action-status');
  const reply = JSON.parse(await page.textContent('#action-reply'));
  if (status !== 'ok') throw new Error(method + ': status ' + status + ', reply ' + JSON.stringify(reply));
  const request = JSON.parse(await page.textContent('#action-request'));
  if (request.method !== method) throw new Error(method + ': request shown ' + JSON.stringify(request));
  if (!(await page.$$('#action-result > *')).length) throw new Error(method + ': no rendered reply');
  return { request, reply };
}

// Bad input in the form or in raw JSON mode: an error at the field, no request.
async function refusesBadJson(page, apiRequests) {
  const before = apiRequests.length;
  await page.selectOption('#action-method', 'publish');
  await page.fill('#f-channel', channel);
  await page.fill('#f-data', '{"text": "unfinished"');
  await page.click('#action-run');
  await page.waitForFunction(() => document.querySelector('#action-status').textContent === 'invalid input');
  await page.waitForSelector('#e-data', { state: 'visible' });
  if (!/Invalid JSON/.test(await page.textContent('#e-data'))) throw new Error('data error: ' + await page.textContent('#e-data'));
  await page.waitForSelector('#action-error', { state: 'visible' });
  await page.fill('#f-data', '');
  await page.click('#action-run');
  await page.waitForFunction(() => document.querySelector('#e-data').textContent === 'Required.');
  await page.click('#mode-raw');
  await page.fill('#action-params', '{"channel": "' + channel + '", data: 1}');
  await page.click('#action-run');
  await page.waitForSelector('#action-params-error', { state: 'visible' });
  await page.waitForTimeout(300);
  if (apiRequests.length !== before) throw new Error('bad input was sent: ' + apiRequests.slice(before).join(' | '));
  await page.fill('#action-params', '{}');
  await page.click('#mode-form');
  await page.waitForSelector('#f-channel', { state: 'visible' });
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: DESKTOP,
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
  const apiRequests = []; // server API requests, less the nodes page's `info` every 2 s
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/admin/api' && JSON.parse(r.postData()).method !== 'info') apiRequests.push(r.postData());
  });
  const failed = [];
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().endsWith('/admin/auth')) failed.push(r.status() + ' ' + r.url());
  });
  try {
    step('login page');
    await page.goto(base + '/');
    await page.waitForSelector('#login-form', { state: 'visible' });
    await page.waitForFunction(() => document.querySelector('.login .logo').naturalWidth > 0);
    const icon = await page.evaluate(async () => {
      const link = document.querySelector('link[rel="icon"]');
      const a = await fetch(link.href);
      const b = await fetch('/favicon.ico');
      return [a.status, a.headers.get('content-type'), b.status, b.headers.get('content-type'), (await b.text()).slice(0, 4)];
    });
    if (JSON.stringify(icon) !== JSON.stringify([200, 'image/svg+xml', 200, 'image/svg+xml', '<svg'])) {
      throw new Error('favicon: ' + JSON.stringify(icon));
    }
    await shot(page, 'login', 'desktop');

    step('wrong password refused');
    await page.fill('#password', 'not-the-password');
    await page.click('#login-button');
    await page.waitForSelector('#login-error', { state: 'visible' });

    step('sign in');
    await signIn(page);
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
    await checkLayout(page, 'nodes, desktop');
    await shot(page, 'nodes', 'desktop');

    step('channels page finds the channel');
    await go(page, 'channels');
    await page.fill('#channels-pattern', channel.slice(0, 2) + '*');
    await page.click('#channels-form button[type="submit"]');
    const row = await page.waitForSelector(`#channels-table tbody tr:has-text("${channel}")`);
    const rowText = (await row.textContent()).replace(/\s+/g, ' ');
    if (!rowText.includes(channel + '1')) throw new Error('channel row: ' + rowText);
    await shot(page, 'channels', 'desktop');

    step('live tail follows the channel');
    await go(page, 'tail');
    await page.fill('#tail-channel', channel);
    await page.click('#tail-start');
    await page.waitForFunction((ch) => document.querySelector('#tail-state').textContent === 'following ' + ch, channel);

    step('the publish form publishes');
    await go(page, 'actions');
    const data = { text: 'from the admin page', n: 42 };
    const { request, reply } = await runForm(page, 'publish', { channel, data: JSON.stringify(data) });
    if (JSON.stringify(request.params) !== JSON.stringify({ channel, data })) throw new Error('request: ' + JSON.stringify(request));
    if (!reply.result) throw new Error('publish reply: ' + JSON.stringify(reply));
    await checkLayout(page, 'actions, desktop');
    await shot(page, 'actions', 'desktop');

    step('the SDK client received the publication');
    const got = await withTimeout(publication, STEP, 'publication at the SDK client');
    if (JSON.stringify(got) !== JSON.stringify(data)) throw new Error('SDK got ' + JSON.stringify(got));

    step('the live tail shows it');
    await go(page, 'tail');
    await page.waitForSelector('#tail-table tbody tr:has-text("from the admin page")');
    await shot(page, 'tail', 'desktop');

    step('bad JSON is refused without a request');
    await go(page, 'actions');
    await refusesBadJson(page, apiRequests);

    step('raw JSON mode runs; an API error is shown as such');
    await page.selectOption('#action-method', 'history');
    await page.click('#mode-raw');
    await page.fill('#action-params', JSON.stringify({ channel: 'nohist:x' }));
    await page.click('#action-run');
    await page.waitForFunction(() => document.querySelector('#action-status').textContent === 'error 108');
    await page.waitForSelector('#action-error:has-text("108")', { state: 'visible' });
    await page.click('#mode-form');
    if ((await page.inputValue('#f-channel')) !== 'nohist:x') throw new Error('raw JSON did not fill the form');
    const sdkReceived = received.slice();

    step('phone width: sign-in page');
    await page.setViewportSize(PHONE);
    await page.click('#logout');
    await page.waitForSelector('#login-form', { state: 'visible' });
    await checkLayout(page, 'login, phone');
    await shot(page, 'login', 'phone');
    await signIn(page);

    step('phone width: the menu, nodes, channels, tail');
    await page.click('#nav-toggle');
    await page.waitForSelector('nav a[data-page="nodes"]', { state: 'visible' });
    await checkLayout(page, 'menu, phone');
    await shot(page, 'menu', 'phone');
    await page.click('#nav-toggle');
    await page.waitForSelector('nav a[data-page="nodes"]', { state: 'hidden' });
    await go(page, 'nodes');
    await page.waitForFunction(() => document.querySelector('#stat-clients').textContent.trim() === '1');
    await checkLayout(page, 'nodes, phone');
    await shot(page, 'nodes', 'phone');
    await go(page, 'channels');
    await page.click('#channels-form button[type="submit"]');
    await page.waitForSelector(`#channels-table tbody tr:has-text("${channel}")`);
    await checkLayout(page, 'channels, phone');
    await shot(page, 'channels', 'phone');
    await go(page, 'tail');
    await page.fill('#tail-channel', 'phone');
    await page.click('#tail-start');
    await page.waitForFunction(() => document.querySelector('#tail-state').textContent === 'following phone');

    step('phone width: every method\'s form');
    await go(page, 'actions');
    await checkLayout(page, 'actions, phone');
    const forms = [
      ['publish', { channel: 'phone', data: '{"text": "from a phone"}' }, (r) => r.result],
      ['broadcast', { channels: 'phone, other', data: '{"n": 2}' }, (r) => r.result.responses.length === 2],
      ['presence', { channel }, (r) => Object.keys(r.result.presence).length === 1],
      ['presence_stats', { channel }, (r) => r.result.num_clients === 1 && r.result.num_users === 1],
      ['history', { channel: 'phone', limit: '5' }, (r) => r.result.publications.length === 2],
      ['subscribe', { userRequired: 'watcher', channel: 'extra' }, (r) => r.result],
      ['unsubscribe', { userRequired: 'watcher', channel: 'extra' }, (r) => r.result],
      ['refresh', { userRequired: 'watcher' }, (r) => r.result],
      ['channels', { pattern: '*' }, (r) => r.result.channels[channel].num_clients === 1],
      ['info', {}, (r) => r.result.nodes.length === 1],
      ['history_remove', { channel: 'other' }, (r) => r.result],
      ['disconnect', { userRequired: 'nobody', code: '4000', reason: 'bye' }, (r) => r.result],
    ];
    const replies = {};
    for (const [method, fields, check] of forms) {
      const { reply } = await runForm(page, method, fields);
      if (!check(reply)) throw new Error(method + ' reply: ' + JSON.stringify(reply));
      await checkLayout(page, method + ' form, phone');
      replies[method] = reply;
    }
    await runForm(page, 'history', { channel: 'phone', limit: '5' });
    await checkLayout(page, 'history reply, phone');
    await shot(page, 'actions', 'phone');
    await go(page, 'tail');
    await page.waitForSelector('#tail-table tbody tr:has-text("from a phone")');
    await checkLayout(page, 'tail, phone');
    await shot(page, 'tail', 'phone');

    if (consoleErrors.length) throw new Error('page errors: ' + consoleErrors.join('; '));
    if (failed.length) throw new Error('failed requests: ' + failed.join('; '));
    console.log(JSON.stringify({ ok: true, steps, received: sdkReceived, reply, replies }));
  } catch (e) {
    await page.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
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
