//! Pipelined publishers. One connection per publisher, a writer loop and a reader task:
//! the writer sends batches of publish commands while fewer than `--inflight` batches are
//! unanswered, the reader matches answers to batches in order and counts them.
//!
//! * Centrifugo-compatible: each batch is one `POST /api` with newline-delimited legacy
//!   commands (what both Centrifugo and Gyre accept), HTTP/1.1 requests pipelined on a
//!   keep-alive connection; the answer is one reply line per command.
//! * Redis: a batch is N `PUBLISH` commands; each gets an integer reply.
//! * NATS: a batch is N `PUB`s followed by `PING`; NATS has no per-message ack, so the `PONG`
//!   (sent after the server processed everything before it) acknowledges the batch.
//!
//! All messages of a batch carry the batch's send time. With `--rate`, batches hold the
//! messages that became due, so at modest rates every batch is one message.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Buf;
use gyre::notify::LocalNotify;
use gyre::wire::ws::Decoder;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, Splitable};
use monoio::net::TcpStream;

use crate::client_publish;
use crate::payload;
use crate::peers::{self, Nats, Resp, NATS_CONNECT};
use crate::run::Cx;
use crate::stats::{now_ns, STOP};
use crate::target::{self, ClientErr, Kind, Reader};

/// A batch sent and not yet acknowledged.
pub struct Batch {
    pub n: u64,
    /// Send time (ns), in the payloads.
    pub t: u64,
    /// When its write started (ns): the start of the round trip.
    pub sent: u64,
    /// Deliveries these messages should cause.
    expected: u64,
    /// Redis, client publish: replies still to come; NATS, HTTP: unused.
    pub remaining: u64,
    pub errors: u64,
    /// Client publish: the id of its first command (the others follow).
    pub first_id: u32,
}

/// What the writer and the reader of one publisher share.
#[derive(Default)]
pub struct Pipe {
    pub queue: RefCell<VecDeque<Batch>>,
    /// Woken when a batch is acknowledged or the reader failed.
    pub space: LocalNotify,
    failed: RefCell<Option<ClientErr>>,
    /// NATS, client publish: the server pinged; the writer owes a PONG.
    pub pong_due: Cell<bool>,
}

/// Why a publisher's write failed (`e`): when the server closed after an answer (401, ...),
/// which its reader records in `failed` within a second, that answer says more than EPIPE.
pub async fn write_failure(failed: &RefCell<Option<ClientErr>>, space: &LocalNotify, e: std::io::Error) -> ClientErr {
    let until = now_ns() + 1_000_000_000;
    while failed.borrow().is_none() && now_ns() < until {
        let _ = monoio::time::timeout(Duration::from_millis(50), space.wait()).await;
    }
    let known = failed.borrow().clone();
    known.unwrap_or_else(|| ClientErr::io("publisher write", e))
}

/// Runs publisher `p` until the run stops; failures are recorded in the shared state.
/// A publisher that fails ends the run: the figures would be meaningless without it.
pub async fn publisher(cx: Rc<Cx>, p: usize) {
    if let Err(e) = run(&cx, p).await {
        if e.is_fatal() || cx.sh.phase() < STOP {
            cx.sh.set_fatal(format!("publisher {p}: {e}"));
        }
    }
}

async fn run(cx: &Rc<Cx>, p: usize) -> Result<(), ClientErr> {
    let plan = &cx.plan;
    let node = plan.publish_node(p);
    let pipe = Rc::new(Pipe::default());
    // Client publish: the WebSocket's mask, and the id of the next command.
    let mut ws: Option<([u8; 4], u32)> = None;
    let mut wr = if plan.client_publish {
        let c = client_publish::open(cx, p).await?;
        ws = Some((c.mask, 2));
        monoio::spawn(ws_replies(cx.clone(), pipe.clone(), c.rd, c.dec));
        c.wr
    } else {
        let addr = node.addr;
        let stream = monoio::time::timeout(Duration::from_secs(10), target::connect(addr, None))
            .await
            .map_err(|_| ClientErr::Io(format!("publisher connect to {addr}: timed out")))?
            .map_err(|e| ClientErr::io(&format!("publisher connect to {addr}"), e))?;
        let (rd, wr) = stream.into_split();
        monoio::spawn(read_acks(cx.clone(), pipe.clone(), Reader::new(rd)));
        wr
    };
    let mut data = Vec::with_capacity(payload::encoded_len(plan.size));

    let rate = plan.rate / plan.publishers as f64;
    let start = now_ns();
    let mut sent: u64 = 0;
    let mut seq = vec![0u64; plan.channels];
    // Publishers start on different channels so that with P ≥ C all channels are busy.
    let mut cursor = p % plan.channels;
    let mut out = Vec::with_capacity(plan.batch * (payload::encoded_len(plan.size) + 96) + 256);
    let mut body = Vec::with_capacity(out.capacity());
    let mut first = true;
    loop {
        if cx.sh.phase() >= STOP {
            break;
        }
        if let Some(e) = pipe.failed.borrow().clone() {
            return Err(e);
        }
        if pipe.queue.borrow().len() >= plan.inflight {
            pipe.space.wait().await;
            continue;
        }
        let Some(n) = next_batch(start, sent, rate, plan.batch).await else { continue };
        let t = now_ns();
        out.clear();
        body.clear();
        if first && plan.kind == Kind::Nats {
            out.extend_from_slice(NATS_CONNECT);
        }
        first = false;
        if ws.is_none() && pipe.pong_due.replace(false) {
            out.extend_from_slice(b"PONG\r\n");
        }
        let mut expected = 0;
        let first_ch = cursor;
        let first_id = ws.map_or(0, |w| w.1);
        for k in 0..n {
            let ch = cursor;
            cursor = (cursor + 1) % plan.channels;
            seq[ch] += 1;
            expected += plan.subscribers_on(ch) as u64;
            if ws.is_some() {
                data.clear();
                payload::encode(&mut data, t, p as u32, seq[ch], plan.size);
                let (name, json) = (&plan.channel_names[ch], &plan.channel_json[ch]);
                client_publish::encode_one(plan.o.format, &mut body, first_id + k as u32, name, json, &data);
            } else {
                encode_one(cx, &mut out, &mut body, ch, t, p as u32, seq[ch]);
            }
        }
        match &mut ws {
            Some((mask, next_id)) => {
                *next_id += n as u32;
                client_publish::frame(plan.o.format, &mut out, &body, *mask, pipe.pong_due.replace(false));
            }
            None => finish_batch(cx, &node.host, &mut out, &body),
        }
        let batch = Batch { n, t, sent: now_ns(), expected, remaining: n, errors: 0, first_id };
        pipe.queue.borrow_mut().push_back(batch);
        let (res, buf) = wr.write_all(std::mem::take(&mut out)).await;
        out = buf;
        if let Err(e) = res {
            return Err(write_failure(&pipe.failed, &pipe.space, e).await);
        }
        sent += n;
        // Published sequences are known to subscribers only once written.
        for k in 0..(n as usize).min(plan.channels) {
            let ch = (first_ch + k) % plan.channels;
            cx.sh.sent_seq[p * plan.channels + ch].store(seq[ch], Relaxed);
        }
    }
    // Let the answers to what is in flight arrive (bounded: the run's drain is bounded too).
    let deadline = now_ns() + 5_000_000_000;
    while !pipe.queue.borrow().is_empty() && pipe.failed.borrow().is_none() && now_ns() < deadline {
        let _ = monoio::time::timeout(Duration::from_millis(50), pipe.space.wait()).await;
    }
    Ok(())
}

/// Appends one publish command. For HTTP the command goes to `body` (the head needs its length).
/// How many messages the next batch holds: at most `batch`, and with a `rate` (messages/s;
/// 0: as fast as possible) those due since `start` (ns) beyond the `sent` ones. `None` after
/// sleeping until the next one is due (the timer's resolution is 1 ms): the caller looks again.
pub async fn next_batch(start: u64, sent: u64, rate: f64, batch: usize) -> Option<u64> {
    if rate <= 0.0 {
        return Some(batch as u64);
    }
    let due = ((now_ns() - start) as f64 / 1e9 * rate) as u64;
    if due > sent {
        return Some((due - sent).min(batch as u64));
    }
    let wait = ((sent + 1) as f64 / rate * 1e9) as u64 + start;
    let ns = wait.saturating_sub(now_ns()).clamp(1_000_000, 100_000_000);
    monoio::time::sleep(Duration::from_nanos(ns)).await;
    None
}

fn encode_one(cx: &Cx, out: &mut Vec<u8>, body: &mut Vec<u8>, ch: usize, t: u64, p: u32, s: u64) {
    let plan = &cx.plan;
    match plan.kind {
        Kind::Centrifugo => {
            if !body.is_empty() {
                body.push(if plan.api_batch { b',' } else { b'\n' });
            }
            body.extend_from_slice(if plan.api_batch {
                b"{\"publish\":{\"channel\":"
            } else {
                b"{\"method\":\"publish\",\"params\":{\"channel\":"
            });
            body.extend_from_slice(plan.channel_json[ch].as_bytes());
            body.extend_from_slice(b",\"data\":");
            payload::encode(body, t, p, s, plan.size);
            body.extend_from_slice(b"}}");
        }
        Kind::Redis => {
            body.clear();
            payload::encode(body, t, p, s, plan.size);
            peers::resp_command(out, &[b"PUBLISH", plan.channel_names[ch].as_bytes(), body.as_slice()]);
        }
        Kind::Nats => {
            body.clear();
            payload::encode(body, t, p, s, plan.size);
            out.extend_from_slice(b"PUB ");
            out.extend_from_slice(plan.channel_names[ch].as_bytes());
            out.push(b' ');
            out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Completes a batch: the HTTP request (to `host`) around the body, or NATS's acknowledging
/// `PING`.
fn finish_batch(cx: &Cx, host: &str, out: &mut Vec<u8>, body: &[u8]) {
    let plan = &cx.plan;
    match plan.kind {
        Kind::Centrifugo => {
            const OPEN: &[u8] = b"{\"commands\":[";
            const CLOSE: &[u8] = b"]}";
            out.extend_from_slice(b"POST ");
            out.extend_from_slice(plan.api_path.as_bytes());
            if plan.api_batch {
                out.extend_from_slice(b"/batch");
            }
            out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
            if !plan.api_key.is_empty() {
                out.extend_from_slice(
                    format!("X-API-Key: {0}\r\nAuthorization: apikey {0}\r\n", plan.api_key).as_bytes(),
                );
            }
            let wrap = if plan.api_batch { OPEN.len() + CLOSE.len() } else { 0 };
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body.len() + wrap).as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            if plan.api_batch {
                out.extend_from_slice(OPEN);
                out.extend_from_slice(body);
                out.extend_from_slice(CLOSE);
            } else {
                out.extend_from_slice(body);
            }
        }
        Kind::Redis => {}
        Kind::Nats => out.extend_from_slice(b"PING\r\n"),
    }
}

/// Counts an acknowledged batch; `round_trips`: record its commands' round trip (ending now).
pub fn account(cx: &Cx, b: &Batch, round_trips: bool) {
    let sh = &cx.sh;
    let ok = b.n.saturating_sub(b.errors);
    sh.published.fetch_add(ok, Relaxed);
    if sh.in_window(b.t) {
        sh.published_window.fetch_add(ok, Relaxed);
        if round_trips {
            cx.local.ack(b.sent, ok);
        }
    }
    if b.errors > 0 {
        sh.publish_errors.fetch_add(b.errors, Relaxed);
    }
    // With errors, assume they hit channels evenly (only the drain wait uses this).
    sh.expected.fetch_add((b.expected * ok).checked_div(b.n).unwrap_or(0), Relaxed);
}

/// The reader task: answers in, batches out of the queue.
async fn read_acks(cx: Rc<Cx>, pipe: Rc<Pipe>, mut conn: Reader<OwnedReadHalf<TcpStream>>) {
    let res = match cx.plan.kind {
        Kind::Centrifugo => read_http(&cx, &pipe, &mut conn).await,
        Kind::Redis => read_redis(&cx, &pipe, &mut conn).await,
        Kind::Nats => read_nats(&cx, &pipe, &mut conn).await,
    };
    if let Err(e) = res {
        *pipe.failed.borrow_mut() = Some(e);
    }
    pipe.space.notify();
}

/// The reader of a client-publish connection.
async fn ws_replies(cx: Rc<Cx>, pipe: Rc<Pipe>, mut conn: Reader<OwnedReadHalf<TcpStream>>, dec: Decoder) {
    if let Err(e) = client_publish::read_replies(&cx, &pipe, &mut conn, dec).await {
        *pipe.failed.borrow_mut() = Some(e);
    }
    pipe.space.notify();
}

async fn read_http<R: AsyncReadRent>(cx: &Cx, pipe: &Pipe, conn: &mut Reader<R>) -> Result<(), ClientErr> {
    loop {
        while let Some(r) = parse_response(&conn.buf, cx.plan.api_batch).map_err(ClientErr::Io)? {
            conn.buf.advance(r.len);
            if r.status != 200 {
                let why = match r.status {
                    401 => " (the API key was rejected: pass --api-key)".to_string(),
                    404 => format!(" (no API at {}: check --api-path)", cx.plan.api_path),
                    _ => String::new(),
                };
                return Err(ClientErr::Rejected(format!("POST {}: HTTP {}{why}", cx.plan.api_path, r.status)));
            }
            let Some(mut b) = pipe.queue.borrow_mut().pop_front() else {
                return Err(ClientErr::Io("HTTP response without a request".into()));
            };
            // A missing reply counts as an error too.
            b.errors = r.errors + b.n.saturating_sub(r.replies);
            if b.errors > 0 && cx.sh.publish_errors.load(Relaxed) == 0 {
                eprintln!(
                    "gyre-bench: publish errors, first answer: {}",
                    r.first_error.as_deref().unwrap_or("(missing reply lines)")
                );
            }
            account(cx, &b, true);
            pipe.space.notify();
            if r.close {
                return Err(ClientErr::Io("the server closed the API connection (Connection: close)".into()));
            }
        }
        conn.fill_some("HTTP API").await?;
    }
}

async fn read_redis<R: AsyncReadRent>(cx: &Cx, pipe: &Pipe, conn: &mut Reader<R>) -> Result<(), ClientErr> {
    loop {
        while let Some((v, len)) = peers::resp(&conn.buf).map_err(ClientErr::Io)? {
            let err = match v {
                Resp::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
                _ => None,
            };
            conn.buf.advance(len);
            let mut q = pipe.queue.borrow_mut();
            let Some(b) = q.front_mut() else {
                return Err(ClientErr::Io("redis reply without a command".into()));
            };
            let failed = err.is_some();
            if let Some(e) = err {
                if b.errors == 0 && cx.sh.publish_errors.load(Relaxed) == 0 {
                    eprintln!("gyre-bench: redis PUBLISH error: {e}");
                }
                b.errors += 1;
            }
            b.remaining -= 1;
            // Each command's own reply ends its round trip.
            if !failed && cx.sh.in_window(b.t) {
                cx.local.ack(b.sent, 1);
            }
            if b.remaining == 0 {
                let b = q.pop_front().expect("front exists");
                drop(q);
                account(cx, &b, false);
                pipe.space.notify();
            }
        }
        conn.fill_some("redis").await?;
    }
}

async fn read_nats<R: AsyncReadRent>(cx: &Cx, pipe: &Pipe, conn: &mut Reader<R>) -> Result<(), ClientErr> {
    loop {
        while let Some((item, len)) = peers::nats(&conn.buf).map_err(ClientErr::Io)? {
            let line = match item {
                Nats::Line(l) => l.to_vec(),
                Nats::Msg(_) => Vec::new(),
            };
            conn.buf.advance(len);
            if line.starts_with(b"-ERR") {
                return Err(ClientErr::Rejected(format!("nats: {}", String::from_utf8_lossy(&line))));
            } else if line == b"PING" {
                pipe.pong_due.set(true);
            } else if line == b"PONG" {
                let Some(b) = pipe.queue.borrow_mut().pop_front() else {
                    return Err(ClientErr::Io("nats PONG without a batch".into()));
                };
                account(cx, &b, true);
                pipe.space.notify();
            }
        }
        conn.fill_some("nats").await?;
    }
}

/// One complete HTTP response, reduced to what the publisher counts.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    pub len: usize,
    pub status: u16,
    /// Replies in the body (the lines of a legacy body; a `batch`'s `{"publish"...}` and
    /// `{"error"...}` objects) and how many of them are errors.
    pub replies: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub close: bool,
}

/// Parses the response at the front of `buf` (Content-Length or chunked body); `None` until
/// it is complete. `batch`: the answer of a new-style `batch` of publishes (else a legacy body
/// of reply lines).
pub fn parse_response(buf: &[u8], batch: bool) -> Result<Option<HttpAnswer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad HTTP response from the API: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let close = header("connection").is_some_and(|v| v.contains("close"));
    let (body, len): (std::borrow::Cow<[u8]>, usize) =
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            let mut pos = head;
            loop {
                let Some(eol) = memchr::memmem::find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                let size_line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|_| "bad chunk size".to_string())?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| format!("bad chunk size {size_line:?}"))?;
                pos += eol + 2;
                if size == 0 {
                    // Trailer lines up to an empty one.
                    loop {
                        let Some(eol) = memchr::memmem::find(&buf[pos..], b"\r\n") else {
                            return Ok(None);
                        };
                        pos += eol + 2;
                        if eol == 0 {
                            break;
                        }
                    }
                    break;
                }
                if buf.len() < pos + size + 2 {
                    return Ok(None);
                }
                body.extend_from_slice(&buf[pos..pos + size]);
                pos += size + 2;
            }
            (body.into(), pos)
        } else if let Some(cl) = header("content-length") {
            let cl: usize = cl.trim().parse().map_err(|_| format!("bad Content-Length {cl:?}"))?;
            if buf.len() < head + cl {
                return Ok(None);
            }
            (buf[head..head + cl].into(), head + cl)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new().into(), head)
        } else {
            return Err(format!("HTTP {status} response without a length (a pipelined client needs one)"));
        };
    let body = body.trim_ascii_end();
    let lines = if body.is_empty() { 0 } else { memchr::memchr_iter(b'\n', body).count() as u64 + 1 };
    let mut errors = 0;
    let mut first_error = None;
    for i in memchr::memmem::find_iter(body, b"{\"error\"") {
        errors += 1;
        if first_error.is_none() {
            let end = memchr::memchr(b'\n', &body[i..]).map_or(body.len(), |e| i + e);
            first_error = Some(String::from_utf8_lossy(&body[i..end.min(i + 200)]).into_owned());
        }
    }
    let replies = if batch { memchr::memmem::find_iter(body, b"{\"publish\"").count() as u64 + errors } else { lines };
    Ok(Some(HttpAnswer { len, status, replies, errors, first_error, close }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"result\":{}}\n{\"result\":{}}HTTP/1.1";
        let a = parse_response(r, false).unwrap().unwrap();
        assert_eq!((a.status, a.replies, a.errors, a.len), (200, 2, 0, r.len() - 8));
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nE\r\n{\"result\":{}}\n\r\n32\r\n{\"error\":{\"code\":102,\"message\":\"unknown channel\"}}\r\n0\r\n\r\n";
        assert_eq!(parse_response(&c[..c.len() - 2], false).unwrap(), None);
        let a = parse_response(c, false).unwrap().unwrap();
        assert_eq!((a.replies, a.errors, a.len), (2, 1, c.len()));
        let u = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let a = parse_response(u, false).unwrap().unwrap();
        assert_eq!((a.status, a.replies, a.close), (401, 0, true));
    }

    #[test]
    fn counts_the_replies_of_a_batch() {
        let body = br#"{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}},{"publish":{"offset":3,"epoch":"x"}}]}"#;
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        let a = parse_response(&r, true).unwrap().unwrap();
        assert_eq!((a.replies, a.errors, a.len), (3, 1, r.len()));
    }
}
