//! Centrifugo 2.x/3.x clients: `centrifuge` 2.8.5 from npm (installed as `centrifuge2`, with
//! `sockjs-client` 1.6.1) in Node, speaking the older client protocol over WebSocket (JSON and
//! protobuf) and over SockJS (websocket, xhr-streaming, xhr-polling). One scenario per
//! transport (`tests/js/legacy.js`): a JWT with `info`/`b64info`, subscribe, API publications,
//! a client publication, presence and its stats, history, join/leave, recovery of what was
//! published while the transport was broken, and a token signed with another key. The browser
//! bundles of both packages in Chromium over each SockJS transport, cross-origin. Plus raw
//! frames: the first message decides the protocol, and malformed old frames close cleanly.
//!
//! Without Node or the packages (`npm ci --prefix tests/js`) a test is skipped with a
//! message, unless `CI` is set: then it fails.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{client_frame, Ws, TEXT};

const SECRET: &str = "legacy-test-secret-0123456789";

/// Centrifugo 3's option names where it had them (`sockjs`, `sockjs_heartbeat_delay`,
/// `history_recover`).
fn legacy_config() -> Value {
    json!({
        "http_api": {"key": KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "sockjs": true,
        "sockjs_heartbeat_delay": 3,
        "channel": {"namespaces": [{
            "name": "chat",
            "allow_subscribe_for_client": true,
            "allow_publish_for_subscriber": true,
            "presence": true,
            "allow_presence_for_subscriber": true,
            "join_leave": true,
            "force_push_join_leave": true,
            "history_size": 100,
            "history_ttl": "300s",
            "allow_history_for_subscriber": true,
            "history_recover": true
        }]},
        "workers": 2
    })
}

/// Node and the packages, or `None` (skipped; a failure in CI).
fn node_ready(test: &str) -> bool {
    let root = repo_root();
    let missing = if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        Some("`node` is not on PATH")
    } else if !root.join("tests/js/node_modules/centrifuge2/package.json").exists()
        || !root.join("tests/js/node_modules/sockjs-client/package.json").exists()
    {
        Some("tests/js/node_modules lacks centrifuge2 or sockjs-client (npm ci --prefix tests/js)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why}, and CI is set"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Runs one scenario of `tests/js/legacy.js`; what the SDK saw.
fn scenario(test: &str, s: &Server, url: &str, extra: Value) -> Option<Value> {
    if !node_ready(test) {
        return None;
    }
    let mut args = json!({"url": url, "api": s.url("/api"), "key": KEY, "secret": SECRET});
    merge(&mut args, extra);
    let out = Command::new("node")
        .arg("legacy.js")
        .arg(args.to_string())
        .current_dir(repo_root().join("tests/js"))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test}: the scenario failed: {stdout}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        s.stderr()
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{test}: {e}: {stdout}"));
    assert!(!s.stderr().contains("panicked"), "the server panicked:\n{}", s.stderr());
    Some(v)
}

/// What every transport must show; `unlimited`: history without a limit returns everything.
fn check(v: &Value, transport: &str, unlimited: bool) {
    assert_eq!(v["connect"]["transport"], transport, "{v}");
    assert_eq!(v["connect"]["client"].as_str().map(str::len), Some(36), "a UUID client id: {v}");
    assert_eq!(v["subscribe"]["recoverable"], true, "history_recover makes it recoverable: {v}");
    let live: Vec<Value> = v["live"].as_array().unwrap().iter().map(|p| p["data"].clone()).collect();
    assert_eq!(live, vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3}), json!({"n": 4, "from": "bob"})], "{v}");
    let offsets: Vec<u64> = v["live"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "consecutive offsets: {v}");
    let mut presence: Vec<Value> = v["presence"].as_array().unwrap().clone();
    presence.sort_by_key(|p| p["user"].as_str().unwrap().to_string());
    assert_eq!(
        presence,
        vec![json!({"user": "alice", "info": {"name": "alice"}}), json!({"user": "bob", "info": null})],
        "presence with the token's info: {v}"
    );
    assert_eq!(v["presence_stats"], json!({"num_clients": 2, "num_users": 2}), "{v}");
    assert_eq!(v["history"]["n"], 4, "{v}");
    assert_eq!(v["history"]["first"], json!({"n": 1}), "{v}");
    assert_eq!(v["history"]["epoch"], true, "{v}");
    assert_eq!(v["history_nolimit"], if unlimited { 4 } else { 0 }, "{v}");
    assert_eq!(v["rpc"]["err"]["code"], 108, "no RPC proxy: not available: {v}");
    assert_eq!(v["joins"], json!(["alice", "bob"]), "{v}");
    assert_eq!(v["leaves"], json!(["bob"]), "{v}");
    assert_eq!(v["recovery"]["recovered"], true, "{v}");
    assert_eq!(v["recovery"]["isResubscribe"], true, "{v}");
    let rec: Vec<Value> = v["recovery"]["pubs"].as_array().unwrap().iter().map(|p| p["data"].clone()).collect();
    assert_eq!(rec, vec![json!({"n": 5}), json!({"n": 6})], "recovered after the reconnect: {v}");
    assert_eq!(v["bad_token"], json!({"reason": "invalid token", "reconnect": false}), "{v}");
}

fn send_text(ws: &mut Ws, text: &str) {
    ws.send(&client_frame(true, TEXT, text.as_bytes(), true)).expect("send");
}

fn recv_text(ws: &mut Ws) -> String {
    let f = ws.frame().expect("a frame");
    String::from_utf8(f.payload).expect("a text frame")
}

fn ws_url(s: &Server, query: &str) -> String {
    format!("ws://{}/connection/websocket{query}", s.addr())
}

#[test]
fn centrifuge_js2_websocket_json() {
    // Centrifugo 3's `use_unlimited_history_by_default`: history without a limit is all of it.
    let mut cfg = legacy_config();
    merge(&mut cfg, json!({"use_unlimited_history_by_default": true}));
    let s = Server::start(cfg);
    let Some(v) = scenario("centrifuge_js2_websocket_json", &s, &ws_url(&s, ""), json!({})) else { return };
    check(&v, "websocket", true);
}

#[test]
fn centrifuge_js2_websocket_protobuf() {
    let s = Server::start(legacy_config());
    let url = ws_url(&s, "?format=protobuf");
    let Some(v) = scenario("centrifuge_js2_websocket_protobuf", &s, &url, json!({"protobuf": true})) else { return };
    check(&v, "websocket", false);
}

#[test]
fn centrifuge_js2_sockjs_websocket() {
    let s = Server::start(legacy_config());
    let url = s.url("/connection/sockjs");
    let Some(v) = scenario("centrifuge_js2_sockjs_websocket", &s, &url, json!({"sockjs": "websocket"})) else { return };
    check(&v, "sockjs-websocket", false);
}

#[test]
fn centrifuge_js2_sockjs_xhr_streaming() {
    let s = Server::start(legacy_config());
    let url = s.url("/connection/sockjs");
    let Some(v) = scenario("centrifuge_js2_sockjs_xhr_streaming", &s, &url, json!({"sockjs": "xhr-streaming"})) else {
        return;
    };
    check(&v, "sockjs-xhr-streaming", false);
}

#[test]
fn centrifuge_js2_sockjs_xhr_polling() {
    let s = Server::start(legacy_config());
    let url = s.url("/connection/sockjs");
    let Some(v) = scenario("centrifuge_js2_sockjs_xhr_polling", &s, &url, json!({"sockjs": "xhr-polling"})) else {
        return;
    };
    check(&v, "sockjs-xhr-polling", false);
}

/// SockJS is off unless switched on: its paths are 404, `/info` included.
#[test]
fn sockjs_is_off_by_default() {
    let s = Server::start(config());
    assert_eq!(s.request("GET", "/connection/sockjs/info", &[]).status, 404);
    let s = Server::start(config_with(json!({"sockjs": {"enabled": true, "handler_prefix": "/sjs"}})));
    let info = s.request("GET", "/sjs/info", &[]);
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["websocket"], true);
    assert_eq!(info.json()["cookie_needed"], false);
    assert_eq!(s.request("GET", "/sjs", &[]).text(), "Welcome to SockJS!\n");
    assert_eq!(s.request("GET", "/sjs/iframe.html", &[]).status, 404);
    // Centrifugo 3's names: on, with the iframe transports' script reported unused.
    let s = Server::start(config_with(json!({"sockjs": true, "sockjs_url": "https://cdn.example/sockjs.min.js"})));
    assert_eq!(s.request("GET", "/connection/sockjs/info", &[]).status, 200);
    assert!(s.stderr().contains("sockjs.url"), "{}", s.stderr());
}

/// SockJS xhr-polling by hand: `o` for a new session, `xhr_send` errors as SockJS answers
/// them, the connect reply in an `a[..]` frame, a heartbeat when nothing is queued.
#[test]
fn sockjs_xhr_polling_frames() {
    let s = Server::start(config_with(
        json!({"sockjs": {"enabled": true, "heartbeat_delay": "1s"}, "client": {"insecure": true}}),
    ));
    let p = "/connection/sockjs/000/abcdef";
    assert_eq!(s.post(&format!("{p}/xhr_send"), b"[\"x\"]", &[]).status, 404, "no such session");
    let r = s.post(&format!("{p}/xhr"), b"", &[]);
    assert_eq!((r.status, r.text()), (200, "o\n".to_string()));
    assert_eq!(s.post(&format!("{p}/xhr_send"), b"", &[]).status, 500, "payload expected");
    assert_eq!(s.post(&format!("{p}/xhr_send"), b"[nope", &[]).status, 500, "broken JSON");
    let send = s.post(&format!("{p}/xhr_send"), br#"["{\"id\":1,\"params\":{}}"]"#, &[]);
    assert_eq!(send.status, 204);
    let r = s.post(&format!("{p}/xhr"), b"", &[]);
    let text = r.text();
    assert!(text.starts_with("a[\"{\\\"id\\\":1,\\\"result\\\":{\\\"client\\\":"), "{text}");
    let r = s.post(&format!("{p}/xhr"), b"", &[]);
    assert_eq!(r.text(), "h\n", "a heartbeat after heartbeat_delay");
    // A malformed old-protocol message closes the session with that era's bad request.
    assert_eq!(s.post(&format!("{p}/xhr_send"), br#"["{\"id\":2,\"method\":1,\"params\":[1]}"]"#, &[]).status, 204);
    let r = s.post(&format!("{p}/xhr"), b"", &[]);
    assert_eq!(r.text(), "c[3003,\"{\\\"reason\\\":\\\"bad request\\\",\\\"reconnect\\\":false}\"]\n");
}

/// The first message decides: an older client's connect gets an old reply, a ping command
/// its empty result, an unknown method number "method not found"; today's client on the same
/// endpoint is unaffected.
#[test]
fn websocket_first_message_picks_the_protocol() {
    let s = Server::start(config_with(json!({"client": {"insecure": true}})));
    let mut old = Ws::open(s.addr());
    send_text(&mut old, r#"{"id":1,"params":{"name":"py"}}"#);
    let r: Value = serde_json::from_str(&recv_text(&mut old)).unwrap();
    assert_eq!(r["id"], 1);
    assert!(r["result"]["client"].is_string(), "{r}");
    send_text(&mut old, "{\"id\":2,\"method\":7}\n{\"id\":3,\"method\":42,\"params\":{}}");
    let text = recv_text(&mut old);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let text = if lines.len() < 2 { format!("{text}\n{}", recv_text(&mut old)) } else { text };
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0], json!({"id": 2, "result": {}}));
    assert_eq!(lines[1], json!({"id": 3, "error": {"code": 104, "message": "method not found"}}));
    // A publication reaches it as an old push.
    send_text(&mut old, r#"{"id":4,"method":1,"params":{"channel":"news"}}"#);
    let _ = recv_text(&mut old);
    s.api("publish", json!({"channel": "news", "data": {"x": 1}}));
    let push: Value = serde_json::from_str(&recv_text(&mut old)).unwrap();
    assert_eq!(push, json!({"result": {"channel": "news", "data": {"data": {"x": 1}, "offset": 1}}}));

    let mut new = Ws::open(s.addr());
    send_text(&mut new, r#"{"id":1,"connect":{}}"#);
    let r: Value = serde_json::from_str(&recv_text(&mut new)).unwrap();
    assert!(r["connect"]["client"].is_string(), "{r}");
}

/// Malformed old frames close with that era's code and JSON reason, never a crash.
#[test]
fn malformed_old_frames_close_cleanly() {
    let s = Server::start(config_with(json!({"client": {"insecure": true}})));
    for bad in [r#"{"id":1,"params":{}}"#.to_string() + "\n{oops", r#"{"id":1,"method":"x","params":"str"}"#.into()] {
        let mut c = Ws::open(s.addr());
        send_text(&mut c, &bad);
        let (code, reason) = c.expect_close(Duration::from_secs(5));
        assert_eq!(code, 3003, "{bad}");
        assert_eq!(reason, r#"{"reason":"bad request","reconnect":false}"#);
    }
    let r = s.request("GET", "/health", &[]);
    assert_eq!(r.status, 200);
}

/// In Chromium, from a page on another origin (allowed by `client.allowed_origins`): the
/// browser bundles of centrifuge 2.8.5 and sockjs-client 1.6.1 connect over each SockJS
/// transport in turn, subscribe, publish, and receive their publication back.
#[test]
fn chromium_centrifuge_js2_over_sockjs() {
    let test = "chromium_centrifuge_js2_over_sockjs";
    if !node_ready(test) {
        return;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists()
        || !repo_root().join("tests/js/node_modules/playwright-core/package.json").exists()
    {
        unavailable(
            test,
            "Chromium or playwright-core is missing",
            "apt-get install chromium; npm ci --prefix tests/js",
        );
        return;
    }
    let page_port = free_port();
    let mut cfg = legacy_config();
    merge(&mut cfg, json!({"client": {"allowed_origins": [format!("http://127.0.0.1:{page_port}")]}}));
    let s = Server::start(cfg);
    let out = Command::new("node")
        .arg(repo_root().join("tests/js/browser_sockjs.js"))
        .env("GYRE_URL", format!("http://127.0.0.1:{}", s.addr().port()))
        .env("PAGE_PORT", page_port.to_string())
        .env("SECRET", SECRET)
        .env("CHANNEL", "chat:browser")
        .env("CHROMIUM", chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}\nserver: {}", String::from_utf8_lossy(&out.stderr), s.stderr());
    let done: Value = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).next_back().expect("a report");
    let runs: Vec<(Value, Value)> =
        done["runs"].as_array().unwrap().iter().map(|r| (r["transport"].clone(), r["data"].clone())).collect();
    assert_eq!(
        runs,
        vec![
            (json!("sockjs-websocket"), json!({"from": "websocket"})),
            (json!("sockjs-xhr-streaming"), json!({"from": "xhr-streaming"})),
            (json!("sockjs-xhr-polling"), json!({"from": "xhr-polling"})),
        ],
        "{done}"
    );
    assert_eq!(done["pageErrors"], json!([]), "{done}");
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
}
