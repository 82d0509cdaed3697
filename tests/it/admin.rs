//! The admin interface (`admin.enabled`): Centrifugo's endpoints over raw HTTP
//! (`POST /admin/auth` → token, `/admin/api` with `Authorization: token <t>`, `/admin/init`,
//! `admin.insecure`), and the page itself in headless Chromium (`tests/js/admin_ui.js`, run
//! by Node with playwright-core and centrifuge-js) at desktop and phone widths, which saves a
//! screenshot of each page at each width under `target/admin-screenshots/`.

use std::process::Command;

use serde_json::{json, Value};

use crate::util::*;

const PASSWORD: &str = "admin-pass";
const SECRET: &str = "client-secret";

fn admin_config() -> Value {
    config_with(json!({
        "admin": {"enabled": true, "password": PASSWORD, "secret": "admin-secret"},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
    }))
}

fn login(s: &Server) -> String {
    let r = s.post(
        "/admin/auth",
        format!("password={PASSWORD}").as_bytes(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().expect("token").to_string()
}

#[test]
fn admin_auth_and_api() {
    let s = Server::start(admin_config());
    // Wrong or missing password: 400, as Centrifugo.
    for body in ["password=nope", "", "other=x"] {
        assert_eq!(s.post("/admin/auth", body.as_bytes(), &[]).status, 400, "{body:?}");
    }
    let token = login(&s);
    let auth = format!("token {token}");
    let info = br#"{"method":"info","params":{}}"#;

    // /admin/api: the legacy server API, behind the admin token.
    let r = s.post("/admin/api", info, &[("Authorization", &auth)]);
    assert_eq!(r.status, 200);
    let v = r.lines();
    assert_eq!(v.len(), 1, "{}", r.text());
    assert_eq!(v[0]["result"]["nodes"].as_array().map(Vec::len), Some(1), "{}", r.text());
    assert_eq!(s.post("/admin/api", info, &[]).status, 401);
    assert_eq!(s.post("/admin/api", info, &[("Authorization", "token bogus")]).status, 401);
    assert_eq!(s.post("/admin/api", info, &[("Authorization", &format!("apikey {KEY}"))]).status, 401);
    assert_eq!(s.request("GET", "/admin/api", &[("Authorization", &auth)]).status, 405);
    // A token signed with another secret is refused.
    let other = Server::start(config_with(json!({
        "admin": {"enabled": true, "password": PASSWORD, "secret": "another-secret"},
    })));
    let foreign = login(&other);
    assert_eq!(s.post("/admin/api", info, &[("Authorization", &format!("token {foreign}"))]).status, 401);

    // Several commands in one request, as the legacy API.
    let body = b"{\"id\":1,\"method\":\"publish\",\"params\":{\"channel\":\"a\",\"data\":{}}}\n{\"id\":2,\"method\":\"channels\",\"params\":{}}";
    let r = s.post("/admin/api", body, &[("Authorization", &auth)]);
    let lines = r.lines();
    assert_eq!(lines.len(), 2, "{}", r.text());
    assert_eq!(lines[0]["id"], 1);
    assert!(lines[1]["result"]["channels"].is_object());

    // /admin/init tells the page whether it is signed in.
    let init = s.request("GET", "/admin/init", &[]).json();
    assert_eq!(init, json!({"authenticated": false, "edition": "oss", "insecure": false}));
    let init = s.request("GET", "/admin/init", &[("Authorization", &auth)]).json();
    assert_eq!(init["authenticated"], true);

    // The page and its assets need no login; the node figures and the tail token do.
    let page = s.request("GET", "/", &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.text().contains("/admin/static/app.js"));
    assert_eq!(s.request("GET", "/admin/static/app.js", &[]).status, 200);
    assert_eq!(s.request("GET", "/admin/static/app.css", &[]).status, 200);
    assert_eq!(s.request("GET", "/admin/static/actions.js", &[]).status, 200);
    assert!(page.text().contains(r#"<link rel="icon" type="image/svg+xml" href="/admin/static/favicon.svg">"#));
    for path in ["/favicon.ico", "/admin/static/favicon.svg"] {
        let icon = s.request("GET", path, &[]);
        assert_eq!((icon.status, icon.header("content-type")), (200, Some("image/svg+xml")), "{path}");
        assert!(icon.text().starts_with("<svg"), "{path}: {}", icon.text());
    }
    assert_eq!(s.request("GET", "/admin/static/missing.js", &[]).status, 401);
    assert_eq!(s.post("/admin/node", b"{}", &[]).status, 401);
    let node = s.post("/admin/node", b"{}", &[("Authorization", &auth)]).json();
    assert!(node["rss_bytes"].as_u64().unwrap() > 0, "{node}");
    assert_eq!(node["num_clients"], 0);
    let tail = s.post("/admin/tail", br#"{"channel":"news"}"#, &[("Authorization", &auth)]).json();
    assert_eq!(tail["token"].as_str().map(|t| t.split('.').count()), Some(3), "{tail}");
    assert_eq!(s.post("/admin/tail", b"{}", &[("Authorization", &auth)]).status, 400);
}

#[test]
fn admin_insecure_needs_no_login() {
    let s = Server::start(config_with(json!({"admin": {"enabled": true, "insecure": true}})));
    let r = s.post("/admin/api", br#"{"method":"info","params":{}}"#, &[]);
    assert_eq!(r.status, 200);
    assert!(r.lines()[0]["result"]["nodes"].is_array());
    assert_eq!(s.request("GET", "/admin/init", &[]).json()["authenticated"], true);
    // Without password and secret there is nothing to log in with.
    assert_eq!(s.post("/admin/auth", b"password=", &[]).status, 400);
}

/// Node, playwright-core, centrifuge-js and Chromium, or a reason to skip (a failure in CI).
pub(crate) fn browser_ready(test: &str) -> Option<String> {
    let root = repo_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        Some("`node` is not on PATH".to_string())
    } else if !root.join("tests/js/node_modules/playwright-core/package.json").exists()
        || !root.join("tests/js/node_modules/centrifuge/package.json").exists()
    {
        Some("tests/js/node_modules lacks playwright-core or centrifuge (npm ci --prefix tests/js)".to_string())
    } else if !std::path::Path::new(&chromium).exists() {
        Some(format!("{chromium} is missing (apt-get install chromium)"))
    } else {
        None
    };
    match missing {
        None => Some(chromium),
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why}, and CI is set"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

#[test]
fn admin_ui_in_chromium_publishes_to_a_subscribed_sdk_client() {
    let Some(chromium) = browser_ready("admin_ui_in_chromium_publishes_to_a_subscribed_sdk_client") else {
        return;
    };
    let s = Server::start(admin_config());
    let token = jwt(SECRET, json!({"sub": "watcher"}));
    let shots = repo_root().join("target/admin-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("tests/js/admin_ui.js"))
        .current_dir(repo_root())
        .env("GYRE_URL", format!("http://127.0.0.1:{}", s.port))
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("CLIENT_TOKEN", token)
        .env("CHANNEL", "news")
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", chromium);
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("run node tests/js/admin_ui.js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: Value = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    assert!(
        out.status.success() && last["ok"] == true,
        "admin_ui.js failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server\n{}",
        out.status,
        s.stderr()
    );
    assert_eq!(last["received"], json!([{"text": "from the admin page", "n": 42}]), "the SDK client got it once");
    let published = last["replies"]["history"]["result"]["publications"].as_array().map(|p| p.len());
    assert_eq!(published, Some(2), "the publish and broadcast forms published: {}", last["replies"]);
    for page in ["login", "nodes", "channels", "actions", "tail"] {
        for width in ["desktop", "phone"] {
            let p = shots.join(format!("{page}-{width}.png"));
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "screenshot {} missing or empty", p.display());
        }
    }
    eprintln!("screenshots in {}", shots.display());
}

/// A raw client that reads every message into `seen`.
struct Watch {
    ws: crate::ws_client::Ws,
    seen: Vec<Value>,
}

impl Watch {
    fn open(s: &Server, token: &str) -> (Watch, Value) {
        let ws = crate::ws_client::Ws::open(s.addr());
        ws.s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut w = Watch { ws, seen: Vec::new() };
        w.ws.send_json(&json!({"id": 1, "connect": {"token": token}}));
        let reply = w.until(|v| v["id"] == 1);
        assert!(reply.get("error").is_none(), "{reply}");
        (w, reply)
    }

    /// Reads until a message `f` accepts; returns it (everything before stays in `seen`).
    fn until(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        loop {
            if let Some(i) = self.seen.iter().position(&f) {
                return self.seen.remove(i);
            }
            let frame = self.ws.frame().expect("a frame");
            assert_ne!(frame.op, crate::ws_client::CLOSE, "closed: {frame:?}");
            self.seen.extend(crate::ws_client::json_lines(&frame.payload));
        }
    }
}

fn node_counts(s: &Server) -> (Value, Value) {
    let info = s.api("info", json!({}));
    let n = &info["result"]["nodes"][0];
    (n["num_clients"].clone(), n["num_users"].clone())
}

/// The live tail follows a channel without the application seeing it: not in presence, no
/// join or leave, not counted among the node's clients and users (`info`, `/admin/node`,
/// `/metrics`). A client token cannot claim the same: a wrong mark leaves it an ordinary
/// client.
#[test]
fn admin_tail_is_invisible_to_the_application() {
    let mut cfg = admin_config();
    merge(
        &mut cfg,
        json!({"prometheus": {"enabled": true},
               "channel": {"without_namespace": {"join_leave": true, "force_push_join_leave": true}}}),
    );
    let s = Server::start(cfg);
    let auth = format!("token {}", login(&s));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (mut app, _) = Watch::open(&s, &jwt(SECRET, json!({"sub": "u1", "exp": now + 600})));
    app.ws.send_json(&json!({"id": 2, "subscribe": {"channel": "news"}}));
    app.until(|v| v["id"] == 2);
    app.until(|v| v["push"]["join"]["info"]["user"] == "u1");
    assert_eq!(node_counts(&s), (json!(1), json!(1)));

    let tail = s.post("/admin/tail", br#"{"channel":"news"}"#, &[("Authorization", &auth)]).json();
    let (mut t, reply) = Watch::open(&s, tail["token"].as_str().unwrap());
    assert!(reply["connect"]["subs"]["news"].is_object(), "subscribed server-side: {reply}");
    let r = s.api("publish", json!({"channel": "news", "data": {"n": 1}}));
    assert!(r.get("error").is_none(), "{r}");
    t.until(|v| v["push"]["pub"]["data"]["n"] == 1);
    app.until(|v| v["push"]["pub"]["data"]["n"] == 1);
    assert_eq!(app.seen, Vec::<Value>::new(), "no join for the tail");

    let presence = s.api("presence", json!({"channel": "news"}));
    let clients = presence["result"]["presence"].as_object().expect("presence").clone();
    assert_eq!(clients.values().map(|c| c["user"].clone()).collect::<Vec<_>>(), [json!("u1")], "{presence}");
    let stats = s.api("presence_stats", json!({"channel": "news"}));
    assert_eq!(stats["result"], json!({"num_clients": 1, "num_users": 1}));
    assert_eq!(node_counts(&s), (json!(1), json!(1)), "the tail is not counted");
    let node = s.post("/admin/node", b"{}", &[("Authorization", &auth)]).json();
    assert_eq!((node["num_clients"].clone(), node["num_users"].clone()), (json!(1), json!(1)), "{node}");
    let metrics = s.request("GET", "/metrics", &[]).text();
    assert!(metrics.lines().any(|l| l == "centrifugo_node_num_clients 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "centrifugo_node_num_users 1"), "{metrics}");

    // The tail leaves (its close answered: the server has let go of it): no leave, counts
    // unchanged.
    let close = crate::ws_client::client_frame(true, crate::ws_client::CLOSE, &1000u16.to_be_bytes(), true);
    t.ws.send(&close).unwrap();
    t.ws.expect_close(std::time::Duration::from_secs(10));
    let r = s.api("publish", json!({"channel": "news", "data": {"n": 2}}));
    assert!(r.get("error").is_none(), "{r}");
    app.until(|v| v["push"]["pub"]["data"]["n"] == 2);
    assert_eq!(app.seen, Vec::<Value>::new(), "no leave for the tail");
    assert_eq!(node_counts(&s), (json!(1), json!(1)));

    // Ordinary tokens with a made-up mark are ordinary clients (all anonymous: one more user).
    let mut others = Vec::new();
    for (i, mark) in [json!("true"), json!(true), json!(tail["token"].as_str().unwrap())].into_iter().enumerate() {
        let claims = json!({"sub": "", "exp": now + 600, "channels": ["news"], "gyre_hidden": mark});
        others.push(Watch::open(&s, &jwt(SECRET, claims)).0);
        app.until(|v| v["push"]["join"]["info"]["user"] == "");
        assert_eq!(node_counts(&s), (json!(i + 2), json!(2)), "{mark}");
        let stats = s.api("presence_stats", json!({"channel": "news"}));
        assert_eq!(stats["result"], json!({"num_clients": i + 2, "num_users": 2}), "{mark}");
    }
}
