//! The HTTP side of SockJS (`sockjs.enabled`, below `sockjs.handler_prefix`): the greeting,
//! `/info`, the CORS preflights, and the session URLs `/<server>/<session>/<transport>` of
//! the websocket, xhr-streaming and xhr-polling transports plus `xhr_send`, with the statuses
//! and bodies SockJS servers answer. The sessions themselves are `crate::sockjs`.

use bytes::Bytes;
use monoio::io::AsyncReadRent;

use super::serve::{Conn, Kind, Reader, Stop, Upgrade};
use crate::sockjs::{Route, Transport};
use crate::wire::http::{Head, HttpMethod};

/// Starts the session of a SockJS upgrade: a WebSocket, or with `xhr` (the session id and
/// the response head) an xhr-streaming response.
pub(super) fn spawn<R, W>(
    w: std::rc::Rc<crate::runtime::worker::Worker>,
    slot: crate::runtime::worker::ConnectionSlot,
    fwd: crate::session::proxy::Forwarded,
    xhr: Option<Box<(String, Bytes)>>,
    reader: Reader<R>,
    wr: W,
    sock: crate::io::Socket,
) where
    R: AsyncReadRent + 'static,
    W: monoio::io::AsyncWriteRent + 'static,
{
    let (rd, buf) = (reader.rd, reader.buf);
    match xhr {
        None => monoio::spawn(crate::sockjs::run_websocket(w, slot, fwd, rd, wr, buf, sock)),
        Some(x) => {
            let (sid, head) = *x;
            monoio::spawn(crate::sockjs::run_streaming(w, slot, sid, head, fwd, rd, wr, buf, sock))
        }
    };
}

/// Never cached.
const NO_STORE: &str = "Cache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0\r\n";

impl Conn {
    /// The SockJS routes: `Err` with what they answered, `Ok` with the head when the path is
    /// not below the prefix.
    pub(super) async fn sockjs<R: AsyncReadRent>(&self, head: Head, r: &mut Reader<R>) -> Result<Head, Option<Stop>> {
        let cfg = &self.w.cfg;
        let prefix = cfg.sockjs.handler_prefix.trim_end_matches('/');
        let Some(rest) = head.path.strip_prefix(prefix).filter(|r| r.is_empty() || r.starts_with('/')) else {
            return Ok(head);
        };
        let Some(route) = crate::sockjs::route(rest) else {
            return Err(self.answer(head, r, 404, "text/plain; charset=utf-8", b"404 page not found").await);
        };
        let route = match route {
            Route::Greeting => None,
            Route::Info => Some(None),
            Route::Session { session, transport } => Some(Some((session.to_string(), transport))),
        };
        Err(Box::pin(self.sockjs_route(route, head, r)).await)
    }

    async fn sockjs_route<R: AsyncReadRent>(
        &self,
        route: Option<Option<(String, Transport)>>,
        head: Head,
        r: &mut Reader<R>,
    ) -> Option<Stop> {
        let m = head.method;
        let cors = self.sockjs_cors(&head);
        let Some(route) = route else {
            if m != HttpMethod::Get && m != HttpMethod::Head {
                return self.answer(head, r, 405, "", b"").await;
            }
            return self.answer(head, r, 200, "text/plain; charset=UTF-8", b"Welcome to SockJS!\n").await;
        };
        let Some((sid, transport)) = route else {
            // `/info`.
            return match m {
                HttpMethod::Options => self.sockjs_preflight(&head, "OPTIONS, GET"),
                HttpMethod::Get => {
                    let body = crate::sockjs::info_body();
                    let headers = format!("Content-Type: application/json; charset=UTF-8\r\n{NO_STORE}{cors}");
                    self.plain(&head, 200, &headers, body.as_bytes())
                }
                _ => self.answer(head, r, 405, "", b"").await,
            };
        };
        if transport == Transport::WebSocket {
            if m != HttpMethod::Get {
                return self.answer(head, r, 405, "", b"").await;
            }
            if head.header("upgrade").is_none() {
                let body = b"Can \"Upgrade\" only to \"WebSocket\".";
                return self.answer(head, r, 400, "text/plain; charset=utf-8", body).await;
            }
            return Some(self.websocket(&head, Kind::SockJs));
        }
        if m == HttpMethod::Options {
            return self.sockjs_preflight(&head, "OPTIONS, POST");
        }
        if m != HttpMethod::Post {
            return self.answer(head, r, 405, "", b"").await;
        }
        let body = match self.read_body_up_to(&head, r, self.w.cfg.websocket.message_size_limit).await {
            Ok(b) => b.freeze(),
            Err(stop) => return Some(stop),
        };
        let fwd = crate::session::proxy::forwarded(&self.w, &head.headers);
        let js = format!("Content-Type: application/javascript; charset=UTF-8\r\n{NO_STORE}{cors}");
        match transport {
            Transport::XhrSend => {
                if body.is_empty() {
                    return self.plain(&head, 500, "Content-Type: text/plain; charset=utf-8\r\n", b"Payload expected.");
                }
                if crate::sockjs::decode_messages(&body).is_none() {
                    let ct = "Content-Type: text/plain; charset=utf-8\r\n";
                    return self.plain(&head, 500, ct, b"Broken JSON encoding.");
                }
                if !crate::sockjs::send(&self.w, &sid, body).await {
                    return self.plain(&head, 404, &cors, b"");
                }
                let headers = format!("Content-Type: text/plain; charset=UTF-8\r\n{NO_STORE}{cors}");
                self.plain(&head, 204, &headers, b"")
            }
            Transport::Xhr => {
                let peer = self.peer;
                let body = crate::sockjs::poll(&self.w, &sid, || self.connection_slot(), fwd, peer).await;
                match body {
                    Some(b) => self.plain(&head, 200, &js, &b),
                    None => self.plain(&head, 503, "", b""),
                }
            }
            Transport::XhrStreaming => {
                if head.http10 {
                    return self.answer(head, r, 505, "", b"").await;
                }
                let Some(slot) = self.connection_slot() else { return self.plain(&head, 503, "", b"") };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\n{js}Transfer-Encoding: chunked\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n"
                );
                Some(Stop::Upgrade(Upgrade::SockJs(slot, fwd, Some(Box::new((sid, Bytes::from(resp)))))))
            }
            Transport::WebSocket => unreachable!("answered above"),
        }
    }

    /// SockJS's CORS headers: the request's origin when the origin rule allows it, and the
    /// `JSESSIONID` cookie echoed when the client sent one (load balancers pin sessions by
    /// it).
    fn sockjs_cors(&self, head: &Head) -> String {
        let mut out = String::new();
        if let Some(origin) = head.header("origin").filter(|_| self.origin_allowed(head)) {
            out.push_str(&format!(
                "Access-Control-Allow-Origin: {}\r\nAccess-Control-Allow-Credentials: true\r\n",
                String::from_utf8_lossy(origin)
            ));
        }
        let cookie = head.header("cookie").map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default();
        if let Some(id) = cookie.split(';').find_map(|c| c.trim().strip_prefix("JSESSIONID=")) {
            if id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                out.push_str(&format!("Set-Cookie: JSESSIONID={id}; Path=/\r\n"));
            }
        }
        out
    }

    fn sockjs_preflight(&self, head: &Head, methods: &str) -> Option<Stop> {
        let mut headers = format!(
            "{}Access-Control-Allow-Methods: {methods}\r\nAccess-Control-Max-Age: 31536000\r\n\
             Cache-Control: public, max-age=31536000\r\n",
            self.sockjs_cors(head)
        );
        if let Some(h) = head.header("access-control-request-headers").filter(|h| *h != b"null") {
            headers.push_str(&format!("Access-Control-Allow-Headers: {}\r\n", String::from_utf8_lossy(h)));
        }
        self.plain(head, 204, &headers, b"")
    }
}
