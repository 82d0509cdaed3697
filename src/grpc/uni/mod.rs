//! The unidirectional gRPC stream (`uni_grpc.enabled`, port `uni_grpc.port`, 11000 by
//! default): Centrifugo's `centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume` from
//! `proto/unistream.proto`. A client sends one connect request and receives bare protocol
//! pushes, one per gRPC message: the connect push, its subscriptions' pushes, empty pushes as
//! pings, and a disconnect push before the call ends with status OK.
//!
//! tonic runs on a thread of its own (as the server API does). Each call gets a UNIX socket
//! pair: one end goes to a worker (round-robin, as a job) that opens a client session on it
//! ([`session`]); the session writes its pushes there already framed as gRPC messages, so
//! fan-out, pings, expiry and closing are those of every other client. The gRPC thread cuts
//! the byte stream back into messages and hands each payload to tonic as it is (a
//! pass-through codec: nothing is decoded or encoded again). Backpressure is the socket's: a
//! client that stops reading stops the HTTP/2 stream, then the socket, then the session's
//! queue fills and the session closes with 3008 (`client.queue_max_size`). When the client
//! cancels, the gRPC side closes its end and the session ends without a word; when the server
//! closes the session, its disconnect push is the last message and the call ends OK.
//!
//! The connect request's token is the client's credential; `uni_grpc.tls` puts the stream
//! under TLS (with `client_ca_pem`, client certificates are required too).

pub mod session;

use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

use super::GrpcServer;
use crate::config::Config;
use crate::error::Error;
use crate::protocol::{decode_connect_request, Format};
use crate::runtime::inbox::Mailbox;
use crate::runtime::worker::Msg;
use pb::centrifugo_uni_stream_server::{CentrifugoUniStream, CentrifugoUniStreamServer};

/// The service generated from `proto/unistream.proto` at build time (its messages are
/// [`wire`]'s byte aliases).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("centrifugal.centrifugo.unistream");
}

/// The Rust types of `proto/unistream.proto`'s messages: encoded bytes. A request is decoded
/// by the client protocol's decoder; a push is written by the session already encoded.
pub mod wire {
    /// An encoded `ConnectRequest`.
    pub type ConnectRequest = bytes::Bytes;
    /// An encoded `Push` (empty: a ping).
    pub type Push = bytes::Bytes;
}

/// The gRPC default for the largest request, used when `uni_grpc.max_receive_message_size`
/// is 0.
const DEFAULT_MAX_RECEIVE: usize = 4 << 20;

/// Binds `uni_grpc.port` on `uni_grpc.address` (empty: the HTTP server's address, empty too:
/// every interface), so a bind error stops start-up, and starts the stream's gRPC thread.
pub fn start(cfg: &Config, mailboxes: Vec<Mailbox<Msg>>) -> Result<GrpcServer, Error> {
    let u = &cfg.uni_grpc;
    let host =
        [u.address.as_str(), cfg.http_server.address.as_str()].into_iter().find(|a| !a.is_empty()).unwrap_or("0.0.0.0");
    let listener = super::bind("uni_grpc", host, u.port)?;
    let max = if u.max_receive_message_size == 0 { DEFAULT_MAX_RECEIVE } else { u.max_receive_message_size };
    let svc = Service { mailboxes, next: AtomicUsize::new(0) };
    let server = CentrifugoUniStreamServer::new(svc).max_decoding_message_size(max);
    // As Centrifugo's: an HTTP/2 PING after 25 s without traffic, the connection dropped when
    // it is not answered within 5 s (a vanished client's session ends).
    let keepalive = Some((Duration::from_secs(25), Duration::from_secs(5)));
    let g = super::serve_on_thread(
        "uni_grpc",
        "gyre-uni-grpc",
        listener,
        tonic::service::Routes::new(server),
        keepalive,
        &cfg.uni_grpc.tls,
    )?;
    tracing::info!(address = %g.addr, "uni_grpc listening");
    Ok(g)
}

struct Service {
    mailboxes: Vec<Mailbox<Msg>>,
    next: AtomicUsize,
}

#[tonic::async_trait]
impl CentrifugoUniStream for Service {
    type ConsumeStream = Pushes;

    async fn consume(&self, req: Request<wire::ConnectRequest>) -> Result<Response<Pushes>, Status> {
        let remote = req.remote_addr();
        // The call's metadata, for proxies that forward some of it (`grpc_metadata`).
        let metadata: Vec<(String, String)> = req
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let connect = decode_connect_request(Format::Protobuf, req.get_ref()).map_err(|_| {
            tracing::debug!(remote = ?remote, "uni_grpc: malformed connect request");
            Status::invalid_argument("malformed connect request")
        })?;
        let (ours, theirs) = StdUnixStream::pair().map_err(|e| unavailable(remote, "socket pair", e))?;
        for s in [&ours, &theirs] {
            s.set_nonblocking(true).map_err(|e| unavailable(remote, "socket pair", e))?;
        }
        let sock = tokio::net::UnixStream::from_std(ours).map_err(|e| unavailable(remote, "socket", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let to = self.next.fetch_add(1, Ordering::Relaxed) % self.mailboxes.len();
        let job = Msg::Job(Box::new(move |w| session::start(w, theirs, connect, metadata, tx)));
        if !self.mailboxes[to].send(vec![job]) {
            return Err(Status::unavailable("the server is stopping"));
        }
        match rx.await {
            Ok(Ok(())) => Ok(Response::new(Pushes::new(sock))),
            Ok(Err(why)) => Err(Status::unavailable(why)),
            Err(_) => Err(Status::unavailable("the server is stopping")),
        }
    }
}

fn unavailable(remote: Option<SocketAddr>, what: &str, e: std::io::Error) -> Status {
    tracing::warn!(remote = ?remote, error = %e, "uni_grpc: cannot open a stream: {what}");
    Status::unavailable("cannot open the stream")
}

/// The codec of the stream's messages: bytes in, bytes out (see [`wire`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One step of cutting the session's byte stream into messages.
#[derive(Debug, PartialEq)]
enum Cut {
    /// A whole message's payload.
    Message(Bytes),
    /// Not enough bytes yet; at least this many are needed in all.
    Need(usize),
    /// Not a message the session writes (it never compresses).
    Malformed,
}

/// The gRPC message prefix: a compression flag byte and the payload's length (big-endian).
const PREFIX: usize = 5;

/// Takes the first whole message off `buf`.
fn cut(buf: &mut BytesMut) -> Cut {
    if buf.len() < PREFIX {
        return Cut::Need(PREFIX);
    }
    if buf[0] != 0 {
        return Cut::Malformed;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < PREFIX + len {
        return Cut::Need(PREFIX + len);
    }
    let mut m = buf.split_to(PREFIX + len);
    m.advance(PREFIX);
    Cut::Message(m.freeze())
}

/// The smallest read of the byte stream.
const READ_CHUNK: usize = 16 * 1024;

/// The response stream of one call: the messages its session writes to the socket pair, as
/// they come. Dropping it (the client cancelled or went away) closes the gRPC side's end,
/// which ends the session.
pub struct Pushes {
    sock: tokio::net::UnixStream,
    buf: BytesMut,
    /// The session's end is closed: what is left in `buf` is all there is.
    ended: bool,
}

impl Pushes {
    fn new(sock: tokio::net::UnixStream) -> Pushes {
        Pushes { sock, buf: BytesMut::new(), ended: false }
    }
}

impl tonic::codegen::tokio_stream::Stream for Pushes {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = self.get_mut();
        loop {
            let need = match cut(&mut me.buf) {
                Cut::Message(m) => return Poll::Ready(Some(Ok(m))),
                Cut::Malformed => {
                    me.ended = true;
                    me.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(Status::internal("malformed push stream"))));
                }
                Cut::Need(n) => n,
            };
            if me.ended {
                // A message cut short can only follow a write that failed: the session is
                // gone, and so is the rest of the stream.
                return Poll::Ready(None);
            }
            // Room for the rest of the message, and for a good read.
            me.buf.reserve(need.saturating_sub(me.buf.len()).max(READ_CHUNK));
            match me.sock.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => me.ended = true,
                Poll::Ready(Ok(())) => match me.sock.try_read_buf(&mut me.buf) {
                    Ok(0) => me.ended = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => me.ended = true,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
