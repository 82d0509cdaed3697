//! A connection's ordered output: the slots of every response (and of every reply line of a
//! streamed legacy request) in request order. Results arrive in any order from owners on
//! other workers; a slot is written only when all slots before it are ready.
//!
//! The reader pushes slots and stops reading while too much is in flight or unsent
//! (backpressure): a client that pipelines requests without reading the replies stops being
//! read, whatever the size of its requests. The writer task takes the ready prefix, frames it
//! and writes it in one system call; its bytes count as unsent until the write completes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::Waker;

use bytes::Bytes;

use crate::api::{encode, Method, Reply};
use crate::runtime::worker::ReplySink;
use crate::wire::http as codec;

/// Most reply slots a connection may have waiting for results before it stops reading.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Most encoded bytes waiting for the socket (or being written) before the connection stops
/// reading.
pub const MAX_UNSENT: usize = 1 << 20;
/// Most request bytes (bodies, legacy lines) of the commands waiting for results before the
/// connection stops reading. The check comes before each request (or read of a legacy body);
/// a request is always read whole, so one larger than this (up to `http_api.max_body_size`)
/// still gets in, as the last one read.
pub const MAX_PENDING_BYTES: usize = 1 << 20;
/// What a command whose reply is not bounded by its request (history, presence, channels,
/// info, batch) counts at least against [`MAX_PENDING_BYTES`]: at most 16 of them are in
/// flight per connection, so small requests cannot pile up large replies.
pub const LARGE_REPLY_WEIGHT: usize = 64 * 1024;

/// What a pending `method` command with a request of `bytes` counts against
/// [`MAX_PENDING_BYTES`].
fn weight(method: Method, bytes: usize) -> usize {
    match method {
        Method::History | Method::Presence | Method::Channels | Method::Info | Method::Batch => {
            bytes.max(LARGE_REPLY_WEIGHT)
        }
        _ => bytes,
    }
}

/// The writer stops taking ready slots into one write past this many bytes, so its buffer
/// stays small however much is ready.
const WRITE_MAX: usize = 256 * 1024;

/// How a pending result is encoded when it arrives.
#[derive(Debug, Clone, Copy)]
pub enum ReplyShape {
    /// One line of a streamed legacy response; `sep` prefixes a newline.
    Legacy { id: u32, sep: bool },
    /// A whole new-style response.
    New { keep_alive: bool, transport_errors: bool, method: Method },
}

enum Slot {
    /// Bytes written as they are (response heads, whole responses).
    Raw(Bytes),
    /// Part of a chunked body; consecutive pieces share one chunk.
    Piece(Bytes),
    /// A result to come for a command of `method` started at the instant (API metrics),
    /// counting this many bytes against [`MAX_PENDING_BYTES`].
    Pending(ReplyShape, Method, std::time::Instant, usize),
    /// Reply lines of a run of legacy lines spread over several workers, waiting for their
    /// parts; counts this many bytes against [`MAX_PENDING_BYTES`].
    Group(Box<Group>, usize),
}

impl Slot {
    fn is_pending(&self) -> bool {
        matches!(self, Slot::Pending(..) | Slot::Group(..))
    }
}

/// The replies of consecutive legacy lines run by several workers: each worker's part holds
/// the replies of its lines in their order, and once every part is in they are put together
/// in the lines' order as one piece (one slot for the run instead of one per line).
pub struct Group {
    /// The lines in order, as runs: `n` consecutive lines of worker `w`.
    order: Vec<(u16, u32)>,
    /// Per worker, its part once it arrived: reply bytes, and where each line's reply ends.
    parts: Vec<Option<(Vec<u8>, Vec<u32>)>>,
    /// Parts still to come.
    waiting: usize,
}

impl Group {
    /// A group of `workers` possible parts whose lines are in `order`; `waiting` parts are to
    /// come besides those already added.
    pub fn new(order: Vec<(u16, u32)>, workers: usize, waiting: usize) -> Group {
        Group { order, parts: (0..workers).map(|_| None).collect(), waiting }
    }

    /// Adds worker `from`'s part, one not counted in [`Group::new`]'s `waiting` (the reading
    /// worker's own).
    pub fn add(&mut self, from: usize, replies: Vec<u8>, ends: Vec<u32>) {
        if let Some(p) = self.parts.get_mut(from) {
            *p = Some((replies, ends));
        }
    }

    /// Adds a part that was waited for; true when it was the last one.
    pub fn arrive(&mut self, from: usize, replies: Vec<u8>, ends: Vec<u32>) -> bool {
        self.add(from, replies, ends);
        self.waiting = self.waiting.saturating_sub(1);
        self.waiting == 0
    }

    /// The replies in the lines' order.
    pub fn merge(&mut self) -> Bytes {
        // All lines of one worker (a request to one channel): its replies as they are.
        let mut present = self.parts.iter_mut().flatten();
        if let (Some(only), None) = (present.next(), present.next()) {
            return Bytes::from(std::mem::take(&mut only.0));
        }
        let total = self.parts.iter().flatten().map(|(r, _)| r.len()).sum();
        let mut out = Vec::with_capacity(total);
        let mut cursor = vec![0usize; self.parts.len()];
        for &(w, n) in &self.order {
            let (w, n) = (w as usize, n as usize);
            let Some(Some((replies, ends))) = self.parts.get(w) else { continue };
            let k = cursor[w];
            let start = if k == 0 { 0 } else { ends[k - 1] as usize };
            let end = ends.get(k + n - 1).map_or(replies.len(), |&e| e as usize);
            out.extend_from_slice(&replies[start..end]);
            cursor[w] = k + n;
        }
        Bytes::from(out)
    }
}

#[derive(Default)]
struct Inner {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    base: u64,
    pending: usize,
    /// Request bytes of the pending slots (see [`weight`]).
    pending_bytes: usize,
    /// Bytes of ready slots plus those the writer is writing.
    unsent: usize,
    writer: Option<Waker>,
    reader: Option<Waker>,
    /// The reader is done: the writer finishes what is queued, then closes.
    closing: bool,
    /// The socket failed; nothing more will be written.
    dead: bool,
    /// After the queued output the connection becomes a WebSocket: hand the socket back.
    upgrade: bool,
    /// The reader is inside a request (its body not read to the end yet).
    in_request: bool,
}

/// See the module docs.
#[derive(Default)]
pub struct ConnOut {
    inner: RefCell<Inner>,
    /// When the connection's reader last got bytes.
    last_read: std::cell::Cell<Option<std::time::Instant>>,
}

/// Encodes a result as its slot's bytes.
fn encode_reply(shape: ReplyShape, reply: &Reply) -> Slot {
    match shape {
        ReplyShape::Legacy { id, sep } => {
            let mut v = Vec::with_capacity(64);
            if sep {
                v.push(b'\n');
            }
            encode::legacy_reply(&mut v, id, reply);
            Slot::Piece(Bytes::from(v))
        }
        ReplyShape::New { keep_alive, transport_errors, method } => {
            let mut body = Vec::with_capacity(64);
            let status = match (reply, method) {
                (Err(e), m) if transport_errors && m != Method::Batch => {
                    encode::api_error(&mut body, e);
                    e.transport_status()
                }
                // batch answers `{"replies":[...]}` without the result wrapper.
                (Ok(res), Method::Batch) => {
                    encode::result(&mut body, res);
                    200
                }
                (r, _) => {
                    encode::reply(&mut body, r);
                    200
                }
            };
            Slot::Raw(codec::response(status, "application/json", &body, keep_alive))
        }
    }
}

impl Inner {
    /// The reader may read (`resume`: may start again, with hysteresis).
    fn room(&self, resume: bool) -> bool {
        let d = if resume { 2 } else { 1 };
        self.pending < MAX_IN_FLIGHT / d && self.unsent < MAX_UNSENT / d && self.pending_bytes < MAX_PENDING_BYTES / d
    }

    fn wake_reader_if_room(&mut self) {
        if self.room(true) {
            if let Some(r) = self.reader.take() {
                r.wake();
            }
        }
    }
}

impl ConnOut {
    fn wake_writer(inner: &mut Inner) {
        if let Some(w) = inner.writer.take() {
            w.wake();
        }
    }

    /// The reader got bytes.
    pub fn note_read(&self) {
        self.last_read.set(Some(std::time::Instant::now()));
    }

    /// Whether the reader is inside a request body.
    pub fn in_request(&self) -> bool {
        self.inner.borrow().in_request
    }

    /// Marks the reader inside (or out of) a request, for graceful shutdown.
    pub fn set_in_request(&self, on: bool) {
        self.inner.borrow_mut().in_request = on;
    }

    /// Queues bytes to write as they are.
    pub fn push_raw(&self, b: Bytes) {
        let mut i = self.inner.borrow_mut();
        i.unsent += b.len();
        i.slots.push_back(Slot::Raw(b));
        Self::wake_writer(&mut i);
    }

    /// Queues a reply line that is already known (an error found while decoding).
    pub fn push_ready(&self, shape: ReplyShape, reply: &Reply) {
        let slot = encode_reply(shape, reply);
        let mut i = self.inner.borrow_mut();
        if let Slot::Raw(b) | Slot::Piece(b) = &slot {
            i.unsent += b.len();
        }
        i.slots.push_back(slot);
        Self::wake_writer(&mut i);
    }

    /// Queues reply bytes that are part of a chunked body (joined with neighbouring pieces
    /// into one chunk).
    pub fn push_piece(&self, b: Bytes) {
        let mut i = self.inner.borrow_mut();
        i.unsent += b.len();
        i.slots.push_back(Slot::Piece(b));
        Self::wake_writer(&mut i);
    }

    /// Queues a group of reply lines whose parts come from other workers (see
    /// [`ReplySink::fill_part`]), counting `bytes` (their lines) against
    /// [`MAX_PENDING_BYTES`]; returns its sequence number.
    pub fn push_group(&self, g: Group, bytes: usize) -> u64 {
        let mut i = self.inner.borrow_mut();
        let seq = i.base + i.slots.len() as u64;
        i.slots.push_back(Slot::Group(Box::new(g), bytes));
        i.pending += 1;
        i.pending_bytes += bytes;
        seq
    }

    /// Reserves a slot for the result of a `method` command whose request took `bytes`;
    /// returns its sequence number.
    pub fn push_pending(&self, shape: ReplyShape, method: Method, bytes: usize) -> u64 {
        let bytes = weight(method, bytes);
        let mut i = self.inner.borrow_mut();
        let seq = i.base + i.slots.len() as u64;
        i.slots.push_back(Slot::Pending(shape, method, std::time::Instant::now(), bytes));
        i.pending += 1;
        i.pending_bytes += bytes;
        seq
    }

    /// True while the reader should keep reading.
    pub fn has_room(&self) -> bool {
        self.inner.borrow().room(false)
    }

    pub fn is_dead(&self) -> bool {
        self.inner.borrow().dead
    }

    /// Waits until the reader may read again (or the connection died).
    pub async fn wait_room(&self) {
        std::future::poll_fn(|cx| {
            let mut i = self.inner.borrow_mut();
            if i.dead || i.room(true) {
                std::task::Poll::Ready(())
            } else {
                i.reader = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Waits until every slot has been written (or the connection died).
    pub async fn wait_drained(&self) {
        std::future::poll_fn(|cx| {
            let mut i = self.inner.borrow_mut();
            if i.dead || i.slots.is_empty() {
                std::task::Poll::Ready(())
            } else {
                i.reader = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// The connection switches protocols: the writer returns its half after the queue.
    pub fn upgrade(&self) {
        let mut i = self.inner.borrow_mut();
        i.closing = true;
        i.upgrade = true;
        Self::wake_writer(&mut i);
    }

    /// The reader is finished; the writer closes after the queued output.
    pub fn close(&self) {
        let mut i = self.inner.borrow_mut();
        i.closing = true;
        Self::wake_writer(&mut i);
    }

    /// Takes the ready prefix (up to about [`WRITE_MAX`] bytes) as one buffer for the writer;
    /// returns how many of its bytes count as unsent (all but the chunk framing) until the
    /// writer has written them.
    fn take_ready(&self, out: &mut Vec<u8>) -> usize {
        let mut i = self.inner.borrow_mut();
        // Consecutive pieces share one chunk, written in place: a fixed-width size line is
        // reserved and filled in once the chunk's length is known (leading zeros are valid
        // chunk-size digits), so reply bytes are copied once.
        let mut chunk_at: Option<usize> = None;
        let mut taken = 0;
        const SIZE_LINE: usize = 10; // 8 hex digits + CRLF
        fn close_chunk(out: &mut Vec<u8>, at: &mut Option<usize>) {
            if let Some(start) = at.take() {
                let len = out.len() - start - SIZE_LINE;
                let line = format!("{len:08x}\r\n");
                out[start..start + SIZE_LINE].copy_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        while let Some(front) = i.slots.front() {
            if out.len() >= WRITE_MAX {
                break;
            }
            match front {
                Slot::Pending(..) | Slot::Group(..) => break,
                Slot::Piece(b) => {
                    if chunk_at.is_none() {
                        chunk_at = Some(out.len());
                        out.extend_from_slice(&[0; SIZE_LINE]);
                    }
                    out.extend_from_slice(b);
                }
                Slot::Raw(b) => {
                    close_chunk(out, &mut chunk_at);
                    out.extend_from_slice(b);
                }
            }
            if let Some(Slot::Raw(b) | Slot::Piece(b)) = i.slots.pop_front() {
                taken += b.len();
            }
            i.base += 1;
        }
        close_chunk(out, &mut chunk_at);
        // The reader may be waiting for the queue to empty (`wait_drained`).
        if i.slots.is_empty() {
            if let Some(r) = i.reader.take() {
                r.wake();
            }
        }
        taken
    }

    /// The writer wrote (or gave up on) `n` bytes it took.
    fn written(&self, n: usize) {
        let mut i = self.inner.borrow_mut();
        i.unsent -= n;
        i.wake_reader_if_room();
    }

    fn mark_dead(&self) {
        let mut i = self.inner.borrow_mut();
        i.dead = true;
        if let Some(r) = i.reader.take() {
            r.wake();
        }
    }

    /// The writer task: writes ready output as it becomes ready, closes when told. Returns
    /// the write half when the connection is being upgraded.
    pub async fn run_writer<W: monoio::io::AsyncWriteRent>(&self, mut w: W) -> Option<W> {
        use monoio::io::AsyncWriteRentExt;
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            let taken = self.take_ready(&mut buf);
            if buf.is_empty() {
                let done = std::future::poll_fn(|cx| {
                    let mut i = self.inner.borrow_mut();
                    let ready = i.slots.front().is_some_and(|s| !s.is_pending());
                    if ready {
                        std::task::Poll::Ready(false)
                    } else if i.closing && i.slots.is_empty() {
                        std::task::Poll::Ready(true)
                    } else {
                        i.writer = Some(cx.waker().clone());
                        std::task::Poll::Pending
                    }
                })
                .await;
                if done {
                    if self.inner.borrow().upgrade {
                        return Some(w);
                    }
                    let _ = w.shutdown().await;
                    self.mark_dead();
                    return None;
                }
                continue;
            }
            let (res, b) = w.write_all(std::mem::take(&mut buf)).await;
            buf = b;
            self.written(taken);
            if res.is_err() {
                self.mark_dead();
                return None;
            }
            if buf.capacity() > 1 << 20 {
                buf = Vec::with_capacity(16 * 1024);
            }
        }
    }
}

/// How recently a request's bytes must have arrived for it to count as still being received.
const RECEIVING: std::time::Duration = std::time::Duration::from_secs(1);

impl ReplySink for ConnOut {
    fn busy(&self) -> bool {
        let i = self.inner.borrow();
        // A request still being received counts while its bytes keep coming: a client that
        // stopped sending mid-body does not hold the shutdown up.
        let receiving = i.in_request && self.last_read.get().is_some_and(|t| t.elapsed() < RECEIVING);
        !i.dead && (i.pending > 0 || i.unsent > 0 || receiving)
    }

    fn fill(&self, seq: u64, reply: Reply) {
        let mut i = self.inner.borrow_mut();
        let Some(idx) = seq.checked_sub(i.base) else { return };
        let Some(slot) = i.slots.get_mut(idx as usize) else { return };
        let Slot::Pending(shape, method, started, _) = slot else { return };
        let error = reply.as_ref().err().map(|e| e.code);
        crate::metrics::api_command(crate::metrics::Protocol::Http, *method, started.elapsed(), error);
        let new = encode_reply(*shape, &reply);
        i.settle(idx, new);
    }

    fn fill_part(&self, seq: u64, from: usize, replies: Vec<u8>, ends: Vec<u32>) {
        let mut i = self.inner.borrow_mut();
        let Some(idx) = seq.checked_sub(i.base) else { return };
        let Some(Slot::Group(g, _)) = i.slots.get_mut(idx as usize) else { return };
        if g.arrive(from, replies, ends) {
            let merged = g.merge();
            i.settle(idx, Slot::Piece(merged));
        }
    }
}

impl Inner {
    /// Pending slot `idx` becomes `new` (ready bytes).
    fn settle(&mut self, idx: u64, new: Slot) {
        let Some(slot) = self.slots.get_mut(idx as usize) else { return };
        let (Slot::Pending(_, _, _, bytes) | Slot::Group(_, bytes)) = slot else { return };
        let bytes = *bytes;
        let len = match &new {
            Slot::Raw(b) | Slot::Piece(b) => b.len(),
            Slot::Pending(..) | Slot::Group(..) => 0,
        };
        *slot = new;
        let i = self;
        i.pending -= 1;
        i.pending_bytes -= bytes;
        i.unsent += len;
        if idx == 0 {
            ConnOut::wake_writer(i);
        }
        i.wake_reader_if_room();
    }
}
