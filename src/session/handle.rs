//! One message from the client: a raw gateway client's message becomes a queue event; a
//! Centrifuge protocol message is decoded into commands, each run in order.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{commands, rules, Session};
use crate::client::Handler;
use crate::error::{ApiError, Disconnect};
use crate::metrics::Frame;
use crate::protocol::{self, Cmd, Format, ReplyBody, Req};
use crate::shard::ShardOp;

impl Session {
    /// A data message from the client (`text` for a text frame); false when the transport
    /// should stop reading.
    pub async fn on_message(self: &Rc<Self>, text: bool, data: Bytes) -> bool {
        if let Some(topic) = &self.raw {
            return self.raw_message(topic, text, data);
        }
        if text != (self.client.format == Format::Json) {
            self.disconnect(Disconnect::BAD_REQUEST);
            return false;
        }
        if self.client.framing == crate::client::Framing::WebSocket
            && !self.client.v1.get()
            && !self.st.borrow().connected
            && protocol::v1::is_v1(self.client.format, &data)
        {
            // The first message of a Centrifugo 2.x/3.x client: it speaks the older protocol.
            self.client.v1.set(true);
        }
        let decoded = if self.client.v1.get() {
            protocol::v1::decode(self.client.format, &data)
        } else {
            protocol::decode(self.client.format, &data)
        };
        let cmds = match decoded {
            Ok(c) => c,
            Err(_) => {
                self.disconnect(Disconnect::BAD_REQUEST);
                return false;
            }
        };
        // Counted per command, as Centrifugo counts them; a message carrying several shares
        // its bytes among them.
        let (n, t) = (cmds.len().max(1) as u64, self.client.framing.index());
        for (i, cmd) in cmds.iter().enumerate() {
            let share = data.len() as u64 / n + if i == 0 { data.len() as u64 % n } else { 0 };
            crate::metrics::frame_received(t, frame_of(&cmd.req), share);
        }
        for cmd in cmds {
            if self.w.hold_sessions.get() {
                // The node is stopping: no new command; the shutdown sends 3001 once what
                // was acknowledged has been delivered.
                while !self.is_closed() {
                    monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                return false;
            }
            self.method.set(frame_of(&cmd.req));
            if !self.take_command_token() {
                // Over the rate: the command is refused with a clear error, not run.
                if cmd.id != 0 {
                    self.reply(cmd.id, &Err(ApiError::TOO_MANY_REQUESTS));
                }
                continue;
            }
            let running = &self.w.session_commands;
            running.set(running.get() + 1);
            let r = handle_command(self, cmd).await;
            running.set(running.get() - 1);
            if let Err(d) = r {
                self.log_disconnect(&d);
                self.disconnect(d);
                return false;
            }
            if self.is_closed() {
                return false;
            }
        }
        true
    }

    /// The connect request of a unidirectional transport: runs it as the session's connect
    /// command; a refusal closes the session with its disconnect.
    pub async fn connect_uni(self: &Rc<Self>, req: protocol::ConnectReq) {
        if let Err(d) = handle_command(self, Cmd { id: 1, req: Req::Connect(req) }).await {
            self.log_disconnect(&d);
            self.refused.set(self.refused.get().or(Some(d.code as u32)));
            self.disconnect(d);
        }
    }

    /// The transport's pong arrived: for raw clients, the answer to the server's ping.
    pub fn on_pong(&self) {
        if self.raw.is_some() || self.client.framing == crate::client::Framing::UniWebSocket {
            let sent = self.st.borrow_mut().ping_sent.take();
            if let (Some(sent), None) = (sent, &self.raw) {
                crate::metrics::ping_pong(self.client.framing.index(), sent.elapsed());
            }
        }
    }

    /// A raw gateway client's message: a `message` event for its topic.
    fn raw_message(&self, topic: &Arc<str>, text: bool, data: Bytes) -> bool {
        if !self.take_command_token() {
            self.client.close(&Disconnect::new(1008, "too many messages"));
            self.cleanup();
            return false;
        }
        let ev = {
            let st = self.st.borrow();
            let fields = serde_json::Map::from_iter([("frame".to_string(), crate::gateway::frame_json(text, &data))]);
            crate::gateway::event("message", fields, st.context.as_deref())
        };
        crate::gateway::push_event(&self.w, &self.client.id, topic, &ev);
        true
    }
}

/// A presence/history read: the namespace and permission check, then the channel's owner.
async fn read_on_owner(
    s: &Rc<Session>,
    channel: &str,
    feature: rules::Feature,
    op: ShardOp,
) -> Result<crate::api::Res, ApiError> {
    rules::check(s, channel, feature)?;
    s.w.call_shard(op).await
}

/// Runs one command, timed by its method (a pong is no command); an `Err` closes the
/// connection with that disconnect.
async fn handle_command(s: &Rc<Session>, cmd: Cmd) -> Result<(), Disconnect> {
    let frame = frame_of(&cmd.req);
    s.method.set(frame);
    let started = std::time::Instant::now();
    let r = run_command(s, cmd).await;
    if frame != Frame::ClientPong {
        crate::metrics::client_command(frame, started.elapsed());
    }
    r
}

async fn run_command(s: &Rc<Session>, cmd: Cmd) -> Result<(), Disconnect> {
    let (connected, unusable) = {
        let st = s.st.borrow();
        (st.connected, st.unusable)
    };
    if unusable {
        return Err(Disconnect::BAD_REQUEST);
    }
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
            let Some(sent) = s.st.borrow_mut().ping_sent.take() else {
                return Err(Disconnect::BAD_REQUEST);
            };
            crate::metrics::ping_pong(s.client.framing.index(), sent.elapsed());
        }
        // The older protocol's clients ping with a command; an unknown method number is
        // answered as Centrifugo 3 answered it.
        Req::Ping if s.client.v1.get() => s.reply(id, &Ok(ReplyBody::Ping)),
        Req::Unknown if s.client.v1.get() => s.reply(id, &Err(ApiError::METHOD_NOT_FOUND)),
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
                    crate::gateway::frame_json(s.client.format == Format::Json, &data),
                )]);
                if !st.user.is_empty() {
                    fields.insert("user".into(), serde_json::Value::from(&*st.user));
                }
                crate::gateway::event("message", fields, st.context.as_deref())
            };
            crate::gateway::push_event(&s.w, &s.client.id, &Arc::from(topic.as_str()), &ev);
        }
        Req::Rpc { method, data } => super::proxied::rpc(s, id, method, data).await?,
        Req::Subscribe(req) if req.kind == super::shared_poll::KIND => {
            if req.channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            super::shared_poll::subscribe(s, id, req).await?;
        }
        Req::Subscribe(req) if req.kind != 0 => {
            if req.channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            super::map::subscribe(s, id, req).await?;
        }
        Req::MapPublish { channel, data, key, removed } => {
            if channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            let r = super::map::publish(s, channel, data, key, removed).await;
            // A map proxy's disconnect has closed the session: nothing to reply.
            if !s.is_closed() {
                s.reply(id, &r);
            }
        }
        Req::Subscribe(req) if s.w.cfg.resolve_channel(&req.channel).is_ok_and(|r| r.options.is_shared_poll()) => {
            // A shared poll channel takes shared poll subscriptions only.
            s.reply(id, &Err(s.refuse(ApiError::BAD_REQUEST, "subscription type mismatch", &req.channel)));
        }
        Req::Subscribe(req) => {
            if req.channel.is_empty() {
                return Err(Disconnect::BAD_REQUEST);
            }
            let r = commands::subscribe(s, req).await?;
            if let Ok((_, res)) = &r {
                if s.client.format == Format::Json && res.publications.iter().any(|p| !p.data.json_ok()) {
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
            let r = commands::publish(s, channel, data).await?;
            s.reply(id, &r);
        }
        Req::Presence { channel } | Req::PresenceStats { channel } if channel.is_empty() => {
            return Err(Disconnect::BAD_REQUEST)
        }
        Req::Presence { channel } => {
            let op = ShardOp::Presence(channel.as_str().into());
            let r = match read_on_owner(s, &channel, rules::Feature::Presence, op).await {
                Ok(crate::api::Res::Presence(list)) => Ok(ReplyBody::Presence(list)),
                Ok(_) => Err(ApiError::INTERNAL),
                Err(e) => Err(e),
            };
            s.reply(id, &r);
        }
        Req::PresenceStats { channel } => {
            let op = ShardOp::PresenceStats(channel.as_str().into());
            let r = match read_on_owner(s, &channel, rules::Feature::Presence, op).await {
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
            let unlimited = h.limit == 0 && s.client.v1.get() && s.w.cfg.client.use_unlimited_history_by_default;
            let limit = if h.limit < 0 || h.limit > max || unlimited { max } else { h.limit };
            let op = ShardOp::History(crate::model::History {
                channel: h.channel.as_str().into(),
                limit,
                since: h.since,
                reverse: h.reverse,
            });
            let r = match read_on_owner(s, &h.channel, rules::Feature::History, op).await {
                Ok(crate::api::Res::History { publications, position }) => {
                    if s.client.format == Format::Json && publications.iter().any(|p| !p.data.json_ok()) {
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
        // With a refresh proxy the server refreshes; a client refresh is a protocol error.
        Req::Refresh { .. } if super::proxy::proxies(&s.w).refresh.is_some() => return Err(Disconnect::BAD_REQUEST),
        Req::Refresh { token } => commands::refresh(s, id, &token).await?,
        // Shared poll subscriptions are refreshed by the client whatever the proxies (as in
        // Centrifugo): track, untrack and token refreshes.
        Req::SubRefresh { channel, .. }
            if !super::shared_poll::is_poll(s, &channel) && super::proxy::server_refreshed(s, &channel) =>
        {
            return Err(Disconnect::BAD_REQUEST)
        }
        Req::SubRefresh { channel, kind, track, untrack, .. } if super::shared_poll::is_keyed(s, &channel, kind) => {
            super::shared_poll::sub_refresh(s, id, channel, kind, track, untrack).await
        }
        Req::SubRefresh { channel, token, .. } => commands::sub_refresh(s, id, &channel, &token).await?,
    }
    Ok(())
}

/// The command's method as Centrifugo labels it (a `ping` from a client is no command).
fn frame_of(r: &Req) -> Frame {
    match r {
        Req::Connect(_) => Frame::Connect,
        Req::Subscribe(_) => Frame::Subscribe,
        Req::Unsubscribe { .. } => Frame::Unsubscribe,
        Req::Publish { .. } | Req::MapPublish { .. } => Frame::Publish,
        Req::Presence { .. } => Frame::Presence,
        Req::PresenceStats { .. } => Frame::PresenceStats,
        Req::History(_) => Frame::History,
        Req::Pong => Frame::ClientPong,
        Req::Send { .. } => Frame::Send,
        Req::Rpc { .. } => Frame::Rpc,
        Req::Refresh { .. } => Frame::Refresh,
        Req::SubRefresh { .. } => Frame::SubRefresh,
        Req::Ping | Req::Unknown => Frame::Unknown,
    }
}
