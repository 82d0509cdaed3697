//! TLS listeners (`http_server.tls`, `tls_external`, `internal_tls`, `grpc_api.tls`,
//! `uni_grpc.tls`) with certificates made by `openssl` for the test: the HTTP server API by
//! curl and by the `cent` client, centrifuge-js and centrifuge-python over `wss://`,
//! centrifuge-js over HTTP-streaming on `https://`, the gRPC server API and the
//! unidirectional gRPC stream from Python, client certificates (mutual TLS), plain requests to
//! a TLS port, and configurations that must be refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

const KEY: &str = "tls-api-key";

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A certificate authority, a server certificate for `localhost` and 127.0.0.1, and a client
/// certificate, all signed by the authority.
pub(crate) struct Pki {
    dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub(crate) fn pki() -> Pki {
    let dir =
        std::env::temp_dir().join(format!("gyre-tls-{}-{}", std::process::id(), DIRS.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=Gyre test CA", "-keyout", "ca.key", "-out", "ca.pem"];
    ca.extend(ec);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&dir, &ca);
    for (name, cn, ext) in [
        ("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "gyre-test-client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extf) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        let subj = format!("/CN={cn}");
        let mut req = vec!["req", "-subj", subj.as_str(), "-keyout", key.as_str(), "-out", csr.as_str()];
        req.extend(ec);
        openssl(&dir, &req);
        std::fs::write(dir.join(&extf), ext).unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &extf,
            ],
        );
    }
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        dir,
    }
}

/// A listener's `tls` section with the certificate as a file path, the key as base64 of its
/// PEM (both forms Centrifugo reads).
fn tls_section(p: &Pki) -> Value {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&p.key).unwrap());
    json!({"enabled": true, "cert_pem": p.cert.to_str().unwrap(), "key_pem": key})
}

fn base_config(patch: Value) -> Value {
    let mut c = config_with(json!({
        "http_api": {"key": KEY},
        "client": {"insecure": true},
        "http_stream": {"enabled": true},
    }));
    merge(&mut c, patch);
    c
}

/// curl with the test CA (and `extra` arguments) against `url`: (exit status, body).
fn curl(p: &Pki, url: &str, extra: &[&str]) -> (bool, String, String) {
    let out: Output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", p.ca.to_str().unwrap()])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn api_over_tls(p: &Pki, port: u16, method: &str, body: &Value) -> Value {
    use std::io::Write;
    let url = format!("https://127.0.0.1:{port}/api/{method}");
    // The body through stdin: a large one does not fit in an argument.
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", p.ca.to_str().unwrap(), "--data-binary", "@-"])
        .args(["-H", &format!("X-API-Key: {KEY}"), &url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    child.stdin.take().unwrap().write_all(body.to_string().as_bytes()).unwrap();
    let o = child.wait_with_output().expect("curl output");
    let (ok, out, err) =
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr));
    assert!(ok, "curl {url}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} over TLS: {e}: {out:?}"))
}

#[test]
fn tls_listener_serves_the_api_sdks_and_streams() {
    let p = pki();
    let s = Server::start(base_config(json!({"http_server": {"tls": tls_section(&p)}})));
    let port = s.port;

    // The new-style API and a pipelined legacy request over TLS.
    let info = api_over_tls(&p, port, "info", &json!({}));
    assert_eq!(info["result"]["nodes"].as_array().map(|n| n.len()), Some(1), "{info}");
    let lines = "{\"method\":\"publish\",\"params\":{\"channel\":\"warmup\",\"data\":{}}}\n\
                 {\"method\":\"info\",\"params\":{}}\n";
    let (ok, out, err) = curl(
        &p,
        &format!("https://127.0.0.1:{port}/api"),
        &["-H", &format!("Authorization: apikey {KEY}"), "--data-binary", lines],
    );
    assert!(ok, "legacy over TLS: {err}");
    let replies = parse_lines(out.as_bytes());
    assert_eq!(replies.len(), 2, "{out}");
    assert!(replies[0].get("error").is_none() && replies[1]["result"]["nodes"].is_array(), "{out}");

    // Plain HTTP to the TLS port gets no HTTP answer, and the server keeps serving.
    let mut c = Conn::new(s.addr());
    let _ = c.send_lossy(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.read_response().is_err(), "a plain request must not be answered on a TLS port");
    assert!(api_over_tls(&p, port, "info", &json!({}))["result"].is_object());

    // The SDKs over wss:// (and centrifuge-js over HTTP-streaming on https://), trusting the
    // test CA through their runtimes' usual variables.
    let ca = p.ca.to_str().unwrap();
    let big = "x".repeat(200_000);
    for sdk in [Sdk::Js, Sdk::Py] {
        let envs = [("NODE_EXTRA_CA_CERTS", ca), ("SSL_CERT_FILE", ca)];
        let Some(mut a) = Agent::start_with_env(sdk, "tls_listener_serves_the_api_sdks_and_streams", &envs) else {
            return;
        };
        let url = format!("wss://127.0.0.1:{port}/connection/websocket");
        a.send(json!({"op": "connect", "c": "a", "url": url}));
        a.wait("connected over wss", ev("a", "connected"));
        let ch = format!("tls-{sdk:?}");
        a.sub("a", &ch, json!({}));
        a.wait("subscribed over wss", sev("a", &ch, "sub.subscribed"));
        for data in [json!({"n": 1}), json!({"n": 2, "big": big}), json!({"n": 3})] {
            let r = api_over_tls(&p, port, "publish", &json!({"channel": ch, "data": data}));
            assert!(r.get("error").is_none(), "{r}");
        }
        let pubs = a.wait_n("3 publications over wss", 3, sev("a", &ch, "sub.publication"));
        assert_eq!(ns(&pubs), vec![1, 2, 3]);
        assert_eq!(pubs[1]["data"]["big"].as_str().map(str::len), Some(big.len()), "the large publication whole");
        assert_eq!(a.call("a", "publish", &ch, json!({"data": {"n": 4}})), Ok(json!({})));
        a.wait_n("the client's publication", 4, sev("a", &ch, "sub.publication"));

        if sdk == Sdk::Js {
            let transports = json!([{"transport": "http_stream", "endpoint": format!("https://127.0.0.1:{port}/connection/http_stream")}]);
            a.send(json!({"op": "connect", "c": "h", "transports": transports,
                          "emulationEndpoint": format!("https://127.0.0.1:{port}/emulation")}));
            let connected = a.wait("connected over https streaming", ev("h", "connected"));
            assert_eq!(connected["transport"], "http_stream", "{connected}");
            a.sub("h", "tls-stream", json!({}));
            a.wait("subscribed over https streaming", sev("h", "tls-stream", "sub.subscribed"));
            api_over_tls(&p, port, "publish", &json!({"channel": "tls-stream", "data": {"n": 7}}));
            let pubs = a.wait_n("a publication over https streaming", 1, sev("h", "tls-stream", "sub.publication"));
            assert_eq!(ns(&pubs), vec![7]);
        }
    }

    // The `cent` client over https, trusting the CA through requests' variable.
    let Ok(python) = pyenv_python() else { return };
    let script = "import sys\nfrom cent import Client, PublishRequest\n\
                  c = Client(sys.argv[1], sys.argv[2])\n\
                  r = c.publish(PublishRequest(channel='cent-tls', data={'n': 1}))\n\
                  print('offset', r.offset)\n";
    let out = Command::new(python)
        .args(["-c", script, &format!("https://127.0.0.1:{port}/api"), KEY])
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run cent");
    assert!(out.status.success(), "cent over https: {}", String::from_utf8_lossy(&out.stderr));
    assert!(api_over_tls(&p, port, "info", &json!({}))["result"].is_object(), "still serving");
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
}

#[test]
fn internal_port_follows_tls_external_and_internal_tls() {
    let p = pki();
    let health = |scheme: &str, port: u16| {
        let (ok, out, _) = curl(&p, &format!("{scheme}://127.0.0.1:{port}/health"), &[]);
        ok && out.contains("{}")
    };
    for (patch, internal_scheme) in [
        (json!({}), "https"),
        (json!({"tls_external": true}), "http"),
        (json!({"tls_external": true, "internal_tls": tls_section(&p)}), "https"),
    ] {
        let internal = free_port();
        let mut hs = json!({"tls": tls_section(&p), "internal_port": internal.to_string()});
        merge(&mut hs, patch.clone());
        let s = Server::start(base_config(json!({"http_server": hs, "health": {"enabled": true}})));
        assert!(health(internal_scheme, internal), "{patch}: /health over {internal_scheme} on the internal port");
        let other = if internal_scheme == "https" { "http" } else { "https" };
        assert!(!health(other, internal), "{patch}: /health over {other} on the internal port must fail");
        // The external port is under TLS in every case, and serves no health there.
        let (ok, _, err) = curl(&p, &format!("https://127.0.0.1:{}/connection/websocket", s.port), &[]);
        assert!(ok, "{patch}: external port over https: {err}");
        assert!(s.stderr().contains(&format!("{internal_scheme}://")), "the start-up log names the scheme");
    }
}

#[test]
fn client_certificates_required_with_client_ca() {
    let p = pki();
    let mut tls = tls_section(&p);
    tls["client_ca_pem"] = json!(std::fs::read_to_string(&p.ca).unwrap());
    let s = Server::start(base_config(json!({"http_server": {"tls": tls}})));
    let url = format!("https://127.0.0.1:{}/api/info", s.port);
    let key_header = format!("X-API-Key: {KEY}");
    let (ok, _, _) = curl(&p, &url, &["-H", &key_header, "-d", "{}"]);
    assert!(!ok, "a client without a certificate must be refused");
    let (cert, key) = (p.client_cert.to_str().unwrap(), p.client_key.to_str().unwrap());
    let (ok, out, err) = curl(&p, &url, &["-H", &key_header, "-d", "{}", "--cert", cert, "--key", key]);
    assert!(ok && out.contains("\"nodes\""), "with the client certificate: {err} {out}");
    // A certificate from another authority is refused too.
    let other = pki();
    let (cert, key) = (other.client_cert.to_str().unwrap(), other.client_key.to_str().unwrap());
    let (ok, _, _) = curl(&p, &url, &["-H", &key_header, "-d", "{}", "--cert", cert, "--key", key]);
    assert!(!ok, "a client certificate of another CA must be refused");
}

#[test]
fn grpc_api_and_uni_grpc_over_tls() {
    let test = "grpc_api_and_uni_grpc_over_tls";
    let python = match pyenv_python() {
        Ok(p) => p,
        Err((what, how)) => {
            unavailable(test, &what, how);
            return;
        }
    };
    let p = pki();
    for mutual in [false, true] {
        let mut tls = tls_section(&p);
        if mutual {
            tls["client_ca_pem"] = json!(p.ca.to_str().unwrap());
        }
        let (api, uni) = (free_port(), free_port());
        let _s = Server::start(base_config(json!({
            "grpc_api": {"enabled": true, "port": api, "key": KEY, "tls": tls.clone()},
            "uni_grpc": {"enabled": true, "port": uni, "tls": tls},
        })));
        let mut cmd = Command::new(&python);
        cmd.arg(repo_root().join("tests/python/tls_grpc.py"))
            .arg(repo_root().join("proto"))
            .arg(format!("localhost:{api}"))
            .arg(format!("localhost:{uni}"))
            .arg(KEY)
            .arg(&p.ca);
        if mutual {
            cmd.arg(&p.client_cert).arg(&p.client_key);
        }
        for v in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy"] {
            cmd.env_remove(v);
        }
        let out = cmd.env("PYTHONDONTWRITEBYTECODE", "1").output().expect("run tls_grpc.py");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "tls_grpc.py (mutual: {mutual}):\n{stdout}\n{stderr}");
        assert!(stdout.contains("checks passed"), "{stdout}");
    }
}

#[test]
fn unusable_tls_options_stop_the_start_up() {
    let p = pki();
    let good = tls_section(&p);
    let cases = [
        (
            json!({"enabled": true, "cert_pem": p.cert.to_str().unwrap()}),
            "http_server.tls: cert_pem and key_pem are required",
        ),
        (
            json!({"enabled": true, "cert_pem": "/nonexistent/cert.pem", "key_pem": good["key_pem"]}),
            "http_server.tls.cert_pem",
        ),
        (
            json!({"enabled": true, "cert_pem": p.cert.to_str().unwrap(), "key_pem": p.client_key.to_str().unwrap()}),
            "http_server.tls: cert_pem and key_pem",
        ),
        (
            json!({"enabled": true, "cert_pem": p.cert.to_str().unwrap(), "key_pem": p.key.to_str().unwrap(), "client_ca_pem": p.key.to_str().unwrap()}),
            "http_server.tls.client_ca_pem",
        ),
    ];
    for (tls, expect) in cases {
        let dir = std::env::temp_dir().join(format!(
            "gyre-tls-bad-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, json!({"http_server": {"tls": tls}}).to_string()).unwrap();
        for args in [vec!["checkconfig", "-c", path.to_str().unwrap()], vec!["--config", path.to_str().unwrap()]] {
            let out = Command::new(server_binary()).args(&args).output().expect("run gyre");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} with {tls} must fail");
            assert!(stderr.contains(expect), "{args:?}: expected {expect:?} in:\n{stderr}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    // A client-side option in a listener's section is said to do nothing.
    let mut tls = good.clone();
    tls["insecure_skip_verify"] = json!(true);
    let s = Server::start(base_config(json!({"http_server": {"tls": tls}})));
    assert!(s.stderr().contains("http_server.tls.insecure_skip_verify has no effect"), "{}", s.stderr());
}

/// `gyre api` talks to an `https://` server, trusting the CA given with `--cacert`; without it
/// the server's certificate is not trusted and the command fails.
#[test]
fn gyre_api_over_https() {
    let p = pki();
    let s = Server::start(base_config(json!({"http_server": {"tls": tls_section(&p)}})));
    let address = format!("https://127.0.0.1:{}", s.port);
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(server_binary());
        cmd.args(["api", "--address", &address, "--key", KEY, "--raw"]).args(extra).arg("publish");
        cmd.args(["--params", r#"{"channel": "cli", "data": {"n": 1}}"#]);
        cmd.env_remove("SSL_CERT_FILE").output().expect("run gyre api")
    };
    let out = run(&["--cacert", p.ca.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "gyre api over https: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"result\""), "{stdout}");
    let out = run(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an untrusted certificate must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A WebSocket client that sends a corrupt TLS record while the server is busy writing it
/// publications it does not read: its connection closes, the server keeps serving everyone
/// else (the read side of a TLS session never writes through the write side's buffer).
#[test]
fn corrupt_record_while_the_server_writes() {
    use std::io::{BufRead, BufReader, Write};
    let test = "corrupt_record_while_the_server_writes";
    let python = match pyenv_python() {
        Ok(p) => p,
        Err((what, how)) => {
            unavailable(test, &what, how);
            return;
        }
    };
    let p = pki();
    let s = Server::start(base_config(json!({
        "http_server": {"tls": tls_section(&p)},
        "channel": {"namespaces": [{"name": "big", "allow_subscribe_for_client": true}]},
    })));
    let mut child = Command::new(&python)
        .arg(repo_root().join("tests/python/tls_garbage.py"))
        .arg(s.port.to_string())
        .arg(&p.ca)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run tls_garbage.py");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("subscribed"));
    // More than the socket buffers hold: the server's writer waits on the socket.
    let big = "x".repeat(400_000);
    for _ in 0..10 {
        let r = api_over_tls(&p, s.port, "publish", &json!({"channel": "big:1", "data": {"blob": big}}));
        assert!(r.get("error").is_none(), "{r}");
    }
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("sent garbage"));
    let status = child.wait().expect("tls_garbage.py ends");
    assert!(status.success(), "tls_garbage.py: {status}");
    // Every worker still answers.
    for _ in 0..8 {
        let r = api_over_tls(&p, s.port, "info", &json!({}));
        assert!(r.get("error").is_none(), "{r}");
    }
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// `client.write_delay` holds over TLS too (those connections are written by their writer
/// task, which the delay's list wakes): centrifuge-js over wss:// gets a publication only once
/// the delay is over, replies included, and everything in order.
#[test]
fn write_delay_over_tls() {
    let p = pki();
    let tls = json!({"http_server": {"tls": tls_section(&p)}, "client": {"write_delay": "1500ms"}});
    let s = Server::start(base_config(tls));
    let ca = p.ca.to_str().unwrap();
    let envs = [("NODE_EXTRA_CA_CERTS", ca)];
    let Some(mut a) = Agent::start_with_env(Sdk::Js, "write_delay_over_tls", &envs) else { return };
    let t0 = Instant::now();
    a.send(json!({"op": "connect", "c": "a", "url": format!("wss://127.0.0.1:{}/connection/websocket", s.port)}));
    a.wait("connected over wss", ev("a", "connected"));
    assert!(t0.elapsed() >= Duration::from_millis(1200), "the connect reply came after {:?}", t0.elapsed());
    a.sub("a", "delayed", json!({}));
    a.wait("subscribed over wss", sev("a", "delayed", "sub.subscribed"));
    let t1 = Instant::now();
    for n in 1..=3 {
        let r = api_over_tls(&p, s.port, "publish", &json!({"channel": "delayed", "data": {"n": n}}));
        assert!(r.get("error").is_none(), "{r}");
    }
    let pubs = a.wait_n("3 publications over wss", 3, sev("a", "delayed", "sub.publication"));
    assert!(t1.elapsed() >= Duration::from_millis(1200), "the publications came after {:?}", t1.elapsed());
    assert_eq!(ns(&pubs), vec![1, 2, 3]);
}
