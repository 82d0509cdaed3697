//! Proxy options: calls from the server to the application backend on connect, refresh,
//! subscribe, publish, sub_refresh, RPC and subscription streams (Centrifugo v6 names;
//! the v5 flat names are mapped onto these by the loader).
//!
//! Where proxies live: `client.proxy.connect` / `client.proxy.refresh` (each with `enabled`),
//! `channel.proxy.<kind>` (the proxy named "default" of each channel kind), `rpc.proxy` (the
//! "default" RPC proxy), and the named `proxies` list, picked by the `<kind>_proxy_name`
//! switches of channel namespaces and `proxy_name` of RPC namespaces.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// What every proxy has: where it is and how to call it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProxyCommon {
    /// `http://…` (called with POST) or a gRPC target (`grpc://host:port` or `host:port`).
    pub endpoint: String,
    /// The whole call, connecting and reading the answer included.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Headers of the connection's HTTP request forwarded with every call (any case).
    pub http_headers: Vec<String>,
    /// Entries of the connect command's `headers` (headers emulation) forwarded.
    pub emulated_headers: Vec<String>,
    /// Metadata keys of a gRPC client connection (`uni_grpc`) forwarded.
    pub grpc_metadata: Vec<String>,
    /// Payloads travel base64-encoded in `b64data` (and `encoding` says "binary").
    pub binary_encoding: bool,
    /// Requests carry the connection's `meta` (from its token or the connect proxy).
    pub include_connection_meta: bool,
    pub http: ProxyHttp,
    pub grpc: ProxyGrpc,
}

impl Default for ProxyCommon {
    fn default() -> Self {
        ProxyCommon {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            emulated_headers: Vec::new(),
            grpc_metadata: Vec::new(),
            binary_encoding: false,
            include_connection_meta: false,
            http: ProxyHttp::default(),
            grpc: ProxyGrpc::default(),
        }
    }
}

/// Options of an HTTP proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProxyHttp {
    pub tls: ClientTls,
    /// Headers added to every request (forwarded ones win).
    pub static_headers: BTreeMap<String, String>,
    /// A non-200 answer with one of these statuses becomes an error or a disconnect.
    pub status_to_code_transforms: Vec<StatusTransform>,
}

/// Options of a gRPC proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProxyGrpc {
    pub tls: ClientTls,
    /// Metadata `<credentials_key>: <credentials_value>` on every call (when the key is set).
    pub credentials_key: String,
    pub credentials_value: String,
    /// gzip-compressed calls.
    pub compression: bool,
    /// Metadata added to every call (forwarded entries win).
    pub static_metadata: BTreeMap<String, String>,
}

/// TLS of a connection this server opens (to a proxy backend).
pub use super::tls::Tls as ClientTls;

/// `{"status_code": 404, "to_error": {...}}` or `{"status_code": 403, "to_disconnect": {...}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StatusTransform {
    pub status_code: u16,
    pub to_error: TransformError,
    pub to_disconnect: TransformDisconnect,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TransformError {
    pub code: u32,
    pub message: String,
    pub temporary: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TransformDisconnect {
    pub code: u32,
    pub reason: String,
}

/// `client.proxy.connect` and `client.proxy.refresh`: a proxy with an on/off switch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SwitchedProxy {
    pub enabled: bool,
    #[serde(flatten)]
    pub proxy: ProxyCommon,
}

/// `client.proxy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClientProxies {
    pub connect: SwitchedProxy,
    pub refresh: SwitchedProxy,
}

/// `channel.proxy`: the proxy named "default" of each channel kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChannelProxies {
    pub subscribe: ProxyCommon,
    pub publish: ProxyCommon,
    pub sub_refresh: ProxyCommon,
    pub subscribe_stream: ProxyCommon,
    pub map_publish: ProxyCommon,
    pub map_remove: ProxyCommon,
    pub shared_poll_refresh: ProxyCommon,
}

/// An item of the top-level `proxies` list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NamedProxy {
    pub name: String,
    #[serde(flatten)]
    pub proxy: ProxyCommon,
}

/// The proxy switches of a channel namespace (flattened into its options).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NamespaceProxies {
    pub subscribe_proxy_enabled: bool,
    pub subscribe_proxy_name: String,
    pub publish_proxy_enabled: bool,
    pub publish_proxy_name: String,
    pub sub_refresh_proxy_enabled: bool,
    pub sub_refresh_proxy_name: String,
    pub subscribe_stream_proxy_enabled: bool,
    pub subscribe_stream_proxy_name: String,
    /// The subscription stream is bidirectional (the client's publications go to it).
    pub subscribe_stream_proxy_bidirectional: bool,
}

impl Default for NamespaceProxies {
    fn default() -> Self {
        let d = || "default".to_string();
        NamespaceProxies {
            subscribe_proxy_enabled: false,
            subscribe_proxy_name: d(),
            publish_proxy_enabled: false,
            publish_proxy_name: d(),
            sub_refresh_proxy_enabled: false,
            sub_refresh_proxy_name: d(),
            subscribe_stream_proxy_enabled: false,
            subscribe_stream_proxy_name: d(),
            subscribe_stream_proxy_bidirectional: false,
        }
    }
}

/// The proxy switches of a map namespace (flattened into its `map` options): client map
/// publishes and removes go to the backend, which decides on them (and may change the key,
/// the data and the tags) instead of the namespace's `allow_*` permissions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MapProxies {
    pub publish_proxy_enabled: bool,
    pub publish_proxy_name: String,
    pub remove_proxy_enabled: bool,
    pub remove_proxy_name: String,
}

impl Default for MapProxies {
    fn default() -> Self {
        MapProxies {
            publish_proxy_enabled: false,
            publish_proxy_name: DEFAULT_PROXY_NAME.into(),
            remove_proxy_enabled: false,
            remove_proxy_name: DEFAULT_PROXY_NAME.into(),
        }
    }
}

/// The `rpc` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Rpc {
    /// The RPC proxy named "default".
    pub proxy: ProxyCommon,
    pub without_namespace: RpcOptions,
    pub namespaces: Vec<RpcNamespace>,
    /// Separates an RPC method's namespace from the rest (`ns:method`).
    pub namespace_boundary: String,
    pub ping: RpcPing,
}

impl Default for Rpc {
    fn default() -> Self {
        Rpc {
            proxy: ProxyCommon::default(),
            without_namespace: RpcOptions::default(),
            namespaces: Vec::new(),
            namespace_boundary: ":".into(),
            ping: RpcPing::default(),
        }
    }
}

/// Options of RPC methods of one namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RpcOptions {
    pub proxy_enabled: bool,
    pub proxy_name: String,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions { proxy_enabled: false, proxy_name: "default".into() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RpcNamespace {
    pub name: String,
    #[serde(flatten)]
    pub options: RpcOptions,
}

/// `rpc.ping`: an RPC method answered by the server itself (an empty result), for clients
/// that measure round trips.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RpcPing {
    pub enabled: bool,
    pub method: String,
}

impl Default for RpcPing {
    fn default() -> Self {
        RpcPing { enabled: false, method: "ping".into() }
    }
}

/// The name that selects the proxy of `channel.proxy.<kind>` / `rpc.proxy`.
pub const DEFAULT_PROXY_NAME: &str = "default";

/// Where an endpoint points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http(s)://host[:port][/path][?query]`.
    Http { host: String, port: u16, path_and_query: String, https: bool },
    /// A gRPC dial target `host:port` (`grpc://` removed).
    Grpc { target: String },
}

/// Parses an endpoint: `http(s)://host[:port][/path]` or a gRPC target (`grpc://host:port` or
/// `host:port`).
pub fn parse_endpoint(endpoint: &str) -> Result<Endpoint, String> {
    let lower = endpoint.to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("http://") {
        (false, &endpoint[7..])
    } else if lower.starts_with("https://") {
        (true, &endpoint[8..])
    } else {
        let target = endpoint.strip_prefix("grpc://").unwrap_or(endpoint);
        if target.is_empty() || target.contains('/') {
            return Err(format!("bad gRPC endpoint {endpoint:?} (want grpc://host:port or host:port)"));
        }
        return Ok(Endpoint::Grpc { target: target.to_string() });
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let authority = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("bad endpoint {endpoint:?}"))?;
        let port = after
            .strip_prefix(':')
            .map(|p| p.parse::<u16>())
            .transpose()
            .map_err(|_| format!("bad port in {endpoint:?}"))?;
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().map_err(|_| format!("bad port in {endpoint:?}"))?)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in endpoint {endpoint:?}"));
    }
    Ok(Endpoint::Http { host, port: port.unwrap_or(if https { 443 } else { 80 }), path_and_query: path, https })
}

/// A proxy or RPC namespace name: `^[-a-zA-Z0-9_.]{2,}$`.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The longest error message / disconnect reason of a status transform (a WebSocket close
/// reason's limit).
const MAX_REASON: usize = 123;

fn check_transform(t: &StatusTransform) -> Result<(), String> {
    if t.status_code == 0 {
        return Err("status_code must be set".into());
    }
    match (t.to_error.code > 0, t.to_disconnect.code > 0) {
        (false, false) => return Err("one of to_error.code and to_disconnect.code must be set".into()),
        (true, true) => return Err("only one of to_error.code and to_disconnect.code may be set".into()),
        _ => {}
    }
    for (name, text) in [("to_error.message", &t.to_error.message), ("to_disconnect.reason", &t.to_disconnect.reason)] {
        if !text.is_ascii() || text.len() > MAX_REASON {
            return Err(format!("{name} must be ASCII and at most {MAX_REASON} bytes long"));
        }
    }
    Ok(())
}

/// Checks a proxy the server calls (or one declared in `proxies`) at option path `at`.
fn check_proxy(at: &str, p: &ProxyCommon) -> Result<(), String> {
    if p.endpoint.is_empty() {
        return Err(format!("{at}.endpoint: required"));
    }
    let endpoint = parse_endpoint(&p.endpoint).map_err(|e| format!("{at}.endpoint: {e}"))?;
    if matches!(endpoint, Endpoint::Http { https: true, .. }) {
        return Err(format!(
            "{at}.endpoint: https:// endpoints are not supported by Gyre (no TLS to proxies), got {:?}",
            p.endpoint
        ));
    }
    if p.timeout.is_zero() {
        return Err(format!("{at}.timeout: must be greater than 0"));
    }
    if p.http.tls.enabled {
        return Err(format!("{at}.http.tls.enabled: TLS to HTTP proxies is not supported by Gyre"));
    }
    if p.grpc.tls.insecure_skip_verify {
        return Err(format!("{at}.grpc.tls.insecure_skip_verify: not supported by Gyre"));
    }
    for (i, t) in p.http.status_to_code_transforms.iter().enumerate() {
        check_transform(t).map_err(|e| format!("{at}.http.status_to_code_transforms[{i}]: {e}"))?;
    }
    Ok(())
}

/// Validates every proxy option of a loaded config: the proxies the server would call, the
/// `proxies` list (names and proxies), and the proxy names the namespaces refer to (even
/// where their switch is off).
pub fn validate(cfg: &super::Config) -> Result<(), String> {
    let client = &cfg.client.proxy;
    for (at, p) in [("client.proxy.connect", &client.connect), ("client.proxy.refresh", &client.refresh)] {
        if p.enabled {
            check_proxy(at, &p.proxy)?;
        }
    }
    for (i, p) in cfg.proxies.iter().enumerate() {
        if p.name == DEFAULT_PROXY_NAME {
            return Err(format!("proxies[{i}].name: \"{DEFAULT_PROXY_NAME}\" is reserved"));
        }
        if !valid_name(&p.name) {
            return Err(format!(
                "proxies[{i}].name: invalid proxy name {:?} (must match ^[-a-zA-Z0-9_.]{{2,}}$)",
                p.name
            ));
        }
        if cfg.proxies[..i].iter().any(|q| q.name == p.name) {
            return Err(format!("proxies: proxy name must be unique: {}", p.name));
        }
        check_proxy(&format!("proxies[\"{}\"]", p.name), &p.proxy)?;
    }
    let named = |name: &str| cfg.proxies.iter().find(|p| p.name == name).map(|p| &p.proxy);
    let ch = &cfg.channel;
    let mut spaces = vec![("channel.without_namespace".to_string(), &ch.without_namespace)];
    spaces.extend(ch.namespaces.iter().map(|n| (format!("channel.namespaces[\"{}\"]", n.name), &n.options)));
    for (at, o) in spaces {
        let (n, m) = (&o.proxy, &o.map.proxy);
        // (kind, option path of its name, on, name, the `default` proxy)
        for (kind, option, on, name, default) in [
            (
                "subscribe",
                "subscribe_proxy_name",
                n.subscribe_proxy_enabled,
                &n.subscribe_proxy_name,
                &ch.proxy.subscribe,
            ),
            ("publish", "publish_proxy_name", n.publish_proxy_enabled, &n.publish_proxy_name, &ch.proxy.publish),
            (
                "sub_refresh",
                "sub_refresh_proxy_name",
                n.sub_refresh_proxy_enabled,
                &n.sub_refresh_proxy_name,
                &ch.proxy.sub_refresh,
            ),
            (
                "subscribe_stream",
                "subscribe_stream_proxy_name",
                n.subscribe_stream_proxy_enabled,
                &n.subscribe_stream_proxy_name,
                &ch.proxy.subscribe_stream,
            ),
            (
                "map_publish",
                "map.publish_proxy_name",
                m.publish_proxy_enabled,
                &m.publish_proxy_name,
                &ch.proxy.map_publish,
            ),
            ("map_remove", "map.remove_proxy_name", m.remove_proxy_enabled, &m.remove_proxy_name, &ch.proxy.map_remove),
        ] {
            let proxy = if name == DEFAULT_PROXY_NAME {
                Some(default)
            } else if name.is_empty() && !on {
                None
            } else {
                Some(named(name).ok_or_else(|| format!("{at}.{option}: no proxy named {name:?} in \"proxies\""))?)
            };
            let Some(proxy) = proxy.filter(|_| on) else { continue };
            if name == DEFAULT_PROXY_NAME {
                check_proxy(&format!("channel.proxy.{kind}"), proxy)
                    .map_err(|e| format!("{e} (the {kind} proxy of {at})"))?;
            }
            if kind == "subscribe_stream" && proxy.endpoint.starts_with("http") {
                return Err(format!(
                    "{at}.subscribe_stream_proxy_name: subscription streams need a gRPC proxy, {name:?} has endpoint {:?}",
                    proxy.endpoint
                ));
            }
        }
        if n.subscribe_stream_proxy_enabled
            && (n.subscribe_proxy_enabled || n.publish_proxy_enabled || n.sub_refresh_proxy_enabled)
        {
            return Err(format!(
                "{at}: subscribe_stream_proxy_enabled can not be used together with subscribe, publish or sub_refresh proxies"
            ));
        }
    }
    let rpc = &cfg.rpc;
    let mut spaces = vec![("rpc.without_namespace".to_string(), &rpc.without_namespace)];
    for (i, n) in rpc.namespaces.iter().enumerate() {
        if !valid_name(&n.name) {
            return Err(format!(
                "rpc.namespaces[{i}]: invalid rpc namespace name {:?} (must match ^[-a-zA-Z0-9_.]{{2,}}$)",
                n.name
            ));
        }
        if rpc.namespaces[..i].iter().any(|m| m.name == n.name) {
            return Err(format!("rpc.namespaces: rpc namespace name must be unique: {}", n.name));
        }
        spaces.push((format!("rpc.namespaces[\"{}\"]", n.name), &n.options));
    }
    for (at, o) in spaces {
        let name = &o.proxy_name;
        if name == DEFAULT_PROXY_NAME {
            if o.proxy_enabled {
                check_proxy("rpc.proxy", &rpc.proxy).map_err(|e| format!("{e} (the rpc proxy of {at})"))?;
            }
        } else if (o.proxy_enabled || !name.is_empty()) && named(name).is_none() {
            return Err(format!("{at}.proxy_name: no proxy named {name:?} in \"proxies\""));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
