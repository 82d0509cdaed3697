//! Tests of the gRPC proxy client against a real tonic backend in this process (the
//! service's server side generated from the same `proto/proxy.proto`).
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::codegen::BoxStream;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Response as GrpcResponse, Status, Streaming};

use super::*;
use crate::config::proxy::ProxyCommon;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod server {
    include!(concat!(env!("OUT_DIR"), "/proxy_server/centrifugal.centrifugo.proxy.rs"));
}
use server::centrifugo_proxy_server::{CentrifugoProxy, CentrifugoProxyServer};

/// What the backend saw that a reply cannot show (cancelled streams).
type Log = Arc<Mutex<Vec<String>>>;

struct Backend {
    log: Log,
}

type Rq<T> = tonic::Request<T>;
type Answer<T> = Result<GrpcResponse<T>, Status>;
type Pushes = BoxStream<pb::StreamSubscribeResponse>;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The request's metadata as a JSON object (ASCII values).
fn metadata_json(md: &MetadataMap) -> Bytes {
    use tonic::metadata::KeyAndValueRef::Ascii;
    let ascii = |kv| if let Ascii(k, v) = kv { Some((k.as_str(), v.to_str().ok()?)) } else { None };
    let m: BTreeMap<&str, &str> = md.iter().filter_map(ascii).collect();
    Bytes::from(serde_json::to_vec(&m).unwrap())
}

/// An override of presence, join_leave, force_push_join_leave, force_recovery and
/// force_positioning.
fn over(v: [Option<bool>; 5]) -> Option<pb::SubscribeOptionOverride> {
    let b = |i: usize| v[i].map(|value| pb::BoolValue { value });
    Some(pb::SubscribeOptionOverride {
        presence: b(0),
        join_leave: b(1),
        force_push_join_leave: b(2),
        force_recovery: b(3),
        force_positioning: b(4),
    })
}

fn refusal(what: &str) -> (Option<pb::Error>, Option<pb::Disconnect>) {
    match what {
        "error" => (Some(pb::Error { code: 1000, message: "custom".into(), temporary: true }), None),
        "disconnect" => (None, Some(pb::Disconnect { code: 4501, reason: "unauthorized".into() })),
        "both" => (
            Some(pb::Error { code: 1001, message: "also".into(), temporary: false }),
            Some(pb::Disconnect { code: 4502, reason: "bye".into() }),
        ),
        _ => (None, None),
    }
}

/// "sleep" answers in 3 s, "status" and "deadline" with a status.
async fn special(what: &str) -> Result<(), Status> {
    match what {
        "sleep" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(())
        }
        "status" => Err(Status::permission_denied("nope")),
        "deadline" => Err(Status::deadline_exceeded("the backend's own deadline")),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl CentrifugoProxy for Backend {
    async fn connect(&self, r: Rq<pb::ConnectRequest>) -> Answer<pb::ConnectResponse> {
        let r = r.into_inner();
        special(&r.name).await?;
        let (error, disconnect) = refusal(&r.name);
        let echo = format!(
            r#"{{"transport":"{}","protocol":"{}","encoding":"{}","name":"{}","version":"{}"}}"#,
            r.transport, r.protocol, r.encoding, r.name, r.version
        );
        let mut subs = HashMap::new();
        subs.insert(
            "news".to_string(),
            pb::SubscribeOptions {
                info: b(r#"{"a":1}"#),
                r#override: over([Some(false), Some(true), None, None, None]),
                expire_at: 5,
                ..Default::default()
            },
        );
        subs.insert(
            "chat".to_string(),
            pb::SubscribeOptions {
                b64data: "e30=".into(),
                data: b("{}"),
                r#override: over([None, None, Some(true), Some(true), Some(false)]),
                ..Default::default()
            },
        );
        let result = pb::ConnectResult {
            user: format!("u-{}", r.client),
            expire_at: 1767225600,
            info: r.data,
            b64info: r.b64data,
            data: b(&echo),
            channels: r.channels,
            subs,
            meta: b(r#"{"role":"admin"}"#),
            caps: vec![pb::ChannelsCapability {
                channels: vec!["x".into()],
                allow: vec!["sub".into()],
                r#match: "".into(),
            }],
            labels: [("l".to_string(), "v".to_string())].into_iter().collect(),
            ..Default::default()
        };
        Ok(GrpcResponse::new(pb::ConnectResponse { result: Some(result), error, disconnect }))
    }

    async fn refresh(&self, r: Rq<pb::RefreshRequest>) -> Answer<pb::RefreshResponse> {
        let r = r.into_inner();
        let result = pb::RefreshResult {
            expired: r.user == "gone",
            expire_at: 42,
            info: r.meta,
            meta: b(r#"{"m":2}"#),
            ..Default::default()
        };
        Ok(GrpcResponse::new(pb::RefreshResponse { result: Some(result), error: None, disconnect: None }))
    }

    async fn subscribe(&self, r: Rq<pb::SubscribeRequest>) -> Answer<pb::SubscribeResponse> {
        Ok(GrpcResponse::new(subscribe_answer(r.into_inner())))
    }

    async fn publish(&self, r: Rq<pb::PublishRequest>) -> Answer<pb::PublishResponse> {
        let r = r.into_inner();
        let (error, disconnect) = refusal(&r.channel);
        let result = pb::PublishResult {
            data: r.data,
            b64data: r.b64data,
            skip_history: true,
            tags: pairs_of(&[("b", "2"), ("a", "1")]).into_iter().collect(),
            idempotency_key: format!("{}/{}", r.user, r.channel),
            delta: true,
            version: 9,
            version_epoch: "e".into(),
        };
        Ok(GrpcResponse::new(pb::PublishResponse { result: Some(result), error, disconnect }))
    }

    async fn rpc(&self, r: Rq<pb::RpcRequest>) -> Answer<pb::RpcResponse> {
        let md = metadata_json(r.metadata());
        let r = r.into_inner();
        special(&r.method).await?;
        let (error, disconnect) = refusal(&r.method);
        let data = if r.method == "metadata" { md } else { r.data };
        let result = pb::RpcResult { data, b64data: r.b64data };
        Ok(GrpcResponse::new(pb::RpcResponse { result: Some(result), error, disconnect }))
    }

    async fn sub_refresh(&self, r: Rq<pb::SubRefreshRequest>) -> Answer<pb::SubRefreshResponse> {
        let r = r.into_inner();
        let result = pb::SubRefreshResult {
            expired: r.channel == "gone",
            expire_at: 100,
            info: b(&format!(r#"{{"user":"{}"}}"#, r.user)),
            b64info: "aQ==".into(),
        };
        let (error, disconnect) = refusal(&r.channel);
        Ok(GrpcResponse::new(pb::SubRefreshResponse { result: Some(result), error, disconnect }))
    }

    async fn subscribe_unidirectional(&self, r: Rq<pb::SubscribeRequest>) -> Answer<Pushes> {
        let md = metadata_json(r.metadata());
        let r = r.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::StreamSubscribeResponse, Status>>(16);
        let log = self.log.clone();
        let channel = r.channel.clone();
        let mut first = subscribe_answer(r);
        if channel == "metadata" {
            first.result.as_mut().unwrap().data = md;
        }
        tokio::spawn(async move {
            let answer = pb::StreamSubscribeResponse { subscribe_response: Some(first), publication: None };
            // "silent" never answers, "nosub" answers with a publication.
            if channel == "nosub" || channel == "silent" {
                if channel == "nosub" {
                    let _ = tx.send(Ok(publication("p", &[]))).await;
                }
                tx.closed().await;
                return log.lock().unwrap().push(format!("{channel} cancelled"));
            }
            let _ = tx.send(Ok(answer)).await;
            match channel.as_str() {
                "fail" => {
                    let _ = tx.send(Ok(publication("1", &[]))).await;
                    let _ = tx.send(Err(Status::internal("broken"))).await;
                }
                "hold" => {
                    tx.closed().await;
                    log.lock().unwrap().push("hold cancelled".into());
                }
                _ => {
                    let _ = tx.send(Ok(publication("1", &[("n", "1"), ("k", "v")]))).await;
                    let _ = tx.send(Ok(pb::StreamSubscribeResponse::default())).await;
                    let _ = tx.send(Ok(publication("2", &[]))).await;
                }
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn subscribe_bidirectional(&self, r: Rq<Streaming<pb::StreamSubscribeRequest>>) -> Answer<Pushes> {
        let mut incoming = r.into_inner();
        let first = incoming.message().await?.and_then(|m| m.subscribe_request);
        let Some(sub) = first else {
            return Err(Status::invalid_argument("the first message has no subscribe_request"));
        };
        let (tx, rx) = mpsc::channel::<Result<pb::StreamSubscribeResponse, Status>>(16);
        let answer = pb::StreamSubscribeResponse { subscribe_response: Some(subscribe_answer(sub)), publication: None };
        tokio::spawn(async move {
            let _ = tx.send(Ok(answer)).await;
            // Each publication comes back with a tag; "end" ends the stream.
            while let Ok(Some(m)) = incoming.message().await {
                let Some(p) = m.publication else { continue };
                if p.data == "\"end\"" {
                    return;
                }
                let data = String::from_utf8_lossy(&p.data).to_string();
                let _ = tx.send(Ok(publication(&data, &[("echo", "1")]))).await;
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn publication(data: &str, tags: &[(&str, &str)]) -> pb::StreamSubscribeResponse {
    let tags = pairs_of(tags).into_iter().collect();
    pb::StreamSubscribeResponse { subscribe_response: None, publication: Some(pb::Publication { data: b(data), tags }) }
}

fn subscribe_answer(r: pb::SubscribeRequest) -> pb::SubscribeResponse {
    let (error, disconnect) = refusal(&r.channel);
    let result = pb::SubscribeResult {
        expire_at: 7,
        info: r.data,
        b64info: r.b64data,
        data: r.meta,
        b64data: r.token,
        r#override: over([Some(true), Some(false), Some(true), None, None]),
        allow: vec!["pub".into()],
        ..Default::default()
    };
    pb::SubscribeResponse { result: Some(result), error, disconnect }
}

/// Starts a backend on 127.0.0.1 (over TLS with `tls`) on a thread of its own.
fn backend(tls: Option<ServerTlsConfig>) -> (SocketAddr, Log) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let svc = CentrifugoProxyServer::new(Backend { log: log.clone() })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let mut builder = Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).unwrap();
            }
            builder.add_service(svc).serve_with_incoming(incoming).await.unwrap();
        });
    });
    (addr, log)
}

/// A proxy of `kind` at `addr` (ids far from a node's own).
fn proxy(kind: Kind, addr: SocketAddr, edit: impl FnOnce(&mut ProxyCommon)) -> Arc<Proxy> {
    static ID: AtomicUsize = AtomicUsize::new(1 << 20);
    let mut conf = ProxyCommon { endpoint: format!("grpc://{addr}"), ..ProxyCommon::default() };
    edit(&mut conf);
    Arc::new(Proxy {
        name: "default".into(),
        kind,
        target: Target::Grpc { uri: format!("http://{addr}") },
        timeout: conf.timeout,
        http_headers: Vec::new(),
        emulated_headers: Vec::new(),
        grpc_metadata: Vec::new(),
        conf,
        id: ID.fetch_add(1, Ordering::Relaxed),
    })
}

/// A request on `channel` with the payload `data`.
fn on(channel: &str, data: &str) -> Request {
    request(|r| (r.channel, r.data) = (channel.into(), Some(b(data))))
}

/// A request in binary mode: the payload in b64data.
fn binary(r: &mut Request) {
    r.encoding = "binary";
    r.b64data = "AQID".into();
}

fn request(edit: impl FnOnce(&mut Request)) -> Request {
    let mut r = Request {
        client: "c1".into(),
        transport: "websocket",
        protocol: "json",
        encoding: "json",
        user: "56".into(),
        ..Request::default()
    };
    edit(&mut r);
    r
}

/// Calls and waits for the answer; checks that `done` ran once and took its time.
fn call_wait(p: &Arc<Proxy>, req: Request, md: Headers) -> (Result<Response, CallError>, Duration) {
    let (tx, rx) = std_mpsc::channel();
    let t0 = Instant::now();
    call(p, req, md, Box::new(move |r| tx.send(r).unwrap()));
    let res = rx.recv_timeout(Duration::from_secs(10)).expect("an answer within 10 s");
    let took = t0.elapsed();
    // The callback is gone with its sender: no second answer.
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Err(std_mpsc::RecvTimeoutError::Disconnected));
    (res, took)
}

fn answer_of(p: &Arc<Proxy>, req: Request) -> Response {
    call_wait(p, req, Vec::new()).0.expect("an answer")
}

fn result_of(p: &Arc<Proxy>, req: Request) -> ResultObj {
    let r = answer_of(p, req);
    assert_eq!((&r.error, &r.disconnect), (&None, &None));
    r.result.expect("a result")
}

#[test]
fn connect_round_trip() {
    let (addr, _) = backend(None);
    let p = proxy(Kind::Connect, addr, |_| {});
    let r = result_of(
        &p,
        request(|r| {
            r.name = "js".into();
            r.version = "5.7".into();
            r.data = Some(b(r#"{"foo":1}"#));
            r.channels = vec!["news".into(), "chat".into()];
        }),
    );
    assert_eq!((r.user.as_str(), r.expire_at, r.b64info.as_str()), ("u-c1", 1767225600, ""));
    assert_eq!((r.info, r.meta), (Some(b(r#"{"foo":1}"#)), Some(b(r#"{"role":"admin"}"#))));
    assert_eq!(
        r.data,
        Some(b(r#"{"transport":"websocket","protocol":"json","encoding":"json","name":"js","version":"5.7"}"#))
    );
    assert_eq!(r.channels, vec!["news".to_string(), "chat".to_string()]);
    let chat = SubOptions {
        data: Some(b("{}")),
        b64data: "e30=".into(),
        over: Override {
            force_recovery: Some(true),
            force_positioning: Some(false),
            force_push_join_leave: Some(true),
            ..Override::default()
        },
        ..SubOptions::default()
    };
    let news = SubOptions {
        info: Some(b(r#"{"a":1}"#)),
        over: Override { presence: Some(false), join_leave: Some(true), ..Override::default() },
        ..SubOptions::default()
    };
    assert_eq!(r.subs, vec![("chat".to_string(), chat), ("news".to_string(), news)]);

    // Binary encoding: the payload travels in b64data.
    let r = result_of(&p, request(binary));
    assert_eq!((r.info, r.b64info.as_str()), (None, "AQID"));
    assert!(r.data.unwrap().starts_with(br#"{"transport":"websocket","protocol":"json","encoding":"binary""#));
}

#[test]
fn refresh_subscribe_publish_rpc_sub_refresh_round_trips() {
    let (addr, _) = backend(None);

    let p = proxy(Kind::Refresh, addr, |_| {});
    let r = result_of(&p, request(|r| r.meta = Some(b(r#"{"m":1}"#))));
    assert_eq!((r.expired, r.expire_at), (false, 42));
    assert_eq!((r.info, r.meta), (Some(b(r#"{"m":1}"#)), Some(b(r#"{"m":2}"#))));
    assert!(result_of(&p, request(|r| r.user = "gone".into())).expired);
    // Empty bytes are absent.
    assert_eq!(result_of(&p, request(|_| {})).info, None);

    let p = proxy(Kind::Subscribe, addr, |_| {});
    let r = result_of(
        &p,
        request(|r| {
            r.channel = "chat:index".into();
            r.data = Some(b(r#"{"d":1}"#));
            r.meta = Some(b(r#"{"m":1}"#));
        }),
    );
    assert_eq!(r.expire_at, 7);
    assert_eq!((r.info, r.data), (Some(b(r#"{"d":1}"#)), Some(b(r#"{"m":1}"#))));
    // The token is always empty (echoed in b64data).
    assert_eq!(r.b64data, "");
    assert_eq!(
        r.over,
        Override {
            presence: Some(true),
            join_leave: Some(false),
            force_push_join_leave: Some(true),
            ..Override::default()
        }
    );

    let p = proxy(Kind::Publish, addr, |_| {});
    let r = result_of(&p, on("chat", r#"{"input":"hi"}"#));
    assert_eq!(r.data, Some(b(r#"{"input":"hi"}"#)));
    assert!(r.skip_history && r.delta);
    assert_eq!(r.tags, vec![("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
    assert_eq!((r.idempotency_key.as_str(), r.version, r.version_epoch.as_str()), ("56/chat", 9, "e"));
    let r = result_of(&p, request(binary));
    assert_eq!((r.data, r.b64data.as_str()), (None, "AQID"));

    let p = proxy(Kind::Rpc, addr, |_| {});
    let data = r#"{"params":{"object_id":12}}"#;
    let r = result_of(&p, request(|r| (r.method, r.data) = ("getCurrentPrice".into(), Some(b(data)))));
    assert_eq!((r.data, r.b64data.as_str()), (Some(b(data)), ""));

    let p = proxy(Kind::SubRefresh, addr, |_| {});
    let r = result_of(&p, request(|r| r.channel = "news".into()));
    assert_eq!((r.expired, r.expire_at, r.b64info.as_str()), (false, 100, "aQ=="));
    assert_eq!(r.info, Some(b(r#"{"user":"56"}"#)));
    assert!(result_of(&p, request(|r| r.channel = "gone".into())).expired);
}

#[test]
fn error_and_disconnect_answers() {
    let (addr, _) = backend(None);
    let err = ErrorObj { code: 1000, message: "custom".into(), temporary: true };
    let dis = DisconnectObj { code: 4501, reason: "unauthorized".into() };

    let p = proxy(Kind::Connect, addr, |_| {});
    let r = answer_of(&p, request(|r| r.name = "error".into()));
    assert_eq!((r.error, r.disconnect), (Some(err.clone()), None));
    let r = answer_of(&p, request(|r| r.name = "disconnect".into()));
    assert_eq!((r.error, r.disconnect), (None, Some(dis.clone())));
    // All three come through; which wins is the caller's rule.
    let r = answer_of(&p, request(|r| r.name = "both".into()));
    assert!(r.result.is_some());
    assert_eq!(r.error, Some(ErrorObj { code: 1001, message: "also".into(), temporary: false }));
    assert_eq!(r.disconnect, Some(DisconnectObj { code: 4502, reason: "bye".into() }));

    for kind in [Kind::Subscribe, Kind::Publish, Kind::SubRefresh] {
        let p = proxy(kind, addr, |_| {});
        let r = answer_of(&p, request(|r| r.channel = "error".into()));
        assert_eq!(r.error, Some(err.clone()), "{kind:?}");
        let r = answer_of(&p, request(|r| r.channel = "disconnect".into()));
        assert_eq!(r.disconnect, Some(dis.clone()), "{kind:?}");
    }
    let p = proxy(Kind::Rpc, addr, |_| {});
    assert_eq!(answer_of(&p, request(|r| r.method = "error".into())).error, Some(err));
    assert_eq!(answer_of(&p, request(|r| r.method = "disconnect".into())).disconnect, Some(dis));

    // A status is a call error.
    let (res, _) = call_wait(&p, request(|r| r.method = "status".into()), Vec::new());
    assert_eq!(res, Err(CallError::Grpc("PermissionDenied: nope".into())));
    // A backend past its deadline: a timeout.
    assert_eq!(call_wait(&p, request(|r| r.method = "deadline".into()), Vec::new()).0, Err(CallError::Timeout));
    // A stream's kind has no unary method.
    let p = proxy(Kind::SubscribeStream, addr, |_| {});
    assert!(matches!(call_wait(&p, request(|_| {}), Vec::new()).0, Err(CallError::Transport(_))));
}

#[test]
fn timeout_and_server_down() {
    let (addr, _) = backend(None);
    let p = proxy(Kind::Rpc, addr, |c| c.timeout = Duration::from_millis(300));
    let (res, took) = call_wait(&p, request(|r| r.method = "sleep".into()), Vec::new());
    assert_eq!(res, Err(CallError::Timeout));
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1500), "{took:?}");
    // The connection still serves the next call.
    assert_eq!(result_of(&p, request(|r| r.data = Some(b("1")))).data, Some(b("1")));

    let p = proxy(Kind::Connect, addr, |c| c.timeout = Duration::from_millis(300));
    let (res, _) = call_wait(&p, request(|r| r.name = "sleep".into()), Vec::new());
    assert_eq!(res, Err(CallError::Timeout));

    // Nothing listens on the port: a transport error, well before the timeout.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = proxy(Kind::Rpc, down, |c| c.timeout = Duration::from_secs(2));
    let (res, took) = call_wait(&p, request(|_| {}), Vec::new());
    assert!(matches!(&res, Err(CallError::Transport(_))), "{res:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

fn pairs_of(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The metadata the backend saw, from its answer to method "metadata".
fn metadata_of(res: Result<Response, CallError>) -> BTreeMap<String, String> {
    serde_json::from_slice(&res.unwrap().result.unwrap().data.unwrap()).unwrap()
}

#[test]
fn metadata_is_forwarded() {
    let (addr, _) = backend(None);
    let p = proxy(Kind::Rpc, addr, |c| {
        c.grpc.static_metadata.insert("X-Static".into(), "s".into());
        c.grpc.static_metadata.insert("x-replaced".into(), "static".into());
        c.grpc.credentials_key = "Authorization".into();
        c.grpc.credentials_value = "apikey secret".into();
    });
    let given = pairs_of(&[
        ("Cookie", "a=1"),
        ("x-replaced", "forwarded"),
        ("bad key", "skipped"),
        ("x-bad-value", "line\nbreak"),
        ("x-bin", "skipped too"),
        ("content-type", "text/plain"),
        ("connection", "close"),
        ("grpc-timeout", "1n"),
        ("authorization", "overridden by the credentials"),
    ]);
    let md = metadata_of(call_wait(&p, request(|r| r.method = "metadata".into()), given).0);
    let got = |k: &str| md.get(k).map(String::as_str);
    let want = [("x-static", "s"), ("x-replaced", "forwarded"), ("cookie", "a=1"), ("authorization", "apikey secret")];
    for (k, v) in want.into_iter().chain([("content-type", "application/grpc")]) {
        assert_eq!(got(k), Some(v), "{k}: {md:?}");
    }
    for k in ["x-bad-value", "bad key", "x-bin", "connection", "grpc-encoding"] {
        assert_eq!(got(k), None, "{k}");
    }
    assert!(got("grpc-timeout").is_some_and(|t| t != "1n"), "{md:?}");

    // gzip when asked.
    let p = proxy(Kind::Rpc, addr, |c| c.grpc.compression = true);
    let md = metadata_of(call_wait(&p, request(|r| r.method = "metadata".into()), Vec::new()).0);
    assert_eq!(md.get("grpc-encoding").map(String::as_str), Some("gzip"));
}

/// Opens a stream and hands its events over a channel.
fn open(p: &Arc<Proxy>, req: Request, bidirectional: bool) -> (StreamHandle, std_mpsc::Receiver<StreamEvent>) {
    let (tx, rx) = std_mpsc::channel();
    let h = open_stream(p, req, Vec::new(), bidirectional, Box::new(move |e| drop(tx.send(e))));
    (h, rx)
}

fn next(rx: &std_mpsc::Receiver<StreamEvent>) -> StreamEvent {
    rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s")
}

/// Waits for the callback to be gone (no more events).
fn no_more(rx: &std_mpsc::Receiver<StreamEvent>) {
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Err(std_mpsc::RecvTimeoutError::Disconnected));
}

fn subscribed(e: StreamEvent) -> Response {
    match e {
        StreamEvent::Subscribed(r) => r.expect("Subscribed(Ok)"),
        other => panic!("want Subscribed(Ok), got {other:?}"),
    }
}

fn refused(e: StreamEvent) -> CallError {
    match e {
        StreamEvent::Subscribed(r) => r.expect_err("Subscribed(Err)"),
        other => panic!("want Subscribed(Err), got {other:?}"),
    }
}

fn pub_event(data: &str, tags: &[(&str, &str)]) -> StreamEvent {
    let mut tags = pairs_of(tags);
    tags.sort();
    StreamEvent::Publication { data: b(data), tags }
}

#[test]
fn unidirectional_stream() {
    let (addr, log) = backend(None);
    let p = proxy(Kind::SubscribeStream, addr, |_| {});
    let (h, rx) = open(&p, request(|r| r.channel = "pubs".into()), false);
    let r = subscribed(next(&rx));
    assert_eq!(r.result.unwrap().expire_at, 7);
    assert_eq!(next(&rx), pub_event("1", &[("n", "1"), ("k", "v")]));
    assert_eq!(next(&rx), pub_event("2", &[]));
    assert_eq!(next(&rx), StreamEvent::Ended { eof: true });
    no_more(&rx);
    assert!(!h.publish(b("x")), "unidirectional");

    // A failing stream ends with eof false.
    let (_h, rx) = open(&p, request(|r| r.channel = "fail".into()), false);
    subscribed(next(&rx));
    assert_eq!(next(&rx), pub_event("1", &[]));
    assert_eq!(next(&rx), StreamEvent::Ended { eof: false });
    no_more(&rx);

    // Metadata comes with the stream.
    let p2 = proxy(Kind::SubscribeStream, addr, |c| {
        c.grpc.credentials_key = "k".into();
        c.grpc.credentials_value = "v".into();
    });
    let (_h, rx) = open(&p2, request(|r| r.channel = "metadata".into()), false);
    let md = metadata_of(Ok(subscribed(next(&rx))));
    assert_eq!(md.get("k").map(String::as_str), Some("v"));

    // Dropping the handle cancels the stream at the backend.
    let (h, rx) = open(&p, request(|r| r.channel = "hold".into()), false);
    subscribed(next(&rx));
    drop(h);
    no_more(&rx);
    wait_for(&log, "hold cancelled");
}

fn wait_for(log: &Log, what: &str) {
    let t0 = Instant::now();
    while !log.lock().unwrap().iter().any(|l| l == what) {
        assert!(t0.elapsed() < Duration::from_secs(5), "the backend never logged {what:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stream_refusals() {
    let (addr, log) = backend(None);
    let p = proxy(Kind::SubscribeStream, addr, |c| c.timeout = Duration::from_millis(300));

    // A first message without subscribe_response.
    let (_h, rx) = open(&p, request(|r| r.channel = "nosub".into()), false);
    assert!(matches!(refused(next(&rx)), CallError::Decode(_)));
    no_more(&rx);

    // No first message within the timeout: the stream is cancelled.
    let t0 = Instant::now();
    let (_h, rx) = open(&p, request(|r| r.channel = "silent".into()), false);
    assert_eq!(refused(next(&rx)), CallError::Timeout);
    assert!(t0.elapsed() < Duration::from_millis(1500));
    no_more(&rx);
    wait_for(&log, "silent cancelled");

    // An error answer: nothing follows it.
    let (h, rx) = open(&p, request(|r| r.channel = "error".into()), true);
    let r = subscribed(next(&rx));
    assert_eq!(r.error.map(|e| e.code), Some(1000));
    no_more(&rx);
    assert!(!h.publish(b("x")));

    // Nothing listens.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = proxy(Kind::SubscribeStream, down, |_| {});
    let (_h, rx) = open(&p, request(|_| {}), false);
    assert!(matches!(refused(next(&rx)), CallError::Transport(_)));
    no_more(&rx);
}

#[test]
fn bidirectional_stream() {
    let (addr, _) = backend(None);
    let p = proxy(Kind::SubscribeStream, addr, |c| c.grpc.compression = true);
    let (h, rx) = open(&p, on("bidi", r#"{"d":1}"#), true);
    let r = subscribed(next(&rx)).result.unwrap();
    assert_eq!(r.info, Some(b(r#"{"d":1}"#)));
    assert!(h.publish(b(r#"{"input":"hi"}"#)));
    assert_eq!(next(&rx), pub_event(r#"{"input":"hi"}"#, &[("echo", "1")]));
    assert!(h.publish(b("2")));
    assert_eq!(next(&rx), pub_event("2", &[("echo", "1")]));
    // The backend ends the stream.
    assert!(h.publish(b("\"end\"")));
    assert_eq!(next(&rx), StreamEvent::Ended { eof: true });
    no_more(&rx);
    assert!(!h.publish(b("late")));
}

/// Runs openssl with `args` (split at spaces) in `dir`.
fn openssl(dir: &std::path::Path, args: &str) {
    let out = std::process::Command::new("openssl").args(args.split(' ')).current_dir(dir).output();
    let out = out.expect("openssl runs");
    assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and backend.test, a client certificate, and a
/// second CA that signed none of them.
fn certificates() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gyre-proxy-grpc-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for ca in ["ca", "other"] {
        openssl(&dir, &format!("req -x509 -days 2 -subj /CN=ca -keyout {ca}.key -out {ca}.crt {ec}"));
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:backend.test\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        openssl(&dir, &format!("req -subj /CN=peer -keyout {who}.key -out {who}.csr {ec}"));
        let sign = "-CA ca.crt -CAkey ca.key -CAcreateserial -days 2";
        openssl(&dir, &format!("x509 -req -in {who}.csr {sign} -extfile {who}.ext -out {who}.crt"));
    }
    dir
}

#[test]
fn tls_and_mutual_tls() {
    use base64::Engine as _;
    let dir = certificates();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.crt"), read("server.key")))
        .client_ca_root(Certificate::from_pem(read("ca.crt")));
    let (addr, _) = backend(Some(server_tls));
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);

    // CA as a file path, client certificate as PEM text and key as base64 PEM.
    let ca_path = dir.join("ca.crt").to_string_lossy().to_string();
    let good = ClientTls {
        enabled: true,
        server_ca_pem: ca_path.clone(),
        cert_pem: read("client.crt"),
        key_pem: b64(read("client.key")),
        ..ClientTls::default()
    };
    assert_eq!(tls_unsupported(&good), None);
    let p = proxy(Kind::Rpc, addr, |c| c.grpc.tls = good.clone());
    assert_eq!(result_of(&p, request(|r| r.data = Some(b("1")))).data, Some(b("1")));

    // The name checked may be another of the certificate's.
    let named = ClientTls { server_name: "backend.test".into(), server_ca_pem: b64(read("ca.crt")), ..good.clone() };
    let p = proxy(Kind::Rpc, addr, |c| c.grpc.tls = named);
    assert_eq!(result_of(&p, request(|r| r.data = Some(b("2")))).data, Some(b("2")));

    // A name the certificate does not have, another CA, no client certificate: no call.
    let refused = [
        ClientTls { server_name: "elsewhere.test".into(), ..good.clone() },
        ClientTls { server_ca_pem: read("other.crt"), ..good.clone() },
        ClientTls { cert_pem: String::new(), key_pem: String::new(), ..good.clone() },
    ];
    for tls in refused {
        let p = proxy(Kind::Rpc, addr, |c| c.grpc.tls = tls.clone());
        let (res, _) = call_wait(&p, request(|_| {}), Vec::new());
        assert!(matches!(&res, Err(CallError::Transport(_))), "{tls:?}: {res:?}");
    }

    // Plaintext to a TLS backend fails too.
    let p = proxy(Kind::Rpc, addr, |_| {});
    assert!(call_wait(&p, request(|_| {}), Vec::new()).0.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_options_refused_by_name() {
    assert_eq!(tls_unsupported(&ClientTls { insecure_skip_verify: true, ..ClientTls::default() }), None, "TLS off");
    let on = ClientTls {
        enabled: true,
        server_ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        ..ClientTls::default()
    };
    let why = |t: ClientTls| tls_unsupported(&t).unwrap_or_default();
    assert!(why(ClientTls { insecure_skip_verify: true, ..on.clone() }).contains("insecure_skip_verify"));
    assert!(why(ClientTls { cert_pem: on.server_ca_pem.clone(), ..on.clone() }).contains("key_pem"));
    assert!(why(ClientTls { server_ca_pem: "/no/such/file.pem".into(), ..on.clone() }).contains("server_ca_pem"));
    assert!(why(ClientTls { server_ca_pem: "bm90IHBlbQ==".into(), ..on.clone() }).contains("server_ca_pem"));
    // A call with such options is a transport error naming them.
    let (addr, _) = backend(None);
    let p = proxy(Kind::Rpc, addr, |c| c.grpc.tls = ClientTls { insecure_skip_verify: true, ..on.clone() });
    let res = call_wait(&p, request(|_| {}), Vec::new()).0;
    assert!(matches!(&res, Err(CallError::Transport(e)) if e.contains("insecure_skip_verify")), "{res:?}");
}
