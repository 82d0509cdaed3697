//! `/metrics` (`prometheus.enabled`) under real traffic: WebSocket clients connect, subscribe
//! and receive publications sent through the HTTP API, and the scraped counters and gauges
//! move by exactly what was done. Also: `/metrics` is 404 unless enabled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{json_lines, Ws};

const SECRET: &str = "metrics-secret";

fn metrics_config() -> Value {
    config_with(json!({
        "prometheus": {"enabled": true},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [
            {"name": "hist", "history_size": 100, "history_ttl": "300s", "presence": true},
            {"name": "nohist"},
            {"name": "feed", "allow_subscribe_for_client": true}
        ]},
        "workers": 2
    }))
}

/// One scrape: `name{labels}` → value (lines of the text format; `# ` lines skipped).
fn scrape(s: &Server) -> HashMap<String, f64> {
    let r = s.request("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.header("content-type"));
    let text = r.text();
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (k, v) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        out.insert(k.to_string(), v.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().collect();
        keys.sort();
        panic!("metric {key} missing; have:\n{keys:#?}")
    })
}

/// The change of `key` between two scrapes (absent before = 0).
fn delta(a: &HashMap<String, f64>, b: &HashMap<String, f64>, key: &str) -> f64 {
    get(b, key) - a.get(key).copied().unwrap_or(0.0)
}

/// Opens a client connection for `user` and subscribes it to `channel`.
fn client(s: &Server, user: &str, channel: &str) -> Ws {
    let mut ws = Ws::open(s.addr());
    let token = jwt(SECRET, json!({"sub": user}));
    ws.send_json(&json!({"id": 1, "connect": {"token": token}}));
    wait_reply(&mut ws, 1);
    ws.send_json(&json!({"id": 2, "subscribe": {"channel": channel}}));
    let r = wait_reply(&mut ws, 2);
    assert!(r.get("error").is_none(), "subscribe failed: {r}");
    ws
}

/// Reads messages until the reply `id`; returns it.
fn wait_reply(ws: &mut Ws, id: u64) -> Value {
    loop {
        let f = ws.frame().unwrap_or_else(|e| panic!("connection ended before reply {id}: {e}"));
        for v in json_lines(&f.payload) {
            if v["id"] == id {
                return v;
            }
        }
    }
}

/// Reads until `n` publication pushes arrived.
fn read_pubs(ws: &mut Ws, n: usize) {
    let mut got = 0;
    while got < n {
        let f = ws.frame().unwrap_or_else(|e| panic!("connection ended after {got} of {n} publications: {e}"));
        for v in json_lines(&f.payload) {
            if v["push"]["pub"].is_object() {
                got += 1;
            }
        }
    }
}

/// Scrapes until `cond` holds (gauges follow connections as workers handle them).
fn scrape_until(s: &Server, what: &str, cond: impl Fn(&HashMap<String, f64>) -> bool) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(s);
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} never held; last scrape:\n{m:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_move_with_real_traffic() {
    let s = Server::start(metrics_config());
    let before = scrape(&s);
    assert_eq!(get(&before, "centrifugo_node_num_clients"), 0.0);
    assert_eq!(get(&before, "centrifugo_node_num_nodes"), 1.0);
    assert!(before.keys().any(|k| k.starts_with("centrifugo_node_build{version=")), "build info");

    // Two users on one channel, a third connection of the first user on another channel.
    let mut a = client(&s, "alice", "feed:news");
    let mut b = client(&s, "bob", "feed:news");
    let c = client(&s, "alice", "feed:other");

    // A client publish the namespace does not allow: an error reply (103) to the client.
    a.send_json(&json!({"id": 3, "publish": {"channel": "feed:news", "data": {}}}));
    let r = wait_reply(&mut a, 3);
    assert_eq!(r["error"]["code"], 103, "{r}");

    // Five publications over the HTTP API reach both subscribers of feed:news.
    for i in 0..5 {
        let r = s.api("publish", json!({"channel": "feed:news", "data": {"i": i}}));
        assert_eq!(r, json!({"result": {}}));
    }
    read_pubs(&mut a, 5);
    read_pubs(&mut b, 5);
    // One into a channel with history, one failing API call (no history in `nohist`).
    assert!(s.api("publish", json!({"channel": "hist:x", "data": 1}))["result"]["offset"] == 1);
    assert_eq!(s.api("history", json!({"channel": "nohist:x"}))["error"]["code"], 108);

    let after = scrape_until(&s, "three clients", |m| m.get("centrifugo_node_num_clients") == Some(&3.0));
    assert_eq!(get(&after, "centrifugo_node_num_users"), 2.0, "alice and bob");
    assert_eq!(get(&after, "centrifugo_node_num_subscriptions"), 3.0);
    assert!(get(&after, "centrifugo_node_num_channels") >= 2.0);

    let pubs = r#"{type="publication"}"#;
    assert_eq!(delta(&before, &after, &format!("centrifugo_node_messages_sent_count{pubs}")), 6.0);
    assert_eq!(delta(&before, &after, &format!("centrifugo_node_messages_received_count{pubs}")), 5.0);
    let sent = r#"centrifugo_transport_messages_sent{transport="websocket",frame_type="publication"}"#;
    assert_eq!(delta(&before, &after, sent), 10.0, "five publications to two subscribers");
    let size = r#"centrifugo_transport_messages_sent_size{transport="websocket",frame_type="publication"}"#;
    assert!(delta(&before, &after, size) >= 10.0 * 40.0, "frame bytes counted");
    let received = r#"centrifugo_transport_messages_received{transport="websocket"}"#;
    assert_eq!(delta(&before, &after, received), 7.0, "3 connects, 3 subscribes, 1 publish");
    assert_eq!(get(&after, r#"centrifugo_client_num_reply_errors{method="publish",code="103"}"#), 1.0);

    let api = |m: &str| format!(r#"centrifugo_api_command_duration_seconds_count{{protocol="http",method="{m}"}}"#);
    assert_eq!(delta(&before, &after, &api("publish")), 6.0);
    assert_eq!(delta(&before, &after, &api("history")), 1.0);
    assert!(
        get(&after, r#"centrifugo_api_command_duration_seconds_sum{protocol="http",method="publish"}"#) > 0.0,
        "durations add up"
    );
    assert_eq!(
        get(
            &after,
            r#"centrifugo_api_command_duration_seconds_histogram_bucket{protocol="http",method="publish",le="+Inf"}"#
        ),
        6.0
    );
    assert_eq!(
        get(&after, r#"centrifugo_api_command_errors_total{protocol="http",method="history",error="108"}"#),
        1.0
    );

    // Per-worker loop figures, one series per worker; the workers exchanged messages.
    let batches: f64 =
        (0..2).map(|w| get(&after, &format!(r#"gyre_worker_loop_inbox_batches_total{{worker="{w}"}}"#))).sum();
    assert!(batches > 0.0, "workers handled inbox batches");
    for w in 0..2 {
        get(&after, &format!(r#"gyre_worker_loop_inbox_seconds_total{{worker="{w}"}}"#));
        get(&after, &format!(r#"gyre_worker_loop_lag_seconds{{worker="{w}"}}"#));
    }

    // Gauges follow disconnects.
    drop((a, b, c));
    let gone = scrape_until(&s, "no clients", |m| m.get("centrifugo_node_num_clients") == Some(&0.0));
    assert_eq!(get(&gone, "centrifugo_node_num_subscriptions"), 0.0);
    assert_eq!(get(&gone, "centrifugo_node_num_users"), 0.0);
    // Counters never go back.
    assert!(get(&gone, sent) >= get(&after, sent));
}

#[test]
fn metrics_and_admin_are_off_by_default() {
    let s = Server::start(config());
    assert_eq!(s.request("GET", "/metrics", &[]).status, 404);
    assert_eq!(s.request("GET", "/", &[]).status, 404);
    assert_eq!(s.post("/admin/auth", b"password=x", &[]).status, 404);
}
