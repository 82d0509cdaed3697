//! `gyre-bench`: the bundled load tool. It drives any Centrifugo-compatible server (Gyre or
//! Centrifugo) through its public protocols only — clients speaking the Centrifuge protocol
//! (JSON or protobuf) over WebSocket or, with `--transport`, over HTTP-streaming, SSE and the
//! unidirectional transports, and the pipelined legacy HTTP API `POST /api` — and runs the very
//! same workloads against redis-server (RESP `SUBSCRIBE`/`PUBLISH`) and nats-server (`SUB`/`PUB`)
//! so the figures can be put side by side.
//!
//! Scenarios:
//! * `fanout`      — N subscribers over C channels, P publishers; delivered/s, latency, loss.
//! * `ingest`      — pipelined publishes over K connections, no subscribers; commands/s.
//! * `ingest --client-publish` — the same, the publishes sent by WebSocket clients (what a
//!   publish proxy sits on).
//! * `connections` — N idle connections; the server's memory per connection.
//! * `connect`     — connections opened K at a time and closed once answered; connects/s,
//!   connect latency, refusals by code.
//! * `map`         — a map channel seeded with K keys, N subscribers loading its state page by
//!   page, then updates to random keys: sync time, keys/s, delivered/s, latency, loss.
//! * `proxy-backend` — not a load: an application backend answering the server's HTTP
//!   proxy calls, for measuring a server with its proxies on.
//! * `report`      — one HTML page (or SVG) from the JSON reports of several runs.
//!
//! Every run can leave its JSON report (`--json`: parameters, machine, per-second series,
//! totals), a CSV of its per-second series (`--csv`) and an HTML page or SVG of charts
//! (`--report`).
//!
//! `--target` names one server or, comma-separated, the nodes of one cluster: subscribers are
//! spread over them, publishers go to the first (or `--publish-target`, or all with
//! `--publish-all`), and every message is still followed from publisher to subscriber.
//!
//! Layout: [`target`] (addresses, connecting, the reachability check), [`payload`] (the
//! timestamped, sequenced message body), [`stats`] (shared counters, histograms, `/proc`
//! sampling, the report), [`ws`] (Centrifuge WebSocket client, bidirectional and
//! unidirectional), [`stream`] (the HTTP streaming clients and `/emulation`), [`body`] (their
//! response bodies: chunks, lines, SSE events, varint-prefixed messages), [`peers`] (Redis and
//! NATS subscribers), [`publish`] (pipelined publishers for all three), [`run`] (threads and
//! phases of `fanout` / `ingest`), [`procs`] (`fanout --procs`: subscriber processes),
//! [`conns`] (`connections`, with child processes), [`connect`] (`connect`),
//! [`client_publish`] (`ingest --client-publish`), [`map`], [`map_client`] and [`map_sync`]
//! (`map`), [`backend`] (`proxy-backend`),
//! [`series`] (the per-second rows), [`summary`] (the table and the JSON report), [`output`]
//! (machine, files), [`report`] and [`svg`] (the charts).
//!
//! Exit codes: 0 done, 1 the run failed (rejected credentials, protocol errors), 2 the target
//! cannot be reached or the options are invalid.

mod auth;
mod backend;
mod body;
mod client_publish;
mod connect;
mod conns;
mod map;
mod map_client;
mod map_sync;
mod output;
mod payload;
mod peers;
mod procs;
mod progress;
mod publish;
mod report;
mod run;
mod series;
mod stats;
mod stream;
mod summary;
mod svg;
mod target;
mod ws;

use auth::ClientAuth;
use clap::{Args, Parser, Subcommand, ValueEnum};
use output::Outputs;

/// How several nodes share the load (in the help of the tool, `fanout` and `ingest`).
macro_rules! nodes_help {
    () => {
        "Several nodes (one cluster, e.g. Gyre nodes sharing a Redis engine): list them in --target,
comma-separated. Subscribers are spread over the nodes: the j-th subscriber of channel c
connects to node (j + c) % N, so every channel has subscribers on every node and the nodes
hold equal shares. fanout publishers connect to the first node, or to --publish-target's
nodes, or with --publish-all to every --target node in turn (publisher p to node p % N);
ingest connections take every --target node (or --publish-target's) in turn. Each message is
still followed end to end, from its publisher to every subscriber of its channel on whichever
node, so a message a node did not pass on counts as lost."
    };
}

/// Load tool for Centrifugo-compatible servers (Gyre, Centrifugo), with redis-server and
/// nats-server as peers running the same workloads.
#[derive(Parser, Debug)]
#[command(name = "gyre-bench", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// WebSocket (or Redis / NATS) subscribers over channels, publishers through the API:
    /// published/s, delivered/s, publish→deliver latency, lost and duplicated messages.
    #[command(after_help = nodes_help!())]
    Fanout(Opts),
    /// Pipelined publish commands over K connections, no subscribers: commands/s, and the round
    /// trip of a command — from the write of its batch to the arrival of the batch's reply
    /// (Redis: of its own reply) — as latency percentiles.
    #[command(after_help = nodes_help!())]
    Ingest(Opts),
    /// N idle connections (connect command, optionally a subscription): server memory per
    /// connection (needs --server-pid). Spreads source addresses over 127.0.0.1..N and forks
    /// child processes past the open-file limit.
    Connections(Opts),
    /// Connections opened --concurrency at a time until -n were tried, each closed once its
    /// connect (and --subscribe) is answered, or kept with --keep: connects/s, connect latency
    /// (TCP connect to the last reply), failures by error and close code. Without --token or
    /// --hmac-secret the clients send no token (for a server with a connect proxy).
    Connect(connect::ConnectOpts),
    /// A map channel (namespace with "subscription_type": "map") seeded with --keys keys
    /// through the API; -n WebSocket subscribers load its state page by page (--page-size),
    /// --concurrency at a time, and go live; then publishers set random keys for --duration:
    /// state sync time, keys/s, updates delivered/s, publish→deliver latency, lost and
    /// duplicated updates, subscribers that missed keys. The subscribers speak JSON, or
    /// protobuf with --format protobuf.
    Map(map::MapOpts),
    /// An application backend for the server's HTTP proxies (connect, refresh, subscribe,
    /// publish, sub_refresh, rpc), answering every call as an accepting backend would, on any
    /// path: point client.proxy.connect.endpoint, channel.proxy.publish.endpoint, ... at it.
    /// Counts the calls by kind and prints them when ended (SIGINT / SIGTERM).
    ProxyBackend(backend::BackendOpts),
    /// One self-contained HTML page (or, for FILE.svg, one SVG) from the JSON reports of
    /// several runs (`--json FILE`): runs of the same workload share their charts, so the
    /// servers compared are one picture.
    Report(ReportOpts),
}

#[derive(Args, Debug)]
pub struct ReportOpts {
    /// The page to write: FILE.html, or FILE.svg for the charts alone.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: String,
    /// JSON reports written by `--json FILE` (or the stdout of `--json`). A run's label is its
    /// `--label`, or else the file name.
    #[arg(value_name = "RUN.json", required = true)]
    pub files: Vec<String>,
}

/// Wire format of the WebSocket clients.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFormat {
    Json,
    Protobuf,
}

impl WireFormat {
    /// The format's name in tables and JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            WireFormat::Json => "json",
            WireFormat::Protobuf => "protobuf",
        }
    }
}

const EXAMPLES: &str = concat!(
    "Examples:
  gyre-bench fanout --target http://127.0.0.1:8000 --api-key KEY --hmac-secret SECRET -n 1000 -c 1 -d 5
  gyre-bench fanout --target redis://127.0.0.1:6379 -n 1000 -c 1 -d 5 --rate 100
  gyre-bench fanout --target http://127.0.0.1:8000 --api-key KEY --hmac-secret SECRET -n 1000 --transport uni_sse
  gyre-bench ingest --target http://127.0.0.1:8000 --api-key KEY --connections 8 --size 100
  gyre-bench ingest --target http://127.0.0.1:8000 --client-publish --hmac-secret SECRET -k 16 --batch 10
  gyre-bench ingest --target http://127.0.0.1:8000 --api-key KEY --api-batch --batch 100
  gyre-bench connections --target http://127.0.0.1:8000 --token JWT -n 50000 --server-pid PID
  gyre-bench proxy-backend --listen 127.0.0.1:3000 --threads 1
  gyre-bench connect --target http://127.0.0.1:8000 -n 20000 --concurrency 64 --server-pid PID
  gyre-bench map --target http://127.0.0.1:8000 --api-key KEY --hmac-secret SECRET --channel map:bench \\
      --keys 10000 -n 1000 --page-size 1000 -d 10
  gyre-bench fanout --target http://127.0.0.1:8000,http://127.0.0.1:8001 --api-key KEY --hmac-secret SECRET \\
      -n 1000 -c 10 -d 5 --server-pid PID_A,PID_B,PID_REDIS
  gyre-bench fanout --target redis://127.0.0.1:6379 -n 1000 --label redis --json redis.json --csv redis.csv
  gyre-bench report --out compare.html gyre.json redis.json nats.json

",
    nodes_help!(),
    "

Exit codes: 0 done, 1 the run failed, 2 target unreachable or bad options."
);

/// How the subscribers of a Centrifugo-compatible server connect.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket (--ws-path): connect and subscribe commands in one frame.
    #[value(name = "websocket")]
    Websocket,
    /// HTTP-streaming: the connect command POSTed, replies in a chunked response (JSON lines,
    /// or varint-prefixed protobuf with --format protobuf); subscribe through /emulation.
    #[value(name = "http_stream")]
    HttpStream,
    /// Server-sent events: the connect command in `cf_connect`, replies as `data:` lines;
    /// subscribe through /emulation. JSON only.
    #[value(name = "sse")]
    Sse,
    /// Unidirectional WebSocket: the connect request in `cf_connect`, one bare push per frame.
    #[value(name = "uni_websocket")]
    UniWebsocket,
    /// Unidirectional SSE: the connect request in `cf_connect`, bare pushes as `data:` lines.
    #[value(name = "uni_sse")]
    UniSse,
    /// Unidirectional HTTP stream: the connect request POSTed, one bare push per line.
    #[value(name = "uni_http_stream")]
    UniHttpStream,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::HttpStream => "http_stream",
            Transport::Sse => "sse",
            Transport::UniWebsocket => "uni_websocket",
            Transport::UniSse => "uni_sse",
            Transport::UniHttpStream => "uni_http_stream",
        }
    }

    /// Centrifugo's default endpoint of the transport.
    pub fn default_path(self) -> &'static str {
        match self {
            Transport::Websocket => "/connection/websocket",
            Transport::HttpStream => "/connection/http_stream",
            Transport::Sse => "/connection/sse",
            Transport::UniWebsocket => "/connection/uni_websocket",
            Transport::UniSse => "/connection/uni_sse",
            Transport::UniHttpStream => "/connection/uni_http_stream",
        }
    }

    /// Bare pushes, no commands: subscriptions come from the connection token.
    pub fn is_uni(self) -> bool {
        matches!(self, Transport::UniWebsocket | Transport::UniSse | Transport::UniHttpStream)
    }
}

/// How the event loops wait for sockets.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// epoll and one read per ready socket: on loopback the cheaper of the two per received
    /// message (about a fifth less of the tool's CPU per delivery than io_uring, measured).
    Epoll,
    /// io_uring (Linux 5.6+).
    Uring,
}

/// Every option; each scenario reads the ones it needs.
#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Server: http://HOST:PORT (Centrifugo-compatible), redis://HOST:PORT, nats://HOST:PORT.
    /// Several nodes of one cluster: comma-separated, all of one kind (see below the options).
    #[arg(long, value_name = "URL[,URL...]", default_value = "http://127.0.0.1:8000")]
    pub target: String,
    /// Nodes the publishers connect to, comma-separated; publisher p takes entry p % count.
    /// Default: fanout the first --target node, ingest every --target node.
    #[arg(long, value_name = "URL[,URL...]", conflicts_with = "publish_all")]
    pub publish_target: Option<String>,
    /// fanout: publishers take every --target node in turn instead of the first only.
    #[arg(long)]
    pub publish_all: bool,
    /// WebSocket endpoint path.
    #[arg(long, default_value = "/connection/websocket")]
    pub ws_path: String,
    /// How subscribers (and `connections` clients) reach a Centrifugo-compatible server. The
    /// bidirectional emulation transports (http_stream, sse) subscribe through --emulation-path;
    /// the unidirectional ones through the connection token's `channels` claim, so they need
    /// --hmac-secret (tokens are minted naming the subscriber's channel) or a --token whose
    /// claim names it. Publishers always use the HTTP API.
    #[arg(long, value_enum, default_value = "websocket")]
    pub transport: Transport,
    /// Endpoint of a --transport other than websocket (default: Centrifugo's, e.g.
    /// /connection/http_stream).
    #[arg(long, value_name = "PATH")]
    pub transport_path: Option<String>,
    /// Where http_stream and sse clients send their commands after connect.
    #[arg(long, default_value = "/emulation")]
    pub emulation_path: String,
    /// Legacy HTTP API path (newline-delimited commands in one POST).
    #[arg(long, default_value = "/api")]
    pub api_path: String,
    /// HTTP API key (sent as `X-API-Key` and `Authorization: apikey`); none when empty.
    #[arg(long, default_value = "")]
    pub api_key: String,
    /// How clients authenticate.
    #[command(flatten)]
    pub auth: ClientAuth,
    /// Client protocol format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: WireFormat,
    /// Subscribers (fanout) or connections (connections). Default 100 / 1000.
    #[arg(long, short = 'n')]
    pub subscribers: Option<usize>,
    /// Channels; subscriber i listens to channel i % C, publishers cycle over all.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub channels: usize,
    /// Channel name prefix (channels are `<prefix>-<k>`).
    #[arg(long, default_value = "bench")]
    pub channel_prefix: String,
    /// Publisher connections (fanout).
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: usize,
    /// Publisher connections (ingest; same as --publishers).
    #[arg(long, short = 'k')]
    pub connections: Option<usize>,
    /// Total publish rate in messages/s over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Payload size in bytes (at least the ~30 bytes the timestamp and sequence need).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Publish commands per request / pipelined batch. Default 16 (fanout), 1000 (ingest), 10
    /// (ingest --client-publish: one WebSocket message, within the server's size limit).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Batches in flight per publisher connection. Default 2 (fanout), 4 (ingest).
    #[arg(long)]
    pub inflight: Option<usize>,
    /// Measured run time in seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up in seconds: publishing runs, nothing is counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Longest wait, in seconds, for in-flight messages after publishing stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Longest time, in seconds, to open all connections.
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// Connections being opened at once (per process).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Event-loop threads of this process.
    #[arg(long, short = 't', default_value_t = 1)]
    pub threads: usize,
    /// How the event loops wait for sockets.
    #[arg(long, value_enum, default_value = "epoll")]
    pub driver: Driver,
    /// `fanout` / `ingest`: event loops that never sleep. Until the run is over each thread
    /// polls its sockets without waiting (its core stays busy) instead of sleeping until one
    /// is ready. On loopback the server's CPU runs the receiving side of every send, so a
    /// send to a sleeping reader costs the server the reader's wake-up; with --spin it no
    /// longer does, as with clients on other machines. Timers may fire up to 1 ms late: for
    /// measuring a server's own CPU cost.
    #[arg(long)]
    pub spin: bool,
    /// Reconnect (and resubscribe) a subscriber the server disconnected.
    #[arg(long)]
    pub reconnect: bool,
    /// What the run writes and shows.
    #[command(flatten)]
    pub out: Outputs,
    /// Spread client source addresses over 127.0.0.1..127.0.0.N (loopback targets only).
    /// Default 9 for `connections`, 1 otherwise.
    #[arg(long)]
    pub source_ips: Option<u8>,
    /// Processes holding the clients. `fanout`: the subscribers in N child processes (each
    /// with --threads event loops), the publishers in this one, for when one process cannot
    /// receive more (default 1). `connections`: default as many as the open-file limit needs.
    #[arg(long)]
    pub procs: Option<usize>,
    /// `connections`: also subscribe each connection to channel i % C.
    #[arg(long)]
    pub subscribe: bool,
    /// `ingest`: publish as WebSocket clients (--ws-path) with the client protocol's publish
    /// command instead of through the HTTP API; clients connect with --token, --hmac-secret,
    /// or with neither (for a connect proxy). What a publish proxy sits on. Batches are one
    /// frame of --batch commands; each reply is timed on its own. --format protobuf applies.
    #[arg(long)]
    pub client_publish: bool,
    /// Publishers send each batch as one new-style `POST <api-path>/batch` request,
    /// `{"commands":[{"publish":{...}},...]}` (what `cent`'s `batch()` sends), instead of a
    /// legacy body of newline-delimited commands; its replies are counted the same way.
    #[arg(long)]
    pub api_batch: bool,
    /// Internal: this process is a `connections` child holding clients OFFSET..OFFSET+COUNT.
    #[arg(long, hide = true, value_name = "OFFSET:COUNT")]
    pub child_range: Option<String>,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub msg: String,
}

impl Fail {
    /// The target is unreachable or the options are unusable: exit code 2.
    pub fn setup(msg: impl Into<String>) -> Fail {
        Fail { code: 2, msg: msg.into() }
    }

    /// The run itself failed: exit code 1.
    pub fn run(msg: impl Into<String>) -> Fail {
        Fail { code: 1, msg: msg.into() }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Fanout(o) => run::main(run::Mode::Fanout, o),
        Scenario::Ingest(o) => run::main(run::Mode::Ingest, o),
        Scenario::Connections(o) => conns::main(o),
        Scenario::Connect(o) => connect::main(o),
        Scenario::Map(o) => map::main(o),
        Scenario::ProxyBackend(o) => backend::main(o),
        Scenario::Report(r) => report::main(&r.out, &r.files),
    };
    // Worker threads may still be parked in reads on a dead server: exit without joining them.
    match result {
        Ok(()) => std::process::exit(0),
        Err(f) => {
            eprintln!("gyre-bench: error: {}", f.msg);
            std::process::exit(f.code);
        }
    }
}
