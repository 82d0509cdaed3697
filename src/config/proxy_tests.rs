//! Proxy options through the whole loader: v6 names, v5 flat and granular names, environment
//! variables, flags, and the start-up checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::config::load::{load, LoadOptions, Loaded};
use crate::config::Config;
use crate::proxy::{Proxies, RpcRoute};

fn load_json(text: &str) -> Result<Loaded, String> {
    load_with(text, &[], vec![])
}

fn load_with(text: &str, env: &[(&str, &str)], flags: Vec<(String, Value)>) -> Result<Loaded, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("gyre-proxy-{}-{n}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let r = load(&LoadOptions { config_path: Some(path.clone()), env, flags, ..Default::default() });
    let _ = std::fs::remove_file(path);
    r.map_err(|e| e.message)
}

fn ok(text: &str) -> Config {
    let l = load_json(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert!(l.warnings.is_empty(), "{text}: {:?}", l.warnings);
    l.config
}

/// Compares options by JSON pointer into the serialized config.
fn check(c: &Config, expect: &[(&str, Value)]) {
    let tree = serde_json::to_value(c).unwrap();
    for (ptr, want) in expect {
        assert_eq!(tree.pointer(ptr), Some(want), "{ptr}");
    }
}

fn rpc_target(cfg: &Config, method: &str) -> Option<String> {
    match Proxies::build(cfg).unwrap().rpc(cfg, method) {
        RpcRoute::Proxy(p) => Some(p.conf.endpoint.clone()),
        _ => None,
    }
}

#[test]
fn endpoints() {
    let http = |host: &str, port, path: &str, https| Endpoint::Http {
        host: host.into(),
        port,
        path_and_query: path.into(),
        https,
    };
    assert_eq!(parse_endpoint("http://127.0.0.1:3000/c/connect"), Ok(http("127.0.0.1", 3000, "/c/connect", false)));
    assert_eq!(parse_endpoint("HTTPS://app?x=1"), Ok(http("app", 443, "/?x=1", true)));
    assert_eq!(parse_endpoint("http://u:p@[::1]:81"), Ok(http("::1", 81, "/", false)));
    assert_eq!(parse_endpoint("grpc://app:9000"), Ok(Endpoint::Grpc { target: "app:9000".into() }));
    assert_eq!(parse_endpoint("localhost:9000"), Ok(Endpoint::Grpc { target: "localhost:9000".into() }));
    for bad in ["http://:80/", "http://a:99999/", "http://a:x", "grpc://", "a:1/b", "http://[::1"] {
        assert!(parse_endpoint(bad).is_err(), "{bad}");
    }
}

/// The spec's v6 example: every proxy resolves, nothing is reported.
#[test]
fn v6_options() {
    let c = ok(r#"{
        "client": {"proxy": {"connect": {"enabled": true, "endpoint": "http://app:3000/connect",
            "http_headers": ["Cookie"], "timeout": "3s",
            "http": {"static_headers": {"X-A": "1"}, "status_to_code_transforms": [
                {"status_code": 404, "to_error": {"code": 404, "message": "not found"}},
                {"status_code": 403, "to_disconnect": {"code": 4403, "reason": "forbidden"}}]}}}},
        "channel": {"proxy": {"subscribe": {"endpoint": "grpc://app:9000",
            "grpc": {"credentials_key": "k", "credentials_value": "v", "compression": true,
                     "static_metadata": {"m": "1"}, "tls": {"enabled": true, "server_ca_pem": "/ca.pem"}}}},
            "namespaces": [{"name": "chat", "subscribe_proxy_enabled": true, "publish_proxy_enabled": true,
                            "publish_proxy_name": "pub1"}]},
        "proxies": [{"name": "pub1", "endpoint": "http://pub:3001/publish", "timeout": "2s"}],
        "rpc": {"proxy": {"endpoint": "http://app:3000/rpc"}, "without_namespace": {"proxy_enabled": true}}
    }"#);
    let connect = &c.client.proxy.connect;
    assert!(connect.enabled && connect.proxy.timeout == Duration::from_secs(3));
    assert_eq!(connect.proxy.http.status_to_code_transforms[1].to_disconnect.code, 4403);
    assert_eq!(c.channel.proxy.subscribe.grpc.static_metadata["m"], "1");
    assert_eq!(c.proxies[0].proxy.timeout, Duration::from_secs(2));
    assert_eq!(c.rpc.proxy.timeout, Duration::from_secs(1));
    let p = Proxies::build(&c).unwrap();
    assert_eq!(p.all().len(), 4);
    assert_eq!(rpc_target(&c, "x").as_deref(), Some("http://app:3000/rpc"));
}

/// Every v5 flat option lands on the v6 proxy it stands for; the shared ones on every kind.
#[test]
#[rustfmt::skip]
fn v5_flat_options() {
    let c = ok(r#"{
        "proxy_connect_endpoint": "http://a/connect", "proxy_connect_timeout": "2s",
        "proxy_refresh_endpoint": "http://a/refresh", "proxy_refresh_timeout": "3s",
        "proxy_subscribe_endpoint": "http://a/subscribe", "proxy_subscribe_timeout": "4s",
        "proxy_publish_endpoint": "http://a/publish", "proxy_publish_timeout": "5s",
        "proxy_sub_refresh_endpoint": "http://a/sub_refresh", "proxy_sub_refresh_timeout": "6s",
        "proxy_rpc_endpoint": "http://a/rpc", "proxy_rpc_timeout": "7s",
        "proxy_subscribe_stream_endpoint": "grpc://s:1", "proxy_subscribe_stream_timeout": "8s",
        "proxy_http_headers": ["Cookie"], "proxy_grpc_metadata": ["md"],
        "proxy_static_http_headers": {"X-S": "1"},
        "proxy_http_status_code_transforms": [{"status_code": 404, "to_error": {"code": 404, "message": "nf"}}],
        "proxy_binary_encoding": true, "proxy_include_connection_meta": true,
        "proxy_grpc_cert_file": "/ca.pem", "proxy_grpc_credentials_key": "ck",
        "proxy_grpc_credentials_value": "cv", "proxy_grpc_compression": true,
        "proxy_subscribe": true, "proxy_publish": true, "proxy_sub_refresh": true,
        "namespaces": [
            {"name": "chat", "proxy_subscribe": true, "proxy_publish": true, "proxy_sub_refresh": true},
            {"name": "stream", "proxy_subscribe_stream": true, "proxy_subscribe_stream_bidirectional": true}
        ]
    }"#);
    for (base, endpoint, timeout) in [
        ("/client/proxy/connect", "http://a/connect", "2s"),
        ("/client/proxy/refresh", "http://a/refresh", "3s"),
        ("/channel/proxy/subscribe", "http://a/subscribe", "4s"),
        ("/channel/proxy/publish", "http://a/publish", "5s"),
        ("/channel/proxy/sub_refresh", "http://a/sub_refresh", "6s"),
        ("/rpc/proxy", "http://a/rpc", "7s"),
        ("/channel/proxy/subscribe_stream", "grpc://s:1", "8s"),
    ] {
        let at = |p: &str| format!("{base}/{p}");
        check(&c, &[
            (&at("endpoint"), json!(endpoint)),
            (&at("timeout"), json!(timeout)),
            (&at("http_headers"), json!(["Cookie"])),
            (&at("emulated_headers"), json!(["Cookie"])),
            (&at("grpc_metadata"), json!(["md"])),
            (&at("http/static_headers"), json!({"X-S": "1"})),
            (&at("http/status_to_code_transforms/0/to_error/message"), json!("nf")),
            (&at("binary_encoding"), json!(true)),
            (&at("include_connection_meta"), json!(true)),
            (&at("grpc/tls/enabled"), json!(true)),
            (&at("grpc/tls/server_ca_pem"), json!("/ca.pem")),
            (&at("grpc/credentials_key"), json!("ck")),
            (&at("grpc/credentials_value"), json!("cv")),
            (&at("grpc/compression"), json!(true)),
        ]);
    }
    check(&c, &[
        ("/client/proxy/connect/enabled", json!(true)),
        ("/client/proxy/refresh/enabled", json!(true)),
        ("/rpc/without_namespace/proxy_enabled", json!(true)),
        ("/channel/without_namespace/subscribe_proxy_enabled", json!(true)),
        ("/channel/without_namespace/publish_proxy_enabled", json!(true)),
        ("/channel/without_namespace/sub_refresh_proxy_enabled", json!(true)),
        ("/channel/namespaces/0/subscribe_proxy_enabled", json!(true)),
        ("/channel/namespaces/0/publish_proxy_enabled", json!(true)),
        ("/channel/namespaces/0/sub_refresh_proxy_enabled", json!(true)),
        ("/channel/namespaces/1/subscribe_proxy_enabled", json!(false)),
        ("/channel/namespaces/1/subscribe_stream_proxy_enabled", json!(true)),
        ("/channel/namespaces/1/subscribe_stream_proxy_bidirectional", json!(true)),
    ]);
    // v5 sent every RPC method to its proxy, whatever it looks like.
    for method in ["x", "ns:x", "a:b:c"] {
        assert_eq!(rpc_target(&c, method).as_deref(), Some("http://a/rpc"), "{method}");
    }
    assert_eq!(Proxies::build(&c).unwrap().all().len(), 7);
    // The v5 key of the stream switch for channels without namespace, and no endpoint: no proxy.
    let c = ok(r#"{"proxy_stream_subscribe": true, "proxy_subscribe_stream_endpoint": "s:1",
                   "proxy_subscribe_stream_bidirectional": true, "proxy_connect_timeout": "2s"}"#);
    let o = &c.channel.without_namespace.proxy;
    assert!(o.subscribe_stream_proxy_enabled && o.subscribe_stream_proxy_bidirectional);
    assert!(!c.client.proxy.connect.enabled && c.client.proxy.connect.proxy.timeout == Duration::from_secs(2));
    assert_eq!(rpc_target(&c, "x"), None);
    assert_eq!(c.rpc.namespace_boundary, ":");
}

/// A v6 value wins over the v5 spelling of the same option in the same file.
#[test]
fn v6_wins_over_v5() {
    let c = ok(r#"{"proxy_connect_endpoint": "http://v5/c", "proxy_http_headers": ["A"],
        "proxy_rpc_endpoint": "http://v5/rpc",
        "client": {"proxy": {"connect": {"endpoint": "http://v6/c"}}},
        "channel": {"proxy": {"publish": {"http_headers": ["B"]}}},
        "rpc": {"namespace_boundary": "."}}"#);
    assert_eq!(c.client.proxy.connect.proxy.endpoint, "http://v6/c");
    assert!(c.client.proxy.connect.enabled);
    assert_eq!(c.client.proxy.connect.proxy.http_headers, ["A"]);
    assert_eq!(c.channel.proxy.publish.http_headers, ["B"]);
    assert_eq!(c.rpc.namespace_boundary, ".");
}

/// v5 TLS objects: `<pem>_file` over `<pem>_b64` over `<pem>`; the CA file only counts when
/// the object leaves TLS off.
#[test]
fn v5_tls() {
    let c = ok(r#"{"proxy_grpc_tls": {"enabled": true, "cert_pem": "raw", "cert_pem_file": "/c.pem",
        "key_pem_b64": "a2V5", "server_ca_pem": "ca", "server_name": "s", "insecure_skip_verify": false},
        "proxy_grpc_cert_file": "/other.pem", "proxy_publish_endpoint": "grpc://p:1", "proxy_publish": true}"#);
    let t = &c.channel.proxy.publish.grpc.tls;
    assert!(t.enabled);
    assert_eq!((t.cert_pem.as_str(), t.key_pem.as_str(), t.server_ca_pem.as_str()), ("/c.pem", "a2V5", "ca"));
    assert_eq!(t.server_name, "s");
    let c = ok(r#"{"proxy_grpc_tls": {"enabled": false}, "proxy_grpc_cert_file": "/ca.pem"}"#);
    assert!(c.rpc.proxy.grpc.tls.enabled && c.rpc.proxy.grpc.tls.server_ca_pem == "/ca.pem");
    let l = load_json(r#"{"proxy_grpc_tls": {"enabled": true, "cert_pm": "x"}}"#).unwrap();
    assert!(l.warnings.iter().any(|w| w.contains("\"client.proxy.connect.grpc.tls.cert_pm\"")), "{:?}", l.warnings);
}

#[test]
#[rustfmt::skip]
fn v5_granular() {
    let l = load_json(r#"{
        "granular_proxy_mode": true,
        "proxy_connect_endpoint": "http://flat/connect", "proxy_http_headers": ["X"],
        "proxies": [
            {"name": "auth", "endpoint": "http://auth/connect", "http_headers": ["Cookie"],
             "static_http_headers": {"X-S": "1"},
             "http_status_to_code_transforms": [{"status_code": 403, "to_disconnect": {"code": 4403, "reason": "no"}}],
             "binary_encoding": true, "include_connection_meta": true},
            {"name": "grpc1", "endpoint": "grpc1:9000", "timeout": "3s", "grpc_cert_file": "/ca.pem",
             "grpc_credentials_key": "k", "grpc_credentials_value": "v", "grpc_compression": true,
             "grpc_metadata": ["md"]},
            {"name": "grpc2", "endpoint": "grpc2:9000", "grpc_tls": {"enabled": true, "server_ca_pem_file": "/c2"},
             "grpc_cert_file": "/ignored"}
        ],
        "connect_proxy_name": "auth", "refresh_proxy_name": "grpc1", "rpc_proxy_name": "grpc1",
        "rpc_namespace_boundary": "/",
        "rpc_namespaces": [{"name": "billing", "rpc_proxy_name": "grpc2"}, {"name": "off"}],
        "subscribe_proxy_name": "grpc1", "proxy_stream_subscribe": false,
        "namespaces": [{"name": "chat", "publish_proxy_name": "auth", "proxy_publish": false},
                       {"name": "live", "subscribe_stream_proxy_name": "grpc2"}]
    }"#).unwrap();
    let mut w = l.warnings.clone();
    w.sort();
    assert_eq!(w, [
        "option \"proxy_connect_endpoint\" has no effect with granular_proxy_mode (ignored)",
        "option \"proxy_http_headers\" has no effect with granular_proxy_mode (ignored)",
    ]);
    let c = &l.config;
    check(c, &[
        ("/proxies/0/http_headers", json!(["Cookie"])),
        ("/proxies/0/emulated_headers", json!(["Cookie"])),
        ("/proxies/0/http/static_headers", json!({"X-S": "1"})),
        ("/proxies/0/http/status_to_code_transforms/0/to_disconnect/code", json!(4403)),
        ("/proxies/0/binary_encoding", json!(true)),
        ("/proxies/0/include_connection_meta", json!(true)),
        ("/proxies/0/timeout", json!("1s")),
        ("/proxies/1/grpc/tls", json!({"enabled": true, "server_ca_pem": "/ca.pem", "cert_pem": "", "key_pem": "",
            "client_ca_pem": "", "insecure_skip_verify": false, "server_name": ""})),
        ("/proxies/1/grpc/credentials_key", json!("k")),
        ("/proxies/1/grpc/compression", json!(true)),
        ("/proxies/1/grpc_metadata", json!(["md"])),
        ("/proxies/2/grpc/tls/server_ca_pem", json!("/c2")),
        ("/client/proxy/connect/enabled", json!(true)),
        ("/client/proxy/connect/endpoint", json!("http://auth/connect")),
        ("/client/proxy/connect/http/static_headers", json!({"X-S": "1"})),
        ("/client/proxy/refresh/enabled", json!(true)),
        ("/client/proxy/refresh/timeout", json!("3s")),
        ("/rpc/without_namespace", json!({"proxy_enabled": true, "proxy_name": "grpc1"})),
        ("/rpc/namespaces/0", json!({"name": "billing", "proxy_enabled": true, "proxy_name": "grpc2"})),
        ("/rpc/namespaces/1", json!({"name": "off", "proxy_enabled": false, "proxy_name": "default"})),
        ("/channel/without_namespace/subscribe_proxy_enabled", json!(true)),
        ("/channel/without_namespace/subscribe_proxy_name", json!("grpc1")),
        ("/channel/without_namespace/subscribe_stream_proxy_enabled", json!(false)),
        ("/channel/namespaces/0/publish_proxy_enabled", json!(true)),
        ("/channel/namespaces/0/publish_proxy_name", json!("auth")),
        ("/channel/namespaces/0/subscribe_proxy_enabled", json!(false)),
        ("/channel/namespaces/1/subscribe_stream_proxy_enabled", json!(true)),
    ]);
    assert_eq!(rpc_target(c, "x").as_deref(), Some("grpc1:9000"));
    assert_eq!(rpc_target(c, "billing/x").as_deref(), Some("grpc2:9000"));
    assert_eq!(rpc_target(c, "off/x"), None);
    assert!(c.channel.proxy.subscribe.endpoint.is_empty());
    Proxies::build(c).unwrap();

    let e = load_json(r#"{"granular_proxy_mode": true, "proxies": [], "connect_proxy_name": "nope"}"#).unwrap_err();
    assert!(e.contains("connect_proxy_name") && e.contains("\"nope\""), "{e}");
    let e = load_json(r#"{"granular_proxy_mode": "yes"}"#).unwrap_err();
    assert!(e.contains("granular_proxy_mode"), "{e}");
    // A flag with no name in granular mode picks no proxy: Gyre says so at start-up.
    let e = load_json(r#"{"granular_proxy_mode": true, "proxy_subscribe": true}"#).unwrap_err();
    assert!(e.contains("channel.proxy.subscribe.endpoint: required") && e.contains("channel.without_namespace"), "{e}");
    // Granular names without the mode are v5 options that do nothing.
    let l = load_json(r#"{"connect_proxy_name": "a", "rpc_namespaces": []}"#).unwrap();
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    assert!(l.warnings[0].contains("without granular_proxy_mode"), "{:?}", l.warnings);
}

#[test]
#[rustfmt::skip]
fn environment() {
    let l = load_with("{}", &[
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_ENABLED", "true"),
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_ENDPOINT", "http://c/connect"),
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_TIMEOUT", "2s"),
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_HEADERS", "Cookie Authorization"),
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_STATIC_HEADERS", r#"{"X-A": "1"}"#),
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_STATUS_TO_CODE_TRANSFORMS",
         r#"[{"status_code": 404, "to_error": {"code": 404, "message": "nf"}}]"#),
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_GRPC_STATIC_METADATA", r#"{"m": "v"}"#),
        ("CENTRIFUGO_CHANNEL_PROXY_SUBSCRIBE_ENDPOINT", "http://c/subscribe"),
        ("CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_SUBSCRIBE_PROXY_ENABLED", "true"),
        ("CENTRIFUGO_RPC_PROXY_ENDPOINT", "http://c/rpc"),
        ("CENTRIFUGO_RPC_WITHOUT_NAMESPACE_PROXY_ENABLED", "true"),
        ("CENTRIFUGO_PROXIES", r#"[{"name": "p1", "endpoint": "p1:9000"}, "p2.x"]"#),
        ("CENTRIFUGO_PROXIES_P2_X_ENDPOINT", "http://p2/x"),
        ("CENTRIFUGO_PROXIES_P2_X_HTTP_STATIC_HEADERS", r#"{"X-P": "2"}"#),
        ("GYRE_PROXIES_P2_X_TIMEOUT", "5s"),
        ("CENTRIFUGO_PROXIES_P1_GRPC_TLS_ENABLED", "true"),
        ("CENTRIFUGO_RPC_NAMESPACES", "billing"),
        ("CENTRIFUGO_RPC_NAMESPACES_BILLING_PROXY_ENABLED", "true"),
        ("CENTRIFUGO_RPC_NAMESPACES_BILLING_PROXY_NAME", "p2.x"),
        ("CENTRIFUGO_CHANNEL_NAMESPACES", "chat"),
        ("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PUBLISH_PROXY_ENABLED", "true"),
        ("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PUBLISH_PROXY_NAME", "p1"),
    ], vec![]).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = &l.config;
    check(c, &[
        ("/client/proxy/connect/enabled", json!(true)),
        ("/client/proxy/connect/endpoint", json!("http://c/connect")),
        ("/client/proxy/connect/timeout", json!("2s")),
        ("/client/proxy/connect/http_headers", json!(["Cookie", "Authorization"])),
        ("/client/proxy/connect/http/static_headers", json!({"X-A": "1"})),
        ("/client/proxy/connect/http/status_to_code_transforms/0/status_code", json!(404)),
        ("/client/proxy/connect/grpc/static_metadata", json!({"m": "v"})),
        ("/channel/proxy/subscribe/endpoint", json!("http://c/subscribe")),
        ("/rpc/proxy/endpoint", json!("http://c/rpc")),
        ("/rpc/without_namespace/proxy_enabled", json!(true)),
        ("/proxies/0/name", json!("p1")),
        ("/proxies/0/grpc/tls/enabled", json!(true)),
        ("/proxies/1/name", json!("p2.x")),
        ("/proxies/1/endpoint", json!("http://p2/x")),
        ("/proxies/1/timeout", json!("5s")),
        ("/proxies/1/http/static_headers", json!({"X-P": "2"})),
        ("/rpc/namespaces/0", json!({"name": "billing", "proxy_enabled": true, "proxy_name": "p2.x"})),
        ("/channel/namespaces/0/publish_proxy_enabled", json!(true)),
        ("/channel/namespaces/0/publish_proxy_name", json!("p1")),
    ]);
    assert_eq!(rpc_target(c, "billing:x").as_deref(), Some("http://p2/x"));
    assert_eq!(Proxies::build(c).unwrap().all().len(), 5);

    // v5 names, and flags.
    let flags = vec![("proxy_refresh_endpoint".to_string(), json!("http://f/refresh"))];
    let l = load_with("{}", &[
        ("CENTRIFUGO_PROXY_CONNECT_ENDPOINT", "http://v5/connect"),
        ("CENTRIFUGO_PROXY_CONNECT_TIMEOUT", "4s"),
        ("CENTRIFUGO_PROXY_HTTP_HEADERS", "Cookie"),
        ("CENTRIFUGO_PROXY_STATIC_HTTP_HEADERS", r#"{"X-S": "1"}"#),
        ("CENTRIFUGO_PROXY_GRPC_TLS_ENABLED", "true"),
        ("CENTRIFUGO_PROXY_GRPC_TLS_SERVER_CA_PEM_FILE", "/ca.pem"),
        ("CENTRIFUGO_PROXY_RPC_ENDPOINT", "grpc://r:1"),
        ("CENTRIFUGO_PROXY_SUBSCRIBE", "true"),
        ("CENTRIFUGO_PROXY_SUBSCRIBE_ENDPOINT", "http://v5/subscribe"),
        ("CENTRIFUGO_PROXY_CONNECT_ENABLED", "true"),
        ("CENTRIFUGO_PROXY_GRPC_TLS_FOO", "1"),
    ], flags).unwrap();
    assert_eq!(l.warnings, [
        "unknown environment variable CENTRIFUGO_PROXY_CONNECT_ENABLED (ignored)",
        "unknown environment variable CENTRIFUGO_PROXY_GRPC_TLS_FOO (ignored)",
    ]);
    let c = &l.config;
    check(c, &[
        ("/client/proxy/connect/enabled", json!(true)),
        ("/client/proxy/connect/endpoint", json!("http://v5/connect")),
        ("/client/proxy/connect/timeout", json!("4s")),
        ("/client/proxy/refresh/enabled", json!(true)),
        ("/client/proxy/refresh/endpoint", json!("http://f/refresh")),
        ("/client/proxy/refresh/http_headers", json!(["Cookie"])),
        ("/channel/proxy/publish/http/static_headers", json!({"X-S": "1"})),
        ("/rpc/proxy/grpc/tls/enabled", json!(true)),
        ("/rpc/proxy/grpc/tls/server_ca_pem", json!("/ca.pem")),
        ("/channel/without_namespace/subscribe_proxy_enabled", json!(true)),
    ]);
    assert_eq!(rpc_target(c, "a:b").as_deref(), Some("grpc://r:1"));

    // Bad values name the variable and the option.
    let e = load_with("{}", &[("CENTRIFUGO_PROXIES", "[{")], vec![]).unwrap_err();
    assert!(e.contains("CENTRIFUGO_PROXIES") && e.contains("JSON"), "{e}");
    let e = load_with("{}", &[("CENTRIFUGO_PROXIES", "p1"), ("CENTRIFUGO_PROXIES_P1_TIMEOUT", "soon")], vec![])
        .unwrap_err();
    assert!(e.contains("CENTRIFUGO_PROXIES_P1_TIMEOUT") && e.contains("proxies[0].timeout"), "{e}");
    let e = load_with("{}", &[("CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_STATIC_HEADERS", "[1]")], vec![]).unwrap_err();
    assert!(e.contains("client.proxy.connect.http.static_headers"), "{e}");
    let l = load_with("{}", &[("CENTRIFUGO_PROXIES_NOPE_ENDPOINT", "x:1")], vec![]).unwrap();
    assert_eq!(l.warnings, ["unknown environment variable CENTRIFUGO_PROXIES_NOPE_ENDPOINT (ignored)"]);
}

/// Each start-up check, with the option it names.
#[test]
#[rustfmt::skip]
fn validation_errors() {
    let long = "x".repeat(124);
    let transform = |t: &str| format!(
        r#"{{"proxies": [{{"name": "p1", "endpoint": "http://a", "http": {{"status_to_code_transforms": [{t}]}}}}]}}"#);
    let cases: Vec<(String, &str)> = vec![
        (r#"{"client": {"proxy": {"connect": {"enabled": true}}}}"#.into(), "client.proxy.connect.endpoint: required"),
        (r#"{"client": {"proxy": {"refresh": {"enabled": true, "endpoint": "http://a", "timeout": "0s"}}}}"#.into(),
         "client.proxy.refresh.timeout: must be greater than 0"),
        (r#"{"client": {"proxy": {"connect": {"enabled": true, "endpoint": "http://a:x"}}}}"#.into(),
         "client.proxy.connect.endpoint: bad port"),
        (r#"{"client": {"proxy": {"connect": {"enabled": true, "endpoint": "https://a"}}}}"#.into(),
         "client.proxy.connect.endpoint: https:// endpoints are not supported by Gyre"),
        (r#"{"client": {"proxy": {"connect": {"enabled": true, "endpoint": "http://a", "http": {"tls": {"enabled": true}}}}}}"#.into(),
         "client.proxy.connect.http.tls.enabled: TLS to HTTP proxies is not supported by Gyre"),
        (r#"{"proxies": [{"name": "p1", "endpoint": "a:1", "grpc": {"tls": {"enabled": true, "insecure_skip_verify": true}}}]}"#.into(),
         "proxies[\"p1\"].grpc.tls.insecure_skip_verify: not supported by Gyre"),
        (r#"{"proxies": [{"name": "p", "endpoint": "a:1"}]}"#.into(), "proxies[0].name: invalid proxy name \"p\""),
        (r#"{"proxies": [{"name": "a b", "endpoint": "a:1"}]}"#.into(), "invalid proxy name"),
        (r#"{"proxies": [{"name": "default", "endpoint": "a:1"}]}"#.into(), "proxies[0].name: \"default\" is reserved"),
        (r#"{"proxies": [{"name": "p1", "endpoint": "a:1"}, {"name": "p1", "endpoint": "b:1"}]}"#.into(),
         "proxy name must be unique: p1"),
        (r#"{"proxies": [{"name": "p1"}]}"#.into(), "proxies[\"p1\"].endpoint: required"),
        (r#"{"proxies": [{"name": "p1", "endpoint": "a/b"}]}"#.into(), "proxies[\"p1\"].endpoint: bad gRPC endpoint"),
        (transform(r#"{"to_error": {"code": 1}}"#), ".http.status_to_code_transforms[0]: status_code must be set"),
        (transform(r#"{"status_code": 404}"#), "one of to_error.code and to_disconnect.code must be set"),
        (transform(r#"{"status_code": 404, "to_error": {"code": 1}, "to_disconnect": {"code": 4000}}"#),
         "only one of to_error.code and to_disconnect.code"),
        (transform(r#"{"status_code": 404, "to_error": {"code": 1, "message": "é"}}"#), "to_error.message must be ASCII"),
        (transform(&format!(r#"{{"status_code": 404, "to_disconnect": {{"code": 4000, "reason": "{long}"}}}}"#)),
         "to_disconnect.reason must be ASCII and at most 123 bytes"),
        (r#"{"channel": {"namespaces": [{"name": "chat", "publish_proxy_name": "nope"}]}}"#.into(),
         "channel.namespaces[\"chat\"].publish_proxy_name: no proxy named \"nope\""),
        (r#"{"channel": {"without_namespace": {"subscribe_proxy_enabled": true, "subscribe_proxy_name": ""}}}"#.into(),
         "channel.without_namespace.subscribe_proxy_name: no proxy named \"\""),
        (r#"{"channel": {"without_namespace": {"sub_refresh_proxy_enabled": true}}}"#.into(),
         "channel.proxy.sub_refresh.endpoint: required (the sub_refresh proxy of channel.without_namespace)"),
        (r#"{"channel": {"proxy": {"subscribe_stream": {"endpoint": "s:1"}, "subscribe": {"endpoint": "http://a"}},
            "without_namespace": {"subscribe_stream_proxy_enabled": true, "subscribe_proxy_enabled": true}}}"#.into(),
         "channel.without_namespace: subscribe_stream_proxy_enabled can not be used together"),
        (r#"{"channel": {"proxy": {"subscribe_stream": {"endpoint": "http://a"}},
            "without_namespace": {"subscribe_stream_proxy_enabled": true}}}"#.into(),
         "subscription streams need a gRPC proxy"),
        (r#"{"proxies": [{"name": "web", "endpoint": "http://a"}], "channel": {"namespaces": [{"name": "ch",
            "subscribe_stream_proxy_enabled": true, "subscribe_stream_proxy_name": "web"}]}}"#.into(),
         "channel.namespaces[\"ch\"].subscribe_stream_proxy_name: subscription streams need a gRPC proxy"),
        (r#"{"rpc": {"without_namespace": {"proxy_enabled": true}}}"#.into(),
         "rpc.proxy.endpoint: required (the rpc proxy of rpc.without_namespace)"),
        (r#"{"rpc": {"namespaces": [{"name": "ns", "proxy_name": "nope"}]}}"#.into(),
         "rpc.namespaces[\"ns\"].proxy_name: no proxy named \"nope\""),
        (r#"{"rpc": {"namespaces": [{"name": "n"}]}}"#.into(), "rpc.namespaces[0]: invalid rpc namespace name"),
        (r#"{"rpc": {"namespaces": [{"name": "ns"}, {"name": "ns"}]}}"#.into(), "rpc namespace name must be unique: ns"),
        (r#"{"proxy_connect_endpoint": "http://a", "proxy_connect_timeout": "0s"}"#.into(),
         "client.proxy.connect.timeout: must be greater than 0 (set by option \"proxy_connect_timeout\" in "),
        (r#"{"proxy_subscribe_endpoint": "http://a", "proxy_subscribe": true,
            "proxy_grpc_tls": {"enabled": true, "insecure_skip_verify": true}}"#.into(),
         "channel.proxy.subscribe.grpc.tls.insecure_skip_verify: not supported by Gyre (the subscribe proxy of channel.without_namespace) (set by option \"proxy_grpc_tls\""),
    ];
    for (text, want) in &cases {
        let e = load_json(text).unwrap_err();
        assert!(e.contains(want), "{text}:\n{e}");
    }
    // What Centrifugo leaves alone, Gyre does too: unused proxies are not checked, names of
    // switched-off namespaces only need to exist.
    for text in [
        r#"{"client": {"proxy": {"connect": {"endpoint": "https://a", "timeout": "0s"}}}}"#,
        r#"{"channel": {"proxy": {"subscribe": {"endpoint": "https://a"}}}}"#,
        r#"{"rpc": {"proxy": {"http": {"tls": {"enabled": true}}}}}"#,
        r#"{"proxies": [{"name": "p1", "endpoint": "p:1"}], "channel": {"without_namespace": {"publish_proxy_name": "p1"}}}"#,
        r#"{"channel": {"without_namespace": {"publish_proxy_name": ""}}, "rpc": {"without_namespace": {"proxy_name": ""}}}"#,
        r#"{"proxies": [{"name": "p1", "endpoint": "p:1", "grpc": {"tls": {"enabled": true, "server_ca_pem": "/ca"}}}]}"#,
    ] {
        ok(text);
    }
}

/// The map publish and remove proxies of map namespaces: `channel.proxy.map_publish` /
/// `map_remove` (`default`) or named ones, from files and the environment, and their checks.
#[test]
#[rustfmt::skip]
fn map_proxies() {
    use crate::proxy::{Kind, Target};
    let l = load_with(
        r#"{"proxies": [{"name": "rm", "endpoint": "rm:9000"}],
            "channel": {"proxy": {"map_publish": {"endpoint": "http://b/map_publish"}},
                        "namespaces": [{"name": "mm", "subscription_type": "map",
                                        "map": {"mode": "persistent", "publish_proxy_enabled": true}}]}}"#,
        &[
            ("CENTRIFUGO_CHANNEL_PROXY_MAP_REMOVE_TIMEOUT", "3s"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_MM_MAP_REMOVE_PROXY_ENABLED", "true"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_MM_MAP_REMOVE_PROXY_NAME", "rm"),
        ],
        vec![],
    )
    .unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = &l.config;
    check(c, &[
        ("/channel/namespaces/0/map/publish_proxy_enabled", json!(true)),
        ("/channel/namespaces/0/map/publish_proxy_name", json!("default")),
        ("/channel/namespaces/0/map/remove_proxy_enabled", json!(true)),
        ("/channel/namespaces/0/map/remove_proxy_name", json!("rm")),
        ("/channel/without_namespace/map/remove_proxy_name", json!("default")),
        ("/channel/proxy/map_remove/timeout", json!("3s")),
    ]);
    let p = Proxies::build(c).unwrap();
    let o = &c.channel.namespaces[0].options;
    let publish = p.channel(Kind::MapPublish, o).expect("the map publish proxy");
    assert_eq!((publish.kind.name(), publish.conf.endpoint.as_str()), ("map_publish", "http://b/map_publish"));
    let remove = p.channel(Kind::MapRemove, o).expect("the map remove proxy");
    assert_eq!(remove.target, Target::Grpc { uri: "http://rm:9000".into() });
    assert_eq!(&*remove.name, "rm");
    assert!(p.channel(Kind::MapPublish, &c.channel.without_namespace).is_none());
    assert!(p.channel(Kind::Publish, o).is_none());
    assert_eq!(crate::proxy::channel_proxies(&c.channel).len(), 2);

    let ns = |map: &str| format!(
        r#"{{"proxies": [{{"name": "p1", "endpoint": "p:1"}}], "channel": {{"namespaces": [{{"name": "mm",
            "subscription_type": "map", "map": {{"mode": "persistent", {map}}}}}]}}}}"#);
    for (text, want) in [
        (ns(r#""publish_proxy_enabled": true, "publish_proxy_name": "p1", "client_key": "client_id""#),
         "channel.namespaces[\"mm\"].map.client_key is not compatible with map.publish_proxy_enabled"),
        (ns(r#""remove_proxy_enabled": true, "remove_proxy_name": "p1", "client_key": "user_id""#),
         "channel.namespaces[\"mm\"].map.client_key is not compatible with map.remove_proxy_enabled"),
        (ns(r#""remove_proxy_name": "nope""#), "channel.namespaces[\"mm\"].map.remove_proxy_name: no proxy named \"nope\""),
        (ns(r#""publish_proxy_enabled": true, "publish_proxy_name": """#),
         "channel.namespaces[\"mm\"].map.publish_proxy_name: no proxy named \"\""),
        (ns(r#""publish_proxy_enabled": true"#),
         "channel.proxy.map_publish.endpoint: required (the map_publish proxy of channel.namespaces[\"mm\"])"),
        (ns(r#""remove_proxy_enabled": true"#),
         "channel.proxy.map_remove.endpoint: required (the map_remove proxy of channel.namespaces[\"mm\"])"),
    ] {
        let e = load_json(&text).unwrap_err();
        assert!(e.contains(want), "{text}:\n{e}");
    }
    // A name only needs to exist while the switch is off; client_key goes with a proxy that is off.
    ok(&ns(r#""publish_proxy_name": "p1", "remove_proxy_name": "p1", "client_key": "client_id""#));
}
