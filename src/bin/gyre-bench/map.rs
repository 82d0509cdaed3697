//! `map`: a map channel's state sync and update fan-out. The channel is seeded with `--keys`
//! keys through the server API, then `-n` WebSocket subscribers (JSON, or protobuf with
//! `--format protobuf`) each load its whole state page by page and go live (`--concurrency` at
//! a time); then publishers set random keys through the API for `--duration`, and every update
//! is followed to every subscriber as `fanout` follows publications: delivered/s,
//! publish→deliver latency, lost and duplicated updates.
//!
//! The timeline runs on the main thread — seed, sync, warm-up, measure, stop, drain, settle —
//! every step bounded; the clients ([`crate::map_client`]) run on `--threads` event loops. The
//! per-second series, the totals and the files (`--json`, `--csv`, `--report`) are those of
//! `fanout`, with the sync's figures added.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::auth::ClientAuth;
use crate::map_client::{self, Cx};
use crate::output::{self, Outputs};
use crate::progress::Progress;
use crate::run::{drain, hold};
use crate::series::{Collector, FANOUT_COLUMNS};
use crate::stats::{
    self, fmt_n, fmt_us, histogram, now_ns, Latency, Local, Shared, Usage, DONE, MEASURE, STOP, WARMUP,
};
use crate::target::{self, Kind, Target};
use crate::{Fail, WireFormat};

#[derive(Args, Debug, Clone)]
pub struct MapOpts {
    /// Server: http://HOST:PORT; several nodes of one cluster comma-separated (subscriber i
    /// connects to node i % N; seeding and publishers use the first).
    #[arg(long, value_name = "URL[,URL...]", default_value = "http://127.0.0.1:8000")]
    pub target: String,
    /// The map channel: its namespace needs `"subscription_type": "map"` and must let the
    /// clients subscribe. Its keys are cleared (map_clear) before it is seeded.
    #[arg(long, default_value = "map:bench")]
    pub channel: String,
    /// Keys the channel is seeded with (`k0` .. `k<K-1>`); the updates go to random ones.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// State page size the subscribers ask for (default: the server's, map.default_page_size).
    #[arg(long)]
    pub page_size: Option<usize>,
    /// Subscribers.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub subscribers: usize,
    /// Subscribers connecting and loading the state at once.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub concurrency: usize,
    /// WebSocket endpoint path.
    #[arg(long, default_value = "/connection/websocket")]
    pub ws_path: String,
    /// Legacy HTTP API path (newline-delimited commands in one POST).
    #[arg(long, default_value = "/api")]
    pub api_path: String,
    /// HTTP API key (sent as `X-API-Key` and `Authorization: apikey`); none when empty.
    #[arg(long, default_value = "")]
    pub api_key: String,
    /// How clients authenticate.
    #[command(flatten)]
    pub auth: ClientAuth,
    /// Client protocol format of the subscribers: JSON, or protobuf (binary frames of
    /// varint-length-prefixed messages, subprotocol centrifuge-protobuf).
    #[arg(long, value_enum, default_value = "json")]
    pub format: WireFormat,
    /// Publisher connections (HTTP API, pipelined).
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: usize,
    /// Total update rate in updates/s over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Size of a value in bytes, seeded and updated (updates: at least ~30 bytes).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// map_publish commands per update request.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Update requests in flight per publisher connection.
    #[arg(long, default_value_t = 2)]
    pub inflight: usize,
    /// map_publish commands per seeding request.
    #[arg(long, default_value_t = 1000)]
    pub seed_batch: usize,
    /// Measured update time in seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up in seconds: updates run, nothing is counted in the rates and latencies (lost
    /// and duplicated updates are counted from the first).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Longest wait, in seconds, for in-flight updates after publishing stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Longest time, in seconds, for one subscriber to connect and load the state.
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// Event-loop threads of this process.
    #[arg(long, short = 't', default_value_t = 1)]
    pub threads: usize,
    /// Spread client source addresses over 127.0.0.1..127.0.0.N (loopback targets only).
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// What the run writes and shows.
    #[command(flatten)]
    pub out: Outputs,
}

/// Everything the clients need, fixed before the threads start.
pub struct Plan {
    pub o: MapOpts,
    pub nodes: Vec<Target>,
    /// The channel name as a JSON string.
    pub channel_json: String,
    pub threads: usize,
}

impl Plan {
    pub fn token_for(&self, i: usize) -> Result<String, String> {
        self.o.auth.token_for(i, Map::new)
    }
}

/// What the subscribers' state syncs add up to.
pub struct Sync {
    /// The next subscriber to open.
    pub next: AtomicUsize,
    /// Keys received in state pages (and in the live replies' publications), all subscribers.
    pub keys: AtomicU64,
    pub pages: AtomicU64,
    /// Subscribers that went live with every key, and those that missed some.
    pub complete: AtomicUsize,
    pub incomplete: AtomicUsize,
    /// Keys missing at the end of syncs, state entries seen twice, keys not seeded.
    pub missing: AtomicU64,
    pub repeated: AtomicU64,
    pub foreign: AtomicU64,
    /// When the last subscriber went live (ns).
    pub last_live: AtomicU64,
    /// Sync times (first state page requested → live reply) and connect times, ns.
    pub hist: Mutex<Histogram<u64>>,
    pub connect_hist: Mutex<Histogram<u64>>,
}

impl Sync {
    fn new() -> Sync {
        Sync {
            next: AtomicUsize::new(0),
            keys: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            complete: AtomicUsize::new(0),
            incomplete: AtomicUsize::new(0),
            missing: AtomicU64::new(0),
            repeated: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            last_live: AtomicU64::new(0),
            hist: Mutex::new(histogram()),
            connect_hist: Mutex::new(histogram()),
        }
    }
}

fn check(o: &MapOpts) -> Result<Plan, Fail> {
    let nodes = Target::parse_list(&o.target)?;
    if nodes[0].kind != Kind::Centrifugo {
        return Err(Fail::setup("map needs a Centrifugo-compatible target (http://HOST:PORT)"));
    }
    let counts = [
        (o.subscribers, "-n"),
        (o.keys, "--keys"),
        (o.concurrency, "--concurrency"),
        (o.publishers, "--publishers"),
        (o.batch, "--batch"),
        (o.inflight, "--inflight"),
        (o.seed_batch, "--seed-batch"),
        (o.threads, "--threads"),
        (o.source_ips as usize, "--source-ips"),
    ];
    if let Some((_, name)) = counts.iter().find(|(v, _)| *v == 0) {
        return Err(Fail::setup(format!("{name} must be at least 1")));
    }
    if o.page_size == Some(0) {
        return Err(Fail::setup("--page-size must be at least 1 (leave it out for the server's default)"));
    }
    // Written positively so NaN fails too.
    let valid = o.duration > 0.0 && o.connect_timeout > 0.0 && o.warmup >= 0.0 && o.drain >= 0.0 && o.rate >= 0.0;
    if !valid {
        return Err(Fail::setup(
            "--duration and --connect-timeout must be positive; --warmup, --drain and --rate not negative",
        ));
    }
    o.auth.check()?;
    if o.channel.is_empty() {
        return Err(Fail::setup("--channel needs a channel name"));
    }
    if o.source_ips > 1 && !nodes.iter().all(Target::is_loopback) {
        return Err(Fail::setup("--source-ips needs a loopback target (127.0.0.x source addresses)"));
    }
    Ok(Plan {
        channel_json: Value::from(o.channel.as_str()).to_string(),
        threads: o.threads.min(o.subscribers.max(o.publishers)),
        nodes,
        o: o.clone(),
    })
}

pub fn main(o: MapOpts) -> Result<(), Fail> {
    let plan = Arc::new(check(&o)?);
    for n in &plan.nodes {
        n.check_reachable()?;
    }
    let nofile = target::raise_nofile() as usize;
    let fds = o.subscribers + o.publishers + 64;
    if fds > nofile {
        return Err(Fail::setup(format!(
            "{} subscribers need about {fds} open files, the limit is {nofile}: raise it (ulimit -n) or use fewer",
            o.subscribers
        )));
    }
    o.out.check()?;
    let machine = output::machine();
    if !o.out.server_pid.is_empty() && stats::sample_servers(&o.out.server_pid).is_none() {
        return Err(Fail::setup("cannot read /proc of --server-pid: is it right?"));
    }

    let seed_s = map_client::seed(&plan)?;
    if !o.out.quiet {
        eprintln!(
            "gyre-bench: seeded {} with {} keys in {seed_s:.2} s ({}/s)",
            o.channel,
            fmt_n(o.keys as f64),
            fmt_n(o.keys as f64 / seed_s.max(1e-9))
        );
    }

    let sh = Arc::new(Shared::new(plan.threads, o.publishers, 1));
    let sync = Arc::new(Sync::new());
    let mut progress = Progress::new(&o.out);
    let sync_start = now_ns();
    let (server_before, tool_before) = (stats::sample_servers(&o.out.server_pid), stats::sample(None));
    start_threads(&plan, &sh, &sync)?;
    wait_live(&plan, &sh, &mut progress)?;
    let (server_after, tool_after) = (stats::sample_servers(&o.out.server_pid), stats::sample(None));
    let usage = |a: Option<stats::ProcSample>, b| a.zip(b).map(|(start, end)| Usage { start, end, rss_max_kb: 0 });
    let sync_usage = (usage(server_before, server_after), usage(tool_before, tool_after));
    let live = sh.ready.load(Relaxed);
    let all_live_s = sync.last_live.load(Relaxed).saturating_sub(sync_start) as f64 / 1e9;

    sh.phase.store(WARMUP, Relaxed);
    hold(&sh, &mut progress, "warmup", o.warmup, None)?;
    let mut rows = Collector::new(false, &o.out.server_pid, &[]);
    let start = now_ns();
    let server_start = stats::sample_servers(&o.out.server_pid);
    let client_start = stats::sample(None);
    sh.measure_start.store(start, Relaxed);
    sh.phase.store(MEASURE, Relaxed);
    rows.begin(&sh, start);
    hold(&sh, &mut progress, "measure", o.duration, Some(&mut rows))?;
    let end = now_ns();
    sh.measure_end.store(end, Relaxed);
    sh.phase.store(STOP, Relaxed);
    let server_end = stats::sample_servers(&o.out.server_pid);
    let client_end = stats::sample(None);
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
    if let Some(f) = sh.fatal() {
        return Err(Fail::run(f));
    }
    rows.finish(&sh);
    let server = server_start.zip(server_end).map(|(start, end)| Usage { start, end, rss_max_kb: progress.rss_max_kb });
    let client = client_start.zip(client_end).map(|(start, end)| Usage { start, end, rss_max_kb: 0 });
    let r = Outcome { seed_s, all_live_s, live, secs, server, client, sync_usage, machine };
    report(&plan, &sh, &sync, &rows, r)
}

/// Starts the event-loop threads; they run until the process exits.
fn start_threads(plan: &Arc<Plan>, sh: &Arc<Shared>, sync: &Arc<Sync>) -> Result<(), Fail> {
    let concurrency = plan.o.concurrency.min(plan.o.subscribers);
    for thread in 0..plan.threads {
        let (plan, sh, sync) = (plan.clone(), sh.clone(), sync.clone());
        // Opener k runs on thread k % threads.
        let openers = (thread..concurrency).step_by(plan.threads).count();
        std::thread::Builder::new()
            .name(format!("map-{thread}"))
            .spawn(move || {
                let local = Local::new(sh.clone(), thread);
                let cx = std::rc::Rc::new(Cx { plan: plan.clone(), sh: sh.clone(), sync, thread, local });
                match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
                    Ok(mut rt) => rt.block_on(map_client::thread_main(cx, openers)),
                    Err(e) => sh.set_fatal(format!("cannot start an event loop: {e}")),
                }
            })
            .map_err(|e| Fail::setup(format!("cannot start a thread: {e}")))?;
    }
    Ok(())
}

/// Waits until every subscriber is live or failed (each is bounded by --connect-timeout).
fn wait_live(plan: &Plan, sh: &Shared, progress: &mut Progress) -> Result<(), Fail> {
    let want = plan.o.subscribers;
    let waves = want.div_ceil(plan.o.concurrency.min(want)) as f64;
    let limit = Duration::from_secs_f64(plan.o.connect_timeout * waves + 5.0);
    progress.wait_ready(sh, want, limit, ("sync", "syncing", "subscriber"))?;
    let ready = sh.ready.load(Relaxed);
    if ready == 0 {
        return Err(Fail::run(format!("no subscriber went live: {}", sh.first_note().unwrap_or_default())));
    }
    if ready < want {
        eprintln!("gyre-bench: warning: {} of {want} subscribers failed to sync", want - ready);
    }
    Ok(())
}

/// The run's own figures besides the shared counters.
struct Outcome {
    seed_s: f64,
    all_live_s: f64,
    live: usize,
    secs: f64,
    server: Option<Usage>,
    client: Option<Usage>,
    /// The server's and this process's use from the first connect to the last live reply.
    sync_usage: (Option<Usage>, Option<Usage>),
    machine: Value,
}

/// Prints the table and writes the JSON report and the files asked for.
fn report(plan: &Plan, sh: &Shared, sync: &Sync, rows: &Collector, r: Outcome) -> Result<(), Fail> {
    let o = &plan.o;
    let g = |a: &AtomicU64| a.load(Relaxed);
    let gu = |a: &AtomicUsize| a.load(Relaxed);
    let secs = r.secs;
    let lat = Latency::of(&rows.delivery);
    let sync_h = sync.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let connect_h = sync.connect_hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (sync_lat, connect_lat) = (Latency::of(&sync_h), Latency::of(&connect_h));
    let keys_synced = g(&sync.keys);
    let keys_per_s = keys_synced as f64 / r.all_live_s.max(1e-9);
    let (published, delivered) = (g(&sh.published_window), sh.delivered_window());
    let (lost, dup) = (g(&sh.lost), g(&sh.duplicated));
    let auth = o.auth.describe();
    let format = o.format.name();
    let page = o.page_size.map_or("the server's default".to_string(), |p| p.to_string());
    let rate = if o.rate > 0.0 { format!("{}/s", fmt_n(o.rate)) } else { "max".into() };
    let mut table = vec![
        ("target".to_string(), format!("{} ({format} over websocket, {auth}), channel {}", o.target, o.channel)),
        ("seeded".into(), format!("{} keys of {} B in {:.2} s", fmt_n(o.keys as f64), o.size, r.seed_s)),
        (
            "subscribers live".into(),
            format!(
                "{} of {} ({} at a time, page size {page}); all live after {:.2} s",
                fmt_n(r.live as f64),
                fmt_n(o.subscribers as f64),
                o.concurrency.min(o.subscribers),
                r.all_live_s
            ),
        ),
        (
            "state sync p50 / p90 / p99 / max".into(),
            format!(
                "{} / {} / {} / {}",
                fmt_us(sync_lat.p50),
                fmt_us(sync_lat.p90),
                fmt_us(sync_lat.p99),
                fmt_us(sync_lat.max)
            ),
        ),
        (
            "keys synced".into(),
            format!("{}  ({}/s, {} pages)", fmt_n(keys_synced as f64), fmt_n(keys_per_s), fmt_n(g(&sync.pages) as f64)),
        ),
        (
            "synced every key / missed some".into(),
            format!(
                "{} / {}  (keys missing {}, repeated {}, not seeded {})",
                fmt_n(gu(&sync.complete) as f64),
                fmt_n(gu(&sync.incomplete) as f64),
                fmt_n(g(&sync.missing) as f64),
                fmt_n(g(&sync.repeated) as f64),
                fmt_n(g(&sync.foreign) as f64)
            ),
        ),
        ("duration".into(), format!("{secs:.2} s of updates measured after {:.1} s warm-up", o.warmup)),
        (
            "publishers".into(),
            format!("{} (rate {rate}, batch {}, inflight {}, {} B)", o.publishers, o.batch, o.inflight, o.size),
        ),
        ("updates published".into(), format!("{}  ({}/s)", fmt_n(published as f64), fmt_n(published as f64 / secs))),
        ("updates delivered".into(), format!("{}  ({}/s)", fmt_n(delivered as f64), fmt_n(delivered as f64 / secs))),
        ("latency p50 / p90 / p99".into(), format!("{} / {} / {}", fmt_us(lat.p50), fmt_us(lat.p90), fmt_us(lat.p99))),
        ("latency p99.9 / max".into(), format!("{} / {}", fmt_us(lat.p999), fmt_us(lat.max))),
        ("lost / duplicated".into(), format!("{} / {}", fmt_n(lost as f64), fmt_n(dup as f64))),
        ("disconnects".into(), fmt_n(g(&sh.disconnects) as f64)),
        ("publish errors".into(), fmt_n(g(&sh.publish_errors) as f64)),
    ];
    let cpu_of = |u: Option<Usage>| u.map(|u| (u.cpu_s()).max(0.0));
    let (sync_server_cpu, sync_tool_cpu) = (cpu_of(r.sync_usage.0), cpu_of(r.sync_usage.1));
    if let Some(cpu) = sync_server_cpu {
        table.insert(
            6,
            (
                "server cpu during sync".into(),
                format!(
                    "{cpu:.2} s ({:.0}% of one core, {:.2} µs per key)",
                    cpu / r.all_live_s.max(1e-9) * 100.0,
                    cpu * 1e6 / keys_synced.max(1) as f64
                ),
            ),
        );
    }
    if let Some(u) = r.server {
        table.push(("server rss start / end / max".into(), u.rss_row()));
        table.push(("server cpu".into(), u.cpu_row(secs)));
    }
    if let Some(u) = r.client {
        table.push(("gyre-bench cpu".into(), u.cpu_row(secs)));
    }
    let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
    let mut j = json!({
        "tool": "gyre-bench", "scenario": "map",
        "label": o.out.label(&o.target, Kind::Centrifugo.name()),
        "target": o.target, "kind": Kind::Centrifugo.name(), "format": format, "transport": "websocket",
        "auth": auth, "channel": o.channel, "keys": o.keys, "page_size": o.page_size, "subscribers": o.subscribers,
        "concurrency": o.concurrency, "publishers": o.publishers, "size": o.size, "rate": o.rate,
        "batch": o.batch, "inflight": o.inflight, "threads": plan.threads,
        "seed_s": r3(r.seed_s), "seeded_per_s": (o.keys as f64 / r.seed_s.max(1e-9)).round(),
        "subscribers_ready": r.live, "subscribers_failed": sh.failed.load(Relaxed),
    });
    j["sync"] = json!({
        "all_live_s": r3(r.all_live_s), "keys": keys_synced, "keys_per_s": keys_per_s.round(),
        "pages": g(&sync.pages), "complete": gu(&sync.complete), "incomplete": gu(&sync.incomplete),
        "keys_missing": g(&sync.missing), "keys_repeated": g(&sync.repeated), "keys_not_seeded": g(&sync.foreign),
        "sync_us": sync_lat.json(), "connect_us": connect_lat.json(),
        "sync_measures": "the first state page requested to the live reply, per subscriber",
        "sync_cdf": output::latency_cdf(&sync_h),
        "server_cpu_s": sync_server_cpu.map(|c| (c * 100.0).round() / 100.0),
        "server_cpu_us_per_key": sync_server_cpu.map(|c| (c * 1e8 / keys_synced.max(1) as f64).round() / 100.0),
        "client_cpu_s": sync_tool_cpu.map(|c| (c * 100.0).round() / 100.0),
    });
    let totals = json!({
        "duration_s": r3(secs),
        "published": published, "published_per_s": (published as f64 / secs).round(),
        "delivered": delivered, "delivered_per_s": (delivered as f64 / secs).round(),
        "delivered_total": sh.delivered(), "expected_total": g(&sh.expected),
        "lost": lost, "duplicated": dup, "disconnects": g(&sh.disconnects), "publish_errors": g(&sh.publish_errors),
        "latency_us": lat.json(),
        "latency_measures": "publish to deliver: send time in the value to arrival at a subscriber",
        "latency_cdf": output::latency_cdf(&rows.delivery),
        "ack_latency_us": Latency::of(&rows.ack).json(),
        "server": r.server.map_or(Value::Null, |u| u.json(secs)),
        "client": r.client.map_or(Value::Null, |u| u.json(secs)),
    });
    let params = json!({
        "scenario": "map", "target": o.target, "channel": o.channel, "keys": o.keys, "page_size": o.page_size,
        "subscribers": o.subscribers, "concurrency": o.concurrency, "publishers": o.publishers,
        "rate": o.rate, "size": o.size, "batch": o.batch, "inflight": o.inflight, "seed_batch": o.seed_batch,
        "duration_s": o.duration, "warmup_s": o.warmup, "drain_s": o.drain,
        "connect_timeout_s": o.connect_timeout, "threads": plan.threads, "source_ips": o.source_ips,
        "ws_path": o.ws_path, "api_path": o.api_path, "format": format, "auth": auth, "server_pid": o.out.server_pid,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let (Some(m), Value::Object(t)) = (j.as_object_mut(), totals) {
        m.extend(t);
    }
    j["params"] = params;
    j["machine"] = r.machine;
    j["series_columns"] = json!(FANOUT_COLUMNS);
    j["series"] = Value::Array(rows.rows.clone());
    stats::table("gyre-bench map", &table, o.out.json_on_stdout());
    o.out.emit(&j, FANOUT_COLUMNS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Scenario};

    fn plan(args: &[&str]) -> Result<Plan, Fail> {
        let cli =
            Cli::try_parse_from([&["gyre-bench", "map"], args].concat()).map_err(|e| Fail::setup(e.to_string()))?;
        match cli.scenario {
            Scenario::Map(o) => check(&o),
            _ => Err(Fail::setup("not map")),
        }
    }

    #[test]
    fn checks_options() {
        let p = plan(&["-n", "20", "--keys", "500", "--page-size", "100", "-c", "5", "-t", "2"]).unwrap();
        assert_eq!((p.o.subscribers, p.o.keys, p.o.page_size, p.o.concurrency, p.threads), (20, 500, Some(100), 5, 2));
        assert_eq!(p.channel_json, "\"map:bench\"");
        let p = plan(&[]).unwrap();
        assert_eq!((p.o.keys, p.o.page_size, p.o.subscribers), (10_000, None, 100));
        for bad in [
            &["-n", "0"][..],
            &["--keys", "0"],
            &["--page-size", "0"],
            &["-c", "0"],
            &["-p", "0"],
            &["--batch", "0"],
            &["--threads", "0"],
            &["-d", "0"],
            &["-d", "NaN"],
            &["--rate", "-1"],
            &["--token", "t", "--hmac-secret", "s"],
            &["--channel", ""],
            &["--target", "redis://127.0.0.1:6379"],
        ] {
            assert!(plan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn speaks_json_or_protobuf() {
        assert_eq!(plan(&[]).unwrap().o.format, WireFormat::Json);
        assert_eq!(plan(&["--format", "protobuf"]).unwrap().o.format, WireFormat::Protobuf);
        assert!(plan(&["--format", "msgpack"]).is_err());
    }

    #[test]
    fn threads_are_not_more_than_clients() {
        assert_eq!(plan(&["-n", "1", "-t", "4"]).unwrap().threads, 1);
        assert_eq!(plan(&["-n", "1", "-p", "3", "-t", "4"]).unwrap().threads, 3);
    }

    #[test]
    fn mints_tokens_per_subscriber() {
        let p = plan(&["--hmac-secret", "s", "--user", "u"]).unwrap();
        let (a, b) = (p.token_for(0).unwrap(), p.token_for(1).unwrap());
        assert!(!a.is_empty() && a != b);
        assert_eq!(plan(&["--token", "t"]).unwrap().token_for(5).unwrap(), "t");
        assert_eq!(plan(&[]).unwrap().token_for(0).unwrap(), "");
    }
}
