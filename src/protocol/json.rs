//! JSON format of the client protocol: a text frame holds one or more commands separated by
//! `\n`; replies and pushes are JSON objects with Centrifugo's field names. Which fields are
//! left out when empty follows Centrifugo's encoder (the `json` tags of its client protocol):
//! every field is omitted when zero, empty or absent except `presence_stats.num_clients` and
//! `num_users`, `history.publications`, `epoch` and `offset`, `presence.presence` and a client
//! info's `user` and `client`, which are always written. `data`/`info` are raw JSON kept
//! byte-for-byte.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;
use crate::wire::json::{self as encode, string};

fn raw(r: Option<&RawValue>) -> Option<Bytes> {
    r.filter(|r| r.get() != "null").map(|r| Bytes::copy_from_slice(r.get().as_bytes()))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    id: u32,
    #[serde(borrow)]
    connect: Option<&'a RawValue>,
    #[serde(borrow)]
    subscribe: Option<&'a RawValue>,
    #[serde(borrow)]
    unsubscribe: Option<&'a RawValue>,
    #[serde(borrow)]
    publish: Option<&'a RawValue>,
    #[serde(borrow)]
    presence: Option<&'a RawValue>,
    #[serde(borrow)]
    presence_stats: Option<&'a RawValue>,
    #[serde(borrow)]
    history: Option<&'a RawValue>,
    #[serde(borrow)]
    ping: Option<&'a RawValue>,
    #[serde(borrow)]
    send: Option<&'a RawValue>,
    #[serde(borrow)]
    rpc: Option<&'a RawValue>,
    #[serde(borrow)]
    refresh: Option<&'a RawValue>,
    #[serde(borrow)]
    sub_refresh: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubRecoverJ {
    recover: bool,
    offset: u64,
    epoch: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConnectJ<'a> {
    token: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    subs: Option<BTreeMap<String, SubRecoverJ>>,
    name: String,
    version: String,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscribeJ<'a> {
    channel: String,
    token: String,
    recover: bool,
    epoch: String,
    offset: u64,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    positioned: bool,
    recoverable: bool,
    join_leave: bool,
    delta: String,
    tf: Option<FilterJ>,
    flag: i64,
    r#type: i32,
    phase: i32,
    cursor: String,
    limit: i32,
}

/// A tags filter node; `null` anywhere stands for an absent value, and a `null` child for an
/// empty node (refused when the filter is checked).
#[derive(Deserialize, Default)]
#[serde(default)]
struct FilterJ {
    op: Option<String>,
    key: Option<String>,
    cmp: Option<String>,
    val: Option<String>,
    vals: Option<Vec<Option<String>>>,
    nodes: Option<Vec<Option<FilterJ>>>,
}

impl FilterJ {
    fn into_node(self) -> crate::filter::FilterNode {
        crate::filter::FilterNode {
            op: self.op.unwrap_or_default(),
            key: self.key.unwrap_or_default(),
            cmp: self.cmp.unwrap_or_default(),
            val: self.val.unwrap_or_default(),
            vals: self.vals.unwrap_or_default().into_iter().map(Option::unwrap_or_default).collect(),
            nodes: self.nodes.unwrap_or_default().into_iter().map(|n| n.unwrap_or_default().into_node()).collect(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChannelJ {
    channel: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublishJ<'a> {
    channel: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    r#type: i32,
    key: String,
    removed: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PositionJ {
    offset: u64,
    epoch: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryJ {
    channel: String,
    limit: i32,
    since: Option<PositionJ>,
    reverse: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DataJ<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    method: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenJ {
    token: String,
    channel: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubRefreshJ {
    token: String,
    channel: String,
    r#type: i32,
    track: Vec<TrackBatchJ>,
    untrack: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TrackBatchJ {
    signature: String,
    items: Vec<KeyedItemJ>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyedItemJ {
    key: String,
    version: u64,
}

fn parse<'a, T: Deserialize<'a>>(r: &'a RawValue) -> Result<T, BadFrame> {
    serde_json::from_str(r.get()).map_err(|_| BadFrame)
}

fn not_null(r: Option<&RawValue>) -> Option<&RawValue> {
    r.filter(|r| r.get() != "null")
}

/// Decodes one command object.
pub fn decode_command(line: &[u8]) -> Result<Cmd, BadFrame> {
    let env: Envelope = serde_json::from_slice(line).map_err(|_| BadFrame)?;
    let id = env.id;
    let req = if let Some(r) = not_null(env.connect) {
        let c: ConnectJ = parse(r)?;
        Req::Connect(ConnectReq {
            token: c.token,
            data: raw(c.data),
            subs: c
                .subs
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, SubRecover { recover: v.recover, offset: v.offset, epoch: v.epoch }))
                .collect(),
            name: c.name,
            version: c.version,
            headers: c.headers.unwrap_or_default().into_iter().collect(),
        })
    } else if let Some(r) = not_null(env.subscribe) {
        let s: SubscribeJ = parse(r)?;
        Req::Subscribe(SubscribeReq {
            channel: s.channel,
            token: s.token,
            recover: s.recover,
            epoch: s.epoch,
            offset: s.offset,
            data: raw(s.data),
            positioned: s.positioned,
            recoverable: s.recoverable,
            join_leave: s.join_leave,
            delta: s.delta,
            tf: s.tf.map(FilterJ::into_node),
            flag: s.flag,
            kind: s.r#type,
            phase: s.phase,
            cursor: s.cursor,
            limit: s.limit,
        })
    } else if let Some(r) = not_null(env.unsubscribe) {
        Req::Unsubscribe { channel: parse::<ChannelJ>(r)?.channel }
    } else if let Some(r) = not_null(env.publish) {
        let p: PublishJ = parse(r)?;
        let data = raw(p.data).unwrap_or_else(|| Bytes::from_static(b"null"));
        if p.r#type == 1 {
            Req::MapPublish { channel: p.channel, data, key: p.key, removed: p.removed }
        } else {
            Req::Publish { channel: p.channel, data }
        }
    } else if let Some(r) = not_null(env.presence) {
        Req::Presence { channel: parse::<ChannelJ>(r)?.channel }
    } else if let Some(r) = not_null(env.presence_stats) {
        Req::PresenceStats { channel: parse::<ChannelJ>(r)?.channel }
    } else if let Some(r) = not_null(env.history) {
        let h: HistoryJ = parse(r)?;
        Req::History(HistoryReq {
            channel: h.channel,
            limit: h.limit,
            since: h.since.map(|s| StreamPosition { offset: s.offset, epoch: s.epoch.into() }),
            reverse: h.reverse,
        })
    } else if not_null(env.ping).is_some() {
        Req::Ping
    } else if let Some(r) = not_null(env.send) {
        Req::Send { data: raw(parse::<DataJ>(r)?.data).unwrap_or_else(|| Bytes::from_static(b"null")) }
    } else if let Some(r) = not_null(env.rpc) {
        let d: DataJ = parse(r)?;
        Req::Rpc { method: d.method, data: raw(d.data).unwrap_or_else(|| Bytes::from_static(b"null")) }
    } else if let Some(r) = not_null(env.refresh) {
        Req::Refresh { token: parse::<TokenJ>(r)?.token }
    } else if let Some(r) = not_null(env.sub_refresh) {
        let t: SubRefreshJ = parse(r)?;
        let track = t
            .track
            .into_iter()
            .map(|b| TrackBatch {
                signature: b.signature,
                items: b.items.into_iter().map(|i| (i.key, i.version)).collect(),
            })
            .collect();
        Req::SubRefresh { channel: t.channel, token: t.token, kind: t.r#type, track, untrack: t.untrack }
    } else if id == 0 {
        Req::Pong
    } else {
        Req::Unknown
    };
    Ok(Cmd { id, req })
}

/// Decodes every `\n`-separated command of a text frame. No commands → [`BadFrame`].
pub fn decode(frame: &[u8]) -> Result<Vec<Cmd>, BadFrame> {
    let mut out = Vec::new();
    for line in frame.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        out.push(decode_command(line)?);
    }
    if out.is_empty() {
        return Err(BadFrame);
    }
    Ok(out)
}

fn field_sep(out: &mut Vec<u8>, first: &mut bool) {
    if !std::mem::take(first) {
        out.push(b',');
    }
}

fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    field_sep(out, first);
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `"k":true` when set (omitempty).
fn opt_true(out: &mut Vec<u8>, first: &mut bool, k: &str, v: bool) {
    if v {
        key(out, first, k);
        out.extend_from_slice(b"true");
    }
}

/// `"k":N` when non-zero (omitempty).
fn opt_uint(out: &mut Vec<u8>, first: &mut bool, k: &str, v: u64) {
    if v > 0 {
        key(out, first, k);
        int(out, v);
    }
}

/// `"k":"v"` when non-empty (omitempty).
fn opt_int(out: &mut Vec<u8>, first: &mut bool, k: &str, v: i64) {
    if v != 0 {
        key(out, first, k);
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

fn opt_str(out: &mut Vec<u8>, first: &mut bool, k: &str, v: &str) {
    if !v.is_empty() {
        key(out, first, k);
        string(out, v);
    }
}

/// `"k":<raw JSON>` when the payload is present and not empty (omitempty).
fn opt_raw(out: &mut Vec<u8>, first: &mut bool, k: &str, v: Option<&[u8]>) {
    if let Some(v) = v.filter(|v| !v.is_empty()) {
        key(out, first, k);
        encode::raw_json(out, v);
    }
}

/// `[p1,p2,..]`.
fn publications(out: &mut Vec<u8>, pubs: &[Publication]) {
    out.push(b'[');
    for (i, p) in pubs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        publication(out, p);
    }
    out.push(b']');
}

/// `{"expires":true,"ttl":N}` with both fields omitted when empty.
fn expires_ttl(out: &mut Vec<u8>, expires: bool, ttl: u32) {
    out.push(b'{');
    let mut first = true;
    opt_true(out, &mut first, "expires", expires);
    opt_uint(out, &mut first, "ttl", ttl as u64);
    out.push(b'}');
}

/// A publication as clients see it: `{"data":..?,"info":..?,"offset":N?,"tags":{..}?}`, each
/// field omitted when empty.
pub fn publication(out: &mut Vec<u8>, p: &Publication) {
    publication_with(out, p, false)
}

/// [`publication`], with `"delta":true` when `delta` (its data is a fossil delta).
fn publication_with(out: &mut Vec<u8>, p: &Publication, delta: bool) {
    out.push(b'{');
    let mut first = true;
    opt_raw(out, &mut first, "data", Some(&p.data.bytes));
    if let Some(info) = &p.info {
        key(out, &mut first, "info");
        encode::client_info(out, info);
    }
    opt_uint(out, &mut first, "offset", p.offset);
    if let Some(t) = p.tags.as_ref().filter(|t| !t.is_empty()) {
        key(out, &mut first, "tags");
        encode::tags(out, t);
    }
    opt_true(out, &mut first, "delta", delta);
    opt_str(out, &mut first, "key", p.key.as_deref().unwrap_or_default());
    opt_true(out, &mut first, "removed", p.removed);
    out.push(b'}');
}

/// A shared poll update: `{"data":..,"key":"k","version":3}`, `{"key":"k","removed":true}`.
fn keyed_pub(out: &mut Vec<u8>, k: &KeyedPub) {
    out.push(b'{');
    let mut first = true;
    opt_raw(out, &mut first, "data", k.data.as_ref().map(|d| &d.bytes[..]));
    opt_true(out, &mut first, "delta", k.delta);
    opt_str(out, &mut first, "key", &k.key);
    opt_true(out, &mut first, "removed", k.data.is_none());
    opt_str(out, &mut first, "epoch", &k.epoch);
    opt_uint(out, &mut first, "version", k.version);
    out.push(b'}');
}

fn subscribe_result(out: &mut Vec<u8>, r: &SubscribeResult) {
    out.push(b'{');
    let mut first = true;
    opt_true(out, &mut first, "expires", r.expires);
    opt_uint(out, &mut first, "ttl", r.ttl as u64);
    opt_true(out, &mut first, "recoverable", r.recoverable);
    opt_str(out, &mut first, "epoch", &r.epoch);
    if !r.publications.is_empty() {
        key(out, &mut first, "publications");
        publications(out, &r.publications);
    }
    opt_true(out, &mut first, "recovered", r.recovered);
    opt_uint(out, &mut first, "offset", r.offset);
    opt_true(out, &mut first, "positioned", r.positioned);
    opt_raw(out, &mut first, "data", r.data.as_deref());
    opt_true(out, &mut first, "was_recovering", r.was_recovering);
    opt_true(out, &mut first, "delta", r.delta);
    opt_uint(out, &mut first, "type", r.kind as u64);
    opt_uint(out, &mut first, "phase", r.phase as u64);
    opt_str(out, &mut first, "cursor", &r.cursor);
    if !r.state.is_empty() {
        key(out, &mut first, "state");
        publications(out, &r.state);
    }
    out.push(b'}');
}

/// The field name of a reply's body (`connect`, `subscribe`, ...).
fn body_name(b: &ReplyBody) -> &'static str {
    match b {
        ReplyBody::Connect(_) => "connect",
        ReplyBody::Subscribe(_) => "subscribe",
        ReplyBody::Unsubscribe => "unsubscribe",
        ReplyBody::Publish => "publish",
        ReplyBody::Ping => "ping",
        ReplyBody::Presence(_) => "presence",
        ReplyBody::PresenceStats { .. } => "presence_stats",
        ReplyBody::History { .. } => "history",
        ReplyBody::Rpc { .. } => "rpc",
        ReplyBody::Refresh { .. } => "refresh",
        ReplyBody::SubRefresh { .. } => "sub_refresh",
    }
}

fn body(out: &mut Vec<u8>, b: &ReplyBody) {
    key(out, &mut true, body_name(b));
    body_value(out, b);
}

/// A reply's body object (the value of its field in [`encode_reply`]; the older protocol's
/// `result`).
pub(super) fn body_value(out: &mut Vec<u8>, b: &ReplyBody) {
    match b {
        ReplyBody::Connect(c) => {
            out.extend_from_slice(b"{");
            let mut first = true;
            opt_str(out, &mut first, "client", &c.client);
            opt_str(out, &mut first, "version", &c.version);
            opt_true(out, &mut first, "expires", c.expires);
            opt_uint(out, &mut first, "ttl", c.ttl as u64);
            opt_raw(out, &mut first, "data", c.data.as_deref());
            connect_subs(out, &mut first, c);
            opt_uint(out, &mut first, "ping", c.ping as u64);
            opt_true(out, &mut first, "pong", c.pong);
            opt_str(out, &mut first, "session", &c.session);
            opt_str(out, &mut first, "node", &c.node);
            opt_int(out, &mut first, "time", c.time);
            out.push(b'}');
        }
        ReplyBody::Subscribe(r) => {
            subscribe_result(out, r);
        }
        ReplyBody::Unsubscribe => out.extend_from_slice(b"{}"),
        ReplyBody::Publish => out.extend_from_slice(b"{}"),
        ReplyBody::Ping => out.extend_from_slice(b"{}"),
        ReplyBody::Presence(clients) => {
            out.extend_from_slice(b"{\"presence\":{");
            for (i, c) in clients.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, &c.client);
                out.push(b':');
                encode::client_info(out, c);
            }
            out.extend_from_slice(b"}}");
        }
        ReplyBody::PresenceStats { num_clients, num_users } => {
            // Both counts are always written, zero included.
            out.extend_from_slice(b"{\"num_clients\":");
            int(out, *num_clients as u64);
            out.extend_from_slice(b",\"num_users\":");
            int(out, *num_users as u64);
            out.push(b'}');
        }
        ReplyBody::History { publications: pubs, position } => {
            // Publications (`[]` when none), epoch and offset are always written.
            out.extend_from_slice(b"{\"publications\":");
            publications(out, pubs);
            out.extend_from_slice(b",\"epoch\":");
            string(out, &position.epoch);
            out.extend_from_slice(b",\"offset\":");
            int(out, position.offset);
            out.push(b'}');
        }
        ReplyBody::Rpc { data } => {
            out.extend_from_slice(b"{");
            opt_raw(out, &mut true, "data", data.as_deref());
            out.push(b'}');
        }
        ReplyBody::Refresh { client, version, expires, ttl } => {
            out.extend_from_slice(b"{");
            let mut first = true;
            opt_str(out, &mut first, "client", client);
            opt_str(out, &mut first, "version", version);
            opt_true(out, &mut first, "expires", *expires);
            opt_uint(out, &mut first, "ttl", *ttl as u64);
            out.push(b'}');
        }
        ReplyBody::SubRefresh { expires, ttl } => {
            expires_ttl(out, *expires, *ttl);
        }
    }
}

/// `{"id":N,"<method>":{..}}` or `{"id":N,"error":{..}}`.
pub fn encode_reply(id: u32, reply: &Result<ReplyBody, ApiError>, out: &mut Vec<u8>) {
    out.push(b'{');
    if id > 0 {
        out.extend_from_slice(b"\"id\":");
        int(out, id as u64);
        out.push(b',');
    }
    match reply {
        Ok(b) => body(out, b),
        Err(e) => {
            out.extend_from_slice(b"\"error\":");
            encode::error(out, e);
        }
    }
    out.push(b'}');
}

/// `{"push":{"channel":"c","pub":{..}}}` and the other push kinds.
pub fn encode_push(channel: &str, push: &PushBody, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"push\":");
    encode_bare_push(channel, push, out);
    out.push(b'}');
}

/// Appends one push as the bare `Push` object the unidirectional transports send
/// (`{"channel":"c","pub":{..}}`, `{"connect":{..}}`, `{}` for a ping is not a push).
pub fn encode_bare_push(channel: &str, push: &PushBody, out: &mut Vec<u8>) {
    out.push(b'{');
    if push.has_channel() && !channel.is_empty() {
        out.extend_from_slice(b"\"channel\":");
        string(out, channel);
        out.push(b',');
    }
    key(out, &mut true, push_name(push));
    push_value(out, push);
    out.push(b'}');
}

/// The field name of a push's body (`pub`, `join`, ...).
fn push_name(push: &PushBody) -> &'static str {
    match push {
        PushBody::Pub(_) | PushBody::Keyed(_) | PushBody::Delta(_) => "pub",
        PushBody::Join(_) => "join",
        PushBody::Leave(_) => "leave",
        PushBody::Unsubscribe { .. } => "unsubscribe",
        PushBody::Subscribe { .. } => "subscribe",
        PushBody::Message { .. } => "message",
        PushBody::Refresh { .. } => "refresh",
        PushBody::Disconnect { .. } => "disconnect",
        PushBody::Connect(_) => "connect",
    }
}

/// A push's body object (the value of its field in [`encode_bare_push`]; the older
/// protocol's push `data`).
pub(super) fn push_value(out: &mut Vec<u8>, push: &PushBody) {
    match push {
        PushBody::Pub(p) => {
            publication(out, p);
        }
        PushBody::Delta(p) => {
            publication_with(out, p, true);
        }
        PushBody::Keyed(k) => keyed_pub(out, k),
        PushBody::Join(info) | PushBody::Leave(info) => {
            out.extend_from_slice(b"{\"info\":");
            encode::client_info(out, info);
            out.push(b'}');
        }
        PushBody::Unsubscribe { code, reason } => {
            out.extend_from_slice(b"{");
            let mut first = true;
            opt_uint(out, &mut first, "code", *code as u64);
            opt_str(out, &mut first, "reason", reason);
            out.push(b'}');
        }
        PushBody::Subscribe { recoverable, epoch, offset, positioned, data } => {
            let r = SubscribeResult {
                recoverable: *recoverable,
                epoch: epoch.clone(),
                offset: *offset,
                positioned: *positioned,
                data: data.clone(),
                ..Default::default()
            };
            subscribe_result(out, &r);
        }
        PushBody::Message { data } => {
            out.extend_from_slice(b"{");
            opt_raw(out, &mut true, "data", Some(data));
            out.push(b'}');
        }
        PushBody::Refresh { expires, ttl } => {
            expires_ttl(out, *expires, *ttl);
        }
        PushBody::Disconnect { code, reason, reconnect } => {
            out.extend_from_slice(b"{");
            let mut first = true;
            opt_uint(out, &mut first, "code", *code as u64);
            opt_str(out, &mut first, "reason", reason);
            opt_true(out, &mut first, "reconnect", *reconnect);
            out.push(b'}');
        }
        PushBody::Connect(c) => {
            // The `Connect` push of the unidirectional transports (its fields in the order
            // of the protocol's `Connect` message).
            out.extend_from_slice(b"{");
            let mut first = true;
            opt_str(out, &mut first, "client", &c.client);
            opt_str(out, &mut first, "version", &c.version);
            opt_raw(out, &mut first, "data", c.data.as_deref());
            connect_subs(out, &mut first, c);
            opt_true(out, &mut first, "expires", c.expires);
            opt_uint(out, &mut first, "ttl", c.ttl as u64);
            opt_uint(out, &mut first, "ping", c.ping as u64);
            opt_true(out, &mut first, "pong", c.pong);
            opt_str(out, &mut first, "session", &c.session);
            opt_str(out, &mut first, "node", &c.node);
            opt_int(out, &mut first, "time", c.time);
            out.push(b'}');
        }
    }
}

fn connect_subs(out: &mut Vec<u8>, first: &mut bool, c: &ConnectResult) {
    if c.subs.is_empty() {
        return;
    }
    key(out, first, "subs");
    out.push(b'{');
    for (i, (ch, r)) in c.subs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, ch);
        out.push(b':');
        subscribe_result(out, r);
    }
    out.push(b'}');
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
