//! The operational endpoints' data: `/metrics` (every worker's counters, summed) and the
//! admin page's node figures. Both survey the workers through their inboxes, so scraping
//! never touches the publish path's state from another thread.

use std::rc::Rc;

use crate::metrics::Snapshot;
use crate::runtime::worker::Worker;

/// One worker's metric counters and connection counts.
fn snapshot(w: &Worker) -> Snapshot {
    let counts = w.hub.counts();
    let mut snap = crate::metrics::snapshot(w.id);
    snap.num_clients = counts.clients;
    snap.users = counts.users;
    snap.num_channels = w.shard.borrow().channels_with_subscribers();
    snap.num_subs = counts.subs;
    snap.gateway_queued = crate::gateway::queued(w) as u64;
    snap.gateway_dropped = crate::gateway::local(w).dropped.get();
    snap
}

/// Every worker's metrics snapshot, added up.
async fn collect(w: &Rc<Worker>) -> Snapshot {
    let mut total = Snapshot::default();
    for c in w.ask_all(|w, a| a.send(w, Box::new(snapshot(w)))) {
        total.add(*c.await);
    }
    total
}

/// Nodes this node knows of, itself included.
async fn num_nodes(w: &Rc<Worker>) -> u64 {
    1 + crate::cluster::nodes(w).await.len() as u64
}

/// The Prometheus text of `/metrics`.
pub async fn metrics_text(w: &Rc<Worker>) -> String {
    let mut snap = collect(w).await;
    let nodes = num_nodes(w).await;
    snap.process = Some(process_stats());
    snap.render(&w.node.version, nodes)
}

/// The process's `process_*` figures, from `/proc` (small files, read once per scrape; a
/// file that cannot be read leaves its families out).
fn process_stats() -> crate::metrics::process::Stats {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (stat, system_stat, limits, netstat) =
        (read("/proc/self/stat"), read("/proc/stat"), read("/proc/self/limits"), read("/proc/self/net/netstat"));
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    // SAFETY: sysconf has no preconditions.
    let (page, ticks) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
    crate::metrics::process::Stats::parse(&crate::metrics::process::Sources {
        stat: &stat,
        system_stat: &system_stat,
        limits: &limits,
        netstat: &netstat,
        open_fds,
        page_size: page.max(0) as u64,
        clock_ticks: ticks.max(1) as u64,
    })
}

/// `POST /admin/node`: this node's cumulative figures for the admin page (which turns them
/// into rates between refreshes).
pub async fn node_json(w: &Rc<Worker>) -> String {
    let snap = collect(w).await;
    let mut users = snap.users.clone();
    users.sort_unstable();
    users.dedup();
    serde_json::json!({
        "uid": w.node.uid,
        "name": w.node.name,
        "version": w.node.version,
        "uptime": w.node.started.elapsed().as_secs(),
        "workers": w.workers,
        "engine": w.cfg.engine.kind,
        "rss_bytes": crate::admin::rss_bytes(),
        "num_clients": snap.num_clients,
        "num_users": users.len(),
        "num_channels": snap.num_channels,
        "num_subs": snap.num_subs,
        "messages_sent": snap.messages_sent(),
        "messages_delivered": snap.frames_delivered(),
        "api_commands": snap.api_commands(),
    })
    .to_string()
}
