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

module.exports = { state, out, shutdown, fatal };
