//! The operational endpoints' data: `/metrics` (every worker's counters, summed) and the
//! admin page's node figures. Both survey the workers through their inboxes, so scraping
//! never touches the publish path's state from another thread.

use std::rc::Rc;

use crate::api::Res;
use crate::metrics::Snapshot;
use crate::runtime::worker::{Op, Survey, Worker};

/// Every worker's metrics snapshot, added up.
async fn collect(w: &Rc<Worker>) -> Snapshot {
    let calls: Vec<_> = (0..w.workers).map(|i| w.call(i, Op::Survey(Survey::Metrics))).collect();
    let mut total = Snapshot::default();
    for c in calls {
        if let Ok(Res::Metrics(s)) = c.await {
            total.add(*s);
        }
    }
    total
}

/// Nodes this node knows of, itself included.
async fn num_nodes(w: &Rc<Worker>) -> u64 {
    if w.redis.is_none() {
        return 1;
    }
    match w.call(0, Op::Nodes).await {
        Ok(Res::Info(others)) => 1 + others.len() as u64,
        _ => 1,
    }
}

/// The Prometheus text of `/metrics`.
pub async fn metrics_text(w: &Rc<Worker>) -> String {
    let snap = collect(w).await;
    let nodes = num_nodes(w).await;
    snap.render(&w.node.version, nodes)
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
