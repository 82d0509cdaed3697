//! `connections`: open N idle clients and read the server's memory per connection from its
//! RSS before and after (`--server-pid`).
//!
//! One process can hold only as many sockets as its open-file limit allows, so past that the
//! tool runs copies of itself (`--child-range OFFSET:COUNT`, hidden), each holding a share.
//! A child reports `S <ready> <failed> <disconnects>` on stdout twice a second and `READY`
//! once its share is open, and exits when its stdin closes — so children never outlive the
//! parent, whatever way it ends. Client source addresses are spread over 127.0.0.1..N so
//! one address's ephemeral ports (about 28k towards one server port) are not the limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::progress::Progress;
use crate::run::{self, Mode, Plan};
use crate::series::{ConnRows, CONNECTIONS_COLUMNS};
use crate::stats::{self, fmt_n, Shared, WARMUP};
use crate::target::{self, Kind};
use crate::{output, Fail, Opts};

/// Open-file descriptors a process keeps for itself besides its clients.
const RESERVED_FDS: usize = 100;

/// Counts of one child, as last reported.
#[derive(Default)]
struct ChildCounts {
    ready: AtomicUsize,
    failed: AtomicUsize,
    disconnects: AtomicU64,
    done: AtomicBool,
    fatal: std::sync::Mutex<Option<String>>,
}

/// Open, failed and disconnected clients over this process or its children.
fn totals(sh: &Shared, counts: &[Arc<ChildCounts>]) -> (usize, usize, u64) {
    if counts.is_empty() {
        (sh.ready.load(Relaxed), sh.failed.load(Relaxed), sh.disconnects.load(Relaxed))
    } else {
        counts.iter().fold((0, 0, 0), |a, c| {
            (a.0 + c.ready.load(Relaxed), a.1 + c.failed.load(Relaxed), a.2 + c.disconnects.load(Relaxed))
        })
    }
}

/// RSS of this process and its children, KiB.
fn tool_rss_kb(children: &[u32]) -> u64 {
    stats::sample(None).map_or(0, |s| s.rss_kb)
        + children.iter().filter_map(|&c| stats::sample(Some(c))).map(|s| s.rss_kb).sum::<u64>()
}

/// The per-second rows of `connections`, taken on a thread of their own while the main thread
/// waits for the clients and holds them.
struct Sampler {
    stop: Arc<AtomicBool>,
    holding: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<u32>>>,
    thread: std::thread::JoinHandle<ConnRows>,
}

impl Sampler {
    fn start(sh: Arc<Shared>, counts: Vec<Arc<ChildCounts>>, pids: &[u32]) -> Sampler {
        let (stop, holding) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let children = Arc::new(Mutex::new(Vec::new()));
        let (stop2, holding2, children2) = (stop.clone(), holding.clone(), children.clone());
        let mut rows = ConnRows::new(pids);
        let thread = std::thread::spawn(move || {
            let take = |rows: &mut ConnRows| {
                let (ready, failed, disc) = totals(&sh, &counts);
                let phase = if holding2.load(Relaxed) { "hold" } else { "connect" };
                let kids = children2.lock().unwrap_or_else(|e| e.into_inner()).clone();
                rows.row(phase, ready, failed, disc, tool_rss_kb(&kids));
            };
            take(&mut rows);
            let mut last = Instant::now();
            while !stop2.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    take(&mut rows);
                }
            }
            take(&mut rows);
            rows
        });
        Sampler { stop, holding, children, thread }
    }

    fn finish(self) -> Vec<Value> {
        self.stop.store(true, Relaxed);
        self.thread.join().map(|r| r.rows).unwrap_or_default()
    }
}

pub fn main(o: Opts) -> Result<(), Fail> {
    let mut plan = Plan::new(Mode::Connections, &o)?;
    if let Some(range) = o.child_range.clone() {
        return child(plan, &range);
    }
    plan.check_reachable()?;
    o.out.check()?;
    let machine = output::machine();
    let kind = plan.kind;
    let (over, transport, client_path) =
        (over(&plan), crate::summary::transport(&plan), plan.client_path().to_string());
    let n = plan.subscribers;
    let per_proc = (target::raise_nofile() as usize).saturating_sub(RESERVED_FDS).max(1);
    let procs = o.procs.unwrap_or(n.div_ceil(per_proc)).max(1);
    let share = n.div_ceil(procs);
    if share > per_proc {
        return Err(Fail::setup(format!(
            "{share} connections per process exceed the open-file limit ({per_proc} usable): use --procs {}",
            n.div_ceil(per_proc)
        )));
    }
    let before = stats::sample_servers(&o.out.server_pid);
    if !o.out.server_pid.is_empty() && before.is_none() {
        let pids: Vec<String> = o.out.server_pid.iter().map(u32::to_string).collect();
        return Err(Fail::setup(format!("cannot read /proc/{}: is --server-pid right?", pids.join(", /proc/"))));
    }
    let t0 = Instant::now();
    let mut progress = Progress::new(&o.out);
    let sh = Arc::new(Shared::new(plan.threads, 0, plan.channels));
    let mut children = Vec::new();
    // Children's shares: clients off..off+count.
    let shares: Vec<(usize, usize)> = if procs == 1 {
        Vec::new()
    } else {
        (0..procs).map(|k| (k * share, share.min(n.saturating_sub(k * share)))).filter(|s| s.1 > 0).collect()
    };
    let counts: Vec<Arc<ChildCounts>> = shares.iter().map(|_| Arc::new(ChildCounts::default())).collect();
    let sampler = Sampler::start(sh.clone(), counts.clone(), &o.out.server_pid);
    if procs == 1 {
        plan.clients = 0..n;
        let plan = Arc::new(plan);
        run::start_threads(&plan, &sh);
        sh.phase.store(WARMUP, Relaxed);
        run::wait_connected(&plan, &sh, &mut progress)?;
    } else {
        for (&(off, count), c) in shares.iter().zip(&counts) {
            let child = spawn_child(off, count, c.clone())?;
            sampler.children.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
            children.push(child);
        }
        wait_children(&counts, &o)?;
    }
    let connect_s = t0.elapsed().as_secs_f64();
    sampler.holding.store(true, Relaxed);
    let totals = || totals(&sh, &counts);
    // Let the server finish the work of the last connects before reading its memory.
    std::thread::sleep(Duration::from_secs(1));
    let after = stats::sample_servers(&o.out.server_pid);
    let mut rss_max = after.map_or(0, |s| s.rss_kb);
    let hold_end = Instant::now() + Duration::from_secs_f64(o.duration);
    let mut last = Instant::now();
    while Instant::now() < hold_end {
        std::thread::sleep(Duration::from_millis(20));
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let s = stats::sample_servers(&o.out.server_pid);
            rss_max = rss_max.max(s.map_or(0, |s| s.rss_kb));
            let (ready, failed, disc) = totals();
            if !o.out.quiet {
                let rss = s.map_or(String::new(), |s| format!("  server rss {:.1} MiB", s.rss_kb as f64 / 1024.0));
                eprintln!("[hold] open {} failed {failed} disconnects {disc}{rss}", fmt_n(ready as f64));
            }
        }
    }
    let (ready, failed, disc) = totals();
    let client_kb = tool_rss_kb(&children.iter().map(Child::id).collect::<Vec<_>>());
    let series = sampler.finish();
    // Closing the children's stdin ends them.
    for c in &mut children {
        drop(c.stdin.take());
    }
    let per_conn = before.zip(after).map(|(b, a)| (a.rss_kb as f64 - b.rss_kb as f64) * 1024.0 / ready.max(1) as f64);
    let fmt = if kind == Kind::Centrifugo { o.format.name() } else { kind.name() };
    let mut rows = vec![
        ("target".to_string(), format!("{} ({fmt}{over})", o.target)),
        ("connections".into(), format!("{} open, {failed} failed, of {}", fmt_n(ready as f64), fmt_n(n as f64))),
        (
            "opened in".into(),
            format!(
                "{connect_s:.2} s ({}/s), {} process(es), {} source address(es)",
                fmt_n(ready as f64 / connect_s),
                children.len().max(1),
                source_ips(&o)
            ),
        ),
        ("disconnects while held".into(), format!("{disc} (held {:.0} s)", o.duration)),
        ("gyre-bench rss".into(), format!("{:.1} MiB", client_kb as f64 / 1024.0)),
    ];
    if let (Some(b), Some(a), Some(pc)) = (before, after, per_conn) {
        rows.push((
            "server rss before / after / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1} MiB",
                b.rss_kb as f64 / 1024.0,
                a.rss_kb as f64 / 1024.0,
                rss_max as f64 / 1024.0
            ),
        ));
        rows.push(("server memory per connection".into(), format!("{:.1} KiB", pc / 1024.0)));
    }
    stats::table("gyre-bench connections", &rows, o.out.json_on_stdout());
    let server = match (before, after) {
        (Some(b), Some(a)) => json!({
            "rss_before_kb": b.rss_kb, "rss_after_kb": a.rss_kb, "rss_max_kb": rss_max,
            "bytes_per_connection": per_conn.map(|v| v.round()),
        }),
        _ => Value::Null,
    };
    let procs = children.len().max(1);
    let j = json!({
        "tool": "gyre-bench", "label": o.out.label(&o.target, kind.name()),
        "scenario": "connections", "target": o.target, "kind": kind.name(), "format": fmt,
        "transport": transport, "connections": n, "ready": ready, "failed": failed, "procs": procs,
        "source_ips": source_ips(&o), "subscribe": o.subscribe, "connect_s": (connect_s * 100.0).round() / 100.0,
        "connect_per_s": (ready as f64 / connect_s).round(), "disconnects": disc,
        "server": server, "client": {"rss_kb": client_kb},
        "params": {
            "scenario": "connections", "target": o.target, "kind": kind.name(), "format": fmt,
            "connections": n, "channels": o.channels, "subscribe": o.subscribe, "threads": o.threads,
            "procs": procs, "source_ips": source_ips(&o), "hold_s": o.duration,
            "connect_timeout_s": o.connect_timeout, "connect_concurrency": o.connect_concurrency,
            "server_pid": o.out.server_pid, "ws_path": o.ws_path, "transport": transport,
            "client_path": client_path, "version": env!("CARGO_PKG_VERSION"),
        },
        "machine": machine, "series_columns": CONNECTIONS_COLUMNS, "series": series,
    });
    let emitted = o.out.emit(&j, CONNECTIONS_COLUMNS);
    let _ = std::io::stdout().flush();
    let t = Instant::now();
    for c in &mut children {
        while t.elapsed() < Duration::from_secs(5) && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    emitted
}

/// `over <transport>` for Centrifugo-compatible targets.
fn over(plan: &Plan) -> String {
    match plan.kind {
        Kind::Centrifugo => format!(" over {}", plan.o.transport.name()),
        _ => String::new(),
    }
}

fn source_ips(o: &Opts) -> u8 {
    o.source_ips.unwrap_or(9).max(1)
}

/// Runs this binary with the same options for clients `off..off+count`; a thread reads its
/// status lines into `counts`.
fn spawn_child(off: usize, count: usize, counts: Arc<ChildCounts>) -> Result<Child, Fail> {
    let (child, out) = crate::procs::start_child(off, count)?;
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.first().copied() {
                Some("S") if f.len() == 4 => {
                    counts.ready.store(f[1].parse().unwrap_or(0), Relaxed);
                    counts.failed.store(f[2].parse().unwrap_or(0), Relaxed);
                    counts.disconnects.store(f[3].parse().unwrap_or(0), Relaxed);
                }
                Some("READY") => counts.done.store(true, Relaxed),
                Some("FATAL") => {
                    *counts.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(line[5..].trim().to_string());
                    counts.done.store(true, Relaxed);
                }
                _ => {}
            }
        }
        // A child that ended without READY failed as a whole.
        counts.done.store(true, Relaxed);
    });
    Ok(child)
}

/// Waits (bounded) until every child has opened its share.
fn wait_children(counts: &[Arc<ChildCounts>], o: &Opts) -> Result<(), Fail> {
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(o.connect_timeout + 10.0);
    let mut last = Instant::now();
    loop {
        if let Some(f) = counts.iter().find_map(|c| c.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()) {
            return Err(Fail::run(f));
        }
        if counts.iter().all(|c| c.done.load(Relaxed)) {
            break;
        }
        if t0.elapsed() > limit {
            eprintln!("gyre-bench: warning: children still opening after {:.0} s", limit.as_secs_f64());
            break;
        }
        if !o.out.quiet && last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let ready: usize = counts.iter().map(|c| c.ready.load(Relaxed)).sum();
            let failed: usize = counts.iter().map(|c| c.failed.load(Relaxed)).sum();
            eprintln!("[{:>4.0}s] connect  open {} failed {failed}", t0.elapsed().as_secs_f64(), fmt_n(ready as f64));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready: usize = counts.iter().map(|c| c.ready.load(Relaxed)).sum();
    if ready == 0 {
        return Err(Fail::run("no client could connect (see the messages above)"));
    }
    Ok(())
}

/// A child: open clients `off..off+count`, report, hold them until stdin closes.
fn child(mut plan: Plan, range: &str) -> Result<(), Fail> {
    let (off, count) = crate::procs::child_range(range)?;
    target::raise_nofile();
    plan.clients = off..off + count;
    let o = plan.o.clone();
    let plan = Arc::new(plan);
    let sh = Arc::new(Shared::new(plan.threads, 0, plan.channels));
    run::start_threads(&plan, &sh);
    sh.phase.store(WARMUP, Relaxed);
    // The parent closes stdin when done; so does its death.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let deadline = Instant::now() + Duration::from_secs_f64(o.connect_timeout + o.duration + 120.0);
    let mut announced = false;
    let mut out = std::io::stdout();
    while Instant::now() < deadline {
        if let Some(f) = sh.fatal() {
            let _ = writeln!(out, "FATAL {f}");
            let _ = out.flush();
            return Err(Fail::run(f));
        }
        let (ready, failed) = (sh.ready.load(Relaxed), sh.failed.load(Relaxed));
        let _ = writeln!(out, "S {ready} {failed} {}", sh.disconnects.load(Relaxed));
        if !announced && ready + failed >= count {
            let _ = writeln!(out, "READY");
            announced = true;
        }
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}
