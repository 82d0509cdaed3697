//! `ingest --client-publish`: the publishers are WebSocket clients sending `publish` commands
//! of the client protocol — what a publish proxy sits on (the server API's publish calls no
//! proxy). Each publisher connects (with `--token`, a minted token, or none for a connect
//! proxy), then sends its batches as one frame each: `--batch` commands, newline-delimited
//! JSON or length-prefixed protobuf, ids counting up from 2 (the connect is 1). The reader
//! matches every reply to its batch by id and records its own round trip, from the write of
//! its batch to its arrival.

use std::time::Duration;

use gyre::protocol::pb::proto;
use gyre::wire::ws::{encode_client_frame, Decoder, Message, OpCode};
use monoio::io::{OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use prost::Message as _;

use crate::publish::Pipe;
use crate::run::Cx;
use crate::target::{self, ClientErr, Reader};
use crate::ws::{hint, replies, Hello, Reply, WsClient};
use crate::WireFormat;

/// A publisher's connection once connected: its halves and how it frames.
pub struct Conn {
    pub wr: OwnedWriteHalf<TcpStream>,
    pub rd: Reader<OwnedReadHalf<TcpStream>>,
    pub dec: Decoder,
    pub mask: [u8; 4],
}

/// Connects publisher `p` (bounded: `--connect-timeout`).
pub async fn open(cx: &Cx, p: usize) -> Result<Conn, ClientErr> {
    let plan = &cx.plan;
    let token = plan.token_for(p).map_err(ClientErr::Rejected)?;
    let node = plan.publish_node(p);
    let hello = Hello {
        addr: node.addr,
        source: target::source_for(p, plan.source_ips),
        host: &node.host,
        path: &plan.o.ws_path,
        format: plan.o.format,
        token: &token,
        channel: None,
        uni: false,
    };
    let limit = Duration::from_secs_f64(plan.o.connect_timeout);
    let c = monoio::time::timeout(limit, WsClient::open(&hello)).await.map_err(|_| {
        ClientErr::Io(format!("publisher connect to {}: no answer in {:.0} s", node.addr, limit.as_secs_f64()))
    })??;
    let (stream, buf, dec, mask) = c.into_parts();
    let (rd, wr) = stream.into_split();
    let mut rd = Reader::new(rd);
    rd.buf = buf;
    Ok(Conn { wr, rd, dec, mask })
}

/// Appends one publish command with id `id` to the batch's payload.
pub fn encode_one(format: WireFormat, body: &mut Vec<u8>, id: u32, channel: &str, channel_json: &str, data: &[u8]) {
    match format {
        WireFormat::Json => {
            if !body.is_empty() {
                body.push(b'\n');
            }
            body.extend_from_slice(b"{\"id\":");
            body.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
            body.extend_from_slice(b",\"publish\":{\"channel\":");
            body.extend_from_slice(channel_json.as_bytes());
            body.extend_from_slice(b",\"data\":");
            body.extend_from_slice(data);
            body.extend_from_slice(b"}}");
        }
        WireFormat::Protobuf => {
            let publish = proto::PublishRequest {
                channel: channel.to_string(),
                data: bytes::Bytes::copy_from_slice(data),
                ..Default::default()
            };
            let cmd = proto::Command { id, publish: Some(publish), ..Default::default() };
            cmd.encode_length_delimited(body).expect("Vec grows");
        }
    }
}

/// Frames the batch's payload (after a pong, when the server's ping awaits one).
pub fn frame(format: WireFormat, out: &mut Vec<u8>, body: &[u8], mask: [u8; 4], pong: bool) {
    let op = match format {
        WireFormat::Json => OpCode::Text,
        WireFormat::Protobuf => OpCode::Binary,
    };
    if pong {
        let empty: &[u8] = if format == WireFormat::Json { b"{}" } else { &[0] };
        encode_client_frame(op, empty, mask, out);
    }
    encode_client_frame(op, body, mask, out);
}

/// The reader: replies in, each counted against its batch; batches leave the queue in order
/// once all their replies came.
pub async fn read_replies(
    cx: &Cx,
    pipe: &Pipe,
    conn: &mut Reader<OwnedReadHalf<TcpStream>>,
    mut dec: Decoder,
) -> Result<(), ClientErr> {
    let format = cx.plan.o.format;
    loop {
        let data = match dec.decode(&mut conn.buf) {
            Ok(Some(Message::Text(b) | Message::Binary(b))) => b,
            // The server's own WebSocket pings and pongs take no answer from a client that
            // only publishes (Centrifuge pings travel as messages, handled below).
            Ok(Some(Message::Ping(_) | Message::Pong(_))) => continue,
            Ok(Some(Message::Close(c))) => {
                return Err(match c.unwrap_or((1005, String::new())) {
                    (1009, _) => ClientErr::Rejected(format!(
                        "the server closed with 1009 (message too big): a frame of {} publish commands is over \
                         its WebSocket message size limit (websocket.message_size_limit): lower --batch",
                        cx.plan.batch
                    )),
                    (code, reason) => ClientErr::Closed(code, reason),
                });
            }
            Ok(None) => {
                conn.fill_some("websocket").await?;
                continue;
            }
            Err(e) => return Err(ClientErr::io("websocket", e)),
        };
        for r in replies(format, &data) {
            match r {
                Reply::Answer { id, error } => answered(cx, pipe, id, error)?,
                Reply::Ping => {
                    pipe.pong_due.set(true);
                    pipe.space.notify();
                }
                r => r.outcome()?,
            }
        }
    }
}

/// Counts the reply to command `id`.
fn answered(cx: &Cx, pipe: &Pipe, id: u32, error: Option<String>) -> Result<(), ClientErr> {
    let mut q = pipe.queue.borrow_mut();
    let Some(b) = q.iter_mut().find(|b| id >= b.first_id && id - b.first_id < b.n as u32) else {
        return Err(ClientErr::Io(format!("a reply to command {id}, which is not in flight")));
    };
    b.remaining = b.remaining.saturating_sub(1);
    match error {
        Some(e) => {
            if b.errors == 0 && cx.sh.publish_errors.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                let code = e.split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(0);
                eprintln!("gyre-bench: publish error reply: {e}{}", hint("publish", code));
            }
            b.errors += 1;
        }
        None if cx.sh.in_window(b.t) => cx.local.ack(b.sent, 1),
        None => {}
    }
    let mut done = Vec::new();
    while q.front().is_some_and(|b| b.remaining == 0) {
        done.push(q.pop_front().expect("front exists"));
    }
    drop(q);
    for b in &done {
        crate::publish::account(cx, b, false);
    }
    if !done.is_empty() {
        pipe.space.notify();
    }
    Ok(())
}
