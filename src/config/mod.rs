//! Gyre's configuration: one immutable [`Config`] built at start-up from defaults, a config
//! file (JSON, TOML or YAML), `CENTRIFUGO_*`/`GYRE_*` environment variables and CLI flags.
//!
//! Field names follow Centrifugo v6's nested option names (`http_api.key`,
//! `client.token.hmac_secret_key`, `channel.namespaces`, ...). The loader in [`load`] also
//! accepts the v5 flat names and maps them here. Every worker reads the same `Arc<Config>`;
//! nothing in it changes after start-up.

pub mod broker;
mod client;
pub mod doc;
mod doc_text;
pub mod dotenv;
pub mod duration;
mod http_server;
pub mod live;
pub mod load;
mod log;
mod map;
pub use map::{MapBroker, MapOptions};
pub mod pattern;
pub mod proxy;
pub mod redis;
mod schema;
pub mod shared_poll;
pub mod tls;
mod token;
mod weak;

use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use load::{load, LoadOptions, Loaded};
pub use pattern::ChannelRegex;
pub use token::{SubscriptionToken, Token};

use crate::error::ApiError;
pub use client::{Client, PersonalChannel};
pub use http_server::HttpServer;
pub use log::Log;
pub use redis::Redis;

/// The whole validated configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Number of worker threads (event loops). 0 = number of CPU cores.
    pub workers: usize,
    /// I/O driver of the event loops: "auto" (io_uring when the kernel allows it, else
    /// epoll), "io_uring" or "epoll".
    pub driver: String,
    pub http_server: HttpServer,
    pub log: Log,
    pub http_api: HttpApi,
    pub client: Client,
    pub channel: Channel,
    pub engine: Engine,
    pub broker: broker::Broker,
    pub admin: Admin,
    pub prometheus: Enabled,
    pub health: Enabled,
    pub grpc_api: GrpcApi,
    pub websocket: Websocket,
    pub http_stream: HttpStream,
    pub sse: Sse,
    pub emulation: Emulation,
    pub uni_websocket: UniWebsocket,
    pub uni_sse: UniSse,
    pub uni_http_stream: UniHttpStream,
    pub uni_grpc: UniGrpc,
    pub sockjs: Sockjs,
    pub node: Node,
    pub shutdown: Shutdown,
    pub gateway: Gateway,
    /// Named proxies, picked by channel and RPC namespaces (`proxy::NamedProxy`).
    pub proxies: Vec<proxy::NamedProxy>,
    pub rpc: proxy::Rpc,
    pub shared_poll: shared_poll::SharedPoll,
    pub map_broker: MapBroker,
    /// `pid_file`: the server writes its process id there at start-up (and removes the file
    /// when it stops cleanly).
    pub pid_file: String,
    /// The channel options in effect after a reload (see [`Config::channel()`]).
    #[serde(skip)]
    pub live_channel: live::Live<Channel>,
    /// The token settings in effect after a reload (see [`Config::tokens()`]).
    #[serde(skip)]
    pub live_tokens: live::Live<live::TokenSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpApi {
    pub disabled: bool,
    /// Serve the API on the external port even when an internal port is set.
    pub external: bool,
    pub handler_prefix: String,
    pub key: String,
    pub insecure: bool,
    /// "" (errors inside HTTP 200) or "transport" (HTTP status codes).
    pub error_mode: String,
    /// Largest body accepted by `POST /api/<method>` (and by a non-streamed request), bytes.
    pub max_body_size: usize,
    /// Largest single command line in a legacy `POST /api` stream, bytes.
    pub max_command_size: usize,
    /// Largest total legacy stream body, bytes; 0 = unlimited (the stream is processed in
    /// bounded memory whatever its length).
    pub max_stream_size: u64,
    /// Secret of the signed v1 API (`POST /api/` with `X-API-Sign`, Centrifugo 1.x's `cent`):
    /// empty = off. The v1 config name is `secret`.
    pub v1_secret: String,
    /// Serve the v1 API without signatures (v1 name `insecure_api`).
    pub v1_insecure: bool,
}

impl HttpApi {
    /// Whether `POST /api/` speaks the signed v1 API.
    pub fn v1_enabled(&self) -> bool {
        !self.v1_secret.is_empty() || self.v1_insecure
    }
}

impl Default for HttpApi {
    fn default() -> Self {
        HttpApi {
            disabled: false,
            external: false,
            handler_prefix: "/api".into(),
            key: String::new(),
            insecure: false,
            error_mode: String::new(),
            max_body_size: 16 * 1024 * 1024,
            max_command_size: 1024 * 1024,
            max_stream_size: 0,
            v1_secret: String::new(),
            v1_insecure: false,
        }
    }
}

/// Options of a channel namespace (or of channels without namespace). All default off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChannelOptions {
    pub presence: bool,
    pub join_leave: bool,
    pub force_push_join_leave: bool,
    pub history_size: usize,
    #[serde(with = "duration")]
    pub history_ttl: Duration,
    /// 0 = use `channel.history_meta_ttl`.
    #[serde(with = "duration")]
    pub history_meta_ttl: Duration,
    pub force_positioning: bool,
    pub allow_positioning: bool,
    pub force_recovery: bool,
    pub allow_recovery: bool,
    /// "" or "stream": recovery returns the publications missed; "cache": only the latest.
    pub force_recovery_mode: String,
    /// With cache recovery: every subscribe recovers (gets the latest publication) without
    /// the client asking.
    pub auto_cache_recover: bool,
    pub allow_subscribe_for_client: bool,
    pub allow_subscribe_for_anonymous: bool,
    pub allow_publish_for_client: bool,
    pub allow_publish_for_subscriber: bool,
    pub allow_publish_for_anonymous: bool,
    pub allow_presence_for_client: bool,
    pub allow_presence_for_subscriber: bool,
    pub allow_presence_for_anonymous: bool,
    pub allow_history_for_client: bool,
    pub allow_history_for_subscriber: bool,
    pub allow_history_for_anonymous: bool,
    pub allow_user_limited_channels: bool,
    /// Subscribers may ask for a tags filter (`tf`) over the channel's publications.
    pub allow_tags_filter: bool,
    /// Client-side channel names of the namespace must match (the part after the namespace
    /// boundary); without it they must be ASCII.
    pub channel_regex: ChannelRegex,
    /// Delta encodings subscribers may ask for (`delta` in subscribe): `fossil` only.
    pub allowed_delta_types: Vec<String>,
    /// Every publication to the namespace is published as with the API's `delta: true`.
    pub delta_publish: bool,
    /// Which proxies decide for this namespace's channels.
    #[serde(flatten)]
    pub proxy: proxy::NamespaceProxies,
    /// `stream` (or empty): PUB/SUB with history; `map`: keyed state (see [`MapOptions`]);
    /// `shared_poll`: keys polled from the backend (see [`shared_poll`]).
    pub subscription_type: String,
    /// Map subscriptions (`subscription_type: map`).
    pub map: MapOptions,
    pub shared_poll: shared_poll::SharedPollOptions,
    /// Presence maps of the channels here (see `session::map_presence`).
    pub map_clients_presence_channel_prefix: String,
    pub map_users_presence_channel_prefix: String,
}

/// A named namespace: `name` plus its options (flattened, as in Centrifugo configs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Namespace {
    pub name: String,
    #[serde(flatten)]
    pub options: ChannelOptions,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Channel {
    pub max_length: usize,
    pub private_prefix: String,
    pub namespace_boundary: String,
    pub user_boundary: String,
    pub user_separator: String,
    #[serde(with = "duration")]
    pub history_meta_ttl: Duration,
    pub without_namespace: ChannelOptions,
    pub namespaces: Vec<Namespace>,
    /// `channel.proxy`: the "default" proxy of each channel kind.
    pub proxy: proxy::ChannelProxies,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            max_length: 255,
            private_prefix: "$".into(),
            namespace_boundary: ":".into(),
            user_boundary: "#".into(),
            user_separator: ",".into(),
            history_meta_ttl: Duration::from_secs(720 * 3600),
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
            proxy: proxy::ChannelProxies::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Engine {
    /// "memory" (default) or "redis".
    #[serde(rename = "type")]
    pub kind: String,
    pub redis: Redis,
}

impl Default for Engine {
    fn default() -> Self {
        Engine { kind: "memory".into(), redis: Redis::default() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Admin {
    pub enabled: bool,
    pub password: String,
    pub secret: String,
    pub insecure: bool,
    /// Serve the admin interface on the external port even when an internal port is set.
    pub external: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcApi {
    pub enabled: bool,
    pub port: u16,
    pub key: String,
    pub tls: tls::Tls,
}

impl Default for GrpcApi {
    fn default() -> Self {
        GrpcApi { enabled: false, port: 10000, key: String::new(), tls: tls::Tls::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Websocket {
    pub disabled: bool,
    pub handler_prefix: String,
    pub message_size_limit: usize,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    #[serde(flatten)]
    pub deflate: WsCompression,
}

impl Default for Websocket {
    fn default() -> Self {
        Websocket {
            disabled: false,
            handler_prefix: "/connection/websocket".into(),
            message_size_limit: 65536,
            write_timeout: Duration::from_secs(1),
            deflate: WsCompression::default(),
        }
    }
}

/// permessage-deflate (RFC 7692) of a WebSocket transport, negotiated with the clients that
/// offer it when `compression` is on. Only the no-context-takeover mode exists, as in
/// Centrifugo: each message is compressed on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct WsCompression {
    pub compression: bool,
    /// Messages of at most this many bytes are sent uncompressed (0 = all are compressed).
    pub compression_min_size: usize,
    /// -2 (Huffman coding only), -1 (default, 6), 0 (stored) or 1 (fastest) to 9 (best). A
    /// value outside -2..9 stops the start-up (Centrifugo logs it and keeps 1).
    pub compression_level: i32,
    /// Most bytes a compressed client message may inflate to (1009 above); 0 = 10 times the
    /// transport's `message_size_limit`.
    pub decompressed_message_size_limit: usize,
}

impl Default for WsCompression {
    fn default() -> Self {
        WsCompression {
            compression: false,
            compression_min_size: 0,
            compression_level: 1,
            decompressed_message_size_limit: 0,
        }
    }
}

impl WsCompression {
    /// Valid values of `compression_level`.
    pub const LEVELS: std::ops::RangeInclusive<i32> = -2..=9;

    /// The inflated size limit of a transport whose messages are limited to
    /// `message_size_limit` bytes.
    pub fn inflate_limit(&self, message_size_limit: usize) -> usize {
        match self.decompressed_message_size_limit {
            0 => message_size_limit.saturating_mul(10),
            n => n,
        }
    }
}

/// Declares a transport section whose `handler_prefix` defaults to its own path.
macro_rules! stream_section {
    ($(#[$m:meta])* $name:ident, $path:literal $(, $extra:ident: $ty:ty)?) => {
        $(#[$m])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
            pub enabled: bool,
            pub handler_prefix: String,
            /// Cap of the request body (and of one command in it); 0 = 65536.
            pub max_request_body_size: usize,
            $(pub $extra: $ty,)?
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    enabled: false,
                    handler_prefix: $path.into(),
                    max_request_body_size: 65536,
                    $($extra: <$ty>::default(),)?
                }
            }
        }

        impl $name {
            /// The body cap (0 means the default 64 KiB).
            pub fn body_limit(&self) -> usize {
                if self.max_request_body_size == 0 {
                    65536
                } else {
                    self.max_request_body_size
                }
            }
        }
    };
}

stream_section!(
    /// HTTP-streaming with bidirectional emulation (`http_stream`).
    HttpStream, "/connection/http_stream"
);
stream_section!(
    /// Server-sent events with bidirectional emulation (`sse`).
    Sse, "/connection/sse"
);
stream_section!(
    /// Unidirectional server-sent events (`uni_sse`).
    UniSse, "/connection/uni_sse", connect_code_to_http_response: CodeToHttp
);
stream_section!(
    /// The unidirectional HTTP stream (`uni_http_stream`).
    UniHttpStream, "/connection/uni_http_stream", connect_code_to_http_response: CodeToHttp
);

/// SockJS (`sockjs`), the fallback transport of Centrifugo 2.x/3.x: the SockJS session
/// protocol carrying the older client protocol (`crate::sockjs`). Off by default (Centrifugo
/// 4 dropped it); Centrifugo 3's `sockjs: true` turns it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Sockjs {
    pub enabled: bool,
    pub handler_prefix: String,
    /// Interval of the `h` heartbeat frames.
    #[serde(with = "duration")]
    pub heartbeat_delay: Duration,
    /// The SockJS client script an iframe-based transport would load: accepted for
    /// Centrifugo 3's configs; the iframe transports are not served, so it is unused.
    pub url: String,
}

impl Default for Sockjs {
    fn default() -> Self {
        Sockjs {
            enabled: false,
            handler_prefix: "/connection/sockjs".into(),
            heartbeat_delay: Duration::from_secs(25),
            url: String::new(),
        }
    }
}

/// `/emulation`, served while `http_stream` or `sse` is on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Emulation {
    pub handler_prefix: String,
    pub max_request_body_size: usize,
}

impl Default for Emulation {
    fn default() -> Self {
        Emulation { handler_prefix: "/emulation".into(), max_request_body_size: 65536 }
    }
}

/// The unidirectional WebSocket (`uni_websocket`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UniWebsocket {
    pub enabled: bool,
    pub handler_prefix: String,
    /// Largest message read from the client (they are read and dropped); 0 = 65536.
    pub message_size_limit: usize,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// Pushes written together leave in one text frame, joined by `\n`.
    pub join_push_messages: bool,
    /// No close frame on a server close: the socket is just closed.
    pub disable_closing_handshake: bool,
    /// No disconnect push before the close frame.
    pub disable_disconnect_push: bool,
    #[serde(flatten)]
    pub deflate: WsCompression,
}

impl Default for UniWebsocket {
    fn default() -> Self {
        UniWebsocket {
            enabled: false,
            handler_prefix: "/connection/uni_websocket".into(),
            message_size_limit: 65536,
            write_timeout: Duration::from_secs(1),
            join_push_messages: false,
            disable_closing_handshake: false,
            disable_disconnect_push: false,
            deflate: WsCompression::default(),
        }
    }
}

/// A refused connect's code (error or disconnect code) → an HTTP response instead of a
/// stream that ends with a disconnect push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeToHttp {
    pub enabled: bool,
    pub transforms: Vec<CodeToHttpTransform>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeToHttpTransform {
    pub code: u32,
    pub to: HttpResponseTo,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpResponseTo {
    pub status_code: u16,
    pub body: String,
}

/// A refused connect's error code → the disconnect a unidirectional client gets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeToDisconnect {
    pub enabled: bool,
    pub transforms: Vec<CodeToDisconnectTransform>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeToDisconnectTransform {
    pub code: u32,
    pub to: DisconnectTo,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DisconnectTo {
    pub code: u16,
    pub reason: String,
}

/// The unidirectional gRPC stream (`uni_grpc`), on its own port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UniGrpc {
    pub enabled: bool,
    /// Empty = the HTTP server's address.
    pub address: String,
    pub port: u16,
    /// Largest request message; 0 = 4 MiB.
    pub max_receive_message_size: usize,
    pub tls: tls::Tls,
}

impl Default for UniGrpc {
    fn default() -> Self {
        UniGrpc {
            enabled: false,
            address: String::new(),
            port: 11000,
            max_receive_message_size: 0,
            tls: tls::Tls::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    /// Node name shown by `info`; "" = `<hostname>_<port>`.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { timeout: Duration::from_secs(30) }
    }
}

/// The gateway ("mesh") API: raw WebSocket client servers, backend queues, send/publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Gateway {
    /// On when set or when `servers` is not empty.
    pub enabled: bool,
    /// Raw WebSocket endpoints on the main port: `{"path": "/chat", "topic": "chat"}`.
    pub servers: Vec<GatewayServer>,
    /// The backend API's own port (also served on the main port); 0 = main port only.
    pub api_port: u16,
    /// `host:port` other nodes and backends reach this node's API at ("" = derived).
    pub advertise_address: String,
    /// Most messages a topic queue keeps (the oldest is dropped beyond it).
    pub topic_size: usize,
    /// Most topics per node.
    pub max_topics: usize,
    /// Queue topic that Centrifugo clients' `send` commands land in ("" = refused).
    pub client_send_topic: String,
    /// HTTP Basic users of the backend API (besides the server API key).
    pub users: Vec<GatewayUser>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            enabled: false,
            servers: Vec::new(),
            api_port: 6789,
            advertise_address: String::new(),
            topic_size: 2000,
            max_topics: 100,
            client_send_topic: String::new(),
            users: Vec::new(),
        }
    }
}

impl Gateway {
    pub fn is_on(&self) -> bool {
        self.enabled || !self.servers.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayServer {
    pub path: String,
    pub topic: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayUser {
    pub name: String,
    pub password: String,
    /// "read" (queue.pop/unpop), "write" (send, publish, conn.call) or both ("read,write").
    pub role: String,
    /// Glob over the peer's IP address ("" or "*" = any).
    pub host: String,
}

/// What a channel name resolves to.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    pub options: &'a ChannelOptions,
    /// Index in `channel.namespaces`, `None` for channels without namespace.
    pub namespace: Option<usize>,
}

impl Config {
    /// Effective number of workers (0 → CPU count), at least 1.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.workers
        }
    }

    /// Whether `channel` is in a namespace with a map subscription type (an unknown namespace
    /// is not).
    pub fn is_map_channel(&self, channel: &str) -> bool {
        self.resolve_channel(channel).is_ok_and(|r| r.options.is_map())
    }

    /// Resolves the channel's namespace options: the text before the first namespace boundary
    /// (after the private prefix) names the namespace; no boundary → `without_namespace`.
    /// Unknown namespace → 102.
    pub fn resolve_channel<'a>(&'a self, channel: &str) -> Result<Resolved<'a>, ApiError> {
        let c = self.channel();
        let name =
            channel.strip_prefix(c.private_prefix.as_str()).filter(|_| !c.private_prefix.is_empty()).unwrap_or(channel);
        let ns = if c.namespace_boundary.is_empty() {
            None
        } else {
            // A one-byte boundary (the usual `:`) is found with a plain loop: `str::find`
            // builds a substring searcher for every call, and memchr's setup costs more than
            // the loop on names of a few dozen bytes (both visible on the publish path).
            match c.namespace_boundary.as_bytes() {
                [b] if name.len() <= 64 => name.bytes().position(|c| c == *b),
                [b] => memchr::memchr(*b, name.as_bytes()),
                _ => name.find(c.namespace_boundary.as_str()),
            }
            .map(|i| &name[..i])
        };
        match ns {
            None => Ok(Resolved { options: &c.without_namespace, namespace: None }),
            Some(ns) => c
                .namespaces
                .iter()
                .position(|n| n.name == ns)
                .map(|i| Resolved { options: &c.namespaces[i].options, namespace: Some(i) })
                .ok_or(ApiError::UNKNOWN_CHANNEL),
        }
    }

    /// Whether a client may name `channel` (options `o`, as resolved) in subscribe, publish,
    /// presence and history: with the namespace's `channel_regex` the part after the namespace
    /// boundary (the whole name for channels without namespace) must contain a match;
    /// without one the name must be ASCII. Server API calls are not checked.
    pub fn client_channel_allowed(&self, channel: &str, o: &ChannelOptions) -> bool {
        let c = self.channel();
        let rest = channel
            .strip_prefix(c.private_prefix.as_str())
            .filter(|_| !c.private_prefix.is_empty())
            .unwrap_or(channel)
            .split_once(c.namespace_boundary.as_str())
            .filter(|_| !c.namespace_boundary.is_empty())
            .map_or(channel, |(_, rest)| rest);
        o.channel_regex.is_match(rest).unwrap_or_else(|| channel.is_ascii())
    }

    /// History meta TTL for these options (namespace value or the channel-wide default).
    /// Map channels: `map.meta_ttl` (see [`map::meta_ttl`]).
    pub fn history_meta_ttl(&self, o: &ChannelOptions) -> Duration {
        if o.is_map() {
            map::meta_ttl(&o.map)
        } else if o.history_meta_ttl.is_zero() {
            self.channel().history_meta_ttl
        } else {
            o.history_meta_ttl
        }
    }
}
