//! centrifuge-js (5.x, `tests/js/agent.js`) over HTTP-streaming (JSON and protobuf) and SSE,
//! each alone and as fallbacks after a WebSocket that cannot be had (its endpoint answers 404,
//! or `websocket.disabled`): connect, server-side and client-side subscriptions, publications
//! from the API, client publish, presence, history, recovery after a cut and the disconnect
//! code the SDK sees. In Node the agent passes Node's fetch and ReadableStream and the
//! `eventsource` package to the SDK.
//!
//! In Chromium (Debian's, driven by playwright-core from `tests/js/browser_fallback.js`) a page
//! of another origin loads the SDK's browser bundle and connects with the fallback list
//! websocket → http_stream → sse while WebSocket is blocked: it must connect over http_stream
//! and receive a publication.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::transports::{api_publish, token, transports_config};
use crate::util::*;

fn assert_no_panic(s: &Server) {
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

fn ws_endpoint(s: &Server) -> String {
    format!("ws://127.0.0.1:{}/connection/websocket", s.port)
}

/// A WebSocket endpoint of `s` that answers 404.
fn refused_ws_endpoint(s: &Server) -> String {
    format!("ws://127.0.0.1:{}/connection/no-websocket-here", s.port)
}

fn entry(transport: &str, endpoint: String) -> Value {
    json!({"transport": transport, "endpoint": endpoint})
}

/// The fallback list websocket → http_stream → sse of `s`, with `websocket` as the first
/// endpoint.
fn fallback_list(s: &Server, websocket: String) -> Value {
    json!([
        entry("websocket", websocket),
        entry("http_stream", s.url("/connection/http_stream")),
        entry("sse", s.url("/connection/sse")),
    ])
}

/// Connects client `c` of agent `a` with the transport list `transports`.
fn connect(a: &mut Agent, c: &str, s: &Server, transports: &Value, token: &str, protobuf: bool) {
    a.send(json!({
        "op": "connect", "c": c, "transports": transports, "emulationEndpoint": s.url("/emulation"),
        "token": token, "protobuf": protobuf
    }));
}

/// The whole flow over `transports`, which must end up on `expected`.
fn flow(test: &str, cfg_patch: Value, transports: impl Fn(&Server) -> Value, expected: &str, protobuf: bool) {
    let s = Server::start(transports_config(cfg_patch));
    let Some(mut a) = Agent::start(Sdk::Js, test) else { return };
    let list = transports(&s);
    let t = token("u1", json!({"channels": ["srv:feed"]}));
    connect(&mut a, "a", &s, &list, &t, protobuf);
    let connected = a.wait("a connected", ev("a", "connected"));
    assert_eq!(connected["transport"], expected, "{connected}");
    let a_id = connected["client"].as_str().expect("client id").to_string();
    assert_eq!(a.count(|e| e["c"] == "a" && e["ev"] == "ws.open"), 0, "no WebSocket opened");
    match expected {
        "sse" => {
            a.wait("the EventSource opened", ev("a", "es.open"));
        }
        _ => {
            let open = a.wait("the stream answered", ev("a", "http.open"));
            assert_eq!(open["status"], 200, "{open}");
        }
    }

    // Server-side subscription from the token.
    let sd = a.wait("server-side subscription", |e| ev("a", "server.subscribed")(e) && e["ch"] == "srv:feed");
    assert_eq!(sd["recoverable"], true, "{sd}");

    // Client-side subscriptions: through /emulation, replies on the stream.
    a.sub("a", "chat:room", json!({}));
    a.sub("a", "rec:x", json!({}));
    a.wait("subscribed to chat:room", sev("a", "chat:room", "sub.subscribed"));
    let rec = a.wait("subscribed to rec:x", sev("a", "rec:x", "sub.subscribed"));
    assert_eq!((rec["recoverable"].clone(), rec["offset"].clone()), (json!(true), json!(0)), "{rec}");
    let em = a.wait("an emulation request", ev("a", "emulation"));
    assert_eq!(em["status"], 204, "{em}");

    for i in 1..=5 {
        api_publish(&s, "chat:room", json!({"n": i, "text": format!("é✓ {i}")}));
    }
    let pubs = a.wait_n("5 publications", 5, sev("a", "chat:room", "sub.publication"));
    assert_eq!(ns(&pubs), vec![1, 2, 3, 4, 5]);
    assert_eq!(offsets(&pubs), vec![1, 2, 3, 4, 5]);
    assert_eq!(pubs[4]["data"]["text"], "é✓ 5");

    assert_eq!(a.call("a", "publish", "chat:room", json!({"data": {"from": "a"}})), Ok(json!({})));
    let own = a.wait_n("its own publication", 6, sev("a", "chat:room", "sub.publication")).remove(5);
    assert_eq!(own["data"], json!({"from": "a"}), "{own}");
    assert_eq!(own["info"]["user"], "u1", "{own}");
    assert_eq!(own["info"]["client"], a_id.as_str(), "{own}");
    assert_eq!(a.call("a", "publish", "rec:x", json!({"data": {}})), Err(103), "publish not allowed in rec");

    let p = a.call("a", "presence", "chat:room", json!({})).expect("presence");
    assert_eq!(p["clients"][&a_id]["user"], "u1", "{p}");
    assert_eq!(a.call("a", "presenceStats", "chat:room", json!({})), Ok(json!({"numClients": 1, "numUsers": 1})));
    let h = a.call("a", "history", "chat:room", json!({"opts": {"limit": 10}})).expect("history");
    assert_eq!(offsets(h["publications"].as_array().unwrap()), vec![1, 2, 3, 4, 5, 6], "{h}");
    assert_eq!(h["offset"], 6, "{h}");

    // Recovery after a cut: publications sent while the client cannot reconnect come back.
    for i in 1..=3 {
        api_publish(&s, "rec:x", json!({"n": i}));
        api_publish(&s, "srv:feed", json!({"n": i}));
    }
    a.wait_n("3 on rec:x", 3, sev("a", "rec:x", "sub.publication"));
    a.wait_n("3 on srv:feed", 3, |e| ev("a", "server.publication")(e) && e["ch"] == "srv:feed");
    a.send(json!({"op": "cut", "c": "a", "block": true}));
    let cut = a.wait("cut", ev("a", "cut"));
    assert_eq!(cut["sockets"], 1, "one live stream was cut: {cut}");
    a.wait("reconnecting", |e| ev("a", "connecting")(e) && e["code"] != 0);
    a.wait("a blocked reconnect attempt", ev("a", "blocked"));
    for i in 4..=10 {
        api_publish(&s, "rec:x", json!({"n": i}));
        api_publish(&s, "srv:feed", json!({"n": i}));
    }
    assert_eq!(a.count(ev("a", "connected")), 1, "away while publishing");
    a.send(json!({"op": "unblock", "c": "a"}));
    let again = a.wait_n("reconnected", 2, ev("a", "connected")).remove(1);
    assert_eq!(again["transport"], expected, "the SDK keeps the transport that worked: {again}");
    let sd = a.wait_n("rec:x resubscribed", 2, sev("a", "rec:x", "sub.subscribed")).remove(1);
    assert_eq!((sd["wasRecovering"].clone(), sd["recovered"].clone()), (json!(true), json!(true)), "{sd}");
    let pubs = a.wait_n("10 on rec:x", 10, sev("a", "rec:x", "sub.publication"));
    assert_eq!(ns(&pubs), (1..=10).collect::<Vec<_>>(), "rec:x in order, no gaps, no duplicates");
    let srv = a.wait_n("10 on srv:feed", 10, |e| ev("a", "server.publication")(e) && e["ch"] == "srv:feed");
    assert_eq!(ns(&srv), (1..=10).collect::<Vec<_>>(), "srv:feed recovered through the connect command");
    api_publish(&s, "chat:room", json!({"n": 7}));
    a.wait_n("a live publication after the reconnect", 7, sev("a", "chat:room", "sub.publication"));

    // The API disconnect: the SDK sees 3503 and does not reconnect.
    let r = s.api("disconnect", json!({"user": "u1"}));
    assert!(r.get("error").is_none(), "{r}");
    let d = a.wait("disconnected", ev("a", "disconnected"));
    assert_eq!((d["code"].clone(), d["reason"].clone()), (json!(3503), json!("force disconnect")), "{d}");
    a.settle(Duration::from_millis(700));
    assert_eq!(a.count(ev("a", "connected")), 2, "no reconnect after 3503");
    assert_eq!(a.count(sev("a", "rec:x", "sub.publication")), 10, "no duplicates");
    assert_eq!(a.count(|e| e["c"] == "a" && e["ev"] == "sub.error"), 0, "subscription errors");
    assert_no_panic(&s);
}

#[test]
fn js_http_stream_json() {
    flow(
        "js_http_stream_json",
        json!({}),
        |s| json!([entry("http_stream", s.url("/connection/http_stream"))]),
        "http_stream",
        false,
    );
}

#[test]
fn js_http_stream_protobuf() {
    flow(
        "js_http_stream_protobuf",
        json!({}),
        |s| json!([entry("http_stream", s.url("/connection/http_stream"))]),
        "http_stream",
        true,
    );
}

#[test]
fn js_sse() {
    flow("js_sse", json!({}), |s| json!([entry("sse", s.url("/connection/sse"))]), "sse", false);
}

/// websocket (its endpoint answers 404) → http_stream → sse: connects over http_stream.
#[test]
fn js_fallback_from_a_refused_websocket_to_http_stream() {
    flow(
        "js_fallback_from_a_refused_websocket_to_http_stream",
        json!({}),
        |s| fallback_list(s, refused_ws_endpoint(s)),
        "http_stream",
        false,
    );
}

/// The same with protobuf.
#[test]
fn js_fallback_from_a_refused_websocket_to_http_stream_protobuf() {
    flow(
        "js_fallback_from_a_refused_websocket_to_http_stream_protobuf",
        json!({}),
        |s| fallback_list(s, refused_ws_endpoint(s)),
        "http_stream",
        true,
    );
}

/// `websocket.disabled`: the real endpoint is gone, the SDK moves on to http_stream.
#[test]
fn js_fallback_with_websocket_disabled() {
    flow(
        "js_fallback_with_websocket_disabled",
        json!({"websocket": {"disabled": true}}),
        |s| fallback_list(s, ws_endpoint(s)),
        "http_stream",
        false,
    );
}

/// WebSocket refused and http_stream not enabled: the SDK ends up on SSE.
#[test]
fn js_fallback_to_sse() {
    flow(
        "js_fallback_to_sse",
        json!({"http_stream": {"enabled": false}}),
        |s| fallback_list(s, refused_ws_endpoint(s)),
        "sse",
        false,
    );
}

/// Token failures seen by the SDK over the emulation transports: a bad signature is a
/// terminal 3500; an expired token makes the SDK ask for a new one and connect with it.
#[test]
fn js_emulation_token_errors() {
    let s = Server::start(transports_config(json!({})));
    let Some(mut a) = Agent::start(Sdk::Js, "js_emulation_token_errors") else { return };
    let bad = jwt("not-the-secret", json!({"sub": "u1"}));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let expired = jwt(crate::transports::SECRET, json!({"sub": "u1", "exp": now - 60}));
    for (i, t) in ["http_stream", "sse"].into_iter().enumerate() {
        let list = json!([entry(t, s.url(&format!("/connection/{t}")))]);
        let c = format!("bad{i}");
        connect(&mut a, &c, &s, &list, &bad, false);
        let d = a.wait("disconnected", ev(&c, "disconnected"));
        assert_eq!((d["code"].clone(), d["reason"].clone()), (json!(3500), json!("invalid token")), "{t}: {d}");
        let c = format!("exp{i}");
        a.send(json!({
            "op": "connect", "c": c, "transports": list, "emulationEndpoint": s.url("/emulation"),
            "token": expired, "tokens": [token("u1", json!({}))]
        }));
        let e = a.wait("error 109", ev(&c, "error"));
        assert_eq!(e["error"]["code"], 109, "{t}: {e}");
        a.wait("getToken", ev(&c, "getToken"));
        let connected = a.wait("connected with a fresh token", ev(&c, "connected"));
        assert_eq!(connected["transport"], t);
    }
    a.settle(Duration::from_millis(500));
    assert_eq!(a.count(ev("bad0", "connecting")), 1, "no reconnect after 3500");
    assert_eq!(a.count(ev("bad1", "connecting")), 1, "no reconnect after 3500");
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Chromium.
// ---------------------------------------------------------------------------------------------

/// Node, playwright-core, centrifuge-js and Chromium, or a reason to skip (a failure in CI).
fn browser_ready(test: &str) -> Option<String> {
    let root = repo_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        Some("`node` is not on PATH".to_string())
    } else if !root.join("tests/js/node_modules/playwright-core/package.json").exists()
        || !root.join("tests/js/node_modules/centrifuge/dist/centrifuge.js").exists()
    {
        Some("tests/js/node_modules lacks playwright-core or centrifuge (npm ci --prefix tests/js)".to_string())
    } else if !std::path::Path::new(&chromium).exists() {
        Some(format!("{chromium} is missing (apt-get install chromium)"))
    } else {
        None
    };
    match missing {
        None => Some(chromium),
        Some(why) => {
            unavailable(test, &why, "bash .ci/run");
            None
        }
    }
}

/// A page on another origin (served by the driver itself, allowed by
/// `client.allowed_origins`) loads `centrifuge/dist/centrifuge.js` and connects with
/// websocket → http_stream → sse while every WebSocket of the page is refused: it connects
/// over http_stream, subscribes, receives a publication from the API and publishes one itself.
#[test]
fn chromium_falls_back_to_http_stream() {
    let test = "chromium_falls_back_to_http_stream";
    let Some(chromium) = browser_ready(test) else { return };
    let page_port = free_port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let s = Server::start(transports_config(json!({"client": {"allowed_origins": [origin]}})));
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("tests/js/browser_fallback.js"))
        .env("GYRE_URL", format!("http://127.0.0.1:{}", s.port))
        .env("PAGE_PORT", page_port.to_string())
        .env("CLIENT_TOKEN", token("browser", json!({})))
        .env("CHANNEL", "chat:browser")
        .env("CHROMIUM", chromium);
    let mut p = LineProc::spawn("browser_fallback.js", cmd);
    let sd = p.wait("subscribed in the page", |e| e["ev"] == "subscribed");
    assert_eq!(sd["ch"], "chat:browser", "{sd}");
    let connected = p.wait("connected in the page", |e| e["ev"] == "connected");
    assert_eq!(connected["transport"], "http_stream", "{connected}");
    api_publish(&s, "chat:browser", json!({"to": "the page", "n": 1}));
    let pb = p.wait("the publication in the page", |e| e["ev"] == "publication");
    assert_eq!(pb["data"], json!({"to": "the page", "n": 1}), "{pb}");
    p.send(json!({"op": "publish", "data": {"from": "the page"}}));
    let r = p.wait("the page's publish", |e| e["ev"] == "published");
    assert!(r.get("error").is_none() || r["error"].is_null(), "{r}");
    let h = s.api("history", json!({"channel": "chat:browser", "limit": 10}));
    let data: Vec<Value> = h["result"]["publications"]
        .as_array()
        .map(|a| a.iter().map(|p| p["data"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(data, vec![json!({"to": "the page", "n": 1}), json!({"from": "the page"})], "{h}");
    let ws = p.wait("the page's WebSocket attempts", |e| e["ev"] == "report");
    assert!(ws["websocketAttempts"].as_u64().unwrap_or(0) >= 1, "the page tried WebSocket first: {ws}");
    assert_eq!(ws["websocketOpened"], 0, "no WebSocket opened: {ws}");
    assert!(ws["pageErrors"].as_array().is_some_and(|e| e.is_empty()), "{ws}");
    assert_no_panic(&s);
}
