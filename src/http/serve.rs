//! One HTTP connection: reads pipelined requests, routes them, and streams responses in
//! request order through the connection's [`ConnOut`].
//!
//! Routes: `POST /api` (legacy, newline-delimited commands parsed as the body arrives and
//! answered as a chunked stream of reply lines), `POST /api/<method>` (one command),
//! `/health`, `/metrics` (`prometheus.enabled`) and the admin interface (`admin.enabled`:
//! `/`, `/admin/*`, see `crate::admin`). The reader task only reads; a separate writer task
//! only writes.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncReadRent;

use crate::io::{prepare_read_up_to, read_more, Socket};

use super::constant_eq;
use super::out::{ConnOut, ReplyShape};
use super::pipeline::{Line, Pipe};
use crate::api::parse::{self, DecodeError, LineSplitter, Piece};
use crate::api::{Method, Reply};
use crate::exec;
use crate::runtime::worker::{ConnectionSlot, Tag, Worker};
use crate::wire::http::{self as codec, BodyDecoder, Head, HttpMethod};

/// Read buffer of an idle HTTP connection: an idle socket keeps its buffer for the pending
/// read (io_uring owns it until data arrives), so it is kept small and grown only under load.
const READ_IDLE: usize = 2 * 1024;
/// Smallest read buffer inside a request body.
const READ_IN_BODY: usize = 32 * 1024;
/// Largest read buffer between requests.
const READ_BUSY: usize = 64 * 1024;
/// Largest read buffer inside a request body (a legacy stream reads its lines in large
/// pieces: fewer reads, and its replies leave in fewer, larger writes).
const READ_STREAM: usize = 256 * 1024;

/// Why the read side stopped.
pub(super) enum Stop {
    /// Peer closed or the socket failed: finish queued output, then close.
    Eof,
    /// We answered with an error and must close (body left unread).
    Close,
    /// The 101 response is queued: the connection continues as a WebSocket session.
    Upgrade(Upgrade),
}

/// What an upgraded connection becomes. Client connections hold their place in the node's
/// count (`client.connection_limit`), taken before the 101 is queued.
pub(super) enum Upgrade {
    /// A Centrifuge protocol client; the permessage-deflate answer when it negotiated that.
    Client(crate::protocol::Format, ConnectionSlot, Option<&'static str>, crate::session::proxy::Forwarded),
    /// A unidirectional WebSocket client (its connect request when the URL carried it); the
    /// permessage-deflate answer when it negotiated that.
    Uni(Option<crate::protocol::ConnectReq>, ConnectionSlot, Option<&'static str>, crate::session::proxy::Forwarded),
    /// A streaming HTTP response carrying a client session (`crate::stream`).
    Stream(Box<crate::stream::Start>, ConnectionSlot),
    /// A raw gateway client of a `gateway.servers` endpoint.
    Raw(crate::session::RawStart, ConnectionSlot),
    /// A gateway backend on `/ws/v1`.
    Backend(crate::gateway::backend::Roles),
    /// SockJS over a WebSocket, or (with its session id and response head) xhr-streaming.
    SockJs(ConnectionSlot, crate::session::proxy::Forwarded, Option<Box<(String, bytes::Bytes)>>),
}

/// What an upgrade request asks to become, before its limits are checked.
pub(super) enum Kind {
    Client,
    Uni(Option<crate::protocol::ConnectReq>),
    Raw(crate::session::RawStart),
    Backend(crate::gateway::backend::Roles),
    SockJs,
}

/// The read half plus its buffer.
pub(super) struct Reader<R> {
    pub(super) rd: R,
    pub(super) buf: BytesMut,
    last_full: bool,
    /// Told of every read that brought bytes (graceful shutdown waits only for requests whose
    /// bytes keep coming).
    out: Rc<ConnOut>,
}

impl<R: AsyncReadRent> Reader<R> {
    /// Reads more bytes into the buffer; false at EOF or error.
    pub(super) async fn fill(&mut self) -> bool {
        // Inside a request body the buffer stays large: a stream's bytes arrive over time,
        // and reads of whatever little is there (then a buffer shrunk back to idle) meant
        // many small reads, each followed by a small write of its replies.
        let (min, max) = if self.out.in_request() { (READ_IN_BODY, READ_STREAM) } else { (READ_IDLE, READ_BUSY) };
        prepare_read_up_to(&mut self.buf, self.last_full, min, max);
        let spare = self.buf.capacity() - self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = read_more(&mut self.rd, buf).await;
        self.buf = buf;
        self.last_full = matches!(res, Ok(n) if n == spare);
        let got = matches!(res, Ok(n) if n > 0);
        if got {
            self.out.note_read();
        }
        got
    }
}

/// Serves one connection (plain or TLS) until it closes.
pub(super) async fn serve_stream<R, W>(
    w: Rc<Worker>,
    rd: R,
    wr: W,
    sock: Socket,
    peer: Option<std::net::IpAddr>,
    endpoints: super::Endpoints,
) where
    R: monoio::io::AsyncReadRent + 'static,
    W: monoio::io::AsyncWriteRent + 'static,
{
    let out = Rc::new(ConnOut::default());
    let (key, gen) = w.register_sink(out.clone());
    let writer = {
        let out = out.clone();
        monoio::spawn(async move { out.run_writer(wr).await })
    };
    // `run_writer` hands the write half back on upgrade.
    let mut reader = Reader { rd, buf: BytesMut::with_capacity(READ_IDLE), last_full: false, out: out.clone() };
    let conn = Conn { w: w.clone(), out: out.clone(), key, gen, peer, endpoints };
    let stop = conn.run(&mut reader).await;
    if let Stop::Upgrade(kind) = stop {
        out.upgrade();
        let wr = writer.await;
        w.unregister_sink(key);
        // Without the write half (the 101 was not written) the slot is dropped here.
        if let Some(wr) = wr {
            // A task of its own, so this (larger) HTTP state is freed for the session's life.
            match kind {
                Upgrade::Client(format, slot, deflate, fwd) => {
                    let (rd, buf, deflate) = (reader.rd, reader.buf, deflate.is_some());
                    monoio::spawn(crate::ws::run_session(w, slot, format, deflate, None, fwd, rd, wr, buf, sock));
                }
                Upgrade::Uni(req, slot, deflate, fwd) => {
                    let (rd, buf, deflate) = (reader.rd, reader.buf, deflate.is_some());
                    monoio::spawn(crate::ws::uni::run(w, slot, req, deflate, fwd, rd, wr, buf, sock));
                }
                Upgrade::Stream(start, slot) => {
                    monoio::spawn(crate::stream::run(w, slot, *start, reader.rd, wr, reader.buf, sock));
                }
                Upgrade::Raw(start, slot) => {
                    let (format, rd, buf) = (crate::protocol::Format::Json, reader.rd, reader.buf);
                    monoio::spawn(crate::ws::run_session(
                        w,
                        slot,
                        format,
                        false,
                        Some(start),
                        Vec::new(),
                        rd,
                        wr,
                        buf,
                        sock,
                    ));
                }
                Upgrade::Backend(roles) => {
                    monoio::spawn(crate::gateway::backend::run(w, roles, reader.rd, wr, reader.buf, sock.fd));
                }
                Upgrade::SockJs(slot, fwd, xhr) => super::sockjs::spawn(w, slot, fwd, xhr, reader, wr, sock),
            }
        }
        return;
    }
    out.close();
    writer.await;
    w.unregister_sink(key);
}

pub(super) struct Conn {
    pub(super) w: Rc<Worker>,
    pub(super) out: Rc<ConnOut>,
    key: u32,
    gen: u32,
    pub(super) peer: Option<std::net::IpAddr>,
    /// What the listener that accepted this connection serves.
    endpoints: super::Endpoints,
}

impl Conn {
    /// The peer's address for log lines ("" when unknown).
    pub(super) fn remote(&self) -> String {
        self.peer.map(|p| p.to_string()).unwrap_or_default()
    }

    fn tag(&self, seq: u64) -> Tag {
        Tag::Reply { conn: self.key, gen: self.gen, seq }
    }

    async fn run<R: AsyncReadRent>(&self, r: &mut Reader<R>) -> Stop {
        let max_head = self.w.cfg.http_server.max_head_size;
        let idle_timeout = self.w.cfg.http_server.idle_timeout;
        let header_timeout = self.w.cfg.http_server.read_header_timeout;
        loop {
            // Pipelined requests already buffered wait too while the connection owes too
            // much: a client that does not read its replies stops being read.
            if !self.out.has_room() {
                self.out.wait_room().await;
            }
            if self.out.is_dead() {
                return Stop::Eof;
            }
            // When the wait for this head (idle) or its first byte began.
            let mut head_since: Option<Instant> = None;
            let head = loop {
                match codec::parse_head(&r.buf) {
                    Ok(Some((head, n))) => {
                        let _ = r.buf.split_to(n);
                        break head;
                    }
                    Ok(None) if r.buf.len() > max_head => return self.fail(431),
                    Ok(None) => {
                        if !self.out.has_room() {
                            self.out.wait_room().await;
                        }
                        if self.out.is_dead() {
                            return Stop::Eof;
                        }
                        // Idle between requests, or a head trickling in: both are bounded.
                        let started = r.buf.is_empty();
                        let limit = if started { idle_timeout } else { header_timeout };
                        let since = *head_since.get_or_insert_with(Instant::now);
                        let read = if limit.is_zero() {
                            r.fill().await
                        } else {
                            let left = limit.saturating_sub(since.elapsed());
                            match monoio::time::timeout(left, r.fill()).await {
                                Ok(ok) => ok,
                                Err(_) if started => return Stop::Eof,
                                Err(_) => return self.fail(408),
                            }
                        };
                        if !read {
                            return Stop::Eof;
                        }
                        if started && !r.buf.is_empty() {
                            // The first bytes of a head: its own clock starts now.
                            head_since = Some(Instant::now());
                        }
                    }
                    Err(e) => return self.fail(e.0),
                }
            };
            // Busy until the request is read to its end: a stopping server answers it whole.
            self.out.set_in_request(true);
            let stop = Box::pin(self.request(head, r)).await;
            self.out.set_in_request(false);
            if let Some(stop) = stop {
                return stop;
            }
        }
    }

    /// Answers a malformed request and closes.
    pub(super) fn fail(&self, status: u16) -> Stop {
        self.out.push_raw(codec::response(
            status,
            "text/plain; charset=utf-8",
            codec::reason(status).as_bytes(),
            false,
        ));
        Stop::Close
    }

    /// A response that leaves the connection usable only if the request had no body. A HEAD
    /// request gets the head alone (RFC 9110 §9.3.2).
    pub(super) fn simple(&self, head: &Head, status: u16, content_type: &str, body: &[u8]) -> Option<Stop> {
        let keep = head.keep_alive && !head.has_body();
        let resp = codec::response(status, content_type, body, keep);
        let resp = if head.method == HttpMethod::Head { resp.slice(..resp.len() - body.len()) } else { resp };
        self.out.push_raw(resp);
        (!keep).then_some(Stop::Close)
    }

    /// Like [`Conn::simple`], but first reads and drops a small request body (up to 64 KiB, as
    /// Go's server does), so the connection stays usable for the next request.
    pub(super) async fn answer<R: AsyncReadRent>(
        &self,
        mut head: Head,
        r: &mut Reader<R>,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Option<Stop> {
        const DRAIN_MAX: u64 = 64 * 1024;
        if head.has_body() && !head.expect_continue && head.content_length.unwrap_or(0) <= DRAIN_MAX {
            let mut dec = BodyDecoder::new(&head);
            let mut seen = 0u64;
            let drained = loop {
                match dec.next(&mut r.buf) {
                    Ok(Some(piece)) => {
                        seen += piece.len() as u64;
                        if seen > DRAIN_MAX {
                            break false;
                        }
                    }
                    Ok(None) if dec.is_done() => break true,
                    Ok(None) => {
                        if !r.fill().await {
                            return Some(Stop::Eof);
                        }
                    }
                    Err(_) => break false,
                }
            };
            if drained {
                head.content_length = None;
                head.chunked = false;
            }
        }
        self.simple(&head, status, content_type, body)
    }

    async fn request<R: AsyncReadRent>(&self, head: Head, r: &mut Reader<R>) -> Option<Stop> {
        let cfg = &self.w.cfg;
        let prefix = cfg.http_api.handler_prefix.trim_end_matches('/');
        let path = head.path.as_str();
        let ep = self.endpoints;
        if ep.api
            && !cfg.http_api.disabled
            && (path == prefix || path.strip_prefix(prefix).is_some_and(|m| m.starts_with('/')))
        {
            if head.method != HttpMethod::Post {
                return self.answer(head, r, 405, "", b"").await;
            }
            if cfg.http_api.v1_enabled() && path.len() == prefix.len() + 1 {
                return self.v1_api(head, r).await;
            }
            if !self.authorized(&head) {
                tracing::info!(path = %head.path, remote = %self.remote(), "server API request refused: no valid API key");
                return self.answer(head, r, 401, "", b"").await;
            }
            if path == prefix {
                return self.legacy(head, r).await;
            }
            let name = &path[prefix.len() + 1..];
            let Some(method) = Method::from_name(name).filter(|m| m.name() == name) else {
                return self.answer(head, r, 404, "text/plain; charset=utf-8", b"404 page not found").await;
            };
            return self.single(head, method, r).await;
        }
        if ep.clients && !cfg.websocket.disabled && path == cfg.websocket.handler_prefix {
            return Some(self.websocket(&head, Kind::Client));
        }
        let head = if ep.clients {
            match self.transports(head, r).await {
                Ok(stop) => return stop,
                Err(head) => head,
            }
        } else {
            head
        };
        let head = if cfg.gateway.is_on() {
            match self.gateway(head, r).await {
                Ok(stop) => return stop,
                Err(head) => head,
            }
        } else {
            head
        };
        let path = head.path.as_str();
        if ep.ops && path == "/health" && cfg.health.enabled {
            return self.answer(head, r, 200, "application/json", b"{}").await;
        }
        if ep.ops && path == "/metrics" && cfg.prometheus.enabled {
            let text = super::ops::metrics_text(&self.w).await;
            return self.answer(head, r, 200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes()).await;
        }
        // The admin page's live tail connects where the page came from: with an internal
        // port that is not where clients connect.
        if ep.admin && cfg.admin.enabled && !cfg.websocket.disabled && path == "/admin/connection/websocket" {
            return Some(self.websocket(&head, Kind::Client));
        }
        if ep.admin && cfg.admin.enabled && crate::admin::routes(path) {
            return self.admin(head, r).await;
        }
        self.answer(head, r, 404, "text/plain; charset=utf-8", b"404 page not found").await
    }

    /// Gateway routes: raw client endpoints, `/ws/v1`, `/v1/mesh/send`, `/v1/mesh/publish`,
    /// `/v1/nodes`. Gives the head back when the path is none of them.
    async fn gateway<R: AsyncReadRent>(&self, head: Head, r: &mut Reader<R>) -> Result<Option<Stop>, Head> {
        let cfg = &self.w.cfg;
        let path = head.path.as_str();
        let ep = self.endpoints;
        if let Some(server) = cfg.gateway.servers.iter().find(|s| ep.clients && s.path == path) {
            let headers = head
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        crate::gateway::canonical_header(k),
                        serde_json::Value::from(String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect();
            let start = crate::session::RawStart { topic: server.topic.as_str().into(), headers };
            return Ok(Some(self.websocket(&head, Kind::Raw(start))));
        }
        if !ep.api || !(path == "/ws/v1" || path.starts_with("/v1/")) {
            return Err(head);
        }
        let Some(roles) = self.gateway_roles(&head) else {
            return Ok(self.answer(head, r, 401, "application/json", br#"{"E":{"c":401,"m":"unauthorized"}}"#).await);
        };
        match path {
            "/ws/v1" => Ok(Some(self.websocket(&head, Kind::Backend(roles)))),
            "/v1/nodes" => {
                if head.method != HttpMethod::Get && head.method != HttpMethod::Head {
                    return Ok(self.answer(head, r, 405, "", b"").await);
                }
                let body = crate::gateway::nodes_json(&self.w).await.to_string();
                Ok(self.simple(&head, 200, "application/json", body.as_bytes()))
            }
            "/v1/mesh/send" | "/v1/mesh/publish" => {
                if head.method != HttpMethod::Post {
                    return Ok(self.answer(head, r, 405, "", b"").await);
                }
                if !roles.write {
                    return Ok(self
                        .answer(head, r, 403, "application/json", br#"{"E":{"c":403,"m":"permission denied"}}"#)
                        .await);
                }
                let body = match self.read_body(&head, r).await {
                    Ok(b) => b,
                    Err(stop) => return Ok(Some(stop)),
                };
                let reply = crate::gateway::http_mesh(&self.w, path, &body).await;
                let keep = head.keep_alive;
                self.out.push_raw(codec::response(200, "application/json", reply.to_string().as_bytes(), keep));
                Ok((!keep).then_some(Stop::Close))
            }
            _ => Ok(self.answer(head, r, 404, "text/plain; charset=utf-8", b"404 page not found").await),
        }
    }

    /// Who may use the gateway API: the server API key (or `api_insecure`) allows all; an
    /// HTTP Basic user of `gateway.users` gets its roles when its host pattern matches.
    fn gateway_roles(&self, head: &Head) -> Option<crate::gateway::backend::Roles> {
        use crate::gateway::backend::Roles;
        if self.authorized(head) {
            return Some(Roles::ALL);
        }
        let auth = String::from_utf8_lossy(head.header("authorization")?).into_owned();
        let (scheme, b64) = auth.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        let ip = self.remote();
        let user = self.w.cfg.gateway.users.iter().find(|u| {
            u.name == name
                && constant_eq(u.password.as_bytes(), password.as_bytes())
                && (u.host.is_empty()
                    || u.host == "*"
                    || globset::Glob::new(&u.host).map(|g| g.compile_matcher().is_match(&ip)).unwrap_or(false))
        })?;
        let roles: Vec<&str> = user.role.split(',').map(str::trim).collect();
        Some(Roles { read: roles.contains(&"read"), write: roles.contains(&"write") })
    }

    /// Reads a whole request body bounded by `http_api.max_body_size`.
    pub(super) async fn read_body<R: AsyncReadRent>(&self, head: &Head, r: &mut Reader<R>) -> Result<BytesMut, Stop> {
        self.read_body_up_to(head, r, self.w.cfg.http_api.max_body_size).await
    }

    /// Reads a whole request body of at most `limit` bytes (413 beyond).
    pub(super) async fn read_body_up_to<R: AsyncReadRent>(
        &self,
        head: &Head,
        r: &mut Reader<R>,
        limit: usize,
    ) -> Result<BytesMut, Stop> {
        let limit = limit as u64;
        if head.content_length.is_some_and(|n| n > limit) {
            return Err(self.fail(413));
        }
        self.continue_100(head);
        let mut dec = BodyDecoder::new(head);
        let mut body = BytesMut::new();
        loop {
            match dec.next(&mut r.buf) {
                Ok(Some(piece)) => {
                    if body.len() as u64 + piece.len() as u64 > limit {
                        return Err(self.fail(413));
                    }
                    body.extend_from_slice(&piece);
                }
                Ok(None) if dec.is_done() => return Ok(body),
                Ok(None) => {
                    if !r.fill().await {
                        return Err(Stop::Eof);
                    }
                }
                Err(e) => return Err(self.fail(e.0)),
            }
        }
    }

    /// The admin interface's routes (see `crate::admin`).
    async fn admin<R: AsyncReadRent>(&self, head: Head, r: &mut Reader<R>) -> Option<Stop> {
        use crate::admin;
        let cfg = &self.w.cfg;
        let auth = head.header("authorization").map(|v| v.to_vec());
        let json = "application/json";
        match head.path.as_str() {
            "/admin/init" => {
                let body = admin::init(cfg, auth.as_deref());
                self.answer(head, r, 200, json, &body).await
            }
            "/admin/auth" | "/admin/api" | "/admin/node" | "/admin/tail" if head.method != HttpMethod::Post => {
                self.answer(head, r, 405, "", b"").await
            }
            "/admin/auth" => {
                let body = match self.read_body(&head, r).await {
                    Ok(b) => b,
                    Err(stop) => return Some(stop),
                };
                let password =
                    admin::form_value(&body, "password").or_else(|| head.query_param("password")).unwrap_or_default();
                let head = Self::bodiless(head);
                match admin::login(cfg, &password) {
                    Some(token) => {
                        let body = serde_json::json!({ "token": token }).to_string();
                        self.answer(head, r, 200, json, body.as_bytes()).await
                    }
                    None => self.answer(head, r, 400, "text/plain; charset=utf-8", b"Bad Request").await,
                }
            }
            _ if head.path.starts_with("/admin/")
                && admin::asset(&head.path).is_none()
                && !admin::authorized(cfg, auth.as_deref()) =>
            {
                self.answer(head, r, 401, "", b"").await
            }
            "/admin/api" => self.legacy(head, r).await,
            "/admin/node" => {
                let body = super::ops::node_json(&self.w).await;
                self.answer(head, r, 200, json, body.as_bytes()).await
            }
            "/admin/tail" => {
                let body = match self.read_body(&head, r).await {
                    Ok(b) => b,
                    Err(stop) => return Some(stop),
                };
                let head = Self::bodiless(head);
                match admin::tail_token(cfg, &body) {
                    Ok(b) => self.answer(head, r, 200, json, &b).await,
                    Err(e) => self.answer(head, r, 400, "text/plain; charset=utf-8", e.as_bytes()).await,
                }
            }
            path => match admin::asset(path) {
                Some((ctype, bytes)) => self.answer(head, r, 200, ctype, bytes).await,
                None => self.answer(head, r, 404, "text/plain; charset=utf-8", b"404 page not found").await,
            },
        }
    }

    /// The head of a request whose body has been read.
    fn bodiless(mut head: Head) -> Head {
        head.content_length = None;
        head.chunked = false;
        head
    }

    /// API key from `X-API-Key`, `Authorization: apikey KEY` or `?api_key=`.
    fn authorized(&self, head: &Head) -> bool {
        let api = &self.w.cfg.http_api;
        if api.insecure {
            return true;
        }
        if api.key.is_empty() {
            return false;
        }
        let key = api.key.as_bytes();
        // Centrifugo's order: X-API-Key when present, else `Authorization: apikey KEY`; when
        // that did not match, `?api_key=` gets its chance.
        let header_ok = match head.header("x-api-key").filter(|v| !v.is_empty()) {
            Some(v) => constant_eq(v, key),
            None => head.header("authorization").is_some_and(|v| {
                let s = String::from_utf8_lossy(v);
                let parts: Vec<&str> = s.split_whitespace().collect();
                parts.len() == 2 && parts[0].eq_ignore_ascii_case("apikey") && constant_eq(parts[1].as_bytes(), key)
            }),
        };
        if header_ok {
            return true;
        }
        head.query_param("api_key").is_some_and(|k| constant_eq(k.as_bytes(), key))
    }

    pub(super) fn continue_100(&self, head: &Head) {
        if head.expect_continue && !head.http10 {
            self.out.push_raw(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
    }

    /// `POST /api/<method>`: reads the whole (bounded) body, runs one command.
    async fn single<R: AsyncReadRent>(&self, head: Head, method: Method, r: &mut Reader<R>) -> Option<Stop> {
        let body = match self.read_body(&head, r).await {
            Ok(b) => b,
            Err(stop) => return Some(stop),
        };
        let transport_errors = self.w.cfg.http_api.error_mode == "transport"
            || head.header("x-centrifugo-error-mode").is_some_and(|v| v.eq_ignore_ascii_case(b"transport"));
        let shape = ReplyShape::New { keep_alive: head.keep_alive, transport_errors, method };
        let stop = (!head.keep_alive).then_some(Stop::Close);
        match parse::decode_params(method, &body) {
            Err(DecodeError::Malformed) => {
                self.out.push_raw(codec::response(400, "text/plain; charset=utf-8", b"Bad Request", head.keep_alive));
            }
            Err(DecodeError::Api(e)) => self.out.push_ready(shape, &Err(e)),
            Ok(cmd) => {
                let seq = self.out.push_pending(shape, method, body.len());
                self.run_command(cmd, seq);
            }
        }
        stop
    }

    /// Runs a command whose result fills slot `seq`: the fast path when it has one owner,
    /// else a local task.
    fn run_command(&self, cmd: crate::api::Command, seq: u64) {
        let tag = self.tag(seq);
        if let Err(cmd) = exec::route(&self.w, cmd, tag) {
            let w = self.w.clone();
            monoio::spawn(async move {
                let reply: Reply = exec::run(w.clone(), *cmd).await;
                w.complete(tag, reply);
            });
        }
    }

    /// `POST /api` legacy stream: each line is decoded as it arrives and executed; replies
    /// are streamed back, in order, as a chunked body.
    async fn legacy<R: AsyncReadRent>(&self, head: Head, r: &mut Reader<R>) -> Option<Stop> {
        let api = &self.w.cfg.http_api;
        let max_stream = api.max_stream_size;
        if max_stream > 0 && head.content_length.is_some_and(|n| n > max_stream) {
            return Some(self.fail(413));
        }
        self.continue_100(&head);
        let mut dec = BodyDecoder::new(&head);
        let mut split = LineSplitter::new(api.max_command_size);
        let mut st = LegacyRequest {
            count: 0,
            too_long_first: false,
            keep_alive: head.keep_alive,
            pipe: Pipe::new(&self.w, self.key, self.gen),
        };
        let mut total: u64 = 0;
        loop {
            match dec.next(&mut r.buf) {
                Ok(Some(_)) if self.w.past_shutdown_deadline() => {
                    // Stopping and out of time: the stream ends between two replies, without
                    // its final chunk, so the client knows which commands were answered.
                    return Some(Stop::Close);
                }
                Ok(Some(piece)) => {
                    total += piece.len() as u64;
                    if max_stream > 0 && total > max_stream {
                        return Some(self.end_stream_with(&mut st, 413));
                    }
                    split.feed(&piece, &mut |p| self.legacy_piece(&mut st, p));
                    st.pipe.flush(&self.w, &self.out);
                    if st.too_long_first {
                        return Some(self.fail(413));
                    }
                }
                Ok(None) if dec.is_done() => break,
                Ok(None) => {
                    if !self.out.has_room() {
                        self.out.wait_room().await;
                    }
                    if self.out.is_dead() {
                        return Some(Stop::Eof);
                    }
                    if !r.fill().await {
                        // The body ended early: answer what was complete, then close.
                        split.finish(&mut |p| self.legacy_piece(&mut st, p));
                        st.pipe.flush(&self.w, &self.out);
                        return Some(self.end_stream_with(&mut st, 400));
                    }
                }
                Err(e) => return Some(self.end_stream_with(&mut st, e.0)),
            }
        }
        split.finish(&mut |p| self.legacy_piece(&mut st, p));
        st.pipe.flush(&self.w, &self.out);
        if st.too_long_first {
            return Some(self.fail(413));
        }
        if st.count == 0 {
            // Empty body: Centrifugo answers 400.
            self.out.push_raw(codec::response(400, "text/plain; charset=utf-8", b"Bad Request", head.keep_alive));
            return (!head.keep_alive).then_some(Stop::Close);
        }
        self.out.push_raw(Bytes::from_static(b"0\r\n\r\n"));
        (!head.keep_alive).then_some(Stop::Close)
    }

    /// Ends a stream that broke mid-body: if replies already started, the chunked body is
    /// terminated cleanly; otherwise the status is sent. The connection closes either way.
    fn end_stream_with(&self, st: &mut LegacyRequest, status: u16) -> Stop {
        if st.count > 0 {
            self.out.push_raw(Bytes::from_static(b"0\r\n\r\n"));
            Stop::Close
        } else {
            self.fail(status)
        }
    }

    fn legacy_piece(&self, st: &mut LegacyRequest, piece: Piece<'_>) {
        if st.too_long_first {
            return;
        }
        let first = st.count == 0;
        if first {
            if piece == Piece::TooLong {
                st.too_long_first = true;
                return;
            }
            self.out.push_raw(codec::chunked_head(st.keep_alive));
        }
        st.count += 1;
        match piece {
            Piece::Line(l) => {
                let decoded = match st.pipe.line(&self.w, l, !first) {
                    Line::Taken => return,
                    Line::General(decoded) => decoded,
                };
                // What the general path runs must not overtake what was taken before it.
                st.pipe.flush(&self.w, &self.out);
                self.legacy_command(decoded.unwrap_or_else(|| parse::decode_line(l)), l.len(), first);
            }
            Piece::TooLong => {
                st.pipe.flush(&self.w, &self.out);
                self.out.push_ready(ReplyShape::Legacy { id: 0, sep: true }, &Err(crate::error::ApiError::BAD_REQUEST));
            }
        }
    }

    /// A legacy line on the general path: one command at a time, its reply in its own slot.
    fn legacy_command(&self, l: parse::Line, bytes: usize, first: bool) {
        let shape = ReplyShape::Legacy { id: l.id, sep: !first };
        match l.command {
            Err(e) => self.out.push_ready(shape, &Err(e)),
            Ok(cmd) => {
                let seq = self.out.push_pending(shape, cmd.method(), bytes);
                self.run_command(cmd, seq);
            }
        }
    }
}

/// Per-request state of a legacy stream.
struct LegacyRequest {
    count: u64,
    too_long_first: bool,
    keep_alive: bool,
    pipe: Pipe,
}
