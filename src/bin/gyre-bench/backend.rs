//! `proxy-backend`: a small application backend answering Centrifugo's HTTP proxy calls, for
//! measuring a server with its proxies on (`client.proxy.connect.endpoint`,
//! `channel.proxy.subscribe.endpoint`, ... pointed at it).
//!
//! HTTP/1.1 with keep-alive (and pipelining) on `--threads` event loops sharing one listening
//! socket; any path. Each call is answered as an accepting backend would:
//!
//! * connect → `{"result":{"user":"bench-<n>"}}`, `n` counting the connect calls;
//! * subscribe, publish, sub_refresh → `{"result":{}}` (a publication keeps its data);
//! * rpc → `{"result":{"data":<the request's data>}}` (or its `b64data`);
//! * refresh → `{"result":{"expire_at":<an hour from now>}}`.
//!
//! The kind is the last segment of the path when it names one (`/centrifugo/connect`, `/rpc`,
//! `/sub_refresh`, ...), else it is read from the body: no `user` field is a connect, a
//! `method` an rpc, a `channel` with `data` a publish, a `channel` alone a subscribe, `user`
//! alone a refresh. `--delay-ms` holds every answer that long (the backend's own work).
//! The calls are counted per kind and printed when the process ends (SIGINT / SIGTERM): the
//! counts as one JSON line on stdout, a summary on stderr.

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use clap::Args;
use gyre::wire::http::BodyDecoder;
use monoio::io::AsyncWriteRentExt;
use monoio::net::{TcpListener, TcpStream};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::Fail;

#[derive(Args, Debug, Clone)]
pub struct BackendOpts {
    /// Address to listen on (port 0: any free port; the address taken is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: String,
    /// Event-loop threads serving the connections.
    #[arg(long, short = 't', default_value_t = 1)]
    pub threads: usize,
    /// Milliseconds every answer waits (the backend's own work).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// No start-up line and no summary on stderr (the counts still go to stdout).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The kinds of proxy call, in the order they are reported.
const KINDS: [&str; 6] = ["connect", "refresh", "subscribe", "publish", "sub_refresh", "rpc"];

/// Largest request head and body accepted.
const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 16 << 20;

/// Calls answered per kind, and requests refused (not a POST, not JSON, too large).
#[derive(Default)]
struct Counts {
    calls: [AtomicU64; KINDS.len()],
    bad: AtomicU64,
}

impl Counts {
    fn json(&self) -> Value {
        let mut calls = serde_json::Map::new();
        let mut total = 0;
        for (k, c) in KINDS.iter().zip(&self.calls) {
            let n = c.load(Relaxed);
            total += n;
            calls.insert((*k).into(), json!(n));
        }
        json!({"calls": calls, "total": total, "bad_requests": self.bad.load(Relaxed)})
    }
}

pub fn main(o: BackendOpts) -> Result<(), Fail> {
    if o.threads == 0 {
        return Err(Fail::setup("--threads must be at least 1"));
    }
    let listener =
        StdListener::bind(&o.listen).map_err(|e| Fail::setup(format!("cannot listen on {}: {e}", o.listen)))?;
    let addr = listener.local_addr().map_err(|e| Fail::setup(format!("listening socket: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| Fail::setup(format!("listening socket: {e}")))?;
    crate::target::raise_nofile();
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    ctrlc::set_handler(move || stop2.store(true, Relaxed))
        .map_err(|e| Fail::setup(format!("cannot handle signals: {e}")))?;
    for t in 0..o.threads {
        let l = listener.try_clone().map_err(|e| Fail::setup(format!("listening socket: {e}")))?;
        let (counts, delay) = (counts.clone(), Duration::from_millis(o.delay_ms));
        std::thread::Builder::new()
            .name(format!("backend-{t}"))
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build();
                match rt {
                    Ok(mut rt) => rt.block_on(accept_loop(l, counts, delay)),
                    Err(e) => eprintln!("gyre-bench proxy-backend: cannot start an event loop: {e}"),
                }
            })
            .map_err(|e| Fail::setup(format!("cannot start a thread: {e}")))?;
    }
    if !o.quiet {
        eprintln!(
            "gyre-bench proxy-backend: listening on {addr} ({} thread(s), {} ms per answer)",
            o.threads, o.delay_ms
        );
    }
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let j = counts.json();
    println!("{j}");
    if !o.quiet {
        let each: Vec<String> = KINDS.iter().map(|k| format!("{k} {}", j["calls"][k])).collect();
        eprintln!(
            "gyre-bench proxy-backend: {} calls ({}), {} bad requests",
            j["total"],
            each.join(", "),
            j["bad_requests"]
        );
    }
    Ok(())
}

async fn accept_loop(l: StdListener, counts: Arc<Counts>, delay: Duration) {
    let l = match TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gyre-bench proxy-backend: listening socket: {e}");
            return;
        }
    };
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                monoio::spawn(serve(s, counts.clone(), delay));
            }
            // Out of descriptors or the like: wait a little rather than spin.
            Err(_) => monoio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A request as far as the backend cares.
struct Request {
    path: String,
    post: bool,
    close: bool,
    body: BytesMut,
}

/// Serves one connection: requests in order, one answer each, until the peer closes.
async fn serve(mut s: TcpStream, counts: Arc<Counts>, delay: Duration) {
    let mut buf = BytesMut::with_capacity(8 << 10);
    let mut out = Vec::with_capacity(1024);
    loop {
        let req = match read_request(&mut s, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                counts.bad.fetch_add(1, Relaxed);
                out.clear();
                respond(&mut out, status, b"", true);
                let _ = s.write_all(out).await;
                return;
            }
        };
        let (status, body) = if req.post { answer(&req.path, &req.body, &counts) } else { (405, Vec::new()) };
        if status != 200 {
            counts.bad.fetch_add(1, Relaxed);
        }
        if !delay.is_zero() {
            monoio::time::sleep(delay).await;
        }
        out.clear();
        respond(&mut out, status, &body, req.close);
        let (res, back) = s.write_all(out).await;
        out = back;
        if res.is_err() || req.close {
            return;
        }
    }
}

/// Reads the next request; `Ok(None)` when the peer closed between requests, `Err(status)`
/// for one that cannot be served.
async fn read_request(s: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<Request>, u16> {
    let (path, post, close, chunked, length, head_len) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut hs);
        match r.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
                let length = match header("content-length") {
                    Some(v) => Some(v.parse::<u64>().map_err(|_| 400u16)?),
                    None => None,
                };
                let close = match header("connection") {
                    Some(v) if v.contains("close") => true,
                    Some(v) if v.contains("keep-alive") => false,
                    _ => r.version == Some(0),
                };
                break (r.path.unwrap_or("/").to_string(), r.method == Some("POST"), close, chunked, length, n);
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(431),
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(400),
        }
        if !fill(s, buf).await? {
            return if buf.is_empty() { Ok(None) } else { Err(400) };
        }
    };
    buf.advance(head_len);
    if length.unwrap_or(0) > MAX_BODY as u64 {
        return Err(413);
    }
    let mut dec = BodyDecoder::framed(chunked, length.unwrap_or(0));
    let mut body = BytesMut::new();
    loop {
        while let Some(piece) = dec.next(buf).map_err(|_| 400u16)? {
            if body.len() + piece.len() > MAX_BODY {
                return Err(413);
            }
            body.extend_from_slice(&piece);
        }
        if dec.is_done() {
            break;
        }
        if !fill(s, buf).await? {
            return Err(400);
        }
    }
    Ok(Some(Request { path, post, close, body }))
}

/// Reads more into `buf`; false at the end of the stream.
async fn fill(s: &mut TcpStream, buf: &mut BytesMut) -> Result<bool, u16> {
    gyre::io::prepare_read(buf, false, 8 << 10);
    let (r, b) = gyre::io::read_more(s, std::mem::take(buf)).await;
    *buf = b;
    match r {
        Ok(0) | Err(_) => Ok(false),
        Ok(_) => Ok(true),
    }
}

fn respond(out: &mut Vec<u8>, status: u16, body: &[u8], close: bool) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    if status == 200 {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

/// The fields of a proxy request that tell its kind and make its answer.
#[derive(Deserialize)]
struct Call<'a> {
    #[serde(default)]
    user: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    method: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    channel: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    b64data: Option<String>,
}

/// The kind of a call: from the path's last segment, else from the body.
fn kind_of(path: &str, c: &Call) -> usize {
    let last = path.split('?').next().unwrap_or("").trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if let Some(k) = KINDS.iter().position(|k| *k == last) {
        return k;
    }
    let has_data = c.data.is_some() || c.b64data.is_some();
    let name = match (c.user.is_some(), c.method.is_some(), c.channel.is_some()) {
        (false, _, _) => "connect",
        (true, true, _) => "rpc",
        (true, false, true) if has_data => "publish",
        (true, false, true) => "subscribe",
        (true, false, false) => "refresh",
    };
    KINDS.iter().position(|k| *k == name).expect("a listed kind")
}

/// Status and body of the answer to the call in `body`.
fn answer(path: &str, body: &[u8], counts: &Counts) -> (u16, Vec<u8>) {
    // (A struct also reads from a JSON array: a call is an object.)
    if body.trim_ascii_start().first() != Some(&b'{') {
        return (400, Vec::new());
    }
    let Ok(c) = serde_json::from_slice::<Call>(body) else {
        return (400, Vec::new());
    };
    let k = kind_of(path, &c);
    let n = counts.calls[k].fetch_add(1, Relaxed);
    let out = match KINDS[k] {
        "connect" => format!("{{\"result\":{{\"user\":\"bench-{n}\"}}}}"),
        "refresh" => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!("{{\"result\":{{\"expire_at\":{}}}}}", now + 3600)
        }
        "rpc" => match (&c.b64data, c.data) {
            (Some(b), _) if !b.is_empty() => json!({"result": {"b64data": b}}).to_string(),
            (_, Some(d)) => format!("{{\"result\":{{\"data\":{}}}}}", d.get()),
            _ => "{\"result\":{}}".to_string(),
        },
        _ => "{\"result\":{}}".to_string(),
    };
    (200, out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str, body: &str) -> (u16, String, Value) {
        let counts = Counts::default();
        let (status, out) = answer(path, body.as_bytes(), &counts);
        (status, String::from_utf8(out).unwrap(), counts.json())
    }

    #[test]
    fn answers_each_kind_from_the_body() {
        let base = r#""client":"c","transport":"websocket","protocol":"json","encoding":"json""#;
        let (s, out, n) = call("/", &format!("{{{base},\"name\":\"js\"}}"));
        assert_eq!((s, out.as_str()), (200, r#"{"result":{"user":"bench-0"}}"#));
        assert_eq!(n["calls"]["connect"], 1);
        let (_, out, n) = call("/", &format!("{{{base},\"user\":\"u\",\"channel\":\"c\"}}"));
        assert_eq!((out.as_str(), &n["calls"]["subscribe"]), (r#"{"result":{}}"#, &json!(1)));
        let (_, out, n) = call("/", &format!("{{{base},\"user\":\"u\",\"channel\":\"c\",\"data\":{{\"x\":1}}}}"));
        assert_eq!((out.as_str(), &n["calls"]["publish"]), (r#"{"result":{}}"#, &json!(1)));
        let (_, out, n) = call("/", &format!("{{{base},\"user\":\"\",\"method\":\"m\",\"data\":[1, 2]}}"));
        assert_eq!((out.as_str(), &n["calls"]["rpc"]), (r#"{"result":{"data":[1, 2]}}"#, &json!(1)));
        let (_, out, _) = call("/", &format!("{{{base},\"user\":\"\",\"method\":\"m\",\"b64data\":\"AQI=\"}}"));
        assert_eq!(out, r#"{"result":{"b64data":"AQI="}}"#);
        let (_, out, n) = call("/", &format!("{{{base},\"user\":\"u\"}}"));
        assert!(out.starts_with(r#"{"result":{"expire_at":"#), "{out}");
        assert_eq!(n["calls"]["refresh"], 1);
    }

    #[test]
    fn the_path_names_the_kind() {
        // A subscribe with data reads as a publish from the body; the path says otherwise.
        let body = r#"{"user":"u","channel":"c","data":{}}"#;
        assert_eq!(call("/centrifugo/subscribe", body).2["calls"]["subscribe"], 1);
        assert_eq!(call("/sub_refresh/", r#"{"user":"u","channel":"c"}"#).2["calls"]["sub_refresh"], 1);
        assert_eq!(call("/proxy?x=1", body).2["calls"]["publish"], 1);
    }

    #[test]
    fn refuses_what_is_not_a_call() {
        let (s, _, n) = call("/", "not json");
        assert_eq!((s, n["total"].as_u64()), (400, Some(0)));
        assert_eq!(call("/", "[1]").0, 400);
    }

    #[test]
    fn answers_carry_their_length() {
        let mut out = Vec::new();
        respond(&mut out, 200, b"{}", false);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
        out.clear();
        respond(&mut out, 400, b"", true);
        assert_eq!(out, b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    }
}
