//! The WebSocket opening handshake of every upgrade kind (client sessions, unidirectional
//! clients, raw gateway clients, gateway backends), Centrifugo's origin rule and the node's
//! client connection limits.

use bytes::Bytes;

use super::serve::{Conn, Kind, Stop, Upgrade};
use crate::runtime::worker::ConnectionSlot;
use crate::wire::http::{self as codec, Head, HttpMethod};

impl Conn {
    /// Centrifugo's origin rule (`client.allowed_origins`): a request without `Origin` passes;
    /// the admin page's live tail connects from the page this server served.
    pub(super) fn origin_allowed(&self, head: &Head) -> bool {
        let Some(origin) = head.header("origin") else { return true };
        let origin = String::from_utf8_lossy(origin).to_ascii_lowercase();
        let same_origin = self.w.cfg.admin.enabled
            && head.header("host").is_some_and(|h| {
                let host = String::from_utf8_lossy(h).to_ascii_lowercase();
                origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host.as_str())
            });
        same_origin
            || self.w.cfg.client.allowed_origins.iter().any(|p| {
                p == "*"
                    || globset::Glob::new(&p.to_ascii_lowercase())
                        .map(|g| g.compile_matcher().is_match(&origin))
                        .unwrap_or(false)
            })
    }

    /// A place in the node's client connection count (`client.connection_limit`, and
    /// `client.connection_rate_limit` for new ones), or `None` when refused.
    pub(super) fn connection_slot(&self) -> Option<ConnectionSlot> {
        let limit = self.w.cfg.client.connection_limit;
        if !self.w.take_connection_token() {
            return None;
        }
        let slot = self.w.node.reserve_connection(limit);
        if slot.is_none() {
            crate::metrics::connection_limit_reached();
        }
        slot
    }

    /// The WebSocket opening handshake (RFC 6455 §4.2) plus Centrifugo's origin rule and the
    /// node's client connection limits.
    pub(super) fn websocket(&self, head: &Head, kind: Kind) -> Stop {
        let has_token = |name: &str, token: &str| {
            head.header(name)
                .is_some_and(|v| String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let key = head.header("sec-websocket-key").unwrap_or(b"");
        if head.method != HttpMethod::Get
            || !has_token("upgrade", "websocket")
            || !has_token("connection", "upgrade")
            || head.header("sec-websocket-version") != Some(b"13")
            || key.len() != 24
        {
            return self.fail(400);
        }
        if !self.origin_allowed(head) {
            let origin = String::from_utf8_lossy(head.header("origin").unwrap_or_default());
            tracing::info!(origin = %origin, remote = %self.remote(), "request Origin is not authorized");
            return self.fail(403);
        }
        // Client connection limits; gateway backends are not clients. The place is taken
        // before the 101 is queued, so simultaneous upgrades never exceed the limit together;
        // refused as Centrifugo refuses it: 503 with an empty body.
        let slot = || self.connection_slot();
        let unavailable = || {
            self.out.push_raw(codec::response(503, "", b"", false));
            Stop::Close
        };
        let (kind, proto) = match kind {
            Kind::Backend(roles) => (Upgrade::Backend(roles), None),
            Kind::Raw(start) => {
                let Some(slot) = slot() else { return unavailable() };
                (Upgrade::Raw(start, slot), None)
            }
            Kind::Uni(req) => {
                let Some(slot) = slot() else { return unavailable() };
                let deflate = crate::wire::deflate::negotiate(self.w.cfg.uni_websocket.deflate.compression, head);
                let fwd = crate::session::proxy::forwarded(&self.w, &head.headers);
                (Upgrade::Uni(req, slot, deflate, fwd), None)
            }
            Kind::SockJs => {
                let Some(slot) = slot() else { return unavailable() };
                let fwd = crate::session::proxy::forwarded(&self.w, &head.headers);
                (Upgrade::SockJs(slot, fwd, None), None)
            }
            Kind::Client => {
                let Some(slot) = slot() else { return unavailable() };
                let (format, proto) = crate::ws::negotiate(head);
                let deflate = crate::wire::deflate::negotiate(self.w.cfg.websocket.deflate.compression, head);
                let fwd = crate::session::proxy::forwarded(&self.w, &head.headers);
                (Upgrade::Client(format, slot, deflate, fwd), proto)
            }
        };
        let mut resp = String::with_capacity(160);
        resp.push_str(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        resp.push_str(&crate::wire::ws::accept_key(key));
        if let Some(p) = proto {
            resp.push_str("\r\nSec-WebSocket-Protocol: ");
            resp.push_str(p);
        }
        if let Upgrade::Client(_, _, Some(e), _) | Upgrade::Uni(_, _, Some(e), _) = &kind {
            resp.push_str("\r\nSec-WebSocket-Extensions: ");
            resp.push_str(e);
        }
        resp.push_str("\r\n\r\n");
        self.out.push_raw(Bytes::from(resp));
        Stop::Upgrade(kind)
    }
}
