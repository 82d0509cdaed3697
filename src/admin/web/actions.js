// Gyre admin page, Actions: a form per server API method (or its parameters as raw JSON), the
// request it sends to /admin/api, and the reply rendered. Loaded after app.js, whose helpers
// ($, api, cell, fmtInt, fmtUptime) it uses.
'use strict';

// Field kinds: text; int (a whole number); bool (a checkbox, sent only when checked); json (any
// JSON value; `object` asks for an object); list (names separated by commas, spaces or new
// lines, sent as an array). A field's `path` may be nested ("since.offset").
const FIELD = {
  channel: { path: 'channel', label: 'Channel', kind: 'text', required: true, placeholder: 'news' },
  channels: { path: 'channels', label: 'Channels', kind: 'list', required: true, placeholder: 'news, alerts' },
  data: { path: 'data', label: 'Data (JSON)', kind: 'json', required: true, placeholder: '{"text": "hello"}' },
  tags: { path: 'tags', label: 'Tags (JSON object of strings)', kind: 'json', object: true, placeholder: '{"kind": "news"}', rows: 2 },
  idempotency_key: { path: 'idempotency_key', label: 'Idempotency key', kind: 'text' },
  skip_history: { path: 'skip_history', label: 'Skip history', kind: 'bool' },
  delta: { path: 'delta', label: 'Delta', kind: 'bool' },
  user: { path: 'user', label: 'User', kind: 'text', placeholder: '42' },
  userRequired: { path: 'user', label: 'User', kind: 'text', required: true, placeholder: '42' },
  client: { path: 'client', label: 'Client ID', kind: 'text' },
  session: { path: 'session', label: 'Session', kind: 'text' },
  info: { path: 'info', label: 'Info (JSON)', kind: 'json', rows: 2 },
  subData: { path: 'data', label: 'Subscribe data (JSON)', kind: 'json', rows: 2 },
  expire_at: { path: 'expire_at', label: 'Expire at (Unix seconds)', kind: 'int' },
  expired: { path: 'expired', label: 'Expired', kind: 'bool' },
  limit: { path: 'limit', label: 'Limit', kind: 'int', placeholder: '10' },
  reverse: { path: 'reverse', label: 'Reverse (newest first)', kind: 'bool' },
  since_offset: { path: 'since.offset', label: 'Since offset', kind: 'int' },
  since_epoch: { path: 'since.epoch', label: 'Since epoch', kind: 'text' },
  code: { path: 'disconnect.code', label: 'Disconnect code', kind: 'int', placeholder: '4000' },
  reason: { path: 'disconnect.reason', label: 'Disconnect reason', kind: 'text' },
  whitelist: { path: 'whitelist', label: 'Keep clients (IDs)', kind: 'list' },
  key: { path: 'key', label: 'Key', kind: 'text', required: true, placeholder: 'cell-7' },
  cursor: { path: 'cursor', label: 'Cursor (the previous page\'s)', kind: 'text' },
  pattern: { path: 'pattern', label: 'Pattern', kind: 'text', placeholder: 'chat:*  (empty: all)' },
  version: { path: 'version', label: 'Version', kind: 'int', required: true, placeholder: '1' },
  epoch: { path: 'epoch', label: 'Epoch', kind: 'text' },
  key_mode: { path: 'key_mode', label: 'Key mode (if_new, if_exists; empty: always)', kind: 'text' },
  map_version: { path: 'version', label: 'Version (0: none)', kind: 'int' },
  version_epoch: { path: 'version_epoch', label: 'Version epoch', kind: 'text' },
  one_key: { path: 'key', label: 'One key only', kind: 'text' },
  stream_since_offset: { path: 'since_offset', label: 'Since offset', kind: 'int' },
  stream_since_epoch: { path: 'since_epoch', label: 'Since epoch', kind: 'text' },
};

const METHODS = {
  publish: { help: 'Publish data into a channel.',
    fields: ['channel', 'data', 'tags', 'idempotency_key', 'skip_history', 'delta'] },
  broadcast: { help: 'Publish the same data into several channels.',
    fields: ['channels', 'data', 'tags', 'idempotency_key', 'skip_history', 'delta'] },
  presence: { help: 'Clients subscribed to a channel (presence must be on for it).', fields: ['channel'] },
  presence_stats: { help: 'How many clients and users a channel has.', fields: ['channel'] },
  history: { help: 'Publications kept in a channel\'s history.',
    fields: ['channel', 'limit', 'reverse', 'since_offset', 'since_epoch'] },
  history_remove: { help: 'Drop a channel\'s history.', fields: ['channel'] },
  subscribe: { help: 'Subscribe a user\'s connections to a channel, server-side.',
    fields: ['userRequired', 'channel', 'client', 'session', 'info', 'subData', 'expire_at'] },
  unsubscribe: { help: 'Unsubscribe a user\'s connections from a channel.',
    fields: ['userRequired', 'channel', 'client', 'session'] },
  disconnect: { help: 'Disconnect a user\'s connections (or one client).',
    fields: ['userRequired', 'client', 'session', 'code', 'reason', 'whitelist'] },
  refresh: { help: 'Refresh or expire a user\'s connections.',
    fields: ['userRequired', 'client', 'session', 'expired', 'expire_at', 'info'] },
  channels: { help: 'Channels with subscribers, filtered by a glob pattern.', fields: ['pattern'] },
  info: { help: 'The nodes of the cluster.', fields: [] },
  map_publish: { help: 'Set a key of a map channel (subscription_type: map).',
    fields: ['channel', 'key', 'data', 'tags', 'idempotency_key', 'key_mode', 'map_version', 'version_epoch', 'delta'] },
  map_remove: { help: 'Remove a key of a map channel.', fields: ['channel', 'key', 'idempotency_key'] },
  map_read_state: { help: 'A page of a map channel\'s keys.', fields: ['channel', 'cursor', 'limit', 'one_key'] },
  map_read_stream: { help: 'A map channel\'s change stream (limit -1: all).',
    fields: ['channel', 'limit', 'reverse', 'stream_since_offset', 'stream_since_epoch'] },
  map_stats: { help: 'How many keys a map channel has.', fields: ['channel'] },
  map_clear: { help: 'Remove every key of a map channel.', fields: ['channel'] },
  shared_poll_publish: {
    help: 'Push a new version of a key to the clients tracking it (subscription_type: shared_poll, '
      + 'versioned mode, shared_poll.publish_enabled).',
    fields: ['channel', 'key', 'version', 'epoch', 'data'] },
};

// What a fresh form holds, so that every method runs as it opens.
const values = {
  channel: 'news', channels: 'news, alerts', data: '{"text": "hello"}', user: '42', limit: '10',
  reverse: true, pattern: '',
};

let rawMode = false;

function method() {
  return $('action-method').value;
}

function fieldId(name) {
  return 'f-' + name;
}

// Builds the inputs of the selected method from `values`.
function renderFields() {
  const box = $('action-fields');
  box.replaceChildren();
  $('action-help').textContent = METHODS[method()].help;
  for (const name of METHODS[method()].fields) {
    const f = FIELD[name];
    const label = document.createElement('label');
    label.className = f.kind === 'bool' ? 'check' : 'field';
    let input;
    if (f.kind === 'json') {
      input = document.createElement('textarea');
      input.rows = f.rows || 4;
      input.spellcheck = false;
    } else {
      input = document.createElement('input');
      input.type = f.kind === 'bool' ? 'checkbox' : 'text';
      if (f.kind === 'int') input.inputMode = 'numeric';
    }
    input.id = fieldId(name);
    input.dataset.field = name;
    if (f.placeholder) input.placeholder = f.placeholder;
    const v = values[f.path];
    if (f.kind === 'bool') input.checked = !!v;
    else input.value = v === undefined ? '' : v;
    const text = document.createElement('span');
    text.textContent = f.label + (f.required ? ' *' : '');
    const err = document.createElement('span');
    err.className = 'field-error hidden';
    err.id = 'e-' + name;
    if (f.kind === 'bool') label.append(input, text);
    else label.append(text, input, err);
    box.append(label);
  }
  if (!METHODS[method()].fields.length) {
    const p = document.createElement('p');
    p.className = 'muted small';
    p.textContent = 'No parameters.';
    box.append(p);
  }
}

function setPath(obj, path, v) {
  const keys = path.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) o = o[k] = o[k] || {};
  o[keys[keys.length - 1]] = v;
}

function getPath(obj, path) {
  return path.split('.').reduce((o, k) => (o && typeof o === 'object' ? o[k] : undefined), obj);
}

// The parameters the fields describe, and the problems by field name. `read(name)` is a
// field's state: a boolean for a checkbox, its text otherwise.
function collect(read) {
  const params = {};
  const errors = {};
  for (const name of METHODS[method()].fields) {
    const f = FIELD[name];
    if (f.kind === 'bool') {
      if (read(name)) setPath(params, f.path, true);
      continue;
    }
    const text = String(read(name) || '').trim();
    if (!text) {
      if (f.required) errors[name] = 'Required.';
      continue;
    }
    if (f.kind === 'text') {
      setPath(params, f.path, text);
    } else if (f.kind === 'int') {
      if (!/^-?\d+$/.test(text)) errors[name] = 'A whole number.';
      else setPath(params, f.path, Number(text));
    } else if (f.kind === 'list') {
      setPath(params, f.path, text.split(/[\s,]+/).filter(Boolean));
    } else {
      try {
        const v = JSON.parse(text);
        if (f.object && (v === null || typeof v !== 'object' || Array.isArray(v))) errors[name] = 'A JSON object.';
        else setPath(params, f.path, v);
      } catch (e) {
        errors[name] = 'Invalid JSON: ' + e.message;
      }
    }
  }
  return { params, errors };
}

function formParams() {
  return collect((name) => {
    const input = $(fieldId(name));
    return FIELD[name].kind === 'bool' ? input.checked : input.value;
  });
}

// The parameters of raw mode, or the reason they do not parse.
function rawParams() {
  const text = $('action-params').value.trim() || '{}';
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return { errors: { params: 'A JSON object.' } };
    return { params: v, errors: {} };
  } catch (e) {
    return { errors: { params: 'Invalid JSON: ' + e.message } };
  }
}

function currentParams() {
  return rawMode ? rawParams() : formParams();
}

function showErrors(errors) {
  const names = rawMode ? ['params'] : METHODS[method()].fields;
  for (const name of names) {
    const input = name === 'params' ? $('action-params') : $(fieldId(name));
    const err = name === 'params' ? $('action-params-error') : $('e-' + name);
    if (!err) continue;
    err.textContent = errors[name] || '';
    err.classList.toggle('hidden', !errors[name]);
    input.classList.toggle('invalid', !!errors[name]);
    input.setAttribute('aria-invalid', errors[name] ? 'true' : 'false');
  }
}

function showRequest() {
  const { params, errors } = currentParams();
  const problems = Object.entries(errors);
  if (problems.length) {
    const [name, why] = problems[0];
    const label = name === 'params' ? 'Parameters' : FIELD[name].label;
    $('action-request').textContent = '(not ready: ' + label + ': ' + why + ')';
    return;
  }
  $('action-request').textContent = JSON.stringify({ method: method(), params }, null, 2);
}

// Typed values outlive the method: a channel typed for publish is there for history.
function remember(e) {
  const name = e.target.dataset && e.target.dataset.field;
  if (!name) return;
  values[FIELD[name].path] = FIELD[name].kind === 'bool' ? e.target.checked : e.target.value;
}

// Form → JSON carries what the form holds; JSON → form fills the fields it knows.
function setMode(raw) {
  if (raw === rawMode) return;
  if (raw) {
    $('action-params').value = JSON.stringify(formParams().params, null, 2);
  } else {
    const { params, errors } = rawParams();
    if (errors.params) {
      showErrors(errors);
      return;
    }
    for (const name of METHODS[method()].fields) {
      const f = FIELD[name];
      const v = getPath(params, f.path);
      if (f.kind === 'bool') values[f.path] = !!v;
      else if (v === undefined) values[f.path] = '';
      else if (f.kind === 'json') values[f.path] = JSON.stringify(v, null, 2);
      else if (f.kind === 'list') values[f.path] = Array.isArray(v) ? v.join(', ') : String(v);
      else values[f.path] = String(v);
    }
  }
  rawMode = raw;
  $('action-fields').classList.toggle('hidden', raw);
  $('action-raw').classList.toggle('hidden', !raw);
  $('mode-form').classList.toggle('active', !raw);
  $('mode-raw').classList.toggle('active', raw);
  $('mode-form').setAttribute('aria-pressed', String(!raw));
  $('mode-raw').setAttribute('aria-pressed', String(raw));
  if (!raw) renderFields();
  showErrors({});
  showRequest();
}

// ---------------------------------------------------------------------------------------
// The reply, rendered: a table for lists, name/value rows for objects, JSON below.

function table(head, rows) {
  const wrap = document.createElement('div');
  wrap.className = 'table-wrap';
  const t = document.createElement('table');
  t.className = 'table';
  const tr = document.createElement('tr');
  for (const [h, cls] of head) {
    const th = document.createElement('th');
    th.textContent = h;
    if (cls) th.className = cls;
    tr.append(th);
  }
  const thead = document.createElement('thead');
  thead.append(tr);
  const tbody = document.createElement('tbody');
  for (const r of rows) {
    const row = document.createElement('tr');
    r.forEach((v, i) => row.append(cell(v, head[i][1])));
    tbody.append(row);
  }
  t.append(thead, tbody);
  wrap.append(t);
  return wrap;
}

function note(text) {
  const p = document.createElement('p');
  p.className = 'muted result-note';
  p.textContent = text;
  return p;
}

const json = (v) => (v === undefined ? '' : JSON.stringify(v));

function renderResult(m, result, params) {
  const out = [];
  if (m === 'presence') {
    const clients = Object.values(result.presence || {});
    out.push(note(clients.length + ' client(s) in presence.'));
    if (clients.length) {
      out.push(table([['Client'], ['User'], ['Conn info', 'data'], ['Chan info', 'data']],
        clients.map((c) => [c.client, c.user, json(c.conn_info), json(c.chan_info)])));
    }
  } else if (m === 'history') {
    const pubs = result.publications || [];
    const top = result.offset !== undefined ? ' Stream top: offset ' + result.offset + ', epoch ' + result.epoch + '.' : '';
    out.push(note(pubs.length + ' publication(s).' + top));
    if (pubs.length) {
      out.push(table([['Offset', 'num'], ['Data', 'data'], ['Tags', 'data']],
        pubs.map((p) => [p.offset === undefined ? '' : String(p.offset), json(p.data), json(p.tags)])));
    }
  } else if (m === 'channels') {
    const ch = result.channels || {};
    const names = Object.keys(ch).sort();
    out.push(note(names.length + ' channel(s) with subscribers.'));
    if (names.length) out.push(table([['Channel'], ['Subscribers', 'num']], names.map((n) => [n, fmtInt(ch[n].num_clients)])));
  } else if (m === 'info') {
    const nodes = result.nodes || [];
    out.push(table([['Node'], ['Version'], ['Clients', 'num'], ['Users', 'num'], ['Channels', 'num'], ['Uptime', 'num']],
      nodes.map((n) => [n.name, n.version, fmtInt(n.num_clients), fmtInt(n.num_users), fmtInt(n.num_channels), fmtUptime(n.uptime)])));
  } else if (m === 'broadcast') {
    const channels = params.channels || [];
    out.push(table([['Channel'], ['Outcome'], ['Reply', 'data']],
      (result.responses || []).map((r, i) => [channels[i] || String(i + 1),
        r.error ? 'error ' + r.error.code + ' ' + r.error.message : 'ok', json(r.result || r.error)])));
  } else {
    const keys = Object.keys(result || {});
    if (!keys.length) out.push(note('Done.'));
    else out.push(table([['Field'], ['Value', 'data']], keys.map((k) => [k, typeof result[k] === 'string' ? result[k] : json(result[k])])));
  }
  $('action-result').replaceChildren(...out);
}

function setStatus(text, cls) {
  $('action-status').className = 'badge ' + cls;
  $('action-status').textContent = text;
}

function showError(text) {
  $('action-error').textContent = text;
  $('action-error').classList.toggle('hidden', !text);
}

async function run() {
  const m = method();
  const { params, errors } = currentParams();
  showErrors(errors);
  if (Object.keys(errors).length) {
    setStatus('invalid input', 'bad');
    showError('Nothing was sent: fix the marked field' + (Object.keys(errors).length > 1 ? 's.' : '.'));
    return;
  }
  showRequest();
  showError('');
  setStatus('running', 'wait');
  $('action-result').replaceChildren();
  try {
    const reply = await api(m, params);
    $('action-reply').textContent = JSON.stringify(reply, null, 2);
    if (reply.error) {
      setStatus('error ' + reply.error.code, 'bad');
      showError('Error ' + reply.error.code + ': ' + reply.error.message + (reply.error.temporary ? ' (temporary)' : ''));
    } else {
      setStatus('ok', 'ok');
      renderResult(m, reply.result || {}, params);
    }
  } catch (err) {
    setStatus('failed', 'bad');
    showError('The request failed: ' + err.message);
    $('action-reply').textContent = String(err);
  }
}

for (const m of Object.keys(METHODS)) {
  const o = document.createElement('option');
  o.value = m;
  o.textContent = m;
  $('action-method').append(o);
}

$('action-method').addEventListener('input', () => {
  if (rawMode) {
    const { params } = collect((name) => values[FIELD[name].path]);
    $('action-params').value = JSON.stringify(params, null, 2);
  } else {
    renderFields();
  }
  showErrors({});
  showRequest();
});
for (const ev of ['input', 'change']) {
  $('action-form').addEventListener(ev, (e) => {
    if (e.target === $('action-method')) return; // its own listener rebuilds the fields first
    remember(e);
    showRequest();
  });
}
$('action-form').addEventListener('submit', (e) => {
  e.preventDefault();
  run();
});
$('mode-form').addEventListener('click', () => setMode(false));
$('mode-raw').addEventListener('click', () => setMode(true));

$('action-method').value = 'publish';
renderFields();
showRequest();
