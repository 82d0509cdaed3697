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

fn cluster_node() -> RedisServer {
    RedisServer::start_with_args(vec![
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-config-file".into(),
        "nodes.conf".into(),
        "--cluster-node-timeout".into(),
        "3000".into(),
    ])
}

#[test]
fn engine_on_a_redis_cluster() {
    let test = "engine_on_a_redis_cluster";
    if !redis_available(test) {
        return;
    }
    let nodes: Vec<RedisServer> = (0..3).map(|_| cluster_node()).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
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
    let cfg = config_with(json!({
        "client": {"insecure": true},
        "channel": {"without_namespace": {
            "allow_subscribe_for_client": true, "history_size": 100, "history_ttl": "300s", "presence": true
        }},
        "engine": {"type": "redis", "redis": {
            "cluster_address": [format!("{},{}", addrs[0], addrs[1])], "prefix": "cl",
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
        // The first publish may wait for the slot map.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = a.api("publish", json!({"channel": ch, "data": {"n": i}}));
            if r.get("error").is_none() {
                assert_eq!(r["result"]["offset"], 1, "{r}");
                break;
            }
            assert!(Instant::now() < deadline, "publish to {ch}: {r}\n{}", a.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
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
