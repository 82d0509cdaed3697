//! Map subscriptions (`type` 1 in subscribe): the client reads the channel's state page by
//! page (phase 2), then goes live; the last page's reply is the subscription, carrying the
//! changes made since the first page (read from the channel's stream on the owner in the
//! same step that counts the subscriber, so nothing is missed). A client that recovers
//! (phase 1 or 0 with `recover`) goes live at once with the changes since its position, or
//! gets 112 (unrecoverable position) and loads the state again.

use std::rc::Rc;
use std::sync::Arc;

use super::{commands, Session, TokenUse};
use crate::api::Res;
use crate::error::{ApiError, Disconnect};
use crate::model::{Payload, Publication, Publish};
use crate::protocol::{Format, ReplyBody, SubscribeReq, SubscribeResult};
use crate::shard::{MapPub, ShardOp};

/// Phases of a map subscribe, as the client protocol numbers them.
const PHASE_STATE: i32 = 2;

/// Asks the owner to answer with 112 rather than a fresh position (see `commands`).
const FLAG_REJECT_UNRECOVERED: i64 = 2;

/// The subscription to `channel` ended: its presence map keys go (see [`map_presence`]);
/// with `map.remove_client_on_unsubscribe` its client's key (the client id) is removed.
///
/// [`map_presence`]: super::map_presence
pub(super) fn ended(s: &Session, channel: &str) {
    let Ok(r) = s.w.cfg.resolve_channel(channel) else { return };
    super::map_presence::ended(s, channel, r.options);
    if !r.options.is_map() || !r.options.map.remove_client_on_unsubscribe {
        return;
    }
    let publish = Publish::new(channel, Payload { bytes: bytes::Bytes::new(), binary: false });
    let op = ShardOp::MapPublish(Box::new(MapPub::new(publish, s.client.id.clone(), true)));
    s.w.submit_shard(op, crate::runtime::worker::Tag::Discard);
}

/// A map subscribe command (any phase); the reply is written here.
pub(super) async fn subscribe(s: &Rc<Session>, id: u32, req: SubscribeReq) -> Result<(), Disconnect> {
    let r = run(s, req).await?;
    match r {
        Ok((channel, res)) => {
            // Binary values (published with `b64data`) cannot reach a JSON client.
            let json = s.client.format == Format::Json;
            if json && res.state.iter().chain(&res.publications).any(|p| !p.data.json_ok()) {
                return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
            }
            let live = res.phase == 0;
            s.reply(id, &Ok(ReplyBody::Subscribe(res)));
            if live {
                s.release(&channel);
            }
        }
        Err(e) => s.reply(id, &Err(e)),
    }
    Ok(())
}

type Outcome = Result<Result<(Arc<str>, SubscribeResult), ApiError>, Disconnect>;

async fn run(s: &Rc<Session>, req: SubscribeReq) -> Outcome {
    let cfg = s.w.cfg.clone();
    let o = match cfg.resolve_channel(&req.channel) {
        Ok(r) => r.options,
        Err(e) => return Ok(Err(e)),
    };
    if !o.is_map() || req.kind != o.subscription_kind() {
        return Ok(Err(s.refuse(ApiError::BAD_REQUEST, "subscription type mismatch", &req.channel)));
    }
    if let Err(e) = may_read(s, &req, o).await {
        return Ok(Err(e));
    }
    if req.phase != PHASE_STATE {
        // Straight to live: a recovery from the client's position.
        let since = (req.offset, req.epoch.clone());
        return live(s, req, since, Vec::new(), true).await;
    }
    let limit = o.map.page_size(req.limit);
    let channel = req.channel.as_str().into();
    let op = ShardOp::MapRead {
        channel,
        cursor: req.cursor.clone(),
        limit,
        key: String::new(),
        revision_epoch: String::new(),
    };
    let (entries, position, cursor) = match s.w.call_shard(op).await {
        Ok(Res::MapState { entries, position, cursor }) => (entries, position, cursor),
        Ok(_) => return Ok(Err(ApiError::INTERNAL)),
        Err(e) => return Ok(Err(e)),
    };
    // Later pages name the position of the first one: entries changed since are left to
    // the stream catch-up.
    let continued = !req.epoch.is_empty();
    if continued && *req.epoch != *position.epoch {
        return Ok(Err(ApiError::UNRECOVERABLE_POSITION));
    }
    let frozen = if continued { req.offset } else { position.offset };
    if let Some(limit) = o.map.catch_up_timeout() {
        if loading_too_long(s, &req.channel, continued, !cursor.is_empty(), limit) {
            return Err(Disconnect::SLOW);
        }
    }
    // A tags filter (where the namespace allows one) applies to the state too.
    let filter = match (&req.tf, o.allow_tags_filter) {
        (Some(tf), true) => crate::filter::Filter::compile(tf).ok(),
        _ => None,
    };
    let passes = |p: &Publication| filter.as_ref().is_none_or(|f| f.matches(p.tags.as_deref().unwrap_or_default()));
    let mut entries: Vec<Publication> =
        entries.into_iter().filter(|p| (!continued || p.offset <= frozen) && passes(p)).collect();
    if req.delta == "fossil" && o.fossil_allowed() && s.client.format == Format::Json {
        // Delta will be negotiated: JSON clients keep each key's exact bytes as the base of
        // its patches, so values come as JSON strings (as Centrifugo sends them).
        crate::delta::as_json_strings(&mut entries);
    }
    if !cursor.is_empty() {
        let res = SubscribeResult {
            kind: req.kind,
            phase: PHASE_STATE,
            cursor,
            epoch: position.epoch.to_string(),
            offset: frozen,
            state: entries,
            ..Default::default()
        };
        return Ok(Ok((req.channel.as_str().into(), res)));
    }
    live(s, req, (frozen, position.epoch.to_string()), entries, false).await
}

/// `map.subscribe_catch_up_timeout`: whether the client has been paging through `channel`'s
/// state for longer than `limit` (the first page starts the clock, the last one stops it).
fn loading_too_long(s: &Session, channel: &str, continued: bool, more: bool, limit: std::time::Duration) -> bool {
    let now = std::time::Instant::now();
    let mut st = s.st.borrow_mut();
    let loading = st.map_loading.get_or_insert_with(Default::default);
    let started = match loading.get(channel) {
        Some(at) if continued => *at,
        _ => now,
    };
    if more {
        loading.insert(channel.into(), started);
    } else {
        loading.remove(channel);
    }
    if loading.is_empty() {
        st.map_loading = None;
    }
    now.duration_since(started) > limit
}

/// Subscribes (the regular subscribe with its checks), recovering the stream after `since`.
async fn live(
    s: &Rc<Session>,
    req: SubscribeReq,
    since: (u64, String),
    state: Vec<Publication>,
    recovering: bool,
) -> Outcome {
    let recoverable = s.w.cfg.resolve_channel(&req.channel).map(|r| r.options.map.recoverable()).unwrap_or(false);
    let kind = req.kind;
    let inner = SubscribeReq {
        recover: true,
        recoverable: true,
        offset: since.0,
        epoch: since.1,
        flag: req.flag | FLAG_REJECT_UNRECOVERED,
        ..req
    };
    let r = commands::subscribe(s, inner).await?;
    Ok(r.map(|(channel, mut res)| {
        let top = res.publications.last().map_or(since.0, |p| p.offset.max(since.0));
        res.kind = kind;
        res.phase = 0;
        res.state = state;
        res.offset = top;
        res.recoverable = recoverable;
        res.positioned = false;
        res.recovered = recovering;
        res.was_recovering = recovering;
        (channel, res)
    }))
}

/// Whether the client may read the channel's state: a valid subscription token for this
/// channel, or the namespace's subscribe permissions (user-limited channels included). The
/// final (live) step runs the whole subscribe check. A subscribe proxy is not asked for pages:
/// map namespaces need `allow_subscribe_for_client` or tokens.
async fn may_read(s: &Rc<Session>, req: &SubscribeReq, o: &crate::config::ChannelOptions) -> Result<(), ApiError> {
    let cfg = s.w.cfg.clone();
    if !req.token.is_empty() {
        return match s.verify_token(TokenUse::Subscribe, &req.token, &req.channel).await {
            Ok(claims) if claims.get("channel").and_then(|c| c.as_str()) == Some(req.channel.as_str()) => Ok(()),
            _ => Err(ApiError::PERMISSION_DENIED),
        };
    }
    let private =
        !cfg.channel().private_prefix.is_empty() && req.channel.starts_with(cfg.channel().private_prefix.as_str());
    let user = s.st.borrow().user.clone();
    let allowed = cfg.client.insecure
        || match super::rules::user_allowed(&cfg, o, &req.channel, &user) {
            Some(ok) => ok,
            None => !private && o.allow_subscribe_for_client && (!user.is_empty() || o.allow_subscribe_for_anonymous),
        };
    if allowed {
        Ok(())
    } else {
        Err(s.refuse(ApiError::PERMISSION_DENIED, "attempt to subscribe without sufficient permission", &req.channel))
    }
}

/// A client's publish of `type` 1: sets (or removes) a key of a map channel.
pub(super) async fn publish(
    s: &Rc<Session>,
    channel: String,
    data: bytes::Bytes,
    key: String,
    removed: bool,
) -> Result<ReplyBody, ApiError> {
    let cfg = s.w.cfg.clone();
    let o = cfg.resolve_channel(&channel)?.options;
    if !o.is_map() {
        return Err(ApiError::BAD_REQUEST);
    }
    if !cfg.client_channel_allowed(&channel, o) {
        return Err(s.refuse(ApiError::BAD_REQUEST, "invalid channel name", &channel));
    }
    // With the namespace's publish (remove) proxy on, the backend decides instead of the
    // permissions below.
    if let Some(p) = super::map_proxy::proxy(s, o, removed) {
        return super::map_proxy::publish(s, p?, channel, data, key, removed).await;
    }
    let (anon, subscribed, chan_info, user) = {
        let st = s.st.borrow();
        let sub = st.subs.get(channel.as_str());
        (st.user.is_empty(), sub.is_some(), sub.and_then(|s| s.chan_info.clone()), st.user.clone())
    };
    let m = &o.map;
    let (client, subscriber, anonymous) = if removed {
        (m.allow_remove_for_client, m.allow_remove_for_subscriber, m.allow_remove_for_anonymous)
    } else {
        (m.allow_publish_for_client, m.allow_publish_for_subscriber, m.allow_publish_for_anonymous)
    };
    let allowed = cfg.client.insecure || ((client || (subscriber && subscribed)) && (!anon || anonymous));
    if !allowed {
        return Err(s.refuse(
            ApiError::PERMISSION_DENIED,
            "attempt to publish without sufficient permission",
            &channel,
        ));
    }
    // `map.client_key`: the server names the key (an anonymous client has no user id).
    let key = match o.map.client_key.as_str() {
        "client_id" => s.client.id.to_string(),
        "user_id" if anon => {
            return Err(s.refuse(
                ApiError::PERMISSION_DENIED,
                "map publish: client_key user_id, client is anonymous",
                &channel,
            ))
        }
        "user_id" => user.to_string(),
        _ => key,
    };
    if key.is_empty() {
        return Err(ApiError::BAD_REQUEST);
    }
    let data = Payload { bytes: data, binary: s.client.format == Format::Protobuf };
    // A removal carries no publisher info (as Centrifugo's), a publish the client's.
    let info = (!removed).then(|| Arc::new(s.info(chan_info)));
    let publish = Publish { info, ..Publish::new(channel.as_str(), data) };
    let op = ShardOp::MapPublish(Box::new(MapPub::new(publish, key.into(), removed)));
    s.w.call_shard(op).await.map(|_| ReplyBody::Publish)
}
