//! gRPC proxies: Centrifugo's `centrifugal.centrifugo.proxy.CentrifugoProxy` service
//! (`proto/proxy.proto`), called through tonic on one client thread of the node.
//!
//! The interface the sessions use: [`call`] for the unary kinds and [`open_stream`] for
//! subscription streams. Both return at once; the answer comes through the callback, which
//! runs on the client thread (the caller hands it to its worker's inbox).
//!
//! The client thread (`gyre-proxy-grpc`) runs a current-thread tokio runtime, started on the
//! first call. It holds one lazily connected channel (HTTP/2 connection) per proxy; every
//! call of that proxy is a stream on it. A call's deadline is the proxy's `timeout`, sent to
//! the backend as `grpc-timeout` and enforced here as well, so that the callback always runs
//! once, within the timeout (and a little scheduling).
//!
//! What a call carries: the request message of its kind (payloads as raw bytes, or base64 in
//! the `b64*` fields with `binary_encoding`), metadata (`grpc.static_metadata`, then the
//! forwarded headers, then `grpc.credentials_key`), gzip with `grpc.compression`, TLS with
//! `grpc.tls`.

/// Messages and client generated from `proto/proxy.proto` at build time.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("centrifugal.centrifugo.proxy");
}

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::codec::CompressionEncoding;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::{
    CallError, DisconnectObj, ErrorObj, Headers, Kind, Override, Proxy, Request, Response, ResultObj, StreamEvent,
    SubOptions, Target,
};
use crate::config::proxy::ClientTls;
use pb::centrifugo_proxy_client::CentrifugoProxyClient;

/// The client thread's name.
const THREAD: &str = "gyre-proxy-grpc";

/// Client publications waiting to be sent into one bidirectional stream; beyond this,
/// [`StreamHandle::publish`] refuses.
const PUBLISH_QUEUE: usize = 256;

/// The client thread's runtime, started by the first call.
fn runtime() -> Result<&'static tokio::runtime::Handle, CallError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    RUNTIME.get_or_init(start).as_ref().map_err(|e| CallError::Transport(e.clone()))
}

fn start() -> Result<tokio::runtime::Handle, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the gRPC proxy runtime: {e}"))?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(THREAD.into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .map_err(|e| format!("cannot start the gRPC proxy thread: {e}"))?;
    Ok(handle)
}

/// A proxy's channel, made on its first call. Keyed by the proxy's id, endpoint, TLS options
/// and timeout (a process may run several nodes, whose ids repeat).
struct Cached {
    id: usize,
    uri: String,
    tls: ClientTls,
    timeout: std::time::Duration,
    channel: Result<Channel, String>,
}

thread_local! {
    /// The channels, on the client thread only.
    static CHANNELS: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
}

/// The proxy's channel (made, not connected, on first use). Runs on the client thread.
fn channel(proxy: &Proxy) -> Result<Channel, CallError> {
    let Target::Grpc { uri } = &proxy.target else {
        return Err(CallError::Transport(format!("proxy {:?} is not a gRPC proxy", proxy.name)));
    };
    let tls = &proxy.conf.grpc.tls;
    CHANNELS.with(|c| {
        let mut cache = c.borrow_mut();
        let hit = |x: &&Cached| x.id == proxy.id && x.uri == *uri && x.tls == *tls && x.timeout == proxy.timeout;
        if let Some(hit) = cache.iter().find(hit) {
            return hit.channel.clone().map_err(CallError::Transport);
        }
        let channel = endpoint(uri, tls, proxy.timeout).map(|e| e.connect_lazy());
        let (id, uri, tls, timeout) = (proxy.id, uri.clone(), tls.clone(), proxy.timeout);
        cache.push(Cached { id, uri, tls, timeout, channel: channel.clone() });
        channel.map_err(CallError::Transport)
    })
}

/// The endpoint of `uri` (`http://host:port`), over TLS when `tls.enabled`.
fn endpoint(uri: &str, tls: &ClientTls, timeout: std::time::Duration) -> Result<Endpoint, String> {
    let uri = match (tls.enabled, uri.strip_prefix("http://")) {
        (true, Some(rest)) => format!("https://{rest}"),
        _ => uri.to_string(),
    };
    let mut e = Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("bad gRPC endpoint {uri:?}: {e}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    if tls.enabled {
        e = e.tls_config(tls_config(tls)?).map_err(|e| format!("grpc.tls: {}", error_chain(&e)))?;
    }
    Ok(e)
}

/// The TLS options of `grpc.tls` as tonic takes them.
fn tls_config(t: &ClientTls) -> Result<ClientTlsConfig, String> {
    if let Some(why) = refused(t) {
        return Err(why);
    }
    let mut c = ClientTlsConfig::new();
    c = if t.server_ca_pem.is_empty() {
        c.with_native_roots()
    } else {
        c.ca_certificate(Certificate::from_pem(pem("server_ca_pem", &t.server_ca_pem, "CERTIFICATE")?))
    };
    if !t.cert_pem.is_empty() {
        let cert = pem("cert_pem", &t.cert_pem, "CERTIFICATE")?;
        let key = pem("key_pem", &t.key_pem, "PRIVATE KEY")?;
        c = c.identity(Identity::from_pem(cert, key));
    }
    if !t.server_name.is_empty() {
        c = c.domain_name(t.server_name.clone());
    }
    Ok(c)
}

/// TLS options that a gRPC proxy cannot honour.
fn refused(t: &ClientTls) -> Option<String> {
    if t.insecure_skip_verify {
        return Some(
            "grpc.tls.insecure_skip_verify is not supported: give the backend's CA in grpc.tls.server_ca_pem".into(),
        );
    }
    if t.cert_pem.is_empty() != t.key_pem.is_empty() {
        return Some("grpc.tls.cert_pem and grpc.tls.key_pem go together (mutual TLS)".into());
    }
    None
}

/// Why the TLS options `t` of a gRPC proxy cannot be used (None: they can, or TLS is off):
/// `insecure_skip_verify`, a certificate without its key (or the reverse), a PEM option that
/// is neither a readable file, PEM text nor base64 of PEM, or certificates rustls refuses.
pub fn tls_unsupported(t: &ClientTls) -> Option<String> {
    if !t.enabled {
        return None;
    }
    let c = match tls_config(t) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    // Builds the TLS client as a channel would, so that bad certificates and keys, or a
    // system without root certificates, are found at start-up.
    Endpoint::from_static("https://localhost").tls_config(c).err().map(|e| format!("grpc.tls: {}", error_chain(&e)))
}

/// A PEM option of `grpc.tls` (see [`crate::config::tls::pem`]).
fn pem(option: &str, value: &str, kind: &str) -> Result<String, String> {
    crate::config::tls::pem("grpc.tls", option, value, kind)
}

/// `e` and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Calls the unary method of `proxy.kind` with `req` and `metadata`; `done` gets the answer
/// (or why there is none) within the proxy's timeout.
pub fn call(proxy: &Arc<Proxy>, req: Request, metadata: Headers, done: DoneFn<Response>) {
    spawn(proxy, done, move |proxy| async move { unary(&proxy, req, &metadata).await });
}

/// Calls `SharedPollRefresh` with `msg` (metadata: `grpc.static_metadata` and the
/// credentials only, as the call belongs to no connection); `done` gets the answer within
/// the proxy's timeout.
pub fn shared_poll_refresh(
    proxy: &Arc<Proxy>,
    msg: pb::SharedPollRefreshRequest,
    done: DoneFn<pb::SharedPollRefreshResponse>,
) {
    spawn(proxy, done, move |proxy| async move {
        let r = client(&proxy)?.shared_poll_refresh(request(&proxy, &Headers::new(), msg)).await;
        Ok(r.map_err(status_error)?.into_inner())
    });
}

/// Runs `call` on the client thread; `done` gets its answer, or a timeout at the proxy's
/// deadline.
fn spawn<T, F>(proxy: &Arc<Proxy>, done: DoneFn<T>, call: impl FnOnce(Arc<Proxy>) -> F + Send + 'static)
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, CallError>> + Send + 'static,
{
    let done = Done(Some(done));
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return done.answer(Err(e)),
    };
    let proxy = proxy.clone();
    let t0 = std::time::Instant::now();
    rt.spawn(async move {
        let timeout = proxy.timeout;
        let res = match tokio::time::timeout(timeout, call(proxy)).await {
            // A failure at the deadline is the deadline's (the backend or the connect timeout
            // gave up first).
            Ok(Err(_)) if t0.elapsed() >= timeout => Err(CallError::Timeout),
            Ok(res) => res,
            Err(_) => Err(CallError::Timeout),
        };
        done.answer(res);
    });
}

/// A call's callback: it runs once, with a transport error if the call's task ends without
/// an answer (a panic).
struct Done<T>(Option<DoneFn<T>>);

/// What gets a call's answer.
pub type DoneFn<T> = Box<dyn FnOnce(Result<T, CallError>) + Send>;

impl<T> Done<T> {
    fn answer(mut self, res: Result<T, CallError>) {
        if let Some(f) = self.0.take() {
            f(res);
        }
    }
}

impl<T> Drop for Done<T> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(CallError::Transport("the call ended without an answer".into())));
        }
    }
}

/// A client of `proxy`'s channel, compressing when `grpc.compression`.
fn client(proxy: &Proxy) -> Result<CentrifugoProxyClient<Channel>, CallError> {
    let c = CentrifugoProxyClient::new(channel(proxy)?).accept_compressed(CompressionEncoding::Gzip);
    Ok(if proxy.conf.grpc.compression { c.send_compressed(CompressionEncoding::Gzip) } else { c })
}

/// A request of `msg` with the call's metadata and deadline.
fn request<T>(proxy: &Proxy, metadata: &Headers, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    *r.metadata_mut() = metadata_map(proxy, metadata);
    r.set_timeout(proxy.timeout);
    r
}

async fn unary(proxy: &Proxy, req: Request, metadata: &Headers) -> Result<Response, CallError> {
    let mut c = client(proxy)?;
    match proxy.kind {
        Kind::Connect => {
            let msg = pb::ConnectRequest {
                client: req.client,
                transport: req.transport.into(),
                protocol: req.protocol.into(),
                encoding: req.encoding.into(),
                data: req.data.unwrap_or_default(),
                b64data: req.b64data,
                name: req.name,
                version: req.version,
                channels: req.channels,
            };
            let r = c.connect(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            Ok(answer(r.result.map(connect_result), r.error, r.disconnect))
        }
        Kind::Refresh => {
            let msg = pb::RefreshRequest {
                client: req.client,
                transport: req.transport.into(),
                protocol: req.protocol.into(),
                encoding: req.encoding.into(),
                user: req.user,
                meta: req.meta.unwrap_or_default(),
                labels: Default::default(),
            };
            let r = c.refresh(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            let result = r.result.map(|x| ResultObj {
                expired: x.expired,
                expire_at: x.expire_at,
                info: some(x.info),
                b64info: x.b64info,
                meta: some(x.meta),
                ..ResultObj::default()
            });
            Ok(answer(result, r.error, r.disconnect))
        }
        Kind::Subscribe => {
            let msg = subscribe_request(req);
            let r = c.subscribe(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            Ok(subscribe_response(r))
        }
        Kind::Publish => {
            let msg = pb::PublishRequest {
                client: req.client,
                transport: req.transport.into(),
                protocol: req.protocol.into(),
                encoding: req.encoding.into(),
                user: req.user,
                channel: req.channel,
                data: req.data.unwrap_or_default(),
                b64data: req.b64data,
                meta: req.meta.unwrap_or_default(),
                labels: Default::default(),
            };
            let r = c.publish(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            let result = r.result.map(|x| ResultObj {
                data: some(x.data),
                b64data: x.b64data,
                skip_history: x.skip_history,
                tags: pairs(x.tags),
                idempotency_key: x.idempotency_key,
                delta: x.delta,
                version: x.version,
                version_epoch: x.version_epoch,
                ..ResultObj::default()
            });
            Ok(answer(result, r.error, r.disconnect))
        }
        Kind::Rpc => {
            let msg = pb::RpcRequest {
                client: req.client,
                transport: req.transport.into(),
                protocol: req.protocol.into(),
                encoding: req.encoding.into(),
                user: req.user,
                method: req.method,
                data: req.data.unwrap_or_default(),
                b64data: req.b64data,
                meta: req.meta.unwrap_or_default(),
                labels: Default::default(),
            };
            let r = c.rpc(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            let result = r.result.map(|x| ResultObj { data: some(x.data), b64data: x.b64data, ..ResultObj::default() });
            Ok(answer(result, r.error, r.disconnect))
        }
        Kind::SubRefresh => {
            let msg = pb::SubRefreshRequest {
                client: req.client,
                transport: req.transport.into(),
                protocol: req.protocol.into(),
                encoding: req.encoding.into(),
                user: req.user,
                channel: req.channel,
                meta: req.meta.unwrap_or_default(),
                labels: Default::default(),
            };
            let r = c.sub_refresh(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            let result = r.result.map(|x| ResultObj {
                expired: x.expired,
                expire_at: x.expire_at,
                info: some(x.info),
                b64info: x.b64info,
                ..ResultObj::default()
            });
            Ok(answer(result, r.error, r.disconnect))
        }
        Kind::SubscribeStream => {
            Err(CallError::Transport("a subscription stream is opened with open_stream, not called".into()))
        }
        Kind::SharedPollRefresh => {
            Err(CallError::Transport("a shared poll refresh is called with shared_poll_refresh".into()))
        }
        Kind::MapPublish => {
            let msg = pb::MapPublishRequest {
                client: req.client,
                transport: req.transport.into(),
                protocol: req.protocol.into(),
                encoding: req.encoding.into(),
                user: req.user,
                channel: req.channel,
                key: req.key,
                data: req.data.unwrap_or_default(),
                b64data: req.b64data,
                meta: req.meta.unwrap_or_default(),
                labels: Default::default(),
            };
            let r = c.map_publish(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            let result = r.result.map(|x| ResultObj {
                key: x.key,
                data: some(x.data),
                b64data: x.b64data,
                tags: pairs(x.tags),
                key_mode: x.key_mode,
                idempotency_key: x.idempotency_key,
                delta: x.delta,
                version: x.version,
                version_epoch: x.version_epoch,
                ..ResultObj::default()
            });
            Ok(answer(result, r.error, r.disconnect))
        }
        Kind::MapRemove => {
            let msg = pb::MapRemoveRequest {
                client: req.client,
                transport: req.transport.into(),
                protocol: req.protocol.into(),
                encoding: req.encoding.into(),
                user: req.user,
                channel: req.channel,
                key: req.key,
                meta: req.meta.unwrap_or_default(),
                labels: Default::default(),
            };
            let r = c.map_remove(request(proxy, metadata, msg)).await.map_err(status_error)?.into_inner();
            let result = r.result.map(|x| ResultObj {
                key: x.key,
                tags: pairs(x.tags),
                idempotency_key: x.idempotency_key,
                ..ResultObj::default()
            });
            Ok(answer(result, r.error, r.disconnect))
        }
    }
}

fn subscribe_request(req: Request) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        client: req.client,
        transport: req.transport.into(),
        protocol: req.protocol.into(),
        encoding: req.encoding.into(),
        user: req.user,
        channel: req.channel,
        token: String::new(),
        meta: req.meta.unwrap_or_default(),
        data: req.data.unwrap_or_default(),
        b64data: req.b64data,
        labels: Default::default(),
    }
}

fn subscribe_response(r: pb::SubscribeResponse) -> Response {
    let result = r.result.map(|x| ResultObj {
        expire_at: x.expire_at,
        info: some(x.info),
        b64info: x.b64info,
        data: some(x.data),
        b64data: x.b64data,
        over: over(x.r#override),
        ..ResultObj::default()
    });
    answer(result, r.error, r.disconnect)
}

fn connect_result(x: pb::ConnectResult) -> ResultObj {
    let mut subs: Vec<(String, SubOptions)> = x
        .subs
        .into_iter()
        .map(|(ch, o)| {
            let o = SubOptions {
                info: some(o.info),
                b64info: o.b64info,
                data: some(o.data),
                b64data: o.b64data,
                over: over(o.r#override),
            };
            (ch, o)
        })
        .collect();
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    ResultObj {
        user: x.user,
        expire_at: x.expire_at,
        info: some(x.info),
        b64info: x.b64info,
        data: some(x.data),
        b64data: x.b64data,
        channels: x.channels,
        subs,
        meta: some(x.meta),
        ..ResultObj::default()
    }
}

fn answer(result: Option<ResultObj>, error: Option<pb::Error>, disconnect: Option<pb::Disconnect>) -> Response {
    Response {
        result,
        error: error.map(|e| ErrorObj { code: e.code, message: e.message, temporary: e.temporary }),
        disconnect: disconnect.map(|d| DisconnectObj { code: d.code, reason: d.reason }),
    }
}

/// A bytes field: empty is absent.
fn some(b: Bytes) -> Option<Bytes> {
    (!b.is_empty()).then_some(b)
}

fn over(o: Option<pb::SubscribeOptionOverride>) -> Override {
    let o = o.unwrap_or_default();
    Override {
        presence: o.presence.map(|b| b.value),
        join_leave: o.join_leave.map(|b| b.value),
        force_push_join_leave: o.force_push_join_leave.map(|b| b.value),
        force_recovery: o.force_recovery.map(|b| b.value),
        force_positioning: o.force_positioning.map(|b| b.value),
    }
}

/// A map as pairs, by key.
fn pairs(m: std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort();
    v
}

/// Metadata that tonic or HTTP/2 own (set from a forwarded header, they would break the call).
fn reserved(key: &str) -> bool {
    key.starts_with("grpc-")
        || matches!(
            key,
            "content-type"
                | "te"
                | "user-agent"
                | "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
        )
}

/// The call's metadata: `grpc.static_metadata`, then `given` (a later entry replaces an
/// earlier one of the same key), then the credentials. Keys are lower-cased; an entry whose
/// key or value cannot be metadata (or that gRPC owns) is left out.
fn metadata_map(proxy: &Proxy, given: &Headers) -> MetadataMap {
    let g = &proxy.conf.grpc;
    let mut md = MetadataMap::new();
    let statics = g.static_metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let creds = (!g.credentials_key.is_empty()).then_some((g.credentials_key.as_str(), g.credentials_value.as_str()));
    for (k, v) in statics.chain(given.iter().map(|(k, v)| (k.as_str(), v.as_str()))).chain(creds) {
        let k = k.to_ascii_lowercase();
        if reserved(&k) {
            continue;
        }
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(k.as_bytes()), MetadataValue::try_from(v)) {
            md.insert(key, value);
        }
    }
    md
}

/// Why a call got a status instead of an answer.
fn status_error(s: Status) -> CallError {
    if s.code() == Code::DeadlineExceeded {
        return CallError::Timeout;
    }
    // A status made here from an error (could not connect, the connection broke) keeps that
    // error as its source; one the backend sent has none.
    if let Some(src) = std::error::Error::source(&s) {
        return CallError::Transport(format!("{}: {}", s.message(), error_chain(src)));
    }
    CallError::Grpc(format!("{:?}: {}", s.code(), s.message()))
}

/// An open subscription stream: dropping it cancels the stream.
pub struct StreamHandle {
    /// Publications into a bidirectional stream.
    tx: Option<mpsc::Sender<pb::StreamSubscribeRequest>>,
    state: Arc<StreamState>,
    task: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct StreamState {
    /// The stream ended (or failed to open).
    ended: AtomicBool,
    /// The handle was dropped: the stream's end is reported no more.
    dropped: AtomicBool,
}

impl StreamHandle {
    /// Sends a client's publication into a bidirectional stream; false when it is closed (or
    /// unidirectional, or [`PUBLISH_QUEUE`] publications wait already).
    pub fn publish(&self, data: Bytes) -> bool {
        let Some(tx) = &self.tx else { return false };
        if self.state.ended.load(Ordering::Acquire) {
            return false;
        }
        let msg = pb::StreamSubscribeRequest {
            subscribe_request: None,
            publication: Some(pb::Publication { data, tags: Default::default() }),
        };
        tx.try_send(msg).is_ok()
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.state.dropped.store(true, Ordering::Release);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Opens `SubscribeUnidirectional` (or `SubscribeBidirectional`, sending `req` first) and
/// reports its events, in order, to `on_event`: the subscribe answer first (within the
/// proxy's timeout), then publications, then its end.
///
/// A stream that fails to open, or whose first message is not a subscribe answer, reports
/// `Subscribed(Err(..))` and nothing more; so does an answer with `error` or `disconnect`
/// (`Subscribed(Ok(..))`), after which the stream is cancelled. Otherwise `Ended` comes last.
pub fn open_stream(
    proxy: &Arc<Proxy>,
    req: Request,
    metadata: Headers,
    bidirectional: bool,
    on_event: Box<dyn FnMut(StreamEvent) + Send>,
) -> StreamHandle {
    let state = Arc::new(StreamState::default());
    let mut events = Events { f: on_event, stage: Stage::Opening, state: state.clone() };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            events.subscribed(Err(e));
            return StreamHandle { tx: None, state, task: None };
        }
    };
    let sub = subscribe_request(req);
    let (tx, body) = if bidirectional {
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE + 1);
        // The first message of the stream; the queue is empty, so it fits.
        let first = pb::StreamSubscribeRequest { subscribe_request: Some(sub), publication: None };
        let _ = tx.try_send(first);
        (Some(tx), Body::Bidirectional(rx))
    } else {
        (None, Body::Unidirectional(Box::new(sub)))
    };
    let task = rt.spawn(run_stream(proxy.clone(), body, metadata, events));
    StreamHandle { tx, state, task: Some(task.abort_handle()) }
}

/// What a stream sends: one subscribe request, or a stream of messages.
enum Body {
    Unidirectional(Box<pb::SubscribeRequest>),
    Bidirectional(mpsc::Receiver<pb::StreamSubscribeRequest>),
}

#[derive(PartialEq)]
enum Stage {
    Opening,
    Subscribed,
    Done,
}

/// A stream's callback, with where the stream is: it reports an end the stream's task did not
/// (a panic), unless the handle was dropped.
struct Events {
    f: Box<dyn FnMut(StreamEvent) + Send>,
    stage: Stage,
    state: Arc<StreamState>,
}

impl Events {
    fn subscribed(&mut self, res: Result<Response, CallError>) {
        let ok = matches!(&res, Ok(r) if r.error.is_none() && r.disconnect.is_none());
        self.stage = if ok { Stage::Subscribed } else { Stage::Done };
        if !ok {
            self.state.ended.store(true, Ordering::Release);
        }
        (self.f)(StreamEvent::Subscribed(Box::new(res)));
    }

    fn publication(&mut self, p: pb::Publication) {
        (self.f)(StreamEvent::Publication { data: p.data, tags: pairs(p.tags) });
    }

    fn ended(&mut self, eof: bool) {
        self.stage = Stage::Done;
        self.state.ended.store(true, Ordering::Release);
        (self.f)(StreamEvent::Ended { eof });
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.state.ended.store(true, Ordering::Release);
        if self.state.dropped.load(Ordering::Acquire) {
            return;
        }
        match self.stage {
            Stage::Opening => {
                (self.f)(StreamEvent::Subscribed(Box::new(Err(CallError::Transport("the stream ended".into())))))
            }
            Stage::Subscribed => (self.f)(StreamEvent::Ended { eof: false }),
            Stage::Done => {}
        }
    }
}

async fn run_stream(proxy: Arc<Proxy>, body: Body, metadata: Headers, mut events: Events) {
    let opened = tokio::time::timeout(proxy.timeout, async {
        let mut c = client(&proxy)?;
        let mut r = tonic::Request::new(());
        *r.metadata_mut() = metadata_map(&proxy, &metadata);
        let (md, ext, ()) = r.into_parts();
        let mut stream = match body {
            Body::Unidirectional(sub) => c.subscribe_unidirectional(tonic::Request::from_parts(md, ext, *sub)).await,
            Body::Bidirectional(rx) => {
                c.subscribe_bidirectional(tonic::Request::from_parts(md, ext, ReceiverStream::new(rx))).await
            }
        }
        .map_err(status_error)?
        .into_inner();
        match stream.message().await.map_err(status_error)? {
            Some(pb::StreamSubscribeResponse { subscribe_response: Some(r), .. }) => {
                Ok((stream, subscribe_response(r)))
            }
            Some(_) => Err(CallError::Decode("the stream's first message has no subscribe_response".into())),
            None => Err(CallError::Decode("the stream ended before the subscribe answer".into())),
        }
    })
    .await
    .unwrap_or(Err(CallError::Timeout));
    let mut stream = match opened {
        Ok((stream, answer)) => {
            events.subscribed(Ok(answer));
            if events.stage != Stage::Subscribed {
                return;
            }
            stream
        }
        Err(e) => return events.subscribed(Err(e)),
    };
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                if let Some(p) = m.publication {
                    events.publication(p);
                }
            }
            Ok(None) => return events.ended(true),
            Err(_) => return events.ended(false),
        }
    }
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
