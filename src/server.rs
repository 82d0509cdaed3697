//! The composition root: binds the listeners, starts the worker threads and the side
//! services, wires each worker's engine and features together, and stops them all.
//!
//! [`run`] binds one SO_REUSEPORT listener per worker (so bind errors surface before anything
//! starts), then starts W worker threads, each running its own monoio runtime (io_uring when
//! the kernel allows it, epoll otherwise) with: an accept loop, the inbox loop, the outbox
//! flusher, the timer task and a sweeper of expired channel state. Threads are spawned here
//! (workers) and in `crate::grpc` (the gRPC servers' threads); [`run`]'s thread waits for the
//! signals.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::cluster;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::Error;
use crate::runtime::inbox;
use crate::runtime::worker::{Msg, NodeShared, Worker};

/// Which I/O driver the workers run on for a `driver` option value.
pub fn driver_name(option: &str) -> &'static str {
    match option {
        "epoll" => "epoll",
        "io_uring" => "io_uring",
        _ if monoio::utils::detect_uring() => "io_uring",
        _ => "epoll",
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<StdListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Binds one listener per worker on the configured address. With port 0 the first bind
/// picks the port and the others share it.
pub fn bind_listeners(cfg: &Config, n: usize) -> Result<Vec<StdListener>, Error> {
    bind_port(cfg, cfg.http_server.port, n)
}

/// One listener per worker on `port` of the configured address.
fn bind_port(cfg: &Config, port: u16, n: usize) -> Result<Vec<StdListener>, Error> {
    bind_on(&cfg.http_server.address, "http_server.address", port, n)
}

/// One listener per worker on `host:port` ("" = all interfaces); `option` names the host's option.
fn bind_on(host: &str, option: &str, port: u16, n: usize) -> Result<Vec<StdListener>, Error> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let ip: std::net::IpAddr = host
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (host, 0).to_socket_addrs().ok().and_then(|mut a| a.next()).map(|a| a.ip()).ok_or(())
        })
        .map_err(|_| Error::config(format!("{option}: cannot resolve {host:?}")))?;
    let mut addr = SocketAddr::new(ip, port);
    if addr.port() != 0 {
        // Our listeners share the port through SO_REUSEPORT, which would also let them join
        // another process already listening there. A plain bind first refuses that.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe
            .bind(&addr.into())
            .map_err(|e| Error::new(crate::error::ErrorKind::Io, format!("cannot listen on {addr}: {e}")))?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let l =
            bind(addr).map_err(|e| Error::new(crate::error::ErrorKind::Io, format!("cannot listen on {addr}: {e}")))?;
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Runs the server until SIGINT/SIGTERM. Blocks the calling thread, which must be the
/// process's only thread so far: the signals are blocked here (every thread started later
/// inherits that) and taken with `sigwait`. On SIGHUP, as Centrifugo, the configuration is
/// read again (`on_sighup`: the command line loads it and says which of its changes wait for
/// a restart) and its channel options and token settings are put in effect
/// ([`Server::reload`]); a configuration that does not load changes nothing.
pub fn run(cfg: Config, mut on_sighup: impl FnMut() -> Option<Config>) -> Result<(), Error> {
    let signals = Signals::block()?;
    let server = start(cfg)?;
    loop {
        let sig = signals.wait();
        tracing::info!("signal received: {}", signal_name(sig));
        if sig != libc::SIGHUP {
            break;
        }
        tracing::info!("reloading configuration");
        if let Some(new) = on_sighup() {
            match server.reload(&new) {
                Ok(()) => tracing::info!("configuration successfully reloaded (channel options and token settings)"),
                Err(e) => tracing::error!("error reloading: {e}"),
            }
        }
    }
    tracing::info!("shutting down");
    server.stop();
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP, blocked in the calling thread and awaited with `sigwait`.
struct Signals(libc::sigset_t);

impl Signals {
    fn block() -> Result<Signals, Error> {
        // SAFETY: the set is initialised by sigemptyset before use; the calls only read it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                let e = std::io::Error::from_raw_os_error(rc);
                return Err(Error::new(crate::error::ErrorKind::Io, format!("cannot block signals: {e}")));
            }
            Ok(Signals(set))
        }
    }

    /// The next of the signals.
    fn wait(&self) -> libc::c_int {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: a valid set and out pointer.
            if unsafe { libc::sigwait(&self.0, &mut sig) } == 0 {
                return sig;
            }
        }
    }
}

fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// A started server: its address and the handles to stop it.
pub struct Server {
    pub addr: SocketAddr,
    /// The internal listener's address (`http_server.internal_port`).
    pub internal_addr: Option<SocketAddr>,
    /// How long stopping may wait for in-flight requests (`shutdown.timeout`).
    grace: Duration,
    node: Arc<NodeShared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The gRPC server API (`grpc_api.enabled`).
    pub grpc: Option<crate::grpc::GrpcServer>,
    /// The unidirectional gRPC stream (`uni_grpc.enabled`).
    pub uni_grpc: Option<crate::grpc::GrpcServer>,
    /// The configuration every worker reads (its reloadable parts replaced by `reload`).
    cfg: Arc<Config>,
}

impl Server {
    /// Puts the channel options and token settings of `new` (a configuration loaded and
    /// validated again) in effect on every worker. Refused when they turn on a channel proxy
    /// the node was not started with (proxies are built at start-up).
    pub fn reload(&self, new: &Config) -> Result<(), String> {
        let have = crate::proxy::channel_proxies(&self.cfg.channel);
        let missing: Vec<String> = crate::proxy::channel_proxies(&new.channel)
            .difference(&have)
            .map(|(kind, name)| format!("{kind} proxy {name:?}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the new channel options use proxies this node did not start with ({}): restart to apply them",
                missing.join(", ")
            ));
        }
        self.cfg.reload_from(new);
        Ok(())
    }

    /// Asks every worker to stop and waits (bounded) for them.
    pub fn stop(mut self) {
        // Streams end when the workers close their sessions (3001): no new ones meanwhile.
        let mut uni_grpc = self.uni_grpc.take();
        if let Some(g) = &mut uni_grpc {
            g.stop_accepting();
        }
        if let Some(g) = self.grpc.take() {
            g.stop(self.grace);
        }
        for m in &self.node.mailboxes {
            m.send(vec![Msg::Shutdown]);
        }
        let deadline = Instant::now() + self.grace + Duration::from_secs(2);
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if let Some(g) = uni_grpc {
            // Long enough to pass the sessions' last pushes on.
            g.stop(Duration::from_secs(1));
        }
    }
}

/// Binds and starts the workers; returns once they are accepting.
pub fn start(cfg: Config) -> Result<Server, Error> {
    exit_on_worker_panic();
    let n = cfg.worker_count();
    // Every proxy the config turns on must resolve before anything is bound.
    let proxies = crate::proxy::Proxies::build(&cfg).map_err(Error::config)?;
    for p in proxies.all() {
        let endpoint = p.conf.endpoint.as_str();
        tracing::info!(kind = p.kind.name(), name = %p.name, endpoint, protocol = p.protocol(), "proxy enabled");
    }
    let listeners = bind_listeners(&cfg, n)?;
    let addr = listeners[0].local_addr()?;
    // The internal endpoints' own listeners (`http_server.internal_port`).
    let mut internal_listeners: Vec<Option<StdListener>> = match cfg.http_server.internal() {
        Some(port) => {
            let hs = &cfg.http_server;
            let (host, option) = if hs.internal_address.is_empty() {
                (hs.address.as_str(), "http_server.address")
            } else {
                (hs.internal_address.as_str(), "http_server.internal_address")
            };
            bind_on(host, option, port, n)?.into_iter().map(Some).collect()
        }
        None => (0..n).map(|_| None).collect(),
    };
    let internal_addr = internal_listeners[0].as_ref().map(|l| l.local_addr()).transpose()?;
    // The gateway API's own port serves the same routes.
    let g = &cfg.gateway;
    let mut api_listeners: Vec<Option<StdListener>> = if g.is_on() && g.api_port != 0 && g.api_port != addr.port() {
        bind_port(&cfg, g.api_port, n)?.into_iter().map(Some).collect()
    } else {
        (0..n).map(|_| None).collect()
    };
    let tls = ListenerTls::new(&cfg)?;
    let cfg = Arc::new(cfg);
    let mut mailboxes = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for _ in 0..n {
        let (m, i) = inbox::inbox();
        mailboxes.push(m);
        inboxes.push(i);
    }
    let host = hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into());
    let uid = uuid::Uuid::new_v4().to_string();
    let node = Arc::new(NodeShared {
        uid,
        name: if cfg.node.name.is_empty() { format!("{host}_{}", addr.port()) } else { cfg.node.name.clone() },
        version: format!("{} OSS", env!("CARGO_PKG_VERSION")),
        started: Instant::now(),
        mailboxes,
        connections: Default::default(),
        topics: Default::default(),
        drained: Default::default(),
        quiet: Default::default(),
        node_number: std::sync::atomic::AtomicU64::new(crate::engine::redis::node_number::NONE),
    });
    let driver = driver_name(&cfg.driver);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers = n,
        driver,
        engine = cfg.engine.kind.as_str(),
        broker = if cfg.broker.nats() { "nats" } else { "engine" },
        address = %addr,
        "Gyre started"
    );
    let external = crate::http::Endpoints::external(&cfg);
    let scheme = |tls: &Option<Arc<rustls::ServerConfig>>| if tls.is_some() { "https" } else { "http" };
    tracing::info!("serving {} endpoints on {}://{addr}", external.describe(&cfg), scheme(&tls.external));
    if let Some(a) = internal_addr {
        let endpoints = crate::http::Endpoints::internal(&cfg).describe(&cfg);
        tracing::info!("serving {endpoints} endpoints on {}://{a}", scheme(&tls.internal));
    }
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(n);
    let mut threads = Vec::with_capacity(n);
    for (id, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        let cfg = cfg.clone();
        let node = node.clone();
        let ready = ready_tx.clone();
        let api_listener = api_listeners[id].take();
        let internal_listener = internal_listeners[id].take();
        let tls = tls.clone();
        let t = std::thread::Builder::new()
            .name(format!("{WORKER_THREAD}{id}"))
            .spawn(move || {
                // Both drivers run the same code; the choice is made once per worker.
                macro_rules! run_on {
                    ($driver:ty) => {
                        match monoio::RuntimeBuilder::<$driver>::new().enable_timer().with_entries(4096).build() {
                            Ok(mut rt) => rt.block_on(worker_main(
                                id,
                                cfg,
                                node,
                                [Some(listener), internal_listener, api_listener],
                                tls,
                                inbox,
                                ready,
                            )),
                            Err(e) => {
                                let _ =
                                    ready.send(Err(format!("worker {id}: cannot start the {driver} event loop: {e}")));
                            }
                        }
                    };
                }
                if driver == "io_uring" {
                    run_on!(monoio::IoUringDriver)
                } else {
                    run_on!(monoio::LegacyDriver)
                }
            })
            .map_err(|e| Error::new(crate::error::ErrorKind::Io, format!("cannot spawn worker: {e}")))?;
        threads.push(t);
    }
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::new(crate::error::ErrorKind::Io, e)),
            Err(_) => return Err(Error::new(crate::error::ErrorKind::Io, "a worker exited during start-up")),
        }
    }
    let grpc = if cfg.grpc_api.enabled { Some(crate::grpc::start(&cfg, node.mailboxes.clone())?) } else { None };
    let uni_grpc =
        if cfg.uni_grpc.enabled { Some(crate::grpc::uni::start(&cfg, node.mailboxes.clone())?) } else { None };
    Ok(Server { addr, internal_addr, grace: cfg.shutdown.timeout, node, threads, grpc, uni_grpc, cfg })
}

/// The name of worker `id`'s thread is this prefix and the id.
const WORKER_THREAD: &str = "gyre-worker-";

/// A worker that panics stops the whole process (exit status 70, after the panic's message)
/// instead of leaving its listener taking connections that nothing serves any more and its
/// channels unowned: a supervisor then restarts a node that works.
fn exit_on_worker_panic() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            if std::thread::current().name().is_some_and(|n| n.starts_with(WORKER_THREAD)) {
                tracing::error!("a worker panicked: stopping the node");
                std::process::exit(70);
            }
        }));
    });
}

async fn worker_main(
    id: usize,
    cfg: Arc<Config>,
    node: Arc<NodeShared>,
    // The external listener, the internal one and the gateway API's.
    listeners: [Option<StdListener>; 3],
    tls: ListenerTls,
    inbox: inbox::Inbox<Msg>,
    ready: crossbeam_channel::Sender<Result<(), String>>,
) {
    let mut converted = Vec::with_capacity(3);
    for (l, what) in listeners.into_iter().zip(["listener", "internal listener", "gateway api listener"]) {
        match l.map(monoio::net::TcpListener::from_std).transpose() {
            Ok(l) => converted.push(l),
            Err(e) => {
                let _ = ready.send(Err(format!("worker {id}: {what}: {e}")));
                return;
            }
        }
    }
    let [Some(listener), internal_listener, api_listener]: [Option<monoio::net::TcpListener>; 3] =
        converted.try_into().unwrap_or_else(|_| unreachable!())
    else {
        let _ = ready.send(Err(format!("worker {id}: no listener")));
        return;
    };
    let engine = match make_engine(&cfg, &node.name) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let w = Rc::new_cyclic(|me| Worker::new(id, cfg, node, me.clone(), engine));
    cluster::answer_surveys(&w, "mesh", crate::gateway::mesh::answer_survey);
    cluster::answer_surveys(&w, "emulation", crate::stream::emulation::answer_survey);
    if w.redis().is_some() {
        start_redis(&w);
    }
    if w.nats().is_some() {
        start_nats(&w);
    }
    monoio::spawn(w.clone().run_inbox(inbox));
    monoio::spawn(w.clone().run_flusher());
    monoio::spawn(sweeper(w.clone()));
    monoio::spawn(w.clone().run_timers());
    monoio::spawn(loop_ticker());
    if let Some(l) = api_listener {
        monoio::spawn(accept_loop(w.clone(), l, crate::http::Endpoints::ALL, None));
    }

    let _ = ready.send(Ok(()));
    drop(ready);
    let accept = accept_loop(w.clone(), listener, crate::http::Endpoints::external(&w.cfg), tls.external);
    let accept_internal = async {
        match internal_listener {
            Some(l) => accept_loop(w.clone(), l, crate::http::Endpoints::internal(&w.cfg), tls.internal).await,
            None => std::future::pending().await,
        }
    };
    monoio::select! {
        _ = accept => {}
        _ = accept_internal => {}
        _ = w.shutdown_notify.wait() => {}
    }
    if id == 0 {
        cluster::announce_shutdown(&w);
    }
    // No new connections are accepted now. Answer what HTTP clients already sent (every
    // worker keeps serving its inbox meanwhile, so commands needing another worker finish).
    let deadline = Instant::now() + w.cfg.shutdown.timeout;
    w.shutdown_deadline.set(Some(deadline));
    while w.http_busy() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // WebSocket clients publish too: their sessions start no new command from here on, and
    // the commands they are running finish (answered, and their deliveries sent) below.
    w.hold_sessions.set(true);
    w.node.drained.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    while w.node.drained.load(std::sync::atomic::Ordering::Acquire) < w.workers && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // The publications those requests made may still travel between workers: wait until this
    // worker's inbox has been quiet for a moment, and every other worker's too.
    // (Bounded apart: connected clients may keep publishing.)
    let quiet_for = Duration::from_millis(50);
    let deadline = deadline.min(Instant::now() + Duration::from_secs(2));
    while (w.last_inbox.get().elapsed() < quiet_for || w.http_busy() || w.session_commands.get() > 0)
        && Instant::now() < deadline
    {
        w.flush();
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    w.node.quiet.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    while w.node.quiet.load(std::sync::atomic::Ordering::Acquire) < w.workers && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // Tell clients to reconnect elsewhere (3001), then give writers a moment to send it.
    let clients = w.hub.clients();
    for h in w.hub.handlers() {
        h.disconnect(crate::error::Disconnect::SHUTDOWN);
    }
    w.flush();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && clients.iter().any(|c| !c.out.is_drained()) {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The TLS of the HTTP listeners (`http_server.tls`, `tls_external`, `internal_tls`), built
/// once and shared by every worker.
#[derive(Clone)]
struct ListenerTls {
    external: Option<Arc<rustls::ServerConfig>>,
    internal: Option<Arc<rustls::ServerConfig>>,
}

impl ListenerTls {
    fn new(cfg: &Config) -> Result<ListenerTls, Error> {
        let acceptor = |tls: Option<(&str, &crate::config::tls::Tls)>| {
            tls.map(|(at, t)| crate::config::tls::server_config(at, t, &[b"http/1.1"]))
                .transpose()
                .map_err(Error::config)
        };
        let hs = &cfg.http_server;
        Ok(ListenerTls { external: acceptor(hs.external_tls())?, internal: acceptor(hs.internal_listener_tls())? })
    }
}

/// Accepts connections forever, each served as HTTP (over TLS with `tls`) in a task of its
/// own.
async fn accept_loop(
    w: Rc<Worker>,
    listener: monoio::net::TcpListener,
    endpoints: crate::http::Endpoints,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => match &tls {
                None => {
                    monoio::spawn(crate::http::accept::serve(w.clone(), stream, endpoints));
                }
                Some(tls) => {
                    monoio::spawn(crate::http::accept::serve_tls(w.clone(), tls.clone(), stream, endpoints));
                }
            },
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(worker = w.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// This worker's engine: memory, Redis, or the NATS broker with presence from either.
fn make_engine(cfg: &Arc<Config>, node_name: &str) -> Result<Engine, String> {
    let redis = || crate::engine::redis::RedisEngine::new(cfg.clone()).map(Rc::new);
    if cfg.broker.nats() {
        use crate::engine::nats::{NatsEngine, PresenceStore};
        let presence = match cfg.engine.kind.as_str() {
            "redis" => PresenceStore::Redis(redis()?),
            _ => PresenceStore::Local(Default::default()),
        };
        return Ok(Engine::Nats(Rc::new(NatsEngine::new(cfg.clone(), node_name, presence)?)));
    }
    Ok(match cfg.engine.kind.as_str() {
        "redis" => Engine::Redis(redis()?),
        _ => Engine::Memory(crate::engine::memory::Memory::new(cfg.clone())),
    })
}

/// Starts the worker's NATS connection (and, with presence in Redis, the Redis command
/// connections and the presence refresher).
fn start_nats(w: &Rc<Worker>) {
    let engine = w.nats().expect("nats broker");
    let weak = Rc::downgrade(w);
    let (w_up, w_down, w_conf) = (weak.clone(), weak.clone(), weak.clone());
    engine.conn.set_hooks(crate::engine::nats::conn::Hooks {
        up: Box::new(move |_gen| {
            let Some(w) = w_up.upgrade() else { return };
            let control = (w.id == 0).then(|| w.node.uid.clone());
            if let Some(e) = w.nats() {
                e.on_up(control.as_deref());
            }
            if control.is_some() {
                monoio::spawn(cluster::announce(w.clone()));
            }
        }),
        down: Box::new(move || {
            let Some(w) = w_down.upgrade() else { return };
            if let Some(e) = w.nats() {
                w.resubscribe(e.on_down());
            }
        }),
        msg: Box::new(move |subject, payload| {
            let Some(w) = weak.upgrade() else { return };
            let Some(engine) = w.nats() else { return };
            match engine.on_msg(subject, payload) {
                Some(crate::engine::nats::Incoming::Push(p, delta)) => w.fan_out_remote(p, delta),
                Some(crate::engine::nats::Incoming::Control(b)) => cluster::on_control(&w, b),
                None => {}
            }
        }),
        confirmed: Box::new(move |gen, subjects| {
            if let Some(e) = w_conf.upgrade().and_then(|w| w.nats()) {
                e.on_confirmed(gen, subjects);
            }
        }),
    });
    monoio::spawn(engine.conn.clone().run());
    if let Some(redis) = engine.redis_presence() {
        for pair in &redis.shards {
            pair.cmd.spawn();
        }
        monoio::spawn(cluster::presence_refresher(w.clone()));
    }
    if w.id == 0 {
        monoio::spawn(cluster::announcer(w.clone()));
        match engine.redis_presence() {
            Some(redis) => {
                let (cmd, node) = (redis.clone(), w.node.clone());
                let prefix = w.cfg.engine.redis.prefix.clone();
                monoio::spawn(async move {
                    use crate::engine::redis::{codec::fnv1a64, node_number};
                    let start = fnv1a64(node.uid.as_bytes()) % node_number::COUNT;
                    node_number::keep(&cmd.shards[0].cmd, &prefix, &node.uid, start, &node.node_number).await
                });
            }
            None => cluster::claim_node_number(w),
        }
    }
}

/// Starts the worker's Redis connections and the engine's periodic tasks.
fn start_redis(w: &Rc<Worker>) {
    let engine = w.redis().expect("redis engine");
    for (i, pair) in engine.shards.iter().enumerate() {
        let weak = Rc::downgrade(w);
        let (w_up, w_down) = (weak.clone(), weak.clone());
        pair.sub.set_hooks(crate::engine::redis::conn::Hooks {
            up: Box::new(move |_gen| {
                if let Some(w) = w_up.upgrade() {
                    let control = (w.id == 0).then(|| w.node.uid.clone());
                    if let Some(e) = w.redis() {
                        e.on_up(i, control.as_deref());
                    }
                    if control.is_some() {
                        // Listening to the control topic from now on: say hello, so the
                        // others answer with theirs (see `cluster::on_control`).
                        monoio::spawn(cluster::announce(w.clone()));
                    }
                }
            }),
            down: Box::new(move || {
                if let Some(w) = w_down.upgrade() {
                    // Subscribers of the channels it carried may have missed publications.
                    if let Some(e) = w.redis() {
                        w.resubscribe(e.on_down(i));
                    }
                }
            }),
            push: Box::new(move |v| {
                let Some(w) = weak.upgrade() else { return };
                let Some(engine) = w.redis() else { return };
                match engine.on_push(i, v) {
                    Some(crate::engine::redis::Incoming::Push(p, delta)) => w.fan_out_remote(p, delta),
                    Some(crate::engine::redis::Incoming::Control(b)) => cluster::on_control(&w, b),
                    None => {}
                }
            }),
        });
        pair.cmd.spawn();
        monoio::spawn(pair.sub.clone().run());
    }
    monoio::spawn(cluster::presence_refresher(w.clone()));
    if w.id == 0 {
        monoio::spawn(cluster::map_expirer(w.clone()));
        monoio::spawn(cluster::announcer(w.clone()));
        let (w2, node) = (w.clone(), w.node.clone());
        let prefix = w.cfg.engine.redis.prefix.clone();
        monoio::spawn(async move {
            use crate::engine::redis::{codec::fnv1a64, node_number};
            let start = fnv1a64(node.uid.as_bytes()) % node_number::COUNT;
            let Some(engine) = w2.redis() else { return };
            node_number::keep(&engine.shards[0].cmd, &prefix, &node.uid, start, &node.node_number).await
        });
    }
}

/// Measures how late the event loop runs a 100 ms tick (`gyre_worker_loop_lag_seconds`).
async fn loop_ticker() {
    const TICK: Duration = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        monoio::time::sleep(TICK).await;
        crate::metrics::loop_lag(started.elapsed().saturating_sub(TICK));
    }
}

/// Frees expired channel state a little at a time.
async fn sweeper(w: Rc<Worker>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let fanout = w.shard.borrow_mut().sweep(Instant::now(), 2048);
        w.fan_out_all(fanout);
    }
}
