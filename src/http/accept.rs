//! Where an accepted connection enters the HTTP server: as it is, or after a TLS handshake
//! (see `crate::io::tls` for the halves a TLS session is served through).

use std::rc::Rc;

use monoio::io::Splitable;
use monoio::net::TcpStream;

use super::serve::serve_stream;
use crate::io::Socket;
use crate::runtime::worker::Worker;

/// Serves one accepted plain connection until it closes.
pub async fn serve(w: Rc<Worker>, stream: TcpStream, endpoints: super::Endpoints) {
    use std::os::fd::AsRawFd;
    let _ = stream.set_nodelay(true);
    let sock = Socket::plain(stream.as_raw_fd());
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let (rd, wr) = stream.into_split();
    serve_stream(w, rd, wr, sock, peer, endpoints).await
}

/// Serves one accepted connection under TLS: the handshake must finish within
/// `http_server.read_header_timeout` (10 s when that is off); a failed one is logged at debug.
pub async fn serve_tls(
    w: Rc<Worker>,
    tls: std::sync::Arc<rustls::ServerConfig>,
    stream: TcpStream,
    endpoints: super::Endpoints,
) {
    use std::os::fd::AsRawFd;
    let _ = stream.set_nodelay(true);
    let sock = Socket { fd: stream.as_raw_fd(), direct: false };
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let limit = match w.cfg.http_server.read_header_timeout {
        d if d.is_zero() => std::time::Duration::from_secs(10),
        d => d,
    };
    match monoio::time::timeout(limit, crate::io::tls::accept(tls, stream)).await {
        Ok(Ok((rd, wr))) => serve_stream(w, rd, wr, sock, peer, endpoints).await,
        Ok(Err(e)) => {
            tracing::debug!(remote = %peer.map(|p| p.to_string()).unwrap_or_default(), error = %e, "TLS handshake failed")
        }
        Err(_) => tracing::debug!(remote = %peer.map(|p| p.to_string()).unwrap_or_default(), "TLS handshake timed out"),
    }
}
