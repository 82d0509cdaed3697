//! This worker's connected clients and their subscriptions: channel → local subscribers and
//! user → connection count. [`Hub::deliver`] is the last leg of fan-out:
//! it queues a prepared push on every local subscriber of its channel (the same JSON frame
//! for all, shared through an `Rc` when there are several: `crate::client::frame`; the
//! protobuf frame encoded at most once per push, and for clients that negotiated
//! permessage-deflate each of them compressed at most once per push) and closes the clients
//! that overflowed after the iteration.
//!
//! Owned by one worker and used only from its thread; other workers reach it through the
//! worker's inbox (`Deliver` messages and jobs).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use slab::Slab;
use smallvec::SmallVec;

use crate::client::writes::{Batching, Writes};
use crate::client::{Client, Frame, Framing, Handler};
use crate::error::Disconnect;
use crate::filter::Filter;
use crate::model::StreamPosition;
use crate::protocol::{Format, PushBody};
use crate::push::{metrics_frame, raw_publication_frame, Prepared, PushKind};
use crate::wire::deflate::{self, Deflate};

/// A local subscriber of a channel.
#[derive(Debug, Clone)]
struct Sub {
    key: u32,
    /// The client's generation: an entry never reaches a later client in the same slot.
    gen: u32,
    /// The subscribe reply is written: pushes go to the queue (else they are held).
    live: bool,
    /// This subscriber receives join/leave pushes.
    join_leave: bool,
    /// It negotiated fossil deltas (see `crate::delta`).
    delta: bool,
    /// With `delta`: the owner's sequence number of the last publication it was sent (0: none
    /// known), the only base a patch may apply to.
    base: u64,
    /// Its tags filter: publications whose tags it rejects are not sent.
    filter: Option<Arc<Filter>>,
    /// A positioned subscriber's place in the stream (see [`Track`]).
    track: Option<Track>,
}

/// Where a positioned subscriber (one answered with a stream position) is in its channel's
/// stream: the epoch and the offset of the newest publication it was given, its subscribe
/// reply's top at first. A publication at or below it was given already (with the Redis
/// engine one published just before the subscribe read its position can still arrive live
/// after it): it is skipped. One beyond the next offset, or of another epoch, means the
/// subscriber missed publications: it is told to resubscribe and recover, as Centrifugo does
/// ("insufficient state").
#[derive(Debug, Clone)]
struct Track {
    offset: u64,
    epoch: Arc<str>,
}

/// What a positioned subscriber does with a publication, by [`Track::step`].
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Next,
    Seen,
    Missed,
}

impl Track {
    fn step(&mut self, offset: u64, epoch: &Arc<str>) -> Step {
        if !Arc::ptr_eq(&self.epoch, epoch) && self.epoch != *epoch {
            return Step::Missed;
        }
        if offset <= self.offset {
            return Step::Seen;
        }
        if offset != self.offset + 1 {
            return Step::Missed;
        }
        self.offset = offset;
        Step::Next
    }
}

impl Sub {
    /// What this subscriber does with a publication at `place` (see [`stream_place`]): a
    /// subscriber without a track, or a push without a place, takes it.
    #[inline]
    fn step(&mut self, place: Option<(u64, &Arc<str>)>) -> Step {
        match (place, self.track.as_mut()) {
            (Some((offset, epoch)), Some(t)) => t.step(offset, epoch),
            _ => Step::Next,
        }
    }
}

/// Why a delivery stopped at a subscriber (acted on once the hub is no longer borrowed).
enum Stop {
    /// It overflowed, or cannot take a frame: closed with this.
    Close(Disconnect),
    /// Its stream has a gap for it ([`Step::Missed`]).
    Resubscribe,
}

/// A publication's place in its stream, when it has one.
fn stream_place(p: &Prepared) -> Option<(u64, &Arc<str>)> {
    match (&p.push, &p.epoch) {
        (PushBody::Pub(publication), Some(epoch)) => Some((publication.offset, epoch)),
        _ => None,
    }
}

/// Whether the push reaches this subscriber as far as its tags filter is concerned (only
/// publications are filtered).
fn passes(s: &Sub, p: &Prepared) -> bool {
    match (&s.filter, &p.push) {
        (Some(f), PushBody::Pub(publication)) => f.matches(publication.tags.as_deref().unwrap_or_default()),
        _ => true,
    }
}

/// A client in its slot: the part fan-out uses and the session behind it.
struct Entry {
    client: Rc<Client>,
    handler: Rc<dyn Handler>,
}

/// See the module docs.
#[derive(Default)]
pub struct Hub {
    clients: RefCell<Slab<Entry>>,
    index: RefCell<AHashMap<Arc<str>, SmallVec<[Sub; 4]>>>,
    users: RefCell<AHashMap<Arc<str>, u32>>,
    /// Clients with frames to write this loop turn (see `crate::client::outbox`).
    writes: Rc<Writes<Client>>,
}

/// This worker's share of the node's `info` figures.
#[derive(Debug, Default)]
pub struct Counts {
    pub clients: u64,
    pub users: Vec<Arc<str>>,
    pub subs: u64,
}

impl Hub {
    /// A hub whose clients batch their writes as `batching` says.
    pub fn new(batching: Batching) -> Hub {
        Hub { writes: Rc::new(Writes::new(batching)), ..Hub::default() }
    }

    /// The flush list of this worker's clients; its task ([`Writes::run`]) runs on the worker.
    pub fn writes(&self) -> &Rc<Writes<Client>> {
        &self.writes
    }

    /// Adds a client; its slot is written into `client.key`.
    pub fn add(&self, client: Rc<Client>, handler: Rc<dyn Handler>) -> u32 {
        let key = self.clients.borrow_mut().insert(Entry { client: client.clone(), handler }) as u32;
        client.key.set(key);
        key
    }

    /// Removes a client (its subscriptions must have been removed first).
    pub fn remove(&self, key: u32) {
        self.clients.borrow_mut().try_remove(key as usize);
    }

    /// The session in slot `key` if it is still generation `gen`.
    pub fn handler(&self, key: u32, gen: u32) -> Option<Rc<dyn Handler>> {
        self.clients.borrow().get(key as usize).filter(|e| e.client.gen == gen).map(|e| e.handler.clone())
    }

    /// Every session on this worker (a snapshot: callers may close them while iterating).
    pub fn handlers(&self) -> Vec<Rc<dyn Handler>> {
        self.clients.borrow().iter().map(|(_, e)| e.handler.clone()).collect()
    }

    /// Every client on this worker (graceful shutdown waits for their queues).
    pub fn clients(&self) -> Vec<Rc<Client>> {
        self.clients.borrow().iter().map(|(_, e)| e.client.clone()).collect()
    }

    /// A connection of `user` completed its handshake.
    pub fn user_added(&self, user: &Arc<str>) {
        *self.users.borrow_mut().entry(user.clone()).or_default() += 1;
    }

    /// A connection of `user` that completed its handshake is gone.
    pub fn user_removed(&self, user: &str) {
        let mut users = self.users.borrow_mut();
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
        }
    }

    /// The owner accepted a subscription of client `key` (generation `gen`): it joins the
    /// channel's subscribers, with pushes held until its reply is written, and `extra` pushes
    /// (newer than the position it was answered with, those its tags `filter` passes) held
    /// first. False when the client is gone or no longer waits for it: the owner's count must
    /// then be taken back. With `delta` it negotiated fossil deltas. With `position` (the
    /// stream top it was answered with) it keeps its place in the stream (see [`Track`]).
    #[allow(clippy::too_many_arguments)] // the subscription's parts, each a plain value
    pub fn accept(
        &self,
        key: u32,
        gen: u32,
        channel: &Arc<str>,
        join_leave: bool,
        delta: bool,
        filter: Option<Arc<Filter>>,
        position: Option<&StreamPosition>,
        extra: &[Arc<Prepared>],
    ) -> bool {
        let client = match self.clients.borrow().get(key as usize) {
            Some(e) if e.client.gen == gen && e.client.expects(channel) => e.client.clone(),
            _ => return false,
        };
        let track =
            position.filter(|p| !p.epoch.is_empty()).map(|p| Track { offset: p.offset, epoch: p.epoch.clone() });
        let mut sub = Sub { key, gen, live: false, join_leave, delta, base: 0, filter, track };
        for p in extra {
            if sub.step(stream_place(p)) != Step::Next {
                // Kept while the subscribe read its position: not beyond it after all.
                continue;
            }
            if !passes(&sub, p) {
                continue;
            }
            if let Some(frame) = sub_frame(&client, &mut sub, p, &mut Frames::new(p, 1)) {
                client.hold(channel, frame.into_bytes());
            }
        }
        self.index.borrow_mut().entry(channel.clone()).or_default().push(sub);
        true
    }

    /// Marks a subscription live (its reply has been written).
    pub fn set_live(&self, channel: &str, key: u32) {
        if let Some(subs) = self.index.borrow_mut().get_mut(channel) {
            if let Some(e) = subs.iter_mut().find(|s| s.key == key) {
                e.live = true;
            }
        }
    }

    /// Whether client `key` is one of the subscribers of `channel` here (its subscription was
    /// accepted, whether or not its reply has been written).
    pub fn is_subscriber(&self, channel: &str, key: u32) -> bool {
        self.index.borrow().get(channel).is_some_and(|subs| subs.iter().any(|s| s.key == key))
    }

    /// Removes client `key` from the subscribers of `channel`.
    pub fn unsubscribe(&self, channel: &str, key: u32) {
        let mut index = self.index.borrow_mut();
        if let Some(subs) = index.get_mut(channel) {
            subs.retain(|s| s.key != key);
            if subs.is_empty() {
                index.remove(channel);
            }
        }
    }

    /// The sessions subscribed to `channel` on this worker.
    pub fn subscribers(&self, channel: &str) -> Vec<Rc<dyn Handler>> {
        let index = self.index.borrow();
        let clients = self.clients.borrow();
        let Some(subs) = index.get(channel) else { return Vec::new() };
        subs.iter()
            .filter_map(|s| clients.get(s.key as usize).filter(|e| e.client.gen == s.gen))
            .map(|e| e.handler.clone())
            .collect()
    }

    /// Queues a push on every local subscriber of its channel. See the module docs.
    pub fn deliver(&self, p: &Prepared) {
        self.deliver_all(&[p]);
    }

    /// Queues pushes to one channel, in order, on each of its local subscribers: a subscriber
    /// is visited once for all of them, so its client's memory is read once per run of
    /// publications rather than once per publication (a chain of dependent loads per
    /// subscriber, most of a delivery's cost outside the kernel with 1,000 subscribers).
    pub fn deliver_all<P: std::ops::Deref<Target = Prepared>>(&self, ps: &[P]) {
        let Some(first) = ps.first() else { return };
        debug_assert!(ps.iter().all(|p| p.channel == first.channel));
        let mut stopped: SmallVec<[(u32, Stop); 4]> = SmallVec::new();
        {
            let mut index = self.index.borrow_mut();
            let Some(subs) = index.get_mut(&*first.channel) else { return };
            let clients = self.clients.borrow();
            let mut each: SmallVec<[Delivery; 1]> = ps.iter().map(|p| Delivery::new(p, subs.len())).collect();
            for s in subs.iter_mut() {
                let Some(e) = clients.get(s.key as usize).filter(|e| e.client.gen == s.gen) else { continue };
                for d in each.iter_mut() {
                    let p = d.p;
                    if p.kind == PushKind::JoinLeave && !s.join_leave {
                        continue;
                    }
                    match s.step(d.position) {
                        Step::Next => {}
                        Step::Seen => continue,
                        Step::Missed => {
                            stopped.push((s.key, Stop::Resubscribe));
                            break;
                        }
                    }
                    if !passes(s, p) {
                        continue;
                    }
                    let frame = match &d.local {
                        Some(f) if takes_json_as_is(&e.client, s) => Frame::Local(f.clone()),
                        _ => match sub_frame(&e.client, s, p, &mut d.frames) {
                            Some(f) => f,
                            None => {
                                stopped.push((s.key, Stop::Close(Disconnect::INAPPROPRIATE_PROTOCOL)));
                                break;
                            }
                        },
                    };
                    let t = &mut d.sent[e.client.framing.index()];
                    t.0 += 1;
                    t.1 += frame.len() as u64;
                    let ok = if s.live {
                        e.client.send(frame).is_ok()
                    } else {
                        e.client.hold(&p.channel, frame.into_bytes())
                    };
                    if !ok {
                        // The client is closed: its later pushes would be dropped.
                        stopped.push((s.key, Stop::Close(Disconnect::SLOW)));
                        break;
                    }
                }
            }
            for d in &each {
                for (t, &(frames, bytes)) in d.sent.iter().enumerate().filter(|(_, s)| s.0 > 0) {
                    crate::metrics::frames_sent(t, metrics_frame(&d.p.push), frames, bytes);
                }
            }
        }
        for (key, stop) in stopped {
            let h = self.clients.borrow().get(key as usize).map(|e| e.handler.clone());
            match (h, stop) {
                (Some(h), Stop::Close(d)) => h.disconnect(d),
                (Some(h), Stop::Resubscribe) => h.resubscribe(&first.channel),
                (None, _) => {}
            }
        }
    }

    /// This worker's client, user and subscription counts.
    pub fn counts(&self) -> Counts {
        Counts {
            clients: self.clients.borrow().iter().filter(|(_, e)| e.handler.is_connected()).count() as u64,
            users: self.users.borrow().keys().cloned().collect(),
            subs: self.index.borrow().values().map(|v| v.len() as u64).sum(),
        }
    }

    /// Subscriber counts of the channels whose name `keep` accepts.
    pub fn channels(&self, keep: impl Fn(&str) -> bool) -> Vec<(Box<str>, u64)> {
        self.index
            .borrow()
            .iter()
            .filter(|(ch, subs)| !subs.is_empty() && keep(ch))
            .map(|(ch, subs)| (Box::from(&**ch), subs.len() as u64))
            .collect()
    }
}

/// Consecutive pushes to one channel, gathered for [`Hub::deliver_all`]: delivered when a
/// push to another channel comes or the run is flushed.
pub struct Run<P>(SmallVec<[P; 16]>);

impl<P> Default for Run<P> {
    fn default() -> Self {
        Run(SmallVec::new())
    }
}

impl<P: std::ops::Deref<Target = Prepared>> Run<P> {
    pub fn push(&mut self, hub: &Hub, p: P) {
        if self.0.first().is_some_and(|q| q.channel != p.channel) {
            self.flush(hub);
        }
        self.0.push(p);
    }

    pub fn flush(&mut self, hub: &Hub) {
        hub.deliver_all(&self.0);
        self.0.clear();
    }
}

/// One push of a delivery: its frames, the JSON frame most subscribers take (see
/// [`takes_json_as_is`]), and the messages and bytes sent per transport (a metrics index).
struct Delivery<'a> {
    p: &'a Prepared,
    position: Option<(u64, &'a Arc<str>)>,
    frames: Frames,
    local: Option<Rc<Bytes>>,
    sent: [(u64, u64); crate::metrics::TRANSPORTS.len()],
}

impl<'a> Delivery<'a> {
    fn new(p: &'a Prepared, subscribers: usize) -> Delivery<'a> {
        let frames = Frames::new(p, subscribers);
        let local = match &frames.json {
            Some(Frame::Local(f)) => Some(f.clone()),
            _ => None,
        };
        Delivery { p, position: stream_place(p), frames, local, sent: [(0, 0); crate::metrics::TRANSPORTS.len()] }
    }
}

/// The frames of one push built during one delivery, by [`Client::frame_kind`]: each kind is
/// encoded at most once per push and worker, whatever the number of its subscribers; so is
/// each compressed frame (by kind and level), since with no context takeover a frame
/// compressed once is valid on every connection that negotiated permessage-deflate; and so
/// are the two frames of delta subscribers (full data, patch), by kind.
struct Frames {
    /// The JSON frame the owner built, which most subscribers take as it is: with
    /// [`LOCAL_SHARE_MIN`] subscribers or more on the worker, wrapped once in an `Rc` and
    /// shared without atomics (see `crate::client::frame`); with fewer the allocation is not
    /// worth it.
    json: Option<Frame>,
    /// The other plain frames, by kind.
    plain: [Option<Bytes>; crate::client::FRAME_KINDS],
    /// Compressed frames: kind, level, frame.
    deflated: SmallVec<[(usize, i8, Frame); 2]>,
    /// Delta subscribers' frames (full data, patch), by kind.
    delta: SmallVec<[(usize, Option<Bytes>); 2]>,
}

impl Frames {
    /// The cache of a delivery of `p` to `subscribers` subscribers on this worker.
    fn new(p: &Prepared, subscribers: usize) -> Frames {
        let json = match &p.json {
            Some(f) if subscribers >= LOCAL_SHARE_MIN => Some(Frame::Local(Rc::new(f.clone()))),
            f => f.clone().map(Frame::Own),
        };
        Frames { json, plain: std::array::from_fn(|_| None), deflated: SmallVec::new(), delta: SmallVec::new() }
    }

    /// `plain`, this push's WebSocket frame of `kind`, as a client with `d` receives it.
    fn deflated(&mut self, kind: usize, d: Deflate, plain: Frame) -> Frame {
        let Some((op, payload)) = crate::wire::ws::server_frame_parts(&plain) else { return plain };
        if !d.wants(payload.len()) {
            return plain;
        }
        if let Some((_, _, f)) = self.deflated.iter().find(|(k, l, _)| *k == kind && *l == d.level) {
            return f.clone();
        }
        let f = Frame::Own(deflate::frame(op, payload, d.level));
        self.deflated.push((kind, d.level, f.clone()));
        f
    }
}

/// The frame of a push for subscriber `s` of client `c`: for a delta subscriber of a
/// publication, the patch when the owner made one against the publication `s` was sent last,
/// else the full data in the delta form (see `crate::delta`); `s` then remembers this
/// publication as its base. Other pushes and subscribers: [`frame_for`].
fn sub_frame(c: &Client, s: &mut Sub, p: &Prepared, frames: &mut Frames) -> Option<Frame> {
    if !s.delta || p.kind != PushKind::Publication {
        return frame_for(c, p, frames);
    }
    let d = p.delta.as_ref();
    if matches!(&p.push, PushBody::Pub(x) if x.removed) {
        // A map removal has no data to patch or escape.
        return frame_for(c, p, frames);
    }
    let patch = d.is_some_and(|d| {
        d.patch.is_some() && if d.keyed { s.filter.is_none() } else { d.base != 0 && d.base == s.base }
    });
    s.base = d.map_or(0, |d| d.seq);
    if patch {
        if let Some(f) = delta_frame(c, p, true, frames) {
            return Some(f);
        }
    }
    if c.format == Format::Protobuf {
        // The full data in protobuf is the plain publication.
        return frame_for(c, p, frames);
    }
    delta_frame(c, p, false, frames)
}

/// A delta subscriber's frame (`patch` or full data, see [`Prepared::delta_frame`]), built once
/// per kind and delivery, compressed when the client negotiated permessage-deflate.
fn delta_frame(c: &Client, p: &Prepared, patch: bool, frames: &mut Frames) -> Option<Frame> {
    // Kinds of the delta forms, apart from the plain frames' in the compression cache.
    let kind = c.frame_kind() + crate::client::FRAME_KINDS * (1 + patch as usize);
    let plain = match frames.delta.iter().find(|(k, _)| *k == kind) {
        Some((_, f)) => f.clone(),
        None => {
            let f = p.delta_frame(c.framing, c.format, patch);
            frames.delta.push((kind, f.clone()));
            f
        }
    }?
    .into();
    Some(match c.deflate {
        Some(d) => frames.deflated(kind, d, plain),
        None => plain,
    })
}

/// The frame of a push for one client (see [`plain_frame_for`]), compressed when the client
/// negotiated permessage-deflate.
fn frame_for(c: &Client, p: &Prepared, frames: &mut Frames) -> Option<Frame> {
    let plain = plain_frame_for(c, p, frames)?;
    Some(match c.deflate {
        Some(d) => frames.deflated(c.frame_kind(), d, plain),
        None => plain,
    })
}

/// Subscribers of one channel on a worker from which a delivery shares its JSON frame through
/// an `Rc` rather than through `Bytes`' atomic count.
const LOCAL_SHARE_MIN: usize = 4;

/// Whether client `c` takes the JSON frame the owner built as it is (a WebSocket JSON client
/// of today's protocol, not a raw one), before any compression.
fn plain_json(c: &Client) -> bool {
    !c.raw && c.framing == Framing::WebSocket && c.format == Format::Json && !c.v1.get()
}

/// Whether [`sub_frame`] gives subscriber `s` of `c` the owner's JSON frame as it is (not a
/// delta subscriber, no compression, [`plain_json`]): the common case, which a delivery to
/// many subscribers takes without the cache. Through `sub_frame` the frame moves through three
/// calls, and a delivery to 1,000 subscribers cost 8-25% more CPU per subscriber at 64
/// publications per pass. `hub::tests::the_shortcut_agrees_with_sub_frame` keeps the two in step.
#[inline]
fn takes_json_as_is(c: &Client, s: &Sub) -> bool {
    !s.delta && c.deflate.is_none() && plain_json(c)
}

/// The frame of a push for one client's transport and format (built at most once per
/// `frames` cache); `None` when a JSON client cannot receive the binary payload.
fn plain_frame_for(c: &Client, p: &Prepared, frames: &mut Frames) -> Option<Frame> {
    if c.raw {
        return match &p.push {
            PushBody::Pub(publication) => Some(raw_publication_frame(&publication.data).into()),
            _ => None,
        };
    }
    if plain_json(c) {
        // The owner built it: the common case costs a reference count.
        return frames.json.clone();
    }
    if c.format == Format::Json && p.json.is_none() {
        return None;
    }
    let slot = &mut frames.plain[c.frame_kind()];
    let build = || if c.v1.get() { p.v1_frame(c.framing, c.format) } else { p.frame(c.framing, c.format) };
    Some(slot.get_or_insert_with(build).clone().into())
}

#[cfg(test)]
mod tests;
