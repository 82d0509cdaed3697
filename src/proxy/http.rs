//! HTTP proxies: `POST <endpoint>` with the JSON request, from the worker's own event loop.
//!
//! Each worker keeps idle keep-alive connections per proxy and reuses them; a call takes one
//! (or opens one), writes the request, reads the answer (length-framed, chunked, or up to the
//! close), and gives the connection back when the answer allows reuse. A reused connection
//! that fails before any byte of the answer arrived (the backend closed it while idle) is
//! retried once on a fresh connection. The caller bounds the whole call with the proxy's
//! timeout; a call cut by it drops its connection.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::{CallError, Headers, Proxy, Target};
use crate::wire::http::BodyDecoder;

/// Idle connections kept per proxy and worker.
const MAX_IDLE: usize = 64;
/// Largest answer head and body accepted.
const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 64 << 20;

/// A worker's connections to its HTTP proxies.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<AHashMap<usize, Vec<TcpStream>>>,
    addrs: RefCell<AHashMap<usize, SocketAddr>>,
}

/// An answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

enum Failure {
    /// Nothing of an answer arrived on a reused connection: worth one retry.
    Stale(String),
    Fatal(CallError),
}

impl Pool {
    fn take(&self, id: usize) -> Option<TcpStream> {
        self.idle.borrow_mut().get_mut(&id).and_then(Vec::pop)
    }

    fn give_back(&self, id: usize, s: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(id).or_default();
        if list.len() < MAX_IDLE {
            list.push(s);
        }
    }

    async fn connect(&self, p: &Proxy, host: &str, port: u16) -> Result<TcpStream, CallError> {
        let cached = self.addrs.borrow().get(&p.id).copied();
        let addr = match cached {
            Some(a) => a,
            None => {
                let a = (host, port)
                    .to_socket_addrs()
                    .map_err(|e| CallError::Transport(format!("resolve {host}: {e}")))?
                    .next()
                    .ok_or_else(|| CallError::Transport(format!("resolve {host}: no address")))?;
                self.addrs.borrow_mut().insert(p.id, a);
                a
            }
        };
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Err(e) => {
                // Resolve again next time (the backend may have moved).
                self.addrs.borrow_mut().remove(&p.id);
                Err(CallError::Transport(format!("connect {addr}: {e}")))
            }
        }
    }

    /// Posts `body` to the proxy's endpoint with `headers` (plus `Content-Type:
    /// application/json`, always last) and reads the answer.
    pub async fn post(&self, p: &Proxy, headers: &Headers, body: &[u8]) -> Result<Answer, CallError> {
        let Target::Http { host, port, path_and_query, https } = &p.target else {
            return Err(CallError::Transport("not an HTTP proxy".into()));
        };
        if *https {
            return Err(CallError::Transport("https endpoints are not supported".into()));
        }
        let req = request_bytes(host, *port, path_and_query, headers, body);
        if let Some(s) = self.take(p.id) {
            match exchange(s, &req, true).await {
                Ok((a, keep)) => {
                    if let Some(s) = keep {
                        self.give_back(p.id, s);
                    }
                    return Ok(a);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Stale(_)) => {}
            }
        }
        let s = self.connect(p, host, *port).await?;
        match exchange(s, &req, false).await {
            Ok((a, keep)) => {
                if let Some(s) = keep {
                    self.give_back(p.id, s);
                }
                Ok(a)
            }
            Err(Failure::Fatal(e)) => Err(e),
            Err(Failure::Stale(e)) => Err(CallError::Transport(e)),
        }
    }
}

fn request_bytes(host: &str, port: u16, path: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(256 + body.len());
    r.extend_from_slice(b"POST ");
    r.extend_from_slice(path.as_bytes());
    r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    if host.contains(':') {
        r.extend_from_slice(format!("[{host}]").as_bytes());
    } else {
        r.extend_from_slice(host.as_bytes());
    }
    if port != 80 {
        r.extend_from_slice(format!(":{port}").as_bytes());
    }
    r.extend_from_slice(b"\r\nUser-Agent: gyre\r\n");
    // (The caller resolved which source wins for a name; repeated names are all sent.)
    for (name, value) in headers {
        if !header_ok(name, value) {
            continue;
        }
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
    r.extend_from_slice(body.len().to_string().as_bytes());
    r.extend_from_slice(b"\r\n\r\n");
    r.extend_from_slice(body);
    r
}

/// A header that may be forwarded: a token name that is not one the call sets itself, and a
/// value without control bytes (no header injection).
fn header_ok(name: &str, value: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(tchar)
        && !["host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        && value.bytes().all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// Writes the request and reads the answer; the connection comes back when it may be reused.
async fn exchange(mut s: TcpStream, req: &[u8], reused: bool) -> Result<(Answer, Option<TcpStream>), Failure> {
    let fail = |e: String, got: bool| {
        if reused && !got {
            Failure::Stale(e)
        } else {
            Failure::Fatal(CallError::Transport(e))
        }
    };
    let (res, _) = s.write_all(req.to_vec()).await;
    if let Err(e) = res {
        return Err(fail(format!("write: {e}"), false));
    }
    let mut buf = BytesMut::with_capacity(4096);
    // The head.
    let (status, chunked, length, close, head_len) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut chunked = false;
                let mut length: Option<u64> = None;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = v.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked");
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        length = Some(
                            v.parse().map_err(|_| Failure::Fatal(CallError::Decode("bad Content-Length".into())))?,
                        );
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let v = v.to_ascii_lowercase();
                        if v.contains("close") {
                            close = true;
                        } else if v.contains("keep-alive") {
                            close = false;
                        }
                    }
                }
                break (status, chunked, length, close, n);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(Failure::Fatal(CallError::Decode("answer head too large".into())));
                }
            }
            Err(e) => return Err(Failure::Fatal(CallError::Decode(format!("bad answer head: {e}")))),
        }
        let got = !buf.is_empty();
        crate::io::prepare_read(&mut buf, false, 4096);
        let (r, b) = crate::io::read_more(&mut s, buf).await;
        buf = b;
        match r {
            Ok(0) => return Err(fail("connection closed before the answer".into(), got)),
            Ok(_) => {}
            Err(e) => return Err(fail(format!("read: {e}"), got)),
        }
    };
    bytes::Buf::advance(&mut buf, head_len);
    // 1xx answers are not expected from a POST without `Expect`; treat them as no answer.
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    let until_close = !chunked && length.is_none() && !no_body;
    let mut dec = BodyDecoder::framed(chunked, if no_body { 0 } else { length.unwrap_or(u64::MAX) });
    let mut body = BytesMut::new();
    loop {
        loop {
            match dec.next(&mut buf) {
                Ok(Some(piece)) => {
                    if body.len() + piece.len() > MAX_BODY {
                        return Err(Failure::Fatal(CallError::Decode("answer body too large".into())));
                    }
                    body.extend_from_slice(&piece);
                }
                Ok(None) => break,
                Err(_) => return Err(Failure::Fatal(CallError::Decode("bad chunked body".into()))),
            }
        }
        if dec.is_done() {
            break;
        }
        crate::io::prepare_read(&mut buf, false, 16 << 10);
        let (r, b) = crate::io::read_more(&mut s, buf).await;
        buf = b;
        match r {
            Ok(0) if until_close => {
                let a = Answer { status, body: body.freeze() };
                return Ok((a, None));
            }
            Ok(0) => return Err(Failure::Fatal(CallError::Transport("connection closed in the answer body".into()))),
            Ok(_) => {}
            Err(e) => return Err(Failure::Fatal(CallError::Transport(format!("read: {e}")))),
        }
    }
    // Bytes past the answer mean the connection is out of step: do not reuse it.
    let keep = (!close && !until_close && buf.is_empty()).then_some(s);
    Ok((Answer { status, body: body.freeze() }, keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head() {
        let h: Headers = vec![
            ("X-Static".into(), "s".into()),
            ("Cookie".into(), "a=1".into()),
            ("Cookie".into(), "b=2".into()),
            ("Bad".into(), "x\r\nInjected: 1".into()),
            ("Content-Type".into(), "text/plain".into()),
        ];
        let r = request_bytes("app", 3000, "/connect", &h, b"{}");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /connect HTTP/1.1\r\nHost: app:3000\r\nUser-Agent: gyre\r\nX-Static: s\r\nCookie: a=1\r\nCookie: b=2\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }
}
