//! Deploying as Centrifugo is deployed: the official Helm chart's command lines (the chart v13
//! for Centrifugo v6, v12 for v6.0, v11 for v5) with the variables Kubernetes sets for the chart's Services,
//! the internal port's split of the endpoints, and SIGHUP.
//!
//! The chart mounts its ConfigMap as `config.json` in the working directory (no `--config`)
//! and passes secrets as `CENTRIFUGO_*` variables; Kubernetes adds `CENTRIFUGO_PORT=tcp://...`
//! and friends for the Services `centrifugo`, `centrifugo-internal`, `centrifugo-grpc-api` and
//! `centrifugo-uni-grpc`.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{json_lines, Ws, SAMPLE_KEY, TEXT};

const SECRET: &str = "deploy-token-secret";
const API_KEY: &str = "deploy-api-key";

static PODS: AtomicUsize = AtomicUsize::new(0);

/// The chart's major version: the command line it renders.
#[derive(Clone, Copy, PartialEq)]
enum Chart {
    /// Centrifugo v5.4.
    V11,
    /// Centrifugo v6.0 to v6.5.
    V12,
    /// Centrifugo v6.6 and later.
    V13,
}

#[derive(Clone, Copy)]
struct Ports {
    external: u16,
    internal: u16,
    grpc: u16,
    uni_grpc: u16,
}

/// The arguments the chart's deployment template renders.
fn helm_args(chart: Chart, p: Ports) -> Vec<String> {
    let mut args: Vec<String> = if chart == Chart::V11 {
        // Chart 11.8 (Centrifugo v5.4).
        vec![
            "--health".into(),
            "--prometheus".into(),
            "--port".into(),
            p.external.to_string(),
            "--internal_port".into(),
            p.internal.to_string(),
            "--grpc_api".into(),
            "--grpc_api_port".into(),
            p.grpc.to_string(),
            "--uni_grpc_port".into(),
            p.uni_grpc.to_string(),
        ]
    } else {
        // Chart 13 (Centrifugo v6).
        vec![
            "--health.enabled".into(),
            "--prometheus.enabled".into(),
            "--http_server.port".into(),
            p.external.to_string(),
            "--http_server.internal_port".into(),
            p.internal.to_string(),
            "--grpc_api.port".into(),
            p.grpc.to_string(),
            "--uni_grpc.port".into(),
            p.uni_grpc.to_string(),
        ]
    };
    if chart == Chart::V12 {
        args.push("--grpc_api.enabled".into());
    }
    args
}

/// What Kubernetes sets for the chart's four Services (their ports as in the chart's values,
/// not the ones this test listens on), and the chart's secrets in the version's names.
fn pod_env(chart: Chart) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let services = [("", "10.0.0.1", 8000, "EXTERNAL"), ("INTERNAL_", "10.0.0.2", 9000, "INTERNAL")];
    let more = [("GRPC_API_", "10.0.0.3", 10000, "GRPC"), ("UNI_GRPC_", "10.0.0.4", 11000, "UNI_GRPC")];
    for (svc, ip, port, name) in services.into_iter().chain(more) {
        let p = format!("CENTRIFUGO_{svc}");
        env.push((format!("{p}SERVICE_HOST"), ip.to_string()));
        env.push((format!("{p}SERVICE_PORT"), port.to_string()));
        env.push((format!("{p}SERVICE_PORT_{name}"), port.to_string()));
        env.push((format!("{p}PORT"), format!("tcp://{ip}:{port}")));
        env.push((format!("{p}PORT_{port}_TCP"), format!("tcp://{ip}:{port}")));
        env.push((format!("{p}PORT_{port}_TCP_PROTO"), "tcp".into()));
        env.push((format!("{p}PORT_{port}_TCP_PORT"), port.to_string()));
        env.push((format!("{p}PORT_{port}_TCP_ADDR"), ip.to_string()));
    }
    let secrets = if chart == Chart::V11 {
        [
            ("CENTRIFUGO_API_KEY", API_KEY),
            ("CENTRIFUGO_TOKEN_HMAC_SECRET_KEY", SECRET),
            ("CENTRIFUGO_GRPC_API_KEY", "g"),
        ]
    } else {
        [
            ("CENTRIFUGO_HTTP_API_KEY", API_KEY),
            ("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", SECRET),
            ("CENTRIFUGO_GRPC_API_KEY", "g"),
        ]
    };
    env.extend(secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.push(("CENTRIFUGO_ADMIN_PASSWORD".into(), "pw".into()));
    env.push(("CENTRIFUGO_ADMIN_SECRET".into(), "sec".into()));
    env
}

/// A `gyre` process started as the chart starts Centrifugo.
struct Pod {
    child: Child,
    dir: PathBuf,
    ports: Ports,
}

impl Pod {
    /// The chart's ConfigMap holds `config` (clients may subscribe to channels without namespace).
    fn start(chart: Chart, mut config: Value) -> Pod {
        merge(&mut config, json!({"channel": {"without_namespace": {"allow_subscribe_for_client": true}}}));
        let ports = Ports { external: free_port(), internal: free_port(), grpc: free_port(), uni_grpc: free_port() };
        let dir = std::env::temp_dir().join(format!(
            "gyre-deploy-{}-{}",
            std::process::id(),
            PODS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let mut cmd = Command::new(server_binary());
        cmd.args(helm_args(chart, ports))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(pod_env(chart));
        if let Ok(driver) = std::env::var("GYRE_TEST_DRIVER") {
            cmd.env("GYRE_DRIVER", driver);
        }
        let mut pod = Pod { child: cmd.spawn().expect("spawn gyre"), dir, ports };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(pod.accepts(ports.external) && pod.accepts(ports.internal)) {
            if let Ok(Some(st)) = pod.child.try_wait() {
                panic!("gyre exited with {st}:\n{}", pod.stderr());
            }
            assert!(Instant::now() < deadline, "gyre did not listen on both ports:\n{}", pod.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        pod
    }

    fn accepts(&self, port: u16) -> bool {
        TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).is_ok()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn publish(&self, port: u16, channel: &str, data: Value) -> Response {
        let body = json!({"channel": channel, "data": data}).to_string();
        http(port, "POST", "/api/publish", body.as_bytes(), &[("X-API-Key", API_KEY)])
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("gyre stderr:\n{}", self.stderr());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn http(port: u16, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
    let mut c = Conn::new(addr(port));
    c.send(&request(method, path, body, headers));
    c.read_response().unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// A WebSocket client connected with a token and subscribed to `channel`.
fn subscriber(port: u16, channel: &str) -> Ws {
    let mut ws = Ws::open(addr(port));
    ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let token = jwt(SECRET, json!({"sub": "u1"}));
    ws.send_json(&json!({"id": 1, "connect": {"token": token}}));
    let reply = next_message(&mut ws);
    assert!(reply["connect"]["client"].is_string(), "connect: {reply}");
    ws.send_json(&json!({"id": 2, "subscribe": {"channel": channel}}));
    let reply = next_message(&mut ws);
    assert_eq!(reply["id"], 2, "subscribe: {reply}");
    assert!(reply.get("error").is_none(), "subscribe: {reply}");
    ws
}

/// The next JSON message (pings answered).
fn next_message(ws: &mut Ws) -> Value {
    loop {
        let f = ws.frame().expect("a frame");
        assert_eq!(f.op, TEXT, "{f:?}");
        for m in json_lines(&f.payload) {
            if m.as_object().is_some_and(|o| o.is_empty()) {
                ws.send_json(&json!({}));
                continue;
            }
            return m;
        }
    }
}

fn publication(ws: &mut Ws) -> Value {
    loop {
        let m = next_message(ws);
        if let Some(p) = m.get("push").and_then(|p| p.get("pub")) {
            return p["data"].clone();
        }
    }
}

/// The admin page's live tail, from the port the page is served on.
fn admin_tail_on(port: u16, pod: &Pod) {
    let r = http(port, "POST", "/admin/auth", b"password=pw", &[("Content-Type", "application/x-www-form-urlencoded")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = format!("token {}", r.json()["token"].as_str().unwrap());
    let r = http(port, "POST", "/admin/tail", br#"{"channel":"tailed"}"#, &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let s = TcpStream::connect(addr(port)).unwrap();
    let mut ws = Ws::upgrade(s, "/admin/connection/websocket", SAMPLE_KEY, &[]).expect("live tail upgrade");
    ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ws.send_json(&json!({"id": 1, "connect": {"token": r.json()["token"]}}));
    let reply = next_message(&mut ws);
    assert!(reply["connect"]["subs"]["tailed"].is_object(), "{reply}");
    assert_eq!(pod.publish(port, "tailed", json!("t")).status, 200);
    assert_eq!(publication(&mut ws), json!("t"));
}

/// The chart's command line and the pod's variables: clients on the external port, the API,
/// /health and /metrics on the internal one and nowhere else.
fn helm_chart_starts_gyre(chart: Chart) {
    let pod = Pod::start(chart, json!({"admin": {"enabled": true}}));
    let Ports { external, internal, .. } = pod.ports;
    let mut ws = subscriber(external, "news");
    let r = pod.publish(internal, "news", json!({"n": 1}));
    assert_eq!((r.status, r.json()), (200, json!({"result": {}})), "API on the internal port");
    assert_eq!(publication(&mut ws), json!({"n": 1}));
    let r = pod.publish(external, "news", json!({"n": 2}));
    assert_eq!(r.status, 404, "API on the external port");
    for path in ["/health", "/metrics"] {
        assert_eq!(http(internal, "GET", path, b"", &[]).status, 200, "{path} on the internal port");
        assert_eq!(http(external, "GET", path, b"", &[]).status, 404, "{path} on the external port");
    }
    assert_eq!(http(internal, "GET", "/", b"", &[]).status, 200, "admin on the internal port");
    assert_eq!(http(external, "GET", "/", b"", &[]).status, 404, "admin on the external port");
    assert_eq!(Ws::try_open(addr(internal)).err(), Some(404), "clients on the internal port");
    admin_tail_on(internal, &pod);
    // The v11 and v12 charts turn the gRPC API on.
    assert_eq!(pod.accepts(pod.ports.grpc), chart != Chart::V13, "gRPC API port");
    let log = pod.stderr();
    assert!(!log.contains("environment variable"), "the pod's variables are no options:\n{log}");
    assert!(!log.contains("WARN"), "{log}");
    assert!(log.contains(&format!("serving clients endpoints on http://0.0.0.0:{external}")), "{log}");
    assert!(
        log.contains(&format!("serving api, admin, prometheus, health endpoints on http://0.0.0.0:{internal}")),
        "{log}"
    );
}

#[test]
fn helm_chart_v6_command_line() {
    helm_chart_starts_gyre(Chart::V13);
}

#[test]
fn helm_chart_v12_command_line() {
    helm_chart_starts_gyre(Chart::V12);
}

#[test]
fn helm_chart_v5_command_line() {
    helm_chart_starts_gyre(Chart::V11);
}

/// `http_api.external` and `admin.external` serve theirs on the external port too... and only
/// there, as Centrifugo does.
#[test]
fn external_switches() {
    let pod =
        Pod::start(Chart::V13, json!({"http_api": {"external": true}, "admin": {"enabled": true, "external": true}}));
    let Ports { external, internal, .. } = pod.ports;
    assert_eq!(pod.publish(external, "news", json!(1)).status, 200);
    assert_eq!(pod.publish(internal, "news", json!(1)).status, 404);
    assert_eq!(http(external, "GET", "/", b"", &[]).status, 200);
    assert_eq!(http(internal, "GET", "/", b"", &[]).status, 404);
    admin_tail_on(external, &pod);
    assert_eq!(http(internal, "GET", "/health", b"", &[]).status, 200);
    assert_eq!(http(external, "GET", "/health", b"", &[]).status, 404);
}

/// SIGHUP reloads the channel options and token settings as Centrifugo does, without
/// dropping a client: a namespace added to the file is usable at once, a token audience set
/// there is required at once; an option a reload does not apply is named, a file that does
/// not load or that turns on a proxy the node lacks changes nothing. SIGTERM still stops it.
#[test]
fn sighup_reloads_channels_and_tokens() {
    let mut pod = Pod::start(Chart::V13, json!({}));
    let Ports { external, internal, .. } = pod.ports;
    let mut ws = subscriber(external, "news");
    let config = pod.dir.join("config.json");
    // Subscribing to `chat:1` as a fresh client: the subscribe reply.
    let subscribe = |token: &str| -> Value {
        let mut c = Ws::open(addr(external));
        c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.send_json(&json!({"id": 1, "connect": {"token": token}}));
        let f = c.frame().expect("a frame");
        if f.op == 8 {
            // Refused with a disconnect: its code.
            return json!({"disconnect": u16::from_be_bytes([f.payload[0], f.payload[1]])});
        }
        let reply = json_lines(&f.payload).into_iter().next().expect("the connect reply");
        if reply.get("error").is_some() {
            return reply;
        }
        c.send_json(&json!({"id": 2, "subscribe": {"channel": "chat:1"}}));
        next_message(&mut c)
    };
    let plain = jwt(SECRET, json!({"sub": "u2"}));
    let with_aud = jwt(SECRET, json!({"sub": "u2", "aud": "gyre-app"}));
    assert_eq!(subscribe(&plain)["error"]["code"], 102, "no `chat` namespace yet");
    // Each signal is sent once the previous one is answered (pending signals merge).
    let mut sent = 0;
    let mut hup = |pod: &Pod, edit: &str, said: &str| {
        std::fs::write(&config, edit).unwrap();
        pod.signal(libc::SIGHUP);
        sent += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while pod.stderr().matches("signal received: SIGHUP").count() < sent || pod.stderr().matches(said).count() < 1 {
            assert!(Instant::now() < deadline, "no SIGHUP log line {said:?}:\n{}", pod.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let reloaded = "configuration successfully reloaded";
    let chat = r#"{"channel": {"without_namespace": {"allow_subscribe_for_client": true},
        "namespaces": [{"name": "chat", "allow_subscribe_for_client": true}]}"#;
    hup(&pod, &format!("{chat}}}"), reloaded);
    let r = subscribe(&plain);
    assert!(r.get("error").is_none() && r["id"] == 2, "the new namespace after SIGHUP: {r}");

    // Token settings: an audience is required from now on.
    hup(
        &pod,
        &format!(r#"{chat}, "client": {{"token": {{"audience": "gyre-app"}}, "ping_interval": "30s"}}}}"#),
        "client.ping_interval",
    );
    assert!(
        pod.stderr().contains("options changed since start (applied on restart): client.ping_interval"),
        "{}",
        pod.stderr()
    );
    assert_eq!(pod.stderr().matches(reloaded).count(), 2, "{}", pod.stderr());
    assert_eq!(subscribe(&plain)["disconnect"], 3500, "a token without the audience is refused");
    let r = subscribe(&with_aud);
    assert!(r.get("error").is_none() && r["id"] == 2, "a token with the audience: {r}");

    // A file that does not load, and one that turns on a proxy the node lacks: nothing changes.
    hup(&pod, "{not json", "error reading config");
    let proxied = r#"{"channel": {"namespaces": [{"name": "chat", "subscribe_proxy_enabled": true}],
        "proxy": {"subscribe": {"endpoint": "http://127.0.0.1:1/sub"}}}}"#;
    hup(&pod, proxied, "error reloading: the new channel options use proxies this node did not start with");
    let r = subscribe(&with_aud);
    assert!(r.get("error").is_none() && r["id"] == 2, "the last good reload stays in effect: {r}");

    assert!(pod.child.try_wait().unwrap().is_none(), "gyre exited on SIGHUP:\n{}", pod.stderr());
    let r = pod.publish(internal, "news", json!({"after": "SIGHUP"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(publication(&mut ws), json!({"after": "SIGHUP"}), "the client stays connected");
    pod.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = pod.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "gyre did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(pod.stderr().contains("signal received: SIGTERM"), "{}", pod.stderr());
}

/// `pid_file`: the process id is written at start-up (relative paths from the working
/// directory) and the file removed when the server stops cleanly.
#[test]
fn pid_file_is_written_and_removed() {
    let mut pod = Pod::start(Chart::V13, json!({"pid_file": "gyre.pid"}));
    let path = pod.dir.join("gyre.pid");
    let pid = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), pod.stderr()));
    assert_eq!(pid.trim(), pod.child.id().to_string());
    pod.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gyre did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!path.exists(), "the pid file is removed on a clean stop");
}
