//! TLS for connections whose reading and writing run as two tasks (an HTTP connection's
//! reader and writer, a Redis connection's reader and writer).
//!
//! The two halves share one rustls session but never an I/O buffer: the read half owns the
//! TCP read half and the bytes read ahead, the write half owns the TCP write half and its
//! output, and neither holds the session across an await. (monoio-rustls's stream, split,
//! lets a read that meets a TLS error write the alert through the buffer the writer is in the
//! middle of using, which panics; its split halves are not used for that reason.) Records
//! the read side makes the session send (alerts, key updates) go out with the next write.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData};

/// The read half of a TLS connection.
pub struct TlsRead<C> {
    io: OwnedReadHalf<TcpStream>,
    session: Rc<RefCell<C>>,
    /// TLS bytes read from the socket and not yet given to the session.
    raw: BytesMut,
    /// The peer closed the TCP connection (the session has been told).
    eof: bool,
}

/// The write half of a TLS connection.
pub struct TlsWrite<C> {
    io: OwnedWriteHalf<TcpStream>,
    session: Rc<RefCell<C>>,
    out: Vec<u8>,
}

/// A server-side TLS handshake on an accepted connection.
pub async fn accept(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
) -> io::Result<(TlsRead<ServerConnection>, TlsWrite<ServerConnection>)> {
    let session = ServerConnection::new(config).map_err(io::Error::other)?;
    handshake(stream, session).await
}

/// A client-side TLS handshake on a connected socket.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    stream: TcpStream,
) -> io::Result<(TlsRead<ClientConnection>, TlsWrite<ClientConnection>)> {
    let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
    handshake(stream, session).await
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Drives the handshake to its end, then splits. Bytes the peer sent after its last
/// handshake message stay with the read half.
async fn handshake<C, SD>(mut stream: TcpStream, mut session: C) -> io::Result<(TlsRead<C>, TlsWrite<C>)>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    let mut raw = BytesMut::with_capacity(8 << 10);
    let mut out = Vec::new();
    loop {
        while session.wants_write() {
            out.clear();
            session.write_tls(&mut out)?;
            let (res, o) = stream.write_all(out).await;
            out = o;
            res?;
        }
        if !session.is_handshaking() {
            break;
        }
        if raw.is_empty() {
            if raw.capacity() < 4096 {
                raw.reserve(8 << 10);
            }
            let (res, b) = super::read_more(&mut stream, raw).await;
            raw = b;
            if res? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"));
            }
        }
        let n = session.read_tls(&mut &raw[..])?;
        raw.advance(n);
        if let Err(e) = session.process_new_packets() {
            // The alert the session made explains the failure to the peer.
            out.clear();
            let _ = session.write_tls(&mut out);
            let _ = stream.write_all(out).await;
            return Err(invalid(e));
        }
    }
    let session = Rc::new(RefCell::new(session));
    let (rd, wr) = stream.into_split();
    Ok((TlsRead { io: rd, session: session.clone(), raw, eof: false }, TlsWrite { io: wr, session, out }))
}

impl<C, SD> TlsRead<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn read_into(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut s = self.session.borrow_mut();
                match s.reader().read(dst) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if !self.raw.is_empty() || self.eof {
                    // `read_tls` of an empty slice tells the session the peer is gone.
                    let n = s.read_tls(&mut &self.raw[..])?;
                    self.raw.advance(n);
                    s.process_new_packets().map_err(invalid)?;
                    if n == 0 && self.eof {
                        // Nothing more will come: the reader says end (close_notify) or error.
                        return match s.reader().read(dst) {
                            Ok(n) => Ok(n),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                            Err(e) => Err(e),
                        };
                    }
                    continue;
                }
            }
            if self.raw.capacity() < 4096 {
                self.raw.reserve(16 << 10);
            }
            let (res, b) = super::read_more(&mut self.io, std::mem::take(&mut self.raw)).await;
            self.raw = b;
            if res? == 0 {
                self.eof = true;
            }
        }
    }
}

impl<C, SD> AsyncReadRent for TlsRead<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the buffer is valid for `bytes_total` bytes; only the first `n` written are
        // marked initialized.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        let r = self.read_into(dst).await;
        if let Ok(n) = r {
            unsafe { buf.set_init(n) };
        }
        (r, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let n = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(raw) => self.read(raw).await.0,
            None => Ok(0),
        };
        if let Ok(n) = n {
            unsafe { buf.set_init(n) };
        }
        (n, buf)
    }
}

impl<C, SD> TlsWrite<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Encrypts `src` (what the session takes of it) and writes every pending record.
    async fn write_from(&mut self, src: &[u8]) -> io::Result<usize> {
        let n = {
            let mut s = self.session.borrow_mut();
            let n = if src.is_empty() { 0 } else { s.writer().write(src)? };
            self.out.clear();
            while s.wants_write() {
                s.write_tls(&mut self.out)?;
            }
            n
        };
        if !self.out.is_empty() {
            let (res, o) = self.io.write_all(std::mem::take(&mut self.out)).await;
            self.out = o;
            res?;
        }
        Ok(n)
    }
}

impl<C, SD> AsyncWriteRent for TlsWrite<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the buffer holds `bytes_init` initialized bytes for the call's duration.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let r = self.write_from(src).await;
        (r, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let n = match unsafe { RawBuf::new_from_iovec(&buf) } {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (n, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.write_from(&[]).await?;
        self.io.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.session.borrow_mut().send_close_notify();
        self.write_from(&[]).await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `localhost` made at test time would need a CA crate; the integration
    /// tests (tests/it/tls.rs, redis_tls.rs) run these halves against curl, the SDKs and
    /// redis-server. Here: a handshake that meets garbage fails cleanly, without a panic.
    #[test]
    fn garbage_instead_of_a_handshake_fails_cleanly() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = monoio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let (r, _) = s.write_all(b"\x16\x03\x01\x00\x05hello, not tls at all".to_vec()).await;
                r.unwrap();
                s
            });
            let (stream, _) = listener.accept().await.unwrap();
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
            let r = accept(Arc::new(config), stream).await;
            assert!(r.is_err());
            drop(client.await);
        });
    }
}
