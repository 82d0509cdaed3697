//! One Redis connection on the worker's event loop: pipelined requests answered in order by
//! callbacks, or a PUB/SUB connection whose messages go to a handler. A supervisor task
//! connects, authenticates, serves until the connection breaks, fails whatever was in flight,
//! and reconnects with backoff; while Redis is unreachable requests fail at once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncWriteRentExt, Splitable};

use super::resp::{self, Value};
use crate::config::redis::Endpoint;
use crate::notify::LocalNotify;

/// Why a request got no reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Not connected (Redis down, restarting or unreachable) or the connection broke.
    Unavailable,
    /// No reply within `io_timeout`; the connection was dropped.
    Timeout,
    /// Redis answered with an error (`-ERR ...`, `-NOSCRIPT ...`).
    Server(Bytes),
}

pub type RedisReply = Result<Value, RedisError>;
pub type Callback = Box<dyn FnOnce(RedisReply)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// A connect attempt is under way: requests queue and go out once it succeeds.
    Connecting,
    Up,
    /// Unreachable: requests fail at once until the next attempt starts.
    Down,
}

/// Callbacks of a PUB/SUB connection (and the up/down hooks of either kind).
pub struct Hooks {
    /// Connected and authenticated; `gen` counts successful connects.
    pub up: Box<dyn Fn(u64)>,
    /// The connection broke or an attempt failed (called once per loss).
    pub down: Box<dyn Fn()>,
    /// Every reply of a PUB/SUB connection after its handshake.
    pub push: Box<dyn Fn(Value)>,
}

struct State {
    status: Status,
    gen: u64,
    wbuf: BytesMut,
    pending: VecDeque<(Instant, Callback)>,
    /// Requests made while down, failed by the supervisor (never re-entrantly).
    failed: Vec<Callback>,
    /// PUB/SUB only: queued (subscribe?, channel) in order, coalesced into one command per run.
    subq: Vec<(bool, Bytes)>,
}

/// A Redis connection with its own supervisor task.
pub struct Conn {
    ep: Endpoint,
    pubsub: bool,
    connect_timeout: Duration,
    io_timeout: Duration,
    /// Commands sent first on every new connection (SCRIPT LOAD ...), after AUTH/SELECT.
    init: Vec<Vec<Bytes>>,
    st: RefCell<State>,
    wake: LocalNotify,
    hooks: RefCell<Option<Rc<Hooks>>>,
    was_up: Cell<bool>,
    /// TLS to this server (`engine.redis.tls`, `rediss://`); None: plain TCP.
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, crate::config::tls::Tls)>,
    /// Sentinel mode: the server no longer is the master (or told us so): leave it.
    kicked: Cell<bool>,
    /// The server connected to (Sentinel mode: the master the sentinels named then).
    current: RefCell<(String, u16)>,
    /// The other connection of the pair (command ↔ PUB/SUB), left with this one when the
    /// master changes.
    sibling: RefCell<std::rc::Weak<Conn>>,
    /// Cluster mode (the PUB/SUB connection): the seed tried next; an unreachable seed moves
    /// it on to the next one.
    seed: Cell<usize>,
}

impl Conn {
    pub fn new(ep: Endpoint, pubsub: bool, cfg: &crate::config::Redis, init: Vec<Vec<Bytes>>) -> Rc<Conn> {
        let tls = ep.tls.then(|| {
            // Checked when the configuration was loaded.
            let c = super::tls_connector("engine.redis.tls", &cfg.tls).expect("engine.redis.tls was validated at load");
            (c, cfg.tls.clone())
        });
        Rc::new(Conn {
            tls,
            kicked: Cell::new(false),
            seed: Cell::new(0),
            current: RefCell::new((String::new(), 0)),
            sibling: RefCell::new(std::rc::Weak::new()),
            ep,
            pubsub,
            connect_timeout: cfg.connect_timeout.max(Duration::from_millis(10)),
            io_timeout: cfg.io_timeout.max(Duration::from_millis(10)),
            init,
            st: RefCell::new(State {
                status: Status::Connecting,
                gen: 0,
                wbuf: BytesMut::new(),
                pending: VecDeque::new(),
                failed: Vec::new(),
                subq: Vec::new(),
            }),
            wake: LocalNotify::default(),
            hooks: RefCell::new(None),
            was_up: Cell::new(false),
        })
    }

    /// Makes `a` and `b` (the command and PUB/SUB connections of one server) leave a master
    /// together.
    pub fn pair(a: &Rc<Conn>, b: &Rc<Conn>) {
        *a.sibling.borrow_mut() = Rc::downgrade(b);
        *b.sibling.borrow_mut() = Rc::downgrade(a);
    }

    /// Sentinel mode: leaves the current server (and so does the sibling), to connect to the
    /// master the sentinels name now.
    fn kick(&self, why: &str) {
        if !self.kicked.replace(true) {
            tracing::warn!(redis = %self.ep.display(), "{why}: reconnecting to the current master");
            self.wake.notify();
            if let Some(sib) = self.sibling.borrow().upgrade() {
                if !sib.kicked.replace(true) {
                    sib.wake.notify();
                }
            }
        }
    }

    pub fn set_hooks(&self, hooks: Hooks) {
        *self.hooks.borrow_mut() = Some(Rc::new(hooks));
    }

    pub fn is_up(&self) -> bool {
        self.st.borrow().status == Status::Up
    }

    /// Generation of the current connection (0 before the first).
    pub fn gen(&self) -> u64 {
        self.st.borrow().gen
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Sends a command; `cb` gets its reply (always later, from the connection's task).
    pub fn request<A: AsRef<[u8]>>(&self, args: &[A], cb: Callback) {
        let mut st = self.st.borrow_mut();
        if st.status == Status::Down {
            st.failed.push(cb);
        } else {
            resp::encode(args, &mut st.wbuf);
            st.pending.push_back((Instant::now(), cb));
        }
        drop(st);
        self.wake.notify();
    }

    /// PUB/SUB: subscribes (`true`) or unsubscribes a channel on the current connection. Calls
    /// made in one loop turn go out as one SUBSCRIBE/UNSUBSCRIBE command per run of the same
    /// kind. Dropped while not connected (the `up` hook resubscribes what is wanted).
    pub fn pubsub(&self, subscribe: bool, channel: Bytes) {
        let mut st = self.st.borrow_mut();
        if st.status != Status::Up {
            return;
        }
        st.subq.push((subscribe, channel));
        drop(st);
        self.wake.notify();
    }

    /// The supervisor: connect, serve, fail in-flight work on loss, back off, repeat.
    pub async fn run(self: Rc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            self.kicked.set(false);
            let connected = self.connect().await;
            if let Some((stream, host)) = connected {
                backoff = Duration::from_millis(50);
                let served_at = Instant::now();
                match &self.tls {
                    None => {
                        let (rd, wr) = stream.into_split();
                        self.serve(rd, wr).await
                    }
                    Some((tls, t)) => {
                        let name = match crate::config::tls::server_name("engine.redis.tls", t, &host) {
                            Ok(n) => n,
                            Err(e) => {
                                tracing::error!(redis = %self.ep.display(), "{e}");
                                rustls::pki_types::ServerName::try_from("invalid.invalid").expect("a valid name")
                            }
                        };
                        let handshake = monoio::time::timeout(
                            self.connect_timeout,
                            crate::io::tls::connect(tls.clone(), name, stream),
                        );
                        match handshake.await {
                            Ok(Ok((rd, wr))) => self.serve(rd, wr).await,
                            Ok(Err(e)) => {
                                tracing::warn!(redis = %self.ep.display(), error = %e, "redis TLS handshake failed")
                            }
                            Err(_) => tracing::warn!(redis = %self.ep.display(), "redis TLS handshake timed out"),
                        }
                    }
                }
                if served_at.elapsed() > Duration::from_secs(5) {
                    backoff = Duration::from_millis(50);
                }
            }
            self.go_down();
            if self.was_up.replace(false) {
                tracing::warn!(redis = %self.ep.display(), "redis connection lost; reconnecting");
            }
            let until = Instant::now() + backoff;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            // Requests made while down fail promptly.
            loop {
                self.fail_queued();
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                monoio::select! {
                    _ = monoio::time::sleep(left) => {}
                    _ = self.wake.wait() => {}
                }
            }
            self.st.borrow_mut().status = Status::Connecting;
        }
    }

    fn fail_queued(&self) {
        let failed = std::mem::take(&mut self.st.borrow_mut().failed);
        for cb in failed {
            cb(Err(RedisError::Unavailable));
        }
    }

    /// Marks the connection down and fails everything in flight or queued.
    fn go_down(&self) {
        let (pending, failed) = {
            let mut st = self.st.borrow_mut();
            st.status = Status::Down;
            st.wbuf.clear();
            st.subq.clear();
            (std::mem::take(&mut st.pending), std::mem::take(&mut st.failed))
        };
        for (_, cb) in pending {
            cb(Err(RedisError::Unavailable));
        }
        for cb in failed {
            cb(Err(RedisError::Unavailable));
        }
        let hooks = self.hooks.borrow().clone();
        if let Some(h) = hooks {
            (h.down)();
        }
    }

    /// A TCP connection to the server (in Sentinel mode, to the master the sentinels name)
    /// and the host name it was reached by.
    async fn connect(&self) -> Option<(monoio::net::TcpStream, String)> {
        let (host, port) = match (&self.ep.sentinel, &self.ep.cluster) {
            (Some(s), _) => super::sentinel::master(s, self.connect_timeout).await?,
            (None, Some(seeds)) if !seeds.is_empty() => seeds[self.seed.get() % seeds.len()].clone(),
            (None, _) => (self.ep.host.clone(), self.ep.port),
        };
        let next_seed = || self.seed.set(self.seed.get().wrapping_add(1));
        let Some(addr) = (host.as_str(), port).to_socket_addrs().ok().and_then(|mut a| a.next()) else {
            next_seed();
            return None;
        };
        *self.current.borrow_mut() = (host.clone(), port);
        match monoio::time::timeout(self.connect_timeout, monoio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                if self.ep.sentinel.is_some() {
                    tracing::debug!(redis = %self.ep.display(), master = %format!("{host}:{port}"), "connecting to the master");
                }
                Some((s, host))
            }
            Ok(Err(e)) => {
                tracing::debug!(redis = %self.ep.display(), error = %e, "redis connect failed");
                next_seed();
                None
            }
            Err(_) => {
                next_seed();
                None
            }
        }
    }

    /// The handshake commands: AUTH, SELECT, then the configured init commands.
    fn handshake(&self) -> Vec<Vec<Bytes>> {
        let mut cmds: Vec<Vec<Bytes>> = Vec::new();
        if !self.ep.password.is_empty() {
            let mut c = vec![Bytes::from_static(b"AUTH")];
            if !self.ep.user.is_empty() {
                c.push(Bytes::from(self.ep.user.clone()));
            }
            c.push(Bytes::from(self.ep.password.clone()));
            cmds.push(c);
        }
        if self.ep.db != 0 {
            cmds.push(vec![Bytes::from_static(b"SELECT"), Bytes::from(self.ep.db.to_string())]);
        }
        cmds.extend(self.init.iter().cloned());
        if self.ep.sentinel.is_some() {
            // Last: the server must be the master (a sentinel may name one being demoted).
            cmds.push(vec![Bytes::from_static(b"ROLE")]);
        }
        cmds
    }

    async fn serve<R, W>(&self, mut rd: R, mut wr: W)
    where
        R: monoio::io::AsyncReadRent,
        W: monoio::io::AsyncWriteRent,
    {
        let mut rbuf = BytesMut::with_capacity(16 << 10);
        // Handshake first, on its own, so a wrong password or database fails cleanly.
        let hs = self.handshake();
        if !hs.is_empty() {
            let mut out = BytesMut::new();
            for c in &hs {
                resp::encode(c, &mut out);
            }
            let (res, _) = wr.write_all(out).await;
            if res.is_err() {
                return;
            }
            let mut left = hs.len();
            while left > 0 {
                match resp::decode(&mut rbuf) {
                    Ok(Some(Value::Error(e))) => {
                        tracing::error!(redis = %self.ep.display(), error = %String::from_utf8_lossy(&e), "redis handshake refused");
                        return;
                    }
                    Ok(Some(v)) if left == 1 && self.ep.sentinel.is_some() && !is_master(&v) => {
                        tracing::warn!(redis = %self.ep.display(), "the server the sentinels named is not a master (yet)");
                        return;
                    }
                    Ok(Some(_)) => left -= 1,
                    Ok(None) => {
                        let read = monoio::time::timeout(self.io_timeout, crate::io::read_more(&mut rd, rbuf));
                        match read.await {
                            Ok((Ok(n), b)) if n > 0 => {
                                rbuf = b;
                                if rbuf.capacity() - rbuf.len() < 4096 {
                                    rbuf.reserve(16 << 10);
                                }
                            }
                            _ => return,
                        }
                    }
                    Err(_) => return,
                }
            }
        }
        let gen = {
            let mut st = self.st.borrow_mut();
            st.status = Status::Up;
            st.gen += 1;
            // Anything queued while connecting was for a connection that never existed on the
            // PUB/SUB side (the up hook resubscribes); requests keep their place.
            st.subq.clear();
            st.gen
        };
        self.was_up.set(true);
        tracing::info!(redis = %self.ep.display(), pubsub = self.pubsub, "redis connected");
        let hooks = self.hooks.borrow().clone();
        if let Some(h) = &hooks {
            (h.up)(gen);
        }
        let writer = async {
            loop {
                let out = {
                    let mut st = self.st.borrow_mut();
                    if !st.subq.is_empty() {
                        let q = std::mem::take(&mut st.subq);
                        encode_subq(q, &mut st.wbuf);
                    }
                    if st.wbuf.is_empty() {
                        None
                    } else {
                        Some(st.wbuf.split())
                    }
                };
                match out {
                    Some(out) => {
                        let (res, _) = wr.write_all(out).await;
                        if res.is_err() {
                            return;
                        }
                    }
                    None => self.wake.wait().await,
                }
            }
        };
        // When bytes last came from Redis (a PUB/SUB connection's keepalive watches it).
        let last_read = Cell::new(Instant::now());
        let reader = async {
            loop {
                loop {
                    match resp::decode(&mut rbuf) {
                        Ok(Some(v)) => self.on_value(v, hooks.as_deref()),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(redis = %self.ep.display(), error = e.0, "bad reply from redis");
                            return;
                        }
                    }
                }
                if rbuf.capacity() - rbuf.len() < 4096 {
                    rbuf.reserve(16 << 10);
                }
                let (res, b) = crate::io::read_more(&mut rd, rbuf).await;
                rbuf = b;
                match res {
                    Ok(n) if n > 0 => last_read.set(Instant::now()),
                    _ => return,
                }
            }
        };
        // The oldest request may wait at most io_timeout; then the connection is dropped
        // (a read is never cancelled on its own: its buffer may hold part of a reply). A
        // PUB/SUB connection, which may rightly stay silent, sends a PING after a third of
        // io_timeout of silence: a Redis that stops answering without closing the socket is
        // left within io_timeout.
        let watchdog = async {
            let tick = (self.io_timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
            let mut pinged: Option<Instant> = None;
            let mut role_checked = Instant::now();
            loop {
                monoio::time::sleep(tick).await;
                if self.kicked.get() {
                    return;
                }
                if self.st.borrow().pending.front().is_some_and(|(t, _)| t.elapsed() >= self.io_timeout) {
                    tracing::warn!(redis = %self.ep.display(), "redis did not answer in time");
                    self.fail_pending(RedisError::Timeout);
                    return;
                }
                if let Some(sentinel) = self.ep.sentinel.as_ref().filter(|_| !self.pubsub) {
                    if role_checked.elapsed() >= ROLE_CHECK {
                        // A failover is followed as the sentinels see it: the old master keeps
                        // answering (as a master) until the sentinels turn it into a replica,
                        // which drops what was written to it meanwhile.
                        role_checked = Instant::now();
                        if let Some(now) = super::sentinel::master(sentinel, self.connect_timeout).await {
                            if now != *self.current.borrow() {
                                self.kick(&format!("the sentinels name {}:{} the master now", now.0, now.1));
                            }
                        }
                        if self.kicked.get() {
                            return;
                        }
                    }
                }
                if self.pubsub {
                    let silent = last_read.get().elapsed();
                    if silent >= self.io_timeout {
                        tracing::warn!(redis = %self.ep.display(), "redis did not answer a PING in time");
                        return;
                    }
                    if silent >= self.io_timeout / 3 && pinged != Some(last_read.get()) {
                        pinged = Some(last_read.get());
                        resp::encode(&["PING"], &mut self.st.borrow_mut().wbuf);
                        self.wake.notify();
                    }
                }
            }
        };
        monoio::select! {
            _ = writer => {}
            _ = reader => {}
            _ = watchdog => {}
        }
    }

    fn fail_pending(&self, e: RedisError) {
        let pending = std::mem::take(&mut self.st.borrow_mut().pending);
        for (_, cb) in pending {
            cb(Err(e.clone()));
        }
    }

    fn on_value(&self, v: Value, hooks: Option<&Hooks>) {
        if self.pubsub {
            if let Some(h) = hooks {
                (h.push)(v);
            }
            return;
        }
        let cb = self.st.borrow_mut().pending.pop_front();
        if let Value::Error(e) = &v {
            if self.ep.sentinel.is_some() && e.starts_with(b"READONLY") {
                self.kick("the server answered READONLY");
            }
        }
        if let Some((_, cb)) = cb {
            cb(match v {
                Value::Error(e) => Err(RedisError::Server(e)),
                v => Ok(v),
            });
        }
    }
}

/// How often a command connection in Sentinel mode asks the sentinels for the master.
const ROLE_CHECK: Duration = Duration::from_secs(1);

/// A `ROLE` reply of a master (checked once connected: a sentinel may name a server that is
/// still being promoted).
fn is_master(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.first().and_then(Value::bytes).is_some_and(|r| &r[..] == b"master"))
}

/// Encodes queued (un)subscriptions, one command per run of the same kind.
fn encode_subq(q: Vec<(bool, Bytes)>, out: &mut BytesMut) {
    let mut i = 0;
    while i < q.len() {
        let kind = q[i].0;
        let mut args: Vec<Bytes> = vec![Bytes::from_static(if kind { b"SUBSCRIBE" } else { b"UNSUBSCRIBE" })];
        while i < q.len() && q[i].0 == kind {
            args.push(q[i].1.clone());
            i += 1;
        }
        resp::encode(&args, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let cfg = crate::config::Redis::default();
        let e = Endpoint::parse("redis://127.0.0.1:6380", &cfg).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("127.0.0.1", 6380, 0));
        let e = Endpoint::parse("redis://u:p@h:1/3", &cfg).unwrap();
        assert_eq!((e.user.as_str(), e.password.as_str(), e.host.as_str(), e.port, e.db), ("u", "p", "h", 1, 3));
        let e = Endpoint::parse("localhost:6379", &cfg).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 6379));
        let e = Endpoint::parse("redis://:secret@h:2", &cfg).unwrap();
        assert_eq!((e.user.as_str(), e.password.as_str()), ("", "secret"));
        let e = Endpoint::parse("myhost", &cfg).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("myhost", 6379));
        assert!(Endpoint::parse("rediss://h:1", &cfg).is_ok_and(|e| e.tls && e.port == 1));
        assert!(!Endpoint::parse("redis://h:1", &cfg).unwrap().tls);
        assert!(Endpoint::parse("unix:///tmp/r.sock", &cfg).is_err());
        assert!(Endpoint::parse("http://h:1", &cfg).is_err());
        assert!(Endpoint::parse("h:notaport", &cfg).is_err());
    }

    #[test]
    fn coalesces_subscriptions() {
        let mut out = BytesMut::new();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        encode_subq(vec![(true, b("a")), (true, b("b")), (false, b("a")), (true, b("c"))], &mut out);
        let mut expect = BytesMut::new();
        resp::encode(&["SUBSCRIBE", "a", "b"], &mut expect);
        resp::encode(&["UNSUBSCRIBE", "a"], &mut expect);
        resp::encode(&["SUBSCRIBE", "c"], &mut expect);
        assert_eq!(out, expect);
    }
}
