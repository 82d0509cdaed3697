//! The WebSocket transport of client sessions: the subprotocol negotiation of the opening
//! handshake (the handshake itself is answered by `crate::http::serve`) and [`run_session`],
//! which opens a session on an upgraded connection and drives it with the shared read loop
//! (`crate::io::ws`).

use std::rc::Rc;

pub mod uni;

use bytes::{Bytes, BytesMut};

use crate::client::{Client, Framing};
use crate::config::WsCompression;
use crate::io::ws::{read_loop_with, Conn};
use crate::protocol::Format;
use crate::runtime::worker::{ConnectionSlot, Worker};
use crate::session::socket::{open_on_socket, read_then_finish};
use crate::session::{RawStart, Session};
use crate::wire::deflate::Deflate;
use crate::wire::http::Head;
use crate::wire::ws::Decoder;

/// Picks the wire format: the `centrifuge-protobuf` subprotocol or `?format=protobuf` /
/// `?cf_protocol=protobuf`. Returns the format and the subprotocol to echo.
pub fn negotiate(head: &Head) -> (Format, Option<&'static str>) {
    let protos = head
        .header("sec-websocket-protocol")
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
        .unwrap_or_default();
    let asked: Vec<&str> = protos.split(',').map(str::trim).collect();
    if asked.contains(&"centrifuge-protobuf") {
        return (Format::Protobuf, Some("centrifuge-protobuf"));
    }
    let q = |k: &str| head.query_param(k).map(|v| v.eq_ignore_ascii_case("protobuf")).unwrap_or(false);
    let format = if q("format") || q("cf_protocol") { Format::Protobuf } else { Format::Json };
    (format, asked.contains(&"centrifuge-json").then_some("centrifuge-json"))
}

/// Read buffer of an idle session: client frames are mostly tiny (a pong is 8 bytes), and an
/// idle socket holds its buffer while the read is pending; larger messages grow it.
const SESSION_READ_IDLE: usize = 64;

struct SessionConn(Rc<Session>);

impl Conn for SessionConn {
    fn send(&self, frame: Bytes) {
        let _ = self.0.client.send_reply(frame);
    }
    fn is_closed(&self) -> bool {
        self.0.client.out.is_closed()
    }
    async fn on_data(&self, text: bool, data: Bytes) -> bool {
        // Boxed: the command futures are large and live only while a message is handled,
        // not for the whole (mostly idle) session.
        Box::pin(self.0.on_message(text, data)).await && !self.0.is_closed()
    }
    fn on_pong(&self) {
        self.0.on_pong();
    }
    fn on_close(&self, code: u16) {
        self.0.close_with(code);
    }
    fn on_gone(&self) {
        self.0.vanished();
    }
}

/// The read side of a WebSocket transport whose messages are limited to `limit` bytes: with
/// permessage-deflate negotiated (`z`: the transport's options) compressed messages are
/// inflated, up to its decompressed limit.
pub fn decoder(limit: usize, z: Option<&WsCompression>) -> Decoder {
    let dec = Decoder::new(limit, limit);
    match z {
        Some(z) => dec.with_inflate(z.inflate_limit(limit)),
        None => dec,
    }
}

/// What a client that negotiated permessage-deflate on a transport with options `z` gets.
pub fn deflate_of(z: &WsCompression) -> Deflate {
    Deflate::new(z.compression_level, z.compression_min_size)
}

/// Runs a client session (a raw gateway client with `raw`) on an upgraded connection until
/// it closes; the connection's place in the node's count (`slot`) is freed then. `deflate`:
/// the handshake negotiated permessage-deflate (`websocket.compression*` apply).
#[allow(clippy::too_many_arguments)]
pub fn run_session<R, W>(
    w: Rc<Worker>,
    slot: ConnectionSlot,
    format: Format,
    deflate: bool,
    raw: Option<RawStart>,
    forwarded: crate::session::proxy::Forwarded,
    rd: R,
    wr: W,
    buf: BytesMut,
    sock: crate::io::Socket,
) -> impl std::future::Future<Output = ()>
where
    R: monoio::io::AsyncReadRent,
    W: monoio::io::AsyncWriteRent + 'static,
{
    // Opened before the task starts, so the task's future (held for the connection's whole
    // life) keeps only what the read loop needs, not the set-up's temporaries.
    let cfg = &w.cfg;
    let id = Session::new_client_id(&w, raw.is_some());
    let mut client = Client::new(id, format, raw.is_some(), Framing::WebSocket, cfg.client.queue_max_size);
    let z = deflate.then_some(&cfg.websocket.deflate);
    client.deflate = z.map(deflate_of);
    let (s, writer) = open_on_socket(&w, client, raw, wr, sock, cfg.websocket.write_timeout);
    s.keep_request_headers(forwarded);
    let dec = decoder(cfg.websocket.message_size_limit, z);
    read_then_finish(read_loop_with(SessionConn(s.clone()), rd, buf, dec, SESSION_READ_IDLE), s, writer, slot)
}

#[cfg(test)]
mod tests {
    #[test]
    fn compression_levels_agree() {
        assert_eq!(crate::config::WsCompression::LEVELS, crate::wire::deflate::LEVELS);
    }
}
