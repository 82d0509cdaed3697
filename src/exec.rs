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
use crate::runtime::worker::{Tag, Worker};
use crate::shard::ShardOp;

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
            Command::Batch(batch) => {
                let mut replies = Vec::with_capacity(batch.commands.len());
                if batch.parallel {
                    let mut methods = Vec::with_capacity(batch.commands.len());
                    let mut futs = Vec::new();
                    for c in batch.commands {
                        match c {
                            Ok(c) if c.method() != Method::Batch => {
                                methods.push(Ok(c.method()));
                                futs.push(run(w.clone(), c));
                            }
                            Ok(_) => methods.push(Err(ApiError::NOT_FOUND)),
                            Err(e) => methods.push(Err(e)),
                        }
                    }
                    let mut results = join_all(futs).await.into_iter();
                    for m in methods {
                        replies.push(match m {
                            Ok(m) => (Some(m), results.next().expect("one result per future")),
                            Err(e) => (None, Err(e)),
                        });
                    }
                } else {
                    for c in batch.commands {
                        replies.push(match c {
                            Ok(c) if c.method() == Method::Batch => (None, Err(ApiError::NOT_FOUND)),
                            Ok(c) => (Some(c.method()), run(w.clone(), c).await),
                            Err(e) => (None, Err(e)),
                        });
                    }
                }
                Ok(Res::Batch(replies))
            }
            // Single-channel commands were handled above.
            _ => Err(ApiError::api_internal()),
        }
    })
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

/// Polls all futures together (so their owner calls overlap); results in input order.
async fn join_all(mut futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Reply>>>>) -> Vec<Reply> {
    use std::task::Poll;
    let mut out: Vec<Option<Reply>> = (0..futs.len()).map(|_| None).collect();
    let mut left = futs.len();
    std::future::poll_fn(|cx| {
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    out[i] = Some(r);
                    left -= 1;
                }
            }
        }
        if left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|r| r.expect("every future finished")).collect()
}
