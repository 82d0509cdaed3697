//! `/metrics` (`prometheus.enabled`) under real traffic: WebSocket clients connect, subscribe
//! and receive publications sent through the HTTP API, and the scraped counters and gauges
//! move by exactly what was done. Also: `/metrics` is 404 unless enabled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{json_lines, Ws};

const SECRET: &str = "metrics-secret";

fn metrics_config() -> Value {
    config_with(json!({
        "prometheus": {"enabled": true},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [
            {"name": "hist", "history_size": 100, "history_ttl": "300s", "presence": true},
            {"name": "nohist"},
            {"name": "feed", "allow_subscribe_for_client": true}
        ]},
        "workers": 2
    }))
}

/// One scrape: `name{labels}` → value (lines of the text format; `# ` lines skipped).
fn scrape(s: &Server) -> HashMap<String, f64> {
    let r = s.request("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.header("content-type"));
    let text = r.text();
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (k, v) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        out.insert(k.to_string(), v.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().collect();
        keys.sort();
        panic!("metric {key} missing; have:\n{keys:#?}")
    })
}

/// The change of `key` between two scrapes (absent before = 0).
fn delta(a: &HashMap<String, f64>, b: &HashMap<String, f64>, key: &str) -> f64 {
    get(b, key) - a.get(key).copied().unwrap_or(0.0)
}

/// Opens a client connection for `user` and subscribes it to `channel`.
fn client(s: &Server, user: &str, channel: &str) -> Ws {
    join(Ws::open(s.addr()), user, channel)
}

/// Connects `ws` as `user` and subscribes it to `channel` (commands 1 and 2).
fn join(mut ws: Ws, user: &str, channel: &str) -> Ws {
    let token = jwt(SECRET, json!({"sub": user}));
    ws.send_json(&json!({"id": 1, "connect": {"token": token}}));
    wait_reply(&mut ws, 1);
    ws.send_json(&json!({"id": 2, "subscribe": {"channel": channel}}));
    let r = wait_reply(&mut ws, 2);
    assert!(r.get("error").is_none(), "subscribe failed: {r}");
    ws
}

/// Reads messages until the reply `id`; returns it.
fn wait_reply(ws: &mut Ws, id: u64) -> Value {
    loop {
        let f = ws.frame().unwrap_or_else(|e| panic!("connection ended before reply {id}: {e}"));
        for v in json_lines(&f.payload) {
            if v["id"] == id {
                return v;
            }
        }
    }
}

/// Reads until `n` publication pushes arrived.
fn read_pubs(ws: &mut Ws, n: usize) {
    let mut got = 0;
    while got < n {
        let f = ws.frame().unwrap_or_else(|e| panic!("connection ended after {got} of {n} publications: {e}"));
        for v in json_lines(&f.payload) {
            if v["push"]["pub"].is_object() {
                got += 1;
            }
        }
    }
}

/// Scrapes until `cond` holds (gauges follow connections as workers handle them).
fn scrape_until(s: &Server, what: &str, cond: impl Fn(&HashMap<String, f64>) -> bool) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(s);
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} never held; last scrape:\n{m:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_move_with_real_traffic() {
    let s = Server::start(metrics_config());
    let before = scrape(&s);
    assert_eq!(get(&before, "centrifugo_node_num_clients"), 0.0);
    assert_eq!(get(&before, "centrifugo_node_num_nodes"), 1.0);
    assert!(before.keys().any(|k| k.starts_with("centrifugo_node_build{version=")), "build info");

    // Two users on one channel, a third connection of the first user on another channel.
    let mut a = client(&s, "alice", "feed:news");
    let mut b = client(&s, "bob", "feed:news");
    let c = client(&s, "alice", "feed:other");

    // A client publish the namespace does not allow: an error reply (103) to the client.
    a.send_json(&json!({"id": 3, "publish": {"channel": "feed:news", "data": {}}}));
    let r = wait_reply(&mut a, 3);
    assert_eq!(r["error"]["code"], 103, "{r}");

    // Five publications over the HTTP API reach both subscribers of feed:news.
    for i in 0..5 {
        let r = s.api("publish", json!({"channel": "feed:news", "data": {"i": i}}));
        assert_eq!(r, json!({"result": {}}));
    }
    read_pubs(&mut a, 5);
    read_pubs(&mut b, 5);
    // One into a channel with history, one failing API call (no history in `nohist`).
    assert!(s.api("publish", json!({"channel": "hist:x", "data": 1}))["result"]["offset"] == 1);
    assert_eq!(s.api("history", json!({"channel": "nohist:x"}))["error"]["code"], 108);

    let after = scrape_until(&s, "three clients", |m| m.get("centrifugo_node_num_clients") == Some(&3.0));
    assert_eq!(get(&after, "centrifugo_node_num_users"), 2.0, "alice and bob");
    assert_eq!(get(&after, "centrifugo_node_num_subscriptions"), 3.0);
    assert!(get(&after, "centrifugo_node_num_channels") >= 2.0);

    let pubs = r#"{type="publication"}"#;
    assert_eq!(delta(&before, &after, &format!("centrifugo_node_messages_sent_count{pubs}")), 6.0);
    assert_eq!(delta(&before, &after, &format!("centrifugo_node_messages_received_count{pubs}")), 5.0);
    let sent = r#"centrifugo_transport_messages_sent{transport="websocket",frame_type="push_publication"}"#;
    assert_eq!(delta(&before, &after, sent), 10.0, "five publications to two subscribers");
    let size = r#"centrifugo_transport_messages_sent_size{transport="websocket",frame_type="push_publication"}"#;
    assert!(delta(&before, &after, size) >= 10.0 * 40.0, "frame bytes counted");
    // Replies are counted by their command.
    let transport = |family: &str, frame: &str| {
        format!(r#"centrifugo_transport_{family}{{transport="websocket",frame_type="{frame}"}}"#)
    };
    for (frame, n) in [("connect", 3.0), ("subscribe", 3.0), ("publish", 1.0)] {
        assert_eq!(get(&after, &transport("messages_received", frame)), n, "{frame} commands received");
        assert_eq!(get(&after, &transport("messages_sent", frame)), n, "{frame} replies sent");
        assert!(get(&after, &transport("messages_received_size", frame)) >= 10.0 * n, "{frame} bytes");
        let command = format!(r#"centrifugo_client_command_duration_seconds_histogram_count{{method="{frame}"}}"#);
        assert_eq!(get(&after, &command), n, "{frame} commands timed");
        let command = format!(r#"centrifugo_client_command_duration_seconds_count{{method="{frame}"}}"#);
        assert_eq!(get(&after, &command), n, "{frame} commands in the summary");
    }
    assert_eq!(get(&after, r#"centrifugo_client_num_reply_errors{method="publish",code="103"}"#), 1.0);
    // No name or version in the connect requests.
    let conns = |family: &str| {
        format!(
            r#"centrifugo_client_connections_{family}{{transport="websocket",client_name="unnamed",client_version="unversioned"}}"#
        )
    };
    assert_eq!(get(&after, &conns("accepted")), 3.0);
    assert_eq!(get(&after, &conns("inflight")), 3.0);
    assert_eq!(get(&after, r#"centrifugo_client_subscriptions_accepted{client_name="unnamed"}"#), 3.0);
    assert_eq!(get(&after, r#"centrifugo_client_subscriptions_inflight{client_name="unnamed"}"#), 3.0);

    let api = |m: &str| format!(r#"centrifugo_api_command_duration_seconds_count{{protocol="http",method="{m}"}}"#);
    assert_eq!(delta(&before, &after, &api("publish")), 6.0);
    assert_eq!(delta(&before, &after, &api("history")), 1.0);
    assert!(
        get(&after, r#"centrifugo_api_command_duration_seconds_sum{protocol="http",method="publish"}"#) > 0.0,
        "durations add up"
    );
    assert_eq!(
        get(
            &after,
            r#"centrifugo_api_command_duration_seconds_histogram_bucket{protocol="http",method="publish",le="+Inf"}"#
        ),
        6.0
    );
    assert_eq!(
        get(&after, r#"centrifugo_api_command_errors_total{protocol="http",method="history",error="108"}"#),
        1.0
    );

    // Per-worker loop figures, one series per worker; the workers exchanged messages.
    let batches: f64 =
        (0..2).map(|w| get(&after, &format!(r#"gyre_worker_loop_inbox_batches_total{{worker="{w}"}}"#))).sum();
    assert!(batches > 0.0, "workers handled inbox batches");
    for w in 0..2 {
        get(&after, &format!(r#"gyre_worker_loop_inbox_seconds_total{{worker="{w}"}}"#));
        get(&after, &format!(r#"gyre_worker_loop_lag_seconds{{worker="{w}"}}"#));
    }

    // Gauges follow disconnects.
    drop((a, b, c));
    let gone = scrape_until(&s, "no clients", |m| m.get("centrifugo_node_num_clients") == Some(&0.0));
    assert_eq!(get(&gone, "centrifugo_node_num_subscriptions"), 0.0);
    assert_eq!(get(&gone, "centrifugo_node_num_users"), 0.0);
    assert_eq!(get(&gone, &conns("inflight")), 0.0);
    assert_eq!(get(&gone, &conns("accepted")), 3.0);
    assert_eq!(get(&gone, r#"centrifugo_client_subscriptions_inflight{client_name="unnamed"}"#), 0.0);
    // Clients that closed their connections are no server disconnects.
    assert!(!gone.keys().any(|k| k.starts_with("centrifugo_client_num_server_disconnects")), "{gone:#?}");
    // Counters never go back.
    assert!(get(&gone, sent) >= get(&after, sent));
}

#[test]
fn metrics_and_admin_are_off_by_default() {
    let s = Server::start(config());
    assert_eq!(s.request("GET", "/metrics", &[]).status, 404);
    assert_eq!(s.request("GET", "/", &[]).status, 404);
    assert_eq!(s.post("/admin/auth", b"password=x", &[]).status, 404);
}

/// Server-side disconnects by code (a subscriber too slow for its queue gets 3008, a garbled
/// message 3501), the close frames that carried them, a server-side unsubscribe, a recovery
/// that recovers and one that cannot, and the process's figures.
#[test]
fn disconnects_unsubscribes_recovery_and_process() {
    let s = Server::start(config_with(json!({
        "prometheus": {"enabled": true},
        "client": {"token": {"hmac_secret_key": SECRET}, "queue_max_size": 65536},
        "channel": {"namespaces": [
            {"name": "feed", "allow_subscribe_for_client": true},
            {"name": "rec", "history_size": 100, "history_ttl": "300s", "force_recovery": true,
             "allow_subscribe_for_client": true}
        ]}
    })));
    let code = |family: &str, code: u32| format!(r#"centrifugo_client_num_server_{family}{{code="{code}"}}"#);
    let close =
        |code: u32| format!(r#"centrifugo_transport_outgoing_close_count{{transport="websocket",code="{code}"}}"#);

    // A subscriber that never reads, with a small receive buffer: publications pile up past
    // `client.queue_max_size` and it is closed with 3008.
    let mut slow = join(Ws::open_small_rcvbuf(s.addr()), "slow", "feed:slow");
    let pad = "p".repeat(4000);
    let mut closed = false;
    for _ in 0..200 {
        let commands: Vec<Value> =
            (0..50).map(|n| json!({"publish": {"channel": "feed:slow", "data": {"n": n, "pad": pad}}})).collect();
        s.api("batch", json!({"commands": commands}));
        if scrape(&s).contains_key(&code("disconnects", 3008)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow subscriber was never disconnected");
    assert_eq!(slow.expect_close(Duration::from_secs(30)), (3008, "slow".to_string()));

    // A message that is no command: 3501.
    let mut bad = client(&s, "bad", "feed:bad");
    bad.send(&crate::ws_client::client_frame(true, 1, b"not json", true)).unwrap();
    assert_eq!(bad.expect_close(Duration::from_secs(10)).0, 3501);

    // The server API unsubscribes a user: 2000.
    let mut sub = client(&s, "sub", "feed:x");
    assert_eq!(s.api("unsubscribe", json!({"channel": "feed:x", "user": "sub"})), json!({"result": {}}));
    loop {
        let f = sub.frame().expect("the unsubscribe push");
        if json_lines(&f.payload).iter().any(|v| v["push"]["unsubscribe"].is_object()) {
            break;
        }
    }

    // Recovery: from a known position (two publications come back), and from a wrong epoch.
    let mut rec = client(&s, "rec", "feed:y");
    rec.send_json(&json!({"id": 3, "subscribe": {"channel": "rec:a"}}));
    let first = wait_reply(&mut rec, 3);
    let epoch = first["subscribe"]["epoch"].as_str().expect("an epoch").to_string();
    let offset = first["subscribe"]["offset"].as_u64().unwrap_or(0);
    rec.send_json(&json!({"id": 4, "unsubscribe": {"channel": "rec:a"}}));
    wait_reply(&mut rec, 4);
    for i in 0..2 {
        assert!(s.api("publish", json!({"channel": "rec:a", "data": {"i": i}}))["result"].is_object());
    }
    rec.send_json(
        &json!({"id": 5, "subscribe": {"channel": "rec:a", "recover": true, "offset": offset, "epoch": epoch}}),
    );
    let r = wait_reply(&mut rec, 5);
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert_eq!(r["subscribe"]["publications"].as_array().map(Vec::len), Some(2), "{r}");
    rec.send_json(&json!({"id": 6, "subscribe": {"channel": "rec:b", "recover": true, "offset": 5, "epoch": "nope"}}));
    let r = wait_reply(&mut rec, 6);
    assert!(r["subscribe"].is_object() && r["subscribe"]["recovered"] != true, "{r}");

    let m = scrape(&s);
    assert_eq!(get(&m, &code("disconnects", 3008)), 1.0);
    assert_eq!(get(&m, &code("disconnects", 3501)), 1.0);
    assert_eq!(get(&m, &close(3008)), 1.0);
    assert_eq!(get(&m, &close(3501)), 1.0);
    assert_eq!(get(&m, &code("unsubscribes", 2000)), 1.0);
    let push = r#"centrifugo_transport_messages_sent{transport="websocket",frame_type="push_unsubscribe"}"#;
    assert_eq!(get(&m, push), 1.0);
    let recover = |yes: &str, pubs: &str| {
        format!(r#"centrifugo_client_recover{{recovered="{yes}",has_recovered_publications="{pubs}"}}"#)
    };
    assert_eq!(get(&m, &recover("yes", "yes")), 1.0);
    assert_eq!(get(&m, &recover("no", "no")), 1.0);
    assert!(!m.contains_key(&recover("yes", "no")) && !m.contains_key(&recover("no", "yes")), "{m:#?}");

    // The process: started within the last minutes, holds memory and file descriptors.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = get(&m, "process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 600.0, "start time {started}, now {now}");
    let rss = get(&m, "process_resident_memory_bytes");
    assert!(rss > 1e6 && get(&m, "process_virtual_memory_bytes") >= rss, "{rss}");
    assert!(get(&m, "process_open_fds") >= 5.0 && get(&m, "process_max_fds") >= get(&m, "process_open_fds"));
    // Kernel ticks (10 ms): a short, quiet run may not have used one yet.
    let cpu = get(&m, "process_cpu_seconds_total");
    assert!((0.0..600.0).contains(&cpu), "process_cpu_seconds_total {cpu}");
    assert!(get(&m, "process_virtual_memory_max_bytes") > 0.0);
    assert!(get(&m, "process_network_transmit_bytes_total") > 0.0);
    get(&m, "process_network_receive_bytes_total");
    drop((rec, sub));
}

/// A ping answered by the client is timed by transport; a connect request's name and version
/// label the connection (`unregistered`: Centrifugo registers none); a connection over
/// `client.connection_limit` is refused and counted.
#[test]
fn ping_pong_client_labels_and_the_connection_limit() {
    let s = Server::start(config_with(json!({
        "prometheus": {"enabled": true},
        "client": {"token": {"hmac_secret_key": SECRET}, "connection_limit": 1,
                   "ping_interval": "2s", "pong_timeout": "1s"}
    })));
    let mut ws = Ws::open(s.addr());
    let token = jwt(SECRET, json!({"sub": "u"}));
    ws.send_json(&json!({"id": 1, "connect": {"token": token, "name": "js", "version": "5.0.0"}}));
    wait_reply(&mut ws, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    'ping: loop {
        let f = ws.frame_until(deadline).expect("a server ping");
        for v in json_lines(&f.payload) {
            if v == json!({}) {
                ws.send_json(&json!({}));
                break 'ping;
            }
        }
    }
    assert!(Ws::try_open(s.addr()).is_err(), "a second connection over the limit of 1");
    let m = scrape_until(&s, "the pong", |m| {
        m.get(r#"centrifugo_client_ping_pong_duration_seconds_count{transport="websocket"}"#) == Some(&1.0)
    });
    assert_eq!(get(&m, r#"centrifugo_client_ping_pong_duration_seconds_bucket{transport="websocket",le="+Inf"}"#), 1.0);
    let labels = r#"{transport="websocket",client_name="unregistered",client_version="unregistered"}"#;
    assert_eq!(get(&m, &format!("centrifugo_client_connections_inflight{labels}")), 1.0);
    assert_eq!(get(&m, "centrifugo_node_client_connection_limit"), 1.0);
    // The pong is no command; the server's ping was sent as one.
    assert!(!m.keys().any(|k| k.contains(r#"method="client_pong""#)), "{m:#?}");
    assert!(get(&m, r#"centrifugo_transport_messages_sent{transport="websocket",frame_type="server_ping"}"#) >= 1.0);
    assert_eq!(
        get(&m, r#"centrifugo_transport_messages_received{transport="websocket",frame_type="client_pong"}"#),
        1.0
    );
}

/// The metric names a PromQL expression reads: what is left once label matchers, range
/// selectors, `by (...)`/`without (...)` groupings, function names, keywords and numbers are
/// taken out.
fn promql_metrics(expr: &str) -> Vec<String> {
    let mut flat = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = flat.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        let call = j < chars.len() && chars[j] == '(';
        if call && ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) {
            // Skip the label list.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            continue;
        }
        // Aggregation operators may put their grouping between name and parenthesis.
        let operator = [
            "sum",
            "min",
            "max",
            "avg",
            "group",
            "stddev",
            "stdvar",
            "count",
            "count_values",
            "bottomk",
            "topk",
            "quantile",
            "and",
            "or",
            "unless",
            "bool",
            "offset",
        ];
        if !call && !operator.contains(&word.as_str()) {
            names.push(word);
        }
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    let expr = r#"histogram_quantile(0.99, sum by (le, method) (rate(centrifugo_api_command_duration_seconds_histogram_bucket{instance=~"$instance"}[$__rate_interval]))) / on (x) gyre_worker_loop_lag_seconds"#;
    assert_eq!(
        promql_metrics(expr),
        ["centrifugo_api_command_duration_seconds_histogram_bucket", "gyre_worker_loop_lag_seconds"]
    );
}

/// `packaging/grafana/gyre-dashboard.json`: every panel has queries on the dashboard's
/// Prometheus data source variable, and every metric they read is one a running server
/// serves (its families, after real traffic, with their `_bucket`/`_sum`/`_count` series).
#[test]
fn the_grafana_dashboard_reads_only_served_metrics() {
    let path = repo_root().join("packaging/grafana/gyre-dashboard.json");
    let dash: Value = serde_json::from_slice(&std::fs::read(&path).expect("the dashboard")).expect("dashboard JSON");
    let vars = dash["templating"]["list"].as_array().expect("variables");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"),
        "a Prometheus data source variable"
    );

    let s = Server::start(metrics_config());
    let mut a = client(&s, "alice", "feed:news");
    assert_eq!(s.api("publish", json!({"channel": "feed:news", "data": {}})), json!({"result": {}}));
    read_pubs(&mut a, 1);
    let text = s.request("GET", "/metrics", &[]).text();
    let mut served = std::collections::HashSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
        served.insert(name.to_string());
        let parts: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["_sum", "_count"],
            _ => &[],
        };
        for p in parts {
            served.insert(format!("{name}{p}"));
        }
    }

    let mut checked = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("panel {title} has no query")) {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title}: a query without expr"));
            let names = promql_metrics(expr);
            assert!(!names.is_empty(), "panel {title}: no metric in {expr}");
            for n in names {
                assert!(served.contains(&n), "panel {title} reads {n}, which the server does not serve");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} metric references");
}
