//! `fanout` and `ingest`: the plan derived from the options, the event-loop threads (each a
//! monoio runtime holding a share of the subscribers and publishers as tasks), and the main
//! thread's timeline — connect, warm-up, measure, stop, drain, settle — every step of which is
//! bounded, so the tool always ends even when the server stalls.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::payload::Track;
use crate::peers::{NatsSub, RedisSub};
use crate::procs::{self, Kids};
use crate::progress::Progress;
use crate::publish;
use crate::series::Collector;
use crate::stats::{self, now_ns, Local, Shared, Usage, DONE, MEASURE, STOP, WARMUP};
use crate::stream::StreamClient;
use crate::summary;
use crate::target::{self, ClientErr, Kind, Target};
use crate::ws::{Hello, WsClient};
use crate::{output, Driver, Fail, Opts, Transport, WireFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fanout,
    Ingest,
    Connections,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Ingest => "ingest",
            Mode::Connections => "connections",
        }
    }
}

/// Everything the threads need, fixed before they start.
pub struct Plan {
    pub mode: Mode,
    /// What every node speaks (they are all of one kind).
    pub kind: Kind,
    /// The nodes subscribers connect to (`--target`).
    pub nodes: Vec<Target>,
    /// The nodes publishers connect to: publisher p uses `publish_nodes[p % len]`.
    pub publish_nodes: Vec<Target>,
    pub o: Opts,
    /// Global indices of the clients this process opens.
    pub clients: std::ops::Range<usize>,
    /// All subscribers of the run (over every process), for the per-channel counts.
    pub subscribers: usize,
    pub channels: usize,
    pub publishers: usize,
    pub rate: f64,
    pub size: usize,
    pub batch: usize,
    pub inflight: usize,
    pub threads: usize,
    pub source_ips: u8,
    pub api_path: String,
    pub api_key: String,
    pub channel_names: Vec<String>,
    /// The names as JSON strings, for the API commands.
    pub channel_json: Vec<String>,
    /// Whether clients subscribe (always, except `connections` without `--subscribe`).
    pub subscribe: bool,
    /// Whether this process runs the publishers (not a subscriber process of `--procs`).
    pub publish: bool,
    /// `ingest --client-publish`: the publishers are WebSocket clients.
    pub client_publish: bool,
    /// Publishes go as new-style `batch` requests (`--api-batch`).
    pub api_batch: bool,
}

impl Plan {
    pub fn new(mode: Mode, o: &Opts) -> Result<Plan, Fail> {
        let nodes = Target::parse_list(&o.target)?;
        let kind = nodes[0].kind;
        let publish_nodes = match (&o.publish_target, mode) {
            (Some(list), _) => Target::parse_list(list)?,
            (None, Mode::Fanout) if !o.publish_all => vec![nodes[0].clone()],
            (None, _) => nodes.clone(),
        };
        if publish_nodes.iter().any(|t| t.kind != kind) {
            return Err(Fail::setup("--publish-target must be of the same kind as --target"));
        }
        let subscribers = match mode {
            Mode::Fanout => o.subscribers.unwrap_or(100),
            Mode::Ingest => 0,
            Mode::Connections => o.subscribers.unwrap_or(1000),
        };
        let publishers = match mode {
            Mode::Fanout => o.publishers,
            Mode::Ingest => o.connections.unwrap_or(o.publishers),
            Mode::Connections => 0,
        };
        let positive = |v: usize, name: &str| {
            if v == 0 {
                Err(Fail::setup(format!("--{name} must be at least 1")))
            } else {
                Ok(v)
            }
        };
        positive(o.channels, "channels")?;
        positive(o.threads, "threads")?;
        if mode != Mode::Connections {
            positive(publishers, "publishers")?;
        }
        let valid = o.duration > 0.0 && o.warmup >= 0.0 && o.drain >= 0.0 && o.connect_timeout > 0.0 && o.rate >= 0.0;
        // Written positively so NaN fails too.
        if !valid {
            return Err(Fail::setup(
                "--duration and --connect-timeout must be positive; --warmup, --drain and --rate not negative",
            ));
        }
        o.auth.check()?;
        let t = o.transport;
        if t != Transport::Websocket && kind != Kind::Centrifugo {
            return Err(Fail::setup(format!("--transport {} needs a Centrifugo-compatible target", t.name())));
        }
        if o.format == WireFormat::Protobuf && !matches!(t, Transport::Websocket | Transport::HttpStream) {
            return Err(Fail::setup(format!(
                "--transport {} carries JSON only (protobuf: websocket, http_stream)",
                t.name()
            )));
        }
        let subscribe = mode != Mode::Connections || o.subscribe;
        if t.is_uni() && subscribe && mode != Mode::Ingest && o.auth.is_none() {
            return Err(Fail::setup(format!(
                "--transport {}: unidirectional clients are subscribed by their token's channels claim: pass \
                 --hmac-secret (tokens are minted naming each subscriber's channel) or a --token whose claim names it",
                t.name()
            )));
        }
        if o.client_publish && (mode != Mode::Ingest || kind != Kind::Centrifugo) {
            return Err(Fail::setup("--client-publish applies to ingest against a Centrifugo-compatible target"));
        }
        if o.api_batch && (o.client_publish || kind != Kind::Centrifugo) {
            return Err(Fail::setup(
                "--api-batch applies to publishes through the HTTP API of a Centrifugo-compatible target",
            ));
        }
        let (batch, inflight) = match mode {
            // A WebSocket message holds a batch: the server's size limit is 64 KiB by default.
            Mode::Ingest if o.client_publish => (o.batch.unwrap_or(10), o.inflight.unwrap_or(4)),
            Mode::Ingest => (o.batch.unwrap_or(1000), o.inflight.unwrap_or(4)),
            _ => (o.batch.unwrap_or(16), o.inflight.unwrap_or(2)),
        };
        let source_ips = match (o.source_ips, mode) {
            (Some(n), _) => n.max(1),
            (None, Mode::Connections) => 9,
            (None, _) => 1,
        };
        if source_ips > 1 && !nodes.iter().all(Target::is_loopback) {
            return Err(Fail::setup("--source-ips needs a loopback target (127.0.0.x source addresses)"));
        }
        let channel_names: Vec<String> = (0..o.channels).map(|c| format!("{}-{c}", o.channel_prefix)).collect();
        if kind != Kind::Centrifugo && channel_names.iter().any(|c| c.contains([' ', '\t', '\r', '\n'])) {
            return Err(Fail::setup("channel names for redis/nats must not contain whitespace"));
        }
        Ok(Plan {
            mode,
            kind,
            nodes,
            publish_nodes,
            clients: 0..subscribers,
            subscribers,
            channels: o.channels,
            publishers,
            rate: o.rate,
            size: o.size,
            batch: positive(batch, "batch")?,
            inflight: positive(inflight, "inflight")?,
            threads: o.threads,
            source_ips,
            api_path: o.api_path.clone(),
            api_key: o.api_key.clone(),
            channel_json: channel_names.iter().map(|c| Value::from(c.as_str()).to_string()).collect(),
            channel_names,
            subscribe,
            publish: true,
            client_publish: o.client_publish,
            api_batch: o.api_batch,
            o: o.clone(),
        })
    }

    /// The node subscriber `i` connects to: the subscribers of each channel take the nodes in
    /// turn, each channel starting one node further, so that every channel has subscribers
    /// on every node and the nodes hold equal shares (with one channel: node `i % N`).
    pub fn node_of(&self, i: usize) -> &Target {
        let n = self.nodes.len();
        &self.nodes[(i / self.channels % n + i % self.channels) % n]
    }

    /// The node publisher `p` connects to.
    pub fn publish_node(&self, p: usize) -> &Target {
        &self.publish_nodes[p % self.publish_nodes.len()]
    }

    /// Every distinct node of the run, subscribers' first.
    pub fn all_nodes(&self) -> Vec<&Target> {
        let mut all: Vec<&Target> = Vec::new();
        for t in self.nodes.iter().chain(&self.publish_nodes) {
            if !all.iter().any(|a| a.addr == t.addr) {
                all.push(t);
            }
        }
        all
    }

    /// Every node with the subscribers and publishers it gets.
    pub fn node_shares(&self) -> Vec<(String, usize, usize)> {
        let all = self.all_nodes();
        let mut counts = vec![(0, 0); all.len()];
        let slot = |t: &Target| all.iter().position(|a| a.addr == t.addr).expect("every node is listed");
        for i in 0..self.subscribers {
            counts[slot(self.node_of(i))].0 += 1;
        }
        for p in 0..self.publishers {
            counts[slot(self.publish_node(p))].1 += 1;
        }
        all.iter().zip(counts).map(|(t, (subs, pubs))| (t.host.clone(), subs, pubs)).collect()
    }

    /// Whether the run involves more than one node (the report then lists them).
    pub fn multi_node(&self) -> bool {
        self.nodes.len() > 1 || self.publish_nodes.len() > 1 || self.publish_nodes[0].addr != self.nodes[0].addr
    }

    /// Fails naming the first node nothing accepts connections on.
    pub fn check_reachable(&self) -> Result<(), Fail> {
        self.all_nodes().into_iter().try_for_each(Target::check_reachable)
    }

    /// Subscribers listening to channel `ch` (subscriber i listens to `i % channels`).
    pub fn subscribers_on(&self, ch: usize) -> usize {
        self.subscribers / self.channels + usize::from(ch < self.subscribers % self.channels)
    }

    /// The endpoint subscribers connect to.
    pub fn client_path(&self) -> &str {
        match (self.o.transport, &self.o.transport_path) {
            (Transport::Websocket, _) => &self.o.ws_path,
            (_, Some(p)) => p,
            (t, None) => t.default_path(),
        }
    }

    pub fn token_for(&self, i: usize) -> Result<String, String> {
        self.o.auth.token_for(i, || {
            let mut claims = Map::new();
            // Unidirectional clients cannot subscribe: the token subscribes them.
            if self.o.transport.is_uni() && self.subscribe {
                claims.insert("channels".into(), Value::from(vec![self.channel_names[i % self.channels].clone()]));
            }
            claims
        })
    }
}

/// What a task needs: the plan, the shared counters, which thread it runs on, and that
/// thread's own side of the counters.
pub struct Cx {
    pub plan: Arc<Plan>,
    pub sh: Arc<Shared>,
    pub thread: usize,
    pub local: Local,
}

/// One subscriber as its thread sees it (to settle its counts at the end).
struct SubState {
    channel: usize,
    track: RefCell<Track>,
    opened: Cell<bool>,
    alive: Cell<bool>,
}

/// Connection slots for the opening phase, so the server's accept queue is not flooded.
struct Slots {
    free: Cell<usize>,
    wake: gyre::notify::LocalNotify,
}

impl Slots {
    async fn acquire(&self) {
        while self.free.get() == 0 {
            self.wake.wait().await;
        }
        self.free.set(self.free.get() - 1);
    }

    fn release(&self) {
        self.free.set(self.free.get() + 1);
        self.wake.notify();
    }
}

/// A subscriber connection of any target kind.
enum Client {
    Ws(WsClient),
    Stream(StreamClient),
    Redis(RedisSub),
    Nats(NatsSub),
}

impl Client {
    async fn open(plan: &Plan, i: usize, token: &str) -> Result<Client, ClientErr> {
        let source = target::source_for(i, plan.source_ips);
        let channel = plan.subscribe.then(|| plan.channel_names[i % plan.channels].as_str());
        let node = plan.node_of(i);
        let addr = node.addr;
        let transport = plan.o.transport;
        let hello = Hello {
            addr,
            source,
            host: &node.host,
            path: plan.client_path(),
            format: plan.o.format,
            token,
            channel,
            uni: transport == Transport::UniWebsocket,
        };
        Ok(match plan.kind {
            Kind::Centrifugo if matches!(transport, Transport::Websocket | Transport::UniWebsocket) => {
                Client::Ws(WsClient::open(&hello).await?)
            }
            Kind::Centrifugo => Client::Stream(StreamClient::open(&hello, transport, &plan.o.emulation_path).await?),
            Kind::Redis => Client::Redis(RedisSub::open(addr, source, channel).await?),
            Kind::Nats => Client::Nats(NatsSub::open(addr, source, channel).await?),
        })
    }

    async fn run(&mut self, local: &Local, track: &RefCell<Track>) -> ClientErr {
        match self {
            Client::Ws(c) => c.run(local, track).await,
            Client::Stream(c) => c.run(local, track).await,
            Client::Redis(c) => c.run(local, track).await,
            Client::Nats(c) => c.run(local, track).await,
        }
    }
}

/// One subscriber: open, read until the connection ends, reconnect if asked.
async fn subscriber(cx: Rc<Cx>, i: usize, st: Rc<SubState>, slots: Rc<Slots>) {
    let (plan, sh) = (&cx.plan, &cx.sh);
    let token = match plan.token_for(i) {
        Ok(t) => t,
        Err(e) => {
            sh.set_fatal(e);
            sh.failed.fetch_add(1, Relaxed);
            slots.release();
            return;
        }
    };
    let limit = Duration::from_secs_f64(plan.o.connect_timeout);
    loop {
        let opened = monoio::time::timeout(limit, Client::open(plan, i, &token)).await;
        let opened =
            opened.unwrap_or_else(|_| Err(ClientErr::Io(format!("opening took over {:.0} s", limit.as_secs_f64()))));
        let first = !st.opened.get();
        match opened {
            Ok(mut c) => {
                st.opened.set(true);
                st.alive.set(true);
                if first {
                    sh.ready.fetch_add(1, Relaxed);
                    slots.release();
                } else {
                    sh.reconnects.fetch_add(1, Relaxed);
                }
                let e = c.run(&cx.local, &st.track).await;
                st.alive.set(false);
                if sh.phase() >= DONE {
                    return;
                }
                sh.disconnects.fetch_add(1, Relaxed);
                sh.note(format!("subscriber {i} disconnected: {e}"));
                if !plan.o.reconnect || e.is_fatal() || sh.phase() >= STOP {
                    return;
                }
            }
            Err(e) if first => {
                sh.failed.fetch_add(1, Relaxed);
                slots.release();
                if e.is_fatal() {
                    sh.set_fatal(format!("client {i}: {e}"));
                } else {
                    sh.note(format!("client {i} could not connect: {e}"));
                }
                return;
            }
            Err(e) => {
                sh.note(format!("subscriber {i} reconnect failed: {e}"));
                if e.is_fatal() || sh.phase() >= STOP {
                    return;
                }
            }
        }
        monoio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sleep_ms(ms: u64) {
    monoio::time::sleep(Duration::from_millis(ms)).await;
}

/// The event loop of one thread: its share of the clients, then of the publishers, and at the
/// end its subscribers' final loss counts.
async fn thread_main(cx: Rc<Cx>) {
    let plan = cx.plan.clone();
    if plan.o.spin {
        monoio::spawn(stats::spin_until_done(cx.sh.clone()));
    }
    let per_thread = (plan.o.connect_concurrency / plan.threads).max(1);
    let slots = Rc::new(Slots { free: Cell::new(per_thread), wake: Default::default() });
    let mut subs = Vec::new();
    for i in plan.clients.clone().skip(cx.thread).step_by(plan.threads) {
        let st = Rc::new(SubState {
            channel: i % plan.channels,
            track: RefCell::new(Track::new(plan.publishers)),
            opened: Cell::new(false),
            alive: Cell::new(false),
        });
        subs.push(st.clone());
        slots.acquire().await;
        monoio::spawn(subscriber(cx.clone(), i, st, slots.clone()));
    }
    while cx.sh.phase() < WARMUP {
        sleep_ms(5).await;
    }
    if cx.sh.phase() < STOP && plan.publish {
        for p in (cx.thread..plan.publishers).step_by(plan.threads) {
            monoio::spawn(publish::publisher(cx.clone(), p));
        }
    }
    // The latencies recorded meanwhile go to the thread's slot, where the main thread takes
    // them once a second.
    while cx.sh.phase() < DONE {
        sleep_ms(10).await;
        cx.local.flush();
    }
    cx.local.flush();
    let (mut lost, mut dup) = (0, 0);
    for st in subs.iter().filter(|s| s.opened.get()) {
        let t = st.track.borrow();
        lost += t.lost;
        dup += t.duplicated;
        // What a subscriber still connected has not received was lost by the server; one that
        // was dropped is already counted under disconnects.
        if st.alive.get() {
            lost += t.missing_at_end(|p| cx.sh.sent_seq[p * plan.channels + st.channel].load(Relaxed));
        }
    }
    cx.sh.lost.fetch_add(lost, Relaxed);
    cx.sh.duplicated.fetch_add(dup, Relaxed);
    cx.sh.threads_done.fetch_add(1, Relaxed);
}

/// Starts the event-loop threads; they run until the process exits.
pub fn start_threads(plan: &Arc<Plan>, sh: &Arc<Shared>) {
    for thread in 0..plan.threads {
        let (plan, sh2) = (plan.clone(), sh.clone());
        let spawned = std::thread::Builder::new().name(format!("bench-{thread}")).spawn(move || {
            let sh = sh2;
            let local = Local::new(sh.clone(), thread);
            let cx = Rc::new(Cx { plan: plan.clone(), sh: sh.clone(), thread, local });
            let started = match plan.o.driver {
                Driver::Epoll => {
                    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().map(|mut rt| {
                        rt.block_on(thread_main(cx));
                    })
                }
                Driver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .enable_timer()
                    .with_entries(4096)
                    .build()
                    .map(|mut rt| rt.block_on(thread_main(cx))),
            };
            if let Err(e) = started {
                sh.set_fatal(format!("cannot start an event loop ({:?}): {e}", plan.o.driver));
            }
        });
        if let Err(e) = spawned {
            sh.set_fatal(format!("cannot start a thread: {e}"));
        }
    }
}

/// Waits until every client has connected or failed (bounded); prints progress.
pub fn wait_connected(plan: &Plan, sh: &Shared, progress: &mut Progress) -> Result<f64, Fail> {
    let want = plan.subscribers;
    let limit = Duration::from_secs_f64(plan.o.connect_timeout + 5.0);
    let secs = progress.wait_ready(sh, want, limit, ("connect", "opening", "client"))?.as_secs_f64();
    let ready = sh.ready.load(Relaxed);
    if want > 0 && ready == 0 {
        return Err(Fail::run(format!("no client could connect: {}", sh.first_note().unwrap_or_default())));
    }
    if ready < want {
        eprintln!("gyre-bench: warning: {} of {want} clients failed to open", want - ready);
    }
    Ok(secs)
}

/// How far ahead subscriber processes are told of a window bound (a pipe write and a thread
/// wake-up take well under a millisecond; this leaves room on a loaded machine).
const ANNOUNCE_NS: u64 = 50_000_000;

/// Sleeps `secs` while printing progress (and, given a collector, taking a row a second);
/// stops early on a fatal error.
pub fn hold(
    sh: &Shared,
    progress: &mut Progress,
    phase: &str,
    secs: f64,
    mut rows: Option<&mut Collector>,
) -> Result<(), Fail> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if let Some(f) = sh.fatal() {
            return Err(Fail::run(f));
        }
        if let Some(c) = rows.as_deref_mut() {
            if c.due() {
                c.row(sh, phase);
            }
        }
        progress.tick(sh, phase, rows.as_deref().map(Collector::p99));
        std::thread::sleep(Duration::from_millis(10).min(end.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

/// `fanout` / `ingest`.
pub fn main(mode: Mode, o: Opts) -> Result<(), Fail> {
    let mut plan = Plan::new(mode, &o)?;
    if let Some(range) = &o.child_range {
        return procs::child(plan, range);
    }
    let procs = match (mode, o.procs) {
        (Mode::Ingest, Some(n)) if n > 1 => {
            return Err(Fail::setup("--procs applies to fanout and connections (ingest: use --threads)"))
        }
        (_, Some(n)) if n > 1 => n.min(plan.subscribers.max(1)),
        _ => 1,
    };
    if procs > 1 {
        // The subscribers live in the child processes.
        plan.clients = 0..0;
    }
    let plan = Arc::new(plan);
    plan.check_reachable()?;
    let nofile = target::raise_nofile() as usize;
    let fds = plan.subscribers.div_ceil(procs) + plan.publishers + 64;
    if fds > nofile {
        return Err(Fail::setup(format!(
            "{} subscribers need about {fds} open files, the limit is {nofile}: raise it (ulimit -n), use --procs or fewer subscribers",
            plan.subscribers
        )));
    }
    o.out.check()?;
    let machine = output::machine();
    let kid_slots = if procs > 1 { procs } else { 0 };
    let sh = Arc::new(Shared::new(plan.threads + kid_slots, plan.publishers, plan.channels));
    let mut progress = Progress::new(&o.out);
    start_threads(&plan, &sh);
    let kids = if procs > 1 { Some(Kids::spawn(&plan, &sh, procs, plan.threads)?) } else { None };
    let tool_pids = kids.as_ref().map_or(Vec::new(), Kids::pids);
    let connect_s = wait_connected(&plan, &sh, &mut progress)?;

    sh.phase.store(WARMUP, Relaxed);
    hold(&sh, &mut progress, "warmup", o.warmup, None)?;

    let mut rows = Collector::new(mode == Mode::Ingest, &o.out.server_pid, &tool_pids);
    // Subscriber processes learn the window's bounds ahead of them.
    let start = match &kids {
        Some(k) => {
            let at = now_ns() + ANNOUNCE_NS;
            k.announce('W', at);
            at
        }
        None => now_ns(),
    };
    let server_start = stats::sample_servers(&o.out.server_pid);
    let client_start = stats::sample_tool(&tool_pids);
    sh.measure_start.store(start, Relaxed);
    sh.phase.store(MEASURE, Relaxed);
    rows.begin(&sh, start);
    hold(&sh, &mut progress, "measure", o.duration, Some(&mut rows))?;
    let end = match &kids {
        Some(k) => {
            let at = now_ns() + ANNOUNCE_NS;
            k.announce('E', at);
            at
        }
        None => now_ns(),
    };
    sh.measure_end.store(end, Relaxed);
    sh.phase.store(STOP, Relaxed);
    let server_end = stats::sample_servers(&o.out.server_pid);
    let client_end = stats::sample_tool(&tool_pids);
    // The last, partial second of the window.
    if rows.since_last_s() >= 0.1 {
        rows.row(&sh, "measure");
    }
    let secs = (end - start) as f64 / 1e9;

    drain(&sh, &mut progress, o.drain, &mut rows);
    sh.phase.store(DONE, Relaxed);
    let t = Instant::now();
    while sh.threads_done.load(Relaxed) < plan.threads && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(k) = &kids {
        k.finish(&sh);
    }
    if let Some(f) = sh.fatal() {
        return Err(Fail::run(f));
    }
    rows.finish(&sh);
    let server = server_start.zip(server_end).map(|(start, end)| Usage { start, end, rss_max_kb: progress.rss_max_kb });
    let client = client_start.zip(client_end).map(|(start, end)| Usage { start, end, rss_max_kb: 0 });
    let run = summary::Run { plan: &plan, sh: &sh, secs, connect_s, server, client, rows: &rows, machine };
    summary::report(&run)
}

/// After publishing stops: waits until the expected deliveries arrived, delivery stalls for a
/// second, or `secs` pass; rows of the drain go to `rows`.
pub fn drain(sh: &Shared, progress: &mut Progress, secs: f64, rows: &mut Collector) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut last, mut last_change) = ((0, 0), Instant::now());
    while Instant::now() < deadline {
        let now = (sh.published.load(Relaxed), sh.delivered());
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        let quiet_for = last_change.elapsed();
        if now.1 >= sh.expected.load(Relaxed) && quiet_for > Duration::from_millis(100) {
            break;
        }
        if quiet_for > Duration::from_secs(1) {
            break;
        }
        if rows.due() {
            rows.row(sh, "drain");
        }
        progress.tick(sh, "drain", Some(rows.p99()));
        std::thread::sleep(Duration::from_millis(5));
    }
    // Less than a tenth of a second adds nothing readable to the series.
    if rows.since_last_s() >= 0.1 {
        rows.row(sh, "drain");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Scenario};

    fn plan(args: &[&str]) -> Result<Plan, Fail> {
        let cli = Cli::try_parse_from([&["gyre-bench"], args].concat()).map_err(|e| Fail::setup(e.to_string()))?;
        match cli.scenario {
            Scenario::Fanout(o) => Plan::new(Mode::Fanout, &o),
            Scenario::Ingest(o) => Plan::new(Mode::Ingest, &o),
            Scenario::Connections(o) => Plan::new(Mode::Connections, &o),
            _ => Err(Fail::setup("not a run")),
        }
    }

    fn ports<'a>(nodes: impl IntoIterator<Item = &'a Target>) -> Vec<u16> {
        nodes.into_iter().map(|t| t.addr.port()).collect()
    }

    const AB: &str = "http://127.0.0.1:8000,http://127.0.0.1:8001";

    #[test]
    fn one_target_is_one_node() {
        let p = plan(&["fanout", "--target", "http://127.0.0.1:8000", "-n", "4", "-p", "2"]).unwrap();
        assert!(!p.multi_node());
        assert_eq!(ports((0..4).map(|i| p.node_of(i))), [8000; 4]);
        assert_eq!(ports((0..2).map(|i| p.publish_node(i))), [8000; 2]);
        let p = plan(&["ingest", "--target", "127.0.0.1:8000", "-k", "3"]).unwrap();
        assert!(!p.multi_node());
    }

    #[test]
    fn fanout_spreads_subscribers_and_publishes_on_the_first_node() {
        let p = plan(&["fanout", "--target", AB, "-n", "5", "-p", "2"]).unwrap();
        assert!(p.multi_node());
        assert_eq!(ports((0..5).map(|i| p.node_of(i))), [8000, 8001, 8000, 8001, 8000]);
        assert_eq!(ports((0..2).map(|i| p.publish_node(i))), [8000, 8000]);
        assert_eq!(p.node_shares(), [("127.0.0.1:8000".to_string(), 3, 2), ("127.0.0.1:8001".to_string(), 2, 0)]);
    }

    #[test]
    fn every_channel_has_subscribers_on_every_node() {
        // 100 channels over 2 nodes: subscriber i % 2 alone would put each channel on one node.
        let p = plan(&["fanout", "--target", AB, "-n", "10000", "-c", "100"]).unwrap();
        for ch in 0..100 {
            let on_a = (ch..10000).step_by(100).filter(|&i| p.node_of(i).addr.port() == 8000).count();
            assert_eq!(on_a, 50, "channel {ch}");
        }
        let shares = p.node_shares();
        assert_eq!((shares[0].1, shares[1].1), (5000, 5000));
        // One subscriber per channel: the channels alternate.
        let p = plan(&["fanout", "--target", &format!("{AB},127.0.0.1:8002"), "-n", "6", "-c", "6"]).unwrap();
        assert_eq!(ports((0..6).map(|i| p.node_of(i))), [8000, 8001, 8002, 8000, 8001, 8002]);
    }

    #[test]
    fn publish_target_and_publish_all() {
        let p = plan(&["fanout", "--target", AB, "-p", "3", "--publish-all"]).unwrap();
        assert_eq!(ports((0..3).map(|i| p.publish_node(i))), [8000, 8001, 8000]);
        let p = plan(&["fanout", "--target", AB, "-p", "2", "--publish-target", "127.0.0.1:9000"]).unwrap();
        assert_eq!(ports((0..2).map(|i| p.publish_node(i))), [9000, 9000]);
        assert_eq!(ports(p.all_nodes()), [8000, 8001, 9000]);
        // Publishing on another node than the one subscribers use is a multi-node run too.
        let p = plan(&["fanout", "--target", "127.0.0.1:8000", "--publish-target", "127.0.0.1:8001"]).unwrap();
        assert!(p.multi_node());
        assert!(plan(&["fanout", "--target", AB, "--publish-all", "--publish-target", "127.0.0.1:9000"]).is_err());
    }

    #[test]
    fn ingest_spreads_connections_over_every_node() {
        let p = plan(&["ingest", "--target", AB, "-k", "3"]).unwrap();
        assert_eq!(ports((0..3).map(|i| p.publish_node(i))), [8000, 8001, 8000]);
        let shares = p.node_shares();
        assert_eq!((shares[0].2, shares[1].2), (2, 1));
        let p = plan(&["ingest", "--target", AB, "-k", "2", "--publish-target", "127.0.0.1:8001"]).unwrap();
        assert_eq!(ports((0..2).map(|i| p.publish_node(i))), [8001, 8001]);
    }

    #[test]
    fn refuses_mixed_kinds_and_empty_entries() {
        assert!(plan(&["fanout", "--target", "http://127.0.0.1:8000,redis://127.0.0.1:6379"]).is_err());
        assert!(plan(&["fanout", "--target", AB, "--publish-target", "redis://127.0.0.1:6379"]).is_err());
        assert!(plan(&["fanout", "--target", "127.0.0.1:8000,,127.0.0.1:8001"]).is_err());
        let p = plan(&["fanout", "--target", "redis://127.0.0.1:6379,redis://127.0.0.1:6380", "-n", "2"]).unwrap();
        assert_eq!((p.kind, ports((0..2).map(|i| p.node_of(i)))), (Kind::Redis, vec![6379, 6380]));
    }

    #[test]
    fn checks_transport_options() {
        let p = plan(&["fanout", "--transport", "sse", "--hmac-secret", "s"]).unwrap();
        assert_eq!(p.client_path(), "/connection/sse");
        let p = plan(&["fanout", "--transport", "uni_sse", "--hmac-secret", "s", "--transport-path", "/u"]).unwrap();
        assert_eq!(p.client_path(), "/u");
        assert_eq!(plan(&["fanout", "--ws-path", "/ws"]).unwrap().client_path(), "/ws");
        assert!(plan(&["fanout", "--transport", "sse", "--format", "protobuf"]).is_err());
        assert!(plan(&["fanout", "--transport", "http_stream", "--format", "protobuf"]).is_ok());
        assert!(plan(&["fanout", "--transport", "uni_websocket"]).is_err(), "no token to subscribe with");
        assert!(plan(&["connections", "--transport", "uni_websocket"]).is_ok(), "idle: nothing to subscribe");
        assert!(plan(&["fanout", "--target", "redis://127.0.0.1", "--transport", "http_stream"]).is_err());
    }

    #[test]
    fn server_pids_are_a_list() {
        let cli = Cli::try_parse_from(["gyre-bench", "fanout", "--server-pid", "10,11", "--server-pid", "12"]).unwrap();
        let Scenario::Fanout(o) = cli.scenario else { panic!("fanout") };
        assert_eq!(o.out.server_pid, [10, 11, 12]);
    }
}
