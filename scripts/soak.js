// Soak driver for scripts/soak.sh: mixed load with connection churn against a running Gyre,
// sampled every second into a CSV, then a report (RSS trend, latency, lost messages).
//
// Load (all rates configurable):
//   - `--subscribers` WebSocket clients (JSON protocol) spread over `--channels` channels; they
//     stay for the whole run and every publication to their channel must reach them once;
//   - publishes at `--rate` per second through the new-style HTTP API (`POST /api/publish`,
//     keep-alive), payload `{"s": seq, "t": send time, "p": padding}`;
//   - every second one legacy `POST /api` stream of 50 publishes plus `history`,
//     `presence_stats` and `info` calls;
//   - churn: `--churn` short-lived clients per second that connect, subscribe, stay 0.2-3 s and
//     leave (clean close, abrupt termination, or gone before their subscribe reply).
// Every second: server RSS, open fds and CPU (from /proc), publishes, deliveries, delivery
// latency (send to receive, same clock) and API latency percentiles, churn counts, errors.
//
// node scripts/soak.js --port P --key KEY --secret SECRET --pid PID --minutes M --csv FILE
//   [--subscribers 300] [--channels 10] [--rate 1000] [--churn 30] [--report FILE]
'use strict';

const fs = require('fs');
const http = require('http');
const crypto = require('crypto');
const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'tests', 'js', 'node_modules', 'ws'));

function args() {
  const o = { subscribers: 300, channels: 10, rate: 1000, churn: 30, minutes: 10, report: '' };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    const k = a[i].replace(/^--/, '');
    const v = a[i + 1];
    o[k] = /^[0-9.]+$/.test(v) ? Number(v) : v;
  }
  for (const k of ['port', 'key', 'secret', 'pid', 'csv']) {
    if (o[k] === undefined) throw new Error(`--${k} is required`);
  }
  return o;
}

const o = args();
const now = () => performance.timeOrigin + performance.now(); // ms, sub-ms precision
const b64 = (s) => Buffer.from(s).toString('base64url');
function token(user) {
  const h = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const p = b64(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + 86400 }));
  const sig = crypto.createHmac('sha256', o.secret).update(`${h}.${p}`).digest('base64url');
  return `${h}.${p}.${sig}`;
}
const channel = (i) => `soak:c${i}`;

// ---- per-second counters ----
const sec = {
  published: 0, acked: 0, delivered: 0, deliv: [], api: [], churnOpened: 0, churnClosed: 0,
  errors: 0, apiErrors: 0,
};
const total = { published: 0, acked: 0, delivered: 0, duplicates: 0, churnOpened: 0, churnClosed: 0, errors: 0,
  apiErrors: 0, baseDisconnects: 0, unexpectedCloses: {} };
const errorsSeen = [];
function error(what) {
  sec.errors++;
  total.errors++;
  if (errorsSeen.length < 20) errorsSeen.push(`${new Date().toISOString()} ${what}`);
}

// ---- WebSocket clients ----
/** Opens a client; `onPub(channel, data)` for publications; resolves when subscribed. */
function client(user, ch, onPub, onClose) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${o.port}/connection/websocket`);
    let subscribed = false;
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, connect: { token: token(user) } })));
    ws.on('message', (buf) => {
      for (const line of buf.toString().split('\n')) {
        if (!line) continue;
        const m = JSON.parse(line);
        if (m.id === undefined && m.push === undefined) {
          ws.send('{}'); // server ping
        } else if (m.id === 1) {
          if (!m.connect) return reject(new Error(`connect: ${line}`));
          ws.send(JSON.stringify({ id: 2, subscribe: { channel: ch } }));
        } else if (m.id === 2) {
          if (!m.subscribe) return reject(new Error(`subscribe: ${line}`));
          subscribed = true;
          resolve(ws);
        } else if (m.push && m.push.pub) {
          onPub(m.push.channel, m.push.pub.data);
        } else if (m.push && m.push.disconnect) {
          error(`disconnect push ${line}`);
        }
      }
    });
    ws.on('close', (code, reason) => {
      if (!subscribed) reject(new Error(`closed ${code} ${reason} before subscribing`));
      onClose(code, reason.toString());
    });
    ws.on('error', (e) => {
      if (!subscribed) reject(e);
    });
  });
}

// ---- base subscribers ----
const base = [];
function onBasePub(sub, ch, d) {
  const t = now();
  sec.delivered++;
  total.delivered++;
  if (d && typeof d.s === 'number') {
    if (sub.got.has(d.s)) {
      total.duplicates++;
    } else {
      sub.got.add(d.s);
    }
    sec.deliv.push(t - d.t);
  }
}

// ---- HTTP API ----
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
function api(pathname, body) {
  return new Promise((resolve) => {
    const t = now();
    const req = http.request(
      { host: '127.0.0.1', port: o.port, path: pathname, method: 'POST', agent,
        headers: { 'X-API-Key': o.key, 'Content-Type': 'application/json' } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const ms = now() - t;
          sec.api.push(ms);
          resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(), ms });
        });
      },
    );
    req.on('error', (e) => {
      sec.apiErrors++;
      total.apiErrors++;
      error(`api ${pathname}: ${e.message}`);
      resolve({ status: 0, body: '', ms: now() - t });
    });
    req.end(body);
  });
}

const acked = []; // per channel: Set of acknowledged seqs
let seq = 0;
let publishing = true;
function publishOne() {
  const k = seq % o.channels;
  const s = ++seq;
  sec.published++;
  total.published++;
  const body = JSON.stringify({ channel: channel(k), data: { s, t: now(), p: 'x'.repeat(64) } });
  api('/api/publish', body).then((r) => {
    if (r.status === 200 && !r.body.includes('"error"')) {
      acked[k].add(s);
      sec.acked++;
      total.acked++;
    } else {
      sec.apiErrors++;
      total.apiErrors++;
      error(`publish ${r.status} ${r.body.slice(0, 200)}`);
    }
  });
}

async function mixedCalls() {
  const lines = [];
  for (let i = 0; i < 50; i++) {
    lines.push(JSON.stringify({ id: i + 1, method: 'publish', params: { channel: 'soak:legacy', data: { i } } }));
  }
  lines.push(JSON.stringify({ id: 51, method: 'presence_stats', params: { channel: channel(0) } }));
  const r = await api('/api', lines.join('\n'));
  if (r.status !== 200 || r.body.split('\n').length !== 51) error(`legacy stream ${r.status} ${r.body.slice(0, 200)}`);
  const h = await api('/api/history', JSON.stringify({ channel: channel(1), limit: 10 }));
  if (h.status !== 200 || h.body.includes('"error"')) error(`history ${h.body.slice(0, 200)}`);
  const i = await api('/api/info', '{}');
  if (i.status !== 200) error(`info ${i.status}`);
}

// ---- churn ----
let churnSeq = 0;
let churnOpen = 0;
function churnOne() {
  const n = ++churnSeq;
  const ch = channel(n % o.channels);
  const mode = n % 4;
  sec.churnOpened++;
  total.churnOpened++;
  churnOpen++;
  let closed = false;
  const done = () => {
    if (!closed) {
      closed = true;
      churnOpen--;
      sec.churnClosed++;
      total.churnClosed++;
    }
  };
  if (mode === 3) {
    // Gone before its subscribe reply: terminated right after the upgrade.
    const ws = new WebSocket(`ws://127.0.0.1:${o.port}/connection/websocket`);
    ws.on('open', () => {
      ws.send(JSON.stringify({ id: 1, connect: { token: token(`churn-${n}`) } }));
      ws.terminate();
    });
    ws.on('close', done);
    ws.on('error', () => {});
    return;
  }
  client(`churn-${n}`, ch, () => {}, (code) => {
    if (code !== 1000 && code !== 1005 && code !== 1006) error(`churn client closed with ${code}`);
    done();
  })
    .then((ws) => {
      setTimeout(() => (mode === 0 ? ws.terminate() : ws.close(1000)), 200 + Math.random() * 2800);
    })
    .catch((e) => {
      error(`churn client: ${e.message}`);
      done();
    });
}

// ---- /proc sampling ----
function rssKib() {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${o.pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}
function fds() {
  return fs.readdirSync(`/proc/${o.pid}/fd`).length;
}
const CLK_TCK = 100;
function cpuTicks() {
  const f = fs.readFileSync(`/proc/${o.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}
function pct(a, p) {
  if (!a.length) return 0;
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(((s.length - 1) * p) / 100))];
}

// ---- run ----
async function main() {
  for (let k = 0; k < o.channels; k++) acked.push(new Set());
  const startConnect = now();
  const opening = [];
  for (let i = 0; i < o.subscribers; i++) {
    const sub = { ch: i % o.channels, got: new Set(), ws: null };
    base.push(sub);
    opening.push(
      client(`base-${i}`, channel(sub.ch), (ch, d) => onBasePub(sub, ch, d), (code, reason) => {
        if (publishing) {
          total.baseDisconnects++;
          total.unexpectedCloses[code] = (total.unexpectedCloses[code] || 0) + 1;
          error(`base subscriber ${i} closed ${code} ${reason}`);
        }
      }).then((ws) => (sub.ws = ws)),
    );
  }
  await Promise.all(opening);
  console.error(`soak: ${o.subscribers} subscribers on ${o.channels} channels in ${((now() - startConnect) / 1000).toFixed(1)} s`);

  const csv = fs.createWriteStream(o.csv);
  csv.write('t_s,rss_kib,fds,cpu_pct,published,acked,delivered,deliv_p50_ms,deliv_p99_ms,deliv_max_ms,' +
    'api_p50_ms,api_p99_ms,api_max_ms,churn_opened,churn_closed,churn_open,errors\n');
  const samples = [];
  const t0 = now();
  let lastCpu = cpuTicks();
  let lastT = t0;
  const endAt = t0 + o.minutes * 60000;

  // Publishing in 10 ms ticks, the rate spread evenly.
  let owed = 0;
  const pubTimer = setInterval(() => {
    if (!publishing) return;
    owed += o.rate / 100;
    while (owed >= 1) {
      owed -= 1;
      publishOne();
    }
  }, 10);
  const churnTimer = setInterval(() => publishing && churnOne(), 1000 / o.churn);
  const mixedTimer = setInterval(() => publishing && mixedCalls(), 1000);

  await new Promise((resolve) => {
    const tick = setInterval(() => {
      const t = now();
      const cpu = cpuTicks();
      const row = {
        t: (t - t0) / 1000, rss: rssKib(), fds: fds(),
        cpu: ((cpu - lastCpu) / CLK_TCK) / ((t - lastT) / 1000) * 100,
        published: sec.published, acked: sec.acked, delivered: sec.delivered,
        d50: pct(sec.deliv, 50), d99: pct(sec.deliv, 99), dmax: pct(sec.deliv, 100),
        a50: pct(sec.api, 50), a99: pct(sec.api, 99), amax: pct(sec.api, 100),
        co: sec.churnOpened, cc: sec.churnClosed, open: churnOpen, errors: sec.errors,
      };
      lastCpu = cpu;
      lastT = t;
      samples.push(row);
      csv.write([row.t.toFixed(1), row.rss, row.fds, row.cpu.toFixed(1), row.published, row.acked, row.delivered,
        row.d50.toFixed(2), row.d99.toFixed(2), row.dmax.toFixed(2), row.a50.toFixed(2), row.a99.toFixed(2),
        row.amax.toFixed(2), row.co, row.cc, row.open, row.errors].join(',') + '\n');
      Object.assign(sec, { published: 0, acked: 0, delivered: 0, deliv: [], api: [], churnOpened: 0,
        churnClosed: 0, errors: 0, apiErrors: 0 });
      if (Math.round(row.t) % 60 === 0) {
        console.error(`soak: ${row.t.toFixed(0)} s rss ${row.rss} KiB fds ${row.fds} delivered ${row.delivered}/s ` +
          `p99 ${row.d99.toFixed(1)} ms errors ${total.errors}`);
      }
      if (t >= endAt) {
        clearInterval(tick);
        resolve();
      }
    }, 1000);
  });

  // Stop the load, let the last publications and churn clients settle.
  publishing = false;
  clearInterval(pubTimer);
  clearInterval(churnTimer);
  clearInterval(mixedTimer);
  await new Promise((r) => setTimeout(r, 5000));
  csv.end();

  let lost = 0;
  for (const sub of base) {
    for (const s of acked[sub.ch]) if (!sub.got.has(s)) lost++;
  }
  const expected = base.reduce((n, sub) => n + acked[sub.ch].size, 0);
  const info = await api('/api/info', '{}');
  let clients = null;
  try {
    clients = JSON.parse(info.body).result.nodes.reduce((n, x) => n + x.num_clients, 0);
  } catch (e) {
    error(`final info: ${info.body}`);
  }

  // RSS trend: least-squares slope after the first minute (warm-up), in KiB per minute.
  const after = samples.filter((s) => s.t >= 60);
  const fit = (pts) => {
    const n = pts.length;
    if (n < 2) return 0;
    const mx = pts.reduce((a, p) => a + p.t, 0) / n;
    const my = pts.reduce((a, p) => a + p.rss, 0) / n;
    const num = pts.reduce((a, p) => a + (p.t - mx) * (p.rss - my), 0);
    const den = pts.reduce((a, p) => a + (p.t - mx) ** 2, 0);
    return (num / den) * 60;
  };
  const half = after.filter((s) => s.t >= (o.minutes * 60) / 2);
  const allDeliv = samples.filter((s) => s.delivered > 0);
  const report = {
    minutes: o.minutes, subscribers: o.subscribers, channels: o.channels, rate_per_s: o.rate, churn_per_s: o.churn,
    published: total.published, acknowledged: total.acked, deliveries_expected: expected,
    deliveries_received: base.reduce((n, s) => n + s.got.size, 0), lost, duplicates: total.duplicates,
    base_disconnects: total.baseDisconnects, unexpected_closes: total.unexpectedCloses,
    churn_opened: total.churnOpened, churn_closed: total.churnClosed, errors: total.errors, api_errors: total.apiErrors,
    clients_at_end: clients,
    rss_kib: { first: samples[0].rss, at_1min: after.length ? after[0].rss : null, last: samples[samples.length - 1].rss,
      max: Math.max(...samples.map((s) => s.rss)) },
    rss_slope_kib_per_min_after_1min: Number(fit(after).toFixed(2)),
    rss_slope_kib_per_min_second_half: Number(fit(half).toFixed(2)),
    fds: { first: samples[0].fds, last: samples[samples.length - 1].fds, max: Math.max(...samples.map((s) => s.fds)) },
    delivery_latency_ms: {
      median_of_p50: Number(pct(allDeliv.map((s) => s.d50), 50).toFixed(2)),
      median_of_p99: Number(pct(allDeliv.map((s) => s.d99), 50).toFixed(2)),
      worst_p99: Number(Math.max(...allDeliv.map((s) => s.d99)).toFixed(2)),
      worst_max: Number(Math.max(...allDeliv.map((s) => s.dmax)).toFixed(2)),
    },
    api_latency_ms: {
      median_of_p50: Number(pct(samples.map((s) => s.a50), 50).toFixed(2)),
      median_of_p99: Number(pct(samples.map((s) => s.a99), 50).toFixed(2)),
      worst_max: Number(Math.max(...samples.map((s) => s.amax)).toFixed(2)),
    },
    server_cpu_pct_median: Number(pct(samples.map((s) => s.cpu), 50).toFixed(1)),
    first_errors: errorsSeen,
  };
  const text = JSON.stringify(report, null, 2);
  console.log(text);
  if (o.report) fs.writeFileSync(o.report, text + '\n');
  for (const sub of base) sub.ws && sub.ws.close(1000);
  agent.destroy();
  setTimeout(() => process.exit(lost === 0 && total.baseDisconnects === 0 ? 0 : 1), 500);
}

main().catch((e) => {
  console.error(`soak: ${e.stack || e}`);
  process.exit(2);
});
