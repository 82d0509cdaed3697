//! Connection and subscription tokens over the raw WebSocket client of `ws_client`, and the
//! options that act on them: NumericDate claims (fractional `exp`/`nbf`, numeric strings,
//! wrongly typed claims), the `client` claim on subscribe and sub_refresh, subscription
//! `data`/`b64data`/`override` (memory and Redis engines), connection-token `subs` data, a
//! namespace's `channel_regex`, and the personal channel's `single_connection` across workers
//! and nodes.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "tokens-secret-0123456789";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn tokens_config(patch: Value) -> Value {
    let mut cfg = json!({
        "http_api": {"key": KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [
            {"name": "feed", "allow_subscribe_for_client": true},
            {"name": "tok", "presence": true, "history_size": 10, "history_ttl": "300s"}
        ]},
        "workers": 2
    });
    merge(&mut cfg, patch);
    cfg
}

/// `patch` on the Redis engine of `redis` (merged after the memory config).
fn on_redis(redis: &RedisServer, patch: Value) -> Value {
    let mut cfg = tokens_config(patch);
    merge(&mut cfg, json!({"engine": {"type": "redis", "redis": {"address": [redis.url()], "prefix": "gyre-tokens"}}}));
    cfg
}

fn conn_token(user: &str, extra: Value) -> String {
    let mut claims = json!({"sub": user, "exp": now() as i64 + 3600});
    merge(&mut claims, extra);
    jwt(SECRET, claims)
}

fn sub_token(user: &str, channel: &str, extra: Value) -> String {
    let mut claims = json!({"sub": user, "channel": channel});
    merge(&mut claims, extra);
    jwt(SECRET, claims)
}

/// JSON commands over one WebSocket.
struct C {
    ws: Ws,
    id: u32,
}

impl C {
    fn open(s: &Server) -> C {
        let ws = Ws::open(s.addr());
        ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        C { ws, id: 0 }
    }

    /// Sends `{"id": N, <body>}` and returns the reply (pushes before it are skipped).
    fn call(&mut self, body: Value) -> Value {
        self.id += 1;
        let mut cmd = json!({ "id": self.id });
        merge(&mut cmd, body);
        self.ws.send_json(&cmd);
        loop {
            let f = self.ws.frame().expect("reading a reply");
            assert_ne!(f.op, CLOSE, "closed {:?} while waiting for reply to {cmd}", f.close());
            if let Some(r) = json_lines(&f.payload).into_iter().find(|v| v["id"] == self.id) {
                return r;
            }
        }
    }

    /// A connect that must succeed; returns its result.
    fn connect(s: &Server, token: &str) -> (C, Value) {
        let mut c = C::open(s);
        let r = c.call(json!({"connect": {"token": token}}));
        assert!(r["connect"]["client"].is_string(), "connect: {r}");
        (c, r["connect"].clone())
    }

    /// Sends a command that must close the connection; returns the close code.
    fn closed_by(&mut self, body: Value) -> u16 {
        self.id += 1;
        let mut cmd = json!({ "id": self.id });
        merge(&mut cmd, body);
        self.ws.send_json(&cmd);
        self.ws.expect_close(Duration::from_secs(5)).0
    }

    /// The next push matching `pred` within `within`.
    fn push_within(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + within;
        while let Ok(f) = self.ws.frame_until(deadline) {
            if f.op == CLOSE {
                return None;
            }
            if let Some(p) = json_lines(&f.payload).into_iter().find(|v| pred(v)) {
                return Some(p);
            }
        }
        None
    }
}

fn error_code(r: &Value) -> i64 {
    r["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected an error reply, got {r}"))
}

// ---------------------------------------------------------------------------------------------
// NumericDate claims

/// PyJWT writes `exp = time.time() + ttl`: a fractional `exp` in the past is expired (109),
/// one in the future gives the connection a lifetime. Numeric strings are dates too; a claim
/// of another type makes the token invalid (3500).
#[test]
fn fractional_exp_expires_connections() {
    let s = Server::start(tokens_config(json!({})));
    let past = jwt(SECRET, json!({"sub": "u", "exp": now() - 10.5}));
    let r = C::open(&s).call(json!({"connect": {"token": past}}));
    assert_eq!(error_code(&r), 109, "{r}");

    let t = jwt(SECRET, json!({"sub": "u", "exp": now() + 30.5}));
    let (_c, r) = C::connect(&s, &t);
    assert_eq!(r["expires"], true, "{r}");
    let ttl = r["ttl"].as_u64().unwrap();
    assert!((29..=31).contains(&ttl), "{r}");

    let nbf = jwt(SECRET, json!({"sub": "u", "nbf": now() + 60.25}));
    assert_eq!(error_code(&C::open(&s).call(json!({"connect": {"token": nbf}}))), 109);
    let as_string = jwt(SECRET, json!({"sub": "u", "exp": format!("{}", now() as i64 - 5)}));
    assert_eq!(error_code(&C::open(&s).call(json!({"connect": {"token": as_string}}))), 109);

    for bad in [
        json!({"sub": "u", "exp": "tomorrow"}),
        json!({"sub": "u", "exp": true}),
        json!({"sub": "u", "iat": "now"}),
        json!({"sub": "u", "expire_at": now() + 60.5}),
    ] {
        let t = jwt(SECRET, bad.clone());
        assert_eq!(C::open(&s).closed_by(json!({"connect": {"token": t}})), 3500, "{bad}");
    }
}

#[test]
fn fractional_exp_expires_subscriptions() {
    let s = Server::start(tokens_config(json!({})));
    let (mut c, _) = C::connect(&s, &conn_token("u", json!({})));
    let past = sub_token("u", "tok:a", json!({"exp": now() - 10.5}));
    let r = c.call(json!({"subscribe": {"channel": "tok:a", "token": past}}));
    assert_eq!(error_code(&r), 109, "{r}");
    let nbf = sub_token("u", "tok:a", json!({"nbf": now() + 60.5}));
    assert_eq!(error_code(&c.call(json!({"subscribe": {"channel": "tok:a", "token": nbf}}))), 109);
    let bad = sub_token("u", "tok:a", json!({"exp": "later"}));
    assert_eq!(error_code(&c.call(json!({"subscribe": {"channel": "tok:a", "token": bad}}))), 103);

    let t = sub_token("u", "tok:a", json!({"exp": now() + 30.5}));
    let r = c.call(json!({"subscribe": {"channel": "tok:a", "token": t}}));
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    assert!((29..=31).contains(&r["subscribe"]["ttl"].as_u64().unwrap()), "{r}");
    // And on sub_refresh.
    let past = sub_token("u", "tok:a", json!({"exp": now() - 0.5}));
    let r = c.call(json!({"sub_refresh": {"channel": "tok:a", "token": past}}));
    assert_eq!(error_code(&r), 109, "{r}");
}

// ---------------------------------------------------------------------------------------------
// The `client` claim

/// A subscription token bound to one client (`client` claim) refreshes only that client's
/// subscription: another client's id closes the connection with 3500, as on subscribe.
#[test]
fn sub_refresh_checks_the_client_claim() {
    let s = Server::start(tokens_config(json!({})));
    let (mut c, r) = C::connect(&s, &conn_token("u", json!({})));
    let me = r["client"].as_str().unwrap().to_string();
    let exp = now() as i64 + 600;
    let t = sub_token("u", "tok:c", json!({"client": me, "exp": exp}));
    let r = c.call(json!({"subscribe": {"channel": "tok:c", "token": t}}));
    assert!(r.get("subscribe").is_some(), "{r}");
    let t = sub_token("u", "tok:c", json!({"client": me, "exp": exp + 60}));
    let r = c.call(json!({"sub_refresh": {"channel": "tok:c", "token": t}}));
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");

    let stolen = sub_token("u", "tok:c", json!({"client": "someone-else", "exp": exp + 120}));
    assert_eq!(c.closed_by(json!({"sub_refresh": {"channel": "tok:c", "token": stolen}})), 3500);

    // The same rule on subscribe.
    let (mut c, _) = C::connect(&s, &conn_token("u", json!({})));
    let stolen = sub_token("u", "tok:c", json!({"client": "someone-else"}));
    assert_eq!(c.closed_by(json!({"subscribe": {"channel": "tok:c", "token": stolen}})), 3500);
}

// ---------------------------------------------------------------------------------------------
// Subscription token data and overrides

#[test]
fn subscription_token_data_reaches_the_subscribe_result() {
    let s = Server::start(tokens_config(json!({})));
    let (mut c, _) = C::connect(&s, &conn_token("u", json!({})));
    let t = sub_token("u", "tok:d1", json!({"data": {"welcome": [1, 2]}}));
    let r = c.call(json!({"subscribe": {"channel": "tok:d1", "token": t}}));
    assert_eq!(r["subscribe"]["data"], json!({"welcome": [1, 2]}), "{r}");
    // `b64data` wins over `data` (standard base64 of `{"b":2}`).
    let t = sub_token("u", "tok:d2", json!({"data": 1, "b64data": "eyJiIjoyfQ=="}));
    let r = c.call(json!({"subscribe": {"channel": "tok:d2", "token": t}}));
    assert_eq!(r["subscribe"]["data"], json!({"b": 2}), "{r}");
    // No data: no field.
    let t = sub_token("u", "tok:d3", json!({}));
    let r = c.call(json!({"subscribe": {"channel": "tok:d3", "token": t}}));
    assert!(r["subscribe"].get("data").is_none(), "{r}");
    // Undecodable base64 makes the token invalid: 103.
    let t = sub_token("u", "tok:d4", json!({"b64data": "%%%"}));
    assert_eq!(error_code(&c.call(json!({"subscribe": {"channel": "tok:d4", "token": t}}))), 103);
    // Binary data that is not JSON cannot travel in a JSON frame: 3506, as for publications.
    let t = sub_token("u", "tok:d5", json!({"b64data": "//4="}));
    assert_eq!(c.closed_by(json!({"subscribe": {"channel": "tok:d5", "token": t}})), 3506);
    let t = conn_token("u", json!({"subs": {"tok:d6": {"b64data": "//4="}}}));
    assert_eq!(C::open(&s).closed_by(json!({"connect": {"token": t}})), 3506);
}

#[test]
fn connection_token_subs_carry_their_data() {
    let s = Server::start(tokens_config(json!({})));
    let t = conn_token("u", json!({"subs": {"tok:s1": {"data": {"hello": 1}}, "tok:s2": {"b64data": "WzEsMl0="}}}));
    let (_c, r) = C::connect(&s, &t);
    assert_eq!(r["subs"]["tok:s1"]["data"], json!({"hello": 1}), "{r}");
    assert_eq!(r["subs"]["tok:s2"]["data"], json!([1, 2]), "{r}");
}

/// Each override of a subscription token applies to that subscription alone: `presence`
/// off keeps it out of presence, `force_positioning`/`force_recovery` make it positioned and
/// recoverable, `join_leave` + `force_push_join_leave` on a namespace without join/leave
/// emit and deliver joins.
fn overrides_apply(cfg: Value) {
    let s = Server::start(cfg);
    let ch = "tok:ov";
    let (mut quiet, r) = C::connect(&s, &conn_token("quiet", json!({})));
    let quiet_id = r["client"].as_str().unwrap().to_string();
    let t = sub_token(
        "quiet",
        ch,
        json!({"override": {"presence": {}, "force_positioning": {"value": true}, "force_recovery": {"value": true}}}),
    );
    let r = quiet.call(json!({"subscribe": {"channel": ch, "token": t}}));
    let sub = &r["subscribe"];
    assert_eq!((sub["positioned"].clone(), sub["recoverable"].clone()), (json!(true), json!(true)), "{r}");
    assert!(sub["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{r}");

    let (mut watcher, r) = C::connect(&s, &conn_token("watcher", json!({})));
    let watcher_id = r["client"].as_str().unwrap().to_string();
    let jl = json!({"override": {"join_leave": {"value": true}, "force_push_join_leave": {"value": true}}});
    let r = watcher.call(json!({"subscribe": {"channel": ch, "token": sub_token("watcher", ch, jl)}}));
    assert!(r.get("subscribe").is_some(), "{r}");
    // Without overrides the namespace's options hold: presence on, no positioning.
    let (mut plain, r) = C::connect(&s, &conn_token("plain", json!({})));
    let plain_id = r["client"].as_str().unwrap().to_string();
    let t = sub_token("plain", ch, json!({"override": {"join_leave": {"value": true}}}));
    let r = plain.call(json!({"subscribe": {"channel": ch, "token": t}}));
    assert!(r["subscribe"].get("positioned").is_none(), "{r}");

    let join =
        watcher.push_within(Duration::from_secs(5), |v| v["push"]["join"]["info"]["client"] == plain_id.as_str());
    assert!(join.is_some(), "the watcher got no join push for the plain subscriber");

    let p = s.api("presence", json!({"channel": ch}));
    let clients = p["result"]["presence"].as_object().unwrap_or_else(|| panic!("{p}"));
    assert!(clients.contains_key(&plain_id) && clients.contains_key(&watcher_id), "{p}");
    assert!(!clients.contains_key(&quiet_id), "presence override off, yet in presence: {p}");
}

#[test]
fn subscription_token_overrides_apply_memory() {
    overrides_apply(tokens_config(json!({})));
}

#[test]
fn subscription_token_overrides_apply_redis() {
    if !redis_available("subscription_token_overrides_apply_redis") {
        return;
    }
    let redis = RedisServer::start();
    overrides_apply(on_redis(&redis, json!({})));
}

/// Protobuf clients get the same `data` (bytes) in the subscribe result and in a
/// connection-token subscription's result.
#[test]
fn subscription_data_reaches_protobuf_sdk_clients() {
    let test = "subscription_data_reaches_protobuf_sdk_clients";
    let Some(mut a) = Agent::start(Sdk::Js, test) else { return };
    let s = Server::start(tokens_config(json!({})));
    let t = conn_token("u", json!({"subs": {"tok:p1": {"data": {"server": true}}}}));
    a.connect("c", &s, json!({"token": t, "protobuf": true}));
    let e =
        a.wait("server-side subscription", |e| e["c"] == "c" && e["ev"] == "server.subscribed" && e["ch"] == "tok:p1");
    assert_eq!(e["data"], json!({"server": true}), "{e}");
    let t = sub_token("u", "tok:p2", json!({"data": {"client": 2}}));
    a.sub("c", "tok:p2", json!({"token": t}));
    let e = a.wait("subscribed", sev("c", "tok:p2", "sub.subscribed"));
    assert_eq!(e["data"], json!({"client": 2}), "{e}");
}

// ---------------------------------------------------------------------------------------------
// channel_regex

#[test]
fn channel_regex_refuses_names_with_107() {
    let s = Server::start(tokens_config(json!({"channel": {
        "without_namespace": {"allow_publish_for_client": true},
        "namespaces": [
            {"name": "rooms", "channel_regex": r"^\w+$", "presence": true, "history_size": 10,
             "history_ttl": "300s", "allow_subscribe_for_client": true, "allow_publish_for_client": true,
             "allow_presence_for_client": true, "allow_history_for_client": true},
            {"name": "intl", "channel_regex": r"^\p{L}+$", "allow_subscribe_for_client": true},
            {"name": "feed", "allow_subscribe_for_client": true, "allow_publish_for_client": true}
        ]
    }})));
    let (mut c, _) = C::connect(&s, &conn_token("u", json!({})));
    for bad in ["rooms:a-b", "rooms:", "rooms:café"] {
        let cases = [
            json!({"subscribe": {"channel": bad}}),
            json!({"publish": {"channel": bad, "data": {}}}),
            json!({"presence": {"channel": bad}}),
            json!({"presence_stats": {"channel": bad}}),
            json!({"history": {"channel": bad}}),
        ];
        for cmd in cases {
            let r = c.call(cmd.clone());
            assert_eq!(error_code(&r), 107, "{cmd}: {r}");
        }
    }
    let r = c.call(json!({"subscribe": {"channel": "rooms:abc_1"}}));
    assert!(r.get("subscribe").is_some(), "{r}");
    let r = c.call(json!({"publish": {"channel": "rooms:abc_1", "data": {}}}));
    assert!(r.get("publish").is_some(), "{r}");
    for ok in [json!({"presence": {"channel": "rooms:abc_1"}}), json!({"history": {"channel": "rooms:abc_1"}})] {
        let r = c.call(ok.clone());
        assert!(r.get("error").is_none(), "{ok}: {r}");
    }
    // A regex admits non-ASCII names; without one they are refused, on publish too.
    let r = c.call(json!({"subscribe": {"channel": "intl:日本"}}));
    assert!(r.get("subscribe").is_some(), "{r}");
    assert_eq!(error_code(&c.call(json!({"subscribe": {"channel": "intl:x1"}}))), 107);
    assert_eq!(error_code(&c.call(json!({"publish": {"channel": "feed:é", "data": {}}}))), 107);
    assert_eq!(error_code(&c.call(json!({"publish": {"channel": "é", "data": {}}}))), 107);
    // The server API is not bound by the regex.
    let r = s.api("publish", json!({"channel": "rooms:a-b", "data": {}}));
    assert!(r.get("error").is_none(), "{r}");
}

#[test]
fn invalid_channel_regex_stops_start_up() {
    let dir = std::env::temp_dir().join(format!("gyre-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad-regex.json");
    let cfg = json!({"channel": {"namespaces": [{"name": "rooms", "channel_regex": "^[a-z+$"}]}});
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut child = std::process::Command::new(server_binary())
        .args(["--config", path.to_str().unwrap(), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gyre started with an invalid channel_regex");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(text.contains("rooms") && text.contains("channel_regex"), "the error names the namespace: {text}");
}

// ---------------------------------------------------------------------------------------------
// single_connection

fn single_patch() -> Value {
    json!({
        "client": {"subscribe_to_user_personal_channel": {"enabled": true, "single_connection": true}},
        "channel": {"without_namespace": {"presence": true}}
    })
}

/// Waits (bounded) until the presence of `#user` on `s` is exactly `clients`.
fn wait_presence(s: &Server, user: &str, clients: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = s.api("presence", json!({"channel": format!("#{user}")}));
        let mut have: Vec<String> =
            p["result"]["presence"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        have.sort();
        let mut want: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
        want.sort();
        if have == want {
            return;
        }
        assert!(Instant::now() < deadline, "presence of #{user}: {p}, want {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every new connection of a user disconnects the user's others with 3504 "connection
/// limit", whichever worker they are on; other users are left alone.
#[test]
fn single_connection_keeps_one_connection_per_user() {
    let s = Server::start(tokens_config(single_patch()));
    let (_other, r) = C::connect(&s, &conn_token("v", json!({})));
    let other_id = r["client"].as_str().unwrap().to_string();
    let (mut prev, r) = C::connect(&s, &conn_token("u", json!({})));
    assert!(r["subs"]["#u"].is_object(), "{r}");
    let mut prev_id = r["client"].as_str().unwrap().to_string();
    // Several rounds, so that (with two workers) old and new connections meet on different
    // workers as well as on the same one.
    for _ in 0..6 {
        let (next, r) = C::connect(&s, &conn_token("u", json!({})));
        let (code, reason) = prev.ws.expect_close(Duration::from_secs(5));
        assert_eq!((code, reason.as_str()), (3504, "connection limit"));
        prev = next;
        prev_id = r["client"].as_str().unwrap().to_string();
    }
    wait_presence(&s, "u", &[&prev_id]);
    wait_presence(&s, "v", &[&other_id]);
    let r = prev.call(json!({"presence_stats": {"channel": "#u"}}));
    assert!(r.get("id").is_some(), "the last connection still answers: {r}");
}

#[test]
fn single_connection_across_nodes_redis() {
    if !redis_available("single_connection_across_nodes_redis") {
        return;
    }
    let redis = RedisServer::start();
    let mut patch = on_redis(&redis, single_patch());
    patch["workers"] = json!(1);
    let nodes = cluster(2, &redis, patch);
    let (mut a, _) = C::connect(&nodes[0], &conn_token("u", json!({})));
    let (mut b, _) = C::connect(&nodes[1], &conn_token("u", json!({})));
    assert_eq!(a.ws.expect_close(Duration::from_secs(5)).0, 3504);
    let (_c, r) = C::connect(&nodes[0], &conn_token("u", json!({})));
    assert_eq!(b.ws.expect_close(Duration::from_secs(5)).0, 3504);
    wait_presence(&nodes[1], "u", &[r["client"].as_str().unwrap()]);
}
