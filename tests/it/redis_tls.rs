//! The Redis engine over TLS (`engine.redis.tls`, `rediss://`) to a `redis-server` started with
//! `--tls-port` and certificates made by `openssl`, with and without a client certificate;
//! and the keepalive of PUB/SUB connections: a Redis that stops answering without closing its
//! sockets (SIGSTOP) is left within `engine.redis.io_timeout`, and subscribers get their
//! publications again once it is back; and the node numbers nodes claim in Redis.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::tls::{pki, Pki};
use crate::util::*;

fn node_config(address: &str, tls: Value) -> Value {
    config_with(json!({
        "client": {"insecure": true},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true, "history_size": 10, "history_ttl": "60s"}},
        "engine": {"type": "redis", "redis": {
            "address": [address], "prefix": "tls-test", "tls": tls,
            "connect_timeout": "500ms", "io_timeout": "1s"
        }},
    }))
}

/// A redis-server with a plain port (for the test's own checks) and a TLS port that requires
/// client certificates signed by `p`'s CA when `auth_clients`.
fn tls_redis(p: &Pki, auth_clients: bool) -> (RedisServer, u16) {
    let tls_port = free_port();
    (RedisServer::start_with_args(redis_tls_args(p, tls_port, auth_clients)), tls_port)
}

/// redis-server arguments for a TLS port with `p`'s certificates: the server's, its CA, and
/// the client certificate it presents when it connects as a client (cluster bus,
/// replication, a sentinel's checks); client certificates required when `auth_clients`.
pub(crate) fn redis_tls_args(p: &Pki, tls_port: u16, auth_clients: bool) -> Vec<String> {
    let path = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let mut args = vec!["--tls-port".to_string(), tls_port.to_string()];
    for (k, v) in [
        ("--tls-cert-file", path(&p.cert)),
        ("--tls-key-file", path(&p.key)),
        ("--tls-ca-cert-file", path(&p.ca)),
        ("--tls-client-cert-file", path(&p.client_cert)),
        ("--tls-client-key-file", path(&p.client_key)),
        ("--tls-auth-clients", if auth_clients { "yes" } else { "no" }.to_string()),
    ] {
        args.push(k.to_string());
        args.push(v);
    }
    args
}

fn poll(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn engine_over_tls_with_a_client_certificate() {
    let test = "engine_over_tls_with_a_client_certificate";
    if !redis_available(test) {
        return;
    }
    let p = pki();
    let (_redis, tls_port) = tls_redis(&p, true);
    let path = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let client =
        json!({"server_ca_pem": path(&p.ca), "cert_pem": path(&p.client_cert), "key_pem": path(&p.client_key)});
    // One node by `rediss://`, the other by `tls.enabled` (checking the name it is given).
    let mut b_tls = client.clone();
    b_tls["enabled"] = json!(true);
    b_tls["server_name"] = json!("localhost");
    let a = Server::start(node_config(&format!("rediss://127.0.0.1:{tls_port}"), client));
    let b = Server::start(node_config(&format!("redis://127.0.0.1:{tls_port}"), b_tls));
    let Some(mut agent) = Agent::start(Sdk::Js, test) else { return };
    agent.connect("c", &b, json!({}));
    agent.wait("connected to node b", ev("c", "connected"));
    agent.sub("c", "news", json!({}));
    agent.wait("subscribed on node b", sev("c", "news", "sub.subscribed"));
    let r = a.api("publish", json!({"channel": "news", "data": {"n": 1}}));
    assert!(r.get("error").is_none() && r["result"]["offset"] == 1, "{r}");
    let pubs = agent.wait_n("the publication through Redis over TLS", 1, sev("c", "news", "sub.publication"));
    assert_eq!(ns(&pubs), vec![1]);
    let h = b.api("history", json!({"channel": "news", "limit": 10}));
    assert_eq!(h["result"]["publications"][0]["data"], json!({"n": 1}), "{h}");

    // Without a client certificate the server refuses the node, which says why and answers
    // its API calls with an error instead of hanging.
    let c =
        Server::start(node_config(&format!("rediss://127.0.0.1:{tls_port}"), json!({"server_ca_pem": path(&p.ca)})));
    let r: Value = c.api("publish", json!({"channel": "news", "data": {"n": 2}}));
    assert!(r.get("error").is_some(), "a node Redis refused must not publish: {r}");
    // A node that does not trust the server's certificate does not connect either.
    let other = pki();
    let d = Server::start(node_config(
        &format!("rediss://127.0.0.1:{tls_port}"),
        json!({"server_ca_pem": path(&other.ca), "cert_pem": path(&p.client_cert), "key_pem": path(&p.client_key)}),
    ));
    poll("the failed handshake logged", Duration::from_secs(5), || d.stderr().contains("redis TLS handshake failed"));
    let r: Value = d.api("publish", json!({"channel": "news", "data": {"n": 3}}));
    assert!(r.get("error").is_some(), "{r}");
}

#[test]
fn hung_redis_is_left_and_pubsub_comes_back() {
    let test = "hung_redis_is_left_and_pubsub_comes_back";
    if !redis_available(test) {
        return;
    }
    let redis = RedisServer::start();
    let s = Server::start(node_config(&redis.url(), json!({})));
    let Some(mut agent) = Agent::start(Sdk::Js, test) else { return };
    agent.connect("c", &s, json!({}));
    agent.wait("connected", ev("c", "connected"));
    agent.sub("c", "feed", json!({}));
    agent.wait("subscribed", sev("c", "feed", "sub.subscribed"));
    let pid = redis.pid().expect("redis pid") as i32;
    // SAFETY: signals to the test's own redis-server child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped = Instant::now();
    poll("the silent PUB/SUB connection left", Duration::from_secs(5), || {
        s.stderr().contains("redis did not answer a PING in time")
    });
    let took = stopped.elapsed();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(took < Duration::from_millis(2500), "left after {took:?} (io_timeout 1s)");
    // Back: publications reach the subscriber again (resubscribed on the new connection).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while agent.count(sev("c", "feed", "sub.publication")) == 0 {
        assert!(Instant::now() < deadline, "no publication after SIGCONT:\n{}", s.stderr());
        n += 1;
        let _ = s.api("publish", json!({"channel": "feed", "data": {"n": n}}));
        agent.settle(Duration::from_millis(200));
    }
}

/// Nodes sharing a Redis hold distinct node numbers (the gateway's client ids carry them):
/// with all but two numbers taken, two nodes get one each.
#[test]
fn nodes_claim_distinct_numbers() {
    let test = "nodes_claim_distinct_numbers";
    if !redis_available(test) {
        return;
    }
    let redis = RedisServer::start();
    let (free_a, free_b) = (5u32, 900u32);
    let mut mset = vec!["MSET".to_string()];
    for n in (0..1024u32).filter(|n| *n != free_a && *n != free_b) {
        mset.push(format!("tls-test.gyre.node_number.{n}"));
        mset.push("someone-else".into());
    }
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    redis.cmd(&args);
    let a = Server::start(node_config(&redis.url(), json!({})));
    let b = Server::start(node_config(&redis.url(), json!({})));
    let number = |s: &Server| -> Option<u32> {
        let log = s.stderr();
        let line: serde_json::Value = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|l: &serde_json::Value| l["message"] == "node number claimed")?;
        line["number"].as_u64().map(|n| n as u32)
    };
    poll("both nodes claimed a number", Duration::from_secs(10), || number(&a).is_some() && number(&b).is_some());
    let mut got = [number(&a).unwrap(), number(&b).unwrap()];
    got.sort();
    assert_eq!(got, [free_a, free_b], "{}\n{}", a.stderr(), b.stderr());
    let owner = redis.cmd(&["GET", &format!("tls-test.gyre.node_number.{}", got[0])]);
    assert!(owner.as_str().is_some_and(|o| o != "someone-else"), "{owner}");
}
