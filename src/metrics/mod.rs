//! Prometheus metrics without a shared hot spot.
//!
//! Every worker thread counts into its own thread-local [`Local`] (plain `Cell`s: no atomic,
//! no cache line shared with another core, no lock on the publish path). A scrape of
//! `/metrics` asks every worker through its inbox for a [`Snapshot`] of its counters and its
//! connection counts (a job on each worker, `http::ops`), adds them up and renders the text
//! format ([`render`]) with Centrifugo's metric names, types, label names and label values,
//! so existing dashboards and alerts keep working:
//!
//! * `centrifugo_node_*`: clients, users, channels, subscriptions, nodes, build; messages
//!   sent to and received from the engine by `type`; `client_connection_limit` (refusals);
//! * `centrifugo_transport_messages_{sent,received}{,_size}{transport,frame_type}` and
//!   `centrifugo_transport_outgoing_close_count{transport,code}`;
//! * `centrifugo_client_*`: command durations by `method`, reply errors, server-side
//!   disconnects and unsubscribes by `code`, connections and subscriptions accepted and in
//!   flight, recovery outcomes, ping/pong round trips;
//! * `centrifugo_api_*` and `centrifugo_proxy_*`: server API commands and proxy calls;
//! * `process_*` ([`process`]): CPU, memory, file descriptors, start time, network bytes;
//! * `gyre_worker_loop_*{worker}` and `gyre_gateway_*`: Gyre's own.
//!
//! Centrifugo's `channel_namespace` and `accept_protocol` labels are always empty there (it
//! resolves no namespace label and exposes no accept protocol), and Prometheus stores no empty
//! label, so those series are written without them.

pub mod process;
mod render;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::api::Method;

/// Which transport a server API command came from (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http = 0,
    Grpc = 1,
}

const PROTOCOLS: [&str; 2] = ["http", "grpc"];

/// Every server API method, in `Method` declaration order (index = `method as usize`).
const METHODS: [Method; 21] = Method::ALL;

/// Upper bounds (seconds) of the API duration histogram buckets.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Upper bounds (seconds) of the proxy duration histogram buckets (Prometheus' defaults).
const PROXY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds (seconds) of the client command and ping/pong histograms (Centrifugo's).
const CLIENT_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Calls of one proxy (protocol, type, name): durations, call errors, calls in flight.
#[derive(Debug, Clone)]
struct ProxyStat {
    protocol: &'static str,
    kind: &'static str,
    name: std::sync::Arc<str>,
    count: u64,
    sum_ns: u64,
    buckets: [u64; PROXY_BUCKETS.len()],
    errors: u64,
    inflight: i64,
}

/// Kinds of messages handed to and received from the engine (the `type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Publication = 0,
    Join = 1,
    Leave = 2,
}

const KINDS: [&str; 3] = ["publication", "join", "leave"];

/// A protocol frame as Centrifugo names it: the `frame_type` of the transport families and
/// the `method` of the client command families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    ServerPing = 0,
    ClientPong,
    PushConnect,
    PushSubscribe,
    PushPublication,
    PushJoin,
    PushLeave,
    PushUnsubscribe,
    PushMessage,
    PushRefresh,
    PushDisconnect,
    Connect,
    Subscribe,
    Publish,
    Unsubscribe,
    Rpc,
    Presence,
    PresenceStats,
    History,
    Refresh,
    SubRefresh,
    Send,
    Unknown,
}

/// Label values of [`Frame`], by index.
pub const FRAMES: [&str; 23] = [
    "server_ping",
    "client_pong",
    "push_connect",
    "push_subscribe",
    "push_publication",
    "push_join",
    "push_leave",
    "push_unsubscribe",
    "push_message",
    "push_refresh",
    "push_disconnect",
    "connect",
    "subscribe",
    "publish",
    "unsubscribe",
    "rpc",
    "presence",
    "presence_stats",
    "history",
    "refresh",
    "sub_refresh",
    "send",
    "unknown",
];

impl Frame {
    /// The label value.
    pub fn name(self) -> &'static str {
        FRAMES[self as usize]
    }

    /// The frame type of a push of this kind.
    pub fn of_kind(k: Kind) -> Frame {
        match k {
            Kind::Publication => Frame::PushPublication,
            Kind::Join => Frame::PushJoin,
            Kind::Leave => Frame::PushLeave,
        }
    }
}

/// The `transport` label values, indexed as the client's framing (`crate::client::Framing`).
pub const TRANSPORTS: [&str; 10] = [
    "websocket",
    "http_stream",
    "sse",
    "uni_websocket",
    "uni_http_stream",
    "uni_sse",
    "uni_grpc",
    "sockjs_websocket",
    "sockjs_xhr_streaming",
    "sockjs_xhr_polling",
];

/// `client_name` and `client_version` of a connection (the connect request's `name` and
/// `version`): Centrifugo registers no client name, so a given one reads `unregistered`.
pub const CLIENT_NAMES: [&str; 2] = ["unnamed", "unregistered"];
/// See [`CLIENT_NAMES`].
pub const CLIENT_VERSIONS: [&str; 2] = ["unversioned", "unregistered"];

/// A connection's client labels: an index into [`CLIENT_NAMES`] × [`CLIENT_VERSIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLabels(u8);

impl ClientLabels {
    /// The labels of a connect request with this `name` and `version`.
    pub fn of(name: &str, version: &str) -> ClientLabels {
        ClientLabels(u8::from(!name.is_empty()) * 2 + u8::from(!version.is_empty()))
    }

    fn name(self) -> usize {
        self.0 as usize / 2
    }
}

/// Count, sum and cumulative-free bucket counts of a histogram with `N` upper bounds.
#[derive(Debug, Clone)]
struct Hist<const N: usize> {
    count: u64,
    sum_ns: u64,
    buckets: [u64; N],
}

impl<const N: usize> Default for Hist<N> {
    fn default() -> Self {
        Hist { count: 0, sum_ns: 0, buckets: [0; N] }
    }
}

impl<const N: usize> Hist<N> {
    fn observe(&mut self, bounds: &[f64; N], took: Duration) {
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(took.as_nanos().min(u64::MAX as u128) as u64);
        let secs = took.as_secs_f64();
        if let Some(i) = bounds.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
    }

    fn add(&mut self, o: &Hist<N>) {
        self.count += o.count;
        self.sum_ns += o.sum_ns;
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
    }
}

/// Duration and outcome counts of one (protocol, method).
#[derive(Debug, Clone, Default)]
struct ApiStat {
    count: u64,
    sum_ns: u64,
    buckets: [u64; BUCKETS.len()],
    /// (error code, count), few distinct codes.
    errors: Vec<(u32, u64)>,
}

impl ApiStat {
    fn add(&mut self, o: &ApiStat) {
        self.count += o.count;
        self.sum_ns += o.sum_ns;
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        for &(code, n) in &o.errors {
            bump(&mut self.errors, code, n);
        }
    }
}

fn bump<K: PartialEq>(v: &mut Vec<(K, u64)>, k: K, n: u64) {
    match v.iter_mut().find(|(c, _)| *c == k) {
        Some((_, c)) => *c += n,
        None => v.push((k, n)),
    }
}

type PerFrame<T> = [T; FRAMES.len()];
type PerTransport<T> = [T; TRANSPORTS.len()];

/// One worker's counters. Lives in a thread-local; only its own thread touches it.
#[derive(Default)]
pub struct Local {
    sent: [Cell<u64>; 3],
    received: [Cell<u64>; 3],
    frames_sent: PerTransport<PerFrame<Cell<u64>>>,
    frames_sent_bytes: PerTransport<PerFrame<Cell<u64>>>,
    frames_received: PerTransport<PerFrame<Cell<u64>>>,
    frames_received_bytes: PerTransport<PerFrame<Cell<u64>>>,
    reply_errors: RefCell<Vec<((&'static str, u32), u64)>>,
    commands: RefCell<Vec<Hist<{ CLIENT_BUCKETS.len() }>>>,
    ping_pong: RefCell<Vec<Hist<{ CLIENT_BUCKETS.len() }>>>,
    disconnects: RefCell<Vec<(u32, u64)>>,
    unsubscribes: RefCell<Vec<(u32, u64)>>,
    outgoing_closes: RefCell<Vec<((u8, u16), u64)>>,
    conns_accepted: PerTransport<[Cell<u64>; 4]>,
    conns_inflight: PerTransport<[Cell<i64>; 4]>,
    subs_accepted: [Cell<u64>; 2],
    subs_inflight: [Cell<i64>; 2],
    /// [recovered][has recovered publications]
    recover: [[Cell<u64>; 2]; 2],
    connection_limit: Cell<u64>,
    api: RefCell<Vec<ApiStat>>,
    proxy: RefCell<Vec<ProxyStat>>,
    inbox_batches: Cell<u64>,
    inbox_ns: Cell<u64>,
    lag_max_ns: Cell<u64>,
}

thread_local! {
    static LOCAL: Local = Local::default();
}

fn inc(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

fn add_i(c: &Cell<i64>, n: i64) {
    c.set(c.get() + n);
}

fn proxy_stat<R>(protocol: &'static str, kind: &'static str, name: &str, f: impl FnOnce(&mut ProxyStat) -> R) -> R {
    LOCAL.with(|l| {
        let mut v = l.proxy.borrow_mut();
        let i = match v.iter().position(|s| s.protocol == protocol && s.kind == kind && &*s.name == name) {
            Some(i) => i,
            None => {
                v.push(ProxyStat {
                    protocol,
                    kind,
                    name: name.into(),
                    count: 0,
                    sum_ns: 0,
                    buckets: [0; PROXY_BUCKETS.len()],
                    errors: 0,
                    inflight: 0,
                });
                v.len() - 1
            }
        };
        f(&mut v[i])
    })
}

/// A proxy call started.
pub fn proxy_started(protocol: &'static str, kind: &'static str, name: &str) {
    proxy_stat(protocol, kind, name, |s| s.inflight += 1);
}

/// A proxy call ended after `took`; `error` when it had no answer (a call error).
pub fn proxy_finished(protocol: &'static str, kind: &'static str, name: &str, took: Duration, error: bool) {
    proxy_stat(protocol, kind, name, |s| {
        s.inflight -= 1;
        s.count += 1;
        s.sum_ns += took.as_nanos() as u64;
        let secs = took.as_secs_f64();
        if let Some(i) = PROXY_BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i] += 1;
        }
        if error {
            s.errors += 1;
        }
    });
}

/// A publication, join or leave handed to the engine by this node.
pub fn message_sent(kind: Kind) {
    LOCAL.with(|l| inc(&l.sent[kind as usize], 1));
}

/// A publication, join or leave the engine delivered to this node for its subscribers.
pub fn message_received(kind: Kind) {
    LOCAL.with(|l| inc(&l.received[kind as usize], 1));
}

/// `frames` messages of type `frame`, `bytes` bytes in all, queued to clients of `transport`
/// (an index of [`TRANSPORTS`]).
pub fn frames_sent(transport: usize, frame: Frame, frames: u64, bytes: u64) {
    LOCAL.with(|l| {
        inc(&l.frames_sent[transport][frame as usize], frames);
        inc(&l.frames_sent_bytes[transport][frame as usize], bytes);
    });
}

/// One command of type `frame` (`bytes` long) read from a client of `transport`.
pub fn frame_received(transport: usize, frame: Frame, bytes: u64) {
    LOCAL.with(|l| {
        inc(&l.frames_received[transport][frame as usize], 1);
        inc(&l.frames_received_bytes[transport][frame as usize], bytes);
    });
}

/// An error reply to a client command.
pub fn client_reply_error(method: &'static str, code: u32) {
    LOCAL.with(|l| bump(&mut l.reply_errors.borrow_mut(), (method, code), 1));
}

/// A client command of type `frame` was handled in `took`.
pub fn client_command(frame: Frame, took: Duration) {
    LOCAL.with(|l| {
        let mut v = l.commands.borrow_mut();
        if v.is_empty() {
            v.resize(FRAMES.len(), Hist::default());
        }
        v[frame as usize].observe(&CLIENT_BUCKETS, took);
    });
}

/// A server ping on `transport` was answered after `took`.
pub fn ping_pong(transport: usize, took: Duration) {
    LOCAL.with(|l| {
        let mut v = l.ping_pong.borrow_mut();
        if v.is_empty() {
            v.resize(TRANSPORTS.len(), Hist::default());
        }
        v[transport].observe(&CLIENT_BUCKETS, took);
    });
}

/// The server closed a client connection with `code` (a closed connection, 3000, is not
/// counted, as in Centrifugo).
pub fn server_disconnect(code: u32) {
    if code != 3000 {
        LOCAL.with(|l| bump(&mut l.disconnects.borrow_mut(), code, 1));
    }
}

/// The server unsubscribed a client from a channel with `code`.
pub fn server_unsubscribe(code: u32) {
    LOCAL.with(|l| bump(&mut l.unsubscribes.borrow_mut(), code, 1));
}

/// The server sent a WebSocket close frame with `code` to a client of `transport` (not the
/// echo of the client's own close).
pub fn outgoing_close(transport: usize, code: u16) {
    LOCAL.with(|l| bump(&mut l.outgoing_closes.borrow_mut(), (transport as u8, code), 1));
}

/// A client connection of `transport` finished its connect; it is in flight until
/// [`connection_closed`].
pub fn connection_accepted(transport: usize, c: ClientLabels) {
    LOCAL.with(|l| {
        inc(&l.conns_accepted[transport][c.0 as usize], 1);
        add_i(&l.conns_inflight[transport][c.0 as usize], 1);
    });
}

/// A connection [`connection_accepted`] counted has ended (on the same worker).
pub fn connection_closed(transport: usize, c: ClientLabels) {
    LOCAL.with(|l| add_i(&l.conns_inflight[transport][c.0 as usize], -1));
}

/// A subscription of a connection counted with labels `c` was accepted (`None`: the
/// connection is not counted); it is in flight until [`subscription_removed`].
pub fn subscription_accepted(c: Option<ClientLabels>) {
    if let Some(c) = c {
        LOCAL.with(|l| {
            inc(&l.subs_accepted[c.name()], 1);
            add_i(&l.subs_inflight[c.name()], 1);
        });
    }
}

/// `n` subscriptions [`subscription_accepted`] counted have ended.
pub fn subscription_removed(c: Option<ClientLabels>, n: usize) {
    if let Some(c) = c {
        LOCAL.with(|l| add_i(&l.subs_inflight[c.name()], -(n as i64)));
    }
}

/// A subscription asked to recover: whether it `recovered`, and whether publications came
/// with it.
pub fn recover(recovered: bool, has_publications: bool) {
    LOCAL.with(|l| inc(&l.recover[recovered as usize][has_publications as usize], 1));
}

/// A client connection was refused: the node is at `client.connection_limit`.
pub fn connection_limit_reached() {
    LOCAL.with(|l| inc(&l.connection_limit, 1));
}

/// A server API command finished after `took`, with `error` (its code) or not.
pub fn api_command(protocol: Protocol, method: Method, took: Duration, error: Option<u32>) {
    api_commands(protocol, method, took, 1, error.as_slice());
}

/// `count` server API commands of one kind finished together after `took` (a run of a
/// pipelined stream), `errors` being the codes of those that failed.
pub fn api_commands(protocol: Protocol, method: Method, took: Duration, count: u64, errors: &[u32]) {
    if count == 0 {
        return;
    }
    LOCAL.with(|l| {
        let mut api = l.api.borrow_mut();
        if api.is_empty() {
            api.resize(PROTOCOLS.len() * METHODS.len(), ApiStat::default());
        }
        let st = &mut api[protocol as usize * METHODS.len() + method as usize];
        st.count += count;
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        st.sum_ns = st.sum_ns.saturating_add(ns.saturating_mul(count));
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            st.buckets[i] += count;
        }
        for &code in errors {
            bump(&mut st.errors, code, 1);
        }
    });
}

/// One inbox batch handled in `took`.
pub fn inbox_batch(took: Duration) {
    LOCAL.with(|l| {
        inc(&l.inbox_batches, 1);
        inc(&l.inbox_ns, took.as_nanos() as u64);
    });
}

/// A periodic tick ran `lag` later than it was due; the largest since the last scrape is kept.
pub fn loop_lag(lag: Duration) {
    LOCAL.with(|l| {
        let ns = lag.as_nanos() as u64;
        if ns > l.lag_max_ns.get() {
            l.lag_max_ns.set(ns);
        }
    });
}

/// Per-worker event-loop figures.
#[derive(Debug, Clone, Default)]
pub struct LoopStat {
    pub worker: usize,
    pub inbox_batches: u64,
    pub inbox_ns: u64,
    pub lag_max_ns: u64,
}

/// Counters of one worker (or, after [`Snapshot::add`], of the node), plus its connection
/// counts. Plain data: it travels between threads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub num_clients: u64,
    pub num_channels: u64,
    pub num_subs: u64,
    /// Users connected to this worker (the node counts each once).
    pub users: Vec<std::sync::Arc<str>>,
    /// Gateway: messages waiting in this worker's topics, and messages dropped (full topic or
    /// topic limit).
    pub gateway_queued: u64,
    pub gateway_dropped: u64,
    /// The process's figures (filled in once per scrape, not per worker).
    pub process: Option<process::Stats>,
    sent: [u64; 3],
    received: [u64; 3],
    frames_sent: PerTransport<PerFrame<u64>>,
    frames_sent_bytes: PerTransport<PerFrame<u64>>,
    frames_received: PerTransport<PerFrame<u64>>,
    frames_received_bytes: PerTransport<PerFrame<u64>>,
    reply_errors: Vec<((&'static str, u32), u64)>,
    commands: Vec<Hist<{ CLIENT_BUCKETS.len() }>>,
    ping_pong: Vec<Hist<{ CLIENT_BUCKETS.len() }>>,
    disconnects: Vec<(u32, u64)>,
    unsubscribes: Vec<(u32, u64)>,
    outgoing_closes: Vec<((u8, u16), u64)>,
    conns_accepted: PerTransport<[u64; 4]>,
    conns_inflight: PerTransport<[i64; 4]>,
    subs_accepted: [u64; 2],
    subs_inflight: [i64; 2],
    recover: [[u64; 2]; 2],
    connection_limit: u64,
    api: Vec<ApiStat>,
    proxy: Vec<ProxyStat>,
    loops: Vec<LoopStat>,
}

fn cells<T: Copy, const N: usize>(a: &[Cell<T>; N]) -> [T; N] {
    std::array::from_fn(|i| a[i].get())
}

fn add_arr<T: Copy + std::ops::AddAssign, const N: usize>(a: &mut [T; N], b: &[T; N]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

fn add_hists<const N: usize>(a: &mut Vec<Hist<N>>, b: Vec<Hist<N>>) {
    if a.is_empty() {
        *a = b;
    } else {
        for (x, y) in a.iter_mut().zip(&b) {
            x.add(y);
        }
    }
}

/// The calling worker's counters (its connection counts are filled in by the caller). The
/// loop-lag maximum restarts with each snapshot.
pub fn snapshot(worker: usize) -> Snapshot {
    LOCAL.with(|l| {
        let per_frame = |a: &PerTransport<PerFrame<Cell<u64>>>| std::array::from_fn(|t| cells(&a[t]));
        Snapshot {
            sent: cells(&l.sent),
            received: cells(&l.received),
            frames_sent: per_frame(&l.frames_sent),
            frames_sent_bytes: per_frame(&l.frames_sent_bytes),
            frames_received: per_frame(&l.frames_received),
            frames_received_bytes: per_frame(&l.frames_received_bytes),
            reply_errors: l.reply_errors.borrow().clone(),
            commands: l.commands.borrow().clone(),
            ping_pong: l.ping_pong.borrow().clone(),
            disconnects: l.disconnects.borrow().clone(),
            unsubscribes: l.unsubscribes.borrow().clone(),
            outgoing_closes: l.outgoing_closes.borrow().clone(),
            conns_accepted: std::array::from_fn(|t| cells(&l.conns_accepted[t])),
            conns_inflight: std::array::from_fn(|t| cells(&l.conns_inflight[t])),
            subs_accepted: cells(&l.subs_accepted),
            subs_inflight: cells(&l.subs_inflight),
            recover: [cells(&l.recover[0]), cells(&l.recover[1])],
            connection_limit: l.connection_limit.get(),
            api: l.api.borrow().clone(),
            proxy: l.proxy.borrow().clone(),
            loops: vec![LoopStat {
                worker,
                inbox_batches: l.inbox_batches.get(),
                inbox_ns: l.inbox_ns.get(),
                lag_max_ns: l.lag_max_ns.replace(0),
            }],
            ..Default::default()
        }
    })
}

impl Snapshot {
    /// Adds another worker's snapshot into this one.
    pub fn add(&mut self, o: Snapshot) {
        self.num_clients += o.num_clients;
        self.num_channels += o.num_channels;
        self.num_subs += o.num_subs;
        self.users.extend(o.users);
        self.gateway_queued += o.gateway_queued;
        self.gateway_dropped += o.gateway_dropped;
        self.process = self.process.take().or(o.process);
        add_arr(&mut self.sent, &o.sent);
        add_arr(&mut self.received, &o.received);
        for t in 0..TRANSPORTS.len() {
            add_arr(&mut self.frames_sent[t], &o.frames_sent[t]);
            add_arr(&mut self.frames_sent_bytes[t], &o.frames_sent_bytes[t]);
            add_arr(&mut self.frames_received[t], &o.frames_received[t]);
            add_arr(&mut self.frames_received_bytes[t], &o.frames_received_bytes[t]);
            add_arr(&mut self.conns_accepted[t], &o.conns_accepted[t]);
            add_arr(&mut self.conns_inflight[t], &o.conns_inflight[t]);
        }
        for (k, n) in o.reply_errors {
            bump(&mut self.reply_errors, k, n);
        }
        add_hists(&mut self.commands, o.commands);
        add_hists(&mut self.ping_pong, o.ping_pong);
        for (k, n) in o.disconnects {
            bump(&mut self.disconnects, k, n);
        }
        for (k, n) in o.unsubscribes {
            bump(&mut self.unsubscribes, k, n);
        }
        for (k, n) in o.outgoing_closes {
            bump(&mut self.outgoing_closes, k, n);
        }
        add_arr(&mut self.subs_accepted, &o.subs_accepted);
        add_arr(&mut self.subs_inflight, &o.subs_inflight);
        add_arr(&mut self.recover[0], &o.recover[0]);
        add_arr(&mut self.recover[1], &o.recover[1]);
        self.connection_limit += o.connection_limit;
        if self.api.is_empty() {
            self.api = o.api;
        } else if !o.api.is_empty() {
            for (a, b) in self.api.iter_mut().zip(&o.api) {
                a.add(b);
            }
        }
        for p in o.proxy {
            match self.proxy.iter_mut().find(|s| s.protocol == p.protocol && s.kind == p.kind && s.name == p.name) {
                Some(s) => {
                    s.count += p.count;
                    s.sum_ns += p.sum_ns;
                    for (a, b) in s.buckets.iter_mut().zip(&p.buckets) {
                        *a += b;
                    }
                    s.errors += p.errors;
                    s.inflight += p.inflight;
                }
                None => self.proxy.push(p),
            }
        }
        self.loops.extend(o.loops);
    }

    /// Publications, joins and leaves handed to the engine.
    pub fn messages_sent(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Publication, join and leave pushes queued to clients (every transport).
    pub fn frames_delivered(&self) -> u64 {
        let pushes = [Frame::PushPublication, Frame::PushJoin, Frame::PushLeave];
        self.frames_sent.iter().map(|t| pushes.iter().map(|&f| t[f as usize]).sum::<u64>()).sum()
    }

    /// Server API commands completed (every protocol and method).
    pub fn api_commands(&self) -> u64 {
        self.api.iter().map(|s| s.count).sum()
    }
}

#[cfg(test)]
mod tests;
