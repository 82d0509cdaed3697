//! The unidirectional WebSocket (`uni_websocket`): the client sends its connect request
//! (in the URL's `cf_connect`, or as its first message) and then only receives bare pushes,
//! one per text frame. Later messages are read and dropped; native WebSocket pings keep the
//! connection checked beside the protocol's `{}` pings.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_util::future::{ready, Either, FutureExt};

use crate::client::{Client, Framing, Handler};
use crate::error::Disconnect;
use crate::io::ws::{read_loop_with, Conn};
use crate::protocol::{decode_connect_request, ConnectReq, Format};
use crate::runtime::worker::{ConnectionSlot, Worker};
use crate::session::socket::{open_on_socket, read_then_finish};
use crate::session::Session;

struct UniConn {
    s: Rc<Session>,
    /// The connect request has been received (from the URL or the first message).
    started: std::cell::Cell<bool>,
}

impl Conn for UniConn {
    fn send(&self, frame: Bytes) {
        let _ = self.s.client.send_reply(frame);
    }
    fn is_closed(&self) -> bool {
        self.s.client.out.is_closed()
    }
    async fn on_data(&self, _text: bool, data: Bytes) -> bool {
        if self.started.replace(true) {
            return true; // nothing is expected from the client after its connect request
        }
        match decode_connect_request(Format::Json, &data) {
            Ok(req) => Box::pin(self.s.connect_uni(req)).await,
            Err(_) => self.s.disconnect(Disconnect::BAD_REQUEST),
        }
        !self.s.is_closed()
    }
    fn on_pong(&self) {
        self.s.on_pong();
    }
    fn on_close(&self, code: u16) {
        self.s.close_with(code);
    }
    fn on_gone(&self) {
        self.s.vanished();
    }
}

/// Runs a unidirectional WebSocket session until it closes; `req` is the connect request
/// the URL carried; `deflate`: the handshake negotiated permessage-deflate
/// (`uni_websocket.compression*` apply).
#[allow(clippy::too_many_arguments)]
pub fn run<R, W>(
    w: Rc<Worker>,
    slot: ConnectionSlot,
    req: Option<ConnectReq>,
    deflate: bool,
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
    let cfg = &w.cfg.uni_websocket;
    let id = Session::new_client_id(&w, false);
    let mut client = Client::new(id, Format::Json, false, Framing::UniWebSocket, w.cfg.client.queue_max_size);
    client.uni_ws_close = (!cfg.disable_disconnect_push, !cfg.disable_closing_handshake);
    let z = deflate.then_some(&cfg.deflate);
    client.deflate = z.map(super::deflate_of);
    let (s, writer) = open_on_socket(&w, client, None, wr, sock, cfg.write_timeout);
    s.keep_request_headers(forwarded);
    let limit = if cfg.message_size_limit == 0 { 65536 } else { cfg.message_size_limit };
    let dec = super::decoder(limit, z);
    // The connect request of the URL first, then the read loop: chained with `then` so that
    // the loop's future does not sit beside what the first step captured (as in `run_session`).
    let conn = UniConn { s: s.clone(), started: std::cell::Cell::new(req.is_some()) };
    let first = s.clone();
    let connecting = async move {
        if let Some(req) = req {
            Box::pin(first.connect_uni(req)).await;
        }
    };
    let reading = connecting.then(move |()| {
        if conn.s.is_closed() {
            return Either::Right(ready(rd));
        }
        Either::Left(read_loop_with(conn, rd, buf, dec, 64))
    });
    read_then_finish(reading, s, writer, slot)
}
