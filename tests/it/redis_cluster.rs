//! Redis Cluster (`engine.redis.cluster_address`): a cluster of three primaries made by the
//! test (`redis-server --cluster-enabled yes` and `redis-cli --cluster create`), two Gyre
//! nodes given two of its addresses as seeds: publications on channels spread over every
//! primary reach a subscriber on the other node, history and presence are read through either
//! node, and each channel's keys carry its name as hash tag (Centrifugo's layout), so they
//! live on the primary that owns the channel's slot.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

const SECRET: &str = "cluster-test-secret";

/// A Redis Cluster of three primaries, ready (`cluster_state:ok`), and the `cluster_address`
/// entry naming two of them as seeds.
fn redis_cluster() -> (Vec<RedisServer>, String) {
    let nodes: Vec<RedisServer> = (0..3).map(|_| cluster_node(Vec::new())).collect();
    let seeds = create_cluster(&nodes);
    (nodes, seeds)
}

/// Joins `nodes` (by their plain ports) into one cluster of primaries and waits until it is
/// ready; returns the plain `host:port` of each.
fn create_cluster(nodes: &[RedisServer]) -> String {
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    // Bounded: a cluster whose bus cannot form would keep redis-cli waiting.
    let out = Command::new("timeout")
        .args(["30", "redis-cli", "--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster create");
    assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nodes.iter().all(|n| n.cmd(&["CLUSTER", "INFO"]).as_str().unwrap_or("").contains("cluster_state:ok")) {
        assert!(Instant::now() < deadline, "the cluster did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("{},{}", addrs[0], addrs[1])
}

/// The first publication to `ch` (data `{"n": n}`), retried while the node still learns the
/// slot map; it must get offset 1.
fn first_publish(a: &Server, ch: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a.api("publish", json!({"channel": ch, "data": {"n": n}}));
        if r.get("error").is_none() {
            assert_eq!(r["result"]["offset"], 1, "{r}");
            return;
        }
        assert!(Instant::now() < deadline, "publish to {ch}: {r}\n{}", a.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cluster_node(extra: Vec<String>) -> RedisServer {
    let mut args: Vec<String> =
        ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "3000"]
            .map(String::from)
            .to_vec();
    args.extend(extra);
    RedisServer::start_with_args(args)
}

/// A cluster whose nodes also listen with TLS (`--tls-cluster yes`: the cluster bus too, and a
/// TLS client is told the TLS ports in `CLUSTER SLOTS` and `MOVED`); two Gyre nodes reach it
/// over TLS only, given TLS seeds.
#[test]
fn engine_on_a_redis_cluster_over_tls() {
    let test = "engine_on_a_redis_cluster_over_tls";
    if !redis_available(test) {
        return;
    }
    let p = crate::tls::pki();
    let path = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let tls_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<RedisServer> = tls_ports
        .iter()
        .map(|port| {
            let mut args = crate::redis_tls::redis_tls_args(&p, *port, false);
            args.extend(["--tls-cluster".to_string(), "yes".to_string()]);
            cluster_node(args)
        })
        .collect();
    create_cluster(&nodes);
    let seeds = format!("127.0.0.1:{},127.0.0.1:{}", tls_ports[0], tls_ports[1]);
    let cfg = config_with(json!({
        "client": {"insecure": true},
        "channel": {"without_namespace": {
            "allow_subscribe_for_client": true, "history_size": 100, "history_ttl": "300s", "presence": true
        }},
        "engine": {"type": "redis", "redis": {
            "cluster_address": [seeds], "prefix": "cltls",
            "tls": {"enabled": true, "server_ca_pem": path(&p.ca)},
            "connect_timeout": "500ms", "io_timeout": "2s"
        }},
    }));
    let a = Server::start(cfg.clone());
    let b = Server::start(cfg);
    let Some(mut agent) = Agent::start(Sdk::Js, test) else { return };
    agent.connect("c", &b, json!({}));
    agent.wait("connected", ev("c", "connected"));
    let channels: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    for ch in &channels {
        agent.sub("c", ch, json!({}));
        agent.wait("subscribed", sev("c", ch, "sub.subscribed"));
    }
    for (i, ch) in channels.iter().enumerate() {
        first_publish(&a, ch, i);
    }
    for (i, ch) in channels.iter().enumerate() {
        let pb = agent.wait("the publication", sev("c", ch, "sub.publication"));
        assert_eq!(pb["data"]["n"], i, "{pb}");
        let h = b.api("history", json!({"channel": ch, "limit": 10}));
        assert_eq!(h["result"]["publications"][0]["data"]["n"], i, "{h}");
    }
    // Every primary holds some of the channels: the nodes talked TLS to all three.
    let used = nodes
        .iter()
        .filter(|n| channels.iter().any(|ch| n.try_cmd(&["EXISTS", &format!("cltls.stream.{{{ch}}}")]) == Ok(json!(1))))
        .count();
    assert_eq!(used, 3, "nine channels over three primaries");
    for s in [&a, &b] {
        assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
    }
}

#[test]
fn engine_on_a_redis_cluster() {
    let test = "engine_on_a_redis_cluster";
    if !redis_available(test) {
        return;
    }
    let (nodes, seeds) = redis_cluster();
    // The first seed is gone: the PUB/SUB connection moves on to the next one.
    let seeds = format!("127.0.0.1:{},{seeds}", free_port());
    let cfg = config_with(json!({
        "client": {"insecure": true},
        "channel": {"without_namespace": {
            "allow_subscribe_for_client": true, "history_size": 100, "history_ttl": "300s", "presence": true
        }},
        "engine": {"type": "redis", "redis": {
            "cluster_address": [seeds], "prefix": "cl",
            "connect_timeout": "500ms", "io_timeout": "2s"
        }},
    }));
    let a = Server::start(cfg.clone());
    let b = Server::start(cfg);
    let channels: Vec<String> = (0..12).map(|i| format!("room{i}")).collect();
    let Some(mut agent) = Agent::start(Sdk::Js, test) else { return };
    agent.connect("c", &b, json!({}));
    agent.wait("connected", ev("c", "connected"));
    for ch in &channels {
        agent.sub("c", ch, json!({}));
        agent.wait("subscribed", sev("c", ch, "sub.subscribed"));
    }
    for (i, ch) in channels.iter().enumerate() {
        first_publish(&a, ch, i);
    }
    for (i, ch) in channels.iter().enumerate() {
        let p = agent.wait("the publication", sev("c", ch, "sub.publication"));
        assert_eq!(p["data"]["n"], i, "{p}");
        let h = b.api("history", json!({"channel": ch, "limit": 10}));
        assert_eq!(h["result"]["publications"][0]["data"]["n"], i, "{h}");
        let pr = a.api("presence_stats", json!({"channel": ch}));
        assert_eq!(pr["result"]["num_clients"], 1, "{ch}: {pr}");
        // The stream lives on exactly one primary: the one owning `{room<i>}`'s slot.
        let key = format!("cl.stream.{{{ch}}}");
        let holders: Vec<u16> = nodes
            .iter()
            .filter(|n| n.try_cmd(&["EXISTS", &key]).is_ok_and(|v| v == json!(1)))
            .map(|n| n.port)
            .collect();
        assert_eq!(holders.len(), 1, "{key} on {holders:?}");
        let slot = nodes[0].cmd(&["CLUSTER", "KEYSLOT", &format!("cl.stream.meta.{{{ch}}}")]);
        assert_eq!(slot, nodes[0].cmd(&["CLUSTER", "KEYSLOT", &key]), "a channel's keys share a slot");
    }
    // The channels really are spread over the primaries.
    let used: std::collections::BTreeSet<u16> = channels
        .iter()
        .flat_map(|ch| {
            let key = format!("cl.stream.{{{ch}}}");
            nodes
                .iter()
                .filter(move |n| n.try_cmd(&["EXISTS", &key]).is_ok_and(|v| v == json!(1)))
                .map(|n| n.port)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(used.len(), 3, "twelve channels over three primaries: {used:?}");

    // A slot moved to another primary after the nodes read the map: the node is told MOVED
    // and follows it.
    let key = "cl.stream.{moved}";
    let slot = nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]).as_i64().unwrap().to_string();
    let owner = nodes.iter().position(|n| n.try_cmd(&["EXISTS", key]).is_ok()).expect("the slot's owner");
    let target = (owner + 1) % 3;
    let target_id = nodes[target].cmd(&["CLUSTER", "MYID"]).as_str().unwrap().to_string();
    for i in [target, owner, (owner + 2) % 3] {
        nodes[i].cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[owner].try_cmd(&["EXISTS", key]).is_ok() {
        assert!(Instant::now() < deadline, "the slot did not move");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = a.api("publish", json!({"channel": "moved", "data": {"n": 99}}));
    assert!(r.get("error").is_none(), "publish after MOVED: {r}\n{}", a.stderr());
    assert_eq!(nodes[target].cmd(&["EXISTS", key]), json!(1), "the stream is on the slot's new owner");
    let h = b.api("history", json!({"channel": "moved", "limit": 10}));
    assert_eq!(h["result"]["publications"][0]["data"]["n"], 99, "{h}");
}

/// Three Gyre nodes on a Redis Cluster, centrifuge-js and centrifuge-python clients spread over
/// them: a recovering subscription moves from node to node and gets every publication it
/// missed, in order, once; presence and join/leave cross nodes; API actions sent to one node
/// reach connections on the others.
#[test]
fn sdks_recover_and_api_actions_cross_nodes_on_a_redis_cluster() {
    let test = "sdks_recover_and_api_actions_cross_nodes_on_a_redis_cluster";
    if !redis_available(test) {
        return;
    }
    let (_redis, seeds) = redis_cluster();
    let cfg = config_with(json!({
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [{
            "name": "hist", "history_size": 100, "history_ttl": "300s", "force_recovery": true,
            "presence": true, "join_leave": true, "force_push_join_leave": true, "allow_subscribe_for_client": true
        }]},
        "engine": {"type": "redis", "redis": {
            "cluster_address": [seeds], "prefix": "cl2", "connect_timeout": "500ms", "io_timeout": "2s"
        }},
    }));
    let nodes: Vec<Server> = (0..3).map(|_| Server::start(cfg.clone())).collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let url = |s: &Server| format!("ws://127.0.0.1:{}/connection/websocket", s.port);
    let token = |user: &str| jwt(SECRET, json!({"sub": user}));
    let Some(mut js) = Agent::start(Sdk::Js, test) else { return };
    let Some(mut py) = Agent::start(Sdk::Py, test) else { return };
    const CH: &str = "hist:cluster";
    js.send(json!({"op": "connect", "c": "j", "url": url(b), "token": token("alice")}));
    js.wait("j connected", ev("j", "connected"));
    py.send(json!({"op": "connect", "c": "p", "url": url(c), "token": token("bob"), "protobuf": true}));
    py.wait("p connected", ev("p", "connected"));
    js.sub("j", CH, json!({}));
    let sd = js.wait("j subscribed", sev("j", CH, "sub.subscribed"));
    assert_eq!(sd["recoverable"], true, "{sd}");
    py.sub("p", CH, json!({}));
    py.wait("p subscribed", sev("p", CH, "sub.subscribed"));
    js.wait("j sees bob join", |e| sev("j", CH, "sub.join")(e) && e["info"]["user"] == "bob");

    let publish = |n: i64| {
        let r = a.api("publish", json!({"channel": CH, "data": {"n": n}}));
        assert_eq!(r["result"]["offset"], n, "{r}");
    };
    for n in 1..=5 {
        publish(n);
    }
    js.wait_n("j: 5 publications", 5, sev("j", CH, "sub.publication"));
    py.wait_n("p: 5 publications", 5, sev("p", CH, "sub.publication"));
    let pr = c.api("presence", json!({"channel": CH}));
    let users: std::collections::BTreeSet<&str> =
        pr["result"]["presence"].as_object().unwrap().values().filter_map(|i| i["user"].as_str()).collect();
    assert_eq!(users, ["alice", "bob"].into_iter().collect(), "{pr}");

    // j loses its connection, 20 publications go out meanwhile, j comes back on node c.
    js.send(json!({"op": "cut", "c": "j", "block": true}));
    js.wait("j blocked", ev("j", "blocked"));
    for n in 6..=25 {
        publish(n);
    }
    js.send(json!({"op": "retarget", "c": "j", "url": url(c)}));
    js.send(json!({"op": "unblock", "c": "j"}));
    js.wait_n("j reconnected", 2, ev("j", "connected"));
    let sd = js.wait_n("j resubscribed", 2, sev("j", CH, "sub.subscribed")).remove(1);
    assert_eq!((sd["wasRecovering"].clone(), sd["recovered"].clone()), (json!(true), json!(true)), "{sd}");
    let pubs = js.wait_n("j: 25 publications", 25, sev("j", CH, "sub.publication"));
    assert_eq!(ns(&pubs), (1..=25).collect::<Vec<i64>>(), "everything, in order, once");
    py.wait_n("p: 25 publications", 25, sev("p", CH, "sub.publication"));

    // API actions on node a reach bob's connection on node c.
    let r = a.api("unsubscribe", json!({"user": "bob", "channel": CH}));
    assert!(r.get("error").is_none(), "{r}");
    py.wait("p unsubscribed by the server", sev("p", CH, "sub.unsubscribed"));
    let r = a.api("disconnect", json!({"user": "bob"}));
    assert!(r.get("error").is_none(), "{r}");
    py.wait("p disconnected by the server", ev("p", "disconnected"));
    js.wait("j sees bob leave", |e| sev("j", CH, "sub.leave")(e) && e["info"]["user"] == "bob");
}

/// Map channels on a Redis Cluster: a channel's keys share its hash tag, so the scripts run
/// on one node; writes on one Gyre node are read on the other, keys with a TTL expire.
#[test]
fn map_channels_on_a_redis_cluster() {
    if !redis_available("map_channels_on_a_redis_cluster") {
        return;
    }
    let (_nodes, seeds) = redis_cluster();
    let mut cfg = crate::map_subs::map_config();
    cfg.as_object_mut().unwrap().remove("engine");
    merge(&mut cfg, json!({"engine": {"type": "redis", "redis": {"cluster_address": [seeds], "prefix": "clm"}}}));
    let a = Server::start(cfg.clone());
    let b = Server::start(cfg);
    for i in 0..12 {
        let ch = format!("map:c{i}");
        for k in ["x", "y"] {
            let r = a.api("map_publish", json!({"channel": ch, "key": k, "data": {"i": i}, "version": 2}));
            assert!(r["result"]["offset"].as_u64().is_some(), "{r}");
        }
        let r = b.api("map_publish", json!({"channel": ch, "key": "x", "data": 0, "version": 1}));
        assert_eq!(r["result"]["suppress_reason"], "version", "{r}");
        let r = b.api("map_read_state", json!({"channel": ch, "limit": 10}));
        assert_eq!(r["result"]["entries"].as_array().map(Vec::len), Some(2), "{r}");
        assert_eq!(b.api("map_stats", json!({"channel": ch})), json!({"result": {"num_keys": 2}}));
    }
    a.api("map_publish", json!({"channel": "mapttl:c", "key": "gone", "data": 1}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while b.api("map_stats", json!({"channel": "mapttl:c"})) != json!({"result": {"num_keys": 0}}) {
        assert!(std::time::Instant::now() < deadline, "the key with a 2 s TTL expired");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
