//! Fossil deltas per key on map channels (centrifuge-js, JSON and protobuf); conditional and
//! versioned map writes (`key_mode`, `version`/`version_epoch`, results with
//! `suppressed` and `suppress_reason`), `map.meta_ttl`, and presence maps
//! (`map_clients_presence_channel_prefix`, `map_users_presence_channel_prefix`) watched with
//! `centrifuge` (JS, 5.8) — on the memory engine and on two nodes over `redis-server`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::map_subs::{node_ready, run_node};
use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "presence-secret";

/// `map` (recoverable, clients may write), `eph` (ephemeral), `meta` (state gone 2 s after
/// its last change), `mapd` (fossil deltas allowed), `chat` (a stream namespace whose
/// subscribers are kept in `clients:` and `users:`), and the presence map namespaces (keys
/// live 2 s unless kept alive). Anonymous clients may subscribe everywhere.
fn config() -> Value {
    let map = |name: &str, map: Value| {
        json!({"name": name, "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
               "subscription_type": "map", "map": map})
    };
    let presence = |name: &str, kind: &str| {
        json!({"name": name, "allow_subscribe_for_client": true, "subscription_type": kind,
               "map": {"mode": "recoverable", "key_ttl": "2s"}})
    };
    let mut mapd = map("mapd", json!({"mode": "recoverable", "key_ttl": "300s"}));
    mapd["allowed_delta_types"] = json!(["fossil"]);
    json!({
        "http_api": {"key": KEY},
        "client": {"allowed_origins": ["*"], "allow_anonymous_connect_without_token": true,
                   "token": {"hmac_secret_key": SECRET}},
        "engine": {"type": "memory"},
        "channel": {"namespaces": [
            map("map", json!({"mode": "recoverable", "key_ttl": "300s", "allow_publish_for_client": true,
                              "allow_remove_for_client": true, "allow_publish_for_anonymous": true,
                              "allow_remove_for_anonymous": true})),
            map("eph", json!({"mode": "ephemeral", "key_ttl": "300s"})),
            map("meta", json!({"mode": "recoverable", "key_ttl": "300s", "stream_ttl": "1s", "meta_ttl": "2s"})),
            mapd,
            map("lim", json!({"mode": "recoverable", "key_ttl": "300s", "min_page_size": 1,
                              "live_transition_max_publication_limit": 2, "subscribe_catch_up_timeout": "1s"})),
            map("nolimit", json!({"mode": "recoverable", "key_ttl": "300s", "min_page_size": 1,
                                  "subscribe_catch_up_timeout": "-1s"})),
            {"name": "chat", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
             "map_clients_presence_channel_prefix": "clients:", "map_users_presence_channel_prefix": "users:"},
            presence("clients", "map_clients"),
            presence("users", "map_users"),
        ]},
        "workers": 2
    })
}

/// The result of a map write, as the API answers it.
fn write(s: &Server, method: &str, params: Value) -> Value {
    let r = s.api(method, params);
    assert!(r.get("error").is_none(), "{method}: {r}");
    r["result"].clone()
}

fn suppressed(r: &Value) -> Option<&str> {
    (r["suppressed"] == true).then(|| r["suppress_reason"].as_str().unwrap_or("?"))
}

/// Writes through `a` and `b` (the same server, or two nodes of one Redis).
fn check_write_modes(a: &Server, b: &Server) {
    let ch = "map:modes";
    let r = write(a, "map_publish", json!({"channel": ch, "key": "a", "data": {"v": 1}}));
    assert_eq!((r["offset"].as_u64(), suppressed(&r)), (Some(1), None), "{r}");
    assert!(r.get("suppressed").is_none() && r.get("suppress_reason").is_none(), "left out when false: {r}");
    let epoch = r["epoch"].clone();

    // key_mode if_new: only an absent key is written.
    let r = write(b, "map_publish", json!({"channel": ch, "key": "a", "data": {"v": 2}, "key_mode": "if_new"}));
    assert_eq!((r["offset"].as_u64(), suppressed(&r)), (Some(1), Some("key_exists")), "{r}");
    assert_eq!(r["epoch"], epoch, "{r}");
    let r = write(b, "map_publish", json!({"channel": ch, "key": "b", "data": {"v": 1}, "key_mode": "if_new"}));
    assert_eq!((r["offset"].as_u64(), suppressed(&r)), (Some(2), None), "{r}");
    // key_mode if_exists: only a present key.
    let r = write(a, "map_publish", json!({"channel": ch, "key": "zz", "data": 1, "key_mode": "if_exists"}));
    assert_eq!((r["offset"].as_u64(), suppressed(&r)), (Some(2), Some("key_not_found")), "{r}");
    let r = write(a, "map_publish", json!({"channel": ch, "key": "a", "data": {"v": 3}, "key_mode": "if_exists"}));
    assert_eq!((r["offset"].as_u64(), suppressed(&r)), (Some(3), None), "{r}");

    // Versions per key: an older or repeated version changes nothing; another version epoch
    // starts again; an empty version epoch compares with any.
    let v = |b: &Server, version: u64, epoch: &str, data: i64| {
        let p = json!({"channel": ch, "key": "v", "data": data, "version": version, "version_epoch": epoch});
        let r = write(b, "map_publish", p);
        (r["offset"].as_u64().unwrap(), suppressed(&r).map(str::to_string))
    };
    assert_eq!(v(a, 5, "x", 5), (4, None));
    assert_eq!(v(b, 5, "x", 50), (4, Some("version".into())));
    assert_eq!(v(a, 4, "x", 4), (4, Some("version".into())));
    assert_eq!(v(b, 6, "x", 6), (5, None));
    assert_eq!(v(a, 1, "y", 1), (6, None), "another version epoch");
    assert_eq!(v(b, 1, "", 10), (6, Some("version".into())), "empty epoch: compared with any");
    // Other keys have their own versions.
    let r = write(a, "map_publish", json!({"channel": ch, "key": "w", "data": 0, "version": 1}));
    assert_eq!(suppressed(&r), None, "{r}");

    // Removal of an absent key; removal and the state after all of it.
    let r = write(b, "map_remove", json!({"channel": ch, "key": "nope"}));
    assert_eq!((r["offset"].as_u64(), suppressed(&r)), (Some(7), Some("key_not_found")), "{r}");
    let r = write(b, "map_remove", json!({"channel": ch, "key": "b"}));
    assert_eq!((r["offset"].as_u64(), suppressed(&r)), (Some(8), None), "{r}");
    let r = write(a, "map_read_state", json!({"channel": ch, "limit": 100}));
    let state: Vec<(String, Value)> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_string(), e["data"].clone()))
        .collect();
    let want = [("a", json!({"v": 3})), ("v", json!(1)), ("w", json!(0))];
    assert_eq!(state, want.map(|(k, v)| (k.to_string(), v)), "{r}");

    // Idempotency: the first result again, marked.
    let p = json!({"channel": ch, "key": "i", "data": 1, "idempotency_key": "k1"});
    let first = write(a, "map_publish", p.clone());
    let again = write(b, "map_publish", p);
    assert_eq!((&again["offset"], suppressed(&again)), (&first["offset"], Some("idempotency")), "{again}");

    // Refused: an unknown key mode, a version where there is no stream.
    let r = a.api("map_publish", json!({"channel": ch, "key": "a", "data": 1, "key_mode": "sometimes"}));
    assert_eq!(r["error"]["code"], 107, "{r}");
    let r = a.api("map_publish", json!({"channel": "eph:x", "key": "a", "data": 1, "version": 1}));
    assert_eq!(r["error"]["code"], 107, "{r}");
}

/// `map.meta_ttl`: 2 s after the last change the channel starts again from no keys, with a
/// new epoch.
fn check_meta_ttl(a: &Server, b: &Server) {
    let ch = "meta:x";
    let first = write(a, "map_publish", json!({"channel": ch, "key": "k", "data": 1}));
    let r = write(b, "map_read_state", json!({"channel": ch}));
    assert_eq!((r["entries"].as_array().unwrap().len(), &r["epoch"]), (1, &first["epoch"]), "{r}");
    std::thread::sleep(Duration::from_millis(3200));
    let r = write(b, "map_read_state", json!({"channel": ch}));
    assert_eq!(r["entries"], json!([]), "the state went with the meta: {r}");
    assert_ne!(r["epoch"], first["epoch"], "{r}");
    let r = write(a, "map_publish", json!({"channel": ch, "key": "k", "data": 2}));
    assert_eq!(r["offset"], 1, "offsets start again: {r}");
}

#[test]
fn map_write_modes_and_meta_ttl() {
    let s = Server::start(config());
    check_write_modes(&s, &s);
    check_meta_ttl(&s, &s);
}

#[test]
fn map_write_modes_and_meta_ttl_redis_two_nodes() {
    if !redis_available("map_write_modes_and_meta_ttl_redis_two_nodes") {
        return;
    }
    let redis = RedisServer::start();
    let n = nodes(&redis);
    check_write_modes(&n[0], &n[1]);
    check_meta_ttl(&n[0], &n[1]);
}

fn nodes(redis: &RedisServer) -> Vec<Server> {
    let mut cfg = config();
    cfg.as_object_mut().unwrap().remove("engine");
    cluster(2, redis, cfg)
}

/// The presence map options are checked at start-up.
#[test]
fn map_presence_options_are_checked() {
    let bad = |patch: Value, want: &str| {
        let mut cfg = config();
        merge(&mut cfg, patch);
        let out = check_config(&cfg);
        assert!(out.contains(want), "want {want:?} in: {out}");
    };
    let ns = |extra: Value| {
        let mut n = json!({"name": "room"});
        merge(&mut n, extra);
        let mut list = config()["channel"]["namespaces"].as_array().unwrap().clone();
        list.push(n);
        json!({"channel": {"namespaces": list}})
    };
    bad(ns(json!({"map_clients_presence_channel_prefix": "nowhere:"})), "does not exist");
    bad(ns(json!({"map_clients_presence_channel_prefix": "users:"})), "must have subscription_type \"map_clients\"");
    bad(ns(json!({"map_users_presence_channel_prefix": "map:"})), "must have subscription_type \"map_users\"");
    bad(
        ns(json!({"subscription_type": "map_clients", "map": {"mode": "persistent"}})),
        "not allowed with subscription_type",
    );
    bad(ns(json!({"subscription_type": "map_users", "map": {"mode": "recoverable"}})), "map.key_ttl is required");
    bad(
        ns(json!({"subscription_type": "map", "map": {"mode": "ephemeral", "key_ttl": "1s", "meta_ttl": "1h"}})),
        "meta_ttl must be 0",
    );
    bad(
        ns(json!({"subscription_type": "map", "map": {"mode": "recoverable", "key_ttl": "1s", "meta_ttl": "1s"}})),
        "must be >= map.stream_ttl",
    );
}

/// `gyre checkconfig` on `cfg` (refused): what it printed.
fn check_config(cfg: &Value) -> String {
    let (ok, out) = checkconfig(cfg);
    assert!(!ok, "checkconfig accepted it");
    out
}

fn run_presence(s: &Server, s2: &Server, protobuf: bool) -> Value {
    let q = if protobuf { "?format=protobuf" } else { "" };
    let tokens = json!({
        "w": jwt(SECRET, json!({"sub": "watcher"})),
        "a": jwt(SECRET, json!({"sub": "u1"})),
        "b": jwt(SECRET, json!({"sub": "u1"})),
    });
    let arg = json!({
        "url": format!("ws://{}/connection/websocket{q}", s.addr()),
        "url2": format!("ws://{}/connection/websocket{q}", s2.addr()),
        "protobuf": protobuf, "ch": "chat:room", "clientsCh": "clients:chat:room", "usersCh": "users:chat:room",
        "tokens": tokens,
    });
    run_node("map_presence.js", &arg)
}

fn check_presence(v: &Value) {
    assert_eq!(v["initial"], json!({"clients": {}, "users": []}), "the watcher is not a member: {v}");
    let ids = &v["ids"];
    let (a, b, c) = (ids["a"].as_str().unwrap(), ids["b"].as_str().unwrap(), ids["c"].as_str().unwrap());
    let clients = |list: &[(&str, &str)]| Value::Object(list.iter().map(|(k, u)| (k.to_string(), json!(u))).collect());
    assert_eq!(v["all"]["clients"], clients(&[(a, "u1"), (b, "u1"), (c, "")]), "client keys carry client info: {v}");
    assert_eq!(v["all"]["users"], json!(["u1"]), "one key per user, none for the anonymous one: {v}");
    assert_eq!(v["userUpdates"], json!([{"key": "u1", "removed": false}]), "the second connection adds nothing: {v}");
    assert_eq!(v["kept"], json!({"clients": 3, "users": 1, "updates": 3}), "kept alive past key_ttl: {v}");
    assert_eq!(v["afterA"], json!({"clients": clients(&[(b, "u1"), (c, "")]), "users": ["u1"]}), "{v}");
    assert_eq!(v["afterAll"], json!({"clients": {}, "users": ["u1"]}), "a user key outlives its connections: {v}");
    let gone = v["userGoneMs"].as_u64().unwrap();
    assert!((500..6000).contains(&gone), "key_ttl 2 s: the user key expired {gone} ms after the last left");
    assert_eq!(v["errors"], json!([]), "{v}");
}

#[test]
fn map_presence_sdk_json() {
    if !node_ready("map_presence_sdk_json") {
        return;
    }
    let s = Server::start(config());
    check_presence(&run_presence(&s, &s, false));
}

#[test]
fn map_presence_sdk_protobuf() {
    if !node_ready("map_presence_sdk_protobuf") {
        return;
    }
    let s = Server::start(config());
    check_presence(&run_presence(&s, &s, true));
}

/// Members on two nodes; the user key is kept alive from both.
#[test]
fn map_presence_redis_two_nodes() {
    if !redis_available("map_presence_redis_two_nodes") || !node_ready("map_presence_redis_two_nodes") {
        return;
    }
    let redis = RedisServer::start();
    let n = nodes(&redis);
    check_presence(&run_presence(&n[0], &n[1], false));
}

/// What `tests/js/map_delta.js` saw against `s`.
/// Clients on `s`, changes through the API of `api`.
fn run_delta(s: &Server, api: &Server, protobuf: bool) -> Value {
    let q = if protobuf { "?format=protobuf" } else { "" };
    let arg = json!({
        "url": format!("ws://{}/connection/websocket{q}", s.addr()), "api": format!("http://{}", api.addr()),
        "key": KEY, "protobuf": protobuf, "ch": "mapd:doc",
    });
    run_node("map_delta.js", &arg)
}

/// Changes published with `delta` reach a subscriber that asked for fossil deltas as patches
/// against each key's previous value (a key set again after its removal starts in full),
/// and one that did not ask in full; both end with the same documents. `patched`: how many
/// of the nine changes the delta client gets as patches.
fn check_delta(v: &Value, patched: u64) {
    let ups = |n: [i64; 6]| {
        let mut u: Vec<Value> = ["a", "b", "a", "b", "a", "b"]
            .iter()
            .zip(n)
            .map(|(k, n)| json!({"key": k, "removed": false, "n": n}))
            .collect();
        u.push(json!({"key": "b", "removed": true, "n": null}));
        u.push(json!({"key": "b", "removed": false, "n": 10}));
        u.push(json!({"key": "b", "removed": false, "n": 11}));
        Value::Array(u)
    };
    for who in ["delta", "full"] {
        assert_eq!(v[who]["state"], v["want"], "{who}: {v}");
        assert_eq!(v[who]["updates"], ups([1, 1, 2, 2, 3, 3]), "{who}: {v}");
    }
    let st = &v["stats"];
    assert_eq!(st["numDeltaPayloads"], patched, "{st}");
    assert_eq!(st["numFullPayloads"], 2 + 8 - patched, "the two state entries, and the changes not patched: {st}");
    // Each patch is a few dozen bytes against ~1.9 KB of data.
    let (got, full) = (st["bytesReceived"].as_u64().unwrap(), st["bytesDecoded"].as_u64().unwrap());
    assert!(got < full - patched * 1500, "patches are small: {st}");
}

#[test]
fn map_fossil_deltas_per_key_sdk_json() {
    if !node_ready("map_fossil_deltas_per_key_sdk_json") {
        return;
    }
    let s = Server::start(config());
    // Six changes of kept keys, and b after it was set again.
    check_delta(&run_delta(&s, &s, false), 7);
}

/// On two nodes of one Redis: the node of the subscribers patches the changes it hears.
#[test]
fn map_fossil_deltas_per_key_redis_two_nodes() {
    if !redis_available("map_fossil_deltas_per_key_redis_two_nodes")
        || !node_ready("map_fossil_deltas_per_key_redis_two_nodes")
    {
        return;
    }
    let redis = RedisServer::start();
    let n = nodes(&redis);
    // The node holds no value of a key before the first change it hears: a and b go in full
    // once more than on the owner of a memory engine.
    check_delta(&run_delta(&n[1], &n[0], false), 5);
}

#[test]
fn map_fossil_deltas_per_key_sdk_protobuf() {
    if !node_ready("map_fossil_deltas_per_key_sdk_protobuf") {
        return;
    }
    let s = Server::start(config());
    check_delta(&run_delta(&s, &s, true), 7);
}

/// A client's map publish names a valid channel (else 107, as Centrifugo checks it); its
/// publish carries its client info, its removal none (as Centrifugo's removal).
#[test]
fn map_client_writes_check_the_channel_and_removals_carry_no_info() {
    let s = Server::start(config());
    let mut a = JsonClient::open(&s);
    a.call(json!({"connect": {}})).unwrap();
    let r = a.call(json!({"subscribe": {"channel": "map:room", "type": 1, "phase": 2}})).unwrap();
    assert_eq!(r["subscribe"]["type"], 1, "{r}");
    let mut b = JsonClient::open(&s);
    let id_b = b.call(json!({"connect": {}})).unwrap()["connect"]["client"].clone();
    let write = |b: &mut JsonClient, ch: &str, removed: bool| {
        let p = json!({"publish": {"channel": ch, "type": 1, "key": "k", "data": {"x": 1}, "removed": removed}});
        b.call(p).unwrap()
    };
    assert_eq!(write(&mut b, "map:r\u{f6}om", false)["error"]["code"], 107, "not an ASCII name");
    assert!(write(&mut b, "map:room", false).get("error").is_none());
    assert!(write(&mut b, "map:room", true).get("error").is_none());
    let mut pubs = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pubs.len() < 2 {
        let f = a.ws.frame_until(deadline).expect("the pushes");
        pubs.extend(json_lines(&f.payload).into_iter().filter_map(|v| v["push"].get("pub").cloned()));
    }
    assert_eq!(pubs[0]["info"]["client"], id_b, "{pubs:?}");
    assert_eq!(pubs[1]["removed"], true, "{pubs:?}");
    assert!(pubs[1].get("info").is_none(), "{pubs:?}");
}

/// `map.live_transition_max_publication_limit`: a subscriber that would catch up with more
/// changes than that after its first page gets 112 (and loads the state again);
/// `map.subscribe_catch_up_timeout`: one that pages for longer is closed as slow (3008);
/// `-1s` turns that off.
#[test]
fn map_live_transition_limit_and_catch_up_timeout() {
    let s = Server::start(config());
    for ch in ["lim:a", "lim:b", "nolimit:c"] {
        for k in ["k1", "k2"] {
            write(&s, "map_publish", json!({"channel": ch, "key": k, "data": 0}));
        }
    }
    let mut c = JsonClient::open(&s);
    c.call(json!({"connect": {}})).unwrap();
    let first = |c: &mut JsonClient, ch: &str| {
        let r = c.call(json!({"subscribe": {"channel": ch, "type": 1, "phase": 2, "limit": 1}})).unwrap();
        let p = r["subscribe"].clone();
        assert_eq!(p["cursor"], "k1", "{r}");
        p
    };
    let last = |c: &mut JsonClient, ch: &str, p: &Value| {
        let next = json!({"subscribe": {"channel": ch, "type": 1, "phase": 2, "limit": 1, "cursor": "k1",
                                        "offset": p["offset"], "epoch": p["epoch"]}});
        c.call(next)
    };
    let changes = |n: i64, ch: &str| {
        for i in 0..n {
            write(&s, "map_publish", json!({"channel": ch, "key": "k1", "data": i + 1}));
        }
    };
    // Two changes meanwhile: caught up.
    let p = first(&mut c, "lim:a");
    changes(2, "lim:a");
    let r = last(&mut c, "lim:a", &p).unwrap();
    assert_eq!(r["subscribe"]["publications"].as_array().map(Vec::len), Some(2), "{r}");
    // Three: past the limit.
    let p = first(&mut c, "lim:b");
    changes(3, "lim:b");
    assert_eq!(last(&mut c, "lim:b", &p).unwrap()["error"]["code"], 112);
    // No catch-up limit: a slow client still goes live.
    let p = first(&mut c, "nolimit:c");
    std::thread::sleep(Duration::from_millis(1300));
    assert!(last(&mut c, "nolimit:c", &p).unwrap().get("error").is_none());
    // Paging for longer than 1 s: closed as slow.
    let r = c.call(json!({"unsubscribe": {"channel": "lim:a"}})).unwrap();
    assert!(r.get("error").is_none(), "{r}");
    let p = first(&mut c, "lim:a");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(last(&mut c, "lim:a", &p), Err(3008));
}

/// `map_read_stream` (the change stream, removals included: after a position, newest first,
/// 112 for another epoch), `map_read_state` of one key and with a revision epoch, over the
/// HTTP API, by name and by number in a legacy request.
#[test]
fn map_read_stream_and_key_reads() {
    let s = Server::start(config());
    check_reads(&s, &s);
}

#[test]
fn map_read_stream_and_key_reads_redis_two_nodes() {
    if !redis_available("map_read_stream_and_key_reads_redis_two_nodes") {
        return;
    }
    let redis = RedisServer::start();
    let n = nodes(&redis);
    check_reads(&n[0], &n[1]);
}

/// Changes through `w`, reads through `s`.
fn check_reads(w: &Server, s: &Server) {
    let ch = "map:stream";
    for (k, v) in [("a", 1), ("b", 2), ("a", 3)] {
        write(w, "map_publish", json!({"channel": ch, "key": k, "data": v}));
    }
    write(w, "map_remove", json!({"channel": ch, "key": "b"}));
    let r = write(s, "map_read_stream", json!({"channel": ch, "limit": -1}));
    let entries: Vec<(String, u64, bool)> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().into(), e["offset"].as_u64().unwrap(), e["removed"] == true))
        .collect();
    let want = [("a", 1, false), ("b", 2, false), ("a", 3, false), ("b", 4, true)];
    assert_eq!(entries, want.map(|(k, o, rm)| (k.to_string(), o, rm)), "{r}");
    assert_eq!(r["entries"][3], json!({"offset": 4, "key": "b", "removed": true}), "no data for a removal: {r}");
    assert_eq!(r["offset"], 4, "{r}");
    let epoch = r["epoch"].clone();
    let r = write(s, "map_read_stream", json!({"channel": ch, "since_offset": 2, "since_epoch": epoch, "limit": 10}));
    assert_eq!(r["entries"].as_array().unwrap().iter().map(|e| e["offset"].clone()).collect::<Vec<_>>(), [3, 4]);
    let r = write(s, "map_read_stream", json!({"channel": ch, "limit": 1, "reverse": true}));
    assert_eq!(r["entries"][0]["offset"], 4, "{r}");
    let r = write(s, "map_read_stream", json!({"channel": ch, "limit": 0}));
    assert_eq!((r["entries"].clone(), r["offset"].clone()), (json!([]), json!(4)), "the position only: {r}");
    let r = s.api("map_read_stream", json!({"channel": ch, "since_offset": 1, "since_epoch": "other", "limit": 5}));
    assert_eq!(r["error"]["code"], 112, "{r}");
    assert_eq!(s.api("map_read_stream", json!({"channel": "chat:x"}))["error"]["code"], 107);
    // One key; a revision of another epoch.
    let r = write(s, "map_read_state", json!({"channel": ch, "key": "a"}));
    assert_eq!(r["entries"], json!([{"data": 3, "offset": 3, "key": "a"}]), "{r}");
    assert_eq!(write(s, "map_read_state", json!({"channel": ch, "key": "b"}))["entries"], json!([]));
    let r = write(s, "map_read_state", json!({"channel": ch, "revision_epoch": epoch}));
    assert_eq!(r["entries"].as_array().map(Vec::len), Some(1), "{r}");
    let r = s.api("map_read_state", json!({"channel": ch, "revision_epoch": "other"}));
    assert_eq!(r["error"]["code"], 112, "{r}");
    // A legacy request: by name and by number (36).
    let body = format!(
        "{}\n{}\n",
        json!({"method": "map_read_stream", "params": {"channel": ch, "limit": 1}}),
        json!({"method": 36, "params": {"channel": ch, "limit": 1, "reverse": true}})
    );
    let lines = s.legacy(body.as_bytes()).lines();
    assert_eq!(lines[0]["result"]["entries"][0]["offset"], 1, "{lines:?}");
    assert_eq!(lines[1]["result"]["entries"][0]["offset"], 4, "{lines:?}");
}
