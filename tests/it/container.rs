//! The container files, against real servers: the image's health check script
//! (`packaging/docker/healthcheck`) says healthy exactly when `/health` answers 200 on the port
//! the `CENTRIFUGO_*` variables name, and the environment `docker-compose.yml` gives its two
//! nodes runs two nodes on one Redis; the `Dockerfile` keeps the layout the Helm chart expects.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{json_lines, Ws};

/// Runs the health check script with `envs`; true when it reports healthy (exit 0).
fn healthy(envs: &[(&str, String)]) -> bool {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("packaging/docker/healthcheck"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CENTRIFUGO_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run bash").status.success()
}

#[test]
fn the_health_check_script_asks_health_on_the_configured_port() {
    let on = Server::start(json!({"health": {"enabled": true}}));
    let port = on.addr().port().to_string();
    assert!(healthy(&[("CENTRIFUGO_HTTP_SERVER_PORT", port.clone())]), "health enabled");
    // The internal port, when named, is where /health lives.
    assert!(!healthy(&[
        ("CENTRIFUGO_HTTP_SERVER_PORT", port.clone()),
        ("CENTRIFUGO_HTTP_SERVER_INTERNAL_PORT", free_port().to_string())
    ]));
    assert!(!healthy(&[("CENTRIFUGO_HTTP_SERVER_PORT", port), ("CENTRIFUGO_HEALTH_HANDLER_PREFIX", "/x".into())]));

    let off = Server::start(json!({}));
    assert!(!healthy(&[("CENTRIFUGO_HTTP_SERVER_PORT", off.addr().port().to_string())]), "health disabled: 404");
    assert!(!healthy(&[("CENTRIFUGO_HTTP_SERVER_PORT", free_port().to_string())]), "nothing listening");

    let internal = free_port();
    let split = Server::start(json!({"health": {"enabled": true}, "http_server": {"internal_port": internal}}));
    assert!(healthy(&[
        ("CENTRIFUGO_HTTP_SERVER_PORT", split.addr().port().to_string()),
        ("CENTRIFUGO_HTTP_SERVER_INTERNAL_PORT", internal.to_string())
    ]));
}

/// The `CENTRIFUGO_*` variables `docker-compose.yml` gives the Gyre nodes.
fn compose_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("docker-compose.yml");
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            k.starts_with("CENTRIFUGO_").then(|| (k.to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

#[test]
fn the_compose_environment_runs_two_nodes_on_one_redis() {
    if !redis_available("the_compose_environment_runs_two_nodes_on_one_redis") {
        return;
    }
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    for needed in ["\"8000:8000\"", "\"8001:8000\"", "image: redis:", "build: ."] {
        assert!(text.contains(needed), "docker-compose.yml lacks {needed}");
    }
    let redis = RedisServer::start();
    let mut env = compose_env();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for k in ["CENTRIFUGO_ENGINE_TYPE", "CENTRIFUGO_ENGINE_REDIS_ADDRESS", "CENTRIFUGO_HTTP_API_KEY"] {
        assert!(names.contains(&k), "{k} in {names:?}");
    }
    // The compose network's `redis` host is this test's redis-server.
    for (k, v) in &mut env {
        if k == "CENTRIFUGO_ENGINE_REDIS_ADDRESS" {
            assert_eq!(v, "redis://redis:6379");
            *v = redis.url();
        }
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let (key, secret) = (get("CENTRIFUGO_HTTP_API_KEY"), get("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY"));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // (An `engine` section of its own keeps the suite's Redis pass from giving each node a
    // prefix of its own: the environment configures the engine, as in the compose file.)
    let a = Server::start_with_env(json!({"engine": {}}), &envs);
    let b = Server::start_with_env(json!({"engine": {}}), &envs);
    for s in [&a, &b] {
        assert_eq!(s.request("GET", "/health", &[]).status, 200, "health on");
        assert_eq!(s.request("GET", "/metrics", &[]).status, 200, "prometheus on");
    }

    // A subscriber on the second node gets a publication made through the first one's API.
    // (Subscribed server-side by its token: the compose file allows no client subscriptions.)
    let mut ws = Ws::open(b.addr());
    ws.send_json(&json!({"id": 1, "connect": {"token": jwt(&secret, json!({"sub": "u", "channels": ["news"]}))}}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let f = ws.frame_until(deadline).expect("the connect reply");
    let reply = json_lines(&f.payload).into_iter().find(|v| v["id"] == 1).expect("the connect reply");
    assert!(reply["connect"]["subs"]["news"].is_object(), "{reply}");
    let r = a.post("/api/publish", br#"{"channel":"news","data":{"from":"a"}}"#, &[("X-API-Key", &key)]);
    assert_eq!(r.json(), json!({"result": {}}));
    loop {
        let f = ws.frame_until(deadline).expect("the publication from the other node");
        if json_lines(&f.payload).iter().any(|v: &Value| v["push"]["pub"]["data"]["from"] == "a") {
            break;
        }
    }
}

#[test]
fn the_dockerfile_keeps_the_layout_of_centrifugos_image() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    for line in [
        "WORKDIR /centrifugo",
        "ARG UID=1000",
        "ARG GID=1000",
        "USER ${UID}:${GID}",
        "RUN ln -s gyre /usr/local/bin/centrifugo",
        "EXPOSE 8000",
        "CMD [\"centrifugo\", \"--health.enabled\"]",
        "HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD [\"gyre-healthcheck\"]",
    ] {
        assert!(text.lines().any(|l| l.trim() == line), "Dockerfile lacks {line:?}");
    }
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    for path in ["target/", "**/node_modules/"] {
        assert!(ignore.lines().any(|l| l == path), ".dockerignore lacks {path}");
    }
}
