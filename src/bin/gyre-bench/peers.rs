//! Subscribers for the peer servers, so they run the very workload the Centrifugo clients run:
//! a Redis connection in `SUBSCRIBE` mode (RESP2) and a NATS connection with one `SUB`.
//!
//! Both parse only the framing, to know where complete messages end; the payloads are then
//! found by scanning the complete bytes at once, exactly as for a WebSocket frame.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Buf;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::payload::Track;
use crate::stats::Local;
use crate::target::{self, ClientErr, Reader};

/// One RESP2 value, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Resp<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    Bulk(Option<&'a [u8]>),
    Array(Vec<Resp<'a>>),
}

/// Parses the value at the front of `buf`: `Ok(None)` until it is complete, then the value
/// and its length.
pub fn resp(buf: &[u8]) -> Result<Option<(Resp<'_>, usize)>, String> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[1..eol];
    let after = eol + 2;
    let num = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP length {:?}", String::from_utf8_lossy(line)))
    };
    match buf.first() {
        Some(b'+') => Ok(Some((Resp::Simple(line), after))),
        Some(b'-') => Ok(Some((Resp::Error(line), after))),
        Some(b':') => Ok(Some((Resp::Int(num()?), after))),
        Some(b'$') => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), after)));
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Resp::Bulk(Some(&buf[after..end])), end + 2)))
        }
        Some(b'*') => {
            let n = num()?;
            let mut items = Vec::with_capacity(n.max(0) as usize);
            let mut pos = after;
            for _ in 0..n.max(0) {
                match resp(&buf[pos..])? {
                    Some((v, len)) => {
                        items.push(v);
                        pos += len;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(items), pos)))
        }
        _ => Err(format!("unexpected RESP type byte {:?}", buf[0] as char)),
    }
}

/// A RESP command.
pub fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A Redis connection subscribed to one channel (or, with none, just connected).
pub struct RedisSub {
    conn: Reader<TcpStream>,
}

impl RedisSub {
    pub async fn open(
        addr: SocketAddr,
        source: Option<Ipv4Addr>,
        channel: Option<&str>,
    ) -> Result<RedisSub, ClientErr> {
        let stream =
            target::connect(addr, source).await.map_err(|e| ClientErr::io(&format!("connect to {addr}"), e))?;
        let mut s = RedisSub { conn: Reader::new(stream) };
        let mut out = Vec::new();
        match channel {
            Some(ch) => resp_command(&mut out, &[b"SUBSCRIBE", ch.as_bytes()]),
            None => resp_command(&mut out, &[b"PING"]),
        }
        let (res, _) = s.conn.rd.write_all(out).await;
        res.map_err(|e| ClientErr::io("redis write", e))?;
        loop {
            let parsed = resp(&s.conn.buf).map_err(ClientErr::Io)?;
            let Some((v, len)) = parsed else {
                s.conn.fill_some("redis").await?;
                continue;
            };
            let done = match v {
                Resp::Error(e) => return Err(ClientErr::Rejected(format!("redis: {}", String::from_utf8_lossy(e)))),
                Resp::Simple(b"PONG") => true,
                Resp::Array(items) => matches!(items.first(), Some(Resp::Bulk(Some(b"subscribe")))),
                _ => false,
            };
            s.conn.buf.advance(len);
            if done {
                return Ok(s);
            }
        }
    }

    /// Reads messages until the connection ends; returns why.
    pub async fn run(&mut self, local: &Local, track: &RefCell<Track>) -> ClientErr {
        loop {
            // Find where the complete messages end, then scan them all in one go.
            let mut end = 0;
            loop {
                match resp(&self.conn.buf[end..]) {
                    Ok(Some((Resp::Error(e), _))) => {
                        return ClientErr::Io(format!("redis: {}", String::from_utf8_lossy(e)))
                    }
                    Ok(Some((_, len))) => end += len,
                    Ok(None) => break,
                    Err(e) => return ClientErr::Io(e),
                }
            }
            if end > 0 {
                local.deliver(&mut track.borrow_mut(), &self.conn.buf[..end]);
                self.conn.buf.advance(end);
            }
            if let Err(e) = self.conn.fill_some("redis").await {
                return e;
            }
        }
    }
}

/// One NATS protocol item at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Nats<'a> {
    /// `MSG subject sid [reply] len` and its payload.
    Msg(&'a [u8]),
    /// Any other line (`INFO`, `PING`, `PONG`, `+OK`, `-ERR ...`), without CRLF.
    Line(&'a [u8]),
}

/// Parses the item at the front of `buf`: `None` until complete, then the item and its length.
pub fn nats(buf: &[u8]) -> Result<Option<(Nats<'_>, usize)>, String> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[..eol];
    if !line.starts_with(b"MSG ") {
        return Ok(Some((Nats::Line(line), eol + 2)));
    }
    let len: usize = line
        .rsplit(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad NATS MSG line {:?}", String::from_utf8_lossy(line)))?;
    let start = eol + 2;
    if buf.len() < start + len + 2 {
        return Ok(None);
    }
    Ok(Some((Nats::Msg(&buf[start..start + len]), start + len + 2)))
}

/// What every NATS client sends first: no `+OK` per command.
pub const NATS_CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"gyre-bench\"}\r\n";

/// A NATS connection with one subscription (or, with none, just connected).
pub struct NatsSub {
    conn: Reader<TcpStream>,
}

impl NatsSub {
    pub async fn open(addr: SocketAddr, source: Option<Ipv4Addr>, channel: Option<&str>) -> Result<NatsSub, ClientErr> {
        let stream =
            target::connect(addr, source).await.map_err(|e| ClientErr::io(&format!("connect to {addr}"), e))?;
        let mut s = NatsSub { conn: Reader::new(stream) };
        let mut out = NATS_CONNECT.to_vec();
        if let Some(ch) = channel {
            out.extend_from_slice(format!("SUB {ch} 1\r\n").as_bytes());
        }
        // The PONG tells that the server has processed the SUB.
        out.extend_from_slice(b"PING\r\n");
        s.write(out).await?;
        loop {
            let parsed = nats(&s.conn.buf).map_err(ClientErr::Io)?;
            let Some((item, len)) = parsed else {
                s.conn.fill_some("nats").await?;
                continue;
            };
            let line = match item {
                Nats::Line(l) => l.to_vec(),
                Nats::Msg(_) => Vec::new(),
            };
            s.conn.buf.advance(len);
            if line.starts_with(b"-ERR") {
                return Err(ClientErr::Rejected(format!("nats: {}", String::from_utf8_lossy(&line))));
            } else if line == b"PING" {
                s.write(b"PONG\r\n".to_vec()).await?;
            } else if line == b"PONG" {
                return Ok(s);
            }
        }
    }

    async fn write(&mut self, out: Vec<u8>) -> Result<(), ClientErr> {
        let (res, _) = self.conn.rd.write_all(out).await;
        res.map(|_| ()).map_err(|e| ClientErr::io("nats write", e))
    }

    /// Reads messages until the connection ends; returns why.
    pub async fn run(&mut self, local: &Local, track: &RefCell<Track>) -> ClientErr {
        loop {
            let mut end = 0;
            let mut ping = false;
            loop {
                match nats(&self.conn.buf[end..]) {
                    Ok(Some((Nats::Line(l), len))) => {
                        if l.starts_with(b"-ERR") {
                            return ClientErr::Io(format!("nats: {}", String::from_utf8_lossy(l)));
                        }
                        ping |= l == b"PING";
                        end += len;
                    }
                    Ok(Some((Nats::Msg(_), len))) => end += len,
                    Ok(None) => break,
                    Err(e) => return ClientErr::Io(e),
                }
            }
            if end > 0 {
                local.deliver(&mut track.borrow_mut(), &self.conn.buf[..end]);
                self.conn.buf.advance(end);
            }
            if ping {
                if let Err(e) = self.write(b"PONG\r\n".to_vec()).await {
                    return e;
                }
            }
            if let Err(e) = self.conn.fill_some("nats").await {
                return e;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp() {
        let push = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n:1\r\n";
        let (v, len) = resp(push).unwrap().unwrap();
        assert_eq!(
            v,
            Resp::Array(vec![Resp::Bulk(Some(b"message")), Resp::Bulk(Some(b"ch")), Resp::Bulk(Some(b"hello"))])
        );
        assert_eq!(resp(&push[len..]).unwrap().unwrap(), (Resp::Int(1), 4));
        assert_eq!(resp(&push[..len - 1]).unwrap(), None);
        assert_eq!(resp(b"-ERR x\r\n").unwrap().unwrap().0, Resp::Error(b"ERR x"));
        let mut out = Vec::new();
        resp_command(&mut out, &[b"PUBLISH", b"c", b"xy"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$2\r\nxy\r\n");
    }

    #[test]
    fn parses_nats() {
        let buf = b"MSG ch 1 5\r\nhello\r\nPING\r\nMSG ch 1 reply 2\r\nhi\r\n";
        let (m, len) = nats(buf).unwrap().unwrap();
        assert_eq!(m, Nats::Msg(b"hello"));
        let (l, len2) = nats(&buf[len..]).unwrap().unwrap();
        assert_eq!(l, Nats::Line(b"PING"));
        assert_eq!(nats(&buf[len + len2..]).unwrap().unwrap().0, Nats::Msg(b"hi"));
        assert_eq!(nats(&buf[..len - 1]).unwrap(), None);
    }
}
