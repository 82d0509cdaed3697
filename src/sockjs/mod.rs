//! SockJS, the fallback transport of Centrifugo 2.x/3.x clients (`centrifuge-js` 2.x with
//! `sockjs-client`): the SockJS session protocol carrying the older client protocol
//! (`crate::protocol::v1`, JSON only) of one client session.
//!
//! The server sends SockJS frames: `o` (open), `h` (heartbeat, every
//! `sockjs.heartbeat_delay`), `a["msg",..]` (messages: each reply or push of the session is
//! one string), `c[code,"reason"]` (close). The client sends a JSON array of strings (or one
//! JSON string); each string is one message of the older protocol. Three transports:
//! - **websocket** (`/<server>/<session>/websocket`): the frames are text frames of one
//!   WebSocket ([`run_websocket`]);
//! - **xhr-streaming** (`POST /<server>/<session>/xhr_streaming`): the frames are lines of one
//!   chunked response, after a 2 KiB prelude of `h` ([`run_streaming`]);
//! - **xhr-polling** (`POST /<server>/<session>/xhr`): each request takes what is queued, or
//!   waits for it up to a heartbeat ([`poll`]).
//!
//! With both xhr transports the client's messages arrive as `POST .../xhr_send` requests, on
//! any connection of any worker: [`send`] finds the worker that holds the session (each
//! worker keeps its own SockJS sessions by id) and queues them there. The HTTP side (paths,
//! statuses, CORS) is `crate::http::sockjs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};

use crate::client::{sockjs_frame, Client, Framing};
use crate::io::ws::{read_loop_with, Conn};
use crate::io::{prepare_read, read_more};
use crate::notify::LocalNotify;
use crate::protocol::Format;
use crate::runtime::worker::{ConnectionSlot, Worker};
use crate::session::socket::{finish, open_on_socket, read_then_finish};
use crate::session::Session;

/// How long a polling session waits for its next poll request before it is dropped (SockJS's
/// disconnect delay).
pub const DISCONNECT_DELAY: Duration = Duration::from_secs(5);

/// Most `xhr_send` bodies queued for one session and not run yet.
const MAX_QUEUED_SENDS: usize = 256;

/// The xhr-streaming prelude: 2048 `h` and a newline (some browsers deliver a streaming
/// response only after its first 2 KiB).
fn prelude() -> Vec<u8> {
    let mut p = vec![b'h'; 2048];
    p.push(b'\n');
    p
}

/// What a request below the SockJS prefix asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// The prefix itself: the greeting.
    Greeting,
    /// `/info`.
    Info,
    /// `/<server>/<session>/<transport>`.
    Session { session: &'a str, transport: Transport },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    XhrStreaming,
    Xhr,
    XhrSend,
}

/// Parses the part of a path below the SockJS prefix; `None` for anything SockJS does not
/// serve here (iframe pages, JSONP, EventSource and htmlfile transports, raw `/websocket`).
pub fn route(rest: &str) -> Option<Route<'_>> {
    if rest.is_empty() || rest == "/" {
        return Some(Route::Greeting);
    }
    if rest == "/info" {
        return Some(Route::Info);
    }
    let mut parts = rest.strip_prefix('/')?.split('/');
    let (server, session, transport) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = |s: &str| !s.is_empty() && !s.contains('.') && s.len() <= 64;
    if parts.next().is_some() || !ok(server) || !ok(session) {
        return None;
    }
    let transport = match transport {
        "websocket" => Transport::WebSocket,
        "xhr_streaming" => Transport::XhrStreaming,
        "xhr" => Transport::Xhr,
        "xhr_send" => Transport::XhrSend,
        _ => return None,
    };
    Some(Route::Session { session, transport })
}

/// The `/info` answer: WebSocket available, no cookie needed, any origin (the origin rule
/// is the server's own, `client.allowed_origins`).
pub fn info_body() -> String {
    format!(
        "{{\"websocket\":true,\"origins\":[\"*:*\"],\"cookie_needed\":false,\"entropy\":{}}}",
        rand::random::<u32>()
    )
}

/// The messages of a client's SockJS frame: a JSON array of strings, or one JSON string.
/// `None` when it is neither.
pub fn decode_messages(body: &[u8]) -> Option<Vec<String>> {
    let body = body.trim_ascii();
    if body.first() == Some(&b'"') {
        return serde_json::from_slice::<String>(body).ok().map(|s| vec![s]);
    }
    serde_json::from_slice::<Vec<String>>(body).ok()
}

/// Runs each message of a client's SockJS frame as a message of the session; false when the
/// session should stop reading.
async fn run_messages(s: &Rc<Session>, body: &[u8]) -> bool {
    let Some(msgs) = decode_messages(body) else {
        crate::client::Handler::disconnect(&**s, crate::error::Disconnect::BAD_REQUEST);
        return false;
    };
    for m in msgs {
        if !Box::pin(s.on_message(true, Bytes::from(m))).await || s.is_closed() {
            return false;
        }
    }
    true
}

/// A new client of the older protocol on a SockJS transport.
fn new_client(w: &Worker, framing: Framing) -> Client {
    let id = Session::new_client_id(w, false);
    let client = Client::new(id, Format::Json, false, framing, w.cfg.client.queue_max_size);
    client.v1.set(true);
    client
}

struct SockConn(Rc<Session>);

impl Conn for SockConn {
    fn send(&self, frame: Bytes) {
        let _ = self.0.client.send(frame);
    }
    fn is_closed(&self) -> bool {
        self.0.client.out.is_closed()
    }
    async fn on_data(&self, _text: bool, data: Bytes) -> bool {
        Box::pin(run_messages(&self.0, &data)).await && !self.0.is_closed()
    }
    fn on_close(&self, code: u16) {
        self.0.close_with(code);
    }
    fn on_gone(&self) {
        self.0.vanished();
    }
}

/// Runs a SockJS session over an upgraded WebSocket until it closes: `o`, then the session.
#[allow(clippy::too_many_arguments)]
pub fn run_websocket<R, W>(
    w: Rc<Worker>,
    slot: ConnectionSlot,
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
    let client = new_client(&w, Framing::SockJsWebSocket);
    let (s, writer) = open_on_socket(&w, client, None, wr, sock, w.cfg.websocket.write_timeout);
    s.keep_request_headers(forwarded);
    let _ = s.client.send(sockjs_frame(Framing::SockJsWebSocket, b"o"));
    let limit = w.cfg.websocket.message_size_limit;
    let dec = crate::wire::ws::Decoder::new(limit, limit);
    read_then_finish(read_loop_with(SockConn(s.clone()), rd, buf, dec, 64), s, writer, slot)
}

/// A SockJS session of an xhr transport, reachable by its id on its worker.
struct Sock {
    session: Rc<Session>,
    /// Client frames (`xhr_send` bodies) not run yet.
    inbox: RefCell<VecDeque<Bytes>>,
    wake: LocalNotify,
    /// A poll request is waiting on this session.
    polling: Cell<bool>,
    /// When the last poll request ended.
    last_poll: Cell<Instant>,
    /// A polling session's place in the node's connection count.
    _slot: Option<ConnectionSlot>,
}

/// This worker's SockJS sessions of the xhr transports, by the id the client chose.
#[derive(Default)]
struct Socks(RefCell<AHashMap<Box<str>, Rc<Sock>>>);

fn socks(w: &Worker) -> Rc<Socks> {
    w.local(|_| Socks::default())
}

fn register(w: &Worker, sid: &str, session: Rc<Session>, slot: Option<ConnectionSlot>) -> Rc<Sock> {
    let sock = Rc::new(Sock {
        session,
        inbox: RefCell::new(VecDeque::new()),
        wake: LocalNotify::default(),
        polling: Cell::new(false),
        last_poll: Cell::new(Instant::now()),
        _slot: slot,
    });
    socks(w).0.borrow_mut().insert(sid.into(), sock.clone());
    sock
}

fn unregister(w: &Worker, sid: &str, sock: &Rc<Sock>) {
    let all = socks(w);
    let mut map = all.0.borrow_mut();
    if map.get(sid).is_some_and(|s| Rc::ptr_eq(s, sock)) {
        map.remove(sid);
    }
}

/// Runs the client frames queued for `sock` in order until its session closes.
async fn run_inbox(sock: &Sock) {
    loop {
        let next = sock.inbox.borrow_mut().pop_front();
        match next {
            Some(data) => {
                if !run_messages(&sock.session, &data).await {
                    return;
                }
            }
            None if sock.session.is_closed() => return,
            None => sock.wake.wait().await,
        }
    }
}

/// Runs an xhr-streaming session on an HTTP connection: `head` (the response head) goes out
/// first, with the prelude and `o`; the client's messages come through [`send`].
#[allow(clippy::too_many_arguments)]
pub fn run_streaming<R, W>(
    w: Rc<Worker>,
    slot: ConnectionSlot,
    sid: String,
    head: Bytes,
    forwarded: crate::session::proxy::Forwarded,
    mut rd: R,
    wr: W,
    mut buf: BytesMut,
    sock: crate::io::Socket,
) -> impl std::future::Future<Output = ()>
where
    R: monoio::io::AsyncReadRent,
    W: monoio::io::AsyncWriteRent + 'static,
{
    let client = new_client(&w, Framing::SockJsStream);
    let (s, writer) = open_on_socket(&w, client, None, wr, sock, w.cfg.websocket.write_timeout);
    s.keep_request_headers(forwarded);
    let mut first = head.to_vec();
    first.extend_from_slice(&crate::client::http_chunk(&[&prelude()]));
    first.extend_from_slice(&sockjs_frame(Framing::SockJsStream, b"o"));
    let _ = s.client.send(Bytes::from(first));
    let entry = register(&w, &sid, s.clone(), None);
    async move {
        let gone = async {
            // The client sends nothing more on this connection: a read ends when it goes
            // away (or when the writer shut the socket after a server close).
            loop {
                buf.clear();
                prepare_read(&mut buf, false, 64);
                let (res, b) = read_more(&mut rd, std::mem::take(&mut buf)).await;
                buf = b;
                if !matches!(res, Ok(n) if n > 0) {
                    return;
                }
            }
        };
        monoio::select! {
            _ = run_inbox(&entry) => {}
            _ = gone => s.vanished(),
        }
        unregister(&w, &sid, &entry);
        finish(s, writer, slot).await;
    }
}

/// Queues a client frame (an `xhr_send` body, checked already) to SockJS session `sid`, on
/// whichever worker holds it; false when none does.
pub async fn send(w: &Rc<Worker>, sid: &str, data: Bytes) -> bool {
    let sid: Arc<str> = sid.into();
    let calls = w.ask_all(move |w, a| {
        let sock = socks(w).0.borrow().get(&*sid).cloned();
        let found = match sock {
            Some(s) if !s.session.is_closed() => {
                if s.inbox.borrow().len() >= MAX_QUEUED_SENDS {
                    // A client that sends faster than its commands run.
                    crate::client::Handler::disconnect(&*s.session, crate::error::Disconnect::TOO_MANY_REQUESTS);
                } else {
                    s.inbox.borrow_mut().push_back(data);
                }
                s.wake.notify();
                true
            }
            _ => false,
        };
        a.send(w, found)
    });
    let mut found = false;
    for c in calls {
        found |= c.await;
    }
    found
}

/// What a poll request found on the worker it asked.
enum Polled {
    /// No session of that id here.
    Unknown,
    /// Another poll request is waiting on the session.
    Busy,
    /// The response body: frames, a heartbeat, or the close frame.
    Body(Vec<u8>),
}

/// A poll request (`xhr`) of session `sid`: the frames queued for it (waiting up to a
/// heartbeat for some), `o` for a new session (opened on this worker, holding the place
/// `slot` gives it in the node's count), or SockJS's refusal of a second poll request at
/// once. `None` when a new session is refused (no place).
pub async fn poll(
    w: &Rc<Worker>,
    sid: &str,
    slot: impl FnOnce() -> Option<ConnectionSlot>,
    forwarded: crate::session::proxy::Forwarded,
    remote: Option<std::net::IpAddr>,
) -> Option<Bytes> {
    let key: Arc<str> = sid.into();
    let calls = w.ask_all(move |w, a| {
        let Some(sock) = socks(w).0.borrow().get(&*key).cloned() else {
            return a.send(w, Polled::Unknown);
        };
        let w = w.clone();
        monoio::spawn(async move {
            let body = take(&w, &key, &sock).await;
            a.send(&w, body);
        });
    });
    let mut found = None;
    for c in calls {
        match c.await {
            Polled::Unknown => {}
            other => found = Some(other),
        }
    }
    match found {
        Some(Polled::Body(b)) => Some(b.into()),
        Some(_) => Some(Bytes::from_static(b"c[2010,\"Another connection still open\"]\n")),
        None => {
            let slot = slot()?;
            let mut client = new_client(w, Framing::SockJsPoll);
            // Its poll requests take what is queued, after the write delay when there is one.
            client.write_through_writer(w.hub.writes().clone());
            let client = Rc::new(client);
            let s = Session::open(w, client, None, remote);
            s.keep_request_headers(forwarded);
            let sock = register(w, sid, s, Some(slot));
            monoio::spawn(watch(w.clone(), sid.into(), sock));
            Some(Bytes::from_static(b"o\n"))
        }
    }
}

/// Takes what is queued for a polling session, waiting up to a heartbeat for something.
async fn take(w: &Rc<Worker>, sid: &str, sock: &Rc<Sock>) -> Polled {
    if sock.polling.replace(true) {
        return Polled::Busy;
    }
    let wait = w.cfg.sockjs.heartbeat_delay.max(Duration::from_millis(100));
    let r = monoio::time::timeout(wait, sock.session.client.out.take_frames()).await;
    sock.polling.set(false);
    sock.last_poll.set(Instant::now());
    match r {
        Err(_) => Polled::Body(b"h\n".to_vec()),
        Ok(Ok(frames)) => Polled::Body(frames.concat()),
        Ok(Err(close)) => {
            // The session is over: its close frame is the last answer.
            unregister(w, sid, sock);
            sock.wake.notify();
            Polled::Body(close.to_vec())
        }
    }
}

/// Runs a polling session's client frames, and drops the session once no poll request has
/// come for [`DISCONNECT_DELAY`] (the client is gone).
async fn watch(w: Rc<Worker>, sid: Box<str>, sock: Rc<Sock>) {
    let runner = {
        let sock = sock.clone();
        monoio::spawn(async move { run_inbox(&sock).await })
    };
    loop {
        monoio::time::sleep(Duration::from_millis(500)).await;
        let registered = socks(&w).0.borrow().get(&sid).is_some_and(|s| Rc::ptr_eq(s, &sock));
        if !registered {
            break;
        }
        if !sock.polling.get() && sock.last_poll.get().elapsed() > DISCONNECT_DELAY {
            sock.session.vanished();
            unregister(&w, &sid, &sock);
            break;
        }
    }
    sock.session.cleanup();
    sock.wake.notify();
    runner.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(""), Some(Route::Greeting));
        assert_eq!(route("/"), Some(Route::Greeting));
        assert_eq!(route("/info"), Some(Route::Info));
        assert_eq!(route("/123/abc/xhr"), Some(Route::Session { session: "abc", transport: Transport::Xhr }));
        assert_eq!(route("/1/s/websocket"), Some(Route::Session { session: "s", transport: Transport::WebSocket }));
        assert_eq!(
            route("/1/s/xhr_send").map(|r| matches!(r, Route::Session { transport: Transport::XhrSend, .. })),
            Some(true)
        );
        for bad in
            ["/iframe.html", "/1/s/eventsource", "/1/s/jsonp", "/1//xhr", "/1/a.b/xhr", "/1/s/xhr/x", "/websocket"]
        {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_frames() {
        assert_eq!(decode_messages(br#"["a","b\n"]"#), Some(vec!["a".to_string(), "b\n".to_string()]));
        assert_eq!(decode_messages(br#""one""#), Some(vec!["one".to_string()]));
        assert_eq!(decode_messages(b" [] "), Some(vec![]));
        for bad in [&b""[..], b"[1]", b"{}", b"[\"a\"", b"nope"] {
            assert_eq!(decode_messages(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn frames_per_transport() {
        use crate::client::{frame_message, sockjs_close};
        assert_eq!(&frame_message(Framing::SockJsPoll, Format::Json, br#"{"id":1}"#)[..], b"a[\"{\\\"id\\\":1}\"]\n");
        assert_eq!(&frame_message(Framing::SockJsStream, Format::Json, b"x")[..], b"7\r\na[\"x\"]\n\r\n");
        assert_eq!(&frame_message(Framing::SockJsWebSocket, Format::Json, b"x")[..], b"\x81\x06a[\"x\"]");
        assert_eq!(&sockjs_close(Framing::SockJsPoll, 3002, "r")[..], b"c[3002,\"r\"]\n");
        assert_eq!(&sockjs_frame(Framing::SockJsPoll, b"h")[..], b"h\n");
    }
}
