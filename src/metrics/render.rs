//! The Prometheus text exposition format (version 0.0.4) of a node's [`Snapshot`]: every
//! family's `# HELP` and `# TYPE` lines, always; its samples once they have something to
//! say (a counter that never moved has no series yet, as with Centrifugo's labelled
//! families), except the node gauges and the WebSocket transport families, always present.

use std::fmt::Write;

use super::*;

/// Writes a family's `# HELP` and `# TYPE` lines.
fn family(o: &mut String, name: &str, help: &str, kind: &str) {
    let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// The `_bucket`, `_sum` and `_count` series of one histogram with labels `l` (without
/// braces; may be empty).
fn histogram<const N: usize>(o: &mut String, name: &str, l: &str, bounds: &[f64; N], h: &Hist<N>) {
    let sep = if l.is_empty() { "" } else { "," };
    let mut cum = 0;
    for (b, n) in bounds.iter().zip(&h.buckets) {
        cum += n;
        let _ = writeln!(o, "{name}_bucket{{{l}{sep}le=\"{b}\"}} {cum}");
    }
    let _ = writeln!(o, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = if l.is_empty() { String::new() } else { format!("{{{l}}}") };
    let _ = writeln!(o, "{name}_sum{braces} {}", secs(h.sum_ns));
    let _ = writeln!(o, "{name}_count{braces} {}", h.count);
}

impl Snapshot {
    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(mut self, version: &str, num_nodes: u64) -> String {
        let mut o = String::with_capacity(16384);
        let mut users = std::mem::take(&mut self.users);
        users.sort_unstable();
        users.dedup();
        let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
            family(o, name, help, "gauge");
            let _ = writeln!(o, "{name} {v}");
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
        family(&mut o, "centrifugo_node_build", "Node build info.", "gauge");
        let _ = writeln!(o, "centrifugo_node_build{{version=\"{}\"}} 1", escape(version));

        for (name, help, v) in [
            ("centrifugo_node_messages_sent_count", "Number of messages sent by node to broker.", &self.sent),
            ("centrifugo_node_messages_received_count", "Number of messages received from broker.", &self.received),
        ] {
            family(&mut o, name, help, "counter");
            for (k, n) in KINDS.iter().zip(v) {
                let _ = writeln!(o, "{name}{{type=\"{k}\"}} {n}");
            }
        }
        family(
            &mut o,
            "centrifugo_node_client_connection_limit",
            "Number of refused requests due to node client connection limit.",
            "counter",
        );
        let _ = writeln!(o, "centrifugo_node_client_connection_limit {}", self.connection_limit);

        self.render_transport(&mut o);
        self.render_client(&mut o);
        self.render_api(&mut o);
        self.render_proxy(&mut o);
        if let Some(p) = &self.process {
            p.render(&mut o);
        }

        family(&mut o, "gyre_gateway_queued_messages", "Messages waiting in gateway queue topics.", "gauge");
        let _ = writeln!(o, "gyre_gateway_queued_messages {}", self.gateway_queued);
        family(
            &mut o,
            "gyre_gateway_dropped_messages_total",
            "Gateway queue messages dropped (full topic or topic limit).",
            "counter",
        );
        let _ = writeln!(o, "gyre_gateway_dropped_messages_total {}", self.gateway_dropped);
        self.loops.sort_by_key(|l| l.worker);
        let per_loop = |o: &mut String, name: &str, help: &str, kind: &str, v: &dyn Fn(&LoopStat) -> String| {
            family(o, name, help, kind);
            for l in &self.loops {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", l.worker, v(l));
            }
        };
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

    /// `centrifugo_transport_*`: messages and bytes to and from clients by transport and
    /// frame type, and the close frames the server sent.
    fn render_transport(&mut self, o: &mut String) {
        // WebSocket's publication, join and leave pushes always; anything else once counted.
        let always = |t: usize, f: usize| {
            t == 0 && [Frame::PushPublication, Frame::PushJoin, Frame::PushLeave].iter().any(|&x| x as usize == f)
        };
        for (name, help, v, counts) in [
            (
                "centrifugo_transport_messages_sent",
                "Number of messages sent to client connections over specific transport.",
                &self.frames_sent,
                &self.frames_sent,
            ),
            (
                "centrifugo_transport_messages_sent_size",
                "Size in bytes of messages sent to client connections over specific transport.",
                &self.frames_sent_bytes,
                &self.frames_sent,
            ),
            (
                "centrifugo_transport_messages_received",
                "Number of messages received from client connections over specific transport.",
                &self.frames_received,
                &self.frames_received,
            ),
            (
                "centrifugo_transport_messages_received_size",
                "Size in bytes of messages received from client connections over specific transport.",
                &self.frames_received_bytes,
                &self.frames_received,
            ),
        ] {
            family(o, name, help, "counter");
            for (t, transport) in TRANSPORTS.iter().enumerate() {
                for (f, frame) in FRAMES.iter().enumerate() {
                    if counts[t][f] > 0 || (always(t, f) && name.contains("_sent")) {
                        let _ = writeln!(o, "{name}{{transport=\"{transport}\",frame_type=\"{frame}\"}} {}", v[t][f]);
                    }
                }
            }
        }
        family(
            o,
            "centrifugo_transport_outgoing_close_count",
            "Number of close frames sent to clients, by transport and code.",
            "counter",
        );
        self.outgoing_closes.sort_unstable();
        for ((t, code), n) in &self.outgoing_closes {
            let _ = writeln!(
                o,
                "centrifugo_transport_outgoing_close_count{{transport=\"{}\",code=\"{code}\"}} {n}",
                TRANSPORTS[*t as usize]
            );
        }
    }

    /// `centrifugo_client_*`: commands, reply errors, server disconnects and unsubscribes,
    /// connections and subscriptions, recovery, ping/pong.
    fn render_client(&mut self, o: &mut String) {
        let name = "centrifugo_client_command_duration_seconds";
        family(o, name, "Client command duration summary.", "summary");
        let commands = || self.commands.iter().enumerate().filter(|(_, h)| h.count > 0);
        for (f, h) in commands() {
            let _ = writeln!(o, "{name}_sum{{method=\"{}\"}} {}", FRAMES[f], secs(h.sum_ns));
            let _ = writeln!(o, "{name}_count{{method=\"{}\"}} {}", FRAMES[f], h.count);
        }
        let name = "centrifugo_client_command_duration_seconds_histogram";
        family(o, name, "Client command duration histogram.", "histogram");
        for (f, h) in commands() {
            histogram(o, name, &format!("method=\"{}\"", FRAMES[f]), &CLIENT_BUCKETS, h);
        }

        family(o, "centrifugo_client_num_reply_errors", "Number of errors in replies sent to clients.", "counter");
        self.reply_errors.sort_unstable();
        for ((method, code), n) in &self.reply_errors {
            let _ = writeln!(o, "centrifugo_client_num_reply_errors{{method=\"{method}\",code=\"{code}\"}} {n}");
        }
        for (name, help, v) in [
            (
                "centrifugo_client_num_server_disconnects",
                "Number of server initiated disconnects.",
                &mut self.disconnects,
            ),
            (
                "centrifugo_client_num_server_unsubscribes",
                "Number of server initiated unsubscribes.",
                &mut self.unsubscribes,
            ),
        ] {
            family(o, name, help, "counter");
            v.sort_unstable();
            for (code, n) in v.iter() {
                let _ = writeln!(o, "{name}{{code=\"{code}\"}} {n}");
            }
        }

        let conn_labels = |t: usize, c: usize| {
            format!(
                "transport=\"{}\",client_name=\"{}\",client_version=\"{}\"",
                TRANSPORTS[t],
                CLIENT_NAMES[c / 2],
                CLIENT_VERSIONS[c % 2]
            )
        };
        family(o, "centrifugo_client_connections_accepted", "Count of accepted transports.", "counter");
        for (t, per) in self.conns_accepted.iter().enumerate() {
            for (c, n) in per.iter().enumerate().filter(|(_, n)| **n > 0) {
                let _ = writeln!(o, "centrifugo_client_connections_accepted{{{}}} {n}", conn_labels(t, c));
            }
        }
        family(o, "centrifugo_client_connections_inflight", "Number of inflight client connections.", "gauge");
        for (t, per) in self.conns_accepted.iter().enumerate() {
            for (c, _) in per.iter().enumerate().filter(|(_, n)| **n > 0) {
                let n = self.conns_inflight[t][c].max(0);
                let _ = writeln!(o, "centrifugo_client_connections_inflight{{{}}} {n}", conn_labels(t, c));
            }
        }
        family(o, "centrifugo_client_subscriptions_accepted", "Count of accepted client subscriptions.", "counter");
        for (c, n) in self.subs_accepted.iter().enumerate().filter(|(_, n)| **n > 0) {
            let _ = writeln!(o, "centrifugo_client_subscriptions_accepted{{client_name=\"{}\"}} {n}", CLIENT_NAMES[c]);
        }
        family(o, "centrifugo_client_subscriptions_inflight", "Number of inflight client subscriptions.", "gauge");
        for (c, _) in self.subs_accepted.iter().enumerate().filter(|(_, n)| **n > 0) {
            let n = self.subs_inflight[c].max(0);
            let _ = writeln!(o, "centrifugo_client_subscriptions_inflight{{client_name=\"{}\"}} {n}", CLIENT_NAMES[c]);
        }

        family(o, "centrifugo_client_recover", "Count of recover operations with success/fail resolution.", "counter");
        let yes_no = ["no", "yes"];
        for (r, per) in self.recover.iter().enumerate() {
            for (p, n) in per.iter().enumerate().filter(|(_, n)| **n > 0) {
                let _ = writeln!(
                    o,
                    "centrifugo_client_recover{{recovered=\"{}\",has_recovered_publications=\"{}\"}} {n}",
                    yes_no[r], yes_no[p]
                );
            }
        }

        let name = "centrifugo_client_ping_pong_duration_seconds";
        family(o, name, "Ping/Pong duration in seconds", "histogram");
        for (t, h) in self.ping_pong.iter().enumerate().filter(|(_, h)| h.count > 0) {
            histogram(o, name, &format!("transport=\"{}\"", TRANSPORTS[t]), &CLIENT_BUCKETS, h);
        }
    }

    /// `centrifugo_api_*`: server API command durations (summary sums and a histogram) and
    /// errors by code.
    fn render_api(&self, o: &mut String) {
        let rows = || {
            self.api
                .iter()
                .enumerate()
                .filter(|(_, s)| s.count > 0)
                .map(|(i, s)| (PROTOCOLS[i / METHODS.len()], METHODS[i % METHODS.len()].name(), s))
        };
        let name = "centrifugo_api_command_duration_seconds";
        family(o, name, "Server API command duration.", "summary");
        for (p, m, s) in rows() {
            let labels = format!("protocol=\"{p}\",method=\"{m}\"");
            let _ = writeln!(o, "{name}_sum{{{labels}}} {}", secs(s.sum_ns));
            let _ = writeln!(o, "{name}_count{{{labels}}} {}", s.count);
        }
        let name = "centrifugo_api_command_duration_seconds_histogram";
        family(o, name, "Server API command duration histogram.", "histogram");
        for (p, m, s) in rows() {
            let h = Hist { count: s.count, sum_ns: s.sum_ns, buckets: s.buckets };
            histogram(o, name, &format!("protocol=\"{p}\",method=\"{m}\""), &BUCKETS, &h);
        }
        family(o, "centrifugo_api_command_errors_total", "Server API command errors by code.", "counter");
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

    /// `centrifugo_proxy_*`: durations (summary sums and a histogram), call errors, calls in
    /// flight, by protocol, type and proxy name.
    fn render_proxy(&mut self, o: &mut String) {
        self.proxy.sort_by(|a, b| (a.protocol, a.kind, &*a.name).cmp(&(b.protocol, b.kind, &*b.name)));
        let labels = |s: &ProxyStat| format!("protocol=\"{}\",type=\"{}\",name=\"{}\"", s.protocol, s.kind, s.name);
        let name = "centrifugo_proxy_duration_seconds";
        family(o, name, "Duration of proxy calls.", "summary");
        for s in &self.proxy {
            let l = labels(s);
            let _ = writeln!(o, "{name}_sum{{{l}}} {}", secs(s.sum_ns));
            let _ = writeln!(o, "{name}_count{{{l}}} {}", s.count);
        }
        let name = "centrifugo_proxy_duration_seconds_histogram";
        family(o, name, "Duration of proxy calls.", "histogram");
        for s in &self.proxy {
            let h = Hist { count: s.count, sum_ns: s.sum_ns, buckets: s.buckets };
            histogram(o, name, &labels(s), &PROXY_BUCKETS, &h);
        }
        family(o, "centrifugo_proxy_errors", "Proxy calls that got no answer.", "counter");
        for s in &self.proxy {
            let _ = writeln!(o, "centrifugo_proxy_errors{{{}}} {}", labels(s), s.errors);
        }
        family(o, "centrifugo_proxy_inflight_requests", "Proxy calls in progress.", "gauge");
        for s in &self.proxy {
            let _ = writeln!(o, "centrifugo_proxy_inflight_requests{{{}}} {}", labels(s), s.inflight.max(0));
        }
    }
}

/// Nanoseconds as seconds, the way the text format writes a float.
pub(super) fn secs(ns: u64) -> String {
    format!("{}", ns as f64 / 1e9)
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
