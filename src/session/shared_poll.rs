//! Shared poll subscriptions (`type` 4 in subscribe: centrifuge-js
//! `newSharedPollSubscription`) on `subscription_type: shared_poll` namespaces. The subscribe
//! checks permissions as for any channel and answers with the channel's epoch; then the
//! client tracks keys with `sub_refresh` (`type` 1: signed batches of keys, `type` 2:
//! untrack). The channel's owner worker keeps who tracks what and polls the backend
//! ([`crate::poll`]); updates come back as `pub` pushes with `key` and `version`.
//!
//! A namespace's subscribe proxy decides a subscribe without a token as it does a stream
//! subscribe (its result's channel info and expiry apply). The subscriber's keys join the
//! namespace's presence map channels (`map_clients_presence_channel_prefix`, ...). With the
//! namespace's `presence` and `join_leave` it is in the channel's presence and its join and
//! leave are emitted, as for a stream subscriber (no subscriber of the channel receives them
//! as pushes: shared poll subscribers get the poll's updates only, as in Centrifugo).
//!
//! Codes as Centrifugo answers them: 108 for a shared poll subscribe to a channel of another
//! type (107 for another subscribe to a shared poll channel), 105 already subscribed, 106 past
//! the channel limit or the connection's key limit, 107 an empty track or untrack, 103 a
//! signature that does not verify, 109 one past its expiry (and a 5 s grace).

use std::rc::Rc;
use std::sync::Arc;

use super::{unix_now, Session, Sub};
use crate::error::{ApiError, Disconnect};
use crate::poll::signature::{self, Refused};
use crate::poll::{TrackItem, Tracker};
use crate::protocol::{KeyedPub, PushBody, ReplyBody, SubscribeReq, SubscribeResult, TrackBatch};
use crate::proxy::Kind;
use crate::shard::owner_of;

/// The subscription type of shared poll subscriptions in the client protocol.
pub(super) const KIND: i32 = 4;
/// `sub_refresh` types of a shared poll subscription.
const TRACK: i32 = 1;
const UNTRACK: i32 = 2;

/// A shared poll subscribe command; the reply is written here.
pub(super) async fn subscribe(s: &Rc<Session>, id: u32, req: SubscribeReq) -> Result<(), Disconnect> {
    let r = run(s, &req).await?;
    s.reply(id, &r.map(ReplyBody::Subscribe));
    Ok(())
}

type Outcome = Result<Result<SubscribeResult, ApiError>, Disconnect>;

async fn run(s: &Rc<Session>, req: &SubscribeReq) -> Outcome {
    let cfg = s.w.cfg.clone();
    let ch = req.channel.as_str();
    let o = match cfg.resolve_channel(ch) {
        Ok(r) if r.options.is_shared_poll() => r.options,
        _ => {
            return Ok(Err(s.refuse(ApiError::NOT_AVAILABLE, "shared poll subscribe to a channel of another type", ch)))
        }
    };
    if let Err(e) = taken(s, ch) {
        return Ok(Err(e));
    }
    if ch.len() > cfg.channel().max_length || !cfg.client_channel_allowed(ch, o) {
        return Ok(Err(s.refuse(ApiError::BAD_REQUEST, "invalid channel name", ch)));
    }
    // Permissions as for any subscribe: a subscription token, else the subscribe proxy (not
    // on user-limited channels), else the namespace's rules.
    let (mut expires_at, mut chan_info) = (0, None);
    if !req.token.is_empty() {
        match super::rules::sub_token(s, req).await? {
            Ok(t) => (expires_at, chan_info) = (t.expire_at, t.info),
            Err(e) => return Ok(Err(e)),
        }
    } else {
        let user = s.st.borrow().user.clone();
        let limited = super::rules::user_allowed(&cfg, o, ch, &user);
        if let Err(e) = super::rules::not_private(s, ch) {
            return Ok(Err(e));
        }
        match limited.is_none().then(|| super::proxy::channel_proxy(s, Kind::Subscribe, o)).flatten() {
            // The result's info and expiry apply; its data and overrides have no use here.
            Some(Ok(p)) => match super::proxied::ask_subscribe(s, &p, ch, req.data.clone()).await? {
                Ok(a) => (expires_at, chan_info) = (a.expire_at, a.info),
                Err(e) => return Ok(Err(e)),
            },
            Some(Err(e)) => return Ok(Err(e)),
            None => {
                if let Err(e) = super::rules::permitted(s, o, ch, &user, limited) {
                    return Ok(Err(e));
                }
            }
        }
    }
    // Fossil deltas per key: asked and allowed by the namespace (else full data).
    let delta = req.delta == "fossil" && o.fossil_allowed();
    let channel: Arc<str> = ch.into();
    let epoch = {
        let c = channel.clone();
        s.w.ask(owner_of(ch, s.w.workers), move |w, answer| answer.send(w, crate::poll::epoch(w, &c))).await
    };
    let epoch = match epoch {
        Ok(e) => e,
        Err(e) => return Ok(Err(e)),
    };
    {
        let mut st = s.st.borrow_mut();
        if st.closed {
            return Err(Disconnect::new(3000, "connection closed"));
        }
        if st.subs.contains_key(ch) || st.pending.contains_key(ch) {
            return Ok(Err(ApiError::ALREADY_SUBSCRIBED));
        }
        // Presence and join/leave as for a stream subscriber (a hidden session has neither).
        let (presence, join_leave) = (!st.hidden && o.presence, !st.hidden && o.join_leave);
        let sub =
            Sub { chan_info: chan_info.clone(), presence, join_leave, expires_at, poll: true, delta, ..Sub::default() };
        st.subs.insert(channel.clone(), sub.clone());
        crate::metrics::subscription_accepted(st.labels);
        drop(st);
        member(s, &channel, &sub, true);
    }
    super::map_presence::started(s, &channel, o, chan_info);
    if expires_at > 0 {
        s.reschedule_now();
    }
    let now = unix_now();
    Ok(Ok(SubscribeResult {
        kind: KIND,
        epoch: epoch.to_string(),
        delta,
        expires: expires_at > 0,
        ttl: if expires_at > now { (expires_at - now) as u32 } else { 0 },
        ..Default::default()
    }))
}

/// 105 when the client is subscribed to `ch` already, 106 at its channel limit.
fn taken(s: &Session, ch: &str) -> Result<(), ApiError> {
    let st = s.st.borrow();
    if st.subs.contains_key(ch) || st.pending.contains_key(ch) {
        return Err(s.refuse(ApiError::ALREADY_SUBSCRIBED, "client already subscribed on channel", ch));
    }
    if st.subs.len() + st.pending.len() >= s.w.cfg.client.channel_limit {
        return Err(s.refuse(ApiError::LIMIT_EXCEEDED, "maximum limit of channels per client reached", ch));
    }
    Ok(())
}

/// Whether `channel` is one of the session's shared poll subscriptions.
pub(super) fn is_poll(s: &Session, channel: &str) -> bool {
    s.st.borrow().subs.get(channel).is_some_and(|sub| sub.poll)
}

/// Whether a `sub_refresh` of `kind` on `channel` is a track or untrack request.
pub(super) fn is_keyed(s: &Session, channel: &str, kind: i32) -> bool {
    matches!(kind, TRACK | UNTRACK) && is_poll(s, channel)
}

fn tracker(s: &Session) -> Tracker {
    Tracker { worker: s.w.id as u16, key: s.client.key.get(), gen: s.client.gen }
}

/// A track (`type` 1) or untrack (`type` 2) request; the reply is written here.
pub(super) async fn sub_refresh(
    s: &Rc<Session>,
    id: u32,
    channel: String,
    kind: i32,
    track: Vec<TrackBatch>,
    untrack: Vec<String>,
) {
    let r =
        if kind == TRACK { track_keys(s, &channel, track, untrack).await } else { untrack_keys(s, &channel, untrack) };
    s.reply(id, &r);
}

async fn track_keys(
    s: &Rc<Session>,
    channel: &str,
    batches: Vec<TrackBatch>,
    untrack: Vec<String>,
) -> Result<ReplyBody, ApiError> {
    if batches.is_empty() {
        return Err(ApiError::BAD_REQUEST);
    }
    let user = s.st.borrow().user.clone();
    let now = unix_now();
    // Every batch's signature must verify; a key in several batches takes the last one's
    // version and expiry.
    let mut items: Vec<TrackItem> = Vec::new();
    let mut at: ahash::AHashMap<String, usize> = ahash::AHashMap::new();
    let mut min_exp = 0i64;
    for b in batches {
        let keys: Vec<&str> = b.items.iter().map(|(k, _)| k.as_str()).collect();
        let exp = match signature::verify(&s.w.cfg.shared_poll, channel, &b.signature, &keys, &user, now) {
            Ok(exp) => exp,
            Err(Refused::Invalid) => {
                return Err(s.refuse(ApiError::PERMISSION_DENIED, "invalid track signature", channel))
            }
            Err(Refused::Expired) => return Err(s.refuse(ApiError::TOKEN_EXPIRED, "track signature expired", channel)),
        };
        if exp > 0 && (min_exp == 0 || exp < min_exp) {
            min_exp = exp;
        }
        for (key, version) in b.items {
            let item = (Arc::from(key.as_str()), version, exp);
            match at.get(&key) {
                Some(&i) => items[i] = item,
                None => {
                    at.insert(key, items.len());
                    items.push(item);
                }
            }
        }
    }
    if items.is_empty() {
        return Err(ApiError::BAD_REQUEST);
    }
    let (ch, t) = (Arc::<str>::from(channel), tracker(s));
    let c = ch.clone();
    let r =
        s.w.ask(owner_of(channel, s.w.workers), move |w, answer| {
            answer.send(w, crate::poll::track(w, &c, t, items, untrack))
        })
        .await;
    r?;
    if !is_poll(s, channel) {
        // Unsubscribed meanwhile (server side): nothing stays tracked.
        forget_keys(s, &ch);
        return Err(ApiError::PERMISSION_DENIED);
    }
    Ok(ReplyBody::SubRefresh { expires: min_exp > 0, ttl: if min_exp > now { (min_exp - now) as u32 } else { 0 } })
}

fn untrack_keys(s: &Rc<Session>, channel: &str, keys: Vec<String>) -> Result<ReplyBody, ApiError> {
    if keys.is_empty() {
        return Err(ApiError::BAD_REQUEST);
    }
    let (ch, t) = (Arc::<str>::from(channel), tracker(s));
    // Through the owner's queue like a track request, so the two keep their order.
    on_owner(s, channel, move |w| crate::poll::untrack(w, &ch, t, keys));
    Ok(ReplyBody::SubRefresh { expires: false, ttl: 0 })
}

/// The subscription to `channel` ended: everything the connection tracked there is
/// untracked on the owner, and its presence entry goes (with a leave).
pub(super) fn forget(s: &Session, channel: &Arc<str>, sub: &Sub) {
    forget_keys(s, channel);
    member(s, channel, sub, false);
}

/// Untracks every key the session tracks on `channel`.
fn forget_keys(s: &Session, channel: &Arc<str>) {
    let (ch, t) = (channel.clone(), tracker(s));
    on_owner(s, channel, move |w| crate::poll::forget(w, &ch, t));
}

/// Tells the channel's owner that the subscriber came or went, for its presence entry and
/// join/leave (see [`crate::shard::PollMember`]).
fn member(s: &Session, channel: &Arc<str>, sub: &Sub, came: bool) {
    if !sub.presence && !sub.join_leave {
        return;
    }
    let op = crate::shard::PollMember {
        channel: channel.clone(),
        info: s.info(sub.chan_info.clone()),
        came,
        presence: sub.presence,
        join_leave: sub.join_leave,
    };
    s.send_owner(crate::shard::ShardOp::PollMember(Box::new(op)));
}

/// Runs `job` on the owner of `channel` without waiting for it: at once when the owner is
/// this worker, else queued behind what this worker sent it before (as [`Worker::ask`]
/// does, so tracks, untracks and forgets reach the owner in the order they were made).
fn on_owner(s: &Session, channel: &str, job: impl FnOnce(&Rc<crate::runtime::worker::Worker>) + Send + 'static) {
    let w = s.w.rc();
    drop(w.ask(owner_of(channel, w.workers), move |w, answer: crate::runtime::worker::Answer<()>| {
        job(w);
        answer.send(w, ());
    }));
}

/// A tracked key's update from the owner, written if the subscription is still there. With
/// deltas negotiated, the data is the owner's patch when it made one against the data this
/// connection holds, else the full data; JSON clients get either as a JSON string, so they
/// keep the exact bytes as the next base (as for streams and maps).
pub(super) fn push(s: &Session, channel: &str, k: &KeyedPub, patch: Option<&bytes::Bytes>) {
    let delta = match s.st.borrow().subs.get(channel) {
        Some(sub) if sub.poll => sub.delta,
        _ => return,
    };
    let Some(data) = k.data.as_ref().filter(|_| delta) else {
        s.push(channel, &PushBody::Keyed(k.clone()));
        return;
    };
    let json = s.client.format == crate::protocol::Format::Json;
    let form = |bytes: &bytes::Bytes| if json { crate::delta::json_string(bytes) } else { Some(bytes.clone()) };
    let (bytes, is_patch) = match patch.and_then(form) {
        Some(p) => (p, true),
        None => (form(&data.bytes).unwrap_or_else(|| data.bytes.clone()), false),
    };
    let data = Some(crate::model::Payload { bytes, binary: false });
    s.push(channel, &PushBody::Keyed(KeyedPub { data, delta: is_patch, ..k.clone() }));
}
