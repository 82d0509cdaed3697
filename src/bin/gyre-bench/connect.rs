//! `connect`: the connect rate. WebSocket clients are opened `--concurrency` at a time until
//! `-n` have been tried — TCP connect, upgrade, the `connect` command (with a token, or none
//! for a server whose connect proxy decides) and optionally a `subscribe` — and each is closed
//! once answered (or held to the end with `--keep`). The time from the TCP connect to the
//! last reply is the connect latency; refusals are counted by their error or close code.
//!
//! The attempts are spread over `--threads` event loops, each running its share of the
//! `--concurrency` openers; an opener takes the next attempt from a shared counter. The main
//! thread takes a row of the per-second series (connects/s, latency, the server's CPU) every
//! second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::auth::ClientAuth;
use crate::output::{self, Outputs};
use crate::stats::{self, fmt_n, fmt_us, histogram, now_ns, Latency, ProcSample};
use crate::target::{self, ClientErr, Kind, Target};
use crate::ws::{Hello, WsClient};
use crate::{Fail, WireFormat};

#[derive(Args, Debug, Clone)]
pub struct ConnectOpts {
    /// Server: http://HOST:PORT; several nodes comma-separated (attempt i goes to node i % N).
    #[arg(long, value_name = "URL[,URL...]", default_value = "http://127.0.0.1:8000")]
    pub target: String,
    /// WebSocket endpoint path.
    #[arg(long, default_value = "/connection/websocket")]
    pub ws_path: String,
    /// How clients authenticate.
    #[command(flatten)]
    pub auth: ClientAuth,
    /// Client protocol format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: WireFormat,
    /// Connections to open in all.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub total: usize,
    /// Connections being opened at once.
    #[arg(long, short = 'k', default_value_t = 64)]
    pub concurrency: usize,
    /// Also subscribe to this channel (in the connect frame, as the SDKs do); the connection
    /// counts once both are answered.
    #[arg(long, value_name = "CHANNEL")]
    pub subscribe: Option<String>,
    /// Keep every connection open until the end of the run instead of closing it once
    /// answered (all of them then need an open file).
    #[arg(long)]
    pub keep: bool,
    /// Longest wait, in seconds, for one connection to be answered.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
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

/// Columns of the per-second rows of `connect`, in CSV order.
pub const CONNECT_COLUMNS: &[&str] = &[
    "t",
    "phase",
    "connects_per_s",
    "failed_per_s",
    "latency_p50_us",
    "latency_p99_us",
    "latency_max_us",
    "open",
    "server_cpu_pct",
    "server_rss_kb",
    "tool_cpu_pct",
];

/// Attempts that all fail before the run gives up (when none succeeded).
const GIVE_UP_AFTER: u64 = 100;

/// What the openers share with the main thread.
struct Shared {
    next: AtomicUsize,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Connections held open (`--keep`), and those of them the server ended meanwhile.
    open: AtomicU64,
    dropped: AtomicU64,
    /// Openers still running.
    running: AtomicUsize,
    /// Connect latencies (ns) not yet taken by the main thread, one per thread.
    hists: Vec<Mutex<Histogram<u64>>>,
    /// Failures by what they were: `error 101`, `close 3501`, `timeout`, ...
    failures: Mutex<BTreeMap<String, u64>>,
    /// The first message of each kind of failure.
    examples: Mutex<BTreeMap<String, String>>,
}

impl Shared {
    fn fail(&self, e: &ClientErr) {
        let key = failure_key(e);
        self.failed.fetch_add(1, Relaxed);
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default() += 1;
        self.examples.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert_with(|| e.to_string());
    }

    fn take_hist(&self) -> Histogram<u64> {
        let mut all = histogram();
        for h in &self.hists {
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*h);
            h.reset();
        }
        all
    }
}

/// How a failure is counted: by the server's error or close code where it gave one.
fn failure_key(e: &ClientErr) -> String {
    match e {
        ClientErr::Refused { what, code, .. } => format!("{what} error {code}"),
        ClientErr::Closed(code, _) => format!("close {code}"),
        ClientErr::Rejected(m) if m.contains("handshake") => "handshake refused".into(),
        ClientErr::Rejected(_) => "rejected".into(),
        ClientErr::Io(m) if m.starts_with("timeout") => "timeout".into(),
        ClientErr::Io(m) if m.contains("connect to") => "tcp connect".into(),
        ClientErr::Io(_) => "connection lost".into(),
    }
}

/// Everything an opener needs, fixed before the threads start.
struct Plan {
    o: ConnectOpts,
    nodes: Vec<Target>,
}

impl Plan {
    fn token_for(&self, i: usize) -> Result<String, String> {
        self.o.auth.token_for(i, Map::new)
    }
}

fn check(o: &ConnectOpts) -> Result<Vec<Target>, Fail> {
    let nodes = Target::parse_list(&o.target)?;
    if nodes[0].kind != Kind::Centrifugo {
        return Err(Fail::setup("connect needs a Centrifugo-compatible target (http://HOST:PORT)"));
    }
    if o.total == 0 || o.concurrency == 0 || o.threads == 0 || o.source_ips == 0 {
        return Err(Fail::setup("-n, --concurrency, --threads and --source-ips must be at least 1"));
    }
    if o.timeout.is_nan() || o.timeout <= 0.0 {
        return Err(Fail::setup("--timeout must be positive"));
    }
    o.auth.check()?;
    if o.subscribe.as_deref() == Some("") {
        return Err(Fail::setup("--subscribe needs a channel name"));
    }
    if o.source_ips > 1 && !nodes.iter().all(Target::is_loopback) {
        return Err(Fail::setup("--source-ips needs a loopback target (127.0.0.x source addresses)"));
    }
    Ok(nodes)
}

pub fn main(o: ConnectOpts) -> Result<(), Fail> {
    let nodes = check(&o)?;
    for n in &nodes {
        n.check_reachable()?;
    }
    let nofile = target::raise_nofile() as usize;
    let concurrency = o.concurrency.min(o.total);
    let fds = if o.keep { o.total } else { concurrency } + 64;
    if fds > nofile {
        let what = if o.keep { format!("--keep holds all {} connections", o.total) } else { "--concurrency".into() };
        return Err(Fail::setup(format!(
            "{what}: about {fds} open files are needed, the limit is {nofile}: raise it (ulimit -n), or lower {}",
            if o.keep { "-n (or drop --keep)" } else { "--concurrency" }
        )));
    }
    o.out.check()?;
    let machine = output::machine();
    let threads = o.threads.min(concurrency);
    let sh = Arc::new(Shared {
        next: AtomicUsize::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        open: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        running: AtomicUsize::new(concurrency),
        hists: (0..threads).map(|_| Mutex::new(histogram())).collect(),
        failures: Mutex::new(BTreeMap::new()),
        examples: Mutex::new(BTreeMap::new()),
    });
    let plan = Arc::new(Plan { o: o.clone(), nodes });

    let server_start = stats::sample_servers(&o.out.server_pid);
    if !o.out.server_pid.is_empty() && server_start.is_none() {
        return Err(Fail::setup("cannot read /proc of --server-pid: is it right?"));
    }
    let tool_start = stats::sample(None);
    let start = now_ns();
    for t in 0..threads {
        let (plan, sh) = (plan.clone(), sh.clone());
        // Opener k runs on thread k % threads.
        let openers = (t..concurrency).step_by(threads).count();
        std::thread::Builder::new()
            .name(format!("connect-{t}"))
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build();
                match rt {
                    Ok(mut rt) => rt.block_on(thread_main(plan, sh, t, openers)),
                    Err(e) => {
                        eprintln!("gyre-bench: cannot start an event loop: {e}");
                        sh.running.fetch_sub(openers, Relaxed);
                    }
                }
            })
            .map_err(|e| Fail::setup(format!("cannot start a thread: {e}")))?;
    }

    // The per-second rows, until every attempt is answered or failed.
    let mut total_hist = histogram();
    let mut rows = Vec::new();
    let mut last = (start, 0u64, 0u64, server_start, tool_start);
    let mut rss_max = server_start.map_or(0, |s| s.rss_kb);
    let mut gave_up = false;
    loop {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && sh.running.load(Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let done = sh.running.load(Relaxed) == 0;
        let h = sh.take_hist();
        let _ = total_hist.add(&h);
        let (now, ok, failed) = (now_ns(), sh.ok.load(Relaxed), sh.failed.load(Relaxed));
        let (server, tool) = (stats::sample_servers(&o.out.server_pid), stats::sample(None));
        rss_max = rss_max.max(server.map_or(0, |s| s.rss_kb));
        let dt = (now - last.0) as f64 / 1e9;
        if dt >= 0.05 {
            rows.push(row(
                now - start,
                dt,
                (ok - last.1, failed - last.2),
                &h,
                sh.open.load(Relaxed),
                server,
                last.3,
                tool,
                last.4,
            ));
        }
        if !o.out.quiet {
            let p99 = Latency::of(&total_hist).p99;
            eprintln!(
                "[{:>4.0}s] connect  done {}/{}  {}/s  failed {}  p99 {}{}",
                (now - start) as f64 / 1e9,
                fmt_n((ok + failed) as f64),
                fmt_n(o.total as f64),
                fmt_n((ok - last.1) as f64 / dt.max(1e-9)),
                fmt_n(failed as f64),
                fmt_us(p99),
                if o.keep { format!("  open {}", fmt_n(sh.open.load(Relaxed) as f64)) } else { String::new() },
            );
        }
        last = (now, ok, failed, server, tool);
        if ok == 0 && failed >= GIVE_UP_AFTER.min(o.total as u64) {
            gave_up = true;
            break;
        }
        if done {
            break;
        }
    }
    let secs = (last.0 - start) as f64 / 1e9;
    let (ok, failed) = (sh.ok.load(Relaxed), sh.failed.load(Relaxed));
    let failures = sh.failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let examples = sh.examples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if ok == 0 {
        let (key, example) = examples.iter().max_by_key(|(k, _)| failures.get(*k)).map_or(("", ""), |(k, v)| (k, v));
        let why = if gave_up && (failed as usize) < o.total {
            format!("the first {failed} attempts")
        } else {
            format!("all {failed} attempts")
        };
        return Err(Fail::run(format!("{why} failed; most as {key}: {example}{}", hint_for(key, &o))));
    }
    let server = server_start.zip(last.3).map(|(a, b)| stats::Usage { start: a, end: b, rss_max_kb: rss_max });
    let tool = tool_start.zip(last.4).map(|(a, b)| stats::Usage { start: a, end: b, rss_max_kb: 0 });
    let lat = Latency::of(&total_hist);
    let per_s = ok as f64 / secs.max(1e-9);
    let fmt = o.format.name();
    let auth = o.auth.describe();
    let mut table = vec![
        ("target".to_string(), format!("{} ({fmt} over websocket, {auth})", o.target)),
        (
            "connections".into(),
            format!(
                "{} ok, {} failed, of {}; {concurrency} at a time{}{}",
                fmt_n(ok as f64),
                fmt_n(failed as f64),
                fmt_n(o.total as f64),
                o.subscribe.as_deref().map_or(String::new(), |c| format!(", subscribing to {c}")),
                if o.keep { ", kept open" } else { ", each closed once answered" }
            ),
        ),
        ("connects".into(), format!("{}/s over {secs:.2} s", fmt_n(per_s))),
        ("latency p50 / p90 / p99".into(), format!("{} / {} / {}", fmt_us(lat.p50), fmt_us(lat.p90), fmt_us(lat.p99))),
        ("latency p99.9 / max".into(), format!("{} / {}", fmt_us(lat.p999), fmt_us(lat.max))),
    ];
    for (k, n) in &failures {
        table.push((format!("failed: {k}"), format!("{}  e.g. {}", fmt_n(*n as f64), examples[k])));
    }
    if o.keep {
        table.push(("dropped while held".into(), fmt_n(sh.dropped.load(Relaxed) as f64)));
    }
    if let Some(u) = server {
        let cpu = u.cpu_s();
        table.push((
            "server cpu".into(),
            format!("{cpu:.2} s ({:.0}% of one core, {:.0} µs per connect)", cpu / secs * 100.0, cpu * 1e6 / ok as f64),
        ));
        table.push(("server rss start / end / max".into(), u.rss_row()));
    }
    if let Some(u) = tool {
        table.push(("gyre-bench cpu".into(), u.cpu_row(secs)));
    }
    let label = o.out.label(&o.target, Kind::Centrifugo.name());
    let server_json = server.map_or(Value::Null, |u| {
        let mut j = u.json(secs);
        j["cpu_us_per_connect"] = json!(((u.cpu_s()) * 1e7 / ok as f64).round() / 10.0);
        j
    });
    let j = json!({
        "tool": "gyre-bench", "scenario": "connect", "label": label, "target": o.target,
        "kind": Kind::Centrifugo.name(), "format": fmt, "transport": "websocket", "auth": auth,
        "connections": o.total, "concurrency": concurrency, "subscribe": o.subscribe, "keep": o.keep,
        "ok": ok, "failed": failed, "failures": failures, "failure_examples": examples,
        "duration_s": (secs * 1000.0).round() / 1000.0, "connects_per_s": per_s.round(),
        "open_at_end": sh.open.load(Relaxed), "dropped_while_held": sh.dropped.load(Relaxed),
        "latency_us": lat.json(),
        "latency_measures": "TCP connect to the connect reply (and the subscribe reply with --subscribe)",
        "latency_cdf": output::latency_cdf(&total_hist),
        "server": server_json, "client": tool.map_or(Value::Null, |u| u.json(secs)),
        "params": {
            "scenario": "connect", "target": o.target, "ws_path": o.ws_path, "format": fmt, "auth": auth,
            "connections": o.total, "concurrency": concurrency, "subscribe": o.subscribe, "keep": o.keep,
            "timeout_s": o.timeout, "threads": threads, "source_ips": o.source_ips,
            "server_pid": o.out.server_pid, "version": env!("CARGO_PKG_VERSION"),
        },
        "machine": machine, "series_columns": CONNECT_COLUMNS, "series": rows,
    });
    stats::table("gyre-bench connect", &table, o.out.json_on_stdout());
    o.out.emit(&j, CONNECT_COLUMNS)
}

/// What to do about the usual reason for every attempt failing.
fn hint_for(key: &str, o: &ConnectOpts) -> &'static str {
    let no_token = o.auth.is_none();
    match key {
        "close 3501" if no_token => {
            " (the server wants a token: pass --token or --hmac-secret, or turn on its connect proxy)"
        }
        "close 3500" => " (check --token / --hmac-secret against client.token.hmac_secret_key)",
        "connect error 100" if no_token => " (the connect proxy failed: is the backend running?)",
        "handshake refused" => " (check --ws-path)",
        _ => "",
    }
}

/// One row of the series: `dt` seconds ending `t_ns` after the start.
#[allow(clippy::too_many_arguments)]
fn row(
    t_ns: u64,
    dt: f64,
    (ok, failed): (u64, u64),
    h: &Histogram<u64>,
    open: u64,
    server: Option<ProcSample>,
    server_before: Option<ProcSample>,
    tool: Option<ProcSample>,
    tool_before: Option<ProcSample>,
) -> Value {
    let r1 = |v: f64| (v * 10.0).round() / 10.0;
    let us = |ns: u64| r1(ns as f64 / 1000.0);
    let pct = |a: Option<ProcSample>, b: Option<ProcSample>| {
        a.zip(b).map_or(Value::Null, |(a, b)| json!(r1((a.cpu_s - b.cpu_s).max(0.0) / dt * 100.0)))
    };
    let lat = |q: f64| if h.is_empty() { Value::Null } else { json!(us(h.value_at_quantile(q))) };
    json!({
        "t": r1(t_ns as f64 / 1e9), "phase": "connect",
        "connects_per_s": (ok as f64 / dt).round(), "failed_per_s": (failed as f64 / dt).round(),
        "latency_p50_us": lat(0.5), "latency_p99_us": lat(0.99),
        "latency_max_us": if h.is_empty() { Value::Null } else { json!(us(h.max())) },
        "open": open, "server_cpu_pct": pct(server, server_before),
        "server_rss_kb": server.map_or(Value::Null, |s| json!(s.rss_kb)), "tool_cpu_pct": pct(tool, tool_before),
    })
}

async fn thread_main(plan: Arc<Plan>, sh: Arc<Shared>, thread: usize, openers: usize) {
    let mut tasks = Vec::new();
    for _ in 0..openers {
        tasks.push(monoio::spawn(opener(plan.clone(), sh.clone(), thread)));
    }
    for t in tasks {
        t.await;
    }
    // Held connections stay open until the process ends.
    if plan.o.keep {
        std::future::pending::<()>().await;
    }
}

/// Opens connections until the attempts run out.
async fn opener(plan: Arc<Plan>, sh: Arc<Shared>, thread: usize) {
    let o = &plan.o;
    let limit = Duration::from_secs_f64(o.timeout);
    loop {
        let i = sh.next.fetch_add(1, Relaxed);
        if i >= o.total {
            break;
        }
        let token = match plan.token_for(i) {
            Ok(t) => t,
            Err(e) => {
                sh.fail(&ClientErr::Rejected(e));
                continue;
            }
        };
        let node = &plan.nodes[i % plan.nodes.len()];
        let hello = Hello {
            addr: node.addr,
            source: target::source_for(i, o.source_ips),
            host: &node.host,
            path: &o.ws_path,
            format: o.format,
            token: &token,
            channel: o.subscribe.as_deref(),
            uni: false,
        };
        let t0 = now_ns();
        let opened = monoio::time::timeout(limit, WsClient::open_raw(&hello)).await;
        let elapsed = now_ns().saturating_sub(t0).max(1);
        match opened {
            Ok(Ok(mut c)) => {
                sh.hists[thread].lock().unwrap_or_else(|e| e.into_inner()).saturating_record(elapsed);
                sh.ok.fetch_add(1, Relaxed);
                if o.keep {
                    sh.open.fetch_add(1, Relaxed);
                    let sh = sh.clone();
                    monoio::spawn(async move {
                        let _ = c.idle().await;
                        sh.open.fetch_sub(1, Relaxed);
                        sh.dropped.fetch_add(1, Relaxed);
                    });
                } else {
                    c.close().await;
                }
            }
            Ok(Err(e)) => sh.fail(&e),
            Err(_) => sh.fail(&ClientErr::Io(format!("timeout: no answer within {:.1} s", limit.as_secs_f64()))),
        }
    }
    sh.running.fetch_sub(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Scenario};

    fn opts(args: &[&str]) -> ConnectOpts {
        let cli = Cli::try_parse_from([&["gyre-bench", "connect"], args].concat()).expect("parses");
        match cli.scenario {
            Scenario::Connect(o) => o,
            _ => panic!("not connect"),
        }
    }

    #[test]
    fn checks_options() {
        assert!(check(&opts(&["-n", "10", "--concurrency", "4"])).is_ok());
        assert!(check(&opts(&["-n", "0"])).is_err());
        assert!(check(&opts(&["--concurrency", "0"])).is_err());
        assert!(check(&opts(&["--timeout", "0"])).is_err());
        assert!(check(&opts(&["--timeout", "NaN"])).is_err());
        assert!(check(&opts(&["--token", "t", "--hmac-secret", "s"])).is_err());
        assert!(check(&opts(&["--target", "redis://127.0.0.1:6379"])).is_err());
        assert!(check(&opts(&["--subscribe", ""])).is_err());
        let o = opts(&["--subscribe", "news", "--keep", "-k", "8"]);
        assert_eq!((o.subscribe.as_deref(), o.keep, o.concurrency), (Some("news"), true, 8));
    }

    #[test]
    fn counts_failures_by_code() {
        let refused = ClientErr::Refused { what: "connect", code: 100, message: "internal server error".into() };
        assert_eq!(failure_key(&refused), "connect error 100");
        assert_eq!(failure_key(&ClientErr::Closed(3501, "bad request".into())), "close 3501");
        assert_eq!(failure_key(&ClientErr::Io("timeout: no answer".into())), "timeout");
        assert_eq!(failure_key(&ClientErr::Io("connect to 127.0.0.1:1: refused".into())), "tcp connect");
        let sh = Shared {
            next: AtomicUsize::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            open: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            hists: vec![],
            failures: Mutex::new(BTreeMap::new()),
            examples: Mutex::new(BTreeMap::new()),
        };
        sh.fail(&refused);
        sh.fail(&refused);
        sh.fail(&ClientErr::Closed(3501, "bad request".into()));
        let f = sh.failures.lock().unwrap().clone();
        assert_eq!(f.get("connect error 100"), Some(&2));
        assert_eq!(f.get("close 3501"), Some(&1));
        assert_eq!(sh.failed.load(Relaxed), 3);
    }
}
