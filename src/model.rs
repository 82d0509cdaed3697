//! The values every layer shares: publications and their payloads, stream positions, who a
//! publication or presence entry came from, the parameters of a publish and a history read,
//! and a node's `info` figures. Plain data: no I/O, no threads, no imports from the rest of
//! the crate but [`crate::error`].

use std::sync::Arc;

use bytes::Bytes;

/// True when `b` is JSON a JSON client can receive as it is: valid UTF-8 (serde_json does not
/// check the inside of strings it skips) and well-formed JSON.
pub fn is_json(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
}

impl Payload {
    /// Whether JSON clients can receive this payload (JSON text, or binary that is JSON).
    pub fn json_ok(&self) -> bool {
        !self.binary || is_json(&self.bytes)
    }
}

/// A publication payload: raw JSON bytes (kept byte-for-byte as sent) or binary from `b64data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Bytes,
    /// True when the bytes came from base64 and are not JSON.
    pub binary: bool,
}

/// `tags` of a publication, in the order given.
pub type Tags = Arc<[(Box<str>, Box<str>)]>;

/// A position in a channel's history stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// `publish` parameters (also one channel of a `broadcast`).
#[derive(Debug, Clone)]
pub struct Publish {
    pub channel: Box<str>,
    pub data: Payload,
    pub skip_history: bool,
    pub tags: Option<Tags>,
    pub idempotency_key: Option<Box<str>>,
    pub delta: bool,
    pub version: u64,
    pub version_epoch: Box<str>,
    /// Publisher info (client-side publications only).
    pub info: Option<Arc<ClientInfo>>,
}

/// When a map publish writes its key (`key_mode` of `map_publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyMode {
    /// Always (the default).
    #[default]
    Replace,
    /// Only when the key is absent (else suppressed: `key_exists`).
    IfNew,
    /// Only when the key is present (else suppressed: `key_not_found`).
    IfExists,
}

impl KeyMode {
    /// The API's spelling (`""`, `if_new`, `if_exists`); `None` for anything else.
    pub fn parse(s: &str) -> Option<KeyMode> {
        match s {
            "" => Some(KeyMode::Replace),
            "if_new" => Some(KeyMode::IfNew),
            "if_exists" => Some(KeyMode::IfExists),
            _ => None,
        }
    }
}

/// What a map publish or remove did: the stream position and, when it changed nothing, why
/// (`idempotency`, `version`, `key_exists`, `key_not_found`), as Centrifugo's result says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapUpdate {
    pub position: StreamPosition,
    pub suppressed: Option<&'static str>,
}

/// A change of a map channel's key: set (`publish.data`) or removed.
#[derive(Debug)]
pub struct MapPub {
    pub publish: Publish,
    pub key: Arc<str>,
    pub removed: bool,
    pub key_mode: KeyMode,
    /// With `IfNew` and the key present: its TTL starts again (presence keep-alive), nothing
    /// else changes.
    pub refresh_ttl: bool,
}

impl MapPub {
    /// Sets (`removed` false) or removes `key`, unconditionally.
    pub fn new(publish: Publish, key: Arc<str>, removed: bool) -> MapPub {
        MapPub { publish, key, removed, key_mode: KeyMode::Replace, refresh_ttl: false }
    }
}

/// `history` parameters (also a client's history command).
#[derive(Debug, Clone)]
pub struct History {
    pub channel: Box<str>,
    pub limit: i32,
    pub since: Option<StreamPosition>,
    pub reverse: bool,
}

/// Who a presence entry / publication came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    pub user: Arc<str>,
    pub client: Arc<str>,
    pub conn_info: Option<Bytes>,
    pub chan_info: Option<Bytes>,
}

/// A publication as kept in history and returned by `history`.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub offset: u64,
    pub data: Payload,
    pub info: Option<Arc<ClientInfo>>,
    pub tags: Option<Tags>,
    /// Map channels: the key the publication sets or removes.
    pub key: Option<Arc<str>>,
    /// Map channels: the publication removes `key`.
    pub removed: bool,
}

/// `info` result for one node.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub num_clients: u64,
    pub num_users: u64,
    pub num_channels: u64,
    pub num_subs: u64,
    pub uptime: u64,
    /// Users connected to one worker, so the node's `num_users` counts each user once
    /// (internal; not encoded).
    pub users: Vec<Arc<str>>,
    /// Where the node's gateway API is reached (internal; `GET /v1/nodes`).
    pub api_server: String,
}

impl Publish {
    /// A publish of `data` to `channel` with every option at its default (history kept, no
    /// tags, no idempotency key, no version, no publisher info).
    pub fn new(channel: impl Into<Box<str>>, data: Payload) -> Publish {
        Publish {
            channel: channel.into(),
            data,
            skip_history: false,
            tags: None,
            idempotency_key: None,
            delta: false,
            version: 0,
            version_epoch: "".into(),
            info: None,
        }
    }
}
