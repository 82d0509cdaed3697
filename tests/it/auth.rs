//! Server API authentication (Centrifugo `internal/middleware/auth.go`): `X-API-Key`,
//! `Authorization: apikey KEY`, `?api_key=KEY`, 401 with an empty body, `http_api.insecure`.

use serde_json::json;

use crate::util::*;

const PUBLISH: &[u8] = br#"{"channel":"hist:auth","data":{"x":1}}"#;

fn history_len(s: &Server) -> usize {
    let h = s.api("history", json!({"channel": "hist:auth", "limit": -1}));
    h["result"]["publications"].as_array().unwrap_or_else(|| panic!("{h}")).len()
}

#[test]
fn accepted_key_forms() {
    let s = Server::start(config());
    let auth = format!("apikey {KEY}");
    let auth_upper = format!("APIKEY {KEY}");
    let auth_mixed = format!("ApiKey   {KEY}");
    let query = format!("/api/publish?api_key={KEY}");
    let query2 = format!("/api/publish?x=1&api_key={KEY}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/publish", vec![("X-API-Key", KEY)]),
        ("/api/publish", vec![("x-api-key", KEY)]),
        ("/api/publish", vec![("Authorization", &auth)]),
        ("/api/publish", vec![("Authorization", &auth_upper)]),
        ("/api/publish", vec![("authorization", &auth_mixed)]),
        (&query, vec![]),
        (&query2, vec![]),
        // A wrong Authorization header falls back to the query parameter.
        (&query, vec![("Authorization", "apikey wrong")]),
    ];
    for (i, (path, headers)) in cases.iter().enumerate() {
        let r = s.post(path, PUBLISH, headers);
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.text());
        assert_eq!(r.json()["result"]["offset"], i + 1, "{path} {headers:?}");
    }
    // Legacy endpoint uses the same check.
    let r = s.post(&format!("/api?api_key={KEY}"), br#"{"method":"info","params":{}}"#, &[]);
    assert_eq!(r.status, 200);
    let r = s.post("/api", br#"{"method":"info","params":{}}"#, &[("Authorization", &auth)]);
    assert_eq!(r.status, 200);
}

/// Centrifugo checks `?api_key` whenever the header check did not succeed, including a
/// wrong non-empty `X-API-Key`.
#[test]
fn wrong_x_api_key_falls_back_to_query() {
    let s = Server::start(config());
    let r = s.post(&format!("/api/publish?api_key={KEY}"), PUBLISH, &[("X-API-Key", "wrong")]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn rejected_keys_run_nothing() {
    let s = Server::start(config());
    let bearer = format!("Bearer {KEY}");
    let three = format!("apikey {KEY} extra");
    let only = KEY.to_string();
    let wrong_case = KEY.to_uppercase();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/publish", vec![]),
        ("/api/publish", vec![("X-API-Key", "wrong")]),
        ("/api/publish", vec![("X-API-Key", &wrong_case)]),
        ("/api/publish", vec![("Authorization", &bearer)]),
        ("/api/publish", vec![("Authorization", &three)]),
        ("/api/publish", vec![("Authorization", &only)]),
        ("/api/publish", vec![("Authorization", "apikey wrong")]),
        // X-API-Key present: Authorization is not looked at.
        ("/api/publish", vec![("X-API-Key", "wrong"), ("Authorization", "apikey test-key")]),
        ("/api/publish?api_key=wrong", vec![]),
        ("/api/publish?apikey=test-key", vec![]),
        ("/api/publish?api_key=", vec![]),
    ];
    for (path, headers) in &cases {
        let r = s.post(path, PUBLISH, headers);
        assert_eq!(r.status, 401, "{path} {headers:?}");
        assert!(r.body.is_empty(), "401 has an empty body: {:?}", r.text());
    }
    // Legacy endpoint and batch too.
    let r =
        s.post("/api", br#"{"method":"publish","params":{"channel":"hist:auth","data":1}}"#, &[("X-API-Key", "wrong")]);
    assert_eq!(r.status, 401);
    let r = s.post("/api/batch", br#"{"commands":[{"publish":{"channel":"hist:auth","data":1}}]}"#, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(history_len(&s), 0, "a rejected request must not run its command");
    // Sanity: the right key publishes.
    assert_eq!(s.post("/api/publish", PUBLISH, &[("X-API-Key", KEY)]).status, 200);
    assert_eq!(history_len(&s), 1);
}

#[test]
fn unauthorized_keeps_connection_usable_without_body() {
    let s = Server::start(config());
    let mut c = s.connect();
    // A 401 to a request whose body was sent does not desynchronise the connection: either
    // the server closes it (announced) or the next request on it works.
    c.send(&request("POST", "/api/publish", PUBLISH, &[("X-API-Key", "wrong")]));
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 401);
    // Small bodies are read and dropped (as Go's server does), so the connection stays open.
    assert!(!r.closes(), "a 401 to a small request closed the connection");
    c.send(&request("POST", "/api/info", b"{}", &[("X-API-Key", KEY)]));
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(history_len(&s), 0);
}

#[test]
fn insecure_needs_no_key() {
    let s = Server::start(config_with(json!({"http_api": {"key": "", "insecure": true}})));
    let r = s.post("/api/publish", PUBLISH, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["offset"], 1);
    let r = s.post("/api/publish", PUBLISH, &[("X-API-Key", "anything")]);
    assert_eq!(r.status, 200);
    let r = s.post("/api", br#"{"method":"info","params":{}}"#, &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn v5_flat_option_names() {
    // Centrifugo v5 flat names are accepted too: api_key, api_insecure.
    let s = Server::start(json!({"api_key": "flat-key", "health": {"enabled": true}, "workers": 1,
        "channel": {"namespaces": [{"name": "hist", "history_size": 10, "history_ttl": "60s"}]}}));
    assert_eq!(s.post("/api/info", b"{}", &[("X-API-Key", "flat-key")]).status, 200);
    assert_eq!(s.post("/api/info", b"{}", &[("X-API-Key", KEY)]).status, 401);
    let s = Server::start(json!({"api_insecure": true, "workers": 1}));
    assert_eq!(s.post("/api/info", b"{}", &[]).status, 200);
}

/// Refusals leave a log line (info) naming why and who: a server API request without a valid
/// key, a WebSocket upgrade from an Origin that is not allowed.
#[test]
fn refusals_are_logged() {
    let s = Server::start(config_with(json!({"client": {"allowed_origins": ["http://good.example"]}})));
    let r = s.post("/api/publish", br#"{"channel":"a","data":{}}"#, &[("X-API-Key", "wrong")]);
    assert_eq!(r.status, 401);
    let tcp = std::net::TcpStream::connect(s.addr()).unwrap();
    let up = crate::ws_client::Ws::upgrade(
        tcp,
        crate::ws_client::WS_PATH,
        crate::ws_client::SAMPLE_KEY,
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(up.err(), Some(403));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = s.stderr();
        if log.contains("server API request refused: no valid API key")
            && log.contains(r#""path":"/api/publish""#)
            && log.contains("request Origin is not authorized")
            && log.contains("http://evil.example")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "missing refusal log lines:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
