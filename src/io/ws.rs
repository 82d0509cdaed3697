//! The WebSocket read loop every WebSocket connection kind shares (client sessions, raw
//! gateway clients, gateway backends): frames are decoded as bytes arrive, control frames are
//! answered here, once — a ping gets its pong, a close frame is echoed, a protocol violation
//! closes with its code — and data messages go to the connection's [`Conn`].

use bytes::{Bytes, BytesMut};

use super::{prepare_read, read_more};
use crate::wire::ws::{frame, Decoder, Message, OpCode};

/// A WebSocket connection's side of the read loop. (Its futures run on their worker's event
/// loop only, so they need no `Send` bound.)
#[allow(async_fn_in_trait)]
pub trait Conn {
    /// Queues a control frame's answer (a pong).
    fn send(&self, frame: Bytes);
    /// The connection is closing or closed: reading stops.
    fn is_closed(&self) -> bool;
    /// A data message (`text` for a text frame); false when reading should stop.
    async fn on_data(&self, text: bool, data: Bytes) -> bool;
    /// A pong frame arrived.
    fn on_pong(&self) {}
    /// The peer sent a close frame (1000) or broke the protocol (the code to close with):
    /// close the connection with that code.
    fn on_close(&self, code: u16);
    /// The peer is gone (EOF or a failed read).
    fn on_gone(&self);
}

/// A borrowed connection serves as well (the loop can then run inside the caller's future).
impl<C: Conn> Conn for &C {
    fn send(&self, frame: Bytes) {
        (**self).send(frame)
    }
    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }
    async fn on_data(&self, text: bool, data: Bytes) -> bool {
        (**self).on_data(text, data).await
    }
    fn on_pong(&self) {
        (**self).on_pong()
    }
    fn on_close(&self, code: u16) {
        (**self).on_close(code)
    }
    fn on_gone(&self) {
        (**self).on_gone()
    }
}

/// Reads messages until the connection closes. `limit` bounds a frame and a message; `idle`
/// is the read buffer an idle connection keeps.
pub fn read_loop<R, C>(conn: C, rd: R, buf: BytesMut, limit: usize, idle: usize) -> impl std::future::Future<Output = R>
where
    R: monoio::io::AsyncReadRent,
    C: Conn,
{
    read_loop_with(conn, rd, buf, Decoder::new(limit, limit), idle)
}

/// [`read_loop`] with a decoder of the caller's (one that inflates compressed messages, for a
/// connection that negotiated permessage-deflate).
///
/// The connection and the reader are taken by value (`&C` and `&mut R` serve too), so a
/// session's task can be this future and no more (see `session::socket::read_then_finish`);
/// the reader is handed back at the end. (A plain function returning the loop's future: an
/// `async fn` would keep a second copy of its moved arguments in the future, which every idle
/// connection holds.)
#[allow(clippy::manual_async_fn)]
pub fn read_loop_with<R, C>(
    conn: C,
    mut rd: R,
    mut buf: BytesMut,
    mut dec: Decoder,
    idle: usize,
) -> impl std::future::Future<Output = R>
where
    R: monoio::io::AsyncReadRent,
    C: Conn,
{
    async move {
        let mut last_full = false;
        loop {
            loop {
                let go_on = match dec.decode(&mut buf) {
                    Ok(Some(Message::Text(d))) => conn.on_data(true, d).await,
                    Ok(Some(Message::Binary(d))) => conn.on_data(false, d).await,
                    Ok(Some(Message::Ping(p))) => {
                        conn.send(frame(OpCode::Pong, &p));
                        true
                    }
                    Ok(Some(Message::Pong(_))) => {
                        conn.on_pong();
                        true
                    }
                    Ok(Some(Message::Close(_))) => {
                        conn.on_close(1000);
                        false
                    }
                    Ok(None) => break,
                    Err(e) => {
                        conn.on_close(e.close_code());
                        false
                    }
                };
                if !go_on || conn.is_closed() {
                    return rd;
                }
            }
            prepare_read(&mut buf, last_full, idle);
            let spare = buf.capacity() - buf.len();
            let (res, b) = read_more(&mut rd, buf).await;
            buf = b;
            last_full = matches!(res, Ok(n) if n == spare);
            if !matches!(res, Ok(n) if n > 0) {
                conn.on_gone();
                return rd;
            }
        }
    }
}
