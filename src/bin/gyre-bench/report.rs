//! `--report FILE` and `gyre-bench report`: one self-contained HTML page (or one SVG file)
//! drawn from the JSON reports of one or more runs. Runs of the same workload (scenario and
//! sizes) share their charts, so Gyre, redis-server and nats-server under one workload are one
//! picture: throughput over time, the latency percentile curve (log scales), the per-second
//! p99 and the server's CPU, with a table of the totals and, per run, the machine and the
//! parameters. Plain HTML and inline SVG ([`crate::svg`]); nothing is fetched when the page is
//! opened.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::svg::{self, esc, short, Axis, Bars, Chart, Line, Scale};
use crate::Fail;

/// A run as the report sees it: its label and its JSON report.
pub struct Run {
    pub label: String,
    pub j: Value,
}

/// `gyre-bench report --out FILE a.json b.json ...`.
pub fn main(out: &str, files: &[String]) -> Result<(), Fail> {
    if files.is_empty() {
        return Err(Fail::setup("report: name at least one JSON report of a run"));
    }
    let mut runs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Fail::setup(format!("cannot read {f}: {e}")))?;
        // A file may hold the report alone or after other lines (stdout of a run).
        let j: Value = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .or_else(|| serde_json::from_str(&text).ok())
            .ok_or_else(|| Fail::setup(format!("{f}: not a JSON report of gyre-bench")))?;
        if j.get("scenario").and_then(Value::as_str).is_none() {
            return Err(Fail::setup(format!("{f}: not a JSON report of gyre-bench (no \"scenario\")")));
        }
        let stem = Path::new(f).file_stem().map_or(f.clone(), |s| s.to_string_lossy().into_owned());
        let mut label = j.get("label").and_then(Value::as_str).map_or(stem, str::to_string);
        // Runs of one label under one workload (a server measured twice) stay apart in the legends.
        let w = workload(&j);
        let same = runs
            .iter()
            .filter(|r: &&Run| workload(&r.j) == w)
            .filter(|r| r.label == label || r.label.starts_with(&format!("{label} #")))
            .count();
        if same > 0 {
            label = format!("{label} #{}", same + 1);
        }
        runs.push(Run { label, j });
    }
    write(out, &runs)?;
    eprintln!("gyre-bench: report of {} run(s) written to {out}", runs.len());
    Ok(())
}

/// Writes `runs` to `path`: an SVG file when it ends in `.svg`, an HTML page otherwise.
pub fn write(path: &str, runs: &[Run]) -> Result<(), Fail> {
    let text = if path.to_ascii_lowercase().ends_with(".svg") { svg_file(runs) } else { html(runs) };
    std::fs::write(path, text).map_err(|e| Fail::setup(format!("cannot write {path}: {e}")))
}

fn num(j: &Value, path: &str) -> Option<f64> {
    j.pointer(path).and_then(Value::as_f64)
}

fn scenario(j: &Value) -> &str {
    j["scenario"].as_str().unwrap_or("?")
}

/// The workload of a run, in words: runs with the same one share charts.
pub fn workload(j: &Value) -> String {
    let n = |k: &str| num(j, &format!("/{k}")).unwrap_or(0.0);
    let size = n("size");
    match scenario(j) {
        "fanout" => {
            let (subs, ch) = (n("subscribers"), n("channels").max(1.0));
            let rate = if n("rate") > 0.0 { format!("{}/s", short(n("rate"))) } else { "max".into() };
            format!(
                "fanout: {} channel(s) × {} subscribers, {} publisher(s), {size} B, rate {rate}",
                short(ch),
                short((subs / ch).round()),
                n("publishers")
            )
        }
        "ingest" => format!(
            "ingest{}: {} connection(s), batch {} × {} in flight, {size} B",
            if j["publish_via"] == "client" { " (client publish over WebSocket)" } else { "" },
            n("connections"),
            n("batch"),
            n("inflight")
        ),
        "connect" => format!(
            "connect: {} connections, {} at a time{}{}",
            short(n("connections")),
            n("concurrency"),
            j["subscribe"].as_str().map_or(String::new(), |c| format!(", subscribing to {c}")),
            if j["keep"].as_bool() == Some(true) { ", kept open" } else { "" }
        ),
        "map" => format!(
            "map: {} keys × {} subscribers, page size {}, {} publisher(s), {size} B, rate {}",
            short(n("keys")),
            short(n("subscribers")),
            num(j, "/page_size").map_or("default".to_string(), short),
            n("publishers"),
            if n("rate") > 0.0 { format!("{}/s", short(n("rate"))) } else { "max".into() }
        ),
        "connections" => format!(
            "connections: {} idle{}",
            short(n("connections")),
            if j["subscribe"].as_bool() == Some(true) { ", subscribed" } else { "" }
        ),
        other => other.to_string(),
    }
}

/// Runs grouped by workload, in the order they first appear, each with its colour index: one
/// per label over the whole page, so a server keeps its colour from one workload to the next.
fn groups(runs: &[Run]) -> Vec<(String, Vec<(usize, &Run)>)> {
    let mut labels: Vec<&str> = Vec::new();
    let mut out: Vec<(String, Vec<(usize, &Run)>)> = Vec::new();
    for r in runs {
        let c = labels.iter().position(|l| *l == r.label).unwrap_or_else(|| {
            labels.push(&r.label);
            labels.len() - 1
        });
        let w = workload(&r.j);
        match out.iter_mut().find(|g| g.0 == w) {
            Some(g) => g.1.push((c, r)),
            None => out.push((w, vec![(c, r)])),
        }
    }
    out
}

/// One column of the per-second series of a run as points (t, value). The rows of the drain
/// after the measured window are left out: a fraction of a second with publishing stopped
/// would read as a collapse of throughput.
fn column(j: &Value, key: &str, scale: f64) -> Vec<(f64, f64)> {
    j["series"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["phase"] != "drain")
                .filter_map(|r| Some((r["t"].as_f64()?, r[key].as_f64()? * scale)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

/// The latency percentile curve: x = -log10(1 - q), so 90 %, 99 %, 99.9 % are equally spaced.
fn cdf(j: &Value) -> Vec<(f64, f64)> {
    cdf_at(j, "/latency_cdf", "/latency_us/count")
}

/// [`cdf`] of the curve at JSON pointer `curve`, of `count` values.
fn cdf_at(j: &Value, curve: &str, count: &str) -> Vec<(f64, f64)> {
    let count = num(j, count).unwrap_or(0.0);
    j.pointer(curve)
        .and_then(Value::as_array)
        .map(|pts| {
            pts.iter()
                .filter_map(|p| {
                    let (pct, us) = (p["p"].as_f64()?, p["us"].as_f64()?);
                    let x = if pct >= 100.0 { count.max(1.0).log10() } else { -(1.0 - pct / 100.0).log10() };
                    Some((x, us / 1000.0))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cdf_ticks(max_x: f64) -> Vec<(f64, String)> {
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%", "99.99999%"];
    let top = (max_x.ceil() as usize).clamp(2, labels.len() - 1);
    (0..=top).map(|k| (k as f64, labels[k].to_string())).collect()
}

/// The charts of one group of runs: (svg, height).
fn charts(members: &[(usize, &Run)]) -> Vec<(String, f64)> {
    let kind = scenario(&members[0].1.j);
    let lines = |key: &str, scale: f64| -> Vec<Line> {
        members
            .iter()
            .map(|(i, r)| Line { label: r.label.clone(), color: svg::color(*i), points: column(&r.j, key, scale) })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    let time = || Axis::new("time since the measured window started (s)", Scale::Linear);
    let mut out = Vec::new();
    let mut push = |c: Chart| {
        if !c.lines.is_empty() {
            let h = c.height();
            out.push((c.svg(), h));
        }
    };
    match kind {
        "connections" => {
            push(Chart {
                title: "Open connections".into(),
                x: Axis::new("time since the first connect (s)", Scale::Linear),
                y: Axis::new("connections", Scale::Linear),
                lines: lines("open", 1.0),
            });
            push(Chart {
                title: "Server memory (RSS)".into(),
                x: Axis::new("time since the first connect (s)", Scale::Linear),
                y: Axis::new("MiB", Scale::Linear),
                lines: lines("server_rss_kb", 1.0 / 1024.0),
            });
        }
        _ => {
            let (rate_key, rate_title, lat_title) = match kind {
                "ingest" => {
                    ("commands_per_s", "Commands acknowledged per second", "Command round trip (write → reply)")
                }
                "connect" => ("connects_per_s", "Connects per second", "Connect latency (TCP connect → reply)"),
                _ => ("delivered_per_s", "Deliveries per second", "Publish → deliver latency"),
            };
            push(Chart {
                title: rate_title.into(),
                x: time(),
                y: Axis::new("per second", Scale::Linear),
                lines: lines(rate_key, 1.0),
            });
            if kind == "map" {
                let curves: Vec<Line> = members
                    .iter()
                    .map(|(i, r)| Line {
                        label: r.label.clone(),
                        color: svg::color(*i),
                        points: cdf_at(&r.j, "/sync/sync_cdf", "/sync/sync_us/count"),
                    })
                    .filter(|l| !l.points.is_empty())
                    .collect();
                let max_x = curves.iter().flat_map(|l| l.points.iter().map(|p| p.0)).fold(0.0, f64::max);
                push(Chart {
                    title: "State sync time per subscriber (first page → live): percentiles".into(),
                    x: Axis { title: "percentile".into(), scale: Scale::Linear, ticks: Some(cdf_ticks(max_x)) },
                    y: Axis::new("sync time (ms, log scale)", Scale::Log),
                    lines: curves,
                });
            }
            if kind == "fanout" || kind == "map" {
                push(Chart {
                    title: "Publishes acknowledged per second".into(),
                    x: time(),
                    y: Axis::new("per second", Scale::Linear),
                    lines: lines("published_per_s", 1.0),
                });
            }
            let curves: Vec<Line> = members
                .iter()
                .map(|(i, r)| Line { label: r.label.clone(), color: svg::color(*i), points: cdf(&r.j) })
                .filter(|l| !l.points.is_empty())
                .collect();
            let max_x = curves.iter().flat_map(|l| l.points.iter().map(|p| p.0)).fold(0.0, f64::max);
            push(Chart {
                title: format!("{lat_title}: percentiles"),
                x: Axis { title: "percentile".into(), scale: Scale::Linear, ticks: Some(cdf_ticks(max_x)) },
                y: Axis::new("latency (ms, log scale)", Scale::Log),
                lines: curves,
            });
            push(Chart {
                title: format!("{lat_title}: p99 of each second"),
                x: time(),
                y: Axis::new("p99 (ms, log scale)", Scale::Log),
                lines: lines("latency_p99_us", 1.0 / 1000.0),
            });
            push(Chart {
                title: "Server CPU (100 % = one core)".into(),
                x: time(),
                y: Axis::new("% of one core", Scale::Linear),
                lines: lines("server_cpu_pct", 1.0),
            });
        }
    }
    out
}

/// The headline figure of a scenario: (title, unit, JSON pointer, scale).
fn headline(kind: &str) -> (&'static str, &'static str, &'static str, f64) {
    match kind {
        "fanout" => ("Deliveries per second (measured window)", "/s", "/delivered_per_s", 1.0),
        "map" => ("Updates delivered per second (measured window)", "/s", "/delivered_per_s", 1.0),
        "ingest" => ("Commands per second (measured window)", "/s", "/commands_per_s", 1.0),
        "connect" => ("Connects per second", "/s", "/connects_per_s", 1.0),
        _ => ("Server memory per connection", "KiB", "/server/bytes_per_connection", 1.0 / 1024.0),
    }
}

/// Rows of the totals table: (label, JSON pointer, format).
fn table_rows(kind: &str) -> Vec<(&'static str, &'static str, Fmt)> {
    use Fmt::*;
    let usage = [
        ("server CPU (% of one core)", "/server/cpu_pct", Plain),
        ("server RSS max (MiB)", "/server/rss_max_kb", Mib),
        ("gyre-bench CPU (% of one core)", "/client/cpu_pct", Plain),
    ];
    let mut rows = match kind {
        "fanout" => vec![
            ("delivered/s", "/delivered_per_s", Count),
            ("published/s", "/published_per_s", Count),
            ("latency p50 (ms)", "/latency_us/p50", Ms),
            ("latency p90 (ms)", "/latency_us/p90", Ms),
            ("latency p99 (ms)", "/latency_us/p99", Ms),
            ("latency p99.9 (ms)", "/latency_us/p999", Ms),
            ("latency max (ms)", "/latency_us/max", Ms),
            ("lost", "/lost", Count),
            ("duplicated", "/duplicated", Count),
            ("subscribers ready", "/subscribers_ready", Count),
            ("disconnects", "/disconnects", Count),
            ("publish errors", "/publish_errors", Count),
        ],
        "map" => vec![
            ("keys", "/keys", Count),
            ("subscribers live", "/subscribers_ready", Count),
            ("state sync p50 (ms)", "/sync/sync_us/p50", Ms),
            ("state sync p99 (ms)", "/sync/sync_us/p99", Ms),
            ("state sync max (ms)", "/sync/sync_us/max", Ms),
            ("all live after (s)", "/sync/all_live_s", Plain),
            ("keys synced/s", "/sync/keys_per_s", Count),
            ("subscribers missing keys", "/sync/incomplete", Count),
            ("updates delivered/s", "/delivered_per_s", Count),
            ("updates published/s", "/published_per_s", Count),
            ("latency p50 (ms)", "/latency_us/p50", Ms),
            ("latency p99 (ms)", "/latency_us/p99", Ms),
            ("latency max (ms)", "/latency_us/max", Ms),
            ("lost", "/lost", Count),
            ("duplicated", "/duplicated", Count),
            ("disconnects", "/disconnects", Count),
            ("publish errors", "/publish_errors", Count),
        ],
        "connect" => vec![
            ("connects/s", "/connects_per_s", Count),
            ("latency p50 (ms)", "/latency_us/p50", Ms),
            ("latency p99 (ms)", "/latency_us/p99", Ms),
            ("latency p99.9 (ms)", "/latency_us/p999", Ms),
            ("latency max (ms)", "/latency_us/max", Ms),
            ("connected", "/ok", Count),
            ("failed", "/failed", Count),
            ("server CPU µs per connect", "/server/cpu_us_per_connect", Plain),
        ],
        "ingest" => vec![
            ("commands/s", "/commands_per_s", Count),
            ("round trip p50 (ms)", "/latency_us/p50", Ms),
            ("round trip p99 (ms)", "/latency_us/p99", Ms),
            ("round trip p99.9 (ms)", "/latency_us/p999", Ms),
            ("round trip max (ms)", "/latency_us/max", Ms),
            ("publish errors", "/publish_errors", Count),
        ],
        _ => vec![
            ("open", "/ready", Count),
            ("failed", "/failed", Count),
            ("server memory per connection (KiB)", "/server/bytes_per_connection", Kib),
            ("server RSS before (MiB)", "/server/rss_before_kb", Mib),
            ("server RSS after (MiB)", "/server/rss_after_kb", Mib),
            ("opened per second", "/connect_per_s", Count),
            ("disconnects while held", "/disconnects", Count),
        ],
    };
    if kind != "connections" {
        rows.extend(usage);
    }
    rows
}

#[derive(Clone, Copy)]
enum Fmt {
    Count,
    Plain,
    Ms,
    Kib,
    Mib,
}

fn fmt(v: Option<&Value>, f: Fmt) -> String {
    let Some(x) = v.and_then(Value::as_f64) else {
        return "–".into();
    };
    match f {
        Fmt::Count => crate::stats::fmt_n(x),
        Fmt::Plain => format!("{x}"),
        Fmt::Ms => format!("{:.3}", x / 1000.0),
        Fmt::Kib => format!("{:.1}", x / 1024.0),
        Fmt::Mib => format!("{:.1}", x / 1024.0),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3;text-align:left}
.sw{display:inline-block;width:10px;height:10px;margin-right:5px}h2{margin-top:36px;border-bottom:1px solid #ddd}
figure{margin:8px 0}details{margin:8px 0 16px}code{font-size:12px}";

/// The whole HTML page.
pub fn html(runs: &[Run]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gyre-bench report</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(
        s,
        "<h1>gyre-bench report</h1><p>{} run(s), {} workload(s). Publish → deliver latency is measured from the time a \
         publisher wrote a message (carried in its payload) to its arrival at a subscriber; an ingest round trip from \
         the write of a batch of commands to the arrival of its reply. Percentile charts use a log scale on both \
         axes.</p>",
        runs.len(),
        groups(runs).len()
    );
    if groups(runs).len() > 1 {
        s.push_str(&overview(runs));
    }
    for (w, members) in groups(runs) {
        let kind = scenario(&members[0].1.j);
        let _ = write!(s, "<h2>{}</h2>\n<table><tr><th></th>", esc(&w));
        for (i, r) in &members {
            let _ = write!(
                s,
                "<th><span class=\"sw\" style=\"background:{}\"></span>{}</th>",
                svg::color(*i),
                esc(&r.label)
            );
        }
        s.push_str("</tr>\n<tr><th>target</th>");
        for (_, r) in &members {
            let _ = write!(s, "<td>{}</td>", esc(r.j["target"].as_str().unwrap_or("")));
        }
        s.push_str("</tr>\n");
        for (label, ptr, f) in table_rows(kind) {
            let _ = write!(s, "<tr><th>{}</th>", esc(label));
            for (_, r) in &members {
                let _ = write!(s, "<td class=\"n\">{}</td>", fmt(r.j.pointer(ptr), f));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
        let (title, unit, ptr, scale) = headline(kind);
        if members.len() > 1 {
            let bars = Bars {
                title: title.into(),
                unit: unit.into(),
                bars: members
                    .iter()
                    .map(|(i, r)| (r.label.clone(), svg::color(*i), num(&r.j, ptr).unwrap_or(0.0) * scale))
                    .collect(),
            };
            let _ = writeln!(s, "<figure>{}</figure>", bars.svg());
        }
        for (c, _) in charts(&members) {
            let _ = writeln!(s, "<figure>{c}</figure>");
        }
        for (i, r) in &members {
            let _ = write!(
                s,
                "<details><summary><span class=\"sw\" style=\"background:{}\"></span>{}: machine and parameters</summary>",
                svg::color(*i),
                esc(&r.label)
            );
            s.push_str(&kv_table(&r.j["machine"]));
            s.push_str(&kv_table(&r.j["params"]));
            s.push_str("</details>\n");
        }
    }
    s.push_str("</body></html>\n");
    s
}

/// One row per workload, one column per label: the headline figure, and the p99 where there
/// is one.
fn overview(runs: &[Run]) -> String {
    let mut labels: Vec<(usize, &str)> = Vec::new();
    let groups = groups(runs);
    for (_, members) in &groups {
        for (c, r) in members {
            if !labels.iter().any(|l| l.1 == r.label) {
                labels.push((*c, &r.label));
            }
        }
    }
    let mut s = String::from("<h2>Overview</h2><table><tr><th>workload</th><th>figure</th>");
    for (c, l) in &labels {
        let _ = write!(s, "<th><span class=\"sw\" style=\"background:{}\"></span>{}</th>", svg::color(*c), esc(l));
    }
    s.push_str("</tr>\n");
    for (w, members) in &groups {
        let kind = scenario(&members[0].1.j);
        let (_, _, ptr, scale) = headline(kind);
        let figure = match kind {
            "fanout" => "deliveries/s",
            "map" => "updates delivered/s",
            "ingest" => "commands/s",
            "connect" => "connects/s",
            _ => "server KiB per connection",
        };
        let _ = write!(s, "<tr><th>{}</th><td>{figure}</td>", esc(w));
        for (_, l) in &labels {
            let cell = match members.iter().find(|(_, r)| r.label == *l) {
                None => "–".to_string(),
                Some((_, r)) => {
                    let v = match num(&r.j, ptr) {
                        None => "–".into(),
                        Some(v) if kind == "connections" => format!("{:.1}", v * scale),
                        Some(v) => crate::stats::fmt_n(v * scale),
                    };
                    match num(&r.j, "/latency_us/p99") {
                        Some(p99) if kind != "connections" => format!("{v} (p99 {:.2} ms)", p99 / 1000.0),
                        _ => v,
                    }
                }
            };
            let _ = write!(s, "<td class=\"n\">{}</td>", esc(&cell));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// An object's fields as a two-column table.
fn kv_table(v: &Value) -> String {
    let Some(o) = v.as_object() else {
        return String::new();
    };
    let mut s = String::from("<table>");
    for (k, v) in o {
        let text = match v {
            Value::String(t) => t.clone(),
            Value::Null => "–".into(),
            other => other.to_string(),
        };
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&text));
    }
    s.push_str("</table>");
    s
}

/// Every group's charts stacked in one SVG document.
pub fn svg_file(runs: &[Run]) -> String {
    let mut parts = Vec::new();
    for (w, members) in groups(runs) {
        let title = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="34"><text x="10" y="24" font-family="sans-serif" font-size="17" font-weight="bold">{}</text></svg>"#,
            svg::WIDTH,
            esc(&w)
        );
        parts.push((title, 34.0));
        parts.extend(charts(&members));
    }
    svg::stack(&parts)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(label: &str, kind: &str, rate: f64) -> Run {
        Run {
            label: label.into(),
            j: json!({
                "scenario": "fanout", "kind": kind, "target": "t", "subscribers": 1000, "channels": 1,
                "publishers": 1, "size": 100, "rate": rate, "delivered_per_s": 1e6,
                "latency_us": {"count": 1000, "p50": 50.0, "p99": 900.0},
                "latency_cdf": [{"p": 0.0, "us": 10.0}, {"p": 99.0, "us": 900.0}, {"p": 100.0, "us": 2000.0}],
                "series": [{"t": 1.0, "delivered_per_s": 1e6, "published_per_s": 1e3, "latency_p99_us": 800.0},
                           {"t": 2.0, "delivered_per_s": 1.1e6, "published_per_s": 1.1e3, "latency_p99_us": 950.0}],
                "machine": {"cpu": "x"}, "params": {"threads": 1},
            }),
        }
    }

    #[test]
    fn groups_runs_by_workload() {
        let runs = [run("gyre", "centrifugo", 0.0), run("redis", "redis", 0.0), run("paced", "redis", 1500.0)];
        let g = groups(&runs);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].1.len(), 2);
        // Colours follow labels: "redis" keeps its colour in the second workload too.
        assert_eq!(g[0].1.iter().map(|m| m.0).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(g[1].1[0].0, 2);
        let page = html(&runs);
        assert!(page.contains("<svg") && page.contains("gyre") && page.contains("rate 1500/s"));
        assert!(page.contains("<h2>Overview</h2>") && page.contains("1,000,000 (p99 0.90 ms)"), "{page}");
        // Two runs on one chart: one polyline each on the deliveries chart.
        assert!(page.matches("<polyline").count() >= 4);
        assert!(!page.contains("<script"));
        let one = svg_file(&runs[..1]);
        assert!(one.starts_with("<svg") && one.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn map_runs_get_their_sync_figures() {
        let mut r = run("gyre", "centrifugo", 0.0);
        r.j["scenario"] = json!("map");
        r.j["keys"] = json!(10000);
        r.j["sync"] = json!({"all_live_s": 2.5, "keys_per_s": 4e6, "sync_us": {"count": 1000, "p50": 900.0, "p99": 2000.0},
            "sync_cdf": [{"p": 0.0, "us": 500.0}, {"p": 99.0, "us": 2000.0}, {"p": 100.0, "us": 2500.0}]});
        assert_eq!(
            workload(&r.j),
            "map: 10k keys × 1000 subscribers, page size default, 1 publisher(s), 100 B, rate max"
        );
        let page = html(&[r]);
        assert!(page.contains("State sync time per subscriber") && page.contains("keys synced/s"), "{page}");
        assert!(page.contains("4,000,000"), "{page}");
    }

    #[test]
    fn cdf_spaces_nines_evenly() {
        let r = run("a", "redis", 0.0);
        let c = cdf(&r.j);
        assert_eq!(c[0], (0.0, 0.01));
        assert!((c[1].0 - 2.0).abs() < 1e-9);
        assert!((c[2].0 - 3.0).abs() < 1e-9, "max at 1 in count");
    }
}
