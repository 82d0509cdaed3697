//! The clients of `map`. Seeding: the keys `k0` .. `k<K-1>` set through the legacy HTTP API,
//! `--seed-batch` `map_publish` commands per `POST`, after a `map_clear`. Subscribers: a
//! WebSocket client (JSON or protobuf, `--format`) that connects, loads the channel's state
//! page by page until it is live and checks that it got every key ([`crate::map_sync`]), then
//! counts the updates as `fanout` subscribers count publications (their values are the
//! timestamped, sequenced payload). Publishers: pipelined `POST /api` requests of `--batch`
//! `map_publish` commands to random keys.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use gyre::notify::LocalNotify;
use monoio::io::{AsyncWriteRentExt, OwnedReadHalf, Splitable};
use monoio::net::TcpStream;

use crate::map::{Plan, Sync};
use crate::map_sync::{self, Synced};
use crate::payload::{self, Track};
use crate::publish::{parse_response, write_failure};
use crate::stats::{now_ns, Local, Shared, DONE, STOP, WARMUP};
use crate::target::{self, ClientErr, Reader};
use crate::ws::{Hello, WsClient};
use crate::Fail;

/// What a task needs: the plan, the shared counters, and its thread's side of them.
pub struct Cx {
    pub plan: Arc<Plan>,
    pub sh: Arc<Shared>,
    pub sync: Arc<Sync>,
    pub thread: usize,
    pub local: Local,
}

/// The value of seeded key `i`: `{"v":i}`, padded to `size`.
fn seed_value(out: &mut Vec<u8>, i: usize, size: usize) {
    let start = out.len();
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    const PAD_FIELD: usize = 8; // ,"x":""}
    let used = out.len() - start;
    if size >= used + PAD_FIELD {
        out.extend_from_slice(b",\"x\":\"");
        out.resize(out.len() + size - used - PAD_FIELD, b'x');
        out.push(b'"');
    }
    out.push(b'}');
}

/// Appends one `map_publish` line of the legacy API.
fn map_publish(body: &mut Vec<u8>, channel_json: &str, key: usize, value: impl FnOnce(&mut Vec<u8>)) {
    if !body.is_empty() {
        body.push(b'\n');
    }
    body.extend_from_slice(b"{\"method\":\"map_publish\",\"params\":{\"channel\":");
    body.extend_from_slice(channel_json.as_bytes());
    body.extend_from_slice(b",\"key\":\"k");
    body.extend_from_slice(itoa::Buffer::new().format(key).as_bytes());
    body.extend_from_slice(b"\",\"data\":");
    value(body);
    body.extend_from_slice(b"}}");
}

/// Appends a `POST` of `body` to the API to `out`.
fn request(out: &mut Vec<u8>, plan: &Plan, body: &[u8]) {
    let o = &plan.o;
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(o.api_path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(plan.nodes[0].host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
    if !o.api_key.is_empty() {
        out.extend_from_slice(format!("X-API-Key: {0}\r\nAuthorization: apikey {0}\r\n", o.api_key).as_bytes());
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Why an API answer is not a success, with what to do about it.
fn api_refusal(plan: &Plan, status: u16, first_error: Option<&str>) -> String {
    let o = &plan.o;
    match status {
        401 => format!("POST {}: HTTP 401 (the API key was rejected: pass --api-key)", o.api_path),
        404 => format!("POST {}: HTTP 404 (no API there: check --api-path)", o.api_path),
        200 => {
            let e = first_error.unwrap_or("(missing reply lines)");
            let hint = if e.contains("107") || e.contains("102") {
                " (is the channel's namespace a map one, \"subscription_type\": \"map\"? see --channel)"
            } else {
                ""
            };
            format!("map_publish to {} failed: {e}{hint}", o.channel)
        }
        s => format!("POST {}: HTTP {s}", o.api_path),
    }
}

/// Clears the channel and sets its keys, one request at a time; returns the seconds it took.
pub fn seed(plan: &Plan) -> Result<f64, Fail> {
    let o = &plan.o;
    let addr = plan.nodes[0].addr;
    let io = |e: std::io::Error| Fail::run(format!("seeding through {addr}: {e}"));
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    conn.set_read_timeout(Some(Duration::from_secs(60))).map_err(io)?;
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut call = |body: &[u8], n: u64| -> Result<(), Fail> {
        let mut out = Vec::with_capacity(body.len() + 256);
        request(&mut out, plan, body);
        conn.write_all(&out).map_err(io)?;
        let answer = loop {
            if let Some(a) = parse_response(&buf, false).map_err(Fail::run)? {
                break a;
            }
            let mut chunk = [0u8; 64 * 1024];
            match conn.read(&mut chunk).map_err(io)? {
                0 => return Err(Fail::run(format!("seeding: {addr} closed the API connection"))),
                k => buf.extend_from_slice(&chunk[..k]),
            }
        };
        buf.drain(..answer.len);
        if answer.status != 200 || answer.errors > 0 || answer.replies < n {
            return Err(Fail::run(api_refusal(plan, answer.status, answer.first_error.as_deref())));
        }
        Ok(())
    };
    let t0 = std::time::Instant::now();
    let clear = format!("{{\"method\":\"map_clear\",\"params\":{{\"channel\":{}}}}}", plan.channel_json);
    call(clear.as_bytes(), 1)?;
    let mut body = Vec::new();
    for first in (0..o.keys).step_by(o.seed_batch) {
        body.clear();
        let last = (first + o.seed_batch).min(o.keys);
        for k in first..last {
            map_publish(&mut body, &plan.channel_json, k, |b| seed_value(b, k, o.size));
        }
        call(&body, (last - first) as u64)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// A live subscriber as its thread sees it (to settle its counts at the end).
struct Sub {
    track: RefCell<Track>,
    alive: Cell<bool>,
}

/// Connects subscriber `i` and syncs it (bounded by --connect-timeout).
async fn open(cx: &Cx, i: usize, track: &RefCell<Track>) -> Result<(WsClient, Synced), ClientErr> {
    let (plan, o) = (&cx.plan, &cx.plan.o);
    let token = plan.token_for(i).map_err(ClientErr::Rejected)?;
    let node = &plan.nodes[i % plan.nodes.len()];
    let hello = Hello {
        addr: node.addr,
        source: target::source_for(i, o.source_ips),
        host: &node.host,
        path: &o.ws_path,
        format: o.format,
        token: &token,
        channel: None,
        uni: false,
    };
    let t0 = now_ns();
    let mut c = WsClient::open(&hello).await?;
    let t1 = now_ns();
    let synced = map_sync::sync(o, &cx.local, &mut c, track).await?;
    let t2 = now_ns();
    let s = &cx.sync;
    s.connect_hist.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(t1.saturating_sub(t0).max(1));
    s.hist.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(t2.saturating_sub(t1).max(1));
    Ok((c, synced))
}

/// Opens subscribers until none are left; each goes on as a task of its own once live.
async fn opener(cx: Rc<Cx>, subs: Rc<RefCell<Vec<Rc<Sub>>>>) {
    let (o, sh, s) = (&cx.plan.o, &cx.sh, &cx.sync);
    let limit = Duration::from_secs_f64(o.connect_timeout);
    loop {
        let i = s.next.fetch_add(1, Relaxed);
        if i >= o.subscribers || sh.phase() >= STOP {
            break;
        }
        let track = RefCell::new(Track::new(o.publishers));
        let opened = monoio::time::timeout(limit, open(&cx, i, &track)).await.unwrap_or_else(|_| {
            Err(ClientErr::Io(format!("connect and state sync took over {:.0} s", limit.as_secs_f64())))
        });
        match opened {
            Ok((mut c, synced)) => {
                s.pages.fetch_add(synced.pages, Relaxed);
                s.keys.fetch_add(synced.keys, Relaxed);
                s.repeated.fetch_add(synced.set.repeated, Relaxed);
                s.foreign.fetch_add(synced.set.foreign, Relaxed);
                if synced.set.distinct == o.keys {
                    s.complete.fetch_add(1, Relaxed);
                } else {
                    s.incomplete.fetch_add(1, Relaxed);
                    s.missing.fetch_add((o.keys - synced.set.distinct) as u64, Relaxed);
                }
                let st = Rc::new(Sub { track: RefCell::new(track.into_inner()), alive: Cell::new(true) });
                subs.borrow_mut().push(st.clone());
                s.last_live.fetch_max(now_ns(), Relaxed);
                sh.ready.fetch_add(1, Relaxed);
                let cx = cx.clone();
                monoio::spawn(async move {
                    let e = c.run(&cx.local, &st.track).await;
                    st.alive.set(false);
                    if cx.sh.phase() < DONE {
                        cx.sh.disconnects.fetch_add(1, Relaxed);
                        cx.sh.note(format!("subscriber {i} disconnected: {e}"));
                    }
                });
            }
            Err(e) => {
                sh.failed.fetch_add(1, Relaxed);
                if e.is_fatal() {
                    sh.set_fatal(format!("subscriber {i}: {e}"));
                } else {
                    sh.note(format!("subscriber {i} failed: {e}"));
                }
            }
        }
    }
}

/// One event-loop thread: its openers, its publishers, and at the end its subscribers' counts.
pub async fn thread_main(cx: Rc<Cx>, openers: usize) {
    let subs = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..openers {
        monoio::spawn(opener(cx.clone(), subs.clone()));
    }
    for p in (cx.thread..cx.plan.o.publishers).step_by(cx.plan.threads) {
        monoio::spawn(publisher(cx.clone(), p));
    }
    while cx.sh.phase() < DONE {
        monoio::time::sleep(Duration::from_millis(10)).await;
        cx.local.flush();
    }
    cx.local.flush();
    let (mut lost, mut dup) = (0, 0);
    for st in subs.borrow().iter() {
        let t = st.track.borrow();
        lost += t.lost;
        dup += t.duplicated;
        // What a subscriber still connected has not received was lost by the server; one that
        // was dropped is counted under disconnects.
        if st.alive.get() {
            lost += t.missing_at_end(|p| cx.sh.sent_seq[p].load(Relaxed));
        }
    }
    cx.sh.lost.fetch_add(lost, Relaxed);
    cx.sh.duplicated.fetch_add(dup, Relaxed);
    cx.sh.threads_done.fetch_add(1, Relaxed);
}

/// A request of updates sent and not yet answered.
struct Batch {
    n: u64,
    /// Send time (ns), in the values.
    t: u64,
    /// When its write started (ns).
    sent: u64,
}

/// What the writer and the reader of one publisher share.
#[derive(Default)]
struct Pipe {
    queue: RefCell<VecDeque<Batch>>,
    space: LocalNotify,
    failed: RefCell<Option<ClientErr>>,
}

/// Runs publisher `p` from the warm-up until the run stops. A publisher that fails ends the
/// run: the figures would be meaningless without it.
async fn publisher(cx: Rc<Cx>, p: usize) {
    if let Err(e) = publish(&cx, p).await {
        if e.is_fatal() || cx.sh.phase() < STOP {
            cx.sh.set_fatal(format!("publisher {p}: {e}"));
        }
    }
}

async fn publish(cx: &Rc<Cx>, p: usize) -> Result<(), ClientErr> {
    let (plan, sh) = (&cx.plan, &cx.sh);
    let o = &plan.o;
    while sh.phase() < WARMUP {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if sh.phase() >= STOP {
        return Ok(());
    }
    let addr = plan.nodes[0].addr;
    let stream = monoio::time::timeout(Duration::from_secs(10), target::connect(addr, None))
        .await
        .map_err(|_| ClientErr::Io(format!("publisher connect to {addr}: timed out")))?
        .map_err(|e| ClientErr::io(&format!("publisher connect to {addr}"), e))?;
    let (rd, mut wr) = stream.into_split();
    let pipe = Rc::new(Pipe::default());
    monoio::spawn(acks(cx.clone(), pipe.clone(), Reader::new(rd)));
    let rate = o.rate / o.publishers as f64;
    let start = now_ns();
    let (mut sent, mut seq) = (0u64, 0u64);
    // xorshift64: a different sequence of keys per publisher.
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ ((p as u64 + 1) << 17) ^ start;
    let mut out = Vec::with_capacity(o.batch * (payload::encoded_len(o.size) + 128) + 256);
    let mut body = Vec::with_capacity(out.capacity());
    while sh.phase() < STOP {
        if let Some(e) = pipe.failed.borrow().clone() {
            return Err(e);
        }
        if pipe.queue.borrow().len() >= o.inflight {
            pipe.space.wait().await;
            continue;
        }
        let Some(n) = crate::publish::next_batch(start, sent, rate, o.batch).await else { continue };
        let t = now_ns();
        body.clear();
        for _ in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            seq += 1;
            let key = (rng % o.keys as u64) as usize;
            map_publish(&mut body, &plan.channel_json, key, |b| payload::encode(b, t, p as u32, seq, o.size));
        }
        out.clear();
        request(&mut out, plan, &body);
        pipe.queue.borrow_mut().push_back(Batch { n, t, sent: now_ns() });
        let (res, buf) = wr.write_all(std::mem::take(&mut out)).await;
        out = buf;
        if let Err(e) = res {
            return Err(write_failure(&pipe.failed, &pipe.space, e).await);
        }
        sent += n;
        // Subscribers are owed what was written.
        sh.sent_seq[p].store(seq, Relaxed);
    }
    // Let the answers to what is in flight arrive (bounded: the run's drain is bounded too).
    let deadline = now_ns() + 5_000_000_000;
    while !pipe.queue.borrow().is_empty() && pipe.failed.borrow().is_none() && now_ns() < deadline {
        let _ = monoio::time::timeout(Duration::from_millis(50), pipe.space.wait()).await;
    }
    Ok(())
}

/// The reader of a publisher: answers in, batches out of the queue, counted.
async fn acks(cx: Rc<Cx>, pipe: Rc<Pipe>, mut conn: Reader<OwnedReadHalf<TcpStream>>) {
    let sh = &cx.sh;
    let res: Result<(), ClientErr> = async {
        loop {
            while let Some(r) = parse_response(&conn.buf, false).map_err(ClientErr::Io)? {
                conn.buf.advance(r.len);
                if r.status != 200 {
                    return Err(ClientErr::Rejected(api_refusal(&cx.plan, r.status, None)));
                }
                let Some(b) = pipe.queue.borrow_mut().pop_front() else {
                    return Err(ClientErr::Io("HTTP response without a request".into()));
                };
                // A missing reply line counts as an error too.
                let errors = r.errors + b.n.saturating_sub(r.replies);
                if errors > 0 && sh.publish_errors.load(Relaxed) == 0 {
                    eprintln!("gyre-bench: {}", api_refusal(&cx.plan, 200, r.first_error.as_deref()));
                }
                let ok = b.n.saturating_sub(errors);
                sh.published.fetch_add(ok, Relaxed);
                if sh.in_window(b.t) {
                    sh.published_window.fetch_add(ok, Relaxed);
                    cx.local.ack(b.sent, ok);
                }
                sh.publish_errors.fetch_add(errors, Relaxed);
                sh.expected.fetch_add(ok * sh.ready.load(Relaxed) as u64, Relaxed);
                pipe.space.notify();
                if r.close {
                    return Err(ClientErr::Io("the server closed the API connection (Connection: close)".into()));
                }
            }
            conn.fill_some("HTTP API").await?;
        }
    }
    .await;
    if let Err(e) = res {
        *pipe.failed.borrow_mut() = Some(e);
    }
    pipe.space.notify();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn seed_values_have_the_size_asked() {
        let mut v = Vec::new();
        seed_value(&mut v, 42, 100);
        assert_eq!(v.len(), 100);
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["v"], 42);
        v.clear();
        seed_value(&mut v, 7, 1);
        assert_eq!(v, br#"{"v":7}"#);
        // Not the updates' payload: a state page holds no update.
        assert!(memchr::memmem::find(&v, payload::MARK).is_none());
    }

    #[test]
    fn map_publish_lines_are_json() {
        let mut body = Vec::new();
        map_publish(&mut body, "\"map:x\"", 3, |b| seed_value(b, 3, 0));
        map_publish(&mut body, "\"map:x\"", 12, |b| payload::encode(b, 5, 0, 1, 40));
        let lines: Vec<serde_json::Value> =
            body.split(|&b| b == b'\n').map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(
            lines[0],
            json!({"method": "map_publish", "params": {"channel": "map:x", "key": "k3", "data": {"v": 3}}})
        );
        assert_eq!(lines[1]["params"]["key"], "k12");
        assert_eq!(lines[1]["params"]["data"]["s"], 1);
    }
}
