//! The server API's executor, shared by every way in (HTTP in both styles, `batch`, gRPC, the
//! admin page): validates a [`Command`] against the config, routes it to the owner of its
//! channel (or to every worker, or every node, for node-wide commands) and produces a
//! [`Reply`].
//!
//! Single-channel commands take [`route`], which needs no task or future: the result is
//! delivered to a reply slot by tag. Commands that span channels or workers take [`run`].

use std::rc::Rc;

use crate::api::{Command, Method, Reply, Res};
use crate::cluster;
use crate::config::{ChannelOptions, Config};
use crate::error::ApiError;
use crate::model::Publish;
use crate::runtime::worker::{Call, Tag, Worker};
use crate::shard::{owner_of, ShardOp};

/// Checks the channel name and resolves its namespace: too long → 107, unknown → 102.
pub fn check_channel<'a>(cfg: &'a Config, channel: &str) -> Result<&'a ChannelOptions, ApiError> {
    if channel.is_empty() || channel.len() > cfg.channel().max_length {
        return Err(ApiError::BAD_REQUEST);
    }
    Ok(cfg.resolve_channel(channel)?.options)
}

/// Maps a single-channel command to its owner-side operation after validation.
/// `Ok(Err(cmd))` gives back a command that is not single-channel.
pub fn single(cfg: &Config, cmd: Command) -> Result<Result<ShardOp, Command>, ApiError> {
    Ok(Ok(match cmd {
        Command::Publish(p) => {
            check_channel(cfg, &p.channel)?;
            ShardOp::Publish(p)
        }
        Command::History(h) => {
            if !check_channel(cfg, &h.channel)?.history_enabled() {
                return Err(ApiError::NOT_AVAILABLE);
            }
            if h.reverse && h.since.as_ref().is_some_and(|s| s.offset == 0) {
                return Err(ApiError::BAD_REQUEST);
            }
            ShardOp::History(h)
        }
        Command::HistoryRemove { channel } => {
            if !check_channel(cfg, &channel)?.history_enabled() {
                return Err(ApiError::NOT_AVAILABLE);
            }
            ShardOp::HistoryRemove(channel)
        }
        Command::Presence { channel } => {
            if !check_channel(cfg, &channel)?.presence {
                return Err(ApiError::NOT_AVAILABLE);
            }
            ShardOp::Presence(channel)
        }
        Command::PresenceStats { channel } => {
            if !check_channel(cfg, &channel)?.presence {
                return Err(ApiError::NOT_AVAILABLE);
            }
            ShardOp::PresenceStats(channel)
        }
        Command::Map(m) => map_op(cfg, m)?,
        Command::Rpc { .. } => return Err(ApiError::NOT_FOUND),
        other => return Ok(Err(other)),
    }))
}

/// The owner-side operation of a map method (the channel must be a map channel: else 107).
fn map_op(cfg: &Config, m: crate::api::MapCmd) -> Result<ShardOp, ApiError> {
    use crate::api::MapCmd;
    use crate::shard::MapPub;
    let channel = match &m {
        MapCmd::Publish { publish, .. } => &publish.channel,
        MapCmd::Remove { channel, .. }
        | MapCmd::ReadState { channel, .. }
        | MapCmd::ReadStream(crate::model::History { channel, .. })
        | MapCmd::Stats { channel }
        | MapCmd::Clear { channel } => channel,
    };
    if !check_channel(cfg, channel)?.is_map() {
        return Err(ApiError::BAD_REQUEST);
    }
    Ok(match m {
        MapCmd::Publish { publish, key, key_mode } => {
            ShardOp::MapPublish(Box::new(MapPub { key_mode, ..MapPub::new(publish, key.as_ref().into(), false) }))
        }
        MapCmd::Remove { channel, key, idempotency_key } => {
            let data = crate::model::Payload { bytes: bytes::Bytes::new(), binary: false };
            let publish = Publish { idempotency_key, ..Publish::new(channel, data) };
            ShardOp::MapPublish(Box::new(MapPub::new(publish, key.as_ref().into(), true)))
        }
        MapCmd::ReadState { channel, cursor, limit, key, revision_epoch } => {
            let limit = if limit == 0 { usize::MAX } else { limit };
            ShardOp::MapRead { channel, cursor, limit, key, revision_epoch }
        }
        MapCmd::ReadStream(h) => ShardOp::MapStream(h),
        MapCmd::Stats { channel } => ShardOp::MapStats(channel),
        MapCmd::Clear { channel } => ShardOp::MapClear(channel),
    })
}

/// Fast path: validates and routes a single-channel command; its result reaches `tag` (maybe
/// before this returns). Gives the command back when it needs [`run`] instead.
pub fn route(w: &Worker, cmd: Command, tag: Tag) -> Result<(), Box<Command>> {
    match single(&w.cfg, cmd) {
        Err(e) => w.complete(tag, Err(e)),
        Ok(Ok(op)) => w.submit_shard(op, tag),
        Ok(Err(cmd)) => return Err(Box::new(cmd)),
    }
    Ok(())
}

/// Executes any command and returns its reply.
pub fn run(w: Rc<Worker>, cmd: Command) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply>>> {
    Box::pin(async move {
        let cmd = match single(&w.cfg, cmd) {
            Err(e) => return Err(e),
            Ok(Ok(op)) => return w.call_shard(op).await,
            Ok(Err(cmd)) => cmd,
        };
        match cmd {
            Command::Broadcast(b) => {
                // Every publish is sent before any is awaited, so owners work in parallel.
                let calls: Vec<_> = b
                    .channels
                    .iter()
                    .map(|ch| {
                        let p = Publish { channel: ch.clone(), ..b.publish.clone() };
                        check_channel(&w.cfg, ch).map(|_| w.call_shard(ShardOp::Publish(p)))
                    })
                    .collect();
                let mut out = Vec::with_capacity(calls.len());
                for c in calls {
                    out.push(match c {
                        Err(e) => Err(e),
                        Ok(call) => match call.await {
                            Ok(Res::Publish(p)) => Ok(p),
                            Ok(_) => Err(ApiError::api_internal()),
                            Err(e) => Err(e),
                        },
                    });
                }
                Ok(Res::Broadcast(out))
            }
            Command::Subscribe(ref s) => {
                check_channel(&w.cfg, &s.channel)?;
                cluster::act(&w, cmd).await
            }
            Command::Unsubscribe(ref u) => {
                if !u.channel.is_empty() {
                    check_channel(&w.cfg, &u.channel)?;
                }
                cluster::act(&w, cmd).await
            }
            Command::Disconnect(_) | Command::Refresh(_) => cluster::act(&w, cmd).await,
            Command::SharedPollPublish(p) => shared_poll_publish(&w, p).await,
            Command::Channels { pattern } => cluster::cluster_channels(&w, &pattern).await.map(Res::Channels),
            Command::Info => cluster::info(&w).await,
            Command::Batch(batch) => run_batch(&w, batch).await,
            // Single-channel commands were handled above.
            _ => Err(ApiError::api_internal()),
        }
    })
}

/// `batch`. Single-channel commands leave for their owners as they come, none waiting for
/// another: consecutive ones bound for one owner travel as one message (and run there with one
/// clock reading), and an owner runs what it receives in order, so the commands of each channel
/// run in the batch's order (as the lines of a legacy stream do) while the owners work in
/// parallel. Sequential (`parallel: false`): a command of another kind (broadcast, subscribe,
/// info...) starts once everything before it has finished, and what follows waits for it.
/// Parallel: those run together too. Replies are in the batch's order.
async fn run_batch(w: &Rc<Worker>, batch: crate::api::Batch) -> Reply {
    let mut b = Batching {
        replies: Vec::with_capacity(batch.commands.len()),
        queued: (0..w.workers).map(|_| Vec::new()).collect(),
        sent: Vec::new(),
        calls: Vec::new(),
    };
    let mut general = Vec::new();
    for c in batch.commands {
        let at = b.replies.len();
        let c = match c {
            Ok(c) if c.method() != Method::Batch => c,
            // A batch inside a batch is not found; a command that did not decode keeps its error.
            c => {
                b.replies.push((None, Some(c.and(Err(ApiError::NOT_FOUND)))));
                continue;
            }
        };
        let m = c.method();
        b.replies.push((Some(m), None));
        match single(&w.cfg, c) {
            Err(e) => b.replies[at].1 = Some(Err(e)),
            Ok(Ok(op)) if w.runs_here(&op) => b.calls.push((at, w.call_shard(op))),
            Ok(Ok(op)) => b.queued[owner_of(op.channel(), w.workers)].push((at, op)),
            Ok(Err(cmd)) if batch.parallel => general.push((at, run(w.clone(), cmd))),
            Ok(Err(cmd)) => {
                b.settle(w).await;
                b.replies[at].1 = Some(run(w.clone(), cmd).await);
            }
        }
    }
    b.send(w);
    if !general.is_empty() {
        // Commands of other kinds that run together: polled as one.
        let (at, futs): (Vec<usize>, Vec<_>) = general.into_iter().unzip();
        for (at, r) in at.into_iter().zip(futures_util::future::join_all(futs).await) {
            b.replies[at].1 = Some(r);
        }
    }
    b.settle(w).await;
    Ok(Res::Batch(b.replies.into_iter().map(|(m, r)| (m, r.expect("every command settled"))).collect()))
}

/// A batch on its way: each command's reply (once in), and the replies still coming.
struct Batching {
    replies: Vec<(Option<Method>, Option<Reply>)>,
    /// Per worker, the operations of single-channel commands bound for it and not sent yet
    /// (with their commands' places).
    queued: Vec<Vec<(usize, ShardOp)>>,
    /// Sent runs of operations, with their commands' places.
    sent: Vec<(Call<Vec<Reply>>, Vec<usize>)>,
    /// Operations the engine runs on this worker ([`Worker::runs_here`]).
    calls: Vec<(usize, Call<Reply>)>,
}

impl Batching {
    /// Sends each owner its queued operations, as one message.
    fn send(&mut self, w: &Rc<Worker>) {
        for (to, q) in self.queued.iter_mut().enumerate() {
            if !q.is_empty() {
                let (at, ops): (Vec<usize>, Vec<ShardOp>) = std::mem::take(q).into_iter().unzip();
                self.sent.push((w.call_shard_many(to, ops), at));
            }
        }
    }

    /// Sends what is queued and waits for every reply still on its way.
    async fn settle(&mut self, w: &Rc<Worker>) {
        self.send(w);
        for (call, at) in std::mem::take(&mut self.sent) {
            for (at, r) in at.into_iter().zip(call.await) {
                self.replies[at].1 = Some(r);
            }
        }
        for (at, call) in std::mem::take(&mut self.calls) {
            self.replies[at].1 = Some(call.await);
        }
    }
}

/// `shared_poll_publish`, checked in Centrifugo's order, then applied on the channel's owner
/// (which pushes the version to the connections of this node tracking the key).
async fn shared_poll_publish(w: &Rc<Worker>, p: crate::api::SharedPollPub) -> Reply {
    if p.channel.is_empty() || p.key.is_empty() || p.version == 0 {
        return Err(ApiError::BAD_REQUEST);
    }
    let o = w.cfg.resolve_channel(&p.channel)?.options;
    if !o.is_shared_poll() {
        return Err(ApiError::BAD_REQUEST);
    }
    if !o.shared_poll.publish_enabled {
        tracing::warn!(
            channel = &*p.channel,
            "shared_poll publish_enabled is not enabled for channel in Centrifugo configuration"
        );
        return Err(ApiError::NOT_AVAILABLE);
    }
    if p.data.is_none() {
        return Err(ApiError::BAD_REQUEST);
    }
    // Every node's trackers of the key (the other nodes through the control channel).
    crate::cluster::broadcast_act(w, &Command::SharedPollPublish(p.clone())).await?;
    if let Some(here) = crate::cluster::shared_poll_here(w, p) {
        here.await;
    }
    Ok(Res::Empty)
}
