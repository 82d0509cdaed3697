//! The Centrifuge client protocol (v2): one internal model of client commands, replies and
//! pushes, with two wire codecs: JSON ([`json`]: newline-delimited objects in text frames) and
//! protobuf ([`pb`]: varint-length-prefixed messages in binary frames).
//!
//! Payloads (`data`, `info`) are kept as raw bytes: raw JSON text for JSON clients, opaque
//! bytes for protobuf clients, exactly as Centrifugo passes them through.

pub mod json;
pub mod pb;
pub mod v1;

use bytes::Bytes;

use crate::error::ApiError;
use crate::model::{ClientInfo, Publication, StreamPosition};

/// The wire format of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Protobuf,
}

/// One client command: `id` (0 for `send` and pong) and what it asks.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmd {
    pub id: u32,
    pub req: Req,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Req {
    Connect(ConnectReq),
    Subscribe(SubscribeReq),
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: Bytes,
    },
    /// A publish of `type` 1: sets (or with `removed` removes) `key` of a map channel.
    MapPublish {
        channel: String,
        data: Bytes,
        key: String,
        removed: bool,
    },
    Presence {
        channel: String,
    },
    PresenceStats {
        channel: String,
    },
    History(HistoryReq),
    /// A client→server ping command (id > 0).
    Ping,
    Send {
        data: Bytes,
    },
    Rpc {
        method: String,
        data: Bytes,
    },
    Refresh {
        token: String,
    },
    /// `sub_refresh`: a subscription token refresh (`kind` 0), or on a shared poll
    /// subscription the keys to track (`kind` 1, signed batches, with keys to untrack at once)
    /// or to untrack (`kind` 2).
    SubRefresh {
        channel: String,
        token: String,
        kind: i32,
        track: Vec<TrackBatch>,
        untrack: Vec<String>,
    },
    /// The empty command `{}` (id 0): the answer to a server ping.
    Pong,
    /// A command with id > 0 and no known request.
    Unknown,
}

/// One signed batch of keys a shared poll subscription tracks: (key, version known to the
/// client) items and the backend's signature over the keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackBatch {
    pub signature: String,
    pub items: Vec<(String, u64)>,
}

/// A shared poll update of one key: its data and version, or its removal. Pushed as `pub`
/// with `key`, `version` (and `epoch` when the backend names one); a removal carries
/// `removed` and no data.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedPub {
    pub key: std::sync::Arc<str>,
    pub data: Option<crate::model::Payload>,
    pub version: u64,
    pub epoch: std::sync::Arc<str>,
    /// `data` is a fossil patch against the key's previous data (`"delta": true`).
    pub delta: bool,
}

impl KeyedPub {
    pub fn new(
        key: std::sync::Arc<str>,
        data: Option<crate::model::Payload>,
        version: u64,
        epoch: std::sync::Arc<str>,
    ) -> KeyedPub {
        KeyedPub { key, data, version, epoch, delta: false }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectReq {
    pub token: String,
    pub data: Option<Bytes>,
    /// Server-side subscriptions the client asks to recover: channel → position.
    pub subs: Vec<(String, SubRecover)>,
    pub name: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

/// `connect.subs` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubRecover {
    pub recover: bool,
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeReq {
    pub channel: String,
    pub token: String,
    pub recover: bool,
    pub epoch: String,
    pub offset: u64,
    pub data: Option<Bytes>,
    pub positioned: bool,
    pub recoverable: bool,
    pub join_leave: bool,
    pub delta: String,
    /// `tf`: a tags filter over the channel's publications (checked at subscribe time).
    pub tf: Option<crate::filter::FilterNode>,
    pub flag: i64,
    /// `type`: 0 a stream subscription, 1 a map subscription.
    pub kind: i32,
    /// Map subscriptions: 2 a page of the state, 1 the stream, 0 live.
    pub phase: i32,
    /// Map subscriptions: where the next page of the state starts.
    pub cursor: String,
    /// Map subscriptions: page size asked for.
    pub limit: i32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryReq {
    pub channel: String,
    pub limit: i32,
    pub since: Option<StreamPosition>,
    pub reverse: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeResult {
    pub expires: bool,
    pub ttl: u32,
    pub recoverable: bool,
    pub epoch: String,
    pub publications: Vec<Publication>,
    pub recovered: bool,
    pub offset: u64,
    pub positioned: bool,
    pub data: Option<Bytes>,
    pub was_recovering: bool,
    /// Fossil delta compression was negotiated (`delta: "fossil"` asked and allowed).
    pub delta: bool,
    /// `type` echoed (1 for map subscriptions).
    pub kind: i32,
    /// Map subscriptions: 2 a state page, 1 a stream page, 0 live (subscribed).
    pub phase: i32,
    /// Map subscriptions: the next state page's cursor (empty: last page).
    pub cursor: String,
    /// Map subscriptions: entries of the state.
    pub state: Vec<Publication>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectResult {
    pub client: String,
    pub version: String,
    pub expires: bool,
    pub ttl: u32,
    pub data: Option<Bytes>,
    pub subs: Vec<(String, SubscribeResult)>,
    pub ping: u32,
    pub pong: bool,
    /// The session id of a unidirectional or emulated connection (server API actions and
    /// `/emulation` requests name it).
    pub session: String,
    /// This node's id, for emulated connections (their `/emulation` requests name it).
    pub node: String,
    /// Server time in milliseconds since the epoch (`client.connect_include_server_time`);
    /// 0 leaves it out.
    pub time: i64,
}

/// A successful reply's body, named like the command it answers.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    Connect(ConnectResult),
    Subscribe(SubscribeResult),
    Unsubscribe,
    Publish,
    Presence(Vec<ClientInfo>),
    PresenceStats { num_clients: u32, num_users: u32 },
    History { publications: Vec<Publication>, position: StreamPosition },
    Ping,
    Rpc { data: Option<Bytes> },
    Refresh { client: String, version: String, expires: bool, ttl: u32 },
    SubRefresh { expires: bool, ttl: u32 },
}

/// What a push carries (`channel` travels beside it).
#[derive(Debug, Clone, PartialEq)]
pub enum PushBody {
    Pub(Publication),
    /// A shared poll key's update or removal.
    Keyed(KeyedPub),
    /// A publication whose data is a fossil delta against the previous publication the
    /// subscriber received on the channel (`"delta": true`); JSON carries it as a string.
    Delta(Publication),
    Join(ClientInfo),
    Leave(ClientInfo),
    Unsubscribe {
        code: u32,
        reason: String,
    },
    Subscribe {
        recoverable: bool,
        epoch: String,
        offset: u64,
        positioned: bool,
        data: Option<Bytes>,
    },
    Message {
        data: Bytes,
    },
    Refresh {
        expires: bool,
        ttl: u32,
    },
    Disconnect {
        code: u32,
        reason: String,
        reconnect: bool,
    },
    /// The connect result of a unidirectional connection (its first push).
    Connect(Box<ConnectResult>),
}

impl PushBody {
    /// Whether the push names its channel: channel-scoped pushes do; `message`, `refresh` and
    /// `disconnect` concern the whole connection.
    pub fn has_channel(&self) -> bool {
        matches!(
            self,
            PushBody::Pub(_)
                | PushBody::Keyed(_)
                | PushBody::Delta(_)
                | PushBody::Join(_)
                | PushBody::Leave(_)
                | PushBody::Unsubscribe { .. }
                | PushBody::Subscribe { .. }
        )
    }
}

/// A frame's commands could not be decoded: the connection is closed with 3501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame;

/// Decodes every command in one WebSocket message.
pub fn decode(format: Format, frame: &[u8]) -> Result<Vec<Cmd>, BadFrame> {
    match format {
        Format::Json => json::decode(frame),
        Format::Protobuf => pb::decode(frame),
    }
}

/// Decodes the connect request a unidirectional transport receives (a `ConnectRequest`
/// object, not a command): JSON (`null` and `{}` are an empty request) or protobuf.
pub fn decode_connect_request(format: Format, body: &[u8]) -> Result<ConnectReq, BadFrame> {
    match format {
        Format::Json => {
            let body = body.trim_ascii();
            if body == b"null" {
                return Ok(ConnectReq::default());
            }
            if body.first() != Some(&b'{') {
                return Err(BadFrame);
            }
            let mut cmd = Vec::with_capacity(body.len() + 20);
            cmd.extend_from_slice(b"{\"id\":1,\"connect\":");
            cmd.extend_from_slice(body);
            cmd.push(b'}');
            match json::decode_command(&cmd)?.req {
                Req::Connect(c) => Ok(c),
                _ => Err(BadFrame),
            }
        }
        Format::Protobuf => pb::decode_connect_request(body),
    }
}

/// Appends one reply (for JSON without a trailing newline; the caller joins with `\n`).
pub fn encode_reply(format: Format, id: u32, reply: &Result<ReplyBody, ApiError>, out: &mut Vec<u8>) {
    match format {
        Format::Json => json::encode_reply(id, reply, out),
        Format::Protobuf => pb::encode_reply(id, reply, out),
    }
}

/// Appends one push.
pub fn encode_push(format: Format, channel: &str, push: &PushBody, out: &mut Vec<u8>) {
    match format {
        Format::Json => json::encode_push(channel, push, out),
        Format::Protobuf => pb::encode_push(channel, push, out),
    }
}

/// Appends one bare push (no reply wrapper, no length prefix): what the unidirectional
/// transports send.
pub fn encode_bare_push(format: Format, channel: &str, push: &PushBody, out: &mut Vec<u8>) {
    match format {
        Format::Json => json::encode_bare_push(channel, push, out),
        Format::Protobuf => pb::encode_bare_push(channel, push, out),
    }
}

/// Appends the server ping (an empty reply): `{}` in JSON, one zero length byte in protobuf.
pub fn encode_ping(format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Json => out.extend_from_slice(b"{}"),
        Format::Protobuf => out.push(0),
    }
}
