//! Alternative spellings of options, all mapped onto the v6 paths of [`Config`]: Centrifugo v5
//! flat names in config files (`api_key` → `http_api.key`, `admin: true` → `admin.enabled`) and
//! environment variables `CENTRIFUGO_<NAME>` / `GYRE_<NAME>` (GYRE_ wins), where `<NAME>` is a
//! v6 path upper-cased with `.` → `_` or an upper-cased v5 name. Env values are converted to the
//! option's type (taken from the default config); the lists of named objects (namespaces,
//! `proxies`, RPC namespaces) come from `CHANNEL_NAMESPACES` / `PROXIES` / `RPC_NAMESPACES`
//! (names or a JSON array) and their items' options from `<LIST>_<NAME>_<OPTION>`
//! (`CHANNEL_NAMESPACES_CHAT_PRESENCE`, `PROXIES_AUTH_HTTP_STATIC_HEADERS`).
//!
//! [`Config`]: super::super::Config

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Number, Value};

use super::{get_path, merge, old_names, proxy_v5, set_path, Origins, Schema};
use crate::config::schema::{env_name, item_env_name as ns_env_name, leaf_paths, LISTS};
use crate::config::weak::{parse_bool, parse_int};
use crate::error::Error;

/// In increasing precedence.
const PREFIXES: [&str; 2] = ["CENTRIFUGO_", "GYRE_"];
const NS_LIST_V5: &str = "NAMESPACES";
const NS_PATH: &str = "channel.namespaces";

/// v5 flat option → v6 path, besides the channel options, which map by name onto
/// `channel.without_namespace.*` (see [`v6_path`]). Also the v5 env names (`CENTRIFUGO_API_KEY`).
#[rustfmt::skip]
const FLAT: &[(&str, &str)] = &[
    ("port",                                  "http_server.port"),
    ("address",                               "http_server.address"),
    ("internal_port",                         "http_server.internal_port"),
    ("internal_address",                      "http_server.internal_address"),
    ("api_external",                          "http_api.external"),
    ("admin_external",                        "admin.external"),
    ("api_key",                               "http_api.key"),
    ("api_insecure",                          "http_api.insecure"),
    ("api_error_mode",                        "http_api.error_mode"),
    ("api_handler_prefix",                    "http_api.handler_prefix"),
    ("token_hmac_secret_key",                 "client.token.hmac_secret_key"),
    ("token_audience",                        "client.token.audience"),
    ("token_issuer",                          "client.token.issuer"),
    ("token_user_id_claim",                   "client.token.user_id_claim"),
    ("separate_subscription_token_config",    "client.subscription_token.enabled"),
    ("subscription_token_hmac_secret_key",    "client.subscription_token.hmac_secret_key"),
    ("token_rsa_public_key",                  "client.token.rsa_public_key"),
    ("token_ecdsa_public_key",                "client.token.ecdsa_public_key"),
    ("token_jwks_public_endpoint",            "client.token.jwks_public_endpoint"),
    ("token_audience_regex",                  "client.token.audience_regex"),
    ("token_issuer_regex",                    "client.token.issuer_regex"),
    ("subscription_token_rsa_public_key",     "client.subscription_token.rsa_public_key"),
    ("subscription_token_ecdsa_public_key",   "client.subscription_token.ecdsa_public_key"),
    ("subscription_token_jwks_public_endpoint", "client.subscription_token.jwks_public_endpoint"),
    ("subscription_token_audience",           "client.subscription_token.audience"),
    ("subscription_token_audience_regex",     "client.subscription_token.audience_regex"),
    ("subscription_token_issuer",             "client.subscription_token.issuer"),
    ("subscription_token_issuer_regex",       "client.subscription_token.issuer_regex"),
    ("subscription_token_user_id_claim",      "client.subscription_token.user_id_claim"),
    ("allowed_origins",                       "client.allowed_origins"),
    ("client_insecure",                       "client.insecure"),
    ("client_channel_limit",                  "client.channel_limit"),
    ("ping_interval",                         "client.ping_interval"),
    ("pong_timeout",                          "client.pong_timeout"),
    ("client_queue_max_size",                 "client.queue_max_size"),
    // Centrifugo PRO v5's message batching.
    ("client_write_delay",                    "client.write_delay"),
    ("client_max_messages_in_frame",          "client.max_messages_in_frame"),
    ("client_reply_without_queue",            "client.reply_without_queue"),
    ("client_anonymous",                      "client.allow_anonymous_connect_without_token"),
    ("allow_anonymous_connect_without_token", "client.allow_anonymous_connect_without_token"),
    ("disallow_anonymous_connection_tokens",  "client.disallow_anonymous_connection_tokens"),
    ("client_user_connection_limit",          "client.user_connection_limit"),
    ("client_connection_limit",               "client.connection_limit"),
    ("client_connection_rate_limit",          "client.connection_rate_limit"),
    ("client_connection_limit",               "client.connection_limit"),
    ("client_expired_close_delay",            "client.expired_close_delay"),
    ("client_expired_sub_close_delay",        "client.expired_sub_close_delay"),
    ("client_stale_close_delay",              "client.stale_close_delay"),
    ("client_history_max_publication_limit",  "client.history_max_publication_limit"),
    ("client_recovery_max_publication_limit", "client.recovery_max_publication_limit"),
    ("user_subscribe_to_personal",            "client.subscribe_to_user_personal_channel.enabled"),
    ("user_personal_channel_namespace",       "client.subscribe_to_user_personal_channel.personal_channel_namespace"),
    ("user_personal_single_connection",       "client.subscribe_to_user_personal_channel.single_connection"),
    ("channel_max_length",                    "channel.max_length"),
    ("channel_private_prefix",                "channel.private_prefix"),
    ("channel_namespace_boundary",            "channel.namespace_boundary"),
    ("channel_user_boundary",                 "channel.user_boundary"),
    ("channel_user_separator",                "channel.user_separator"),
    // Global in v5 as in v6; a namespace's own value still overrides it.
    ("history_meta_ttl",                      "channel.history_meta_ttl"),
    ("namespaces",                            "channel.namespaces"),
    // v5 proxy switches of channels without namespace (`proxy_stream_subscribe` is what v5
    // read for these; `proxy_subscribe_stream` is its name in namespaces).
    ("proxy_subscribe",                       "channel.without_namespace.subscribe_proxy_enabled"),
    ("proxy_publish",                         "channel.without_namespace.publish_proxy_enabled"),
    ("proxy_sub_refresh",                     "channel.without_namespace.sub_refresh_proxy_enabled"),
    ("proxy_subscribe_stream",                "channel.without_namespace.subscribe_stream_proxy_enabled"),
    ("proxy_stream_subscribe",                "channel.without_namespace.subscribe_stream_proxy_enabled"),
    ("proxy_subscribe_stream_bidirectional",  "channel.without_namespace.subscribe_stream_proxy_bidirectional"),
    ("rpc_namespace_boundary",                "rpc.namespace_boundary"),
    ("use_unlimited_history_by_default",      "client.use_unlimited_history_by_default"),
    // Centrifugo 3's SockJS options.
    ("sockjs_handler_prefix",                 "sockjs.handler_prefix"),
    ("sockjs_heartbeat_delay",                "sockjs.heartbeat_delay"),
    ("sockjs_url",                            "sockjs.url"),
    // v5 spellings of channel options.
    ("publish",                               "channel.without_namespace.allow_publish_for_client"),
    ("subscribe_to_publish",                  "channel.without_namespace.allow_publish_for_subscriber"),
    ("anonymous",                             "channel.without_namespace.allow_subscribe_for_anonymous"),
    ("history_recover",                       "channel.without_namespace.force_recovery"),
    ("admin_password",                        "admin.password"),
    ("admin_secret",                          "admin.secret"),
    ("admin_insecure",                        "admin.insecure"),
    ("redis_address",                         "engine.redis.address"),
    ("redis_prefix",                          "engine.redis.prefix"),
    ("redis_password",                        "engine.redis.password"),
    ("redis_user",                            "engine.redis.user"),
    ("redis_db",                              "engine.redis.db"),
    ("redis_connect_timeout",                 "engine.redis.connect_timeout"),
    ("redis_io_timeout",                      "engine.redis.io_timeout"),
    ("redis_presence_ttl",                    "engine.redis.presence_ttl"),
    ("redis_tls",                             "engine.redis.tls.enabled"),
    ("redis_tls_skip_verify",                 "engine.redis.tls.insecure_skip_verify"),
    ("redis_sentinel_address",                "engine.redis.sentinel_address"),
    ("redis_sentinel_master_name",            "engine.redis.sentinel_master_name"),
    ("redis_sentinel_password",               "engine.redis.sentinel_password"),
    ("grpc_api_port",                         "grpc_api.port"),
    ("grpc_api_key",                          "grpc_api.key"),
    ("log_level",                             "log.level"),
    ("shutdown_timeout",                      "shutdown.timeout"),
    ("websocket_message_size_limit",          "websocket.message_size_limit"),
    ("websocket_write_timeout",               "websocket.write_timeout"),
    ("websocket_disable",                     "websocket.disabled"),
    ("uni_websocket_message_size_limit",      "uni_websocket.message_size_limit"),
    ("uni_grpc_port",                         "uni_grpc.port"),
    ("uni_grpc_address",                      "uni_grpc.address"),
    ("uni_grpc_max_receive_message_size",     "uni_grpc.max_receive_message_size"),
    ("name",                                  "node.name"),
    ("nats_url",                              "broker.nats.url"),
    ("nats_prefix",                           "broker.nats.prefix"),
    ("nats_dial_timeout",                     "broker.nats.dial_timeout"),
    ("nats_write_timeout",                    "broker.nats.write_timeout"),
];

/// v5 scalars named like a v6 section (`admin: true` vs `admin: {...}`): a non-object value
/// goes to this path.
const SCALAR_SECTIONS: &[(&str, &str)] = &[
    ("admin", "admin.enabled"),
    ("engine", "engine.type"),
    ("grpc_api", "grpc_api.enabled"),
    ("prometheus", "prometheus.enabled"),
    ("health", "health.enabled"),
    ("sse", "sse.enabled"),
    ("http_stream", "http_stream.enabled"),
    ("uni_websocket", "uni_websocket.enabled"),
    ("uni_sse", "uni_sse.enabled"),
    ("uni_http_stream", "uni_http_stream.enabled"),
    ("uni_grpc", "uni_grpc.enabled"),
    ("sockjs", "sockjs.enabled"),
];

/// v5 names that meant something in Centrifugo but have no effect here.
const IGNORED_V5: &[&str] = &["client_concurrency"];

/// Namespace option names used by v5 configs.
const NAMESPACE_ALIASES: &[(&str, &str)] = &[
    ("publish", "allow_publish_for_client"),
    ("subscribe_to_publish", "allow_publish_for_subscriber"),
    ("anonymous", "allow_subscribe_for_anonymous"),
    ("history_recover", "force_recovery"),
    ("proxy_subscribe", "subscribe_proxy_enabled"),
    ("proxy_publish", "publish_proxy_enabled"),
    ("proxy_sub_refresh", "sub_refresh_proxy_enabled"),
    ("proxy_subscribe_stream", "subscribe_stream_proxy_enabled"),
    ("proxy_subscribe_stream_bidirectional", "subscribe_stream_proxy_bidirectional"),
];

/// v5 flat name → v6 path, for a value of this shape.
pub(super) fn v6_path(name: &str, value: &Value, schema: &Schema) -> Option<String> {
    if !value.is_object() {
        if let Some((_, p)) = SCALAR_SECTIONS.iter().find(|(k, _)| *k == name) {
            return Some(p.to_string());
        }
    }
    if let Some((_, p)) = FLAT.iter().chain(crate::config::tls::V5_NAMES).find(|(k, _)| *k == name) {
        return Some(p.to_string());
    }
    // A v5 channel option at the top level, unless v6 has a section of that name
    // (`shared_poll` is both).
    (name != "name" && schema.namespace.get(name).is_some() && schema.root.get(name).is_none())
        .then(|| format!("channel.without_namespace.{name}"))
}

/// Renames v5 option names inside one namespace object.
fn normalize_namespace(ns: &mut Value) {
    if let Value::Object(obj) = ns {
        for (old, new) in NAMESPACE_ALIASES {
            if let Some(v) = obj.remove(*old) {
                obj.entry(*new).or_insert(v);
            }
        }
    }
}

/// Maps the file's v5 flat names to v6 paths. v6 sections are merged last, so a v6 value wins
/// over the v5 spelling of the same option; unknown keys stay for the unknown-key walk.
pub(super) fn normalize_file(
    root: Value,
    schema: &Schema,
    file: &Path,
    warnings: &mut Vec<String>,
    origins: &mut Origins,
) -> Result<Value, Error> {
    let Value::Object(mut root) = root else {
        return Ok(root);
    };
    let mut out = Value::Object(Map::new());
    let proxies = proxy_v5::take(&mut root, warnings)
        .map_err(|e| Error::config(format!("config file {}: {e}", file.display())))?;
    let old = old_names::take(&mut root, warnings);
    for (path, value, key) in proxies.into_iter().chain(old) {
        origins.record(path.as_str(), format!("option \"{key}\" in {}", file.display()));
        set_path(&mut out, &path, value);
    }
    let mut v6 = Map::new();
    let (mut host, mut port) = (None, None);
    for (key, value) in root {
        if IGNORED_V5.contains(&key.as_str()) {
            warnings.push(format!("option \"{key}\" has no effect in Gyre (ignored)"));
        } else if key == "broker" && !value.is_object() {
            // v5 `broker: nats` switched the broker on.
            origins.record("broker.type", format!("option \"broker\" in {}", file.display()));
            set_path(&mut out, "broker.enabled", Value::Bool(true));
            set_path(&mut out, "broker.type", value);
        } else if key == "redis_host" {
            host = Some(value);
        } else if key == "redis_port" {
            port = Some(value);
        } else if let Some(path) = v6_path(&key, &value, schema) {
            origins.record(path.as_str(), format!("option \"{key}\" in {}", file.display()));
            set_path(&mut out, &path, value);
        } else {
            v6.insert(key, value);
        }
    }
    if (host.is_some() || port.is_some()) && get_path(&out, "engine.redis.address").is_none() {
        let text = |v: Option<Value>, default: &str| match v {
            Some(Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => default.to_owned(),
        };
        let addr = format!("redis://{}:{}", text(host, "127.0.0.1"), text(port, "6379"));
        origins.record("engine.redis.address", "options \"redis_host\"/\"redis_port\"");
        set_path(&mut out, "engine.redis.address", Value::from(addr));
    }
    merge(&mut out, Value::Object(v6));
    Ok(out)
}

/// Shape fix-ups that apply whatever the source: a single Redis address may be a string,
/// v5 option names inside namespaces.
pub(super) fn coerce(tree: &mut Value) {
    if let Some(Value::Object(redis)) = tree.pointer_mut("/engine/redis") {
        if let Some(addr) = redis.get_mut("address") {
            if addr.is_string() {
                *addr = Value::Array(vec![addr.take()]);
            }
        }
    }
    if let Some(Value::Array(nss)) = tree.pointer_mut("/channel/namespaces") {
        nss.iter_mut().for_each(normalize_namespace);
    }
}

/// Variable name (without prefix) → (v6 path, 0 for a v5 name / 1 for a v6 name).
fn names(schema: &Schema) -> HashMap<String, (String, u8)> {
    let mut map = HashMap::new();
    for key in schema.namespace.as_object().into_iter().flat_map(|o| o.keys()) {
        if key != "name" {
            let path = format!("channel.without_namespace.{key}");
            map.insert(key.to_ascii_uppercase(), (path, 0));
        }
    }
    for (flat, path) in FLAT.iter().chain(crate::config::tls::V5_NAMES).chain(SCALAR_SECTIONS) {
        map.insert(flat.to_ascii_uppercase(), (path.to_string(), 0));
    }
    let mut leaves = Vec::new();
    leaf_paths(&schema.root, String::new(), &mut leaves);
    for path in leaves.into_iter().filter(|p| LISTS.iter().all(|(_, l)| l != p)) {
        map.insert(env_name(&path), (path, 1));
    }
    map
}

/// Converts a variable's text to the type of the option's default value.
pub(super) fn convert(raw: &str, target: Option<&Value>) -> Result<Value, String> {
    let t = raw.trim();
    match target {
        Some(Value::Bool(_)) => parse_bool(t).map(Value::Bool).ok_or_else(|| "expected true or false".into()),
        Some(Value::Number(_)) => {
            if let Some(n) = parse_int(t) {
                Ok(n)
            } else {
                t.parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| "expected a number".into())
            }
        }
        Some(Value::Array(_)) if t.starts_with('[') => {
            serde_json::from_str::<Vec<Value>>(t).map(Value::Array).map_err(|e| format!("invalid JSON array: {e}"))
        }
        Some(Value::Array(_)) => Ok(Value::Array(t.split_whitespace().map(Value::from).collect())),
        Some(Value::String(_)) => Ok(Value::String(raw.to_owned())),
        _ => Ok(serde_json::from_str(t).unwrap_or_else(|_| Value::String(raw.to_owned()))),
    }
}

/// A list of named objects from a variable: a JSON array (of objects or names) replaces the
/// list; space-separated names keep the options of same-named items already configured.
fn named_list(tree: &Value, path: &str, raw: &str) -> Result<Value, String> {
    let named = |n: &str| Value::Object(Map::from_iter([("name".to_owned(), Value::from(n))]));
    if raw.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(raw).map_err(|e| format!("invalid JSON array: {e}"))?;
        return Ok(Value::Array(
            items.into_iter().map(|v| if let Value::String(s) = v { named(&s) } else { v }).collect(),
        ));
    }
    let existing = get_path(tree, path).and_then(Value::as_array);
    Ok(Value::Array(
        raw.split_whitespace()
            .map(|n| {
                existing
                    .and_then(|list| list.iter().find(|ns| ns.get("name").and_then(Value::as_str) == Some(n)))
                    .cloned()
                    .unwrap_or_else(|| named(n))
            })
            .collect(),
    ))
}

/// `<LIST>_<NAME>_<OPTION>` (`rest` = `<NAME>_<OPTION>`) of the list at `list`: the longest
/// configured item name whose env name prefixes `rest` and leaves a known option of an item.
fn apply_item_option(
    tree: &mut Value,
    (var, list, rest, raw): (&str, &str, &str, &str),
    schema: &Schema,
    origins: &mut Origins,
) -> Result<bool, Error> {
    let element = schema.element(list).unwrap_or(&Value::Null);
    let mut options = Vec::new();
    leaf_paths(element, String::new(), &mut options);
    let Some(Value::Array(items)) = get_path(tree, list) else {
        return Ok(false);
    };
    let mut best: Option<(usize, usize, String)> = None;
    for (i, item) in items.iter().enumerate() {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            continue;
        };
        let norm = ns_env_name(name);
        let Some(opt) = rest.strip_prefix(norm.as_str()).and_then(|r| r.strip_prefix('_')) else {
            continue;
        };
        let known = options.iter().find(|k| *k != "name" && env_name(k) == opt);
        if let Some(key) = known {
            if best.as_ref().is_none_or(|b| norm.len() > b.1) {
                best = Some((i, norm.len(), key.clone()));
            }
        }
    }
    let Some((i, _, key)) = best else {
        return Ok(false);
    };
    let path = format!("{list}[{i}].{key}");
    let value = convert(raw, get_path(element, &key))
        .map_err(|why| Error::config(format!("environment variable {var}={raw:?} (option {path}): {why}")))?;
    let pointer = format!("/{}/{i}", list.replace('.', "/"));
    if let Some(item @ Value::Object(_)) = tree.pointer_mut(&pointer) {
        set_path(item, &key, value);
    }
    origins.record(path, format!("environment variable {var}"));
    Ok(true)
}

/// Overlays the `CENTRIFUGO_*`/`GYRE_*` variables in `env` onto `tree` (v6 layout).
pub(super) fn apply(
    tree: &mut Value,
    env: &[(String, String)],
    schema: &Schema,
    warnings: &mut Vec<String>,
    origins: &mut Origins,
) -> Result<(), Error> {
    let names = names(schema);
    // (prefix rank, v5=0/v6=1, var, path, value, v5 proxy option): applied in that order so
    // later ones win.
    type Direct<'a> = (usize, u8, &'a str, String, &'a str, Option<String>);
    let mut direct: Vec<Direct> = Vec::new();
    let mut item_options: Vec<(usize, &str, &str, &str, &str)> = Vec::new();
    let mut unknown = Vec::new();
    for (var, raw) in env {
        let Some((rank, name)) = PREFIXES.iter().enumerate().find_map(|(i, p)| var.strip_prefix(p).map(|n| (i, n)))
        else {
            continue;
        };
        if super::kubernetes::is_service_link(name, raw) {
            continue;
        }
        let v5_proxy = name.to_ascii_lowercase();
        let item = |(list, path): &(&str, &'static str)| {
            name.strip_prefix(list).and_then(|r| r.strip_prefix('_')).map(|rest| (*path, rest))
        };
        if name == NS_LIST_V5 {
            direct.push((rank, 0, var, NS_PATH.into(), raw, None));
        } else if let Some((_, path)) = LISTS.iter().find(|(list, _)| *list == name) {
            direct.push((rank, 1, var, path.to_string(), raw, None));
        } else if let Some((path, kind)) = names.get(name) {
            direct.push((rank, *kind, var, path.clone(), raw, None));
        } else if let Some(path) = proxy_v5::flat_type(&v5_proxy) {
            direct.push((rank, 0, var, path, raw, Some(v5_proxy)));
        } else if let Some((list, rest)) = LISTS.iter().find_map(item) {
            item_options.push((rank, var, list, rest, raw));
        } else {
            unknown.push(var.as_str());
        }
    }
    direct.sort_by_key(|d| (d.0, d.1));
    for (_, _, var, path, raw, v5_proxy) in direct {
        let value = if LISTS.iter().any(|(_, l)| *l == path) {
            named_list(tree, &path, raw)
        } else {
            convert(raw, get_path(&schema.root, &path))
        }
        .map_err(|why| Error::config(format!("environment variable {var}={raw:?} (option {path}): {why}")))?;
        let set = match v5_proxy {
            Some(key) => proxy_v5::flat(&key, &value).unwrap_or_default(),
            None => vec![(path, value)],
        };
        for (path, value) in set {
            set_path(tree, &path, value);
            origins.record(path, format!("environment variable {var}"));
        }
    }
    item_options.sort_by_key(|o| o.0);
    for (_, var, list, rest, raw) in item_options {
        if !apply_item_option(tree, (var, list, rest, raw), schema, origins)? {
            unknown.push(var);
        }
    }
    unknown.sort_unstable();
    warnings.extend(unknown.into_iter().map(|v| {
        let name = PREFIXES.iter().find_map(|p| v.strip_prefix(p)).unwrap_or(v);
        match super::centrifugo::unsupported_env(name) {
            Some(option) => format!("environment variable {v}: option \"{option}\" is not supported by Gyre (ignored)"),
            None => format!("unknown environment variable {v} (ignored)"),
        }
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, err, file, load_file};
    use serde_json::json;

    fn file_load(ext: &str, text: &str) -> Result<super::super::Loaded, crate::error::Error> {
        let path = file(ext, text);
        let r = load(&LoadOptions { config_path: Some(path.clone()), ..Default::default() });
        let _ = std::fs::remove_file(path);
        r
    }
    use super::super::{load, LoadOptions};
    use serde_json::Value;
    use std::time::Duration;

    fn env(vars: &[(&str, &str)]) -> LoadOptions {
        LoadOptions { env: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    #[test]
    fn v6_and_v5_names() {
        let l = load(&env(&[
            ("CENTRIFUGO_HTTP_API_KEY", "k6"),
            ("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "s"),
            ("CENTRIFUGO_ENGINE_TYPE", "redis"),
            ("CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_PRESENCE", "true"),
            ("CENTRIFUGO_API_INSECURE", "1"),
            ("CENTRIFUGO_HTTP_SERVER_PORT", "9000"),
            ("CENTRIFUGO_CLIENT_PING_INTERVAL", "10s"),
            ("CENTRIFUGO_CLIENT_ALLOWED_ORIGINS", "http://a.com http://b.com"),
            ("CENTRIFUGO_ENGINE_REDIS_ADDRESS", "[\"redis://r1:6379\"]"),
            ("CENTRIFUGO_ADMIN", "true"),
            ("CENTRIFUGO_ADMIN_INSECURE", "true"),
            ("GYRE_WORKERS", "3"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        let c = &l.config;
        assert_eq!(c.http_api.key, "k6");
        assert!(c.http_api.insecure);
        assert_eq!(c.client.token.hmac_secret_key, "s");
        assert_eq!(c.engine.kind, "redis");
        assert_eq!(c.engine.redis.address, vec!["redis://r1:6379"]);
        assert!(c.channel.without_namespace.presence);
        assert_eq!(c.http_server.port, 9000);
        assert_eq!(c.client.ping_interval, Duration::from_secs(10));
        assert_eq!(c.client.allowed_origins, vec!["http://a.com", "http://b.com"]);
        assert!(c.admin.enabled && c.admin.insecure);
        assert_eq!(c.workers, 3);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert!(!l.generated_secrets);
    }

    #[test]
    fn gyre_beats_centrifugo_and_v6_beats_v5() {
        let l = load(&env(&[
            ("GYRE_HTTP_API_KEY", "gyre"),
            ("CENTRIFUGO_HTTP_API_KEY", "centrifugo"),
            ("CENTRIFUGO_TOKEN_HMAC_SECRET_KEY", "v5"),
            ("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "v6"),
        ]))
        .unwrap();
        assert_eq!(l.config.http_api.key, "gyre");
        assert_eq!(l.config.client.token.hmac_secret_key, "v6");
    }

    #[test]
    fn namespaces_from_names_and_options() {
        let l = load(&env(&[
            ("CENTRIFUGO_CHANNEL_NAMESPACES", "chat news.feed chat_x"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_HISTORY_SIZE", "100"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_HISTORY_TTL", "300s"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_X_PRESENCE", "true"),
            ("GYRE_CHANNEL_NAMESPACES_NEWS_FEED_ALLOW_SUBSCRIBE_FOR_CLIENT", "true"),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_NOPE_PRESENCE", "true"),
        ]))
        .unwrap();
        let ns = &l.config.channel.namespaces;
        assert_eq!(ns.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["chat", "news.feed", "chat_x"]);
        assert_eq!(ns[0].options.history_size, 100);
        assert_eq!(ns[0].options.history_ttl, Duration::from_secs(300));
        assert!(!ns[0].options.presence);
        assert!(ns[2].options.presence);
        assert!(ns[1].options.allow_subscribe_for_client);
        assert_eq!(l.warnings, ["unknown environment variable CENTRIFUGO_CHANNEL_NAMESPACES_NOPE_PRESENCE (ignored)"]);
    }

    #[test]
    fn namespaces_from_json() {
        let l = load(&env(&[
            ("CENTRIFUGO_CHANNEL_NAMESPACES", r#"[{"name":"chat","presence":true},"news"]"#),
            ("CENTRIFUGO_CHANNEL_NAMESPACES_NEWS_JOIN_LEAVE", "true"),
        ]))
        .unwrap();
        let ns = &l.config.channel.namespaces;
        assert!(ns[0].options.presence);
        assert_eq!(ns[1].name, "news");
        assert!(ns[1].options.join_leave);
    }

    #[test]
    fn unknown_and_bad_values() {
        let l = load(&env(&[
            ("CENTRIFUGO_HTTP_API_KYE", "x"),
            ("GYRE_LOG", "debug"),
            ("CENTRIFUGO_WEBSOCKET_READ_BUFFER_SIZE", "1024"),
        ]))
        .unwrap();
        assert_eq!(
            l.warnings,
            [
                "unknown environment variable CENTRIFUGO_HTTP_API_KYE (ignored)",
                "environment variable CENTRIFUGO_WEBSOCKET_READ_BUFFER_SIZE: option \"websocket.read_buffer_size\" \
                 is not supported by Gyre (ignored)",
                "unknown environment variable GYRE_LOG (ignored)"
            ]
        );
        let e = load(&env(&[("CENTRIFUGO_HTTP_SERVER_PORT", "abc")])).unwrap_err().message;
        assert!(e.contains("CENTRIFUGO_HTTP_SERVER_PORT") && e.contains("http_server.port"), "{e}");
        let e = load(&env(&[("CENTRIFUGO_PORT", "70000")])).unwrap_err().message;
        assert!(e.contains("http_server.port") && e.contains("CENTRIFUGO_PORT") && e.contains("70000"), "{e}");
        let e = load(&env(&[("CENTRIFUGO_CLIENT_INSECURE", "maybe")])).unwrap_err().message;
        assert!(e.contains("CENTRIFUGO_CLIENT_INSECURE"), "{e}");
        let e = load(&env(&[("CENTRIFUGO_CLIENT_PONG_TIMEOUT", "5x")])).unwrap_err().message;
        assert!(e.contains("client.pong_timeout") && e.contains("CENTRIFUGO_CLIENT_PONG_TIMEOUT"), "{e}");
    }

    #[test]
    fn precedence_flags_env_file_defaults() {
        let text = r#"{"http_server": {"port": 1111}, "api_key": "file", "log_level": "debug"}"#;
        let path = file("json", text);
        let opts = LoadOptions {
            config_path: Some(path.clone()),
            env: vec![("CENTRIFUGO_PORT".into(), "2222".into()), ("CENTRIFUGO_API_KEY".into(), "env".into())],
            flags: vec![("http_server.port".into(), Value::from(3333))],
            ..Default::default()
        };
        let c = load(&opts).unwrap().config;
        assert_eq!(c.http_server.port, 3333);
        assert_eq!(c.http_api.key, "env");
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.client.channel_limit, 128);
        let c = load(&LoadOptions { flags: vec![], ..opts }).unwrap().config;
        assert_eq!(c.http_server.port, 2222);
        let _ = std::fs::remove_file(path);
        let flags = vec![("port".into(), Value::from(4444)), ("admin".into(), Value::Bool(true))];
        let e = load(&LoadOptions { flags, ..Default::default() }).unwrap_err().message;
        assert!(e.contains("admin.password"), "{e}");
        let flags = vec![("port".into(), Value::from(4444)), ("presence".into(), Value::Bool(true))];
        let c = load(&LoadOptions { flags, ..Default::default() }).unwrap().config;
        assert!(c.http_server.port == 4444 && c.channel.without_namespace.presence);
    }

    #[test]
    fn env_namespace_options_apply_to_file_namespaces() {
        let path = file("json", r#"{"namespaces": [{"name": "chat", "presence": true}]}"#);
        let opts = LoadOptions {
            config_path: Some(path.clone()),
            env: vec![("GYRE_CHANNEL_NAMESPACES_CHAT_JOIN_LEAVE".into(), "true".into())],
            ..Default::default()
        };
        let c = load(&opts).unwrap().config;
        assert!(c.channel.namespaces[0].options.presence && c.channel.namespaces[0].options.join_leave);
        let env = vec![("CENTRIFUGO_CHANNEL_NAMESPACES".into(), "chat other".into())];
        let c = load(&LoadOptions { env, ..opts }).unwrap().config;
        assert!(c.channel.namespaces[0].options.presence);
        assert_eq!(c.channel.namespaces[1].name, "other");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn v5_tls_names() {
        // Disabled, so no certificate is read: only the names are checked.
        let l = file_load(
            "json",
            r#"{"tls": false, "tls_cert": "/c.pem", "tls_key_pem": "/k.pem",
            "tls_client_ca": "/ca.pem", "tls_external": true, "grpc_api_tls_cert": "/g.pem",
            "uni_grpc_tls_key": "/u.key"}"#,
        )
        .unwrap();
        check(
            &l.config,
            &[
                ("/http_server/tls/cert_pem", json!("/c.pem")),
                ("/http_server/tls/key_pem", json!("/k.pem")),
                ("/http_server/tls/client_ca_pem", json!("/ca.pem")),
                ("/http_server/tls_external", json!(true)),
                ("/grpc_api/tls/cert_pem", json!("/g.pem")),
                ("/uni_grpc/tls/key_pem", json!("/u.key")),
            ],
        );
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    #[rustfmt::skip]
    fn v5_flat_json() {
        let l = file_load("json", r#"{
            "port": 9000, "address": "127.0.0.1", "api_key": "ak", "api_error_mode": "transport",
            "token_hmac_secret_key": "tk", "token_audience": "aud", "allowed_origins": ["*"],
            "client_insecure": true, "client_channel_limit": 5, "ping_interval": "20s",
            "pong_timeout": 5, "client_anonymous": true, "client_concurrency": 8,
            "presence": true, "history_size": 10, "history_ttl": "300s", "force_recovery": true,
            "publish": true, "anonymous": true, "history_meta_ttl": "1000h",
            "namespaces": [{"name": "chat", "publish": true, "subscribe_to_publish": true}],
            "channel_max_length": 100, "admin": true, "admin_password": "p", "admin_secret": "s",
            "engine": "redis", "redis_host": "r", "redis_port": 6380, "redis_prefix": "x",
            "grpc_api": true, "grpc_api_port": 10001, "prometheus": true, "health": true,
            "log_level": "DEBUG", "user_subscribe_to_personal": true, "shutdown_timeout": "5s",
            "websocket_message_size_limit": 1000, "name": "n1", "client_write_delay": "25ms",
            "client_max_messages_in_frame": -1, "client_reply_without_queue": true,
            "broker": "nats", "nats_url": "nats://n:4223", "nats_prefix": "np", "nats_dial_timeout": "2s"
        }"#).unwrap();
        assert!(l.config.broker.nats(), "v5 `broker: nats` turns the NATS broker on");
        check(&l.config, &[
            ("/http_server/port", json!(9000)),
            ("/broker/nats/url", json!("nats://n:4223")),
            ("/broker/nats/prefix", json!("np")),
            ("/broker/nats/dial_timeout", json!("2s")),
            ("/http_server/address", json!("127.0.0.1")),
            ("/http_api/key", json!("ak")),
            ("/http_api/error_mode", json!("transport")),
            ("/client/token/hmac_secret_key", json!("tk")),
            ("/client/token/audience", json!("aud")),
            ("/client/allowed_origins", json!(["*"])),
            ("/client/insecure", json!(true)),
            ("/client/allow_anonymous_connect_without_token", json!(true)),
            ("/client/channel_limit", json!(5)),
            ("/client/write_delay", json!("25ms")),
            ("/client/max_messages_in_frame", json!(-1)),
            ("/client/reply_without_queue", json!(true)),
            ("/client/ping_interval", json!("20s")),
            ("/client/pong_timeout", json!("5s")),
            ("/channel/without_namespace/presence", json!(true)),
            ("/channel/without_namespace/history_size", json!(10)),
            ("/channel/without_namespace/history_ttl", json!("5m")),
            ("/channel/without_namespace/force_recovery", json!(true)),
            ("/channel/without_namespace/allow_publish_for_client", json!(true)),
            ("/channel/without_namespace/allow_subscribe_for_anonymous", json!(true)),
            ("/channel/history_meta_ttl", json!("1000h")),
            ("/channel/namespaces/0/name", json!("chat")),
            ("/channel/namespaces/0/allow_publish_for_client", json!(true)),
            ("/channel/namespaces/0/allow_publish_for_subscriber", json!(true)),
            ("/channel/max_length", json!(100)),
            ("/admin", json!({"enabled": true, "password": "p", "secret": "s", "insecure": false, "external": false})),
            ("/engine/type", json!("redis")),
            ("/engine/redis/address", json!(["redis://r:6380"])),
            ("/engine/redis/prefix", json!("x")),
            ("/grpc_api/enabled", json!(true)),
            ("/grpc_api/port", json!(10001)),
            ("/prometheus/enabled", json!(true)),
            ("/health/enabled", json!(true)),
            ("/log/level", json!("debug")),
            ("/client/subscribe_to_user_personal_channel/enabled", json!(true)),
            ("/shutdown/timeout", json!("5s")),
            ("/websocket/message_size_limit", json!(1000)),
            ("/node/name", json!("n1")),
        ]);
        assert_eq!(l.warnings, ["option \"client_concurrency\" has no effect in Gyre (ignored)"]);
        assert!(!l.generated_secrets);
    }

    /// permessage-deflate options of both WebSocket transports: applied from the file and the
    /// environment; a level outside -2..9 stops the start-up naming the option.
    #[test]
    fn websocket_compression_options() {
        let l = load_file(
            "json",
            r#"{"websocket": {"compression": true, "compression_min_size": 100, "compression_level": -2,
                "message_size_limit": 1000},
                "uni_websocket": {"compression": true, "decompressed_message_size_limit": 5000}}"#,
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let (ws, uni) = (&l.config.websocket.deflate, &l.config.uni_websocket.deflate);
        assert!(ws.compression && ws.compression_min_size == 100 && ws.compression_level == -2);
        assert_eq!(ws.inflate_limit(l.config.websocket.message_size_limit), 10_000);
        assert!(uni.compression && uni.compression_level == 1 && uni.inflate_limit(65536) == 5000);
        check(&l.config, &[("/websocket/compression_level", json!(-2)), ("/uni_websocket/compression", json!(true))]);
        let l = load(&LoadOptions {
            env: vec![
                ("CENTRIFUGO_WEBSOCKET_COMPRESSION".into(), "true".into()),
                ("CENTRIFUGO_WEBSOCKET_COMPRESSION_LEVEL".into(), "9".into()),
                ("CENTRIFUGO_UNI_WEBSOCKET_COMPRESSION_MIN_SIZE".into(), "7".into()),
            ],
            ..Default::default()
        })
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert!(l.config.websocket.deflate.compression && l.config.websocket.deflate.compression_level == 9);
        assert_eq!(l.config.uni_websocket.deflate.compression_min_size, 7);
        for (text, want) in [
            (r#"{"websocket": {"compression_level": 10}}"#, "websocket.compression_level: must be between -2"),
            (r#"{"websocket": {"compression_level": -3}}"#, "got -3"),
            (r#"{"uni_websocket": {"compression_level": 12}}"#, "uni_websocket.compression_level"),
            (r#"{"websocket": {"compression_level": "fast"}}"#, "\"websocket.compression_level\""),
        ] {
            let e = err("json", text);
            assert!(e.contains(want), "{text}: {e}");
        }
        for level in crate::config::WsCompression::LEVELS {
            let text = format!(r#"{{"websocket": {{"compression_level": {level}}}}}"#);
            assert!(load_file("json", &text).is_ok(), "{level}");
        }
        // The buffer options next to them are still reported.
        let l = load_file("json", r#"{"uni_websocket": {"write_buffer_size": 1}}"#).unwrap();
        assert_eq!(l.warnings, ["option \"uni_websocket.write_buffer_size\" is not supported by Gyre (ignored)"]);
    }
}
