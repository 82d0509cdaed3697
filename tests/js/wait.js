// Helpers shared by the SDK scripts under tests/js: waiting, and running a script's main.
'use strict';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves once `pred()` holds (checked every 20 ms); rejects naming `what` after `ms`.
function until(pred, what, ms = 5000) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() - start > ms) return reject(new Error(`timeout waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

// Runs `main` (resolving to the script's result) and prints the result as one JSON line and
// exits 0, or prints `{fatal}` and exits 1 when it fails.
function run(main) {
  main().then(
    (out) => {
      process.stdout.write(JSON.stringify(out) + '\n');
      process.exit(0);
    },
    (e) => {
      process.stdout.write(JSON.stringify({ fatal: String(e && e.stack ? e.stack : e) }) + '\n');
      process.exit(1);
    },
  );
}

module.exports = { sleep, until, run };
