//! Centrifugo v6 options Gyre does not implement, so that a Centrifugo config is told apart
//! from a config with typos: each is reported at start-up (and by `gyre checkconfig`) as "not
//! supported by Gyre", by name, instead of as unknown. Every other Centrifugo v6 option of the
//! open-source server is applied (`tests/it/config_audit.rs` checks both against a config
//! holding every option).

/// Top-level sections: everything under them is unsupported.
#[rustfmt::skip]
pub(crate) const SECTIONS: &[&str] = &[
    "presence_manager", "controller",
    "consumers", "webtransport", "swagger", "debug", "init", "opentelemetry",
    "graphite", "usage_stats", "enable_unreleased_features",
];

/// Options (or whole sub-trees) inside sections Gyre implements.
#[rustfmt::skip]
pub(crate) const OPTIONS: &[&str] = &[
    "http_server.tls_autocert",
    "broker.redis", "broker.postgres", "broker.redisnats",
    // The map broker's own Redis connection (map channels use the Redis engine's; its
    // `prefix` and cleanup options are applied).
    "map_broker.redis.address", "map_broker.redis.connect_timeout", "map_broker.redis.io_timeout",
    "map_broker.redis.db", "map_broker.redis.user", "map_broker.redis.password",
    "map_broker.redis.client_name", "map_broker.redis.force_resp2", "map_broker.redis.cluster_address",
    "map_broker.redis.tls", "map_broker.redis.sentinel_address", "map_broker.redis.sentinel_user",
    "map_broker.redis.sentinel_password", "map_broker.redis.sentinel_master_name",
    "map_broker.redis.sentinel_client_name", "map_broker.redis.sentinel_tls", "map_broker.redis.replica_client",
    "map_broker.redis.skip_pub_sub",
    "map_broker.postgres",
    "broker.nats.tls", "broker.nats.allow_wildcards", "broker.nats.raw_mode",
    "http_server.http3", "http_server.h2c_external",
    "engine.redis.client_name", "engine.redis.force_resp2",
    "engine.redis.replica_client",
    "engine.redis.history_use_lists", "engine.redis.presence_hash_field_ttl",
    "engine.redis.presence_user_mapping",
    "client.presence_update_interval", "client.concurrency", "client.channel_position_check_delay",
    "client.channel_position_max_time_lag", "client.user_id_http_header",
    "channel.publication_data_format",
    "grpc_api.error_mode", "grpc_api.address", "grpc_api.reflection",
    "grpc_api.max_receive_message_size",
    "websocket.read_buffer_size", "websocket.use_write_buffer_pool", "websocket.write_buffer_size",
    "uni_websocket.read_buffer_size", "uni_websocket.use_write_buffer_pool",
    "uni_websocket.write_buffer_size",
    "admin.handler_prefix", "admin.web_path", "admin.web_proxy_address",
    "prometheus.handler_prefix", "prometheus.instrument_http_handlers",
    "prometheus.recovered_publications_histogram", "prometheus.native_histograms",
    "health.handler_prefix",
    "node.info_metrics_aggregate_interval",
];

/// Channel options (of `channel.without_namespace` and of each namespace).
#[rustfmt::skip]
pub(crate) const CHANNEL_OPTIONS: &[&str] = &[
    "publication_data_format",
];

/// Whether the option at `path` (dotted, namespaces as `channel.namespaces[i]`) is a Centrifugo
/// option Gyre does not implement.
pub(super) fn unsupported(path: &str) -> bool {
    if SECTIONS.contains(&path) || OPTIONS.contains(&path) {
        return true;
    }
    let Some((parent, key)) = path.rsplit_once('.') else { return false };
    let channel_options =
        parent == "channel.without_namespace" || (parent.starts_with("channel.namespaces[") && parent.ends_with(']'));
    channel_options && CHANNEL_OPTIONS.contains(&key)
}

/// The unsupported option an environment variable name (without its prefix) sets, if any:
/// the variable spells an unsupported option's path, or a path below it.
pub(super) fn unsupported_env(name: &str) -> Option<String> {
    let env = |p: &str| p.replace('.', "_").to_ascii_uppercase();
    let covers = |p: &str| {
        let e = env(p);
        name == e || name.strip_prefix(e.as_str()).is_some_and(|rest| rest.starts_with('_'))
    };
    if let Some(p) = SECTIONS.iter().chain(OPTIONS).find(|p| covers(p)) {
        return Some(p.to_string());
    }
    let option = |rest: &str| CHANNEL_OPTIONS.iter().find(|o| covers_key(rest, &env(o))).map(|o| o.to_string());
    if let Some(rest) = name.strip_prefix("CHANNEL_WITHOUT_NAMESPACE_") {
        return option(rest).map(|o| format!("channel.without_namespace.{o}"));
    }
    // `CHANNEL_NAMESPACES_<NS>_<OPTION>`: the option is the variable's tail.
    let rest = name.strip_prefix("CHANNEL_NAMESPACES_")?;
    CHANNEL_OPTIONS.iter().find_map(|o| {
        let e = env(o);
        rest.match_indices(e.as_str())
            .any(|(i, _)| i > 0 && rest[..i].ends_with('_') && covers_key(&rest[i..], &e))
            .then(|| format!("channel.namespaces[].{o}"))
    })
}

/// `rest` is the variable of option `e`, or of an option below it (`MAP_KEY_TTL` for `map`).
fn covers_key(rest: &str, e: &str) -> bool {
    rest == e || rest.strip_prefix(e).is_some_and(|r| r.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_variables() {
        assert!(unsupported("webtransport"));
        assert!(!unsupported("client.proxy"));
        assert!(!unsupported("channel.proxy.map_publish"));
        assert!(unsupported("channel.publication_data_format"));
        assert!(!unsupported("channel.proxy.subscribe"));
        assert!(!unsupported("channel.without_namespace.shared_poll"));
        assert!(!unsupported("shared_poll"));
        assert!(!unsupported("channel.without_namespace.subscription_type"));
        assert!(!unsupported("channel.without_namespace.map.client_key"));
        assert!(!unsupported("channel.without_namespace.map.publish_proxy_enabled"));
        assert!(!unsupported("channel.namespaces[0].map.remove_proxy_name"));
        assert!(!unsupported("channel.without_namespace.map.subscribe_catch_up_timeout"));
        assert!(!unsupported("channel.without_namespace.map.key_ttl"));
        assert!(!unsupported("channel.without_namespace.allowed_delta_types"));
        assert!(!unsupported("channel.namespaces[3].map_users_presence_channel_prefix"));
        assert!(unsupported("channel.namespaces[3].publication_data_format"));
        assert!(!unsupported("channel.namespaces[3].presence"));
        assert!(!unsupported("client.proxy_x"));
        assert!(!unsupported("subscription_type"));
        assert_eq!(unsupported_env("CLIENT_PROXY_CONNECT_ENDPOINT"), None);
        assert_eq!(unsupported_env("CHANNEL_PROXY_SHARED_POLL_REFRESH_ENDPOINT"), None);
        assert_eq!(unsupported_env("CHANNEL_PROXY_MAP_PUBLISH_ENDPOINT"), None);
        assert_eq!(
            unsupported_env("CHANNEL_PUBLICATION_DATA_FORMAT").as_deref(),
            Some("channel.publication_data_format")
        );
        assert_eq!(unsupported_env("HTTP_SERVER_TLS_AUTOCERT_ENABLED").as_deref(), Some("http_server.tls_autocert"));
        assert_eq!(unsupported_env("UNI_GRPC_TLS_ENABLED"), None);
        assert_eq!(unsupported_env("UNI_SSE_ENABLED"), None);
        assert_eq!(unsupported_env("WEBSOCKET_READ_BUFFER_SIZE").as_deref(), Some("websocket.read_buffer_size"));
        assert_eq!(unsupported_env("WEBSOCKET_COMPRESSION"), None);
        assert_eq!(unsupported_env("UNI_WEBSOCKET_COMPRESSION_LEVEL"), None);
        assert_eq!(unsupported_env("CHANNEL_WITHOUT_NAMESPACE_SHARED_POLL_MODE"), None);
        assert_eq!(
            unsupported_env("CHANNEL_NAMESPACES_CHAT_PUBLICATION_DATA_FORMAT").as_deref(),
            Some("channel.namespaces[].publication_data_format")
        );
        assert_eq!(unsupported_env("CLIENT_PROXYX"), None);
        assert_eq!(unsupported_env("HTTP_API_KYE"), None);
    }
}
