// Gyre admin page: plain JavaScript, no build step. Talks to the server through
// /admin/init, /admin/auth, /admin/api (the server API), /admin/node and /admin/tail.
// The Actions page is in actions.js.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'gyre.admin.token';
let token = localStorage.getItem(TOKEN_KEY) || '';
let insecure = false;

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h['Authorization'] = 'token ' + token;
  return h;
}

async function post(path, body, contentType) {
  const res = await fetch(path, {
    method: 'POST',
    headers: headers({ 'Content-Type': contentType || 'application/json' }),
    body,
  });
  if (res.status === 401) {
    signOut();
    throw new Error('unauthorized');
  }
  if (!res.ok) throw new Error('HTTP ' + res.status);
  return res.json();
}

// One server API command; resolves to the whole reply ({"result":..} or {"error":..}).
function api(method, params) {
  return post('/admin/api', JSON.stringify({ method, params: params || {} }));
}

function fmtInt(n) {
  return Number(n || 0).toLocaleString('en-US');
}

function fmtBytes(b) {
  if (!b) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return b.toFixed(i ? 1 : 0) + ' ' + units[i];
}

function fmtUptime(s) {
  s = Number(s || 0);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return d + 'd ' + h + 'h';
  if (h) return h + 'h ' + m + 'm';
  if (m) return m + 'm ' + (s % 60) + 's';
  return s + 's';
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// ---------------------------------------------------------------------------------------
// Sign in / out.

async function start() {
  let init = { authenticated: false, insecure: false };
  try {
    const res = await fetch('/admin/init', { headers: headers() });
    init = await res.json();
  } catch (_) { /* shown as signed out */ }
  insecure = !!init.insecure;
  if (init.authenticated || insecure) showApp();
  else showLogin();
}

function showLogin() {
  $('app').classList.add('hidden');
  $('login').classList.remove('hidden');
  $('password').focus();
}

function signOut() {
  token = '';
  localStorage.removeItem(TOKEN_KEY);
  stopTail();
  if (!insecure) showLogin();
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').classList.add('hidden');
  const res = await fetch('/admin/auth', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'password=' + encodeURIComponent($('password').value),
  });
  if (!res.ok) {
    $('login-error').classList.remove('hidden');
    return;
  }
  token = (await res.json()).token;
  localStorage.setItem(TOKEN_KEY, token);
  $('password').value = '';
  showApp();
});

$('logout').addEventListener('click', signOut);

function showApp() {
  $('login').classList.add('hidden');
  $('app').classList.remove('hidden');
  if (insecure) $('logout').classList.add('hidden');
  route();
}

// ---------------------------------------------------------------------------------------
// Pages.

const PAGES = ['nodes', 'channels', 'actions', 'tail'];

function route() {
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'nodes';
  for (const p of PAGES) $('page-' + p).classList.toggle('hidden', p !== page);
  document.querySelectorAll('.top nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === page));
  openMenu(false);
  if (page === 'channels') searchChannels();
}

window.addEventListener('hashchange', route);

// On a narrow screen the navigation folds into a menu under the bar.
function openMenu(open) {
  document.querySelector('.top').classList.toggle('open', open);
  $('nav-toggle').setAttribute('aria-expanded', String(open));
}

$('nav-toggle').addEventListener('click', () => openMenu(!document.querySelector('.top').classList.contains('open')));
document.querySelectorAll('.top nav a').forEach((a) => a.addEventListener('click', () => openMenu(false)));

// Nodes: `info` plus this node's figures every 2 s; rates from the difference between two polls.
let last = null;

async function refreshNodes() {
  if ($('app').classList.contains('hidden')) return;
  try {
    const [info, node] = await Promise.all([api('info'), post('/admin/node', '{}')]);
    const nodes = (info.result && info.result.nodes) || [];
    const tbody = $('nodes-table').querySelector('tbody');
    tbody.replaceChildren();
    const sum = { clients: 0, users: 0, channels: 0, subs: 0 };
    for (const n of nodes) {
      const tr = document.createElement('tr');
      const name = cell(n.name);
      if (n.uid === node.uid) {
        const tag = document.createElement('span');
        tag.className = 'badge wait';
        tag.textContent = 'this node';
        name.append(' ', tag);
      }
      tr.append(name, cell(n.version), cell(fmtInt(n.num_clients), 'num'), cell(fmtInt(n.num_users), 'num'),
        cell(fmtInt(n.num_channels), 'num'), cell(fmtInt(n.num_subs), 'num'), cell(fmtUptime(n.uptime), 'num'));
      tbody.append(tr);
      sum.clients += n.num_clients || 0;
      sum.users += n.num_users || 0;
      sum.channels += n.num_channels || 0;
      sum.subs += n.num_subs || 0;
    }
    $('stat-clients').textContent = fmtInt(sum.clients);
    $('stat-users').textContent = fmtInt(sum.users);
    $('stat-channels').textContent = fmtInt(sum.channels);
    $('stat-subs').textContent = fmtInt(sum.subs);
    $('stat-memory').textContent = fmtBytes(node.rss_bytes);
    $('stat-workers').textContent = node.workers + ' workers · ' + node.engine + ' engine';
    const now = performance.now();
    if (last) {
      const dt = (now - last.at) / 1000;
      const pubs = (node.messages_sent - last.sent) / dt;
      const out = (node.messages_delivered - last.delivered) / dt;
      $('stat-rate').textContent = fmtInt(Math.round(pubs));
      $('stat-rate-sub').textContent = 'published · ' + fmtInt(Math.round(out)) + ' delivered / s';
    }
    last = { at: now, sent: node.messages_sent, delivered: node.messages_delivered };
    $('updated').textContent = 'Last update ' + new Date().toLocaleTimeString() + '.';
    $('live-dot').classList.add('on');
  } catch (e) {
    $('live-dot').classList.remove('on');
  }
}

setInterval(refreshNodes, 2000);

// Channels: `channels` with a pattern.
async function searchChannels() {
  const pattern = $('channels-pattern').value.trim();
  const reply = await api('channels', pattern ? { pattern } : {});
  const channels = (reply.result && reply.result.channels) || {};
  const names = Object.keys(channels).sort();
  const tbody = $('channels-table').querySelector('tbody');
  tbody.replaceChildren();
  for (const name of names) {
    const tr = document.createElement('tr');
    const follow = document.createElement('td');
    follow.className = 'num';
    const a = document.createElement('a');
    a.className = 'link';
    a.textContent = 'Follow';
    a.addEventListener('click', () => {
      $('tail-channel').value = name;
      location.hash = 'tail';
      startTail();
    });
    follow.append(a);
    tr.append(cell(name), cell(fmtInt(channels[name].num_clients), 'num'), follow);
    tbody.append(tr);
  }
  $('channels-empty').classList.toggle('hidden', names.length > 0);
}

$('channels-form').addEventListener('submit', (e) => {
  e.preventDefault();
  searchChannels();
});

// Live tail: a WebSocket client connection whose token (minted by /admin/tail) subscribes it
// server-side to the channel; every publication push becomes a row.
let ws = null;

function tailState(text, cls) {
  $('tail-state').textContent = text;
  $('tail-state').className = 'badge ' + (cls || '');
}

function stopTail() {
  if (ws) {
    ws.onclose = null;
    ws.close();
    ws = null;
  }
  tailState('');
}

function addRow(channel, pub) {
  const tr = document.createElement('tr');
  tr.append(cell(new Date().toLocaleTimeString()), cell(channel),
    cell(pub.offset !== undefined ? String(pub.offset) : '', 'num'), cell(JSON.stringify(pub.data), 'data'));
  const tbody = $('tail-table').querySelector('tbody');
  tbody.prepend(tr);
  while (tbody.children.length > 200) tbody.lastChild.remove();
  $('tail-empty').classList.add('hidden');
}

async function startTail() {
  const channel = $('tail-channel').value.trim();
  if (!channel) return;
  stopTail();
  tailState('connecting', 'wait');
  let t;
  try {
    t = await post('/admin/tail', JSON.stringify({ channel }));
  } catch (err) {
    tailState('failed', 'bad');
    return;
  }
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  // The admin routes' own client endpoint: the page may be served on the internal port.
  const sock = new WebSocket(scheme + location.host + '/admin/connection/websocket');
  ws = sock;
  sock.onopen = () => sock.send(JSON.stringify({ id: 1, connect: { token: t.token, name: 'gyre-admin' } }));
  sock.onmessage = (ev) => {
    for (const line of String(ev.data).split('\n')) {
      if (!line.trim()) continue;
      const msg = JSON.parse(line);
      if (Object.keys(msg).length === 0) {
        sock.send('{}'); // server ping → pong
      } else if (msg.id === 1) {
        if (msg.error) tailState('error ' + msg.error.code, 'bad');
        else tailState('following ' + channel, 'ok');
      } else if (msg.push && msg.push.pub) {
        addRow(msg.push.channel, msg.push.pub);
      }
    }
  };
  sock.onclose = (ev) => {
    if (ws === sock) tailState('closed (' + ev.code + ')', 'bad');
  };
}

$('tail-form').addEventListener('submit', (e) => {
  e.preventDefault();
  startTail();
});
$('tail-stop').addEventListener('click', stopTail);

start().then(refreshNodes);
