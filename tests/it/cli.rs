//! The `gyre` command line on the real binary: genconfig / checkconfig / gentoken /
//! checktoken / version / defaultenv / configdoc, environment overrides, `.env`,
//! unknown-option warnings and bad values.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

fn gyre(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(server_binary());
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd.output().expect("run gyre")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gyre-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn genconfig_checkconfig_gentoken_checktoken() {
    let dir = temp_dir("gen");
    let cfg = dir.join("config.json");
    let cfg_s = cfg.to_str().unwrap();
    let o = gyre(&["genconfig", "-c", cfg_s], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    for path in ["/http_api/key", "/client/token/hmac_secret_key", "/admin/password", "/admin/secret"] {
        let s = v.pointer(path).and_then(Value::as_str).unwrap_or("");
        assert!(s.len() >= 16, "{path} should be a random secret in {v}");
    }
    // Never overwrites.
    let o = gyre(&["genconfig", "-c", cfg_s], &[]);
    assert!(!o.status.success(), "genconfig overwrote an existing file: {}", text(&o));

    let o = gyre(&["checkconfig", "-c", cfg_s], &[]);
    assert!(o.status.success(), "{}", text(&o));

    let o = gyre(&["gentoken", "-c", cfg_s, "-u", "alice", "-q"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let o = gyre(&["checktoken", "-c", cfg_s, &token], &[]);
    assert!(o.status.success() && text(&o).contains("alice"), "{}", text(&o));
    let o = gyre(&["checktoken", "-c", cfg_s, &format!("{token}x")], &[]);
    assert!(!o.status.success(), "a tampered token verified: {}", text(&o));

    let o = gyre(&["version"], &[]);
    assert!(text(&o).starts_with("Gyre v"), "{}", text(&o));
}

#[test]
fn checkconfig_names_bad_values_and_warns_on_unknown_options() {
    let dir = temp_dir("check");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"channel":{"namespaces":[{"name":"x y"}]}}"#).unwrap();
    let o = gyre(&["checkconfig", "-c", bad.to_str().unwrap()], &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("namespace"), "the error names the option: {}", text(&o));

    let typo = dir.join("typo.yaml");
    std::fs::write(&typo, "http_api:\n  kye: abc\n").unwrap();
    let o = gyre(&["checkconfig", "-c", typo.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("http_api.kye"), "the warning names the unknown option: {}", text(&o));
    // `--strict` fails on it, as Centrifugo's does; an option Gyre does not implement stays
    // a warning there.
    for flag in ["--strict", "-s"] {
        let o = gyre(&["checkconfig", flag, "-c", typo.to_str().unwrap()], &[]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("http_api.kye") && text(&o).contains("strict"), "{}", text(&o));
    }
    let unsupported = dir.join("unsupported.json");
    std::fs::write(&unsupported, r#"{"webtransport": {"enabled": true}}"#).unwrap();
    let o = gyre(&["checkconfig", "--strict", "-c", unsupported.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not supported by Gyre"), "{}", text(&o));
    for flag in ["-V", "--version"] {
        let o = gyre(&[flag], &[]);
        assert!(o.status.success() && text(&o).contains(env!("CARGO_PKG_VERSION")), "{}", text(&o));
    }

    // The server itself refuses to start on a bad value (bounded wait: a server that did
    // start would run until killed).
    let mut child = Command::new(server_binary())
        .args(["--config", bad.to_str().unwrap(), "--port", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gyre started with an invalid config");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
}

#[test]
fn environment_overrides_the_file_in_both_naming_styles() {
    // v6 name from the environment beats the file's key.
    let s = Server::start_with_env(json!({"http_api": {"key": "file-key"}}), &[("CENTRIFUGO_HTTP_API_KEY", "env-key")]);
    assert_eq!(s.post("/api/info", b"{}", &[("X-API-Key", "file-key")]).status, 401);
    assert_eq!(s.post("/api/info", b"{}", &[("X-API-Key", "env-key")]).status, 200);
    drop(s);
    // v5 flat name, GYRE_ prefix, and a namespace defined from the environment.
    let s = Server::start_with_env(
        json!({}),
        &[
            ("GYRE_API_KEY", "flat-key"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES", "envns"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_ENVNS_HISTORY_SIZE", "5"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_ENVNS_HISTORY_TTL", "60s"),
        ],
    );
    let h = [("X-API-Key", "flat-key")];
    let r = s.post("/api/publish", br#"{"channel":"envns:a","data":1}"#, &h);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["offset"], 1, "{}", r.text());
}

/// `defaultenv -b base --base-non-zero-only` lists the options the base sets; those lines as
/// the server's `.env` configure it as the base would, under the process environment; a
/// `.env` that does not parse stops the start-up.
#[test]
fn defaultenv_lines_in_a_dotenv_file_configure_the_server() {
    let dir = temp_dir("defaultenv");
    let base = dir.join("base.yaml");
    std::fs::write(
        &base,
        "node:\n  name: from-base\nhttp_api:\n  insecure: 'true'\nchannel:\n  namespaces:\n    - name: chat\n      \
         history_size: 3\n      history_ttl: 60s\n",
    )
    .unwrap();
    let o = gyre(&["defaultenv", "-b", base.to_str().unwrap(), "--base-non-zero-only"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let vars: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        vars,
        [
            "CENTRIFUGO_CHANNEL_NAMESPACES=\"chat\"",
            "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_HISTORY_SIZE=3",
            "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_HISTORY_TTL=1m",
            "CENTRIFUGO_HTTP_API_INSECURE=true",
            "CENTRIFUGO_NODE_NAME=\"from-base\"",
        ],
        "{out}"
    );
    assert!(out.starts_with("# ") && out.contains("left out"), "{out}");
    // Every option, with its default.
    let o = gyre(&["defaultenv"], &[("CENTRIFUGO_CLIENT_CHANNEL_LIMIT", "9")]);
    let all = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success() && all.lines().count() > 300, "{}", text(&o));
    for want in ["CENTRIFUGO_HTTP_SERVER_PORT=8000", "CENTRIFUGO_CLIENT_CHANNEL_LIMIT=9", "CENTRIFUGO_LOG_FILE=\"\""] {
        assert!(all.lines().any(|l| l == want), "{want}:\n{all}");
    }
    let o = gyre(&["defaultenv", "--base-non-zero-only"], &[]);
    assert!(!o.status.success() && text(&o).contains("-b"), "{}", text(&o));

    // The lines as `.env`; the process environment wins over the file.
    let dotenv = format!("{out}GYRE_WORKERS=1\n");
    let s = Server::start_in(json!({}), &[("CENTRIFUGO_NODE_NAME", "from-process")], &[(".env", &dotenv)]);
    let r = s.post("/api/publish", br#"{"channel":"chat:a","data":1}"#, &[]);
    assert_eq!(r.json()["result"]["offset"], 1, "{}", r.text());
    let info = s.post("/api/info", b"{}", &[]).json();
    assert_eq!(info["result"]["nodes"][0]["name"], "from-process", "{info}");
    let log = s.stderr();
    assert!(log.contains("environment variables have been loaded from .env file"), "{log}");
    assert!(!log.contains("unknown environment variable"), "{log}");
    drop(s);

    let bad = temp_dir("dotenv-bad");
    std::fs::write(bad.join(".env"), "CENTRIFUGO_NODE_NAME=\"unterminated\n").unwrap();
    let o = std::process::Command::new(server_binary()).args(["--port", "0"]).current_dir(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(".env"), "{err}");
}

/// `configdoc -m` prints Markdown (of one section with `-s`); without `-m` the page is served.
#[test]
fn configdoc_markdown_and_page() {
    let o = gyre(&["configdoc", "-m", "-s", "client.token", "-l", "1"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(md.starts_with("### `client.token`\n"), "{md}");
    assert!(md.contains("#### `client.token.hmac_secret_key`\n\nType: `string`. Default: `\"\"`"), "{md}");
    assert!(md.contains("Env: `CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY`"), "{md}");
    assert!(!md.contains("`client.insecure`"), "{md}");
    let o = gyre(&["configdoc", "--markdown"], &[]);
    let all = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(all.contains("# Centrifugo options Gyre does not support") && all.contains("- `webtransport`"), "{all}");
    assert!(all.contains("# `log`") && all.contains("`log.file`"), "{all}");

    let port = free_port();
    let mut child = std::process::Command::new(server_binary())
        .args(["configdoc", "-p", &port.to_string()])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            let mut page = String::new();
            let _ = c.read_to_string(&mut page);
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "configdoc did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n") && page.contains("text/html"), "{page}");
    assert!(page.contains("id=\"client.token.hmac_secret_key\"") && page.contains("CENTRIFUGO_CLIENT_PING_INTERVAL"));
}

/// Every config the command line writes — `genconfig` and `defaultconfig`, in JSON, YAML and
/// TOML — passes `checkconfig --strict` without a warning.
#[test]
fn generated_configs_round_trip_through_checkconfig() {
    let dir = temp_dir("roundtrip");
    for cmd in ["genconfig", "defaultconfig"] {
        for ext in ["json", "yaml", "toml"] {
            let path = dir.join(format!("{cmd}.{ext}"));
            let p = path.to_str().unwrap();
            let o = gyre(&[cmd, "-c", p], &[]);
            assert!(o.status.success(), "{cmd} -c {p}: {}", text(&o));
            let o = gyre(&["checkconfig", "--strict", "-c", p], &[]);
            assert!(o.status.success(), "checkconfig --strict of {cmd}'s {ext}: {}", text(&o));
            assert!(!text(&o).to_lowercase().contains("warn"), "{cmd}'s {ext}: {}", text(&o));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
