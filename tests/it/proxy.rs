//! Proxies: the server asks the application backend on connect, refresh, subscribe, publish,
//! sub_refresh, RPC and subscription streams (Centrifugo's proxy protocol over HTTP and gRPC).
//!
//! The backend is `tests/python/proxy_backend.py`: one process serving the same decisions over
//! HTTP and gRPC (its stubs generated from `proto/proxy.proto` at start), taken from the
//! requests themselves (see its doc): connect data `{"user": "u1"}` is accepted as user u1, the
//! channel `px:deny:1` is refused with 403, `{"fail": "500"}` answers HTTP 500, and so on. It
//! records every call it gets; the tests read them back (`GET /requests`) to check the fields
//! of each request and the headers or metadata forwarded with it.
//!
//! Each kind runs over both protocols: accepted, refused (error and disconnect answers) and
//! failing (HTTP 500 or gRPC UNAVAILABLE, an answer that is not JSON, a dropped connection, an
//! answer after the timeout). The raw WebSocket client checks the wire (error codes, close
//! codes, `temporary`, the connect reply's `expires`); centrifuge-js and centrifuge-python
//! (`tests/js/agent.js`, `tests/python/sdk_agent.py`) check what applications see. Failing
//! backends must not hold up the worker's other clients nor leak descriptors or sessions.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::transports::{urlencode, Framing, Stream};
use crate::util::*;
use crate::ws_client::{json_lines, Ws, CLOSE, SAMPLE_KEY, TEXT, WS_PATH};

/// `client.token.hmac_secret_key` of the servers here (tokens go around the connect proxy).
const SECRET: &str = "proxy-test-secret";

/// Every proxy's timeout; the backend's slow answers come after 2.5 s.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The headers of the raw clients' upgrade requests: the proxies forward the first two
/// (`http_headers`), not the third.
const HEADERS: [(&str, &str); 3] = [("Cookie", "session=abc"), ("X-Token", "tok-1"), ("X-Other", "not forwarded")];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Http,
    Grpc,
}

impl Proto {
    /// The `protocol` label of the proxy metrics.
    fn label(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Grpc => "grpc",
        }
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `{"code": 100, "message": "internal server error", "temporary": true}`: what a client gets
/// when a proxy call fails.
fn internal() -> Value {
    json!({"code": 100, "message": "internal server error", "temporary": true})
}

/// The ways the backend fails a call (the `fail` of a payload, or a channel / method word).
const FAILURES: [&str; 4] = ["fail", "garbage", "close", "slow"];

/// The payload that makes the backend fail the way `FAILURES` names it.
fn failing(how: &str) -> Value {
    json!({"fail": if how == "fail" { "500" } else { how }})
}

// ---------------------------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------------------------

/// A running `proxy_backend.py` (HTTP, and gRPC when started with it).
pub(crate) struct Backend {
    p: LineProc,
    http: u16,
    grpc: Option<u16>,
}

impl Backend {
    /// Starts the backend; `None` (test skipped) without Python's grpcio-tools unless `CI` is
    /// set.
    pub(crate) fn start(test: &str, grpc: bool) -> Option<Backend> {
        let python = repo_root().join("target/pyenv/bin/python");
        let ok = python.exists()
            && Command::new(&python).args(["-c", "import grpc, grpc_tools"]).output().is_ok_and(|o| o.status.success());
        if !ok {
            unavailable(
                test,
                "grpcio / grpcio-tools are not installed in target/pyenv",
                "bash .ci/run (or target/pyenv/bin/pip install grpcio-tools==1.85.1)",
            );
            return None;
        }
        let mut cmd = Command::new(python);
        cmd.arg(repo_root().join("tests/python/proxy_backend.py")).args(["--slow", "2.5"]);
        if grpc {
            let proto = repo_root().join("proto/proxy.proto");
            assert!(proto.exists(), "{} is missing", proto.display());
            cmd.arg("--proto").arg(proto);
        }
        for k in ["http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            cmd.env_remove(k);
        }
        let p = LineProc::spawn("proxy_backend.py", cmd);
        let ready = p.log.iter().find(|e| e["ev"] == "ready").expect("the ready line").clone();
        let http = ready["http_port"].as_u64().expect("http_port") as u16;
        let grpc = ready["grpc_port"].as_u64().map(|p| p as u16);
        Some(Backend { p, http, grpc })
    }

    /// The endpoint of the proxy of `kind` over `proto`.
    pub(crate) fn endpoint(&self, proto: Proto, kind: &str) -> String {
        match proto {
            Proto::Http => format!("http://127.0.0.1:{}/{kind}", self.http),
            Proto::Grpc => format!("grpc://127.0.0.1:{}", self.grpc.expect("the backend was started without gRPC")),
        }
    }

    /// `GET path` on the backend's HTTP port: the JSON answer.
    pub(crate) fn get(&self, path: &str) -> Value {
        let mut c = Conn::new(SocketAddr::from(([127, 0, 0, 1], self.http)));
        c.send(&request("GET", path, b"", &[]));
        let r = c.read_response().unwrap_or_else(|e| self.p.fail(&format!("GET {path}: {e}")));
        if r.status != 200 {
            self.p.fail(&format!("GET {path}: {} {}", r.status, r.text()));
        }
        r.json()
    }

    /// The calls of `kind` received so far (`subscribe_stream`, `stream_publication` and
    /// `stream_end` for streams), oldest first.
    fn requests(&self, kind: &str) -> Vec<Value> {
        match self.get(&format!("/requests?kind={kind}")) {
            Value::Array(v) => v,
            v => self.p.fail(&format!("/requests: {v}")),
        }
    }

    /// The calls of `kind` that `pred` accepts.
    fn find(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.requests(kind).into_iter().filter(|r| pred(r)).collect()
    }

    /// Waits (≤ `within`) until `n` calls of `kind` accepted by `pred` came; returns them all.
    fn wait_n(&self, what: &str, kind: &str, n: usize, within: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let found = self.find(kind, &pred);
            if found.len() >= n {
                return found;
            }
            if Instant::now() > deadline {
                self.p.fail(&format!(
                    "{what}: {} of {n} {kind} calls within {within:?}; all of them:\n{:#}",
                    found.len(),
                    json!(self.requests(kind))
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first call of `kind` that `pred` accepts, waiting up to 10 s for it.
    pub(crate) fn wait(&self, what: &str, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_n(what, kind, 1, Duration::from_secs(10), pred).remove(0)
    }

    /// The call of `kind` made for client `client`.
    fn of_client(&self, kind: &str, client: &str) -> Value {
        self.wait(&format!("the {kind} call of {client}"), kind, |r| r["body"]["client"] == client)
    }

    /// `GET /control?query` (the refresh / sub_refresh answers).
    fn control(&self, query: &str) {
        self.get(&format!("/control?{query}"));
    }
}

/// A proxy object of `kind` on backend `b` over `proto`: 1 s timeout, `Cookie` and `X-Token`
/// forwarded, the connection's meta included, a static header (HTTP) or static metadata and
/// credentials (gRPC), and two status transforms (HTTP 404 → error 404, 403 → disconnect 4403).
fn proxy_conf(b: &Backend, proto: Proto, kind: &str) -> Value {
    let mut p = json!({
        "endpoint": b.endpoint(proto, kind),
        "timeout": "1s",
        "http_headers": ["Cookie", "X-Token"],
        "include_connection_meta": true,
    });
    match proto {
        Proto::Http => {
            p["http"] = json!({
                "static_headers": {"X-Static": "static-1"},
                "status_to_code_transforms": [
                    {"status_code": 404, "to_error": {"code": 404, "message": "not found"}},
                    {"status_code": 403, "to_disconnect": {"code": 4403, "reason": "forbidden"}},
                ],
            })
        }
        Proto::Grpc => {
            p["grpc"] = json!({
                "static_metadata": {"x-static": "static-1"},
                "credentials_key": "x-credentials",
                "credentials_value": "secret-1",
            })
        }
    }
    p
}

/// A server whose every proxy calls `b` over `proto`, with `patch` merged in:
///
/// * connect proxy on (refresh off);
/// * `px` — subscribe and publish proxies, presence, history 10;
/// * `sr` — subscribe and sub_refresh proxies;
/// * `srv` — presence (the connect results' server-side channels);
/// * `open` — subscribe for clients, publish for subscribers, no proxy;
/// * `plain` — nothing allowed, no proxy;
/// * gRPC only: `st` — a subscription stream; `bst` — a bidirectional one;
/// * RPC: methods without namespace and in `ns` go to the proxy; `nop` has none; `bin` goes
///   to the proxy named `bin`, with `binary_encoding`.
fn server_config(b: &Backend, proto: Proto, patch: Value) -> Value {
    let mut namespaces = vec![
        json!({"name": "px", "subscribe_proxy_enabled": true, "publish_proxy_enabled": true, "presence": true,
               "history_size": 10, "history_ttl": "300s"}),
        json!({"name": "sr", "subscribe_proxy_enabled": true, "sub_refresh_proxy_enabled": true}),
        json!({"name": "srv", "presence": true}),
        json!({"name": "open", "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true}),
        json!({"name": "plain"}),
    ];
    let mut channel_proxies = json!({
        "subscribe": proxy_conf(b, proto, "subscribe"),
        "publish": proxy_conf(b, proto, "publish"),
        "sub_refresh": proxy_conf(b, proto, "sub_refresh"),
    });
    if proto == Proto::Grpc {
        namespaces.push(json!({"name": "st", "subscribe_stream_proxy_enabled": true, "presence": true}));
        namespaces.push(json!({"name": "bst", "subscribe_stream_proxy_enabled": true,
                               "subscribe_stream_proxy_bidirectional": true}));
        channel_proxies["subscribe_stream"] = proxy_conf(b, proto, "subscribe_stream");
    }
    // A named proxy whose payloads travel base64-encoded.
    let mut bin = proxy_conf(b, proto, "rpc");
    bin["name"] = json!("bin");
    bin["binary_encoding"] = json!(true);
    let mut connect = proxy_conf(b, proto, "connect");
    connect["enabled"] = json!(true);
    let mut cfg = json!({
        "http_api": {"key": KEY},
        "prometheus": {"enabled": true},
        "uni_sse": {"enabled": true},
        "client": {"token": {"hmac_secret_key": SECRET}, "proxy": {"connect": connect}},
        "channel": {"proxy": channel_proxies, "namespaces": namespaces},
        "rpc": {
            "proxy": proxy_conf(b, proto, "rpc"),
            "without_namespace": {"proxy_enabled": true},
            "namespaces": [
                {"name": "ns", "proxy_enabled": true},
                {"name": "nop"},
                {"name": "bin", "proxy_enabled": true, "proxy_name": "bin"},
            ],
        },
        "proxies": [bin],
        "workers": 2,
    });
    merge(&mut cfg, patch);
    cfg
}

/// The refresh proxy of `b` over `proto`, on.
fn refresh_on(b: &Backend, proto: Proto) -> Value {
    let mut r = proxy_conf(b, proto, "refresh");
    r["enabled"] = json!(true);
    json!({"client": {"proxy": {"refresh": r}}})
}

/// The fields every request has, for a raw client (its upgrade sent [`HEADERS`]) of
/// `transport` with client id `client`, and the headers or metadata forwarded with it.
#[track_caller]
fn check_request(req: &Value, client: &str, transport: &str, proto: Proto) {
    assert_eq!(req["protocol"], proto.label(), "called over the proxy's protocol: {req}");
    let body = &req["body"];
    assert_eq!(body["client"], client, "{req}");
    assert_eq!(body["transport"], transport, "{req}");
    assert_eq!(body["protocol"], "json", "{req}");
    assert_eq!(body["encoding"], "json", "{req}");
    check_forwarded(req, proto, "tok-1");
}

/// The forwarded `Cookie` (when the client sent one) and `X-Token`, the static header or
/// metadata, the credentials (gRPC); `X-Other` not forwarded.
#[track_caller]
fn check_forwarded(req: &Value, proto: Proto, token: &str) {
    let h = &req["headers"];
    assert_eq!(h["x-token"], token, "X-Token forwarded: {req}");
    assert_eq!(h["x-static"], "static-1", "static header / metadata: {req}");
    assert!(h.get("x-other").is_none(), "only http_headers are forwarded: {req}");
    match proto {
        Proto::Http => {
            if token == "tok-1" {
                assert_eq!(h["cookie"], "session=abc", "Cookie forwarded: {req}");
            }
            assert_eq!(h["content-type"], "application/json", "{req}");
        }
        Proto::Grpc => {
            if token == "tok-1" {
                assert_eq!(h["cookie"], "session=abc", "Cookie forwarded as metadata: {req}");
            }
            assert_eq!(h["x-credentials"], "secret-1", "grpc.credentials_key / value: {req}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw WebSocket client.
// ---------------------------------------------------------------------------------------------

/// How a command ended when it got no reply: the close frame's code and reason (code 0: the
/// connection ended without one).
type Closed = (u16, String);

/// A raw WebSocket client of the Centrifugo JSON protocol.
struct Raw {
    ws: Ws,
    /// Messages received and not taken yet (replies and pushes; pings left out).
    msgs: Vec<Value>,
    closed: Option<Closed>,
    next_id: u64,
}

impl Raw {
    /// A connection whose upgrade request has [`HEADERS`].
    fn open(s: &Server) -> Raw {
        Raw::open_with(s, &HEADERS)
    }

    fn open_with(s: &Server, headers: &[(&str, &str)]) -> Raw {
        let ws = Ws::upgrade(TcpStream::connect(s.addr()).expect("connect"), WS_PATH, SAMPLE_KEY, headers)
            .unwrap_or_else(|status| panic!("upgrade refused with {status}"));
        Raw { ws, msgs: Vec::new(), closed: None, next_id: 0 }
    }

    /// Reads one frame by `deadline`; false when none came or the connection is closed.
    fn read(&mut self, deadline: Instant) -> bool {
        if self.closed.is_some() {
            return false;
        }
        match self.ws.frame_until(deadline) {
            Ok(f) if f.op == TEXT => {
                self.msgs.extend(json_lines(&f.payload).into_iter().filter(|m| *m != json!({})));
                true
            }
            Ok(f) if f.op == CLOSE => {
                self.closed = Some(f.close());
                false
            }
            Ok(_) => true,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => false,
            Err(e) => {
                self.closed = Some((0, format!("ended without a close frame: {e}")));
                false
            }
        }
    }

    /// Sends `cmd` with the next id and returns its reply (pushes are kept); `Err` with the
    /// close frame when the connection closes first.
    fn call(&mut self, mut cmd: Value) -> Result<Value, Closed> {
        self.next_id += 1;
        let id = self.next_id;
        cmd["id"] = json!(id);
        if let Err(e) = self.ws.send(&crate::ws_client::client_frame(true, TEXT, cmd.to_string().as_bytes(), true)) {
            return Err(self.closed.clone().unwrap_or((0, format!("send failed: {e}"))));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(i) = self.msgs.iter().position(|m| m["id"] == id) {
                return Ok(self.msgs.remove(i));
            }
            if let Some(c) = &self.closed {
                return Err(c.clone());
            }
            if !self.read(deadline) && self.closed.is_none() {
                panic!("no reply to {cmd} within 15 s; received {:?}", self.msgs);
            }
        }
    }

    /// A connect command with `connect` as its body.
    fn connect(&mut self, connect: Value) -> Result<Value, Closed> {
        self.call(json!({ "connect": connect }))
    }

    /// A connect with `data` that must be accepted: the reply's `connect` object.
    fn connect_ok(&mut self, data: Value) -> Value {
        match self.connect(json!({ "data": data })) {
            Ok(r) if r["connect"].is_object() => r["connect"].clone(),
            r => panic!("connect with {data}: {r:?}"),
        }
    }

    /// The client id of an accepted connect with `data`.
    fn connected(s: &Server, data: Value) -> (Raw, String) {
        let mut c = Raw::open(s);
        let id = c.connect_ok(data)["client"].as_str().expect("client id").to_string();
        (c, id)
    }

    /// The first push (not taken yet) that `pred` accepts, waiting up to 10 s for it.
    fn push(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.msgs.iter().position(|m| m.get("id").is_none() && pred(m)) {
                return self.msgs.remove(i);
            }
            if !self.read(deadline) {
                panic!("no {what} within 10 s (closed: {:?}); received {:?}", self.closed, self.msgs);
            }
        }
    }

    /// The publication pushed on `channel` next.
    fn publication(&mut self, channel: &str) -> Value {
        let p = self.push(&format!("a publication on {channel}"), |m| {
            m["push"]["channel"] == channel && m["push"]["pub"].is_object()
        });
        p["push"]["pub"].clone()
    }

    /// The close frame, waiting up to `within` for it (messages before it are kept).
    fn close(&mut self, within: Duration) -> Closed {
        let deadline = Instant::now() + within;
        while self.read(deadline) {}
        self.closed.clone().unwrap_or_else(|| panic!("not closed within {within:?}; received {:?}", self.msgs))
    }

    /// No publication on `channel` comes within 300 ms (nor has come and not been taken).
    #[track_caller]
    fn no_publication(&mut self, channel: &str, what: &str) {
        assert!(self.open_for(Duration::from_millis(300)), "{what}: closed {:?}", self.closed);
        let got: Vec<&Value> = self.msgs.iter().filter(|m| m["push"]["channel"] == channel).collect();
        assert!(got.is_empty(), "{what}: {got:?}");
    }

    /// True when the connection is still open after `d` (messages meanwhile are kept).
    fn open_for(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while self.read(deadline) {}
        self.closed.is_none()
    }
}

/// The `error` of a reply; panics on anything else.
#[track_caller]
fn error_of(r: Result<Value, Closed>, what: &str) -> Value {
    match r {
        Ok(v) if v["error"].is_object() => v["error"].clone(),
        other => panic!("{what}: expected an error reply, got {other:?}"),
    }
}

/// The close of a command that must end the connection.
#[track_caller]
fn closed_of(r: Result<Value, Closed>, what: &str) -> Closed {
    match r {
        Err(c) => c,
        Ok(v) => panic!("{what}: expected the connection to close, got {v}"),
    }
}

/// The result `key` of a reply; panics on an error.
#[track_caller]
fn result_of(r: Result<Value, Closed>, key: &str, what: &str) -> Value {
    match r {
        Ok(v) if v.get(key).is_some() => v[key].clone(),
        other => panic!("{what}: expected a {key} reply, got {other:?}"),
    }
}

/// Runs `f` (a call the backend answers slowly) on another thread; meanwhile `other`, a raw
/// client subscribed to `open:<tag>`, publishes there and must get its publication back at
/// once: a slow backend holds up only the call that waits for it. Returns what `f` returned and
/// how long it took.
fn while_slow<T: Send>(
    b: &Backend,
    other: &mut Raw,
    tag: &str,
    in_flight: impl Fn(&Value) -> bool,
    kind: &str,
    f: impl FnOnce() -> T + Send,
) -> (T, Duration) {
    std::thread::scope(|scope| {
        let h = scope.spawn(move || {
            let t = Instant::now();
            let r = f();
            (r, t.elapsed())
        });
        b.wait(&format!("the slow {kind} call"), kind, in_flight);
        let t = Instant::now();
        let ch = format!("open:{tag}");
        let r = other.call(json!({"publish": {"channel": ch, "data": {"during": tag}}}));
        assert!(r.as_ref().is_ok_and(|v| v.get("error").is_none()), "publish while a {kind} call waits: {r:?}");
        assert_eq!(other.publication(&ch)["data"], json!({"during": tag}));
        let took = t.elapsed();
        assert!(took < Duration::from_millis(600), "another client waited {took:?} behind a slow {kind} call");
        h.join().expect("the slow call's thread")
    })
}

/// The call took about the proxy's timeout.
#[track_caller]
fn about_timeout(took: Duration, what: &str) {
    assert!(
        took >= TIMEOUT - Duration::from_millis(100) && took < TIMEOUT + Duration::from_millis(900),
        "{what}: answered after {took:?}, the proxy timeout is {TIMEOUT:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics and descriptors.
// ---------------------------------------------------------------------------------------------

/// One scrape of `/metrics`: `name{labels}` → value.
fn scrape(s: &Server) -> HashMap<String, f64> {
    let r = s.request("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN))))
        .collect()
}

/// `centrifugo_proxy_<metric>` of the default proxy of `kind` over `proto` (0 when absent).
fn proxy_metric(m: &HashMap<String, f64>, metric: &str, proto: Proto, kind: &str, extra: &str) -> f64 {
    let key =
        format!("centrifugo_proxy_{metric}{{protocol=\"{}\",type=\"{kind}\",name=\"default\"{extra}}}", proto.label());
    m.get(&key).copied().unwrap_or(0.0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The open descriptors of a process once the count has stayed the same for 250 ms (≤ 5 s).
fn settled_fd_count(pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = fd_count(pid);
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < Duration::from_millis(250) {
        std::thread::sleep(Duration::from_millis(20));
        let now = fd_count(pid);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

fn num_clients(s: &Server) -> u64 {
    let info = s.api("info", json!({}));
    info["result"]["nodes"][0]["num_clients"].as_u64().unwrap_or_else(|| panic!("info: {info}"))
}

fn assert_no_panic(s: &Server) {
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// SDK agents.
// ---------------------------------------------------------------------------------------------

/// `connect` of SDK client `c` with connect `data` and `X-Token: token` on its upgrade.
fn sdk_connect(a: &mut Agent, c: &str, s: &Server, data: Value, token: &str) {
    sdk_connect_as(a, c, s, data, token, false);
}

/// [`sdk_connect`], over the protobuf protocol when `protobuf`.
fn sdk_connect_as(a: &mut Agent, c: &str, s: &Server, data: Value, token: &str, protobuf: bool) {
    let extra = match a.sdk {
        Sdk::Js => json!({"opts": {"data": data}, "wsHeaders": {"X-Token": token}, "protobuf": protobuf}),
        Sdk::Py => json!({"data": data, "headers": {"X-Token": token}, "protobuf": protobuf}),
    };
    a.connect(c, s, extra);
}

fn sdk_name(sdk: Sdk) -> &'static str {
    match sdk {
        Sdk::Js => "js",
        Sdk::Py => "python",
    }
}

// ---------------------------------------------------------------------------------------------
// connect
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_over_http() {
    connect_flow(Proto::Http, "connect_over_http");
}

#[test]
fn connect_over_grpc() {
    connect_flow(Proto::Grpc, "connect_over_grpc");
}

/// A client without a token gets its credentials, data, server-side channels and meta from the
/// connect proxy; the backend's errors and disconnects reach it as they are; a failing call is
/// error 100 (temporary); tokens go around the proxy; unidirectional clients see 3004 when the
/// call fails; the metrics count the calls. Then both SDKs.
fn connect_flow(proto: Proto, test: &str) {
    let Some(b) = Backend::start(test, proto == Proto::Grpc) else { return };
    let s = Server::start(server_config(&b, proto, json!({})));
    let mut calls = 0;
    let mut call_errors = 0;

    // Accepted: user, info, data, channels and meta from the backend.
    let mut c = Raw::open(&s);
    let data = json!({"user": "u1", "info": {"name": "Ann"}, "data": {"greeting": "hi"}, "channels": ["srv:news"],
                      "meta": {"role": "admin"}, "expire_at_in": 3600});
    let r = c.connect(json!({"name": "raw-test", "version": "0.1", "data": data, "subs": {"srv:asked": {}}}));
    calls += 1;
    let res = result_of(r, "connect", "an accepted connect");
    let client = res["client"].as_str().expect("client id").to_string();
    assert_eq!(res["data"], json!({"greeting": "hi"}), "the result's data is the reply's: {res}");
    assert!(res["subs"]["srv:news"].is_object(), "the result's channels are subscribed: {res}");
    assert!(res["subs"].get("srv:asked").is_none(), "channels the client asked for are not subscribed: {res}");
    assert_eq!(res["expires"], true, "expire_at without a refresh proxy: the client refreshes: {res}");
    let ttl = res["ttl"].as_i64().unwrap_or(0);
    assert!((3590..=3600).contains(&ttl), "ttl: {res}");
    let req = b.of_client("connect", &client);
    check_request(&req, &client, "websocket", proto);
    let body = &req["body"];
    assert_eq!(body["name"], "raw-test", "{req}");
    assert_eq!(body["version"], "0.1", "{req}");
    assert_eq!(body["data"], data, "{req}");
    assert_eq!(body["channels"], json!(["srv:asked"]), "the connect command's subs: {req}");
    assert!(body.get("user").is_none(), "a connect request has no user: {req}");
    let p = s.api("presence", json!({"channel": "srv:news"}));
    let entry = &p["result"]["presence"][client.as_str()];
    assert_eq!(entry["user"], "u1", "the user from the backend: {p}");
    assert_eq!(entry["conn_info"], json!({"name": "Ann"}), "the info from the backend: {p}");
    s.api("publish", json!({"channel": "srv:news", "data": {"n": 1}}));
    assert_eq!(c.publication("srv:news")["data"], json!({"n": 1}));

    // No user: an anonymous connection.
    let mut anon = Raw::open(&s);
    result_of(anon.connect(json!({})), "connect", "a connect the backend answers without a user");
    calls += 1;

    // A token goes around the proxy.
    let before = b.requests("connect").len();
    let mut t = Raw::open(&s);
    let token = jwt(SECRET, json!({"sub": "jwt-user", "exp": now() + 3600}));
    result_of(t.connect(json!({"token": token})), "connect", "a connect with a token");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(b.requests("connect").len(), before, "a connect with a token must not call the proxy");

    // The backend's answers, as they are.
    let errors = [
        (json!({"error": {"code": 1000, "message": "custom error"}}), json!({"code": 1000, "message": "custom error"})),
        (
            json!({"error": {"code": 1001, "message": "try later", "temporary": true}}),
            json!({"code": 1001, "message": "try later", "temporary": true}),
        ),
        (json!({"user": "u2", "expire_at": now() - 10}), json!({"code": 110, "message": "expired"})),
        (json!({"user": "u2", "channels": ["nope:x"]}), error_obj(102)),
    ];
    for (data, want) in errors {
        let r = Raw::open(&s).connect(json!({ "data": data }));
        calls += 1;
        assert_eq!(error_of(r, &format!("connect {data}")), want, "connect {data}");
    }
    let closes = [
        (json!({"disconnect": {"code": 4501, "reason": "unauthorized"}}), (4501, "unauthorized")),
        (json!({"empty": true}), (3501, "bad request")),
    ];
    for (data, (code, reason)) in closes {
        let r = Raw::open(&s).connect(json!({ "data": data }));
        calls += 1;
        assert_eq!(closed_of(r, &format!("connect {data}")), (code, reason.to_string()), "connect {data}");
    }
    if proto == Proto::Http {
        // http.status_to_code_transforms.
        let r = Raw::open(&s).connect(json!({"data": {"fail": "404"}}));
        calls += 1;
        assert_eq!(error_of(r, "HTTP 404"), json!({"code": 404, "message": "not found"}));
        let r = Raw::open(&s).connect(json!({"data": {"fail": "403"}}));
        calls += 1;
        assert_eq!(closed_of(r, "HTTP 403"), (4403, "forbidden".to_string()));
    }

    // Call errors: error 100, temporary.
    for how in FAILURES {
        let t = Instant::now();
        let r = Raw::open(&s).connect(json!({ "data": failing(how) }));
        calls += 1;
        call_errors += 1;
        assert_eq!(error_of(r, &format!("backend failure {how}")), internal(), "backend failure {how}");
        if how == "slow" {
            about_timeout(t.elapsed(), "a slow connect proxy");
        }
    }

    // Unidirectional: the connect push; a failing call or an error is disconnect 3004, a
    // disconnect is used as it is.
    let uni = |data: Value| {
        let q = urlencode(&json!({ "data": data }).to_string());
        Stream::open(&s, Framing::Sse, "GET", &format!("/connection/uni_sse?cf_connect={q}"), b"", &HEADERS)
    };
    let mut u = uni(json!({"user": "uni-user", "data": {"x": 1}}));
    calls += 1;
    let push = u.next_non_ping();
    let uni_client = push["connect"]["client"].as_str().unwrap_or_else(|| panic!("uni connect push: {push}"));
    assert_eq!(push["connect"]["data"], json!({"x": 1}), "{push}");
    check_request(&b.of_client("connect", uni_client), uni_client, "uni_sse", proto);
    let uni_fails = [
        (json!({"fail": "500"}), 3004, "internal server error"),
        (json!({"error": {"code": 1000, "message": "custom error"}}), 3004, "internal server error"),
        (json!({"disconnect": {"code": 4501, "reason": "unauthorized"}}), 4501, "unauthorized"),
    ];
    for (data, code, reason) in uni_fails {
        let mut u = uni(data.clone());
        calls += 1;
        if data.get("fail").is_some() {
            call_errors += 1;
        }
        let (d, _) = u.until("the disconnect push", |v| v["disconnect"].is_object());
        assert_eq!(d["disconnect"]["code"], code, "uni_sse {data}: {d}");
        assert_eq!(d["disconnect"]["reason"], reason, "uni_sse {data}: {d}");
        u.expect_end();
    }

    // Metrics: every call, its duration, the call errors (not the backend's own errors).
    let m = scrape(&s);
    let count = proxy_metric(&m, "duration_seconds_histogram_count", proto, "connect", "");
    assert_eq!(count, calls as f64, "connect calls in the histogram");
    let inf = format!("centrifugo_proxy_duration_seconds_histogram_bucket{{protocol=\"{}\",type=\"connect\",name=\"default\",le=\"+Inf\"}}", proto.label());
    assert_eq!(m.get(&inf).copied(), Some(calls as f64), "{inf}");
    assert_eq!(proxy_metric(&m, "duration_seconds_count", proto, "connect", ""), calls as f64, "summary count");
    assert_eq!(proxy_metric(&m, "errors", proto, "connect", ""), call_errors as f64, "call errors");
    let inflight = format!(
        "centrifugo_proxy_inflight_requests{{protocol=\"{}\",type=\"connect\",name=\"default\"}}",
        proto.label()
    );
    assert_eq!(m.get(&inflight).copied(), Some(0.0), "{inflight}");
    let sum = proxy_metric(&m, "duration_seconds_histogram_sum", proto, "connect", "");
    assert!(sum >= TIMEOUT.as_secs_f64() * 0.9, "the slow call is in the duration sum: {sum}");

    for sdk in [Sdk::Js, Sdk::Py] {
        sdk_connect_flow(&b, &s, proto, sdk, test);
    }
    assert_no_panic(&s);
}

/// What an SDK sees: connected with the backend's data; an error (not temporary) or a terminal
/// disconnect ends the client; a failing call is an error and the SDK reconnects.
fn sdk_connect_flow(b: &Backend, s: &Server, proto: Proto, sdk: Sdk, test: &str) {
    let Some(mut a) = Agent::start(sdk, test) else { return };
    let name = sdk_name(sdk);
    let token = format!("{name}-token");

    sdk_connect(&mut a, "ok", s, json!({"user": format!("{name}-user"), "data": {"greeting": name}}), &token);
    let e = a.wait("connected", ev("ok", "connected"));
    assert_eq!(e["data"], json!({"greeting": name}), "{sdk:?}: the connect reply's data: {e}");
    let client = e["client"].as_str().unwrap().to_string();
    let req = b.of_client("connect", &client);
    assert_eq!(req["body"]["name"], name, "{sdk:?}: {req}");
    assert_eq!(req["body"]["transport"], "websocket", "{sdk:?}: {req}");
    check_forwarded(&req, proto, &token);

    sdk_connect(&mut a, "err", s, json!({"error": {"code": 1000, "message": "custom error"}}), &token);
    let d = a.wait("disconnected after an error", ev("err", "disconnected"));
    assert_eq!((d["code"].as_i64(), d["reason"].as_str()), (Some(1000), Some("custom error")), "{sdk:?}: {d}");

    sdk_connect(&mut a, "dis", s, json!({"disconnect": {"code": 4501, "reason": "unauthorized"}}), &token);
    let d = a.wait("disconnected", ev("dis", "disconnected"));
    assert_eq!((d["code"].as_i64(), d["reason"].as_str()), (Some(4501), Some("unauthorized")), "{sdk:?}: {d}");

    // The client protocol goes with every request.
    let pb = json!({"user": "pb-user", "data": {"pb": name}});
    sdk_connect_as(&mut a, "pb", s, pb.clone(), &token, true);
    let e = a.wait("connected over protobuf", ev("pb", "connected"));
    assert_eq!(e["data"], json!({"pb": name}), "{sdk:?}: {e}");
    let req = b.of_client("connect", e["client"].as_str().unwrap());
    assert_eq!(req["body"]["protocol"], "protobuf", "{sdk:?}: {req}");
    assert_eq!(req["body"]["data"], pb, "{sdk:?}: {req}");

    let tag = format!("{name}-fail");
    sdk_connect(&mut a, "fail", s, json!({"fail": "500", "tag": tag}), &token);
    let e = a.wait("an error event", ev("fail", "error"));
    assert_eq!(e["error"]["code"], 100, "{sdk:?}: {e}");
    b.wait_n("the SDK connecting again", "connect", 2, Duration::from_secs(10), |r| r["body"]["data"]["tag"] == tag);
    a.send(json!({"op": "disconnect", "c": "fail"}));

    a.settle(Duration::from_millis(700));
    assert_eq!(a.count(ev("ok", "disconnected")), 0, "{sdk:?}");
    for c in ["err", "dis"] {
        assert_eq!(a.count(ev(c, "connected")), 0, "{sdk:?}: {c} must not connect");
        assert_eq!(a.count(ev(c, "connecting")), 1, "{sdk:?}: {c} must not reconnect");
    }
    assert_eq!(a.count(ev("fail", "connected")), 0, "{sdk:?}");
}

// ---------------------------------------------------------------------------------------------
// refresh
// ---------------------------------------------------------------------------------------------

#[test]
fn refresh_over_http() {
    refresh_flow(Proto::Http, "refresh_over_http");
}

#[test]
fn refresh_over_grpc() {
    refresh_flow(Proto::Grpc, "refresh_over_grpc");
}

/// With a refresh proxy every connection that expires is refreshed by the server when it
/// expires: no `expires` in the connect reply, a client refresh command is 3501; a new
/// `expire_at` keeps it (the new meta goes with the next calls), an expired / empty / zero
/// answer (and the backend's error or disconnect, which refresh ignores) closes it with 3005,
/// a failing call keeps it for a retry a minute later. The SDKs stay connected while refreshed
/// and reconnect through the connect proxy after 3005.
fn refresh_flow(proto: Proto, test: &str) {
    let Some(b) = Backend::start(test, proto == Proto::Grpc) else { return };
    let s = Server::start(server_config(&b, proto, refresh_on(&b, proto)));
    b.control("kind=refresh&user=r-ext&mode=extend:2&meta=%7B%22m%22%3A2%7D");
    let ends = ["expired", "empty", "zero", "error", "disconnect"];
    for mode in ends {
        b.control(&format!("kind=refresh&user=r-{mode}&mode={mode}"));
    }
    for how in FAILURES {
        b.control(&format!("kind=refresh&user=r-{how}&mode={how}"));
    }
    let start = Instant::now();
    let connect = |user: &str| {
        let mut c = Raw::open(&s);
        let r = c.connect_ok(
            json!({"user": user, "expire_at_in": 2, "meta": {"m": 1}, "channels": [format!("srv:{user}")]}),
        );
        assert!(r.get("expires").is_none() && r.get("ttl").is_none(), "{user}: the server refreshes: {r}");
        let id = r["client"].as_str().unwrap().to_string();
        (c, id)
    };
    let (mut ext, ext_id) = connect("r-ext");
    let mut ending: Vec<(&str, Raw)> = ends.iter().map(|m| (*m, connect(&format!("r-{m}")).0)).collect();
    let mut failing: Vec<(&str, Raw, String)> = FAILURES
        .iter()
        .map(|h| {
            let (c, id) = connect(&format!("r-{h}"));
            (*h, c, id)
        })
        .collect();
    // A token's connection is refreshed the same way.
    b.control("kind=refresh&user=r-jwt&mode=extend:60");
    let mut t = Raw::open(&s);
    let r = result_of(
        t.connect(json!({"token": jwt(SECRET, json!({"sub": "r-jwt", "exp": now() + 2}))})),
        "connect",
        "jwt",
    );
    assert!(r.get("expires").is_none(), "a token's connection is refreshed by the server too: {r}");
    // A client's own refresh command is refused.
    let (mut cmd, _) = Raw::connected(&s, json!({"user": "r-cmd", "expire_at_in": 60}));
    let r = cmd.call(json!({"refresh": {"token": jwt(SECRET, json!({"sub": "r-cmd"}))}}));
    assert_eq!(closed_of(r, "a client refresh command").0, 3501, "server-side refresh expected");

    // SDK clients, refreshed and expired.
    let mut agents = Vec::new();
    for sdk in [Sdk::Js, Sdk::Py] {
        let Some(mut a) = Agent::start(sdk, test) else { return };
        let name = sdk_name(sdk);
        b.control(&format!("kind=refresh&user={name}-ext&mode=extend:2"));
        b.control(&format!("kind=refresh&user={name}-exp&mode=expired"));
        sdk_connect(&mut a, "ext", &s, json!({"user": format!("{name}-ext"), "expire_at_in": 2}), "t");
        sdk_connect(&mut a, "exp", &s, json!({"user": format!("{name}-exp"), "expire_at_in": 2}), "t");
        agents.push(a);
    }

    for (mode, c) in &mut ending {
        let closed = c.close(Duration::from_secs(8));
        assert_eq!(closed, (3005, "connection expired".to_string()), "refresh answered {mode}");
    }
    let jwt_refresh = b.wait("the token connection's refresh", "refresh", |r| r["body"]["user"] == "r-jwt");
    assert_eq!(jwt_refresh["body"]["user"], "r-jwt");

    // Past two refreshes of r-ext.
    let refreshes = b.wait_n("two refreshes", "refresh", 2, Duration::from_secs(10), |r| r["body"]["client"] == ext_id);
    for r in &refreshes {
        check_request(r, &ext_id, "websocket", proto);
        assert_eq!(r["body"]["user"], "r-ext", "{r}");
    }
    assert_eq!(refreshes[0]["body"]["meta"], json!({"m": 1}), "the connect result's meta: {}", refreshes[0]);
    assert_eq!(refreshes[1]["body"]["meta"], json!({"m": 2}), "the refresh result's meta: {}", refreshes[1]);
    let left = Duration::from_millis(4500).saturating_sub(start.elapsed());
    assert!(ext.open_for(left), "a refreshed connection stays: {:?}", ext.closed);
    s.api("publish", json!({"channel": "srv:r-ext", "data": {"still": "here"}}));
    assert_eq!(ext.publication("srv:r-ext")["data"], json!({"still": "here"}));
    for (how, c, id) in &mut failing {
        assert!(
            c.open_for(Duration::from_millis(100)),
            "refresh failing with {how} keeps the connection: {:?}",
            c.closed
        );
        // One call (an HTTP call whose reused connection was dropped is sent again at once),
        // retried only a minute later.
        let calls = b.wait_n(&format!("the refresh of r-{how}"), "refresh", 1, Duration::from_secs(5), |r| {
            r["body"]["client"] == *id
        });
        let span = calls.last().unwrap()["t"].as_f64().unwrap() - calls[0]["t"].as_f64().unwrap();
        assert!(calls.len() <= 2 && span < 0.5, "{how}: refresh retried before a minute: {calls:?}");
    }

    for (sdk, a) in [Sdk::Js, Sdk::Py].into_iter().zip(&mut agents) {
        let name = sdk_name(sdk);
        let c = a.wait("reconnecting after 3005", |e| ev("exp", "connecting")(e) && e["code"] == 3005);
        assert_eq!(c["reason"], "connection expired", "{sdk:?}: {c}");
        a.wait_n("connected again", 2, ev("exp", "connected"));
        let user = format!("{name}-exp");
        b.wait_n("the connect proxy called again", "connect", 2, Duration::from_secs(5), |r| {
            r["body"]["data"]["user"] == user
        });
        let user = format!("{name}-ext");
        b.wait_n("the SDK client refreshed", "refresh", 2, Duration::from_secs(5), |r| r["body"]["user"] == user);
        a.send(json!({"op": "disconnect", "c": "exp"}));
        assert_eq!(a.count(ev("ext", "connected")), 1, "{sdk:?}: a refreshed client stays on its connection");
        assert_eq!(a.count(ev("ext", "disconnected")), 0, "{sdk:?}");
    }
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// subscribe
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_over_http() {
    subscribe_flow(Proto::Http, "subscribe_over_http");
}

#[test]
fn subscribe_over_grpc() {
    subscribe_flow(Proto::Grpc, "subscribe_over_grpc");
}

/// The subscribe proxy decides in its namespaces: the answer's data, channel info, overrides
/// and expiry apply; its errors and disconnects reach the client; a failing call is error 100;
/// namespaces without the proxy never call it. SDKs: subscribed, unsubscribed with the error's
/// code, resubscribing after a failing call, reconnecting after a disconnect.
fn subscribe_flow(proto: Proto, test: &str) {
    let Some(b) = Backend::start(test, proto == Proto::Grpc) else { return };
    let s = Server::start(server_config(&b, proto, json!({})));
    let (mut c, client) = Raw::connected(&s, json!({"user": "s1", "meta": {"role": "admin"}}));
    let sub = |c: &mut Raw, ch: &str, data: Value| {
        let mut cmd = json!({"subscribe": {"channel": ch}});
        if !data.is_null() {
            cmd["subscribe"]["data"] = data;
        }
        c.call(cmd)
    };

    let data = json!({"info": {"seat": 7}, "data": {"welcome": true}});
    let res = result_of(sub(&mut c, "px:ok:1", data.clone()), "subscribe", "an allowed subscribe");
    assert_eq!(res["data"], json!({"welcome": true}), "the result's data is the reply's: {res}");
    assert!(res.get("expires").is_none(), "{res}");
    let req = b.wait("the subscribe call", "subscribe", |r| r["body"]["channel"] == "px:ok:1");
    check_request(&req, &client, "websocket", proto);
    assert_eq!(req["body"]["user"], "s1", "{req}");
    assert_eq!(req["body"]["data"], data, "{req}");
    assert_eq!(req["body"]["meta"], json!({"role": "admin"}), "include_connection_meta: {req}");
    let p = s.api("presence", json!({"channel": "px:ok:1"}));
    assert_eq!(p["result"]["presence"][client.as_str()]["chan_info"], json!({"seat": 7}), "channel info: {p}");

    let over = json!({"override": {"presence": {"value": false}}});
    result_of(sub(&mut c, "px:ok:2", over), "subscribe", "an override");
    let p = s.api("presence", json!({"channel": "px:ok:2"}));
    assert_eq!(p["result"]["presence"], json!({}), "presence overridden off: {p}");

    let res = result_of(sub(&mut c, "px:ok:3", json!({"expire_at_in": 600})), "subscribe", "an expiring subscription");
    assert_eq!(res["expires"], true, "without a sub_refresh proxy the client refreshes: {res}");
    assert!((590..=600).contains(&res["ttl"].as_i64().unwrap_or(0)), "{res}");
    let r = sub(&mut c, "px:ok:4", json!({"expire_at": now() - 10}));
    assert_eq!(error_of(r, "expire_at in the past"), json!({"code": 110, "message": "expired"}));

    result_of(sub(&mut c, "px:empty:1", Value::Null), "subscribe", "no result: allowed");
    assert_eq!(error_of(sub(&mut c, "px:deny:1", Value::Null), "deny"), json!({"code": 403, "message": "denied"}));
    let busy = error_of(sub(&mut c, "px:busy:1", Value::Null), "busy");
    assert_eq!(busy, json!({"code": 1001, "message": "busy", "temporary": true}));
    if proto == Proto::Http {
        let r = sub(&mut c, "px:x:404", json!({"fail": "404"}));
        assert_eq!(error_of(r, "HTTP 404"), json!({"code": 404, "message": "not found"}));
    }
    for how in FAILURES {
        let t = Instant::now();
        let r = sub(&mut c, &format!("px:{how}:1"), Value::Null);
        assert_eq!(error_of(r, &format!("subscribe failing with {how}")), internal(), "{how}");
        if how == "slow" {
            about_timeout(t.elapsed(), "a slow subscribe proxy");
        }
    }
    let r = sub(&mut c, "plain:1", Value::Null);
    assert_eq!(error_of(r, "no proxy"), json!({"code": 103, "message": "permission denied"}));
    assert!(b.find("subscribe", |r| r["body"]["channel"] == "plain:1").is_empty(), "plain has no subscribe proxy");
    // The connection took it all.
    s.api("publish", json!({"channel": "px:ok:1", "data": {"n": 1}}));
    assert_eq!(c.publication("px:ok:1")["data"], json!({"n": 1}));

    let (mut k, _) = Raw::connected(&s, json!({"user": "s2"}));
    assert_eq!(closed_of(sub(&mut k, "px:kick:1", Value::Null), "kick"), (4403, "kicked".to_string()));
    if proto == Proto::Http {
        let (mut k, _) = Raw::connected(&s, json!({"user": "s2"}));
        let r = sub(&mut k, "px:x:403", json!({"fail": "403"}));
        assert_eq!(closed_of(r, "HTTP 403"), (4403, "forbidden".to_string()));
    }

    for sdk in [Sdk::Js, Sdk::Py] {
        let Some(mut a) = Agent::start(sdk, test) else { return };
        let name = sdk_name(sdk);
        sdk_connect(&mut a, "a", &s, json!({"user": format!("{name}-sub")}), "t");
        let ok = format!("px:ok:{name}");
        a.sub("a", &ok, json!({"data": {"data": {"hello": name}}}));
        let e = a.wait("subscribed", sev("a", &ok, "sub.subscribed"));
        assert_eq!(e["data"], json!({"hello": name}), "{sdk:?}: {e}");
        let deny = format!("px:deny:{name}");
        a.sub("a", &deny, json!({}));
        let e = a.wait("unsubscribed", sev("a", &deny, "sub.unsubscribed"));
        assert_eq!((e["code"].as_i64(), e["reason"].as_str()), (Some(403), Some("denied")), "{sdk:?}: {e}");
        let fail = format!("px:fail:{name}");
        a.sub("a", &fail, json!({}));
        let e = a.wait("a subscription error", sev("a", &fail, "sub.error"));
        assert_eq!(e["error"]["code"], 100, "{sdk:?}: {e}");
        b.wait_n("resubscribing", "subscribe", 2, Duration::from_secs(10), |r| r["body"]["channel"] == fail.as_str());
        a.send(json!({"op": "unsub", "c": "a", "ch": fail}));

        sdk_connect(&mut a, "k", &s, json!({"user": format!("{name}-kicked")}), "t");
        a.wait("connected", ev("k", "connected"));
        let kick = format!("px:kick:{name}");
        a.sub("k", &kick, json!({}));
        let e = a.wait("reconnecting after 4403", |e| ev("k", "connecting")(e) && e["code"] == 4403);
        assert_eq!(e["reason"], "kicked", "{sdk:?}: {e}");
        a.send(json!({"op": "disconnect", "c": "k"}));

        a.settle(Duration::from_millis(500));
        assert_eq!(a.count(sev("a", &deny, "sub.subscribing")), 1, "{sdk:?}: no resubscribe after 403");
        assert_eq!(b.find("subscribe", |r| r["body"]["channel"] == deny.as_str()).len(), 1, "{sdk:?}");
        assert_eq!(a.count(ev("a", "disconnected")), 0, "{sdk:?}");
        assert_eq!(a.count(sev("a", &ok, "sub.unsubscribed")), 0, "{sdk:?}");
    }
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// publish and rpc
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_and_rpc_over_http() {
    publish_and_rpc_flow(Proto::Http, "publish_and_rpc_over_http");
}

#[test]
fn publish_and_rpc_over_grpc() {
    publish_and_rpc_flow(Proto::Grpc, "publish_and_rpc_over_grpc");
}

/// The publish proxy decides (no subscription needed) and may rewrite the data, which
/// subscribers and history then have; the RPC proxy answers methods without namespace and in
/// namespaces with the proxy (108 in one without, 104 in an unknown one). Errors, disconnects
/// and failing calls as for subscribe. SDKs: a rewritten publication reaches the other SDK's
/// subscriber; RPC results and errors.
fn publish_and_rpc_flow(proto: Proto, test: &str) {
    let Some(b) = Backend::start(test, proto == Proto::Grpc) else { return };
    let s = Server::start(server_config(&b, proto, json!({})));
    let (mut p, client) = Raw::connected(&s, json!({"user": "p1", "meta": {"role": "writer"}}));
    let (mut sub, _) = Raw::connected(&s, json!({"user": "p2"}));
    for ch in ["px:rewrite:1", "px:ok:1"] {
        result_of(sub.call(json!({"subscribe": {"channel": ch}})), "subscribe", ch);
    }
    let publish = |c: &mut Raw, ch: &str, data: Value| c.call(json!({"publish": {"channel": ch, "data": data}}));

    // Rewritten by the backend: the subscriber and the history get the new data.
    let res = result_of(publish(&mut p, "px:rewrite:1", json!({"text": "hi"})), "publish", "a rewritten publish");
    assert_eq!(res, json!({}), "the publish result is empty");
    let pb = sub.publication("px:rewrite:1");
    assert_eq!(pb["data"], json!({"rewritten": {"text": "hi"}}), "{pb}");
    assert_eq!(pb["info"]["user"], "p1", "the publisher's info: {pb}");
    let h = s.api("history", json!({"channel": "px:rewrite:1", "limit": 10}));
    assert_eq!(h["result"]["publications"][0]["data"], json!({"rewritten": {"text": "hi"}}), "{h}");
    let req = b.wait("the publish call", "publish", |r| r["body"]["channel"] == "px:rewrite:1");
    check_request(&req, &client, "websocket", proto);
    assert_eq!(req["body"]["user"], "p1", "{req}");
    assert_eq!(req["body"]["data"], json!({"text": "hi"}), "{req}");
    assert_eq!(req["body"]["meta"], json!({"role": "writer"}), "{req}");
    // Allowed as it is.
    result_of(publish(&mut p, "px:ok:1", json!({"n": 2})), "publish", "an allowed publish");
    assert_eq!(sub.publication("px:ok:1")["data"], json!({"n": 2}));

    assert_eq!(error_of(publish(&mut p, "px:deny:1", json!({})), "deny"), json!({"code": 403, "message": "denied"}));
    let busy = error_of(publish(&mut p, "px:busy:1", json!({})), "busy");
    assert_eq!(busy, json!({"code": 1001, "message": "busy", "temporary": true}));
    for how in FAILURES {
        let t = Instant::now();
        let ch = format!("px:{how}:1");
        assert_eq!(error_of(publish(&mut p, &ch, json!({"n": 1})), how), internal(), "publish failing with {how}");
        if how == "slow" {
            about_timeout(t.elapsed(), "a slow publish proxy");
        }
        let h = s.api("history", json!({"channel": ch, "limit": 10}));
        assert_eq!(h["result"].get("publications").and_then(|p| p.as_array()).map_or(0, |p| p.len()), 0, "{how}: {h}");
    }
    let r = publish(&mut p, "plain:1", json!({}));
    assert_eq!(error_of(r, "no proxy"), json!({"code": 103, "message": "permission denied"}));

    // RPC.
    let rpc = |c: &mut Raw, method: &str, data: Value| c.call(json!({"rpc": {"method": method, "data": data}}));
    let res = result_of(rpc(&mut p, "echo", json!({"q": [1, 2]})), "rpc", "echo");
    assert_eq!(res, json!({"data": {"q": [1, 2]}}), "the result's data is the reply's");
    let req = b.wait("the rpc call", "rpc", |r| r["body"]["method"] == "echo");
    check_request(&req, &client, "websocket", proto);
    assert_eq!(req["body"]["user"], "p1", "{req}");
    assert_eq!(req["body"]["data"], json!({"q": [1, 2]}), "{req}");
    assert_eq!(req["body"]["meta"], json!({"role": "writer"}), "{req}");
    let res = result_of(rpc(&mut p, "ns:echo", json!({"n": 1})), "rpc", "ns:echo");
    assert_eq!(res, json!({"data": {"n": 1}}));
    b.wait("the method with its namespace", "rpc", |r| r["body"]["method"] == "ns:echo");
    let res = result_of(rpc(&mut p, "bin:echo", json!({"x": 1})), "rpc", "bin:echo");
    assert_eq!(res, json!({"data": {"x": 1}}), "binary_encoding: the answer's b64data or data");
    let req = b.wait("the binary-encoded call", "rpc", |r| r["body"]["method"] == "bin:echo");
    assert_eq!(req["body"]["encoding"], "binary", "{req}");
    assert_eq!(req["body"]["b64data"], B64.encode(br#"{"x":1}"#), "{req}");
    assert!(req["body"].get("data").is_none(), "binary_encoding: no data: {req}");
    let m = scrape(&s);
    let key =
        format!("centrifugo_proxy_duration_seconds_count{{protocol=\"{}\",type=\"rpc\",name=\"bin\"}}", proto.label());
    assert_eq!(m.get(&key).copied(), Some(1.0), "the named proxy's calls: {key}");
    let res = result_of(rpc(&mut p, "empty", json!({})), "rpc", "no result");
    assert_eq!(res, json!({}), "no result: an empty rpc reply");
    assert_eq!(error_of(rpc(&mut p, "nop:echo", json!({})), "no proxy in nop"), error_obj(108));
    let e = error_of(rpc(&mut p, "zz:echo", json!({})), "unknown namespace");
    assert_eq!(e, json!({"code": 104, "message": "method not found"}));
    assert!(b.find("rpc", |r| r["body"]["method"] == "nop:echo" || r["body"]["method"] == "zz:echo").is_empty());
    let e = error_of(rpc(&mut p, "error", json!({})), "error");
    assert_eq!(e, json!({"code": 1000, "message": "custom error"}));
    let e = error_of(rpc(&mut p, "busy", json!({})), "busy");
    assert_eq!(e, json!({"code": 1001, "message": "busy", "temporary": true}));
    for how in FAILURES {
        let t = Instant::now();
        assert_eq!(error_of(rpc(&mut p, how, json!({})), how), internal(), "rpc failing with {how}");
        if how == "slow" {
            about_timeout(t.elapsed(), "a slow rpc proxy");
        }
    }
    if proto == Proto::Http {
        assert_eq!(
            error_of(rpc(&mut p, "x", json!({"fail": "404"})), "HTTP 404"),
            json!({"code": 404, "message": "not found"})
        );
    }
    // The connection took it all.
    assert_eq!(result_of(rpc(&mut p, "echo", json!(1)), "rpc", "echo"), json!({"data": 1}));

    let (mut k, _) = Raw::connected(&s, json!({"user": "p3"}));
    assert_eq!(closed_of(publish(&mut k, "px:kick:1", json!({})), "kick"), (4403, "kicked".to_string()));
    let (mut k, _) = Raw::connected(&s, json!({"user": "p3"}));
    assert_eq!(closed_of(rpc(&mut k, "kick", json!({})), "kick"), (4403, "kicked".to_string()));

    // SDKs: the JS client publishes, the Python one sees the rewritten data.
    let (Some(mut js), Some(mut py)) = (Agent::start(Sdk::Js, test), Agent::start(Sdk::Py, test)) else { return };
    sdk_connect(&mut js, "a", &s, json!({"user": "js-pub"}), "t");
    sdk_connect(&mut py, "a", &s, json!({"user": "py-sub"}), "t");
    py.sub("a", "px:rewrite:sdk", json!({}));
    py.wait("subscribed", sev("a", "px:rewrite:sdk", "sub.subscribed"));
    js.wait("connected", ev("a", "connected"));
    assert_eq!(js.call("a", "publish", "px:rewrite:sdk", json!({"data": {"from": "js"}})), Ok(json!({})));
    let e = py.wait("the rewritten publication", sev("a", "px:rewrite:sdk", "sub.publication"));
    assert_eq!(e["data"], json!({"rewritten": {"from": "js"}}), "{e}");
    assert_eq!(e["info"]["user"], "js-pub", "{e}");
    for a in [&mut js, &mut py] {
        let sdk = a.sdk;
        assert_eq!(
            a.call("a", "rpc", "", json!({"rpc": "echo", "data": {"k": "v"}})),
            Ok(json!({"data": {"k": "v"}})),
            "{sdk:?}"
        );
        assert_eq!(a.call("a", "rpc", "", json!({"rpc": "error", "data": {}})), Err(1000), "{sdk:?}");
        assert_eq!(a.call("a", "rpc", "", json!({"rpc": "fail", "data": {}})), Err(100), "{sdk:?}");
        assert_eq!(a.call("a", "publish", "px:deny:sdk", json!({"data": {}})), Err(403), "{sdk:?}");
        assert_eq!(a.count(ev("a", "disconnected")), 0, "{sdk:?}");
    }
    let e = py.wait("the rpc error", |e| e["ev"] == "result" && e["err"]["code"] == 100);
    assert_eq!(e["err"]["temporary"], true, "a failing call is a temporary error: {e}");
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// sub_refresh
// ---------------------------------------------------------------------------------------------

#[test]
fn sub_refresh_over_http() {
    sub_refresh_flow(Proto::Http, "sub_refresh_over_http");
}

#[test]
fn sub_refresh_over_grpc() {
    sub_refresh_flow(Proto::Grpc, "sub_refresh_over_grpc");
}

/// In a namespace with a sub_refresh proxy a subscription that expires is refreshed by the
/// server (`client.expired_sub_close_delay` 0): no `expires` in the subscribe reply, a client
/// sub_refresh command is 3501; a new `expire_at` keeps it, `expire_at` 0 makes it permanent,
/// expired or no result unsubscribes it with 2501, a failing call keeps it for a retry a
/// minute later. SDKs resubscribe after 2501.
fn sub_refresh_flow(proto: Proto, test: &str) {
    let Some(b) = Backend::start(test, proto == Proto::Grpc) else { return };
    let s = Server::start(server_config(&b, proto, json!({"client": {"expired_sub_close_delay": "0s"}})));
    // Channel `sr:r-<mode>` is refreshed with that mode.
    let ends = ["expired", "empty", "error"];
    let kept = ["extend:2", "zero", "fail", "garbage", "close", "slow"];
    let ch = |mode: &str| format!("sr:r-{}", mode.split(':').next().unwrap());
    for mode in ends.iter().chain(&kept) {
        b.control(&format!("kind=sub_refresh&channel={}&mode={mode}", ch(mode)));
    }
    let start = Instant::now();
    let (mut c, client) = Raw::connected(&s, json!({"user": "sr1", "meta": {"m": 1}}));
    for mode in ends.iter().chain(&kept) {
        let r = c.call(json!({"subscribe": {"channel": ch(mode), "data": {"expire_at_in": 2}}}));
        let res = result_of(r, "subscribe", &ch(mode));
        assert!(res.get("expires").is_none() && res.get("ttl").is_none(), "{mode}: the server refreshes: {res}");
    }
    let mut agents = Vec::new();
    for sdk in [Sdk::Js, Sdk::Py] {
        let name = sdk_name(sdk);
        b.control(&format!("kind=sub_refresh&channel=sr:{name}&mode=expired"));
        let Some(mut a) = Agent::start(sdk, test) else { return };
        sdk_connect(&mut a, "a", &s, json!({"user": format!("{name}-sr")}), "t");
        a.sub("a", &format!("sr:{name}"), json!({"data": {"expire_at_in": 2}}));
        agents.push(a);
    }

    // Expired, no result, or an error (which sub_refresh ignores): unsubscribed with 2501.
    for mode in ends {
        let ch = ch(mode);
        let u = c.push(&format!("{ch} unsubscribed"), |m| {
            m["push"]["channel"] == ch && m["push"]["unsubscribe"].is_object()
        });
        assert_eq!(u["push"]["unsubscribe"], json!({"code": 2501, "reason": "subscription expired"}), "{mode}: {u}");
    }
    let calls =
        b.wait_n("two refreshes", "sub_refresh", 2, Duration::from_secs(10), |r| r["body"]["channel"] == "sr:r-extend");
    for r in &calls {
        check_request(r, &client, "websocket", proto);
        assert_eq!(r["body"]["user"], "sr1", "{r}");
        assert_eq!(r["body"]["meta"], json!({"m": 1}), "{r}");
    }
    // The others stay subscribed past their expiry.
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(start.elapsed()));
    for mode in kept {
        let ch = ch(mode);
        s.api("publish", json!({"channel": ch, "data": {"on": ch}}));
        assert_eq!(c.publication(&ch)["data"], json!({"on": ch}), "{mode}: still subscribed");
    }
    assert!(c.msgs.iter().all(|m| m["push"]["unsubscribe"].is_null()), "only three unsubscribed: {:?}", c.msgs);
    let zero = b.find("sub_refresh", |r| r["body"]["channel"] == "sr:r-zero");
    assert_eq!(zero.len(), 1, "expire_at 0: the subscription never expires again: {zero:?}");
    for how in FAILURES {
        // One call (an HTTP call whose reused connection was dropped is sent again at once),
        // retried only a minute later.
        let ch = ch(how);
        let calls = b.wait_n(&format!("the refresh of {ch}"), "sub_refresh", 1, Duration::from_secs(5), |r| {
            r["body"]["channel"] == ch.as_str()
        });
        let span = calls.last().unwrap()["t"].as_f64().unwrap() - calls[0]["t"].as_f64().unwrap();
        assert!(calls.len() <= 2 && span < 0.5, "{how}: retried before a minute: {calls:?}");
    }
    let r = c.call(json!({"sub_refresh": {"channel": "sr:r-extend", "token": "x"}}));
    assert_eq!(closed_of(r, "a client sub_refresh command").0, 3501, "server-side sub refresh expected");

    // The SDKs resubscribe, through the subscribe proxy.
    for (sdk, a) in [Sdk::Js, Sdk::Py].into_iter().zip(&mut agents) {
        let ch = format!("sr:{}", sdk_name(sdk));
        let e = a.wait("resubscribing after 2501", |e| sev("a", &ch, "sub.subscribing")(e) && e["code"] == 2501);
        assert_eq!(e["reason"], "subscription expired", "{sdk:?}: {e}");
        a.wait_n("subscribed again", 2, sev("a", &ch, "sub.subscribed"));
        b.wait_n("the subscribe proxy called again", "subscribe", 2, Duration::from_secs(5), |r| {
            r["body"]["channel"] == ch.as_str()
        });
        a.send(json!({"op": "unsub", "c": "a", "ch": ch}));
    }
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// subscription streams (gRPC only)
// ---------------------------------------------------------------------------------------------

/// Subscription streams: the backend's first message answers the subscribe; its publications
/// reach only the client whose stream they are on (no offset); the stream's end unsubscribes
/// the client (2000 at EOF, 2500 on an error); the client's unsubscribe or disconnect ends the
/// stream. Bidirectional: the client's publications go into its stream (108 on a
/// unidirectional one). Refusals and failing calls as for subscribe.
#[test]
fn subscription_streams_over_grpc() {
    let test = "subscription_streams_over_grpc";
    let Some(b) = Backend::start(test, true) else { return };
    let s = Server::start(server_config(&b, Proto::Grpc, json!({})));
    let sub = |c: &mut Raw, ch: &str, data: Value| c.call(json!({"subscribe": {"channel": ch, "data": data}}));
    let pubs = |who: &str| json!([{"for": who, "n": 1}, {"data": {"for": who, "n": 2}, "tags": {"k": "v"}}]);

    let (mut a, a_id) = Raw::connected(&s, json!({"user": "sa", "meta": {"m": "a"}}));
    let (mut c, c_id) = Raw::connected(&s, json!({"user": "sc"}));
    let res = result_of(sub(&mut a, "st:1", json!({"data": {"w": 1}, "pubs": pubs("a")})), "subscribe", "a stream");
    assert_eq!(res["data"], json!({"w": 1}), "the first message's result: {res}");
    result_of(sub(&mut c, "st:1", json!({"pubs": pubs("c")})), "subscribe", "another stream");
    for (raw, who) in [(&mut a, "a"), (&mut c, "c")] {
        let p1 = raw.publication("st:1");
        let p2 = raw.publication("st:1");
        assert_eq!(p1["data"], json!({"for": who, "n": 1}), "{p1}");
        assert_eq!(p2["data"], json!({"for": who, "n": 2}), "{p2}");
        assert_eq!(p2["tags"], json!({"k": "v"}), "{p2}");
        assert!(p1.get("offset").is_none(), "stream publications have no offset: {p1}");
    }
    for (raw, who) in [(&mut a, "a"), (&mut c, "c")] {
        raw.no_publication("st:1", &format!("{who} gets only the publications of its own stream"));
    }
    let req = b.wait("the stream request", "subscribe_stream", |r| r["body"]["client"] == a_id.as_str());
    check_request(&req, &a_id, "websocket", Proto::Grpc);
    assert_eq!(req["path"], "SubscribeUnidirectional", "{req}");
    assert_eq!(req["body"]["user"], "sa", "{req}");
    assert_eq!(req["body"]["channel"], "st:1", "{req}");
    assert_eq!(req["body"]["meta"], json!({"m": "a"}), "{req}");
    // Presence works as usual.
    let p = s.api("presence", json!({"channel": "st:1"}));
    assert_eq!(p["result"]["presence"].as_object().map(|o| o.len()), Some(2), "{p}");
    // No client publications into a unidirectional stream.
    assert_eq!(error_of(a.call(json!({"publish": {"channel": "st:1", "data": {}}})), "publish"), error_obj(108));
    // The client's unsubscribe ends its stream only.
    result_of(a.call(json!({"unsubscribe": {"channel": "st:1"}})), "unsubscribe", "unsubscribe");
    let end = b.wait("the stream cancelled", "stream_end", |r| r["body"]["client"] == a_id.as_str());
    assert_eq!(end["body"]["ended"], "cancelled", "{end}");
    assert!(b.find("stream_end", |r| r["body"]["client"] == c_id.as_str()).is_empty(), "the other stream goes on");

    // The backend ends streams.
    result_of(sub(&mut a, "st:eof", json!({"pubs": [{"last": true}], "end": "eof"})), "subscribe", "eof");
    assert_eq!(a.publication("st:eof")["data"], json!({"last": true}));
    let u = a.push("unsubscribed at EOF", |m| m["push"]["channel"] == "st:eof" && m["push"]["unsubscribe"].is_object());
    assert_eq!(u["push"]["unsubscribe"], json!({"code": 2000, "reason": "server unsubscribe"}), "{u}");
    result_of(sub(&mut a, "st:err", json!({"end": "error"})), "subscribe", "error");
    let u = a
        .push("unsubscribed on an error", |m| m["push"]["channel"] == "st:err" && m["push"]["unsubscribe"].is_object());
    assert_eq!(u["push"]["unsubscribe"], json!({"code": 2500, "reason": "insufficient state"}), "{u}");

    // Refusals and failures.
    assert_eq!(error_of(sub(&mut a, "st:deny:1", json!({})), "deny"), json!({"code": 403, "message": "denied"}));
    let busy = error_of(sub(&mut a, "st:busy:1", json!({})), "busy");
    assert_eq!(busy, json!({"code": 1001, "message": "busy"}), "a stream's error is not temporary");
    for how in FAILURES {
        let t = Instant::now();
        let r = sub(&mut a, &format!("st:{how}:1"), json!({}));
        assert_eq!(error_of(r, &format!("stream failing with {how}")), internal(), "{how}");
        if how == "slow" {
            about_timeout(t.elapsed(), "a slow stream");
        }
    }
    let (mut k, _) = Raw::connected(&s, json!({"user": "sk"}));
    assert_eq!(closed_of(sub(&mut k, "st:kick:1", json!({})), "kick"), (4403, "kicked".to_string()));

    // Bidirectional: publications go to the backend, its echo to this client only.
    let (mut d, d_id) = Raw::connected(&s, json!({"user": "sd"}));
    result_of(sub(&mut d, "bst:1", json!({})), "subscribe", "a bidirectional stream");
    result_of(sub(&mut c, "bst:1", json!({})), "subscribe", "a bidirectional stream");
    let req = b.wait("the bidirectional stream", "subscribe_stream", |r| r["body"]["client"] == d_id.as_str());
    assert_eq!(req["path"], "SubscribeBidirectional", "{req}");
    check_request(&req, &d_id, "websocket", Proto::Grpc);
    let r = d.call(json!({"publish": {"channel": "bst:1", "data": {"hi": 1}}}));
    assert_eq!(result_of(r, "publish", "a publication into the stream"), json!({}));
    let got = b.wait("the client's publication", "stream_publication", |r| r["body"]["client"] == d_id.as_str());
    assert_eq!(got["body"]["data"], json!({"hi": 1}), "{got}");
    assert_eq!(d.publication("bst:1")["data"], json!({"echo": {"hi": 1}}));
    // The client's disconnect ends its streams.
    drop(d);
    let end = b.wait("the stream cancelled", "stream_end", |r| r["body"]["client"] == d_id.as_str());
    assert_eq!(end["body"]["ended"], "cancelled", "{end}");
    c.no_publication("bst:1", "another client's stream publications are its own");

    // SDKs: publications from the stream; a bidirectional round trip.
    for sdk in [Sdk::Js, Sdk::Py] {
        let Some(mut ag) = Agent::start(sdk, test) else { return };
        let name = sdk_name(sdk);
        sdk_connect(&mut ag, "a", &s, json!({"user": format!("{name}-st")}), "t");
        let ch = format!("st:{name}");
        ag.sub("a", &ch, json!({"data": {"data": {"w": name}, "pubs": pubs(name)}}));
        let e = ag.wait("subscribed", sev("a", &ch, "sub.subscribed"));
        assert_eq!(e["data"], json!({"w": name}), "{sdk:?}: {e}");
        let got = ag.wait_n("two publications", 2, sev("a", &ch, "sub.publication"));
        assert_eq!(ns(&got), vec![1, 2], "{sdk:?}: {got:?}");
        assert_eq!(got[1]["tags"], json!({"k": "v"}), "{sdk:?}");
        let bch = format!("bst:{name}");
        ag.sub("a", &bch, json!({}));
        ag.wait("subscribed", sev("a", &bch, "sub.subscribed"));
        assert_eq!(ag.call("a", "publish", &bch, json!({"data": {"from": name}})), Ok(json!({})));
        let e = ag.wait("the echo", sev("a", &bch, "sub.publication"));
        assert_eq!(e["data"], json!({"echo": {"from": name}}), "{sdk:?}: {e}");
    }
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Failing backends: the worker serves everyone else; nothing leaks.
// ---------------------------------------------------------------------------------------------

#[test]
fn failing_backends_hold_up_no_one_over_http() {
    failures_flow(Proto::Http, "failing_backends_hold_up_no_one_over_http");
}

#[test]
fn failing_backends_hold_up_no_one_over_grpc() {
    failures_flow(Proto::Grpc, "failing_backends_hold_up_no_one_over_grpc");
}

/// On one worker: while a connect, subscribe, publish or RPC call waits for a slow backend,
/// another client publishes and gets its publication at once; the slow call ends with error
/// 100 after the timeout. Then many failing calls leave no descriptor and no session behind.
fn failures_flow(proto: Proto, test: &str) {
    let Some(b) = Backend::start(test, proto == Proto::Grpc) else { return };
    let s = Server::start(server_config(&b, proto, json!({"workers": 1})));
    let (mut other, _) = Raw::connected(&s, json!({"user": "other"}));
    for kind in ["connect", "subscribe", "publish", "rpc"] {
        result_of(other.call(json!({"subscribe": {"channel": format!("open:{kind}")}})), "subscribe", kind);
    }
    let (mut c, _) = Raw::connected(&s, json!({"user": "f1"}));

    let s_ref = &s;
    let (r, took) = while_slow(
        &b,
        &mut other,
        "connect",
        |r| r["body"]["data"]["tag"] == "slow",
        "connect",
        || Raw::open(s_ref).connect(json!({"data": {"fail": "slow", "tag": "slow"}})),
    );
    assert_eq!(error_of(r, "a slow connect"), internal());
    about_timeout(took, "a slow connect");
    let c_ref = &mut c;
    let (r, took) = while_slow(
        &b,
        &mut other,
        "subscribe",
        |r| r["body"]["channel"] == "px:slow:s",
        "subscribe",
        || c_ref.call(json!({"subscribe": {"channel": "px:slow:s"}})),
    );
    assert_eq!(error_of(r, "a slow subscribe"), internal());
    about_timeout(took, "a slow subscribe");
    let c_ref = &mut c;
    let (r, took) = while_slow(
        &b,
        &mut other,
        "publish",
        |r| r["body"]["channel"] == "px:slow:p",
        "publish",
        || c_ref.call(json!({"publish": {"channel": "px:slow:p", "data": {}}})),
    );
    assert_eq!(error_of(r, "a slow publish"), internal());
    about_timeout(took, "a slow publish");
    let c_ref = &mut c;
    let (r, took) = while_slow(
        &b,
        &mut other,
        "rpc",
        |r| r["body"]["method"] == "slow",
        "rpc",
        || c_ref.call(json!({"rpc": {"method": "slow", "data": {}}})),
    );
    assert_eq!(error_of(r, "a slow rpc"), internal());
    about_timeout(took, "a slow rpc");

    // Failing calls leave nothing behind.
    let round = |c: &mut Raw, i: usize| {
        for how in ["fail", "garbage", "close"] {
            let r = Raw::open(&s).connect(json!({ "data": failing(how) }));
            assert_eq!(error_of(r, how), internal(), "connect failing with {how}");
            let r = c.call(json!({"subscribe": {"channel": format!("px:{how}:{i}")}}));
            assert_eq!(error_of(r, how), internal(), "subscribe failing with {how}");
            let r = c.call(json!({"rpc": {"method": how, "data": {}}}));
            assert_eq!(error_of(r, how), internal(), "rpc failing with {how}");
        }
    };
    round(&mut c, 0);
    let clients = num_clients(&s);
    let fds = settled_fd_count(s.pid());
    for i in 1..=10 {
        round(&mut c, i);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while num_clients(&s) != clients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(num_clients(&s), clients, "sessions left behind by failing proxy calls");
    let after = settled_fd_count(s.pid());
    assert!(after <= fds + 2, "descriptors: {fds} before 90 failing calls, {after} after");
    assert_eq!(result_of(c.call(json!({"rpc": {"method": "echo", "data": 1}})), "rpc", "echo"), json!({"data": 1}));
    assert!(other.open_for(Duration::from_millis(50)), "{:?}", other.closed);
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Centrifugo v5 flat options.
// ---------------------------------------------------------------------------------------------

/// The v5 names (`proxy_connect_endpoint`, `proxy_http_headers`, namespace `proxy_subscribe`,
/// ...) set up the same proxies: connect, subscribe, publish and RPC (every method, whatever
/// its namespace) reach the backend with the forwarded and static headers and the meta.
#[test]
fn v5_flat_options_configure_the_proxies() {
    let test = "v5_flat_options_configure_the_proxies";
    let Some(b) = Backend::start(test, false) else { return };
    let ep = |kind: &str| b.endpoint(Proto::Http, kind);
    let s = Server::start(json!({
        "http_api": {"key": KEY},
        "proxy_connect_endpoint": ep("connect"),
        "proxy_connect_timeout": "1s",
        "proxy_subscribe_endpoint": ep("subscribe"),
        "proxy_publish_endpoint": ep("publish"),
        "proxy_rpc_endpoint": ep("rpc"),
        "proxy_rpc_timeout": "1s",
        "proxy_http_headers": ["Cookie", "X-Token"],
        "proxy_static_http_headers": {"X-Static": "static-1"},
        "proxy_include_connection_meta": true,
        "namespaces": [{"name": "px", "proxy_subscribe": true, "proxy_publish": true}],
        "workers": 1,
    }));
    let mut c = Raw::open(&s);
    let res = c.connect_ok(json!({"user": "v5", "data": {"v": 5}, "meta": {"m": 5}}));
    let client = res["client"].as_str().unwrap().to_string();
    assert_eq!(res["data"], json!({"v": 5}), "{res}");
    check_request(&b.of_client("connect", &client), &client, "websocket", Proto::Http);
    let res = result_of(c.call(json!({"subscribe": {"channel": "px:ok:1", "data": {"data": 1}}})), "subscribe", "v5");
    assert_eq!(res["data"], 1, "{res}");
    let req = b.wait("the subscribe call", "subscribe", |r| r["body"]["channel"] == "px:ok:1");
    check_request(&req, &client, "websocket", Proto::Http);
    assert_eq!(req["body"]["meta"], json!({"m": 5}), "{req}");
    assert_eq!(error_of(c.call(json!({"subscribe": {"channel": "px:deny:1"}})), "deny")["code"], 403);
    result_of(c.call(json!({"publish": {"channel": "px:rewrite:1", "data": 1}})), "publish", "v5 publish");
    b.wait("the publish call", "publish", |r| r["body"]["channel"] == "px:rewrite:1");
    for method in ["echo", "any:echo"] {
        let r = c.call(json!({"rpc": {"method": method, "data": {"m": method}}}));
        assert_eq!(result_of(r, "rpc", method), json!({"data": {"m": method}}), "every method goes to the proxy");
    }
    let r = Raw::open(&s).connect(json!({"data": {"fail": "500"}}));
    assert_eq!(error_of(r, "a failing connect"), internal());

    let Some(mut a) = Agent::start(Sdk::Js, test) else { return };
    sdk_connect(&mut a, "a", &s, json!({"user": "v5-js", "data": {"hello": "v5"}}), "t");
    assert_eq!(a.wait("connected", ev("a", "connected"))["data"], json!({"hello": "v5"}));
    assert_no_panic(&s);
}
