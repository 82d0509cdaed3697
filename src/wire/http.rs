//! HTTP/1.1 wire format, with no I/O: request heads (httparse), request bodies framed by
//! Content-Length or chunked encoding (a resumable decoder that takes whatever bytes have
//! arrived), and response heads.

use bytes::{Buf, Bytes, BytesMut};

/// Request methods the server distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Options,
    Head,
    Other,
}

/// What the server needs from a request head.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: HttpMethod,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    pub http10: bool,
    pub keep_alive: bool,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub expect_continue: bool,
    /// Every header as sent (names lower-cased).
    pub headers: Vec<(String, Bytes)>,
}

impl Head {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..])
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// True when the request carries a body.
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A malformed request: answered with this status, then the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError(pub u16);

const MAX_HEADERS: usize = 64;

/// Parses a request head from the front of `buf`. `Ok(None)`: incomplete. On success returns
/// the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError(431)),
        Err(_) => return Err(HttpError(400)),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "OPTIONS" => HttpMethod::Options,
        "HEAD" => HttpMethod::Head,
        _ => HttpMethod::Other,
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let http10 = req.version == Some(0);
    let mut head = Head {
        method,
        path,
        query,
        http10,
        keep_alive: !http10,
        content_length: None,
        chunked: false,
        expect_continue: false,
        headers: Vec::with_capacity(req.headers.len()),
    };
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = h.value;
        match name.as_str() {
            "content-length" => {
                let n =
                    std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or(HttpError(400))?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(HttpError(400));
                }
                head.content_length = Some(n);
            }
            "transfer-encoding" => {
                let v = String::from_utf8_lossy(value).to_ascii_lowercase();
                if v.trim() == "chunked" || v.trim_end().ends_with(", chunked") || v.trim_end().ends_with(",chunked") {
                    head.chunked = true;
                } else {
                    // Only chunked is a framing we can read; anything else is unframed.
                    return Err(HttpError(501));
                }
            }
            "connection" => {
                let v = String::from_utf8_lossy(value).to_ascii_lowercase();
                if v.split(',').any(|t| t.trim() == "close") {
                    head.keep_alive = false;
                } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                    head.keep_alive = true;
                }
            }
            "expect" if value.eq_ignore_ascii_case(b"100-continue") => head.expect_continue = true,
            _ => {}
        }
        head.headers.push((name, Bytes::copy_from_slice(value)));
    }
    if head.chunked && head.content_length.is_some() {
        // RFC 9112 §6.3: both present is a smuggling vector; refuse it.
        return Err(HttpError(400));
    }
    Ok(Some((head, len)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

/// Decodes a request body from bytes as they arrive.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    chunked: Option<Chunk>,
    remaining: u64,
    done: bool,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

impl BodyDecoder {
    pub fn new(head: &Head) -> Self {
        if head.chunked {
            BodyDecoder { chunked: Some(Chunk::Size), remaining: 0, done: false }
        } else {
            let n = head.content_length.unwrap_or(0);
            BodyDecoder { chunked: None, remaining: n, done: n == 0 }
        }
    }

    /// True once the whole body has been consumed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next piece of body data from the front of `buf`. `Ok(None)` means more input
    /// is needed (or the body is done). Framing bytes are consumed silently.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(state) = self.chunked else {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(self.remaining) as usize;
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                return Ok(Some(buf.split_to(n).freeze()));
            };
            match state {
                Chunk::Size => {
                    // A line over MAX_LINE is refused whether or not its end has arrived, so
                    // the outcome never depends on where reads were cut.
                    let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_LINE + 1)]) else {
                        return if buf.len() > MAX_LINE { Err(HttpError(400)) } else { Ok(None) };
                    };
                    let line = &buf[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
                    let hex = std::str::from_utf8(hex).map_err(|_| HttpError(400))?.trim();
                    if hex.is_empty() || hex.len() > 15 {
                        return Err(HttpError(400));
                    }
                    let size = u64::from_str_radix(hex, 16).map_err(|_| HttpError(400))?;
                    buf.advance(nl + 1);
                    self.chunked = Some(if size == 0 { Chunk::Trailer } else { Chunk::Data(size) });
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let left = left - n as u64;
                    self.chunked = Some(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r' && b != b'\n') {
                            return Err(HttpError(400));
                        }
                        if buf.first() == Some(&b'\n') {
                            buf.advance(1);
                            self.chunked = Some(Chunk::Size);
                            continue;
                        }
                        return Ok(None);
                    }
                    if &buf[..2] == b"\r\n" {
                        buf.advance(2);
                    } else if buf[0] == b'\n' {
                        buf.advance(1);
                    } else {
                        return Err(HttpError(400));
                    }
                    self.chunked = Some(Chunk::Size);
                }
                Chunk::Trailer => {
                    let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_LINE + 1)]) else {
                        return if buf.len() > MAX_LINE { Err(HttpError(400)) } else { Ok(None) };
                    };
                    let empty = nl == 0 || (nl == 1 && buf[0] == b'\r');
                    buf.advance(nl + 1);
                    if empty {
                        self.done = true;
                    }
                }
            }
        }
    }
}

/// The reason phrase of the statuses Gyre sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with a Content-Length body.
pub fn response(status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Bytes {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(if keep_alive {
        b"\r\n\r\n".as_slice()
    } else {
        b"\r\nConnection: close\r\n\r\n".as_slice()
    });
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The head of a chunked 200 JSON response.
pub fn chunked_head(keep_alive: bool) -> Bytes {
    Bytes::from_static(if keep_alive {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(head: &Head, pieces: &[&[u8]]) -> Result<Vec<u8>, HttpError> {
        let mut d = BodyDecoder::new(head);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            while let Some(b) = d.next(&mut buf)? {
                out.extend_from_slice(&b);
            }
        }
        assert!(d.is_done(), "body incomplete");
        Ok(out)
    }

    #[test]
    fn head_fields() {
        let raw = b"POST /api?api_key=a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nX-API-Key: k\r\n\r\nhello";
        let (h, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 5);
        assert_eq!(h.path, "/api");
        assert_eq!(h.query_param("api_key").as_deref(), Some("a b"));
        assert_eq!(h.content_length, Some(5));
        assert!(h.expect_continue && h.keep_alive);
        assert_eq!(h.header("x-api-key"), Some(&b"k"[..]));
        assert!(parse_head(b"POST /api HTTP/1.1\r\nHost").unwrap().is_none());
        assert_eq!(parse_head(b"\x00\x01 garbage\r\n\r\n").unwrap_err(), HttpError(400));
    }

    #[test]
    fn chunked_in_any_split() {
        let (h, _) = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in 0..body.len() {
            let got = decode_all(&h, &[&body[..split], &body[split..]]).unwrap();
            assert_eq!(got, b"hello world");
        }
    }

    #[test]
    fn long_chunk_lines_refused_however_split() {
        let (h, _) = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        let mut body = b"0;".to_vec();
        body.extend(std::iter::repeat_n(b'a', 4095));
        body.extend_from_slice(b"\r\n\r\n");
        assert!(decode_all(&h, &[&body]).is_err());
        assert!(decode_all(&h, &[&body[..4097], &body[4097..]]).is_err());
    }

    #[test]
    fn bad_chunk_size() {
        let (h, _) = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert!(decode_all(&h, &[b"zz\r\n"]).is_err());
    }
}

#[cfg(test)]
mod chunked_stress {
    use super::*;

    #[test]
    fn many_chunks_in_many_reads() {
        let (h, _) = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        let mut body = Vec::new();
        let mut expect = Vec::new();
        let mut seed = 7u64;
        let mut rnd = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for i in 0..2000u64 {
            let n = 1 + rnd(70000) as usize;
            let data: Vec<u8> = (0..n).map(|j| b'a' + ((i as usize + j) % 26) as u8).collect();
            body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\r\n");
            expect.extend_from_slice(&data);
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let mut d = BodyDecoder::new(&h);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < body.len() {
            let n = (1 + rnd(100_000) as usize).min(body.len() - pos);
            buf.extend_from_slice(&body[pos..pos + n]);
            pos += n;
            while let Some(b) = d.next(&mut buf).unwrap() {
                out.extend_from_slice(&b);
            }
        }
        assert!(d.is_done());
        assert_eq!(out.len(), expect.len());
        assert!(out == expect);
    }
}
