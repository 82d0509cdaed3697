//! Prometheus metrics without a shared hot spot.
//!
//! Every worker thread counts into its own thread-local [`Local`] (plain `Cell`s: no atomic,
//! no cache line shared with another core). A scrape of `/metrics` asks every worker through
//! its inbox for a [`Snapshot`] of its counters and its connection counts
//! (a job on each worker, `http::ops`), adds them up and renders the text format with
//! Centrifugo's metric names, so existing dashboards keep working:
//!
//! * `centrifugo_node_num_clients|num_users|num_channels|num_subscriptions|num_nodes|build`
//! * `centrifugo_node_messages_sent_count{type}` (publications, joins and leaves this node
//!   handed to the engine) and `centrifugo_node_messages_received_count{type}` (those the
//!   engine delivered to this node for its subscribers);
//! * `centrifugo_transport_messages_sent|messages_sent_size{transport,frame_type}` and
//!   `..._received|received_size{transport}` (WebSocket frames and bytes to and from clients);
//! * `centrifugo_client_num_reply_errors{method,code}`;
//! * `centrifugo_api_command_duration_seconds{protocol,method}` (summary: `_sum`, `_count`),
//!   `..._histogram` (buckets) and `centrifugo_api_command_errors_total{protocol,method,error}`;
//! * `gyre_worker_loop_*{worker}`: per event loop, inbox batches handled, time spent handling
//!   them, and the scheduling lag of a periodic tick (how late a loop turn runs).

use std::cell::{Cell, RefCell};
use std::fmt::Write;
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
const METHODS: [Method; 14] = Method::ALL;

/// Upper bounds (seconds) of the API duration histogram buckets.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Upper bounds (seconds) of the proxy duration histogram buckets (Prometheus' defaults).
const PROXY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

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

/// Kinds of pushes counted by `type` / `frame_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Publication = 0,
    Join = 1,
    Leave = 2,
}

const KINDS: [&str; 3] = ["publication", "join", "leave"];

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

/// One worker's counters. Lives in a thread-local; only its own thread touches it.
#[derive(Default)]
pub struct Local {
    sent: [Cell<u64>; 3],
    received: [Cell<u64>; 3],
    ws_sent: [[Cell<u64>; 3]; TRANSPORTS.len()],
    ws_sent_bytes: [[Cell<u64>; 3]; TRANSPORTS.len()],
    ws_received: [Cell<u64>; TRANSPORTS.len()],
    ws_received_bytes: [Cell<u64>; TRANSPORTS.len()],
    reply_errors: RefCell<Vec<((&'static str, u32), u64)>>,
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

/// The `transport` label values, indexed as the client's framing (`crate::client::Framing`).
pub const TRANSPORTS: [&str; 7] =
    ["websocket", "http_stream", "sse", "uni_websocket", "uni_http_stream", "uni_sse", "uni_grpc"];

/// `frames` messages of `bytes` bytes in all queued to clients of `transport` (an index of
/// [`TRANSPORTS`]).
pub fn ws_frames_sent(transport: usize, kind: Kind, frames: u64, bytes: u64) {
    LOCAL.with(|l| {
        inc(&l.ws_sent[transport][kind as usize], frames);
        inc(&l.ws_sent_bytes[transport][kind as usize], bytes);
    });
}

/// One message of `bytes` bytes read from a client of `transport`.
pub fn ws_message_received(transport: usize, bytes: usize) {
    LOCAL.with(|l| {
        inc(&l.ws_received[transport], 1);
        inc(&l.ws_received_bytes[transport], bytes as u64);
    });
}

/// An error reply to a client command.
pub fn client_reply_error(method: &'static str, code: u32) {
    LOCAL.with(|l| bump(&mut l.reply_errors.borrow_mut(), (method, code), 1));
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
    sent: [u64; 3],
    received: [u64; 3],
    ws_sent: [[u64; 3]; TRANSPORTS.len()],
    ws_sent_bytes: [[u64; 3]; TRANSPORTS.len()],
    ws_received: [u64; TRANSPORTS.len()],
    ws_received_bytes: [u64; TRANSPORTS.len()],
    reply_errors: Vec<((&'static str, u32), u64)>,
    api: Vec<ApiStat>,
    proxy: Vec<ProxyStat>,
    loops: Vec<LoopStat>,
}

/// The calling worker's counters (its connection counts are filled in by the caller). The
/// loop-lag maximum restarts with each snapshot.
pub fn snapshot(worker: usize) -> Snapshot {
    LOCAL.with(|l| {
        let get = |a: &[Cell<u64>; 3]| [a[0].get(), a[1].get(), a[2].get()];
        Snapshot {
            sent: get(&l.sent),
            received: get(&l.received),
            ws_sent: std::array::from_fn(|t| get(&l.ws_sent[t])),
            ws_sent_bytes: std::array::from_fn(|t| get(&l.ws_sent_bytes[t])),
            ws_received: std::array::from_fn(|t| l.ws_received[t].get()),
            ws_received_bytes: std::array::from_fn(|t| l.ws_received_bytes[t].get()),
            reply_errors: l.reply_errors.borrow().clone(),
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
        for i in 0..3 {
            self.sent[i] += o.sent[i];
            self.received[i] += o.received[i];
            for t in 0..TRANSPORTS.len() {
                self.ws_sent[t][i] += o.ws_sent[t][i];
                self.ws_sent_bytes[t][i] += o.ws_sent_bytes[t][i];
            }
        }
        for t in 0..TRANSPORTS.len() {
            self.ws_received[t] += o.ws_received[t];
            self.ws_received_bytes[t] += o.ws_received_bytes[t];
        }
        for (k, n) in o.reply_errors {
            bump(&mut self.reply_errors, k, n);
        }
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

    /// Push messages queued to clients (every transport).
    pub fn frames_delivered(&self) -> u64 {
        self.ws_sent.iter().flatten().sum()
    }

    /// Server API commands completed (every protocol and method).
    pub fn api_commands(&self) -> u64 {
        self.api.iter().map(|s| s.count).sum()
    }

    /// `centrifugo_proxy_*`: durations (summary sums and a histogram), call errors, calls in
    /// flight, by protocol, type and proxy name.
    fn render_proxy(&mut self, o: &mut String) {
        if self.proxy.is_empty() {
            return;
        }
        self.proxy.sort_by(|a, b| (a.protocol, a.kind, &*a.name).cmp(&(b.protocol, b.kind, &*b.name)));
        let labels = |s: &ProxyStat| format!("protocol=\"{}\",type=\"{}\",name=\"{}\"", s.protocol, s.kind, s.name);
        o.push_str(
            "# HELP centrifugo_proxy_duration_seconds Duration of proxy calls.\n\
             # TYPE centrifugo_proxy_duration_seconds summary\n",
        );
        for s in &self.proxy {
            let l = labels(s);
            let _ = writeln!(o, "centrifugo_proxy_duration_seconds_sum{{{l}}} {}", secs(s.sum_ns));
            let _ = writeln!(o, "centrifugo_proxy_duration_seconds_count{{{l}}} {}", s.count);
        }
        o.push_str(
            "# HELP centrifugo_proxy_duration_seconds_histogram Duration of proxy calls.\n\
             # TYPE centrifugo_proxy_duration_seconds_histogram histogram\n",
        );
        for s in &self.proxy {
            let l = labels(s);
            let name = "centrifugo_proxy_duration_seconds_histogram";
            let mut cum = 0;
            for (b, n) in PROXY_BUCKETS.iter().zip(&s.buckets) {
                cum += n;
                let _ = writeln!(o, "{name}_bucket{{{l},le=\"{b}\"}} {cum}");
            }
            let _ = writeln!(o, "{name}_bucket{{{l},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(o, "{name}_sum{{{l}}} {}", secs(s.sum_ns));
            let _ = writeln!(o, "{name}_count{{{l}}} {}", s.count);
        }
        o.push_str(
            "# HELP centrifugo_proxy_errors Proxy calls that got no answer.\n\
             # TYPE centrifugo_proxy_errors counter\n",
        );
        for s in &self.proxy {
            let _ = writeln!(o, "centrifugo_proxy_errors{{{}}} {}", labels(s), s.errors);
        }
        o.push_str(
            "# HELP centrifugo_proxy_inflight_requests Proxy calls in progress.\n\
             # TYPE centrifugo_proxy_inflight_requests gauge\n",
        );
        for s in &self.proxy {
            let _ = writeln!(o, "centrifugo_proxy_inflight_requests{{{}}} {}", labels(s), s.inflight.max(0));
        }
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(mut self, version: &str, num_nodes: u64) -> String {
        let mut o = String::with_capacity(8192);
        let mut users = std::mem::take(&mut self.users);
        users.sort_unstable();
        users.dedup();
        let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        gauge(&mut o, "centrifugo_node_num_clients", "Number of clients connected.", self.num_clients);
        gauge(&mut o, "centrifugo_node_num_users", "Number of unique users connected.", users.len() as u64);
        gauge(
            &mut o,
            "centrifugo_node_num_channels",
            "Number of channels with one or more subscribers.",
            self.num_channels,
        );
        gauge(&mut o, "centrifugo_node_num_subscriptions", "Number of subscriptions.", self.num_subs);
        gauge(&mut o, "centrifugo_node_num_nodes", "Number of nodes in the cluster.", num_nodes);
        let _ = write!(
            o,
            "# HELP centrifugo_node_build Node build info.\n# TYPE centrifugo_node_build gauge\n\
             centrifugo_node_build{{version=\"{}\"}} 1\n",
            escape(version)
        );

        let by_kind = |o: &mut String, name: &str, help: &str, label: &str, extra: &str, v: &[u64; 3]| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for (k, n) in KINDS.iter().zip(v) {
                let _ = writeln!(o, "{name}{{{extra}{label}=\"{k}\"}} {n}");
            }
        };
        by_kind(
            &mut o,
            "centrifugo_node_messages_sent_count",
            "Number of messages sent by node to broker.",
            "type",
            "",
            &self.sent,
        );
        by_kind(
            &mut o,
            "centrifugo_node_messages_received_count",
            "Number of messages received from broker.",
            "type",
            "",
            &self.received,
        );
        // Per transport: WebSocket always, the others once they carried something.
        let used: Vec<usize> = (0..TRANSPORTS.len())
            .filter(|&t| t == 0 || self.ws_sent[t].iter().any(|&n| n > 0) || self.ws_received[t] > 0)
            .collect();
        for (name, help, v) in [
            (
                "centrifugo_transport_messages_sent",
                "Number of messages sent to client connections over specific transport.",
                &self.ws_sent,
            ),
            (
                "centrifugo_transport_messages_sent_size",
                "Size in bytes of messages sent to client connections over specific transport.",
                &self.ws_sent_bytes,
            ),
        ] {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for &t in &used {
                for (k, n) in KINDS.iter().zip(&v[t]) {
                    let _ = writeln!(o, "{name}{{transport=\"{}\",frame_type=\"{k}\"}} {n}", TRANSPORTS[t]);
                }
            }
        }
        for (name, help, v) in [
            (
                "centrifugo_transport_messages_received",
                "Number of messages received from client connections over specific transport.",
                &self.ws_received,
            ),
            (
                "centrifugo_transport_messages_received_size",
                "Size in bytes of messages received from client connections over specific transport.",
                &self.ws_received_bytes,
            ),
        ] {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for &t in &used {
                let _ = writeln!(o, "{name}{{transport=\"{}\"}} {}", TRANSPORTS[t], v[t]);
            }
        }

        o.push_str(
            "# HELP centrifugo_client_num_reply_errors Number of errors in replies sent to clients.\n\
             # TYPE centrifugo_client_num_reply_errors counter\n",
        );
        self.reply_errors.sort_unstable();
        for ((method, code), n) in &self.reply_errors {
            let _ = writeln!(o, "centrifugo_client_num_reply_errors{{method=\"{method}\",code=\"{code}\"}} {n}");
        }

        self.render_api(&mut o);
        self.render_proxy(&mut o);

        self.loops.sort_by_key(|l| l.worker);
        let per_loop = |o: &mut String, name: &str, help: &str, kind: &str, v: &dyn Fn(&LoopStat) -> String| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for l in &self.loops {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", l.worker, v(l));
            }
        };
        gauge(&mut o, "gyre_gateway_queued_messages", "Messages waiting in gateway queue topics.", self.gateway_queued);
        let _ = write!(
            o,
            "# HELP gyre_gateway_dropped_messages_total Gateway queue messages dropped (full topic or topic limit).\n# TYPE gyre_gateway_dropped_messages_total counter\ngyre_gateway_dropped_messages_total {}\n",
            self.gateway_dropped
        );
        per_loop(
            &mut o,
            "gyre_worker_loop_inbox_batches_total",
            "Message batches from other workers handled by the event loop.",
            "counter",
            &|l| l.inbox_batches.to_string(),
        );
        per_loop(
            &mut o,
            "gyre_worker_loop_inbox_seconds_total",
            "Time the event loop spent handling message batches from other workers.",
            "counter",
            &|l| secs(l.inbox_ns),
        );
        per_loop(
            &mut o,
            "gyre_worker_loop_lag_seconds",
            "Largest delay of the event loop's 100 ms tick since the previous scrape (a busy loop runs it late).",
            "gauge",
            &|l| secs(l.lag_max_ns),
        );
        o
    }

    fn render_api(&self, o: &mut String) {
        let rows = || {
            self.api
                .iter()
                .enumerate()
                .filter(|(_, s)| s.count > 0)
                .map(|(i, s)| (PROTOCOLS[i / METHODS.len()], METHODS[i % METHODS.len()].name(), s))
        };
        o.push_str(
            "# HELP centrifugo_api_command_duration_seconds Server API command duration.\n\
             # TYPE centrifugo_api_command_duration_seconds summary\n",
        );
        for (p, m, s) in rows() {
            let labels = format!("protocol=\"{p}\",method=\"{m}\"");
            let _ = writeln!(o, "centrifugo_api_command_duration_seconds_sum{{{labels}}} {}", secs(s.sum_ns));
            let _ = writeln!(o, "centrifugo_api_command_duration_seconds_count{{{labels}}} {}", s.count);
        }
        o.push_str(
            "# HELP centrifugo_api_command_duration_seconds_histogram Server API command duration histogram.\n\
             # TYPE centrifugo_api_command_duration_seconds_histogram histogram\n",
        );
        for (p, m, s) in rows() {
            let labels = format!("protocol=\"{p}\",method=\"{m}\"");
            let mut cum = 0;
            for (b, n) in BUCKETS.iter().zip(&s.buckets) {
                cum += n;
                let _ = writeln!(
                    o,
                    "centrifugo_api_command_duration_seconds_histogram_bucket{{{labels},le=\"{b}\"}} {cum}"
                );
            }
            let name = "centrifugo_api_command_duration_seconds_histogram";
            let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(o, "{name}_sum{{{labels}}} {}", secs(s.sum_ns));
            let _ = writeln!(o, "{name}_count{{{labels}}} {}", s.count);
        }
        o.push_str(
            "# HELP centrifugo_api_command_errors_total Server API command errors by code.\n\
             # TYPE centrifugo_api_command_errors_total counter\n",
        );
        for (p, m, s) in rows() {
            let mut errors = s.errors.clone();
            errors.sort_unstable();
            for (code, n) in errors {
                let _ = writeln!(
                    o,
                    "centrifugo_api_command_errors_total{{protocol=\"{p}\",method=\"{m}\",error=\"{code}\"}} {n}"
                );
            }
        }
    }
}

fn secs(ns: u64) -> String {
    format!("{}", ns as f64 / 1e9)
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_add_up_and_render() {
        message_sent(Kind::Publication);
        message_received(Kind::Join);
        ws_frames_sent(0, Kind::Publication, 3, 30);
        ws_frames_sent(2, Kind::Publication, 1, 7);
        ws_message_received(2, 5);
        api_command(Protocol::Http, Method::Publish, Duration::from_micros(300), None);
        api_command(Protocol::Grpc, Method::History, Duration::from_millis(2), Some(108));
        client_reply_error("subscribe", 103);
        let mut a = snapshot(0);
        a.num_clients = 2;
        a.users = vec!["u".into()];
        let mut b = snapshot(1);
        b.num_clients = 1;
        b.users = vec!["u".into(), "v".into()];
        a.add(b);
        let text = a.render("0.1.0 OSS", 1);
        for line in [
            "centrifugo_node_num_clients 3",
            "centrifugo_node_num_users 2",
            "centrifugo_node_messages_sent_count{type=\"publication\"} 2",
            "centrifugo_node_messages_received_count{type=\"join\"} 2",
            "centrifugo_transport_messages_sent{transport=\"websocket\",frame_type=\"publication\"} 6",
            "centrifugo_transport_messages_sent_size{transport=\"websocket\",frame_type=\"publication\"} 60",
            "centrifugo_transport_messages_sent{transport=\"sse\",frame_type=\"publication\"} 2",
            "centrifugo_transport_messages_received_size{transport=\"sse\"} 10",
            "centrifugo_transport_messages_received{transport=\"websocket\"} 0",
            "centrifugo_api_command_duration_seconds_count{protocol=\"http\",method=\"publish\"} 2",
            "centrifugo_api_command_duration_seconds_histogram_bucket{protocol=\"http\",method=\"publish\",le=\"0.0005\"} 2",
            "centrifugo_api_command_errors_total{protocol=\"grpc\",method=\"history\",error=\"108\"} 2",
            "centrifugo_client_num_reply_errors{method=\"subscribe\",code=\"103\"} 2",
            "gyre_worker_loop_inbox_batches_total{worker=\"1\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}
