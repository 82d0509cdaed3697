//! The HTTP transports of client sessions: HTTP-streaming and SSE with bidirectional
//! emulation (later commands arrive as `/emulation` requests, see [`emulation`]), and the
//! unidirectional SSE and HTTP stream. The HTTP layer (`crate::http`) answers the request's
//! checks and reads its body; [`run`] then turns the connection into a session whose replies
//! and pushes are the chunks of one long response.

pub mod emulation;

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::client::{Client, Framing};
use crate::config::CodeToHttp;
use crate::io::{prepare_read, read_more};
use crate::protocol::{ConnectReq, Format};
use crate::runtime::worker::{ConnectionSlot, Worker};
use crate::session::socket::{finish, open_on_socket};
use crate::session::Session;

/// What a streaming request starts with.
pub enum First {
    /// The first commands of a bidirectional stream (the first must be `connect`).
    Commands(Bytes),
    /// The connect request of a unidirectional stream.
    Connect(ConnectReq),
}

/// A streaming response about to start: everything [`run`] needs from the request.
pub struct Start {
    pub framing: Framing,
    pub format: Format,
    pub first: First,
    /// The response head and what precedes the first message (SSE's empty line).
    pub head: Bytes,
    /// A refused connect becomes this HTTP response instead of a stream (`uni_sse` /
    /// `uni_http_stream` `connect_code_to_http_response`).
    pub code_to_http: Option<CodeToHttp>,
    /// The request's headers that proxies forward.
    pub forwarded: crate::session::proxy::Forwarded,
}

/// Read buffer while streaming: the client sends nothing more on this connection.
const STREAM_READ_IDLE: usize = 64;

/// Runs a streaming session on an HTTP connection until either side ends it. The head is
/// written once the first command (connect) has run, so that a refused connect can still
/// become a plain HTTP response where the configuration asks for it.
pub fn run<R, W>(
    w: Rc<Worker>,
    slot: ConnectionSlot,
    start: Start,
    mut rd: R,
    wr: W,
    mut buf: BytesMut,
    sock: crate::io::Socket,
) -> impl std::future::Future<Output = ()>
where
    R: monoio::io::AsyncReadRent,
    W: monoio::io::AsyncWriteRent + 'static,
{
    let cfg = &w.cfg;
    let id = Session::new_client_id(&w, false);
    let client = Client::new(id, start.format, false, start.framing, cfg.client.queue_max_size);
    client.out.pause();
    let (s, writer) = open_on_socket(&w, client, None, wr, sock, cfg.websocket.write_timeout);
    s.keep_request_headers(start.forwarded);
    let inbox = start.framing.is_emulated().then(|| emulation::register(&w, &s));
    async move {
        let json = start.format == Format::Json;
        match start.first {
            First::Commands(body) => {
                // Anything but a connect first is a bad request, answered in the stream.
                let _ = Box::pin(s.on_message(json, body)).await;
            }
            First::Connect(req) => Box::pin(s.connect_uni(req)).await,
        }
        let refused = s.refused.get().filter(|_| s.is_closed());
        match (refused, &start.code_to_http) {
            (Some(code), Some(map)) if map.enabled => {
                s.client.out.resume(None, Some(vec![mapped_response(map, code)]));
            }
            _ => s.client.out.resume(Some(start.head), None),
        }
        if !s.is_closed() {
            let commands = async {
                match &inbox {
                    Some(inbox) => emulation::run_commands(&s, inbox).await,
                    None => std::future::pending().await,
                }
            };
            let gone = async {
                // The client sends nothing more: a read ends when it goes away (or when the
                // writer shut the socket after a server close).
                loop {
                    buf.clear();
                    prepare_read(&mut buf, false, STREAM_READ_IDLE);
                    let (res, b) = read_more(&mut rd, std::mem::take(&mut buf)).await;
                    buf = b;
                    if !matches!(res, Ok(n) if n > 0) {
                        return;
                    }
                }
            };
            monoio::select! {
                _ = commands => {}
                _ = gone => s.vanished(),
            }
        }
        if let Some(sid) = &s.sid {
            emulation::unregister(&w, sid);
        }
        finish(s, writer, slot).await;
    }
}

/// The HTTP response a refused connect maps to: the matching transform's status and body
/// (the reason when the body is empty), else 500.
fn mapped_response(map: &CodeToHttp, code: u32) -> Bytes {
    match map.transforms.iter().find(|t| t.code == code) {
        Some(t) => {
            let body = if t.to.body.is_empty() { reason_of(code) } else { t.to.body.clone() };
            crate::wire::http::response(t.to.status_code, "text/plain; charset=utf-8", body.as_bytes(), false)
        }
        None => crate::wire::http::response(500, "text/plain; charset=utf-8", b"Internal Server Error", false),
    }
}

/// Centrifugo's message or reason for a refusal code.
fn reason_of(code: u32) -> String {
    use crate::error::{ApiError, Disconnect};
    let errors = [
        ApiError::INTERNAL,
        ApiError::UNAUTHORIZED,
        ApiError::PERMISSION_DENIED,
        ApiError::BAD_REQUEST,
        ApiError::TOKEN_EXPIRED,
        ApiError::EXPIRED,
        ApiError::TOO_MANY_REQUESTS,
    ];
    if let Some(e) = errors.iter().find(|e| e.code == code) {
        return e.message.to_string();
    }
    let disconnects = [
        Disconnect::INVALID_TOKEN,
        Disconnect::BAD_REQUEST,
        Disconnect::STALE,
        Disconnect::EXPIRED,
        Disconnect::INTERNAL,
        Disconnect::CONNECTION_LIMIT,
        Disconnect::CHANNEL_LIMIT,
        Disconnect::PERMISSION_DENIED,
    ];
    disconnects.iter().find(|d| d.code as u32 == code).map(|d| d.reason.to_string()).unwrap_or_default()
}
