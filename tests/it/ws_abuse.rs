//! The WebSocket endpoint against misbehaving clients, with the raw client of `ws_client.rs`
//! (independent of the server's codec): bad handshakes,
//! protocol violations (unmasked, oversized, invalid UTF-8), bad first messages and tokens,
//! and a client that stops reading while 10,000 publications arrive.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "ws-abuse-secret-0123456789";

fn abuse_config(patch: Value) -> Value {
    let mut cfg = json!({
        "http_api": {"key": KEY},
        "health": {"enabled": true},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [{"name": "feed", "allow_subscribe_for_client": true}]},
        "workers": 2
    });
    merge(&mut cfg, patch);
    cfg
}

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    jwt(SECRET, json!({"sub": user, "exp": exp}))
}

/// Centrifugo commands over the raw WebSocket client of `ws_client`.
trait Commands {
    fn messages(&mut self) -> Vec<Value>;
    fn reply(&mut self, id: u32) -> Value;
    fn connect(&mut self, token: &str) -> Value;
    fn subscribe(&mut self, id: u32, channel: &str);
    fn expect_close_and_eof(&mut self) -> (u16, String);
}

impl Commands for Ws {
    /// The JSON objects of the next text frame (several may share one frame, `\n`-separated).
    fn messages(&mut self) -> Vec<Value> {
        let f = self.frame().expect("reading a frame");
        assert_eq!(f.op, TEXT, "expected a text frame, got {f:?}");
        json_lines(&f.payload)
    }

    /// Reads frames until the reply with `id`; pushes before it are returned too.
    fn reply(&mut self, id: u32) -> Value {
        loop {
            for m in self.messages() {
                if m["id"] == id {
                    return m;
                }
                assert!(m.get("push").is_some() || m == json!({}), "unexpected message {m}");
            }
        }
    }

    /// `connect` with `token`; asserts success.
    fn connect(&mut self, token: &str) -> Value {
        self.send_json(&json!({"id": 1, "connect": {"token": token}}));
        let r = self.reply(1);
        assert!(r["connect"]["client"].is_string(), "connect reply: {r}");
        r
    }

    fn subscribe(&mut self, id: u32, channel: &str) {
        self.send_json(&json!({"id": id, "subscribe": {"channel": channel}}));
        let r = self.reply(id);
        assert!(r.get("subscribe").is_some(), "subscribe reply: {r}");
    }

    /// The close frame that must come next (data frames before it are skipped), then EOF.
    /// Returns its code and reason.
    fn expect_close_and_eof(&mut self) -> (u16, String) {
        let (code, reason) = self.expect_close(Duration::from_secs(5));
        assert!(self.at_eof(Duration::from_secs(3)), "the server must close the TCP connection after close {code}");
        (code, reason)
    }
}

/// A fresh connection, a valid connect, a reply: the endpoint still works.
fn assert_serving(s: &mut Server) {
    s.assert_alive();
    assert_no_panic(s);
    let mut ws = Ws::open(s.addr());
    ws.connect(&token("alive"));
}

/// No worker of the server panicked (a panicking worker may leave the process running).
fn assert_no_panic(s: &Server) {
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

// ---------------------------------------------------------------------------------------------

#[test]
fn bad_handshakes_get_400_and_the_server_keeps_serving() {
    let mut s = Server::start(abuse_config(json!({})));
    let base = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")];
    let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");

    // No Sec-WebSocket-Key.
    let r = s.request("GET", WS_PATH, &base);
    assert_eq!(r.status, 400, "missing key: {:?}", r.text());
    // A key that is not 16 bytes of base64.
    let r = s.request("GET", WS_PATH, &[base[0], base[1], base[2], ("Sec-WebSocket-Key", "short")]);
    assert_eq!(r.status, 400, "bad key: {:?}", r.text());
    // Wrong version.
    let r = s.request("GET", WS_PATH, &[base[0], base[1], ("Sec-WebSocket-Version", "12"), key]);
    assert_eq!(r.status, 400, "version 12: {:?}", r.text());
    // No Upgrade header.
    let r = s.request("GET", WS_PATH, &[base[1], base[2], key]);
    assert_eq!(r.status, 400, "no Upgrade: {:?}", r.text());
    // POST with every upgrade header.
    let r = s.post(WS_PATH, b"", &[base[0], base[1], base[2], key]);
    assert_eq!(r.status, 400, "POST: {:?}", r.text());
    // A handshake that stops half-way and a connection dropped right after the upgrade.
    {
        let mut c = s.connect();
        c.send(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n");
    }
    {
        let _ws = Ws::open(s.addr());
    }
    assert_serving(&mut s);
}

#[test]
fn unmasked_client_frame_closes_1002() {
    let mut s = Server::start(abuse_config(json!({})));
    let mut ws = Ws::open(s.addr());
    let cmd = json!({"id": 1, "connect": {"token": token("u")}}).to_string();
    ws.send(&client_frame(true, TEXT, cmd.as_bytes(), false)).expect("write to the server");
    assert_eq!(ws.expect_close_and_eof().0, 1002);
    // The same after a successful connect.
    let mut ws = Ws::open(s.addr());
    ws.connect(&token("u"));
    ws.send(&client_frame(true, TEXT, br#"{"id":2,"presence":{"channel":"feed:x"}}"#, false))
        .expect("write to the server");
    assert_eq!(ws.expect_close_and_eof().0, 1002);
    assert_serving(&mut s);
}

#[test]
fn oversized_message_closes_1009() {
    let mut s = Server::start(abuse_config(json!({"websocket": {"message_size_limit": 1024}})));
    let big = json!({"id": 1, "connect": {"token": token("u"), "data": {"pad": "x".repeat(2000)}}}).to_string();
    // One frame over the limit.
    let mut ws = Ws::open(s.addr());
    let _ = ws.send(&client_frame(true, TEXT, big.as_bytes(), true));
    assert_eq!(ws.expect_close_and_eof().0, 1009);
    // Two fragments under the limit each, over it together.
    let mut ws = Ws::open(s.addr());
    let (a, b) = big.as_bytes().split_at(big.len() / 2);
    let _ = ws.send(&client_frame(false, TEXT, a, true));
    let _ = ws.send(&client_frame(true, CONT, b, true));
    assert_eq!(ws.expect_close_and_eof().0, 1009);
    // A message just under the limit is fine.
    let mut ws = Ws::open(s.addr());
    let ok = json!({"id": 1, "connect": {"token": token("u"), "data": {"pad": "x".repeat(600)}}}).to_string();
    assert!(ok.len() < 1024);
    ws.send_json(&serde_json::from_str::<Value>(&ok).unwrap());
    assert!(ws.reply(1)["connect"]["client"].is_string());
    assert_serving(&mut s);
}

#[test]
fn invalid_utf8_text_closes_1007() {
    let mut s = Server::start(abuse_config(json!({})));
    let mut ws = Ws::open(s.addr());
    ws.send(&client_frame(true, TEXT, b"{\"id\":1,\"connect\":{\"token\":\"\xff\xfe\"}}", true))
        .expect("write to the server");
    assert_eq!(ws.expect_close_and_eof().0, 1007);
    // UTF-8 split across fragments is valid; broken across them is not.
    let mut ws = Ws::open(s.addr());
    ws.connect(&token("u"));
    let snow = "☃".as_bytes();
    ws.send(&client_frame(false, TEXT, &snow[..1], true)).expect("write to the server");
    ws.send(&client_frame(true, CONT, &[0x41, 0x42], true)).expect("write to the server");
    assert_eq!(ws.expect_close_and_eof().0, 1007);
    assert_serving(&mut s);
}

#[test]
fn garbage_first_message_closes_3501() {
    let mut s = Server::start(abuse_config(json!({})));
    for garbage in [&b"this is not json{"[..], b"{\"id\":1,\"connect\":", b"[1,2,3]", b"\n"] {
        let mut ws = Ws::open(s.addr());
        ws.send(&client_frame(true, TEXT, garbage, true)).expect("write to the server");
        let (code, reason) = ws.expect_close_and_eof();
        assert_eq!((code, reason.as_str()), (3501, "bad request"), "for {:?}", String::from_utf8_lossy(garbage));
    }
    // A binary frame on a JSON connection.
    let mut ws = Ws::open(s.addr());
    ws.send(&client_frame(true, BINARY, b"\x0a\x00", true)).expect("write to the server");
    assert_eq!(ws.expect_close_and_eof().0, 3501);
    assert_serving(&mut s);
}

#[test]
fn token_signed_with_another_key_closes_3500() {
    let mut s = Server::start(abuse_config(json!({})));
    let mut ws = Ws::open(s.addr());
    let bad = jwt("another-key", json!({"sub": "u", "exp": 4_000_000_000u64}));
    ws.send_json(&json!({"id": 1, "connect": {"token": bad}}));
    assert_eq!(ws.expect_close_and_eof(), (3500, "invalid token".to_string()));
    // Not a JWT at all.
    let mut ws = Ws::open(s.addr());
    ws.send_json(&json!({"id": 1, "connect": {"token": "abc.def.ghi"}}));
    assert_eq!(ws.expect_close_and_eof().0, 3500);
    assert_serving(&mut s);
}

#[test]
fn first_command_not_connect_closes_3501() {
    let mut s = Server::start(abuse_config(json!({})));
    for cmd in [
        json!({"id": 1, "subscribe": {"channel": "feed:x"}}),
        json!({"id": 1, "publish": {"channel": "feed:x", "data": {}}}),
        json!({"id": 1, "presence": {"channel": "feed:x"}}),
        json!({}),
    ] {
        let mut ws = Ws::open(s.addr());
        ws.send_json(&cmd);
        assert_eq!(ws.expect_close_and_eof(), (3501, "bad request".to_string()), "first command {cmd}");
    }
    // A ping control frame before connect is answered, not an error.
    let mut ws = Ws::open(s.addr());
    ws.send(&client_frame(true, PING, b"hi", true)).expect("write to the server");
    let f = ws.frame().expect("pong");
    assert_eq!((f.op, f.payload.as_slice()), (0xA, &b"hi"[..]));
    ws.connect(&token("u"));
    assert_serving(&mut s);
}

/// The first server ping comes at a random point in [interval/2, interval) after connect
/// (Centrifugo; the JS SDK closes a connection that sees no ping within interval + 10 s).
#[test]
fn first_server_ping_within_the_interval() {
    let s = Server::start(abuse_config(json!({"client": {"ping_interval": "2s", "pong_timeout": "1s"}})));
    let mut ws = Ws::open(s.addr());
    let r = ws.connect(&token("pinged"));
    assert_eq!(r["connect"]["ping"], 2, "{r}");
    assert_eq!(r["connect"]["pong"], true, "{r}");
    let start = Instant::now();
    ws.s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let msgs = ws.messages();
    let first = start.elapsed();
    assert_eq!(msgs, vec![json!({})], "expected a ping");
    assert!(first < Duration::from_millis(2500), "first ping after {first:?}, ping_interval is 2 s");
    // Answer it; the next one comes one interval later.
    ws.send_json(&json!({}));
    let msgs = ws.messages();
    let second = start.elapsed() - first;
    assert_eq!(msgs, vec![json!({})]);
    assert!(
        second > Duration::from_millis(1500) && second < Duration::from_millis(2500),
        "second ping after {second:?}"
    );
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// A client that stops reading.
// ---------------------------------------------------------------------------------------------

const SLOW_TOTAL: usize = 10_000;
const SLOW_BATCH: usize = 200;

/// Reads every frame of `ws` and counts the publications in them until `SLOW_TOTAL` arrived
/// or the connection ends; returns the `n` of each publication in arrival order, and the
/// connection (kept open).
fn read_publications(mut ws: Ws, count: Arc<AtomicUsize>) -> (Vec<i64>, Ws) {
    let mut ns = Vec::with_capacity(SLOW_TOTAL);
    while ns.len() < SLOW_TOTAL {
        let f = match ws.frame() {
            Ok(f) => f,
            Err(e) => panic!("the reading client lost its connection after {} publications: {e}", ns.len()),
        };
        match f.op {
            TEXT => {
                for m in json_lines(&f.payload) {
                    if m == json!({}) {
                        ws.send_json(&json!({}));
                        continue;
                    }
                    let n = m["push"]["pub"]["data"]["n"].as_i64().unwrap_or_else(|| panic!("unexpected message {m}"));
                    ns.push(n);
                }
                count.store(ns.len(), Ordering::Release);
            }
            CLOSE => panic!("the reading client was closed after {} publications: {:?}", ns.len(), f.payload),
            _ => {}
        }
    }
    (ns, ws)
}

#[test]
fn slow_client_is_disconnected_while_others_get_everything() {
    let cfg = abuse_config(json!({"client": {"queue_max_size": 1_048_576}}));
    let s = Server::start(cfg);

    let mut slow = Ws::open_small_rcvbuf(s.addr());
    slow.connect(&token("slow"));
    slow.subscribe(2, "feed:x");
    let mut normal = Ws::open(s.addr());
    normal.connect(&token("normal"));
    normal.subscribe(2, "feed:x");

    let info = s.api("info", json!({}));
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 2, "{info}");

    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        std::thread::spawn(move || read_publications(normal, received))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss, pid) = (stop.clone(), max_rss.clone(), s.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                max_rss.fetch_max(rss_kb(pid), Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let rss_before = s.rss_kb();

    // 10,000 publications of ~1 KiB, in batches; the next batch waits for the reading client
    // to have received the one before, so only the slow client falls behind.
    let pad = "p".repeat(1000);
    let started = Instant::now();
    for batch in 0..SLOW_TOTAL / SLOW_BATCH {
        let first = batch * SLOW_BATCH + 1;
        let commands: Vec<Value> = (first..first + SLOW_BATCH)
            .map(|n| json!({"publish": {"channel": "feed:x", "data": {"n": n, "pad": pad}}}))
            .collect();
        let r = s.api("batch", json!({"commands": commands}));
        let replies = r["replies"].as_array().unwrap_or_else(|| panic!("batch reply: {r}"));
        assert_eq!(replies.len(), SLOW_BATCH);
        assert!(replies.iter().all(|x| x.get("error").is_none()), "batch {batch}: {r}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while received.load(Ordering::Acquire) < first - 1 {
            assert!(Instant::now() < deadline, "the reading client is stuck at {}", received.load(Ordering::Acquire));
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let published_in = started.elapsed();

    // The slow client is gone on the server side within a few seconds...
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = s.api("info", json!({}));
        if info["result"]["nodes"][0]["num_clients"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the slow client is still connected 5 s after publishing: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and its socket is closed: what is buffered for it ends in EOF (or a reset) within a
    // few seconds. (Its bytes are not parsed here: the close frame may be missing, and the
    // integrity of a stream under back-pressure is `paused_reader_gets_an_intact_stream`.)
    let mut slow_bytes = slow.buf.len();
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    let mut tmp = vec![0u8; 1 << 16];
    loop {
        assert!(Instant::now() < drain_deadline, "the slow client's socket was not closed within 10 s");
        slow.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match slow.s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => slow_bytes += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                panic!("the slow client's socket is still open ({slow_bytes} bytes read)")
            }
            Err(_) => break, // reset
        }
    }
    assert!(slow_bytes < SLOW_TOTAL * 1000, "the slow client must not have received everything ({slow_bytes} bytes)");

    // The reading client got everything, in order.
    let (ns, _normal) = reader.join().expect("reader thread");
    assert_eq!(ns.len(), SLOW_TOTAL);
    assert!(ns.iter().zip(1..).all(|(&n, i)| n == i), "publications out of order or missing");

    stop.store(true, Ordering::Release);
    sampler.join().unwrap();
    let max = max_rss.load(Ordering::Acquire);
    assert_no_panic(&s);
    eprintln!(
        "slow client: published {SLOW_TOTAL} in {published_in:?}; the slow client got {slow_bytes} bytes before \
         the close; server RSS {rss_before} KiB before, max {max} KiB"
    );
    assert!(max < 100 * 1024, "server RSS grew to {max} KiB");
}

/// A client that stops reading for a while (its socket buffers fill, so the server's writes
/// are partial) and then reads again must get every frame intact and in order, as long as
/// its queue stays under `client.queue_max_size`.
#[test]
fn paused_reader_gets_an_intact_stream() {
    const TOTAL: usize = 3000;
    let cfg = abuse_config(json!({"client": {"queue_max_size": 64 << 20}}));
    let s = Server::start(cfg);
    let mut ws = Ws::open_small_rcvbuf(s.addr());
    ws.connect(&token("paused"));
    ws.subscribe(2, "feed:p");
    // ~3 MB while the client does not read: more than the socket buffers hold.
    let pad = "q".repeat(1000);
    for batch in 0..TOTAL / 500 {
        let first = batch * 500 + 1;
        let commands: Vec<Value> = (first..first + 500)
            .map(|n| json!({"publish": {"channel": "feed:p", "data": {"n": n, "pad": pad}}}))
            .collect();
        let r = s.api("batch", json!({"commands": commands}));
        assert!(r["replies"].as_array().is_some_and(|v| v.iter().all(|x| x.get("error").is_none())), "{r}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut ns: Vec<i64> = Vec::with_capacity(TOTAL);
    while ns.len() < TOTAL {
        let f = ws.frame().unwrap_or_else(|e| panic!("connection lost after {} publications: {e}", ns.len()));
        match f.op {
            TEXT => {
                for m in json_lines(&f.payload) {
                    match m["push"]["pub"]["data"]["n"].as_i64() {
                        Some(n) => {
                            assert_eq!(m["push"]["pub"]["data"]["pad"], pad.as_str(), "publication {n} damaged");
                            ns.push(n)
                        }
                        None => assert_eq!(m, json!({}), "unexpected message"),
                    }
                }
            }
            CLOSE => panic!("closed after {} publications: {:?}", ns.len(), String::from_utf8_lossy(&f.payload)),
            op => panic!("unexpected frame opcode {op}"),
        }
    }
    assert!(ns.iter().zip(1..).all(|(&n, i)| n == i), "publications out of order or missing");
    assert_no_panic(&s);
}

/// A token's `subs` entry with `override` values: they win over the namespace options for that
/// server-side subscription (here: recovery and positioning forced on a namespace without them).
#[test]
fn token_subs_overrides_apply() {
    let s = Server::start(abuse_config(json!({
        "channel": {"namespaces": [{"name": "hist", "history_size": 10, "history_ttl": "60s"}]}
    })));
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({
        "sub": "ov",
        "exp": exp,
        "subs": {
            "hist:forced": {"override": {"force_recovery": {"value": true}}},
            "hist:plain": {}
        }
    });
    let mut ws = Ws::open(s.addr());
    let r = ws.connect(&jwt(SECRET, claims));
    let subs = &r["connect"]["subs"];
    assert_eq!(subs["hist:forced"]["recoverable"], true, "{r}");
    assert_eq!(subs["hist:forced"]["positioned"], true, "{r}");
    assert!(subs["hist:forced"]["epoch"].is_string(), "{r}");
    assert!(subs["hist:plain"].get("recoverable").is_none(), "{r}");
}
