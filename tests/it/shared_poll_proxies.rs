//! Shared poll subscriptions and the proxies, against `tests/python/proxy_backend.py`: the
//! keys' data polled over gRPC (`SharedPollRefresh` of the proxy service, through
//! `channel.proxy.shared_poll_refresh` and a named proxy), with removals and an epoch change;
//! a subscribe proxy deciding shared poll subscribes (over HTTP and gRPC: allowed with its
//! channel info and expiry, refused with an error, a failed call, a disconnect); and the
//! subscribers' keys in a `map_clients` presence namespace.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::proxy::{Backend, Proto};
use crate::shared_poll::{now, sign, Client, SECRET};
use crate::transports::urlencode;
use crate::util::*;
use crate::ws_client::{json_lines, CLOSE};

/// A server whose shared poll namespaces poll `b` over `proto`:
///
/// * `prices` — versioned, through `channel.proxy.shared_poll_refresh`, open to anonymous
///   clients, its subscribers kept in `clients:` (a `map_clients` namespace);
/// * `named` — versioned, through the proxy named `poller`;
/// * `sp` — versioned, subscribes decided by the subscribe proxy, subscribers in `clients:`;
///   its sub refresh proxy leaves track and untrack to the client (as Centrifugo does).
fn config(b: &Backend, proto: Proto) -> Value {
    let proxy = |kind: &str| {
        let mut p = json!({"endpoint": b.endpoint(proto, kind), "timeout": "2s"});
        if proto == Proto::Grpc {
            p["grpc"] = json!({"static_metadata": {"x-static": "static-1"},
                               "credentials_key": "x-credentials", "credentials_value": "secret-1"});
        }
        p
    };
    let sp = |name: &str, extra: Value| {
        let mut ns = json!({"name": name, "subscription_type": "shared_poll",
                            "shared_poll": {"mode": "versioned", "refresh_interval": "300ms",
                                            "channel_shutdown_delay": "200ms"}});
        merge(&mut ns, extra);
        ns
    };
    let mut poller = proxy("shared_poll_refresh");
    poller["name"] = json!("poller");
    json!({
        "http_api": {"key": KEY},
        "client": {"allowed_origins": ["*"], "allow_anonymous_connect_without_token": true},
        "shared_poll": {"hmac_secret_key": SECRET},
        "proxies": [poller],
        "channel": {
            "proxy": {"shared_poll_refresh": proxy("shared_poll_refresh"), "subscribe": proxy("subscribe"),
                      "sub_refresh": proxy("sub_refresh")},
            "namespaces": [
                sp("prices", json!({"allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
                                    "map_clients_presence_channel_prefix": "clients:"})),
                sp("named", json!({"allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
                                   "shared_poll": {"proxy_name": "poller"}})),
                sp("sp", json!({"subscribe_proxy_enabled": true, "sub_refresh_proxy_enabled": true,
                                "map_clients_presence_channel_prefix": "clients:"})),
                {"name": "clients", "subscription_type": "map_clients", "allow_subscribe_for_client": true,
                 "map": {"mode": "recoverable", "key_ttl": "60s"}},
            ]
        },
        "workers": 2
    })
}

/// Sets key `key` on the backend (`None`: removed).
fn set(b: &Backend, key: &str, data: Option<(Value, u64)>) {
    match data {
        Some((d, v)) => b.get(&format!("/poll?key={key}&data={}&version={v}", urlencode(&d.to_string()))),
        None => b.get(&format!("/poll?key={key}&removed=1")),
    };
}

/// The keys of presence map channel `ch`.
fn presence_keys(s: &Server, ch: &str) -> Vec<String> {
    let r = s.api("map_read_state", json!({"channel": ch, "limit": 100}));
    let entries = r["result"]["entries"].as_array().cloned().unwrap_or_default();
    entries.iter().map(|e| e["key"].as_str().unwrap_or_default().to_string()).collect()
}

/// Waits (≤ 5 s) until `ch`'s presence keys number `n`; returns them.
fn wait_presence(s: &Server, ch: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys = presence_keys(s, ch);
        if keys.len() == n || Instant::now() > deadline {
            assert_eq!(keys.len(), n, "presence keys of {ch}: {keys:?}");
            return keys;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (≤ 5 s) for an unsubscribe push of `ch` to `c`.
fn wait_unsubscribe(c: &mut Client, ch: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let _ = c.pubs(ch, Duration::from_millis(100));
        let found = c.pushes.iter().find(|v| v["push"]["channel"] == ch && v["push"]["unsubscribe"].is_object());
        if let Some(u) = found {
            return u.clone();
        }
        assert!(Instant::now() < deadline, "no unsubscribe push of {ch}: {:?}", c.pushes);
    }
}

#[test]
fn shared_poll_refresh_over_grpc() {
    let Some(b) = Backend::start("shared_poll_proxies::shared_poll_refresh_over_grpc", true) else { return };
    set(&b, "a", Some((json!({"p": 1}), 1)));
    set(&b, "b", Some((json!({"p": 2}), 5)));
    b.get("/poll?epoch=e1");
    let s = Server::start(config(&b, Proto::Grpc));
    let ch = "prices:eu";
    let mut c = Client::connect(&s);
    let r = c.subscribe(ch);
    assert_eq!(r["subscribe"]["type"], 4, "{r}");
    assert!(c.track(ch, &[("a", 0), ("b", 0)], &sign(ch, &["a", "b"], "")).get("error").is_none());
    let mut got = c.wait_pubs(ch, 2, Duration::from_secs(5));
    got.sort_by_key(|p| p["key"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        got,
        vec![json!({"key": "a", "data": {"p": 1}, "version": 1}), json!({"key": "b", "data": {"p": 2}, "version": 5})]
    );
    // The gRPC request: the channel, its keys with their versions, static metadata and
    // credentials.
    let call = b.wait("a SharedPollRefresh call", "shared_poll_refresh", |r| {
        r["protocol"] == "grpc" && r["body"]["channel"] == ch
    });
    assert_eq!(call["path"], "SharedPollRefresh", "{call}");
    assert_eq!(call["headers"]["x-static"], "static-1", "{call}");
    assert_eq!(call["headers"]["x-credentials"], "secret-1", "{call}");
    let keys: Vec<&str> = call["body"]["items"].as_array().unwrap().iter().filter_map(|i| i["key"].as_str()).collect();
    assert_eq!(keys, ["a", "b"], "{call}");
    b.wait("a poll with the versions the channel has", "shared_poll_refresh", |r| {
        r["body"]["channel"] == ch
            && r["body"]["items"].as_array().is_some_and(|i| i.contains(&json!({"key": "b", "version": "5"})))
    });
    // A new version, then a removal.
    set(&b, "a", Some((json!({"p": 10}), 2)));
    assert_eq!(c.wait_pubs(ch, 1, Duration::from_secs(3)), vec![json!({"key": "a", "data": {"p": 10}, "version": 2})]);
    set(&b, "b", None);
    assert_eq!(c.wait_pubs(ch, 1, Duration::from_secs(3)), vec![json!({"key": "b", "removed": true})]);
    // The epoch the backend answered is the channel's.
    let mut d = Client::connect(&s);
    assert_eq!(d.subscribe(ch)["subscribe"]["epoch"], "e1");
    // Through the named proxy (gRPC as well).
    let named = "named:x";
    assert!(d.subscribe(named).get("error").is_none());
    d.track(named, &[("a", 0)], &sign(named, &["a"], ""));
    assert_eq!(
        d.wait_pubs(named, 1, Duration::from_secs(5)),
        vec![json!({"key": "a", "data": {"p": 10}, "version": 2})]
    );
    // A new epoch: the trackers are sent away (insufficient state).
    b.get("/poll?epoch=e2");
    set(&b, "a", Some((json!({"p": 20}), 3)));
    let u = wait_unsubscribe(&mut c, ch);
    assert_eq!(u["push"]["unsubscribe"]["code"], 2500, "{u}");
}

#[test]
fn shared_poll_subscribers_in_presence_maps() {
    let Some(b) = Backend::start("shared_poll_proxies::shared_poll_subscribers_in_presence_maps", false) else {
        return;
    };
    let s = Server::start(config(&b, Proto::Http));
    let ch = "prices:presence";
    let pch = format!("clients:{ch}");
    let mut c1 = Client::connect(&s);
    let mut c2 = Client::connect(&s);
    assert!(c1.subscribe(ch).get("error").is_none());
    assert!(c2.subscribe(ch).get("error").is_none());
    let keys = wait_presence(&s, &pch, 2);
    assert!(keys.iter().all(|k| !k.is_empty()), "{keys:?}");
    // An unsubscribe removes the client's key; a closed connection too.
    assert!(c1.call(json!({"unsubscribe": {"channel": ch}})).get("error").is_none());
    let left = wait_presence(&s, &pch, 1);
    assert!(keys.contains(&left[0]), "{left:?} of {keys:?}");
    drop(c2);
    wait_presence(&s, &pch, 0);
}

fn subscribe_proxy_flow(proto: Proto, test: &str) {
    let Some(b) = Backend::start(test, proto == Proto::Grpc) else { return };
    set(&b, "k", Some((json!("v"), 1)));
    let s = Server::start(config(&b, proto));
    let mut c = Client::connect(&s);
    let code = |r: &Value| r["error"]["code"].as_u64().unwrap_or(0);
    // Allowed: the result's expiry and channel info apply.
    let ch = "sp:ok";
    let sub = json!({"subscribe": {"channel": ch, "type": 4,
                                   "data": {"info": {"role": "reader"}, "expire_at_in": 600}}});
    let r = c.call(sub);
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!((&r["subscribe"]["type"], &r["subscribe"]["expires"]), (&json!(4), &json!(true)), "{r}");
    let ttl = r["subscribe"]["ttl"].as_u64().unwrap_or(0);
    assert!((590..=600).contains(&ttl), "{r}");
    let req = b.wait("the subscribe call", "subscribe", |r| r["body"]["channel"] == ch);
    assert_eq!(req["protocol"], proto_name(proto), "{req}");
    assert_eq!(req["body"]["data"], json!({"info": {"role": "reader"}, "expire_at_in": 600}), "{req}");
    assert!(req["body"]["client"].as_str().is_some_and(|c| !c.is_empty()), "{req}");
    // The subscription tracks keys as any other (the sub refresh proxy takes no part).
    assert!(c.track(ch, &[("k", 0)], &sign(ch, &["k"], "")).get("error").is_none());
    assert_eq!(c.wait_pubs(ch, 1, Duration::from_secs(5)), vec![json!({"key": "k", "data": "v", "version": 1})]);
    // Its presence key carries the channel info.
    let r = s.api("map_read_state", json!({"channel": format!("clients:{ch}")}));
    let info = &r["result"]["entries"][0]["info"];
    assert_eq!(info["chan_info"], json!({"role": "reader"}), "{r}");
    // Refused: the backend's error, a failed call (100), an expiry already past (110).
    let r = c.subscribe("sp:deny");
    assert_eq!((code(&r), &r["error"]["message"]), (403, &json!("denied")), "{r}");
    let r = c.subscribe("sp:busy");
    assert_eq!((code(&r), &r["error"]["temporary"]), (1001, &json!(true)), "{r}");
    assert_eq!(code(&c.subscribe("sp:fail")), 100);
    let past = json!({"subscribe": {"channel": "sp:past", "type": 4, "data": {"expire_at": now() - 10}}});
    assert_eq!(code(&c.call(past)), 110);
    // A refused subscribe left nothing behind: the channel can be subscribed again.
    let r = c.call(
        json!({"subscribe": {"channel": "sp:again", "type": 4, "data": {"error": {"code": 4000, "message": "no"}}}}),
    );
    assert_eq!(code(&r), 4000, "{r}");
    assert!(c.subscribe("sp:again").get("error").is_none());
    // The backend's disconnect closes the connection.
    c.ws.send_json(&json!({"id": 99, "subscribe": {"channel": "sp:kick", "type": 4}}));
    let deadline = Instant::now() + Duration::from_secs(5);
    let close = loop {
        let f = c.ws.frame_until(deadline).expect("a close frame");
        if f.op == CLOSE {
            break f.close();
        }
        assert!(json_lines(&f.payload).iter().all(|v| v["id"] != 99), "a reply instead of the disconnect");
    };
    assert_eq!(close, (4403, "kicked".to_string()));
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Http => "http",
        Proto::Grpc => "grpc",
    }
}

#[test]
fn subscribe_proxy_on_shared_poll_over_http() {
    subscribe_proxy_flow(Proto::Http, "shared_poll_proxies::subscribe_proxy_on_shared_poll_over_http");
}

#[test]
fn subscribe_proxy_on_shared_poll_over_grpc() {
    subscribe_proxy_flow(Proto::Grpc, "shared_poll_proxies::subscribe_proxy_on_shared_poll_over_grpc");
}

#[test]
fn config_checks() {
    let cfg = |endpoint: &str, ns: Value| {
        let mut n = json!({"name": "sp", "subscription_type": "shared_poll"});
        merge(&mut n, ns);
        json!({"shared_poll": {"hmac_secret_key": SECRET},
               "channel": {"proxy": {"shared_poll_refresh": {"endpoint": endpoint},
                                     "subscribe": {"endpoint": endpoint},
                                     "subscribe_stream": {"endpoint": "grpc://127.0.0.1:1"}},
                           "namespaces": [n]}})
    };
    // gRPC refresh endpoints and subscribe proxies are accepted on shared poll namespaces.
    let (ok, out) = checkconfig(&cfg("grpc://127.0.0.1:1", json!({"subscribe_proxy_enabled": true})));
    assert!(ok, "{out}");
    // Subscription streams are not.
    let (ok, out) = checkconfig(&cfg("http://127.0.0.1:1/x", json!({"subscribe_stream_proxy_enabled": true})));
    assert!(!ok && out.contains("subscribe stream proxies are not supported"), "{out}");
}
