//! A client session: the Centrifuge protocol state machine (connect, subscriptions, publish,
//! presence, history, refresh, ping/pong), the permission rules of channel namespaces, and
//! raw gateway clients, independent of the transport that carries them. A transport (today
//! `crate::ws`) opens a session on a [`Client`] with [`Session::open`], hands it each message
//! ([`Session::on_message`]) and tells it when the peer closed or vanished.
//!
//! A session lives on the worker that accepted it. Work on channels goes to their owners
//! through the worker; results come back in order (see `ARCHITECTURE.md`). The worker reaches
//! the session through [`crate::client::Handler`] (timers, overflow, API actions). Refusals
//! are logged as Centrifugo logs them ([`rules`]).

mod claims;
mod commands;
mod handle;
pub mod hidden;
mod map;
mod map_presence;
mod map_proxy;
mod mesh;
mod proxied;
pub mod proxy;
mod rules;
mod shared_poll;
mod slots;
pub mod socket;
mod streams;
mod submap;
mod timers;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use bytes::Bytes;

use crate::api::Command;
use crate::client::{Client, Framing, Handler};
use crate::error::{ApiError, Disconnect};
use crate::model::ClientInfo;
use crate::protocol::{self, PushBody, ReplyBody};
use crate::runtime::worker::{Msg, Tag, Worker};
use crate::shard::{owner_of, ShardOp, UnsubOp};
use crate::token::Verifier;

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Milliseconds since the epoch.
pub(crate) fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One subscription of a session.
#[derive(Debug, Clone, Default)]
struct Sub {
    chan_info: Option<Bytes>,
    /// Presence is kept for this subscription (so unsubscribing removes it).
    presence: bool,
    /// Join/leave are emitted for this subscription.
    join_leave: bool,
    /// This client receives join/leave pushes.
    push_join_leave: bool,
    server_side: bool,
    expires_at: i64,
    /// A shared poll subscription: its keys are tracked on the channel's owner, not
    /// subscribed there (see [`shared_poll`]).
    poll: bool,
    /// A shared poll subscription that negotiated fossil deltas (stream and map
    /// subscriptions keep theirs in the hub).
    delta: bool,
}

#[derive(Default)]
struct State {
    connected: bool,
    /// A connect failed with an error reply: any further command closes with 3501.
    unusable: bool,
    closed: bool,
    /// Kept out of presence, join/leave and the client counts (see [`hidden`]).
    hidden: bool,
    user: Arc<str>,
    /// The session holds one of its user's node-wide connection slots ([`slots`]).
    user_slot: bool,
    conn_info: Option<Bytes>,
    subs: submap::SubMap<Sub>,
    /// Subscriptions sent to their owner and not answered yet.
    pending: submap::SubMap<Sub>,
    /// Unix seconds when the credentials expire (0 = never).
    expires_at: i64,
    /// Command rate bucket (`client.command_rate_limit`): tokens and last refill.
    rate: Option<(f64, Instant)>,
    /// The connection's meta (its token's `meta` claim, or the connect/refresh proxy's),
    /// sent to proxies with `include_connection_meta`. Boxed, as the context below: most
    /// connections have none, and the session stays an allocator size class smaller.
    meta: Option<Box<Bytes>>,
    /// Gateway context (`conn.call set_context[_value]`), attached to queued events.
    context: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// A server ping is waiting for its pong since then.
    ping_sent: Option<Instant>,
    /// Map subscriptions loading their state: when each read its first page
    /// (`map.subscribe_catch_up_timeout`).
    map_loading: Option<Box<AHashMap<Arc<str>, Instant>>>,
    next_ping: Option<Instant>,
    /// The connection's client labels while it counts in the connection and subscription
    /// metrics (connected, not hidden, not raw).
    labels: Option<crate::metrics::ClientLabels>,
}

/// A raw gateway client's start: its server's topic and the upgrade request's headers.
pub struct RawStart {
    pub topic: Arc<str>,
    pub headers: serde_json::Map<String, serde_json::Value>,
}

/// The token verifiers of a worker's sessions, built from the token settings in effect once
/// per worker, and again after a reload replaced them. JWKS keys live in a process-wide cache
/// ([`crate::token::jwks`]).
struct Tokens {
    /// Connection tokens (and subscription tokens unless they have their own options).
    conn: Verifier,
    sub: Verifier,
}

/// A worker's verifiers and the version of the token settings they were built from.
#[derive(Default)]
struct TokensCache(std::cell::RefCell<Option<(usize, Rc<Tokens>)>>);

impl Tokens {
    fn of(w: &Worker) -> Rc<Tokens> {
        let cache = w.local(|_| TokensCache::default());
        let version = w.cfg.tokens_version();
        if let Some((v, t)) = &*cache.0.borrow() {
            if *v == version {
                return t.clone();
            }
        }
        let t = w.cfg.tokens();
        let skip = t.insecure_skip_token_signature_verify;
        let build = |t: &crate::config::Token, at: &str| {
            Verifier::from_config(t, skip, at).unwrap_or_else(|e| {
                // The configuration was validated when it was loaded; a verifier that accepts
                // nothing is the safe answer anyway.
                tracing::error!(error = %e, "token verifier not built: every token is refused");
                Verifier::default()
            })
        };
        let conn = build(t.token, "client.token");
        let sub = if t.subscription_token.enabled {
            build(&t.subscription_token.token, "client.subscription_token")
        } else {
            conn.clone()
        };
        let tokens = Rc::new(Tokens { conn, sub });
        *cache.0.borrow_mut() = Some((version, tokens.clone()));
        tokens
    }
}

/// Which token a session verifies (for the log line of a refused one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenUse {
    Connect,
    Refresh,
    Subscribe,
    SubRefresh,
}

impl Session {
    /// Verifies a token of this session. A JWKS key missing from the cache is fetched first:
    /// the fetcher thread does it, and this waits for its answer without blocking the worker
    /// (bounded by [`crate::token::jwks::WAIT_LIMIT`]). A refused token is logged as Centrifugo
    /// logs it: invalid ones at info, expired ones at debug.
    async fn verify_token(
        &self,
        what: TokenUse,
        token: &str,
        channel: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, crate::token::TokenError> {
        use crate::token::{Check, TokenError};
        let tokens = Tokens::of(&self.w);
        let v = if matches!(what, TokenUse::Connect | TokenUse::Refresh) { &tokens.conn } else { &tokens.sub };
        let r = match v.check(token) {
            Check::Done(r) => r,
            Check::Fetch(f) => {
                let (answer, call) = self.w.await_remote::<()>();
                f.run(Box::new(move || answer.send(())));
                let _ = monoio::time::timeout(crate::token::jwks::WAIT_LIMIT, call).await;
                v.verify(token)
            }
        };
        if let Err(e) = &r {
            let user = self.st.borrow().user.clone();
            let client = &*self.client.id;
            let msg = match what {
                TokenUse::Connect => "connection token",
                TokenUse::Refresh => "refresh token",
                TokenUse::Subscribe => "subscription token",
                TokenUse::SubRefresh => "subscription refresh token",
            };
            match e {
                TokenError::Invalid(why) => {
                    tracing::info!(error = %why, client, user = %user, channel, remote = %self.remote(), "invalid {msg}")
                }
                TokenError::Expired => {
                    tracing::debug!(client, user = %user, channel, remote = %self.remote(), "expired {msg}")
                }
            }
        }
        r
    }
}

/// See the module docs.
pub struct Session {
    /// What fan-out and the transport's writer use.
    pub client: Rc<Client>,
    /// A raw gateway client (no Centrifuge protocol): its events go to this queue topic.
    raw: Option<Arc<str>>,
    w: Rc<Worker>,
    st: RefCell<State>,
    /// The deadline this session is scheduled at in the worker's timer heap.
    timer_at: Cell<Option<Instant>>,
    /// The client command being handled (commands of a session run one at a time): the
    /// `method` label of reply error metrics.
    method: Cell<crate::metrics::Frame>,
    created: Instant,
    /// The session id of a unidirectional or emulated connection (`/emulation` requests and
    /// server API actions name it); its first 16 bits are the worker's index.
    pub sid: Option<Arc<str>>,
    /// Why the connect was refused (its error or disconnect code), for transports that map it
    /// to an HTTP response.
    pub refused: Cell<Option<u32>>,
    /// What the proxies forward of the connection's opening request ([`proxy::ConnHeaders`]).
    /// Boxed: most connections have none.
    conn_headers: RefCell<Option<Box<proxy::ConnHeaders>>>,
    /// Subscription streams of this session by channel.
    streams: RefCell<submap::SubMap<streams::Open>>,
    /// The peer's IP address, for the log lines of refusals.
    remote: Option<std::net::IpAddr>,
}

/// A session id: a random UUID (v4) whose first four hex digits name the worker holding the
/// session, so an `/emulation` request is routed without asking every worker.
pub fn new_session_id(worker: usize) -> Arc<str> {
    let mut b = *uuid::Uuid::new_v4().as_bytes();
    b[..2].copy_from_slice(&(worker as u16).to_be_bytes());
    uuid::Uuid::from_bytes(b).to_string().into()
}

/// The worker a session id names (see [`new_session_id`]).
pub fn session_worker(sid: &str) -> Option<usize> {
    let id = uuid::Uuid::parse_str(sid).ok()?;
    Some(u16::from_be_bytes([id.as_bytes()[0], id.as_bytes()[1]]) as usize)
}

impl Session {
    /// Opens a session on `client` (a raw gateway client when `raw` is set): it joins the
    /// worker's hub and its deadlines start.
    pub fn open(
        w: &Rc<Worker>,
        client: Rc<Client>,
        raw: Option<RawStart>,
        remote: Option<std::net::IpAddr>,
    ) -> Rc<Session> {
        let s = Rc::new(Session {
            client: client.clone(),
            raw: raw.as_ref().map(|r| r.topic.clone()),
            w: w.clone(),
            st: RefCell::new(State::default()),
            timer_at: Cell::new(None),
            method: Cell::new(crate::metrics::Frame::Unknown),
            created: Instant::now(),
            sid: (client.framing.is_uni() || client.framing.is_emulated()).then(|| new_session_id(w.id)),
            refused: Cell::new(None),
            conn_headers: RefCell::new(None),
            streams: RefCell::new(submap::SubMap::default()),
            remote,
        });
        w.hub.add(client.clone(), s.clone());
        let target: Rc<dyn crate::gateway::mesh::MeshTarget> = s.clone();
        crate::gateway::register_target(w, &client.id, Rc::downgrade(&target));
        if let Some(r) = raw {
            // A raw client is connected from the start, as an anonymous user.
            s.st.borrow_mut().connected = true;
            w.hub.user_added(&Arc::from(""));
            let fields = serde_json::Map::from_iter([("headers".to_string(), serde_json::Value::Object(r.headers))]);
            crate::gateway::push_event(w, &client.id, &r.topic, &crate::gateway::event("handshake", fields, None));
        }
        // Deadlines run on the worker's single timer task, not one task per connection.
        s.schedule(s.created + w.cfg.client.stale_close_delay);
        if s.raw.is_some() {
            // Connected from the start: its ping schedule starts now.
            s.reschedule_now();
        }
        s
    }

    /// A client id for a new connection: a UUID, or a gateway snowflake for raw clients.
    pub fn new_client_id(w: &Worker, raw: bool) -> Arc<str> {
        if raw {
            crate::gateway::next_client_id(w)
        } else {
            uuid::Uuid::new_v4().to_string().into()
        }
    }

    fn key(&self) -> u32 {
        self.client.key.get()
    }

    /// Takes a command token (`client.command_rate_limit`); false when over the rate.
    fn take_command_token(&self) -> bool {
        let rate = self.w.cfg.client.command_rate_limit as f64;
        if rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut st = self.st.borrow_mut();
        let (tokens, last) = st.rate.unwrap_or((rate, now));
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        let ok = tokens >= 1.0;
        st.rate = Some((if ok { tokens - 1.0 } else { tokens }, now));
        ok
    }

    pub fn is_closed(&self) -> bool {
        self.st.borrow().closed
    }

    fn info(&self, chan_info: Option<Bytes>) -> ClientInfo {
        let st = self.st.borrow();
        ClientInfo { user: st.user.clone(), client: self.client.id.clone(), conn_info: st.conn_info.clone(), chan_info }
    }

    /// Queues a push or (`reply`) the reply to a command.
    fn push_frame(&self, payload: Vec<u8>, kind: crate::metrics::Frame, reply: bool) {
        if self.raw.is_some() {
            return;
        }
        let frame = self.client.frame(&payload);
        crate::metrics::frames_sent(self.client.framing.index(), kind, 1, frame.len() as u64);
        let sent = if reply { self.client.send_reply(frame) } else { self.client.send(frame) };
        if sent.is_err() {
            self.disconnect(Disconnect::SLOW);
        }
    }

    fn reply(&self, id: u32, r: &Result<ReplyBody, ApiError>) {
        if let Err(e) = r {
            crate::metrics::client_reply_error(self.method.get().name(), e.code);
            self.log_command_error(e);
        }
        if self.client.framing.is_uni() {
            // No replies on a unidirectional transport: the connect result is its first push,
            // a refused connect its disconnect.
            match r {
                Ok(ReplyBody::Connect(c)) => self.push("", &PushBody::Connect(Box::new(c.clone()))),
                Err(e) => {
                    self.refused.set(Some(e.code));
                    self.disconnect(uni_disconnect(&self.w.cfg, e));
                }
                Ok(_) => {}
            }
            return;
        }
        let mut buf = Vec::with_capacity(64);
        if self.client.v1.get() {
            protocol::v1::encode_reply(self.client.format, id, r, &mut buf);
        } else {
            protocol::encode_reply(self.client.format, id, r, &mut buf);
        }
        self.push_frame(buf, self.method.get(), true);
    }

    fn push(&self, channel: &str, p: &PushBody) {
        let mut buf = Vec::with_capacity(64);
        if self.client.v1.get() {
            if matches!(p, PushBody::Disconnect { .. } | PushBody::Refresh { .. }) {
                // The older protocol closes with the transport's close (its reason says
                // why), and its clients refresh on their own schedule.
                return;
            }
            protocol::v1::encode_push(self.client.format, channel, p, &mut buf);
        } else if self.client.framing.is_uni() {
            protocol::encode_bare_push(self.client.format, channel, p, &mut buf);
        } else {
            protocol::encode_push(self.client.format, channel, p, &mut buf);
        }
        self.push_frame(buf, crate::push::metrics_frame(p), false);
    }

    /// Writes the pushes held for `channel` and makes the subscription live.
    fn release(&self, channel: &Arc<str>) {
        for f in self.client.take_held(channel) {
            if self.client.send(f).is_err() {
                self.disconnect(Disconnect::SLOW);
                return;
            }
        }
        self.w.hub.set_live(channel, self.key());
        streams::released(self, channel);
    }

    /// The peer closed the connection (`code` 1000) or broke the transport's protocol: the
    /// closing frame is sent back and everything the session holds is released.
    pub fn close_with(&self, code: u16) {
        if code != 1000 && !self.is_closed() {
            crate::metrics::outgoing_close(self.client.framing.index(), code);
        }
        self.client.close(&Disconnect { code, reason: "".into() });
        self.cleanup();
    }

    /// The peer is gone: release state without writing anything.
    pub fn vanished(&self) {
        self.client.out.kill();
        self.cleanup();
    }

    /// Counts a connection that finished its connect request `c` in the connection metrics,
    /// unless it is hidden or raw; returns the labels it is counted with.
    fn accepted(&self, hidden: bool, c: &protocol::ConnectReq) -> Option<crate::metrics::ClientLabels> {
        if hidden || self.raw.is_some() {
            return None;
        }
        let labels = crate::metrics::ClientLabels::of(&c.name, &c.version);
        crate::metrics::connection_accepted(self.client.framing.index(), labels);
        Some(labels)
    }

    /// Releases everything the session holds (hub and owner entries, presence, counts).
    /// Idempotent; the transport calls it when its connection ends.
    pub fn cleanup(&self) {
        let (subs, pending, user, counted, user_slot) = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            let taken = (std::mem::take(&mut st.subs), std::mem::take(&mut st.pending));
            let counted = st.connected && !st.hidden;
            if let Some(labels) = st.labels.take() {
                crate::metrics::connection_closed(self.client.framing.index(), labels);
                crate::metrics::subscription_removed(Some(labels), taken.0.len());
            }
            (taken.0, taken.1, st.user.clone(), counted, std::mem::take(&mut st.user_slot))
        };
        if user_slot {
            slots::give_back(&self.w, user.clone());
        }
        streams::closed(self, None);
        // From here on an owner's acceptance finds the client gone, and the worker takes the
        // subscription back on the owner (`Worker::subscribed`).
        self.client.forget_held();
        let key = self.key();
        // A subscription accepted while its command had not resumed yet is taken back here.
        let accepted = pending.into_entries().filter(|(channel, _)| self.w.hub.is_subscriber(channel, key));
        for (channel, sub) in subs.into_entries().chain(accepted) {
            map::ended(self, &channel);
            if sub.poll {
                shared_poll::forget(self, &channel, &sub);
                continue;
            }
            self.w.hub.unsubscribe(&channel, key);
            self.send_unsub(channel, &sub);
        }
        crate::gateway::unregister_target(&self.w, &self.client.id);
        if let Some(topic) = &self.raw {
            let ctx = self.st.borrow_mut().context.take();
            let ev = crate::gateway::event("close", Default::default(), ctx.as_deref());
            crate::gateway::push_event(&self.w, &self.client.id, topic, &ev);
        }
        if counted {
            self.w.hub.user_removed(&user);
        }
        self.w.hub.remove(key);
    }

    fn send_unsub(&self, channel: Arc<str>, sub: &Sub) {
        let leave = sub.join_leave.then(|| self.info(sub.chan_info.clone()));
        let op = UnsubOp {
            channel: channel.clone(),
            worker: self.w.id as u16,
            client: sub.presence.then(|| self.client.id.clone()),
            leave,
        };
        self.send_owner(ShardOp::Unsubscribe(Box::new(op)));
    }

    /// Sends `op` to its channel's owner through the owner's inbox, even when the owner is
    /// this worker, so the session's bookkeeping operations (subscribes, unsubscribes, shared
    /// poll members) reach it in the order they were made; the answer is dropped.
    fn send_owner(&self, op: ShardOp) {
        let owner = owner_of(op.channel(), self.w.workers);
        self.w.send(owner, Msg::Exec { from: self.w.id as u16, tag: Tag::Discard, op });
    }

    /// Removes one subscription (client or server initiated).
    fn unsubscribe(&self, channel: &str, push: Option<(u32, &str)>) -> bool {
        let (removed, labels) = {
            let mut st = self.st.borrow_mut();
            (st.subs.remove_entry(channel), st.labels)
        };
        let Some((channel, sub)) = removed else { return false };
        crate::metrics::subscription_removed(labels, 1);
        map::ended(self, &channel);
        if sub.poll {
            shared_poll::forget(self, &channel, &sub);
        } else {
            streams::closed(self, Some(&channel));
            self.w.hub.unsubscribe(&channel, self.key());
            self.send_unsub(channel.clone(), &sub);
        }
        if let Some((code, reason)) = push {
            crate::metrics::server_unsubscribe(code);
            self.push(&channel, &PushBody::Unsubscribe { code, reason: reason.into() });
        }
        true
    }
}

/// The disconnect a unidirectional client gets for a connect refused with error `e`:
/// `client.connect_code_to_unidirectional_disconnect` first, then Centrifugo's mapping.
fn uni_disconnect(cfg: &crate::config::Config, e: &ApiError) -> Disconnect {
    let m = &cfg.client.connect_code_to_unidirectional_disconnect;
    if m.enabled {
        if let Some(t) = m.transforms.iter().find(|t| t.code == e.code) {
            return Disconnect { code: t.to.code, reason: t.to.reason.clone().into() };
        }
    }
    match e.code {
        109 | 110 => Disconnect::EXPIRED,
        111 => Disconnect::TOO_MANY_REQUESTS,
        103 => Disconnect::new(3507, "permission denied"),
        _ => Disconnect::INTERNAL,
    }
}

impl Handler for Session {
    /// Closes the session with the transport's closing frame carrying the code and reason,
    /// and releases everything it holds (index entries, owner counts, presence). Idempotent.
    fn disconnect(&self, d: Disconnect) {
        if self.st.borrow().closed {
            return;
        }
        if !self.st.borrow().connected && self.refused.get().is_none() {
            self.refused.set(Some(d.code as u32));
        }
        crate::metrics::server_disconnect(d.code as u32);
        let framing = self.client.framing;
        if framing == Framing::WebSocket || (framing == Framing::UniWebSocket && self.client.uni_ws_close.1) {
            crate::metrics::outgoing_close(framing.index(), d.code);
        }
        self.client.close(&d);
        self.cleanup();
    }

    fn on_timer(self: Rc<Self>, at: Instant) {
        Session::run_timer(&self, at);
    }

    /// The channel's stream may have a gap for this session: unsubscribe it with
    /// "insufficient state" (2500), which makes SDKs resubscribe and recover. A
    /// unidirectional client, or a server-side subscription, cannot be resubscribed by the
    /// client: it is disconnected (3010) to reconnect and recover, as Centrifugo does.
    fn resubscribe(&self, channel: &str) {
        let server_side = self.st.borrow().subs.get(channel).is_some_and(|s| s.server_side);
        if self.client.framing.is_uni() || server_side {
            self.disconnect(Disconnect::INSUFFICIENT_STATE);
            return;
        }
        self.unsubscribe(channel, Some((2500, "insufficient state")));
    }

    fn on_action(self: Rc<Self>, cmd: &Command) -> Option<crate::client::Pending> {
        commands::api_act(&self, cmd)
    }

    /// A hidden session is never counted.
    fn is_connected(&self) -> bool {
        let st = self.st.borrow();
        st.connected && !st.closed && !st.hidden
    }

    fn keyed_push(&self, channel: &str, update: &crate::protocol::KeyedPub, patch: Option<&Bytes>) {
        shared_poll::push(self, channel, update, patch);
    }
}
