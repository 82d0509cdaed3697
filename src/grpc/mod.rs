//! The gRPC servers. Here, the server API (`grpc_api.enabled`, port `grpc_api.port`, 10000 by
//! default): Centrifugo's `centrifugal.centrifugo.api.CentrifugoApi` service from
//! `proto/api.proto`. The unidirectional client stream (`uni_grpc`) is [`uni`].
//!
//! Each server runs tonic on one thread of its own with a current-thread tokio runtime; the
//! workers stay pure monoio. Each API call is decoded into the same JSON params as an HTTP
//! request and through the same parser into a `Command`, then sent round-robin to a worker's
//! inbox as a job that runs it through `crate::exec::run` and hands the `Reply` back over a
//! oneshot channel. Errors travel in the response's `error` field (Centrifugo's codes), or as
//! gRPC statuses with `x-centrifugo-error-mode: transport` metadata.
//!
//! With `grpc_api.key` set, every call needs `authorization: apikey <KEY>` metadata, else
//! `UNAUTHENTICATED`.

mod convert;
pub mod uni;

/// Messages and service generated from `proto/api.proto` at build time.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("centrifugal.centrifugo.api");
}

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::api::parse::{self, DecodeError};
use crate::api::{Method, Res};
use crate::config::Config;
use crate::error::{ApiError, Error, ErrorKind};
use crate::metrics::Protocol;
use crate::runtime::inbox::Mailbox;
use crate::runtime::worker::Msg;
use pb::centrifugo_api_server::{CentrifugoApi, CentrifugoApiServer};

/// A running gRPC server: its address and the handle that stops it.
pub struct GrpcServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    /// Stops accepting new connections and calls; calls in flight go on (see
    /// [`GrpcServer::stop`]).
    pub fn stop_accepting(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stops accepting (if not yet) and lets calls in flight finish, waiting at most `grace`
    /// for them.
    pub fn stop(mut self, grace: Duration) {
        self.stop_accepting();
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + grace;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Binds `host:port` for the gRPC server named by `option` (so a bind error stops start-up
/// and names the option).
fn bind(option: &str, host: &str, port: u16) -> Result<StdListener, Error> {
    let listener = StdListener::bind((host, port))
        .map_err(|e| Error::new(ErrorKind::Io, format!("{option}: cannot listen on {host}:{port}: {e}")))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// HTTP/2 keep-alive of a server: a PING after this much idle time, and how long its ack may
/// take before the connection is dropped.
type KeepAlive = Option<(Duration, Duration)>;

/// Serves `routes` on `listener` from a thread of its own (named `thread`) running a
/// current-thread tokio runtime, until [`GrpcServer::stop_accepting`].
fn serve_on_thread(
    option: &'static str,
    thread: &str,
    listener: StdListener,
    routes: tonic::service::Routes,
    keepalive: KeepAlive,
    tls: &crate::config::tls::Tls,
) -> Result<GrpcServer, Error> {
    let addr = listener.local_addr()?;
    let tls = server_tls(option, tls)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "{option}: cannot start the runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "{option}: listener");
                        return;
                    }
                };
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let mut builder = tonic::transport::Server::builder();
                if let Some((interval, timeout)) = keepalive {
                    builder = builder.http2_keepalive_interval(Some(interval)).http2_keepalive_timeout(Some(timeout));
                }
                if let Some(tls) = tls {
                    builder = match builder.tls_config(tls) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::error!(error = %e, "{option}.tls");
                            return;
                        }
                    };
                }
                let res = builder
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stop_rx.await;
                    })
                    .await;
                if let Err(e) = res {
                    tracing::error!(error = %e, "{option} server failed");
                }
            });
        })
        .map_err(|e| Error::new(ErrorKind::Io, format!("{option}: cannot spawn the gRPC thread: {e}")))?;
    Ok(GrpcServer { addr, stop: Some(stop_tx), thread: Some(thread) })
}

/// The `tls` section of a gRPC server (`grpc_api`, `uni_grpc`) as tonic takes it: the
/// certificate and key, and with `client_ca_pem` client certificates required.
fn server_tls(option: &str, t: &crate::config::tls::Tls) -> Result<Option<tonic::transport::ServerTlsConfig>, Error> {
    use crate::config::tls::pem;
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    if !t.enabled {
        return Ok(None);
    }
    // The loader checked that certificate, key and CA are usable (`config::tls::validate`).
    let at = format!("{option}.tls");
    let cert = pem(&at, "cert_pem", &t.cert_pem, "CERTIFICATE").map_err(Error::config)?;
    let key = pem(&at, "key_pem", &t.key_pem, "PRIVATE KEY").map_err(Error::config)?;
    let mut c = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !t.client_ca_pem.is_empty() {
        let ca = pem(&at, "client_ca_pem", &t.client_ca_pem, "CERTIFICATE").map_err(Error::config)?;
        c = c.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(c))
}

/// Binds `grpc_api.port` on the HTTP server's address (so a bind error stops start-up) and
/// starts the gRPC thread.
pub fn start(cfg: &Config, mailboxes: Vec<Mailbox<Msg>>) -> Result<GrpcServer, Error> {
    let host = if cfg.http_server.address.is_empty() { "0.0.0.0" } else { cfg.http_server.address.as_str() };
    let listener = bind("grpc_api", host, cfg.grpc_api.port)?;
    let key = cfg.grpc_api.key.clone();
    let svc = Service { mailboxes, next: AtomicUsize::new(0) };
    let server = CentrifugoApiServer::with_interceptor(svc, move |req: Request<()>| check_key(&key, req));
    let g = serve_on_thread(
        "grpc_api",
        "gyre-grpc",
        listener,
        tonic::service::Routes::new(server),
        None,
        &cfg.grpc_api.tls,
    )?;
    tracing::info!(address = %g.addr, tls = cfg.grpc_api.tls.enabled, "gRPC server API listening");
    Ok(g)
}

/// `authorization: apikey <KEY>` when a key is configured (exact match, as Centrifugo).
#[allow(clippy::result_large_err)]
fn check_key(key: &str, req: Request<()>) -> Result<Request<()>, Status> {
    if key.is_empty() {
        return Ok(req);
    }
    let want = format!("apikey {key}");
    let got = req.metadata().get("authorization").map(|v| v.as_bytes()).unwrap_or(b"");
    let same = got.len() == want.len() && got.iter().zip(want.as_bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if same {
        Ok(req)
    } else {
        Err(Status::unauthenticated("unauthenticated"))
    }
}

struct Service {
    mailboxes: Vec<Mailbox<Msg>>,
    next: AtomicUsize,
}

/// Errors as gRPC statuses (`x-centrifugo-error-mode: transport`), with Centrifugo's mapping.
fn transport_status(e: &ApiError) -> Status {
    let msg = e.message.to_string();
    match e.code {
        102 | 104 => Status::not_found(msg),
        107 | 108 => Status::invalid_argument(msg),
        112 => Status::out_of_range(msg),
        113 => Status::already_exists(msg),
        _ => Status::internal(msg),
    }
}

impl Service {
    /// Decodes `params` as `method`'s JSON params and runs the command on a worker.
    async fn run(&self, method: Method, params: Value) -> Result<Res, ApiError> {
        let body = serde_json::to_vec(&params).map_err(|_| ApiError::BAD_REQUEST)?;
        let cmd = match parse::decode_params(method, &body) {
            Ok(c) => c,
            Err(DecodeError::Malformed) => return Err(ApiError::BAD_REQUEST),
            Err(DecodeError::Api(e)) => return Err(e),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let to = self.next.fetch_add(1, Ordering::Relaxed) % self.mailboxes.len();
        let msg = Msg::Job(Box::new(move |w| {
            let w = w.clone();
            monoio::spawn(async move {
                let method = cmd.method();
                let started = std::time::Instant::now();
                let reply = crate::exec::run(w, cmd).await;
                let error = reply.as_ref().err().map(|e| e.code);
                crate::metrics::api_command(Protocol::Grpc, method, started.elapsed(), error);
                let _ = tx.send(reply);
            });
        }));
        if !self.mailboxes[to].send(vec![msg]) {
            return Err(ApiError::api_internal());
        }
        rx.await.unwrap_or_else(|_| Err(ApiError::api_internal()))
    }
}

fn transport_mode(md: &MetadataMap) -> bool {
    md.get("x-centrifugo-error-mode").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"transport"))
}

impl Service {
    /// One unary call: the request's JSON params run as `method`; the result (or error) is
    /// put in the method's response by `wrap(error, result)`.
    async fn unary<Q, R, P>(
        &self,
        method: Method,
        req: Request<Q>,
        params: impl FnOnce(Q) -> Value,
        result: impl FnOnce(Res) -> R,
        wrap: impl FnOnce(Option<pb::Error>, Option<R>) -> P,
    ) -> Result<Response<P>, Status> {
        let transport = transport_mode(req.metadata());
        match self.run(method, params(req.into_inner())).await {
            Ok(res) => Ok(Response::new(wrap(None, Some(result(res))))),
            Err(e) if transport => Err(transport_status(&e)),
            Err(e) => Ok(Response::new(wrap(Some(convert::error(&e)), None))),
        }
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl CentrifugoApi for Service {
    async fn batch(&self, req: Request<pb::BatchRequest>) -> Answer<pb::BatchResponse> {
        match self.run(Method::Batch, convert::batch(req.into_inner())).await {
            Ok(res) => Ok(Response::new(convert::batch_res(res))),
            // A batch as a whole fails only on a malformed request.
            Err(e) => Err(Status::invalid_argument(e.message)),
        }
    }

    async fn publish(&self, req: Request<pb::PublishRequest>) -> Answer<pb::PublishResponse> {
        let wrap = |error, result| pb::PublishResponse { error, result };
        self.unary(Method::Publish, req, convert::publish, convert::publish_res, wrap).await
    }

    async fn broadcast(&self, req: Request<pb::BroadcastRequest>) -> Answer<pb::BroadcastResponse> {
        let wrap = |error, result| pb::BroadcastResponse { error, result };
        self.unary(Method::Broadcast, req, convert::broadcast, convert::broadcast_res, wrap).await
    }

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Answer<pb::SubscribeResponse> {
        let wrap = |error, result| pb::SubscribeResponse { error, result };
        self.unary(Method::Subscribe, req, convert::subscribe, |_| pb::SubscribeResult {}, wrap).await
    }

    async fn unsubscribe(&self, req: Request<pb::UnsubscribeRequest>) -> Answer<pb::UnsubscribeResponse> {
        let wrap = |error, result| pb::UnsubscribeResponse { error, result };
        self.unary(Method::Unsubscribe, req, convert::unsubscribe, |_| pb::UnsubscribeResult {}, wrap).await
    }

    async fn disconnect(&self, req: Request<pb::DisconnectRequest>) -> Answer<pb::DisconnectResponse> {
        let wrap = |error, result| pb::DisconnectResponse { error, result };
        self.unary(Method::Disconnect, req, convert::disconnect, |_| pb::DisconnectResult {}, wrap).await
    }

    async fn presence(&self, req: Request<pb::PresenceRequest>) -> Answer<pb::PresenceResponse> {
        let wrap = |error, result| pb::PresenceResponse { error, result };
        let params = |r: pb::PresenceRequest| convert::channel(r.channel);
        self.unary(Method::Presence, req, params, convert::presence_res, wrap).await
    }

    async fn presence_stats(&self, req: Request<pb::PresenceStatsRequest>) -> Answer<pb::PresenceStatsResponse> {
        let wrap = |error, result| pb::PresenceStatsResponse { error, result };
        let params = |r: pb::PresenceStatsRequest| convert::channel(r.channel);
        self.unary(Method::PresenceStats, req, params, convert::presence_stats_res, wrap).await
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> Answer<pb::HistoryResponse> {
        let wrap = |error, result| pb::HistoryResponse { error, result };
        self.unary(Method::History, req, convert::history, convert::history_res, wrap).await
    }

    async fn history_remove(&self, req: Request<pb::HistoryRemoveRequest>) -> Answer<pb::HistoryRemoveResponse> {
        let wrap = |error, result| pb::HistoryRemoveResponse { error, result };
        let params = |r: pb::HistoryRemoveRequest| convert::channel(r.channel);
        self.unary(Method::HistoryRemove, req, params, |_| pb::HistoryRemoveResult {}, wrap).await
    }

    async fn map_publish(&self, req: Request<pb::MapPublishRequest>) -> Answer<pb::MapPublishResponse> {
        let wrap = |error, result| pb::MapPublishResponse { error, result };
        self.unary(Method::MapPublish, req, convert::map_publish, convert::map_publish_res, wrap).await
    }

    async fn map_remove(&self, req: Request<pb::MapRemoveRequest>) -> Answer<pb::MapRemoveResponse> {
        let wrap = |error, result| pb::MapRemoveResponse { error, result };
        self.unary(Method::MapRemove, req, convert::map_remove, convert::map_remove_res, wrap).await
    }

    async fn map_read_state(&self, req: Request<pb::MapReadStateRequest>) -> Answer<pb::MapReadStateResponse> {
        let wrap = |error, result| pb::MapReadStateResponse { error, result };
        self.unary(Method::MapReadState, req, convert::map_read_state, convert::map_state_res, wrap).await
    }

    async fn map_read_stream(&self, req: Request<pb::MapReadStreamRequest>) -> Answer<pb::MapReadStreamResponse> {
        let wrap = |error, result| pb::MapReadStreamResponse { error, result };
        self.unary(Method::MapReadStream, req, convert::map_read_stream, convert::map_stream_res, wrap).await
    }

    async fn map_stats(&self, req: Request<pb::MapStatsRequest>) -> Answer<pb::MapStatsResponse> {
        let wrap = |error, result| pb::MapStatsResponse { error, result };
        let params = |r: pb::MapStatsRequest| convert::channel(r.channel);
        self.unary(Method::MapStats, req, params, convert::map_stats_res, wrap).await
    }

    async fn map_clear(&self, req: Request<pb::MapClearRequest>) -> Answer<pb::MapClearResponse> {
        let wrap = |error, result| pb::MapClearResponse { error, result };
        let params = |r: pb::MapClearRequest| convert::channel(r.channel);
        self.unary(Method::MapClear, req, params, |_| pb::MapClearResult {}, wrap).await
    }

    async fn shared_poll_publish(
        &self,
        req: Request<pb::SharedPollPublishRequest>,
    ) -> Answer<pb::SharedPollPublishResponse> {
        let wrap = |error, result| pb::SharedPollPublishResponse { error, result };
        let result = |_| pb::SharedPollPublishResult {};
        self.unary(Method::SharedPollPublish, req, convert::shared_poll_publish, result, wrap).await
    }

    async fn info(&self, req: Request<pb::InfoRequest>) -> Answer<pb::InfoResponse> {
        let wrap = |error, result| pb::InfoResponse { error, result };
        self.unary(Method::Info, req, |_| serde_json::json!({}), convert::info_res, wrap).await
    }

    async fn rpc(&self, req: Request<pb::RpcRequest>) -> Answer<pb::RpcResponse> {
        let wrap = |error, result| pb::RpcResponse { error, result };
        self.unary(Method::Rpc, req, convert::rpc, |_| pb::RpcResult::default(), wrap).await
    }

    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> Answer<pb::RefreshResponse> {
        let wrap = |error, result| pb::RefreshResponse { error, result };
        self.unary(Method::Refresh, req, convert::refresh, |_| pb::RefreshResult {}, wrap).await
    }

    async fn channels(&self, req: Request<pb::ChannelsRequest>) -> Answer<pb::ChannelsResponse> {
        let wrap = |error, result| pb::ChannelsResponse { error, result };
        self.unary(Method::Channels, req, convert::channels, convert::channels_res, wrap).await
    }
}
