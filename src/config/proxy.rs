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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClientTls {
    pub enabled: bool,
    /// Client certificate and key (mutual TLS): a file path, PEM text or base64 PEM.
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA that signs the backend's certificate (else the system roots).
    pub server_ca_pem: String,
    /// Server-side only; not used by a client connection.
    pub client_ca_pem: String,
    pub insecure_skip_verify: bool,
    /// The name checked against the backend's certificate (else the endpoint's host).
    pub server_name: String,
}

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
