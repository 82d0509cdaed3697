//! The server API: one [`Command`] enum that every transport (new-style `POST /api/<method>`,
//! legacy `POST /api` streams, `batch`, and later gRPC) decodes into, and one [`Reply`] that
//! they encode from. Decoding lives in [`parse`], JSON encoding in [`encode`], execution in
//! [`exec`].

pub mod encode;
pub mod fast;
pub mod parse;
pub mod v1;

use crate::error::ApiError;
use crate::model::{ClientInfo, History, NodeInfo, Payload, Publication, Publish, StreamPosition};

/// Server API methods with their legacy numeric ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Publish,
    Broadcast,
    Unsubscribe,
    Disconnect,
    Presence,
    PresenceStats,
    History,
    HistoryRemove,
    Channels,
    Info,
    Rpc,
    Subscribe,
    Refresh,
    Batch,
    MapPublish,
    MapRemove,
    MapReadState,
    MapReadStream,
    MapStats,
    MapClear,
    SharedPollPublish,
}

impl Method {
    /// Every method, in declaration order (index = `method as usize`).
    pub const ALL: [Method; 21] = [
        Method::Publish,
        Method::Broadcast,
        Method::Unsubscribe,
        Method::Disconnect,
        Method::Presence,
        Method::PresenceStats,
        Method::History,
        Method::HistoryRemove,
        Method::Channels,
        Method::Info,
        Method::Rpc,
        Method::Subscribe,
        Method::Refresh,
        Method::Batch,
        Method::MapPublish,
        Method::MapRemove,
        Method::MapReadState,
        Method::MapReadStream,
        Method::MapStats,
        Method::MapClear,
        Method::SharedPollPublish,
    ];

    /// Case-insensitive lookup by name (`publish`, `presence_stats`, ...).
    pub fn from_name(name: &str) -> Option<Method> {
        Self::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Lookup by the legacy numeric id (`connections` = 14 and the PRO-only ids are unknown
    /// here).
    pub fn from_number(n: u64) -> Option<Method> {
        Some(match n {
            0 => Method::Publish,
            1 => Method::Broadcast,
            2 => Method::Unsubscribe,
            3 => Method::Disconnect,
            4 => Method::Presence,
            5 => Method::PresenceStats,
            6 => Method::History,
            7 => Method::HistoryRemove,
            8 => Method::Channels,
            9 => Method::Info,
            10 => Method::Rpc,
            11 => Method::Subscribe,
            12 => Method::Refresh,
            33 => Method::MapPublish,
            34 => Method::MapRemove,
            35 => Method::MapReadState,
            36 => Method::MapReadStream,
            37 => Method::MapStats,
            38 => Method::MapClear,
            39 => Method::SharedPollPublish,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Publish => "publish",
            Method::Broadcast => "broadcast",
            Method::Unsubscribe => "unsubscribe",
            Method::Disconnect => "disconnect",
            Method::Presence => "presence",
            Method::PresenceStats => "presence_stats",
            Method::History => "history",
            Method::HistoryRemove => "history_remove",
            Method::Channels => "channels",
            Method::Info => "info",
            Method::Rpc => "rpc",
            Method::Subscribe => "subscribe",
            Method::Refresh => "refresh",
            Method::Batch => "batch",
            Method::MapPublish => "map_publish",
            Method::MapRemove => "map_remove",
            Method::MapReadState => "map_read_state",
            Method::MapReadStream => "map_read_stream",
            Method::MapStats => "map_stats",
            Method::MapClear => "map_clear",
            Method::SharedPollPublish => "shared_poll_publish",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Broadcast {
    pub channels: Vec<Box<str>>,
    /// The shared parameters; `channel` is empty.
    pub publish: Publish,
}

/// A connection filter shared by subscribe/unsubscribe/disconnect/refresh.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub user: Box<str>,
    pub client: Box<str>,
    pub session: Box<str>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub force_recovery: Option<bool>,
    pub force_positioning: Option<bool>,
    pub force_push_join_leave: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Subscribe {
    pub target: Target,
    pub channel: Box<str>,
    pub expire_at: i64,
    pub info: Option<Payload>,
    pub data: Option<Payload>,
    pub recover_since: Option<StreamPosition>,
    pub overrides: Overrides,
}

#[derive(Debug, Clone)]
pub struct Unsubscribe {
    pub target: Target,
    pub channel: Box<str>,
}

#[derive(Debug, Clone)]
pub struct DisconnectCmd {
    pub target: Target,
    pub whitelist: Vec<Box<str>>,
    pub code: u16,
    pub reason: Box<str>,
}

#[derive(Debug, Clone)]
pub struct Refresh {
    pub target: Target,
    pub expired: bool,
    pub expire_at: i64,
    pub info: Option<Payload>,
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub commands: Vec<Result<Command, ApiError>>,
    pub parallel: bool,
}

/// One decoded server API command.
#[derive(Debug, Clone)]
pub enum Command {
    Publish(Publish),
    Broadcast(Broadcast),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Disconnect(DisconnectCmd),
    Refresh(Refresh),
    Presence { channel: Box<str> },
    PresenceStats { channel: Box<str> },
    History(History),
    HistoryRemove { channel: Box<str> },
    Channels { pattern: Box<str> },
    Info,
    Rpc { method: Box<str> },
    Batch(Batch),
    Map(MapCmd),
    SharedPollPublish(SharedPollPub),
}

/// `shared_poll_publish`: a new version of one key of a shared poll channel, pushed to the
/// connections tracking the key. Checked by the executor in Centrifugo's order (empty
/// channel or key, or version 0: 107; unknown namespace: 102; not a shared poll namespace:
/// 107; `shared_poll.publish_enabled` off: 108; bad `b64data`: 107).
#[derive(Debug, Clone)]
pub struct SharedPollPub {
    pub channel: Box<str>,
    pub key: Box<str>,
    pub version: u64,
    pub epoch: Box<str>,
    /// `data`, or `b64data` decoded (empty when neither is given); `None` when `b64data` is
    /// not valid base64, which Centrifugo reports after the namespace checks.
    pub data: Option<Payload>,
}

/// The map channel methods (`subscription_type: map`).
#[derive(Debug, Clone)]
pub enum MapCmd {
    /// Sets `key` to the publication.
    Publish {
        publish: Publish,
        key: Box<str>,
        key_mode: crate::model::KeyMode,
    },
    /// Removes `key`.
    Remove {
        channel: Box<str>,
        key: Box<str>,
        idempotency_key: Option<Box<str>>,
    },
    /// A page of the state: keys after `cursor`, at most `limit` (0: all); with `key`, that
    /// key's entry only; with `revision`, 112 unless the stream is still of its epoch.
    ReadState {
        channel: Box<str>,
        cursor: String,
        limit: usize,
        key: String,
        revision_epoch: String,
    },
    /// The channel's change stream, as `history` reads a stream.
    ReadStream(crate::model::History),
    Stats {
        channel: Box<str>,
    },
    Clear {
        channel: Box<str>,
    },
}

impl Command {
    pub fn method(&self) -> Method {
        match self {
            Command::Publish(_) => Method::Publish,
            Command::Broadcast(_) => Method::Broadcast,
            Command::Subscribe(_) => Method::Subscribe,
            Command::Unsubscribe(_) => Method::Unsubscribe,
            Command::Disconnect(_) => Method::Disconnect,
            Command::Refresh(_) => Method::Refresh,
            Command::Presence { .. } => Method::Presence,
            Command::PresenceStats { .. } => Method::PresenceStats,
            Command::History(_) => Method::History,
            Command::HistoryRemove { .. } => Method::HistoryRemove,
            Command::Channels { .. } => Method::Channels,
            Command::Info => Method::Info,
            Command::Rpc { .. } => Method::Rpc,
            Command::Batch(_) => Method::Batch,
            Command::Map(m) => match m {
                MapCmd::Publish { .. } => Method::MapPublish,
                MapCmd::Remove { .. } => Method::MapRemove,
                MapCmd::ReadState { .. } => Method::MapReadState,
                MapCmd::ReadStream(_) => Method::MapReadStream,
                MapCmd::Stats { .. } => Method::MapStats,
                MapCmd::Clear { .. } => Method::MapClear,
            },
            Command::SharedPollPublish(_) => Method::SharedPollPublish,
        }
    }
}

/// A successful result of one command.
#[derive(Debug, Clone)]
pub enum Res {
    /// `{}`
    Empty,
    /// `{}` or `{"offset":N,"epoch":"E"}`.
    Publish(Option<StreamPosition>),
    Broadcast(Vec<Result<Option<StreamPosition>, ApiError>>),
    Presence(Vec<ClientInfo>),
    PresenceStats {
        num_clients: u64,
        num_users: u64,
    },
    History {
        publications: Vec<Publication>,
        position: StreamPosition,
    },
    Channels(Vec<(Box<str>, u64)>),
    Info(Vec<NodeInfo>),
    Batch(Vec<(Option<Method>, Reply)>),
    /// A page of a map channel's state: entries, the stream position, the next page's cursor.
    MapState {
        entries: Vec<Publication>,
        position: StreamPosition,
        cursor: String,
    },
    /// Keys of a map channel.
    MapStats(u64),
    /// What a `map_publish` or `map_remove` did.
    MapUpdate(crate::model::MapUpdate),
}

/// The outcome of one command.
pub type Reply = Result<Res, ApiError>;
