//! The Redis engine: several `gyre` nodes sharing one (or two, sharded) `redis-server` of the
//! test's own, driven through the HTTP API and the official SDKs (the agents of `sdk.rs`).
//!
//! Every test starts its own `redis-server` on a free port (so tests run in parallel and
//! never share state) and its nodes with [`cluster`]. Without `redis-server` on PATH a test
//! is skipped with a message, unless `CI` is set: then it fails. The same holds for the SDK
//! packages (see `sdk.rs`).
//!
//! What is checked: publications fan out to subscribers on other nodes, history and its
//! epoch live in Redis, recovery works when a client comes back on another node, presence and
//! join/leave cross nodes, API actions reach connections on other nodes, `info` and
//! `channels` see the whole cluster, the key layout is Centrifugo's, a Redis crash loses no
//! acknowledged publication, and channels are sharded over several Redis servers as
//! Centrifugo shards them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;

/// `client.token.hmac_secret_key` of [`patch`].
const SECRET: &str = "redis-test-secret-0123456789";

/// What the tests add to `util::config()` (whose channels are: the default namespace with
/// history 10 and presence, `hist` with history 100 and presence, `nohist`):
///
/// * the default namespace also lets clients subscribe, publish, and read presence and
///   history, and pushes join/leave;
/// * `hist` forces recovery (an SDK subscription comes back with what it missed);
/// * short Redis timeouts, so a dead Redis is noticed quickly.
fn patch() -> Value {
    json!({
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": true,
                "allow_publish_for_subscriber": true,
                "allow_presence_for_subscriber": true,
                "allow_history_for_subscriber": true,
                "join_leave": true,
                "force_push_join_leave": true
            },
            "namespaces": [
                {
                    "name": "hist",
                    "history_size": 100,
                    "history_ttl": "300s",
                    "presence": true,
                    "allow_subscribe_for_client": true,
                    "force_recovery": true
                },
                {"name": "nohist", "allow_subscribe_for_client": true}
            ]
        },
        "engine": {"redis": {"connect_timeout": "500ms", "io_timeout": "1s"}}
    })
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A connection token for `user`.
fn token(user: &str) -> String {
    jwt(SECRET, json!({"sub": user, "exp": now() + 3600}))
}

/// A Redis for `test`, or `None` (skip) when `redis-server` is missing and `CI` is unset.
fn redis_for(test: &str) -> Option<RedisServer> {
    redis_available(test).then(RedisServer::start)
}

/// `publish` on `s`; asserts success and returns the result object.
fn publish(s: &Server, channel: &str, data: Value) -> Value {
    let r = s.api("publish", json!({"channel": channel, "data": data}));
    assert!(r.get("error").is_none(), "API publish to {channel} on port {}: {r}", s.port);
    r["result"].clone()
}

/// An API call on `s` that must succeed; returns its result.
fn ok(s: &Server, method: &str, body: Value) -> Value {
    let r = s.api(method, body.clone());
    assert!(r.get("error").is_none(), "API {method} {body} on port {}: {r}", s.port);
    r["result"].clone()
}

/// Calls `f` every 100 ms until it returns `Ok`, for at most `within`; then fails with the
/// last `Err` (what was seen instead).
fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// No node panicked (a panicking worker may leave the process running).
fn assert_no_panic(nodes: &[Server]) {
    for s in nodes {
        let log = s.stderr();
        assert!(!log.contains("panicked"), "the node on port {} panicked:\n{log}", s.port);
    }
}

fn ws_url(s: &Server) -> String {
    format!("ws://127.0.0.1:{}/connection/websocket", s.port)
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("gyre-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create a temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The SDK agents (the line protocol of tests/js/agent.js and tests/python/sdk_agent.py; see
// sdk.rs). Here every client names the node it connects to.
// ---------------------------------------------------------------------------------------------

/// What the tests of this file add to the agents.
impl Agent {
    /// Connects client `c` as `user` to `node` and waits until it is connected; returns its
    /// client id.
    fn connect_as(&mut self, c: &str, node: &Server, user: &str, protobuf: bool) -> String {
        self.connect(c, node, json!({"token": token(user), "protobuf": protobuf}));
        let e = self.wait(&format!("{c} connected"), ev(c, "connected"));
        e["client"].as_str().unwrap_or_else(|| panic!("no client id in {e}")).to_string()
    }

    /// Subscribes and waits for the subscribed event (the subscription is then live in Redis).
    fn sub_wait(&mut self, c: &str, ch: &str) -> Value {
        self.sub(c, ch, json!({}));
        self.wait(&format!("{c} subscribed to {ch}"), sev(c, ch, "sub.subscribed"))
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Publications reach subscribers on other nodes, JSON and protobuf, JS and Python.
// ---------------------------------------------------------------------------------------------

#[test]
fn publications_reach_sdk_subscribers_on_other_nodes() {
    const TEST: &str = "redis::publications_reach_sdk_subscribers_on_other_nodes";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(3, &redis, patch());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let Some(js) = Agent::start(Sdk::Js, TEST) else { return };
    let Some(py) = Agent::start(Sdk::Py, TEST) else { return };
    let mut agents = [js, py];
    // (agent, client): JSON and protobuf clients of both SDKs on nodes B and C; none on A.
    const CLIENTS: [(usize, &str); 4] = [(0, "jb"), (0, "jc"), (1, "pb"), (1, "pc")];
    let jb = agents[0].connect_as("jb", b, "u1", false);
    agents[0].connect_as("jc", c, "u2", true);
    agents[1].connect_as("pb", b, "u3", false);
    agents[1].connect_as("pc", c, "u4", true);
    for (i, cl) in CLIENTS {
        for ch in ["hist:fan", "nohist:fan", "fan"] {
            agents[i].sub_wait(cl, ch);
        }
    }

    // API publications on A, with and without history, interleaved.
    let data = |i: i64| json!({"n": i, "text": format!("message {i} é✓"), "nested": {"list": [i, null, true]}});
    let mut epoch = Value::Null;
    for i in 1..=30 {
        let r = publish(a, "hist:fan", data(i));
        assert_eq!(r["offset"], i, "offset of publication {i}: {r}");
        if i == 1 {
            epoch = r["epoch"].clone();
            assert!(epoch.as_str().is_some_and(|e| !e.is_empty()), "epoch: {r}");
        }
        assert_eq!(r["epoch"], epoch, "one epoch: {r}");
        assert_eq!(publish(a, "nohist:fan", json!({"n": i})), json!({}), "no history: empty result");
    }
    for (i, cl) in CLIENTS {
        let agent = &mut agents[i];
        let pubs =
            agent.wait_n(&format!("{cl}: 30 publications on hist:fan"), 30, sev(cl, "hist:fan", "sub.publication"));
        for (i, p) in (1..=30).zip(&pubs) {
            assert_eq!(p["data"], data(i), "{cl}: publication {i}: {p}");
            assert_eq!(p["offset"], i, "{cl}: offset of publication {i}: {p}");
        }
        let pubs = agent.wait_n(&format!("{cl}: 30 on nohist:fan"), 30, sev(cl, "nohist:fan", "sub.publication"));
        assert_eq!(ns(&pubs), (1..=30).collect::<Vec<_>>(), "{cl}: nohist:fan in order");
    }

    // A client publication made on B reaches C (and B) with the publisher's ClientInfo.
    assert_eq!(agents[0].call("jb", "publish", "fan", json!({"data": {"from": "jb"}})), Ok(json!({})));
    for (i, cl) in CLIENTS {
        let p = agents[i].wait(&format!("{cl}: the client publication"), sev(cl, "fan", "sub.publication"));
        assert_eq!(p["data"], json!({"from": "jb"}), "{cl}: {p}");
        assert_eq!(p["info"]["user"], "u1", "{cl}: publisher info: {p}");
        assert_eq!(p["info"]["client"], jb.as_str(), "{cl}: publisher info: {p}");
    }

    // Exactly once each.
    agents[0].settle(Duration::from_millis(300));
    agents[1].settle(Duration::from_millis(100));
    for (i, cl) in CLIENTS {
        let agent = &agents[i];
        assert_eq!(agent.count(sev(cl, "hist:fan", "sub.publication")), 30, "{cl}: duplicates on hist:fan");
        assert_eq!(agent.count(sev(cl, "nohist:fan", "sub.publication")), 30, "{cl}: duplicates on nohist:fan");
        assert_eq!(agent.count(sev(cl, "fan", "sub.publication")), 1, "{cl}: duplicates on fan");
        assert_eq!(agent.count(ev(cl, "connected")), 1, "{cl}: must stay on one connection");
        assert_eq!(agent.count(|e| e["c"] == cl && e["ev"] == "sub.error"), 0, "{cl}: subscription errors");
    }
    assert_no_panic(&nodes);
}

// ---------------------------------------------------------------------------------------------
// 2. History lives in Redis.
// ---------------------------------------------------------------------------------------------

#[test]
fn history_is_shared_between_nodes() {
    const TEST: &str = "redis::history_is_shared_between_nodes";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(3, &redis, json!({}));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    let mut epoch = String::new();
    for i in 1..=5 {
        let r = publish(a, "hist:h", json!({"n": i}));
        if i == 1 {
            epoch = r["epoch"].as_str().expect("epoch").to_string();
        }
        assert_eq!(r, json!({"offset": i, "epoch": epoch}), "publish {i} on A");
    }
    let pubs_1_5: Vec<Value> = (1..=5).map(|i| json!({"data": {"n": i}, "offset": i})).collect();

    // B and C read what A wrote: same publications, offsets and epoch.
    for s in [b, c] {
        let h = ok(s, "history", json!({"channel": "hist:h", "limit": -1}));
        assert_eq!(h, json!({"publications": pubs_1_5, "offset": 5, "epoch": epoch}), "history on port {}", s.port);
    }
    let h = ok(c, "history", json!({"channel": "hist:h", "limit": 2, "since": {"offset": 2, "epoch": epoch}}));
    assert_eq!(offsets(h["publications"].as_array().unwrap()), vec![3, 4], "since 2, limit 2: {h}");
    let h = ok(b, "history", json!({"channel": "hist:h", "limit": 2, "reverse": true}));
    assert_eq!(offsets(h["publications"].as_array().unwrap()), vec![5, 4], "reverse, limit 2: {h}");
    let h = ok(b, "history", json!({"channel": "hist:h"}));
    assert_eq!(h, json!({"publications": [], "offset": 5, "epoch": epoch}), "limit 0: position only");
    assert_eq!(
        b.api("history", json!({"channel": "hist:h", "limit": -1, "since": {"offset": 1, "epoch": "other"}})),
        api_error(112),
        "another epoch is unrecoverable"
    );

    // The stream continues from any node.
    assert_eq!(publish(c, "hist:h", json!({"n": 6})), json!({"offset": 6, "epoch": epoch}), "publish on C");
    let h = ok(a, "history", json!({"channel": "hist:h", "limit": -1}));
    assert_eq!(ns(h["publications"].as_array().unwrap()), vec![1, 2, 3, 4, 5, 6], "{h}");

    // history_remove on B empties it for everyone; the position and epoch stay.
    assert_eq!(ok(b, "history_remove", json!({"channel": "hist:h"})), json!({}));
    for s in [a, b, c] {
        let h = ok(s, "history", json!({"channel": "hist:h", "limit": -1}));
        assert_eq!(
            h,
            json!({"publications": [], "offset": 6, "epoch": epoch}),
            "after history_remove, port {}",
            s.port
        );
    }
    assert_eq!(publish(a, "hist:h", json!({"n": 7})), json!({"offset": 7, "epoch": epoch}), "after remove");
    let h = ok(c, "history", json!({"channel": "hist:h", "limit": -1}));
    assert_eq!(h["publications"], json!([{"data": {"n": 7}, "offset": 7}]), "{h}");

    // The default namespace keeps 10: the oldest are trimmed, for every node.
    for i in 1..=15 {
        assert_eq!(publish(a, "plain", json!({"n": i}))["offset"], i);
    }
    let h = ok(b, "history", json!({"channel": "plain", "limit": -1}));
    assert_eq!(offsets(h["publications"].as_array().unwrap()), (6..=15).collect::<Vec<_>>(), "size 10: {h}");
    assert_eq!(ns(h["publications"].as_array().unwrap()), (6..=15).collect::<Vec<_>>(), "{h}");
    assert_eq!(h["offset"], 15);

    // A channel without history is refused everywhere, and reading history of an unknown
    // stream creates its position (offset 0 and an epoch) that every node then shares.
    assert_eq!(b.api("history", json!({"channel": "nohist:x"})), api_error(108));
    let h = ok(a, "history", json!({"channel": "hist:fresh"}));
    assert_eq!(h["offset"], 0, "{h}");
    let fresh_epoch = h["epoch"].as_str().filter(|e| !e.is_empty()).expect("an epoch for a new stream").to_string();
    assert_eq!(ok(c, "history", json!({"channel": "hist:fresh"}))["epoch"], fresh_epoch.as_str());
    assert_eq!(publish(b, "hist:fresh", json!({"n": 1})), json!({"offset": 1, "epoch": fresh_epoch}));
    assert_no_panic(&nodes);
}

#[test]
fn idempotent_publish_across_nodes() {
    const TEST: &str = "redis::idempotent_publish_across_nodes";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(3, &redis, json!({}));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let first = ok(a, "publish", json!({"channel": "hist:idem", "data": {"n": 1}, "idempotency_key": "k1"}));
    assert_eq!(first["offset"], 1, "{first}");
    // The same key on another node: the original result, nothing new in the stream.
    let again = ok(b, "publish", json!({"channel": "hist:idem", "data": {"n": 1}, "idempotency_key": "k1"}));
    assert_eq!(again, first, "a repeated idempotency key returns the first result");
    let other = ok(b, "publish", json!({"channel": "hist:idem", "data": {"n": 2}, "idempotency_key": "k2"}));
    assert_eq!(other, json!({"offset": 2, "epoch": first["epoch"]}), "another key publishes");
    let h = ok(c, "history", json!({"channel": "hist:idem", "limit": -1}));
    assert_eq!(ns(h["publications"].as_array().unwrap()), vec![1, 2], "{h}");
    assert_no_panic(&nodes);
}

// ---------------------------------------------------------------------------------------------
// 3. Recovery when the client comes back on another node.
// ---------------------------------------------------------------------------------------------

#[test]
fn recovery_across_nodes() {
    const TEST: &str = "redis::recovery_across_nodes";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(3, &redis, patch());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    const CH: &str = "hist:rec";

    // A JSON and a protobuf client on B, recovering subscriptions (`hist` forces recovery).
    let clients = [("j", false), ("p", true)];
    let mut epoch = Value::Null;
    for (cl, protobuf) in clients {
        js.connect_as(cl, b, "u1", protobuf);
        let sd = js.sub_wait(cl, CH);
        assert_eq!(sd["recoverable"], true, "{cl}: {sd}");
        assert_eq!(sd["wasRecovering"], false, "{cl}: {sd}");
        assert_eq!(sd["offset"], 0, "{cl}: {sd}");
        assert!(sd["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{cl}: {sd}");
        if epoch.is_null() {
            epoch = sd["epoch"].clone();
        }
        assert_eq!(sd["epoch"], epoch, "{cl}: one epoch for the channel whichever client asks: {sd}");
    }
    for i in 1..=5 {
        publish(a, CH, json!({"n": i}));
    }
    for (cl, _) in clients {
        js.wait_n(&format!("{cl}: 5 live publications"), 5, sev(cl, CH, "sub.publication"));
    }

    // Move: lose the connection to B, publish 50 on A while away, come back on `to`.
    let mut total = 5;
    for (hop, (to, publisher, missed)) in [(c, a, 50), (b, c, 20)].into_iter().enumerate() {
        for (cl, _) in clients {
            let blocked = js.count(ev(cl, "blocked"));
            js.send(json!({"op": "cut", "c": cl, "block": true}));
            let cut = js.wait_n(&format!("{cl}: cut {hop}"), hop + 1, ev(cl, "cut")).remove(hop);
            assert_eq!(cut["sockets"], 1, "{cl}: {cut}");
            js.wait_n(&format!("{cl}: a blocked reconnect attempt"), blocked + 1, ev(cl, "blocked"));
        }
        for i in total + 1..=total + missed {
            let r = publish(publisher, CH, json!({"n": i}));
            assert_eq!(r["offset"], i, "{r}");
        }
        total += missed;
        for (cl, _) in clients {
            assert_eq!(js.count(ev(cl, "connected")), hop + 1, "{cl} must have been away while publishing");
            js.send(json!({"op": "retarget", "c": cl, "url": ws_url(to)}));
            js.send(json!({"op": "unblock", "c": cl}));
        }
        for (cl, _) in clients {
            js.wait_n(&format!("{cl} reconnected (hop {hop})"), hop + 2, ev(cl, "connected"));
            let opened = js.all(ev(cl, "ws.open"));
            assert_eq!(opened.last().unwrap()["url"], ws_url(to).as_str(), "{cl} must now be on port {}", to.port);
            let sd = js.wait_n(&format!("{cl} resubscribed"), hop + 2, sev(cl, CH, "sub.subscribed")).remove(hop + 1);
            assert_eq!(sd["wasRecovering"], true, "{cl}, hop {hop}: {sd}");
            assert_eq!(sd["recovered"], true, "{cl}, hop {hop}: {sd}");
            assert_eq!(sd["hasRecoveredPublications"], true, "{cl}, hop {hop}: {sd}");
            assert_eq!(sd["epoch"], epoch, "{cl}, hop {hop}: same stream: {sd}");
            let pubs =
                js.wait_n(&format!("{cl}: {total} publications"), total as usize, sev(cl, CH, "sub.publication"));
            let want: Vec<i64> = (1..=total).collect();
            assert_eq!(ns(&pubs), want, "{cl}, hop {hop}: everything, in order, once");
            assert_eq!(offsets(&pubs), want, "{cl}, hop {hop}: offsets");
        }
        // Live publications flow again on the new node.
        total += 1;
        publish(a, CH, json!({"n": total}));
        for (cl, _) in clients {
            let pubs =
                js.wait_n(&format!("{cl}: live after hop {hop}"), total as usize, sev(cl, CH, "sub.publication"));
            assert_eq!(pubs.last().unwrap()["data"]["n"], total, "{cl}");
        }
    }
    js.settle(Duration::from_millis(300));
    for (cl, _) in clients {
        assert_eq!(js.count(sev(cl, CH, "sub.publication")), total as usize, "{cl}: no duplicates");
        assert_eq!(js.count(|e| e["c"] == cl && e["ev"] == "sub.error"), 0, "{cl}: subscription errors");
    }
    assert_no_panic(&nodes);
}

// ---------------------------------------------------------------------------------------------
// 4. Presence and join/leave across nodes.
// ---------------------------------------------------------------------------------------------

/// `presence` on `s` as client id → ClientInfo.
fn presence(s: &Server, ch: &str) -> BTreeMap<String, Value> {
    let r = ok(s, "presence", json!({"channel": ch}));
    r["presence"]
        .as_object()
        .unwrap_or_else(|| panic!("presence result: {r}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn presence_across_nodes() {
    const TEST: &str = "redis::presence_across_nodes";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(3, &redis, patch());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };

    // a1 (user u1, with connection info) on A; b1 and b2 (both user u2) on B; none on C.
    js.connect(
        "a1",
        a,
        json!({"token": jwt(SECRET, json!({"sub": "u1", "exp": now() + 3600, "info": {"name": "alice"}}))}),
    );
    let a1 = js.wait("a1 connected", ev("a1", "connected"))["client"].as_str().unwrap().to_string();
    let b1 = js.connect_as("b1", b, "u2", false);
    let b2 = js.connect_as("b2", b, "u2", true);
    js.sub_wait("a1", "room");
    js.sub_wait("b1", "room");
    js.sub_wait("b2", "room");

    // a1 (on A) sees b1 and b2 (on B) join.
    for id in [&b1, &b2] {
        let j = js
            .wait("a1 sees a join from B", |e| sev("a1", "room", "sub.join")(e) && e["info"]["client"] == id.as_str());
        assert_eq!(j["info"]["user"], "u2", "{j}");
    }

    // C has no client of its own and sees all three.
    let all3 = BTreeSet::from([a1.clone(), b1.clone(), b2.clone()]);
    let p = poll("three clients in presence on C", Duration::from_secs(2), || {
        let p = presence(c, "room");
        let ids: BTreeSet<String> = p.keys().cloned().collect();
        (ids == all3).then_some(p).ok_or(format!("{ids:?}"))
    });
    assert_eq!(p[&a1], json!({"user": "u1", "client": a1, "conn_info": {"name": "alice"}}), "a1 with its info");
    assert_eq!(p[&b1], json!({"user": "u2", "client": b1}), "b1");
    assert_eq!(p[&b2], json!({"user": "u2", "client": b2}), "b2");
    for s in [a, b, c] {
        let st = ok(s, "presence_stats", json!({"channel": "room"}));
        assert_eq!(st, json!({"num_clients": 3, "num_users": 2}), "presence_stats on port {}", s.port);
    }
    // Client-side presence, asked on B, lists A's client too.
    let cp = js.call("b1", "presence", "room", json!({})).expect("client presence");
    let ids: BTreeSet<String> = cp["clients"].as_object().expect("clients").keys().cloned().collect();
    assert_eq!(ids, all3, "{cp}");
    assert_eq!(js.call("a1", "presenceStats", "room", json!({})), Ok(json!({"numClients": 3, "numUsers": 2})));

    // b2 disconnects: gone from presence promptly (the leave path, not the presence TTL),
    // and a1 on A sees it leave. u2 is still there through b1.
    js.send(json!({"op": "disconnect", "c": "b2"}));
    let l = js.wait("a1 sees b2 leave", |e| sev("a1", "room", "sub.leave")(e) && e["info"]["client"] == b2.as_str());
    assert_eq!(l["info"]["user"], "u2", "{l}");
    poll("b2 gone from presence on C", Duration::from_secs(3), || {
        let p = presence(c, "room");
        let st = ok(c, "presence_stats", json!({"channel": "room"}));
        let ids: BTreeSet<String> = p.keys().cloned().collect();
        if ids == BTreeSet::from([a1.clone(), b1.clone()]) && st == json!({"num_clients": 2, "num_users": 2}) {
            Ok(())
        } else {
            Err(format!("presence {ids:?}, stats {st}"))
        }
    });

    // b1 unsubscribes: u2 is gone.
    js.send(json!({"op": "unsub", "c": "b1", "ch": "room"}));
    js.wait("a1 sees b1 leave", |e| sev("a1", "room", "sub.leave")(e) && e["info"]["client"] == b1.as_str());
    poll("b1 gone from presence on A", Duration::from_secs(3), || {
        let ids: BTreeSet<String> = presence(a, "room").keys().cloned().collect();
        let st = ok(b, "presence_stats", json!({"channel": "room"}));
        if ids == BTreeSet::from([a1.clone()]) && st == json!({"num_clients": 1, "num_users": 1}) {
            Ok(())
        } else {
            Err(format!("presence {ids:?}, stats on B {st}"))
        }
    });
    js.settle(Duration::from_millis(200));
    for id in [&b1, &b2] {
        let of = |name| move |e: &Value| sev("a1", "room", name)(e) && e["info"]["client"] == id.as_str();
        assert_eq!(js.count(of("sub.join")), 1, "a1: one join of {id}");
        assert_eq!(js.count(of("sub.leave")), 1, "a1: one leave of {id}");
    }
    assert_no_panic(&nodes);
}

// ---------------------------------------------------------------------------------------------
// 5. API actions reach connections on other nodes.
// ---------------------------------------------------------------------------------------------

#[test]
fn api_actions_reach_connections_on_other_nodes() {
    const TEST: &str = "redis::api_actions_reach_connections_on_other_nodes";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(3, &redis, patch());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };

    // User "victim" on B (v1) and C (v2); user "other" on B (o1). Every API call goes to A.
    let v1 = js.connect_as("v1", b, "victim", false);
    js.connect_as("v2", c, "victim", true);
    js.connect_as("o1", b, "other", false);
    for cl in ["v1", "v2", "o1"] {
        js.sub_wait(cl, "room");
    }

    // subscribe: a server-side subscription on both victim connections.
    assert_eq!(ok(a, "subscribe", json!({"user": "victim", "channel": "hist:srv"})), json!({}));
    for cl in ["v1", "v2"] {
        js.wait(&format!("{cl}: server-side subscription"), |e| {
            ev(cl, "server.subscribed")(e) && e["ch"] == "hist:srv"
        });
    }
    publish(a, "hist:srv", json!({"n": 1}));
    for cl in ["v1", "v2"] {
        let p = js.wait(&format!("{cl}: server-side publication"), |e| {
            ev(cl, "server.publication")(e) && e["ch"] == "hist:srv"
        });
        assert_eq!(p["data"], json!({"n": 1}), "{p}");
    }

    // unsubscribe: both victim connections leave `room`, the other user stays.
    assert_eq!(ok(a, "unsubscribe", json!({"user": "victim", "channel": "room"})), json!({}));
    for cl in ["v1", "v2"] {
        let u = js.wait(&format!("{cl}: server unsubscribe"), sev(cl, "room", "sub.unsubscribed"));
        assert_eq!(u["code"], 2000, "{u}");
        assert_eq!(u["reason"], "server unsubscribe", "{u}");
    }
    publish(c, "room", json!({"n": 2}));
    js.wait("o1 still gets room", sev("o1", "room", "sub.publication"));

    // refresh with `expired` for one connection (by client id): v1 is closed with 3005 and
    // reconnects; v2 (same user) is untouched.
    assert_eq!(ok(a, "refresh", json!({"user": "victim", "client": v1, "expired": true})), json!({}));
    let e = js.wait("v1 closed as expired", |e| ev("v1", "connecting")(e) && e["code"] != 0);
    assert_eq!(e["code"], 3005, "{e}");
    js.wait_n("v1 reconnected", 2, ev("v1", "connected"));

    // disconnect: every victim connection closes with 3503, the other user stays.
    assert_eq!(ok(a, "disconnect", json!({"user": "victim"})), json!({}));
    for cl in ["v1", "v2"] {
        let d = js.wait(&format!("{cl} force-disconnected"), ev(cl, "disconnected"));
        assert_eq!(d["code"], 3503, "{d}");
        assert_eq!(d["reason"], "force disconnect", "{d}");
    }
    poll("only o1 left in room", Duration::from_secs(3), || {
        let st = ok(b, "presence_stats", json!({"channel": "room"}));
        (st == json!({"num_clients": 1, "num_users": 1})).then_some(()).ok_or(st.to_string())
    });
    js.settle(Duration::from_millis(300));
    assert_eq!(js.count(ev("o1", "disconnected")), 0, "o1 must stay connected");
    assert_eq!(js.count(|e| ev("o1", "connecting")(e) && e["code"] != 0), 0, "o1 must not reconnect");
    assert_eq!(js.count(sev("o1", "room", "sub.unsubscribed")), 0, "o1 stays subscribed");
    assert_eq!(js.count(|e| ev("o1", "server.subscribed")(e)), 0, "o1 got no server-side subscription");
    assert_eq!(js.count(|e| ev("v2", "connecting")(e) && e["code"] == 3005), 0, "the refresh was for v1 only");
    assert_eq!(js.count(ev("v2", "connected")), 1, "v2 connected once");
    for cl in ["v1", "v2"] {
        assert_eq!(js.count(sev(cl, "room", "sub.publication")), 0, "{cl} was unsubscribed before the publication");
    }
    assert_no_panic(&nodes);
}

// ---------------------------------------------------------------------------------------------
// 6. info lists every live node; 7. channels aggregates all nodes.
// ---------------------------------------------------------------------------------------------

/// `info` on `s` as node name → NodeResult.
fn info(s: &Server) -> BTreeMap<String, Value> {
    let r = ok(s, "info", json!({}));
    r["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("info result: {r}"))
        .iter()
        .map(|n| (n["name"].as_str().unwrap_or("?").to_string(), n.clone()))
        .collect()
}

#[test]
fn info_lists_every_live_node() {
    const TEST: &str = "redis::info_lists_every_live_node";
    let Some(redis) = redis_for(TEST) else { return };
    let mut nodes = cluster(3, &redis, patch());
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    // node1: eight connections of two users, all in one channel (so, almost surely, on both
    // of the node's workers); node2: one user in two channels; node0: nobody.
    for i in 0..8 {
        let cl = format!("x{i}");
        js.connect_as(&cl, &nodes[1], &format!("u{}", i % 2 + 1), false);
        js.sub_wait(&cl, "room");
    }
    js.connect_as("z", &nodes[2], "u3", false);
    js.sub_wait("z", "room");
    js.sub_wait("z", "hist:other");

    // num_clients, num_users, num_subs must converge first; num_channels (distinct channels
    // of the node, however many of its workers hold subscribers) is checked after the rest.
    let counts = |n: &Value| ["num_clients", "num_users", "num_subs"].map(|k| n[k].as_u64().unwrap_or(u64::MAX));
    let want: BTreeMap<&str, [u64; 3]> =
        BTreeMap::from([("node0", [0, 0, 0]), ("node1", [8, 2, 8]), ("node2", [1, 1, 2])]);
    let want_channels: BTreeMap<&str, u64> = BTreeMap::from([("node0", 0), ("node1", 1), ("node2", 2)]);
    let mut channel_counts = Vec::new();
    let mut uids = BTreeMap::new();
    for (i, s) in nodes.iter().enumerate() {
        let seen = poll(&format!("info on node{i} to list 3 nodes with their counts"), Duration::from_secs(8), || {
            let nodes = info(s);
            let got: BTreeMap<&str, [u64; 3]> = nodes.iter().map(|(k, v)| (k.as_str(), counts(v))).collect();
            if got == want {
                Ok(nodes)
            } else {
                Err(format!("{got:?} (num_clients, num_users, num_subs)"))
            }
        });
        let got: BTreeMap<&str, u64> =
            seen.iter().map(|(k, v)| (k.as_str(), v["num_channels"].as_u64().unwrap_or(u64::MAX))).collect();
        if got != want_channels {
            channel_counts.push(format!("info on node{i}: num_channels {got:?}, want {want_channels:?}"));
        }
        for (name, n) in &seen {
            let uid = n["uid"].as_str().filter(|u| u.len() == 36).unwrap_or_else(|| panic!("uid: {n}")).to_string();
            // Every node reports the same uid for a node.
            assert_eq!(uids.entry(name.clone()).or_insert(uid.clone()), &uid, "{name}'s uid, as seen from node{i}");
            assert!(n["version"].as_str().is_some_and(|v| !v.is_empty()), "{n}");
        }
    }
    assert_eq!(uids.values().collect::<BTreeSet<_>>().len(), 3, "three distinct uids: {uids:?}");

    // node2 dies (SIGKILL): the others drop it within ~15 s, and keep each other.
    let killed = Instant::now();
    nodes[2].kill();
    for i in [0, 1] {
        poll(&format!("node{i} to drop node2"), Duration::from_secs(16).saturating_sub(killed.elapsed()), || {
            let names: Vec<String> = info(&nodes[i]).into_keys().collect();
            if names == ["node0", "node1"] {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        });
    }
    eprintln!("{TEST}: node2 dropped from info after {:?}", killed.elapsed());
    assert_no_panic(&nodes[..2]);
    assert!(channel_counts.is_empty(), "{}", channel_counts.join("\n"));
}

#[test]
fn channels_aggregates_all_nodes() {
    const TEST: &str = "redis::channels_aggregates_all_nodes";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(3, &redis, patch());
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    js.connect_as("x", &nodes[0], "u1", false);
    js.connect_as("y", &nodes[1], "u2", true);
    js.connect_as("z", &nodes[2], "u3", false);
    js.sub_wait("x", "room1");
    js.sub_wait("x", "room2");
    js.sub_wait("y", "room1");
    js.sub_wait("z", "hist:x");

    let all = json!({
        "room1": {"num_clients": 2},
        "room2": {"num_clients": 1},
        "hist:x": {"num_clients": 1}
    });
    // The survey needs the other nodes known (announced every ~3 s).
    for (i, s) in nodes.iter().enumerate() {
        poll(&format!("channels on node{i}"), Duration::from_secs(8), || {
            let r = ok(s, "channels", json!({}));
            (r == json!({ "channels": all })).then_some(()).ok_or(r.to_string())
        });
    }
    let r = ok(&nodes[2], "channels", json!({"pattern": "room*"}));
    assert_eq!(r, json!({"channels": {"room1": {"num_clients": 2}, "room2": {"num_clients": 1}}}), "pattern room*");
    let r = ok(&nodes[0], "channels", json!({"pattern": "hist:*"}));
    assert_eq!(r, json!({"channels": {"hist:x": {"num_clients": 1}}}), "pattern hist:*");

    // y (node1) leaves: room1 drops to 1 everywhere.
    js.send(json!({"op": "disconnect", "c": "y"}));
    poll("room1 down to one subscriber", Duration::from_secs(5), || {
        let r = ok(&nodes[2], "channels", json!({}));
        let want = json!({"channels": {"room1": {"num_clients": 1}, "room2": {"num_clients": 1}, "hist:x": {"num_clients": 1}}});
        (r == want).then_some(()).ok_or(r.to_string())
    });
    assert_no_panic(&nodes);
}

// ---------------------------------------------------------------------------------------------
// Centrifugo's key layout (§6.2), so Go and Gyre nodes could share one Redis.
// ---------------------------------------------------------------------------------------------

#[test]
fn key_layout_matches_centrifugo() {
    const TEST: &str = "redis::key_layout_matches_centrifugo";
    let Some(redis) = redis_for(TEST) else { return };
    let nodes = cluster(1, &redis, patch());
    let s = &nodes[0];
    let epoch = publish(s, "hist:k", json!({"n": 1}))["epoch"].as_str().unwrap().to_string();
    publish(s, "hist:k", json!({"n": 2}));
    publish(s, "hist:k", json!({"n": 3}));

    // Stream `<prefix>.stream.<ch>`: entry ids are the offsets, one field `d`.
    assert_eq!(redis.cmd(&["TYPE", "gyre-test.stream.hist:k"]), "stream");
    let entries = redis.cmd(&["XRANGE", "gyre-test.stream.hist:k", "-", "+"]);
    let ids: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0"], "{entries}");
    for e in entries.as_array().unwrap() {
        assert_eq!(e[1].as_array().map(|f| f.len()), Some(2), "one field: {e}");
        assert_eq!(e[1][0], "d", "field name: {e}");
    }
    // Meta hash `<prefix>.stream.meta.<ch>`: `e` epoch, `s` top offset.
    assert_eq!(redis.cmd(&["HGET", "gyre-test.stream.meta.hist:k", "e"]), epoch.as_str());
    assert_eq!(redis.cmd(&["HGET", "gyre-test.stream.meta.hist:k", "s"]), "3");
    // history_remove deletes the stream, keeps the meta.
    ok(s, "history_remove", json!({"channel": "hist:k"}));
    assert_eq!(redis.cmd(&["EXISTS", "gyre-test.stream.hist:k"]), 0);
    assert_eq!(redis.cmd(&["HGET", "gyre-test.stream.meta.hist:k", "s"]), "3");

    // Presence: hash `<prefix>.presence.data.<ch>` (client id → info) and zset
    // `<prefix>.presence.expire.<ch>` (client id → expiry, unix seconds).
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    let id = js.connect_as("a", s, "u1", false);
    js.sub_wait("a", "room");
    assert_eq!(redis.cmd(&["HKEYS", "gyre-test.presence.data.room"]), json!([id]));
    let exp: i64 = redis.cmd(&["ZSCORE", "gyre-test.presence.expire.room", &id]).as_str().unwrap().parse().unwrap();
    assert!((now() + 30..=now() + 90).contains(&exp), "expiry {exp} vs now {} (presence_ttl 60 s)", now());
    assert_no_panic(&nodes);
}

// ---------------------------------------------------------------------------------------------
// 8. Redis dies and comes back while publications flow.
// ---------------------------------------------------------------------------------------------

/// One API publish of the publisher thread.
#[derive(Debug, Clone)]
struct Attempt {
    n: i64,
    /// (offset, epoch) when acknowledged, else the error.
    outcome: Result<(i64, String), Value>,
    took: Duration,
    /// When it was answered.
    at: Instant,
}

#[test]
fn redis_crash_loses_no_acknowledged_publication() {
    const TEST: &str = "redis::redis_crash_loses_no_acknowledged_publication";
    if !redis_available(TEST) {
        return;
    }
    let dir = TempDir::new("redis-aof");
    let mut redis = RedisServer::start_persistent(&dir.0);
    let nodes = cluster(2, &redis, patch());
    let (a, b) = (&nodes[0], &nodes[1]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    const CH: &str = "hist:fault";
    // A limit on every call: a hung call fails the test instead of stalling it.
    const LIMIT: Duration = Duration::from_secs(4);

    js.connect_as("s", b, "u1", false);
    js.sub("s", CH, json!({"minResubscribeDelay": 100, "maxResubscribeDelay": 500}));
    let sd = js.wait("subscribed", sev("s", CH, "sub.subscribed"));
    assert_eq!(sd["recoverable"], true, "{sd}");

    let attempts: Mutex<Vec<Attempt>> = Mutex::new(Vec::new());
    // Error bodies that are code 100 but not exactly Centrifugo's server API error
    // `{"error":{"code":100,"message":"internal server error"}}`: checked last, so the rest
    // of the flow is still tested.
    let shape: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let acked_since = |t: Instant| attempts.lock().unwrap().iter().filter(|x| x.outcome.is_ok() && x.at > t).count();
    let errors_since = |t: Instant| attempts.lock().unwrap().iter().filter(|x| x.outcome.is_err() && x.at > t).count();
    std::thread::scope(|scope| {
        // However this ends (a failed assertion included), the publisher stops, so the scope
        // can end.
        let _stop = SetOnDrop(&stop);
        // The publisher: numbered publications on A, one every ~20 ms, until told to stop.
        let publisher = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (status, v, took) = a.api_within("publish", json!({"channel": CH, "data": {"n": n}}), LIMIT);
                assert_eq!(status, 200, "publish {n}: {v}");
                let outcome = match (&v["result"]["offset"], &v["result"]["epoch"]) {
                    (Value::Number(o), Value::String(e)) => Ok((o.as_i64().unwrap(), e.clone())),
                    _ => Err(v.clone()),
                };
                attempts.lock().unwrap().push(Attempt { n, outcome, took, at: Instant::now() });
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let started = Instant::now();
        poll("20 publications acknowledged", Duration::from_secs(10), || {
            let k = acked_since(started);
            (k >= 20).then_some(()).ok_or(format!("{k} acknowledged"))
        });

        // Kill Redis mid-stream.
        redis.kill();
        let killed = Instant::now();
        // While it is down, every call that needs it fails fast with 100 (on either node).
        for (s, method, body) in [
            (b, "history", json!({"channel": CH, "limit": -1})),
            (b, "presence", json!({"channel": CH})),
            (a, "presence_stats", json!({"channel": CH})),
            (b, "publish", json!({"channel": CH, "data": {"n": -1}})),
            (b, "history_remove", json!({"channel": "hist:other"})),
        ] {
            let (status, v, took) = s.api_within(method, body, LIMIT);
            assert_eq!(
                (status, &v["error"]["code"]),
                (200, &json!(100)),
                "{method} on port {} with Redis down: {v}",
                s.port
            );
            if v != api_error(100) {
                shape.lock().unwrap().push(format!("{method} with Redis down answered {v}"));
            }
            assert!(took < Duration::from_secs(3), "{method} with Redis down took {took:?}");
        }
        poll("the publisher to see 3 failures", Duration::from_secs(10), || {
            let k = errors_since(killed);
            (k >= 3).then_some(()).ok_or(format!("{k} failures"))
        });
        if let Some(left) = Duration::from_millis(1500).checked_sub(killed.elapsed()) {
            std::thread::sleep(left);
        }

        // Back on the same port and data: publications are acknowledged again within seconds.
        redis.restart();
        let restarted_at = Instant::now();
        poll("a publication acknowledged after the restart", Duration::from_secs(5), || {
            (acked_since(restarted_at) >= 1).then_some(()).ok_or("none yet".to_string())
        });
        eprintln!("{TEST}: publishing resumed {:?} after the restart", restarted_at.elapsed());
        poll("20 publications acknowledged after the restart", Duration::from_secs(15), || {
            let k = acked_since(restarted_at);
            (k >= 20).then_some(()).ok_or(format!("{k} acknowledged"))
        });
        stop.store(true, Ordering::Relaxed);
        publisher.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    });

    let attempts = attempts.into_inner().unwrap();
    let acked: Vec<(i64, i64, String)> =
        attempts.iter().filter_map(|x| x.outcome.as_ref().ok().map(|(o, e)| (x.n, *o, e.clone()))).collect();
    let failed: Vec<&Attempt> = attempts.iter().filter(|x| x.outcome.is_err()).collect();
    eprintln!("{TEST}: {} publications, {} acknowledged, {} failed", attempts.len(), acked.len(), failed.len());
    for x in &attempts {
        assert!(x.took < LIMIT, "publish {} took {:?}", x.n, x.took);
        if let Err(v) = &x.outcome {
            assert_eq!(v["error"]["code"], 100, "publish {} failed with something else than 100: {v}", x.n);
            if v != &api_error(100) {
                shape.lock().unwrap().push(format!("publish {} with Redis down answered {v}", x.n));
            }
            assert!(x.took < Duration::from_secs(3), "failed publish {} took {:?}", x.n, x.took);
        }
    }
    assert!(!failed.is_empty(), "the outage must have been seen");
    // The AOF kept the stream: same epoch, offsets go on increasing.
    let epoch = acked[0].2.clone();
    assert!(acked.iter().all(|x| x.2 == epoch), "one epoch across the restart: {acked:?}");
    assert!(acked.windows(2).all(|w| w[0].1 < w[1].1), "acknowledged offsets increase: {acked:?}");

    // The subscriber on B ends up with every acknowledged publication, in order, once. (A
    // publication whose answer was lost in the crash may also be there: it is in the stream.)
    let last = acked.last().unwrap().0;
    js.wait_n_within("the last acknowledged publication", 1, Duration::from_secs(20), |e| {
        sev("s", CH, "sub.publication")(e) && e["data"]["n"] == last
    });
    js.settle(Duration::from_millis(300));
    let pubs = js.all(sev("s", CH, "sub.publication"));
    let got: Vec<(i64, i64)> =
        pubs.iter().map(|p| (p["data"]["n"].as_i64().unwrap(), p["offset"].as_i64().unwrap())).collect();
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in order, no duplicates: {got:?}");
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        (1..=got.len() as i64).collect::<Vec<_>>(),
        "offsets without gaps: {got:?}"
    );
    let got_set: BTreeSet<(i64, i64)> = got.iter().copied().collect();
    let missing: Vec<(i64, i64)> = acked.iter().map(|x| (x.0, x.1)).filter(|x| !got_set.contains(x)).collect();
    assert!(missing.is_empty(), "acknowledged (n, offset) never delivered: {missing:?}; got {got:?}");
    // History agrees with what was delivered.
    let h = ok(a, "history", json!({"channel": CH, "limit": -1}));
    let hist: Vec<(i64, i64)> = h["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["data"]["n"].as_i64().unwrap(), p["offset"].as_i64().unwrap()))
        .collect();
    assert_eq!(hist, got, "history after the restart");
    assert_eq!(h["epoch"], epoch.as_str(), "{h}");
    let sd = js.all(sev("s", CH, "sub.subscribed"));
    eprintln!("{TEST}: the subscription was (re)subscribed {} times; last: {}", sd.len(), sd.last().unwrap());
    assert!(sd.iter().all(|s| s["epoch"] == epoch.as_str()), "one epoch for the subscription: {sd:?}");
    assert_no_panic(&nodes);
    let shape = shape.into_inner().unwrap();
    assert!(shape.is_empty(), "server API errors must be exactly {}:\n{}", api_error(100), shape.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 9. Two Redis servers: channels sharded across them.
// ---------------------------------------------------------------------------------------------

/// The shard Centrifugo picks for `channel` among `n` (jump consistent hash of FNV-1a-64).
fn centrifugo_shard(channel: &str, n: i64) -> usize {
    let mut key: u64 = 0xcbf29ce484222325;
    for b in channel.bytes() {
        key ^= b as u64;
        key = key.wrapping_mul(0x100000001b3);
    }
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// Which of `servers` hold a key (any under the prefix) for `channel`.
fn holders(servers: &[&RedisServer], channel: &str) -> Vec<usize> {
    servers
        .iter()
        .enumerate()
        .filter(|(_, r)| r.keys("gyre-test*").iter().any(|k| k.ends_with(&format!(".{channel}"))))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn channels_sharded_over_two_redis_servers() {
    const TEST: &str = "redis::channels_sharded_over_two_redis_servers";
    let Some(r1) = redis_for(TEST) else { return };
    let r2 = RedisServer::start();
    let nodes = cluster_on(2, &[&r1, &r2], patch());
    let (a, b) = (&nodes[0], &nodes[1]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    js.connect_as("j", b, "u1", false);
    const N: usize = 40;
    let chans: Vec<String> = (0..N).map(|i| format!("hist:s{i}")).collect();
    for ch in &chans[..8] {
        js.sub_wait("j", ch);
    }
    let mut epochs = Vec::new();
    for (i, ch) in chans.iter().enumerate() {
        for k in 1..=3 {
            let r = publish(a, ch, json!({"ch": i, "n": k}));
            assert_eq!(r["offset"], k, "{ch}: {r}");
            if k == 1 {
                epochs.push(r["epoch"].clone());
            }
        }
    }
    // Subscribers on B get them, whichever shard the channel is on.
    for (i, ch) in chans[..8].iter().enumerate() {
        let pubs = js.wait_n(&format!("3 on {ch}"), 3, sev("j", ch, "sub.publication"));
        for (k, p) in (1..=3).zip(&pubs) {
            assert_eq!(p["data"], json!({"ch": i, "n": k}), "{ch}: {p}");
            assert_eq!(p["offset"], k, "{ch}: {p}");
        }
    }
    // History from B for every channel.
    for (i, ch) in chans.iter().enumerate() {
        let h = ok(b, "history", json!({"channel": ch, "limit": -1}));
        let want: Vec<Value> = (1..=3).map(|k| json!({"data": {"ch": i, "n": k}, "offset": k})).collect();
        assert_eq!(h, json!({"publications": want, "offset": 3, "epoch": epochs[i]}), "{ch}");
    }
    // One broadcast to every channel, whichever shard holds it.
    let r = ok(a, "broadcast", json!({"channels": chans, "data": {"n": 4}}));
    let responses = r["responses"].as_array().unwrap_or_else(|| panic!("broadcast: {r}"));
    assert_eq!(responses.len(), N, "{r}");
    for (i, resp) in responses.iter().enumerate() {
        assert_eq!(resp, &json!({"result": {"offset": 4, "epoch": epochs[i]}}), "broadcast to {}", chans[i]);
    }
    for ch in &chans[..8] {
        let pubs = js.wait_n(&format!("the broadcast on {ch}"), 4, sev("j", ch, "sub.publication"));
        assert_eq!((&pubs[3]["data"], &pubs[3]["offset"]), (&json!({"n": 4}), &json!(4)), "{ch}");
    }
    for ch in &chans {
        let h = ok(b, "history", json!({"channel": ch, "limit": 1, "reverse": true}));
        assert_eq!(h["publications"], json!([{"data": {"n": 4}, "offset": 4}]), "{ch}: {h}");
    }
    // Each channel lives on exactly one server, and both servers are used.
    let mut per_server = [0usize; 2];
    for ch in &chans {
        let h = holders(&[&r1, &r2], ch);
        assert_eq!(h.len(), 1, "{ch}'s keys must be on exactly one Redis: on {h:?}");
        per_server[h[0]] += 1;
    }
    assert!(per_server[0] > 0 && per_server[1] > 0, "both shards used: {per_server:?} channels");
    js.settle(Duration::from_millis(200));
    for ch in &chans[..8] {
        assert_eq!(js.count(sev("j", ch, "sub.publication")), 4, "{ch}: no duplicates");
    }
    assert_no_panic(&nodes);
}

#[test]
fn shard_choice_matches_centrifugo() {
    const TEST: &str = "redis::shard_choice_matches_centrifugo";
    let Some(r1) = redis_for(TEST) else { return };
    let r2 = RedisServer::start();
    let nodes = cluster_on(1, &[&r1, &r2], json!({}));
    let chans: Vec<String> = (0..24).map(|i| format!("hist:m{i}")).chain(["plain".into(), "plain2".into()]).collect();
    for ch in &chans {
        publish(&nodes[0], ch, json!({"x": 1}));
    }
    let want: Vec<(String, usize)> = chans.iter().map(|ch| (ch.clone(), centrifugo_shard(ch, 2))).collect();
    assert!(want.iter().any(|w| w.1 == 0) && want.iter().any(|w| w.1 == 1), "the sample covers both shards");
    let got: Vec<(String, usize)> = chans
        .iter()
        .map(|ch| {
            let h = holders(&[&r1, &r2], ch);
            assert_eq!(h.len(), 1, "{ch} on {h:?}");
            (ch.clone(), h[0])
        })
        .collect();
    assert_eq!(got, want, "channel → shard index (order of engine.redis.address)");
    assert_no_panic(&nodes);
}
