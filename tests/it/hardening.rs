//! Abuse and fault tests on real sockets against the real `gyre` binary: slowloris heads and
//! bodies, idle and half-open connections, connect/disconnect cycles (fd and memory leaks),
//! clients killed mid-frame, deeply nested JSON, invalid UTF-8, a flooding client, a
//! publisher faster than its subscribers, the configured limits, and graceful shutdown.
//!
//! Every test ends by checking that the server still serves and never panicked; each prints
//! what it measured (`--nocapture`). Counts are sized for debug builds on two cores;
//! `GYRE_HARDENING_SCALE=N` multiplies the connect/disconnect cycles. The figures in
//! RELIABILITY.md come from a release server:
//! `GYRE_TEST_BIN=$PWD/target/release/gyre cargo test --test it hardening -- --nocapture`.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "hardening-secret-0123456789";

/// `GYRE_HARDENING_SCALE` (default 1): multiplies the counts of the big tests.
fn scale() -> usize {
    std::env::var("GYRE_HARDENING_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

fn cfg(patch: Value) -> Value {
    let mut c = json!({
        "http_api": {"key": KEY},
        "health": {"enabled": true},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [
            {"name": "feed", "allow_subscribe_for_client": true, "allow_publish_for_client": true},
            {"name": "pres", "presence": true, "join_leave": true, "allow_subscribe_for_client": true},
            {"name": "hist", "history_size": 100000, "history_ttl": "300s", "allow_subscribe_for_client": true}
        ]},
        "workers": 2
    });
    merge(&mut c, patch);
    c
}

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    jwt(SECRET, json!({"sub": user, "exp": exp}))
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The open file descriptors of a process once the count has stayed the same for 250 ms (at
/// most 5 s): a baseline taken right after start-up must not miss the engine's connections
/// still being opened (two per worker on the Redis engine).
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

/// `num_clients` of the node (`info`).
fn num_clients(s: &Server) -> u64 {
    let info = s.api("info", json!({}));
    info["result"]["nodes"][0]["num_clients"].as_u64().unwrap_or_else(|| panic!("info: {info}"))
}

/// Polls `f` every 20 ms until it is true; panics with `what` after `within`.
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// No worker panicked and the server answers.
fn assert_healthy(s: &mut Server) {
    s.assert_alive();
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// The `p`-th percentile (0..=100) of sorted durations.
fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}

// ---------------------------------------------------------------------------------------------
// Centrifugo commands over the raw WebSocket client of `ws_client`.
// ---------------------------------------------------------------------------------------------

trait Commands {
    fn reply(&mut self, id: u64) -> Value;
    fn connect(&mut self, user: &str) -> Value;
    fn subscribe(&mut self, id: u64, channel: &str) -> Value;
}

impl Commands for Ws {
    /// Reads until the reply to `id` (pings answered, pushes skipped).
    fn reply(&mut self, id: u64) -> Value {
        loop {
            let f = self.frame().unwrap_or_else(|e| panic!("waiting for reply {id}: {e}"));
            if f.op == CLOSE {
                panic!("closed while waiting for reply {id}: {:?}", f.close());
            }
            for m in json_lines(&f.payload) {
                if m == json!({}) {
                    self.send_json(&json!({}));
                } else if m["id"] == id {
                    return m;
                }
            }
        }
    }

    fn connect(&mut self, user: &str) -> Value {
        self.send_json(&json!({"id": 1, "connect": {"token": token(user)}}));
        let r = self.reply(1);
        assert!(r["connect"]["client"].is_string(), "connect: {r}");
        r
    }

    fn subscribe(&mut self, id: u64, channel: &str) -> Value {
        self.send_json(&json!({"id": id, "subscribe": {"channel": channel}}));
        self.reply(id)
    }
}

/// A fresh client connects and gets a reply: WebSocket clients are still served.
fn assert_ws_serving(s: &Server) {
    let mut ws = Ws::open(s.addr());
    ws.connect("probe");
}

// ---------------------------------------------------------------------------------------------
// Slowloris: heads and bodies trickled a byte at a time.
// ---------------------------------------------------------------------------------------------

/// 100 connections trickle a request head one byte at a time and never finish it, 100 more
/// send a head and trickle the body. Meanwhile other clients are served at normal speed.
/// What happens to the slow connections: nothing — there is no head or body read timeout, so
/// each stays open holding one socket and its (bounded) read buffer, and is answered normally
/// when its request completes. A trickled head that passes `http_server.max_head_size` gets
/// 431 as soon as it does.
#[test]
fn slowloris_heads_and_bodies_do_not_stall_others() {
    let mut s = Server::start(cfg(json!({"http_server": {"max_head_size": 4096}})));
    let addr = s.addr();
    let fds_before = settled_fd_count(s.pid());
    let slow_head = SLOW_HEAD.to_vec();
    let body = br#"{"channel":"hist:slow","data":{"slow":true}}"#;
    let slow_body_head =
        format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut heads: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut bodies: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for b in &mut bodies {
        b.write_all(slow_body_head.as_bytes()).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    // One thread trickles a byte to every slow connection every 100 ms.
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                for h in &mut heads {
                    let b = if i < slow_head.len() { slow_head[i] } else { b'a' };
                    h.write_all(&[b]).expect("a slow head connection was closed by the server");
                }
                for b in &mut bodies {
                    // Never the whole body: the last byte is kept back.
                    if i + 1 < body.len() {
                        b.write_all(&[body[i]]).expect("a slow body connection was closed by the server");
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (heads, bodies, i)
        })
    };
    // Normal traffic meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let mut lat = Vec::new();
    for n in 0..60 {
        let t = Instant::now();
        let r = s.api("publish", json!({"channel": "feed:fast", "data": {"n": n}}));
        lat.push(t.elapsed());
        assert!(r.get("error").is_none(), "{r}");
        let mut ws = Ws::open(addr);
        ws.connect("fast");
        std::thread::sleep(Duration::from_millis(30));
    }
    lat.sort();
    stop.store(true, Ordering::Release);
    let (heads, mut bodies, ticks) = trickler.join().expect("the slow connections stayed open");
    eprintln!(
        "slowloris: 200 slow connections held for {ticks} ticks of 100 ms; API latency meanwhile p50 {:?} max {:?}; \
         server fds {fds_before} -> {}",
        pct(&lat, 50),
        pct(&lat, 100),
        fd_count(s.pid())
    );
    assert!(pct(&lat, 100) < Duration::from_secs(2), "API requests stalled behind slow connections: {lat:?}");
    // The slow bodies finish: each publish is answered and ran.
    for b in &mut bodies {
        b.write_all(&body[ticks.min(body.len() - 1)..]).unwrap();
    }
    for mut b in bodies {
        assert_eq!(read_status(&mut b), 200, "a slow body, once complete, is answered");
    }
    let h = s.api("history", json!({"channel": "hist:slow", "limit": 0}));
    assert_eq!(h["result"]["offset"], 100, "every slow publish ran: {h}");
    // A slow head that grows past max_head_size gets 431.
    let mut h0 = heads.into_iter().next().unwrap();
    let _ = h0.write_all(&slow_head_rest(ticks));
    let _ = h0.write_all(&vec![b'a'; 5000]);
    assert_eq!(read_status(&mut h0), 431);
    assert_healthy(&mut s);
}

const SLOW_HEAD: &[u8] = b"POST /api/info HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\nX-Slow: ";

/// What a slow head connection has not sent yet of [`SLOW_HEAD`] after `ticks` bytes.
fn slow_head_rest(ticks: usize) -> Vec<u8> {
    SLOW_HEAD[ticks.min(SLOW_HEAD.len())..].to_vec()
}

/// Reads a response head from `s` and returns its status.
fn read_status(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => buf.push(b[0]),
            other => panic!("reading a response head: {other:?} after {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"))
}

// ---------------------------------------------------------------------------------------------
// Idle and half-open connections.
// ---------------------------------------------------------------------------------------------

/// 1,000 TCP connections that never send a byte do not stop new clients being served (they
/// stay open: there is no idle timeout before the first request). WebSocket clients that
/// connected and then vanished without a FIN (simulated: they never read and never answer a
/// ping) are found by the server's pings and closed with 3012 "no pong"; their presence and
/// subscriptions go with them.
#[test]
fn idle_and_half_open_connections() {
    let mut s = Server::start(cfg(json!({"client": {"ping_interval": "2s", "pong_timeout": "1s"}})));
    let addr = s.addr();
    let pid = s.pid();
    let fds_before = settled_fd_count(pid);
    let idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    // (`fds_before` may still count the start-up probe's connection.)
    wait_until("the server accepted the idle connections", Duration::from_secs(10), || {
        fd_count(pid) >= fds_before + 999
    });
    let t = Instant::now();
    for n in 0..20 {
        let r = s.api("publish", json!({"channel": "feed:idle", "data": n}));
        assert!(r.get("error").is_none(), "{r}");
    }
    assert_ws_serving(&s);
    let served_in = t.elapsed();

    let mut ghosts = Vec::new();
    for i in 0..20 {
        let mut ws = Ws::open(addr);
        ws.connect(&format!("ghost{i}"));
        let r = ws.subscribe(2, "pres:ghosts");
        assert!(r.get("subscribe").is_some(), "{r}");
        ghosts.push(ws);
    }
    let stats = s.api("presence_stats", json!({"channel": "pres:ghosts"}));
    assert_eq!(stats["result"]["num_clients"], 20, "{stats}");
    let t = Instant::now();
    wait_until("the silent clients are closed", Duration::from_secs(10), || num_clients(&s) == 0);
    let found_in = t.elapsed();
    let stats = s.api("presence_stats", json!({"channel": "pres:ghosts"}));
    assert_eq!(stats["result"]["num_clients"], 0, "{stats}");
    for mut g in ghosts {
        assert_eq!(g.expect_close(Duration::from_secs(5)), (3012, "no pong".to_string()));
    }
    // The idle connections are still open.
    let mut probe = idle.into_iter().collect::<Vec<_>>();
    probe[0].set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let r = probe[0].read(&mut [0u8; 16]);
    assert!(
        matches!(&r, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "an idle connection was closed: {r:?}"
    );
    drop(probe);
    // A few descriptors an event loop opens on first use (e.g. a wake-up fd) may appear after
    // `fds_before` was taken; a leak of the 1000 sockets would show far above that slack.
    let slack = 8;
    wait_until(
        &format!("the idle connections' sockets are closed (fds {} now, {fds_before} before)", fd_count(pid)),
        Duration::from_secs(20),
        || fd_count(pid) <= fds_before + slack,
    );
    eprintln!(
        "idle: 1000 idle connections open, 20 publishes + a WebSocket connect served in {served_in:?}; \
         20 silent WebSocket clients closed (3012) {found_in:?} after they went quiet"
    );
    assert_healthy(&mut s);
}

// ---------------------------------------------------------------------------------------------
// Connect/disconnect cycles.
// ---------------------------------------------------------------------------------------------

/// `n` WebSocket sessions over `threads` threads: upgrade, connect, subscribe to a presence
/// channel, then leave in one of four ways (close handshake, FIN, RST, half-close).
fn run_cycles(addr: SocketAddr, n: usize, threads: usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let tok = token(&format!("cyc{t}"));
                let connect = json!({"id": 1, "connect": {"token": tok}}).to_string();
                for i in 0..n / threads {
                    let mut ws = Ws::open(addr);
                    ws.send(&client_frame(true, TEXT, connect.as_bytes(), true)).unwrap();
                    let r = ws.reply(1);
                    assert!(r["connect"]["client"].is_string(), "{r}");
                    let r = ws.subscribe(2, &format!("pres:cyc{}", i % 8));
                    assert!(r.get("subscribe").is_some(), "{r}");
                    match i % 4 {
                        0 => {
                            let mut payload = 1000u16.to_be_bytes().to_vec();
                            payload.extend_from_slice(b"bye");
                            ws.send(&client_frame(true, CLOSE, &payload, true)).unwrap();
                            let (code, _) = ws.expect_close(Duration::from_secs(10));
                            assert_eq!(code, 1000);
                        }
                        1 => drop(ws),
                        2 => {
                            let sock = socket2::Socket::from(ws.s);
                            sock.set_linger(Some(Duration::ZERO)).unwrap();
                            drop(sock);
                        }
                        _ => {
                            ws.s.shutdown(std::net::Shutdown::Write).unwrap();
                            drop(ws);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a cycling thread failed");
    }
}

/// Connect/disconnect cycles leave no descriptor, session, presence entry or memory behind:
/// the server's open descriptors return to exactly where they were and its RSS stays within
/// a bound.
#[test]
fn ws_connect_disconnect_cycles_leak_nothing() {
    let cycles = 10_000 * scale();
    let mut s = Server::start(cfg(json!({})));
    let (addr, pid) = (s.addr(), s.pid());
    // Warm-up: slabs and allocator pools reach their working size.
    run_cycles(addr, 200, 4);
    wait_until("warm-up sessions are gone", Duration::from_secs(10), || num_clients(&s) == 0);
    let (fds0, rss0) = (settled_fd_count(pid), s.rss_kb());
    let t = Instant::now();
    run_cycles(addr, cycles, 4);
    let took = t.elapsed();
    wait_until("every session is gone", Duration::from_secs(10), || num_clients(&s) == 0);
    wait_until("every socket is closed", Duration::from_secs(10), || fd_count(pid) <= fds0);
    let rss1 = s.rss_kb();
    for i in 0..8 {
        let p = s.api("presence_stats", json!({"channel": format!("pres:cyc{i}")}));
        assert_eq!(p["result"]["num_clients"], 0, "presence left behind: {p}");
    }
    eprintln!(
        "cycles: {cycles} WebSocket connect/subscribe/disconnect cycles in {took:?} ({:.0}/s); server fds {fds0} -> {}; \
         RSS {rss0} KiB -> {rss1} KiB",
        cycles as f64 / took.as_secs_f64(),
        fd_count(pid)
    );
    assert!(rss1 < rss0 + 16 * 1024, "RSS grew from {rss0} KiB to {rss1} KiB over {cycles} cycles");
    assert_healthy(&mut s);
}

// ---------------------------------------------------------------------------------------------
// Clients killed mid-frame.
// ---------------------------------------------------------------------------------------------

/// Clients that die in the middle of a frame (header cut, payload cut, mask cut, a fragmented
/// message cut between fragments, a control frame cut), before connect, after connect and
/// after subscribing, by FIN or by RST. No session or socket is left behind and a subscriber
/// of the same channel keeps receiving throughout.
#[test]
fn clients_killed_mid_frame() {
    let mut s = Server::start(cfg(json!({})));
    let (addr, pid) = (s.addr(), s.pid());
    let mut watcher = Ws::open(addr);
    watcher.connect("watcher");
    watcher.subscribe(2, "feed:mid");
    let fds0 = settled_fd_count(pid);

    let cmd = json!({"id": 3, "publish": {"channel": "feed:mid", "data": {"x": "y".repeat(300)}}}).to_string();
    let full = client_frame(true, TEXT, cmd.as_bytes(), true);
    let big = client_frame(true, TEXT, &vec![b' '; 70_000], true);
    let mut frag = client_frame(false, TEXT, &cmd.as_bytes()[..100], true);
    frag.extend_from_slice(&client_frame(true, CONT, &cmd.as_bytes()[100..], true)[..20]);
    let cuts: Vec<(&str, Vec<u8>)> = vec![
        ("one header byte", full[..1].to_vec()),
        ("header without mask key", full[..4].to_vec()),
        ("mask key cut", full[..6].to_vec()),
        ("payload cut", full[..full.len() / 2].to_vec()),
        ("64-bit length cut", big[..5].to_vec()),
        ("between fragments", client_frame(false, TEXT, &cmd.as_bytes()[..100], true)),
        ("continuation cut", frag),
        ("close frame cut", client_frame(true, CLOSE, &[0x03, 0xe8, b'x', b'y'], true)[..5].to_vec()),
        ("ping cut", client_frame(true, PING, b"0123456789", true)[..8].to_vec()),
    ];
    let mut n = 0;
    for (what, bytes) in &cuts {
        for stage in 0..3 {
            for rst in [false, true] {
                let mut ws = Ws::open(addr);
                if stage >= 1 {
                    ws.connect(&format!("mid{n}"));
                }
                if stage >= 2 {
                    ws.subscribe(2, "feed:mid");
                }
                ws.send(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
                if rst {
                    socket2::Socket::from(ws.s).set_linger(Some(Duration::ZERO)).unwrap();
                } else {
                    drop(ws);
                }
                n += 1;
            }
        }
    }
    wait_until("every killed client is gone", Duration::from_secs(10), || num_clients(&s) == 1);
    wait_until("every killed client's socket is closed", Duration::from_secs(10), || fd_count(pid) <= fds0);
    let r = s.api("publish", json!({"channel": "feed:mid", "data": {"after": n}}));
    assert!(r.get("error").is_none(), "{r}");
    loop {
        let f = watcher.frame().expect("the watcher is still connected");
        if json_lines(&f.payload).iter().any(|m| m["push"]["pub"]["data"]["after"] == n) {
            break;
        }
    }
    eprintln!("mid-frame: {n} clients killed mid-frame; server fds back to {}", fd_count(pid));
    assert_healthy(&mut s);
}

// ---------------------------------------------------------------------------------------------
// Deeply nested JSON and invalid UTF-8.
// ---------------------------------------------------------------------------------------------

/// An HTTP API error: either the status (transport) or `{"error":{"code":..}}` in a 200.
fn api_error_code(r: &Response) -> Option<u64> {
    if r.status != 200 {
        return Some(r.status as u64);
    }
    serde_json::from_slice::<Value>(&r.body).ok()?.get("error")?.get("code")?.as_u64()
}

/// 100,000 levels of `[` in every place JSON is read. Unterminated, it is refused in its
/// place with the ordinary bad-request answer (400/107, the legacy line alone, 3501, 3500,
/// gateway 101). Terminated (valid JSON), it is refused wherever the server builds a value
/// from it (JWT claims, command params, gateway params: parsers stop at a depth of 128) and
/// accepted where it is an opaque payload (`data` is kept as raw bytes, never parsed into a
/// tree): such a publication reaches a subscriber intact. Nothing else is affected.
#[test]
fn deeply_nested_json_is_refused_cleanly() {
    let mut s = Server::start(cfg(json!({
        "websocket": {"message_size_limit": 1_048_576},
        "gateway": {"servers": [{"path": "/raw", "topic": "raw"}], "api_port": 0}
    })));
    let mut watcher = Ws::open(s.addr());
    watcher.connect("watcher");
    watcher.subscribe(2, "feed:deep");
    let open = "[".repeat(100_000);
    let closed = format!("{}{}", open, "]".repeat(100_000));
    for (valid, deep) in [(false, &open), (true, &closed)] {
        let kind = if valid { "terminated" } else { "unterminated" };
        // New-style API: as `data` (opaque), as a whole body, as a field the server parses.
        let body = format!(r#"{{"channel":"feed:deep","data":{deep}}}"#);
        let r = s.post("/api/publish", body.as_bytes(), &[("X-API-Key", KEY)]);
        let code = api_error_code(&r);
        if valid {
            assert_eq!(code, None, "{kind}: deep data is a payload: {} {:?}", r.status, r.text());
            // (The frame is too deep for serde_json: it is checked as bytes.)
            let want = format!(r#"{{"push":{{"channel":"feed:deep","pub":{{"data":{deep}"#);
            loop {
                let f = watcher.frame().expect("the deep publication");
                if f.payload.len() > 100_000 {
                    assert!(f.payload.starts_with(want.as_bytes()), "the deep publication arrived damaged");
                    break;
                }
            }
        } else {
            assert!(matches!(code, Some(107) | Some(400)), "{kind}: /api/publish answered {} {:?}", r.status, r.text());
        }
        for body in [
            deep.clone(),
            format!(r#"{{"channel":{deep},"data":1}}"#),
            format!(r#"{{"channel":"feed:deep","tags":{deep}}}"#),
        ] {
            let r = s.post("/api/publish", body.as_bytes(), &[("X-API-Key", KEY)]);
            assert!(matches!(api_error_code(&r), Some(107) | Some(400)), "{kind}: {} {:?}", r.status, r.text());
        }
        // Legacy: only the deep line fails (deep params), or runs (deep data).
        let params = format!(r#"{{"id":2,"method":"publish","params":{deep}}}"#);
        let body = [publish_line(1, "feed:deep", "1"), params, publish_line(3, "feed:deep", deep)].join("\n");
        let replies = s.legacy(body.as_bytes()).lines();
        assert_eq!(replies.len(), 3, "{kind}");
        assert!(replies[0].get("error").is_none(), "{replies:?}");
        assert_eq!(replies[1]["error"]["code"], 107, "{kind}: deep params");
        assert_eq!(replies[2].get("error").is_none(), valid, "{kind}: deep data in a legacy line: {:?}", replies[2]);
        // WebSocket: deep connect params before connect, a deep publish after it.
        let mut ws = Ws::open(s.addr());
        ws.send(&client_frame(true, TEXT, format!(r#"{{"id":1,"connect":{deep}}}"#).as_bytes(), true)).unwrap();
        assert_eq!(ws.expect_close(Duration::from_secs(10)).0, 3501, "{kind}: deep connect");
        let mut ws = Ws::open(s.addr());
        ws.connect("deep");
        ws.send(&client_frame(true, TEXT, format!(r#"{{"id":2,"subscribe":{deep}}}"#).as_bytes(), true)).unwrap();
        assert_eq!(ws.expect_close(Duration::from_secs(10)).0, 3501, "{kind}: deep subscribe params");
        // In a token's claims (signed with the right key).
        let tok = sign_raw(&format!(r#"{{"sub":"deep","info":{deep}}}"#));
        let mut ws = Ws::open(s.addr());
        ws.send_json(&json!({"id": 1, "connect": {"token": tok}}));
        assert_eq!(ws.expect_close(Duration::from_secs(10)).0, 3500, "{kind}: deep claims");
        // Gateway mesh API.
        let r =
            s.post("/v1/mesh/publish", format!(r#"{{"c":"feed:deep","d":{deep}}}"#).as_bytes(), &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["E"]["c"], 101, "{kind}: mesh publish {}", r.text());
    }
    assert_healthy(&mut s);
    assert_ws_serving(&s);
}

/// A JWT signed with the test key over `claims` given as raw JSON text (valid JSON or not).
fn sign_raw(claims: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!("{}.{}", b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#), b64.encode(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).expect("HMAC");
    format!("{input}.{sig}")
}

/// A length-delimited protobuf field (wire type 2).
fn pb_field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    pb_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn pb_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One length-prefixed protobuf `Command` with `id` and one request field.
fn pb_command(id: u8, field: u8, request: &[u8]) -> Vec<u8> {
    let mut cmd = vec![0x08, id];
    cmd.extend(pb_field(field, request));
    let mut out = Vec::new();
    pb_varint(cmd.len() as u64, &mut out);
    out.extend(cmd);
    out
}

/// Publish lines and `batch` bodies cut short at every byte (a client that sends a partial
/// line): each is refused in its place (the legacy line alone with 107; the batch with 400 or
/// 107) and nothing panics. Cut right after `"skip_history":`, the hand-written reader once
/// read past the end of the line and took its worker down.
#[test]
fn api_lines_and_batches_cut_anywhere_are_refused_in_place() {
    let mut s = Server::start(cfg(json!({})));
    let line = br#"{"id":2,"method":"publish","params":{"channel":"feed:c","data":{"a":[1,"x"]},"skip_history":true}}"#;
    for end in 1..line.len() {
        let mut body = publish_line(1, "feed:c", "1").into_bytes();
        body.push(b'\n');
        body.extend_from_slice(&line[..end]);
        body.push(b'\n');
        body.extend(publish_line(3, "feed:c", "3").into_bytes());
        let replies = s.legacy(&body).lines();
        assert_eq!(replies.len(), 3, "cut at {end}: {replies:?}");
        assert_eq!(replies[1]["error"]["code"], 107, "cut at {end}: {replies:?}");
        assert!(replies[0].get("error").is_none() && replies[2].get("error").is_none(), "{replies:?}");
    }
    let batch = br#"{"commands":[{"publish":{"channel":"feed:c","data":1,"skip_history":false}},{"publish":{"channel":"feed:d","data":[2]}}],"parallel":false}"#;
    for end in 1..batch.len() {
        let r = s.post("/api/batch", &batch[..end], &[("X-API-Key", KEY)]);
        assert!(matches!(api_error_code(&r), Some(107) | Some(400)), "cut at {end}: {} {:?}", r.status, r.text());
    }
    let r = s.post("/api/batch", batch, &[("X-API-Key", KEY)]);
    assert_eq!(r.text(), r#"{"replies":[{"publish":{}},{"publish":{}}]}"#);
    assert_healthy(&mut s);
}

/// Invalid UTF-8 (bad bytes, truncated sequences, encoded surrogates, overlong forms) in API
/// bodies, legacy lines, request heads, WebSocket text frames and protobuf string fields:
/// each is refused in its place (107 / 400, the legacy line alone, 1007, 3501), and a
/// subscriber never receives a text frame that is not UTF-8.
#[test]
fn invalid_utf8_is_refused_cleanly() {
    let mut s = Server::start(cfg(json!({})));
    let addr = s.addr();
    let mut watcher = Ws::open(addr);
    watcher.connect("watcher");
    watcher.subscribe(2, "feed:u");
    let bad: [&[u8]; 4] = [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"];
    for b in bad {
        // New-style API: in the channel name and inside a data string.
        let mut body = b"{\"channel\":\"feed:u".to_vec();
        body.extend_from_slice(b);
        body.extend_from_slice(b"\",\"data\":1}");
        let r = s.post("/api/publish", &body, &[("X-API-Key", KEY)]);
        assert!(matches!(api_error_code(&r), Some(107) | Some(400)), "channel {b:?}: {} {:?}", r.status, r.text());
        let mut body = b"{\"channel\":\"feed:u\",\"data\":\"".to_vec();
        body.extend_from_slice(b);
        body.extend_from_slice(b"\"}");
        let r = s.post("/api/publish", &body, &[("X-API-Key", KEY)]);
        assert!(matches!(api_error_code(&r), Some(107) | Some(400)), "data {b:?}: {} {:?}", r.status, r.text());
        // Legacy: the bad line alone.
        let mut body = publish_line(1, "feed:u", "1").into_bytes();
        body.extend_from_slice(b"\n{\"id\":2,\"method\":\"publish\",\"params\":{\"channel\":\"feed:u\",\"data\":\"");
        body.extend_from_slice(b);
        body.extend_from_slice(b"\"}}\n");
        body.extend(publish_line(3, "feed:u", "3").into_bytes());
        let replies = s.legacy(&body).lines();
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[1]["error"]["code"], 107, "{replies:?}");
        assert!(replies[0].get("error").is_none() && replies[2].get("error").is_none(), "{replies:?}");
        // Request head: path and header value.
        let mut c = s.connect();
        let mut req = b"GET /health".to_vec();
        req.extend_from_slice(b);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nX-Bad: ");
        req.extend_from_slice(b);
        req.extend_from_slice(b"\r\n\r\n");
        let _ = c.send_lossy(&req);
        let r = c.read_response().expect("a response to a head with invalid UTF-8");
        assert!(r.status == 400 || r.status == 404, "head with {b:?}: {}", r.status);
        // WebSocket JSON text frame after connect.
        let mut ws = Ws::open(addr);
        ws.connect("u8");
        let mut cmd = b"{\"id\":2,\"publish\":{\"channel\":\"feed:u\",\"data\":\"".to_vec();
        cmd.extend_from_slice(b);
        cmd.extend_from_slice(b"\"}}");
        ws.send(&client_frame(true, TEXT, &cmd, true)).unwrap();
        assert_eq!(ws.expect_close(Duration::from_secs(10)).0, 1007, "text frame with {b:?}");
        // Protobuf: a channel (a `string` field) with invalid UTF-8.
        let s2 = TcpStream::connect(addr).unwrap();
        let mut ws =
            Ws::upgrade(s2, "/connection/websocket?format=protobuf", SAMPLE_KEY, &[]).expect("protobuf upgrade");
        ws.send(&client_frame(true, BINARY, &pb_command(1, 4, &pb_field(1, token("pb").as_bytes())), true)).unwrap();
        let f = ws.frame().expect("protobuf connect reply");
        assert_eq!(f.op, BINARY, "{f:?}");
        let mut channel = b"feed:".to_vec();
        channel.extend_from_slice(b);
        ws.send(&client_frame(true, BINARY, &pb_command(2, 5, &pb_field(1, &channel)), true)).unwrap();
        assert_eq!(ws.expect_close(Duration::from_secs(10)).0, 3501, "protobuf channel with {b:?}");
    }
    // The watcher got the good publications, all valid UTF-8.
    let r = s.api("publish", json!({"channel": "feed:u", "data": "end"}));
    assert!(r.get("error").is_none(), "{r}");
    let mut got = 0;
    loop {
        let f = watcher.frame().expect("the watcher is still connected");
        assert_eq!(f.op, TEXT);
        assert!(std::str::from_utf8(&f.payload).is_ok(), "a text frame that is not UTF-8");
        let ms = json_lines(&f.payload);
        got += ms.iter().filter(|m| m.get("push").is_some()).count();
        if ms.iter().any(|m| m["push"]["pub"]["data"] == "end") {
            break;
        }
    }
    assert_eq!(got, 2 * bad.len() + 1, "the watcher's publications");
    assert_healthy(&mut s);
}

// ---------------------------------------------------------------------------------------------
// A flooding client; a publisher faster than its subscribers.
// ---------------------------------------------------------------------------------------------

/// One worker, `client.command_rate_limit` 100/s. One client sends commands as fast as it can
/// (frames of 100 commands) for two seconds: it gets error 111 "too many requests" for what
/// passes its rate, stays connected, and is served again once it slows down. Another client
/// on the same worker measures its command round trips before and during the flood.
#[test]
fn flooding_client_is_limited_and_others_keep_their_latency() {
    const RATE: usize = 100;
    // A large queue: the flooder reads its replies slower than the server writes them, and this
    // test is about the rate limit, not about slow readers.
    let mut s =
        Server::start(cfg(json!({"workers": 1, "client": {"command_rate_limit": RATE, "queue_max_size": 256 << 20}})));
    let addr = s.addr();
    let mut victim = Ws::open(addr);
    victim.connect("victim");
    let rtts = |victim: &mut Ws, n: u64, from: u64| -> Vec<Duration> {
        let mut v = Vec::new();
        for id in from..from + n {
            let t = Instant::now();
            victim.send_json(&json!({"id": id, "publish": {"channel": "feed:victim", "data": id}}));
            let r = victim.reply(id);
            assert!(r.get("error").is_none(), "the victim got {r}");
            v.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        v.sort();
        v
    };
    let before = rtts(&mut victim, 25, 10);

    let mut flooder = Ws::open(addr);
    flooder.connect("flooder");
    let mut writer = flooder.s.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood_started = Instant::now();
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut id = 1000u64;
            while !stop.load(Ordering::Acquire) {
                let frame: Vec<String> = (0..100)
                    .map(|k| json!({"id": id + k, "publish": {"channel": "feed:flood", "data": k}}).to_string())
                    .collect();
                id += 100;
                if writer.write_all(&client_frame(true, TEXT, frame.join("\n").as_bytes(), true)).is_err() {
                    break;
                }
                sent.fetch_add(100, Ordering::Relaxed);
            }
            id
        })
    };
    let counts = {
        let stop = stop.clone();
        let r = flooder.s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut ws = Ws { s: r, buf: Vec::new() };
            let (mut ok, mut limited, mut other) = (0usize, 0usize, 0usize);
            ws.s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            loop {
                match ws.frame() {
                    // Counted without parsing: a debug-build JSON parser would fall behind.
                    Ok(f) if f.op == TEXT => {
                        for m in f.payload.split(|&b| b == b'\n') {
                            if m.starts_with(b"{\"id\":") && m.ends_with(b"\"publish\":{}}") {
                                ok += 1;
                            } else if m.ends_with(
                                b"\"error\":{\"code\":111,\"message\":\"too many requests\",\"temporary\":true}}",
                            ) {
                                limited += 1;
                            } else if m != b"{}" {
                                other += 1;
                            }
                        }
                    }
                    Ok(f) if f.op == CLOSE => panic!("the flooder was disconnected: {:?}", f.close()),
                    Ok(_) => {}
                    Err(_) if stop.load(Ordering::Acquire) => break,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) => panic!("the flooder's connection failed: {e}"),
                }
            }
            (ok, limited, other, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let during = rtts(&mut victim, 60, 100);
    stop.store(true, Ordering::Release);
    flood.join().unwrap();
    // The server answers what was already in its socket after the flood stops: the bucket
    // refills until the last answer was read.
    let (ok, limited, other, counted_until) = counts.join().unwrap();
    let flood_for = counted_until - flood_started;
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "flood: {sent} commands sent in ~{flood_for:?}: {ok} answered, {limited} refused with 111, {other} other; \
         victim publish round trip before p50 {:?} p99 {:?} max {:?}, during p50 {:?} p99 {:?} max {:?}",
        pct(&before, 50),
        pct(&before, 99),
        pct(&before, 100),
        pct(&during, 50),
        pct(&during, 99),
        pct(&during, 100)
    );
    assert_eq!(other, 0, "unexpected replies to the flooder");
    assert!(limited > 0, "nothing was rate limited");
    // (10% slack: the test's clock and the server's bucket do not start at the same instant.)
    let allowed = (RATE + (RATE as f64 * (flood_for.as_secs_f64() + 1.0)) as usize) * 11 / 10;
    assert!(ok <= allowed, "{ok} commands answered, at most {allowed} allowed");
    assert!(pct(&during, 50) < Duration::from_millis(100), "victim latency during the flood: {during:?}");
    assert!(pct(&during, 100) < Duration::from_secs(1), "victim latency during the flood: {during:?}");
    // The flooder, once calm, is served again (after the server has worked off what was
    // already in its socket).
    flooder.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in 1.. {
        std::thread::sleep(Duration::from_millis(300));
        flooder.send_json(&json!({"id": id, "publish": {"channel": "feed:flood", "data": 0}}));
        let r = flooder.reply(id);
        if r.get("error").is_none() {
            break;
        }
        assert_eq!(r["error"]["code"], 111, "{r}");
        assert!(Instant::now() < deadline, "the flooder is still refused 10 s after the flood");
    }
    assert_healthy(&mut s);
}

/// Three subscribers read everything; a fourth stops reading. The publisher goes as fast as
/// the readers take it: the slow subscriber's queue passes `client.queue_max_size` and it is
/// disconnected with 3008 "slow" (what was in flight to it arrives intact first), while the
/// three others get every publication in order. The server's memory stays bounded.
#[test]
fn publisher_faster_than_a_subscriber() {
    const TOTAL: usize = 6000;
    // Less than the queue bound per batch, so a reader that keeps up is never over it.
    const BATCH: usize = 50;
    let mut s = Server::start(cfg(json!({"client": {"queue_max_size": 131072}})));
    let addr = s.addr();
    let mut slow = Ws::open_small_rcvbuf(addr);
    slow.connect("slow");
    slow.subscribe(2, "feed:fast");
    let received: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let readers: Vec<_> = received
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let mut ws = Ws::open(addr);
            ws.connect(&format!("fast{i}"));
            ws.subscribe(2, "feed:fast");
            let count = count.clone();
            std::thread::spawn(move || {
                let mut ns = Vec::with_capacity(TOTAL);
                while ns.len() < TOTAL {
                    let f = ws
                        .frame()
                        .unwrap_or_else(|e| panic!("fast reader lost its connection after {}: {e}", ns.len()));
                    match f.op {
                        TEXT => {
                            for m in json_lines(&f.payload) {
                                if m == json!({}) {
                                    ws.send_json(&json!({}));
                                } else {
                                    ns.push(m["push"]["pub"]["data"]["n"].as_u64().expect("a publication"));
                                }
                            }
                            count.store(ns.len(), Ordering::Release);
                        }
                        CLOSE => panic!("a fast reader was closed after {}: {:?}", ns.len(), f.close()),
                        _ => {}
                    }
                }
                ns
            })
        })
        .collect();
    assert_eq!(num_clients(&s), 4);
    let rss0 = s.rss_kb();
    let mut max_rss = rss0;
    let pad = "p".repeat(1000);
    let mut slow_gone_after = None;
    let started = Instant::now();
    for batch in 0..TOTAL / BATCH {
        let first = batch * BATCH;
        let commands: Vec<Value> = (first..first + BATCH)
            .map(|n| json!({"publish": {"channel": "feed:fast", "data": {"n": n, "pad": pad}}}))
            .collect();
        let r = s.api("batch", json!({"commands": commands}));
        assert!(r["replies"].as_array().is_some_and(|v| v.iter().all(|x| x.get("error").is_none())), "{r}");
        wait_until("the fast readers take the batch", Duration::from_secs(30), || {
            received.iter().all(|c| c.load(Ordering::Acquire) >= first + BATCH)
        });
        max_rss = max_rss.max(s.rss_kb());
        if slow_gone_after.is_none() && num_clients(&s) == 3 {
            slow_gone_after = Some(first + BATCH);
            // The slow client reads now: what was in flight, then the close frame.
            let (code, reason) = slow.expect_close(Duration::from_secs(10));
            assert_eq!((code, reason.as_str()), (3008, "slow"));
        }
    }
    let took = started.elapsed();
    let gone = slow_gone_after.expect("the slow subscriber was never disconnected");
    for r in readers {
        let ns = r.join().expect("a fast reader failed");
        assert!(ns.iter().copied().eq(0..TOTAL as u64), "a fast reader missed or reordered publications");
    }
    eprintln!(
        "slow subscriber: {TOTAL} publications of 1 KiB in {took:?}; the slow one closed with 3008 after {gone}; \
         3 fast ones got all {TOTAL} in order; RSS {rss0} KiB, max {max_rss} KiB"
    );
    assert!(max_rss < rss0 + 64 * 1024, "RSS grew from {rss0} to {max_rss} KiB");
    assert_healthy(&mut s);
}

// ---------------------------------------------------------------------------------------------
// Limits.
// ---------------------------------------------------------------------------------------------

/// Each limit answers as RELIABILITY.md's table says: `client.channel_limit` (106),
/// `channel.max_length` (107), `client.user_connection_limit` (3504), `client.connection_limit`
/// (503 on upgrade, freed when a connection leaves), `http_api.max_body_size` (413),
/// `http_api.max_command_size` (413 for a first line, 107 for a later one),
/// `http_api.max_stream_size` (413 up front, or the stream ended where it passed the limit).
#[test]
fn limits_answer_as_documented() {
    let mut s = Server::start(cfg(json!({
        "workers": 1,
        "client": {"channel_limit": 2, "user_connection_limit": 2, "connection_limit": 6},
        "channel": {"max_length": 32},
        "http_api": {"max_body_size": 1000, "max_command_size": 500, "max_stream_size": 5000}
    })));
    let addr = s.addr();
    // Channels per client.
    let mut a = Ws::open(addr);
    a.connect("lim");
    assert!(a.subscribe(2, "feed:1").get("subscribe").is_some());
    assert!(a.subscribe(3, "feed:2").get("subscribe").is_some());
    assert_eq!(a.subscribe(4, "feed:3")["error"]["code"], 106);
    // Connections per user.
    let mut b = Ws::open(addr);
    b.connect("lim");
    // Channel name length.
    let long = format!("feed:{}", "x".repeat(40));
    assert_eq!(b.subscribe(5, &long)["error"]["code"], 107);
    let mut c = Ws::open(addr);
    c.send_json(&json!({"id": 1, "connect": {"token": token("lim")}}));
    assert_eq!(c.expect_close(Duration::from_secs(10)), (3504, "connection limit".to_string()));
    drop(c);
    // Connections per node: 6 (a, b and four more), then 503.
    let mut more = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while more.len() < 4 {
        match Ws::try_open(addr) {
            Ok(ws) => more.push(ws),
            Err(503) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(status) => panic!("upgrade {} of 6 refused with {status}", more.len() + 3),
        }
    }
    assert_eq!(Ws::try_open(addr).err(), Some(503), "a 7th connection over connection_limit 6");
    drop(more.pop());
    wait_until("a slot is free again", Duration::from_secs(10), || Ws::try_open(addr).is_ok());
    // HTTP API sizes.
    let body = json!({"channel": "feed:x", "data": "d".repeat(2000)}).to_string();
    let r = s.post("/api/publish", body.as_bytes(), &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 413, "max_body_size");
    let long_line = publish_line(1, "feed:x", &format!("\"{}\"", "d".repeat(600)));
    let r = s.legacy(long_line.as_bytes());
    assert_eq!(r.status, 413, "max_command_size, first line");
    let body = [publish_line(1, "feed:x", "1"), long_line.clone(), publish_line(3, "feed:x", "3")].join("\n");
    let replies = s.legacy(body.as_bytes()).lines();
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[1]["error"]["code"], 107, "max_command_size, later line: {replies:?}");
    assert!(replies[2].get("error").is_none());
    let lines: Vec<String> = (1..=100).map(|i| publish_line(i, "feed:x", "1")).collect();
    let body = lines.join("\n");
    assert!(body.len() > 5000);
    let r = s.legacy(body.as_bytes());
    assert_eq!(r.status, 413, "max_stream_size with Content-Length");
    let mut conn = s.connect();
    let mut req = chunked_head("/api", &[("X-API-Key", KEY)]);
    for l in &lines {
        req.extend(chunk(format!("{l}\n").as_bytes()));
    }
    req.extend_from_slice(LAST_CHUNK);
    let _ = conn.send_lossy(&req);
    let r = conn.read_response().expect("a chunked stream over max_stream_size");
    assert_eq!(r.status, 200);
    let n = r.lines().len();
    assert!(n > 0 && n < 100, "the stream ended where it passed max_stream_size: {n} replies");
    assert!(r.closes() || conn.is_closed(Duration::from_secs(5)), "the connection closes after a cut stream");
    assert_healthy(&mut s);
}

/// `client.connection_rate_limit`: a burst of upgrades over the rate gets 503 for the excess.
#[test]
fn connection_rate_limit_refuses_the_excess() {
    let mut s = Server::start(cfg(json!({"client": {"connection_rate_limit": 20}})));
    let addr = s.addr();
    let t = Instant::now();
    let (mut ok, mut refused) = (Vec::new(), 0);
    for _ in 0..60 {
        match Ws::try_open(addr) {
            Ok(ws) => ok.push(ws),
            Err(503) => refused += 1,
            Err(status) => panic!("upgrade refused with {status}"),
        }
    }
    let took = t.elapsed();
    eprintln!("connection_rate_limit 20/s: 60 upgrades in {took:?}: {} accepted, {refused} refused with 503", ok.len());
    assert!(refused > 0, "nothing refused");
    assert!(ok.len() >= 10, "only {} accepted", ok.len());
    assert!(ok.len() as f64 <= 22.0 + 20.0 * took.as_secs_f64(), "{} accepted in {took:?}", ok.len());
    assert_healthy(&mut s);
}

/// Sends an upgrade request on each of `n` new connections at once (all connected first),
/// then reads each answer's status. Returns the upgraded connections and the statuses.
fn upgrade_burst(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, Vec<u16>) {
    let conns: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let req = upgrade_request(&addr.to_string(), WS_PATH, SAMPLE_KEY, &[]);
    for c in &conns {
        (&*c).write_all(&req).expect("send the upgrade request");
    }
    let (mut upgraded, mut statuses) = (Vec::new(), Vec::new());
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            match c.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => panic!("reading an upgrade answer: {other:?} after {:?}", String::from_utf8_lossy(&head)),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status: u16 = head.split(' ').nth(1).and_then(|v| v.parse().ok()).expect("a status");
        if status == 503 {
            assert!(head.contains("Content-Length: 0\r\n"), "503 with an empty body: {head:?}");
        }
        statuses.push(status);
        if status == 101 {
            upgraded.push(c);
        }
    }
    (upgraded, statuses)
}

/// `client.connection_limit` counts a connection before its 101 is sent: 500 upgrades at
/// once on 2 workers let exactly the limit in (503 for the rest), and every place taken is
/// given back — by connections that end, and by upgrades whose client left before its 101.
#[test]
fn connection_limit_holds_under_a_burst_of_upgrades() {
    const LIMIT: usize = 50;
    let mut s = Server::start(cfg(json!({"client": {"connection_limit": LIMIT}})));
    let addr = s.addr();
    let (upgraded, statuses) = upgrade_burst(addr, 500);
    let refused = statuses.iter().filter(|&&st| st == 503).count();
    eprintln!("connection_limit {LIMIT}: 500 upgrades at once: {} upgraded, {refused} refused", upgraded.len());
    assert!(statuses.iter().all(|&st| st == 101 || st == 503), "{statuses:?}");
    assert_eq!(upgraded.len(), LIMIT, "upgraded past connection_limit {LIMIT}");
    // Upgraded clients leave; more clients send an upgrade and leave at once (reset), before
    // or while their 101 is written. Then every place is free again.
    drop(upgraded);
    for _ in 0..200 {
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        c.connect(&addr.into()).expect("connect");
        c.set_linger(Some(Duration::ZERO)).unwrap();
        let c: TcpStream = c.into();
        let _ = (&c).write_all(&upgrade_request(&addr.to_string(), WS_PATH, SAMPLE_KEY, &[]));
    }
    // (A burst that found places still held is closed again before the next try.)
    let mut full = Vec::new();
    wait_until("every place is free again", Duration::from_secs(10), || {
        let (up, _) = upgrade_burst(addr, LIMIT + 10);
        assert!(up.len() <= LIMIT, "{} upgraded past connection_limit {LIMIT}", up.len());
        if up.len() == LIMIT {
            full = up;
        }
        !full.is_empty()
    });
    // And still no more than the limit: a burst with all places taken gets only 503s.
    let (more, statuses) = upgrade_burst(addr, 100);
    assert!(more.is_empty() && statuses.iter().all(|&st| st == 503), "{statuses:?}");
    drop(full);
    assert_healthy(&mut s);
}

fn pipe_cfg() -> Value {
    cfg(json!({"channel": {"namespaces": [{"name": "pipe", "history_size": 10, "history_ttl": "300s"}]}}))
}

/// Samples the RSS of `pid` every 50 ms until told to stop; returns the largest.
fn rss_sampler(pid: u32) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            max
        })
    };
    (stop, handle)
}

/// A client pipelines ~100 MiB of `/api/batch` requests (100 publishes of 10 KB each)
/// without reading a reply. The server reads ahead only a bounded amount (request bytes of
/// commands in flight, unsent replies), so its memory stays flat; other clients are served
/// meanwhile; once the client reads, every reply arrives, in order, none lost. With
/// `paused`, that Redis holds every write (`CLIENT PAUSE`) until the server has stopped
/// taking the pipeline in: commands that wait long are when reading ahead would pile up.
fn pipelined_batches(mut s: Server, paused: Option<&RedisServer>) {
    const BATCHES: usize = 110;
    const PER_BATCH: usize = 100;
    const CHANNELS: usize = 4;
    s.api("publish", json!({"channel": "pipe:warm", "data": 1}));
    let rss0 = s.rss_kb();
    if let Some(r) = paused {
        r.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]);
    }
    let mut c = s.connect();
    let mut w = c.writer();
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let written = written.clone();
        std::thread::spawn(move || -> io::Result<usize> {
            let pad = "p".repeat(10_000);
            let mut bytes = 0;
            for b in 0..BATCHES {
                let commands: Vec<String> = (0..PER_BATCH)
                    .map(|i| {
                        let n = b * PER_BATCH + i;
                        let ch = n % CHANNELS;
                        format!(r#"{{"publish":{{"channel":"pipe:{ch}","data":{{"n":{n},"pad":"{pad}"}}}}}}"#)
                    })
                    .collect();
                let body = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
                let req = request("POST", "/api/batch", body.as_bytes(), &[("X-API-Key", KEY)]);
                w.write_all(&req)?;
                bytes += req.len();
                written.store(b + 1, Ordering::Release);
            }
            Ok(bytes)
        })
    };
    let (stop, sampler) = rss_sampler(s.pid());
    wait_until("the pipeline is under way", Duration::from_secs(30), || written.load(Ordering::Acquire) >= 1);
    if let Some(r) = paused {
        // Until the server stops taking more (the writer makes no progress for 500 ms) or the
        // writer is done: no event says "not reading", so progress is watched.
        let mut seen = usize::MAX;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = written.load(Ordering::Acquire);
            if now == BATCHES || now == seen || Instant::now() > deadline {
                break;
            }
            seen = now;
            std::thread::sleep(Duration::from_millis(500));
        }
        let held = s.rss_kb();
        // Others are served meanwhile (what needs no Redis write).
        for _ in 0..4 {
            let (status, v, took) = s.api_within("info", json!({}), Duration::from_secs(2));
            assert!(status == 200 && v["result"]["nodes"].is_array(), "info beside the pipeline: {status} {v}");
            assert!(took < Duration::from_secs(2), "info beside the pipeline took {took:?}");
        }
        assert_ws_serving(&s);
        eprintln!("while Redis was paused: {seen} batches written, RSS {held} KiB");
        assert!(held < rss0 + 64 * 1024, "RSS grew from {rss0} to {held} KiB while the pipeline was held");
        r.cmd(&["CLIENT", "UNPAUSE"]);
    } else {
        // Others are served while the pipeline is being taken in, on both workers.
        for i in 0..4 {
            let t = Instant::now();
            let r = s.api("publish", json!({"channel": format!("pipe:other{i}"), "data": 1}));
            assert_eq!(r["result"]["offset"], 1, "{r}");
            assert!(t.elapsed() < Duration::from_secs(2), "a publish beside the pipeline took {:?}", t.elapsed());
        }
    }
    // Now the client reads: a reply to every batch, in order, one publication per command
    // (offsets of a channel: each exactly once; within a batch, increasing).
    let mut offsets: Vec<Vec<u64>> = vec![Vec::new(); CHANNELS];
    for b in 0..BATCHES {
        let r = c.read_response().unwrap_or_else(|e| panic!("reply to batch {b}: {e}"));
        assert_eq!(r.status, 200, "batch {b}: {}", r.text());
        let v = r.json();
        let replies = v["replies"].as_array().unwrap_or_else(|| panic!("batch {b}: {v}"));
        assert_eq!(replies.len(), PER_BATCH, "batch {b}");
        let mut last = [0u64; CHANNELS];
        for (i, reply) in replies.iter().enumerate() {
            let ch = (b * PER_BATCH + i) % CHANNELS;
            let offset =
                reply["publish"]["offset"].as_u64().unwrap_or_else(|| panic!("batch {b} command {i}: {reply}"));
            assert!(offset > last[ch], "batch {b} command {i}: offset {offset} after {}", last[ch]);
            last[ch] = offset;
            offsets[ch].push(offset);
        }
    }
    for o in &mut offsets {
        o.sort_unstable();
        assert!(o.iter().copied().eq(1..=o.len() as u64), "offsets lost or doubled");
    }
    let sent = writer.join().unwrap().expect("writing the pipeline");
    stop.store(true, Ordering::Relaxed);
    let peak_kb = sampler.join().unwrap().max(s.rss_kb());
    eprintln!("pipelined batches: {} MiB in {BATCHES} requests; RSS {rss0} KiB, peak {peak_kb} KiB", sent >> 20);
    assert!(sent > 100 << 20);
    assert!(peak_kb < rss0 + 64 * 1024, "RSS grew from {rss0} to {peak_kb} KiB");
    for (ch, o) in offsets.iter().enumerate() {
        let h = s.api("history", json!({"channel": format!("pipe:{ch}"), "limit": 0}));
        assert_eq!(h["result"]["offset"], o.len(), "{h}");
    }
    assert_healthy(&mut s);
}

#[test]
fn pipelined_batches_without_reading_are_backpressured() {
    pipelined_batches(Server::start(pipe_cfg()), None);
}

#[test]
fn pipelined_batches_without_reading_are_backpressured_on_redis() {
    if !redis_available("pipelined_batches_without_reading_are_backpressured_on_redis") {
        return;
    }
    let r = RedisServer::start();
    let mut c = pipe_cfg();
    merge(&mut c, json!({"engine": {"type": "redis", "redis": {"address": [r.url()], "io_timeout": "60s"}}}));
    pipelined_batches(Server::start(c), Some(&r));
}

/// Small pipelined requests with large replies: 1,000 `/api/batch` requests of one
/// `history` call each (~140 KB of requests, ~100 MB of replies) sent at once, none read. Requests already buffered are not
/// run while the connection owes a bounded amount (commands in flight, unsent replies), so
/// memory stays flat; reading then yields every reply intact.
#[test]
fn pipelined_requests_with_large_replies_are_backpressured() {
    const REQUESTS: usize = 1000;
    let mut s = Server::start(pipe_cfg());
    let pad = "h".repeat(10_000);
    for n in 0..10 {
        s.api("publish", json!({"channel": "pipe:h", "data": {"n": n, "pad": pad}}));
    }
    let rss0 = s.rss_kb();
    let (stop, sampler) = rss_sampler(s.pid());
    let mut c = s.connect();
    let body = br#"{"commands":[{"history":{"channel":"pipe:h","limit":10}}]}"#;
    let req = request("POST", "/api/batch", body, &[("X-API-Key", KEY)]);
    c.send(&req.repeat(REQUESTS));
    // Others are served meanwhile.
    for i in 0..4 {
        let r = s.api("publish", json!({"channel": format!("pipe:other{i}"), "data": 1}));
        assert_eq!(r["result"]["offset"], 1, "{r}");
    }
    let first = c.read_response().expect("the first reply");
    assert_eq!(first.status, 200);
    let pubs = first.json()["replies"][0]["history"]["publications"].as_array().map(Vec::len);
    assert_eq!(pubs, Some(10), "{}", &first.text()[..200]);
    for n in 1..REQUESTS {
        let r = c.read_response().unwrap_or_else(|e| panic!("reply {n}: {e}"));
        assert!(r.status == 200 && r.body == first.body, "reply {n} differs");
    }
    stop.store(true, Ordering::Relaxed);
    let peak_kb = sampler.join().unwrap().max(s.rss_kb());
    eprintln!(
        "pipelined history calls: {} KiB of requests, {} MiB of replies; RSS {rss0} KiB, peak {peak_kb} KiB",
        (req.len() * REQUESTS) >> 10,
        (first.body.len() * REQUESTS) >> 20
    );
    assert!(peak_kb < rss0 + 32 * 1024, "RSS grew from {rss0} to {peak_kb} KiB");
    assert_healthy(&mut s);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown.
// ---------------------------------------------------------------------------------------------

/// A `gyre` process of the test's own (the shutdown tests need its exit status).
struct Proc {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Proc {
    fn start(cfg: Value) -> Proc {
        static N: AtomicUsize = AtomicUsize::new(0);
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut cfg = cfg.clone();
            merge(&mut cfg, json!({"http_server": {"port": port}}));
            let dir = std::env::temp_dir().join(format!(
                "gyre-hardening-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
            let mut cmd = Command::new(server_binary());
            cmd.arg("--config")
                .arg(dir.join("config.json"))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            cmd.stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
            for (k, _) in std::env::vars() {
                if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") {
                    cmd.env_remove(k);
                }
            }
            if let Ok(driver) = std::env::var("GYRE_TEST_DRIVER") {
                cmd.env("GYRE_DRIVER", driver);
            }
            let mut p = Proc { child: cmd.spawn().expect("spawn gyre"), port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(p.addr()).is_ok() {
                    return p;
                }
                if let Ok(Some(_)) = p.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                assert!(Instant::now() < deadline, "gyre did not start: {}", p.stderr());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("gyre did not start after 5 attempts");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the process to exit; its exit status, or `None` after `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn api(&self, method: &str, body: Value) -> Value {
        let mut c = Conn::new(self.addr());
        c.send(&request("POST", &format!("/api/{method}"), body.to_string().as_bytes(), &[("X-API-Key", KEY)]));
        c.read_response().expect("API response").json()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gyre stderr ----\n{}", self.stderr());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a legacy stream saw across a shutdown.
struct StreamOutcome {
    /// Lines written.
    sent: usize,
    /// Offsets of the publishes answered with success, in reply order.
    acked: Vec<u64>,
    /// Replies that were errors.
    errors: usize,
    /// The chunked reply body ended properly (last chunk seen).
    complete: bool,
}

/// Streams publishes to `channel` over one legacy `POST /api` until `stop` (then ends the
/// body), reading the replies as they come.
fn publish_stream(addr: SocketAddr, channel: &'static str, stop: Arc<AtomicBool>, max: usize) -> StreamOutcome {
    let mut c = Conn::new(addr);
    c.send(&chunked_head("/api", &[("X-API-Key", KEY)]));
    let mut w = c.writer();
    let writer = std::thread::spawn(move || {
        let mut id = 0;
        while !stop.load(Ordering::Acquire) && id < max {
            let mut body = String::new();
            for _ in 0..50 {
                id += 1;
                body.push_str(&publish_line(id as u32, channel, &format!(r#"{{"n":{id}}}"#)));
                body.push('\n');
            }
            if w.write_all(&chunk(body.as_bytes())).is_err() {
                return id;
            }
        }
        let _ = w.write_all(LAST_CHUNK);
        id
    });
    let mut out = StreamOutcome { sent: 0, acked: Vec::new(), errors: 0, complete: false };
    let head = c.read_head().expect("the stream's response head");
    assert_eq!(head.status, 200);
    let mut pending = Vec::new();
    let take = |line: &[u8], out: &mut StreamOutcome| {
        let v: Value = serde_json::from_slice(line).expect("reply line");
        match v["result"]["offset"].as_u64() {
            Some(o) if v.get("error").is_none() => out.acked.push(o),
            _ => out.errors += 1,
        }
    };
    loop {
        match c.read_chunk() {
            Ok(Some(data)) => {
                pending.extend_from_slice(&data);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    take(&line[..line.len() - 1], &mut out);
                }
            }
            Ok(None) => {
                out.complete = true;
                break;
            }
            Err(_) => break,
        }
    }
    if out.complete && !pending.is_empty() {
        take(&pending, &mut out);
    }
    out.sent = writer.join().unwrap();
    out
}

/// Reads a subscriber's publications until its close frame: (offsets, close code, reason).
fn collect_until_close(mut ws: Ws) -> (Vec<u64>, Option<(u16, String)>) {
    ws.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut offsets = Vec::new();
    loop {
        match ws.frame() {
            Ok(f) if f.op == TEXT => {
                for m in json_lines(&f.payload) {
                    if let Some(o) = m["push"]["pub"]["offset"].as_u64() {
                        offsets.push(o);
                    }
                }
            }
            Ok(f) if f.op == CLOSE => return (offsets, Some(f.close())),
            Ok(_) => {}
            Err(_) => return (offsets, None),
        }
    }
}

/// The shutdown scenario: a subscriber, an idle client and a legacy publish stream are
/// running when SIGTERM arrives. Returns the stream's outcome, what the subscriber got, the
/// idle client's close, and how long the process took to exit.
struct ShutdownOutcome {
    stream: StreamOutcome,
    delivered: Vec<u64>,
    sub_close: Option<(u16, String)>,
    idle_close: (u16, String),
    exit_after: Duration,
    status: std::process::ExitStatus,
}

fn shutdown_scenario(p: &mut Proc, channel: &'static str, bound: Duration) -> ShutdownOutcome {
    let addr = p.addr();
    let mut sub = Ws::open(addr);
    sub.connect("sub");
    assert!(sub.subscribe(2, channel).get("subscribe").is_some());
    let sub = std::thread::spawn(move || collect_until_close(sub));
    let mut idle = Ws::open(addr);
    idle.connect("idle");
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        // At most 90,000 publications: they all fit in the channel's history (100,000).
        std::thread::spawn(move || publish_stream(addr, channel, stop, 90_000))
    };
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    p.signal(libc::SIGTERM);
    // The stream goes on writing for a while after the signal.
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Release);
    });
    let status = p.wait_exit(bound).unwrap_or_else(|| panic!("gyre still running {bound:?} after SIGTERM"));
    let exit_after = t.elapsed();
    stopper.join().unwrap();
    let stream = stream.join().expect("the stream thread");
    let (delivered, sub_close) = sub.join().expect("the subscriber thread");
    let idle_close = idle.expect_close(Duration::from_secs(5));
    ShutdownOutcome { stream, delivered, sub_close, idle_close, exit_after, status }
}

/// The shutdown tests each drive tens of thousands of publications and time the exit against
/// `shutdown.timeout`: they run one at a time, so two of them never share the cores.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SHUTDOWN_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SHUTDOWN_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGTERM while a legacy stream publishes and WebSocket clients are connected. The stream's
/// commands in flight are answered; the stream then ends, cut between two replies (the
/// connection closes without the final chunk, so the client knows exactly which commands were
/// answered) unless its body had ended. What the subscriber received is an unbroken prefix of
/// the publications; clients get 3001 "shutdown" (with reconnect); the process exits 0 well
/// within `shutdown.timeout`. (Acknowledged publications the subscriber did not get before
/// 3001 are counted: see the ignored test below.)
#[test]
fn graceful_shutdown_answers_in_flight_requests_and_sends_3001() {
    let _alone = one_at_a_time();
    let mut p = Proc::start(cfg(json!({"shutdown": {"timeout": "5s"}, "client": {"queue_max_size": 67_108_864}})));
    let o = shutdown_scenario(&mut p, "hist:sd", Duration::from_secs(8));
    let delivered: BTreeSet<u64> = o.delivered.iter().copied().collect();
    let missing = o.stream.acked.iter().filter(|x| !delivered.contains(x)).count();
    eprintln!(
        "shutdown: {} lines sent, {} answered, {} errors, stream complete {}; subscriber got {} then {:?} \
         ({missing} acknowledged ones not delivered); exit {:?} after {:?}",
        o.stream.sent,
        o.stream.acked.len(),
        o.stream.errors,
        o.stream.complete,
        o.delivered.len(),
        o.sub_close,
        o.status,
        o.exit_after
    );
    assert!(o.status.success(), "exit status {:?}", o.status);
    assert!(o.exit_after < Duration::from_secs(5), "exit after {:?}", o.exit_after);
    assert_eq!(o.idle_close, (3001, "shutdown".to_string()));
    assert_eq!(o.sub_close, Some((3001, "shutdown".to_string())));
    assert_eq!(o.stream.errors, 0);
    assert!(!o.stream.acked.is_empty());
    assert!(o.stream.acked.iter().copied().eq(1..=o.stream.acked.len() as u64), "replies are a prefix of the stream");
    if o.stream.complete {
        assert_eq!(o.stream.acked.len(), o.stream.sent, "a complete stream answers every line");
    }
    assert!(o.delivered.iter().copied().eq(1..=o.delivered.len() as u64), "the subscriber's publications have a gap");
}

/// Every publication acknowledged before the shutdown reaches the local subscribers before
/// their 3001: workers disconnect their sessions only once every worker has answered its HTTP
/// requests and its inbox (where `Deliver` batches travel) has gone quiet.
#[test]

fn graceful_shutdown_delivers_every_acknowledged_publication() {
    let _alone = one_at_a_time();
    let mut p = Proc::start(cfg(json!({"shutdown": {"timeout": "5s"}, "client": {"queue_max_size": 67_108_864}})));
    let o = shutdown_scenario(&mut p, "hist:sd", Duration::from_secs(8));
    let delivered: BTreeSet<u64> = o.delivered.iter().copied().collect();
    let missing: Vec<u64> = o.stream.acked.iter().copied().filter(|x| !delivered.contains(x)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged publications never reached the subscriber: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

/// SIGTERM while WebSocket clients publish as fast as they are answered (pipelined, 64 in
/// flight each) to a channel whose subscribers sit on every worker: each publication
/// acknowledged to a publisher reaches every subscriber before its 3001.
#[test]
fn graceful_shutdown_delivers_what_websocket_publishers_were_acknowledged() {
    let _alone = one_at_a_time();
    ws_publishers_at_shutdown(json!({}));
}

/// The same on the Redis engine (publications come back from Redis to be delivered).
#[test]
fn graceful_shutdown_on_redis_delivers_what_websocket_publishers_were_acknowledged() {
    let _alone = one_at_a_time();
    let test = "graceful_shutdown_on_redis_delivers_what_websocket_publishers_were_acknowledged";
    let Some(redis) = Redis::start(test) else { return };
    let address = format!("redis://127.0.0.1:{}", redis.port);
    ws_publishers_at_shutdown(json!({"engine": {"type": "redis", "redis": {"address": [address]}}}));
}

fn ws_publishers_at_shutdown(engine: Value) {
    let mut patch = json!({"shutdown": {"timeout": "5s"}, "workers": 4});
    merge(&mut patch, engine);
    let p = Proc::start(cfg(patch));
    let connect = |user: &str| {
        let mut ws = Ws::open(p.addr());
        ws.send_json(&json!({"id": 1, "connect": {"token": token(user)}}));
        let f = ws.frame().expect("connect reply");
        assert!(json_lines(&f.payload)[0]["connect"].is_object(), "{:?}", String::from_utf8_lossy(&f.payload));
        ws
    };
    // Subscribers: received data values until their close frame (whose code is returned).
    let subscribers: Vec<_> = (0..8)
        .map(|i| {
            let mut ws = connect(&format!("sub{i}"));
            ws.send_json(&json!({"id": 2, "subscribe": {"channel": "feed:ws"}}));
            let f = ws.frame().expect("subscribe reply");
            assert!(json_lines(&f.payload)[0].get("error").is_none());
            std::thread::spawn(move || {
                let mut got = BTreeSet::new();
                loop {
                    let f = ws.frame().expect("a subscriber's frames until 3001");
                    if f.op == CLOSE {
                        return (got, f.close().0);
                    }
                    for v in json_lines(&f.payload) {
                        if let Some(n) = v["push"]["pub"]["data"]["n"].as_u64() {
                            got.insert(n);
                        }
                    }
                }
            })
        })
        .collect();
    // Publishers: data values acknowledged to them.
    let publishers: Vec<_> = (0..4u64)
        .map(|k| {
            let mut ws = connect(&format!("pub{k}"));
            std::thread::spawn(move || {
                let mut acked = BTreeSet::new();
                let (mut next, mut in_flight) = (0u64, 0);
                loop {
                    let mut batch = Vec::new();
                    while in_flight < 64 {
                        let n = k * 1_000_000 + next;
                        let cmd = json!({"id": 100 + next, "publish": {"channel": "feed:ws", "data": {"n": n}}});
                        batch.extend(client_frame(true, TEXT, cmd.to_string().as_bytes(), true));
                        next += 1;
                        in_flight += 1;
                    }
                    if ws.send(&batch).is_err() {
                        return acked;
                    }
                    let Ok(f) = ws.frame() else { return acked };
                    if f.op == CLOSE {
                        return acked;
                    }
                    for v in json_lines(&f.payload) {
                        if let Some(id) = v["id"].as_u64() {
                            in_flight -= 1;
                            if v.get("error").is_none() {
                                acked.insert(k * 1_000_000 + id - 100);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut p = p;
    p.signal(libc::SIGTERM);
    let acked: BTreeSet<u64> = publishers.into_iter().flat_map(|h| h.join().expect("a publisher")).collect();
    assert!(acked.len() > 100, "only {} publications were acknowledged before the signal", acked.len());
    for (i, h) in subscribers.into_iter().enumerate() {
        let (got, code) = h.join().expect("a subscriber");
        assert_eq!(code, 3001, "subscriber {i}'s close code");
        let missing: Vec<&u64> = acked.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "subscriber {i} missed {} of {} acknowledged publications, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(10)]
        );
    }
    let status = p.wait_exit(Duration::from_secs(10)).expect("gyre exits");
    assert!(status.success(), "{status:?}");
}

/// A legacy request whose whole body was sent before SIGTERM is read and answered to its end
/// (a connection counts as busy while inside a request).
#[test]

fn graceful_shutdown_answers_a_fully_sent_stream() {
    let _alone = one_at_a_time();
    let p = Proc::start(cfg(json!({"shutdown": {"timeout": "5s"}})));
    let mut c = Conn::new(p.addr());
    let mut body = String::new();
    for i in 1..=50_000 {
        body.push_str(&publish_line(i, "feed:whole", "1"));
        body.push('\n');
    }
    let mut req = chunked_head("/api", &[("X-API-Key", KEY)]);
    req.extend(chunk(body.as_bytes()));
    req.extend_from_slice(LAST_CHUNK);
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&req));
    let head = c.read_head().expect("response head");
    assert_eq!(head.status, 200);
    writer.join().unwrap().expect("the whole request was sent");
    p.signal(libc::SIGTERM);
    let mut replies = 0;
    while let Ok(Some(data)) = c.read_chunk() {
        replies += data.iter().filter(|&&b| b == b'\n').count();
    }
    assert_eq!(replies + 1, 50_000, "replies to a request sent in full before SIGTERM");
}

/// A stream whose client stops reading replies cannot hold the process: it waits for the
/// unsent replies until `shutdown.timeout`, then exits (+ the 500 ms given to WebSocket
/// writers).
#[test]
fn graceful_shutdown_is_bounded_by_shutdown_timeout() {
    let _alone = one_at_a_time();
    let mut p = Proc::start(cfg(json!({"shutdown": {"timeout": "2s"}})));
    // A tiny receive buffer, and more replies than the kernel buffers hold; never read.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&p.addr().into()).unwrap();
    let mut w: TcpStream = sock.into();
    w.write_all(&chunked_head("/api", &[("X-API-Key", KEY)])).unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut w = w.try_clone().unwrap();
        let written = written.clone();
        std::thread::spawn(move || {
            for n in 0..1000 {
                let mut body = String::new();
                for i in 1..=1000 {
                    body.push_str(&publish_line(n * 1000 + i, "feed:stuck", "1"));
                    body.push('\n');
                }
                if w.write_all(&chunk(body.as_bytes())).is_err() {
                    return;
                }
                written.fetch_add(1, Ordering::Release);
            }
        })
    };
    // Until the server stops reading (its replies are stuck behind the unread ones), so the
    // connection owes replies when the signal comes.
    let mut last = (usize::MAX, Instant::now());
    wait_until("the server stops reading the stream", Duration::from_secs(60), || {
        let n = written.load(Ordering::Acquire);
        if n != last.0 {
            last = (n, Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(500)
    });
    let t = Instant::now();
    p.signal(libc::SIGINT);
    let status = p.wait_exit(Duration::from_secs(6)).expect("gyre did not exit within shutdown.timeout + 4 s");
    let took = t.elapsed();
    eprintln!("shutdown with a reader that never reads: exit {status:?} after {took:?} (shutdown.timeout 2s)");
    assert!(status.success(), "{status:?}");
    assert!(took >= Duration::from_millis(1900), "exited after {took:?}: the unsent replies were not waited for");
    assert!(took < Duration::from_millis(3500), "exited after {took:?}: past shutdown.timeout");
    drop(w);
    writer.join().unwrap();
}

/// A `redis-server` of the test's own on a free port (no persistence); killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// `None` (skip) when `redis-server` is not installed and `CI` is unset.
    fn start(test: &str) -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("{test}: skipped (redis-server: {e})");
                return None;
            }
            Err(e) => panic!("{test}: redis-server is required when CI is set: {e}"),
        };
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"PING\r\n");
                let mut b = [0u8; 7];
                if s.read_exact(&mut b).is_ok() && &b == b"+PONG\r\n" {
                    return Some(r);
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shutdown scenario on the Redis engine, then a new node on the same Redis: every
/// publication the stream got a reply for is in the channel's history.
#[test]
fn graceful_shutdown_on_redis_loses_no_acknowledged_publication() {
    let _alone = one_at_a_time();
    let Some(redis) = Redis::start("graceful_shutdown_on_redis_loses_no_acknowledged_publication") else { return };
    let engine = json!({"engine": {"type": "redis", "redis": {"address": [format!("redis://127.0.0.1:{}", redis.port)]}},
                        "shutdown": {"timeout": "5s"}, "client": {"queue_max_size": 67_108_864}});
    let mut p = Proc::start(cfg(engine.clone()));
    let o = shutdown_scenario(&mut p, "hist:rsd", Duration::from_secs(8));
    assert!(o.status.success(), "exit status {:?}", o.status);
    assert_eq!(o.idle_close.0, 3001);
    let q = Proc::start(cfg(engine));
    let h = q.api("history", json!({"channel": "hist:rsd", "limit": -1}));
    let stored: BTreeSet<u64> =
        h["result"]["publications"].as_array().expect("history").iter().filter_map(|p| p["offset"].as_u64()).collect();
    let missing: Vec<u64> = o.stream.acked.iter().copied().filter(|x| !stored.contains(x)).collect();
    eprintln!(
        "shutdown on redis: {} lines sent, {} acknowledged, stream complete {}; history after restart holds {} \
         (top offset {}); exit after {:?}",
        o.stream.sent,
        o.stream.acked.len(),
        o.stream.complete,
        stored.len(),
        h["result"]["offset"],
        o.exit_after
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged publications are not in history: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(!o.stream.acked.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Regressions for what the fuzzers found.
// ---------------------------------------------------------------------------------------------

/// Found by the `config` fuzz target: durations past `Duration`'s range panicked the config
/// loader, and durations past `Instant`'s range were accepted and then panicked a worker at
/// the first deadline computed from them. Both are now config errors naming the option; the
/// largest accepted value (Go's maximum duration) runs.
#[test]
fn out_of_range_durations_are_config_errors() {
    let dir = std::env::temp_dir().join(format!("gyre-hardening-durations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, value) in [
        ("string", json!("99999999999999999999999s")),
        ("seconds", json!("18446744073709551615")),
        ("number", json!(1e300)),
        ("integer", json!(u64::MAX)),
    ] {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, json!({"client": {"ping_interval": value}}).to_string()).unwrap();
        let out = Command::new(server_binary()).arg("checkconfig").arg("-c").arg(&path).output().expect("run gyre");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("client.ping_interval") && err.contains("out of range"), "{name}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = Server::start(cfg(json!({"client": {"ping_interval": "2562047h"},
                                         "channel": {"history_meta_ttl": "2562047h"}})));
    let mut ws = Ws::open(s.addr());
    ws.connect("max");
    assert!(ws.subscribe(2, "hist:max").get("subscribe").is_some());
    assert_healthy(&mut s);
}

/// JSON clients receive newline-delimited messages (the SDKs split a frame on `\n` before
/// parsing): a JSON payload with a newline (pretty-printed by a backend: `{"a":\n 1}` through
/// the HTTP API or gateway `mesh.publish`, or JSON-valid bytes from a protobuf client) must not
/// split its push. Found with the `client_protocol` fuzz target's "no newline inside a JSON
/// message" property; line breaks in raw JSON are written as spaces.
#[test]

fn json_payload_with_a_newline_reaches_json_clients_intact() {
    let s = Server::start(cfg(json!({})));
    let mut ws = Ws::open(s.addr());
    ws.connect("nl");
    ws.subscribe(2, "feed:nl");
    let r = s.post("/api/publish", b"{\"channel\":\"feed:nl\",\"data\":{\"a\":\n 1}}", &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 200);
    let f = ws.frame().expect("the publication");
    let ms = json_lines(&f.payload);
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["push"]["pub"]["data"], json!({"a": 1}));
}

/// Found by the flood test run on the epoll driver: on a socket that always had data every
/// read completed at once, so the flooding connection's task never gave way and the other
/// connections of its worker waited seconds (a publish round trip of 7-20 s; the flooder's own
/// writer starved too, until its queue overflowed into 3008). Every reader (WebSocket
/// sessions, HTTP connections, gateway backends) reads through the same function. Each flood
/// here runs against a client on the same (single) worker, on both drivers.
#[test]
fn a_flooding_connection_does_not_starve_its_worker() {
    for driver in ["epoll", "io_uring"] {
        let mut s = Server::start(cfg(json!({
            "workers": 1, "driver": driver,
            "client": {"command_rate_limit": 100, "queue_max_size": 256 << 20}
        })));
        let addr = s.addr();
        let mut victim = Ws::open(addr);
        victim.connect("victim");
        for kind in ["websocket", "legacy stream"] {
            let stop = Arc::new(AtomicBool::new(false));
            let (mut w, mut r) = if kind == "websocket" {
                let mut f = Ws::open(addr);
                f.connect("flooder");
                (f.s.try_clone().unwrap(), f.s)
            } else {
                let c = TcpStream::connect(addr).unwrap();
                let mut w = c.try_clone().unwrap();
                w.write_all(&chunked_head("/api", &[("X-API-Key", KEY)])).unwrap();
                (w, c)
            };
            let writer = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let lines: Vec<String> = (0..200)
                            .map(|k| {
                                n += 1;
                                if kind == "websocket" {
                                    json!({"id": n, "publish": {"channel": "feed:flood", "data": k}}).to_string()
                                } else {
                                    publish_line(n as u32, "feed:flood", "1")
                                }
                            })
                            .collect();
                        let body = lines.join("\n") + "\n";
                        let bytes = if kind == "websocket" {
                            client_frame(true, TEXT, body.as_bytes(), true)
                        } else {
                            chunk(body.as_bytes())
                        };
                        if w.write_all(&bytes).is_err() {
                            break;
                        }
                    }
                })
            };
            let drainer = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    r.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                    let mut buf = vec![0u8; 1 << 16];
                    let mut total = 0usize;
                    loop {
                        match r.read(&mut buf) {
                            Ok(0) => return (total, true),
                            Ok(n) => total += n,
                            Err(_) if stop.load(Ordering::Acquire) => return (total, false),
                            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                            Err(_) => return (total, true),
                        }
                    }
                })
            };
            std::thread::sleep(Duration::from_millis(300));
            let mut rtts = Vec::new();
            for id in 0..30u64 {
                let t = Instant::now();
                victim.send_json(&json!({"id": 1000 + id, "publish": {"channel": "feed:victim", "data": id}}));
                let r = victim.reply(1000 + id);
                assert!(r.get("error").is_none(), "{r}");
                rtts.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Release);
            writer.join().unwrap();
            let (got, closed) = drainer.join().unwrap();
            rtts.sort();
            eprintln!(
                "{driver}, {kind} flood: the flooder got {got} bytes of replies (closed: {closed}); the other client's \
                 round trip p50 {:?} max {:?}",
                pct(&rtts, 50),
                pct(&rtts, 100)
            );
            assert!(!closed, "{driver}, {kind}: the flooder was disconnected");
            assert!(pct(&rtts, 100) < Duration::from_millis(500), "{driver}, {kind}: round trips {rtts:?}");
        }
        assert_healthy(&mut s);
    }
}

/// A JSON client subscribed to `watch`, then a protobuf client publishing `data` to `channel`
/// (clients may publish, subscribe and read history in the `hist` namespace).
fn protobuf_publisher_and_json_watcher(s: &Server, data: &[u8], watch: &str, channel: &str) -> Ws {
    let mut watcher = Ws::open(s.addr());
    watcher.connect("watcher");
    assert!(watcher.subscribe(2, watch).get("subscribe").is_some());
    let mut pb =
        Ws::upgrade(TcpStream::connect(s.addr()).unwrap(), "/connection/websocket?format=protobuf", SAMPLE_KEY, &[])
            .expect("upgrade");
    pb.send(&client_frame(true, BINARY, &pb_command(1, 4, &pb_field(1, token("pb").as_bytes())), true)).unwrap();
    pb.frame().expect("protobuf connect reply");
    let mut req = pb_field(1, channel.as_bytes());
    req.extend(pb_field(2, data));
    pb.send(&client_frame(true, BINARY, &pb_command(2, 7, &req), true)).unwrap();
    let reply = pb.frame().expect("protobuf publish reply");
    assert_eq!(reply.payload, [4, 8, 2, 66, 0], "publish result");
    watcher
}

fn history_cfg() -> Value {
    cfg(json!({"channel": {"namespaces": [{"name": "hist", "history_size": 10, "history_ttl": "60s",
        "allow_subscribe_for_client": true, "allow_publish_for_client": true, "allow_history_for_client": true}]}}))
}

/// A protobuf client's data that is a JSON string holding bytes that are not UTF-8
/// (`"\xff\xfe"`) is not JSON a JSON client can receive (`serde_json` does not validate UTF-8
/// inside strings it skips): no JSON subscriber gets it as a text frame. Found by the
/// `client_protocol` fuzz target.
#[test]
fn protobuf_data_that_is_not_utf8_never_reaches_json_clients_as_text() {
    let s = Server::start(history_cfg());
    let mut watcher = protobuf_publisher_and_json_watcher(&s, b"\"\xff\xfe\"", "hist:utf8", "hist:utf8");
    watcher.s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    if let Ok(f) = watcher.frame() {
        assert!(f.op != TEXT || std::str::from_utf8(&f.payload).is_ok(), "a text frame that is not UTF-8");
    }
}

/// Binary data that is not JSON (from a protobuf client or `b64data`) never reaches a JSON
/// client raw: live pushes, `history` and recovery alike close it with 3506.
#[test]
fn binary_history_is_never_written_raw_to_json_clients() {
    let s = Server::start(history_cfg());
    let mut watcher = protobuf_publisher_and_json_watcher(&s, b"\x00\x01not json", "hist:other", "hist:bin");
    watcher.send_json(&json!({"id": 5, "history": {"channel": "hist:bin", "limit": 10}}));
    loop {
        let f = watcher.frame().expect("the history reply");
        if f.op == CLOSE {
            break;
        }
        let ok = f.payload.split(|&b| b == b'\n').all(|l| l.is_empty() || serde_json::from_slice::<Value>(l).is_ok());
        assert!(ok, "a reply that is not JSON: {:?}", String::from_utf8_lossy(&f.payload));
        if f.payload.windows(7).any(|w| w == b"\"id\":5,") {
            break;
        }
    }
}
