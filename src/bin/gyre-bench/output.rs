//! What a run leaves behind besides its table: the machine it ran on (from `/proc`), the
//! latency percentile curve, and the `--json`, `--csv` and `--report` files.

use std::io::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::report::{self, Run};
use clap::Args;

use crate::Fail;

/// The machine: CPU model, cores (all, and those this process may run on), kernel, memory,
/// host name and load average, as `/proc` tells them.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let cpu = field("model name").or_else(|| field("Hardware")).or_else(|| field("cpu model"));
    let cores = cpuinfo.lines().filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor")).count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let load = read("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    json!({
        "cpu": cpu,
        "cores": if cores > 0 { json!(cores) } else { Value::Null },
        "cpus_allowed": allowed_cpus(),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "memory_kb": mem_kb,
        "memory": mem_kb.map(|k| format!("{:.1} GiB", k as f64 / 1048576.0)),
        "host": hostname::get().ok().map(|h| h.to_string_lossy().into_owned()),
        "load_average": load,
    })
}

/// The CPUs this process may run on (`taskset`), as a list such as `0-3,8`.
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_string())
}

/// Points of the latency percentile curve, in µs: the minimum (0 %), 25, 50, 75 %, then
/// 90, 95, 99, 99.5, 99.9 % ... while at least one value lies beyond, and the maximum (100 %).
pub fn latency_cdf(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!([]);
    }
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    let mut pts = vec![json!({"p": 0.0, "us": us(h.min())})];
    let mut tails = vec![0.75, 0.5, 0.25];
    for d in 1..12 {
        let t = 10f64.powi(-d);
        tails.extend([t, t / 2.0]);
    }
    for tail in tails {
        if tail * (h.len() as f64) < 1.0 {
            break;
        }
        let q = 1.0 - tail;
        pts.push(json!({"p": (q * 1e9).round() / 1e7, "us": us(h.value_at_quantile(q))}));
    }
    pts.push(json!({"p": 100.0, "us": us(h.max())}));
    Value::Array(pts)
}

/// Writes the rows as CSV: a header of `columns`, then one line per row (missing: empty).
pub fn write_csv(path: &str, columns: &[&str], rows: &[Value]) -> Result<(), Fail> {
    let mut s = columns.join(",");
    s.push('\n');
    for r in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &r[*c] {
                Value::Null => String::new(),
                Value::String(t) => t.clone(),
                v => v.to_string(),
            })
            .collect();
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| Fail::setup(format!("cannot write {path}: {e}")))
}

/// What a measuring run writes and shows, the same options for every scenario that has them.
#[derive(Args, Debug, Clone, Default)]
pub struct Outputs {
    /// Sample these processes' RSS and CPU time (/proc) during the run. Several,
    /// comma-separated (the nodes of a cluster and what they share): the report gives their sums.
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Write the JSON report: the parameters, the machine (from /proc), the per-second series
    /// and the totals with latency percentiles. Without FILE (or with -) one line on stdout,
    /// and the table goes to stderr.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<String>,
    /// Write the per-second series as CSV: a header row, then one row per second of the
    /// measured window and of the drain after it (`map`: of the update phase), with a `phase`
    /// column: the scenario's rates, latency p50 / p99 / max of that second, lost, duplicated,
    /// server CPU % and RSS (with --server-pid), gyre-bench CPU %.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<String>,
    /// Write charts of this run: FILE.html (a self-contained page with the totals, machine and
    /// parameters) or FILE.svg (the charts alone). To compare runs, see `gyre-bench report`.
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,
    /// Name of this run in reports (default: the kind of target and its address).
    #[arg(long)]
    pub label: Option<String>,
    /// No progress lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl Outputs {
    /// Whether the files asked for can be written: checked before the run starts, so a typo
    /// in a path does not cost a whole run.
    pub fn check(&self) -> Result<(), Fail> {
        let paths = [self.csv.as_deref(), self.json.as_deref().filter(|p| *p != "-"), self.report.as_deref()];
        for p in paths.into_iter().flatten() {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Fail::setup(format!("cannot write {p}: {e}")))?;
        }
        Ok(())
    }

    /// The JSON goes to stdout (`--json` without a file or with `-`): the table then goes to
    /// stderr.
    pub fn json_on_stdout(&self) -> bool {
        self.json.as_deref() == Some("-")
    }

    /// The run's label: `--label`, or the kind of target and the address of its first node.
    pub fn label(&self, target: &str, kind: &str) -> String {
        self.label.clone().unwrap_or_else(|| default_label(target, kind))
    }

    /// Writes the files asked for: the JSON (stdout or a file), the CSV of the per-second
    /// rows (`columns` of `j["series"]`) and the report.
    pub fn emit(&self, j: &Value, columns: &[&str]) -> Result<(), Fail> {
        if let Some(dest) = self.json.as_deref() {
            if dest == "-" {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "{j}");
                let _ = out.flush();
            } else {
                std::fs::write(dest, format!("{j}\n")).map_err(|e| Fail::setup(format!("cannot write {dest}: {e}")))?;
            }
        }
        if let Some(path) = self.csv.as_deref() {
            write_csv(path, columns, j["series"].as_array().map_or(&[][..], Vec::as_slice))?;
        }
        if let Some(path) = self.report.as_deref() {
            let label = j["label"].as_str().unwrap_or("run").to_string();
            report::write(path, &[Run { label, j: j.clone() }])?;
        }
        Ok(())
    }
}

/// The kind of target and the address of its first node.
pub fn default_label(target: &str, kind: &str) -> String {
    let first = target.split(',').next().unwrap_or("").trim();
    let host = first.split_once("://").map_or(first, |(_, r)| r);
    format!("{kind} {host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machine() {
        let m = machine();
        assert!(m["cores"].as_u64().unwrap_or(0) >= 1, "{m}");
        assert!(m["kernel"].is_string() && m["memory_kb"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(m["cpus_allowed"].is_string(), "{m}");
    }

    #[test]
    fn cdf_reaches_the_tail_the_data_has() {
        let mut h = crate::stats::histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let c = latency_cdf(&h);
        let pts = c.as_array().unwrap();
        assert_eq!(pts[0]["p"], 0.0);
        assert_eq!(pts.last().unwrap()["p"], 100.0);
        let max = pts.last().unwrap()["us"].as_f64().unwrap();
        assert!((1000.0..1001.0).contains(&max), "{c}");
        // 1,000 values: down to 1 in 1,000 (99.9 %), no further.
        let last_q = pts[pts.len() - 2]["p"].as_f64().unwrap();
        assert!((99.89..99.91).contains(&last_q), "{c}");
        assert!(pts.windows(2).all(|w| w[0]["us"].as_f64() <= w[1]["us"].as_f64()));
    }

    #[test]
    fn csv_has_a_header_and_blank_missing_cells() {
        let path = std::env::temp_dir().join(format!("gyre-bench-csv-{}.csv", std::process::id()));
        let p = path.to_str().unwrap();
        write_csv(p, &["t", "a", "b"], &[json!({"t": 1.0, "a": 5}), json!({"t": 2.0, "a": 6, "b": "x"})]).unwrap();
        let s = std::fs::read_to_string(p).unwrap();
        let _ = std::fs::remove_file(p);
        assert_eq!(s, "t,a,b\n1.0,5,\n2.0,6,x\n");
    }
}
