//! The older client protocol that Centrifugo 2.x and 3.x spoke (`centrifuge-js` 2.x and the
//! SDKs of that era; "protocol v1" in Centrifugo 4's terms), decoded into the same [`Cmd`]s and
//! encoded from the same [`ReplyBody`]/[`PushBody`] as today's protocol.
//!
//! - Commands name their method with an integer (`method`, absent for connect) and carry its
//!   request in `params`: `{"id":2,"method":1,"params":{"channel":"news"}}`; in protobuf a
//!   `Command { id = 1; method = 2; params = 3 (bytes) }`, the request messages having the
//!   field numbers today's requests still have.
//! - Replies carry their body as `result`: `{"id":2,"result":{..}}` / `{"id":2,"error":{..}}`;
//!   in protobuf `Reply { id = 1; error = 2; result = 3 (bytes) }`.
//! - Pushes are replies without id whose `result` is a `Push { type, channel, data }`, the type
//!   an integer (publication 0, join 1, leave 2, unsubscribe 3, message 4, subscribe 5, ...),
//!   `data` the push's body (raw JSON; bytes in protobuf).
//! - The server sends no pings; clients ping with the `ping` command (method 7).
//! - A close carries that era's codes, its reason a JSON object `{"reason":..,"reconnect":..}`.
//!
//! A WebSocket client is recognised by its first message ([`is_v1`]): today's clients name
//! the command (`"connect":{..}`, protobuf fields 4 and up), older ones send `method`/`params`
//! (protobuf fields 2 and 3) or only an id.

use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::pb::{delimited, proto, put_bool, put_bytes, put_msg, put_str, put_u64};
use super::{json, pb, BadFrame, Cmd, Format, PushBody, ReplyBody, Req};
use crate::error::{ApiError, Disconnect};

/// The command names of the method numbers (the `MethodType` enum of that protocol).
const METHODS: [&str; 12] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
];

/// The `method` of a JSON command: its number, or (as protobuf's JSON mapping allows) its
/// enum name.
#[derive(Deserialize)]
#[serde(untagged)]
enum MethodJ {
    Num(u64),
    Name(String),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CommandJ<'a> {
    id: u32,
    method: Option<MethodJ>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// The method number of a name (`"subscribe"` or `"SUBSCRIBE"`).
fn method_of_name(name: &str) -> Option<usize> {
    METHODS.iter().position(|m| m.eq_ignore_ascii_case(name))
}

/// Whether the first message of a WebSocket connection is in the older protocol (see the
/// module docs). A message that is not a command at all is left to today's decoder, which
/// refuses it.
pub fn is_v1(format: Format, frame: &[u8]) -> bool {
    match format {
        Format::Json => {
            let line = frame.split(|&b| b == b'\n').map(<[u8]>::trim_ascii).find(|l| !l.is_empty());
            let Some(line) = line else { return false };
            let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) else {
                return false;
            };
            if map.contains_key("method") || map.contains_key("params") {
                return true;
            }
            // Only an id: an older connect without params (today's clients name the command).
            map.keys().all(|k| k == "id") && map.contains_key("id")
        }
        Format::Protobuf => {
            let mut rest = frame;
            let Ok(len) = prost::encoding::decode_varint(&mut rest) else { return false };
            if len > rest.len() as u64 {
                return false;
            }
            let mut msg = &rest[..len as usize];
            let mut only_id = true;
            while !msg.is_empty() {
                let Ok((tag, wire)) = prost::encoding::decode_key(&mut msg) else { return false };
                if tag == 2 || tag == 3 {
                    return true;
                }
                if tag != 1 {
                    only_id = false;
                }
                let ctx = prost::encoding::DecodeContext::default();
                if prost::encoding::skip_field(wire, tag, &mut msg, ctx).is_err() {
                    return false;
                }
            }
            only_id
        }
    }
}

/// Decodes every command of one message in the older protocol. A method number the protocol
/// does not have becomes [`Req::Unknown`] (answered "method not found"); malformed input is a
/// [`BadFrame`].
pub fn decode(format: Format, frame: &[u8]) -> Result<Vec<Cmd>, BadFrame> {
    match format {
        Format::Json => decode_json(frame),
        Format::Protobuf => decode_pb(frame),
    }
}

fn decode_json(frame: &[u8]) -> Result<Vec<Cmd>, BadFrame> {
    let mut out = Vec::new();
    for line in frame.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if line.first() != Some(&b'{') {
            // (serde would take an array as the struct's fields in order.)
            return Err(BadFrame);
        }
        let c: CommandJ = serde_json::from_slice(line).map_err(|_| BadFrame)?;
        let method = match c.method {
            None => Some(0),
            Some(MethodJ::Num(n)) => (n < METHODS.len() as u64).then_some(n as usize),
            Some(MethodJ::Name(n)) => method_of_name(&n),
        };
        let Some(method) = method else {
            out.push(Cmd { id: c.id, req: Req::Unknown });
            continue;
        };
        let params = c.params.map(RawValue::get).filter(|p| *p != "null").unwrap_or("{}");
        if !params.starts_with('{') {
            return Err(BadFrame);
        }
        // Today's envelope of the same request: `{"id":N,"<method>":<params>}`.
        let mut env = Vec::with_capacity(params.len() + 32);
        env.extend_from_slice(b"{\"id\":");
        env.extend_from_slice(c.id.to_string().as_bytes());
        env.extend_from_slice(b",\"");
        env.extend_from_slice(METHODS[method].as_bytes());
        env.extend_from_slice(b"\":");
        env.extend_from_slice(params.as_bytes());
        env.push(b'}');
        let mut cmd = json::decode_command(&env)?;
        if let Req::Subscribe(s) = &mut cmd.req {
            // Today's options that the older protocol did not have are never asked for.
            s.delta.clear();
        }
        out.push(cmd);
    }
    if out.is_empty() {
        return Err(BadFrame);
    }
    Ok(out)
}

/// `Command` of the older protobuf protocol.
#[derive(Clone, PartialEq, prost::Message)]
struct CommandPb {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(uint32, tag = "2")]
    method: u32,
    #[prost(bytes = "bytes", tag = "3")]
    params: Bytes,
}

fn decode_pb(frame: &[u8]) -> Result<Vec<Cmd>, BadFrame> {
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
        let c = CommandPb::decode(msg).map_err(|_| BadFrame)?;
        let p = &c.params[..];
        let err = |_| BadFrame;
        let mut cmd = proto::Command { id: c.id, ..Default::default() };
        match c.method {
            0 => cmd.connect = Some(proto::ConnectRequest::decode(p).map_err(err)?),
            1 => cmd.subscribe = Some(proto::SubscribeRequest::decode(p).map_err(err)?),
            2 => cmd.unsubscribe = Some(proto::UnsubscribeRequest::decode(p).map_err(err)?),
            3 => cmd.publish = Some(proto::PublishRequest::decode(p).map_err(err)?),
            4 => cmd.presence = Some(proto::PresenceRequest::decode(p).map_err(err)?),
            5 => cmd.presence_stats = Some(proto::PresenceStatsRequest::decode(p).map_err(err)?),
            6 => cmd.history = Some(proto::HistoryRequest::decode(p).map_err(err)?),
            7 => cmd.ping = Some(proto::PingRequest::decode(p).map_err(err)?),
            8 => cmd.send = Some(proto::SendRequest::decode(p).map_err(err)?),
            9 => cmd.rpc = Some(proto::RpcRequest::decode(p).map_err(err)?),
            10 => cmd.refresh = Some(proto::RefreshRequest::decode(p).map_err(err)?),
            11 => cmd.sub_refresh = Some(proto::SubRefreshRequest::decode(p).map_err(err)?),
            _ => {
                cmds.push(Cmd { id: c.id, req: Req::Unknown });
                continue;
            }
        }
        let mut cmd = pb::to_cmd(cmd);
        if let Req::Subscribe(s) = &mut cmd.req {
            s.delta.clear();
        }
        cmds.push(cmd);
    }
    Ok(cmds)
}

/// Appends one reply (JSON without a trailing newline; the caller joins with `\n`).
pub fn encode_reply(format: Format, id: u32, reply: &Result<ReplyBody, ApiError>, out: &mut Vec<u8>) {
    match format {
        Format::Json => {
            out.push(b'{');
            if id > 0 {
                out.extend_from_slice(b"\"id\":");
                out.extend_from_slice(id.to_string().as_bytes());
                out.push(b',');
            }
            match reply {
                Ok(b) => {
                    out.extend_from_slice(b"\"result\":");
                    json::body_value(out, b);
                }
                Err(e) => {
                    out.extend_from_slice(b"\"error\":");
                    crate::wire::json::error(out, e);
                }
            }
            out.push(b'}');
        }
        Format::Protobuf => delimited(out, |out| {
            put_u64(out, 1, id.into());
            match reply {
                Ok(b) => put_msg(out, 3, |out| pb::body_fields(out, b)),
                Err(e) => put_msg(out, 2, |out| {
                    put_u64(out, 1, e.code.into());
                    put_str(out, 2, e.message);
                }),
            }
        }),
    }
}

/// The `PushType` number of a push.
fn push_type(p: &PushBody) -> u64 {
    match p {
        PushBody::Pub(_) | PushBody::Keyed(_) | PushBody::Delta(_) => 0,
        PushBody::Join(_) => 1,
        PushBody::Leave(_) => 2,
        PushBody::Unsubscribe { .. } => 3,
        PushBody::Message { .. } => 4,
        PushBody::Subscribe { .. } => 5,
        PushBody::Connect(_) => 6,
        PushBody::Disconnect { .. } => 7,
        PushBody::Refresh { .. } => 8,
    }
}

/// Appends one push: a reply without id whose `result` is the `Push`.
pub fn encode_push(format: Format, channel: &str, push: &PushBody, out: &mut Vec<u8>) {
    let ty = push_type(push);
    // Unsubscribe said only whether to subscribe again: after "insufficient state" (2500)
    // the client resubscribes and recovers.
    let resubscribe = matches!(push, PushBody::Unsubscribe { code: 2500, .. });
    match format {
        Format::Json => {
            out.extend_from_slice(b"{\"result\":{");
            if ty != 0 {
                out.extend_from_slice(b"\"type\":");
                out.extend_from_slice(ty.to_string().as_bytes());
                out.push(b',');
            }
            if push.has_channel() && !channel.is_empty() {
                out.extend_from_slice(b"\"channel\":");
                crate::wire::json::string(out, channel);
                out.push(b',');
            }
            out.extend_from_slice(b"\"data\":");
            match push {
                PushBody::Unsubscribe { .. } if resubscribe => out.extend_from_slice(b"{\"resubscribe\":true}"),
                PushBody::Unsubscribe { .. } => out.extend_from_slice(b"{}"),
                _ => json::push_value(out, push),
            }
            out.extend_from_slice(b"}}");
        }
        Format::Protobuf => delimited(out, |out| {
            put_msg(out, 3, |out| {
                put_u64(out, 1, ty);
                if push.has_channel() {
                    put_str(out, 2, channel);
                }
                let mut data = Vec::with_capacity(64);
                match push {
                    PushBody::Unsubscribe { .. } => put_bool(&mut data, 1, resubscribe),
                    _ => pb::push_fields(&mut data, push),
                }
                put_bytes(out, 3, &data);
            })
        }),
    }
}

/// The close code and reason an older client gets for `d`: that era's code, the reason as the
/// JSON advice `{"reason":"..","reconnect":..}` its SDKs read. Closes from the peer's side
/// (1000 and the codes up to 3000) keep their code and carry no reason.
pub fn close_of(d: &Disconnect) -> (u16, String) {
    if d.code <= 3000 {
        return (d.code, d.reason.to_string());
    }
    let (code, reconnect) = match d.code {
        // Centrifugo 3's own codes: the same numbers, the same meaning.
        3001 | 3004 | 3005 | 3006 | 3008 | 3009 | 3010 | 3011 => (d.code, true),
        // Reconnecting codes this era did not have: a forced reconnect.
        3012 | 3013 => (3011, true),
        3500 => (3002, false),
        3502 => (3007, false),
        3503 => (3012, false),
        3504 => (3013, false),
        3505 => (3014, false),
        3501 | 3506..=3999 => (3003, false),
        c => (c, c < 3500 || (4000..4500).contains(&c)),
    };
    let mut reason = Vec::with_capacity(48);
    reason.extend_from_slice(b"{\"reason\":");
    crate::wire::json::string(&mut reason, &d.reason);
    reason.extend_from_slice(if reconnect { b",\"reconnect\":true}" } else { b",\"reconnect\":false}" });
    (code, String::from_utf8(reason).unwrap_or_default())
}

#[cfg(test)]
#[path = "v1_tests.rs"]
mod tests;
