//! The worker's side of a `uni_grpc` stream: a client session whose socket is one end of a
//! UNIX socket pair (the gRPC thread holds the other). The session writes its pushes there
//! already framed as gRPC messages (`Framing::UniGrpc`), through the worker's flush pass like
//! any client; the gRPC thread passes them on. Nothing is ever read from the pair: a read
//! that ends means the gRPC side let go (the client cancelled or went away).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;

use bytes::BytesMut;
use monoio::io::Splitable;

use crate::client::{Client, Framing};
use crate::io::{prepare_read, read_more};
use crate::protocol::{ConnectReq, Format};
use crate::runtime::worker::{ConnectionSlot, Worker};
use crate::session::socket::{finish, open_on_socket};
use crate::session::Session;

/// Why a stream was refused before it started (the gRPC side answers `UNAVAILABLE`).
pub type Refused = &'static str;

/// Admits a stream on worker `w` (the node's client connection limits apply, as to every
/// client transport), tells the gRPC side through `admitted`, and runs the session on `sock`
/// until it ends.
pub fn start(
    w: &Rc<Worker>,
    sock: StdUnixStream,
    req: ConnectReq,
    metadata: Vec<(String, String)>,
    admitted: tokio::sync::oneshot::Sender<Result<(), Refused>>,
) {
    if !w.take_connection_token() {
        let _ = admitted.send(Err("connection rate limit reached"));
        return;
    }
    let Some(slot) = w.node.reserve_connection(w.cfg.client.connection_limit) else {
        crate::metrics::connection_limit_reached();
        let _ = admitted.send(Err("connection limit reached"));
        return;
    };
    let sock = match monoio::net::UnixStream::from_std(sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(worker = w.id, error = %e, "uni_grpc: cannot register the stream's socket");
            let _ = admitted.send(Err("cannot open the stream"));
            return;
        }
    };
    if admitted.send(Ok(())).is_err() {
        // The call was cancelled meanwhile.
        return;
    }
    monoio::spawn(run(w.clone(), slot, req, metadata, sock));
}

/// What the session reads while it streams: only the end of the socket.
const READ_IDLE: usize = 64;

async fn run(
    w: Rc<Worker>,
    slot: ConnectionSlot,
    req: ConnectReq,
    metadata: Vec<(String, String)>,
    sock: monoio::net::UnixStream,
) {
    let fd = sock.as_raw_fd();
    let (mut rd, wr) = sock.into_split();
    let id = Session::new_client_id(&w, false);
    let client = Client::new(id, Format::Protobuf, false, Framing::UniGrpc, w.cfg.client.queue_max_size);
    let (s, writer) = open_on_socket(&w, client, None, wr, crate::io::Socket::plain(fd), w.cfg.websocket.write_timeout);
    s.keep_grpc_metadata(metadata);
    Box::pin(s.connect_uni(req)).await;
    if !s.is_closed() {
        // A read ends when the gRPC side closes its end, or when the writer shut the socket
        // after a server close.
        let mut buf = BytesMut::new();
        loop {
            buf.clear();
            prepare_read(&mut buf, false, READ_IDLE);
            let (res, b) = read_more(&mut rd, std::mem::take(&mut buf)).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                break;
            }
        }
        s.vanished();
    }
    finish(s, writer, slot).await;
}
