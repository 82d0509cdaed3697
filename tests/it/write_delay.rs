//! `client.write_delay`, `client.max_messages_in_frame` and `client.reply_without_queue` over a
//! raw WebSocket client: what a connection is sent waits out the delay and then leaves
//! together, in order; a connection with a full batch queued, and (with the option) the
//! replies to its commands, are written at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

fn delay_config(client: Value) -> Value {
    let mut cfg = json!({
        "http_api": {"key": KEY},
        "client": {"insecure": true},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
        "workers": 2
    });
    merge(&mut cfg, json!({ "client": client }));
    cfg
}

/// Reads JSON messages until one satisfies `done` (or `deadline` passes: `None`); returns
/// every message read and when the last frame arrived.
fn read_until(ws: &mut Ws, deadline: Instant, mut done: impl FnMut(&Value) -> bool) -> Option<Vec<Value>> {
    let mut seen = Vec::new();
    loop {
        let f = ws.frame_until(deadline).ok()?;
        assert_ne!(f.op, CLOSE, "closed: {:?} after {seen:?}", f.close());
        for v in json_lines(&f.payload) {
            let last = done(&v);
            seen.push(v);
            if last {
                return Some(seen);
            }
        }
    }
}

fn publish(s: &Server, channel: &str, n: u32) {
    let r = s.api("publish", json!({"channel": channel, "data": {"n": n}}));
    assert!(r.get("error").is_none(), "{r}");
}

#[test]
fn frames_wait_out_the_delay_then_leave_together_in_order() {
    let delay = Duration::from_millis(400);
    let s = Server::start(delay_config(json!({"write_delay": "400ms", "max_messages_in_frame": -1})));
    let mut ws = Ws::open(s.addr());
    // Replies wait too (as Centrifugo's replies go through the connection's queue).
    let t0 = Instant::now();
    ws.send_json(&json!({"id": 1, "connect": {}}));
    let got = read_until(&mut ws, t0 + Duration::from_secs(10), |v| v["id"] == 1).expect("connect reply");
    assert!(got.last().unwrap()["connect"]["client"].is_string(), "{got:?}");
    assert!(t0.elapsed() >= delay - Duration::from_millis(50), "the reply came after {:?}", t0.elapsed());
    ws.send_json(&json!({"id": 2, "subscribe": {"channel": "news"}}));
    read_until(&mut ws, Instant::now() + Duration::from_secs(10), |v| v["id"] == 2).expect("subscribe reply");

    let t1 = Instant::now();
    for n in 0..20 {
        publish(&s, "news", n);
    }
    let got = read_until(&mut ws, t1 + Duration::from_secs(10), |v| v["push"]["pub"]["data"]["n"] == 19)
        .expect("the 20 publications");
    let arrived = t1.elapsed();
    let ns: Vec<_> = got.iter().map(|v| v["push"]["pub"]["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (0..20).collect::<Vec<u64>>(), "every publication once, in order");
    assert!(arrived >= delay - Duration::from_millis(50), "delivered after {arrived:?}");

    // Without a delay the same server setup answers at once (a control for the bound above).
    let s2 = Server::start(delay_config(json!({})));
    let mut ws2 = Ws::open(s2.addr());
    let t2 = Instant::now();
    ws2.send_json(&json!({"id": 1, "connect": {}}));
    read_until(&mut ws2, t2 + Duration::from_secs(10), |v| v["id"] == 1).expect("connect reply");
    assert!(t2.elapsed() < delay, "without write_delay the reply came after {:?}", t2.elapsed());
}

#[test]
fn a_full_batch_and_replies_do_not_wait() {
    let s = Server::start(delay_config(json!({
        "write_delay": "2s", "max_messages_in_frame": 3, "reply_without_queue": true
    })));
    let mut ws = Ws::open(s.addr());
    let t0 = Instant::now();
    ws.send_json(&json!({"id": 1, "connect": {}}));
    ws.send_json(&json!({"id": 2, "subscribe": {"channel": "news"}}));
    read_until(&mut ws, t0 + Duration::from_secs(10), |v| v["id"] == 2).expect("replies");
    assert!(t0.elapsed() < Duration::from_millis(1500), "replies came after {:?}", t0.elapsed());

    // One publication waits out the delay.
    let t1 = Instant::now();
    publish(&s, "news", 0);
    assert!(read_until(&mut ws, t1 + Duration::from_millis(1000), |_| true).is_none(), "pushed before the delay");
    let got = read_until(&mut ws, t1 + Duration::from_secs(10), |_| true).expect("the publication");
    assert_eq!(got[0]["push"]["pub"]["data"]["n"], 0);
    assert!(t1.elapsed() >= Duration::from_millis(1500), "pushed after {:?}", t1.elapsed());

    // Three queued make a full batch: written at once, in order.
    let t2 = Instant::now();
    for n in 1..=3 {
        publish(&s, "news", n);
    }
    let got = read_until(&mut ws, t2 + Duration::from_secs(10), |v| v["push"]["pub"]["data"]["n"] == 3).expect("3");
    let ns: Vec<_> = got.iter().map(|v| v["push"]["pub"]["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, vec![1, 2, 3]);
    assert!(t2.elapsed() < Duration::from_millis(1500), "a full batch came after {:?}", t2.elapsed());
}
