//! A small blocking WebSocket client (RFC 6455) over std sockets, written here independently of
//! the server's codec: masked client frames out, server frames in (never masked, fragmented or
//! with RSV bits: the server does none of that).
//!
//! [`Ws`] upgrades a connection and reads and writes whole frames. The pieces under it are
//! public for tests that write what a client must not: [`client_frame`] builds one frame
//! (unmasked, unfinished, or to be cut short), [`Ws::send`] writes any bytes, and the socket
//! `s` and the bytes not yet parsed `buf` are fields.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use sha1::{Digest, Sha1};

pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The Centrifugo client endpoint (what [`Ws::open`] upgrades).
pub const WS_PATH: &str = "/connection/websocket";

/// The `Sec-WebSocket-Key` of RFC 6455's example, sent by [`Ws::open`].
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The read timeout a connection starts with (the handshake and [`Ws::frame`]).
pub const WS_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One client frame: FIN flag, opcode, and the payload, masked with a fixed key when `masked`
/// (an unmasked client frame is a protocol error the server must refuse).
pub fn client_frame(fin: bool, op: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | op];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A server frame.
#[derive(Debug)]
pub struct Frame {
    pub op: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The code of a close frame; `None` when it has none.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.op, CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// Code and reason of a close frame (which must have a code and a UTF-8 reason).
    pub fn close(&self) -> (u16, String) {
        let code = self.close_code().unwrap_or_else(|| panic!("close frame without a code: {self:?}"));
        let reason = String::from_utf8(self.payload[2..].to_vec()).expect("close reason must be UTF-8");
        (code, reason)
    }
}

/// Parses one server frame from the front of `buf`: `(frame, bytes used)`, or `None` when
/// more bytes are needed. Server frames must be unmasked, final and without RSV bits.
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[0] & 0x70, 0, "server frame with RSV bits set: {:02x}", buf[0]);
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    assert!(buf[0] & 0x80 != 0, "unexpected fragmented server frame");
    Some((Frame { op: buf[0] & 0x0f, payload: buf[at..at + len].to_vec() }, at + len))
}

/// The JSON messages of a text frame (several may share one frame, `\n`-separated).
pub fn json_lines(payload: &[u8]) -> Vec<Value> {
    payload
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!("a message from the server is not JSON ({e}): {:?}", String::from_utf8_lossy(l))
            })
        })
        .collect()
}

/// The upgrade request for `path` on `host` with `key` and `headers` added.
pub fn upgrade_request(host: &str, path: &str, key: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A WebSocket client connection.
pub struct Ws {
    pub s: TcpStream,
    /// Bytes read but not parsed yet.
    pub buf: Vec<u8>,
}

impl Ws {
    /// Upgrades `s` at `path` with `key` and `headers`: `Ok` on 101 (whose accept key must be
    /// right), else `Err(status)`.
    pub fn upgrade(mut s: TcpStream, path: &str, key: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(WS_READ_TIMEOUT)).unwrap();
        let host = s.peer_addr().expect("peer address").to_string();
        s.write_all(&upgrade_request(&host, path, key, headers)).expect("send the upgrade request");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).unwrap_or_else(|e| panic!("GET {path} {headers:?}: reading the response: {e}"));
            assert!(n > 0, "GET {path} {headers:?}: EOF during the handshake: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
        if status != 101 {
            return Err(status);
        }
        assert!(head.starts_with("HTTP/1.1 101 "), "GET {path} {headers:?}: handshake response: {head}");
        let accept = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-accept")))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("GET {path} {headers:?}: no Sec-WebSocket-Accept: {head}"));
        let mut h = Sha1::new();
        h.update(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        assert_eq!(accept, want, "GET {path} {headers:?}: accept key");
        Ok(Ws { s, buf: buf[end..].to_vec() })
    }

    /// A connection to [`WS_PATH`] of `addr`: `Ok` on 101, else `Err(status)`.
    pub fn try_open(addr: SocketAddr) -> Result<Ws, u16> {
        Ws::upgrade(TcpStream::connect(addr).expect("connect"), WS_PATH, SAMPLE_KEY, &[])
    }

    /// A connection to [`WS_PATH`] of `addr`; panics unless upgraded.
    pub fn open(addr: SocketAddr) -> Ws {
        Ws::try_open(addr).unwrap_or_else(|status| panic!("upgrade refused with {status}"))
    }

    /// Like [`Ws::open`], with a tiny receive buffer, so the kernel absorbs little of what the
    /// server sends while the test does not read.
    pub fn open_small_rcvbuf(addr: SocketAddr) -> Ws {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).expect("connect");
        Ws::upgrade(sock.into(), WS_PATH, SAMPLE_KEY, &[])
            .unwrap_or_else(|status| panic!("upgrade refused with {status}"))
    }

    /// Writes `bytes` as they are (whole frames, parts of frames, anything).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    /// One final masked text frame with `v`.
    pub fn send_json(&mut self, v: &Value) {
        self.send(&client_frame(true, TEXT, v.to_string().as_bytes(), true)).expect("send a command");
    }

    /// The next frame, reading with the socket's read timeout; `UnexpectedEof` at EOF.
    pub fn frame(&mut self) -> io::Result<Frame> {
        self.next_frame(None)
    }

    /// The next frame, or `TimedOut` once `deadline` passes (whatever the read timeout was).
    pub fn frame_until(&mut self, deadline: Instant) -> io::Result<Frame> {
        self.next_frame(Some(deadline))
    }

    fn next_frame(&mut self, deadline: Option<Instant>) -> io::Result<Frame> {
        loop {
            if let Some((f, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(f);
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.s.set_read_timeout(Some(left))?;
            }
            let mut tmp = [0u8; 65536];
            let n = self.s.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF"));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Skips data frames until the close frame (each read waits up to `within`); returns its
    /// code and reason.
    pub fn expect_close(&mut self, within: Duration) -> (u16, String) {
        self.s.set_read_timeout(Some(within)).unwrap();
        loop {
            match self.frame() {
                Ok(f) if f.op == CLOSE => return f.close(),
                Ok(_) => {}
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    }

    /// True when EOF (or a reset) arrives within `within`, skipping any data before it.
    pub fn at_eof(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut tmp = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return false,
                Err(_) => return true,
            }
        }
    }
}

/// A JSON-protocol client of the tests: commands numbered from 1, each answered by its reply
/// or by the close code the server ends the connection with.
pub struct JsonClient {
    pub ws: Ws,
    pub id: u32,
}

impl JsonClient {
    pub fn open(s: &crate::util::Server) -> JsonClient {
        let ws = Ws::open(s.addr());
        ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        JsonClient { ws, id: 0 }
    }

    /// Sends `{"id": N, <body>}`: the reply, or the close code.
    pub fn call(&mut self, body: Value) -> Result<Value, u16> {
        self.id += 1;
        let mut cmd = serde_json::json!({ "id": self.id });
        crate::util::merge(&mut cmd, body);
        self.ws.send_json(&cmd);
        loop {
            let f = self.ws.frame().expect("reading a reply");
            if f.op == CLOSE {
                return Err(f.close().0);
            }
            if let Some(r) = json_lines(&f.payload).into_iter().find(|v| v["id"] == self.id) {
                return Ok(r);
            }
        }
    }
}
