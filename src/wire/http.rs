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
    // RFC 9112 §2.2 lets a recipient take a bare LF as a line end; Gyre does not: a head
    // whose lines a proxy in front splits differently (one header there, two here) is a
    // request smuggling lever, and every HTTP client ends its lines with CRLF.
    if has_bare_lf(&buf[..len]) {
        return Err(HttpError(400));
    }
    // Transfer codings of all Transfer-Encoding fields, in order.
    let mut codings: Option<Vec<String>> = None;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = h.value;
        match name.as_str() {
            "content-length" => {
                let n = content_length(value).ok_or(HttpError(400))?;
                // Repeated fields must agree (RFC 9110 §8.6); a list in one field is refused.
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(HttpError(400));
                }
                head.content_length = Some(n);
            }
            "transfer-encoding" => {
                let v = String::from_utf8_lossy(value).to_ascii_lowercase();
                let list = codings.get_or_insert_with(Vec::new);
                list.extend(
                    v.split(',').map(|t| t.trim_matches([' ', '\t'])).filter(|t| !t.is_empty()).map(String::from),
                );
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
    if let Some(codings) = codings {
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        // §6.3: in a request, chunked must be the final coding, else the length is unknown.
        if http10 || codings.last().map(String::as_str) != Some("chunked") {
            return Err(HttpError(400));
        }
        if codings.len() > 1 {
            // chunked twice is malformed; any other coding is one the server cannot decode.
            let twice = codings[..codings.len() - 1].iter().any(|c| c == "chunked");
            return Err(HttpError(if twice { 400 } else { 501 }));
        }
        head.chunked = true;
    }
    if head.chunked && head.content_length.is_some() {
        // RFC 9112 §6.3: both present is a smuggling vector; refuse it.
        return Err(HttpError(400));
    }
    Ok(Some((head, len)))
}

/// A Content-Length value: `1*DIGIT` (RFC 9110 §8.6) between optional whitespace. No sign,
/// no inner space, no list, not empty.
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Leading zeros are digits too; the value must fit.
    std::str::from_utf8(v).ok()?.parse::<u64>().ok()
}

/// True when some LF in `b` is not preceded by CR.
fn has_bare_lf(b: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', b).any(|i| i == 0 || b[i - 1] != b'\r')
}

/// A chunk-size line without its CRLF (RFC 9112 §7.1): `1*HEXDIG`, then nothing or a
/// chunk extension (`BWS ";" ...`). No sign, no leading space, no `0x`, no trailing space
/// without an extension. The size must fit in 60 bits (leading zeros are allowed).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    if digits == 0 {
        return None;
    }
    if !rest.is_empty() {
        let ws = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        let ext = &rest[ws..];
        if ext.first() != Some(&b';') {
            return None;
        }
        // Extensions are ignored, but must be text: no control bytes (so no bare CR).
        if ext.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return None;
        }
    }
    let sig = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if sig > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
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

    /// A decoder for a body framed by `chunked` encoding or by its length (a response's).
    pub fn framed(chunked: bool, content_length: u64) -> Self {
        if chunked {
            BodyDecoder { chunked: Some(Chunk::Size), remaining: 0, done: false }
        } else {
            BodyDecoder { chunked: None, remaining: content_length, done: content_length == 0 }
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
                    let Some(nl) = line_end(buf)? else { return Ok(None) };
                    let size = chunk_size(&buf[..nl - 1]).ok_or(HttpError(400))?;
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
                    // Exactly CRLF after the data.
                    match (buf.first(), buf.get(1)) {
                        (None, _) | (Some(b'\r'), None) => return Ok(None),
                        (Some(b'\r'), Some(b'\n')) => buf.advance(2),
                        _ => return Err(HttpError(400)),
                    }
                    self.chunked = Some(Chunk::Size);
                }
                Chunk::Trailer => {
                    let Some(nl) = line_end(buf)? else { return Ok(None) };
                    let line = &buf[..nl - 1];
                    if !line.is_empty() && !field_line(line) {
                        return Err(HttpError(400));
                    }
                    let empty = line.is_empty();
                    buf.advance(nl + 1);
                    if empty {
                        self.done = true;
                    }
                }
            }
        }
    }
}

/// The position of the LF ending the framing line at the front of `buf`, which must be
/// preceded by CR (RFC 9112 §7.1: chunk lines end with CRLF; a bare LF is refused).
/// `Ok(None)`: the end has not arrived. A line over [`MAX_LINE`] is refused whether or not its
/// end has arrived, so the outcome never depends on where reads were cut.
fn line_end(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_LINE + 1)]) else {
        return if buf.len() > MAX_LINE { Err(HttpError(400)) } else { Ok(None) };
    };
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(HttpError(400));
    }
    Ok(Some(nl))
}

/// A trailer field line (RFC 9112 §5): a token, `:`, then text without control bytes.
fn field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else { return false };
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    colon > 0
        && line[..colon].iter().all(tchar)
        && line[colon + 1..].iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
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
        505 => "HTTP Version Not Supported",
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

    fn chunked() -> Head {
        parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap().0
    }

    /// The outcome of decoding `body` in one read, and in every split into two reads (they
    /// must agree).
    fn decode_any_split(head: &Head, body: &[u8]) -> Result<Vec<u8>, HttpError> {
        let whole = decode_all(head, &[body]);
        for at in 0..body.len() {
            assert_eq!(decode_all(head, &[&body[..at], &body[at..]]), whole, "{:?} split at {at}", body.escape_ascii());
        }
        whole
    }

    #[test]
    fn bad_chunk_size() {
        let h = chunked();
        for body in [
            &b"zz\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b" 5 \r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b";x\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
        ] {
            assert_eq!(decode_any_split(&h, body), Err(HttpError(400)), "{:?}", body.escape_ascii());
        }
    }

    #[test]
    fn chunk_lines_end_with_crlf() {
        let h = chunked();
        for body in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
            b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n",
            b"5\r\nhello\r\n0\r\n: empty name\r\n\r\n",
        ] {
            assert_eq!(decode_any_split(&h, body), Err(HttpError(400)), "{:?}", body.escape_ascii());
        }
    }

    #[test]
    fn valid_chunk_lines() {
        let h = chunked();
        for body in [
            &b"5\r\nhello\r\n0\r\n\r\n"[..],
            b"005\r\nhello\r\n000\r\n\r\n",
            b"00000000000000000005\r\nhello\r\n0\r\n\r\n",
            b"5;name=value\r\nhello\r\n0;x\r\n\r\n",
            b"5 ;name\r\nhello\r\n0\t; x=\"y z\"\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY:\r\n\r\n",
        ] {
            assert_eq!(decode_any_split(&h, body), Ok(b"hello".to_vec()), "{:?}", body.escape_ascii());
        }
        let (h, _) = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(decode_any_split(&h, b"A\r\n0123456789\r\n0\r\n\r\n"), Ok(b"0123456789".to_vec()));
    }

    fn head_status(raw: &[u8]) -> Result<(Option<u64>, bool), u16> {
        match parse_head(raw) {
            Ok(Some((h, n))) => {
                assert_eq!(n, raw.len());
                Ok((h.content_length, h.chunked))
            }
            Ok(None) => panic!("incomplete: {:?}", raw.escape_ascii()),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn content_length_is_digits_only() {
        let req = |v: &str| format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:{v}\r\n\r\n").into_bytes();
        for v in [" +25", " -1", " 2 5", "", " ", " 0x19", " 25, 25", " 25,", " 1e3", " 25a", " 99999999999999999999"] {
            assert_eq!(head_status(&req(v)), Err(400), "Content-Length:{v:?}");
        }
        for (v, n) in [(" 25", 25), ("25", 25), (" 025 ", 25), ("\t7\t", 7), (" 0", 0)] {
            assert_eq!(head_status(&req(v)), Ok((Some(n), false)), "Content-Length:{v:?}");
        }
        // Repeated: equal values stand for one, different ones are refused.
        let two = |a: &str, b: &str| {
            format!("POST / HTTP/1.1\r\nContent-Length: {a}\r\nContent-Length: {b}\r\n\r\n").into_bytes()
        };
        assert_eq!(head_status(&two("5", "5")), Ok((Some(5), false)));
        assert_eq!(head_status(&two("5", "05")), Ok((Some(5), false)));
        assert_eq!(head_status(&two("5", "6")), Err(400));
        assert_eq!(head_status(&two("5", "+5")), Err(400));
    }

    #[test]
    fn transfer_encoding_is_chunked_alone() {
        let te = |v: &str| format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {v}\r\n\r\n").into_bytes();
        for v in ["chunked", "CHUNKED", "chunked ", "chunked,", ", chunked"] {
            assert_eq!(head_status(&te(v)), Ok((None, true)), "{v:?}");
        }
        for (v, status) in [
            ("gzip, chunked", 501),
            ("identity, chunked", 501),
            ("chunked, chunked", 400),
            ("chunked, gzip", 400),
            ("gzip", 400),
            ("chunkedx", 400),
            ("", 400),
        ] {
            assert_eq!(head_status(&te(v)), Err(status), "Transfer-Encoding: {v:?}");
        }
        // Two fields form one list.
        let two = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head_status(two), Err(400));
        let two = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head_status(two), Err(501));
        // With Content-Length, or in HTTP/1.0: refused.
        let both = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head_status(both), Err(400));
        let both = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(head_status(both), Err(400));
        assert_eq!(head_status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(400));
    }

    #[test]
    fn head_lines_end_with_crlf() {
        for raw in [
            &b"GET /health HTTP/1.1\n\n"[..],
            b"GET /health HTTP/1.1\r\nHost: x\n\r\n",
            b"GET /health HTTP/1.1\nHost: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\n\n",
            b"POST / HTTP/1.1\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n",
            b"\nGET /health HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(head_status(raw), Err(400), "{:?}", raw.escape_ascii());
        }
        assert_eq!(head_status(b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"), Ok((None, false)));
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
