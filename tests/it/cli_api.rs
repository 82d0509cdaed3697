//! `gyre api`, the console client, with profiles in a temporary `HOME/.centrc`, against a real
//! server: an API-key profile and a v1 `secret` profile.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use crate::util::*;

const SECRET: &str = "cli-secret";

/// A HOME with a `.centrc` holding `gyre` (API key) and `v1` (secret) profiles for `s`.
fn home(s: &Server, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gyre-cli-api-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = s.url("");
    let rc = format!(
        "# profiles\n[gyre]\naddress = {addr}\nkey = {KEY}\ntimeout = 5\n\n[v1]\naddress: {addr}/api\nsecret: {SECRET}\n"
    );
    std::fs::write(dir.join(".centrc"), rc).unwrap();
    dir
}

fn gyre_api(home: &PathBuf, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(server_binary())
        .arg("api")
        .args(args)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gyre api");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn gyre_api_console() {
    let s = Server::start(config_with(json!({"http_api": {"v1_secret": SECRET}})));
    let home = home(&s, "console");

    // publish and info with the API-key profile; raw output, one reply a line.
    let out = gyre_api(&home, &["gyre", "publish", "--params", r#"{"channel":"a","data":{"n":1}}"#, "--raw"], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out)[0]["result"]["offset"], 1, "{out:?}");
    let out = gyre_api(&home, &["gyre", "info", "--raw"], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out)[0]["result"]["nodes"].as_array().map(Vec::len), Some(1), "{out:?}");

    // A batch from stdin: one legacy request, replies in order.
    let batch = "{\"method\":\"publish\",\"params\":{\"channel\":\"a\",\"data\":{\"n\":2}}}\n\
                 {\"method\":\"history\",\"params\":{\"channel\":\"a\",\"limit\":10}}\n";
    let out = gyre_api(&home, &["gyre", "--raw"], batch);
    assert!(out.status.success(), "{out:?}");
    let replies = lines(&out);
    assert_eq!(replies.len(), 2, "{out:?}");
    assert_eq!(replies[1]["result"]["publications"].as_array().map(Vec::len), Some(2), "{out:?}");

    // The v1 profile: signed, and the batch in one request.
    let out = gyre_api(&home, &["v1", "history", "--params", r#"{"channel":"a"}"#, "--raw"], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out)[0]["body"]["data"][0]["data"], json!({"n": 2}), "{out:?}");
    let out = gyre_api(&home, &["v1", "--raw"], "{\"method\":\"stats\",\"params\":{}}\n{\"method\":\"channels\"}\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lines(&out).iter().map(|r| r["method"].clone()).collect::<Vec<_>>(),
        [json!("stats"), json!("channels")]
    );

    // Pretty output when asked (the default on a terminal).
    let out = gyre_api(&home, &["gyre", "info", "--pretty"], "");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("{\n  \"result\""), "{out:?}");

    // An error reply: printed, exit 1; in a batch too, after the replies before it.
    let out = gyre_api(&home, &["gyre", "publish", "--params", r#"{"channel":"nope:a","data":1}"#, "--raw"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(lines(&out)[0]["error"]["code"], 102);
    let out = gyre_api(
        &home,
        &["v1", "--raw"],
        "{\"method\":\"publish\",\"params\":{\"channel\":\"a\",\"data\":1}}\n{\"method\":\"publish\",\"params\":{\"channel\":\"nope:a\",\"data\":1}}\n",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(lines(&out)[1]["error"], "namespace not found");
    // A refused request (wrong key, flags instead of a profile): exit 1 with the status.
    let out = gyre_api(&home, &["--address", &s.url(""), "--key", "wrong", "info"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"), "{out:?}");
    // Flags alone reach the server.
    let out = gyre_api(&home, &["--address", &s.url(""), "--secret", SECRET, "channels", "--raw"], "");
    assert!(out.status.success(), "{out:?}");

    // Usage errors: exit 2 with a message.
    let out = gyre_api(&home, &["missing", "info"], "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("section missing not found"), "{out:?}");
    let out = gyre_api(&home, &["gyre", "publish", "--params", "{oops"], "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = gyre_api(&home, &["gyre"], "not json\n");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let _ = std::fs::remove_dir_all(&home);
}
