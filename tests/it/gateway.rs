//! The gateway ("mesh") API against the real binary.
//!
//! * Backends are `tests/python/gw_backend.py`: `/ws/v1` connections opened with the Python
//!   `websockets` package and written against the documented protocol (commands `{m,p,i}`,
//!   replies `{E,r,i}`, queue events `{"e":"queue.pop","p":{n,c,t,d},"id":null}`), driven from
//!   here over stdin/stdout JSON lines. The checks are made here, on what the backend saw.
//! * Raw clients are plain RFC 6455 clients over `TcpStream` (`ws_client.rs`, not the
//!   server's codec).
//! * Centrifugo clients are the official SDKs, run by the agents of `sdk.rs`: centrifuge-js
//!   (`tests/js/agent.js`, which also reports async `message` pushes and can `send`) and
//!   centrifuge-python (`tests/python/sdk_agent.py`).
//! * The grid test starts its own `redis-server` and two nodes on it.
//!
//! A missing tool (the Python venv, Node packages, `redis-server`) skips a test with a
//! message, unless `CI` is set: then it fails.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

/// `client.token.hmac_secret_key` of [`gw_config`].
const SECRET: &str = "gateway-test-secret-0123456789";

/// How long to wait for anything the test expects.
const WAIT: Duration = Duration::from_secs(15);

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The gateway config of the tests: `/chat` → topic `chat`, the backend API on the main port
/// only, Centrifugo clients' `send` into `csend`, two Basic users, HS256 client tokens and
/// channels without namespace open to client subscriptions and subscribers' publications.
fn gw_config(patch: Value) -> Value {
    let mut c = config_with(json!({
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true, "allow_publish_for_subscriber": true}},
        "gateway": {
            "servers": [{"path": "/chat", "topic": "chat"}],
            "api_port": 0,
            "client_send_topic": "csend",
            "topic_size": 2000,
            "max_topics": 100,
            "users": [
                {"name": "reader", "password": "r", "role": "read"},
                {"name": "writer", "password": "w", "role": "write", "host": "127.*"}
            ]
        }
    }));
    merge(&mut c, patch);
    c
}

fn ws_url(s: &Server) -> String {
    format!("ws://127.0.0.1:{}/ws/v1", s.port)
}

fn key_headers() -> Value {
    json!({"X-API-Key": KEY})
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

/// A `message` event of a text frame.
fn text_event(data: &str) -> Value {
    json!({"event": "message", "frame": {"type": "text", "data": data, "finish": true}})
}

/// A `message` event of a binary frame.
fn binary_event(data: &[u8]) -> Value {
    json!({"event": "message", "frame": {"type": "binary", "data": B64.encode(data), "finish": true}})
}

fn with_context(mut event: Value, context: Value) -> Value {
    event["context"] = context;
    event
}

/// `POST path` with a JSON body; asserts HTTP 200 and returns the JSON reply.
fn post_json(s: &Server, path: &str, body: Value, headers: &[(&str, &str)]) -> Value {
    let r = s.post(path, body.to_string().as_bytes(), headers);
    assert_eq!(r.status, 200, "POST {path} {body}: status {} body {:?}", r.status, r.text());
    r.json()
}

/// `GET /v1/nodes` with the API key.
fn nodes(s: &Server) -> Vec<Value> {
    let r = s.request("GET", "/v1/nodes", &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 200, "GET /v1/nodes: {:?}", r.text());
    r.json()["nodes"].as_array().cloned().unwrap_or_else(|| panic!("/v1/nodes without a nodes list: {}", r.text()))
}

// ---------------------------------------------------------------------------------------------
// Tools: skipped without them unless CI is set.
// ---------------------------------------------------------------------------------------------

fn python(test: &str) -> Option<PathBuf> {
    pyenv_python().map_err(|(what, how)| unavailable(test, &what, how)).ok()
}

/// The Python backend (`tests/python/gw_backend.py`) and its named `/ws/v1` connections.
struct Backend {
    p: LineProc,
    next_id: u64,
}

impl Backend {
    fn start(test: &str) -> Option<Backend> {
        let python = python(test)?;
        let mut cmd = Command::new(python);
        cmd.arg(repo_root().join("tests/python/gw_backend.py"));
        Some(Backend { p: LineProc::spawn("gw_backend.py", cmd), next_id: 0 })
    }

    /// Opens connection `b`; `Err` with the `open_failed` report when the server refused it.
    fn try_open(&mut self, b: &str, url: &str, headers: Value) -> Result<(), Value> {
        self.p.send(json!({"op": "open", "b": b, "url": url, "headers": headers}));
        let r = self.p.take(&format!("the open result of {b}"), |e| {
            (e["ev"] == "open" || e["ev"] == "open_failed") && e["b"] == b
        });
        if r["ev"] == "open" {
            Ok(())
        } else {
            Err(r)
        }
    }

    fn open(&mut self, b: &str, url: &str, headers: Value) {
        if let Err(r) = self.try_open(b, url, headers) {
            self.p.fail(&format!("opening {b} at {url} failed: {r}"));
        }
    }

    /// Sends a command with the id under `id_key` ("i", or "id" as some clients do) and returns
    /// the whole reply (`{"E":..,"r":..,"i":..}` as reported).
    fn call_as(&mut self, b: &str, m: &str, p: Value, id_key: &str) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.p.send(json!({"op": "call", "b": b, "m": m, "p": p, "i": id, "id_key": id_key}));
        self.p.take(&format!("the reply to {m} {p} on {b}"), |e| e["ev"] == "reply" && e["b"] == b && e["i"] == id)
    }

    fn call(&mut self, b: &str, m: &str, p: Value) -> Value {
        self.call_as(b, m, p, "i")
    }

    /// A command that must succeed: returns `r`.
    fn ok(&mut self, b: &str, m: &str, p: Value) -> Value {
        let r = self.call(b, m, p.clone());
        if !r["E"].is_null() {
            self.p.fail(&format!("{m} {p} on {b} failed: {r}"));
        }
        r["r"].clone()
    }

    /// A command that must fail: returns its error code (after checking the error shape).
    fn err(&mut self, b: &str, m: &str, p: Value) -> u64 {
        let r = self.call(b, m, p.clone());
        let code = r["E"]["c"].as_u64();
        if code.is_none() || !r["E"]["m"].is_string() || !r["r"].is_null() {
            self.p.fail(&format!("{m} {p} on {b} must fail with {{\"E\":{{\"c\",\"m\"}}}}: {r}"));
        }
        code.unwrap()
    }

    /// The next queue event of connection `b` (events of one connection are taken in order).
    fn next_event(&mut self, b: &str) -> Value {
        self.p.take(&format!("a queue event on {b}"), |e| e["ev"] == "event" && e["b"] == b)
    }

    /// The next queue event of any of `bs`.
    fn next_event_of(&mut self, bs: &[&str]) -> Value {
        self.p.take(&format!("a queue event on {bs:?}"), |e| e["ev"] == "event" && bs.iter().any(|b| e["b"] == *b))
    }

    /// The next queue event of any of `bs`, or `None` when none comes within `within`.
    fn try_next_event_of(&mut self, bs: &[&str], within: Duration) -> Option<Value> {
        self.p.take_by(Instant::now() + within, |e| e["ev"] == "event" && bs.iter().any(|b| e["b"] == *b))
    }

    /// The client id of raw client `name` (from its handshake event, the next event of `b`).
    fn handshake(&mut self, b: &str, name: &str) -> Value {
        let e = self.next_event(b);
        if e["d"]["event"] != "handshake" || e["d"]["headers"]["X-Raw-Name"] != name {
            self.p.fail(&format!("expected the handshake of {name} on {b}, got {e}"));
        }
        e
    }

    /// `ping` → `pong` on `b`: everything `b` received before the pong has been reported.
    fn ping(&mut self, b: &str) {
        self.p.send(json!({"op": "ping", "b": b}));
        self.p.take(&format!("pong on {b}"), |e| e["ev"] == "pong" && e["b"] == b);
    }

    /// Asserts no queue event of `b` is waiting to be taken.
    fn assert_no_event(&mut self, b: &str, why: &str) {
        if let Some(e) = self.p.pending.iter().find(|e| e["ev"] == "event" && e["b"] == b) {
            let e = e.clone();
            self.p.fail(&format!("{why}: unexpected event on {b}: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket clients.
// ---------------------------------------------------------------------------------------------

static KEYS: AtomicU64 = AtomicU64::new(1);

/// A raw (non-Centrifuge) WebSocket client of a gateway endpoint.
struct Raw {
    name: String,
    ws: Ws,
    /// The `Sec-WebSocket-Key` it sent.
    key: String,
    /// Data frames received while waiting for a pong.
    pending: VecDeque<(u8, Vec<u8>)>,
    pings: u64,
    /// Server pings answered.
    pongs_sent: u64,
}

impl Raw {
    /// Connects to `path` of `s`, sending `x-raw-name: name` (lower-case on purpose) so its
    /// handshake event can be told apart.
    fn connect(s: &Server, path: &str, name: &str) -> Raw {
        let stream = TcpStream::connect(s.addr()).expect("connect");
        let key = B64.encode(format!("{:016}", KEYS.fetch_add(1, Ordering::Relaxed)));
        let ws = Ws::upgrade(stream, path, &key, &[("x-raw-name", name)])
            .unwrap_or_else(|status| panic!("{name}: upgrade refused with {status}"));
        Raw { name: name.to_string(), ws, key, pending: VecDeque::new(), pings: 0, pongs_sent: 0 }
    }

    fn send_frame(&mut self, op: u8, payload: &[u8]) {
        let name = &self.name;
        self.ws.send(&client_frame(true, op, payload, true)).unwrap_or_else(|e| panic!("{name}: write failed: {e}"));
    }

    fn send_text(&mut self, text: &str) {
        self.send_frame(TEXT, text.as_bytes());
    }

    fn send_binary(&mut self, data: &[u8]) {
        self.send_frame(BINARY, data);
    }

    /// The next frame `(opcode, payload)`; panics on EOF or after [`WAIT`].
    fn frame(&mut self) -> (u8, Vec<u8>) {
        match self.ws.frame_until(Instant::now() + WAIT) {
            Ok(f) => (f.op, f.payload),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                panic!("{}: no frame within {WAIT:?}", self.name)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                panic!("{}: the server closed the connection", self.name)
            }
            Err(e) => panic!("{}: read failed: {e}", self.name),
        }
    }

    /// The next data frame `(opcode, payload)` (server pings answered on the way).
    fn recv(&mut self) -> (u8, Vec<u8>) {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        loop {
            let (op, payload) = self.frame();
            match op {
                TEXT | BINARY => return (op, payload),
                PING => self.pong(&payload),
                PONG => {}
                CLOSE => panic!("{}: the server closed the WebSocket: {payload:?}", self.name),
                _ => panic!("{}: unexpected opcode {op}", self.name),
            }
        }
    }

    fn recv_text(&mut self) -> String {
        match self.recv() {
            (TEXT, p) => String::from_utf8(p).unwrap_or_else(|e| panic!("{}: text frame not UTF-8: {e}", self.name)),
            (op, p) => panic!("{}: expected a text frame, got opcode {op} {p:?}", self.name),
        }
    }

    fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv() {
            (BINARY, p) => p,
            (op, p) => {
                panic!("{}: expected a binary frame, got opcode {op} {:?}", self.name, String::from_utf8_lossy(&p))
            }
        }
    }

    fn pong(&mut self, payload: &[u8]) {
        self.pongs_sent += 1;
        self.send_frame(PONG, payload);
    }

    /// Ping → pong: the server has handled every frame this client sent before.
    fn barrier(&mut self) {
        self.pings += 1;
        let token = format!("barrier-{}", self.pings);
        self.send_frame(PING, token.as_bytes());
        loop {
            let (op, payload) = self.frame();
            match op {
                PONG if payload == token.as_bytes() => return,
                PONG => {}
                PING => self.pong(&payload),
                TEXT | BINARY => self.pending.push_back((op, payload)),
                _ => panic!("{}: unexpected opcode {op} while waiting for a pong", self.name),
            }
        }
    }

    /// Sends a close frame and waits for the server's close frame (or EOF).
    fn close(mut self) {
        self.send_frame(CLOSE, &1000u16.to_be_bytes());
        let deadline = Instant::now() + WAIT;
        loop {
            match self.ws.frame_until(deadline) {
                Ok(f) if f.op == CLOSE => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("{}: no close frame from the server", self.name)
                }
                Err(_) => return,
            }
        }
    }
}

/// Connects raw client `name` to `/chat` and returns it with its client id, read from its
/// handshake event on backend connection `b` (which must pop `chat`, with nothing else
/// pending).
fn raw_client(s: &Server, be: &mut Backend, b: &str, name: &str) -> (Raw, String) {
    let r = Raw::connect(s, "/chat", name);
    let e = be.handshake(b, name);
    (r, e["c"].as_str().unwrap_or_else(|| panic!("client id must be a string: {e}")).to_string())
}

fn jwt_for(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    jwt(SECRET, json!({"sub": user, "exp": exp}))
}

// ---------------------------------------------------------------------------------------------
// A redis-server of this file's own (for the grid test).
// ---------------------------------------------------------------------------------------------

struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(test: &str) -> Option<Redis> {
        if !Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success()) {
            unavailable(test, "`redis-server` is not on PATH", "apt-get install redis-server");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("gyre-it-gw-redis-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("create the redis directory");
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.join("redis.log")).expect("redis log");
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--protected-mode", "no"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn redis-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if redis_ping(port) {
                    return Some(Redis { child, port, dir });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "exited with {status}: {}",
                        std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = "did not answer PING within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{test}: redis-server did not start: {last}");
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// A raw client's handshake, text and binary messages and close reach the popping backend as
/// documented; `conn.call set_context_value` / `set_context` show up in later events; plus
/// `ping`/`pong`, the `"id"` quirk and the error codes of bad commands.
#[test]
fn raw_client_events_reach_the_backend_with_context() {
    let s = Server::start(gw_config(json!({})));
    let Some(mut be) = Backend::start("raw_client_events_reach_the_backend_with_context") else { return };
    be.open("b", &ws_url(&s), key_headers());
    be.ping("b");
    assert_eq!(be.ok("b", "queue.pop", json!({"t": ["chat"]})), json!({"s": true}));

    let node = nodes(&s)[0]["id"].clone();
    let mut r = Raw::connect(&s, "/chat", "r1");
    let hs = be.handshake("b", "r1");
    let c = hs["c"].as_str().expect("client id is a string").to_string();
    assert!(c.parse::<u64>().is_ok_and(|n| n > 0), "client id must be a 64-bit number as a string: {hs}");
    assert_eq!((&hs["t"], &hs["n"]), (&json!("chat"), &node), "topic and node of {hs}");
    let headers = &hs["d"]["headers"];
    assert_eq!(headers["Sec-Websocket-Key"], json!(r.key), "canonical header names: {hs}");
    assert_eq!(headers["Sec-Websocket-Version"], "13", "{hs}");
    assert_eq!(headers["Upgrade"], "websocket", "{hs}");
    assert!(hs["d"].get("context").is_none(), "no context yet: {hs}");
    assert_eq!(hs["d"].as_object().unwrap().len(), 2, "handshake event is {{event, headers}}: {hs}");

    // A second client gets another id.
    let (r2, c2) = raw_client(&s, &mut be, "b", "r2");
    assert_ne!(c, c2, "client ids must be unique");

    r.send_text("hello gateway");
    let e = be.next_event("b");
    assert_eq!((&e["c"], &e["t"], &e["n"]), (&json!(c), &json!("chat"), &node), "{e}");
    assert_eq!(e["d"], text_event("hello gateway"));
    r.send_binary(&[0, 1, 2, 0xfe, 0xff]);
    assert_eq!(be.next_event("b")["d"], binary_event(&[0, 1, 2, 0xfe, 0xff]));

    // The documented quirk: "id" instead of "i"; the reply carries "i".
    let reply = be.call_as("b", "conn.call", json!({"c": c, "f": "set_context_value", "a": ["uid", 42]}), "id");
    assert_eq!((&reply["E"], &reply["r"]), (&Value::Null, &json!({"s": true})), "{reply}");
    r.send_text("after login");
    assert_eq!(be.next_event("b")["d"], with_context(text_event("after login"), json!({"uid": 42})));
    be.ok("b", "conn.call", json!({"c": c, "f": "set_context_value", "a": ["name", "ann"]}));
    r.send_binary(b"\x07");
    assert_eq!(be.next_event("b")["d"], with_context(binary_event(b"\x07"), json!({"uid": 42, "name": "ann"})));
    // set_context replaces the whole context.
    be.ok("b", "conn.call", json!({"c": c, "f": "set_context", "a": [{"room": "lobby"}]}));
    r.send_text("in the lobby");
    assert_eq!(be.next_event("b")["d"], with_context(text_event("in the lobby"), json!({"room": "lobby"})));
    // Other clients' context is their own.
    let mut r2 = r2;
    r2.send_text("r2 speaks");
    let e = be.next_event("b");
    assert_eq!((&e["c"], &e["d"]), (&json!(c2), &text_event("r2 speaks")), "{e}");

    r.close();
    let e = be.next_event("b");
    assert_eq!((&e["c"], &e["d"]), (&json!(c), &json!({"event": "close", "context": {"room": "lobby"}})), "{e}");
    // A client that vanishes without a close frame gets its close event too.
    drop(r2);
    let e = be.next_event("b");
    assert_eq!((&e["c"], &e["d"]), (&json!(c2), &json!({"event": "close"})), "{e}");

    // The client is gone: conn.call → 301, mesh.send → 401.
    assert_eq!(be.err("b", "conn.call", json!({"c": c, "f": "set_context_value", "a": ["k", 1]})), 301);
    assert_eq!(be.err("b", "mesh.send", json!({"c": c, "d": "x"})), 401);
    // Bad arguments → 101.
    for p in [
        json!({"c": c, "f": "set_context_value", "a": ["only-a-key"]}),
        json!({"c": c, "f": "set_context", "a": ["not an object"]}),
        json!({"c": c, "f": "subscribe", "a": []}),
        json!({"c": c, "f": "no_such_function", "a": []}),
        json!({"f": "subscribe", "a": ["room"]}),
    ] {
        assert_eq!(be.err("b", "conn.call", p.clone()), 101, "conn.call {p}");
    }
    for p in [json!({}), json!({"t": []}), json!({"t": [1]}), json!("chat")] {
        assert_eq!(be.err("b", "queue.pop", p.clone()), 101, "queue.pop {p}");
    }
    be.ping("b");
    assert!(!s.stderr().contains("panicked"), "the server panicked:\n{}", s.stderr());
}

/// `mesh.send` and `mesh.publish`, text and binary, over `/ws/v1` and HTTP; raw subscribers
/// (subscribed with `conn.call`) also receive Centrifugo API publications as raw frames.
#[test]
fn send_and_publish_text_and_binary_over_ws_and_http() {
    let s = Server::start(gw_config(json!({})));
    let Some(mut be) = Backend::start("send_and_publish_text_and_binary_over_ws_and_http") else { return };
    be.open("b", &ws_url(&s), key_headers());
    be.ok("b", "queue.pop", json!({"t": ["chat"]}));
    let (mut r, c) = raw_client(&s, &mut be, "b", "r1");
    let key = [("X-API-Key", KEY)];

    // mesh.send over /ws/v1: text is the default type.
    assert_eq!(be.ok("b", "mesh.send", json!({"c": c, "d": "hi there"})), json!({"s": true}));
    assert_eq!(r.recv_text(), "hi there");
    be.ok("b", "mesh.send", json!({"c": c, "d": "{\"json\":true}", "t": "text"}));
    assert_eq!(r.recv_text(), "{\"json\":true}");
    be.ok("b", "mesh.send", json!({"c": c, "d": B64.encode([0u8, 255, 10]), "t": "binary"}));
    assert_eq!(r.recv_binary(), vec![0u8, 255, 10]);
    // mesh.send over HTTP.
    let reply = post_json(&s, "/v1/mesh/send", json!({"c": c, "d": "via http"}), &key);
    assert_eq!(reply, json!({"E": null, "r": {"s": true}}));
    assert_eq!(r.recv_text(), "via http");
    let reply = post_json(&s, "/v1/mesh/send", json!({"c": c, "d": B64.encode(b"\x00bin"), "t": "binary"}), &key);
    assert_eq!(reply, json!({"E": null, "r": {"s": true}}));
    assert_eq!(r.recv_binary(), b"\x00bin".to_vec());
    // Errors: unknown client → 401, bad data → 101 (HTTP 200 in every case).
    assert_eq!(be.err("b", "mesh.send", json!({"c": "12345", "d": "x"})), 401);
    let reply = post_json(&s, "/v1/mesh/send", json!({"c": "12345", "d": "x"}), &key);
    assert_eq!(reply["E"]["c"], 401, "{reply}");
    assert!(reply["E"]["m"].is_string() && reply.get("r").is_none_or(Value::is_null), "{reply}");
    assert_eq!(be.err("b", "mesh.send", json!({"c": c, "d": "!!not base64", "t": "binary"})), 101);
    assert_eq!(be.err("b", "mesh.send", json!({"c": c, "d": "x", "t": "video"})), 101);
    let reply = s.post("/v1/mesh/send", b"not json", &key);
    assert_eq!((reply.status, reply.json()["E"]["c"].clone()), (200, json!(101)), "{:?}", reply.text());
    assert_eq!(post_json(&s, "/v1/mesh/send", json!({"d": "no client"}), &key)["E"]["c"], 101);

    // Subscribe the raw client to two channels from the backend.
    assert_eq!(be.ok("b", "conn.call", json!({"c": c, "f": "subscribe", "a": ["room", "room2"]})), json!({"s": true}));
    // mesh.publish over /ws/v1: JSON text as it is, other text as the text, binary as binary.
    assert_eq!(be.ok("b", "mesh.publish", json!({"c": "room", "d": "{\"a\":1}"})), json!({"s": 1, "f": 0}));
    assert_eq!(r.recv_text(), "{\"a\":1}");
    assert_eq!(
        be.ok("b", "mesh.publish", json!({"c": "room", "d": "plain words", "t": "text"})),
        json!({"s": 1, "f": 0})
    );
    assert_eq!(r.recv_text(), "plain words");
    assert_eq!(
        be.ok("b", "mesh.publish", json!({"c": "room", "d": B64.encode([9u8, 0, 0xff]), "t": "binary"})),
        json!({"s": 1, "f": 0})
    );
    assert_eq!(r.recv_binary(), vec![9u8, 0, 0xff]);
    // mesh.publish over HTTP.
    let reply = post_json(&s, "/v1/mesh/publish", json!({"c": "room2", "d": "[1,2]"}), &key);
    assert_eq!(reply, json!({"E": null, "r": {"s": 1, "f": 0}}));
    assert_eq!(r.recv_text(), "[1,2]");
    let reply =
        post_json(&s, "/v1/mesh/publish", json!({"c": "room2", "d": B64.encode(b"\x01\x02"), "t": "binary"}), &key);
    assert_eq!(reply, json!({"E": null, "r": {"s": 1, "f": 0}}));
    assert_eq!(r.recv_binary(), vec![1u8, 2]);
    // The Centrifugo API's publish reaches the raw subscriber as a raw frame of the data.
    assert_eq!(s.api("publish", json!({"channel": "room", "data": {"a": 1}})).get("error"), None);
    assert_eq!(r.recv_text(), "{\"a\":1}");
    s.api("publish", json!({"channel": "room2", "data": "hi"}));
    assert_eq!(r.recv_text(), "hi");
    // A channel name with a space or no channel → 101.
    assert_eq!(be.err("b", "mesh.publish", json!({"c": "bad channel", "d": "x"})), 101);
    assert_eq!(post_json(&s, "/v1/mesh/publish", json!({"d": "x"}), &key)["E"]["c"], 101);

    // Unsubscribed from `room`: its publications no longer arrive, `room2`'s still do.
    assert_eq!(be.ok("b", "conn.call", json!({"c": c, "f": "unsubscribe", "a": ["room"]})), json!({"s": true}));
    assert_eq!(be.ok("b", "mesh.publish", json!({"c": "room", "d": "gone"})), json!({"s": 0, "f": 0}));
    s.api("publish", json!({"channel": "room", "data": "gone too"}));
    be.ok("b", "mesh.publish", json!({"c": "room2", "d": "still here"}));
    assert_eq!(r.recv_text(), "still here", "publications to an unsubscribed channel must not arrive");
    r.barrier();
    assert!(r.pending.is_empty(), "unexpected frames: {:?}", r.pending);
}

/// `queue.pop` twice on one connection → 202 (both parameter forms); `queue.unpop` stops the
/// events at once, and what is queued meanwhile is delivered after the next pop.
#[test]
fn repeated_pop_is_202_and_unpop_keeps_messages_queued() {
    let s = Server::start(gw_config(json!({})));
    let Some(mut be) = Backend::start("repeated_pop_is_202_and_unpop_keeps_messages_queued") else { return };
    be.open("b", &ws_url(&s), key_headers());
    assert_eq!(be.ok("b", "queue.pop", json!({"t": ["chat"]})), json!({"s": true}));
    assert_eq!(be.err("b", "queue.pop", json!({"t": ["chat"]})), 202);
    assert_eq!(be.err("b", "queue.pop", json!(["chat"])), 202, "the older params form");
    assert_eq!(be.err("b", "queue.pop", json!({"t": ["other", "chat"]})), 202);
    assert_eq!(be.ok("b", "queue.pop", json!(["other"])), json!({"s": true}), "the older params form");
    // Another connection may pop the same topic.
    be.open("b2", &ws_url(&s), key_headers());
    assert_eq!(be.ok("b2", "queue.pop", json!({"t": ["other"]})), json!({"s": true}));

    let (mut r, c) = raw_client(&s, &mut be, "b", "r1");
    r.send_text("one");
    assert_eq!(be.next_event("b")["d"], text_event("one"));

    assert_eq!(be.ok("b", "queue.unpop", json!({})), json!({"s": true}));
    r.send_text("two");
    r.send_binary(b"three");
    r.barrier();
    // The server has taken both; none may reach the unpopped connection.
    be.ok("b", "mesh.send", json!({"c": c, "d": "sync"}));
    assert_eq!(r.recv_text(), "sync");
    be.ping("b");
    be.p.settle(Duration::from_millis(300));
    be.assert_no_event("b", "after queue.unpop");
    // Popping again is allowed after unpop, and delivers what was queued, in order.
    assert_eq!(be.ok("b", "queue.pop", json!({"t": ["chat"]})), json!({"s": true}));
    let e = be.next_event("b");
    assert_eq!((&e["c"], &e["d"]), (&json!(c), &text_event("two")), "{e}");
    assert_eq!(be.next_event("b")["d"], binary_event(b"three"));
    r.send_text("four");
    assert_eq!(be.next_event("b")["d"], text_event("four"));
    be.assert_no_event("b2", "b2 pops another topic");
}

/// Two backends popping one topic share its messages: 200 messages from four raw clients
/// arrive exactly once across the two, and both get a share.
#[test]
fn competing_consumers_split_a_topic_without_loss_or_duplicates() {
    let s = Server::start(gw_config(json!({})));
    let Some(mut be) = Backend::start("competing_consumers_split_a_topic_without_loss_or_duplicates") else { return };
    be.open("b1", &ws_url(&s), key_headers());
    be.open("b2", &ws_url(&s), json!({"Authorization": format!("apikey {KEY}")}));
    be.ok("b1", "queue.pop", json!({"t": ["chat"]}));
    be.ok("b2", "queue.pop", json!(["chat"]));

    let mut clients: Vec<Raw> = (0..4).map(|i| Raw::connect(&s, "/chat", &format!("r{i}"))).collect();
    let mut expected = HashSet::new();
    for j in 0..50 {
        for (i, r) in clients.iter_mut().enumerate() {
            let m = format!("r{i}-m{j}");
            r.send_text(&m);
            expected.insert(m);
        }
    }
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new(); // message → consumers
    let mut per_consumer: BTreeMap<String, usize> = BTreeMap::new();
    let mut handshakes = 0;
    let total = |got: &BTreeMap<String, Vec<String>>| got.values().map(Vec::len).sum::<usize>();
    while total(&got) < expected.len() || handshakes < 4 {
        let e = be.next_event_of(&["b1", "b2"]);
        let b = e["b"].as_str().unwrap().to_string();
        match e["d"]["event"].as_str() {
            Some("handshake") => handshakes += 1,
            Some("message") => {
                let m = e["d"]["frame"]["data"].as_str().unwrap_or_else(|| panic!("bad event {e}")).to_string();
                got.entry(m).or_default().push(b.clone());
                *per_consumer.entry(b).or_default() += 1;
            }
            _ => panic!("unexpected event {e}"),
        }
    }
    let dup: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(dup.is_empty(), "messages delivered more than once: {dup:?}");
    let received: HashSet<String> = got.keys().cloned().collect();
    assert_eq!(received, expected, "every message exactly once (missing: {:?})", expected.difference(&received));
    let (n1, n2) = (per_consumer.get("b1").copied().unwrap_or(0), per_consumer.get("b2").copied().unwrap_or(0));
    eprintln!("split of 200 messages: b1 {n1}, b2 {n2}");
    // Round-robin gives about half each; all (or nearly all) to one is not competing.
    assert!(n1 >= 20 && n2 >= 20, "both consumers must get a share: b1 {n1}, b2 {n2}");
    // Nothing more comes (no late duplicates).
    for r in &mut clients {
        r.barrier();
    }
    be.ping("b1");
    be.ping("b2");
    be.assert_no_event("b1", "after all 200");
    be.assert_no_event("b2", "after all 200");
}

/// A consumer that pops and unpops over and over while four raw clients stream into the
/// topic, next to one that keeps popping: every message still arrives exactly once (what was
/// on its way to the unpopped consumer goes back to the queue).
#[test]
fn consumers_coming_and_going_lose_nothing() {
    let s = Server::start(gw_config(json!({})));
    let Some(mut be) = Backend::start("consumers_coming_and_going_lose_nothing") else { return };
    be.open("steady", &ws_url(&s), key_headers());
    be.open("flaky", &ws_url(&s), key_headers());
    be.ok("steady", "queue.pop", json!({"t": ["chat"]}));
    let clients: Vec<Raw> = (0..4).map(|i| Raw::connect(&s, "/chat", &format!("r{i}"))).collect();
    // The clients stream (at most MAX messages each) until the flaky consumer has gone
    // through CYCLES pop/unpop cycles.
    const MAX: usize = 1500;
    const CYCLES: usize = 30;
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                while sent < MAX && !stop.load(Ordering::Relaxed) {
                    r.send_text(&format!("r{i}-m{sent}"));
                    sent += 1;
                    if sent % 2 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                r.barrier();
                (r, sent)
            })
        })
        .collect();
    let mut toggles = 0;
    while toggles < CYCLES && !senders.iter().all(|t| t.is_finished()) {
        be.ok("flaky", "queue.pop", json!({"t": ["chat"]}));
        be.ok("flaky", "queue.unpop", json!({}));
        toggles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let done: Vec<(Raw, usize)> = senders.into_iter().map(|t| t.join().expect("sender thread")).collect();
    let total: usize = done.iter().map(|(_, n)| n).sum();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let mut flaky = 0;
    while got.len() < total {
        let Some(e) = be.try_next_event_of(&["steady", "flaky"], Duration::from_secs(5)) else {
            panic!("{} of {total} messages never arrived ({toggles} pop/unpop cycles)", total - got.len());
        };
        if e["d"]["event"] == "message" {
            *got.entry(e["d"]["frame"]["data"].as_str().unwrap().to_string()).or_default() += 1;
            flaky += usize::from(e["b"] == "flaky");
        }
    }
    eprintln!("{toggles} pop/unpop cycles; {flaky} of {total} messages went to the flaky consumer");
    let dup: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "delivered more than once: {dup:?}");
    be.ping("steady");
    be.ping("flaky");
    be.assert_no_event("steady", "after all messages");
    be.assert_no_event("flaky", "after all messages");
}

/// A value of the server's Prometheus metrics (`prometheus.enabled`).
fn metric(s: &Server, name: &str) -> u64 {
    let r = s.request("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "GET /metrics: {:?}", r.text());
    let text = r.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// A topic keeps at most `topic_size` messages while nobody pops it: the oldest are dropped
/// (and counted in the metrics), the newest delivered to the first consumer.
#[test]
fn a_full_topic_drops_the_oldest_messages() {
    let s = Server::start(gw_config(json!({"prometheus": {"enabled": true}, "gateway": {"topic_size": 5}})));
    let Some(mut be) = Backend::start("a_full_topic_drops_the_oldest_messages") else { return };
    be.open("b", &ws_url(&s), key_headers());
    let mut r = Raw::connect(&s, "/chat", "r1");
    for i in 0..20 {
        r.send_text(&format!("m{i}"));
    }
    // 21 events (the handshake and 20 messages) into a topic of 5: 16 dropped, 5 queued.
    let deadline = Instant::now() + WAIT;
    let counts = || (metric(&s, "gyre_gateway_dropped_messages_total"), metric(&s, "gyre_gateway_queued_messages"));
    while counts() != (16, 5) {
        assert!(Instant::now() < deadline, "(dropped, queued) must reach (16, 5): {:?}", counts());
        std::thread::sleep(Duration::from_millis(20));
    }
    be.ok("b", "queue.pop", json!({"t": ["chat"]}));
    let mut got: Vec<Value> = (0..5).map(|_| be.next_event("b")["d"].clone()).collect();
    r.send_text("m20");
    got.push(be.next_event("b")["d"].clone());
    let want: Vec<Value> = (15..=20).map(|i| text_event(&format!("m{i}"))).collect();
    assert_eq!(got, want, "the 5 newest of the 21 queued events, then the next message");
    assert_eq!(counts(), (16, 0), "(dropped, queued) once consumed");
}

/// Centrifugo SDK clients and raw clients share channels: `mesh.publish` / the HTTP API reach
/// centrifuge-js and centrifuge-python subscribers as publications and the raw client as raw
/// frames; `mesh.send` to an SDK client's id is its `message` event; its `send` lands in
/// `client_send_topic`.
#[test]
fn centrifugo_sdk_clients_meet_the_gateway() {
    const TEST: &str = "centrifugo_sdk_clients_meet_the_gateway";
    let s = Server::start(gw_config(json!({})));
    let Some(mut be) = Backend::start(TEST) else { return };
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    let Some(mut py) = Agent::start(Sdk::Py, TEST) else { return };

    be.open("b", &ws_url(&s), key_headers());
    be.ok("b", "queue.pop", json!({"t": ["chat", "csend"]}));
    let (mut r, c) = raw_client(&s, &mut be, "b", "r1");
    be.ok("b", "conn.call", json!({"c": c, "f": "subscribe", "a": ["room"]}));

    js.connect("js", &s, json!({"token": jwt_for("alice")}));
    let js_client = js.take("js connected", ev("js", "connected"))["client"].as_str().unwrap().to_string();
    js.sub("js", "room", json!({}));
    js.take("js subscribed", sev("js", "room", "sub.subscribed"));
    py.connect("py", &s, json!({"token": jwt_for("bob")}));
    py.take("py connected", ev("py", "connected"));
    py.sub("py", "room", json!({}));
    py.take("py subscribed", sev("py", "room", "sub.subscribed"));
    let js_pub = sev("js", "room", "sub.publication");
    let py_pub = sev("py", "room", "sub.publication");

    // mesh.publish of JSON text: a publication of that JSON value; the raw frame is the text.
    assert_eq!(be.ok("b", "mesh.publish", json!({"c": "room", "d": "{\"a\":1}"})), json!({"s": 3, "f": 0}));
    assert_eq!(js.take("a js publication", &js_pub)["data"], json!({"a": 1}));
    assert_eq!(py.take("a py publication", &py_pub)["data"], json!({"a": 1}));
    assert_eq!(r.recv_text(), "{\"a\":1}");
    // Other text: a JSON string publication.
    let reply = post_json(&s, "/v1/mesh/publish", json!({"c": "room", "d": "plain text"}), &[("X-API-Key", KEY)]);
    assert_eq!(reply, json!({"E": null, "r": {"s": 3, "f": 0}}));
    assert_eq!(js.take("a js publication", &js_pub)["data"], json!("plain text"));
    assert_eq!(py.take("a py publication", &py_pub)["data"], json!("plain text"));
    assert_eq!(r.recv_text(), "plain text");
    // The Centrifugo API reaches all three too.
    s.api("publish", json!({"channel": "room", "data": {"b": [2]}}));
    assert_eq!(js.take("a js publication", &js_pub)["data"], json!({"b": [2]}));
    assert_eq!(py.take("a py publication", &py_pub)["data"], json!({"b": [2]}));
    assert_eq!(r.recv_text(), "{\"b\":[2]}");

    // A Centrifugo client's own publication reaches the raw subscriber too.
    assert_eq!(js.call("js", "publish", "room", json!({"data": {"from": "js"}})), Ok(json!({})), "js publish");
    assert_eq!(js.take("a js publication", &js_pub)["data"], json!({"from": "js"}));
    assert_eq!(py.take("a py publication", &py_pub)["data"], json!({"from": "js"}));
    assert_eq!(r.recv_text(), "{\"from\":\"js\"}");

    // mesh.send to the SDK client's id: its `message` event.
    assert_eq!(be.ok("b", "mesh.send", json!({"c": js_client, "d": "{\"x\":1}"})), json!({"s": true}));
    assert_eq!(js.take("a js message", ev("js", "message"))["data"], json!({"x": 1}));
    let reply = post_json(&s, "/v1/mesh/send", json!({"c": js_client, "d": "hey"}), &[("X-API-Key", KEY)]);
    assert_eq!(reply, json!({"E": null, "r": {"s": true}}));
    assert_eq!(js.take("a js message", ev("js", "message"))["data"], json!("hey"));

    // The SDK client's `send` lands in client_send_topic.
    assert_eq!(js.call("js", "send", "", json!({"data": {"hello": "gw", "n": [1, 2]}})), Ok(json!({})), "js send");
    let e = be.next_event("b");
    assert_eq!((&e["t"], &e["c"]), (&json!("csend"), &json!(js_client)), "{e}");
    let d = &e["d"];
    assert_eq!((&d["event"], &d["user"]), (&json!("message"), &json!("alice")), "{e}");
    assert_eq!((&d["frame"]["type"], &d["frame"]["finish"]), (&json!("text"), &json!(true)), "{e}");
    let data: Value = serde_json::from_str(d["frame"]["data"].as_str().expect("frame data is a string"))
        .unwrap_or_else(|err| panic!("frame data must be the JSON text sent ({err}): {e}"));
    assert_eq!(data, json!({"hello": "gw", "n": [1, 2]}));
    assert!(d.get("context").is_none(), "{e}");

    for p in [&mut js, &mut py] {
        p.settle(Duration::from_millis(100));
        if let Some(bad) = p.pending.iter().find(|e| e["ev"] == "error" || e["ev"] == "disconnected") {
            let bad = bad.clone();
            p.fail(&format!("unexpected {bad}"));
        }
    }
}

/// Backend access: the API key in its header forms, HTTP Basic users with `read` / `write`
/// roles and a host pattern, 401 without (valid) credentials; and `api_port` serving the
/// same API on its own port.
#[test]
fn backend_api_access_and_api_port() {
    let api_port = free_port();
    let s = Server::start(gw_config(json!({"gateway": {
        "api_port": api_port,
        "users": [
            {"name": "reader", "password": "r", "role": "read"},
            {"name": "writer", "password": "w", "role": "write", "host": "127.*"},
            {"name": "faraway", "password": "f", "role": "read,write", "host": "10.*"},
            {"name": "exact", "password": "e", "role": "read", "host": "127.0.0.1"}
        ]
    }})));
    let Some(mut be) = Backend::start("backend_api_access_and_api_port") else { return };
    let reader = basic("reader", "r");
    let writer = basic("writer", "w");
    let send = json!({"c": "1", "d": "x"}).to_string();
    let publish = json!({"c": "room", "d": "x"}).to_string();

    // HTTP: no or wrong credentials → 401.
    let bad_key = format!("apikey {KEY}x");
    let bad_password = basic("reader", "wrong");
    let no_user = basic("nobody", "r");
    let far = basic("faraway", "f");
    for (what, headers) in [
        ("no credentials", vec![]),
        ("a wrong X-API-Key", vec![("X-API-Key", "nope")]),
        ("a wrong apikey", vec![("Authorization", bad_key.as_str())]),
        ("a wrong password", vec![("Authorization", bad_password.as_str())]),
        ("an unknown user", vec![("Authorization", no_user.as_str())]),
        ("a user from another host", vec![("Authorization", far.as_str())]),
    ] {
        assert_eq!(s.request("GET", "/v1/nodes", &headers).status, 401, "GET /v1/nodes with {what}");
        assert_eq!(s.post("/v1/mesh/send", send.as_bytes(), &headers).status, 401, "mesh/send with {what}");
        assert_eq!(s.post("/v1/mesh/publish", publish.as_bytes(), &headers).status, 401, "mesh/publish with {what}");
    }
    // The API key in its forms: allowed everything.
    let apikey = format!("apikey {KEY}");
    for headers in [vec![("X-API-Key", KEY)], vec![("Authorization", apikey.as_str())]] {
        assert_eq!(s.request("GET", "/v1/nodes", &headers).status, 200, "{headers:?}");
        let r = s.post("/v1/mesh/publish", publish.as_bytes(), &headers);
        assert_eq!((r.status, r.json()), (200, json!({"E": null, "r": {"s": 0, "f": 0}})), "{headers:?}");
    }
    assert_eq!(s.request("GET", &format!("/v1/nodes?api_key={KEY}"), &[]).status, 200, "?api_key=");
    assert_eq!(s.request("GET", "/v1/nodes", &[("Authorization", &basic("exact", "e"))]).status, 200, "host 127.0.0.1");
    // Basic reader: may read, not write.
    assert_eq!(s.request("GET", "/v1/nodes", &[("Authorization", &reader)]).status, 200);
    assert_eq!(s.post("/v1/mesh/send", send.as_bytes(), &[("Authorization", &reader)]).status, 403);
    assert_eq!(s.post("/v1/mesh/publish", publish.as_bytes(), &[("Authorization", &reader)]).status, 403);
    // Basic writer (host 127.*): may write.
    let r = s.post("/v1/mesh/send", send.as_bytes(), &[("Authorization", &writer)]);
    assert_eq!((r.status, r.json()["E"]["c"].clone()), (200, json!(401)), "writer's send to a missing client");
    let r = s.post("/v1/mesh/publish", publish.as_bytes(), &[("Authorization", &writer)]);
    assert_eq!((r.status, r.json()), (200, json!({"E": null, "r": {"s": 0, "f": 0}})));

    // /ws/v1: the upgrade needs credentials.
    for (b, headers) in [
        ("anon", json!({})),
        ("badkey", json!({"X-API-Key": "nope"})),
        ("badpass", json!({"Authorization": bad_password})),
        ("far", json!({"Authorization": far})),
    ] {
        let r = be.try_open(b, &ws_url(&s), headers).expect_err(&format!("/ws/v1 as {b} must be refused"));
        assert_eq!(r["status"], 401, "/ws/v1 as {b}: {r}");
    }
    // A read-only backend pops but may not write.
    be.open("reader", &ws_url(&s), json!({"Authorization": reader}));
    assert_eq!(be.ok("reader", "queue.pop", json!({"t": ["chat"]})), json!({"s": true}));
    let (mut r1, c1) = raw_client(&s, &mut be, "reader", "r1");
    assert_eq!(be.err("reader", "mesh.send", json!({"c": c1, "d": "x"})), 403);
    assert_eq!(be.err("reader", "mesh.publish", json!({"c": "room", "d": "x"})), 403);
    assert_eq!(be.err("reader", "conn.call", json!({"c": c1, "f": "set_context_value", "a": ["k", 1]})), 403);
    // A write-only backend writes but may not pop.
    be.open("writer", &ws_url(&s), json!({"Authorization": writer}));
    assert_eq!(be.err("writer", "queue.pop", json!({"t": ["chat"]})), 403);
    assert_eq!(be.err("writer", "queue.unpop", json!({})), 403);
    assert_eq!(
        be.ok("writer", "conn.call", json!({"c": c1, "f": "set_context_value", "a": ["k", 1]})),
        json!({"s": true})
    );
    assert_eq!(be.ok("writer", "mesh.publish", json!({"c": "room", "d": "x"})), json!({"s": 0, "f": 0}));
    assert_eq!(be.ok("reader", "queue.unpop", json!({})), json!({"s": true}));

    // api_port serves the same API (with the same checks) and is what /v1/nodes advertises.
    let api_addr = format!("127.0.0.1:{api_port}");
    let mut c = Conn::new(api_addr.parse().unwrap());
    c.send(&request("GET", "/v1/nodes", b"", &[("X-API-Key", KEY)]));
    let r = c.read_response().expect("GET /v1/nodes on api_port");
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(r.json()["nodes"][0]["api_server"], json!(api_addr), "{:?}", r.text());
    assert_eq!(nodes(&s)[0]["api_server"], json!(api_addr), "the main port advertises api_port too");
    let mut c = Conn::new(api_addr.parse().unwrap());
    c.send(&request("GET", "/v1/nodes", b"", &[]));
    assert_eq!(c.read_response().unwrap().status, 401, "api_port without credentials");
    let mut c = Conn::new(api_addr.parse().unwrap());
    c.send(&request(
        "POST",
        "/v1/mesh/send",
        json!({"c": c1, "d": "via api_port"}).to_string().as_bytes(),
        &[("X-API-Key", KEY)],
    ));
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.json()), (200, json!({"E": null, "r": {"s": true}})));
    be.open("api", &format!("ws://{api_addr}/ws/v1"), key_headers());
    be.ok("api", "queue.pop", json!({"t": ["chat"]}));
    assert_eq!(r1.recv_text(), "via api_port");
    r1.send_text("to the api port");
    assert_eq!(be.next_event("api")["d"], with_context(text_event("to the api port"), json!({"k": 1})));
}

/// Two nodes on one redis-server: a backend connected to node A calls, sends and publishes
/// to a raw client on node B; each node keeps its own queue, popped through the node list.
#[test]
fn grid_of_two_nodes_on_redis() {
    const TEST: &str = "grid_of_two_nodes_on_redis";
    let Some(redis) = Redis::start(TEST) else { return };
    let Some(mut be) = Backend::start(TEST) else { return };
    let prefix = format!("gwgrid{}x{}", std::process::id(), redis.port);
    let cfg = gw_config(json!({"engine": {
        "type": "redis",
        "redis": {"address": [format!("redis://127.0.0.1:{}", redis.port)], "prefix": prefix}
    }}));
    let a = Server::start(cfg.clone());
    let b = Server::start(cfg);

    // /v1/nodes on A lists both nodes, each with its API address.
    let deadline = Instant::now() + WAIT;
    let list = loop {
        let list = nodes(&a);
        if list.len() == 2 {
            break list;
        }
        assert!(Instant::now() < deadline, "/v1/nodes on A must list 2 nodes: {list:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let ids: Vec<String> = list.iter().map(|n| n["id"].as_str().expect("node id").to_string()).collect();
    assert_ne!(ids[0], ids[1], "{list:?}");
    assert_eq!(list[0]["api_server"], json!(format!("127.0.0.1:{}", a.port)), "A lists itself first: {list:?}");
    assert_eq!(list[1]["api_server"], json!(format!("127.0.0.1:{}", b.port)), "{list:?}");
    assert!(list.iter().all(|n| n["name"].is_string()), "{list:?}");
    let (na, nb) = (format!("n-{}", ids[0]), format!("n-{}", ids[1]));

    // The backend finds every node through A's /v1/nodes and connects to each, as real ones do.
    be.p.send(json!({"op": "discover", "url": a.url(""), "headers": key_headers(), "prefix": "n-"}));
    let d = be.p.take("discovered", |e| e["ev"] == "discovered");
    assert_eq!(d["opened"].as_array().map(Vec::len), Some(2), "{d}");
    be.ok(&na, "queue.pop", json!({"t": ["chat"]}));
    be.ok(&nb, "queue.pop", json!({"t": ["chat"]}));

    // Each node queues its own clients' events.
    let mut rb = Raw::connect(&b, "/chat", "rb");
    let e = be.handshake(&nb, "rb");
    assert_eq!(e["n"], json!(ids[1]), "B's events carry B's id: {e}");
    let cb = e["c"].as_str().unwrap().to_string();
    let mut ra = Raw::connect(&a, "/chat", "ra");
    let e = be.handshake(&na, "ra");
    assert_eq!(e["n"], json!(ids[0]), "A's events carry A's id: {e}");
    let ca = e["c"].as_str().unwrap().to_string();
    assert_ne!(ca, cb, "client ids are unique across nodes");

    // From the backend connection to A: conn.call, mesh.send and subscribe on B's client.
    assert_eq!(
        be.ok(&na, "conn.call", json!({"c": cb, "f": "set_context_value", "a": ["uid", "u-b"]})),
        json!({"s": true})
    );
    rb.send_text("from b");
    let e = be.next_event(&nb);
    assert_eq!((&e["c"], &e["d"]), (&json!(cb), &with_context(text_event("from b"), json!({"uid": "u-b"}))), "{e}");
    assert_eq!(be.ok(&na, "mesh.send", json!({"c": cb, "d": "to b"})), json!({"s": true}));
    assert_eq!(rb.recv_text(), "to b");
    let reply = post_json(
        &a,
        "/v1/mesh/send",
        json!({"c": cb, "d": B64.encode([0u8, 1]), "t": "binary"}),
        &[("X-API-Key", KEY)],
    );
    assert_eq!(reply, json!({"E": null, "r": {"s": true}}));
    assert_eq!(rb.recv_binary(), vec![0u8, 1]);
    assert_eq!(be.ok(&na, "conn.call", json!({"c": cb, "f": "subscribe", "a": ["gridroom"]})), json!({"s": true}));
    be.ok(&na, "conn.call", json!({"c": ca, "f": "subscribe", "a": ["gridroom"]}));
    // mesh.publish on A reaches the subscribers on both nodes.
    // `s` counts the subscribers of the node that took the call (A has one).
    let r = be.ok(&na, "mesh.publish", json!({"c": "gridroom", "d": "{\"g\":1}"}));
    assert_eq!(r, json!({"s": 1, "f": 0}));
    assert_eq!(rb.recv_text(), "{\"g\":1}");
    assert_eq!(ra.recv_text(), "{\"g\":1}");
    let reply = post_json(&a, "/v1/mesh/publish", json!({"c": "gridroom", "d": "grid text"}), &[("X-API-Key", KEY)]);
    assert_eq!(reply["E"], Value::Null, "{reply}");
    assert_eq!(rb.recv_text(), "grid text");
    assert_eq!(ra.recv_text(), "grid text");
    a.api("publish", json!({"channel": "gridroom", "data": "hi"}));
    assert_eq!(rb.recv_text(), "hi");
    assert_eq!(ra.recv_text(), "hi");
    // A client on no node → 401 / 301 (after asking the other node).
    assert_eq!(be.err(&na, "mesh.send", json!({"c": "999", "d": "x"})), 401);
    assert_eq!(be.err(&na, "conn.call", json!({"c": "999", "f": "subscribe", "a": ["x"]})), 301);

    // B's client closes: its close event is in B's queue, never in A's.
    rb.close();
    let e = be.next_event(&nb);
    assert_eq!((&e["c"], &e["d"]), (&json!(cb), &json!({"event": "close", "context": {"uid": "u-b"}})), "{e}");
    ra.send_text("a again");
    assert_eq!(be.next_event(&na)["d"], text_event("a again"));
    be.ping(&na);
    be.assert_no_event(&na, "A's queue must hold only A's clients' events");
    be.assert_no_event(&nb, "B's queue");
    assert_eq!(be.err(&na, "mesh.send", json!({"c": cb, "d": "x"})), 401, "B's client is gone");
    // B lists A too (B hears of A at A's next announcement), under the same id.
    let deadline = Instant::now() + WAIT;
    loop {
        let list_b = nodes(&b);
        let ids_b: HashSet<&str> = list_b.iter().filter_map(|n| n["id"].as_str()).collect();
        if ids_b == ids.iter().map(String::as_str).collect() {
            assert_eq!(list_b[0]["id"], json!(ids[1]), "B lists itself first: {list_b:?}");
            break;
        }
        assert!(Instant::now() < deadline, "/v1/nodes on B must list A and B: {list_b:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Raw clients get WebSocket pings (every 600 ms here): one that answers stays, one that never
/// reads is closed once a ping goes unanswered for `pong_timeout` (and its close event is
/// queued), within `limit` of connecting.
fn pinged_and_silent_closed(test: &str, stale_close_delay: &str, limit: Duration) {
    let s = Server::start(gw_config(json!({"client": {
        "ping_interval": "600ms", "pong_timeout": "300ms", "stale_close_delay": stale_close_delay
    }})));
    let Some(mut be) = Backend::start(test) else { return };
    be.open("b", &ws_url(&s), key_headers());
    be.ok("b", "queue.pop", json!({"t": ["chat"]}));
    let (mut alive, c_alive) = raw_client(&s, &mut be, "b", "alive");
    let started = Instant::now();
    let (_silent, c_silent) = raw_client(&s, &mut be, "b", "silent");
    // Keep answering pings until the silent client's close event and two ping intervals more.
    let mut closed_at = None;
    while closed_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(1200)) {
        assert!(
            started.elapsed() < limit,
            "the silent client must be closed within {limit:?} (ping_interval 600ms, pong_timeout 300ms, \
             stale_close_delay {stale_close_delay}); the answering one was pinged {} times so far",
            alive.pongs_sent
        );
        alive.barrier();
        if let Some(e) = be.try_next_event_of(&["b"], Duration::from_millis(50)) {
            assert_eq!((&e["c"], &e["d"]), (&json!(c_silent), &json!({"event": "close"})), "{e}");
            closed_at = Some(Instant::now());
        }
    }
    assert!(alive.pongs_sent >= 2, "the answering client must have been pinged: {} pings", alive.pongs_sent);
    be.ok("b", "mesh.send", json!({"c": c_alive, "d": "still here"}));
    assert_eq!(alive.recv_text(), "still here");
    assert_eq!(be.err("b", "mesh.send", json!({"c": c_silent, "d": "x"})), 401, "the silent client is gone");
}

/// Pings and the pong deadline of raw clients (with a short `stale_close_delay`, see the next
/// test).
#[test]
fn raw_clients_are_pinged_and_silent_ones_closed() {
    pinged_and_silent_closed("raw_clients_are_pinged_and_silent_ones_closed", "500ms", WAIT);
}

/// A raw client is connected from the start: its first ping must not wait for
/// `client.stale_close_delay` (meant for Centrifugo clients that have not sent `connect`).
#[test]
fn raw_clients_first_ping_does_not_wait_for_stale_close_delay() {
    pinged_and_silent_closed(
        "raw_clients_first_ping_does_not_wait_for_stale_close_delay",
        "30s",
        Duration::from_secs(3),
    );
}

/// With `max_topics` reached, a `queue.pop` of a topic that does not exist yet must either fail
/// (201, consumption failed): it must not answer success and then never deliver. Once the limit
/// no longer binds, the same pop succeeds and delivers.
#[test]
fn pop_at_the_topic_limit_is_refused_or_delivers() {
    let s = Server::start(gw_config(json!({"gateway": {"max_topics": 1}})));
    let Some(mut be) = Backend::start("pop_at_the_topic_limit_is_refused_or_delivers") else { return };
    be.open("b1", &ws_url(&s), key_headers());
    be.open("b2", &ws_url(&s), key_headers());
    be.ok("b1", "queue.pop", json!({"t": ["other"]})); // the one topic allowed
    be.ping("b1");
    let r = be.call("b2", "queue.pop", json!({"t": ["chat"]}));
    // Refused: the backend knows it does not consume `chat` (and may pop it again later).
    assert_eq!(r["E"]["c"], 201, "{r}");
    // The limit no longer binds once `other` is gone: b2 pops `chat` and gets its events.
    be.ok("b1", "queue.unpop", json!({}));
    be.ping("b1");
    be.ok("b2", "queue.pop", json!({"t": ["chat"]}));
    let mut raw = Raw::connect(&s, "/chat", "r1");
    raw.send_text("hello");
    let e = be.try_next_event_of(&["b2"], Duration::from_secs(3));
    assert!(e.is_some(), "b2's second pop answered success, so chat's events must reach it; none came within 3 s");
}
