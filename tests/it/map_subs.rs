//! Map subscriptions (`subscription_type: map`) on the memory engine: the server API's map
//! methods, the client protocol's state pages as raw JSON frames, and `centrifuge` (JS, 5.8.0)
//! in Node (`tests/js/map_subs.js`) over JSON and protobuf: pre-seeded state read in small
//! pages, live updates and removals, two clients with the same state, client publish/remove,
//! recovery after a cut (and a fresh sync in `ephemeral` mode), a key's TTL expiry.

use std::process::Command;

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

/// Map namespaces: `map` (recoverable, client publish/remove for subscribers, pages from 1
/// key), `eph` (ephemeral: no recovery), `mapttl` (keys live 2 s).
pub(crate) fn map_config() -> Value {
    let ns = |name: &str, map: Value| json!({"name": name, "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true, "subscription_type": "map", "map": map});
    json!({
        "http_api": {"key": KEY},
        "client": {"allowed_origins": ["*"], "allow_anonymous_connect_without_token": true},
        // The memory engine here (also on GYRE_TEST_REDIS): `map_subs_redis` runs the Redis one.
        "engine": {"type": "memory"},
        "channel": {
            "namespaces": [
                ns("map", json!({
                    "mode": "recoverable", "key_ttl": "300s", "min_page_size": 1,
                    "allow_publish_for_subscriber": true, "allow_remove_for_subscriber": true,
                    "allow_publish_for_anonymous": true, "allow_remove_for_anonymous": true
                })),
                ns("eph", json!({
                    "mode": "ephemeral", "key_ttl": "300s", "min_page_size": 1,
                    "allow_publish_for_client": true, "allow_remove_for_client": true,
                    "allow_publish_for_anonymous": true, "allow_remove_for_anonymous": true
                })),
                ns("mapttl", json!({"mode": "ephemeral", "key_ttl": "2s", "min_page_size": 1})),
                {"name": "plain", "allow_subscribe_for_client": true},
                {"name": "closed", "subscription_type": "map", "map": {"mode": "persistent"}}
            ]
        },
        "workers": 2
    })
}

pub(crate) fn node_ready(test: &str) -> bool {
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return unavailable(test, "`node` is not on PATH", "apt-get install nodejs");
    }
    if !repo_root().join("tests/js/node_modules/centrifuge/package.json").exists() {
        return unavailable(test, "tests/js/node_modules lacks centrifuge", "npm ci --prefix tests/js");
    }
    true
}

/// Runs the Node script `tests/js/<script>` with `arg` (its one argument, JSON) and returns
/// what it printed (one JSON object); it must exit 0 without printing `fatal`.
pub(crate) fn run_node(script: &str, arg: &Value) -> Value {
    let out = Command::new("node")
        .arg(repo_root().join("tests/js").join(script))
        .arg(arg.to_string())
        .current_dir(repo_root().join("tests/js"))
        .output()
        .expect("running node");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{script}: {e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success() && v.get("fatal").is_none(), "{script}: {v}");
    v
}

/// Runs `tests/js/map_subs.js` against `s` and returns what it printed.
fn run_script(s: &Server, protobuf: bool, ch: &str, ttl_ch: Option<&str>) -> Value {
    run_script_with(s, protobuf, ch, ttl_ch, json!({}))
}

/// [`run_script`] with more arguments for the script (`url2`, `pubApi`: a second node).
pub(crate) fn run_script_with(s: &Server, protobuf: bool, ch: &str, ttl_ch: Option<&str>, more: Value) -> Value {
    let url = if protobuf {
        format!("ws://{}/connection/websocket?format=protobuf", s.addr())
    } else {
        format!("ws://{}/connection/websocket", s.addr())
    };
    let arg = json!({
        "url": url, "api": format!("http://{}", s.addr()), "key": KEY, "protobuf": protobuf,
        "ch": ch, "ttlCh": ttl_ch,
    });
    let mut arg = arg;
    merge(&mut arg, more);
    run_node("map_subs.js", &arg)
}

pub(crate) fn seeded() -> Value {
    Value::Object((0..23).map(|i| (format!("k{i:03}"), json!({ "v": i }))).collect())
}

pub(crate) fn check_sdk_run(v: &Value, protobuf: bool, recovered: bool) {
    // 23 keys read 5 at a time: 5 state pages, then live.
    assert_eq!(v["sync"], seeded(), "{v}");
    if !protobuf {
        assert_eq!(v["pages"], 5, "{v}");
    }
    let mut b = seeded();
    b["k001"] = json!({"v": 100});
    b.as_object_mut().unwrap().remove("k002");
    assert_eq!(v["bSync"], b, "the second client loads the state as changed: {v}");
    assert_eq!(
        v["aUpdates"],
        json!([
            {"key": "k001", "removed": false, "data": {"v": 100}},
            {"key": "k002", "removed": true, "data": null},
            {"key": "k100", "removed": false, "data": {"v": 7}},
            {"key": "k100", "removed": true, "data": null}
        ]),
        "{v}"
    );
    assert_eq!(
        v["bUpdates"],
        json!([
            {"key": "k100", "removed": false, "data": {"v": 7}},
            {"key": "k100", "removed": true, "data": null}
        ]),
        "{v}"
    );
    let cut = &v["afterCut"];
    if recovered {
        assert_eq!(cut["subscribed"], json!({"recovered": true, "wasRecovering": true}), "{v}");
        assert_eq!(cut["resynced"], false, "{v}");
        assert_eq!(
            cut["updates"],
            json!([{"key": "k003", "removed": false, "data": {"v": 300}}, {"key": "k004", "removed": true, "data": null}]),
            "{v}"
        );
    } else {
        // Ephemeral: no recovery, the state is loaded again.
        assert_eq!(cut["subscribed"]["recovered"], false, "{v}");
        assert_eq!(cut["resynced"], true, "{v}");
    }
    assert_eq!(v["aState"], v["bState"], "{v}");
    assert_eq!(v["aState"]["k003"], json!({"v": 300}), "{v}");
    assert!(v["aState"].get("k004").is_none(), "{v}");
    assert_eq!(v["stats"], json!({"num_keys": 21}), "{v}");
}

#[test]
fn map_subs_sdk_json() {
    if !node_ready("map_subs_sdk_json") {
        return;
    }
    let s = Server::start(map_config());
    let v = run_script(&s, false, "map:room", Some("mapttl:t"));
    check_sdk_run(&v, false, true);
    let expired = &v["expired"];
    assert_eq!(
        expired["updates"],
        json!([{"key": "x", "removed": false, "data": {"v": 1}}, {"key": "x", "removed": true, "data": null}]),
        "{v}"
    );
    let after = expired["afterMs"].as_u64().unwrap();
    assert!((1000..6000).contains(&after), "key_ttl 2s: removed after {after} ms");
}

#[test]
fn map_subs_sdk_protobuf() {
    if !node_ready("map_subs_sdk_protobuf") {
        return;
    }
    let s = Server::start(map_config());
    let v = run_script(&s, true, "map:room", Some("mapttl:t"));
    check_sdk_run(&v, true, true);
    assert_eq!(v["expired"]["updates"][1], json!({"key": "x", "removed": true, "data": null}), "{v}");
}

#[test]
fn map_subs_sdk_ephemeral_resyncs_after_a_cut() {
    if !node_ready("map_subs_sdk_ephemeral_resyncs_after_a_cut") {
        return;
    }
    let s = Server::start(map_config());
    let v = run_script(&s, false, "eph:x", None);
    check_sdk_run(&v, false, false);
    // Recovery in ephemeral mode: the subscribe reply is not recoverable.
    let mut c = JsonClient::open(&s);
    c.call(json!({"connect": {}})).unwrap();
    s.api("map_publish", json!({"channel": "eph:y", "key": "a", "data": 1}));
    let r = c.call(json!({"subscribe": {"channel": "eph:y", "type": 1, "phase": 2}})).unwrap();
    let sub = &r["subscribe"];
    assert_eq!(sub["type"], 1, "{r}");
    assert!(sub.get("phase").is_none() && sub.get("recoverable").is_none(), "live, not recoverable: {r}");
    assert_eq!(sub["state"], json!([{"data": 1, "offset": 1, "key": "a"}]), "{r}");
}

/// The wire format of state pages and the live reply, as raw JSON frames.
#[test]
fn map_subs_raw_pages() {
    let s = Server::start(map_config());
    for k in ["a", "b", "c"] {
        let r = s.api("map_publish", json!({"channel": "map:raw", "key": k, "data": {"k": k}, "tags": {"t": k}}));
        assert!(r["result"]["offset"].as_u64().unwrap() > 0, "{r}");
    }
    let mut c = JsonClient::open(&s);
    c.call(json!({"connect": {}})).unwrap();
    let r = c.call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 2, "limit": 2}})).unwrap();
    let p = &r["subscribe"];
    assert_eq!((p["type"].clone(), p["phase"].clone(), p["cursor"].clone()), (json!(1), json!(2), json!("b")), "{r}");
    assert_eq!(p["offset"], 3, "{r}");
    let epoch = p["epoch"].as_str().unwrap().to_string();
    assert_eq!(p["state"][0], json!({"data": {"k": "a"}, "offset": 1, "tags": {"t": "a"}, "key": "a"}), "{r}");
    // A change between pages reaches the client through the live reply's publications.
    s.api("map_publish", json!({"channel": "map:raw", "key": "c", "data": {"k": "c2"}}));
    let r = c
        .call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 2, "limit": 2, "cursor": "b",
            "offset": 3, "epoch": epoch}}))
        .unwrap();
    let p = &r["subscribe"];
    assert!(p.get("phase").is_none() && p.get("cursor").is_none(), "the last page goes live: {r}");
    assert!(p.get("state").is_none(), "c changed after the first page: left to the stream: {r}");
    assert_eq!(p["publications"], json!([{"data": {"k": "c2"}, "offset": 4, "key": "c"}]), "{r}");
    assert_eq!((p["recoverable"].clone(), p["offset"].clone()), (json!(true), json!(4)), "{r}");
    // Live: a removal push.
    s.api("map_remove", json!({"channel": "map:raw", "key": "a"}));
    let f = c.ws.frame().unwrap();
    let push = &json_lines(&f.payload)[0];
    assert_eq!(push["push"]["pub"], json!({"offset": 5, "tags": {"t": "a"}, "key": "a", "removed": true}), "{push}");
    // Subscribing twice, and a map subscribe to a stream namespace.
    let r = c.call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 2}})).unwrap();
    assert_eq!(r["error"]["code"], 105, "{r}");
    let r = c.call(json!({"subscribe": {"channel": "plain:x", "type": 1, "phase": 2}})).unwrap();
    assert_eq!(r["error"]["code"], 107, "{r}");
    // No permission to subscribe: not even the first page.
    s.api("map_publish", json!({"channel": "closed:x", "key": "secret", "data": 1}));
    let r = c.call(json!({"subscribe": {"channel": "closed:x", "type": 1, "phase": 2}})).unwrap();
    assert_eq!(r["error"]["code"], 103, "{r}");
    // Recovery from a position of another epoch: 112.
    let mut d = JsonClient::open(&s);
    d.call(json!({"connect": {}})).unwrap();
    let r = d
        .call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 1, "recover": true, "offset": 1, "epoch": "nope"}}))
        .unwrap();
    assert_eq!(r["error"]["code"], 112, "{r}");
    // And from the current one: the changes since.
    let r = d
        .call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 1, "recover": true, "offset": 3, "epoch": epoch}}))
        .unwrap();
    let p = &r["subscribe"];
    assert_eq!(p["recovered"], true, "{r}");
    assert_eq!(p["publications"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(p["offset"], 5, "{r}");
}

/// `map_publish`, `map_remove`, `map_read_state` (pages), `map_stats`, `map_clear`.
#[test]
fn map_subs_server_api() {
    let s = Server::start(map_config());
    for i in 0..5 {
        s.api("map_publish", json!({"channel": "map:api", "key": format!("k{i}"), "data": i}));
    }
    let r = s.api("map_read_state", json!({"channel": "map:api", "limit": 2}));
    assert_eq!(r["result"]["cursor"], "k1", "{r}");
    assert_eq!(r["result"]["entries"].as_array().unwrap().len(), 2, "{r}");
    let r = s.api("map_read_state", json!({"channel": "map:api", "limit": 10, "cursor": "k1"}));
    assert!(r["result"].get("cursor").is_none(), "{r}");
    let keys: Vec<&str> =
        r["result"]["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["k2", "k3", "k4"], "{r}");
    let r = s.api("map_remove", json!({"channel": "map:api", "key": "k0"}));
    assert_eq!(r["result"]["offset"], 6, "{r}");
    assert_eq!(s.api("map_stats", json!({"channel": "map:api"})), json!({"result": {"num_keys": 4}}));
    // Idempotent publish: the first result again.
    let p = json!({"channel": "map:api", "key": "z", "data": 1, "idempotency_key": "once"});
    let first = s.api("map_publish", p.clone());
    let mut again = first.clone();
    again["result"]["suppressed"] = json!(true);
    again["result"]["suppress_reason"] = json!("idempotency");
    assert_eq!(s.api("map_publish", p), again, "the first result again, marked suppressed");
    s.api("map_clear", json!({"channel": "map:api"}));
    assert_eq!(s.api("map_stats", json!({"channel": "map:api"})), json!({"result": {"num_keys": 0}}));
    // Not a map channel, no key.
    assert_eq!(s.api("map_publish", json!({"channel": "plain:x", "key": "a", "data": 1}))["error"]["code"], 107);
    assert_eq!(s.api("map_publish", json!({"channel": "map:x", "data": 1}))["error"]["code"], 107);
}

/// The map methods over gRPC (`tests/python/grpc_map_client.py`, generated from `proto/api.proto`).
#[test]
fn map_subs_grpc_api() {
    let python = repo_root().join("target/pyenv/bin/python");
    if !(python.exists()
        && Command::new(&python).args(["-c", "import grpc, grpc_tools"]).output().is_ok_and(|o| o.status.success()))
    {
        unavailable("map_subs_grpc_api", "grpcio-tools is not installed in target/pyenv", "bash .ci/run");
        return;
    }
    let grpc_port = free_port();
    let mut cfg = map_config();
    merge(&mut cfg, json!({"grpc_api": {"enabled": true, "port": grpc_port, "key": KEY}}));
    let _s = Server::start(cfg);
    let out = Command::new(&python)
        .arg(repo_root().join("tests/python/grpc_map_client.py"))
        .arg(repo_root().join("proto"))
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg(KEY)
        .arg("map:grpc")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("grpc_proxy")
        .output()
        .expect("run grpc_map_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `map.client_key`: the server names the key a client writes (its client id, or its user id;
/// an anonymous client is refused 103 with `user_id`), whatever key it sent; with
/// `map.remove_client_on_unsubscribe` its key is removed when its subscription ends
/// (unsubscribe or disconnect).
#[test]
fn map_client_keys_and_removal_on_unsubscribe() {
    let mut cfg = map_config();
    let ns = |name: &str, map: Value| json!({"name": name, "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true, "subscription_type": "map", "map": map});
    let nss = cfg["channel"]["namespaces"].as_array_mut().unwrap();
    nss.push(ns("cursors", json!({"mode": "ephemeral", "key_ttl": "300s", "client_key": "client_id",
        "remove_client_on_unsubscribe": true, "allow_publish_for_subscriber": true, "allow_publish_for_anonymous": true})));
    nss.push(ns(
        "byuser",
        json!({"mode": "ephemeral", "key_ttl": "300s", "client_key": "user_id",
        "allow_publish_for_client": true, "allow_publish_for_anonymous": true}),
    ));
    cfg["client"]["token"] = json!({"hmac_secret_key": "map-keys-secret"});
    let s = Server::start(cfg);
    let keys = |ch: &str| -> Vec<String> {
        let r = s.api("map_read_state", json!({"channel": ch, "limit": 100}));
        r["result"]["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_string()).collect()
    };
    let mut a = JsonClient::open(&s);
    let id_a = a.call(json!({"connect": {}})).unwrap()["connect"]["client"].as_str().unwrap().to_string();
    let mut b = JsonClient::open(&s);
    let id_b = b.call(json!({"connect": {}})).unwrap()["connect"]["client"].as_str().unwrap().to_string();
    for c in [&mut a, &mut b] {
        let r = c.call(json!({"subscribe": {"channel": "cursors:doc", "type": 1, "phase": 2}})).unwrap();
        assert!(r.get("error").is_none(), "{r}");
        // Whatever key the client names (or none), its client id is the key.
        let r = c
            .call(json!({"publish": {"channel": "cursors:doc", "type": 1, "key": "someone-else", "data": {"x": 1}}}))
            .unwrap();
        assert!(r.get("error").is_none(), "{r}");
        let r = c.call(json!({"publish": {"channel": "cursors:doc", "type": 1, "data": {"x": 2}}})).unwrap();
        assert!(r.get("error").is_none(), "{r}");
    }
    let mut want = vec![id_a.clone(), id_b.clone()];
    want.sort();
    assert_eq!(keys("cursors:doc"), want);
    // A's unsubscribe removes its key; B's disconnect removes B's.
    assert!(a.call(json!({"unsubscribe": {"channel": "cursors:doc"}})).unwrap().get("error").is_none());
    let wait_keys = |want: Vec<String>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while keys("cursors:doc") != want {
            assert!(std::time::Instant::now() < deadline, "keys {:?}, want {want:?}", keys("cursors:doc"));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_keys(vec![id_b.clone()]);
    drop(b);
    wait_keys(vec![]);
    // `user_id`: an anonymous client is refused; a user writes its own key.
    let r = a.call(json!({"publish": {"channel": "byuser:x", "type": 1, "key": "k", "data": 1}})).unwrap();
    assert_eq!(r["error"]["code"], 103, "{r}");
    assert_eq!(keys("byuser:x"), Vec::<String>::new());
    let mut alice = JsonClient::open(&s);
    alice.call(json!({"connect": {"token": jwt("map-keys-secret", json!({"sub": "alice"}))}})).unwrap();
    let r = alice.call(json!({"publish": {"channel": "byuser:x", "type": 1, "key": "k", "data": 1}})).unwrap();
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(keys("byuser:x"), ["alice"]);
}
