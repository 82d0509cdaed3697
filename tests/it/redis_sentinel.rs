//! Redis Sentinel (`engine.redis.sentinel_address`, `sentinel_master_name`): a primary, a
//! replica and a sentinel (`redis-server --sentinel`), two Gyre nodes that find the primary
//! through the sentinel, and a failover forced while publishing: every publication a node
//! acknowledged is in history after it, the nodes follow the new primary, and a subscriber
//! recovers what it missed.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// One command to the Redis (or sentinel) on `port`.
fn cmd(port: u16, args: &[&str]) -> Result<Value, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    s.write_all(&req).map_err(|e| e.to_string())?;
    read_resp(&mut std::io::BufReader::new(s))?
}

/// A sentinel process watching `master` on `master_port` (quorum 1, down after 1 s).
struct Sentinel {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        Self::start_with(master_port, "")
    }

    /// [`Sentinel::start`] with more lines for its config file.
    fn start_with(master_port: u16, extra: &str) -> Sentinel {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("gyre-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n{extra}",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sentinel.log")).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server --sentinel");
        let s = Sentinel { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.master().is_none() {
            assert!(Instant::now() < deadline, "the sentinel did not start: {}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// The master's port as the sentinel sees it.
    fn master(&self) -> Option<u16> {
        let v = cmd(self.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]).ok()?;
        v[1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sentinel log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn node(sentinel: &Sentinel, name: &str) -> Server {
    Server::start(config_with(json!({
        "client": {"insecure": true},
        "node": {"name": name},
        "channel": {"without_namespace": {
            "allow_subscribe_for_client": true, "history_size": 1000, "history_ttl": "300s", "force_recovery": true
        }},
        "engine": {"type": "redis", "redis": {
            "sentinel_address": [format!("127.0.0.1:{}", sentinel.port)], "sentinel_master_name": "mymaster",
            "prefix": "sentinel-test", "connect_timeout": "500ms", "io_timeout": "1s", "wait_replicas": 1
        }},
    })))
}

#[test]
fn failover_loses_no_acknowledged_publication() {
    let test = "failover_loses_no_acknowledged_publication";
    if !redis_available(test) {
        return;
    }
    let primary = RedisServer::start();
    let replica =
        RedisServer::start_with_args(vec!["--replicaof".into(), "127.0.0.1".into(), primary.port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica.cmd(&["INFO", "replication"]).as_str().unwrap_or("").contains("master_link_status:up") {
        assert!(Instant::now() < deadline, "the replica did not sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sentinel = Sentinel::start(primary.port);
    assert_eq!(sentinel.master(), Some(primary.port));
    // The sentinel must know the replica before it can fail over to it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while cmd(sentinel.port, &["SENTINEL", "REPLICAS", "mymaster"])
        .map(|v| v.as_array().map_or(0, Vec::len))
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the sentinel did not find the replica: {}", sentinel.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let a = node(&sentinel, "a");
    let b = node(&sentinel, "b");
    let Some(mut agent) = Agent::start(Sdk::Js, test) else { return };
    agent.connect("c", &b, json!({}));
    agent.wait("connected", ev("c", "connected"));
    agent.sub("c", "feed", json!({}));
    agent.wait("subscribed", sev("c", "feed", "sub.subscribed"));

    let mut acked = Vec::new();
    let mut failed = 0;
    let publish = |n: i64| -> bool {
        let (status, body, _) =
            a.api_within("publish", json!({"channel": "feed", "data": {"n": n}}), Duration::from_secs(5));
        status == 200 && body.get("error").is_none()
    };
    let mut n = 0;
    for _ in 0..20 {
        n += 1;
        assert!(publish(n), "publish {n} before the failover");
        acked.push(n);
    }
    let r = cmd(sentinel.port, &["SENTINEL", "FAILOVER", "mymaster"]);
    assert!(r.is_ok(), "SENTINEL FAILOVER: {r:?}");
    // Publish through the failover until the nodes write to the new primary.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after_switch = 0;
    while after_switch < 20 {
        assert!(Instant::now() < deadline, "no failover within 30 s:\n{}\n{}", a.stderr(), sentinel.log());
        n += 1;
        if publish(n) {
            acked.push(n);
            if sentinel.master() == Some(replica.port) {
                after_switch += 1;
            }
        } else {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sentinel.master(), Some(replica.port));
    // The old primary becomes a replica of the new one (it drops whatever was written to it
    // after the switch): only then is history final.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = primary.cmd(&["INFO", "replication"]);
        let info = info.as_str().unwrap_or("");
        if info.contains("role:slave") && info.contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "the old primary did not become a replica:\n{info}\n{}", sentinel.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every acknowledged publication is in history, read through either node.
    for s in [&a, &b] {
        let h = s.api("history", json!({"channel": "feed", "limit": -1}));
        let got: Vec<i64> =
            h["result"]["publications"].as_array().unwrap().iter().map(|p| p["data"]["n"].as_i64().unwrap()).collect();
        let missing: Vec<i64> = acked.iter().copied().filter(|n| !got.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "acknowledged but lost: {missing:?} ({failed} publishes failed during the failover)"
        );
    }
    // The subscriber ends up with every acknowledged publication (recovered after the switch).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Vec<i64> = ns(&agent.all(sev("c", "feed", "sub.publication")));
        if acked.iter().all(|n| seen.contains(n)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber misses {:?}",
            acked.iter().filter(|n| !seen.contains(n)).collect::<Vec<_>>()
        );
        agent.settle(Duration::from_millis(200));
    }
    assert!(
        a.stderr().contains("reconnecting to the current master") || a.stderr().contains("redis connection lost"),
        "{}",
        a.stderr()
    );
}

/// Sentinel and master reached over TLS only (`sentinel_tls`, `tls`): the sentinel listens
/// with a TLS port and talks TLS to the master (`tls-replication yes`).
#[test]
fn sentinel_and_master_over_tls() {
    let test = "sentinel_and_master_over_tls";
    if !redis_available(test) {
        return;
    }
    let p = crate::tls::pki();
    let path = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let master_tls = free_port();
    let _master = RedisServer::start_with_args(crate::redis_tls::redis_tls_args(&p, master_tls, false));
    let sentinel_tls = free_port();
    let extra = format!(
        "tls-port {sentinel_tls}\ntls-replication yes\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
         tls-client-cert-file {}\ntls-client-key-file {}\ntls-auth-clients no\n",
        path(&p.cert),
        path(&p.key),
        path(&p.ca),
        path(&p.client_cert),
        path(&p.client_key)
    );
    let sentinel = Sentinel::start_with(master_tls, &extra);
    assert_eq!(sentinel.master(), Some(master_tls));
    let ca = json!({"enabled": true, "server_ca_pem": path(&p.ca)});
    let cfg = config_with(json!({
        "client": {"insecure": true},
        "channel": {"without_namespace": {
            "allow_subscribe_for_client": true, "history_size": 10, "history_ttl": "300s"
        }},
        "engine": {"type": "redis", "redis": {
            "sentinel_address": [format!("127.0.0.1:{sentinel_tls}")], "sentinel_master_name": "mymaster",
            "sentinel_tls": ca, "tls": ca,
            "prefix": "sentinel-tls", "connect_timeout": "500ms", "io_timeout": "1s"
        }},
    }));
    let a = Server::start(cfg.clone());
    let b = Server::start(cfg);
    let Some(mut agent) = Agent::start(Sdk::Js, test) else { return };
    agent.connect("c", &b, json!({}));
    agent.wait("connected", ev("c", "connected"));
    agent.sub("c", "news", json!({}));
    agent.wait("subscribed", sev("c", "news", "sub.subscribed"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a.api("publish", json!({"channel": "news", "data": {"n": 1}}));
        if r.get("error").is_none() {
            assert_eq!(r["result"]["offset"], 1, "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "publish through the TLS sentinel: {r}\n{}", a.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let pb = agent.wait("the publication", sev("c", "news", "sub.publication"));
    assert_eq!(pb["data"]["n"], 1, "{pb}");
    let h = b.api("history", json!({"channel": "news", "limit": 10}));
    assert_eq!(h["result"]["publications"][0]["data"]["n"], 1, "{h}");
}
