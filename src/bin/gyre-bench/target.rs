//! Where the load goes: parsing `--target`, a blocking reachability check before anything is
//! started (so a server that is down gives one clear error instead of N failed clients), and
//! the asynchronous connect used by every client, optionally from a chosen 127.0.0.x source.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

use crate::Fail;

/// Why a client connection ended or could not be set up.
#[derive(Debug, Clone)]
pub enum ClientErr {
    /// Network failure, timeout or an unexpected close.
    Io(String),
    /// The server refused what we asked (credentials, permissions): retrying cannot help and
    /// the run stops with this message.
    Rejected(String),
    /// The server closed the WebSocket with this code and reason.
    Closed(u16, String),
    /// The server answered a command (`what`: connect, subscribe) with this error: retrying
    /// cannot help and the run stops with it.
    Refused { what: &'static str, code: u32, message: String },
}

impl ClientErr {
    pub fn io(what: &str, e: impl std::fmt::Display) -> ClientErr {
        ClientErr::Io(format!("{what}: {e}"))
    }

    /// Terminal WebSocket close codes (3500-3999, 4500-4999) mean "do not reconnect".
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientErr::Rejected(_) | ClientErr::Refused { .. } => true,
            ClientErr::Closed(code, _) => (3500..4000).contains(code) || (4500..5000).contains(code),
            ClientErr::Io(_) => false,
        }
    }
}

impl std::fmt::Display for ClientErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientErr::Io(m) | ClientErr::Rejected(m) => f.write_str(m),
            ClientErr::Closed(code, reason) => write!(f, "closed by the server with code {code} ({reason})"),
            ClientErr::Refused { what, code, message } => {
                write!(f, "{what} rejected: {code} {message}{}", crate::ws::hint(what, *code))
            }
        }
    }
}

/// Smallest free space offered to a read.
const READ_MIN: usize = 4 * 1024;
/// Largest a busy connection's read buffer grows to.
const READ_MAX: usize = 256 * 1024;

/// A read half with its buffer. Reads append after the buffered bytes (monoio hands a
/// buffer's whole capacity to the kernel from its start, so the free part is passed as a
/// slice); the buffer doubles while reads fill it and shrinks back when drained, so idle
/// connections stay small.
pub struct Reader<R> {
    pub rd: R,
    pub buf: BytesMut,
    last_full: bool,
}

impl<R: AsyncReadRent> Reader<R> {
    pub fn new(rd: R) -> Reader<R> {
        Reader { rd, buf: BytesMut::with_capacity(READ_MIN), last_full: false }
    }

    /// Reads more bytes; `Ok(0)` at EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.is_empty() && self.buf.capacity() > READ_MAX / 4 && !self.last_full {
            self.buf = BytesMut::with_capacity(READ_MIN);
        }
        // After a read that filled the buffer offer twice as much; a buffer consumed to its
        // end has no capacity left at all, so the floor matters.
        let grow = if self.last_full { self.buf.capacity().clamp(READ_MIN, READ_MAX) } else { READ_MIN };
        if self.buf.capacity() - self.buf.len() < grow {
            self.buf.reserve(grow);
        }
        let (len, cap) = (self.buf.len(), self.buf.capacity());
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = self.rd.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        let n = res?;
        self.last_full = n == cap - len;
        Ok(n)
    }

    /// Reads until `buf` holds at least one more byte, or fails at EOF.
    pub async fn fill_some(&mut self, what: &str) -> Result<(), ClientErr> {
        match self.fill().await {
            Ok(0) => Err(ClientErr::Io(format!("{what}: connection closed by the server"))),
            Ok(_) => Ok(()),
            Err(e) => Err(ClientErr::io(what, e)),
        }
    }
}

/// Which protocol family the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Centrifugo-compatible: WebSocket clients plus the HTTP API.
    Centrifugo,
    Redis,
    Nats,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Centrifugo => "centrifugo",
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }
}

/// A parsed `--target`.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// `host:port` as given, for the HTTP `Host` header.
    pub host: String,
}

impl Target {
    /// Accepts `http://`, `ws://` (both Centrifugo-compatible), `redis://`, `nats://` and a
    /// bare `host:port` (Centrifugo-compatible). A path after the authority is ignored: the
    /// endpoints come from `--ws-path` / `--api-path`.
    pub fn parse(url: &str) -> Result<Target, Fail> {
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".to_string(), url),
        };
        let (kind, default_port) = match scheme.as_str() {
            "http" | "ws" => (Kind::Centrifugo, 80),
            "redis" => (Kind::Redis, 6379),
            "nats" => (Kind::Nats, 4222),
            "https" | "wss" | "rediss" | "tls" => {
                return Err(Fail::setup(format!("{url}: TLS targets are not supported")))
            }
            other => return Err(Fail::setup(format!("{url}: unknown scheme {other:?}"))),
        };
        let authority = rest.split('/').next().unwrap_or("");
        // Credentials in the URL (redis://:pass@host) are not supported; drop them loudly.
        if authority.contains('@') {
            return Err(Fail::setup(format!("{url}: credentials in the target URL are not supported")));
        }
        if authority.is_empty() {
            return Err(Fail::setup(format!("{url}: no host")));
        }
        let host = if has_port(authority) { authority.to_string() } else { format!("{authority}:{default_port}") };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| Fail::setup(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| Fail::setup(format!("{host} resolves to no address")))?;
        Ok(Target { kind, addr, host })
    }

    /// Parses a comma-separated list of targets (the nodes of one cluster): at least one, all
    /// of one kind.
    pub fn parse_list(list: &str) -> Result<Vec<Target>, Fail> {
        let nodes = list
            .split(',')
            .map(|url| match url.trim() {
                "" => Err(Fail::setup(format!("{list:?}: empty entry in the target list"))),
                url => Target::parse(url),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.iter().any(|t| t.kind != nodes[0].kind) {
            return Err(Fail::setup(format!("{list}: the targets of one run must all be of one kind")));
        }
        Ok(nodes)
    }

    /// Fails with a message naming the address when nothing accepts connections there.
    pub fn check_reachable(&self) -> Result<(), Fail> {
        match StdTcpStream::connect_timeout(&self.addr, Duration::from_secs(3)) {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = match e.kind() {
                    io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out after 3 s".to_string(),
                    _ => e.to_string(),
                };
                let name = if self.host == self.addr.to_string() {
                    self.host.clone()
                } else {
                    format!("{} ({})", self.host, self.addr)
                };
                Err(Fail::setup(format!(
                    "cannot connect to {name}: {why} — is the {} server running there?",
                    self.kind.name()
                )))
            }
        }
    }

    /// Whether source addresses other than 127.0.0.1 can reach the target.
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// True when the authority ends in `:port` (IPv6 literals are bracketed: `[::1]:8000`).
fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => {
            !authority[i + 1..].is_empty()
                && authority[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && !authority.ends_with(']')
        }
        None => false,
    }
}

/// Source address of client `i` when spreading over 127.0.0.1..127.0.0.`n`: past ~28k
/// connections one source address runs out of ephemeral ports towards one server port.
pub fn source_for(i: usize, n: u8) -> Option<Ipv4Addr> {
    if n <= 1 {
        return None;
    }
    Some(Ipv4Addr::new(127, 0, 0, 1 + (i % n as usize) as u8))
}

/// Opens a TCP connection (no Nagle: the load is many small messages), from `source` if set.
pub async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let stream = match (source, addr.ip()) {
        (Some(src), IpAddr::V4(_)) => connect_from(addr, src).await?,
        _ => TcpStream::connect_addr(addr).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Binds to `src` before connecting. `IP_BIND_ADDRESS_NO_PORT` lets the kernel pick the port at
/// connect time, so ports are shared across destinations instead of reserved per bind.
async fn connect_from(addr: SocketAddr, src: Ipv4Addr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a correctly sized int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.bind(&SockAddr::from(SocketAddr::new(IpAddr::V4(src), 0)))?;
    sock.set_nonblocking(true)?;
    match sock.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: ownership of the descriptor moves from the socket2 socket to the std stream.
    let std_stream = unsafe { StdTcpStream::from_raw_fd(sock.into_raw_fd()) };
    let stream = TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    match so_error(stream.as_raw_fd()) {
        0 => Ok(stream),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// The pending error of a socket (`SO_ERROR`): how a non-blocking connect reports failure.
fn so_error(fd: i32) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid descriptor, output buffer of the advertised size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    }
    err
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("redis://127.0.0.1").unwrap();
        assert_eq!((t.kind, t.addr.port()), (Kind::Redis, 6379));
        let t = Target::parse("127.0.0.1:9000").unwrap();
        assert_eq!((t.kind, t.addr.port()), (Kind::Centrifugo, 9000));
        let t = Target::parse("ws://127.0.0.1:8000/connection/websocket").unwrap();
        assert_eq!((t.kind, t.host.as_str()), (Kind::Centrifugo, "127.0.0.1:8000"));
        assert!(Target::parse("ftp://x").is_err());
    }

    #[test]
    fn parses_target_lists() {
        let t = Target::parse_list("http://127.0.0.1:8000, 127.0.0.1:8001").unwrap();
        assert_eq!(t.iter().map(|t| t.addr.port()).collect::<Vec<_>>(), [8000, 8001]);
        assert_eq!(Target::parse_list("redis://127.0.0.1").unwrap().len(), 1);
        assert!(Target::parse_list("http://127.0.0.1:8000,redis://127.0.0.1").is_err());
        assert!(Target::parse_list("http://127.0.0.1:8000,").is_err());
    }

    #[test]
    fn spreads_sources() {
        assert_eq!(source_for(5, 1), None);
        assert_eq!(source_for(0, 9), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source_for(10, 9), Some(Ipv4Addr::new(127, 0, 0, 2)));
    }
}
