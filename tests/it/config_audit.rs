//! Every option of Centrifugo v6 (the open-source server) is either applied or reported as not
//! supported at start-up — never silently accepted.
//!
//! `config_audit.json` holds the whole option tree of Centrifugo v6's config, as `centrifugo
//! defaultconfig` writes it, plus one namespace and one element in each list, with the options
//! Gyre applies set to values other than their defaults. For each option in it:
//! * either Gyre applies it ([`APPLIED`]): `gyre defaultconfig -b` shows the file's value in
//!   the effective config;
//! * or `gyre checkconfig` and the server's start-up log name it (or a section above it) as
//!   "not supported by Gyre".
//!
//! And each option of Gyre's own config is either a Centrifugo option in [`APPLIED`] or one of
//! Gyre's additions ([`GYRE_ONLY`]), so no option joins the config without this audit.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::*;

const FULL: &str = include_str!("config_audit.json");

/// Centrifugo options Gyre applies. Channel options are listed under
/// `channel.without_namespace` and hold for each namespace too (`channel.namespaces[]`), RPC
/// namespace options likewise under `rpc.without_namespace`; the options of a proxy object
/// are listed once as `<proxy>.*` ([`PROXY_PLACES`]).
#[rustfmt::skip]
const APPLIED: &[&str] = &[
    "http_server.address", "http_server.port", "http_server.internal_address", "http_server.internal_port",
    "http_server.tls.enabled", "http_server.tls.cert_pem", "http_server.tls.key_pem", "http_server.tls.server_ca_pem", "http_server.tls.client_ca_pem", "http_server.tls.insecure_skip_verify", "http_server.tls.server_name",
    "http_server.tls_external", "http_server.internal_tls.enabled", "http_server.internal_tls.cert_pem", "http_server.internal_tls.key_pem", "http_server.internal_tls.server_ca_pem", "http_server.internal_tls.client_ca_pem", "http_server.internal_tls.insecure_skip_verify", "http_server.internal_tls.server_name",
    "grpc_api.tls.enabled", "grpc_api.tls.cert_pem", "grpc_api.tls.key_pem", "grpc_api.tls.server_ca_pem", "grpc_api.tls.client_ca_pem", "grpc_api.tls.insecure_skip_verify", "grpc_api.tls.server_name",
    "uni_grpc.tls.enabled", "uni_grpc.tls.cert_pem", "uni_grpc.tls.key_pem", "uni_grpc.tls.server_ca_pem", "uni_grpc.tls.client_ca_pem", "uni_grpc.tls.insecure_skip_verify", "uni_grpc.tls.server_name",
    "log.level", "log.file",
    "engine.type", "engine.redis.prefix", "engine.redis.address", "engine.redis.connect_timeout",
    "engine.redis.io_timeout", "engine.redis.db", "engine.redis.user", "engine.redis.password",
    "engine.redis.tls.enabled", "engine.redis.tls.cert_pem", "engine.redis.tls.key_pem",
    "engine.redis.tls.server_ca_pem", "engine.redis.tls.client_ca_pem", "engine.redis.tls.insecure_skip_verify",
    "engine.redis.tls.server_name", "engine.redis.presence_ttl",
    "engine.redis.cluster_address", "engine.redis.sentinel_address", "engine.redis.sentinel_master_name", "engine.redis.sentinel_user",
    "engine.redis.sentinel_password", "engine.redis.sentinel_client_name",
    "broker.enabled", "broker.type", "broker.nats.url", "broker.nats.prefix", "broker.nats.dial_timeout",
    "broker.nats.write_timeout", "map_broker.type", "map_broker.redis.prefix",
    "map_broker.redis.cleanup_interval", "map_broker.redis.cleanup_batch_size", "map_broker.redis.idempotent_result_ttl",
    "engine.redis.sentinel_tls.enabled", "engine.redis.sentinel_tls.cert_pem", "engine.redis.sentinel_tls.key_pem", "engine.redis.sentinel_tls.server_ca_pem", "engine.redis.sentinel_tls.client_ca_pem", "engine.redis.sentinel_tls.insecure_skip_verify", "engine.redis.sentinel_tls.server_name",
    "client.allowed_origins", "client.token.hmac_secret_key", "client.token.audience",
    "client.token.issuer", "client.token.user_id_claim", "client.token.hmac_previous_secret_key",
    "client.token.hmac_previous_secret_key_valid_until", "client.token.rsa_public_key",
    "client.token.ecdsa_public_key", "client.token.jwks_public_endpoint", "client.token.audience_regex",
    "client.token.issuer_regex", "client.token.insecure_skip_jwks_endpoint_safety_check",
    "client.subscription_token.enabled", "client.subscription_token.hmac_secret_key",
    "client.subscription_token.hmac_previous_secret_key",
    "client.subscription_token.hmac_previous_secret_key_valid_until",
    "client.subscription_token.rsa_public_key", "client.subscription_token.ecdsa_public_key",
    "client.subscription_token.jwks_public_endpoint", "client.subscription_token.audience",
    "client.subscription_token.audience_regex", "client.subscription_token.issuer",
    "client.subscription_token.issuer_regex", "client.subscription_token.user_id_claim",
    "client.subscription_token.insecure_skip_jwks_endpoint_safety_check",
    "client.insecure_skip_token_signature_verify", "client.allow_anonymous_connect_without_token",
    "client.disallow_anonymous_connection_tokens", "client.ping_interval", "client.pong_timeout",
    "client.expired_close_delay", "client.expired_sub_close_delay", "client.stale_close_delay",
    "client.channel_limit", "client.queue_max_size", "client.connection_limit",
    "client.user_connection_limit", "client.connection_rate_limit",
    "client.history_max_publication_limit", "client.recovery_max_publication_limit", "client.insecure",
    "client.connect_include_server_time",
    "client.subscribe_to_user_personal_channel.enabled",
    "client.subscribe_to_user_personal_channel.personal_channel_namespace",
    "client.subscribe_to_user_personal_channel.single_connection",
    "channel.history_meta_ttl", "channel.max_length", "channel.private_prefix",
    "channel.namespace_boundary", "channel.user_boundary", "channel.user_separator",
    "channel.namespaces[].name",
    "channel.without_namespace.presence", "channel.without_namespace.join_leave",
    "channel.without_namespace.force_push_join_leave", "channel.without_namespace.history_size",
    "channel.without_namespace.history_ttl", "channel.without_namespace.history_meta_ttl",
    "channel.without_namespace.force_positioning", "channel.without_namespace.allow_positioning",
    "channel.without_namespace.force_recovery", "channel.without_namespace.allow_recovery",
    "channel.without_namespace.force_recovery_mode", "channel.without_namespace.auto_cache_recover",
    "shared_poll.hmac_secret_key", "shared_poll.hmac_previous_secret_key",
    "shared_poll.hmac_previous_secret_key_valid_until", "shared_poll.concurrency_limit",
    "channel.without_namespace.shared_poll.proxy_name", "channel.without_namespace.shared_poll.refresh_interval",
    "channel.without_namespace.shared_poll.refresh_batch_size", "channel.without_namespace.shared_poll.max_keys_per_connection",
    "channel.without_namespace.shared_poll.mode", "channel.without_namespace.shared_poll.channel_shutdown_delay",
    "channel.without_namespace.shared_poll.track_expired_extra_delay", "channel.without_namespace.shared_poll.publish_enabled",
    "channel.without_namespace.map.client_key", "channel.without_namespace.map.remove_client_on_unsubscribe",
    "channel.without_namespace.map.meta_ttl",
    "channel.without_namespace.map.live_transition_max_publication_limit",
    "channel.without_namespace.map.subscribe_catch_up_timeout",
    "channel.without_namespace.map_clients_presence_channel_prefix",
    "channel.without_namespace.map_users_presence_channel_prefix",
    "channel.without_namespace.subscription_type", "channel.without_namespace.map.mode",
    "channel.without_namespace.map.key_ttl", "channel.without_namespace.map.stream_size",
    "channel.without_namespace.map.stream_ttl", "channel.without_namespace.map.allow_publish_for_client",
    "channel.without_namespace.map.allow_publish_for_subscriber", "channel.without_namespace.map.allow_publish_for_anonymous",
    "channel.without_namespace.map.allow_remove_for_client", "channel.without_namespace.map.allow_remove_for_subscriber",
    "channel.without_namespace.map.allow_remove_for_anonymous", "channel.without_namespace.map.default_page_size",
    "channel.without_namespace.map.min_page_size", "channel.without_namespace.map.max_page_size",
    "channel.without_namespace.map.publish_proxy_enabled", "channel.without_namespace.map.publish_proxy_name",
    "channel.without_namespace.map.remove_proxy_enabled", "channel.without_namespace.map.remove_proxy_name",
    "channel.without_namespace.allow_subscribe_for_anonymous",
    "channel.without_namespace.allow_subscribe_for_client",
    "channel.without_namespace.allow_publish_for_anonymous",
    "channel.without_namespace.allow_publish_for_subscriber",
    "channel.without_namespace.allow_publish_for_client",
    "channel.without_namespace.allow_presence_for_anonymous",
    "channel.without_namespace.allow_presence_for_subscriber",
    "channel.without_namespace.allow_presence_for_client",
    "channel.without_namespace.allow_history_for_anonymous",
    "channel.without_namespace.allow_history_for_subscriber",
    "channel.without_namespace.allow_history_for_client",
    "channel.without_namespace.allow_user_limited_channels", "channel.without_namespace.channel_regex",
    "channel.without_namespace.allow_tags_filter",
    "channel.without_namespace.allowed_delta_types", "channel.without_namespace.delta_publish",
    "http_api.disabled", "http_api.handler_prefix", "http_api.key", "http_api.error_mode", "http_api.insecure",
    "http_api.external",
    "grpc_api.enabled", "grpc_api.port", "grpc_api.key",
    "websocket.disabled", "websocket.handler_prefix", "websocket.write_timeout", "websocket.message_size_limit",
    "websocket.compression", "websocket.compression_min_size", "websocket.compression_level",
    "websocket.decompressed_message_size_limit", "uni_websocket.compression", "uni_websocket.compression_min_size",
    "uni_websocket.compression_level", "uni_websocket.decompressed_message_size_limit",
    "http_stream.enabled", "http_stream.handler_prefix", "http_stream.max_request_body_size",
    "sse.enabled", "sse.handler_prefix", "sse.max_request_body_size",
    "emulation.handler_prefix", "emulation.max_request_body_size",
    "uni_websocket.enabled", "uni_websocket.handler_prefix", "uni_websocket.message_size_limit",
    "uni_websocket.write_timeout", "uni_websocket.join_push_messages",
    "uni_websocket.disable_closing_handshake", "uni_websocket.disable_disconnect_push",
    "uni_sse.enabled", "uni_sse.handler_prefix", "uni_sse.max_request_body_size",
    "uni_sse.connect_code_to_http_response.enabled",
    "uni_sse.connect_code_to_http_response.transforms[0].code",
    "uni_sse.connect_code_to_http_response.transforms[0].to.status_code",
    "uni_sse.connect_code_to_http_response.transforms[0].to.body",
    "uni_http_stream.enabled", "uni_http_stream.handler_prefix", "uni_http_stream.max_request_body_size",
    "uni_http_stream.connect_code_to_http_response.enabled",
    "uni_http_stream.connect_code_to_http_response.transforms[0].code",
    "uni_http_stream.connect_code_to_http_response.transforms[0].to.status_code",
    "uni_http_stream.connect_code_to_http_response.transforms[0].to.body",
    "uni_grpc.enabled", "uni_grpc.address", "uni_grpc.port", "uni_grpc.max_receive_message_size",
    "client.connect_code_to_unidirectional_disconnect.enabled",
    "client.connect_code_to_unidirectional_disconnect.transforms[0].code",
    "client.connect_code_to_unidirectional_disconnect.transforms[0].to.code",
    "client.connect_code_to_unidirectional_disconnect.transforms[0].to.reason",
    "admin.enabled", "admin.password", "admin.secret", "admin.insecure", "admin.external",
    "prometheus.enabled", "health.enabled", "node.name", "shutdown.timeout", "pid_file",
    "client.proxy.connect.enabled", "client.proxy.refresh.enabled",
    "channel.without_namespace.subscribe_proxy_enabled", "channel.without_namespace.subscribe_proxy_name",
    "channel.without_namespace.publish_proxy_enabled", "channel.without_namespace.publish_proxy_name",
    "channel.without_namespace.sub_refresh_proxy_enabled", "channel.without_namespace.sub_refresh_proxy_name",
    "channel.without_namespace.subscribe_stream_proxy_enabled",
    "channel.without_namespace.subscribe_stream_proxy_name",
    "channel.without_namespace.subscribe_stream_proxy_bidirectional",
    "rpc.without_namespace.proxy_enabled", "rpc.without_namespace.proxy_name", "rpc.namespaces[].name",
    "rpc.namespace_boundary", "rpc.ping.enabled", "rpc.ping.method", "proxies[].name",
    "<proxy>.endpoint", "<proxy>.timeout", "<proxy>.http_headers", "<proxy>.emulated_headers",
    "<proxy>.grpc_metadata", "<proxy>.binary_encoding", "<proxy>.include_connection_meta",
    // TLS to HTTP proxies is refused at start-up: `enabled` is off in the file, the rest kept.
    "<proxy>.http.tls.enabled", "<proxy>.http.tls.cert_pem", "<proxy>.http.tls.key_pem",
    "<proxy>.http.tls.server_ca_pem", "<proxy>.http.tls.client_ca_pem", "<proxy>.http.tls.insecure_skip_verify",
    "<proxy>.http.tls.server_name", "<proxy>.http.static_headers",
    "<proxy>.http.status_to_code_transforms[0].status_code",
    "<proxy>.http.status_to_code_transforms[0].to_error.code",
    "<proxy>.http.status_to_code_transforms[0].to_error.message",
    "<proxy>.http.status_to_code_transforms[0].to_error.temporary",
    "<proxy>.http.status_to_code_transforms[0].to_disconnect.code",
    "<proxy>.http.status_to_code_transforms[0].to_disconnect.reason",
    // `insecure_skip_verify` is refused at start-up: off in the file.
    "<proxy>.grpc.tls.enabled", "<proxy>.grpc.tls.cert_pem", "<proxy>.grpc.tls.key_pem",
    "<proxy>.grpc.tls.server_ca_pem", "<proxy>.grpc.tls.client_ca_pem", "<proxy>.grpc.tls.insecure_skip_verify",
    "<proxy>.grpc.tls.server_name", "<proxy>.grpc.credentials_key", "<proxy>.grpc.credentials_value",
    "<proxy>.grpc.compression", "<proxy>.grpc.static_metadata",
];

/// Where a proxy object is configured (besides the items of `proxies`).
const PROXY_PLACES: &[&str] = &[
    "client.proxy.connect",
    "client.proxy.refresh",
    "channel.proxy.subscribe",
    "channel.proxy.publish",
    "channel.proxy.sub_refresh",
    "channel.proxy.subscribe_stream",
    "channel.proxy.map_publish",
    "channel.proxy.map_remove",
    "channel.proxy.shared_poll_refresh",
    "rpc.proxy",
];

/// Options whose value is a map: one name for all their keys.
const MAPS: &[&str] = &["http.static_headers", "grpc.static_metadata"];

/// Gyre's options that Centrifugo does not have.
#[rustfmt::skip]
const GYRE_ONLY: &[&str] = &[
    "workers", "driver", "http_server.max_head_size", "http_server.idle_timeout", "engine.redis.wait_replicas",
    "http_server.read_header_timeout", "http_api.max_body_size", "http_api.max_command_size",
    "http_api.max_stream_size", "client.command_rate_limit", "gateway.enabled", "gateway.servers",
    "gateway.api_port", "gateway.advertise_address", "gateway.topic_size", "gateway.max_topics",
    "gateway.client_send_topic", "gateway.users", "http_api.v1_secret", "http_api.v1_insecure",
    // SockJS: Centrifugo 3's transport (its `sockjs`, `sockjs_handler_prefix`,
    // `sockjs_heartbeat_delay`, `sockjs_url`), which v6 no longer has.
    "sockjs.enabled", "sockjs.handler_prefix", "sockjs.heartbeat_delay", "sockjs.url",
    // Centrifugo 3's history without a limit for clients of its protocol.
    "client.use_unlimited_history_by_default",
    // Centrifugo PRO's message batching (its names and meaning; not in the open-source server).
    "client.write_delay", "client.max_messages_in_frame", "client.reply_without_queue",
];

/// Leaves of a config tree as (dotted path, value); list elements that are objects are
/// descended into as `path[i]`, other lists are leaves.
fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                leaves(v, p, out);
            }
        }
        Value::Array(a) if a.iter().any(Value::is_object) => {
            for (i, v) in a.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push((path, v.clone())),
    }
}

/// `channel.namespaces[0].presence` → the entry of [`APPLIED`] that covers it.
fn audit_name(path: &str) -> String {
    let item = |list: &str| path.strip_prefix(list).map(|rest| rest.split_once("].").map(|(_, o)| o).unwrap_or(""));
    for (list, options) in
        [("channel.namespaces[", "channel.without_namespace"), ("rpc.namespaces[", "rpc.without_namespace")]
    {
        match item(list) {
            Some("name") => return format!("{}].name", list),
            Some(opt) => return format!("{options}.{opt}"),
            None => {}
        }
    }
    let proxy_option =
        PROXY_PLACES.iter().find_map(|p| path.strip_prefix(p)?.strip_prefix('.')).filter(|o| *o != "enabled");
    match proxy_option.or(item("proxies[")) {
        Some("name") => "proxies[].name".into(),
        Some(opt) => {
            match MAPS.iter().find(|m| opt.strip_prefix(**m).is_some_and(|r| r.is_empty() || r.starts_with('.'))) {
                Some(map) => format!("<proxy>.{map}"),
                None => format!("<proxy>.{opt}"),
            }
        }
        None => path.to_string(),
    }
}

/// A Go duration string (`1h30m`, `1000ms`) in milliseconds; `None` for anything else.
fn millis(s: &str) -> Option<u64> {
    let (mut total, mut num, mut unit) = (0f64, String::new(), String::new());
    let mut flush = |num: &mut String, unit: &mut String| -> Option<()> {
        let n: f64 = num.parse().ok()?;
        let scale = match unit.as_str() {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += n * scale;
        num.clear();
        unit.clear();
        Some(())
    };
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            if !unit.is_empty() {
                flush(&mut num, &mut unit)?;
            }
            num.push(c);
        } else {
            unit.push(c);
        }
    }
    if num.is_empty() || unit.is_empty() {
        return None;
    }
    flush(&mut num, &mut unit)?;
    Some(total as u64)
}

/// Equal as config values: durations by length, the rest as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_str().and_then(millis), b.as_str().and_then(millis)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Runs `gyre <args>`: (success, stdout, stderr).
fn gyre(args: &[&str], file: &Path) -> (bool, String, String) {
    let mut cmd = Command::new(server_binary());
    cmd.args(args).arg(file);
    // The commands read CENTRIFUGO_* / GYRE_* variables: keep the caller's out.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run gyre");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The options named as not supported in `text` (warning lines of checkconfig, or the JSON
/// lines of the log).
fn unsupported_in(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => v["message"].as_str().unwrap_or_default().to_owned(),
            Err(_) => l.to_owned(),
        })
        .filter_map(|l| l.split_once("option \"")?.1.split_once("\" is not supported by Gyre").map(|(o, _)| o.into()))
        .collect()
}

#[test]
fn every_centrifugo_option_is_applied_or_reported() {
    let full: Value = serde_json::from_str(FULL).expect("config_audit.json");
    let dir = std::env::temp_dir().join(format!("gyre-config-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("centrifugo.json");
    std::fs::write(&file, FULL).unwrap();

    // `gyre checkconfig`: valid, every Centrifugo option known (no "unknown option").
    let (ok, _, err) = gyre(&["checkconfig", "-c"], &file);
    assert!(ok, "checkconfig failed: {err}");
    assert!(!err.contains("unknown"), "every Centrifugo option is known to Gyre:\n{err}");
    let reported = unsupported_in(&err);
    assert!(!reported.is_empty(), "{err}");

    // The effective config.
    let (ok, out, err) = gyre(&["defaultconfig", "-d", "-c", "out.json", "-b"], &file);
    assert!(ok, "defaultconfig failed: {err}");
    let effective: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("defaultconfig output: {e}\n{out}"));

    let mut options = Vec::new();
    leaves(&full, String::new(), &mut options);
    assert!(options.len() > 1000, "the whole option tree: {} options", options.len());
    let mut problems = Vec::new();
    let mut applied_seen = std::collections::BTreeSet::new();
    for (path, value) in &options {
        let covered = reported
            .iter()
            .any(|r| path == r || path.strip_prefix(r.as_str()).is_some_and(|rest| rest.starts_with(['.', '['])));
        let name = audit_name(path);
        let applied = APPLIED.contains(&name.as_str());
        match (applied, covered) {
            (true, true) => problems.push(format!("{path}: applied and reported as not supported")),
            (false, false) => problems.push(format!("{path}: neither applied nor reported as not supported")),
            (false, true) => {}
            (true, false) => {
                applied_seen.insert(name);
                let pointer = format!("/{}", path.replace(['.', '['], "/").replace(']', ""));
                match effective.pointer(&pointer) {
                    Some(got) if same(got, value) => {}
                    got => problems.push(format!("{path}: set to {value}, effective {got:?}")),
                }
            }
        }
    }
    for a in APPLIED {
        if !applied_seen.contains(*a) {
            problems.push(format!("{a}: listed as applied but not an option of the file"));
        }
    }
    // Gyre's own options: each audited.
    let mut own = Vec::new();
    leaves(&effective, String::new(), &mut own);
    for (path, _) in &own {
        let name = audit_name(path);
        let gyre_only = GYRE_ONLY.iter().any(|g| name == *g || name.starts_with(&format!("{g}[")));
        if !APPLIED.contains(&name.as_str()) && !gyre_only && path != "channel.namespaces" {
            problems.push(format!("{path}: an option of Gyre's config that this audit does not know"));
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));

    // The server says the same in its start-up log, written to `log.file`.
    let log_file = dir.join("gyre.log");
    let mut full = full;
    full["log"]["file"] = Value::from(log_file.to_string_lossy());
    let s = Server::start(full);
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(s.stderr().is_empty(), "with log.file, nothing on stderr:\n{}", s.stderr());
    let _ = std::fs::remove_dir_all(&dir);
    let mut logged = unsupported_in(&log);
    let mut want = reported.clone();
    logged.sort();
    want.sort();
    assert_eq!(logged, want, "start-up log:\n{log}");
}
