//! A session's side of the proxies: what a call carries (the connection's identity, its
//! forwarded headers and meta) and how an answer's pieces become session state.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use bytes::Bytes;

use super::Session;
use crate::api::Overrides;
use crate::error::{ApiError, Disconnect};
use crate::protocol::Format;
use crate::proxy::{self, CallError, ErrorObj, Headers, Kind, Override, Proxies, Proxy, Request, Response};
use crate::runtime::worker::Worker;

/// What a connection keeps of its opening request for the proxies: the headers they forward
/// (only those any proxy names), the connect command's emulated headers, and gRPC metadata.
#[derive(Debug, Default)]
pub struct ConnHeaders {
    pub http: Vec<(String, String)>,
    pub emulated: Vec<(String, String)>,
    pub grpc: Vec<(String, String)>,
}

/// Headers of a connection's opening request that some proxy forwards (name as the client
/// wrote it, canonical case; value).
pub type Forwarded = Vec<(String, String)>;

/// The headers of a request (names lower-cased) that some proxy forwards.
pub fn forwarded(w: &Worker, headers: &[(String, Bytes)]) -> Forwarded {
    let p = proxies(w);
    if p.header_names.is_empty() {
        return Vec::new();
    }
    headers
        .iter()
        .filter(|(n, _)| p.header_names.iter().any(|h| h == n))
        .filter_map(|(n, v)| Some((canonical(n), std::str::from_utf8(v).ok()?.to_string())))
        .collect()
}

/// `x-token` → `X-Token`: the header name as HTTP backends usually spell it.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = true;
    for c in name.chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() });
        up = c == '-';
    }
    out
}

/// The worker's view of the node's proxies (resolved once per worker).
pub(super) fn proxies(w: &Worker) -> Rc<Proxies> {
    crate::proxy::of(w)
}

/// An error message of a backend as the `&'static str` an [`ApiError`] holds. Backends answer
/// with a small set of messages, so each distinct one is kept once for the life of the
/// process; past 4,096 distinct messages the rest read "error".
fn intern(msg: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = seen.get(msg) {
        return s;
    }
    if seen.len() >= 4096 {
        return "error";
    }
    let s: &'static str = Box::leak(msg.to_string().into_boxed_str());
    seen.insert(s);
    s
}

/// A backend's `error` as the client's error.
pub(super) fn api_error(e: &ErrorObj) -> ApiError {
    ApiError { code: e.code, message: intern(&e.message), temporary: e.temporary }
}

/// A backend's `disconnect` as the connection's close.
pub(super) fn disconnect(d: &proxy::DisconnectObj) -> Disconnect {
    Disconnect { code: d.code.min(u16::MAX as u32) as u16, reason: d.reason.clone().into() }
}

/// Decodes standard padded base64; `None` when it is not.
pub(super) fn b64(s: &str) -> Option<Bytes> {
    base64::engine::general_purpose::STANDARD.decode(s).ok().map(Bytes::from)
}

/// `b64` wins over `raw` when non-empty; `Err` when it is not base64.
pub(super) fn payload(raw: &Option<Bytes>, b64s: &str) -> Result<Option<Bytes>, ()> {
    if !b64s.is_empty() {
        return b64(b64s).map(Some).ok_or(());
    }
    Ok(raw.clone())
}

pub(super) fn overrides(o: &Override) -> Overrides {
    Overrides {
        presence: o.presence,
        join_leave: o.join_leave,
        force_recovery: o.force_recovery,
        force_positioning: o.force_positioning,
        force_push_join_leave: o.force_push_join_leave,
    }
}

/// Replaces entries named like `(name, _)` by the new ones (a later source wins).
fn put(out: &mut Headers, name: &str, value: &str) {
    out.push((name.to_string(), value.to_string()));
}

impl Session {
    /// Keeps the headers of the connection's opening request that proxies forward.
    pub fn keep_request_headers(&self, forwarded: Forwarded) {
        if !forwarded.is_empty() {
            self.conn_headers.borrow_mut().get_or_insert_with(Default::default).http = forwarded;
        }
    }

    /// Keeps the metadata of a gRPC client connection that some proxy forwards.
    pub fn keep_grpc_metadata(&self, md: Vec<(String, String)>) {
        let p = proxies(&self.w);
        let kept: Vec<(String, String)> =
            md.into_iter().filter(|(k, _)| p.metadata_names.iter().any(|m| m == k)).collect();
        if !kept.is_empty() {
            self.conn_headers.borrow_mut().get_or_insert_with(Default::default).grpc = kept;
        }
    }

    /// Keeps the connect command's emulated headers that some proxy forwards.
    pub(super) fn keep_emulated_headers(&self, headers: &[(String, String)]) {
        let p = proxies(&self.w);
        let kept: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| p.emulated_names.iter().any(|h| h.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        if !kept.is_empty() {
            self.conn_headers.borrow_mut().get_or_insert_with(Default::default).emulated = kept;
        }
    }

    /// The headers (HTTP) or metadata (gRPC) of a call to `p`: static ones, then emulated,
    /// then the connection's own request headers (or, for a gRPC client, its metadata); a
    /// later source replaces an earlier one of the same name.
    pub(super) fn call_headers(&self, p: &Proxy) -> Headers {
        let mut out: Headers = Vec::new();
        if !p.is_grpc() {
            for (k, v) in &p.conf.http.static_headers {
                put(&mut out, k, v);
            }
        }
        let ch = self.conn_headers.borrow();
        let Some(ch) = ch.as_ref() else { return out };
        let layer = |out: &mut Headers, pairs: Vec<(&String, &String)>| {
            let names: Vec<String> = pairs.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
            out.retain(|(n, _)| !names.contains(&n.to_ascii_lowercase()));
            for (n, v) in pairs {
                let n = if p.is_grpc() { n.to_ascii_lowercase() } else { n.clone() };
                put(out, &n, v);
            }
        };
        let emulated: Vec<_> = ch
            .emulated
            .iter()
            .filter(|(n, _)| p.emulated_headers.iter().any(|h| h.eq_ignore_ascii_case(n)))
            .map(|(n, v)| (n, v))
            .collect();
        layer(&mut out, emulated);
        if !ch.http.is_empty() {
            let http: Vec<_> = ch
                .http
                .iter()
                .filter(|(n, _)| p.http_headers.iter().any(|h| h.eq_ignore_ascii_case(n)))
                .map(|(n, v)| (n, v))
                .collect();
            layer(&mut out, http);
        } else {
            let md: Vec<_> =
                ch.grpc.iter().filter(|(n, _)| p.grpc_metadata.iter().any(|m| m == n)).map(|(n, v)| (n, v)).collect();
            layer(&mut out, md);
        }
        out
    }

    /// A request to `p` with this connection's identity (and its meta when the proxy wants it).
    pub(super) fn proxy_request(&self, p: &Proxy) -> Request {
        let st = self.st.borrow();
        Request {
            client: self.client.id.to_string(),
            transport: self.client.framing.name(),
            protocol: if self.client.format == Format::Protobuf { "protobuf" } else { "json" },
            encoding: if p.conf.binary_encoding { "binary" } else { "json" },
            user: st.user.to_string(),
            meta: if p.conf.include_connection_meta { st.meta.as_deref().cloned() } else { None },
            ..Default::default()
        }
    }

    /// Puts a client payload into `req` as the proxy wants it (raw JSON, or base64).
    pub(super) fn set_payload(p: &Proxy, req: &mut Request, data: Option<Bytes>) {
        let Some(d) = data.filter(|d| !d.is_empty()) else { return };
        if p.conf.binary_encoding {
            req.b64data = base64::engine::general_purpose::STANDARD.encode(&d);
        } else {
            req.data = Some(d);
        }
    }

    /// Calls `p` for this session.
    pub(super) async fn call_proxy(self: &Rc<Self>, p: &Arc<Proxy>, req: Request) -> Result<Response, CallError> {
        let headers = self.call_headers(p);
        proxy::call(&self.w, p, &req, headers).await
    }
}

/// The proxy of `kind` for a channel's namespace options when the namespace turns it on
/// (`Err` 108 when it does but no such proxy is configured).
pub(super) fn channel_proxy(
    s: &Session,
    kind: Kind,
    o: &crate::config::ChannelOptions,
) -> Option<Result<Arc<Proxy>, ApiError>> {
    let n = &o.proxy;
    let on = match kind {
        Kind::Subscribe => n.subscribe_proxy_enabled,
        Kind::Publish => n.publish_proxy_enabled,
        Kind::SubRefresh => n.sub_refresh_proxy_enabled,
        Kind::SubscribeStream => n.subscribe_stream_proxy_enabled,
        Kind::MapPublish => o.map.proxy.publish_proxy_enabled,
        Kind::MapRemove => o.map.proxy.remove_proxy_enabled,
        _ => false,
    };
    if !on {
        return None;
    }
    Some(proxies(&s.w).channel(kind, o).cloned().ok_or(ApiError::NOT_AVAILABLE))
}

/// Whether the session's subscription to `channel` is refreshed by a sub_refresh proxy.
pub(super) fn server_refreshed(s: &Session, channel: &str) -> bool {
    s.st.borrow().subs.contains_key(channel)
        && s.w.cfg.resolve_channel(channel).is_ok_and(|r| r.options.proxy.sub_refresh_proxy_enabled)
}
