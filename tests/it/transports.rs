//! The transports beside the bidirectional WebSocket, over raw sockets: HTTP-streaming (JSON
//! and protobuf) and SSE with their `/emulation` endpoint, and the unidirectional
//! uni_websocket, uni_sse (GET and POST), uni_http_stream and uni_grpc (Centrifugo v6
//! behaviour, `docs/spec/transports.md`).
//!
//! Each test starts the real binary and reads the streamed responses as they arrive
//! ([`Stream`]: chunked HTTP/1.1 bodies split into JSON lines, SSE events or varint-delimited
//! protobuf messages). What is checked per transport: the connect reply or push (`session`,
//! `node` only on the emulation transports, `ping`, `pong` only on them), subscribing and
//! publishing through `/emulation`, publications from the server API, presence, history,
//! recovery after a cut, server-side subscriptions from the token's `channels`, disconnect
//! codes, pings, bad input (405, 400, 413, 404, 204, 3501), OPTIONS and CORS headers,
//! emulation requests landing on another worker or on another node (Redis engine).
//!
//! The Python consumers of `tests/python/uni_client.py` (`requests` for uni_http_stream and
//! uni_sse, `websockets` for uni_websocket, a gRPC client generated from
//! `proto/unistream.proto` for uni_grpc) read the same streams as an application would.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{self, Ws};

/// `client.token.hmac_secret_key` of [`transports_config`].
pub const SECRET: &str = "transports-secret-0123456789";

/// How long a test waits for any one message of a stream.
const WAIT: Duration = Duration::from_secs(10);

/// The config of the transport tests: every transport of this file enabled, HS256 tokens, two
/// workers, and the namespaces
///
/// * `chat` — subscribe, publish, presence and history for clients, join/leave pushed;
/// * `rec`  — history 100 with `force_recovery`, subscribe for clients;
/// * `srv`  — history 100 with `force_recovery`, no client permissions (server-side
///   subscriptions only);
///
/// with `patch` merged in.
pub fn transports_config(patch: Value) -> Value {
    let mut cfg = json!({
        "http_api": {"key": KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "http_stream": {"enabled": true},
        "sse": {"enabled": true},
        "uni_websocket": {"enabled": true},
        "uni_sse": {"enabled": true},
        "uni_http_stream": {"enabled": true},
        "channel": {
            "namespaces": [
                {
                    "name": "chat",
                    "allow_subscribe_for_client": true,
                    "allow_publish_for_subscriber": true,
                    "presence": true,
                    "allow_presence_for_subscriber": true,
                    "join_leave": true,
                    "force_push_join_leave": true,
                    "history_size": 100,
                    "history_ttl": "300s",
                    "allow_history_for_subscriber": true
                },
                {
                    "name": "rec",
                    "allow_subscribe_for_client": true,
                    "history_size": 100,
                    "history_ttl": "300s",
                    "force_recovery": true
                },
                {"name": "srv", "history_size": 100, "history_ttl": "300s", "force_recovery": true}
            ]
        },
        "workers": 2
    });
    merge(&mut cfg, patch);
    cfg
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A connection token for `user` valid for an hour, with `extra` claims.
pub fn token(user: &str, extra: Value) -> String {
    let mut claims = json!({"sub": user, "exp": now() + 3600});
    merge(&mut claims, extra);
    jwt(SECRET, claims)
}

/// `publish` through the server API; asserts success and returns the result.
pub fn api_publish(s: &Server, channel: &str, data: Value) -> Value {
    let r = s.api("publish", json!({"channel": channel, "data": data}));
    assert!(r.get("error").is_none(), "API publish to {channel}: {r}");
    r["result"].clone()
}

/// An API call that must succeed.
fn api_ok(s: &Server, method: &str, body: Value) -> Value {
    let r = s.api(method, body.clone());
    assert!(r.get("error").is_none(), "API {method} {body}: {r}");
    r["result"].clone()
}

fn assert_no_panic(s: &Server) {
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 36
            && s.chars()
                .enumerate()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a query value).
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Streamed responses.
// ---------------------------------------------------------------------------------------------

/// How the messages of a streamed body are delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One JSON message per line, each followed by `\n` (http_stream JSON, uni_http_stream).
    Lines,
    /// `data: <JSON>\n\n` events (sse, uni_sse), after a leading `\r\n`.
    Sse,
    /// Varint-length-prefixed protobuf messages (http_stream protobuf).
    Varint,
}

/// A streamed HTTP/1.1 response (status 200, chunked) read message by message as it arrives.
pub struct Stream {
    pub conn: Conn,
    pub head: Head,
    framing: Framing,
    /// Body bytes received and not yet taken.
    buf: Vec<u8>,
    /// Every body byte received.
    pub raw: Vec<u8>,
    /// The last chunk has arrived.
    ended: bool,
    /// SSE: the data lines of the event being read.
    sse_data: Option<String>,
}

impl Stream {
    /// Sends `method path` with `body` and `headers` on a new connection and reads the head,
    /// which must be a chunked 200.
    pub fn open(
        s: &Server,
        framing: Framing,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Stream {
        let mut conn = s.connect();
        conn.send(&request(method, path, body, headers));
        conn.stream.set_read_timeout(Some(WAIT)).unwrap();
        let head = conn.read_head().unwrap_or_else(|e| panic!("{method} {path}: reading the response head: {e}"));
        assert_eq!(head.status, 200, "{method} {path}: status of a stream: {head:?}");
        assert!(head.chunked(), "{method} {path}: a stream is chunked: {head:?}");
        assert_eq!(head.header("content-length"), None, "{method} {path}: {head:?}");
        Stream { conn, head, framing, buf: Vec::new(), raw: Vec::new(), ended: false, sse_data: None }
    }

    /// http_stream (JSON) with `body`: the connect command and any commands after it.
    pub fn http_stream(s: &Server, body: &str) -> Stream {
        Stream::open(
            s,
            Framing::Lines,
            "POST",
            "/connection/http_stream",
            body.as_bytes(),
            &[("Content-Type", "application/json")],
        )
    }

    /// Reads one more chunk; false at the end of the body. Panics when nothing comes by
    /// `deadline`.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.ended {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.conn.stream.set_read_timeout(Some(left)).unwrap();
        match self.conn.read_chunk() {
            Ok(Some(data)) => {
                self.buf.extend_from_slice(&data);
                self.raw.extend_from_slice(&data);
                true
            }
            Ok(None) => {
                self.ended = true;
                false
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("nothing more on the stream within the wait; so far: {:?}", String::from_utf8_lossy(&self.raw))
            }
            Err(e) => panic!(
                "the stream broke off without its last chunk ({e}); so far: {:?}",
                String::from_utf8_lossy(&self.raw)
            ),
        }
    }

    /// Takes one `\n`-terminated line from the buffer (without `\n`).
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let i = self.buf.iter().position(|&b| b == b'\n')?;
        let line = self.buf[..i].to_vec();
        self.buf.drain(..=i);
        Some(line)
    }

    /// The next message's bytes; `None` once the body has ended (with nothing left over).
    pub fn next_raw_by(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        loop {
            match self.framing {
                Framing::Lines => {
                    if let Some(line) = self.take_line() {
                        assert!(
                            !line.is_empty(),
                            "a blank line in a JSON stream: {:?}",
                            String::from_utf8_lossy(&self.raw)
                        );
                        return Some(line);
                    }
                }
                Framing::Sse => {
                    while let Some(mut line) = self.take_line() {
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        let line = String::from_utf8(line).expect("SSE lines are UTF-8");
                        if line.is_empty() {
                            if let Some(d) = self.sse_data.take() {
                                return Some(d.into_bytes());
                            }
                            continue;
                        }
                        let Some(d) = line.strip_prefix("data:") else {
                            panic!(
                                "an SSE line other than data: {line:?} (stream so far: {:?})",
                                String::from_utf8_lossy(&self.raw)
                            )
                        };
                        let d = d.strip_prefix(' ').unwrap_or(d);
                        match &mut self.sse_data {
                            Some(acc) => {
                                acc.push('\n');
                                acc.push_str(d);
                            }
                            None => self.sse_data = Some(d.to_string()),
                        }
                    }
                }
                Framing::Varint => {
                    if let Some((len, used)) = read_varint(&self.buf) {
                        if self.buf.len() >= used + len as usize {
                            let msg = self.buf[used..used + len as usize].to_vec();
                            self.buf.drain(..used + len as usize);
                            return Some(msg);
                        }
                    }
                }
            }
            if !self.fill(deadline) {
                assert!(
                    self.buf.is_empty() && self.sse_data.is_none(),
                    "the stream ended inside a message: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
    }

    /// The next JSON message, or `None` at the end of the stream.
    pub fn next_opt(&mut self) -> Option<Value> {
        self.next_raw_by(Instant::now() + WAIT).map(|b| {
            serde_json::from_slice(&b)
                .unwrap_or_else(|e| panic!("a message is not JSON ({e}): {:?}", String::from_utf8_lossy(&b)))
        })
    }

    /// The next JSON message; panics at the end of the stream.
    pub fn next(&mut self) -> Value {
        self.next_opt().unwrap_or_else(|| panic!("the stream ended; it had: {:?}", String::from_utf8_lossy(&self.raw)))
    }

    /// The next JSON message that is not a ping (`{}`).
    pub fn next_non_ping(&mut self) -> Value {
        loop {
            let v = self.next();
            if v != json!({}) {
                return v;
            }
        }
    }

    /// Reads messages until one `pred` accepts (skipping pings); returns it and everything
    /// skipped on the way (pings left out).
    pub fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let v = self.next_opt().unwrap_or_else(|| panic!("the stream ended before {what}; skipped: {skipped:?}"));
            if pred(&v) {
                return (v, skipped);
            }
            if v != json!({}) {
                skipped.push(v);
            }
        }
    }

    /// The stream ends (last chunk) within [`WAIT`] with no message before it but pings.
    pub fn expect_end(&mut self) {
        while let Some(v) = self.next_opt() {
            assert_eq!(v, json!({}), "a message where the stream should end");
        }
    }

    /// True when nothing arrives within `d` and the stream is still open.
    pub fn quiet_for(&mut self, d: Duration) -> bool {
        if !self.buf.is_empty() || self.ended {
            return false;
        }
        self.conn.stream.set_read_timeout(Some(d)).unwrap();
        match self.conn.read_chunk() {
            Ok(Some(data)) => {
                self.buf.extend_from_slice(&data);
                self.raw.extend_from_slice(&data);
                false
            }
            Ok(None) => {
                self.ended = true;
                false
            }
            Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The streamed-response headers every streaming transport sends (spec §1.3).
fn assert_stream_headers(head: &Head, what: &str) {
    assert_eq!(
        head.header("cache-control"),
        Some("private, no-cache, no-store, must-revalidate, max-age=0"),
        "{what}: {head:?}"
    );
    assert_eq!(head.header("pragma"), Some("no-cache"), "{what}: {head:?}");
    assert_eq!(head.header("expire"), Some("0"), "{what}: {head:?}");
    assert_eq!(head.header("x-accel-buffering"), Some("no"), "{what}: {head:?}");
    // The stream ends with its connection, and says so (Centrifugo says keep-alive and keeps
    // the connection for another request; a client must not count on either).
    assert!(head.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "{what}: {head:?}");
}

/// What, framing, method, path, body, headers.
type StreamCase<'a> = (&'a str, Framing, &'a str, &'a str, &'a [u8], &'a [(&'a str, &'a str)]);

/// Every streaming response: a chunked 200 with the no-cache headers, `X-Accel-Buffering: no`,
/// `Expire: 0` and `Connection: close`; SSE with its Content-Type.
#[test]
fn streaming_response_headers() {
    let s = Server::start(transports_config(json!({})));
    let t = token("u1", json!({}));
    let cmd = json!({"id": 1, "connect": {"token": t}}).to_string();
    let req = json!({"token": t}).to_string();
    let pb_connect = pb_commands(&[pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest { token: t.clone(), name: String::new() }),
        ..Default::default()
    }]);
    let sse_path = format!("/connection/sse?cf_connect={}", urlencode(&cmd));
    let uni_sse_path = format!("/connection/uni_sse?cf_connect={}", urlencode(&req));
    let octet: &[(&str, &str)] = &[("Content-Type", "application/octet-stream")];
    let cases: [StreamCase; 6] = [
        ("http_stream", Framing::Lines, "POST", "/connection/http_stream", cmd.as_bytes(), &[]),
        ("http_stream protobuf", Framing::Varint, "POST", "/connection/http_stream", &pb_connect, octet),
        ("sse", Framing::Sse, "GET", &sse_path, b"", &[]),
        ("uni_sse", Framing::Sse, "GET", &uni_sse_path, b"", &[]),
        ("uni_sse POST", Framing::Sse, "POST", "/connection/uni_sse", req.as_bytes(), &[]),
        ("uni_http_stream", Framing::Lines, "POST", "/connection/uni_http_stream", req.as_bytes(), &[]),
    ];
    let mut failures = Vec::new();
    for (what, framing, method, path, body, headers) in cases {
        let mut st = Stream::open(&s, framing, method, path, body, headers);
        assert!(st.next_raw_by(Instant::now() + WAIT).is_some(), "{what}: the connect message");
        if framing == Framing::Sse {
            assert_eq!(st.head.header("content-type"), Some("text/event-stream; charset=utf-8"), "{what}");
        }
        if let Err(e) = std::panic::catch_unwind(|| assert_stream_headers(&st.head, what)) {
            failures.push(format!("{what}: {}", e.downcast_ref::<String>().cloned().unwrap_or_default()));
        }
    }
    assert!(failures.is_empty(), "streaming headers:\n{}", failures.join("\n"));
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Emulation requests.
// ---------------------------------------------------------------------------------------------

/// The session and node of an emulation connection (from its connect result).
#[derive(Clone, Debug)]
pub struct Sess {
    pub session: String,
    pub node: String,
}

impl Sess {
    fn of(connect: &Value) -> Sess {
        Sess {
            session: connect["session"].as_str().expect("session").to_string(),
            node: connect["node"].as_str().expect("node").to_string(),
        }
    }
}

/// `POST /emulation` (JSON) carrying `cmds` joined by `\n` for session `sess`; the status.
pub fn emulate(s: &Server, sess: &Sess, cmds: &[Value]) -> u16 {
    let data: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    let body = json!({"session": sess.session, "node": sess.node, "data": data.join("\n")});
    let r = s.post("/emulation", body.to_string().as_bytes(), &[("Content-Type", "application/json")]);
    assert!(r.body.is_empty(), "emulation responses have no body: {r:?}");
    r.status
}

/// [`emulate`] that must be answered 204.
fn emulate_ok(s: &Server, sess: &Sess, cmds: &[Value]) {
    assert_eq!(emulate(s, sess, cmds), 204, "emulation of {cmds:?}");
}

/// An http_stream (JSON) or SSE connection with its connect reply checked (connect id 1 with
/// `token`): the stream, the connect result and its session.
fn bidi_connect(s: &Server, framing: Framing, token: &str) -> (Stream, Value, Sess) {
    let connect = json!({"id": 1, "connect": {"token": token, "name": "raw"}}).to_string();
    let mut st = match framing {
        Framing::Lines => Stream::http_stream(s, &connect),
        Framing::Sse => Stream::open(
            s,
            Framing::Sse,
            "GET",
            &format!("/connection/sse?cf_connect={}", urlencode(&connect)),
            b"",
            &[],
        ),
        Framing::Varint => panic!("protobuf has its own helper"),
    };
    let reply = st.next_non_ping();
    assert_eq!(reply["id"], 1, "{reply}");
    assert!(reply.get("error").is_none(), "connect failed: {reply}");
    let sess = Sess::of(&reply["connect"]);
    (st, reply["connect"].clone(), sess)
}

// ---------------------------------------------------------------------------------------------
// Bidirectional emulation: http_stream (JSON) and SSE.
// ---------------------------------------------------------------------------------------------

/// The connect result of an emulation transport: client, version, ping, `pong`, `session` and
/// `node` (UUIDs; the session is not the client id).
fn check_emulation_connect(c: &Value, ping: u64) {
    assert!(is_uuid(&c["client"]), "client id: {c}");
    assert!(c["version"].as_str().is_some_and(|v| !v.is_empty()), "version: {c}");
    assert_eq!(c["ping"], ping, "ping: {c}");
    assert_eq!(c["pong"], true, "pong: {c}");
    assert!(is_uuid(&c["session"]), "session: {c}");
    assert!(is_uuid(&c["node"]), "node: {c}");
    assert_ne!(c["session"], c["client"], "the session is not the client id: {c}");
}

/// Subscribe, API publish, client publish, presence, presence stats and history, all through
/// `/emulation`, replies on the stream.
fn emulation_flow(framing: Framing) {
    let s = Server::start(transports_config(json!({})));
    let (mut st, c, sess) = bidi_connect(&s, framing, &token("u1", json!({})));
    check_emulation_connect(&c, 25);
    match framing {
        Framing::Sse => {
            assert_eq!(st.head.header("content-type"), Some("text/event-stream; charset=utf-8"));
            assert!(
                st.raw.starts_with(b"\r\n"),
                "SSE starts with an empty line: {:?}",
                String::from_utf8_lossy(&st.raw)
            );
        }
        _ => {
            assert!(st.raw.ends_with(b"}\n"), "JSON replies end with a newline: {:?}", String::from_utf8_lossy(&st.raw))
        }
    }
    let node = s.api("info", json!({}))["result"]["nodes"][0]["uid"].clone();
    if !node.is_null() {
        assert_eq!(c["node"], node, "node is the node's uid in `info`");
    }

    emulate_ok(&s, &sess, &[json!({"id": 2, "subscribe": {"channel": "chat:room"}})]);
    let (r, skipped) = st.until("the subscribe reply", |v| v["id"] == 2);
    assert!(r["subscribe"].is_object() && r.get("error").is_none(), "{r}");
    // Its own join (before or after the reply).
    let j = match skipped.into_iter().find(|v| v["push"]["join"].is_object()) {
        Some(j) => j,
        None => st.until("the join push", |v| v["push"]["join"].is_object()).0,
    };
    assert_eq!(j["push"]["channel"], "chat:room", "{j}");
    assert_eq!(j["push"]["join"]["info"]["user"], "u1", "{j}");

    // API publications, in order; a raw newline inside the payload is not sent as one.
    for i in 1..=5 {
        let body = format!(r#"{{"channel":"chat:room","data":{{"n":{i},{}"t":"line\nbreak"}}}}"#, "\n");
        let r = s.post("/api/publish", body.as_bytes(), &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json().get("error").is_none(), "{}", r.text());
    }
    for i in 1..=5 {
        let p = st.next_non_ping();
        assert_eq!(p["push"]["channel"], "chat:room", "{p}");
        assert_eq!(p["push"]["pub"]["data"], json!({"n": i, "t": "line\nbreak"}), "{p}");
        assert_eq!(p["push"]["pub"]["offset"], i, "{p}");
    }

    // Several commands in one emulation request: handled in order.
    emulate_ok(
        &s,
        &sess,
        &[
            json!({"id": 3, "publish": {"channel": "chat:room", "data": {"from": "client"}}}),
            json!({"id": 4, "presence": {"channel": "chat:room"}}),
            json!({"id": 5, "presence_stats": {"channel": "chat:room"}}),
            json!({"id": 6, "history": {"channel": "chat:room", "limit": 10}}),
        ],
    );
    let (r3, skipped) = st.until("the publish reply", |v| v["id"] == 3);
    assert_eq!(r3, json!({"id": 3, "publish": {}}), "{r3}");
    let mut rest = skipped;
    for id in 4..=6 {
        let (r, sk) = st.until("a reply", |v| v["id"] == id);
        rest.extend(sk);
        rest.push(r);
    }
    // Its own publication: on the Redis engine it comes back through Redis's pub/sub, so it may
    // follow the replies.
    let own = match rest.iter().find(|v| v["push"]["pub"].is_object()) {
        Some(p) => p.clone(),
        None => st.until("its own publication", |v| v["push"]["pub"].is_object()).0,
    };
    assert_eq!(own["push"]["pub"]["data"], json!({"from": "client"}), "{own}");
    assert_eq!(own["push"]["pub"]["offset"], 6, "{own}");
    assert_eq!(own["push"]["pub"]["info"]["user"], "u1", "{own}");
    assert_eq!(own["push"]["pub"]["info"]["client"], c["client"], "{own}");
    let by_id = |id: i64| rest.iter().find(|v| v["id"] == id).unwrap().clone();
    let presence = by_id(4);
    let clients = presence["presence"]["presence"].as_object().unwrap_or_else(|| panic!("{presence}"));
    assert_eq!(clients.len(), 1, "{presence}");
    assert_eq!(clients[c["client"].as_str().unwrap()]["user"], "u1", "{presence}");
    assert_eq!(by_id(5)["presence_stats"], json!({"num_clients": 1, "num_users": 1}));
    let h = by_id(6);
    let pubs = h["history"]["publications"].as_array().unwrap_or_else(|| panic!("{h}"));
    assert_eq!(pubs.iter().map(|p| p["offset"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6], "{h}");
    assert_eq!(h["history"]["offset"], 6, "{h}");
    assert!(h["history"]["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{h}");

    // An error reply travels on the stream like any other.
    emulate_ok(&s, &sess, &[json!({"id": 7, "publish": {"channel": "rec:x", "data": {}}})]);
    let (r, _) = st.until("the refused publish", |v| v["id"] == 7);
    assert_eq!(r["error"]["code"], 103, "{r}");

    // The client counts as connected while its stream is open; gone when it goes away.
    assert_eq!(
        api_ok(&s, "presence_stats", json!({"channel": "chat:room"})),
        json!({"num_clients": 1, "num_users": 1})
    );
    drop(st);
    let deadline = Instant::now() + WAIT;
    while api_ok(&s, "presence_stats", json!({"channel": "chat:room"}))["num_clients"] != 0 {
        assert!(Instant::now() < deadline, "the stream's client never left the channel");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        emulate(&s, &sess, &[json!({"id": 8, "presence_stats": {"channel": "chat:room"}})]),
        204,
        "a gone session: 204"
    );
    assert_no_panic(&s);
}

#[test]
fn http_stream_json_emulation_flow() {
    emulation_flow(Framing::Lines);
}

#[test]
fn sse_emulation_flow() {
    emulation_flow(Framing::Sse);
}

/// Commands after `connect` in the same http_stream body (or SSE `cf_connect`) run in order;
/// SSE may also be opened with POST (body as http_stream, Content-Type ignored).
#[test]
fn emulation_commands_in_the_connect_request_and_sse_post() {
    let s = Server::start(transports_config(json!({})));
    let t = token("u1", json!({}));
    let body = [
        json!({"id": 1, "connect": {"token": t}}).to_string(),
        json!({"id": 2, "subscribe": {"channel": "chat:a"}}).to_string(),
        json!({"id": 3, "subscribe": {"channel": "chat:b"}}).to_string(),
    ]
    .join("\n");
    for (what, mut st) in [
        ("http_stream", Stream::http_stream(&s, &body)),
        (
            "sse GET",
            Stream::open(
                &s,
                Framing::Sse,
                "GET",
                &format!("/connection/sse?cf_connect={}", urlencode(&body)),
                b"",
                &[],
            ),
        ),
        (
            "sse POST",
            Stream::open(
                &s,
                Framing::Sse,
                "POST",
                "/connection/sse",
                body.as_bytes(),
                &[("Content-Type", "text/plain")],
            ),
        ),
    ] {
        let mut ids = Vec::new();
        while ids.len() < 3 {
            let v = st.next_non_ping();
            if v.get("push").is_none() {
                assert!(v.get("error").is_none(), "{what}: {v}");
                ids.push(v["id"].clone());
            }
        }
        assert_eq!(ids, vec![json!(1), json!(2), json!(3)], "{what}: {:?}", String::from_utf8_lossy(&st.raw));
        api_publish(&s, "chat:b", json!({"to": what}));
        let (p, _) = st.until("the publication", |v| v["push"]["pub"].is_object());
        assert_eq!(p["push"]["channel"], "chat:b", "{what}: {p}");
    }
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// http_stream with protobuf.
// ---------------------------------------------------------------------------------------------

/// The parts of Centrifugo's `client.proto` these tests write and read (field numbers as
/// upstream), plus `EmulationRequest`.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Command {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "4")]
        pub connect: Option<ConnectRequest>,
        #[prost(message, optional, tag = "5")]
        pub subscribe: Option<SubscribeRequest>,
        #[prost(message, optional, tag = "7")]
        pub publish: Option<PublishRequest>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectRequest {
        #[prost(string, tag = "1")]
        pub token: String,
        #[prost(string, tag = "4")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubscribeRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PublishRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reply {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "2")]
        pub error: Option<Error>,
        #[prost(message, optional, tag = "4")]
        pub push: Option<Push>,
        #[prost(message, optional, tag = "5")]
        pub connect: Option<ConnectResult>,
        #[prost(message, optional, tag = "6")]
        pub subscribe: Option<Empty>,
        #[prost(message, optional, tag = "8")]
        pub publish: Option<Empty>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Error {
        #[prost(uint32, tag = "1")]
        pub code: u32,
        #[prost(string, tag = "2")]
        pub message: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectResult {
        #[prost(string, tag = "1")]
        pub client: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(uint32, tag = "7")]
        pub ping: u32,
        #[prost(bool, tag = "8")]
        pub pong: bool,
        #[prost(string, tag = "9")]
        pub session: String,
        #[prost(string, tag = "10")]
        pub node: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Push {
        #[prost(string, tag = "2")]
        pub channel: String,
        #[prost(message, optional, tag = "4")]
        pub publication: Option<Publication>,
        #[prost(message, optional, tag = "11")]
        pub disconnect: Option<Disconnect>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Publication {
        #[prost(bytes = "vec", tag = "4")]
        pub data: Vec<u8>,
        #[prost(message, optional, tag = "5")]
        pub info: Option<ClientInfo>,
        #[prost(uint64, tag = "6")]
        pub offset: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClientInfo {
        #[prost(string, tag = "1")]
        pub user: String,
        #[prost(string, tag = "2")]
        pub client: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Disconnect {
        #[prost(uint32, tag = "1")]
        pub code: u32,
        #[prost(string, tag = "2")]
        pub reason: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EmulationRequest {
        #[prost(string, tag = "1")]
        pub node: String,
        #[prost(string, tag = "2")]
        pub session: String,
        #[prost(bytes = "vec", tag = "3")]
        pub data: Vec<u8>,
    }
}

/// Commands as a varint-delimited protobuf stream.
fn pb_commands(cmds: &[pb::Command]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        let b = c.encode_to_vec();
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(&b);
    }
    out
}

fn pb_reply(b: &[u8]) -> pb::Reply {
    pb::Reply::decode(b).unwrap_or_else(|e| panic!("not a protobuf Reply ({e}): {b:?}"))
}

/// `POST /emulation` with a protobuf EmulationRequest; the status.
fn emulate_pb(s: &Server, sess: &Sess, cmds: &[pb::Command]) -> u16 {
    let req = pb::EmulationRequest { node: sess.node.clone(), session: sess.session.clone(), data: pb_commands(cmds) };
    let r = s.post("/emulation", &req.encode_to_vec(), &[("Content-Type", "application/octet-stream")]);
    r.status
}

#[test]
fn http_stream_protobuf_flow() {
    let s = Server::start(transports_config(json!({})));
    let connect = pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest { token: token("u1", json!({})), name: "raw".into() }),
        ..Default::default()
    };
    let mut st = Stream::open(
        &s,
        Framing::Varint,
        "POST",
        "/connection/http_stream",
        &pb_commands(&[connect]),
        &[("Content-Type", "application/octet-stream")],
    );
    let next = |st: &mut Stream| loop {
        let b = st.next_raw_by(Instant::now() + WAIT).expect("the stream ended");
        if !b.is_empty() {
            return pb_reply(&b);
        }
    };
    let r = next(&mut st);
    assert_eq!(r.id, 1);
    let c = r.connect.clone().unwrap_or_else(|| panic!("no connect result: {r:?}"));
    assert!(is_uuid(&json!(c.client)) && is_uuid(&json!(c.session)) && is_uuid(&json!(c.node)), "{c:?}");
    assert_eq!((c.ping, c.pong), (25, true), "{c:?}");
    let sess = Sess { session: c.session.clone(), node: c.node.clone() };

    let sub = pb::Command {
        id: 2,
        subscribe: Some(pb::SubscribeRequest { channel: "chat:pb".into() }),
        ..Default::default()
    };
    assert_eq!(emulate_pb(&s, &sess, &[sub]), 204);
    // The reply and the client's own join push, in either order.
    let (mut replied, mut joined) = (false, false);
    while !(replied && joined) {
        let r = next(&mut st);
        if r.id == 2 {
            assert!(r.subscribe.is_some() && r.error.is_none(), "{r:?}");
            replied = true;
        } else {
            assert_eq!(r.push.map(|p| p.channel), Some("chat:pb".to_string()), "the join push");
            joined = true;
        }
    }

    api_publish(&s, "chat:pb", json!({"n": 1}));
    let r = next(&mut st);
    let p = r.push.clone().unwrap_or_else(|| panic!("a push: {r:?}"));
    assert_eq!(p.channel, "chat:pb");
    let publication = p.publication.expect("a publication");
    assert_eq!(serde_json::from_slice::<Value>(&publication.data).unwrap(), json!({"n": 1}));
    assert_eq!(publication.offset, 1);

    let publish = pb::Command {
        id: 3,
        publish: Some(pb::PublishRequest { channel: "chat:pb".into(), data: br#"{"from":"pb"}"#.to_vec() }),
        ..Default::default()
    };
    assert_eq!(emulate_pb(&s, &sess, &[publish]), 204);
    let (mut got_reply, mut got_pub) = (false, false);
    while !(got_reply && got_pub) {
        let r = next(&mut st);
        if r.id == 3 {
            assert!(r.publish.is_some() && r.error.is_none(), "{r:?}");
            got_reply = true;
        } else if let Some(publication) = r.push.and_then(|p| p.publication) {
            assert_eq!(publication.data, br#"{"from":"pb"}"#);
            assert_eq!(publication.offset, 2);
            assert_eq!(publication.info.map(|i| (i.user, i.client)), Some(("u1".to_string(), c.client.clone())));
            got_pub = true;
        }
    }
    // API disconnect: a disconnect push, then the end of the stream.
    api_ok(&s, "disconnect", json!({"user": "u1"}));
    loop {
        let Some(b) = st.next_raw_by(Instant::now() + WAIT) else {
            panic!("the stream ended without a disconnect push")
        };
        if b.is_empty() {
            continue;
        }
        let r = pb_reply(&b);
        if let Some(d) = r.push.and_then(|p| p.disconnect) {
            assert_eq!((d.code, d.reason.as_str()), (3503, "force disconnect"));
            break;
        }
    }
    assert_eq!(st.next_raw_by(Instant::now() + WAIT), None, "the stream ends after the disconnect push");

    // A JSON emulation request for a protobuf session: its `data` is fed to the session as
    // protobuf, which this JSON text is not. The request is answered 204; the session is
    // closed with 3501 as for any undecodable command.
    let mut st = Stream::open(
        &s,
        Framing::Varint,
        "POST",
        "/connection/http_stream",
        &pb_commands(&[pb::Command {
            id: 1,
            connect: Some(pb::ConnectRequest { token: token("u2", json!({})), name: String::new() }),
            ..Default::default()
        }]),
        &[("Content-Type", "application/octet-stream")],
    );
    let c = next(&mut st).connect.expect("connect result");
    let sess = Sess { session: c.session, node: c.node };
    assert_eq!(emulate(&s, &sess, &[json!({"id": 2, "presence": {"channel": "chat:pb"}})]), 204);
    let d = next(&mut st);
    assert_eq!(d.push.and_then(|p| p.disconnect).map(|d| d.code), Some(3501), "JSON commands for a protobuf session");
    assert_eq!(st.next_raw_by(Instant::now() + WAIT), None);
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Pings and pongs.
// ---------------------------------------------------------------------------------------------

/// With `client.ping_interval` 2 s and `pong_timeout` 1 s: emulation streams get `{}` pings
/// (protobuf: the single byte 0), stay up while pongs come through `/emulation`, and are
/// closed with 3012 once they stop.
#[test]
fn emulation_pings_pongs_and_no_pong_disconnect() {
    let s = Server::start(transports_config(json!({"client": {"ping_interval": "2s", "pong_timeout": "1s"}})));
    std::thread::scope(|scope| {
        for framing in [Framing::Lines, Framing::Sse] {
            let s = &s;
            scope.spawn(move || {
                let (mut st, c, sess) = bidi_connect(s, framing, &token("u1", json!({})));
                assert_eq!((c["ping"].clone(), c["pong"].clone()), (json!(2), json!(true)), "{c}");
                // Three pings answered: still connected after more than interval + timeout.
                for _ in 0..3 {
                    assert_eq!(st.next(), json!({}), "{framing:?}: a ping");
                    emulate_ok(s, &sess, &[json!({})]);
                }
                // No more pongs: a ping, then disconnect 3012 and the end.
                assert_eq!(st.next(), json!({}), "{framing:?}: a ping");
                let (d, skipped) = st.until("the no-pong disconnect", |v| v["push"]["disconnect"].is_object());
                assert!(skipped.is_empty(), "{skipped:?}");
                assert_eq!(d["push"]["disconnect"]["code"], 3012, "{framing:?}: {d}");
                assert_eq!(d["push"]["disconnect"]["reason"], "no pong", "{framing:?}: {d}");
                st.expect_end();
            });
        }
        scope.spawn(|| {
            let s = &s;
            let connect = pb::Command {
                id: 1,
                connect: Some(pb::ConnectRequest { token: token("u2", json!({})), name: String::new() }),
                ..Default::default()
            };
            let mut st = Stream::open(
                s,
                Framing::Varint,
                "POST",
                "/connection/http_stream",
                &pb_commands(&[connect]),
                &[("Content-Type", "application/octet-stream")],
            );
            let first = pb_reply(&st.next_raw_by(Instant::now() + WAIT).unwrap());
            let c = first.connect.expect("connect");
            assert_eq!((c.ping, c.pong), (2, true));
            let ping = st.next_raw_by(Instant::now() + WAIT).unwrap();
            assert!(ping.is_empty(), "a protobuf ping is an empty Reply: {ping:?}");
            assert!(st.raw.ends_with(&[0u8]), "the ping's frame is the byte 0");
        });
    });
    assert_no_panic(&s);
}

/// Unidirectional transports get `{}` pushes as pings and `ping` but no `pong` in their connect
/// push; nothing needs to be answered (uni_websocket: its native pings are answered here).
#[test]
fn uni_pings_need_no_pong() {
    let s = Server::start(transports_config(json!({"client": {"ping_interval": "2s", "pong_timeout": "1s"}})));
    let req = json!({"token": token("u1", json!({}))}).to_string();
    let mut http = Stream::open(&s, Framing::Lines, "POST", "/connection/uni_http_stream", req.as_bytes(), &[]);
    let mut sse =
        Stream::open(&s, Framing::Sse, "GET", &format!("/connection/uni_sse?cf_connect={}", urlencode(&req)), b"", &[]);
    let mut ws = UniWs::open(&s, &format!("/connection/uni_websocket?cf_connect={}", urlencode(&req)));
    for c in [http.next(), sse.next(), ws.next()] {
        assert_eq!(c["connect"]["ping"], 2, "{c}");
        assert!(c["connect"].get("pong").is_none(), "no pong on uni transports: {c}");
    }
    // Each read on its own thread, so the WebSocket pings are answered at once.
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| (0..3).for_each(|_| assert_eq!(http.next(), json!({}), "uni_http_stream")));
        scope.spawn(|| (0..3).for_each(|_| assert_eq!(sse.next(), json!({}), "uni_sse")));
        scope.spawn(|| (0..3).for_each(|_| assert_eq!(ws.next(), json!({}), "uni_websocket")));
    });
    assert!(start.elapsed() > Duration::from_millis(3500), "three pings take two intervals at least");
    assert!(ws.native_pings > 0, "uni_websocket also sends WebSocket pings");
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Recovery after a cut.
// ---------------------------------------------------------------------------------------------

/// A client-side subscription in `rec` comes back with what was published while its stream
/// was gone (subscribe with recover/offset/epoch through `/emulation`); a server-side one
/// through the connect command's `subs`.
#[test]
fn emulation_recovery_after_a_cut() {
    let s = Server::start(transports_config(json!({})));
    let t = token("u1", json!({"channels": ["srv:feed"]}));
    let (mut st, c, sess) = bidi_connect(&s, Framing::Lines, &t);
    let srv = c["subs"]["srv:feed"].clone();
    assert_eq!(srv["recoverable"], true, "{c}");
    let srv_epoch = srv["epoch"].as_str().expect("epoch of srv:feed").to_string();
    emulate_ok(&s, &sess, &[json!({"id": 2, "subscribe": {"channel": "rec:x"}})]);
    let (r, _) = st.until("subscribed", |v| v["id"] == 2);
    assert_eq!(r["subscribe"]["recoverable"], true, "{r}");
    let epoch = r["subscribe"]["epoch"].as_str().expect("epoch").to_string();
    for i in 1..=3 {
        api_publish(&s, "rec:x", json!({"n": i}));
        api_publish(&s, "srv:feed", json!({"n": i}));
    }
    for _ in 0..6 {
        st.until("a publication", |v| v["push"]["pub"].is_object());
    }
    drop(st); // the cut
    for i in 4..=7 {
        api_publish(&s, "rec:x", json!({"n": i}));
        api_publish(&s, "srv:feed", json!({"n": i}));
    }
    let connect = json!({"id": 1, "connect": {"token": t, "subs": {"srv:feed": {"recover": true, "offset": 3, "epoch": srv_epoch}}}});
    let mut st = Stream::http_stream(&s, &connect.to_string());
    let r = st.next_non_ping();
    let sub = &r["connect"]["subs"]["srv:feed"];
    assert_eq!(sub["recovered"], true, "{r}");
    assert_eq!(sub["was_recovering"], true, "{r}");
    let ns: Vec<i64> = sub["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|p| p["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![4, 5, 6, 7], "{r}");
    assert_eq!(sub["offset"], 3, "the position recovered from: {r}");
    let sess = Sess::of(&r["connect"]);
    emulate_ok(
        &s,
        &sess,
        &[json!({"id": 2, "subscribe": {"channel": "rec:x", "recover": true, "offset": 3, "epoch": epoch}})],
    );
    let (r, _) = st.until("resubscribed", |v| v["id"] == 2);
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert_eq!(r["subscribe"]["was_recovering"], true, "{r}");
    let offs: Vec<i64> =
        r["subscribe"]["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_i64().unwrap()).collect();
    assert_eq!(offs, vec![4, 5, 6, 7], "{r}");
    api_publish(&s, "rec:x", json!({"n": 8}));
    let (p, _) = st.until("a live publication", |v| v["push"]["pub"].is_object());
    assert_eq!((p["push"]["channel"].clone(), p["push"]["pub"]["offset"].clone()), (json!("rec:x"), json!(8)), "{p}");
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Unidirectional transports.
// ---------------------------------------------------------------------------------------------

/// A uni_websocket connection read message by message (several pushes may share a frame only
/// with `join_push_messages`); native pings are answered.
pub struct UniWs {
    ws: Ws,
    pending: std::collections::VecDeque<Value>,
    pub native_pings: usize,
    pub close: Option<(u16, String)>,
}

impl UniWs {
    pub fn open(s: &Server, path: &str) -> UniWs {
        UniWs::try_open(s, path, &[]).unwrap_or_else(|st| panic!("uni_websocket upgrade refused: {st}"))
    }

    pub fn try_open(s: &Server, path: &str, headers: &[(&str, &str)]) -> Result<UniWs, u16> {
        let ws = Ws::upgrade(TcpStream::connect(s.addr()).unwrap(), path, ws_client::SAMPLE_KEY, headers)?;
        Ok(UniWs { ws, pending: Default::default(), native_pings: 0, close: None })
    }

    /// The next push; `None` after a close frame (kept in `close`).
    pub fn next_opt(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Some(v);
            }
            if self.close.is_some() {
                return None;
            }
            let f =
                self.ws.frame_until(Instant::now() + WAIT).unwrap_or_else(|e| panic!("uni_websocket: no frame ({e})"));
            match f.op {
                ws_client::TEXT => {
                    let text = std::str::from_utf8(&f.payload).expect("text frames are UTF-8");
                    self.pending.push_back(
                        serde_json::from_str(text).unwrap_or_else(|e| panic!("one push per frame ({e}): {text:?}")),
                    );
                }
                ws_client::PING => {
                    self.native_pings += 1;
                    let pong = ws_client::client_frame(true, ws_client::PONG, &f.payload, true);
                    self.ws.send(&pong).expect("send a pong");
                }
                ws_client::CLOSE => self.close = Some(f.close()),
                op => panic!("uni_websocket: unexpected frame {op}: {f:?}"),
            }
        }
    }

    pub fn next(&mut self) -> Value {
        self.next_opt().unwrap_or_else(|| panic!("uni_websocket closed: {:?}", self.close))
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(&ws_client::client_frame(true, ws_client::TEXT, text.as_bytes(), true)).expect("send");
    }
}

/// The connect push of a unidirectional transport: client, version, ping and session; no
/// node, no pong.
fn check_uni_connect(c: &Value, what: &str) {
    let c = &c["connect"];
    assert!(is_uuid(&c["client"]), "{what}: {c}");
    assert!(c["version"].as_str().is_some_and(|v| !v.is_empty()), "{what}: {c}");
    assert_eq!(c["ping"], 25, "{what}: {c}");
    assert!(is_uuid(&c["session"]), "{what}: session {c}");
    assert_ne!(c["session"], c["client"], "{what}: {c}");
    assert!(c.get("node").is_none(), "{what}: no node on uni transports: {c}");
    assert!(c.get("pong").is_none(), "{what}: no pong on uni transports: {c}");
}

/// One unidirectional connection of any kind, read as bare pushes.
enum Uni {
    Http(Stream),
    Ws(UniWs),
}

impl Uni {
    fn open(s: &Server, kind: &str, req: &Value) -> Uni {
        let body = req.to_string();
        match kind {
            "uni_http_stream" => {
                Uni::Http(Stream::open(s, Framing::Lines, "POST", "/connection/uni_http_stream", body.as_bytes(), &[]))
            }
            "uni_sse" => Uni::Http(Stream::open(
                s,
                Framing::Sse,
                "GET",
                &format!("/connection/uni_sse?cf_connect={}", urlencode(&body)),
                b"",
                &[],
            )),
            "uni_sse_post" => {
                Uni::Http(Stream::open(s, Framing::Sse, "POST", "/connection/uni_sse", body.as_bytes(), &[]))
            }
            "uni_websocket" => {
                Uni::Ws(UniWs::open(s, &format!("/connection/uni_websocket?cf_connect={}", urlencode(&body))))
            }
            "uni_websocket_message" => {
                let mut w = UniWs::open(s, "/connection/uni_websocket");
                w.send_text(&body);
                Uni::Ws(w)
            }
            _ => panic!("unknown uni transport {kind}"),
        }
    }

    fn next_opt(&mut self) -> Option<Value> {
        match self {
            Uni::Http(st) => st.next_opt(),
            Uni::Ws(w) => w.next_opt(),
        }
    }

    fn next(&mut self) -> Value {
        loop {
            let v = self.next_opt().expect("the uni stream ended");
            if v != json!({}) {
                return v;
            }
        }
    }

    /// Skips pushes until one `pred` accepts.
    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut skipped = Vec::new();
        loop {
            let v =
                self.next_opt().unwrap_or_else(|| panic!("the uni stream ended before {what}; skipped {skipped:?}"));
            if pred(&v) {
                return v;
            }
            skipped.push(v);
        }
    }

    /// The disconnect push, then the end (uni_websocket: a close frame with the same code and
    /// reason). Returns the push's `disconnect`.
    fn expect_disconnect(&mut self, kind: &str) -> Value {
        let d = self.until("the disconnect push", |v| v["disconnect"].is_object());
        assert!(d["disconnect"].get("reconnect").is_none(), "{kind}: {d}");
        match self {
            Uni::Http(st) => st.expect_end(),
            Uni::Ws(w) => {
                assert_eq!(w.next_opt(), None, "{kind}: the close frame follows the push");
                let (code, reason) = w.close.clone().unwrap();
                assert_eq!(json!(code), d["disconnect"]["code"], "{kind}: close code");
                assert_eq!(json!(reason), d["disconnect"]["reason"], "{kind}: close reason");
            }
        }
        d["disconnect"].clone()
    }
}

const UNI_KINDS: [&str; 5] = ["uni_http_stream", "uni_sse", "uni_sse_post", "uni_websocket", "uni_websocket_message"];

/// Every unidirectional transport: the connect push with the token's server-side
/// subscriptions (`channels` and the `#user` channel), publications to them, recovery through
/// the ConnectRequest's `subs` after a cut, and the API `disconnect`.
#[test]
fn uni_transports_flow() {
    let s =
        Server::start(transports_config(json!({"client": {"subscribe_to_user_personal_channel": {"enabled": true}}})));
    let s = &s;
    std::thread::scope(|scope| {
        for (i, kind) in UNI_KINDS.into_iter().enumerate() {
            scope.spawn(move || {
                let user = format!("uni{i}");
                let ch = format!("srv:{kind}");
                let personal = format!("#{user}");
                let t = token(&user, json!({"channels": [ch]}));
                let mut u = Uni::open(s, kind, &json!({"token": t, "name": "raw"}));
                let c = u.next();
                check_uni_connect(&c, kind);
                let sub = c["connect"]["subs"][&ch].clone();
                assert_eq!(sub["recoverable"], true, "{kind}: {c}");
                let epoch = sub["epoch"].as_str().unwrap_or_else(|| panic!("{kind}: epoch {c}")).to_string();
                assert!(c["connect"]["subs"][&personal].is_object(), "{kind}: the personal channel {personal}: {c}");

                for n in 1..=3 {
                    api_publish(s, &ch, json!({"n": n, "kind": kind}));
                }
                for n in 1..=3 {
                    let p = u.next();
                    assert_eq!(
                        p,
                        json!({"channel": ch, "pub": {"data": {"n": n, "kind": kind}, "offset": n}}),
                        "{kind}"
                    );
                }
                drop(u); // the cut
                for n in 4..=6 {
                    api_publish(s, &ch, json!({"n": n, "kind": kind}));
                }
                let req = json!({"token": t, "subs": {ch.clone(): {"recover": true, "offset": 3, "epoch": epoch}}});
                let mut u = Uni::open(s, kind, &req);
                let c = u.next();
                let sub = &c["connect"]["subs"][&ch];
                assert_eq!(sub["recovered"], true, "{kind}: {c}");
                assert_eq!(sub["was_recovering"], true, "{kind}: {c}");
                let ns: Vec<i64> = sub["publications"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{kind}: {c}"))
                    .iter()
                    .map(|p| p["data"]["n"].as_i64().unwrap())
                    .collect();
                assert_eq!(ns, vec![4, 5, 6], "{kind}: {c}");
                api_publish(s, &ch, json!({"n": 7}));
                assert_eq!(u.next()["pub"]["offset"], 7, "{kind}");

                // The personal channel, and a subscription added by the API's `subscribe`.
                // Raw newlines inside the published JSON never reach a line-framed stream.
                let body = format!("{{\"channel\":{personal:?},\"data\":{{\"to\":{user:?},\n\"nl\":\"a\\nb\"}}}}");
                let r = s.post("/api/publish", body.as_bytes(), &[("X-API-Key", KEY)]);
                assert!(r.status == 200 && r.json().get("error").is_none(), "{body}: {}", r.text());
                let p = u.next();
                assert_eq!(p, json!({"channel": personal, "pub": {"data": {"to": user, "nl": "a\nb"}}}), "{kind}");
                let extra = format!("chat:extra-{i}");
                api_ok(s, "subscribe", json!({"user": user, "channel": extra}));
                let sp = u.next();
                assert_eq!(sp["channel"], extra.as_str(), "{kind}: {sp}");
                assert!(sp["subscribe"].is_object(), "{kind}: {sp}");
                api_publish(s, &extra, json!({"to": user}));
                let p = u.until("the publication on chat:extra", |v| v["pub"].is_object());
                assert_eq!(p["channel"], extra.as_str(), "{kind}: {p}");
                assert_eq!(p["pub"]["data"], json!({"to": user}), "{kind}: {p}");

                api_ok(s, "disconnect", json!({"user": user}));
                let d = u.expect_disconnect(kind);
                assert_eq!(d, json!({"code": 3503, "reason": "force disconnect"}), "{kind}");
            });
        }
    });
    assert_no_panic(s);
}

/// Token failures on every unidirectional transport: a bad signature → 3500 `invalid
/// token`; an expired token → 3005 `connection expired`; both as a disconnect push, then the
/// end. On http_stream and SSE: 3500 the same way inside the stream; expired → error reply 109
/// and the stream stays open.
#[test]
fn token_failures_on_every_transport() {
    let s = Server::start(transports_config(json!({})));
    let bad = jwt("not-the-secret", json!({"sub": "u1", "exp": now() + 3600}));
    let expired = jwt(SECRET, json!({"sub": "u1", "exp": now() - 60}));
    for kind in UNI_KINDS {
        let mut u = Uni::open(&s, kind, &json!({"token": bad}));
        assert_eq!(u.expect_disconnect(kind), json!({"code": 3500, "reason": "invalid token"}), "{kind}");
        let mut u = Uni::open(&s, kind, &json!({"token": expired}));
        assert_eq!(u.expect_disconnect(kind), json!({"code": 3005, "reason": "connection expired"}), "{kind}");
        // No token while anonymous connects are not allowed: 3501.
        let mut u = Uni::open(&s, kind, &json!({}));
        assert_eq!(u.expect_disconnect(kind)["code"], 3501, "{kind}");
    }
    for framing in [Framing::Lines, Framing::Sse] {
        let open = |t: &str| {
            let connect = json!({"id": 1, "connect": {"token": t}}).to_string();
            match framing {
                Framing::Lines => Stream::http_stream(&s, &connect),
                _ => Stream::open(
                    &s,
                    Framing::Sse,
                    "GET",
                    &format!("/connection/sse?cf_connect={}", urlencode(&connect)),
                    b"",
                    &[],
                ),
            }
        };
        let mut st = open(&bad);
        assert_eq!(
            st.next(),
            json!({"push": {"disconnect": {"code": 3500, "reason": "invalid token"}}}),
            "{framing:?}"
        );
        st.expect_end();
        let mut st = open(&expired);
        assert_eq!(st.next(), json!({"id": 1, "error": {"code": 109, "message": "token expired"}}), "{framing:?}");
        assert!(st.quiet_for(Duration::from_millis(500)), "{framing:?}: the stream stays open after error 109");
    }
    assert_no_panic(&s);
}

/// The bidirectional WebSocket's connect result has neither `session` nor `node`.
#[test]
fn plain_websocket_has_no_session_or_node() {
    let s = Server::start(transports_config(json!({})));
    let mut ws = Ws::open(s.addr());
    ws.send_json(&json!({"id": 1, "connect": {"token": token("u1", json!({}))}}));
    let f = ws.frame().expect("the connect reply");
    let r = &ws_client::json_lines(&f.payload)[0];
    assert!(r["connect"]["client"].is_string(), "{r}");
    assert!(r["connect"].get("session").is_none() && r["connect"].get("node").is_none(), "{r}");
    assert_no_panic(&s);
}

/// `client.connect_code_to_unidirectional_disconnect` turns a connect error into the
/// configured disconnect; `<uni>.connect_code_to_http_response` answers a failed connect with
/// an HTTP status instead of a stream (the transform's body, else the reason; 500 for codes
/// without a transform), and still streams a connect that succeeds.
#[test]
fn uni_connect_failure_mappings() {
    let s = Server::start(transports_config(json!({"client": {"connect_code_to_unidirectional_disconnect": {
        "enabled": true, "transforms": [{"code": 109, "to": {"code": 4501, "reason": "token gone"}}]
    }}})));
    let expired = jwt(SECRET, json!({"sub": "u1", "exp": now() - 60}));
    for kind in UNI_KINDS {
        let mut u = Uni::open(&s, kind, &json!({"token": expired}));
        assert_eq!(u.expect_disconnect(kind), json!({"code": 4501, "reason": "token gone"}), "{kind}");
    }
    assert_no_panic(&s);

    let mapping = json!({"connect_code_to_http_response": {"enabled": true, "transforms": [
        {"code": 3500, "to": {"status_code": 401, "body": "nope"}},
        {"code": 3501, "to": {"status_code": 400}}
    ]}});
    let s = Server::start(transports_config(json!({"uni_http_stream": mapping, "uni_sse": mapping})));
    let bad = jwt("not-the-secret", json!({"sub": "u1"}));
    for (req, status, body) in [
        (json!({"token": bad}), 401, "nope"),
        (json!({}), 400, "bad request"),
        (json!({"token": expired}), 500, "Internal Server Error"),
    ] {
        let r = s.post("/connection/uni_http_stream", req.to_string().as_bytes(), &[]);
        assert_eq!((r.status, r.text().trim_end()), (status, body), "uni_http_stream {req}");
        let path = format!("/connection/uni_sse?cf_connect={}", urlencode(&req.to_string()));
        let r = s.request("GET", &path, &[]);
        assert_eq!((r.status, r.text().trim_end()), (status, body), "uni_sse {req}");
    }
    let mut u = Uni::open(&s, "uni_http_stream", &json!({"token": token("u1", json!({}))}));
    check_uni_connect(&u.next(), "uni_http_stream with the mapping on");
    let mut u = Uni::open(&s, "uni_sse", &json!({"token": token("u1", json!({}))}));
    check_uni_connect(&u.next(), "uni_sse with the mapping on");
    assert_no_panic(&s);
}

/// The server API's `session` field targets one unidirectional connection of a user:
/// `subscribe` adds a channel to that one only, `disconnect` closes that one only.
#[test]
fn api_targets_one_session() {
    let s = Server::start(transports_config(json!({})));
    let t = token("u1", json!({}));
    let mut a = Uni::open(&s, "uni_http_stream", &json!({"token": t}));
    let mut b = Uni::open(&s, "uni_sse", &json!({"token": t}));
    let sa = a.next()["connect"]["session"].as_str().unwrap().to_string();
    let sb = b.next()["connect"]["session"].as_str().unwrap().to_string();
    assert_ne!(sa, sb);
    api_ok(&s, "subscribe", json!({"user": "u1", "session": sb, "channel": "rec:only-b"}));
    assert_eq!(b.next()["channel"], "rec:only-b");
    api_publish(&s, "rec:only-b", json!({"n": 1}));
    assert_eq!(b.next(), json!({"channel": "rec:only-b", "pub": {"data": {"n": 1}, "offset": 1}}));
    api_ok(&s, "disconnect", json!({"user": "u1", "session": sa}));
    assert_eq!(a.expect_disconnect("a")["code"], 3503);
    api_ok(&s, "subscribe", json!({"user": "u1", "channel": "rec:both"}));
    assert_eq!(b.next()["channel"], "rec:both", "b is still there and a alone was closed");
    assert_no_panic(&s);
}

/// The API `disconnect` on emulation streams: a disconnect push, then the end of the
/// response. The client-side command that is not allowed (a second connect) closes the stream
/// with 3501.
#[test]
fn emulation_disconnects() {
    let s = Server::start(transports_config(json!({})));
    for framing in [Framing::Lines, Framing::Sse] {
        let (mut st, _, _) = bidi_connect(&s, framing, &token("d1", json!({})));
        api_ok(&s, "disconnect", json!({"user": "d1"}));
        assert_eq!(
            st.next_non_ping(),
            json!({"push": {"disconnect": {"code": 3503, "reason": "force disconnect"}}}),
            "{framing:?}"
        );
        st.expect_end();
        let (mut st, _, sess) = bidi_connect(&s, framing, &token("d2", json!({})));
        emulate_ok(&s, &sess, &[json!({"id": 2, "connect": {"token": token("d2", json!({}))}})]);
        let (d, _) = st.until("the disconnect", |v| v["push"]["disconnect"].is_object());
        assert_eq!(d["push"]["disconnect"]["code"], 3501, "{framing:?}: {d}");
        st.expect_end();
    }
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Bad input.
// ---------------------------------------------------------------------------------------------

/// Wrong methods, missing or bad connect requests, oversized bodies, unknown nodes and
/// sessions: the statuses of the spec, never a hang or a crash.
#[test]
fn bad_requests_get_their_statuses() {
    let limits = json!({"max_request_body_size": 1024});
    let s = Server::start(transports_config(json!({
        "http_stream": limits, "sse": limits, "emulation": limits, "uni_sse": limits, "uni_http_stream": limits
    })));
    let t = token("u1", json!({}));
    let check = |method: &str, path: &str, body: &[u8], status: u16| {
        let mut c = s.connect();
        c.send(&request(method, path, body, &[]));
        let r = c.read_response().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, status, "{method} {path} ({} body bytes): {r:?}", body.len());
        r
    };
    // Methods.
    for (m, p) in [
        ("GET", "/connection/http_stream"),
        ("PUT", "/connection/http_stream"),
        ("PUT", "/connection/sse"),
        ("DELETE", "/connection/sse"),
        ("OPTIONS", "/connection/sse"),
        ("GET", "/emulation"),
        ("PUT", "/emulation"),
        ("GET", "/connection/uni_http_stream"),
        ("PUT", "/connection/uni_sse"),
        ("OPTIONS", "/connection/uni_sse"),
    ] {
        check(m, p, b"", 405);
    }
    // SSE without cf_connect; uni connect requests that are not JSON.
    check("GET", "/connection/sse", b"", 400);
    check("GET", "/connection/sse?cf_connect=", b"", 400);
    check("GET", "/connection/uni_sse?cf_connect=%7Bnot-json", b"", 400);
    check("POST", "/connection/uni_sse", b"{not json", 400);
    check("POST", "/connection/uni_http_stream", b"{not json", 400);
    check("POST", "/connection/uni_http_stream", b"", 400);
    let r = check("GET", "/connection/uni_websocket?cf_connect=%7Bnot-json", b"", 400);
    assert_eq!(r.text().trim_end(), "invalid connect request");
    // Over the body limits: 413 before any stream.
    let big = format!(r#"{{"token":"{t}","data":"{}"}}"#, "x".repeat(2000));
    let big_cmd = format!(r#"{{"id":1,"connect":{{"token":"{t}","data":"{}"}}}}"#, "x".repeat(2000));
    check("POST", "/connection/http_stream", big_cmd.as_bytes(), 413);
    check("POST", "/connection/sse", big_cmd.as_bytes(), 413);
    check("POST", "/connection/uni_sse", big.as_bytes(), 413);
    check("POST", "/connection/uni_http_stream", big.as_bytes(), 413);
    let (mut st, _, sess) = bidi_connect(&s, Framing::Lines, &t);
    let big_emulation = json!({"session": sess.session, "node": sess.node, "data": "x".repeat(2000)}).to_string();
    check("POST", "/emulation", big_emulation.as_bytes(), 413);
    // Emulation: unknown node 404 (also empty), unknown session 204, undecodable 400.
    let other = Sess { session: sess.session.clone(), node: "00000000-0000-4000-8000-000000000000".into() };
    assert_eq!(emulate(&s, &other, &[json!({"id": 2, "presence": {"channel": "chat:x"}})]), 404);
    assert_eq!(emulate(&s, &Sess { session: sess.session.clone(), node: String::new() }, &[json!({})]), 404);
    let unknown = Sess { session: "00000000-0000-4000-8000-000000000001".into(), node: sess.node.clone() };
    assert_eq!(emulate(&s, &unknown, &[json!({"id": 2, "presence": {"channel": "chat:x"}})]), 204);
    check("POST", "/emulation", b"{not json", 400);
    check("POST", "/emulation", b"[1,2]", 400);
    // The stream is still usable.
    emulate_ok(&s, &sess, &[json!({"id": 3, "subscribe": {"channel": "chat:ok"}})]);
    let (r, _) = st.until("the subscribe reply", |v| v["id"] == 3);
    assert!(r.get("error").is_none(), "{r}");

    // First command not connect, empty body, garbage, a command over the cap: 3501 inside a
    // 200 stream, then the end.
    let not_connect = json!({"id": 1, "subscribe": {"channel": "chat:x"}}).to_string();
    for (what, body) in [
        ("not connect", not_connect.as_bytes().to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"\x00\x01garbage".to_vec()),
    ] {
        let mut st = Stream::open(&s, Framing::Lines, "POST", "/connection/http_stream", &body, &[]);
        assert_eq!(
            st.next(),
            json!({"push": {"disconnect": {"code": 3501, "reason": "bad request"}}}),
            "http_stream {what}"
        );
        st.expect_end();
    }
    let mut st = Stream::open(
        &s,
        Framing::Sse,
        "GET",
        &format!("/connection/sse?cf_connect={}", urlencode(&not_connect)),
        b"",
        &[],
    );
    assert_eq!(st.next(), json!({"push": {"disconnect": {"code": 3501, "reason": "bad request"}}}), "sse not connect");
    st.expect_end();
    // A `cf_connect` over `sse.max_request_body_size`: the command is refused in the stream.
    let long = json!({"id": 1, "connect": {"token": "x".repeat(2000)}}).to_string();
    let mut st =
        Stream::open(&s, Framing::Sse, "GET", &format!("/connection/sse?cf_connect={}", urlencode(&long)), b"", &[]);
    assert_eq!(
        st.next(),
        json!({"push": {"disconnect": {"code": 3501, "reason": "bad request"}}}),
        "sse long cf_connect"
    );
    st.expect_end();
    let mut st = Stream::open(
        &s,
        Framing::Varint,
        "POST",
        "/connection/http_stream",
        b"\x05\xff\xff\xff\xff\xff",
        &[("Content-Type", "application/octet-stream")],
    );
    let d = pb_reply(&st.next_raw_by(Instant::now() + WAIT).expect("a disconnect push"));
    assert_eq!(d.push.and_then(|p| p.disconnect).map(|d| d.code), Some(3501), "protobuf garbage");
    assert_eq!(st.next_raw_by(Instant::now() + WAIT), None);
    // uni_websocket: a first message that is not JSON → close 3501.
    let mut w = UniWs::open(&s, "/connection/uni_websocket");
    w.send_text("{not json");
    while w.next_opt().is_some() {}
    assert_eq!(w.close.as_ref().map(|c| c.0), Some(3501), "uni_websocket bad first message: {:?}", w.close);
    // Trailing slash is another path.
    assert_eq!(s.post("/connection/http_stream/", b"{}", &[]).status, 404);
    assert_no_panic(&s);
}

/// An EmulationRequest whose `data` is JSON but not a string is still an EmulationRequest: the
/// JSON session cannot take it (the request is answered 204 all the same) and nothing reaches
/// its stream, which stays usable.
#[test]
fn emulation_data_not_a_string_is_204() {
    let s = Server::start(transports_config(json!({})));
    let (mut st, _, sess) = bidi_connect(&s, Framing::Lines, &token("u1", json!({})));
    let body = json!({"session": sess.session, "node": sess.node, "data": {"id": 5, "presence": {}}}).to_string();
    let r = s.post("/emulation", body.as_bytes(), &[("Content-Type", "application/json")]);
    assert!(st.quiet_for(Duration::from_millis(300)), "nothing reached the stream");
    emulate_ok(&s, &sess, &[json!({"id": 3, "subscribe": {"channel": "chat:ok"}})]);
    let (reply, _) = st.until("the subscribe reply", |v| v["id"] == 3);
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(r.status, 204, "data not a string: {r:?}");
    assert_no_panic(&s);
}

/// A uni_websocket handshake with another method than GET: 405 (a plain POST without the
/// upgrade headers is a bad handshake, 400).
#[test]
fn uni_websocket_handshake_with_post_is_405() {
    let s = Server::start(transports_config(json!({})));
    let mut c = s.connect();
    let mut upgrade = ws_client::upgrade_request("127.0.0.1", "/connection/uni_websocket", ws_client::SAMPLE_KEY, &[]);
    upgrade.splice(..3, b"POST".iter().copied());
    c.send(&upgrade);
    assert_eq!(c.read_response().unwrap().status, 405, "uni_websocket handshake with POST");
    assert_eq!(s.post("/connection/uni_websocket", b"", &[]).status, 400, "POST without the upgrade headers");
    assert_no_panic(&s);
}

/// Transports that are not enabled are not there (404), and `/emulation` exists only with
/// http_stream or SSE.
#[test]
fn disabled_transports_are_absent() {
    let s = Server::start(config_with(json!({})));
    for (m, p) in [
        ("POST", "/connection/http_stream"),
        ("GET", "/connection/sse?cf_connect=%7B%7D"),
        ("POST", "/emulation"),
        ("POST", "/connection/uni_http_stream"),
        ("GET", "/connection/uni_sse"),
        ("GET", "/connection/uni_websocket"),
    ] {
        let mut c = s.connect();
        c.send(&request(m, p, b"{}", &[]));
        assert_eq!(c.read_response().unwrap().status, 404, "{m} {p} while disabled");
    }
    // SSE alone still has `/emulation`.
    let s = Server::start(transports_config(json!({"http_stream": {"enabled": false}})));
    assert_eq!(s.post("/connection/http_stream", b"{}", &[]).status, 404);
    let (_st, _, sess) = bidi_connect(&s, Framing::Sse, &token("u1", json!({})));
    let unknown = Sess { session: "00000000-0000-4000-8000-000000000001".into(), node: sess.node.clone() };
    assert_eq!(emulate(&s, &unknown, &[json!({})]), 204, "sse on: /emulation is there");
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// OPTIONS and CORS.
// ---------------------------------------------------------------------------------------------

#[test]
fn options_and_cors_headers() {
    let s = Server::start(transports_config(json!({"client": {"allowed_origins": ["http://good.example"]}})));
    let good = [("Origin", "http://good.example"), ("Access-Control-Request-Headers", "content-type")];
    for path in ["/connection/http_stream", "/emulation", "/connection/uni_http_stream"] {
        let r = s.request("OPTIONS", path, &good);
        assert_eq!(r.status, 204, "OPTIONS {path}: {r:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("access-control-max-age"), Some("300"), "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-methods"), Some("POST, OPTIONS"), "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some("http://good.example"), "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"), "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-headers"), Some("content-type"), "{path}: {r:?}");
        // Another origin: served, without CORS headers.
        let r = s.request("OPTIONS", path, &[("Origin", "http://evil.example")]);
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{path}: {r:?}");
    }
    // The streams themselves carry the CORS headers for an allowed origin and are still
    // served (without them) for another.
    let connect = json!({"id": 1, "connect": {"token": token("u1", json!({}))}}).to_string();
    for (origin, allowed) in [("http://good.example", true), ("http://evil.example", false)] {
        let mut st = Stream::open(
            &s,
            Framing::Lines,
            "POST",
            "/connection/http_stream",
            connect.as_bytes(),
            &[("Origin", origin)],
        );
        assert_eq!(st.head.header("access-control-allow-origin").is_some(), allowed, "{origin}: {:?}", st.head);
        if allowed {
            assert_eq!(st.head.header("access-control-allow-origin"), Some(origin));
            assert_eq!(st.head.header("access-control-allow-credentials"), Some("true"));
        }
        let c = st.next_non_ping();
        assert!(c["connect"]["session"].is_string(), "{origin}: {c}");
        let sess = Sess::of(&c["connect"]);
        let data = json!({"id": 2, "presence_stats": {"channel": "chat:x"}}).to_string();
        let body = json!({"session": sess.session, "node": sess.node, "data": data}).to_string();
        let r = s.post("/emulation", body.as_bytes(), &[("Origin", origin)]);
        assert_eq!(r.status, 204);
        assert_eq!(r.header("access-control-allow-origin").is_some(), allowed, "emulation {origin}: {r:?}");
        let mut st = Stream::open(
            &s,
            Framing::Sse,
            "GET",
            &format!("/connection/sse?cf_connect={}", urlencode(&connect)),
            b"",
            &[("Origin", origin)],
        );
        assert_eq!(st.head.header("access-control-allow-origin").is_some(), allowed, "sse {origin}: {:?}", st.head);
        st.next_non_ping();
        let req = json!({"token": token("u1", json!({}))}).to_string();
        let st = Stream::open(
            &s,
            Framing::Lines,
            "POST",
            "/connection/uni_http_stream",
            req.as_bytes(),
            &[("Origin", origin)],
        );
        assert_eq!(
            st.head.header("access-control-allow-origin").is_some(),
            allowed,
            "uni_http_stream {origin}: {:?}",
            st.head
        );
    }
    // uni_websocket refuses a bad origin outright.
    let path = format!(
        "/connection/uni_websocket?cf_connect={}",
        urlencode(&json!({"token": token("u1", json!({}))}).to_string())
    );
    assert_eq!(UniWs::try_open(&s, &path, &[("Origin", "http://evil.example")]).err(), Some(403));
    let mut w = UniWs::try_open(&s, &path, &[("Origin", "http://good.example")]).expect("allowed origin");
    assert!(w.next()["connect"].is_object());
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Emulation across workers and nodes.
// ---------------------------------------------------------------------------------------------

/// Four workers: eight streams, each driven by emulation requests on fresh connections
/// (which SO_REUSEPORT spreads over the workers independently of the streams).
#[test]
fn emulation_across_workers() {
    let s = Server::start(transports_config(json!({"workers": 4})));
    let s = &s;
    std::thread::scope(|scope| {
        for i in 0..8 {
            scope.spawn(move || {
                let framing = if i % 2 == 0 { Framing::Lines } else { Framing::Sse };
                let (mut st, _, sess) = bidi_connect(s, framing, &token(&format!("w{i}"), json!({})));
                let ch = format!("chat:w{i}");
                for k in 0..6u32 {
                    let id = 10 + k;
                    let cmd = if k == 0 {
                        json!({"id": id, "subscribe": {"channel": ch}})
                    } else {
                        json!({"id": id, "publish": {"channel": ch, "data": {"k": k}}})
                    };
                    emulate_ok(s, &sess, &[cmd]);
                    let (r, _) = st.until("the reply", |v| v["id"] == id);
                    assert!(r.get("error").is_none(), "stream {i} command {k}: {r}");
                }
                let h = api_ok(s, "history", json!({"channel": ch, "limit": 10}));
                assert_eq!(h["publications"].as_array().map(Vec::len), Some(5), "{h}");
            });
        }
    });
    assert_no_panic(s);
}

/// Two nodes on one Redis: an emulation request sent to node 1 for a session on node 0 is
/// carried over to node 0 (once node 1 knows it) and its reply comes on node 0's stream; an
/// unknown node is 404 there too.
#[test]
fn emulation_across_nodes_with_redis() {
    if !redis_available("emulation_across_nodes_with_redis") {
        return;
    }
    let redis = RedisServer::start();
    let nodes = cluster(2, &redis, transports_config(json!({})));
    let (mut st, c, sess) = bidi_connect(&nodes[0], Framing::Lines, &token("u1", json!({})));
    let info = api_ok(&nodes[1], "info", json!({}));
    let uids: Vec<Value> =
        info["nodes"].as_array().map(|n| n.iter().map(|n| n["uid"].clone()).collect()).unwrap_or_default();
    // Node 1 learns of node 0 from its control messages: until then the request is 404.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match emulate(&nodes[1], &sess, &[json!({"id": 2, "subscribe": {"channel": "chat:x"}})]) {
            204 => break,
            404 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("emulation through node 1: {other} (its nodes: {uids:?}, session node {})", c["node"]),
        }
    }
    let (r, _) = st.until("the subscribe reply through node 1", |v| v["id"] == 2);
    assert!(r.get("error").is_none(), "{r}");
    api_publish(&nodes[1], "chat:x", json!({"via": "node1"}));
    let (p, _) = st.until("the publication", |v| v["push"]["pub"].is_object());
    assert_eq!(p["push"]["pub"]["data"], json!({"via": "node1"}));
    emulate_ok(&nodes[1], &sess, &[json!({"id": 3, "publish": {"channel": "chat:x", "data": {"from": "emulated"}}})]);
    let (r, _) = st.until("the publish reply", |v| v["id"] == 3);
    assert_eq!(r, json!({"id": 3, "publish": {}}));
    let other = Sess { session: sess.session.clone(), node: "00000000-0000-4000-8000-000000000000".into() };
    assert_eq!(emulate(&nodes[1], &other, &[json!({})]), 404);
    for n in &nodes {
        assert_no_panic(n);
    }
}

// ---------------------------------------------------------------------------------------------
// curl.
// ---------------------------------------------------------------------------------------------

/// `curl -N` reads uni_http_stream and uni_sse as the spec's quick checks show: the first line
/// or event is the connect push.
#[test]
fn curl_reads_uni_streams() {
    if Command::new("curl").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        unavailable("curl_reads_uni_streams", "`curl` is not on PATH", "apt-get install curl");
        return;
    }
    let s = Server::start(transports_config(json!({})));
    let req = json!({"token": token("u1", json!({}))}).to_string();
    let run = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sN", "--max-time", "2", "--noproxy", "*"])
            .args(args)
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = run(&["-X", "POST", &s.url("/connection/uni_http_stream"), "-d", &req]);
    let first: Value =
        serde_json::from_str(out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    check_uni_connect(&first, "curl uni_http_stream");
    let out = run(&[&s.url(&format!("/connection/uni_sse?cf_connect={}", urlencode(&req)))]);
    assert!(out.starts_with("\r\ndata: {\"connect\":"), "{out:?}");
    let out = run(&[&s.url("/connection/uni_sse")]);
    assert!(
        out.contains("\"disconnect\":{\"code\":3501"),
        "uni_sse without cf_connect is an empty ConnectRequest: {out:?}"
    );
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Python consumers (tests/python/uni_client.py).
// ---------------------------------------------------------------------------------------------

/// The uni consumer process, or `None` (skipped) without the venv, unless `CI` is set.
fn uni_client(test: &str) -> Option<LineProc> {
    let python = match pyenv_python() {
        Ok(p) => p,
        Err((what, how)) => {
            unavailable(test, &what, how);
            return None;
        }
    };
    let ok = Command::new(&python)
        .args(["-c", "import requests, websockets.sync.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        unavailable(test, "requests / websockets are not installed in target/pyenv", "bash .ci/run");
        return None;
    }
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/python/uni_client.py"));
    Some(LineProc::spawn("uni_client.py", cmd))
}

/// `requests` (uni_http_stream, uni_sse GET and POST) and `websockets` (uni_websocket)
/// consumers: connect push, publications, disconnect push and the end of each stream.
#[test]
fn python_uni_consumers() {
    let Some(mut p) = uni_client("python_uni_consumers") else { return };
    let s = Server::start(transports_config(json!({})));
    let kinds = ["uni_http_stream", "uni_sse", "uni_sse_post", "uni_websocket"];
    for (i, kind) in kinds.iter().enumerate() {
        let t = token(&format!("py{i}"), json!({"channels": ["srv:py"]}));
        let url = match *kind {
            "uni_websocket" => format!("ws://127.0.0.1:{}/connection/uni_websocket", s.port),
            "uni_sse_post" => s.url("/connection/uni_sse"),
            k => s.url(&format!("/connection/{k}")),
        };
        p.send(json!({"op": "open", "id": kind, "transport": kind, "url": url, "req": {"token": t}}));
    }
    for kind in kinds {
        let c = p.wait(&format!("{kind}: connect push"), |e| {
            e["ev"] == "push" && e["id"] == kind && e["push"]["connect"].is_object()
        });
        check_uni_connect(&c["push"], kind);
        assert!(c["push"]["connect"]["subs"]["srv:py"].is_object(), "{c}");
    }
    for n in 1..=3 {
        api_publish(&s, "srv:py", json!({"n": n, "text": "é✓"}));
    }
    for kind in kinds {
        let pubs = p.wait_n(&format!("{kind}: 3 publications"), 3, |e| {
            e["ev"] == "push" && e["id"] == kind && e["push"]["pub"].is_object()
        });
        for (n, e) in (1..=3).zip(&pubs) {
            assert_eq!(
                e["push"],
                json!({"channel": "srv:py", "pub": {"data": {"n": n, "text": "é✓"}, "offset": n}}),
                "{kind}"
            );
        }
    }
    for (i, kind) in kinds.iter().enumerate() {
        api_ok(&s, "disconnect", json!({"user": format!("py{i}")}));
        let d = p.wait(&format!("{kind}: disconnect push"), |e| {
            e["ev"] == "push" && e["id"] == *kind && e["push"]["disconnect"].is_object()
        });
        assert_eq!(d["push"]["disconnect"], json!({"code": 3503, "reason": "force disconnect"}), "{kind}");
        let end = p.wait(&format!("{kind}: end"), |e| e["ev"] == "end" && e["id"] == *kind);
        if *kind == "uni_websocket" {
            assert_eq!(end["code"], 3503, "{end}");
        }
    }
    // Statuses the consumers see on refused requests.
    p.send(json!({"op": "open", "id": "bad", "transport": "uni_http_stream", "url": s.url("/connection/uni_http_stream"), "raw": "{not json"}));
    let bad = p.wait("bad request", |e| e["id"] == "bad" && (e["ev"] == "status" || e["ev"] == "end"));
    assert_eq!(bad["status"], 400, "{bad}");
    assert_no_panic(&s);
}

/// uni_grpc through a client generated by grpcio-tools from the server's
/// `proto/unistream.proto`: connect push, a publication, disconnect push, then status OK.
#[test]
fn python_uni_grpc_consumer() {
    let proto = repo_root().join("proto/unistream.proto");
    if !proto.exists() {
        eprintln!("SKIPPED python_uni_grpc_consumer: {} does not exist", proto.display());
        return;
    }
    let Some(mut p) = uni_client("python_uni_grpc_consumer") else { return };
    let grpc_port = free_port();
    let s = Server::start(transports_config(json!({"uni_grpc": {"enabled": true, "port": grpc_port}})));
    let t = token("g1", json!({"channels": ["srv:grpc"]}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", grpc_port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on uni_grpc.port {grpc_port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    p.send(json!({
        "op": "open", "id": "g", "transport": "uni_grpc", "url": format!("127.0.0.1:{grpc_port}"),
        "proto_dir": repo_root().join("proto"), "req": {"token": t}
    }));
    let c = p.wait("uni_grpc connect push", |e| e["ev"] == "push" && e["push"]["connect"].is_object());
    let connect = &c["push"]["connect"];
    assert!(is_uuid(&connect["client"]) && is_uuid(&connect["session"]), "{c}");
    assert_eq!(connect["ping"], 25, "{c}");
    assert!(connect.get("node").is_none() && connect.get("pong").is_none(), "{c}");
    assert!(connect["subs"]["srv:grpc"].is_object(), "{c}");
    api_publish(&s, "srv:grpc", json!({"n": 1}));
    let pb = p.wait("uni_grpc publication", |e| e["ev"] == "push" && e["push"]["pub"].is_object());
    assert_eq!(pb["push"], json!({"channel": "srv:grpc", "pub": {"data": {"n": 1}, "offset": 1}}));
    api_ok(&s, "disconnect", json!({"user": "g1"}));
    let d = p.wait("uni_grpc disconnect", |e| e["ev"] == "push" && e["push"]["disconnect"].is_object());
    assert_eq!(d["push"]["disconnect"], json!({"code": 3503, "reason": "force disconnect"}));
    let end = p.wait("uni_grpc end", |e| e["ev"] == "end");
    assert_eq!(end["status"], "OK", "{end}");
    assert_no_panic(&s);
}
