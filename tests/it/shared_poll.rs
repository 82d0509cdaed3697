//! Shared poll subscriptions (`subscription_type: shared_poll`, `type` 4 in subscribe) with a
//! real HTTP backend in the test: clients track keys with backend-signed `sub_refresh`
//! requests, Gyre polls the backend for the tracked keys once per interval per channel and
//! pushes changes (`pub` with `key` and `version`) and removals to the connections tracking
//! them. Versioned and versionless modes, the error codes Centrifugo answers, and an epoch
//! change. The same with centrifuge-js in `shared_poll_sdk`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

pub const SECRET: &str = "sp-secret-0123456789";

/// The application backend: answers `POST /refresh` from its items (key → (data, version),
/// `None` = removed) and records every request body; `POST /set` changes an item
/// (`{"key","data","version"}` or `{"key","removed":true}`, `{"epoch"}`).
pub struct Backend {
    pub port: u16,
    pub state: Arc<Mutex<BackendState>>,
}

#[derive(Default)]
pub struct BackendState {
    pub items: BTreeMap<String, Option<(Value, u64)>>,
    pub epoch: String,
    /// Versionless: answers carry no version.
    pub versionless: bool,
    pub calls: Vec<Value>,
}

impl Backend {
    pub fn start(versionless: bool) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(BackendState { versionless, ..Default::default() }));
        let st = state.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(c, st));
            }
        });
        Backend { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/refresh", self.port)
    }

    pub fn set(&self, key: &str, data: Value, version: u64) {
        self.state.lock().unwrap().items.insert(key.into(), Some((data, version)));
    }

    pub fn remove(&self, key: &str) {
        self.state.lock().unwrap().items.insert(key.into(), None);
    }

    pub fn calls(&self) -> Vec<Value> {
        self.state.lock().unwrap().calls.clone()
    }
}

fn serve(c: TcpStream, st: Arc<Mutex<BackendState>>) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer = {
            let mut s = st.lock().unwrap();
            match path.as_str() {
                "/set" => {
                    if let Some(e) = req["epoch"].as_str() {
                        s.epoch = e.into();
                    }
                    if let Some(k) = req["key"].as_str() {
                        let v = if req["removed"] == true {
                            None
                        } else {
                            Some((req["data"].clone(), req["version"].as_u64().unwrap_or(0)))
                        };
                        s.items.insert(k.into(), v);
                    }
                    json!({})
                }
                _ => {
                    s.calls.push(req.clone());
                    let mut items = Vec::new();
                    for it in req["items"].as_array().cloned().unwrap_or_default() {
                        let key = it["key"].as_str().unwrap_or_default();
                        match s.items.get(key) {
                            Some(None) => items.push(json!({"key": key, "removed": true})),
                            Some(Some((data, _))) if s.versionless => items.push(json!({"key": key, "data": data})),
                            // A versioned backend skips what the caller has.
                            Some(Some((data, version))) if *version > it["version"].as_u64().unwrap_or(0) => {
                                items.push(json!({"key": key, "data": data, "version": version}))
                            }
                            Some(Some(_)) => {}
                            None => {}
                        }
                    }
                    let mut result = json!({"items": items});
                    if !s.epoch.is_empty() {
                        result["epoch"] = json!(s.epoch);
                    }
                    json!({ "result": result })
                }
            }
        };
        let text = answer.to_string();
        let head =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", text.len());
        if w.write_all(head.as_bytes()).and_then(|_| w.write_all(text.as_bytes())).is_err() {
            return;
        }
    }
}

/// A config with shared poll namespaces `prices` (versioned) and `live` (versionless), both
/// polling `b` every `interval`, a stream namespace `plain`, anonymous clients.
pub fn config(b: &Backend, interval: &str, max_keys: usize) -> Value {
    let ns = |name: &str, mode: &str| {
        json!({
            "name": name, "subscription_type": "shared_poll",
            "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
            "shared_poll": {"mode": mode, "refresh_interval": interval, "max_keys_per_connection": max_keys,
                            "channel_shutdown_delay": "200ms"}
        })
    };
    json!({
        "http_api": {"key": KEY},
        "client": {"allowed_origins": ["*"], "allow_anonymous_connect_without_token": true},
        "shared_poll": {"hmac_secret_key": SECRET},
        "channel": {
            "proxy": {"shared_poll_refresh": {"endpoint": b.endpoint(), "timeout": "2s"}},
            "namespaces": [
                ns("prices", "versioned"), ns("live", "versionless"),
                {"name": "plain", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true}
            ]
        },
        "workers": 2
    })
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The signature of `keys` of `channel` for `user`, valid for an hour.
pub fn sign(channel: &str, keys: &[&str], user: &str) -> String {
    gyre::poll::signature::sign(SECRET, channel, keys, user, now(), now() + 3600)
}

/// A raw JSON client that keeps the pushes it reads while waiting for replies.
pub(crate) struct Client {
    pub(crate) ws: Ws,
    id: u32,
    pub(crate) pushes: Vec<Value>,
}

impl Client {
    pub(crate) fn connect(s: &Server) -> Client {
        let mut c = Client { ws: Ws::open(s.addr()), id: 0, pushes: Vec::new() };
        let r = c.call(json!({"connect": {}}));
        assert!(r["connect"]["client"].is_string(), "{r}");
        c
    }

    pub(crate) fn call(&mut self, body: Value) -> Value {
        self.id += 1;
        let mut cmd = json!({ "id": self.id });
        merge(&mut cmd, body);
        self.ws.send_json(&cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let f = self.ws.frame_until(deadline).expect("a reply");
            assert_ne!(f.op, CLOSE, "closed: {:?}", f.close());
            for v in json_lines(&f.payload) {
                if v["id"] == self.id {
                    return v;
                }
                self.pushes.push(v);
            }
        }
    }

    pub(crate) fn subscribe(&mut self, channel: &str) -> Value {
        self.call(json!({"subscribe": {"channel": channel, "type": 4}}))
    }

    pub(crate) fn track(&mut self, channel: &str, items: &[(&str, u64)], sig: &str) -> Value {
        let items: Vec<Value> = items
            .iter()
            .map(|(k, v)| if *v > 0 { json!({"key": k, "version": v}) } else { json!({"key": k}) })
            .collect();
        self.call(
            json!({"sub_refresh": {"channel": channel, "type": 1, "track": [{"signature": sig, "items": items}]}}),
        )
    }

    /// The `pub` pushes of `channel` read within `within` (and those read before), taken.
    pub(crate) fn pubs(&mut self, channel: &str, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while let Ok(f) = self.ws.frame_until(deadline) {
            self.pushes.extend(json_lines(&f.payload));
        }
        let (mine, rest): (Vec<Value>, Vec<Value>) =
            self.pushes.drain(..).partition(|v| v["push"]["channel"] == channel && v["push"]["pub"].is_object());
        self.pushes = rest;
        mine.into_iter().map(|v| v["push"]["pub"].clone()).collect()
    }

    /// Waits until `n` `pub` pushes of `channel` came; returns them.
    pub(crate) fn wait_pubs(&mut self, channel: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(self.pubs(channel, Duration::from_millis(50)));
        }
        assert!(got.len() >= n, "{} of {n} updates of {channel} within {within:?}: {got:?}", got.len());
        got
    }
}

#[test]
fn versioned_keys_are_polled_once_per_channel_and_pushed_per_version() {
    let b = Backend::start(false);
    b.set("a", json!({"p": 1}), 1);
    b.set("b", json!({"p": 2}), 5);
    let s = Server::start(config(&b, "300ms", 5000));
    let ch = "prices:eu";
    let mut c1 = Client::connect(&s);
    let r = c1.subscribe(ch);
    assert_eq!(r["subscribe"]["type"], 4, "{r}");
    assert!(r.get("error").is_none(), "{r}");
    // Keys tracked without versions are polled at once and pushed.
    let r = c1.track(ch, &[("a", 0), ("b", 0)], &sign(ch, &["a", "b"], ""));
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");
    assert!(r["sub_refresh"]["ttl"].as_u64().is_some_and(|t| t > 3500), "{r}");
    let mut got = c1.wait_pubs(ch, 2, Duration::from_secs(5));
    got.sort_by_key(|p| p["key"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        got,
        vec![json!({"key": "a", "data": {"p": 1}, "version": 1}), json!({"key": "b", "data": {"p": 2}, "version": 5})]
    );
    // A second connection tracking `a` at the version it has gets nothing until it changes.
    let mut c2 = Client::connect(&s);
    c2.subscribe(ch);
    c2.track(ch, &[("a", 1)], &sign(ch, &["a"], ""));
    assert_eq!(c2.pubs(ch, Duration::from_millis(800)), Vec::<Value>::new());
    b.set("a", json!({"p": 10}), 2);
    let want = json!({"key": "a", "data": {"p": 10}, "version": 2});
    assert_eq!(c1.wait_pubs(ch, 1, Duration::from_secs(3)), vec![want.clone()]);
    assert_eq!(c2.wait_pubs(ch, 1, Duration::from_secs(3)), vec![want]);
    // Nothing is pushed twice for one version.
    assert_eq!(c1.pubs(ch, Duration::from_millis(700)), Vec::<Value>::new());
    // Untracked by c1: only c2 hears of `a` now. A removal reaches every tracker and ends it.
    let r = c1.call(json!({"sub_refresh": {"channel": ch, "type": 2, "untrack": ["a"]}}));
    assert!(r.get("error").is_none(), "{r}");
    b.set("a", json!({"p": 11}), 3);
    assert_eq!(c2.wait_pubs(ch, 1, Duration::from_secs(3))[0]["version"], 3);
    b.remove("b");
    assert_eq!(c1.wait_pubs(ch, 1, Duration::from_secs(3)), vec![json!({"key": "b", "removed": true})]);
    assert_eq!(c1.pubs(ch, Duration::from_millis(500)), Vec::<Value>::new(), "a key untracked and one removed");
    // One backend call per interval for the channel, whoever tracks what; versions sent.
    let calls = b.calls();
    assert!(calls.iter().all(|c| c["channel"] == ch), "{calls:?}");
    let before = calls.len();
    std::thread::sleep(Duration::from_millis(1500));
    let during = b.calls().len() - before;
    assert!((2..=7).contains(&during), "{during} backend calls in 1.5 s at a 300 ms interval");
    let last = b.calls().last().cloned().unwrap();
    assert_eq!(last["items"], json!([{"key": "a", "version": 3}]), "{last}");
}

#[test]
fn versionless_changes_are_found_by_their_data() {
    let b = Backend::start(true);
    b.set("x", json!({"n": 1}), 0);
    let s = Server::start(config(&b, "200ms", 5000));
    let ch = "live:room";
    let mut c = Client::connect(&s);
    let epoch = c.subscribe(ch)["subscribe"]["epoch"].as_str().unwrap_or_default().to_string();
    assert!(!epoch.is_empty(), "versionless channels have a server epoch");
    c.track(ch, &[("x", 0)], &sign(ch, &["x"], ""));
    assert_eq!(c.wait_pubs(ch, 1, Duration::from_secs(3)), vec![json!({"key": "x", "data": {"n": 1}, "version": 1})]);
    // Polled again and again with the same data: nothing new.
    assert_eq!(c.pubs(ch, Duration::from_millis(700)), Vec::<Value>::new());
    b.set("x", json!({"n": 2}), 0);
    assert_eq!(c.wait_pubs(ch, 1, Duration::from_secs(3)), vec![json!({"key": "x", "data": {"n": 2}, "version": 2})]);
    // Versionless requests carry no versions.
    assert!(b.calls().iter().all(|c| c["items"].as_array().unwrap().iter().all(|i| i.get("version").is_none())));
    // A second subscriber of the live channel shares its epoch.
    let mut d = Client::connect(&s);
    assert_eq!(d.subscribe(ch)["subscribe"]["epoch"], epoch.as_str());
}

#[test]
fn an_epoch_change_unsubscribes_trackers_with_insufficient_state() {
    let b = Backend::start(false);
    b.set("k", json!(1), 1);
    b.state.lock().unwrap().epoch = "e1".into();
    let mut cfg = config(&b, "200ms", 5000);
    // The state must outlive the trackers' resubscribe, however slowly the test runs: a state
    // dropped in between is re-created with no epoch until the backend names one.
    cfg["channel"]["namespaces"][0]["shared_poll"]["channel_shutdown_delay"] = json!("10s");
    let s = Server::start(cfg);
    let ch = "prices:x";
    let mut c = Client::connect(&s);
    c.subscribe(ch);
    c.track(ch, &[("k", 0)], &sign(ch, &["k"], ""));
    // The first answer's epoch is the channel's (no one is sent away for it).
    assert_eq!(c.wait_pubs(ch, 1, Duration::from_secs(3)), vec![json!({"key": "k", "data": 1, "version": 1})]);
    assert!(c.pushes.iter().all(|v| !v["push"]["unsubscribe"].is_object()), "{:?}", c.pushes);
    let mut d = Client::connect(&s);
    assert_eq!(d.subscribe(ch)["subscribe"]["epoch"], "e1");
    // The backend starts a new epoch (its versions start over): trackers are sent away.
    b.state.lock().unwrap().epoch = "e2".into();
    b.set("k", json!(2), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut unsub = None;
    while unsub.is_none() && Instant::now() < deadline {
        let _ = c.pubs(ch, Duration::from_millis(100));
        unsub = c.pushes.iter().find(|v| v["push"]["unsubscribe"].is_object()).cloned();
    }
    let u = unsub.expect("an unsubscribe push");
    assert_eq!(u["push"]["unsubscribe"]["code"], 2500, "{u}");
    // Subscribing again gives the new epoch; tracking from 0 gets the data.
    let r = c.subscribe(ch);
    assert_eq!(r["subscribe"]["epoch"], "e2", "{r}");
    c.track(ch, &[("k", 0)], &sign(ch, &["k"], ""));
    assert_eq!(c.wait_pubs(ch, 1, Duration::from_secs(3)), vec![json!({"key": "k", "data": 2, "version": 1})]);
}

#[test]
fn errors_as_centrifugo_answers_them() {
    let b = Backend::start(false);
    let s = Server::start(config(&b, "10s", 3));
    let ch = "prices:err";
    let mut c = Client::connect(&s);
    let code = |r: &Value| r["error"]["code"].as_u64().unwrap_or(0);
    // A shared poll subscribe to a channel of another type; another subscribe to a shared
    // poll channel.
    assert_eq!(code(&c.subscribe("plain:x")), 108);
    assert_eq!(code(&c.subscribe("nons:x")), 108);
    assert_eq!(code(&c.call(json!({"subscribe": {"channel": ch}}))), 107);
    // Tracking before subscribing.
    assert_eq!(code(&c.track(ch, &[("a", 0)], &sign(ch, &["a"], ""))), 103);
    assert!(c.subscribe(ch).get("error").is_none());
    assert_eq!(code(&c.subscribe(ch)), 105, "already subscribed");
    // Signatures: another key set, another channel, another user, a wrong key, expired (past
    // the 5 s grace), malformed.
    assert_eq!(code(&c.track(ch, &[("a", 0)], &sign(ch, &["b"], ""))), 103);
    assert_eq!(code(&c.track(ch, &[("a", 0)], &sign("prices:other", &["a"], ""))), 103);
    assert_eq!(code(&c.track(ch, &[("a", 0)], &sign(ch, &["a"], "alice"))), 103);
    let wrong = gyre::poll::signature::sign("other-secret", ch, &["a"], "", now(), now() + 60);
    assert_eq!(code(&c.track(ch, &[("a", 0)], &wrong)), 103);
    let expired = gyre::poll::signature::sign(SECRET, ch, &["a"], "", now() - 100, now() - 10);
    assert_eq!(code(&c.track(ch, &[("a", 0)], &expired)), 109);
    assert_eq!(code(&c.track(ch, &[("a", 0)], "garbage")), 103);
    // Empty requests.
    assert_eq!(code(&c.call(json!({"sub_refresh": {"channel": ch, "type": 1, "track": []}}))), 107);
    assert_eq!(code(&c.call(json!({"sub_refresh": {"channel": ch, "type": 2, "untrack": []}}))), 107);
    // The connection's key limit (3 here); a key tracked again takes no new slot.
    let keys = ["k1", "k2", "k3"];
    assert!(c.track(ch, &[("k1", 0), ("k2", 0), ("k3", 0)], &sign(ch, &keys, "")).get("error").is_none());
    assert!(c.track(ch, &[("k1", 0)], &sign(ch, &["k1"], "")).get("error").is_none());
    assert_eq!(code(&c.track(ch, &[("k4", 0)], &sign(ch, &["k4"], ""))), 106);
    // After an untrack there is room again.
    c.call(json!({"sub_refresh": {"channel": ch, "type": 2, "untrack": ["k1"]}}));
    assert!(c.track(ch, &[("k4", 0)], &sign(ch, &["k4"], "")).get("error").is_none());
    // The connection is still usable: unsubscribe, subscribe again.
    assert!(c.call(json!({"unsubscribe": {"channel": ch}})).get("error").is_none());
    assert!(c.subscribe(ch).get("error").is_none());
}

/// With the namespace's `presence` (and `join_leave`), shared poll subscribers are in the
/// channel's presence until they unsubscribe or go, as stream subscribers are.
#[test]
fn shared_poll_subscribers_are_in_presence() {
    let b = Backend::start(false);
    let mut cfg = config(&b, "10s", 3);
    merge(&mut cfg["channel"]["namespaces"][0], json!({"presence": true, "join_leave": true}));
    let s = Server::start(cfg);
    let ch = "prices:here";
    let clients = |s: &Server| -> Vec<String> {
        let r = s.api("presence", json!({"channel": ch}));
        let mut ids: Vec<String> = r["result"]["presence"].as_object().expect("presence").keys().cloned().collect();
        ids.sort();
        ids
    };
    let mut a = Client::connect(&s);
    let mut c = Client::connect(&s);
    let wait = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while clients(&s).len() != n {
            assert!(Instant::now() < deadline, "{n} in presence: {:?}", clients(&s));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(a.subscribe(ch).get("error").is_none());
    assert!(c.subscribe(ch).get("error").is_none());
    wait(2);
    assert_eq!(s.api("presence_stats", json!({"channel": ch})), json!({"result": {"num_clients": 2, "num_users": 1}}));
    assert!(c.call(json!({"unsubscribe": {"channel": ch}})).get("error").is_none());
    wait(1);
    drop(a);
    wait(0);
    // Without the option, no presence.
    let mut d = Client::connect(&s);
    assert!(d.subscribe("live:x").get("error").is_none());
    assert_eq!(s.api("presence", json!({"channel": "live:x"}))["error"]["code"], 108, "presence is off there");
}

#[test]
fn config_checks() {
    let b = Backend::start(false);
    let mut cfg = config(&b, "1s", 0);
    cfg["shared_poll"]["hmac_secret_key"] = json!("");
    let out = gyre_checkconfig(&cfg);
    assert!(out.contains("shared_poll.hmac_secret_key is required"), "{out}");
    let mut cfg = config(&b, "1s", 0);
    cfg["channel"]["namespaces"][1]["shared_poll"]["publish_enabled"] = json!(true);
    let out = gyre_checkconfig(&cfg);
    assert!(out.contains("incompatible with versionless mode"), "{out}");
    let mut cfg = config(&b, "1s", 0);
    cfg["channel"]["namespaces"][0]["shared_poll"]["proxy_name"] = json!("missing");
    let out = gyre_checkconfig(&cfg);
    assert!(out.contains("not found"), "{out}");
    let mut cfg = config(&b, "1s", 0);
    cfg["channel"]["namespaces"][0]["shared_poll"]["mode"] = json!("weird");
    assert!(gyre_checkconfig(&cfg).contains("invalid shared_poll mode"));
}

/// `gyre checkconfig` of `cfg`: what it printed (it must fail).
fn gyre_checkconfig(cfg: &Value) -> String {
    let (ok, out) = checkconfig(cfg);
    assert!(!ok, "checkconfig accepted {cfg}");
    out
}

/// Two nodes on one redis-server: each polls for its own trackers, and `shared_poll_publish`
/// on one node reaches the trackers of the key on the other.
#[test]
fn shared_poll_on_two_redis_nodes() {
    if !redis_available("shared_poll::shared_poll_on_two_redis_nodes") {
        return;
    }
    let r = RedisServer::start();
    let b = Backend::start(false);
    b.set("a", json!({"p": 1}), 1);
    let mut patch = config(&b, "300ms", 5000);
    patch["channel"]["namespaces"][0]["shared_poll"]["publish_enabled"] = json!(true);
    let nodes = cluster(2, &r, patch);
    let ch = "prices:two";
    let mut on_a = Client::connect(&nodes[0]);
    let mut on_b = Client::connect(&nodes[1]);
    for c in [&mut on_a, &mut on_b] {
        assert!(c.subscribe(ch).get("error").is_none());
        c.track(ch, &[("a", 0)], &sign(ch, &["a"], ""));
        assert_eq!(
            c.wait_pubs(ch, 1, Duration::from_secs(5)),
            vec![json!({"key": "a", "data": {"p": 1}, "version": 1})]
        );
    }
    // A version published through node A's API, between polls: both nodes' trackers get it.
    let res = nodes[0].api("shared_poll_publish", json!({"channel": ch, "key": "a", "version": 7, "data": {"p": 7}}));
    assert_eq!(res, json!({"result": {}}));
    let want = json!({"key": "a", "data": {"p": 7}, "version": 7});
    assert_eq!(on_a.wait_pubs(ch, 1, Duration::from_secs(5)), vec![want.clone()]);
    assert_eq!(on_b.wait_pubs(ch, 1, Duration::from_secs(5)), vec![want]);
    // And each node polls the backend for its own trackers.
    b.set("a", json!({"p": 8}), 8);
    assert_eq!(on_b.wait_pubs(ch, 1, Duration::from_secs(5))[0]["version"], 8);
    assert_eq!(on_a.wait_pubs(ch, 1, Duration::from_secs(5))[0]["version"], 8);
}
