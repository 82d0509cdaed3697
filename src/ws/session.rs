//! A client session on the bidirectional WebSocket transport: the Centrifuge protocol state
//! machine (connect, subscriptions, publish, presence, history, refresh, ping/pong), the
//! permission rules of channel namespaces, and the hand-off of pushes from the worker's index.
//!
//! A session lives on the worker that accepted it. Its reader runs in the connection's task,
//! its writer in another ([`WsOut::run_writer`]), its timers in a third. Work on channels goes
//! to their owners through the worker; results come back in order (see `ARCHITECTURE.md`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};

use super::commands;
use super::out::WsOut;
use crate::error::{ApiError, Disconnect};
use crate::model::ClientInfo;
use crate::protocol::{self, Cmd, Format, PushBody, ReplyBody, Req};
use crate::runtime::worker::{Msg, Op, Tag, Worker};
use crate::shard::{owner_of, ShardOp, UnsubOp};
use crate::wire::ws::{self as codec, Message, OpCode};

pub(super) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// One subscription of a session.
#[derive(Debug, Clone)]
pub(super) struct Sub {
    pub(super) chan_info: Option<Bytes>,
    /// Presence is kept for this subscription (so unsubscribing removes it).
    pub(super) presence: bool,
    /// Join/leave are emitted for this subscription.
    pub(super) join_leave: bool,
    /// This client receives join/leave pushes.
    pub(super) push_join_leave: bool,
    pub(super) server_side: bool,
    pub(super) expires_at: i64,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) connected: bool,
    /// A connect failed with an error reply: any further command closes with 3501.
    pub(super) unusable: bool,
    pub(super) closed: bool,
    pub(super) user: Arc<str>,
    pub(super) conn_info: Option<Bytes>,
    pub(super) subs: AHashMap<Arc<str>, Sub>,
    /// Subscriptions sent to their owner and not answered yet.
    pub(super) pending: AHashMap<Arc<str>, Sub>,
    /// Pushes held for subscriptions whose reply is not written yet.
    pub(super) held: AHashMap<Arc<str>, Vec<Bytes>>,
    pub(super) held_bytes: usize,
    /// Unix seconds when the credentials expire (0 = never).
    pub(super) expires_at: i64,
    /// Command rate bucket (`client.command_rate_limit`): tokens and last refill.
    pub(super) rate: Option<(f64, Instant)>,
    /// Gateway context (`conn.call set_context[_value]`), attached to queued events.
    pub(super) context: serde_json::Map<String, serde_json::Value>,
    /// A server ping is waiting for its pong since then.
    pub(super) ping_sent: Option<Instant>,
    pub(super) next_ping: Option<Instant>,
}

/// See the module docs.
pub struct Session {
    pub key: Cell<u32>,
    pub gen: u32,
    pub format: Format,
    pub out: WsOut,
    pub client: Arc<str>,
    /// A raw gateway client (no Centrifuge protocol): its events go to this queue topic.
    raw: Option<Arc<str>>,
    pub(super) w: Rc<Worker>,
    pub(super) st: RefCell<State>,
    /// The deadline this session is scheduled at in the worker's timer heap.
    timer_at: Cell<Option<Instant>>,
    /// The client command being handled (commands of a session run one at a time): the
    /// `method` label of reply error metrics.
    method: Cell<&'static str>,
    created: Instant,
}

static NEXT_GEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Session {
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

    /// A raw gateway client: receives publications as plain frames, no protocol pushes.
    pub fn is_raw(&self) -> bool {
        self.raw.is_some()
    }

    pub fn is_connected(&self) -> bool {
        let st = self.st.borrow();
        st.connected && !st.closed
    }

    /// Called by the worker when the owner accepted a subscription: pushes from now on are
    /// held until the reply is written. False when the session no longer wants it.
    pub fn start_holding(&self, channel: &Arc<str>) -> bool {
        let mut st = self.st.borrow_mut();
        if st.closed || !st.pending.contains_key(channel) {
            return false;
        }
        st.held.insert(channel.clone(), Vec::new());
        true
    }

    /// Holds a push for a subscription whose reply is not written yet. False on overflow.
    pub fn hold(&self, channel: &Arc<str>, frame: Bytes) -> bool {
        let mut st = self.st.borrow_mut();
        st.held_bytes += frame.len();
        if st.held_bytes > self.w.cfg.client.queue_max_size {
            return false;
        }
        if let Some(v) = st.held.get_mut(channel) {
            v.push(frame);
        }
        true
    }

    /// Whether this client gets join/leave pushes of `channel`.
    pub fn wants_join_leave(&self, channel: &str) -> bool {
        let st = self.st.borrow();
        st.subs.get(channel).or_else(|| st.pending.get(channel)).is_some_and(|s| s.push_join_leave)
    }

    pub(super) fn info(&self, chan_info: Option<Bytes>) -> ClientInfo {
        let st = self.st.borrow();
        ClientInfo { user: st.user.clone(), client: self.client.clone(), conn_info: st.conn_info.clone(), chan_info }
    }

    fn push_frame(&self, payload: Vec<u8>) {
        if self.raw.is_some() {
            return;
        }
        let op = if self.format == Format::Json { OpCode::Text } else { OpCode::Binary };
        if self.out.push(codec::frame(op, &payload)).is_err() {
            self.disconnect(Disconnect::SLOW);
        }
    }

    pub(super) fn reply(&self, id: u32, r: &Result<ReplyBody, ApiError>) {
        if let Err(e) = r {
            crate::metrics::client_reply_error(self.method.get(), e.code);
        }
        let mut buf = Vec::with_capacity(64);
        protocol::encode_reply(self.format, id, r, &mut buf);
        self.push_frame(buf);
    }

    pub(super) fn push(&self, channel: &str, p: &PushBody) {
        let mut buf = Vec::with_capacity(64);
        protocol::encode_push(self.format, channel, p, &mut buf);
        self.push_frame(buf);
    }

    /// Writes the pushes held for `channel` and makes the subscription live.
    pub(super) fn release(&self, channel: &Arc<str>) {
        let held = {
            let mut st = self.st.borrow_mut();
            let v = st.held.remove(channel).unwrap_or_default();
            st.held_bytes -= v.iter().map(|b| b.len()).sum::<usize>().min(st.held_bytes);
            v
        };
        for f in held {
            if self.out.push(f).is_err() {
                self.disconnect(Disconnect::SLOW);
                return;
            }
        }
        self.w.index_set_live(channel, self.key.get());
    }

    /// Closes the session with a WebSocket close frame carrying the code and reason, and
    /// releases everything it holds (index entries, owner counts, presence). Idempotent.
    pub fn disconnect(&self, d: Disconnect) {
        if self.st.borrow().closed {
            return;
        }
        self.out.close(codec::close_frame(d.code, &d.reason), d == Disconnect::SLOW);
        self.cleanup();
    }

    /// The peer is gone: release state without writing anything.
    fn vanished(&self) {
        self.out.kill();
        self.cleanup();
    }

    fn cleanup(&self) {
        let (subs, user, connected) = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            st.held.clear();
            st.pending.clear();
            (std::mem::take(&mut st.subs), st.user.clone(), st.connected)
        };
        let key = self.key.get();
        for (channel, sub) in subs {
            self.w.index_remove(&channel, key);
            self.send_unsub(channel, &sub);
        }
        {
            let mut by_client = self.w.gw.by_client.borrow_mut();
            if by_client.get(&self.client) == Some(&key) {
                by_client.remove(&self.client);
            }
        }
        if let Some(topic) = &self.raw {
            let ctx = std::mem::take(&mut self.st.borrow_mut().context);
            let ev = crate::gateway::event("close", Default::default(), Some(&ctx));
            crate::gateway::push_event(&self.w, &self.client, topic, &ev);
        }
        if connected {
            let mut users = self.w.users.borrow_mut();
            if let Some(n) = users.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    users.remove(&user);
                }
            }
        }
        self.w.clients.borrow_mut().try_remove(key as usize);
    }

    fn send_unsub(&self, channel: Arc<str>, sub: &Sub) {
        let leave = sub.join_leave.then(|| self.info(sub.chan_info.clone()));
        let op = UnsubOp {
            channel: channel.clone(),
            worker: self.w.id as u16,
            client: sub.presence.then(|| self.client.clone()),
            leave,
        };
        let owner = owner_of(&channel, self.w.workers);
        self.w.send(
            owner,
            Msg::Exec { from: self.w.id as u16, tag: Tag::Discard, op: Op::Shard(ShardOp::Unsubscribe(Box::new(op))) },
        );
    }

    /// The channel's stream may have a gap for this session: unsubscribe it with
    /// "insufficient state" (2500), which makes SDKs resubscribe and recover.
    pub fn resubscribe(&self, channel: &str) {
        self.unsubscribe(channel, Some((2500, "insufficient state")));
    }

    /// Removes one subscription (client or server initiated).
    pub(super) fn unsubscribe(&self, channel: &str, push: Option<(u32, &str)>) -> bool {
        let removed = self.st.borrow_mut().subs.remove_entry(channel);
        let Some((channel, sub)) = removed else { return false };
        self.w.index_remove(&channel, self.key.get());
        self.send_unsub(channel.clone(), &sub);
        if let Some((code, reason)) = push {
            self.push(&channel, &PushBody::Unsubscribe { code, reason: reason.into() });
        }
        true
    }
}

/// Picks the wire format: the `centrifuge-protobuf` subprotocol or `?format=protobuf` /
/// `?cf_protocol=protobuf`. Returns the format and the subprotocol to echo.
pub fn negotiate(head: &crate::wire::http::Head) -> (Format, Option<&'static str>) {
    let protos = head
        .header("sec-websocket-protocol")
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
        .unwrap_or_default();
    let asked: Vec<&str> = protos.split(',').map(str::trim).collect();
    if asked.contains(&"centrifuge-protobuf") {
        return (Format::Protobuf, Some("centrifuge-protobuf"));
    }
    let q = |k: &str| head.query_param(k).map(|v| v.eq_ignore_ascii_case("protobuf")).unwrap_or(false);
    let format = if q("format") || q("cf_protocol") { Format::Protobuf } else { Format::Json };
    (format, asked.contains(&"centrifuge-json").then_some("centrifuge-json"))
}

/// Read buffer of an idle session: client frames are mostly tiny (a pong is 8 bytes), and an
/// idle socket holds its buffer while the read is pending; larger messages grow it.
const READ_IDLE: usize = 256;

/// A raw gateway client's start: its server's topic and the upgrade request's headers.
pub struct RawStart {
    pub topic: Arc<str>,
    pub headers: serde_json::Map<String, serde_json::Value>,
}

/// Runs a session on an upgraded connection until it closes.
pub async fn run<R, W>(
    w: Rc<Worker>,
    format: Format,
    raw: Option<RawStart>,
    mut rd: R,
    wr: W,
    mut buf: BytesMut,
    fd: i32,
) where
    R: monoio::io::AsyncReadRent,
    W: monoio::io::AsyncWriteRent + 'static,
{
    let cfg = w.cfg.clone();
    let s = Rc::new(Session {
        key: Cell::new(0),
        gen: NEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        format,
        out: WsOut::new(cfg.client.queue_max_size),
        client: match &raw {
            Some(_) => crate::gateway::next_client_id(&w),
            None => uuid::Uuid::new_v4().to_string().into(),
        },
        raw: raw.as_ref().map(|r| r.topic.clone()),
        w: w.clone(),
        st: RefCell::new(State::default()),
        timer_at: Cell::new(None),
        method: Cell::new(""),
        created: Instant::now(),
    });
    let key = w.clients.borrow_mut().insert(s.clone()) as u32;
    s.key.set(key);
    w.gw.by_client.borrow_mut().insert(s.client.clone(), key);
    w.node.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Leaves the node's count however this function ends.
    struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _counted = Counted(&w.node.connections);
    if let Some(r) = raw {
        // A raw client is connected from the start, as an anonymous user.
        s.st.borrow_mut().connected = true;
        *w.users.borrow_mut().entry(Arc::from("")).or_default() += 1;
        let fields = serde_json::Map::from_iter([("headers".to_string(), serde_json::Value::Object(r.headers))]);
        crate::gateway::push_event(&w, &s.client, &r.topic, &crate::gateway::event("handshake", fields, None));
    }
    let writer = {
        let s = s.clone();
        let timeout = cfg.websocket.write_timeout;
        monoio::spawn(async move {
            s.out.run_writer(wr, timeout).await;
            // Wake the reader too: a closed session must not keep its socket open.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        })
    };
    // Deadlines run on the worker's single timer task, not one task per connection.
    s.schedule(s.created + cfg.client.stale_close_delay);
    if s.raw.is_some() {
        // Connected from the start: its ping schedule starts now.
        s.reschedule_now();
    }
    let limit = cfg.websocket.message_size_limit;
    let mut dec = codec::Decoder::new(limit, limit);
    let mut last_full = false;
    'read: loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(msg)) => {
                    // Boxed: the command futures are large and live only while a message is
                    // handled, not for the whole (mostly idle) session.
                    if !Box::pin(handle_message(&s, msg)).await {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let code = e.close_code();
                    s.out.close(codec::close_frame(code, ""), false);
                    s.cleanup();
                    break 'read;
                }
            }
            if s.is_closed() {
                break 'read;
            }
        }
        if s.is_closed() {
            break;
        }
        crate::io::prepare_read(&mut buf, last_full, READ_IDLE);
        let spare = buf.capacity() - buf.len();
        let (res, b) = crate::io::read_more(&mut rd, buf).await;
        buf = b;
        last_full = matches!(res, Ok(n) if n == spare);
        if !matches!(res, Ok(n) if n > 0) {
            s.vanished();
            break;
        }
    }
    s.cleanup();
    let _ = writer.await;
}

/// Handles one message of a raw gateway client: data messages become `message` events.
fn handle_raw(s: &Rc<Session>, topic: &Arc<str>, msg: Message) -> bool {
    let (text, data) = match msg {
        Message::Text(d) => (true, d),
        Message::Binary(d) => (false, d),
        Message::Ping(p) => {
            let _ = s.out.push(codec::frame(OpCode::Pong, &p));
            return true;
        }
        Message::Pong(_) => {
            s.st.borrow_mut().ping_sent = None;
            return true;
        }
        Message::Close(_) => {
            s.out.close(codec::close_frame(1000, ""), false);
            s.cleanup();
            return false;
        }
    };
    if !s.take_command_token() {
        s.out.close(codec::close_frame(1008, "too many messages"), false);
        s.cleanup();
        return false;
    }
    let ev = {
        let st = s.st.borrow();
        let fields = serde_json::Map::from_iter([("frame".to_string(), crate::gateway::frame_json(text, &data))]);
        crate::gateway::event("message", fields, Some(&st.context))
    };
    crate::gateway::push_event(&s.w, &s.client, topic, &ev);
    true
}

/// Handles one WebSocket message; false when the reader should stop.
async fn handle_message(s: &Rc<Session>, msg: Message) -> bool {
    if let Some(topic) = &s.raw {
        return handle_raw(s, topic, msg);
    }
    let data = match msg {
        Message::Text(d) if s.format == Format::Json => d,
        Message::Binary(d) if s.format == Format::Protobuf => d,
        Message::Text(_) | Message::Binary(_) => {
            s.disconnect(Disconnect::BAD_REQUEST);
            return false;
        }
        Message::Ping(p) => {
            let _ = s.out.push(codec::frame(OpCode::Pong, &p));
            return true;
        }
        Message::Pong(_) => return true,
        Message::Close(_) => {
            s.out.close(codec::close_frame(1000, ""), false);
            s.cleanup();
            return false;
        }
    };
    crate::metrics::ws_message_received(data.len());
    let cmds = match protocol::decode(s.format, &data) {
        Ok(c) => c,
        Err(_) => {
            s.disconnect(Disconnect::BAD_REQUEST);
            return false;
        }
    };
    for cmd in cmds {
        if !s.take_command_token() {
            // Over the rate: the command is refused with a clear error, not run.
            if cmd.id != 0 {
                s.reply(cmd.id, &Err(ApiError::TOO_MANY_REQUESTS));
            }
            continue;
        }
        if let Err(d) = handle_command(s, cmd).await {
            s.disconnect(d);
            return false;
        }
        if s.is_closed() {
            return false;
        }
    }
    true
}

/// A presence/history read: the namespace and permission check, then the channel's owner.
async fn read_on_owner(
    s: &Rc<Session>,
    channel: &str,
    feature: commands::Feature,
    op: ShardOp,
) -> Result<crate::api::Res, ApiError> {
    commands::check(s, channel, feature)?;
    s.w.call_shard(channel, op).await
}

/// Runs one command; an `Err` closes the connection with that disconnect.
async fn handle_command(s: &Rc<Session>, cmd: Cmd) -> Result<(), Disconnect> {
    let (connected, unusable) = {
        let st = s.st.borrow();
        (st.connected, st.unusable)
    };
    if unusable {
        return Err(Disconnect::BAD_REQUEST);
    }
    s.method.set(method_label(&cmd.req));
    if let Req::Connect(c) = cmd.req {
        if connected || cmd.id == 0 {
            return Err(Disconnect::BAD_REQUEST);
        }
        return commands::connect(s, cmd.id, c).await;
    }
    if !connected {
        return Err(Disconnect::BAD_REQUEST);
    }
    let id = cmd.id;
    if id == 0 && !matches!(cmd.req, Req::Pong | Req::Send { .. }) {
        return Err(Disconnect::BAD_REQUEST);
    }
    match cmd.req {
        Req::Connect(_) => unreachable!("handled above"),
        Req::Pong => {
            if s.st.borrow_mut().ping_sent.take().is_none() {
                return Err(Disconnect::BAD_REQUEST);
            }
        }
        Req::Unknown | Req::Ping => return Err(Disconnect::BAD_REQUEST),
        Req::Send { data } => {
            let topic = &s.w.cfg.gateway.client_send_topic;
            if topic.is_empty() {
                return Err(Disconnect::NOT_AVAILABLE);
            }
            let ev = {
                let st = s.st.borrow();
                let mut fields = serde_json::Map::from_iter([(
                    "frame".to_string(),
                    crate::gateway::frame_json(s.format == Format::Json, &data),
                )]);
                if !st.user.is_empty() {
                    fields.insert("user".into(), serde_json::Value::from(&*st.user));
                }
                crate::gateway::event("message", fields, Some(&st.context))
            };
            crate::gateway::push_event(&s.w, &s.client, &Arc::from(topic.as_str()), &ev);
        }
        Req::Rpc { .. } => s.reply(id, &Err(ApiError::NOT_AVAILABLE)),
        Req::Subscribe(req) => {
            if req.channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            let r = commands::subscribe(s, req).await?;
            if let Ok((_, res)) = &r {
                if s.format == Format::Json && res.publications.iter().any(|p| !p.data.json_ok()) {
                    return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
                }
            }
            if let Ok((channel, _)) = &r {
                let channel = channel.clone();
                s.reply(id, &r.map(|(_, res)| ReplyBody::Subscribe(res)));
                s.release(&channel);
            } else {
                s.reply(id, &r.map(|(_, res)| ReplyBody::Subscribe(res)));
            }
        }
        Req::Unsubscribe { channel } => {
            if channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            s.unsubscribe(&channel, None);
            s.reply(id, &Ok(ReplyBody::Unsubscribe));
        }
        Req::Publish { channel, data } => {
            if channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            let r = commands::publish(s, channel, data).await;
            s.reply(id, &r);
        }
        Req::Presence { channel } | Req::PresenceStats { channel } if channel.is_empty() => {
            return Err(Disconnect::BAD_REQUEST)
        }
        Req::Presence { channel } => {
            let op = ShardOp::Presence(channel.as_str().into());
            let r = match read_on_owner(s, &channel, commands::Feature::Presence, op).await {
                Ok(crate::api::Res::Presence(list)) => Ok(ReplyBody::Presence(list)),
                Ok(_) => Err(ApiError::INTERNAL),
                Err(e) => Err(e),
            };
            s.reply(id, &r);
        }
        Req::PresenceStats { channel } => {
            let op = ShardOp::PresenceStats(channel.as_str().into());
            let r = match read_on_owner(s, &channel, commands::Feature::Presence, op).await {
                Ok(crate::api::Res::PresenceStats { num_clients, num_users }) => {
                    Ok(ReplyBody::PresenceStats { num_clients: num_clients as u32, num_users: num_users as u32 })
                }
                Ok(_) => Err(ApiError::INTERNAL),
                Err(e) => Err(e),
            };
            s.reply(id, &r);
        }
        Req::History(h) => {
            if h.channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            let max = s.w.cfg.client.history_max_publication_limit as i32;
            let limit = if h.limit < 0 || h.limit > max { max } else { h.limit };
            let op = ShardOp::History(crate::model::History {
                channel: h.channel.as_str().into(),
                limit,
                since: h.since,
                reverse: h.reverse,
            });
            let r = match read_on_owner(s, &h.channel, commands::Feature::History, op).await {
                Ok(crate::api::Res::History { publications, position }) => {
                    if s.format == Format::Json && publications.iter().any(|p| !p.data.json_ok()) {
                        // As for live pushes: binary data cannot travel in a JSON frame.
                        return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
                    }
                    Ok(ReplyBody::History { publications, position })
                }
                Ok(_) => Err(ApiError::INTERNAL),
                Err(e) => Err(e),
            };
            s.reply(id, &r);
        }
        Req::Refresh { token } => commands::refresh(s, id, &token)?,
        Req::SubRefresh { channel, token } => commands::sub_refresh(s, id, &channel, &token)?,
    }
    Ok(())
}

/// The `method` label of a client command.
fn method_label(r: &Req) -> &'static str {
    match r {
        Req::Connect(_) => "connect",
        Req::Subscribe(_) => "subscribe",
        Req::Unsubscribe { .. } => "unsubscribe",
        Req::Publish { .. } => "publish",
        Req::Presence { .. } => "presence",
        Req::PresenceStats { .. } => "presence_stats",
        Req::History(_) => "history",
        Req::Ping => "ping",
        Req::Pong => "pong",
        Req::Send { .. } => "send",
        Req::Rpc { .. } => "rpc",
        Req::Refresh { .. } => "refresh",
        Req::SubRefresh { .. } => "sub_refresh",
        Req::Unknown => "unknown",
    }
}

impl Session {
    /// `mesh.send` to this connection: a raw frame for raw clients, an async `message` push
    /// for Centrifugo clients.
    pub fn mesh_send(&self, data: &crate::gateway::mesh::MeshData) -> Result<(), String> {
        use crate::gateway::mesh::MeshData;
        if self.raw.is_some() {
            let frame = match data {
                MeshData::Text(b) => codec::frame(OpCode::Text, b),
                MeshData::Binary(b) => codec::frame(OpCode::Binary, b),
            };
            if self.out.push(frame).is_err() {
                self.disconnect(Disconnect::SLOW);
                return Err("failed to send: client too slow".into());
            }
            return Ok(());
        }
        let bytes = match (self.format, data) {
            (Format::Protobuf, MeshData::Text(b) | MeshData::Binary(b)) => b.clone(),
            (Format::Json, d) => {
                let p = d.payload();
                if !p.json_ok() {
                    return Err("failed to send: binary data to a JSON client".into());
                }
                p.bytes
            }
        };
        self.push("", &PushBody::Message { data: bytes });
        Ok(())
    }

    /// `conn.call` on this connection.
    pub async fn mesh_call(
        self: &Rc<Self>,
        f: &str,
        args: &[serde_json::Value],
    ) -> Result<(), crate::gateway::mesh::MeshError> {
        use crate::gateway::mesh::MeshError;
        match f {
            "set_context_value" => {
                let key = args.first().and_then(|k| k.as_str()).ok_or_else(|| MeshError::bad("invalid parameter"))?;
                let value = args.get(1).cloned().unwrap_or_default();
                self.st.borrow_mut().context.insert(key.to_string(), value);
            }
            "set_context" => {
                let Some(serde_json::Value::Object(o)) = args.first() else {
                    return Err(MeshError::bad("invalid parameter"));
                };
                self.st.borrow_mut().context = o.clone();
            }
            "subscribe" => {
                for ch in args.iter().filter_map(|a| a.as_str()) {
                    if self.st.borrow().subs.contains_key(ch) {
                        continue;
                    }
                    commands::server_subscribe(self, ch)
                        .await
                        .map_err(|e| MeshError::new(301, format!("execution failed: {}", e.message)))?;
                }
            }
            "unsubscribe" => {
                let push = if self.raw.is_some() { None } else { Some((2000, "server unsubscribe")) };
                for ch in args.iter().filter_map(|a| a.as_str()) {
                    self.unsubscribe(ch, push);
                }
            }
            _ => return Err(MeshError::bad("invalid parameter: unknown function")),
        }
        Ok(())
    }

    /// Asks the worker's timer to run [`Session::on_timer`] at `at` (or earlier if already
    /// scheduled earlier). Only the earliest deadline is kept in the worker's heap.
    pub(super) fn schedule(&self, at: Instant) {
        if self.timer_at.get().is_some_and(|t| t <= at) {
            return;
        }
        self.timer_at.set(Some(at));
        self.w.schedule_timer(at, self.key.get(), self.gen);
    }

    /// Deadlines changed (connect, refresh, a subscription with an expiry): re-evaluate now.
    pub(super) fn reschedule_now(&self) {
        self.schedule(Instant::now());
    }

    /// Runs when the worker's timer reaches this session's deadline: stale close, server
    /// pings, the pong deadline and credential/subscription expiry. Schedules the next one.
    pub fn on_timer(&self, at: Instant) {
        if self.timer_at.get() != Some(at) {
            return; // superseded by an earlier schedule
        }
        self.timer_at.set(None);
        if let Some(next) = self.check_deadlines(Instant::now()) {
            self.schedule(next);
        }
    }

    /// Acts on every deadline that has passed; returns the next one (`None` once closed).
    fn check_deadlines(&self, now: Instant) -> Option<Instant> {
        let cfg = self.w.cfg.clone();
        let interval = cfg.client.ping_interval;
        let pong_timeout = cfg.client.pong_timeout;
        if self.is_closed() {
            return None;
        }
        let mut next = now + Duration::from_secs(10);
        let (connected, ping_sent, expires_at, next_ping) = {
            let st = self.st.borrow();
            (st.connected, st.ping_sent, st.expires_at, st.next_ping)
        };
        if !connected {
            let deadline = self.created + cfg.client.stale_close_delay;
            if now >= deadline {
                self.disconnect(Disconnect::STALE);
                return None;
            }
            return Some(next.min(deadline));
        }
        if let Some(sent) = ping_sent {
            if !pong_timeout.is_zero() {
                let deadline = sent + pong_timeout;
                if now >= deadline {
                    self.disconnect(Disconnect::NO_PONG);
                    return None;
                }
                next = next.min(deadline);
            }
        }
        if !interval.is_zero() {
            let due = match next_ping {
                Some(t) => t,
                None => {
                    // The first ping comes at a random point in [interval/2, interval).
                    let half = interval / 2;
                    let jitter = Duration::from_millis(rand::random::<u64>() % (half.as_millis().max(1) as u64));
                    let t = now + half + jitter;
                    self.st.borrow_mut().next_ping = Some(t);
                    t
                }
            };
            if now >= due {
                if self.raw.is_some() {
                    // Raw clients get WebSocket pings; their pong frames answer.
                    let _ = self.out.push(codec::frame(OpCode::Ping, b""));
                } else {
                    let mut buf = Vec::with_capacity(2);
                    protocol::encode_ping(self.format, &mut buf);
                    self.push_frame(buf);
                }
                let mut st = self.st.borrow_mut();
                if st.ping_sent.is_none() && !pong_timeout.is_zero() {
                    st.ping_sent = Some(now);
                    next = next.min(now + pong_timeout);
                }
                st.next_ping = Some(now + interval);
                next = next.min(now + interval);
            } else {
                next = next.min(due);
            }
        }
        let sub_delay = cfg.client.expired_sub_close_delay.as_secs() as i64;
        let unix = unix_now();
        let expired: Vec<(Arc<str>, bool)> = {
            let st = self.st.borrow();
            let mut soonest = i64::MAX;
            let mut out = Vec::new();
            for (ch, sub) in st.subs.iter().filter(|(_, sub)| sub.expires_at > 0) {
                let at = sub.expires_at + sub_delay;
                if unix >= at {
                    out.push((ch.clone(), sub.server_side));
                } else {
                    soonest = soonest.min(at);
                }
            }
            if soonest != i64::MAX {
                next = next.min(now + Duration::from_secs((soonest - unix) as u64));
            }
            out
        };
        for (ch, server_side) in expired {
            if server_side {
                self.disconnect(Disconnect::SUB_EXPIRED);
                return None;
            }
            self.unsubscribe(&ch, Some((2501, "subscription expired")));
        }
        if expires_at > 0 {
            let close_at = expires_at + cfg.client.expired_close_delay.as_secs() as i64;
            if unix >= close_at {
                self.disconnect(Disconnect::EXPIRED);
                return None;
            }
            next = next.min(now + Duration::from_secs((close_at - unix) as u64));
        }
        (!self.is_closed()).then_some(next)
    }
}
