//! The per-second record of a run, kept by the main thread: every second it sums the threads'
//! counters, takes their latency histograms (merging them into the run's totals) and samples
//! the server processes and this one in `/proc`. The rows go to `--csv`, `--json` and
//! `--report`; the totals give the run's percentiles.

use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::stats::{self, histogram, now_ns, Latency, ProcSample, Shared};

/// Columns of the per-second rows of `fanout`, in CSV order.
pub const FANOUT_COLUMNS: &[&str] = &[
    "t",
    "phase",
    "published_per_s",
    "delivered_per_s",
    "latency_p50_us",
    "latency_p99_us",
    "latency_max_us",
    "lost",
    "duplicated",
    "publish_errors",
    "disconnects",
    "server_cpu_pct",
    "server_rss_kb",
    "tool_cpu_pct",
];

/// Columns of `ingest`: the latency is the round trip of a command (write → reply).
pub const INGEST_COLUMNS: &[&str] = &[
    "t",
    "phase",
    "commands_per_s",
    "latency_p50_us",
    "latency_p99_us",
    "latency_max_us",
    "publish_errors",
    "server_cpu_pct",
    "server_rss_kb",
    "tool_cpu_pct",
];

/// Columns of `connections`.
pub const CONNECTIONS_COLUMNS: &[&str] =
    &["t", "phase", "open", "failed", "disconnects", "server_cpu_pct", "server_rss_kb", "tool_rss_kb"];

/// Counter values at the previous row.
#[derive(Default, Clone, Copy)]
struct Mark {
    ns: u64,
    published: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    errors: u64,
    disconnects: u64,
    server: Option<ProcSample>,
    tool: Option<ProcSample>,
}

/// The per-second rows and the latency totals of one run.
pub struct Collector {
    ingest: bool,
    pids: Vec<u32>,
    /// Subscriber processes of this run (their CPU counts as the tool's).
    tool_pids: Vec<u32>,
    /// Measure start (ns); rows are timed from it.
    origin: u64,
    last: Mark,
    pub rows: Vec<Value>,
    /// Publish→deliver latencies (fanout) of the whole run, ns.
    pub delivery: Histogram<u64>,
    /// Command→reply round trips of the whole run, ns.
    pub ack: Histogram<u64>,
}

/// Rounds to one decimal (CSV and JSON stay readable).
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

impl Collector {
    pub fn new(ingest: bool, pids: &[u32], tool_pids: &[u32]) -> Collector {
        Collector {
            ingest,
            pids: pids.to_vec(),
            tool_pids: tool_pids.to_vec(),
            origin: 0,
            last: Mark::default(),
            rows: Vec::new(),
            delivery: histogram(),
            ack: histogram(),
        }
    }

    fn mark(&self, sh: &Shared) -> Mark {
        let (lost, duplicated) = sh.seen_lost_dup();
        Mark {
            ns: now_ns(),
            published: sh.published.load(Relaxed),
            delivered: sh.delivered(),
            lost,
            duplicated,
            errors: sh.publish_errors.load(Relaxed),
            disconnects: sh.disconnects.load(Relaxed),
            server: stats::sample_servers(&self.pids),
            tool: stats::sample_tool(&self.tool_pids),
        }
    }

    /// At the start of the measured window: the reference for the first row. What was
    /// recorded before it (warm-up) is dropped.
    pub fn begin(&mut self, sh: &Shared, origin: u64) {
        self.origin = origin;
        let _ = sh.take_hists();
        self.last = self.mark(sh);
    }

    /// Whether a row is due (a second since the last).
    pub fn due(&self) -> bool {
        now_ns().saturating_sub(self.last.ns) >= 1_000_000_000
    }

    /// Seconds since the last row.
    pub fn since_last_s(&self) -> f64 {
        now_ns().saturating_sub(self.last.ns) as f64 / 1e9
    }

    /// The run's p99 so far, µs (deliveries; ingest: round trips).
    pub fn p99(&self) -> f64 {
        Latency::of(if self.ingest { &self.ack } else { &self.delivery }).p99
    }

    /// Takes the histograms into the totals; returns the interval's own.
    fn take(&mut self, sh: &Shared) -> Histogram<u64> {
        let (del, ack) = sh.take_hists();
        let _ = self.delivery.add(&del);
        let _ = self.ack.add(&ack);
        if self.ingest {
            ack
        } else {
            del
        }
    }

    /// Appends the row of the interval since the last one (`phase`: measure, drain).
    pub fn row(&mut self, sh: &Shared, phase: &str) {
        let h = self.take(sh);
        let now = self.mark(sh);
        let last = std::mem::replace(&mut self.last, now);
        let dt = now.ns.saturating_sub(last.ns) as f64 / 1e9;
        if dt <= 0.0 {
            return;
        }
        let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / dt).round() as u64;
        let lat = Latency::of(&h);
        let lat_v = |v: f64| if lat.count > 0 { json!(r1(v)) } else { Value::Null };
        let mut row = Map::new();
        row.insert("t".into(), json!((now.ns.saturating_sub(self.origin) as f64 / 1e6).round() / 1e3));
        row.insert("phase".into(), json!(phase));
        if self.ingest {
            row.insert("commands_per_s".into(), json!(rate(now.published, last.published)));
        } else {
            row.insert("published_per_s".into(), json!(rate(now.published, last.published)));
            row.insert("delivered_per_s".into(), json!(rate(now.delivered, last.delivered)));
        }
        row.insert("latency_p50_us".into(), lat_v(lat.p50));
        row.insert("latency_p99_us".into(), lat_v(lat.p99));
        row.insert("latency_max_us".into(), lat_v(lat.max));
        if !self.ingest {
            row.insert("lost".into(), json!(now.lost.saturating_sub(last.lost)));
            row.insert("duplicated".into(), json!(now.duplicated.saturating_sub(last.duplicated)));
        }
        row.insert("publish_errors".into(), json!(now.errors.saturating_sub(last.errors)));
        if !self.ingest {
            row.insert("disconnects".into(), json!(now.disconnects.saturating_sub(last.disconnects)));
        }
        insert_usage(&mut row, last.server, now.server, last.tool, now.tool, dt);
        self.rows.push(Value::Object(row));
    }

    /// After the threads settled: what they recorded last goes into the totals only.
    pub fn finish(&mut self, sh: &Shared) {
        self.take(sh);
    }
}

/// Server CPU % and RSS, and this tool's CPU %, over an interval of `dt` seconds.
fn insert_usage(
    row: &mut Map<String, Value>,
    s0: Option<ProcSample>,
    s1: Option<ProcSample>,
    t0: Option<ProcSample>,
    t1: Option<ProcSample>,
    dt: f64,
) {
    let cpu = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => json!(r1((b.cpu_s - a.cpu_s).max(0.0) / dt * 100.0)),
        _ => Value::Null,
    };
    row.insert("server_cpu_pct".into(), cpu(s0, s1));
    row.insert("server_rss_kb".into(), s1.map_or(Value::Null, |s| json!(s.rss_kb)));
    row.insert("tool_cpu_pct".into(), cpu(t0, t1));
}

/// One row of `connections`: clients open so far and the server's memory.
pub struct ConnRows {
    pids: Vec<u32>,
    origin: std::time::Instant,
    last: Option<(std::time::Instant, Option<ProcSample>)>,
    pub rows: Vec<Value>,
}

impl ConnRows {
    pub fn new(pids: &[u32]) -> ConnRows {
        ConnRows { pids: pids.to_vec(), origin: std::time::Instant::now(), last: None, rows: Vec::new() }
    }

    /// Appends a row (`phase`: connect, hold); `tool_rss_kb` covers child processes too.
    pub fn row(&mut self, phase: &str, open: usize, failed: usize, disconnects: u64, tool_rss_kb: u64) {
        let now = std::time::Instant::now();
        let server = stats::sample_servers(&self.pids);
        let cpu = match self.last {
            Some((t, Some(a))) => match server {
                Some(b) if now > t => {
                    json!(r1((b.cpu_s - a.cpu_s).max(0.0) / now.duration_since(t).as_secs_f64() * 100.0))
                }
                _ => Value::Null,
            },
            _ => Value::Null,
        };
        self.last = Some((now, server));
        self.rows.push(json!({
            "t": (now.duration_since(self.origin).as_secs_f64() * 1000.0).round() / 1000.0,
            "phase": phase, "open": open, "failed": failed, "disconnects": disconnects,
            "server_cpu_pct": cpu, "server_rss_kb": server.map(|s| s.rss_kb), "tool_rss_kb": tool_rss_kb,
        }));
    }
}
