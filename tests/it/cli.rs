//! The `gyre` command line on the real binary: genconfig / checkconfig / gentoken /
//! checktoken / version, environment overrides, unknown-option warnings and bad values.

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
