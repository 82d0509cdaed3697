//! Presence kept in map channels: a namespace with `map_clients_presence_channel_prefix` makes
//! each subscriber of its channel `ch` a key of the map channel `<prefix>ch` (the client id,
//! with its client info), and `map_users_presence_channel_prefix` a key named by its user id
//! (anonymous connections have none). Clients watch who is there by subscribing to those map
//! channels (`map_clients` / `map_users` namespaces, subscribe `type` 2 / 3): the state is
//! the list, each join a new key, each leave a removal.
//!
//! Writes use key mode `if_new` with the TTL refresh, so a key already there (a second
//! connection of the user, a quick reconnect) only has its TTL started again and publishes
//! nothing. Each worker keeps its sessions' keys alive from one task, well within the
//! namespace's `map.key_ttl`. A client key is removed when its subscription ends; a user key
//! is left to expire once the last of the user's connections on the worker has left, so a
//! reconnect within the TTL shows no leave (both as Centrifugo does).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;

use super::Session;
use crate::config::ChannelOptions;
use crate::model::{ClientInfo, KeyMode, MapPub, Payload, Publish};
use crate::runtime::worker::{Tag, Worker};
use crate::shard::ShardOp;

/// Keys are written again this often at most (Centrifugo's presence update interval).
const MOST: Duration = Duration::from_secs(27);

/// (presence channel, key) → its keeper.
type Keys = AHashMap<(Arc<str>, Arc<str>), Keeper>;

/// The keys this worker's sessions keep alive.
#[derive(Default)]
struct Kept {
    keys: RefCell<Keys>,
    /// The refresh task runs.
    running: Cell<bool>,
}

struct Keeper {
    /// Sessions holding the key (one for a client key; a user's connections on this worker).
    holders: u32,
    info: Option<Arc<ClientInfo>>,
    every: Duration,
    next: Instant,
}

/// The presence map channels of a subscription to `channel` (of namespace options `o`):
/// (clients channel, users channel).
fn channels(o: &ChannelOptions, channel: &str) -> (Option<Arc<str>>, Option<Arc<str>>) {
    let name = |prefix: &str| (!prefix.is_empty()).then(|| Arc::from(format!("{prefix}{channel}")));
    (name(&o.map_clients_presence_channel_prefix), name(&o.map_users_presence_channel_prefix))
}

/// A subscription to `channel` started: the session's keys join its presence maps.
pub(super) fn started(s: &Session, channel: &str, o: &ChannelOptions, chan_info: Option<Bytes>) {
    let (clients, users) = channels(o, channel);
    if (clients.is_none() && users.is_none()) || s.st.borrow().hidden {
        return;
    }
    let user = s.st.borrow().user.clone();
    if let Some(c) = clients {
        hold(&s.w, c, s.client.id.clone(), Some(Arc::new(s.info(chan_info))));
    }
    if let Some(u) = users.filter(|_| !user.is_empty()) {
        hold(&s.w, u, user, None);
    }
}

/// A subscription to `channel` ended: the client key is removed, the user key is left to
/// expire unless another connection of the user here still holds it.
pub(super) fn ended(s: &Session, channel: &str, o: &ChannelOptions) {
    let (clients, users) = channels(o, channel);
    if (clients.is_none() && users.is_none()) || s.st.borrow().hidden {
        return;
    }
    let kept = s.w.local(|_| Kept::default());
    if let Some(c) = clients {
        if kept.keys.borrow_mut().remove(&(c.clone(), s.client.id.clone())).is_some() {
            let publish = Publish::new(&*c, Payload { bytes: Bytes::new(), binary: false });
            s.w.submit_shard(
                ShardOp::MapPublish(Box::new(MapPub::new(publish, s.client.id.clone(), true))),
                Tag::Discard,
            );
        }
    }
    let user = s.st.borrow().user.clone();
    if let Some(u) = users.filter(|_| !user.is_empty()) {
        let mut keys = kept.keys.borrow_mut();
        let k = (u, user);
        if let Some(keeper) = keys.get_mut(&k) {
            keeper.holders -= 1;
            if keeper.holders == 0 {
                keys.remove(&k);
            }
        }
    }
}

fn hold(w: &Rc<Worker>, channel: Arc<str>, key: Arc<str>, info: Option<Arc<ClientInfo>>) {
    let kept = w.local(|_| Kept::default());
    let ttl = w.cfg.resolve_channel(&channel).map(|r| r.options.map.key_ttl).unwrap_or(MOST);
    let every = (ttl / 3).clamp(Duration::from_millis(100), MOST);
    {
        let mut keys = kept.keys.borrow_mut();
        match keys.get_mut(&(channel.clone(), key.clone())) {
            Some(k) => {
                k.holders += 1;
                return;
            }
            None => {
                let next = Instant::now() + every;
                keys.insert((channel.clone(), key.clone()), Keeper { holders: 1, info: info.clone(), every, next });
            }
        }
    }
    write(w, channel, key, info);
    if !kept.running.replace(true) {
        monoio::spawn(refresh(w.clone(), kept));
    }
}

/// Writes the key if absent, else starts its TTL again.
fn write(w: &Worker, channel: Arc<str>, key: Arc<str>, info: Option<Arc<ClientInfo>>) {
    let publish = Publish { info, ..Publish::new(&*channel, Payload { bytes: Bytes::new(), binary: false }) };
    let op = MapPub { key_mode: KeyMode::IfNew, refresh_ttl: true, ..MapPub::new(publish, key, false) };
    w.submit_shard(ShardOp::MapPublish(Box::new(op)), Tag::Discard);
}

/// Keeps the worker's keys alive while there are any.
async fn refresh(w: Rc<Worker>, kept: Rc<Kept>) {
    loop {
        let next = kept.keys.borrow().values().map(|k| k.next).min();
        let Some(next) = next else { break };
        // At least once a second: a key added meanwhile may be due sooner than `next`.
        let wait =
            next.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(50), Duration::from_secs(1));
        monoio::time::sleep(wait).await;
        if w.shutdown.get() {
            break;
        }
        let now = Instant::now();
        let due: Vec<_> = kept
            .keys
            .borrow_mut()
            .iter_mut()
            .filter(|(_, k)| k.next <= now)
            .map(|((c, key), k)| {
                k.next = now + k.every;
                (c.clone(), key.clone(), k.info.clone())
            })
            .collect();
        for (c, key, info) in due {
            write(&w, c, key, info);
        }
    }
    kept.running.set(false);
}
