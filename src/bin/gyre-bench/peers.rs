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
    let Some(eol) = resp_line_end(buf, 0)? else {
        return Ok(None);
    };
    let line = &buf[1..eol];
    let after = eol + 2;
    let num = || resp_num(line);
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

/// The end of the line that starts at `buf[at]`: the index of its `\r\n` (`None` until the
/// line is complete). A single-byte search: `memmem::find` builds its searcher on every call,
/// which cost the receive loop as much as the rest of the framing.
fn line_end(buf: &[u8], at: usize) -> Result<Option<usize>, String> {
    let Some(i) = buf.get(at..).and_then(|b| memchr::memchr(b'\n', b)) else { return Ok(None) };
    let nl = at + i;
    if nl == at || buf[nl - 1] != b'\r' {
        return Err(format!("line not ended by CRLF: {:?}", String::from_utf8_lossy(&buf[at..=nl])));
    }
    Ok(Some(nl - 1))
}

/// The end of the RESP line that starts at `buf[at]` (see [`line_end`]), which holds at least
/// its type byte.
fn resp_line_end(buf: &[u8], at: usize) -> Result<Option<usize>, String> {
    match line_end(buf, at)? {
        Some(eol) if eol == at => Err("empty RESP line".into()),
        eol => Ok(eol),
    }
}

/// A RESP length or count: optional `-`, then at most 18 digits.
fn resp_num(line: &[u8]) -> Result<i64, String> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad RESP length {:?}", String::from_utf8_lossy(line)));
    }
    let n = digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Ok(if neg { -n } else { n })
}

/// The length of the complete RESP2 value at the front of `buf`, `Ok(None)` until it is
/// complete: what [`resp`] finds, without building the value (no allocation per message), for
/// the receive loop, which only needs to know where messages end.
pub fn resp_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0;
    // Values still to skip: an array adds its items.
    let mut pending = 1u64;
    while pending > 0 {
        pending -= 1;
        let Some(eol) = resp_line_end(buf, pos)? else { return Ok(None) };
        let line = &buf[pos + 1..eol];
        let after = eol + 2;
        match buf[pos] {
            b'+' | b'-' | b':' => pos = after,
            b'$' => match resp_num(line)? {
                n if n < 0 => pos = after,
                n => {
                    let end = after + n as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    pos = end;
                }
            },
            b'*' => {
                pending += resp_num(line)?.max(0) as u64;
                pos = after;
            }
            c => return Err(format!("unexpected RESP type byte {:?}", c as char)),
        }
    }
    Ok(Some(pos))
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
                let rest = &self.conn.buf[end..];
                if rest.first() == Some(&b'-') {
                    if let Ok(Some((Resp::Error(e), _))) = resp(rest) {
                        return ClientErr::Io(format!("redis: {}", String::from_utf8_lossy(e)));
                    }
                }
                match resp_len(rest) {
                    Ok(Some(len)) => end += len,
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
    let Some(eol) = line_end(buf, 0)? else {
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
        assert_eq!(resp(b"$-1\r\n").unwrap().unwrap(), (Resp::Bulk(None), 5));
        for bad in [&b"$x\r\n"[..], b"\r\n", b"+ok\n", b"$12345678901234567890\r\n", b"?\r\n"] {
            assert!(resp(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(resp_len(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut out = Vec::new();
        resp_command(&mut out, &[b"PUBLISH", b"c", b"xy"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$2\r\nxy\r\n");
    }

    /// The framing-only parse ends every value where the full one does, waits for the rest of
    /// an incomplete one at every cut, and skips bulk strings by their length (CRLF inside).
    #[test]
    fn resp_len_agrees_with_resp() {
        let stream: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$6\r\nhe\r\nlo\r\n:12\r\n+OK\r\n$-1\r\n*-1\r\n\
            *2\r\n*1\r\n:1\r\n$0\r\n\r\n-ERR x\r\n*0\r\n";
        let mut at = 0;
        let mut values = 0;
        while at < stream.len() {
            let rest = &stream[at..];
            let (_, len) = resp(rest).unwrap().unwrap();
            assert_eq!(resp_len(rest).unwrap(), Some(len), "at {at}");
            for cut in 0..len {
                assert_eq!(resp_len(&rest[..cut]).unwrap(), None, "at {at}, cut {cut}");
            }
            at += len;
            values += 1;
        }
        assert_eq!(values, 8);
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
