//! Opening a session on a socket: whatever the transport, its client writes through the
//! worker's flush pass, and its writer task is started only when first needed (see
//! `crate::client::outbox`).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_util::FutureExt;

use super::{RawStart, Session};
use crate::client::Client;
use crate::runtime::worker::Worker;

/// The writer task of a session, once it has been started.
pub type WriterSlot = Rc<Cell<Option<monoio::task::JoinHandle<()>>>>;

/// Opens a session on `client`, whose frames are written straight to the socket when it may
/// be (`sock.direct`; the write half `wr` goes to the writer task when the socket is full or
/// the session closes), else always through `wr`. When the writer ends, the socket is shut
/// both ways so the transport's reader ends too.
pub fn open_on_socket<W>(
    w: &Rc<Worker>,
    mut client: Client,
    raw: Option<RawStart>,
    wr: W,
    sock: crate::io::Socket,
    write_timeout: Duration,
) -> (Rc<Session>, WriterSlot)
where
    W: monoio::io::AsyncWriteRent + 'static,
{
    if sock.direct {
        client.write_directly(sock.fd, w.hub.writes().clone());
    } else {
        client.write_through_writer(w.hub.writes().clone());
    }
    let fd = sock.fd;
    let client = Rc::new(client);
    let writer = WriterSlot::default();
    let (c, handle) = (client.clone(), writer.clone());
    client.out.start_writer_on_demand(Box::new(move || {
        handle.set(Some(monoio::spawn(async move {
            let mut wr = wr;
            c.out.run_writer(&mut wr, write_timeout).await;
            // Wake the reader too: a closed session must not keep its socket open. Done while
            // the write half is held: until then the descriptor is this connection's.
            // SAFETY: `fd` is the socket `wr` writes to, still open.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            drop(wr);
        })));
    }));
    (Session::open(w, client, raw, super::rules::peer_ip(fd)), writer)
}

/// A transport's session task: its read loop (`reading`), then [`finish`]. `then` rather than
/// an async block awaiting the loop: the block would keep what it captured (the decoder, the
/// buffer, the reader) beside the loop's future, which holds them already, for the
/// connection's whole life. The reader the loop hands back is kept until the session has
/// finished, so the socket stays open until then, as when the task held everything.
pub fn read_then_finish<R, S>(
    reading: impl Future<Output = R>,
    s: Rc<Session>,
    writer: WriterSlot,
    slot: S,
) -> impl Future<Output = ()> {
    reading.then(move |rd| async move {
        finish(s, writer, slot).await;
        drop(rd);
    })
}

/// Ends a transport's session: releases what it holds, lets the writer finish (its close
/// frames), and frees the connection's place in the node's count (`slot`) last.
pub async fn finish<S>(s: Rc<Session>, writer: WriterSlot, slot: S) {
    s.cleanup();
    // Never needed: the write half is released here.
    drop(s.client.out.take_start());
    if let Some(h) = writer.take() {
        h.await;
    }
    drop(slot);
}
