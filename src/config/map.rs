//! Options of map namespaces (`subscription_type: map`) and their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ChannelOptions};

/// `map_broker`: where map channels keep their keys and stream. Centrifugo keeps them in
/// memory on each node unless `map_broker.type` says otherwise; Gyre's default (type unset)
/// keeps them with the engine (the Redis engine's Redis, shared by the nodes; each node's
/// own with the memory engine or the NATS broker).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MapBroker {
    /// "" (with the engine), "memory" (each node's own, whatever the engine) or "redis" (the
    /// Redis engine's Redis; of `map_broker.redis` only `prefix` is applied).
    #[serde(rename = "type")]
    pub kind: String,
    pub redis: MapBrokerRedis,
}

/// `map_broker.redis`: of Centrifugo's separate Redis map broker, what applies to map channels
/// in the Redis engine's Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MapBrokerRedis {
    /// With `type: redis`, the prefix of the map channels' keys ("": `engine.redis.prefix`).
    pub prefix: String,
    /// How often expired keys are removed (0: 1 s; negative: never).
    pub cleanup_interval: DurationOrOff,
    /// Most expired keys removed per channel per sweep (0: 1000).
    pub cleanup_batch_size: usize,
    /// How long a map write's idempotency result is kept (0: 5 minutes).
    #[serde(with = "duration")]
    pub idempotent_result_ttl: Duration,
}

impl MapBrokerRedis {
    /// The expiry sweep's interval (`None`: no sweep).
    pub fn sweep_every(&self) -> Option<Duration> {
        self.cleanup_interval.0.map(|d| if d.is_zero() { Duration::from_secs(1) } else { d })
    }

    pub fn sweep_batch(&self) -> usize {
        if self.cleanup_batch_size == 0 {
            1000
        } else {
            self.cleanup_batch_size
        }
    }

    pub fn result_ttl(&self) -> Duration {
        if self.idempotent_result_ttl.is_zero() {
            Duration::from_secs(300)
        } else {
            self.idempotent_result_ttl
        }
    }
}

impl MapBroker {
    /// Checks `type` against the engine (`redis_engine`: the Redis engine runs, without the
    /// NATS broker).
    pub fn validate(&self, redis_engine: bool) -> Result<(), String> {
        match self.kind.as_str() {
            "" | "memory" => Ok(()),
            "redis" if redis_engine => Ok(()),
            "redis" => Err("map_broker.type: \"redis\" keeps map channels in the Redis engine's Redis: set \
                engine.type \"redis\" (without the NATS broker), or use \"memory\""
                .into()),
            "postgres" => Err("map_broker.type: a PostgreSQL map broker is not supported by Gyre \
                (use \"redis\" with engine.type \"redis\", or \"memory\")"
                .into()),
            other => Err(format!("map_broker.type: unknown map broker {other:?} (use \"memory\" or \"redis\")")),
        }
    }

    /// Each node keeps its map channels in memory although the engine is Redis.
    pub fn memory(&self) -> bool {
        self.kind == "memory"
    }

    /// The prefix of map channels' Redis keys: `map_broker.redis.prefix` with `type: redis`,
    /// else the engine's `prefix`.
    pub fn redis_prefix<'a>(&'a self, engine_prefix: &'a str) -> &'a str {
        if self.kind == "redis" && !self.redis.prefix.is_empty() {
            &self.redis.prefix
        } else {
            engine_prefix
        }
    }
}

/// Options of a map namespace (`subscription_type: map`): the channel keeps keyed state, and a
/// stream of its changes that subscribers catch up from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MapOptions {
    /// `ephemeral` (no recovery: a re-subscribe loads the state again), `recoverable` or
    /// `persistent` (keys without TTL).
    pub mode: String,
    /// A key lives this long after its last publish (0: forever).
    #[serde(with = "duration")]
    pub key_ttl: Duration,
    /// Changes kept in the channel's stream (0: 1000).
    pub stream_size: usize,
    /// How long the stream's changes are kept after the last change (0: 10 minutes).
    #[serde(with = "duration")]
    pub stream_ttl: Duration,
    /// How long a channel's state, stream and epoch live after its last change (0: as long
    /// as the node runs; with Redis, no expiry). A channel past it starts again from no keys
    /// with a new epoch.
    #[serde(with = "duration")]
    pub meta_ttl: Duration,
    pub allow_publish_for_client: bool,
    pub allow_publish_for_subscriber: bool,
    pub allow_publish_for_anonymous: bool,
    pub allow_remove_for_client: bool,
    pub allow_remove_for_subscriber: bool,
    pub allow_remove_for_anonymous: bool,
    /// Page size of the state when the client names none (0: 100).
    pub default_page_size: usize,
    /// Smallest page size a client may ask for (0: 100).
    pub min_page_size: usize,
    /// Largest page size a client may ask for (0: 1000).
    pub max_page_size: usize,
    /// The key a client's publish or remove writes: `client_id` or `user_id` (the server
    /// decides it, whatever key the client names); empty: the client's key.
    pub client_key: String,
    /// A subscriber's key (its client id) is removed when its subscription ends.
    pub remove_client_on_unsubscribe: bool,
    /// Most changes a subscriber going live catches up with (more: 112, it loads the state
    /// again; 0: `max_page_size`).
    pub live_transition_max_publication_limit: usize,
    /// Longest a subscriber may page through the state before going live (else it is
    /// disconnected as slow, 3008); 0: 5 s; negative (`"-1s"`): no limit.
    pub subscribe_catch_up_timeout: DurationOrOff,
    /// `publish_proxy_*`, `remove_proxy_*`.
    #[serde(flatten)]
    pub proxy: super::proxy::MapProxies,
}

impl MapOptions {
    /// The page size for a client's `limit`, as Centrifugo bounds it.
    pub fn page_size(&self, limit: i32) -> usize {
        let or = |v: usize, d: usize| if v == 0 { d } else { v };
        let (def, min, max) =
            (or(self.default_page_size, 100), or(self.min_page_size, 100), or(self.max_page_size, 1000));
        let l = if limit <= 0 { def } else { limit as usize };
        l.max(min).min(max)
    }

    /// The stream's size and TTL.
    pub fn stream(&self) -> (usize, Duration) {
        let size = if self.stream_size == 0 { 1000 } else { self.stream_size };
        let ttl = if self.stream_ttl.is_zero() { Duration::from_secs(600) } else { self.stream_ttl };
        (size, ttl)
    }

    /// Most changes a subscriber going live catches up with.
    pub fn live_transition_limit(&self) -> usize {
        match (self.live_transition_max_publication_limit, self.max_page_size) {
            (0, 0) => 1000,
            (0, max) => max,
            (n, _) => n,
        }
    }

    /// How long a subscriber may page through the state (`None`: no limit).
    pub fn catch_up_timeout(&self) -> Option<Duration> {
        match self.subscribe_catch_up_timeout.0 {
            Some(d) if d.is_zero() => Some(Duration::from_secs(5)),
            other => other,
        }
    }

    /// Subscribers can recover from the stream (not `ephemeral`).
    pub fn recoverable(&self) -> bool {
        self.mode != "ephemeral"
    }
}

impl ChannelOptions {
    /// Subscribers may ask for fossil deltas.
    pub fn fossil_allowed(&self) -> bool {
        self.allowed_delta_types.iter().any(|t| t == "fossil")
    }

    /// History is on when both size and TTL are positive.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }

    /// The namespace's channels are map channels (`subscription_type` `map`, or the presence
    /// maps `map_clients` and `map_users`).
    pub fn is_map(&self) -> bool {
        matches!(self.subscription_type.as_str(), "map" | "map_clients" | "map_users")
    }

    /// The subscribe `type` the namespace's channels take: 0 stream, 1 map, 2 map_clients,
    /// 3 map_users, 4 shared poll.
    pub fn subscription_kind(&self) -> i32 {
        match self.subscription_type.as_str() {
            "map" => 1,
            "map_clients" => 2,
            "map_users" => 3,
            "shared_poll" => 4,
            _ => 0,
        }
    }
}

/// A map's meta TTL when none is set: as long as the node runs.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86400);

/// The meta TTL of a map namespace (`map.meta_ttl`, else no expiry).
pub(super) fn meta_ttl(o: &MapOptions) -> Duration {
    if o.meta_ttl.is_zero() {
        FOREVER
    } else {
        o.meta_ttl
    }
}

/// The checks of a namespace's `subscription_type` and `map` at `at`.
pub(super) fn validate(at: &str, o: &ChannelOptions) -> Result<(), String> {
    if !["", "stream", "map", "map_clients", "map_users", "shared_poll"].contains(&o.subscription_type.as_str()) {
        return Err(format!(
            "{at}.subscription_type: {:?} is not supported by Gyre (stream, map, map_clients, map_users or shared_poll)",
            o.subscription_type
        ));
    }
    if o.is_map() && !["ephemeral", "recoverable", "persistent"].contains(&o.map.mode.as_str()) {
        return Err(format!("{at}.map.mode: must be ephemeral, recoverable or persistent, got {:?}", o.map.mode));
    }
    if o.is_map() && o.map.mode == "persistent" && !o.map.key_ttl.is_zero() {
        return Err(format!("{at}.map.key_ttl must not be set when map.mode is \"persistent\""));
    }
    if o.is_map() && o.map.mode == "ephemeral" && !o.map.meta_ttl.is_zero() {
        return Err(format!("{at}.map.meta_ttl must be 0 for map.mode \"ephemeral\""));
    }
    if o.is_map() && !o.map.meta_ttl.is_zero() && o.map.meta_ttl < o.map.stream().1 {
        return Err(format!(
            "{at}.map.meta_ttl ({:?}) must be >= map.stream_ttl ({:?}): the meta must outlive the stream",
            o.map.meta_ttl,
            o.map.stream().1
        ));
    }
    if !["", "client_id", "user_id"].contains(&o.map.client_key.as_str()) {
        return Err(format!("{at}.map.client_key: unknown {:?} (valid: \"client_id\", \"user_id\")", o.map.client_key));
    }
    let presence = matches!(o.subscription_type.as_str(), "map_clients" | "map_users");
    if presence && o.map.mode == "persistent" {
        return Err(format!(
            "{at}.map.mode \"persistent\" is not allowed with subscription_type {:?} (presence keys need a TTL)",
            o.subscription_type
        ));
    }
    if presence && o.map.key_ttl.is_zero() {
        return Err(format!("{at}.map.key_ttl is required with subscription_type {:?}", o.subscription_type));
    }
    // The proxy names the key when it is on: `client_key` would be overridden unseen.
    for (on, name) in [(o.map.proxy.publish_proxy_enabled, "publish"), (o.map.proxy.remove_proxy_enabled, "remove")] {
        if on && !o.map.client_key.is_empty() {
            return Err(format!(
                "{at}.map.client_key is not compatible with map.{name}_proxy_enabled: the proxy is responsible for keying when enabled"
            ));
        }
    }
    if o.map.remove_client_on_unsubscribe && !o.is_map() {
        return Err(format!("{at}.map.remove_client_on_unsubscribe requires subscription_type to be a map type"));
    }
    Ok(())
}

/// The presence map prefixes of a namespace name namespaces of the matching type
/// (`map_clients`, `map_users`).
pub(super) fn validate_presence(at: &str, o: &ChannelOptions, c: &super::Config) -> Result<(), String> {
    let prefixes = [
        ("map_clients_presence_channel_prefix", &o.map_clients_presence_channel_prefix, "map_clients"),
        ("map_users_presence_channel_prefix", &o.map_users_presence_channel_prefix, "map_users"),
    ];
    for (name, prefix, kind) in prefixes {
        if prefix.is_empty() {
            continue;
        }
        let target = c
            .resolve_channel(&format!("{prefix}x"))
            .map_err(|_| format!("{at}.{name} {prefix:?}: the namespace its channels fall in does not exist"))?;
        if target.options.subscription_type != kind {
            return Err(format!(
                "{at}.{name} {prefix:?}: the namespace its channels fall in must have subscription_type {kind:?} (got {:?})",
                target.options.subscription_type
            ));
        }
    }
    Ok(())
}

/// A duration where a negative one (`"-1s"`, `-1`) turns the thing off (`None`):
/// `map.subscribe_catch_up_timeout`, `map_broker.redis.cleanup_interval`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationOrOff(pub Option<Duration>);

impl Default for DurationOrOff {
    fn default() -> Self {
        DurationOrOff(Some(Duration::ZERO))
    }
}

impl Serialize for DurationOrOff {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_str("-1s"),
        }
    }
}

impl<'de> Deserialize<'de> for DurationOrOff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let negative = match &v {
            serde_json::Value::String(s) => s.trim_start().starts_with('-'),
            serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f < 0.0),
            _ => false,
        };
        if negative {
            return Ok(DurationOrOff(None));
        }
        duration::deserialize(v).map(|d| DurationOrOff(Some(d))).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::MapBroker;

    #[test]
    fn map_broker_types() {
        let b = |kind: &str| MapBroker { kind: kind.into(), ..MapBroker::default() };
        for kind in ["", "memory"] {
            assert!(b(kind).validate(false).is_ok() && b(kind).validate(true).is_ok());
        }
        assert!(b("redis").validate(true).is_ok());
        assert!(b("redis").validate(false).unwrap_err().contains("engine.type"));
        assert!(b("postgres").validate(true).unwrap_err().contains("PostgreSQL map broker is not supported"));
        assert!(b("etcd").validate(true).unwrap_err().contains("unknown map broker"));
        assert!(b("memory").memory() && !b("").memory() && !b("redis").memory());
        let mut r = b("redis");
        assert_eq!(r.redis_prefix("eng"), "eng");
        r.redis.prefix = "mb".into();
        assert_eq!(r.redis_prefix("eng"), "mb");
        let mut m = b("memory");
        m.redis.prefix = "mb".into();
        assert_eq!(m.redis_prefix("eng"), "eng", "only with type redis");
        let r = super::MapBrokerRedis::default();
        assert_eq!(
            (r.sweep_every(), r.sweep_batch(), r.result_ttl().as_secs()),
            (Some(Duration::from_secs(1)), 1000, 300)
        );
        let r: super::MapBrokerRedis = serde_json::from_value(
            serde_json::json!({"cleanup_interval": "-1", "cleanup_batch_size": 5, "idempotent_result_ttl": "1m"}),
        )
        .unwrap();
        assert_eq!((r.sweep_every(), r.sweep_batch(), r.result_ttl().as_secs()), (None, 5, 60));
    }
}
