//! Session rules over raw WebSocket frames: stale connections (3502), missing pongs
//! (3012), connection expiry (3005) and its refresh, subscription expiry (2501), channel names.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "ws-timers-secret-0123456789";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn timers_config(client: Value) -> Value {
    let mut cfg = json!({
        "http_api": {"key": "timers-key"},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [{"name": "feed", "allow_subscribe_for_client": true}]},
        "workers": 2
    });
    merge(&mut cfg, json!({ "client": client }));
    cfg
}

/// JSON commands and close codes over the raw WebSocket client of `ws_client`.
struct Client {
    ws: Ws,
}

impl Client {
    fn open(s: &Server) -> Client {
        let ws = Ws::open(s.addr());
        ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { ws }
    }

    fn send(&mut self, v: Value) {
        self.ws.send_json(&v);
    }

    /// Every JSON message until the close frame; returns them with the close code.
    fn until_close(&mut self, answer_pings: bool) -> (Vec<Value>, Option<u16>) {
        let mut seen = Vec::new();
        while let Ok(f) = self.ws.frame() {
            if f.op == CLOSE {
                return (seen, f.close_code());
            }
            for v in json_lines(&f.payload) {
                if answer_pings && v == json!({}) {
                    self.send(json!({}));
                }
                seen.push(v);
            }
        }
        (seen, None)
    }

    /// Reads until the reply with `id`.
    fn reply(&mut self, id: u32) -> Value {
        while let Ok(f) = self.ws.frame() {
            assert_ne!(f.op, CLOSE, "closed while waiting for reply {id}");
            for v in json_lines(&f.payload) {
                if v["id"] == id {
                    return v;
                }
            }
        }
        panic!("no reply {id}");
    }
}

#[test]
fn stale_connection_closed_3502() {
    let s = Server::start(timers_config(json!({"stale_close_delay": "1s"})));
    let mut c = Client::open(&s);
    let started = Instant::now();
    let (_, code) = c.until_close(false);
    assert_eq!(code, Some(3502));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "closed after {took:?}");
}

#[test]
fn missing_pong_closes_3012_and_pongs_keep_it_open() {
    let s = Server::start(timers_config(json!({"ping_interval": "2s", "pong_timeout": "1s"})));
    let token = jwt(SECRET, json!({"sub": "p", "exp": now() + 3600}));
    // A client that never answers: the first ping within 2 s, then 3012 a second later.
    let mut silent = Client::open(&s);
    silent.send(json!({"id": 1, "connect": {"token": token}}));
    let started = Instant::now();
    let (seen, code) = silent.until_close(false);
    assert_eq!(code, Some(3012), "{seen:?}");
    assert!(seen.contains(&json!({})), "a ping came first: {seen:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // A client that answers stays connected across several pings.
    let mut polite = Client::open(&s);
    polite.send(json!({"id": 1, "connect": {"token": token}}));
    polite.reply(1);
    let deadline = Instant::now() + Duration::from_millis(5500);
    let mut pings = 0;
    while Instant::now() < deadline {
        let f = polite.ws.frame().expect("connection stays open while pongs are sent");
        assert_ne!(f.op, CLOSE, "closed: {:?}", f.payload);
        if f.payload == b"{}" {
            pings += 1;
            polite.send(json!({}));
        }
    }
    assert!(pings >= 2, "pings seen: {pings}");
}

#[test]
fn expired_connection_closed_3005_unless_refreshed() {
    let s = Server::start(timers_config(json!({"expired_close_delay": "1s", "ping_interval": "60s"})));
    let short = |user: &str, ttl: u64| jwt(SECRET, json!({"sub": user, "exp": now() + ttl}));
    let mut c = Client::open(&s);
    c.send(json!({"id": 1, "connect": {"token": short("e", 2)}}));
    let r = c.reply(1);
    assert_eq!(r["connect"]["expires"], true, "{r}");
    let ttl = r["connect"]["ttl"].as_u64().unwrap();
    assert!((1..=2).contains(&ttl), "{r}");
    let started = Instant::now();
    let (_, code) = c.until_close(false);
    assert_eq!(code, Some(3005));
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());

    // Refreshed in time: still connected after the first token's expiry + delay.
    let mut r2 = Client::open(&s);
    r2.send(json!({"id": 1, "connect": {"token": short("e", 2)}}));
    r2.reply(1);
    r2.send(json!({"id": 2, "refresh": {"token": short("e", 3600)}}));
    let reply = r2.reply(2);
    assert_eq!(reply["refresh"]["expires"], true, "{reply}");
    std::thread::sleep(Duration::from_secs(4));
    r2.send(json!({"id": 3, "presence_stats": {"channel": "feed:x"}}));
    let reply = r2.reply(3);
    assert!(reply.get("error").is_some(), "answered (108 not available), so still connected: {reply}");
    // A refresh for another user is an invalid token.
    r2.send(json!({"id": 4, "refresh": {"token": short("mallory", 3600)}}));
    assert_eq!(r2.until_close(false).1, Some(3500));
}

#[test]
fn expired_subscription_unsubscribed_2501() {
    let s = Server::start(timers_config(json!({"expired_sub_close_delay": "1s", "ping_interval": "60s"})));
    let mut c = Client::open(&s);
    c.send(json!({"id": 1, "connect": {"token": jwt(SECRET, json!({"sub": "u", "exp": now() + 3600}))}}));
    c.reply(1);
    let sub_token = jwt(SECRET, json!({"sub": "u", "channel": "$feed:secret", "exp": now() + 2}));
    c.send(json!({"id": 2, "subscribe": {"channel": "$feed:secret", "token": sub_token}}));
    let r = c.reply(2);
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    let started = Instant::now();
    let push = loop {
        let f = c.ws.frame().expect("an unsubscribe push before EOF");
        assert_ne!(f.op, CLOSE, "closed instead of unsubscribing");
        let v: Value = serde_json::from_slice(&f.payload).unwrap();
        if v.get("push").is_some() {
            break v;
        }
    };
    assert_eq!(
        push,
        json!({"push": {"channel": "$feed:secret", "unsubscribe": {"code": 2501, "reason": "subscription expired"}}})
    );
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
}

/// Client-side channel names are ASCII (Centrifugo answers 107 otherwise); the server API
/// takes any UTF-8 name.
#[test]
fn non_ascii_client_channel_is_bad_request() {
    let s = Server::start(timers_config(json!({})));
    let mut c = Client::open(&s);
    c.send(json!({"id": 1, "connect": {"token": jwt(SECRET, json!({"sub": "a", "exp": now() + 3600}))}}));
    c.reply(1);
    c.send(json!({"id": 2, "subscribe": {"channel": "feed:ünï"}}));
    assert_eq!(c.reply(2), json!({"id": 2, "error": {"code": 107, "message": "bad request"}}));
    c.send(json!({"id": 3, "subscribe": {"channel": "feed:plain"}}));
    assert!(c.reply(3).get("subscribe").is_some());
}
