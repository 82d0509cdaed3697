//! Map subscriptions on the Redis engine: two Gyre nodes on one `redis-server` share map
//! channels. centrifuge-js 5.8 (`tests/js/map_subs.js`) reads state seeded through node A's
//! API in small pages on node B, sees live updates and removals made on the other node,
//! recovers after a cut, sees a key's TTL expiry; raw frames and the server API check the
//! wire replies across nodes.

use serde_json::{json, Value};

use crate::map_subs::{check_sdk_run, map_config, node_ready, run_script_with};
use crate::util::*;
use crate::ws_client::*;

/// Two nodes with the map namespaces of `map_subs` on the Redis engine.
fn nodes(redis: &RedisServer) -> Vec<Server> {
    let mut cfg = map_config();
    cfg.as_object_mut().unwrap().remove("engine");
    cluster(2, redis, cfg)
}

/// Client A (and the TTL client) on node B, client B on node A, API changes through node A.
fn run_two_nodes(protobuf: bool, ch: &str, ttl_ch: Option<&str>) -> Value {
    let redis = RedisServer::start();
    let n = nodes(&redis);
    let more = json!({
        "url2": format!("ws://{}/connection/websocket{}", n[0].addr(), if protobuf { "?format=protobuf" } else { "" }),
        "pubApi": format!("http://{}", n[0].addr()),
    });
    run_script_with(&n[1], protobuf, ch, ttl_ch, more)
}

#[test]
fn map_subs_redis_sdk_json_two_nodes() {
    if !redis_available("map_subs_redis_sdk_json_two_nodes") || !node_ready("map_subs_redis_sdk_json_two_nodes") {
        return;
    }
    let v = run_two_nodes(false, "map:room", Some("mapttl:t"));
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
fn map_subs_redis_sdk_protobuf_two_nodes() {
    if !redis_available("map_subs_redis_sdk_protobuf_two_nodes") || !node_ready("map_subs_redis_sdk_protobuf_two_nodes")
    {
        return;
    }
    let v = run_two_nodes(true, "map:room", Some("mapttl:t"));
    check_sdk_run(&v, true, true);
    assert_eq!(v["expired"]["updates"][1], json!({"key": "x", "removed": true, "data": null}), "{v}");
}

#[test]
fn map_subs_redis_ephemeral_resyncs_after_a_cut() {
    if !redis_available("map_subs_redis_ephemeral_resyncs_after_a_cut")
        || !node_ready("map_subs_redis_ephemeral_resyncs_after_a_cut")
    {
        return;
    }
    let v = run_two_nodes(false, "eph:x", None);
    check_sdk_run(&v, false, false);
}

/// Raw state pages on node B of a state written on node A, a change between pages, a live
/// removal from node A, recovery, and the server API's map methods across the nodes.
#[test]
fn map_subs_redis_raw_pages_and_api() {
    if !redis_available("map_subs_redis_raw_pages_and_api") {
        return;
    }
    let redis = RedisServer::start();
    let n = nodes(&redis);
    let (a, b) = (&n[0], &n[1]);
    for k in ["a", "b", "c"] {
        let r = a.api("map_publish", json!({"channel": "map:raw", "key": k, "data": {"k": k}, "tags": {"t": k}}));
        assert!(r["result"]["offset"].as_u64().unwrap() > 0, "{r}");
    }
    let mut c = JsonClient::open(b);
    c.call(json!({"connect": {}})).unwrap();
    let r = c.call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 2, "limit": 2}})).unwrap();
    let p = &r["subscribe"];
    assert_eq!((p["type"].clone(), p["phase"].clone(), p["cursor"].clone()), (json!(1), json!(2), json!("b")), "{r}");
    assert_eq!(p["offset"], 3, "{r}");
    let epoch = p["epoch"].as_str().unwrap().to_string();
    assert_eq!(p["state"][0], json!({"data": {"k": "a"}, "offset": 1, "tags": {"t": "a"}, "key": "a"}), "{r}");
    a.api("map_publish", json!({"channel": "map:raw", "key": "c", "data": {"k": "c2"}}));
    let r = c
        .call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 2, "limit": 2, "cursor": "b",
            "offset": 3, "epoch": epoch}}))
        .unwrap();
    let p = &r["subscribe"];
    assert!(p.get("phase").is_none() && p.get("cursor").is_none(), "the last page goes live: {r}");
    assert!(p.get("state").is_none(), "c changed after the first page: left to the stream: {r}");
    assert_eq!(p["publications"], json!([{"data": {"k": "c2"}, "offset": 4, "key": "c"}]), "{r}");
    assert_eq!((p["recoverable"].clone(), p["offset"].clone()), (json!(true), json!(4)), "{r}");
    // Live: a removal made on node A reaches the client on node B.
    // (On Redis a removal does not carry the key's tags, unlike the memory engine.)
    a.api("map_remove", json!({"channel": "map:raw", "key": "a"}));
    let f = c.ws.frame().unwrap();
    let push = &json_lines(&f.payload)[0];
    assert_eq!(push["push"]["pub"], json!({"offset": 5, "key": "a", "removed": true}), "{push}");
    // Recovery on node A: another epoch → 112; the current one → the changes since.
    let mut d = JsonClient::open(a);
    d.call(json!({"connect": {}})).unwrap();
    let r = d
        .call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 1, "recover": true, "offset": 1, "epoch": "nope"}}))
        .unwrap();
    assert_eq!(r["error"]["code"], 112, "{r}");
    let r = d
        .call(json!({"subscribe": {"channel": "map:raw", "type": 1, "phase": 1, "recover": true, "offset": 3, "epoch": epoch}}))
        .unwrap();
    let p = &r["subscribe"];
    assert_eq!(p["recovered"], true, "{r}");
    assert_eq!(p["publications"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(p["offset"], 5, "{r}");
    // A client publish on node A reaches the subscriber on node B.
    let r = d.call(json!({"publish": {"channel": "map:raw", "type": 1, "key": "d", "data": {"k": "d"}}})).unwrap();
    assert!(r.get("error").is_none(), "{r}");
    let f = c.ws.frame().unwrap();
    let push = &json_lines(&f.payload)[0];
    assert_eq!(push["push"]["pub"]["key"], "d", "{push}");

    // The server API: pages, removal, stats, idempotency, clear, across the nodes.
    for i in 0..5 {
        a.api("map_publish", json!({"channel": "map:api", "key": format!("k{i}"), "data": i}));
    }
    let r = b.api("map_read_state", json!({"channel": "map:api", "limit": 2}));
    assert_eq!(r["result"]["cursor"], "k1", "{r}");
    assert_eq!(r["result"]["entries"].as_array().unwrap().len(), 2, "{r}");
    let r = b.api("map_read_state", json!({"channel": "map:api", "limit": 10, "cursor": "k1"}));
    assert!(r["result"].get("cursor").is_none(), "{r}");
    let keys: Vec<&str> =
        r["result"]["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["k2", "k3", "k4"], "{r}");
    let r = b.api("map_remove", json!({"channel": "map:api", "key": "k0"}));
    assert_eq!(r["result"]["offset"], 6, "{r}");
    let r = b.api("map_remove", json!({"channel": "map:api", "key": "absent"}));
    assert_eq!(r["result"]["offset"], 6, "removing an absent key changes nothing: {r}");
    assert_eq!(r["result"]["suppress_reason"], "key_not_found", "{r}");
    assert_eq!(a.api("map_stats", json!({"channel": "map:api"})), json!({"result": {"num_keys": 4}}));
    let p = json!({"channel": "map:api", "key": "z", "data": 1, "idempotency_key": "once"});
    let first = a.api("map_publish", p.clone());
    let mut again = first.clone();
    again["result"]["suppressed"] = json!(true);
    again["result"]["suppress_reason"] = json!("idempotency");
    assert_eq!(b.api("map_publish", p), again, "the first result again, marked suppressed");
    b.api("map_clear", json!({"channel": "map:api"}));
    assert_eq!(a.api("map_stats", json!({"channel": "map:api"})), json!({"result": {"num_keys": 0}}));
    assert_eq!(a.api("map_publish", json!({"channel": "plain:x", "key": "a", "data": 1}))["error"]["code"], 107);
}

/// `map_broker.type`: `redis` (Centrifugo's name for what the Redis engine does anyway) shares
/// the map channels through Redis; `memory` keeps each node's own on the Redis engine, as
/// Centrifugo's memory map broker does, while other channels still cross the nodes. The
/// broker's own Redis connection options are reported as not supported.
#[test]
fn map_broker_type_on_the_redis_engine() {
    const TEST: &str = "map_subs_redis::map_broker_type_on_the_redis_engine";
    if !redis_available(TEST) || !node_ready(TEST) {
        return;
    }
    let redis = RedisServer::start();
    let keys = |s: &Server, ch: &str| -> Vec<String> {
        let r = s.api("map_read_state", json!({"channel": ch, "limit": 10}));
        r["result"]["entries"].as_array().expect("entries").iter().map(|e| e["key"].as_str().unwrap().into()).collect()
    };
    let two = |kind: &str| {
        let mut cfg = map_config();
        cfg.as_object_mut().unwrap().remove("engine");
        let own = json!({"address": "redis://127.0.0.1:1", "prefix": "mb", "cleanup_interval": "200ms",
            "cleanup_batch_size": 1, "idempotent_result_ttl": "7s"});
        merge(&mut cfg, json!({"map_broker": {"type": kind, "redis": own}}));
        let open = json!({"name": "open", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true});
        cfg["channel"]["namespaces"].as_array_mut().unwrap().push(open);
        cluster(2, &redis, cfg)
    };

    let n = two("redis");
    n[0].api("map_publish", json!({"channel": "map:shared", "key": "a", "data": 1}));
    assert_eq!(keys(&n[1], "map:shared"), ["a"], "shared through Redis");
    // Under the map broker's prefix.
    assert_eq!(redis.cmd(&["HLEN", "mb:state:map:shared"]), json!(1));
    assert_eq!(redis.cmd(&["HGET", "mb:meta:map:shared", "s"]), json!("1"));
    // The map broker's cleanup and idempotency options: three expiring keys go one per sweep.
    let r = n[0].api("map_publish", json!({"channel": "map:shared", "key": "i", "data": 1, "idempotency_key": "once"}));
    assert!(r["result"]["offset"].as_u64().is_some(), "{r}");
    let ttl = redis.cmd(&["PTTL", "mb.result.map:shared.once"]).as_i64().unwrap();
    assert!((1..=7000).contains(&ttl), "idempotent_result_ttl 7s: {ttl}");
    for k in ["t1", "t2", "t3"] {
        n[0].api("map_publish", json!({"channel": "mapttl:b", "key": k, "data": 1}));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while n[1].api("map_stats", json!({"channel": "mapttl:b"})) != json!({"result": {"num_keys": 0}}) {
        assert!(std::time::Instant::now() < deadline, "three keys with a 2 s TTL, one removed per sweep");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = n[0].stderr();
    assert!(log.contains(r#"option \"map_broker.redis.address\" is not supported"#), "{log}");
    assert!(!log.contains("cleanup_interval") && !log.contains("idempotent_result_ttl"), "applied: {log}");
    assert!(!log.contains("map_broker.redis.prefix"), "the prefix is applied: {log}");
    assert!(!log.contains(r#"option \"map_broker\""#), "the section itself is applied: {log}");
    drop(n);

    let n = two("memory");
    let (a, b) = (&n[0], &n[1]);
    assert_eq!(a.api("map_publish", json!({"channel": "map:own", "key": "on-a", "data": 1}))["result"]["offset"], 1);
    assert_eq!(b.api("map_publish", json!({"channel": "map:own", "key": "on-b", "data": 2}))["result"]["offset"], 1);
    assert_eq!(keys(a, "map:own"), ["on-a"]);
    assert_eq!(keys(b, "map:own"), ["on-b"]);
    assert_eq!(redis.keys("*map:own*"), Vec::<String>::new(), "nothing of them in Redis");
    // The SDK scenario on one node, JSON and protobuf.
    let v = run_script_with(a, false, "map:room", Some("mapttl:t"), json!({}));
    check_sdk_run(&v, false, true);
    let v = run_script_with(b, true, "map:pb", None, json!({}));
    check_sdk_run(&v, true, true);
    // A stream channel still crosses the nodes through Redis.
    let mut c = JsonClient::open(b);
    c.call(json!({"connect": {}})).unwrap();
    c.call(json!({"subscribe": {"channel": "open:x"}})).unwrap();
    a.api("publish", json!({"channel": "open:x", "data": {"n": 1}}));
    let f = c.ws.frame().unwrap();
    assert_eq!(json_lines(&f.payload)[0]["push"]["pub"]["data"], json!({"n": 1}), "{f:?}");
}

/// A protobuf `Publication` (client protocol) with `data` (field 4) and `key` (field 11), as
/// Centrifugo's map broker stores it (short fields only: one-byte lengths).
fn centrifugo_publication(data: &str, key: &str) -> String {
    assert!(data.len() < 128 && key.len() < 128);
    format!("\x22{}{data}\x5a{}{key}", char::from(data.len() as u8), char::from(key.len() as u8))
}

/// Map channels use the keys and values of Centrifugo's Redis map broker: a state Centrifugo
/// left in Redis is read (and continued) by Gyre, and what Gyre writes has that shape.
#[test]
fn map_state_in_centrifugos_redis_layout() {
    const TEST: &str = "map_subs_redis::map_state_in_centrifugos_redis_layout";
    if !redis_available(TEST) {
        return;
    }
    let redis = RedisServer::start();
    // What Centrifugo's map broker leaves after two publishes to `map:old` (recoverable mode).
    let (a, b) = (centrifugo_publication("{\"v\":1}", "a"), centrifugo_publication("{\"v\":2}", "b"));
    redis.cmd(&["HSET", "centrifugo:meta:map:old", "e", "oldep", "s", "2"]);
    redis.cmd(&["XADD", "centrifugo:stream:map:old", "1", "e", "oldep", "d", &a]);
    redis.cmd(&["XADD", "centrifugo:stream:map:old", "2", "e", "oldep", "d", &b]);
    redis.cmd(&["HSET", "centrifugo:state:map:old", "a", &format!("1:oldep:{a}"), "b", &format!("2:oldep:{b}")]);
    redis.cmd(&["HSET", "centrifugo:state:meta:map:old", "epoch", "oldep", "updated_at", "1"]);

    let mut cfg = map_config();
    cfg.as_object_mut().unwrap().remove("engine");
    merge(&mut cfg, json!({"engine": {"redis": {"prefix": "centrifugo"}}}));
    let n = cluster(1, &redis, cfg);
    let s = &n[0];
    let r = s.api("map_read_state", json!({"channel": "map:old", "limit": 10}));
    assert_eq!(r["result"]["epoch"], "oldep", "{r}");
    assert_eq!(r["result"]["offset"], 2, "{r}");
    let entries: Vec<(String, Value, u64)> = r["result"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().into(), e["data"].clone(), e["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(entries, [("a".into(), json!({"v": 1}), 1), ("b".into(), json!({"v": 2}), 2)], "{r}");
    let r = s.api("map_read_stream", json!({"channel": "map:old", "limit": 10}));
    assert_eq!(r["result"]["entries"][1], json!({"data": {"v": 2}, "offset": 2, "key": "b"}), "{r}");
    // A client loads the state and recovers from the stream as from Gyre's own.
    let mut c = JsonClient::open(s);
    c.call(json!({"connect": {}})).unwrap();
    let r = c.call(json!({"subscribe": {"channel": "map:old", "type": 1, "phase": 2, "limit": 10}})).unwrap();
    assert_eq!(r["subscribe"]["state"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(r["subscribe"]["epoch"], "oldep", "{r}");

    // Gyre continues the channel in the same layout.
    let r = s.api("map_publish", json!({"channel": "map:old", "key": "c", "data": {"v": 3}, "version": 5}));
    assert_eq!(r["result"], json!({"offset": 3, "epoch": "oldep"}), "{r}");
    let stored = redis.cmd(&["HGET", "centrifugo:state:map:old", "c"]);
    assert!(stored.as_str().unwrap().starts_with("3:oldep:"), "{stored}");
    assert_eq!(redis.cmd(&["HMGET", "centrifugo:meta:map:old", "e", "s"]), json!(["oldep", "3"]));
    assert_eq!(redis.cmd(&["HMGET", "centrifugo:state:meta:map:old", "epoch", "v:c"]), json!(["oldep", "5"]));
    let entry = redis.cmd(&["XRANGE", "centrifugo:stream:map:old", "3", "3"]);
    assert_eq!(entry[0][0], "3-0", "{entry}");
    assert_eq!(
        (entry[0][1][0].clone(), entry[0][1][1].clone(), entry[0][1][2].clone()),
        (json!("e"), json!("oldep"), json!("d"))
    );
    assert_eq!(redis.cmd(&["ZCARD", "centrifugo:state:order:map:old"]), json!(3), "the key order made again");
    // A key with a TTL is registered for the expiry sweep under Centrifugo's name.
    s.api("map_publish", json!({"channel": "mapttl:t", "key": "x", "data": 1}));
    let registered = redis.cmd(&["ZSCORE", "centrifugo:cleanup:channels", "mapttl:t"]);
    assert!(registered.as_str().is_some_and(|v| v.parse::<f64>().is_ok()), "{registered}");
    // A state left from an older stream epoch is not read, and goes with the next change.
    redis.cmd(&["HSET", "centrifugo:state:map:stale", "k", &format!("1:gone:{a}")]);
    redis.cmd(&["HSET", "centrifugo:state:meta:map:stale", "epoch", "gone"]);
    redis.cmd(&["HSET", "centrifugo:meta:map:stale", "e", "now", "s", "1"]);
    let r = s.api("map_read_state", json!({"channel": "map:stale", "limit": 10}));
    assert_eq!(r["result"]["entries"], json!([]), "{r}");
    s.api("map_publish", json!({"channel": "map:stale", "key": "n", "data": 1}));
    assert_eq!(s.api("map_stats", json!({"channel": "map:stale"})), json!({"result": {"num_keys": 1}}));
}
