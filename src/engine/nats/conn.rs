//! One NATS connection on the worker's event loop (the client side of the NATS text protocol:
//! `INFO`, `CONNECT`, `PUB`, `SUB`, `UNSUB`, `MSG`, `PING`/`PONG`, `-ERR`). A supervisor task
//! connects, serves until the connection breaks, and reconnects with backoff; subscriptions
//! belong to one connection (the `up` hook makes them again on the next).
//!
//! NATS does not acknowledge a `SUB`: a `PING` written after a run of them is answered by a
//! `PONG` once the server has processed them, which confirms the run (the `confirmed` hook).
//! A publish while the connection is down fails at once, as Centrifugo's NATS broker does
//! (its client keeps no reconnect buffer).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::{Buf, Bytes, BytesMut};
use monoio::io::{AsyncWriteRentExt, Splitable};

use crate::config::broker::NatsUrl;
use crate::notify::LocalNotify;

/// Called with a message's subject and payload.
pub type MsgHook = Box<dyn Fn(&[u8], Bytes)>;

/// What the connection tells its owner.
pub struct Hooks {
    /// Connected (after `CONNECT` was answered); `gen` counts successful connects.
    pub up: Box<dyn Fn(u64)>,
    /// The connection broke (once per loss).
    pub down: Box<dyn Fn()>,
    /// A message on a subscribed subject.
    pub msg: MsgHook,
    /// These subjects' `SUB`s were processed by the server on connection `gen`.
    pub confirmed: Box<dyn Fn(u64, Vec<Bytes>)>,
}

/// Why a publish did not go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// Not connected.
    Down,
    /// Larger than the server's `max_payload`.
    TooLarge,
}

#[derive(Default)]
struct State {
    up: bool,
    gen: u64,
    wbuf: BytesMut,
    next_sid: u64,
    /// Subject → sid, for the current connection.
    sids: AHashMap<Bytes, u64>,
    by_sid: AHashMap<u64, Bytes>,
    /// Subjects subscribed since the last PING went out.
    unconfirmed: Vec<Bytes>,
    /// For each PING in flight, the subjects its PONG confirms.
    pings: VecDeque<Vec<Bytes>>,
    max_payload: usize,
}

pub struct NatsConn {
    url: NatsUrl,
    name: String,
    dial_timeout: Duration,
    write_timeout: Duration,
    st: RefCell<State>,
    wake: LocalNotify,
    hooks: RefCell<Option<Rc<Hooks>>>,
    was_up: Cell<bool>,
}

/// A connection silent this long gets a PING.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// The largest protocol line (an `INFO` can be long; a `MSG` line holds a subject).
const MAX_LINE: usize = 64 << 10;

impl NatsConn {
    pub fn new(url: NatsUrl, name: String, dial_timeout: Duration, write_timeout: Duration) -> Rc<NatsConn> {
        Rc::new(NatsConn {
            url,
            name,
            dial_timeout: dial_timeout.max(Duration::from_millis(10)),
            write_timeout: write_timeout.max(Duration::from_millis(100)),
            st: RefCell::new(State { max_payload: 1 << 20, ..State::default() }),
            wake: LocalNotify::default(),
            hooks: RefCell::new(None),
            was_up: Cell::new(false),
        })
    }

    pub fn set_hooks(&self, hooks: Hooks) {
        *self.hooks.borrow_mut() = Some(Rc::new(hooks));
    }

    pub fn is_up(&self) -> bool {
        self.st.borrow().up
    }

    /// Generation of the current connection (0 before the first).
    pub fn gen(&self) -> u64 {
        self.st.borrow().gen
    }

    /// Publishes `payload` to `subject` (written with the loop turn's other output).
    pub fn publish(&self, subject: &[u8], payload: &[u8]) -> Result<(), PublishError> {
        let mut st = self.st.borrow_mut();
        if !st.up {
            return Err(PublishError::Down);
        }
        if payload.len() > st.max_payload {
            return Err(PublishError::TooLarge);
        }
        let b = &mut st.wbuf;
        b.extend_from_slice(b"PUB ");
        b.extend_from_slice(subject);
        b.extend_from_slice(b" ");
        b.extend_from_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(payload);
        b.extend_from_slice(b"\r\n");
        drop(st);
        self.wake.notify();
        Ok(())
    }

    /// Subscribes `subject` on the current connection (confirmed later through the
    /// `confirmed` hook). Ignored while down or when already subscribed.
    pub fn subscribe(&self, subject: Bytes) {
        let mut st = self.st.borrow_mut();
        if !st.up || st.sids.contains_key(&subject) {
            return;
        }
        st.next_sid += 1;
        let sid = st.next_sid;
        let mut line = Vec::with_capacity(subject.len() + 16);
        line.extend_from_slice(b"SUB ");
        line.extend_from_slice(&subject);
        line.extend_from_slice(format!(" {sid}\r\n").as_bytes());
        st.wbuf.extend_from_slice(&line);
        st.sids.insert(subject.clone(), sid);
        st.by_sid.insert(sid, subject.clone());
        st.unconfirmed.push(subject);
        drop(st);
        self.wake.notify();
    }

    /// Leaves `subject` (messages already on their way are dropped on arrival).
    pub fn unsubscribe(&self, subject: &[u8]) {
        let mut st = self.st.borrow_mut();
        let Some(sid) = st.sids.remove(subject) else { return };
        st.by_sid.remove(&sid);
        let line = format!("UNSUB {sid}\r\n");
        st.wbuf.extend_from_slice(line.as_bytes());
        drop(st);
        self.wake.notify();
    }

    /// The supervisor: connect, serve, back off, repeat.
    pub async fn run(self: Rc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(stream) = self.connect().await {
                let served_at = Instant::now();
                self.serve(stream).await;
                if served_at.elapsed() > Duration::from_secs(5) {
                    backoff = Duration::from_millis(50);
                }
            }
            self.go_down();
            monoio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn go_down(&self) {
        let was_up = {
            let mut st = self.st.borrow_mut();
            let was = st.up;
            st.up = false;
            st.wbuf.clear();
            st.sids.clear();
            st.by_sid.clear();
            st.unconfirmed.clear();
            st.pings.clear();
            was
        };
        if was_up {
            tracing::warn!(nats = %self.url.display(), "nats connection lost; reconnecting");
            let hooks = self.hooks.borrow().clone();
            if let Some(h) = hooks {
                (h.down)();
            }
        }
    }

    async fn connect(&self) -> Option<monoio::net::TcpStream> {
        let addr = (self.url.host.as_str(), self.url.port).to_socket_addrs().ok()?.next()?;
        match monoio::time::timeout(self.dial_timeout, monoio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            Ok(Err(e)) => {
                tracing::debug!(nats = %self.url.display(), error = %e, "nats connect failed");
                None
            }
            Err(_) => None,
        }
    }

    /// The `CONNECT` line: no acknowledgements (`verbose` off), our own messages echoed (the
    /// node delivers its publications as it receives them, like every other node's).
    fn connect_line(&self) -> String {
        let mut o = serde_json::json!({
            "verbose": false, "pedantic": false, "tls_required": false, "echo": true,
            "name": self.name, "lang": "rust", "version": env!("CARGO_PKG_VERSION"), "protocol": 1,
            "headers": false,
        });
        if !self.url.user.is_empty() {
            o["user"] = self.url.user.clone().into();
            o["pass"] = self.url.password.clone().into();
        }
        if !self.url.token.is_empty() {
            o["auth_token"] = self.url.token.clone().into();
        }
        format!("CONNECT {o}\r\nPING\r\n")
    }

    async fn serve(&self, stream: monoio::net::TcpStream) {
        let (mut rd, mut wr) = stream.into_split();
        let mut rbuf = BytesMut::with_capacity(64 << 10);
        // INFO first; then CONNECT + PING, answered by PONG (or -ERR: refused).
        let handshake = async {
            let mut connect_sent = false;
            loop {
                match parse(&mut rbuf) {
                    Ok(Some(Op::Info(info))) => {
                        let v: serde_json::Value = serde_json::from_slice(&info).unwrap_or_default();
                        if v.get("tls_required").and_then(|t| t.as_bool()) == Some(true) {
                            tracing::error!(nats = %self.url.display(), "the nats-server requires TLS, which Gyre's NATS broker does not speak");
                            return false;
                        }
                        if let Some(m) = v.get("max_payload").and_then(|m| m.as_u64()) {
                            self.st.borrow_mut().max_payload = m as usize;
                        }
                        if !connect_sent {
                            connect_sent = true;
                            let (res, _) = wr.write_all(self.connect_line().into_bytes()).await;
                            if res.is_err() {
                                return false;
                            }
                        }
                    }
                    Ok(Some(Op::Pong)) if connect_sent => return true,
                    Ok(Some(Op::Err(e))) => {
                        tracing::error!(nats = %self.url.display(), error = %String::from_utf8_lossy(&e), "nats refused the connection");
                        return false;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        if rbuf.capacity() - rbuf.len() < 4096 {
                            rbuf.reserve(16 << 10);
                        }
                        let (res, b) = crate::io::read_more(&mut rd, std::mem::take(&mut rbuf)).await;
                        rbuf = b;
                        if !matches!(res, Ok(n) if n > 0) {
                            return false;
                        }
                    }
                    Err(e) => {
                        tracing::error!(nats = %self.url.display(), error = e, "bad data from nats");
                        return false;
                    }
                }
            }
        };
        match monoio::time::timeout(self.dial_timeout.max(Duration::from_secs(1)), handshake).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                tracing::warn!(nats = %self.url.display(), "nats handshake timed out");
                return;
            }
        }
        let gen = {
            let mut st = self.st.borrow_mut();
            st.up = true;
            st.gen += 1;
            st.gen
        };
        if !self.was_up.replace(true) {
            tracing::info!(nats = %self.url.display(), "nats connected");
        } else {
            tracing::info!(nats = %self.url.display(), "nats reconnected");
        }
        let hooks = self.hooks.borrow().clone();
        if let Some(h) = &hooks {
            (h.up)(gen);
        }
        let last_read = Cell::new(Instant::now());
        let writer = async {
            loop {
                let out = {
                    let mut st = self.st.borrow_mut();
                    if !st.unconfirmed.is_empty() {
                        let subjects = std::mem::take(&mut st.unconfirmed);
                        st.pings.push_back(subjects);
                        st.wbuf.extend_from_slice(b"PING\r\n");
                    }
                    (!st.wbuf.is_empty()).then(|| st.wbuf.split())
                };
                match out {
                    Some(out) => match monoio::time::timeout(self.write_timeout, wr.write_all(out)).await {
                        Ok((Ok(_), _)) => {}
                        Ok((Err(_), _)) => return,
                        Err(_) => {
                            tracing::warn!(nats = %self.url.display(), "a write to nats timed out");
                            return;
                        }
                    },
                    None => self.wake.wait().await,
                }
            }
        };
        let reader = async {
            loop {
                loop {
                    match parse(&mut rbuf) {
                        Ok(Some(op)) => {
                            if !self.on_op(op, gen, hooks.as_deref()) {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(nats = %self.url.display(), error = e, "bad data from nats");
                            return;
                        }
                    }
                }
                if rbuf.capacity() - rbuf.len() < 4096 {
                    rbuf.reserve(64 << 10);
                }
                let (res, b) = crate::io::read_more(&mut rd, std::mem::take(&mut rbuf)).await;
                rbuf = b;
                match res {
                    Ok(n) if n > 0 => last_read.set(Instant::now()),
                    _ => return,
                }
            }
        };
        // A server that stops answering without closing the socket is left: a PING after
        // KEEPALIVE of silence must be answered within write_timeout.
        let watchdog = async {
            let mut pinged: Option<Instant> = None;
            loop {
                monoio::time::sleep(Duration::from_millis(250)).await;
                let silent = last_read.get().elapsed();
                if silent >= KEEPALIVE + self.write_timeout {
                    tracing::warn!(nats = %self.url.display(), "nats did not answer a PING in time");
                    return;
                }
                if silent >= KEEPALIVE && pinged != Some(last_read.get()) {
                    pinged = Some(last_read.get());
                    let mut st = self.st.borrow_mut();
                    st.pings.push_back(Vec::new());
                    st.wbuf.extend_from_slice(b"PING\r\n");
                    drop(st);
                    self.wake.notify();
                }
            }
        };
        monoio::select! {
            _ = writer => {}
            _ = reader => {}
            _ = watchdog => {}
        }
    }

    /// Acts on one server operation; false: leave the connection.
    fn on_op(&self, op: Op, gen: u64, hooks: Option<&Hooks>) -> bool {
        match op {
            Op::Msg { subject, sid, payload } => {
                let known = self.st.borrow().by_sid.contains_key(&sid);
                if let (true, Some(h)) = (known, hooks) {
                    (h.msg)(&subject, payload);
                }
            }
            Op::Ping => {
                self.st.borrow_mut().wbuf.extend_from_slice(b"PONG\r\n");
                self.wake.notify();
            }
            Op::Pong => {
                let subjects = self.st.borrow_mut().pings.pop_front().unwrap_or_default();
                if let (false, Some(h)) = (subjects.is_empty(), hooks) {
                    (h.confirmed)(gen, subjects);
                }
            }
            Op::Err(e) => {
                let text = String::from_utf8_lossy(&e);
                tracing::error!(nats = %self.url.display(), error = %text, "nats error");
                // Permission and subject errors leave the connection up; the others close it.
                let lower = text.to_ascii_lowercase();
                return lower.contains("permissions violation") || lower.contains("invalid subject");
            }
            Op::Info(_) | Op::Ok => {}
        }
        true
    }
}

/// One operation from the server.
#[derive(Debug, PartialEq)]
enum Op {
    Info(Bytes),
    Msg { subject: Bytes, sid: u64, payload: Bytes },
    Ping,
    Pong,
    Ok,
    Err(Bytes),
}

/// Takes one whole operation off the front of `buf`, if one is there.
fn parse(buf: &mut BytesMut) -> Result<Option<Op>, &'static str> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        return if buf.len() > MAX_LINE { Err("protocol line too long") } else { Ok(None) };
    };
    let line = &buf[..eol];
    let (verb, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let op = match verb.to_ascii_uppercase().as_slice() {
        b"MSG" => {
            let parts: Vec<&[u8]> = rest.split(|b| *b == b' ' || *b == b'\t').filter(|p| !p.is_empty()).collect();
            if parts.len() < 3 || parts.len() > 4 {
                return Err("bad MSG line");
            }
            let num = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
            let sid = num(parts[1]).ok_or("bad MSG sid")?;
            let size = num(parts[parts.len() - 1]).ok_or("bad MSG size")? as usize;
            if buf.len() < eol + 2 + size + 2 {
                buf.reserve(eol + 4 + size - buf.len());
                return Ok(None);
            }
            let subject = Bytes::copy_from_slice(parts[0]);
            buf.advance(eol + 2);
            let payload = buf.split_to(size).freeze();
            if &buf[..2] != b"\r\n" {
                return Err("MSG payload not followed by CRLF");
            }
            buf.advance(2);
            return Ok(Some(Op::Msg { subject, sid, payload }));
        }
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        b"+OK" => Op::Ok,
        b"-ERR" => Op::Err(Bytes::copy_from_slice(rest)),
        b"INFO" => Op::Info(Bytes::copy_from_slice(rest)),
        _ => return Err("unknown protocol operation"),
    };
    buf.advance(eol + 2);
    Ok(Some(op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_operations_split_anywhere() {
        let wire = b"INFO {\"max_payload\":1048576}\r\nPING\r\nMSG a.b 7 5\r\nhello\r\nMSG c 8 r.x 0\r\n\r\n+OK\r\nPONG\r\n-ERR 'Unknown Protocol Operation'\r\n";
        let want = vec![
            Op::Info(Bytes::from_static(b"{\"max_payload\":1048576}")),
            Op::Ping,
            Op::Msg { subject: Bytes::from_static(b"a.b"), sid: 7, payload: Bytes::from_static(b"hello") },
            Op::Msg { subject: Bytes::from_static(b"c"), sid: 8, payload: Bytes::new() },
            Op::Ok,
            Op::Pong,
            Op::Err(Bytes::from_static(b"'Unknown Protocol Operation'")),
        ];
        for step in 1..wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(op) = parse(&mut buf).unwrap() {
                    got.push(op);
                }
            }
            assert_eq!(got, want, "chunks of {step}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in [&b"HELLO\r\n"[..], b"MSG a x 1\r\nx\r\n", b"MSG a 1 2\r\nxyz\r\n", b"MSG a\r\n"] {
            assert!(parse(&mut BytesMut::from(bad)).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = BytesMut::from(&vec![b'a'; MAX_LINE + 1][..]);
        assert!(parse(&mut long).is_err());
    }
}
