//! Protobuf format of the client protocol: Centrifugo's `client.proto` (package
//! `centrifugal.centrifuge.protocol`), one or more varint-length-prefixed messages per binary
//! WebSocket frame.
//!
//! Commands are decoded with the prost messages in [`proto`]. Replies and pushes are written
//! directly from the internal model with prost's wire primitives instead: building owned prost
//! messages would copy every channel, user and tag string once more per reply or push.

use bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message as _;

use super::*;
use crate::model::Payload;

/// The subset of `client.proto` this server reads and writes, field numbers as upstream.
/// Fields the server never uses (dictionaries, map subscriptions, ...) are left
/// out: prost skips them as unknown fields when decoding.
#[path = "pb_proto.rs"]
pub mod proto;

// ---- decoding ----

/// Decodes every length-prefixed `Command` in one frame.
pub fn decode(frame: &[u8]) -> Result<Vec<Cmd>, BadFrame> {
    if frame.is_empty() {
        return Err(BadFrame);
    }
    let mut rest = frame;
    let mut cmds = Vec::new();
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest).map_err(|_| BadFrame)?;
        if len > rest.len() as u64 {
            return Err(BadFrame);
        }
        let (msg, tail) = rest.split_at(len as usize);
        rest = tail;
        let cmd = proto::Command::decode(msg).map_err(|_| BadFrame)?;
        cmds.push(to_cmd(cmd));
    }
    Ok(cmds)
}

/// Decodes one `ConnectRequest` message (the request of the unidirectional gRPC stream).
pub fn decode_connect_request(body: &[u8]) -> Result<ConnectReq, BadFrame> {
    let r = proto::ConnectRequest::decode(body).map_err(|_| BadFrame)?;
    match to_cmd(proto::Command { id: 1, connect: Some(r), ..Default::default() }).req {
        Req::Connect(c) => Ok(c),
        _ => Err(BadFrame),
    }
}

/// proto3 cannot tell an empty `bytes` field from an absent one; both mean "no data".
fn opt_bytes(b: Bytes) -> Option<Bytes> {
    (!b.is_empty()).then_some(b)
}

pub(super) fn to_cmd(c: proto::Command) -> Cmd {
    let req = if let Some(r) = c.connect {
        Req::Connect(ConnectReq {
            token: r.token,
            data: opt_bytes(r.data),
            subs: r
                .subs
                .into_iter()
                .map(|(ch, s)| (ch, SubRecover { recover: s.recover, offset: s.offset, epoch: s.epoch }))
                .collect(),
            name: r.name,
            version: r.version,
            headers: r.headers.into_iter().collect(),
        })
    } else if let Some(r) = c.subscribe {
        Req::Subscribe(SubscribeReq {
            channel: r.channel,
            token: r.token,
            recover: r.recover,
            epoch: r.epoch,
            offset: r.offset,
            data: opt_bytes(r.data),
            positioned: r.positioned,
            recoverable: r.recoverable,
            join_leave: r.join_leave,
            delta: r.delta,
            tf: r.tf.map(crate::filter::PbFilterNode::into_node),
            flag: r.flag,
            kind: r.r#type,
            phase: r.phase,
            cursor: r.cursor,
            limit: r.limit,
        })
    } else if let Some(r) = c.unsubscribe {
        Req::Unsubscribe { channel: r.channel }
    } else if let Some(r) = c.publish {
        if r.r#type == 1 {
            Req::MapPublish { channel: r.channel, data: r.data, key: r.key, removed: r.removed }
        } else {
            Req::Publish { channel: r.channel, data: r.data }
        }
    } else if let Some(r) = c.presence {
        Req::Presence { channel: r.channel }
    } else if let Some(r) = c.presence_stats {
        Req::PresenceStats { channel: r.channel }
    } else if let Some(r) = c.history {
        Req::History(HistoryReq {
            channel: r.channel,
            limit: r.limit,
            since: r.since.map(|p| StreamPosition { offset: p.offset, epoch: p.epoch.into() }),
            reverse: r.reverse,
        })
    } else if c.ping.is_some() {
        Req::Ping
    } else if let Some(r) = c.send {
        Req::Send { data: r.data }
    } else if let Some(r) = c.rpc {
        Req::Rpc { method: r.method, data: r.data }
    } else if let Some(r) = c.refresh {
        Req::Refresh { token: r.token }
    } else if let Some(r) = c.sub_refresh {
        let track = r
            .track
            .into_iter()
            .map(|b| TrackBatch {
                signature: b.signature,
                items: b.items.into_iter().map(|i| (i.key, i.version)).collect(),
            })
            .collect();
        Req::SubRefresh { channel: r.channel, token: r.token, kind: r.r#type, track, untrack: r.untrack }
    } else if c.id == 0 {
        Req::Pong
    } else {
        Req::Unknown
    };
    Cmd { id: c.id, req }
}

// ---- encoding ----
//
// Fields holding their proto3 default are omitted, as upstream does; empty result messages
// (`unsubscribe`, `publish`, `ping`) are still written, zero-length, since the field's presence
// is what marks the reply's kind.

pub(super) fn put_u64(out: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

pub(super) fn put_bool(out: &mut Vec<u8>, tag: u32, v: bool) {
    put_u64(out, tag, v as u64);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, tag: u32, v: &[u8]) {
    if !v.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(v.len() as u64, out);
        out.extend_from_slice(v);
    }
}

pub(super) fn put_str(out: &mut Vec<u8>, tag: u32, v: &str) {
    put_bytes(out, tag, v.as_bytes());
}

/// Writes `body` prefixed by its varint length. The length is unknown until the body is written,
/// so one byte is reserved and the body is shifted when it turns out longer than 127 bytes: one
/// memmove per nesting level, cheaper than a sizing pass over every message and its strings.
pub(super) fn delimited(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let n = encoded_len_varint(len as u64);
    out.resize(out.len() + n - 1, 0);
    out.copy_within(at + 1..at + 1 + len, at + n);
    let mut prefix = &mut out[at..at + n];
    encode_varint(len as u64, &mut prefix);
}

/// A nested message field, written even when empty.
pub(super) fn put_msg(out: &mut Vec<u8>, tag: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, out);
    delimited(out, body);
}

fn client_info(out: &mut Vec<u8>, i: &ClientInfo) {
    put_str(out, 1, &i.user);
    put_str(out, 2, &i.client);
    put_bytes(out, 3, i.conn_info.as_deref().unwrap_or_default());
    put_bytes(out, 4, i.chan_info.as_deref().unwrap_or_default());
}

fn publication(out: &mut Vec<u8>, p: &Publication) {
    let Payload { bytes, .. } = &p.data;
    put_bytes(out, 4, bytes);
    if let Some(info) = &p.info {
        put_msg(out, 5, |out| client_info(out, info));
    }
    put_u64(out, 6, p.offset);
    for (k, v) in p.tags.iter().flat_map(|t| t.iter()) {
        // A map entry is a message with the key as field 1 and the value as field 2.
        put_msg(out, 7, |out| {
            put_str(out, 1, k);
            put_str(out, 2, v);
        });
    }
    put_str(out, 11, p.key.as_deref().unwrap_or_default());
    put_bool(out, 12, p.removed);
}

fn subscribe_result(out: &mut Vec<u8>, r: &SubscribeResult) {
    put_bool(out, 1, r.expires);
    put_u64(out, 2, r.ttl.into());
    put_bool(out, 3, r.recoverable);
    put_str(out, 6, &r.epoch);
    for p in &r.publications {
        put_msg(out, 7, |out| publication(out, p));
    }
    put_bool(out, 8, r.recovered);
    put_u64(out, 9, r.offset);
    put_bool(out, 10, r.positioned);
    put_bytes(out, 11, r.data.as_deref().unwrap_or_default());
    put_bool(out, 12, r.was_recovering);
    put_bool(out, 13, r.delta);
    put_u64(out, 15, r.kind as u64);
    put_u64(out, 16, r.phase as u64);
    put_str(out, 17, &r.cursor);
    for p in &r.state {
        put_msg(out, 18, |out| publication(out, p));
    }
}

fn connect_result(out: &mut Vec<u8>, r: &ConnectResult) {
    put_str(out, 1, &r.client);
    put_str(out, 2, &r.version);
    put_bool(out, 3, r.expires);
    put_u64(out, 4, r.ttl.into());
    put_bytes(out, 5, r.data.as_deref().unwrap_or_default());
    for (ch, sub) in &r.subs {
        put_msg(out, 6, |out| {
            put_str(out, 1, ch);
            put_msg(out, 2, |out| subscribe_result(out, sub));
        });
    }
    put_u64(out, 7, r.ping.into());
    put_bool(out, 8, r.pong);
    put_str(out, 9, &r.session);
    put_str(out, 10, &r.node);
    put_u64(out, 11, r.time as u64);
}

/// The `Connect` push message (its own field numbers, unlike `ConnectResult`).
fn connect_push(out: &mut Vec<u8>, r: &ConnectResult) {
    put_str(out, 1, &r.client);
    put_str(out, 2, &r.version);
    put_bytes(out, 3, r.data.as_deref().unwrap_or_default());
    for (ch, sub) in &r.subs {
        put_msg(out, 4, |out| {
            put_str(out, 1, ch);
            put_msg(out, 2, |out| subscribe_result(out, sub));
        });
    }
    put_bool(out, 5, r.expires);
    put_u64(out, 6, r.ttl.into());
    put_u64(out, 7, r.ping.into());
    put_bool(out, 8, r.pong);
    put_str(out, 9, &r.session);
    put_str(out, 10, &r.node);
    put_u64(out, 11, r.time as u64);
}

/// Appends one length-prefixed `Reply` to command `id`.
pub fn encode_reply(id: u32, reply: &Result<ReplyBody, ApiError>, out: &mut Vec<u8>) {
    delimited(out, |out| {
        put_u64(out, 1, id.into());
        let body = match reply {
            Ok(body) => body,
            Err(e) => {
                put_msg(out, 2, |out| {
                    put_u64(out, 1, e.code.into());
                    put_str(out, 2, e.message);
                    put_bool(out, 3, e.temporary);
                });
                return;
            }
        };
        put_msg(out, reply_tag(body), |out| body_fields(out, body));
    });
}

/// The field number of a reply body in `Reply`.
fn reply_tag(b: &ReplyBody) -> u32 {
    match b {
        ReplyBody::Connect(_) => 5,
        ReplyBody::Subscribe(_) => 6,
        ReplyBody::Unsubscribe => 7,
        ReplyBody::Publish => 8,
        ReplyBody::Presence(_) => 9,
        ReplyBody::PresenceStats { .. } => 10,
        ReplyBody::History { .. } => 11,
        ReplyBody::Ping => 12,
        ReplyBody::Rpc { .. } => 13,
        ReplyBody::Refresh { .. } => 14,
        ReplyBody::SubRefresh { .. } => 15,
    }
}

/// A reply body's fields (the message the older protocol carries as `result` bytes).
pub(super) fn body_fields(out: &mut Vec<u8>, body: &ReplyBody) {
    match body {
        ReplyBody::Connect(r) => connect_result(out, r),
        ReplyBody::Subscribe(r) => subscribe_result(out, r),
        ReplyBody::Unsubscribe => {}
        ReplyBody::Publish => {}
        ReplyBody::Presence(clients) => {
            for c in clients {
                put_msg(out, 1, |out| {
                    put_str(out, 1, &c.client);
                    put_msg(out, 2, |out| client_info(out, c));
                });
            }
        }
        ReplyBody::PresenceStats { num_clients, num_users } => {
            put_u64(out, 1, (*num_clients).into());
            put_u64(out, 2, (*num_users).into());
        }
        ReplyBody::History { publications, position } => {
            for p in publications {
                put_msg(out, 1, |out| publication(out, p));
            }
            put_str(out, 2, &position.epoch);
            put_u64(out, 3, position.offset);
        }
        ReplyBody::Ping => {}
        ReplyBody::Rpc { data } => {
            put_bytes(out, 1, data.as_deref().unwrap_or_default());
        }
        ReplyBody::Refresh { client, version, expires, ttl } => {
            put_str(out, 1, client);
            put_str(out, 2, version);
            put_bool(out, 3, *expires);
            put_u64(out, 4, (*ttl).into());
        }
        ReplyBody::SubRefresh { expires, ttl } => {
            put_bool(out, 1, *expires);
            put_u64(out, 2, (*ttl).into());
        }
    }
}

/// Appends one length-prefixed `Reply` carrying a `Push`. `channel` is written only for the
/// channel-scoped pushes; message, refresh and disconnect concern the whole connection.
pub fn encode_push(channel: &str, push: &PushBody, out: &mut Vec<u8>) {
    delimited(out, |out| put_msg(out, 4, |out| encode_bare_push(channel, push, out)));
}

/// Appends one bare `Push` message, not length-prefixed (one gRPC message of the
/// unidirectional gRPC stream).
pub fn encode_bare_push(channel: &str, push: &PushBody, out: &mut Vec<u8>) {
    if push.has_channel() {
        put_str(out, 2, channel);
    }
    put_msg(out, push_tag(push), |out| push_fields(out, push));
}

/// The field number of a push body in `Push`.
fn push_tag(push: &PushBody) -> u32 {
    match push {
        PushBody::Pub(_) | PushBody::Keyed(_) | PushBody::Delta(_) => 4,
        PushBody::Join(_) => 5,
        PushBody::Leave(_) => 6,
        PushBody::Unsubscribe { .. } => 7,
        PushBody::Message { .. } => 8,
        PushBody::Subscribe { .. } => 9,
        PushBody::Connect(_) => 10,
        PushBody::Disconnect { .. } => 11,
        PushBody::Refresh { .. } => 12,
    }
}

/// A push body's fields (the message the older protocol carries as the push's `data`).
pub(super) fn push_fields(out: &mut Vec<u8>, push: &PushBody) {
    match push {
        PushBody::Pub(p) => publication(out, p),
        PushBody::Keyed(k) => {
            if let Some(d) = &k.data {
                put_bytes(out, 4, &d.bytes);
            }
            put_bool(out, 8, k.delta);
            put_str(out, 11, &k.key);
            put_bool(out, 12, k.data.is_none());
            put_str(out, 14, &k.epoch);
            put_u64(out, 16, k.version);
        }
        PushBody::Delta(p) => {
            publication(out, p);
            put_bool(out, 8, true);
        }
        PushBody::Join(info) | PushBody::Leave(info) => put_msg(out, 1, |out| client_info(out, info)),
        PushBody::Unsubscribe { code, reason } => {
            put_u64(out, 2, (*code).into());
            put_str(out, 3, reason);
        }
        PushBody::Message { data } => put_bytes(out, 1, data),
        PushBody::Subscribe { recoverable, epoch, offset, positioned, data } => {
            put_bool(out, 1, *recoverable);
            put_str(out, 4, epoch);
            put_u64(out, 5, *offset);
            put_bool(out, 6, *positioned);
            put_bytes(out, 7, data.as_deref().unwrap_or_default());
        }
        PushBody::Disconnect { code, reason, reconnect } => {
            put_u64(out, 1, (*code).into());
            put_str(out, 2, reason);
            put_bool(out, 3, *reconnect);
        }
        PushBody::Refresh { expires, ttl } => {
            put_bool(out, 1, *expires);
            put_u64(out, 2, (*ttl).into());
        }
        PushBody::Connect(c) => connect_push(out, c),
    }
}

#[cfg(test)]
#[path = "pb_tests.rs"]
mod tests;
