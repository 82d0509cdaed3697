//! The official client SDKs against the real binary: `centrifuge` (JS, 5.8.0, run by Node from
//! `tests/js/agent.js`) and `centrifuge-python` (0.7.0, `tests/python/sdk_agent.py`).
//!
//! Both agents speak one line protocol (documented at the top of each): the test sends
//! commands (connect, subscribe, publish, presence, history, cut the socket, ...) as JSON
//! lines on the agent's stdin and reads back, as JSON lines, every event the SDK reports. All
//! the checks are made here, on what the SDK saw.
//!
//! The packages are installed into local folders, not globally:
//! `npm ci --prefix tests/js` and
//! `target/pyenv/bin/pip install centrifuge-python==0.7.0 websockets==17.4 protobuf==7.36.2`.
//! Without them a test is skipped with a message, unless `CI` is set: then it fails.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;

/// `client.token.hmac_secret_key` of [`sdk_config`].
const SECRET: &str = "sdk-test-secret-0123456789";

/// The config the SDK tests share: HS256 tokens and one namespace per feature set.
///
/// * `chat`  — subscribe for clients, publish for subscribers, presence + history for
///   subscribers, join/leave pushed to every subscriber.
/// * `ro`    — subscribe only (publish → 103, presence → 108).
/// * `rec`   — history 300 with `force_recovery`.
/// * `short` — history 10 with `force_recovery` (a 50-message gap is not recoverable).
/// * `srv`   — history + `force_recovery`, no client permissions: reachable only through
///   server-side subscriptions.
fn sdk_config() -> Value {
    json!({
        "http_api": {"key": KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
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
                {"name": "ro", "allow_subscribe_for_client": true},
                {
                    "name": "rec",
                    "allow_subscribe_for_client": true,
                    "history_size": 300,
                    "history_ttl": "300s",
                    "force_recovery": true
                },
                {
                    "name": "short",
                    "allow_subscribe_for_client": true,
                    "history_size": 10,
                    "history_ttl": "300s",
                    "force_recovery": true
                },
                {"name": "srv", "history_size": 100, "history_ttl": "300s", "force_recovery": true}
            ]
        },
        "workers": 2
    })
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

static GEN_DIRS: AtomicUsize = AtomicUsize::new(0);

/// `gyre gentoken -c <cfg> -u <user> -q`: the token the CLI prints.
fn gentoken(cfg: &Value, user: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "gyre-sdk-gentoken-{}-{}",
        std::process::id(),
        GEN_DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(cfg).unwrap()).unwrap();
    let out = Command::new(server_binary())
        .args(["gentoken", "-c"])
        .arg(&path)
        .args(["-u", user, "-q"])
        .output()
        .expect("run gyre gentoken");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "gyre gentoken failed: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "gentoken -q must print only a JWT: {token:?}");
    token
}

fn publish(s: &Server, channel: &str, data: Value) {
    let r = s.api("publish", json!({"channel": channel, "data": data}));
    assert!(r.get("error").is_none(), "API publish to {channel}: {r}");
}

/// No worker of the server panicked (a panicking worker may leave the process running).
fn assert_no_panic(s: &Server) {
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

fn text(i: i64) -> String {
    format!("message {i}: {}", "é✓".repeat((i % 4) as usize))
}

// ---------------------------------------------------------------------------------------------
// 1 + 3. Connect, subscribe, publications, client publish, presence, history, join/leave.
// ---------------------------------------------------------------------------------------------

/// The common flow, for any SDK and format. Token from `gyre gentoken`.
fn core_flow(sdk: Sdk, protobuf: bool, test: &str) {
    core_flow_with(sdk, protobuf, test, json!({}));
}

/// [`core_flow`] on a server whose config is [`sdk_config`] with `patch` merged in.
fn core_flow_with(sdk: Sdk, protobuf: bool, test: &str, patch: Value) {
    let mut cfg = sdk_config();
    merge(&mut cfg, patch);
    let s = Server::start(cfg.clone());
    let t1 = gentoken(&cfg, "u1");
    let t2 = gentoken(&cfg, "u2");
    let Some(mut a) = Agent::start(sdk, test) else { return };

    a.connect("a", &s, json!({"token": t1, "protobuf": protobuf}));
    let connected = a.wait("a connected", ev("a", "connected"));
    let a_id = connected["client"].as_str().expect("client id").to_string();
    assert_eq!(a_id.len(), 36, "client id must be a UUID: {connected}");

    a.sub("a", "chat:room", json!({}));
    let sd = a.wait("a subscribed to chat:room", sev("a", "chat:room", "sub.subscribed"));
    assert_eq!(sd["wasRecovering"], false, "{sd}");
    assert_eq!(sd["recovered"], false, "{sd}");
    assert_eq!(sd["recoverable"], false, "no recovery in `chat`: {sd}");

    // Publications from the HTTP API arrive in order with exactly the data published.
    for i in 1..=20 {
        publish(&s, "chat:room", json!({"n": i, "text": text(i), "nested": {"list": [i, null, true]}}));
    }
    let pubs = a.wait_n("20 API publications", 20, sev("a", "chat:room", "sub.publication"));
    for (i, p) in (1..=20).zip(&pubs) {
        assert_eq!(
            p["data"],
            json!({"n": i, "text": text(i), "nested": {"list": [i, null, true]}}),
            "publication {i}: {p}"
        );
        assert_eq!(p["offset"], i, "publication {i} offset: {p}");
        assert!(p.get("info").is_none() || p["info"].is_null(), "API publications carry no info: {p}");
    }

    // A subscriber may publish in `chat`; the publication carries its ClientInfo.
    assert_eq!(a.call("a", "publish", "chat:room", json!({"data": {"from": "a"}})), Ok(json!({})));
    let pubs = a.wait_n("the client's own publication", 21, sev("a", "chat:room", "sub.publication"));
    assert_eq!(pubs[20]["data"], json!({"from": "a"}), "{}", pubs[20]);
    assert_eq!(pubs[20]["offset"], 21, "{}", pubs[20]);
    assert_eq!(pubs[20]["info"]["user"], "u1", "{}", pubs[20]);
    assert_eq!(pubs[20]["info"]["client"], a_id.as_str(), "{}", pubs[20]);

    // Publishing is denied (103) in `ro` even when subscribed, and in `chat` when not subscribed.
    a.sub("a", "ro:room", json!({}));
    a.wait("a subscribed to ro:room", sev("a", "ro:room", "sub.subscribed"));
    assert_eq!(a.call("a", "publish", "ro:room", json!({"data": {"x": 1}})), Err(103), "publish in ro");
    assert_eq!(a.call("a", "publish", "chat:other", json!({"data": {"x": 1}})), Err(103), "publish unsubscribed");
    // Presence is not enabled in `ro`: 108.
    assert_eq!(a.call("a", "presenceStats", "ro:room", json!({})), Err(108), "presence_stats in ro");

    // A second user joins: the first sees the join.
    a.connect("b", &s, json!({"token": t2, "protobuf": protobuf}));
    let b_id = a.wait("b connected", ev("b", "connected"))["client"].as_str().unwrap().to_string();
    a.sub("b", "chat:room", json!({}));
    a.wait("b subscribed", sev("b", "chat:room", "sub.subscribed"));
    let join = a.wait("a sees b join", |e| sev("a", "chat:room", "sub.join")(e) && e["info"]["user"] == "u2");
    assert_eq!(join["info"]["client"], b_id.as_str(), "{join}");

    // Presence: both clients, keyed by client id.
    let p = a.call("a", "presence", "chat:room", json!({})).expect("presence");
    let clients = p["clients"].as_object().expect("presence clients");
    assert_eq!(clients.len(), 2, "{p}");
    assert_eq!(clients[&a_id]["user"], "u1", "{p}");
    assert_eq!(clients[&a_id]["client"], a_id.as_str(), "{p}");
    assert_eq!(clients[&b_id]["user"], "u2", "{p}");
    let stats = a.call("a", "presenceStats", "chat:room", json!({})).expect("presence_stats");
    assert_eq!(stats, json!({"numClients": 2, "numUsers": 2}));

    // History: all 21 publications with their offsets and the stream position.
    let h = a.call("a", "history", "chat:room", json!({"opts": {"limit": 100}})).expect("history");
    let hp = h["publications"].as_array().expect("history publications");
    assert_eq!(hp.len(), 21, "{h}");
    assert_eq!(offsets(hp), (1..=21).collect::<Vec<_>>(), "{h}");
    for (i, p) in (1..=20).zip(hp) {
        assert_eq!(p["data"]["n"], i, "{p}");
        assert_eq!(p["data"]["text"], text(i).as_str(), "{p}");
    }
    assert_eq!(hp[20]["data"], json!({"from": "a"}));
    assert_eq!(hp[20]["info"]["user"], "u1", "{h}");
    assert_eq!(h["offset"], 21, "{h}");
    assert!(h["epoch"].as_str().is_some_and(|e| !e.is_empty()), "history epoch: {h}");
    let h2 = a.call("a", "history", "chat:room", json!({"opts": {"limit": 2, "reverse": true}})).expect("history");
    assert_eq!(offsets(h2["publications"].as_array().unwrap()), vec![21, 20], "reverse history limit 2: {h2}");
    // Not subscribed to chat:elsewhere: history and presence are for subscribers only.
    assert_eq!(a.call("a", "history", "chat:elsewhere", json!({"opts": {"limit": 10}})), Err(103));
    assert_eq!(a.call("a", "presence", "chat:elsewhere", json!({})), Err(103));

    // b leaves: a sees the leave and presence drops to one.
    a.send(json!({"op": "disconnect", "c": "b"}));
    let leave = a.wait("a sees b leave", |e| sev("a", "chat:room", "sub.leave")(e) && e["info"]["user"] == "u2");
    assert_eq!(leave["info"]["client"], b_id.as_str(), "{leave}");
    let stats = a.call("a", "presenceStats", "chat:room", json!({})).expect("presence_stats");
    assert_eq!(stats, json!({"numClients": 1, "numUsers": 1}), "after b left");

    // Nothing unexpected happened to a on the way.
    assert_eq!(a.count(ev("a", "disconnected")), 0, "a must stay connected");
    assert_eq!(a.count(ev("a", "connected")), 1, "a must not reconnect");
    assert_eq!(a.count(|e| e["c"] == "a" && (e["ev"] == "error" || e["ev"] == "sub.error")), 0, "errors for a");
    assert_eq!(a.count(sev("a", "chat:room", "sub.publication")), 21, "no duplicate publications");
    assert_no_panic(&s);
}

#[test]
fn js_core_flow_json() {
    core_flow(Sdk::Js, false, "js_core_flow_json");
}

#[test]
fn js_core_flow_protobuf() {
    core_flow(Sdk::Js, true, "js_core_flow_protobuf");
}

#[test]
fn python_core_flow_json() {
    core_flow(Sdk::Py, false, "python_core_flow_json");
}

#[test]
fn python_core_flow_protobuf() {
    core_flow(Sdk::Py, true, "python_core_flow_protobuf");
}

/// With `client.write_delay` every reply and push waits out the delay and frames leave
/// batched: the SDKs see the same flow.
#[test]
fn sdks_core_flow_with_a_write_delay() {
    let batched = json!({"client": {"write_delay": "30ms", "max_messages_in_frame": -1}});
    core_flow_with(Sdk::Js, false, "sdks_core_flow_with_a_write_delay", batched.clone());
    core_flow_with(Sdk::Py, true, "sdks_core_flow_with_a_write_delay", batched);
}

// ---------------------------------------------------------------------------------------------
// 2. Recovery after the SDK reconnects by itself.
// ---------------------------------------------------------------------------------------------

#[test]
fn js_recovery_after_reconnect_json() {
    recovery_flow(false, "js_recovery_after_reconnect_json");
}

#[test]
fn js_recovery_after_reconnect_protobuf() {
    recovery_flow(true, "js_recovery_after_reconnect_protobuf");
}

/// The JS SDK loses its socket, publications go on while it cannot reconnect, then it
/// reconnects by itself and recovers (or is told it could not).
fn recovery_flow(protobuf: bool, test: &str) {
    let cfg = sdk_config();
    let s = Server::start(cfg.clone());
    let token = gentoken(&cfg, "u1");
    let Some(mut a) = Agent::start(Sdk::Js, test) else { return };

    a.connect("a", &s, json!({"token": token, "protobuf": protobuf}));
    a.wait("a connected", ev("a", "connected"));
    a.sub("a", "rec:x", json!({}));
    a.sub("a", "short:x", json!({}));
    for ch in ["rec:x", "short:x"] {
        let sd = a.wait("subscribed", sev("a", ch, "sub.subscribed"));
        assert_eq!(sd["recoverable"], true, "force_recovery: {sd}");
        assert_eq!(sd["positioned"], true, "{sd}");
        assert_eq!(sd["wasRecovering"], false, "{sd}");
        assert_eq!(sd["recovered"], false, "{sd}");
        assert_eq!(sd["offset"], 0, "{sd}");
    }
    for i in 1..=5 {
        publish(&s, "rec:x", json!({"n": i}));
        publish(&s, "short:x", json!({"n": i}));
    }
    a.wait_n("5 live publications on rec:x", 5, sev("a", "rec:x", "sub.publication"));
    a.wait_n("5 live publications on short:x", 5, sev("a", "short:x", "sub.publication"));
    let epoch = a.all(sev("a", "rec:x", "sub.subscribed"))[0]["epoch"].clone();

    // Cut the socket; reconnect attempts fail until unblocked.
    a.send(json!({"op": "cut", "c": "a", "block": true}));
    let cut = a.wait("cut", ev("a", "cut"));
    assert_eq!(cut["sockets"], 1, "{cut}");
    a.wait("a reconnecting", |e| ev("a", "connecting")(e) && e["code"] != 0);
    a.wait_n("a blocked reconnect attempt", 1, ev("a", "blocked"));

    for i in 6..=105 {
        publish(&s, "rec:x", json!({"n": i}));
    }
    for i in 6..=55 {
        publish(&s, "short:x", json!({"n": i}));
    }
    assert_eq!(a.count(ev("a", "connected")), 1, "the client must have been away while publishing");
    a.send(json!({"op": "unblock", "c": "a"}));
    a.wait_n("a reconnected", 2, ev("a", "connected"));

    // Everything missed comes back, in order, exactly once.
    let sd = a.wait_n("rec:x resubscribed", 2, sev("a", "rec:x", "sub.subscribed")).remove(1);
    assert_eq!(sd["wasRecovering"], true, "{sd}");
    assert_eq!(sd["recovered"], true, "{sd}");
    assert_eq!(sd["hasRecoveredPublications"], true, "{sd}");
    assert_eq!(sd["epoch"], epoch, "same stream: {sd}");
    let pubs = a.wait_n("105 publications on rec:x", 105, sev("a", "rec:x", "sub.publication"));
    assert_eq!(ns(&pubs), (1..=105).collect::<Vec<_>>(), "rec:x publications in order, no gaps, no duplicates");
    assert_eq!(offsets(&pubs), (1..=105).collect::<Vec<_>>(), "rec:x offsets");

    // History 10 cannot cover a 50-message gap: recovered false, nothing replayed.
    let sd = a.wait_n("short:x resubscribed", 2, sev("a", "short:x", "sub.subscribed")).remove(1);
    assert_eq!(sd["wasRecovering"], true, "{sd}");
    assert_eq!(sd["recovered"], false, "{sd}");
    assert_eq!(sd["hasRecoveredPublications"], false, "{sd}");
    assert_eq!(sd["offset"], 55, "the position of the stream top: {sd}");
    publish(&s, "short:x", json!({"n": 56}));
    publish(&s, "rec:x", json!({"n": 106}));
    let pubs = a.wait_n("6 publications on short:x", 6, sev("a", "short:x", "sub.publication"));
    assert_eq!(ns(&pubs), vec![1, 2, 3, 4, 5, 56], "short:x: live ones only");
    assert_eq!(pubs[5]["offset"], 56);
    a.wait_n("106 publications on rec:x", 106, sev("a", "rec:x", "sub.publication"));
    a.settle(Duration::from_millis(300));
    assert_eq!(a.count(sev("a", "rec:x", "sub.publication")), 106, "no duplicates on rec:x");
    assert_eq!(a.count(sev("a", "short:x", "sub.publication")), 6, "no duplicates on short:x");
    assert_eq!(a.count(|e| e["c"] == "a" && e["ev"] == "sub.error"), 0, "subscription errors");
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// 4. Server-side subscriptions: the token's `channels` claim and the API `subscribe`.
// ---------------------------------------------------------------------------------------------

fn server_side_flow(sdk: Sdk, test: &str) {
    let cfg = sdk_config();
    let s = Server::start(cfg.clone());
    let token = jwt(SECRET, json!({"sub": "u1", "exp": now() + 3600, "channels": ["srv:news"]}));
    let Some(mut a) = Agent::start(sdk, test) else { return };
    a.connect("a", &s, json!({"token": token}));
    a.wait("a connected", ev("a", "connected"));
    let sd = a.wait("server-side subscription", |e| ev("a", "server.subscribed")(e) && e["ch"] == "srv:news");
    assert_eq!(sd["recoverable"], true, "srv has force_recovery: {sd}");
    for i in 1..=10 {
        publish(&s, "srv:news", json!({"n": i}));
    }
    let pubs =
        a.wait_n("10 server-side publications", 10, |e| ev("a", "server.publication")(e) && e["ch"] == "srv:news");
    assert_eq!(ns(&pubs), (1..=10).collect::<Vec<_>>());
    assert_eq!(offsets(&pubs), (1..=10).collect::<Vec<_>>());

    // The API subscribes the user to another channel at run time.
    let r = s.api("subscribe", json!({"user": "u1", "channel": "chat:live"}));
    assert!(r.get("error").is_none(), "API subscribe: {r}");
    a.wait("API server-side subscription", |e| ev("a", "server.subscribed")(e) && e["ch"] == "chat:live");
    publish(&s, "chat:live", json!({"n": 1}));
    let p = a.wait("publication on chat:live", |e| ev("a", "server.publication")(e) && e["ch"] == "chat:live");
    assert_eq!(p["data"], json!({"n": 1}));
    assert_eq!(a.count(|e| e["c"] == "a" && e["ev"] == "sub.publication"), 0, "no client-side subscriptions exist");
    assert_eq!(a.count(ev("a", "server.publication")), 11);
    assert_no_panic(&s);
}

#[test]
fn js_server_side_subscriptions() {
    server_side_flow(Sdk::Js, "js_server_side_subscriptions");
}

#[test]
fn python_server_side_subscriptions() {
    server_side_flow(Sdk::Py, "python_server_side_subscriptions");
}

// ---------------------------------------------------------------------------------------------
// 5. API disconnect / unsubscribe reach clients on every worker.
// ---------------------------------------------------------------------------------------------

#[test]
fn js_api_disconnect_and_unsubscribe_across_workers() {
    let cfg = sdk_config();
    let s = Server::start(cfg.clone());
    let victim = gentoken(&cfg, "victim");
    let other = gentoken(&cfg, "other");
    let Some(mut a) = Agent::start(Sdk::Js, "js_api_disconnect_and_unsubscribe_across_workers") else { return };
    // 6 + 6 connections, spread over the 2 workers by SO_REUSEPORT.
    let victims: Vec<String> = (0..6).map(|i| format!("v{i}")).collect();
    let others: Vec<String> = (0..6).map(|i| format!("o{i}")).collect();
    for c in &victims {
        a.connect(c, &s, json!({"token": victim}));
        a.sub(c, "chat:room", json!({}));
    }
    for c in &others {
        a.connect(c, &s, json!({"token": other}));
        a.sub(c, "chat:room", json!({}));
    }
    for c in victims.iter().chain(&others) {
        a.wait("subscribed", sev(c, "chat:room", "sub.subscribed"));
    }
    let stats = s.api("presence_stats", json!({"channel": "chat:room"}));
    assert_eq!(stats["result"], json!({"num_clients": 12, "num_users": 2}), "{stats}");

    let r = s.api("unsubscribe", json!({"user": "victim", "channel": "chat:room"}));
    assert!(r.get("error").is_none(), "API unsubscribe: {r}");
    for c in &victims {
        let u = a.wait("server unsubscribe", sev(c, "chat:room", "sub.unsubscribed"));
        assert_eq!(u["code"], 2000, "{u}");
        assert_eq!(u["reason"], "server unsubscribe", "{u}");
    }
    publish(&s, "chat:room", json!({"n": 1}));
    for c in &others {
        a.wait("publication after the unsubscribe", sev(c, "chat:room", "sub.publication"));
    }
    a.settle(Duration::from_millis(300));
    for c in &others {
        assert_eq!(a.count(sev(c, "chat:room", "sub.unsubscribed")), 0, "{c} must stay subscribed");
    }
    for c in &victims {
        assert_eq!(a.count(sev(c, "chat:room", "sub.publication")), 0, "{c} is unsubscribed");
        assert_eq!(a.count(sev(c, "chat:room", "sub.subscribed")), 1, "{c} must not resubscribe after 2000");
    }

    let r = s.api("disconnect", json!({"user": "victim"}));
    assert!(r.get("error").is_none(), "API disconnect: {r}");
    for c in &victims {
        let d = a.wait("force disconnect", ev(c, "disconnected"));
        assert_eq!(d["code"], 3503, "{d}");
        assert_eq!(d["reason"], "force disconnect", "{d}");
    }
    a.settle(Duration::from_millis(700));
    for c in &victims {
        assert_eq!(a.count(ev(c, "connected")), 1, "{c} must not reconnect after 3503");
    }
    for c in &others {
        assert_eq!(a.count(ev(c, "disconnected")), 0, "{c} must stay connected");
        assert_eq!(a.count(|e| ev(c, "connecting")(e) && e["code"] != 0), 0, "{c} must not reconnect");
    }
    let stats = s.api("presence_stats", json!({"channel": "chat:room"}));
    assert_eq!(stats["result"], json!({"num_clients": 6, "num_users": 1}), "{stats}");
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// 6. Token errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn js_token_errors() {
    token_errors(Sdk::Js, "js_token_errors");
}

#[test]
fn python_token_errors() {
    token_errors(Sdk::Py, "python_token_errors");
}

fn token_errors(sdk: Sdk, test: &str) {
    let cfg = sdk_config();
    let s = Server::start(cfg.clone());
    let Some(mut a) = Agent::start(sdk, test) else { return };

    // Signed with another key: close 3500, terminal.
    let wrong = jwt("not-the-secret", json!({"sub": "u1", "exp": now() + 3600}));
    a.connect("wrong", &s, json!({"token": wrong}));
    let d = a.wait("wrong key: disconnected", ev("wrong", "disconnected"));
    assert_eq!(d["code"], 3500, "{d}");
    assert_eq!(d["reason"], "invalid token", "{d}");

    // No token while anonymous connections are not allowed: close 3501, terminal.
    a.connect("anon", &s, json!({}));
    let d = a.wait("no token: disconnected", ev("anon", "disconnected"));
    assert_eq!(d["code"], 3501, "{d}");
    assert_eq!(d["reason"], "bad request", "{d}");

    // Expired: error 109, the SDK asks getToken for a new one and connects with it.
    let expired = jwt(SECRET, json!({"sub": "u1", "exp": now() - 60}));
    let fresh = jwt(SECRET, json!({"sub": "u1", "exp": now() + 3600}));
    a.connect("exp", &s, json!({"token": expired, "tokens": [fresh]}));
    if sdk == Sdk::Js {
        let e = a.wait("expired: error", ev("exp", "error"));
        assert_eq!(e["error"]["code"], 109, "{e}");
        assert_eq!(e["type"], "connect", "{e}");
    }
    a.wait("getToken called", ev("exp", "getToken"));
    a.wait("connected with the fresh token", ev("exp", "connected"));

    a.settle(Duration::from_millis(700));
    for c in ["wrong", "anon"] {
        assert_eq!(a.count(ev(c, "connected")), 0, "{c} must never connect");
        assert_eq!(a.count(ev(c, "connecting")), 1, "{c}: no reconnect after a terminal code");
    }
    assert_eq!(a.count(ev("exp", "disconnected")), 0);
    assert_no_panic(&s);
}

// ---------------------------------------------------------------------------------------------
// Server pings: both SDKs answer them and stay connected.
// ---------------------------------------------------------------------------------------------

#[test]
fn sdks_answer_server_pings() {
    let mut cfg = sdk_config();
    cfg["client"]["ping_interval"] = json!("2s");
    cfg["client"]["pong_timeout"] = json!("1s");
    // The first ping is late by up to this delay (see ws_abuse::first_server_ping_within_the_interval):
    // keep it short so the SDKs' own "no ping" timers (ping + 10 s) do not fire first.
    cfg["client"]["stale_close_delay"] = json!("1s");
    let s = Server::start(cfg.clone());
    let token = gentoken(&cfg, "u1");
    let mut agents = Vec::new();
    for sdk in [Sdk::Js, Sdk::Py] {
        let Some(mut a) = Agent::start(sdk, "sdks_answer_server_pings") else { return };
        a.connect("a", &s, json!({"token": token}));
        a.sub("a", "chat:room", json!({}));
        a.wait("subscribed", sev("a", "chat:room", "sub.subscribed"));
        agents.push(a);
    }
    // The JS agent sees the raw frames: wait for three pings, then a pong deadline more.
    agents[0].wait_n("3 server pings", 3, ev("a", "ws.ping"));
    std::thread::sleep(Duration::from_millis(1500));
    publish(&s, "chat:room", json!({"n": 1}));
    for a in &mut agents {
        a.wait("publication after the pings", sev("a", "chat:room", "sub.publication"));
        a.settle(Duration::from_millis(100));
        assert_eq!(a.count(ev("a", "connected")), 1, "{:?}: must stay on one connection", a.sdk);
        assert_eq!(a.count(ev("a", "disconnected")), 0, "{:?}", a.sdk);
        assert_eq!(a.count(|e| ev("a", "connecting")(e) && e["code"] != 0), 0, "{:?}: reconnected", a.sdk);
    }
    assert_no_panic(&s);
}
