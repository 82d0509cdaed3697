// What the headless-Chromium drivers (browser_fallback.js, example_browser.js) share: one JSON
// line per event on stdout, and a fatal error (or any uncaught one) reported as
// {"ev":"fatal",...} before the browser context and the page server close and the process
// exits 1. A driver registers its browser context and page server in `state`.

const state = { context: null, server: null };

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function shutdown(code) {
  try {
    if (state.context) await state.context.close();
  } catch (_) {
    // exiting anyway
  }
  if (state.server) state.server.close();
  process.exit(code);
}

function fatal(where, e) {
  out({ ev: 'fatal', where, message: String(e && e.stack ? e.stack : e) });
  shutdown(1);
}

process.on('uncaughtException', (e) => fatal('uncaughtException', e));
process.on('unhandledRejection', (e) => fatal('unhandledRejection', e));

// Serves `server` on 127.0.0.1:`port`, closed again by `shutdown`.
async function listen(server, port) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  state.server = server;
}

// Debian's Chromium (or $CHROMIUM), headless in a fresh profile, with the flags this machine's
// closed network needs; `options` are added to the launch options. Returns its first page.
async function launch(options) {
  const fs = require('fs');
  const os = require('os');
  const path = require('path');
  const { chromium } = require('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--no-proxy-server',
    ],
    ...options,
  });
  state.context = context;
  return context.pages()[0] || (await context.newPage());
}

module.exports = { state, out, shutdown, fatal, listen, launch };
