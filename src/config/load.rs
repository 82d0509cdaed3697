//! Builds the [`Config`] at start-up: reads the config file (JSON, TOML, YAML) into a JSON tree,
//! maps Centrifugo v5 flat names onto v6 nested paths and overlays environment variables (both
//! in [`env`]; the v5 proxy options in `proxy_v5`) and CLI flags, warns about unknown options,
//! deserializes, validates, and fills in random secrets that were left empty. Precedence:
//! flags > env > file > defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

pub(super) use super::schema::{join, Schema};
use super::{duration, ChannelOptions, Config};
use crate::error::Error;

// Children of this module so the name tables and tree helpers stay private to the loader.
#[path = "centrifugo.rs"]
pub(super) mod centrifugo;
#[path = "env.rs"]
mod env;
#[path = "kubernetes.rs"]
mod kubernetes;
#[path = "old_names.rs"]
mod old_names;
#[path = "proxy_v5.rs"]
mod proxy_v5;

/// What to load from. `env` is passed in (normally `std::env::vars().collect()`) so tests can
/// inject variables without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub config_path: Option<PathBuf>,
    /// v6 dotted option path (or a v5 flat name) → value, from the command line.
    pub flags: Vec<(String, Value)>,
    pub env: Vec<(String, String)>,
    /// Leave empty secrets empty: the token and config tools must never sign with, or report,
    /// a key that was made up for this process only.
    pub skip_secret_generation: bool,
}

/// The loaded configuration plus what the operator should be told about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Unknown or ignored options; the server still starts.
    pub warnings: Vec<String>,
    pub path: Option<PathBuf>,
    /// True when any secret below was generated for this run.
    pub generated_secrets: bool,
    /// Option paths whose value was generated (`http_api.key`, `client.token.hmac_secret_key`).
    pub generated: Vec<&'static str>,
}

const MAX_WORKERS: usize = 64;
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "fatal", "none"];

/// Where a value came from, by display path, so errors can name the file key, env var or flag.
#[derive(Default)]
pub(super) struct Origins(Vec<(String, String)>);

impl Origins {
    pub fn record(&mut self, path: impl Into<String>, origin: impl Into<String>) {
        self.0.push((path.into(), origin.into()));
    }

    /// Longest recorded prefix of `path`; among equals the latest (a later source overrode).
    fn find(&self, path: &str) -> Option<&str> {
        let covers = |p: &str| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
        let mut best: Option<&(String, String)> = None;
        for entry in &self.0 {
            if covers(&entry.0) && best.is_none_or(|b| entry.0.len() >= b.0.len()) {
                best = Some(entry);
            }
        }
        best.map(|b| b.1.as_str())
    }
}

/// Sets `root.<path>` creating objects on the way (a non-object in the way is replaced).
pub(super) fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let mut value = Some(value);
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let obj = cur.as_object_mut().expect("object just ensured");
        if parts.peek().is_none() {
            obj.insert(part.to_owned(), value.take().unwrap_or(Value::Null));
            return;
        }
        cur = obj.entry(part).or_insert_with(|| Value::Object(Map::new()));
    }
}

pub(super) fn get_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, part| v.get(part))
}

/// Objects merge key by key; anything else (arrays included) is replaced.
pub(super) fn merge(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => *d = s,
    }
}

fn read_file(path: &Path) -> Result<Value, Error> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::config(format!("config file {shown} not found"))
        } else {
            Error::config(format!("reading config file {shown}: {e}"))
        }
    })?;
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let parsed = match ext.as_str() {
        "json" => serde_json::from_str::<Value>(&text).map_err(|e| format!("invalid JSON: {e}")),
        "toml" => toml::from_str::<Value>(&text).map_err(|e| format!("invalid TOML: {e}")),
        "yaml" | "yml" => serde_norway::from_str::<Value>(&text).map_err(|e| format!("invalid YAML: {e}")),
        _ => Err(format!("unsupported format {ext:?} (use .json, .toml, .yaml or .yml)")),
    }
    .map_err(|why| Error::config(format!("config file {shown}: {}", why.trim_end())))?;
    match parsed {
        Value::Object(_) => Ok(parsed),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(Error::config(format!("config file {shown}: top level must be an object"))),
    }
}

fn warn_unknown(tree: &Value, schema: &Schema, warnings: &mut Vec<String>) {
    fn walk(tree: &Value, known: &Value, path: &str, schema: &Schema, warnings: &mut Vec<String>) {
        let (Value::Object(tree), Value::Object(known)) = (tree, known) else {
            return;
        };
        for (key, value) in tree {
            let p = join(path, key);
            match known.get(key) {
                None if centrifugo::unsupported(&p) => {
                    warnings.push(format!("option \"{p}\" is not supported by Gyre (ignored)"))
                }
                None => warnings.push(format!("unknown option \"{p}\" (ignored)")),
                Some(_) if schema.element(&p).is_some() => {
                    let element = schema.element(&p).unwrap_or(&Value::Null);
                    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                        walk(item, element, &format!("{p}[{i}]"), schema, warnings);
                    }
                }
                // A map (`http.static_headers`): any key is fine.
                Some(Value::Object(k)) if k.is_empty() => {}
                Some(k) => walk(value, k, &p, schema, warnings),
            }
        }
    }
    walk(tree, &schema.root, "", schema, warnings);
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Leaves of the tree (arrays of objects are descended into, other arrays are leaves).
fn leaves<'a>(v: &'a Value, path: &mut Vec<Seg<'a>>, out: &mut Vec<(Vec<Seg<'a>>, &'a Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push(Seg::Key(k));
                leaves(v, path, out);
                path.pop();
            }
        }
        Value::Array(a) if a.iter().any(Value::is_object) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                leaves(v, path, out);
                path.pop();
            }
        }
        _ => out.push((path.clone(), v)),
    }
}

fn display_path(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A tree holding only this leaf (array elements collapse to index 0).
fn isolate(segs: &[Seg], leaf: &Value) -> Value {
    segs.iter().rev().fold(leaf.clone(), |acc, seg| match seg {
        Seg::Key(k) => Value::Object(Map::from_iter([(k.to_string(), acc)])),
        Seg::Index(_) => Value::Array(vec![acc]),
    })
}

/// Deserializes; on failure finds the first leaf that fails on its own, so the error names
/// the option path, its value and where it was set.
fn deserialize(tree: &Value, origins: &Origins, file: Option<&Path>) -> Result<Config, Error> {
    let whole = match Config::deserialize(tree) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let mut out = Vec::new();
    leaves(tree, &mut Vec::new(), &mut out);
    for (segs, leaf) in &out {
        if let Err(e) = Config::deserialize(&isolate(segs, leaf)) {
            let path = display_path(segs);
            let mut msg = format!("invalid value {leaf} for option \"{path}\"");
            if let [Seg::Key("channel"), Seg::Key("namespaces"), Seg::Index(i), ..] = segs.as_slice() {
                if let Some(name) = tree.pointer(&format!("/channel/namespaces/{i}/name")).and_then(Value::as_str) {
                    msg.push_str(&format!(" (namespace \"{name}\")"));
                }
            }
            match (origins.find(&path), file) {
                (Some(origin), _) => msg.push_str(&format!(", set by {origin}")),
                (None, Some(f)) => msg.push_str(&format!(" in {}", f.display())),
                (None, None) => {}
            }
            return Err(Error::config(format!("{msg}: {e}")));
        }
    }
    Err(Error::config(format!("invalid configuration: {whole}")))
}

fn valid_namespace_name(name: &str) -> bool {
    name.len() >= 2 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn validate_channel_options(o: &ChannelOptions, at: &str, global_meta_ttl: std::time::Duration) -> Result<(), String> {
    let fmt = duration::format;
    for (name, d) in [("history_ttl", o.history_ttl), ("history_meta_ttl", o.history_meta_ttl)] {
        if d.subsec_nanos() != 0 {
            return Err(format!("{at}.{name}: malformed duration {}, sub-second precision is not supported", fmt(&d)));
        }
    }
    if (o.history_size > 0) == o.history_ttl.is_zero() {
        return Err(format!("{at}: both history_size and history_ttl are required for history"));
    }
    let meta = if o.history_meta_ttl.is_zero() { global_meta_ttl } else { o.history_meta_ttl };
    if meta < o.history_ttl {
        return Err(format!(
            "{at}.history_ttl ({}) can not be greater than history_meta_ttl ({})",
            fmt(&o.history_ttl),
            fmt(&meta)
        ));
    }
    for (name, on) in [("force_recovery", o.force_recovery), ("allow_recovery", o.allow_recovery)] {
        if on && !o.history_enabled() {
            return Err(format!("{at}.{name}: both history_size and history_ttl are required for recovery"));
        }
    }
    if !["", "stream", "cache"].contains(&o.force_recovery_mode.as_str()) {
        return Err(format!("{at}.force_recovery_mode: unknown recovery mode {:?}", o.force_recovery_mode));
    }
    if let Some(t) = o.allowed_delta_types.iter().find(|t| *t != "fossil") {
        return Err(format!("{at}.allowed_delta_types: unknown delta type {t:?} (only \"fossil\" exists)"));
    }
    super::map::validate(at, o)?;
    if o.auto_cache_recover && (!o.force_recovery || o.force_recovery_mode != "cache") {
        return Err(format!("{at}.auto_cache_recover requires force_recovery and force_recovery_mode set to cache"));
    }
    Ok(())
}

fn validate(c: &Config) -> Result<(), String> {
    if !["", "auto", "io_uring", "epoll"].contains(&c.driver.as_str()) {
        return Err(format!("driver: must be auto, io_uring or epoll, got {:?}", c.driver));
    }
    if c.workers > MAX_WORKERS {
        return Err(format!("workers: at most {MAX_WORKERS} supported, got {}", c.workers));
    }
    if !["memory", "redis"].contains(&c.engine.kind.as_str()) {
        return Err(format!("engine.type: unknown engine {:?} (use \"memory\" or \"redis\")", c.engine.kind));
    }
    if c.broker.enabled {
        match c.broker.kind.as_str() {
            "memory" => {}
            "nats" => drop(super::broker::NatsUrl::parse(&c.broker.nats.url)?),
            "redis" => {
                return Err(
                    "broker.type: a separate Redis broker is not supported by Gyre (use engine.type \"redis\")".into()
                )
            }
            other => return Err(format!("broker.type: unknown broker {other:?} (use \"memory\" or \"nats\")")),
        }
    }
    c.map_broker.validate(c.engine.kind == "redis" && !c.broker.nats())?;
    let internal = c.http_server.internal_port.trim();
    if !internal.is_empty() && internal.parse::<u16>().is_err() {
        return Err(format!("http_server.internal_port: expected a port number (0-65535), got {internal:?}"));
    }
    if c.engine.kind == "redis" && c.engine.redis.address.is_empty() {
        return Err("engine.redis.address: at least one address is required for the redis engine".into());
    }
    for (i, g) in c.gateway.servers.iter().enumerate() {
        if !g.path.starts_with('/') {
            return Err(format!("gateway.servers[{i}].path: must start with '/', got {:?}", g.path));
        }
        if g.topic.is_empty() {
            return Err(format!("gateway.servers[{i}].topic: required"));
        }
    }
    if c.gateway.is_on() && (c.gateway.topic_size == 0 || c.gateway.max_topics == 0) {
        return Err("gateway.topic_size / gateway.max_topics: must be at least 1".into());
    }
    for (i, u) in c.gateway.users.iter().enumerate() {
        let roles_ok = !u.role.is_empty() && u.role.split(',').all(|r| matches!(r.trim(), "read" | "write"));
        if u.name.is_empty() || !roles_ok {
            return Err(format!(
                "gateway.users[{i}]: needs a name and a role of \"read\", \"write\" or \"read,write\""
            ));
        }
    }
    if c.engine.kind == "redis" {
        for ep in super::redis::Endpoint::all(&c.engine.redis)? {
            if ep.tls {
                super::tls::client_config("engine.redis.tls", &c.engine.redis.tls)?;
            }
            if let Some(t) = ep.sentinel.as_ref().and_then(|s| s.tls.as_ref()) {
                super::tls::client_config("engine.redis.sentinel_tls", t)?;
            }
        }
    }
    if !LOG_LEVELS.contains(&c.log.level.as_str()) {
        return Err(format!("log.level: unknown level {:?} (use one of {})", c.log.level, LOG_LEVELS.join(", ")));
    }
    if !["", "transport"].contains(&c.http_api.error_mode.as_str()) {
        return Err(format!(
            "http_api.error_mode: unknown mode {:?} (use \"\" or \"transport\")",
            c.http_api.error_mode
        ));
    }
    for (name, z) in [("websocket", &c.websocket.deflate), ("uni_websocket", &c.uni_websocket.deflate)] {
        if !super::WsCompression::LEVELS.contains(&z.compression_level) {
            return Err(format!(
                "{name}.compression_level: must be between -2 (Huffman only) and 9 (best), got {}",
                z.compression_level
            ));
        }
    }
    let cl = &c.client;
    if c.uni_websocket.join_push_messages {
        return Err("uni_websocket.join_push_messages: joining pushes into one frame is not supported".into());
    }
    let to_disconnect = &cl.connect_code_to_unidirectional_disconnect;
    for (i, t) in to_disconnect.transforms.iter().enumerate().filter(|_| to_disconnect.enabled) {
        if t.code == 0 || t.to.code == 0 || !t.to.reason.is_ascii() {
            return Err(format!(
                "client.connect_code_to_unidirectional_disconnect.transforms[{i}]: code and to.code must be non-zero and to.reason ASCII"
            ));
        }
    }
    for (name, m) in [
        ("uni_sse", &c.uni_sse.connect_code_to_http_response),
        ("uni_http_stream", &c.uni_http_stream.connect_code_to_http_response),
    ] {
        for (i, t) in m.transforms.iter().enumerate().filter(|_| m.enabled) {
            if t.code == 0 || !(100..=599).contains(&t.to.status_code) {
                return Err(format!(
                    "{name}.connect_code_to_http_response.transforms[{i}]: code must be non-zero and to.status_code an HTTP status"
                ));
            }
        }
    }
    if !cl.pong_timeout.is_zero() && cl.ping_interval <= cl.pong_timeout {
        return Err(format!(
            "client.ping_interval ({}) must be greater than client.pong_timeout ({})",
            duration::format(&cl.ping_interval),
            duration::format(&cl.pong_timeout)
        ));
    }
    cl.token.validate("client.token")?;
    if cl.subscription_token.enabled {
        cl.subscription_token.token.validate("client.subscription_token")?;
    }
    if c.admin.enabled && !c.admin.insecure && (c.admin.password.is_empty() || c.admin.secret.is_empty()) {
        return Err(
            "admin.password and admin.secret must be set when admin.enabled is true (or set admin.insecure)".into()
        );
    }
    let ch = &c.channel;
    if ch.max_length == 0 {
        return Err("channel.max_length must be greater than 0".into());
    }
    if ch.history_meta_ttl.subsec_nanos() != 0 {
        return Err("channel.history_meta_ttl: sub-second precision is not supported".into());
    }
    validate_channel_options(&ch.without_namespace, "channel.without_namespace", ch.history_meta_ttl)?;
    super::shared_poll::validate("channel.without_namespace", &ch.without_namespace, c)?;
    super::map::validate_presence("channel.without_namespace", &ch.without_namespace, c)?;
    let personal = &cl.subscribe_to_user_personal_channel;
    let mut personal_ns_found = personal.personal_channel_namespace.is_empty() || !personal.enabled;
    if personal.enabled
        && personal.single_connection
        && personal.personal_channel_namespace.is_empty()
        && !ch.without_namespace.presence
    {
        return Err(
            "client.subscribe_to_user_personal_channel.single_connection requires channel.without_namespace.presence"
                .into(),
        );
    }
    for (i, ns) in ch.namespaces.iter().enumerate() {
        if !valid_namespace_name(&ns.name) {
            return Err(format!(
                "channel.namespaces[{i}]: invalid namespace name {:?} (must match ^[-a-zA-Z0-9_.]{{2,}}$)",
                ns.name
            ));
        }
        if ch.namespaces[..i].iter().any(|n| n.name == ns.name) {
            return Err(format!("channel.namespaces: namespace name must be unique: {}", ns.name));
        }
        let at = format!("channel.namespaces[\"{}\"]", ns.name);
        validate_channel_options(&ns.options, &at, ch.history_meta_ttl)?;
        super::shared_poll::validate(&at, &ns.options, c)?;
        super::map::validate_presence(&at, &ns.options, c)?;
        if personal.enabled && ns.name == personal.personal_channel_namespace {
            personal_ns_found = true;
            if personal.single_connection && !ns.options.presence {
                return Err(format!(
                    "client.subscribe_to_user_personal_channel.single_connection requires presence in namespace {}",
                    ns.name
                ));
            }
        }
    }
    if !personal_ns_found {
        return Err(format!(
            "client.subscribe_to_user_personal_channel.personal_channel_namespace: namespace {:?} not found",
            personal.personal_channel_namespace
        ));
    }
    super::tls::validate(c)?;
    super::proxy::validate(c)
}

fn apply_flags(tree: &mut Value, flags: &[(String, Value)], schema: &Schema, origins: &mut Origins) {
    for (name, value) in flags {
        let name = name.trim_start_matches('-');
        if let Some(set) = proxy_v5::flat(name, value) {
            for (path, value) in set {
                origins.record(path.as_str(), format!("flag --{name}"));
                set_path(tree, &path, value);
            }
            continue;
        }
        let path = match env::v6_path(name, value, schema) {
            Some(p) if !name.contains('.') => p,
            _ => name.to_owned(),
        };
        origins.record(path.as_str(), format!("flag --{name}"));
        set_path(tree, &path, value.clone());
    }
}

/// The options a config file sets (v6 layout, v5 names mapped, values converted to their
/// options' types), without defaults, environment or flags.
pub fn file_options(path: &Path) -> Result<Value, Error> {
    let schema = Schema::new();
    let mut tree = env::normalize_file(read_file(path)?, &schema, path, &mut Vec::new(), &mut Origins::default())?;
    env::coerce(&mut tree);
    super::weak::coerce(&mut tree, &schema);
    Ok(tree)
}

/// Loads, merges, validates. Errors name the file, option, env var or flag at fault.
pub fn load(opts: &LoadOptions) -> Result<Loaded, Error> {
    let mut warnings = Vec::new();
    let mut origins = Origins::default();
    let schema = Schema::new();
    let mut tree = match &opts.config_path {
        Some(path) => env::normalize_file(read_file(path)?, &schema, path, &mut warnings, &mut origins)?,
        None => Value::Object(Map::new()),
    };
    env::coerce(&mut tree);
    env::apply(&mut tree, &opts.env, &schema, &mut warnings, &mut origins)?;
    apply_flags(&mut tree, &opts.flags, &schema, &mut origins);
    env::coerce(&mut tree);
    super::weak::coerce(&mut tree, &schema);
    warn_unknown(&tree, &schema, &mut warnings);

    let mut config = deserialize(&tree, &origins, opts.config_path.as_deref())?;
    config.log.level = config.log.level.to_ascii_lowercase();
    config.engine.kind = config.engine.kind.to_ascii_lowercase();
    config.broker.kind = config.broker.kind.to_ascii_lowercase();
    config.map_broker.kind = config.map_broker.kind.to_ascii_lowercase();
    validate(&config).map_err(|e| {
        // Name where the option at fault was set, when that was not the file's v6 name.
        let origin = e.split_once(':').and_then(|(path, _)| origins.find(path));
        let by = origin.map(|o| format!(" (set by {o})")).unwrap_or_default();
        Error::config(format!("invalid configuration: {e}{by}"))
    })?;
    warnings.extend(super::tls::warnings(&config));
    if !config.sockjs.url.is_empty() {
        warnings.push(
            "option \"sockjs.url\" is not supported by Gyre (ignored): it serves no iframe-based SockJS transports"
                .into(),
        );
    }

    let mut generated = Vec::new();
    if !opts.skip_secret_generation {
        if config.http_api.key.is_empty() && !config.http_api.insecure {
            config.http_api.key = uuid::Uuid::new_v4().to_string();
            generated.push("http_api.key");
        }
        if config.client.token.hmac_secret_key.is_empty() && !config.client.token.has_public_keys() {
            config.client.token.hmac_secret_key = uuid::Uuid::new_v4().to_string();
            generated.push("client.token.hmac_secret_key");
        }
    }
    Ok(Loaded { config, warnings, path: opts.config_path.clone(), generated_secrets: !generated.is_empty(), generated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Writes `text` to a fresh temp file with this extension.
    pub(super) fn file(ext: &str, text: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("gyre-load-{}-{n}.{ext}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(super) fn load_file(ext: &str, text: &str) -> Result<Loaded, Error> {
        let path = file(ext, text);
        let r = load(&LoadOptions { config_path: Some(path.clone()), ..Default::default() });
        let _ = std::fs::remove_file(path);
        r
    }

    pub(super) fn err(ext: &str, text: &str) -> String {
        load_file(ext, text).unwrap_err().message
    }

    /// Compares options by JSON pointer into the serialized config.
    pub(super) fn check(c: &Config, expect: &[(&str, Value)]) {
        let tree = serde_json::to_value(c).unwrap();
        for (ptr, want) in expect {
            assert_eq!(tree.pointer(ptr), Some(want), "{ptr}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn v6_nested_json_and_v6_wins_over_v5() {
        let l = load_file("json", r#"{
            "http_server": {"port": 8001}, "port": 7000,
            "http_api": {"key": "k", "insecure": false},
            "client": {"token": {"hmac_secret_key": "s", "issuer": "i"}, "allowed_origins": ["http://x"]},
            "channel": {"without_namespace": {"allow_subscribe_for_client": true},
                        "namespaces": [{"name": "news", "history_size": 5, "history_ttl": "60s"}]},
            "engine": {"type": "redis", "redis": {"address": "redis://h:1"}},
            "admin": {"enabled": true, "insecure": true}, "log": {"level": "warn"}, "workers": 4
        }"#).unwrap();
        check(&l.config, &[
            ("/http_server/port", json!(8001)),
            ("/client/token/issuer", json!("i")),
            ("/channel/without_namespace/allow_subscribe_for_client", json!(true)),
            ("/channel/namespaces/0/history_ttl", json!("1m")),
            ("/engine/redis/address", json!(["redis://h:1"])),
            ("/admin/insecure", json!(true)),
            ("/log/level", json!("warn")),
            ("/workers", json!(4)),
        ]);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn toml_and_yaml() {
        let toml = r#"
            api_key = "a"
            [client]
            allowed_origins = ["*"]
            ping_interval = "30s"
            [client.token]
            hmac_secret_key = "s"
            [[channel.namespaces]]
            name = "chat"
            presence = true
        "#;
        let yaml = "api_key: a\nclient:\n  allowed_origins: ['*']\n  ping_interval: 30s\n  \
                    token:\n    hmac_secret_key: s\n\
                    channel:\n  namespaces:\n    - name: chat\n      presence: true\n";
        for (ext, text) in [("toml", toml), ("yaml", yaml), ("yml", yaml)] {
            let l = load_file(ext, text).unwrap();
            check(
                &l.config,
                &[
                    ("/http_api/key", json!("a")),
                    ("/client/allowed_origins", json!(["*"])),
                    ("/client/ping_interval", json!("30s")),
                    ("/client/token/hmac_secret_key", json!("s")),
                    ("/channel/namespaces/0/presence", json!(true)),
                ],
            );
            assert!(l.warnings.is_empty(), "{ext}: {:?}", l.warnings);
        }
    }

    #[test]
    fn unknown_options_warn() {
        let l = load_file(
            "json",
            r#"{"http_api": {"kye": "x"}, "webtransport": {"enabled": true}, "foo": 1,
                "client": {"proxy": {"connect": {"enabled": true, "endpoint": "http://a", "tls": 1}}},
                "proxies": [{"name": "p1", "endpoint": "a:1", "htp": {}}],
                "rpc": {"namespaces": [{"name": "ns", "proxy": true}]},
                "gateway": {"servers": [{"path": "/r", "topic": "t", "topc": "x"}]},
                "channel": {"publication_data_format": "json",
                            "namespaces": [{"name": "chat", "presense": true}]}}"#,
        )
        .unwrap();
        let mut w = l.warnings.clone();
        w.sort();
        assert_eq!(
            w,
            [
                "option \"channel.publication_data_format\" is not supported by Gyre (ignored)",
                "option \"webtransport\" is not supported by Gyre (ignored)",
                "unknown option \"channel.namespaces[0].presense\" (ignored)",
                "unknown option \"client.proxy.connect.tls\" (ignored)",
                "unknown option \"foo\" (ignored)",
                "unknown option \"gateway.servers[0].topc\" (ignored)",
                "unknown option \"http_api.kye\" (ignored)",
                "unknown option \"proxies[0].htp\" (ignored)",
                "unknown option \"rpc.namespaces[0].proxy\" (ignored)",
            ]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn bad_values_name_the_option() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("json", r#"{"http_server": {"port": -1}}"#, &["\"http_server.port\"", "-1"]),
            ("json", r#"{"port": "x"}"#, &["\"http_server.port\"", "option \"port\" in "]),
            ("json", r#"{"channel": {"namespaces": [{"name": "ok"}, {"name": "chat", "history_ttl": "abc"}]}}"#,
             &["\"channel.namespaces[1].history_ttl\"", "(namespace \"chat\")", "\"abc\""]),
            ("json", r#"{"client": {"allowed_origins": [["*"]]}}"#, &["\"client.allowed_origins\""]),
            ("json", r#"{"client": 5}"#, &["\"client\""]),
            ("json", r#"{"client": {"ping_interval": "5 parsecs"}}"#, &["\"client.ping_interval\""]),
            ("json", r#"{"port": 1,}"#, &["gyre-load-", "invalid JSON"]),
            ("toml", "port = ", &["invalid TOML"]),
            ("yaml", "a: [", &["invalid YAML"]),
            ("json", "[1]", &["top level must be an object"]),
            ("ini", "a=1", &["unsupported format"]),
        ];
        for (ext, text, wants) in cases {
            let e = err(ext, text);
            assert!(wants.iter().all(|w| e.contains(w)), "{text}: {e}");
        }
        let missing = PathBuf::from("/nonexistent/gyre.json");
        let e = load(&LoadOptions { config_path: Some(missing), ..Default::default() }).unwrap_err();
        assert!(e.message.contains("/nonexistent/gyre.json") && e.message.contains("not found"), "{e}");
    }

    #[test]
    fn duration_forms() {
        let l = load_file(
            "json",
            r#"{"client": {"ping_interval": "1m30s", "pong_timeout": 10, "stale_close_delay":
                "500ms", "expired_close_delay": "0"}, "shutdown": {"timeout": "2h"}}"#,
        )
        .unwrap();
        let c = &l.config.client;
        assert_eq!(c.ping_interval, Duration::from_secs(90));
        assert_eq!(c.pong_timeout, Duration::from_secs(10));
        assert_eq!(c.stale_close_delay, Duration::from_millis(500));
        assert_eq!(c.expired_close_delay, Duration::ZERO);
        assert_eq!(l.config.shutdown.timeout, Duration::from_secs(7200));
    }

    #[test]
    #[rustfmt::skip]
    fn validation_errors() {
        let cases = [
            (r#"{"channel": {"namespaces": [{"name": "a"}]}}"#, "invalid namespace name"),
            (r#"{"channel": {"namespaces": [{"name": "a b"}]}}"#, "invalid namespace name"),
            (r#"{"channel": {"namespaces": [{"name": "ab"}, {"name": "ab"}]}}"#, "must be unique"),
            (r#"{"history_size": 10}"#, "channel.without_namespace: both history_size and history_ttl"),
            (r#"{"history_ttl": "10s"}"#, "both history_size and history_ttl"),
            (r#"{"history_size": 1, "history_ttl": "1.5s"}"#, "history_ttl: malformed duration"),
            (r#"{"history_size": 1, "history_ttl": "10h", "history_meta_ttl": "1h"}"#, "history_meta_ttl"),
            (r#"{"channel": {"namespaces": [{"name": "ch", "force_recovery": true}]}}"#, "[\"ch\"].force_recovery"),
            (r#"{"allow_recovery": true}"#, "allow_recovery"),
            (r#"{"force_recovery_mode": "x"}"#, "force_recovery_mode"),
            (r#"{"history_size": 1, "history_ttl": "1s", "auto_cache_recover": true}"#, "auto_cache_recover requires"),
            (r#"{"client": {"ping_interval": "5s", "pong_timeout": "5s"}}"#, "client.ping_interval"),
            (r#"{"engine": {"type": "nats"}}"#, "engine.type"),
            (r#"{"broker": {"enabled": true, "type": "redis"}}"#, "broker.type: a separate Redis broker"),
            (r#"{"broker": {"enabled": true, "type": "kafka"}}"#, "broker.type: unknown broker"),
            (r#"{"map_broker": {"type": "redis"}}"#, "map_broker.type: \"redis\" keeps"),
            (r#"{"broker": {"enabled": true, "type": "nats", "nats": {"url": "nats://h:x"}}}"#, "broker.nats.url"),
            (r#"{"broker": "nats", "nats_url": "tls://h:1"}"#, "TLS to NATS"),
            (r#"{"log_level": "verbose"}"#, "log.level"),
            (r#"{"api_error_mode": "x"}"#, "http_api.error_mode"),
            (r#"{"workers": 65}"#, "workers"),
            (r#"{"channel_max_length": 0}"#, "channel.max_length"),
            (r#"{"token_user_id_claim": "a.b"}"#, "client.token.user_id_claim"),
            (r#"{"user_subscribe_to_personal": true, "user_personal_channel_namespace": "p"}"#, "not found"),
            (r#"{"admin": {"enabled": true, "password": "p"}}"#, "admin.secret"),
        ];
        for (text, want) in cases {
            let e = err("json", text);
            assert!(e.contains(want), "{text}: {e}");
        }
        let ok = r#"{"history_size": 1, "history_ttl": "10s", "force_recovery": true, "client": {"pong_timeout": 0}}"#;
        assert!(load_file("json", ok).is_ok());
    }

    /// An invalid `channel_regex` stops start-up with a message naming the namespace; a
    /// valid one is compiled once and kept in its Go text.
    #[test]
    fn channel_regex_compiled_at_load() {
        let e = err("json", r#"{"channel": {"namespaces": [{"name": "rooms", "channel_regex": "^[a-z+$"}]}}"#);
        assert!(e.contains("namespace \"rooms\"") && e.contains("channel_regex"), "{e}");
        assert!(e.contains("invalid channel regex"), "{e}");
        let e = err("json", r#"{"channel": {"without_namespace": {"channel_regex": "("}}}"#);
        assert!(e.contains("channel.without_namespace.channel_regex"), "{e}");
        let l = load_file("json", r#"{"channel": {"namespaces": [{"name": "rooms", "channel_regex": "^\\w+$"}]}}"#)
            .unwrap();
        let o = &l.config.channel.namespaces[0].options;
        assert_eq!(o.channel_regex.as_str(), r"^\w+$");
        assert!(l.config.client_channel_allowed("rooms:abc", o));
        assert!(!l.config.client_channel_allowed("rooms:café", o));
        assert!(!l.config.client_channel_allowed("rooms:a-b", o));
        check(&l.config, &[("/channel/namespaces/0/channel_regex", json!(r"^\w+$"))]);
        // The regex sees the part after the namespace (private prefix stripped), or the whole
        // name without a namespace; without a regex names must be ASCII.
        let l = load_file(
            "json",
            r#"{"channel": {"without_namespace": {"channel_regex": "^\\$?x"},
            "namespaces": [{"name": "rooms", "channel_regex": "^[a-z]+$"}, {"name": "plain"}]}}"#,
        )
        .unwrap();
        let c = &l.config;
        let ok = |ch: &str| c.client_channel_allowed(ch, c.resolve_channel(ch).unwrap().options);
        assert!(ok("$rooms:abc") && ok("rooms:abc") && !ok("rooms:ab:c") && !ok("rooms:"));
        assert!(ok("xyz") && ok("$xyz") && !ok("yx"));
        assert!(ok("plain:abc") && !ok("plain:é"));
    }

    #[test]
    fn secrets_generated_when_empty() {
        let l = load(&LoadOptions::default()).unwrap();
        assert!(l.generated_secrets);
        assert_eq!(l.generated, ["http_api.key", "client.token.hmac_secret_key"]);
        let (key, secret) = (&l.config.http_api.key, &l.config.client.token.hmac_secret_key);
        assert!(key.len() == 36 && secret.len() == 36 && key != secret);
        let l = load_file("json", r#"{"api_insecure": true, "token_hmac_secret_key": "s"}"#);
        let l = l.unwrap();
        assert!(!l.generated_secrets && l.config.http_api.key.is_empty());
        let l = load(&LoadOptions { skip_secret_generation: true, ..Default::default() }).unwrap();
        assert!(!l.generated_secrets && l.config.http_api.key.is_empty());
        assert!(l.config.client.token.hmac_secret_key.is_empty());
    }

    #[test]
    fn empty_file_is_defaults() {
        for ext in ["json", "toml", "yaml"] {
            let l = load_file(ext, "\n").unwrap();
            assert_eq!(l.config.http_server.port, 8000);
        }
    }
}
