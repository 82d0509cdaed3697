//! Redis Cluster (`engine.redis.cluster_address`): commands go to the primary that owns their
//! key's slot (CRC16 of the key's `{hash tag}`, as Redis computes it), learnt with `CLUSTER
//! SLOTS` from the seed addresses and refreshed every few seconds, after a `MOVED` (the
//! command is sent again to the node named) and after a node became unreachable; `ASK` is
//! followed for one command. Every key of a channel carries the channel as its hash tag
//! (Centrifugo's layout), so a channel's scripts run on one node; PUB/SUB is Redis Cluster's
//! classic one (a PUBLISH reaches subscribers on every node), on one connection per worker.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;

use super::conn::{Callback, Conn, RedisError};
use super::resp::Value;
use crate::config::redis::Endpoint;

/// Slots of a Redis Cluster.
const SLOTS: usize = 16384;
/// How often the slot map is read again when nothing asked for it.
const REFRESH: Duration = Duration::from_secs(5);
/// Redirections followed for one command.
const MAX_REDIRECTS: u8 = 5;

/// CRC16/XMODEM, Redis Cluster's key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The slot of `key`: of the part inside the first non-empty `{...}`, else of the whole key.
pub fn slot(key: &[u8]) -> usize {
    let tagged = memchr::memchr(b'{', key).and_then(|open| {
        let rest = &key[open + 1..];
        memchr::memchr(b'}', rest).filter(|&close| close > 0).map(|close| &rest[..close])
    });
    (crc16(tagged.unwrap_or(key)) as usize) % SLOTS
}

/// The key a command is routed by (None: any node will do).
fn route_key(args: &[Bytes]) -> Option<&[u8]> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
        return (numkeys > 0).then(|| args.get(3).map(|k| &k[..])).flatten();
    }
    if name.eq_ignore_ascii_case(b"PUBLISH") || name.eq_ignore_ascii_case(b"WAIT") || name.eq_ignore_ascii_case(b"PING")
    {
        return None;
    }
    args.get(1).map(|k| &k[..])
}

/// A command waiting for the slot map: since when, its arguments, its route, its callback.
type Waiting = (std::time::Instant, Vec<Bytes>, Option<Bytes>, Callback);

/// The command connections of one Redis Cluster, for one worker.
pub struct ClusterCmd {
    seeds: Vec<(String, u16)>,
    /// Authentication, TLS and timeouts of every node's connection.
    template: Endpoint,
    cfg: crate::config::Redis,
    init: Vec<Vec<Bytes>>,
    nodes: RefCell<AHashMap<(String, u16), Rc<Conn>>>,
    slots: RefCell<Vec<Option<Rc<Conn>>>>,
    /// Commands that came before the first slot map (failed after `io_timeout`).
    waiting: RefCell<Vec<Waiting>>,
    refreshing: Cell<bool>,
    me: RefCell<Weak<ClusterCmd>>,
}

impl ClusterCmd {
    pub fn new(
        template: Endpoint,
        seeds: Vec<(String, u16)>,
        cfg: &crate::config::Redis,
        init: Vec<Vec<Bytes>>,
    ) -> Rc<ClusterCmd> {
        let c = Rc::new(ClusterCmd {
            seeds,
            template,
            cfg: cfg.clone(),
            init,
            nodes: RefCell::new(AHashMap::new()),
            slots: RefCell::new(vec![None; SLOTS]),
            waiting: RefCell::new(Vec::new()),
            refreshing: Cell::new(false),
            me: RefCell::new(Weak::new()),
        });
        *c.me.borrow_mut() = Rc::downgrade(&c);
        c
    }

    /// Connects to the seeds and keeps the slot map fresh (on the worker's loop).
    pub async fn run(self: Rc<Self>) {
        for (h, p) in self.seeds.clone() {
            self.node(&h, p);
        }
        let mut refreshed = std::time::Instant::now();
        self.refresh();
        loop {
            monoio::time::sleep(Duration::from_millis(100)).await;
            if refreshed.elapsed() >= REFRESH {
                refreshed = std::time::Instant::now();
                self.refresh();
            }
            // Without a slot map (no node reachable) a command fails within io_timeout.
            let limit = self.cfg.io_timeout;
            let expired: Vec<Callback> = {
                let mut w = self.waiting.borrow_mut();
                let (old, keep): (Vec<_>, Vec<_>) = w.drain(..).partition(|(t, ..)| t.elapsed() >= limit);
                *w = keep;
                old.into_iter().map(|(_, _, _, cb)| cb).collect()
            };
            for cb in expired {
                cb(Err(RedisError::Unavailable));
            }
        }
    }

    /// The connection to node `host:port` (made and started on first use).
    fn node(&self, host: &str, port: u16) -> Rc<Conn> {
        let key = (host.to_string(), port);
        if let Some(c) = self.nodes.borrow().get(&key) {
            return c.clone();
        }
        let ep = Endpoint { host: host.to_string(), port, db: 0, cluster: None, ..self.template.clone() };
        let c = Conn::new(ep, false, &self.cfg, self.init.clone());
        monoio::spawn(c.clone().run());
        self.nodes.borrow_mut().insert(key, c.clone());
        c
    }

    /// A node that is up, else any node known.
    fn any_node(&self) -> Option<Rc<Conn>> {
        let nodes = self.nodes.borrow();
        nodes.values().find(|c| c.is_up()).or_else(|| nodes.values().next()).cloned()
    }

    /// Reads the slot map again (once at a time) from a node that is up, else a seed.
    fn refresh(&self) {
        if self.refreshing.replace(true) {
            return;
        }
        let Some(conn) = self.any_node() else {
            self.refreshing.set(false);
            return;
        };
        let me = self.me.borrow().clone();
        conn.request(
            &["CLUSTER", "SLOTS"],
            Box::new(move |r| {
                let Some(me) = me.upgrade() else { return };
                me.refreshing.set(false);
                match r {
                    Ok(Value::Array(ranges)) => me.apply_slots(ranges),
                    Ok(_) | Err(_) => {
                        tracing::debug!(cluster = %me.template.display(), "CLUSTER SLOTS failed; trying again");
                        monoio::spawn(async move {
                            monoio::time::sleep(Duration::from_millis(250)).await;
                            me.refresh();
                        });
                    }
                }
            }),
        );
    }

    fn apply_slots(&self, ranges: Vec<Value>) {
        let mut map: Vec<Option<Rc<Conn>>> = vec![None; SLOTS];
        for r in ranges {
            let Value::Array(r) = r else { continue };
            let (Some(start), Some(end)) = (r.first().and_then(Value::int), r.get(1).and_then(Value::int)) else {
                continue;
            };
            let Some(Value::Array(primary)) = r.get(2) else { continue };
            let host = primary.first().and_then(Value::bytes).map(|b| String::from_utf8_lossy(b).into_owned());
            let port = primary.get(1).and_then(Value::int);
            let (Some(mut host), Some(port)) = (host, port) else { continue };
            if host.is_empty() {
                // A node that does not know its own address: the one we asked.
                host = self.seeds.first().map(|s| s.0.clone()).unwrap_or_default();
            }
            let conn = self.node(&host, port as u16);
            let (from, to) = (start.max(0) as usize, (end.max(0) as usize).min(SLOTS - 1));
            for s in map.iter_mut().take(to + 1).skip(from) {
                *s = Some(conn.clone());
            }
        }
        *self.slots.borrow_mut() = map;
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for (_, args, route, cb) in waiting {
            self.send(args, route, cb, 0);
        }
    }

    /// Sends a command to the node owning its key's slot (`route` overrides the key).
    pub fn request<A: AsRef<[u8]>>(&self, args: &[A], route: Option<&[u8]>, cb: Callback) {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_ref())).collect();
        let route = route.map(Bytes::copy_from_slice);
        self.send(args, route, cb, 0);
    }

    fn send(&self, args: Vec<Bytes>, route: Option<Bytes>, cb: Callback, redirects: u8) {
        let key = route.as_deref().or_else(|| route_key(&args));
        let conn = match key {
            Some(k) => self.slots.borrow()[slot(k)].clone(),
            None => self.any_node(),
        };
        let Some(conn) = conn else {
            // No slot map yet: kept until the first one arrives.
            self.waiting.borrow_mut().push((std::time::Instant::now(), args, route, cb));
            self.refresh();
            return;
        };
        let me = self.me.borrow().clone();
        let again = args.clone();
        conn.request(
            &args,
            Box::new(move |r| {
                let Some(me) = me.upgrade() else { return cb(r) };
                match &r {
                    Err(RedisError::Server(e))
                        if redirects < MAX_REDIRECTS && (e.starts_with(b"MOVED ") || e.starts_with(b"ASK ")) =>
                    {
                        let text = String::from_utf8_lossy(e);
                        let mut parts = text.split_whitespace();
                        let (kind, target) = (parts.next().unwrap_or(""), parts.nth(1).unwrap_or(""));
                        let Some((host, port)) =
                            target.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                        else {
                            return cb(r);
                        };
                        let node = me.node(host, port);
                        if kind == "ASK" {
                            node.request(&["ASKING"], Box::new(|_| {}));
                            node.request(&again, cb);
                        } else {
                            me.refresh();
                            if let Some(k) = route.as_deref().or_else(|| route_key(&again)) {
                                me.slots.borrow_mut()[slot(k)] = Some(node);
                            }
                            me.send(again, route, cb, redirects + 1);
                        }
                    }
                    Err(RedisError::Unavailable | RedisError::Timeout) => {
                        // The node may have failed over: the map is read again.
                        me.refresh();
                        cb(r)
                    }
                    _ => cb(r),
                }
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") as usize % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") as usize % SLOTS);
        assert_eq!(slot(b"centrifugo.stream.{news}"), slot(b"centrifugo.result.{news}.k1"));
    }

    #[test]
    fn routes_by_the_first_key() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(route_key(&[b("EVALSHA"), b("sha"), b("2"), b("k1"), b("k2")]), Some(&b"k1"[..]));
        assert_eq!(route_key(&[b("EVALSHA"), b("sha"), b("0")]), None);
        assert_eq!(route_key(&[b("PUBLISH"), b("ch"), b("x")]), None);
        assert_eq!(route_key(&[b("SET"), b("k"), b("v")]), Some(&b"k"[..]));
    }
}
