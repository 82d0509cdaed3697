//! Proxies: calls from a session to the application backend that decide on connect, refresh,
//! subscribe, publish, sub_refresh, RPC, map publish and map remove, and subscription streams,
//! over HTTP or gRPC (Centrifugo's proxy protocol: `proto/proxy.proto`, whose field names are
//! also the JSON names of the HTTP requests and answers).
//!
//! A call is built as a transport-neutral [`Request`] and answered with a neutral
//! [`Response`]. HTTP proxies are called from the worker's own event loop over a keep-alive
//! connection pool of that worker ([`http`]); gRPC proxies go through one tonic client
//! thread of the node ([`grpc`]), whose answer comes back through the worker's inbox. Either
//! way the worker never blocks: the session's command awaits the answer while the loop
//! serves everyone else.

pub mod grpc;
pub mod http;
pub mod json;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use registry::{channel_proxies, Proxies, RpcRoute};

use crate::config::proxy::ProxyCommon;

/// What a proxy is called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    SubRefresh,
    Rpc,
    SubscribeStream,
    SharedPollRefresh,
    MapPublish,
    MapRemove,
}

impl Kind {
    /// The `type` label of the proxy metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Refresh => "refresh",
            Kind::Subscribe => "subscribe",
            Kind::Publish => "publish",
            Kind::SubRefresh => "sub_refresh",
            Kind::Rpc => "rpc",
            Kind::SubscribeStream => "subscribe_stream",
            Kind::SharedPollRefresh => "shared_poll_refresh",
            Kind::MapPublish => "map_publish",
            Kind::MapRemove => "map_remove",
        }
    }

    pub const ALL: [Kind; 10] = [
        Kind::Connect,
        Kind::Refresh,
        Kind::Subscribe,
        Kind::Publish,
        Kind::SubRefresh,
        Kind::Rpc,
        Kind::SubscribeStream,
        Kind::SharedPollRefresh,
        Kind::MapPublish,
        Kind::MapRemove,
    ];
}

/// Where a proxy's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `POST` to `http://host:port/path` (the endpoint as written).
    Http { host: String, port: u16, path_and_query: String, https: bool },
    /// A gRPC server: `http://host:port` as tonic dials it.
    Grpc { uri: String },
}

/// One configured proxy of one kind (a name may serve several kinds: one `Proxy` each).
#[derive(Debug)]
pub struct Proxy {
    /// "default" or the name in the `proxies` list.
    pub name: Arc<str>,
    pub kind: Kind,
    pub target: Target,
    pub timeout: Duration,
    /// `http_headers`, `emulated_headers`, `grpc_metadata`, lower-cased.
    pub http_headers: Vec<String>,
    pub emulated_headers: Vec<String>,
    pub grpc_metadata: Vec<String>,
    pub conf: ProxyCommon,
    /// Unique per (name, kind) in the node: a gRPC channel / HTTP pool index.
    pub id: usize,
}

impl Proxy {
    pub fn is_grpc(&self) -> bool {
        matches!(self.target, Target::Grpc { .. })
    }

    /// The `protocol` label of the proxy metrics.
    pub fn protocol(&self) -> &'static str {
        if self.is_grpc() {
            "grpc"
        } else {
            "http"
        }
    }
}

/// A call's request, whatever the proxy's protocol. Empty fields are left out of the JSON
/// body (`user` is always written except for connect).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub client: String,
    pub transport: &'static str,
    pub protocol: &'static str,
    /// "json", or "binary" with `binary_encoding` (payloads then in `b64data`).
    pub encoding: &'static str,
    pub user: String,
    pub channel: String,
    /// Map publish / remove: the key the client names.
    pub key: String,
    /// RPC method.
    pub method: String,
    /// Connect: the client's name and version, and the channels of its `subs`.
    pub name: String,
    pub version: String,
    pub channels: Vec<String>,
    /// The client's payload (raw JSON) when not binary-encoded.
    pub data: Option<Bytes>,
    pub b64data: String,
    /// The connection's meta (raw JSON), with `include_connection_meta`.
    pub meta: Option<Bytes>,
}

/// `{"code", "message", "temporary"}` of an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorObj {
    pub code: u32,
    pub message: String,
    pub temporary: bool,
}

/// `{"code", "reason"}` of an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DisconnectObj {
    pub code: u32,
    pub reason: String,
}

/// `override` of a subscribe result or of a connect result's `subs` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Override {
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub force_push_join_leave: Option<bool>,
    pub force_recovery: Option<bool>,
    pub force_positioning: Option<bool>,
}

/// A connect result's `subs` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubOptions {
    pub info: Option<Bytes>,
    pub b64info: String,
    pub data: Option<Bytes>,
    pub b64data: String,
    pub over: Override,
}

/// The union of every kind's `result` fields; each kind reads its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultObj {
    pub user: String,
    pub expire_at: i64,
    pub expired: bool,
    pub info: Option<Bytes>,
    pub b64info: String,
    /// `data` as given (publish: present even when `null`).
    pub data: Option<Bytes>,
    pub b64data: String,
    pub channels: Vec<String>,
    pub subs: Vec<(String, SubOptions)>,
    pub meta: Option<Bytes>,
    pub over: Override,
    pub skip_history: bool,
    pub tags: Vec<(String, String)>,
    pub idempotency_key: String,
    pub delta: bool,
    pub version: u64,
    pub version_epoch: String,
    /// Map publish / remove: the key written instead of the client's (when not empty).
    pub key: String,
    /// Map publish: `key_mode` (Gyre's map channels write every publish as given).
    pub key_mode: String,
}

/// A backend's answer: `disconnect` wins over `error`, which wins over `result`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub result: Option<ResultObj>,
    pub error: Option<ErrorObj>,
    pub disconnect: Option<DisconnectObj>,
}

/// Why a call has no answer (clients see error 100, refreshes retry in 60 s).
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    Timeout,
    /// Could not connect, or the connection broke.
    Transport(String),
    /// An HTTP status other than 200 that no transform maps.
    Status(u16),
    /// The answer is not a response object.
    Decode(String),
    /// The request could not be encoded (a payload that is not JSON without binary mode).
    Encode,
    /// A gRPC status other than OK.
    Grpc(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timeout"),
            CallError::Transport(e) => write!(f, "transport: {e}"),
            CallError::Status(s) => write!(f, "unexpected HTTP status {s}"),
            CallError::Decode(e) => write!(f, "bad response: {e}"),
            CallError::Encode => f.write_str("request payload is not JSON (binary_encoding is off)"),
            CallError::Grpc(e) => write!(f, "grpc: {e}"),
        }
    }
}

/// Headers (HTTP) or metadata (gRPC) sent with a call, in the order applied: static first,
/// then emulated, then the connection's own (a later one replaces an earlier one of the
/// same name).
pub type Headers = Vec<(String, String)>;

/// What a subscription stream (gRPC `SubscribeUnidirectional` / `SubscribeBidirectional`)
/// reports, in order: the answer to the subscribe request first, then publications, then
/// its end.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Subscribed(Box<Result<Response, CallError>>),
    Publication {
        data: Bytes,
        tags: Vec<(String, String)>,
    },
    /// The backend ended the stream (`eof`) or it failed.
    Ended {
        eof: bool,
    },
}

/// The proxies of the config, built once per worker.
pub fn of(w: &crate::runtime::worker::Worker) -> std::rc::Rc<Proxies> {
    w.local(|w| {
        Proxies::build(&w.cfg).unwrap_or_else(|e| {
            tracing::error!(error = %e, "proxies not usable");
            Proxies::default()
        })
    })
}

/// Calls `proxy` with `req` and `headers` from worker `w`, within the proxy's timeout. An
/// HTTP answer with a status other than 200 becomes the error or disconnect of a matching
/// `http.status_to_code_transforms` item, else a [`CallError::Status`].
pub async fn call(
    w: &std::rc::Rc<crate::runtime::worker::Worker>,
    proxy: &Arc<Proxy>,
    req: &Request,
    headers: Headers,
) -> Result<Response, CallError> {
    measured(proxy, async {
        if proxy.is_grpc() {
            return on_grpc_thread(w, proxy, |done| grpc::call(proxy, req.clone(), headers, done)).await;
        }
        let body = json::encode_request(proxy.kind, req)?;
        let a = post(w, proxy, &headers, &body).await?;
        if a.status == 200 {
            json::decode_response(&a.body)
        } else {
            transformed(proxy, a.status).ok_or(CallError::Status(a.status))
        }
    })
    .await
}

/// Starts a gRPC call of `proxy` with `start` (which hands the answer to the callback it is
/// given, on the client thread) and awaits the answer on worker `w`.
pub async fn on_grpc_thread<T: Send + Unpin + 'static>(
    w: &std::rc::Rc<crate::runtime::worker::Worker>,
    proxy: &Proxy,
    start: impl FnOnce(grpc::DoneFn<T>),
) -> Result<T, CallError> {
    let (answer, reply) = w.await_remote::<Result<T, CallError>>();
    start(Box::new(move |r| answer.send(r)));
    // The client thread bounds the call itself; this is the backstop.
    match monoio::time::timeout(proxy.timeout + Duration::from_secs(1), reply).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout),
    }
}

/// A call to `proxy`, counted in the proxy metrics; a failure is logged ([`warn_failed`]).
pub async fn measured<T>(
    proxy: &Proxy,
    call: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    let (protocol, kind) = (proxy.protocol(), proxy.kind.name());
    crate::metrics::proxy_started(protocol, kind, &proxy.name);
    let started = std::time::Instant::now();
    let r = call.await;
    crate::metrics::proxy_finished(protocol, kind, &proxy.name, started.elapsed(), r.is_err());
    if let Err(e) = &r {
        warn_failed(proxy, e);
    }
    r
}

/// `POST body` to the HTTP proxy `proxy` over worker `w`'s keep-alive pool, within the
/// proxy's timeout.
pub async fn post(
    w: &crate::runtime::worker::Worker,
    proxy: &Proxy,
    headers: &Headers,
    body: &[u8],
) -> Result<http::Answer, CallError> {
    let pool = w.local(|_| http::Pool::default());
    match monoio::time::timeout(proxy.timeout, pool.post(proxy, headers, body)).await {
        Err(_) => Err(CallError::Timeout),
        Ok(r) => r,
    }
}

/// Logs a failed call: the first of each second per worker, so an unreachable backend does not
/// flood the log (the metrics count every one).
pub fn warn_failed(proxy: &Proxy, e: &CallError) {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
        static QUIET: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let now = std::time::Instant::now();
    if LAST.with(|l| l.get().is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))) {
        QUIET.with(|q| q.set(q.get() + 1));
        return;
    }
    LAST.with(|l| l.set(Some(now)));
    let suppressed = QUIET.with(|q| q.replace(0));
    tracing::warn!(proxy = %proxy.name, kind = proxy.kind.name(), error = %e, suppressed, "proxy call failed");
}

/// The answer an HTTP status stands for (`http.status_to_code_transforms`).
fn transformed(proxy: &Proxy, status: u16) -> Option<Response> {
    let t = proxy.conf.http.status_to_code_transforms.iter().find(|t| t.status_code == status)?;
    if t.to_disconnect.code > 0 {
        let d = DisconnectObj { code: t.to_disconnect.code, reason: t.to_disconnect.reason.clone() };
        return Some(Response { disconnect: Some(d), ..Default::default() });
    }
    let e = ErrorObj { code: t.to_error.code, message: t.to_error.message.clone(), temporary: t.to_error.temporary };
    Some(Response { error: Some(e), ..Default::default() })
}
