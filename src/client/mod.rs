//! What fan-out needs of a connected client, whatever its transport: the format it reads, its
//! byte-bounded queue of complete frames ([`outbox::Outbox`]), the pushes held for
//! subscriptions whose reply is not written yet, and the [`Handler`] through which the worker
//! reaches the session it cannot name (close it, run its timers, hand it an API action).
//!
//! The client session (`crate::session`) owns a [`Client`] and implements [`Handler`]; the
//! worker's [`crate::hub::Hub`] holds both. Frames are framed for the transport by
//! [`Framing`], so HTTP-streaming, SSE and the unidirectional transports plug in here.

pub mod frame;
pub mod outbox;
pub mod writes;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::api::Command;
use crate::error::Disconnect;
use crate::protocol::Format;
use crate::wire::deflate::{self, Deflate};
use crate::wire::ws::{close_frame, frame, OpCode};
pub use frame::Frame;
use outbox::{Outbox, Overflow};
use writes::{HasOutbox, Mark, Writes};

/// How a transport frames what a client receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6455 frames: text for JSON, binary for protobuf, a close frame to end.
    WebSocket,
    /// HTTP-streaming with bidirectional emulation: a chunked response body of replies, each
    /// JSON reply followed by `\n` (protobuf replies are length-prefixed already).
    HttpStream,
    /// Server-sent events with bidirectional emulation: `data: <reply>\n\n` per reply.
    Sse,
    /// The unidirectional WebSocket: bare pushes in text frames.
    UniWebSocket,
    /// The unidirectional HTTP stream: bare pushes, one JSON line each, chunked.
    UniHttpStream,
    /// Unidirectional server-sent events: `data: <push>\n\n` per bare push.
    UniSse,
    /// The unidirectional gRPC stream: each frame is one gRPC message (5-byte prefix and a
    /// bare protobuf push).
    UniGrpc,
    /// SockJS over a WebSocket: SockJS frames (`o`, `h`, `a[..]`, `c[..]`) in text frames;
    /// the older protocol's JSON messages travel as the strings of `a[..]`.
    SockJsWebSocket,
    /// SockJS xhr-streaming: the same frames, each followed by `\n`, as chunks of one
    /// response.
    SockJsStream,
    /// SockJS xhr-polling: the same frames, each followed by `\n`, taken by poll requests.
    SockJsPoll,
}

/// How many [`Framing`] × protocol × [`Format`] combinations there are (see
/// [`Client::frame_kind`]).
pub const FRAME_KINDS: usize = 40;

impl Framing {
    /// Every transport, in [`Framing::index`] order.
    pub const ALL: [Framing; 10] = [
        Framing::WebSocket,
        Framing::HttpStream,
        Framing::Sse,
        Framing::UniWebSocket,
        Framing::UniHttpStream,
        Framing::UniSse,
        Framing::UniGrpc,
        Framing::SockJsWebSocket,
        Framing::SockJsStream,
        Framing::SockJsPoll,
    ];

    /// The transport sends bare pushes and takes no commands (Centrifugo's unidirectional
    /// transports).
    pub fn is_uni(self) -> bool {
        matches!(self, Framing::UniWebSocket | Framing::UniHttpStream | Framing::UniSse | Framing::UniGrpc)
    }

    /// Commands reach the session through `/emulation` requests.
    pub fn is_emulated(self) -> bool {
        matches!(self, Framing::HttpStream | Framing::Sse)
    }

    /// The transport's index in `crate::metrics::TRANSPORTS` (and in frame kinds).
    pub fn index(self) -> usize {
        match self {
            Framing::WebSocket => 0,
            Framing::HttpStream => 1,
            Framing::Sse => 2,
            Framing::UniWebSocket => 3,
            Framing::UniHttpStream => 4,
            Framing::UniSse => 5,
            Framing::UniGrpc => 6,
            Framing::SockJsWebSocket => 7,
            Framing::SockJsStream => 8,
            Framing::SockJsPoll => 9,
        }
    }

    /// The transport's name as Centrifugo reports it (metrics, proxies, logs).
    pub fn name(self) -> &'static str {
        match self {
            Framing::WebSocket => "websocket",
            Framing::HttpStream => "http_stream",
            Framing::Sse => "sse",
            Framing::UniWebSocket => "uni_websocket",
            Framing::UniHttpStream => "uni_http_stream",
            Framing::UniSse => "uni_sse",
            Framing::UniGrpc => "uni_grpc",
            Framing::SockJsWebSocket => "sockjs_websocket",
            Framing::SockJsStream => "sockjs_xhr_streaming",
            Framing::SockJsPoll => "sockjs_xhr_polling",
        }
    }

    /// One of the SockJS transports (which carry the older protocol's JSON only).
    pub fn is_sockjs(self) -> bool {
        matches!(self, Framing::SockJsWebSocket | Framing::SockJsStream | Framing::SockJsPoll)
    }
}

/// A SockJS frame (`o`, `h`, `a[..]`, `c[..]`) as a SockJS transport sends it: a WebSocket
/// text frame, a chunk of the xhr-streaming response, or a line of a poll response.
pub fn sockjs_frame(framing: Framing, body: &[u8]) -> Bytes {
    match framing {
        Framing::SockJsStream => http_chunk(&[body, b"\n"]),
        Framing::SockJsPoll => {
            let mut out = Vec::with_capacity(body.len() + 1);
            out.extend_from_slice(body);
            out.push(b'\n');
            out.into()
        }
        _ => frame(OpCode::Text, body),
    }
}

/// The SockJS close frame `c[code,"reason"]`.
pub fn sockjs_close(framing: Framing, code: u16, reason: &str) -> Bytes {
    let mut body = format!("c[{code},").into_bytes();
    crate::wire::json::string(&mut body, reason);
    body.push(b']');
    let mut out = sockjs_frame(framing, &body).to_vec();
    match framing {
        Framing::SockJsWebSocket => out.extend_from_slice(&close_frame(1000, "")),
        Framing::SockJsStream => out.extend_from_slice(HTTP_LAST_CHUNK),
        _ => {}
    }
    out.into()
}

/// One chunk of a chunked HTTP body holding `parts` back to back.
pub fn http_chunk(parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 12);
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
    out.into()
}

/// The last chunk of a chunked HTTP body.
pub const HTTP_LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Frames one encoded protocol message (a reply, or for unidirectional transports a bare
/// push) for `framing` and `format`.
pub fn frame_message(framing: Framing, format: Format, payload: &[u8]) -> Bytes {
    let json = format == Format::Json;
    match framing {
        Framing::WebSocket | Framing::UniWebSocket => frame(if json { OpCode::Text } else { OpCode::Binary }, payload),
        Framing::HttpStream | Framing::UniHttpStream if json => http_chunk(&[payload, b"\n"]),
        Framing::HttpStream | Framing::UniHttpStream => http_chunk(&[payload]),
        Framing::Sse | Framing::UniSse => http_chunk(&[b"data: ", payload, b"\n\n"]),
        Framing::SockJsWebSocket | Framing::SockJsStream | Framing::SockJsPoll => {
            // `a["<message>"]`: the message as a JSON string in a one-element array.
            let mut body = Vec::with_capacity(payload.len() + 16);
            body.extend_from_slice(b"a[");
            crate::wire::json::string(&mut body, &String::from_utf8_lossy(payload));
            body.push(b']');
            sockjs_frame(framing, &body)
        }
        Framing::UniGrpc => {
            let mut out = Vec::with_capacity(5 + payload.len());
            out.push(0);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
            out.into()
        }
    }
}

/// What the worker may ask of the session behind a [`Client`]: implemented by the client
/// session, so the worker and the hub never name it.
/// Work a handler started that someone waits for.
pub type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

pub trait Handler {
    /// Closes the connection with this code and reason and releases what it holds.
    fn disconnect(&self, d: Disconnect);
    /// The worker's timer reached a deadline this connection scheduled (`at`).
    fn on_timer(self: Rc<Self>, at: Instant);
    /// The channel may have a gap for this connection: unsubscribe it so it recovers.
    fn resubscribe(&self, channel: &str);
    /// A server API action (subscribe, unsubscribe, disconnect, refresh) for every local
    /// connection: the handler applies it when the target matches. Work it starts and that
    /// the API reply must wait for (a server-side subscribe) is returned as a future.
    fn on_action(self: Rc<Self>, cmd: &Command) -> Option<Pending>;
    /// Whether the connection finished its handshake and is not closed (`info` counts).
    fn is_connected(&self) -> bool;
    /// A shared poll update of a key this connection tracks in `channel`, with the patch
    /// against the data it holds when the owner made one (see `crate::poll`).
    fn keyed_push(&self, _channel: &str, _update: &crate::protocol::KeyedPub, _patch: Option<&bytes::Bytes>) {}
}

impl HasOutbox for Client {
    fn outbox(&self) -> &Outbox {
        &self.out
    }
}

/// One connected client, as fan-out sees it. See the module docs.
pub struct Client {
    /// Slot in the worker's hub (set when added).
    pub key: Cell<u32>,
    /// Tells this client apart from a later one in the same slot.
    pub gen: u32,
    /// The client id (a UUID, or a gateway snowflake for raw clients).
    pub id: Arc<str>,
    pub format: Format,
    /// The client speaks the older protocol of Centrifugo 2.x/3.x (`crate::protocol::v1`):
    /// set from its first message on a WebSocket, from the start on SockJS.
    pub v1: Cell<bool>,
    /// A raw gateway client: publications as plain frames, no protocol pushes.
    pub raw: bool,
    pub framing: Framing,
    /// permessage-deflate was negotiated (WebSocket transports only): data messages over its
    /// min size are compressed.
    pub deflate: Option<Deflate>,
    /// The unidirectional WebSocket's closing: (disconnect push, close frame), as
    /// `uni_websocket.disable_disconnect_push` / `disable_closing_handshake` say.
    pub uni_ws_close: (bool, bool),
    pub out: Outbox,
    /// The worker's flush list, when the connection's frames are written by its flush pass.
    writes: Option<Rc<Writes<Client>>>,
    /// Bound of the held bytes: the queue's bound.
    held: RefCell<Held>,
}

#[derive(Default)]
struct Held {
    /// Pushes held per channel; an entry exists from the subscribe request until release.
    /// (A list: subscriptions in flight are few and short-lived, and an idle client keeps
    /// no allocation for it.)
    frames: Vec<(Arc<str>, Vec<Bytes>)>,
    bytes: usize,
    closed: bool,
}

static NEXT_GEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Client {
    pub fn new(id: Arc<str>, format: Format, raw: bool, framing: Framing, max_bytes: usize) -> Client {
        Client {
            key: Cell::new(0),
            gen: NEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            id,
            format,
            v1: Cell::new(false),
            raw,
            framing,
            deflate: None,
            uni_ws_close: (true, true),
            out: Outbox::new(max_bytes),
            writes: None,
            held: RefCell::new(Held::default()),
        }
    }

    /// Frames queued on this client leave through the worker's flush pass `writes`, written
    /// straight to socket `fd` (see [`outbox`]).
    pub fn write_directly(&mut self, fd: i32, writes: Rc<Writes<Client>>) {
        self.out.write_directly(fd);
        self.writes = Some(writes);
    }

    /// Frames queued on this client leave through its writer task (a TLS connection), after
    /// the write delay of the worker's `writes` when there is one.
    pub fn write_through_writer(&mut self, writes: Rc<Writes<Client>>) {
        self.writes = Some(writes);
    }

    /// Frames a protocol message (a reply or a push encoded in this client's format; a bare
    /// push for unidirectional transports).
    pub fn frame(&self, payload: &[u8]) -> Bytes {
        match self.deflate {
            Some(d) if d.wants(payload.len()) => deflate::frame(
                if self.format == Format::Json { OpCode::Text } else { OpCode::Binary },
                payload,
                d.level,
            ),
            _ => frame_message(self.framing, self.format, payload),
        }
    }

    /// Which of the [`FRAME_KINDS`] frames of a push this client receives: fan-out builds
    /// each kind at most once per push and worker.
    pub fn frame_kind(&self) -> usize {
        self.framing.index() * 4 + self.v1.get() as usize * 2 + (self.format == Format::Protobuf) as usize
    }

    /// Frames a raw message (a gateway client's text or binary data: WebSocket only).
    pub fn frame_as(&self, text: bool, payload: &[u8]) -> Bytes {
        let op = if text { OpCode::Text } else { OpCode::Binary };
        match self.deflate {
            Some(d) if d.wants(payload.len()) => deflate::frame(op, payload, d.level),
            _ => frame(op, payload),
        }
    }

    /// The transport's own keep-alive ping (raw clients have no protocol pings; SockJS
    /// transports send the heartbeat frame `h`).
    pub fn ping_frame(&self) -> Bytes {
        if self.framing.is_sockjs() {
            return sockjs_frame(self.framing, b"h");
        }
        frame(OpCode::Ping, b"")
    }

    /// Queues a framed message; `Err` when the queue overflowed (the caller disconnects).
    pub fn send(self: &Rc<Self>, frame: impl Into<Frame>) -> Result<(), Overflow> {
        self.send_as(frame.into(), false)
    }

    /// Queues the reply to a command (which `client.reply_without_queue` does not delay).
    pub fn send_reply(self: &Rc<Self>, frame: Bytes) -> Result<(), Overflow> {
        self.send_as(frame.into(), true)
    }

    fn send_as(self: &Rc<Self>, frame: Frame, reply: bool) -> Result<(), Overflow> {
        let Some(w) = &self.writes else {
            self.out.push(frame)?;
            return Ok(());
        };
        match self.out.push_with(frame, w.batching().linger(reply))? {
            Mark::Now => w.mark(self.clone()),
            Mark::Later => w.mark_later(self.clone()),
            Mark::None => {}
        }
        Ok(())
    }

    /// Queues the transport's closing frame for `d` and stops queueing; a slow client's
    /// pending frames are dropped first. (The session's cleanup drops the held pushes.)
    pub fn close(&self, d: &Disconnect) {
        self.out.close(self.closing_frames(d), *d == Disconnect::SLOW);
    }

    /// What ends the transport for `d`: the close frame on a WebSocket; on the others a
    /// disconnect push, then the end of the response body. The unidirectional WebSocket
    /// sends both (or less, as its options say).
    fn closing_frames(&self, d: &Disconnect) -> Bytes {
        let push = crate::protocol::PushBody::Disconnect {
            code: d.code as u32,
            reason: d.reason.to_string(),
            reconnect: false,
        };
        let mut payload = Vec::with_capacity(64);
        if self.v1.get() {
            let (code, reason) = crate::protocol::v1::close_of(d);
            if self.framing.is_sockjs() {
                return sockjs_close(self.framing, code, &reason);
            }
            return close_frame(code, &reason);
        }
        if self.framing.is_uni() {
            crate::protocol::encode_bare_push(self.format, "", &push, &mut payload);
        } else {
            crate::protocol::encode_push(self.format, "", &push, &mut payload);
        }
        // A close from the peer's side (1000 and below) or the peer gone (3000) gets no push.
        let with_push = d.code > 3000;
        match self.framing {
            Framing::WebSocket => close_frame(d.code, &d.reason),
            Framing::UniWebSocket => {
                let (push_on, handshake) = self.uni_ws_close;
                let mut out = Vec::new();
                if push_on && with_push {
                    out.extend_from_slice(&self.frame(&payload));
                }
                if handshake {
                    out.extend_from_slice(&close_frame(d.code, &d.reason));
                }
                out.into()
            }
            Framing::UniGrpc => {
                if with_push {
                    self.frame(&payload)
                } else {
                    Bytes::new()
                }
            }
            _ => {
                let mut out = Vec::new();
                if with_push {
                    out.extend_from_slice(&self.frame(&payload));
                }
                out.extend_from_slice(HTTP_LAST_CHUNK);
                out.into()
            }
        }
    }

    /// A subscribe request for `channel` goes to its owner: pushes that reach this client
    /// from the moment the owner accepts it are held until the reply is written.
    pub fn expect(&self, channel: &Arc<str>) {
        let mut h = self.held.borrow_mut();
        if h.closed {
            return;
        }
        match h.frames.iter_mut().find(|(c, _)| c == channel) {
            Some((_, v)) => v.clear(),
            None => h.frames.push((channel.clone(), Vec::new())),
        }
    }

    /// Whether this client still waits for the subscription of `channel` (not closed, not
    /// given up): the owner's acceptance then makes it a subscriber.
    pub fn expects(&self, channel: &str) -> bool {
        let h = self.held.borrow();
        !h.closed && h.frames.iter().any(|(c, _)| &**c == channel)
    }

    /// Holds a push for a subscription whose reply is not written yet. False on overflow.
    pub fn hold(&self, channel: &str, frame: Bytes) -> bool {
        let mut h = self.held.borrow_mut();
        let h = &mut *h;
        // Nothing is held (nor counted) for a subscription this client no longer waits for.
        let Some((_, v)) = h.frames.iter_mut().find(|(c, _)| &**c == channel) else { return true };
        h.bytes += frame.len();
        if h.bytes > self.out.max_bytes() {
            return false;
        }
        v.push(frame);
        true
    }

    /// Takes the pushes held for `channel` (the subscription's reply has been written, or it
    /// failed); they are to be written now, in order.
    pub fn take_held(&self, channel: &str) -> Vec<Bytes> {
        let mut h = self.held.borrow_mut();
        let v = match h.frames.iter().position(|(c, _)| &**c == channel) {
            Some(at) => h.frames.swap_remove(at).1,
            None => Vec::new(),
        };
        if h.frames.is_empty() {
            // An idle client keeps no list of held pushes.
            h.frames = Vec::new();
        }
        h.bytes -= v.iter().map(|b| b.len()).sum::<usize>().min(h.bytes);
        v
    }

    /// Drops every held push; nothing is held any more (the client is closing).
    pub fn forget_held(&self) {
        let mut h = self.held.borrow_mut();
        h.closed = true;
        h.frames = Vec::new();
        h.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_match_the_metrics_labels() {
        assert_eq!(Framing::ALL.len() * 4, FRAME_KINDS);
        for (i, f) in Framing::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(crate::metrics::TRANSPORTS[f.index()], f.name());
        }
    }

    #[test]
    fn framings() {
        let json = |f| frame_message(f, Format::Json, b"{}");
        assert_eq!(&json(Framing::HttpStream)[..], b"3\r\n{}\n\r\n");
        assert_eq!(&json(Framing::Sse)[..], b"a\r\ndata: {}\n\n\r\n");
        assert_eq!(&json(Framing::UniHttpStream)[..], b"3\r\n{}\n\r\n");
        assert_eq!(&frame_message(Framing::HttpStream, Format::Protobuf, &[0])[..], b"1\r\n\x00\r\n");
        assert_eq!(&frame_message(Framing::UniGrpc, Format::Protobuf, &[7, 8])[..], &[0, 0, 0, 0, 2, 7, 8]);
        assert_eq!(&json(Framing::UniWebSocket)[..], &[0x81, 2, b'{', b'}']);
    }
}
