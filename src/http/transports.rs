//! Routes of the client transports other than the WebSocket: HTTP-streaming and SSE with
//! `/emulation`, the unidirectional SSE, HTTP stream and WebSocket. Each request is checked
//! and its body read here, with Centrifugo's statuses for what is wrong (405, 400, 413, 503);
//! a good one turns the connection into a streaming session (`crate::stream::run`) or a
//! unidirectional WebSocket (`crate::ws::uni`).

use bytes::Bytes;
use monoio::io::AsyncReadRent;

use super::serve::{Conn, Kind, Reader, Stop, Upgrade};
use crate::client::{http_chunk, Framing};
use crate::protocol::{decode_connect_request, Format};
use crate::stream::emulation::{self, Routed};
use crate::stream::{First, Start};
use crate::wire::http::{Head, HttpMethod};

/// A handler prefix as Centrifugo mounts it: without a trailing `/`, empty meaning `/`.
fn mount(prefix: &str) -> &str {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

#[derive(Clone, Copy)]
enum Route {
    HttpStream,
    Sse,
    Emulation,
    UniWebSocket,
    UniSse,
    UniHttpStream,
}

impl Conn {
    /// The transport routes; gives the head back when the path is none of them.
    pub(super) async fn transports<R: AsyncReadRent>(
        &self,
        head: Head,
        r: &mut Reader<R>,
    ) -> Result<Option<Stop>, Head> {
        let cfg = &self.w.cfg;
        let head = match cfg.sockjs.enabled {
            true => match self.sockjs(head, r).await {
                Ok(head) => head,
                Err(stop) => return Ok(stop),
            },
            false => head,
        };
        let path = head.path.as_str();
        let route = if cfg.http_stream.enabled && path == mount(&cfg.http_stream.handler_prefix) {
            Route::HttpStream
        } else if cfg.sse.enabled && path == mount(&cfg.sse.handler_prefix) {
            Route::Sse
        } else if (cfg.sse.enabled || cfg.http_stream.enabled) && path == mount(&cfg.emulation.handler_prefix) {
            Route::Emulation
        } else if cfg.uni_websocket.enabled && path == mount(&cfg.uni_websocket.handler_prefix) {
            Route::UniWebSocket
        } else if cfg.uni_sse.enabled && path == mount(&cfg.uni_sse.handler_prefix) {
            Route::UniSse
        } else if cfg.uni_http_stream.enabled && path == mount(&cfg.uni_http_stream.handler_prefix) {
            Route::UniHttpStream
        } else {
            return Err(head);
        };
        Ok(Box::pin(self.transport(route, head, r)).await)
    }

    async fn transport<R: AsyncReadRent>(&self, route: Route, head: Head, r: &mut Reader<R>) -> Option<Stop> {
        let cfg = self.w.cfg.clone();
        let m = head.method;
        let preflight = matches!(route, Route::HttpStream | Route::Emulation | Route::UniHttpStream);
        if m == HttpMethod::Options && preflight {
            let extra = "Access-Control-Max-Age: 300\r\nAccess-Control-Allow-Methods: POST, OPTIONS\r\n";
            return self.plain(&head, 204, &format!("{}{extra}", self.cors(&head)), b"");
        }
        let allowed = match route {
            Route::HttpStream | Route::Emulation | Route::UniHttpStream => m == HttpMethod::Post,
            Route::Sse | Route::UniSse => m == HttpMethod::Get || m == HttpMethod::Post,
            // A WebSocket handshake sent with another method: 405 (anything else that is not
            // a handshake gets the handshake's 400).
            Route::UniWebSocket => m == HttpMethod::Get || head.header("sec-websocket-key").is_none(),
        };
        if !allowed {
            return self.answer(head, r, 405, "", b"").await;
        }
        if let Route::UniWebSocket = route {
            return Some(self.uni_websocket(&head));
        }
        if head.http10 && !matches!(route, Route::Emulation) {
            // A stream is sent chunked, which HTTP/1.0 does not have.
            return self.answer(head, r, 505, "", b"").await;
        }
        let limit = match route {
            Route::HttpStream => cfg.http_stream.body_limit(),
            Route::Sse => cfg.sse.body_limit(),
            Route::Emulation if cfg.emulation.max_request_body_size == 0 => 65536,
            Route::Emulation => cfg.emulation.max_request_body_size,
            Route::UniSse => cfg.uni_sse.body_limit(),
            _ => cfg.uni_http_stream.body_limit(),
        };
        let body = if m == HttpMethod::Post {
            match self.read_body_up_to(&head, r, limit).await {
                Ok(b) => b.freeze(),
                Err(stop) => return Some(stop),
            }
        } else {
            Bytes::new()
        };
        let protobuf = head.header("content-type") == Some(b"application/octet-stream");
        if let Route::Emulation = route {
            let status = match emulation::Request::decode(&body, protobuf) {
                None => 400,
                Some(req) => match emulation::route(&self.w, &req.node, &req.session, req.data).await {
                    Routed::Done => 204,
                    Routed::UnknownNode => 404,
                    Routed::Failed => 500,
                },
            };
            return self.plain(&head, status, &self.cors(&head), b"");
        }
        let query = head.query_param("cf_connect").filter(|q| !q.is_empty()).map(Bytes::from);
        let (framing, format, first) = match route {
            Route::HttpStream => {
                let format = if protobuf { Format::Protobuf } else { Format::Json };
                (Framing::HttpStream, format, First::Commands(body))
            }
            Route::Sse => {
                let commands = if m == HttpMethod::Get {
                    let Some(q) = query else { return self.plain(&head, 400, "", b"") };
                    // Over the command size cap: a bad request, answered in the stream.
                    if q.len() > limit {
                        Bytes::new()
                    } else {
                        q
                    }
                } else {
                    body
                };
                (Framing::Sse, Format::Json, First::Commands(commands))
            }
            _ => {
                let uni_sse = matches!(route, Route::UniSse);
                let req =
                    if uni_sse && m == HttpMethod::Get { query.unwrap_or(Bytes::from_static(b"{}")) } else { body };
                let Ok(req) = decode_connect_request(Format::Json, &req) else {
                    return self.plain(&head, 400, "", b"");
                };
                let framing = if uni_sse { Framing::UniSse } else { Framing::UniHttpStream };
                (framing, Format::Json, First::Connect(req))
            }
        };
        let Some(slot) = self.connection_slot() else { return self.plain(&head, 503, "", b"") };
        let code_to_http = match route {
            Route::UniSse => Some(cfg.uni_sse.connect_code_to_http_response.clone()),
            Route::UniHttpStream => Some(cfg.uni_http_stream.connect_code_to_http_response.clone()),
            _ => None,
        };
        let forwarded = crate::session::proxy::forwarded(&self.w, &head.headers);
        let start =
            Start { framing, format, first, head: self.stream_head(&head, framing, format), code_to_http, forwarded };
        Some(Stop::Upgrade(Upgrade::Stream(Box::new(start), slot)))
    }

    /// The unidirectional WebSocket's handshake: a connect request in `cf_connect` is read
    /// before the upgrade (400 when invalid); otherwise the first message carries it.
    fn uni_websocket(&self, head: &Head) -> Stop {
        let req = match head.query_param("cf_connect").filter(|q| !q.is_empty()) {
            Some(q) => match decode_connect_request(Format::Json, q.as_bytes()) {
                Ok(req) => Some(req),
                Err(_) => {
                    self.out.push_raw(crate::wire::http::response(
                        400,
                        "text/plain; charset=utf-8",
                        b"invalid connect request\n",
                        false,
                    ));
                    return Stop::Close;
                }
            },
            None => None,
        };
        self.websocket(head, Kind::Uni(req))
    }

    /// Centrifugo's CORS headers for an allowed `Origin` (none for a refused one: the
    /// request is still served, and the browser blocks the response).
    fn cors(&self, head: &Head) -> String {
        let Some(origin) = head.header("origin") else { return String::new() };
        if !self.origin_allowed(head) {
            return String::new();
        }
        let mut out = format!(
            "Access-Control-Allow-Origin: {}\r\nAccess-Control-Allow-Credentials: true\r\n",
            String::from_utf8_lossy(origin)
        );
        if let Some(h) = head.header("access-control-request-headers").filter(|h| *h != b"null") {
            out.push_str(&format!("Access-Control-Allow-Headers: {}\r\n", String::from_utf8_lossy(h)));
        }
        out
    }

    /// The head of a streaming response (chunked, never cached or buffered by proxies), and
    /// for SSE the empty line that opens the event stream.
    fn stream_head(&self, head: &Head, framing: Framing, format: Format) -> Bytes {
        let content_type = match (framing, format) {
            (Framing::Sse | Framing::UniSse, _) => "text/event-stream; charset=utf-8",
            (_, Format::Protobuf) => "application/octet-stream",
            _ => "text/plain; charset=utf-8",
        };
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\
             X-Accel-Buffering: no\r\nCache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\n\
             Pragma: no-cache\r\nExpire: 0\r\n{}\r\n",
            self.cors(head)
        )
        .into_bytes();
        if matches!(framing, Framing::Sse | Framing::UniSse) {
            out.extend_from_slice(&http_chunk(&[b"\r\n"]));
        }
        out.into()
    }

    /// A small response with extra header lines (`headers`, each ending in CRLF).
    pub(super) fn plain(&self, head: &Head, status: u16, headers: &str, body: &[u8]) -> Option<Stop> {
        let keep = head.keep_alive && !head.has_body();
        let mut out = format!("HTTP/1.1 {status} {}\r\n{headers}", crate::wire::http::reason(status));
        if status != 204 {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if !keep {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        self.out.push_raw(out.into());
        (!keep).then_some(Stop::Close)
    }
}
