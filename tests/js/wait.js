// Waiting helpers shared by the SDK scripts under tests/js.
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

module.exports = { sleep, until };
