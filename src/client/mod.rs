//! What fan-out needs of a connected client, whatever its transport: the format it reads, its
//! byte-bounded queue of complete frames ([`outbox::Outbox`]), the pushes held for
//! subscriptions whose reply is not written yet, and the [`Handler`] through which the worker
//! reaches the session it cannot name (close it, run its timers, hand it an API action).
//!
//! The client session (`crate::session`) owns a [`Client`] and implements [`Handler`]; the
//! worker's [`crate::hub::Hub`] holds both. Frames are framed for the transport by
//! [`Framing`], so HTTP-streaming, SSE and the unidirectional transports plug in here.

pub mod outbox;

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
use outbox::{HasOutbox, Outbox, Overflow, Writes};

/// How a transport frames what a client receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6455 frames: text for JSON, binary for protobuf, a close frame to end.
    WebSocket,
}

/// What the worker may ask of the session behind a [`Client`]: implemented by the client
/// session, so the worker and the hub never name it.
pub trait Handler {
    /// Closes the connection with this code and reason and releases what it holds.
    fn disconnect(&self, d: Disconnect);
    /// The worker's timer reached a deadline this connection scheduled (`at`).
    fn on_timer(&self, at: Instant);
    /// The channel may have a gap for this connection: unsubscribe it so it recovers.
    fn resubscribe(&self, channel: &str);
    /// A server API action (subscribe, unsubscribe, disconnect, refresh) for every local
    /// connection: the handler applies it when the target matches.
    fn on_action(self: Rc<Self>, cmd: &Command);
    /// Whether the connection finished its handshake and is not closed (`info` counts).
    fn is_connected(&self) -> bool;
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
    /// A raw gateway client: publications as plain frames, no protocol pushes.
    pub raw: bool,
    pub framing: Framing,
    /// permessage-deflate was negotiated: data messages over its min size are compressed.
    pub deflate: Option<Deflate>,
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
            raw,
            framing,
            deflate: None,
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

    /// Frames a protocol message (a reply or a push encoded in this client's format).
    pub fn frame(&self, payload: &[u8]) -> Bytes {
        match self.framing {
            Framing::WebSocket => {
                self.ws_data(if self.format == Format::Json { OpCode::Text } else { OpCode::Binary }, payload)
            }
        }
    }

    /// Frames a raw message (a gateway client's text or binary data).
    pub fn frame_as(&self, text: bool, payload: &[u8]) -> Bytes {
        match self.framing {
            Framing::WebSocket => self.ws_data(if text { OpCode::Text } else { OpCode::Binary }, payload),
        }
    }

    /// A WebSocket data frame, compressed when this connection negotiated it and the payload
    /// is over the min size (one message, one compression: nothing is shared).
    fn ws_data(&self, op: OpCode, payload: &[u8]) -> Bytes {
        match self.deflate {
            Some(d) if d.wants(payload.len()) => deflate::frame(op, payload, d.level),
            _ => frame(op, payload),
        }
    }

    /// The transport's own keep-alive ping (raw clients have no protocol pings).
    pub fn ping_frame(&self) -> Bytes {
        match self.framing {
            Framing::WebSocket => frame(OpCode::Ping, b""),
        }
    }

    /// Queues a framed message; `Err` when the queue overflowed (the caller disconnects).
    pub fn send(self: &Rc<Self>, frame: Bytes) -> Result<(), Overflow> {
        if self.out.push(frame)? {
            if let Some(w) = &self.writes {
                w.mark(self.clone());
            }
        }
        Ok(())
    }

    /// Queues the transport's closing frame for `d` and stops queueing; a slow client's
    /// pending frames are dropped first. (The session's cleanup drops the held pushes.)
    pub fn close(&self, d: &Disconnect) {
        let frame = match self.framing {
            Framing::WebSocket => close_frame(d.code, &d.reason),
        };
        self.out.close(frame, *d == Disconnect::SLOW);
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
