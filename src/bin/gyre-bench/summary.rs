//! The end of a `fanout` / `ingest` run: the table on the terminal and the JSON report
//! (parameters, machine, per-second series, totals, latency percentiles), then the files
//! asked for (`--json`, `--csv`, `--report`).

use std::sync::atomic::Ordering::Relaxed;

use serde_json::{json, Value};

use crate::output;
use crate::run::{Mode, Plan};
use crate::series::{Collector, FANOUT_COLUMNS, INGEST_COLUMNS};
use crate::stats::{self, fmt_n, fmt_us, Latency, Shared, Usage};
use crate::target::Kind;
use crate::Fail;

/// What the report is made of.
pub struct Run<'a> {
    pub plan: &'a Plan,
    pub sh: &'a Shared,
    /// Length of the measured window.
    pub secs: f64,
    pub connect_s: f64,
    pub server: Option<Usage>,
    pub client: Option<Usage>,
    pub rows: &'a Collector,
    pub machine: Value,
}

/// Every option of the run, as given or as derived.
fn params(plan: &Plan, format: &str) -> Value {
    let o = &plan.o;
    json!({
        "scenario": plan.mode.name(), "target": o.target, "publish_target": o.publish_target,
        "publish_all": o.publish_all, "kind": plan.kind.name(), "format": format,
        "subscribers": plan.subscribers, "channels": plan.channels, "publishers": plan.publishers,
        "rate": plan.rate, "size": plan.size, "batch": plan.batch, "inflight": plan.inflight,
        "threads": plan.threads, "procs": o.procs.unwrap_or(1), "duration_s": o.duration, "warmup_s": o.warmup, "drain_s": o.drain,
        "connect_timeout_s": o.connect_timeout, "connect_concurrency": o.connect_concurrency,
        "source_ips": plan.source_ips, "reconnect": o.reconnect, "spin": o.spin, "server_pid": o.out.server_pid,
        "ws_path": o.ws_path, "api_path": o.api_path, "channel_prefix": o.channel_prefix,
        "transport": transport(plan), "client_path": plan.client_path(), "emulation_path": o.emulation_path,
        "client_publish": plan.client_publish, "api_batch": plan.api_batch, "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The subscribers' transport (Centrifugo-compatible targets only).
pub fn transport(plan: &Plan) -> Value {
    match plan.kind {
        Kind::Centrifugo => json!(plan.o.transport.name()),
        _ => Value::Null,
    }
}

/// Prints the table and writes the JSON report and the files asked for.
pub fn report(r: &Run) -> Result<(), Fail> {
    let (plan, sh, secs, connect_s, server, client) = (r.plan, r.sh, r.secs, r.connect_s, r.server, r.client);
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    let ingest = plan.mode == Mode::Ingest;
    let lat = Latency::of(if ingest { &r.rows.ack } else { &r.rows.delivery });
    let (published, delivered) = (g(&sh.published_window), sh.delivered_window());
    let o = &plan.o;
    let kind = plan.kind;
    let format = if kind == Kind::Centrifugo { o.format.name() } else { kind.name() };
    let mut j = json!({
        "scenario": plan.mode.name(), "target": o.target, "kind": kind.name(), "format": format,
        "transport": transport(plan), "channels": plan.channels, "publishers": plan.publishers, "size": plan.size, "rate": plan.rate,
        "batch": plan.batch, "inflight": plan.inflight, "threads": plan.threads,
        "duration_s": (secs * 1000.0).round() / 1000.0,
        "published": published, "published_per_s": (published as f64 / secs).round(),
        "publish_errors": g(&sh.publish_errors), "disconnects": g(&sh.disconnects),
        "tool": "gyre-bench", "label": o.out.label(&o.target, kind.name()),
        "params": params(plan, format), "machine": r.machine,
    });
    let described = match (kind, ingest) {
        (Kind::Centrifugo, false) => format!("{format} over {}", o.transport.name()),
        (Kind::Centrifugo, true) if plan.client_publish => {
            let auth = o.auth.describe();
            format!("{format}, client publish over websocket, {auth}")
        }
        _ => format.to_string(),
    };
    let mut rows = vec![
        ("target".to_string(), format!("{} ({described})", o.target)),
        ("duration".to_string(), format!("{secs:.2} s measured after {:.1} s warm-up", o.warmup)),
    ];
    if plan.multi_node() {
        let nodes = plan.node_shares();
        let described: Vec<String> = nodes
            .iter()
            .map(|(host, subs, pubs)| {
                let mut d = format!("{host}: ");
                if plan.mode != Mode::Ingest {
                    d.push_str(&format!("{} subscribers, ", fmt_n(*subs as f64)));
                }
                d.push_str(&format!("{pubs} publishers"));
                d
            })
            .collect();
        rows.push(("nodes".into(), described.join("; ")));
        j["nodes"] = nodes
            .iter()
            .map(|(host, subs, pubs)| json!({"node": host, "subscribers": subs, "publishers": pubs}))
            .collect();
    }
    if ingest {
        j["connections"] = json!(plan.publishers);
        j["publish_via"] = json!(if plan.client_publish { "client" } else { "api" });
        j["commands"] = json!(published);
        j["commands_per_s"] = json!((published as f64 / secs).round());
        j["latency_us"] = lat.json();
        j["latency_measures"] = json!(if plan.client_publish {
            "publish round trip: write of its batch to the arrival of its own reply"
        } else {
            "command round trip: write of its batch to the arrival of the reply"
        });
        rows.push((
            "connections × batch × inflight".into(),
            format!("{} × {} × {}", plan.publishers, plan.batch, plan.inflight),
        ));
        rows.push(("commands".into(), format!("{}  ({}/s)", fmt_n(published as f64), fmt_n(published as f64 / secs))));
        rows.push((
            "round trip p50 / p99 / max".into(),
            format!("{} / {} / {}", fmt_us(lat.p50), fmt_us(lat.p99), fmt_us(lat.max)),
        ));
    } else {
        let ready = sh.ready.load(Relaxed);
        for (k, v) in [
            ("subscribers", json!(plan.subscribers)),
            ("subscribers_ready", json!(ready)),
            ("subscribers_failed", json!(sh.failed.load(Relaxed))),
            ("connect_s", json!((connect_s * 100.0).round() / 100.0)),
            ("delivered", json!(delivered)),
            ("delivered_per_s", json!((delivered as f64 / secs).round())),
            ("delivered_total", json!(sh.delivered())),
            ("expected_total", json!(g(&sh.expected))),
            ("lost", json!(g(&sh.lost))),
            ("duplicated", json!(g(&sh.duplicated))),
            ("reconnects", json!(g(&sh.reconnects))),
            ("latency_us", lat.json()),
            ("latency_measures", json!("publish to deliver: send time in the payload to arrival at a subscriber")),
            ("ack_latency_us", Latency::of(&r.rows.ack).json()),
        ] {
            j[k] = v;
        }
        let rate = if plan.rate > 0.0 { format!("{}/s", fmt_n(plan.rate)) } else { "max".into() };
        rows.extend([
            (
                "subscribers".into(),
                format!(
                    "{} ready of {} in {connect_s:.2} s, {} channels",
                    fmt_n(ready as f64),
                    fmt_n(plan.subscribers as f64),
                    plan.channels
                ),
            ),
            (
                "publishers".into(),
                format!(
                    "{} (rate {rate}, batch {}, inflight {}, {} B)",
                    plan.publishers, plan.batch, plan.inflight, plan.size
                ),
            ),
            ("published".into(), format!("{}  ({}/s)", fmt_n(published as f64), fmt_n(published as f64 / secs))),
            ("delivered".into(), format!("{}  ({}/s)", fmt_n(delivered as f64), fmt_n(delivered as f64 / secs))),
            (
                "latency p50 / p90 / p99".into(),
                format!("{} / {} / {}", fmt_us(lat.p50), fmt_us(lat.p90), fmt_us(lat.p99)),
            ),
            ("latency p99.9 / max".into(), format!("{} / {}", fmt_us(lat.p999), fmt_us(lat.max))),
            (
                "lost / duplicated".into(),
                format!("{} / {}", fmt_n(g(&sh.lost) as f64), fmt_n(g(&sh.duplicated) as f64)),
            ),
            ("disconnects / reconnects".into(), format!("{} / {}", g(&sh.disconnects), g(&sh.reconnects))),
        ]);
    }
    rows.push(("publish errors".into(), fmt_n(g(&sh.publish_errors) as f64)));
    j["server"] = server.map_or(Value::Null, |u| u.json(secs));
    j["client"] = client.map_or(Value::Null, |u| u.json(secs));
    if let Some(u) = server {
        rows.push(("server rss start / end / max".into(), u.rss_row()));
        rows.push(("server cpu".into(), u.cpu_row(secs)));
    }
    if let Some(u) = client {
        rows.push(("gyre-bench cpu".into(), u.cpu_row(secs)));
    }
    j["latency_cdf"] = output::latency_cdf(if ingest { &r.rows.ack } else { &r.rows.delivery });
    j["series_columns"] = json!(if ingest { INGEST_COLUMNS } else { FANOUT_COLUMNS });
    j["series"] = Value::Array(r.rows.rows.clone());
    stats::table(&format!("gyre-bench {}", plan.mode.name()), &rows, o.out.json_on_stdout());
    o.out.emit(&j, if ingest { INGEST_COLUMNS } else { FANOUT_COLUMNS })
}
