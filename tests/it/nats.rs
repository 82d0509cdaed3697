//! The NATS broker (`broker.enabled` + `broker.type: nats`): several `gyre` nodes exchange
//! publications, join/leave and control messages through a real `nats-server` of the test's
//! own, with presence kept by the memory engine (each node its own clients, as in
//! Centrifugo) or in Redis (`engine.type: redis`, shared). NATS keeps nothing: history
//! answers 108 (not available), as with Centrifugo's NATS broker; map channels are each
//! node's own.
//!
//! Without `nats-server` on PATH a test is skipped with a message, unless `CI` is set.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

const SECRET: &str = "nats-test-secret-0123456789";

/// A `nats-server` on a free loopback port; killed on drop (its log printed when the test
/// fails).
struct NatsServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl NatsServer {
    fn start(test: &str) -> Option<NatsServer> {
        let ok = Command::new("nats-server").arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok && !unavailable(test, "`nats-server` is not on PATH", "apt-get install nats-server") {
            return None;
        }
        let log = std::env::temp_dir().join(format!("gyre-it-nats-{}-{}.log", std::process::id(), free_port()));
        let mut n = NatsServer { child: None, port: 0, log };
        for _ in 0..5 {
            n.port = free_port();
            if n.spawn() {
                return Some(n);
            }
        }
        panic!("nats-server did not start; log:\n{}", std::fs::read_to_string(&n.log).unwrap_or_default());
    }

    /// Starts the process on `self.port`; true once it accepts connections.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open the nats log");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("nats-server log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The nodes' config: the NATS broker (a prefix of the test's own), the default namespace
/// open to clients with join/leave, and `extra`.
fn nats_config(nats: &NatsServer, extra: Value) -> Value {
    let mut c = config();
    merge(
        &mut c,
        json!({
            "client": {"token": {"hmac_secret_key": SECRET}},
            "engine": {"type": "memory"},
            "broker": {"enabled": true, "type": "nats", "nats": {"url": nats.url(), "prefix": format!("t{}", free_port())}},
            "channel": {
                "without_namespace": {
                    "allow_subscribe_for_client": true,
                    "allow_publish_for_subscriber": true,
                    "allow_presence_for_subscriber": true,
                    "allow_history_for_subscriber": true,
                    "join_leave": true,
                    "force_push_join_leave": true
                }
            }
        }),
    );
    merge(&mut c, extra);
    c
}

/// `n` nodes on the broker, named node0, node1, ...
fn nodes(n: usize, cfg: &Value) -> Vec<Server> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let mut c = cfg.clone();
                merge(&mut c, json!({"node": {"name": format!("node{i}")}}));
                scope.spawn(move || Server::start(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("starting a gyre node")).collect()
    })
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    jwt(SECRET, json!({"sub": user, "exp": exp}))
}

fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The `result` of a successful API call.
fn ok(s: &Server, method: &str, body: Value) -> Value {
    let r = s.api(method, body.clone());
    assert!(r.get("error").is_none(), "{method} {body} on port {}: {r}", s.port);
    r["result"].clone()
}

fn assert_no_panic(nodes: &[Server]) {
    for s in nodes {
        let log = s.stderr();
        assert!(!log.contains("panicked"), "the node on port {} panicked:\n{log}", s.port);
    }
}

/// The nodes all know each other (`info` lists `n` nodes on every one).
fn wait_mesh(nodes: &[Server]) {
    for s in nodes {
        poll("every node in info", Duration::from_secs(10), || {
            let r = ok(s, "info", json!({}));
            let n = r["nodes"].as_array().map(Vec::len).unwrap_or(0);
            (n == nodes.len()).then_some(()).ok_or(format!("{n} nodes: {r}"))
        });
    }
}

/// Connects client `c` as `user` to `node`; returns its client id.
fn connect_as(agent: &mut Agent, c: &str, node: &Server, user: &str, protobuf: bool) -> String {
    agent.connect(c, node, json!({"token": token(user), "protobuf": protobuf}));
    let e = agent.wait(&format!("{c} connected"), ev(c, "connected"));
    e["client"].as_str().unwrap_or_else(|| panic!("no client id in {e}")).to_string()
}

/// Subscribes and waits for the subscribed event.
fn sub_wait(agent: &mut Agent, c: &str, ch: &str) -> Value {
    agent.sub(c, ch, json!({}));
    agent.wait(&format!("{c} subscribed to {ch}"), sev(c, ch, "sub.subscribed"))
}

#[test]
fn publications_and_join_leave_cross_nodes_through_nats() {
    const TEST: &str = "nats::publications_and_join_leave_cross_nodes_through_nats";
    let Some(nats) = NatsServer::start(TEST) else { return };
    let nodes = nodes(3, &nats_config(&nats, json!({})));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let Some(js) = Agent::start(Sdk::Js, TEST) else { return };
    let Some(py) = Agent::start(Sdk::Py, TEST) else { return };
    let mut agents = [js, py];
    // JSON and protobuf clients of both SDKs on B and C; none on A.
    const CLIENTS: [(usize, &str); 4] = [(0, "jb"), (0, "jc"), (1, "pb"), (1, "pc")];
    let jb = connect_as(&mut agents[0], "jb", b, "u1", false);
    connect_as(&mut agents[0], "jc", c, "u2", true);
    connect_as(&mut agents[1], "pb", b, "u3", false);
    connect_as(&mut agents[1], "pc", c, "u4", true);
    for (i, cl) in CLIENTS {
        sub_wait(&mut agents[i], cl, "fan");
    }

    // API publications on A: no stream position (NATS keeps no history).
    let data = |i: i64| json!({"n": i, "text": format!("message {i} é✓")});
    for i in 1..=30 {
        assert_eq!(ok(a, "publish", json!({"channel": "fan", "data": data(i)})), json!({}), "publish {i}");
    }
    for (i, cl) in CLIENTS {
        let pubs = agents[i].wait_n(&format!("{cl}: 30 publications"), 30, sev(cl, "fan", "sub.publication"));
        for (n, p) in (1..=30).zip(&pubs) {
            assert_eq!(p["data"], data(n), "{cl}: publication {n} in order: {p}");
        }
    }

    // A client publication on B reaches C with the publisher's info.
    assert_eq!(agents[0].call("jb", "publish", "fan", json!({"data": {"from": "jb"}})), Ok(json!({})));
    for (i, cl) in CLIENTS {
        let p = agents[i].wait(&format!("{cl}: the client publication"), |e| {
            sev(cl, "fan", "sub.publication")(e) && e["data"] == json!({"from": "jb"})
        });
        assert_eq!(p["info"]["user"], "u1", "{cl}: {p}");
        assert_eq!(p["info"]["client"], jb.as_str(), "{cl}: {p}");
    }

    // A client joining on A is seen joining (and leaving) on B and C.
    let ja = connect_as(&mut agents[0], "ja", a, "u9", false);
    sub_wait(&mut agents[0], "ja", "fan");
    for (i, cl) in CLIENTS {
        let j = agents[i].wait(&format!("{cl} sees ja join"), |e| {
            sev(cl, "fan", "sub.join")(e) && e["info"]["client"] == ja.as_str()
        });
        assert_eq!(j["info"]["user"], "u9", "{j}");
    }
    agents[0].send(json!({"op": "unsub", "c": "ja", "ch": "fan"}));
    for (i, cl) in CLIENTS {
        agents[i].wait(&format!("{cl} sees ja leave"), |e| {
            sev(cl, "fan", "sub.leave")(e) && e["info"]["client"] == ja.as_str()
        });
    }

    // Exactly once each.
    agents[0].settle(Duration::from_millis(300));
    agents[1].settle(Duration::from_millis(100));
    for (i, cl) in CLIENTS {
        assert_eq!(agents[i].count(sev(cl, "fan", "sub.publication")), 31, "{cl}: duplicates or losses");
        assert_eq!(agents[i].count(ev(cl, "connected")), 1, "{cl}: one connection");
    }
    assert_no_panic(&nodes);
}

#[test]
fn history_not_available_and_presence_per_node() {
    const TEST: &str = "nats::history_not_available_and_presence_per_node";
    let Some(nats) = NatsServer::start(TEST) else { return };
    let nodes = nodes(2, &nats_config(&nats, json!({})));
    let (a, b) = (&nodes[0], &nodes[1]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };

    // History: the API and a client get 108, as from Centrifugo's NATS broker.
    let r = a.api("history", json!({"channel": "room", "limit": 10}));
    assert_eq!(r["error"]["code"], 108, "{r}");
    let r = a.api("history_remove", json!({"channel": "room"}));
    assert_eq!(r["error"]["code"], 108, "{r}");
    // A publication to a channel configured with history still goes out (nothing kept).
    assert_eq!(ok(a, "publish", json!({"channel": "room", "data": {}})), json!({}));

    // Presence is each node's own (memory engine beside the broker).
    let a1 = connect_as(&mut js, "a1", a, "ua", false);
    let b1 = connect_as(&mut js, "b1", b, "ub", false);
    let b2 = connect_as(&mut js, "b2", b, "ub", true);
    for cl in ["a1", "b1", "b2"] {
        sub_wait(&mut js, cl, "room");
    }
    let ids = |s: &Server| -> BTreeSet<String> {
        ok(s, "presence", json!({"channel": "room"}))["presence"]
            .as_object()
            .expect("presence")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(ids(a), BTreeSet::from([a1.clone()]));
    assert_eq!(ids(b), BTreeSet::from([b1.clone(), b2.clone()]));
    assert_eq!(ok(b, "presence_stats", json!({"channel": "room"})), json!({"num_clients": 2, "num_users": 1}));
    assert_eq!(js.call("b1", "history", "room", json!({"limit": 5})), Err(108), "client history");
    assert_no_panic(&nodes);
}

#[test]
fn info_channels_and_actions_cross_nodes() {
    const TEST: &str = "nats::info_channels_and_actions_cross_nodes";
    let Some(nats) = NatsServer::start(TEST) else { return };
    let nodes = nodes(3, &nats_config(&nats, json!({})));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_mesh(&nodes);
    let names: BTreeSet<String> = ok(a, "info", json!({}))["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, BTreeSet::from(["node0".into(), "node1".into(), "node2".into()]));

    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    connect_as(&mut js, "v1", b, "victim", false);
    connect_as(&mut js, "v2", c, "victim", true);
    connect_as(&mut js, "o1", b, "other", false);
    sub_wait(&mut js, "v1", "ch1");
    sub_wait(&mut js, "v2", "ch2");
    sub_wait(&mut js, "o1", "ch1");
    let chans = ok(a, "channels", json!({}));
    assert_eq!(chans["channels"]["ch1"]["num_clients"], 2, "{chans}");
    assert_eq!(chans["channels"]["ch2"]["num_clients"], 1, "{chans}");

    // An API disconnect on A closes the user's connections on B and C, nobody else's.
    assert_eq!(ok(a, "disconnect", json!({"user": "victim"})), json!({}));
    for cl in ["v1", "v2"] {
        let d = js.wait(&format!("{cl} force-disconnected"), ev(cl, "disconnected"));
        assert_eq!(d["code"], 3503, "{d}");
    }
    js.settle(Duration::from_millis(300));
    assert_eq!(js.count(ev("o1", "disconnected")), 0, "o1 stays");
    assert_no_panic(&nodes);
}

#[test]
fn presence_in_redis_beside_nats() {
    const TEST: &str = "nats::presence_in_redis_beside_nats";
    let Some(nats) = NatsServer::start(TEST) else { return };
    if !redis_available(TEST) {
        return;
    }
    let redis = RedisServer::start();
    let extra = json!({"engine": {"type": "redis", "redis": {
        "address": [format!("redis://127.0.0.1:{}", redis.port)], "prefix": format!("p{}", free_port())
    }}});
    let nodes = nodes(2, &nats_config(&nats, extra));
    let (a, b) = (&nodes[0], &nodes[1]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    let a1 = connect_as(&mut js, "a1", a, "ua", false);
    let b1 = connect_as(&mut js, "b1", b, "ub", true);
    sub_wait(&mut js, "a1", "room");
    sub_wait(&mut js, "b1", "room");
    // Presence is shared through Redis: both nodes list both clients.
    for s in [a, b] {
        poll("both clients in presence", Duration::from_secs(3), || {
            let p = ok(s, "presence", json!({"channel": "room"}));
            let ids: BTreeSet<String> =
                p["presence"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            (ids == BTreeSet::from([a1.clone(), b1.clone()])).then_some(()).ok_or(p.to_string())
        });
    }
    // Publications travel through NATS; history is still not available.
    assert_eq!(ok(b, "publish", json!({"channel": "room", "data": {"x": 1}})), json!({}));
    js.wait("a1 gets the publication", sev("a1", "room", "sub.publication"));
    assert_eq!(a.api("history", json!({"channel": "room"}))["error"]["code"], 108);
    // Nothing was published through Redis: its PUB/SUB saw no channel.
    let chans = redis.cmd(&["PUBSUB", "CHANNELS", "*"]);
    assert_eq!(chans, json!([]), "redis PUB/SUB channels");
    assert_no_panic(&nodes);
}

#[test]
fn a_nats_restart_resubscribes() {
    const TEST: &str = "nats::a_nats_restart_resubscribes";
    let Some(mut nats) = NatsServer::start(TEST) else { return };
    let nodes = nodes(2, &nats_config(&nats, json!({})));
    let (a, b) = (&nodes[0], &nodes[1]);
    let Some(mut js) = Agent::start(Sdk::Js, TEST) else { return };
    connect_as(&mut js, "b1", b, "u", false);
    sub_wait(&mut js, "b1", "live");
    assert_eq!(ok(a, "publish", json!({"channel": "live", "data": {"n": 1}})), json!({}));
    js.wait("b1 gets n=1", |e| sev("b1", "live", "sub.publication")(e) && e["data"]["n"] == 1);

    // NATS goes away: a publish fails (100) instead of being lost silently.
    nats.kill();
    poll("publish refused while NATS is down", Duration::from_secs(5), || {
        let r = a.api("publish", json!({"channel": "live", "data": {"n": 0}}));
        (r["error"]["code"] == 100).then_some(()).ok_or(r.to_string())
    });
    // Back on the same port: the nodes reconnect and the subscriber is subscribed again.
    assert!(nats.spawn(), "nats-server restarts on its port");
    poll("publications flow again", Duration::from_secs(15), || {
        let r = a.api("publish", json!({"channel": "live", "data": {"n": 2}}));
        if r.get("error").is_some() {
            return Err(r.to_string());
        }
        js.settle(Duration::from_millis(300));
        let got = js.count(|e| sev("b1", "live", "sub.publication")(e) && e["data"]["n"] == 2);
        (got > 0).then_some(()).ok_or_else(|| "not delivered yet".to_string())
    });
    assert_no_panic(&nodes);
}

/// Map channels with the NATS broker: each node keeps its own, in memory (NATS carries none
/// of their changes), as Centrifugo's default memory map broker does. The SDK scenario runs
/// in full on one node (JSON and protobuf), and the other node knows nothing of its keys.
#[test]
fn map_channels_kept_by_each_node() {
    const TEST: &str = "nats::map_channels_kept_by_each_node";
    if !crate::map_subs::node_ready(TEST) {
        return;
    }
    let Some(nats) = NatsServer::start(TEST) else { return };
    let mut cfg = crate::map_subs::map_config();
    merge(
        &mut cfg,
        json!({"broker": {"enabled": true, "type": "nats", "nats": {"url": nats.url(), "prefix": format!("t{}", free_port())}}}),
    );
    let nodes = nodes(2, &cfg);
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_mesh(&nodes);

    let v = crate::map_subs::run_script_with(a, false, "map:room", Some("mapttl:t"), json!({}));
    crate::map_subs::check_sdk_run(&v, false, true);
    assert_eq!(v["expired"]["updates"][1], json!({"key": "x", "removed": true, "data": null}), "{v}");
    let v = crate::map_subs::run_script_with(b, true, "map:pb", None, json!({}));
    crate::map_subs::check_sdk_run(&v, true, true);

    // Each node's keys are its own.
    let r = a.api("map_publish", json!({"channel": "map:local", "key": "on-a", "data": 1}));
    assert_eq!(r["result"]["offset"], 1, "{r}");
    let r = b.api("map_publish", json!({"channel": "map:local", "key": "on-b", "data": 2}));
    assert_eq!(r["result"]["offset"], 1, "{r}");
    let keys = |s: &Server| -> Vec<String> {
        let r = s.api("map_read_state", json!({"channel": "map:local", "limit": 10}));
        r["result"]["entries"].as_array().expect("entries").iter().map(|e| e["key"].as_str().unwrap().into()).collect()
    };
    assert_eq!(keys(a), ["on-a"]);
    assert_eq!(keys(b), ["on-b"]);
    assert_eq!(a.api("map_stats", json!({"channel": "map:local"})), json!({"result": {"num_keys": 1}}));
    let r = a.api("map_read_stream", json!({"channel": "map:local", "limit": 10}));
    assert_eq!(r["result"]["entries"].as_array().map(Vec::len), Some(1), "{r}");
    // Streams outside map channels stay unavailable on NATS.
    assert_eq!(a.api("history", json!({"channel": "plain:x", "limit": 1}))["error"]["code"], 108);
    assert_no_panic(&nodes);
}
