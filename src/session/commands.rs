//! The Centrifuge protocol commands that need more than a line: connect (token claims,
//! server-side subscriptions), subscribe (namespace permissions, subscription tokens,
//! recovery), publish, refresh and sub_refresh, and the server API's actions on sessions.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::claims::{self, ConnClaims, ConnRefused, ServerSub};
use super::proxy as sp;
use super::{unix_millis, unix_now, Session, Sub, TokenUse};
use crate::api::{Command, DisconnectCmd, Overrides, Target};
use crate::client::Handler;
use crate::config::ChannelOptions;
use crate::error::{ApiError, Disconnect};
use crate::filter::Filter;
use crate::model::{Payload, Publish, StreamPosition};
use crate::protocol::{self, ConnectResult, Format, PushBody, ReplyBody, SubscribeReq, SubscribeResult};
use crate::proxy::Kind;
use crate::shard::{ShardOp, SubOp};
use crate::token::TokenError;

/// The claim naming the user in connection tokens (`client.token.user_id_claim`; "" = `sub`).
fn conn_user_claim(s: &Session) -> &str {
    &s.w.cfg.tokens().token.user_id_claim
}

/// The claim naming the user in subscription tokens: as for connection tokens when both are
/// verified alike; with `client.subscription_token` its own `user_id_claim`.
pub(super) fn sub_user_claim(s: &Session) -> &str {
    let t = s.w.cfg.tokens();
    if t.subscription_token.enabled {
        &t.subscription_token.token.user_id_claim
    } else {
        &t.token.user_id_claim
    }
}

/// The user's personal channel (`client.subscribe_to_user_personal_channel`).
fn personal_channel(cfg: &crate::config::Config, user: &str) -> String {
    let ns = &cfg.client.subscribe_to_user_personal_channel.personal_channel_namespace;
    if ns.is_empty() {
        format!("{}{}", cfg.channel().user_boundary, user)
    } else {
        format!("{}{}{}{}", ns, cfg.channel().namespace_boundary, cfg.channel().user_boundary, user)
    }
}

/// Whether a token's `data` can travel to this client: a JSON client gets it only when it is
/// JSON (binary `b64data` that is not would make its text frame invalid), as with binary
/// publications.
pub(super) fn json_ok(s: &Session, data: &Option<Bytes>) -> bool {
    s.client.format != Format::Json || data.as_ref().is_none_or(|d| crate::model::is_json(d))
}

/// `client.subscribe_to_user_personal_channel.single_connection`: every other connection of
/// the user, on any worker and (with Redis) any node, is disconnected with 3504 before this one
/// is accepted. The disconnect goes out whatever the personal channel's presence says: with
/// Redis, the presence of a connection accepted a moment ago on another worker may not be
/// written yet, and a check of it would let both connections live.
async fn keep_single_connection(s: &Rc<Session>, user: &str) -> Result<(), Disconnect> {
    let d = Disconnect::CONNECTION_LIMIT;
    let cmd = Command::Disconnect(DisconnectCmd {
        target: Target { user: user.into(), ..Default::default() },
        whitelist: vec![s.client.id.as_ref().into()],
        code: d.code,
        reason: d.reason.as_ref().into(),
    });
    crate::cluster::act(&s.w, cmd).await.map(|_| ()).map_err(|_| Disconnect::INTERNAL)
}

pub(super) async fn connect(s: &Rc<Session>, id: u32, c: protocol::ConnectReq) -> Result<(), Disconnect> {
    let cfg = s.w.cfg.clone();
    if !c.headers.is_empty() {
        s.keep_emulated_headers(&c.headers);
    }
    let connect_proxy_on = c.token.is_empty().then(|| sp::proxies(&s.w).connect.clone()).flatten();
    let mut reply_data = None;
    let mut proxied = false;
    let claims = if let Some(p) = connect_proxy_on {
        match super::proxied::connect_proxy(s, &p, id, &c).await? {
            super::proxied::ProxyConnect::Accepted(claims, data) => {
                reply_data = data;
                proxied = true;
                claims
            }
            super::proxied::ProxyConnect::Replied => return Ok(()),
            super::proxied::ProxyConnect::NoResult
                if cfg.client.allow_anonymous_connect_without_token || cfg.client.insecure =>
            {
                ConnClaims::default()
            }
            super::proxied::ProxyConnect::NoResult => return Err(Disconnect::BAD_REQUEST),
        }
    } else if !c.token.is_empty() {
        match s.verify_token(TokenUse::Connect, &c.token, "").await {
            Ok(claims) => match claims::conn(&claims, conn_user_claim(s)) {
                Ok(c) => {
                    ConnClaims { hidden: super::hidden::is_marked(&cfg.tokens().token.hmac_secret_key, &claims), ..c }
                }
                Err(ConnRefused::Invalid) => return Err(Disconnect::INVALID_TOKEN),
                Err(ConnRefused::BadInfo) => {
                    s.st.borrow_mut().unusable = true;
                    s.reply(id, &Err(ApiError::INTERNAL));
                    return Ok(());
                }
            },
            Err(TokenError::Expired) if !cfg.client.insecure => {
                s.st.borrow_mut().unusable = true;
                s.reply(id, &Err(ApiError::TOKEN_EXPIRED));
                return Ok(());
            }
            Err(_) if cfg.client.insecure => ConnClaims::default(),
            Err(_) => return Err(Disconnect::INVALID_TOKEN),
        }
    } else if cfg.client.allow_anonymous_connect_without_token || cfg.client.insecure {
        ConnClaims::default()
    } else {
        return Err(Disconnect::BAD_REQUEST);
    };
    if claims.user.is_empty() && !c.token.is_empty() && cfg.client.disallow_anonymous_connection_tokens {
        tracing::debug!(client = %s.client.id, remote = %s.remote(), "anonymous connection tokens disallowed");
        return Err(Disconnect::PERMISSION_DENIED);
    }
    let personal = &cfg.client.subscribe_to_user_personal_channel;
    if personal.enabled && personal.single_connection && !claims.user.is_empty() && !claims.hidden {
        keep_single_connection(s, &claims.user).await?;
        if s.st.borrow().closed {
            return Err(Disconnect::new(3000, "connection closed"));
        }
    }
    let now = unix_now();
    let expire_at = if cfg.client.insecure && !proxied { 0 } else { claims.expire_at };
    if expire_at > 0 && expire_at <= now {
        s.st.borrow_mut().unusable = true;
        s.reply(id, &Err(ApiError::EXPIRED));
        return Ok(());
    }
    let user: Arc<str> = claims.user.as_str().into();
    // Validate server-side channels before changing any state.
    let mut server_subs = claims.subs;
    if personal.enabled && !user.is_empty() {
        let channel = personal_channel(&cfg, &user);
        if !server_subs.iter().any(|sub| sub.channel == channel) {
            server_subs.push(ServerSub { channel, ..Default::default() });
        }
    }
    if server_subs.len() > cfg.client.channel_limit {
        return Err(Disconnect::CHANNEL_LIMIT);
    }
    if server_subs.iter().any(|sub| !json_ok(s, &sub.data)) {
        return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
    }
    for sub in &server_subs {
        if let Err(e) = cfg.resolve_channel(&sub.channel) {
            s.st.borrow_mut().unusable = true;
            s.reply(id, &Err(e));
            return Ok(());
        }
    }
    if cfg.client.user_connection_limit > 0 && !user.is_empty() && !claims.hidden {
        if !super::slots::take(&s.w, &user, cfg.client.user_connection_limit).await {
            let limit = cfg.client.user_connection_limit;
            tracing::info!(user = %user, client = %s.client.id, remote = %s.remote(), limit, "limit of connections for user reached");
            return Err(Disconnect::CONNECTION_LIMIT);
        }
        let mut st = s.st.borrow_mut();
        if st.closed {
            // Gone while the slot was being taken: the cleanup has already run.
            drop(st);
            super::slots::give_back(&s.w, user);
            return Ok(());
        }
        st.user_slot = true;
    }
    {
        let mut st = s.st.borrow_mut();
        st.connected = true;
        st.user = user.clone();
        st.conn_info = claims.info;
        st.expires_at = expire_at;
        st.hidden = claims.hidden;
        st.meta = claims.meta.map(Box::new);
        st.labels = s.accepted(claims.hidden, &c);
    }
    if !claims.hidden {
        s.w.hub.user_added(&user);
    }
    // With a refresh proxy the server refreshes the connection itself: the client is not
    // told when it expires.
    let client_refresh = expire_at > 0 && sp::proxies(&s.w).refresh.is_none();
    let mut result = ConnectResult {
        client: s.client.id.to_string(),
        version: s.w.node.version.clone(),
        expires: client_refresh,
        ttl: if client_refresh { (expire_at - now) as u32 } else { 0 },
        data: reply_data,
        ping: ping_interval(s).as_secs() as u32,
        pong: !cfg.client.pong_timeout.is_zero() && !s.client.framing.is_uni() && !s.client.v1.get(),
        session: s.sid.as_deref().unwrap_or_default().to_string(),
        node: if s.client.framing.is_emulated() { s.w.node.uid.clone() } else { String::new() },
        ..Default::default()
    };
    let mut live: Vec<Arc<str>> = Vec::new();
    for ServerSub { channel: ch, info, data, overrides } in server_subs {
        let recover = c.subs.iter().find(|(k, _)| *k == ch).map(|(_, r)| r.clone());
        let req = SubscribeReq {
            channel: ch.clone(),
            recover: recover.as_ref().is_some_and(|r| r.recover),
            offset: recover.as_ref().map(|r| r.offset).unwrap_or(0),
            epoch: recover.map(|r| r.epoch).unwrap_or_default(),
            ..Default::default()
        };
        match subscribe_owned(s, req, info, true, 0, overrides).await {
            Ok(Ok((channel, mut res))) => {
                res.data = data;
                live.push(channel);
                result.subs.push((ch, res));
            }
            Ok(Err(e)) => {
                tracing::debug!(channel = %ch, error = %e, "server-side subscription failed");
            }
            Err(d) => return Err(d),
        }
    }
    if cfg.client.connect_include_server_time {
        result.time = unix_millis();
    }
    s.reply(id, &Ok(ReplyBody::Connect(result)));
    for ch in live {
        s.release(&ch);
    }
    // Connected: the timers switch from the stale deadline to pings and expiry.
    s.reschedule_now();
    Ok(())
}

pub(super) type SubOutcome = Result<Result<(Arc<str>, SubscribeResult), ApiError>, Disconnect>;

/// Bit of a subscribe request's `flag`: answer an unrecoverable position with error 112.
const FLAG_REJECT_UNRECOVERED: i64 = 2;

/// Client-side subscribe with permission checks.
pub(super) async fn subscribe(s: &Rc<Session>, req: SubscribeReq) -> SubOutcome {
    let cfg = s.w.cfg.clone();
    let ch = req.channel.clone();
    let ch = ch.as_str();
    {
        let st = s.st.borrow();
        let (subscribed, count) =
            (st.subs.contains_key(ch) || st.pending.contains_key(ch), st.subs.len() + st.pending.len());
        drop(st);
        if subscribed {
            return Ok(Err(s.refuse(ApiError::ALREADY_SUBSCRIBED, "client already subscribed on channel", ch)));
        }
        if count >= cfg.client.channel_limit {
            let why = format!("maximum limit of channels per client reached (limit {})", cfg.client.channel_limit);
            return Ok(Err(s.refuse(ApiError::LIMIT_EXCEEDED, &why, ch)));
        }
    }
    if ch.len() > cfg.channel().max_length {
        return Ok(Err(s.refuse(ApiError::BAD_REQUEST, "channel too long", ch)));
    }
    let o = match cfg.resolve_channel(ch) {
        Ok(r) => r.options,
        Err(e) => return Ok(Err(s.refuse(e, "subscribe unknown channel", ch))),
    };
    if !cfg.client_channel_allowed(ch, o) {
        return Ok(Err(s.refuse(ApiError::BAD_REQUEST, "invalid channel name", ch)));
    }
    if !req.delta.is_empty() && req.delta != "fossil" {
        return Err(Disconnect::BAD_REQUEST);
    }
    let user = s.st.borrow().user.clone();
    if !req.token.is_empty() {
        let t = match super::rules::sub_token(s, &req).await? {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if !json_ok(s, &t.data) {
            return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
        }
        let r = subscribe_owned(s, req, t.info, false, t.expire_at, t.overrides).await;
        return r.map(|r| r.map(|(channel, res)| (channel, SubscribeResult { data: t.data, ..res })));
    }
    if let Err(e) = super::rules::not_private(s, ch) {
        return Ok(Err(e));
    }
    let limited = super::rules::user_allowed(&cfg, o, &req.channel, &user);
    if limited.is_none() {
        match sp::channel_proxy(s, Kind::Subscribe, o) {
            Some(Ok(p)) => return super::proxied::subscribe_proxy(s, &p, req).await,
            Some(Err(e)) => return Ok(Err(e)),
            None => {}
        }
        match sp::channel_proxy(s, Kind::SubscribeStream, o) {
            Some(Ok(p)) => return super::streams::subscribe(s, &p, req).await,
            Some(Err(e)) => return Ok(Err(e)),
            None => {}
        }
    }
    if let Err(e) = super::rules::permitted(s, o, ch, &user, limited) {
        return Ok(Err(e));
    }
    subscribe_owned(s, req, None, false, 0, Overrides::default()).await
}

/// Registers the subscription with the channel's owner (permissions already checked).
pub(super) async fn subscribe_owned(
    s: &Rc<Session>,
    req: SubscribeReq,
    chan_info: Option<Bytes>,
    server_side: bool,
    expires_at: i64,
    overrides: Overrides,
) -> SubOutcome {
    let cfg = s.w.cfg.clone();
    let o = match cfg.resolve_channel(&req.channel) {
        Ok(r) => r.options,
        Err(e) => return Ok(Err(e)),
    };
    let filter = match tags_filter(s, &req, o) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    // Per-subscription overrides (token `subs`, API subscribe) win over the namespace; a
    // hidden session has neither presence nor join/leave.
    let hidden = s.st.borrow().hidden;
    let presence = !hidden && overrides.presence.unwrap_or(o.presence);
    let join_leave = !hidden && overrides.join_leave.unwrap_or(o.join_leave);
    let force_push_join_leave = overrides.force_push_join_leave.unwrap_or(o.force_push_join_leave);
    let force_recovery = overrides.force_recovery.unwrap_or(o.force_recovery);
    let force_positioning = overrides.force_positioning.unwrap_or(o.force_positioning);
    // Map channels always keep a stream: their subscribers catch up from it.
    let history = o.history_enabled() || o.is_map();
    let may_ask = o.allow_recovery || o.allow_history_for_client || cfg.client.insecure || o.is_map();
    let recoverable = history && (force_recovery || (req.recoverable && may_ask));
    let positioned =
        history && (recoverable || force_positioning || (req.positioned && (o.allow_positioning || may_ask)));
    let presence_allowed = cfg.client.insecure || o.allow_presence_for_client || o.allow_presence_for_subscriber;
    let sub = Sub {
        chan_info: chan_info.clone(),
        presence,
        join_leave,
        // A client's own `join_leave` request needs the namespace's option, whatever a token's
        // override says.
        push_join_leave: force_push_join_leave || (o.join_leave && req.join_leave && presence_allowed),
        server_side,
        expires_at,
        poll: false,
        delta: false,
    };
    let channel: Arc<str> = req.channel.as_str().into();
    let info = s.info(chan_info);
    // Cache recovery hands over the latest publication only; with `auto_cache_recover` every
    // subscribe recovers, whether or not the client asked.
    let cache = o.force_recovery_mode == "cache";
    let auto = cache && o.auto_cache_recover;
    let recover = (recoverable && (req.recover || auto))
        .then(|| StreamPosition { offset: req.offset, epoch: req.epoch.as_str().into() });
    let op = SubOp {
        channel: channel.clone(),
        worker: s.w.id as u16,
        presence: presence.then(|| info.clone()),
        join: join_leave.then_some(info),
        recover: recover.clone(),
        position: positioned,
        // A map subscriber going live catches up with at most its namespace's limit (more:
        // 112, and it loads the state again).
        recover_limit: if o.is_map() {
            o.map.live_transition_limit()
        } else {
            cfg.client.recovery_max_publication_limit
        },
        cache,
        // A client that can load the state itself (`getState`) asks for 112 rather than a
        // fresh position when its position cannot be recovered from the stream.
        reject_unrecovered: !cache && req.flag & FLAG_REJECT_UNRECOVERED != 0,
    };
    let push_join_leave = sub.push_join_leave;
    // Fossil deltas: asked by the client and allowed by the namespace (else full payloads,
    // as Centrifugo answers).
    let delta = req.delta == "fossil" && o.fossil_allowed();
    {
        // API and gateway subscriptions run beside the client's commands: one at a time per
        // channel, so the owner never counts a session twice.
        let mut st = s.st.borrow_mut();
        if st.closed {
            return Err(Disconnect::new(3000, "connection closed"));
        }
        if st.subs.contains_key(&channel) || st.pending.contains_key(&channel) {
            return Ok(Err(ApiError::ALREADY_SUBSCRIBED));
        }
        st.pending.insert(channel.clone(), sub.clone());
    }
    s.client.expect(&channel);
    let r = s.w.subscribe(&s.client, push_join_leave, delta, filter.clone(), op).await;
    let mut st = s.st.borrow_mut();
    st.pending.remove(&channel);
    if st.pending.is_empty() {
        // An idle session keeps no table for subscriptions in flight.
        st.pending.shrink_to_fit();
    }
    if st.closed {
        return Err(Disconnect::new(3000, "connection closed"));
    }
    let outcome = match r {
        Ok(o) => o,
        Err(e) => {
            s.client.take_held(&channel);
            return Ok(Err(e));
        }
    };
    let chan_info = sub.chan_info.clone();
    st.subs.insert(channel.clone(), sub);
    crate::metrics::subscription_accepted(st.labels);
    drop(st);
    super::map_presence::started(s, &channel, o, chan_info);
    if expires_at > 0 {
        s.reschedule_now();
    }
    let now = unix_now();
    let mut res = SubscribeResult {
        recoverable,
        positioned,
        was_recovering: req.recover || recover.is_some(),
        expires: expires_at > 0,
        ttl: if expires_at > now { (expires_at - now) as u32 } else { 0 },
        ..Default::default()
    };
    if let Some(pos) = outcome.position {
        res.epoch = pos.epoch.to_string();
        res.offset = pos.offset;
    }
    if outcome.recovered {
        res.recovered = true;
        res.publications = outcome.publications;
        if let Some(f) = &filter {
            res.publications.retain(|p| f.matches(p.tags.as_deref().unwrap_or_default()));
        }
        if let Some(since) = &recover {
            res.offset = since.offset;
        }
    }
    if recover.is_some() {
        crate::metrics::recover(res.recovered, !res.publications.is_empty());
    }
    if delta {
        res.delta = true;
        if s.client.format == Format::Json {
            // Recovered publications come in full, in the delta form: data as a JSON string.
            crate::delta::as_json_strings(&mut res.publications);
        }
    }
    Ok(Ok((channel, res)))
}

/// The subscription's tags filter (`tf`): refused with 107 when the channel does not allow
/// one or it is malformed, as Centrifugo answers.
fn tags_filter(s: &Session, req: &SubscribeReq, o: &ChannelOptions) -> Result<Option<Arc<Filter>>, ApiError> {
    let Some(tf) = &req.tf else { return Ok(None) };
    if !o.allow_tags_filter {
        return Err(s.refuse(ApiError::BAD_REQUEST, "tags filter not allowed", &req.channel));
    }
    match Filter::compile(tf) {
        Ok(f) => Ok(Some(Arc::new(f))),
        Err(e) => Err(s.refuse(ApiError::BAD_REQUEST, &format!("invalid tags filter: {}", e.0), &req.channel)),
    }
}

/// A client publication; `Err` closes the connection (a publish proxy's disconnect).
pub(super) async fn publish(
    s: &Rc<Session>,
    channel: String,
    data: Bytes,
) -> Result<Result<ReplyBody, ApiError>, Disconnect> {
    let cfg = s.w.cfg.clone();
    if channel.len() > cfg.channel().max_length {
        return Ok(Err(s.refuse(ApiError::BAD_REQUEST, "channel too long", &channel)));
    }
    let o = match cfg.resolve_channel(&channel) {
        Ok(r) => r.options,
        Err(e) => return Ok(Err(s.refuse(e, "publish unknown channel", &channel))),
    };
    if !cfg.client_channel_allowed(&channel, o) {
        return Ok(Err(s.refuse(ApiError::BAD_REQUEST, "invalid channel name", &channel)));
    }
    if let Some(r) = super::streams::publish(s, &channel, &data, o) {
        return Ok(r);
    }
    match sp::channel_proxy(s, Kind::Publish, o) {
        Some(Ok(p)) => return super::proxied::publish_proxy(s, &p, channel, data).await,
        Some(Err(e)) => return Ok(Err(e)),
        None => {}
    }
    Ok(publish_checked(s, channel, data, o).await)
}

/// A publication the namespace's permissions decide on.
async fn publish_checked(
    s: &Rc<Session>,
    channel: String,
    data: Bytes,
    o: &ChannelOptions,
) -> Result<ReplyBody, ApiError> {
    let cfg = s.w.cfg.clone();
    let (anon, subscribed, chan_info) = {
        let st = s.st.borrow();
        let sub = st.subs.get(channel.as_str());
        (st.user.is_empty(), sub.is_some(), sub.and_then(|s| s.chan_info.clone()))
    };
    let allowed = cfg.client.insecure
        || ((o.allow_publish_for_client || (o.allow_publish_for_subscriber && subscribed))
            && (!anon || o.allow_publish_for_anonymous));
    if !allowed {
        return Err(s.refuse(
            ApiError::PERMISSION_DENIED,
            "attempt to publish without sufficient permission",
            &channel,
        ));
    }
    let data = Payload { bytes: data, binary: s.client.format == Format::Protobuf };
    let p = Publish { info: Some(Arc::new(s.info(chan_info))), ..Publish::new(channel.as_str(), data) };
    match s.w.call_shard(ShardOp::Publish(p)).await {
        Ok(_) => Ok(ReplyBody::Publish),
        Err(e) => Err(e),
    }
}

pub(super) async fn refresh(s: &Rc<Session>, id: u32, token: &str) -> Result<(), Disconnect> {
    if token.is_empty() {
        return Err(Disconnect::BAD_REQUEST);
    }
    let claims = match s.verify_token(TokenUse::Refresh, token, "").await {
        Ok(c) => match claims::conn(&c, conn_user_claim(s)) {
            Ok(c) => c,
            Err(ConnRefused::Invalid) => return Err(Disconnect::INVALID_TOKEN),
            Err(ConnRefused::BadInfo) => {
                s.reply(id, &Err(ApiError::INTERNAL));
                return Ok(());
            }
        },
        Err(TokenError::Expired) => return Err(Disconnect::EXPIRED),
        Err(_) => return Err(Disconnect::INVALID_TOKEN),
    };
    let now = unix_now();
    {
        let mut st = s.st.borrow_mut();
        if *claims.user != *st.user {
            return Err(Disconnect::INVALID_TOKEN);
        }
        if claims.expire_at > 0 && claims.expire_at <= now {
            return Err(Disconnect::EXPIRED);
        }
        st.expires_at = claims.expire_at;
        if claims.info.is_some() {
            st.conn_info = claims.info;
        }
        // As Centrifugo: a refresh token's `meta` replaces the connection's.
        if claims.meta.is_some() {
            st.meta = claims.meta.map(Box::new);
        }
    }
    let ttl = if claims.expire_at > 0 { (claims.expire_at - now) as u32 } else { 0 };
    s.reply(
        id,
        &Ok(ReplyBody::Refresh { client: String::new(), version: String::new(), expires: claims.expire_at > 0, ttl }),
    );
    Ok(())
}

pub(super) async fn sub_refresh(s: &Rc<Session>, id: u32, channel: &str, token: &str) -> Result<(), Disconnect> {
    if channel.is_empty() {
        return Err(Disconnect::BAD_REQUEST);
    }
    if !s.st.borrow().subs.contains_key(channel) {
        s.reply(id, &Err(ApiError::PERMISSION_DENIED));
        return Ok(());
    }
    if token.is_empty() {
        s.reply(id, &Err(ApiError::BAD_REQUEST));
        return Ok(());
    }
    let t = match s.verify_token(TokenUse::SubRefresh, token, channel).await {
        Ok(c) => claims::sub(&c, sub_user_claim(s)).map_err(|_| Disconnect::INVALID_TOKEN)?,
        Err(TokenError::Expired) => {
            s.reply(id, &Err(ApiError::TOKEN_EXPIRED));
            return Ok(());
        }
        Err(_) => return Err(Disconnect::INVALID_TOKEN),
    };
    if let Err(e) = s.w.cfg.resolve_channel(&t.channel) {
        s.reply(id, &Err(e));
        return Ok(());
    }
    let user = s.st.borrow().user.clone();
    if t.channel != channel || t.user != *user || (!t.client.is_empty() && *t.client != *s.client.id) {
        return Err(Disconnect::INVALID_TOKEN);
    }
    let now = unix_now();
    let exp = t.expire_at;
    if exp > 0 && exp <= now {
        s.reply(id, &Err(ApiError::EXPIRED));
        return Ok(());
    }
    if let Some(sub) = s.st.borrow_mut().subs.get_mut(channel) {
        sub.expires_at = exp;
        // The token's channel info replaces the subscription's (publications and leave
        // messages of this client carry it from now on).
        sub.chan_info = t.info;
    }
    s.reply(id, &Ok(ReplyBody::SubRefresh { expires: exp > 0, ttl: if exp > 0 { (exp - now) as u32 } else { 0 } }));
    Ok(())
}

/// Tells a client about a server-side subscription (a `subscribe` push), then lets the
/// channel's held publications follow.
fn push_subscribed(s: &Rc<Session>, channel: &Arc<str>, res: SubscribeResult, data: Option<Bytes>) {
    s.push(
        channel,
        &PushBody::Subscribe {
            recoverable: res.recoverable,
            epoch: res.epoch,
            offset: res.offset,
            positioned: res.positioned,
            data,
        },
    );
    s.release(channel);
}

/// A server-side subscription made by the gateway (`conn.call subscribe`): raw clients get
/// nothing but the publications; Centrifugo clients get a `subscribe` push first.
pub(super) async fn server_subscribe(s: &Rc<Session>, channel: &str) -> Result<(), ApiError> {
    if channel.is_empty() || channel.len() > s.w.cfg.channel().max_length {
        return Err(ApiError::BAD_REQUEST);
    }
    let req = SubscribeReq { channel: channel.to_string(), ..Default::default() };
    match subscribe_owned(s, req, None, true, 0, Overrides::default()).await {
        Ok(Ok((channel, res))) => {
            push_subscribed(s, &channel, res, None);
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::INTERNAL),
    }
}

/// Centrifugo's selection: the user's connections (user "" = anonymous ones), narrowed to one
/// client id when given. WebSocket sessions have no session id, so a `session` filter
/// matches none of them.
fn matches_target(s: &Session, t: &crate::api::Target) -> bool {
    let st = s.st.borrow();
    st.connected
        && !st.closed
        && *t.user == *st.user
        && (t.client.is_empty() || *t.client == *s.client.id)
        && (t.session.is_empty() || s.sid.as_deref() == Some(&*t.session))
}

/// The server ping interval of this session's transport: the unidirectional gRPC stream
/// pings every 25 seconds whatever `client.ping_interval` says (as Centrifugo's does).
pub(super) fn ping_interval(s: &Session) -> std::time::Duration {
    if s.client.framing.is_sockjs() {
        // SockJS heartbeats.
        s.w.cfg.sockjs.heartbeat_delay
    } else if s.client.v1.get() {
        // The older protocol's clients ping; the server does not.
        std::time::Duration::ZERO
    } else if s.client.framing == crate::client::Framing::UniGrpc {
        std::time::Duration::from_secs(25)
    } else {
        s.w.cfg.client.ping_interval
    }
}

/// Applies an API subscribe/unsubscribe/disconnect/refresh to this session when it is one of
/// the command's targets. A subscribe runs on its own; the returned future resolves when it
/// finished (subscribed or refused), so the API answers after the subscription is live, as
/// Centrifugo does for its own node's connections.
pub(super) fn api_act(s: &Rc<Session>, cmd: &Command) -> Option<crate::client::Pending> {
    match cmd {
        Command::Disconnect(d) if matches_target(s, &d.target) && !d.whitelist.iter().any(|c| **c == *s.client.id) => {
            s.disconnect(Disconnect { code: d.code, reason: d.reason.to_string().into() });
        }
        Command::Unsubscribe(u) if matches_target(s, &u.target) => {
            let chans: Vec<Arc<str>> = if u.channel.is_empty() {
                s.st.borrow().subs.keys().cloned().collect()
            } else {
                vec![u.channel.as_ref().into()]
            };
            for ch in chans {
                s.unsubscribe(&ch, Some((2000, "server unsubscribe")));
            }
        }
        Command::Refresh(r) if matches_target(s, &r.target) => {
            if r.expired {
                s.disconnect(Disconnect::EXPIRED);
                return None;
            }
            let now = unix_now();
            {
                let mut st = s.st.borrow_mut();
                st.expires_at = r.expire_at;
                if let Some(i) = &r.info {
                    st.conn_info = Some(i.bytes.clone());
                }
            }
            let ttl = if r.expire_at > now { (r.expire_at - now) as u32 } else { 0 };
            s.push("", &PushBody::Refresh { expires: r.expire_at > 0, ttl });
        }
        Command::Subscribe(sub) if matches_target(s, &sub.target) && !s.st.borrow().subs.contains_key(&sub.channel) => {
            let (s, sub) = (s.clone(), sub.clone());
            let (done, finished) = crate::notify::oneshot::<()>();
            monoio::spawn(async move {
                let recover = sub.recover_since.as_ref();
                let req = SubscribeReq {
                    channel: sub.channel.to_string(),
                    recover: recover.is_some(),
                    offset: recover.map(|p| p.offset).unwrap_or(0),
                    epoch: recover.map(|p| p.epoch.to_string()).unwrap_or_default(),
                    recoverable: recover.is_some(),
                    ..Default::default()
                };
                let info = sub.info.as_ref().map(|p| p.bytes.clone());
                if let Ok(Ok((channel, res))) = subscribe_owned(&s, req, info, true, sub.expire_at, sub.overrides).await
                {
                    push_subscribed(&s, &channel, res, sub.data.as_ref().map(|p| p.bytes.clone()));
                }
                done(());
            });
            return Some(Box::pin(finished));
        }
        _ => {}
    }
    None
}
