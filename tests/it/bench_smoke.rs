//! Smoke runs of the bundled load tool (`gyre-bench`) against a real Gyre: a short fan-out in
//! each wire format must deliver everything it published (nothing lost or duplicated), a short
//! ingest must get publishes acknowledged, and a closed port must fail fast with a clear
//! message and exit code 2. Each run is about two seconds and bounded by a watchdog. Lists of
//! nodes (`--target A,B`) are run against memory-engine nodes, which do not share
//! publications: a fan-out uses one node listed twice, an ingest two nodes. Each transport
//! besides WebSocket (`--transport`) gets one short fan-out with the same accounting. The
//! proxy tools: `connect` without a token and `ingest --client-publish` run through Gyre's
//! connect, subscribe and publish proxies to `gyre-bench proxy-backend`, whose call counts
//! must match what the clients did.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{config_with, Server, KEY};

const SECRET: &str = "bench-smoke-secret";

/// Exit code, stdout and stderr of `gyre-bench args…`, killed if it runs past `limit`.
fn bench(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gyre-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gyre-bench");
    // Drain both pipes on threads so a chatty run cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait gyre-bench") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gyre-bench {args:?} ran past {limit:?}; stderr:\n{}", err_t.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code().unwrap_or(-1), out_t.join().unwrap(), err_t.join().unwrap())
}

fn server() -> Server {
    Server::start(config_with(json!({
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true}}
    })))
}

/// A one-second fan-out at a fixed rate; returns the JSON report.
fn fanout(s: &Server, format: &str) -> Value {
    fanout_on(&format!("http://127.0.0.1:{}", s.port), &s.pid().to_string(), format, &[])
}

/// [`fanout`] against `target` (one node or a list), sampling the server processes `pids`.
fn fanout_on(target: &str, pids: &str, format: &str, extra: &[&str]) -> Value {
    let args = [
        "fanout",
        "--target",
        target,
        "--api-key",
        KEY,
        "--hmac-secret",
        SECRET,
        "--format",
        format,
        "--subscribers",
        "6",
        "--channels",
        "2",
        "--publishers",
        "2",
        "--rate",
        "400",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--server-pid",
        pids,
        "--connect-timeout",
        "10",
        "--json",
        "--quiet",
    ];
    let (code, out, err) = bench(&[&args[..], extra].concat(), Duration::from_secs(30));
    assert_eq!(code, 0, "gyre-bench failed; stderr:\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("report is not JSON ({e}): {out:?}; stderr:\n{err}"))
}

fn check_fanout(r: &Value) {
    assert_eq!(r["subscribers_ready"], 6, "{r}");
    assert!(r["published"].as_u64().unwrap() > 0, "nothing published: {r}");
    assert!(r["delivered"].as_u64().unwrap() > 0, "nothing delivered: {r}");
    // Each message goes to the 3 subscribers of its channel.
    assert_eq!(r["delivered_total"], r["expected_total"], "{r}");
    for k in ["lost", "duplicated", "publish_errors", "disconnects"] {
        assert_eq!(r[k], 0, "{k}: {r}");
    }
    assert!(r["latency_us"]["count"].as_u64().unwrap() > 0, "{r}");
    assert!(r["server"]["rss_end_kb"].as_u64().unwrap() > 0, "server sampled: {r}");
}

#[test]
fn fanout_json_delivers_everything() {
    let s = server();
    check_fanout(&fanout(&s, "json"));
}

#[test]
fn fanout_protobuf_delivers_everything() {
    let s = server();
    check_fanout(&fanout(&s, "protobuf"));
}

/// The io_uring event loop (the default is epoll) receives the same.
#[test]
fn fanout_on_io_uring_delivers_everything() {
    let s = server();
    let r = fanout_on(&format!("http://127.0.0.1:{}", s.port), &s.pid().to_string(), "json", &["--driver", "uring"]);
    check_fanout(&r);
}

/// Subscribers in two child processes: the same end-to-end accounting, latencies included.
#[test]
fn fanout_with_subscriber_processes_delivers_everything() {
    let s = server();
    let r = fanout_on(&format!("http://127.0.0.1:{}", s.port), &s.pid().to_string(), "json", &["--procs", "2"]);
    check_fanout(&r);
    assert_eq!(r["latency_us"]["count"], r["delivered"], "every delivery of the window timed: {r}");
}

/// `--spin`: the event loops never sleep, yet their timers still fire (the publishers' pacing,
/// the phases) and the accounting is the same; the tool's core is busy the whole window.
#[test]
fn fanout_with_spinning_loops_delivers_everything() {
    let s = server();
    let r = fanout_on(&format!("http://127.0.0.1:{}", s.port), &s.pid().to_string(), "json", &["--spin"]);
    check_fanout(&r);
    assert_eq!(r["params"]["spin"], true, "{r}");
    let pct = r["client"]["cpu_pct"].as_f64().unwrap();
    assert!(pct >= 50.0, "the tool's loop slept: {pct}% of a core; {r}");
}

/// A server with every transport on, for `--transport`.
fn transports_server() -> Server {
    Server::start(config_with(json!({
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
        "http_stream": {"enabled": true},
        "sse": {"enabled": true},
        "uni_websocket": {"enabled": true},
        "uni_sse": {"enabled": true},
        "uni_http_stream": {"enabled": true}
    })))
}

/// A fan-out whose subscribers use `transport`: everything delivered, the report names it.
fn fanout_over(transport: &str, format: &str) {
    let s = transports_server();
    let r =
        fanout_on(&format!("http://127.0.0.1:{}", s.port), &s.pid().to_string(), format, &["--transport", transport]);
    check_fanout(&r);
    assert_eq!((r["transport"].as_str(), r["format"].as_str()), (Some(transport), Some(format)), "{r}");
}

#[test]
fn fanout_over_http_stream_delivers_everything() {
    fanout_over("http_stream", "json");
}

#[test]
fn fanout_over_http_stream_protobuf_delivers_everything() {
    fanout_over("http_stream", "protobuf");
}

#[test]
fn fanout_over_sse_delivers_everything() {
    fanout_over("sse", "json");
}

#[test]
fn fanout_over_uni_websocket_delivers_everything() {
    fanout_over("uni_websocket", "json");
}

#[test]
fn fanout_over_uni_sse_delivers_everything() {
    fanout_over("uni_sse", "json");
}

#[test]
fn fanout_over_uni_http_stream_delivers_everything() {
    fanout_over("uni_http_stream", "json");
}

/// A transport the server has not enabled fails at once, naming the option to set.
#[test]
fn a_disabled_transport_fails_clearly() {
    let s = server();
    let target = format!("http://127.0.0.1:{}", s.port);
    let (code, _, err) = bench(
        &["fanout", "--target", &target, "--api-key", KEY, "--hmac-secret", SECRET, "-d", "1", "--transport", "sse"],
        Duration::from_secs(20),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTP 404") && err.contains("sse.enabled"), "{err}");
}

/// Several nodes: one memory-engine node listed twice (publications reach only the node they
/// were made on), publishers over both entries. End-to-end accounting must be unchanged and
/// the report must list the node with its share.
#[test]
fn fanout_over_a_node_list() {
    let s = server();
    let node = format!("http://127.0.0.1:{}", s.port);
    let r = fanout_on(&format!("{node},{node}"), &format!("{0},{0}", s.pid()), "json", &["--publish-all"]);
    check_fanout(&r);
    assert_eq!(r["target"], format!("{node},{node}"), "{r}");
    let host = format!("127.0.0.1:{}", s.port);
    assert_eq!(r["nodes"], json!([{"node": host, "subscribers": 6, "publishers": 2}]), "{r}");
}

/// Ingest over two nodes: each gets one of the two publisher connections.
#[test]
fn ingest_spreads_connections_over_nodes() {
    let (a, b) = (server(), server());
    let target = format!("http://127.0.0.1:{},http://127.0.0.1:{}", a.port, b.port);
    let pids = format!("{},{}", a.pid(), b.pid());
    let args = [
        "ingest",
        "--target",
        &target,
        "--api-key",
        KEY,
        "--connections",
        "2",
        "--batch",
        "50",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--server-pid",
        &pids,
        "--json",
        "--quiet",
    ];
    let (code, out, err) = bench(&args, Duration::from_secs(30));
    assert_eq!(code, 0, "stderr:\n{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(r["commands"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["publish_errors"], 0, "{r}");
    let nodes = r["nodes"].as_array().unwrap_or_else(|| panic!("no nodes: {r}"));
    assert_eq!(nodes.len(), 2, "{r}");
    assert!(nodes.iter().all(|n| n["publishers"] == 1), "{r}");
    // Both servers are sampled: their RSS adds up.
    assert!(r["server"]["rss_end_kb"].as_u64().unwrap() > a.rss_kb().max(b.rss_kb()), "{r}");
}

#[test]
fn ingest_counts_acknowledged_publishes() {
    let s = server();
    let target = format!("http://127.0.0.1:{}", s.port);
    let args = [
        "ingest",
        "--target",
        &target,
        "--api-key",
        KEY,
        "--connections",
        "2",
        "--batch",
        "50",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--json",
        "--quiet",
    ];
    let (code, out, err) = bench(&args, Duration::from_secs(30));
    assert_eq!(code, 0, "stderr:\n{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(r["commands"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["publish_errors"], 0, "{r}");
}

/// `--api-batch`: publishes as new-style `batch` requests; replies counted per command
/// (an unknown namespace's 102 in every reply counts every publish as an error), and a
/// fan-out through them delivers everything.
#[test]
fn api_batch_publishes_are_counted_and_delivered() {
    let s = server();
    let target = format!("http://127.0.0.1:{}", s.port);
    let ingest = |extra: &[&str]| -> Value {
        let mut args = vec!["ingest", "--target", &target, "--api-key", KEY, "--api-batch", "--batch", "50"];
        args.extend_from_slice(&["--duration", "1", "--warmup", "0.2", "--json", "--quiet"]);
        args.extend_from_slice(extra);
        let (code, out, err) = bench(&args, Duration::from_secs(30));
        assert_eq!(code, 0, "stderr:\n{err}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let r = ingest(&[]);
    assert!(r["commands"].as_u64().unwrap() > 0, "{r}");
    assert_eq!((r["publish_errors"].as_u64(), r["params"]["api_batch"].as_bool()), (Some(0), Some(true)), "{r}");
    let r = ingest(&["--channel-prefix", "nope:x"]);
    assert_eq!(r["commands"], 0, "{r}");
    assert!(r["publish_errors"].as_u64().unwrap() > 0, "{r}");
    check_fanout(&fanout_on(&target, &s.pid().to_string(), "json", &["--api-batch"]));
}

#[test]
fn closed_port_fails_clearly() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("http://127.0.0.1:{port}");
    let (code, out, err) = bench(&["fanout", "--target", &target, "--duration", "1"], Duration::from_secs(10));
    assert_eq!(code, 2, "stdout {out:?} stderr {err:?}");
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("connection refused"), "{err}");
}

#[test]
fn wrong_api_key_fails_clearly() {
    let s = server();
    let target = format!("http://127.0.0.1:{}", s.port);
    let (code, _, err) = bench(
        &["ingest", "--target", &target, "--api-key", "wrong", "--duration", "1", "--warmup", "0", "--quiet"],
        Duration::from_secs(10),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");
}

/// A unique path in the temporary folder for one output of a test.
fn tmp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("gyre-bench-smoke-{}-{name}", std::process::id()))
}

/// Parses a CSV of numbers and words (no quoting needed): the header and the rows, each as
/// long as the header.
fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("a header row").split(',').map(str::to_string).collect();
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "row {r:?} against header {header:?}");
    }
    (header, rows)
}

/// `--json FILE`, `--csv` and `--report` of a real fan-out: the JSON holds the parameters, the
/// machine, the per-second series and the percentile curve; the CSV has a row per second of
/// the window with numbers where numbers belong; the page holds charts and no script. Then
/// `gyre-bench report` puts that run and an ingest run on one page.
#[test]
fn fanout_writes_json_csv_and_report() {
    let s = server();
    let (json_p, csv_p, html_p, svg_p) = (tmp_path("f.json"), tmp_path("f.csv"), tmp_path("f.html"), tmp_path("f.svg"));
    let target = format!("http://127.0.0.1:{}", s.port);
    let pid = s.pid().to_string();
    let (code, out, err) = bench(
        &[
            "fanout",
            "--target",
            &target,
            "--api-key",
            KEY,
            "--hmac-secret",
            SECRET,
            "-n",
            "4",
            "-c",
            "2",
            "--rate",
            "300",
            "-d",
            "2",
            "--warmup",
            "0.3",
            "--server-pid",
            &pid,
            "--label",
            "gyre smoke",
            "--json",
            json_p.to_str().unwrap(),
            "--csv",
            csv_p.to_str().unwrap(),
            "--report",
            html_p.to_str().unwrap(),
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "stderr:\n{err}");
    // With --json FILE the table goes to stdout.
    assert!(out.contains("gyre-bench fanout"), "{out}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json_p).unwrap()).unwrap();
    assert_eq!((r["label"].as_str(), r["params"]["subscribers"].as_u64()), (Some("gyre smoke"), Some(4)), "{r}");
    assert!(r["machine"]["cores"].as_u64().unwrap() >= 1 && r["machine"]["kernel"].is_string(), "{r}");
    assert_eq!((r["lost"].as_u64(), r["duplicated"].as_u64()), (Some(0), Some(0)), "{r}");
    let cdf = r["latency_cdf"].as_array().unwrap();
    assert!(cdf.len() >= 5 && cdf.last().unwrap()["p"] == 100.0, "{r}");
    let series = r["series"].as_array().unwrap();
    let measured: Vec<&Value> = series.iter().filter(|row| row["phase"] == "measure").collect();
    assert!((2..=3).contains(&measured.len()), "a row per second of 2 s: {series:?}");
    assert!(measured.iter().all(|row| row["delivered_per_s"].as_u64().unwrap() > 0), "{series:?}");
    assert!(measured.iter().all(|row| row["server_rss_kb"].as_u64().unwrap() > 0), "{series:?}");

    let (header, rows) = read_csv(&csv_p);
    assert_eq!(header[..4], ["t", "phase", "published_per_s", "delivered_per_s"]);
    assert_eq!(rows.len(), series.len());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for row in rows.iter().filter(|r| r[col("phase")] == "measure") {
        for c in ["t", "published_per_s", "delivered_per_s", "latency_p99_us", "lost", "server_cpu_pct"] {
            row[col(c)].parse::<f64>().unwrap_or_else(|_| panic!("{c} = {:?} in {row:?}", row[col(c)]));
        }
        assert_eq!(row[col("lost")], "0");
    }
    let page = std::fs::read_to_string(&html_p).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg") && page.contains("gyre smoke"));
    assert!(!page.contains("<script") && !page.contains("http-equiv"), "self-contained");

    // The ingest run, then one page and one SVG of both.
    let ingest_p = tmp_path("i.json");
    let (code, _, err) = bench(
        &[
            "ingest",
            "--target",
            &target,
            "--api-key",
            KEY,
            "-k",
            "1",
            "--batch",
            "50",
            "-d",
            "1",
            "--warmup",
            "0.2",
            "--json",
            ingest_p.to_str().unwrap(),
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "stderr:\n{err}");
    let i: Value = serde_json::from_str(&std::fs::read_to_string(&ingest_p).unwrap()).unwrap();
    assert!(i["latency_us"]["count"].as_u64().unwrap() > 0, "round trips measured: {i}");
    assert!(i["latency_us"]["p99"].as_f64().unwrap() >= i["latency_us"]["p50"].as_f64().unwrap(), "{i}");
    let (code, _, err) = bench(
        &["report", "--out", svg_p.to_str().unwrap(), json_p.to_str().unwrap(), ingest_p.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&svg_p).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() >= 2, "{svg:.300}");
    let (code, _, err) =
        bench(&["report", "--out", html_p.to_str().unwrap(), csv_p.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(code, 2, "a CSV is not a report: {err}");
    for p in [json_p, csv_p, html_p, svg_p, ingest_p] {
        let _ = std::fs::remove_file(p);
    }
}

/// `gyre-bench proxy-backend` on a free port: the child and its address.
struct Backend {
    child: Child,
    addr: String,
}

impl Backend {
    fn start() -> Backend {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gyre-bench"))
            .args(["proxy-backend", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gyre-bench proxy-backend");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).expect("the backend's start-up line");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        // Keep draining its stderr so the summary at exit cannot block it.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Backend { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Ends it with SIGTERM; its call counts (the JSON line it prints on exit).
    fn stop(mut self) -> Value {
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "backend exit: {status:?}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("backend counts are not JSON ({e}): {out:?}"))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Gyre whose connects without a token, subscribes and publishes go to `backend`.
fn proxied_server(backend: &Backend) -> Server {
    Server::start(config_with(json!({
        "client": {"proxy": {"connect": {"enabled": true, "endpoint": backend.url("/connect")}}},
        "channel": {
            "proxy": {"subscribe": {"endpoint": backend.url("/subscribe")}, "publish": {"endpoint": backend.url("/publish")}},
            "without_namespace": {"subscribe_proxy_enabled": true, "publish_proxy_enabled": true}
        }
    })))
}

/// Connects without a token (and subscribes) through the connect and subscribe proxies: every
/// one is answered, each is one call of each kind at the backend.
#[test]
fn connect_without_a_token_through_the_proxy_backend() {
    let backend = Backend::start();
    let s = proxied_server(&backend);
    let target = format!("http://127.0.0.1:{}", s.port);
    let pid = s.pid().to_string();
    let args = [
        "connect",
        "--target",
        &target,
        "-n",
        "40",
        "--concurrency",
        "4",
        "--subscribe",
        "bench-0",
        "--server-pid",
        &pid,
        "--json",
        "--quiet",
    ];
    let (code, out, err) = bench(&args, Duration::from_secs(30));
    assert_eq!(code, 0, "stderr:\n{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((r["ok"].as_u64(), r["failed"].as_u64()), (Some(40), Some(0)), "{r}");
    assert_eq!((r["scenario"].as_str(), r["auth"].as_str()), (Some("connect"), Some("no token")), "{r}");
    assert_eq!(r["latency_us"]["count"], 40, "{r}");
    assert!(r["connects_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["server"]["cpu_us_per_connect"].as_f64().is_some(), "{r}");
    let calls = backend.stop();
    assert_eq!(
        (calls["calls"]["connect"].as_u64(), calls["calls"]["subscribe"].as_u64()),
        (Some(40), Some(40)),
        "{calls}"
    );
    assert_eq!(calls["bad_requests"], 0, "{calls}");
}

/// The connect rate counts refusals by their code: a server that wants a token closes every
/// connect without one with 3501, and the run fails naming it.
#[test]
fn connect_refusals_are_counted_by_code() {
    let s = server();
    let target = format!("http://127.0.0.1:{}", s.port);
    let (code, _, err) =
        bench(&["connect", "--target", &target, "-n", "20", "--concurrency", "2", "--quiet"], Duration::from_secs(30));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("all 20 attempts failed") && err.contains("close 3501"), "{err}");
    // With tokens the same server takes them all, kept open to the end.
    let (code, out, err) = bench(
        &["connect", "--target", &target, "--hmac-secret", SECRET, "-n", "20", "--keep", "--json", "--quiet"],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((r["ok"].as_u64(), r["open_at_end"].as_u64()), (Some(20), Some(20)), "{r}");
}

/// One short client-publish ingest; returns the JSON report.
fn client_publish(target: &str, auth: &[&str]) -> Value {
    let args = [
        &["ingest", "--client-publish", "--target", target, "-k", "2", "--batch", "5", "--inflight", "2"][..],
        auth,
        &["--duration", "1", "--warmup", "0.2", "--json", "--quiet"],
    ]
    .concat();
    let (code, out, err) = bench(&args, Duration::from_secs(30));
    assert_eq!(code, 0, "stderr:\n{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(r["commands"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["publish_errors"], 0, "{r}");
    assert_eq!(r["publish_via"], "client", "{r}");
    assert!(r["latency_us"]["count"].as_u64().unwrap() > 0, "{r}");
    r
}

/// WebSocket clients publishing: with tokens where the namespace allows it, and without a token
/// through the connect and publish proxies, where every publish is a call at the backend.
#[test]
fn client_publish_counts_replies() {
    let s = Server::start(config_with(json!({
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"without_namespace": {"allow_publish_for_client": true}}
    })));
    client_publish(&format!("http://127.0.0.1:{}", s.port), &["--hmac-secret", SECRET]);

    let backend = Backend::start();
    let s = proxied_server(&backend);
    let r = client_publish(&format!("http://127.0.0.1:{}", s.port), &[]);
    let calls = backend.stop();
    assert_eq!(calls["calls"]["connect"], 2, "{calls}");
    // Warm-up and measured window: at least the publishes counted.
    assert!(calls["calls"]["publish"].as_u64().unwrap() >= r["commands"].as_u64().unwrap(), "{calls} {r}");

    // A namespace that allows neither: the error is a publish error with its hint.
    let s = server();
    let target = format!("http://127.0.0.1:{}", s.port);
    let (code, _, err) = bench(
        &[
            "ingest",
            "--client-publish",
            "--target",
            &target,
            "--hmac-secret",
            SECRET,
            "-k",
            "1",
            "-d",
            "1",
            "--warmup",
            "0.2",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "errors are counted, not fatal: {err}");
    assert!(err.contains("publish error reply: 103") && err.contains("allow_publish_for_client"), "{err}");
}

/// A server with a map namespace (`map:`) besides the default one.
fn map_server() -> Server {
    Server::start(config_with(json!({
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": true},
            "namespaces": [{
                "name": "map", "allow_subscribe_for_client": true, "subscription_type": "map",
                "map": {"mode": "recoverable", "key_ttl": "300s", "min_page_size": 1}
            }]
        }
    })))
}

/// `gyre-bench map` against `s` with `extra` options; (exit code, stdout, stderr).
fn map_bench(s: &Server, extra: &[&str]) -> (i32, String, String) {
    let target = format!("http://127.0.0.1:{}", s.port);
    let pid = s.pid().to_string();
    let args = [
        "map",
        "--target",
        &target,
        "--api-key",
        KEY,
        "--hmac-secret",
        SECRET,
        "--server-pid",
        &pid,
        "--connect-timeout",
        "20",
        "--quiet",
    ];
    bench(&[&args[..], extra].concat(), Duration::from_secs(40))
}

/// `gyre-bench map` of 500 keys read 100 at a time by 20 subscribers (5 pages each), then 2 s
/// of updates to random keys, in `format`: every subscriber has every key, every update reaches
/// every subscriber once.
fn map_syncs_every_key(format: &str) {
    let s = map_server();
    let opts = [
        "--channel",
        "map:smoke",
        "--format",
        format,
        "--keys",
        "500",
        "-n",
        "20",
        "--page-size",
        "100",
        "-c",
        "8",
        "--threads",
        "2",
        "--rate",
        "1000",
        "-d",
        "2",
        "--warmup",
        "0.3",
        "--json",
    ];
    let (code, out, err) = map_bench(&s, &opts);
    assert_eq!(code, 0, "gyre-bench map failed; stderr:\n{err}");
    let r: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {out:?}; stderr:\n{err}"));
    assert_eq!((r["scenario"].as_str(), r["format"].as_str()), (Some("map"), Some(format)), "{r}");
    assert_eq!(r["subscribers_ready"], 20, "{r}");
    let sync = &r["sync"];
    assert_eq!((sync["complete"].clone(), sync["incomplete"].clone()), (json!(20), json!(0)), "{r}");
    assert_eq!(sync["keys"], 500 * 20, "{r}");
    assert_eq!(sync["pages"], 5 * 20, "{r}");
    for k in ["keys_missing", "keys_repeated", "keys_not_seeded"] {
        assert_eq!(sync[k], 0, "{k}: {r}");
    }
    assert_eq!(sync["sync_us"]["count"], 20, "{r}");
    assert!(sync["all_live_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(sync["server_cpu_s"].as_f64().is_some(), "server sampled during the sync: {r}");
    assert!(r["published"].as_u64().unwrap() > 0, "nothing published: {r}");
    assert!(r["delivered"].as_u64().unwrap() > 0, "nothing delivered: {r}");
    assert_eq!(r["delivered_total"], r["expected_total"], "{r}");
    for k in ["lost", "duplicated", "publish_errors", "disconnects"] {
        assert_eq!(r[k], 0, "{k}: {r}");
    }
    assert!(r["latency_us"]["count"].as_u64().unwrap() > 0, "{r}");
    assert!(r["series"].as_array().is_some_and(|s| !s.is_empty()), "{r}");
    assert!(err.contains("gyre-bench map") && err.contains("lost / duplicated"), "the table on stderr: {err}");
    assert!(err.contains(&format!("({format} over websocket")), "the target line names {format}: {err}");
}

#[test]
fn map_syncs_every_key_and_loses_no_update() {
    map_syncs_every_key("json");
}

/// The same with protobuf subscribers (binary frames, `centrifuge-protobuf`).
#[test]
fn map_syncs_every_key_and_loses_no_update_in_protobuf() {
    map_syncs_every_key("protobuf");
}

/// A channel outside any map namespace: the seeding's refusal names the cause, exit code 1.
#[test]
fn map_refusals_are_clear() {
    let s = map_server();
    let (code, _, err) = map_bench(&s, &["--channel", "plain", "--keys", "10", "-n", "1", "-d", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("107") && err.contains("subscription_type"), "{err}");
}
