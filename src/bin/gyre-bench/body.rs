//! The response bodies of the HTTP streaming transports, decoded as they arrive: the chunked
//! transfer coding (or a body that runs until the connection closes), then the messages —
//! JSON lines (HTTP-streaming, the unidirectional HTTP stream), SSE `data:` lines, or
//! varint-length-prefixed protobuf replies (HTTP-streaming with protobuf).
//!
//! Nothing is copied or allocated while chunks hold whole messages, which is how servers write
//! them (Gyre a message per chunk, Centrifugo a batch per chunk): runs of whole messages are
//! handed over where they lie in the read buffer. Only a message split over two chunks is put
//! together in a buffer kept for the purpose.

/// Largest chunk or message accepted.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Longest chunk-size line (with extensions) and longest trailer section accepted.
const MAX_LINE: usize = 4096;

/// How messages follow each other in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msgs {
    /// One JSON message per line (`\n`, a `\r` before it is dropped; blank lines are skipped).
    Lines,
    /// Server-sent events: each `data:` line is one message (servers of the Centrifuge
    /// protocol send one data line per event); comments, other fields and blank lines are
    /// skipped. Lines end in `\n` (a `\r` before it is dropped).
    Sse,
    /// Each message preceded by its length as a protobuf varint (an empty one is a ping).
    Varint,
}

/// The decoding state of one response body.
#[derive(Debug)]
pub struct Body {
    msgs: Msgs,
    chunked: bool,
    /// The last chunk arrived: the response is complete.
    pub done: bool,
    /// The start of a message whose chunk ended before it did.
    partial: Vec<u8>,
}

impl Body {
    pub fn new(msgs: Msgs, chunked: bool) -> Body {
        Body { msgs, chunked, done: false, partial: Vec::new() }
    }

    /// Decodes what it can of `buf` (the unread front of the connection's bytes): `region` is
    /// called with runs of whole messages, to be split with [`messages`]. Returns how many
    /// bytes of `buf` were consumed; an incomplete chunk is left in `buf` for the next call.
    pub fn feed(&mut self, buf: &[u8], mut region: impl FnMut(&[u8])) -> Result<usize, String> {
        if !self.chunked {
            self.take(buf, &mut region)?;
            return Ok(buf.len());
        }
        let mut pos = 0;
        while !self.done {
            let Some((head, size)) = chunk_head(&buf[pos..])? else { break };
            let rest = &buf[pos + head..];
            if size == 0 {
                // The last chunk, then trailer lines up to an empty one.
                let Some(end) = trailers_end(rest)? else { break };
                pos += head + end;
                self.done = true;
                break;
            }
            let Some(data) = rest.get(..size + 2) else { break };
            if &data[size..] != b"\r\n" {
                return Err("chunked body: a chunk's data is not followed by CRLF".into());
            }
            self.take(&data[..size], &mut region)?;
            pos += head + size + 2;
        }
        Ok(pos)
    }

    /// Hands over the whole messages of `data` (after what `partial` holds) and keeps the rest.
    fn take(&mut self, data: &[u8], region: &mut impl FnMut(&[u8])) -> Result<(), String> {
        if self.partial.is_empty() {
            let w = whole(self.msgs, data)?;
            if w > 0 {
                region(&data[..w]);
            }
            self.partial.extend_from_slice(&data[w..]);
        } else {
            self.partial.extend_from_slice(data);
            let w = whole(self.msgs, &self.partial)?;
            if w > 0 {
                region(&self.partial[..w]);
                self.partial.drain(..w);
            }
        }
        if self.partial.len() > MAX_MESSAGE {
            return Err(format!("a message longer than {MAX_MESSAGE} bytes"));
        }
        if self.partial.is_empty() && self.partial.capacity() > 64 * 1024 {
            self.partial = Vec::new();
        }
        Ok(())
    }
}

/// The chunk-size line at the front of `b`: its length and the chunk's size; `None` until
/// the line is complete.
fn chunk_head(b: &[u8]) -> Result<Option<(usize, usize)>, String> {
    // The usual line: hex digits and CRLF, read in one pass.
    let mut size = 0u64;
    let mut n = 0;
    while let Some(d) = b.get(n).and_then(|&c| (c as char).to_digit(16)) {
        size = size << 4 | d as u64;
        n += 1;
        if n > 16 {
            break;
        }
    }
    if (1..=16).contains(&n) && size <= MAX_MESSAGE as u64 && b.get(n..n + 2) == Some(b"\r\n") {
        return Ok(Some((n + 2, size as usize)));
    }
    let Some(eol) = memchr::memchr(b'\n', &b[..b.len().min(MAX_LINE)]) else {
        return if b.len() >= MAX_LINE { Err("chunked body: chunk-size line too long".into()) } else { Ok(None) };
    };
    let line = b[..eol].strip_suffix(b"\r").unwrap_or(&b[..eol]);
    // Extensions (`;name=value`) and whitespace after the size are allowed and ignored.
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    let after = &line[digits..];
    if digits == 0 || digits > 16 || !(after.is_empty() || matches!(after[0], b';' | b' ' | b'\t')) {
        return Err(format!("chunked body: bad chunk-size line {:?}", String::from_utf8_lossy(line)));
    }
    let size = line[..digits].iter().fold(0u64, |v, &c| v << 4 | (c as char).to_digit(16).unwrap_or(0) as u64);
    if size > MAX_MESSAGE as u64 {
        return Err(format!("chunked body: a chunk of {size} bytes (at most {MAX_MESSAGE})"));
    }
    Ok(Some((eol + 1, size as usize)))
}

/// The length of the trailer section after the last chunk (up to and including its empty
/// line); `None` until complete.
fn trailers_end(b: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0;
    loop {
        let Some(eol) = memchr::memchr(b'\n', &b[pos..]) else {
            return if b.len() > MAX_LINE { Err("chunked body: trailers too long".into()) } else { Ok(None) };
        };
        let line = &b[pos..pos + eol];
        pos += eol + 1;
        if line.is_empty() || line == b"\r" {
            return Ok(Some(pos));
        }
    }
}

/// The length of the longest front of `data` made of whole messages.
fn whole(msgs: Msgs, data: &[u8]) -> Result<usize, String> {
    match msgs {
        // A chunk usually ends with its last message.
        Msgs::Lines | Msgs::Sse if data.last() == Some(&b'\n') => Ok(data.len()),
        Msgs::Lines | Msgs::Sse => Ok(memchr::memrchr(b'\n', data).map_or(0, |i| i + 1)),
        Msgs::Varint => {
            let mut pos = 0;
            while let Some((len, n)) = varint(&data[pos..])? {
                if len > MAX_MESSAGE as u64 {
                    return Err(format!("a protobuf message of {len} bytes (at most {MAX_MESSAGE})"));
                }
                let end = pos + n + len as usize;
                if end > data.len() {
                    break;
                }
                pos = end;
            }
            Ok(pos)
        }
    }
}

/// The varint at the front of `b` and its length in bytes; `None` while incomplete.
fn varint(b: &[u8]) -> Result<Option<(u64, usize)>, String> {
    let mut v = 0u64;
    for (i, &c) in b.iter().enumerate().take(10) {
        v |= ((c & 0x7F) as u64) << (7 * i);
        if c & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if b.len() >= 10 {
        return Err("a malformed varint length prefix".into());
    }
    Ok(None)
}

/// The messages of a run of whole messages (what [`Body::feed`] hands over).
pub fn messages(msgs: Msgs, region: &[u8]) -> Messages<'_> {
    Messages { msgs, rest: region }
}

/// Iterator over the messages of a region, borrowed from it.
pub struct Messages<'a> {
    msgs: Msgs,
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            if self.msgs == Msgs::Varint {
                let Ok(Some((len, n))) = varint(self.rest) else {
                    self.rest = &[];
                    return None;
                };
                let end = (n + len as usize).min(self.rest.len());
                let (msg, rest) = (&self.rest[n..end], &self.rest[end..]);
                self.rest = rest;
                return Some(msg);
            }
            let (line, rest) = match memchr::memchr(b'\n', self.rest) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let msg = match self.msgs {
                Msgs::Sse => match line.strip_prefix(b"data:") {
                    Some(v) => v.strip_prefix(b" ").unwrap_or(v),
                    None => continue,
                },
                _ => line,
            };
            if !msg.is_empty() {
                return Some(msg);
            }
        }
    }
}

/// Percent-encodes `s` for a query parameter (everything but RFC 3986's unreserved bytes).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to a body cut at every `step` bytes, as reads would bring it, and returns
    /// the messages and whether the body ended.
    fn decode(msgs: Msgs, chunked: bool, wire: &[u8], step: usize) -> (Vec<String>, bool) {
        let mut body = Body::new(msgs, chunked);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            let used = body
                .feed(&buf, |r| got.extend(messages(msgs, r).map(|m| String::from_utf8_lossy(m).into_owned())))
                .unwrap();
            buf.drain(..used);
        }
        (got, body.done)
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
    }

    #[test]
    fn json_lines_in_chunks_at_any_read_boundary() {
        let mut wire = Vec::new();
        wire.extend(chunk(b"{\"id\":1,\"connect\":{}}\n"));
        wire.extend(chunk(b"{}\n{\"push\":{\"pub\":{}}}\n"));
        // A message split over two chunks, with a CRLF line end.
        wire.extend(chunk(b"{\"a\":"));
        wire.extend(chunk(b"1}\r\n"));
        wire.extend_from_slice(b"0\r\n\r\n");
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let (got, done) = decode(Msgs::Lines, true, &wire, step);
            assert_eq!(got, ["{\"id\":1,\"connect\":{}}", "{}", "{\"push\":{\"pub\":{}}}", "{\"a\":1}"], "step {step}");
            assert!(done, "step {step}");
        }
    }

    #[test]
    fn whole_chunks_are_handed_over_in_place() {
        let wire = [chunk(b"{\"x\":1}\n"), chunk(b"{\"x\":2}\n")].concat();
        let mut body = Body::new(Msgs::Lines, true);
        let mut regions = Vec::new();
        let used = body.feed(&wire, |r| regions.push(r.as_ptr() as usize - wire.as_ptr() as usize)).unwrap();
        assert_eq!(used, wire.len());
        // Both regions point into the buffer itself: nothing was copied.
        assert_eq!(regions, [3, 3 + 8 + 2 + 3]);
        assert!(body.partial.capacity() == 0, "nothing carried over, nothing allocated");
        assert!(!body.done);
    }

    #[test]
    fn sse_events() {
        let mut wire = chunk(b"\r\n");
        wire.extend(chunk(b"data: {\"connect\":{}}\n\n"));
        wire.extend(chunk(b": a comment\nevent: x\nid: 3\ndata:{}\n\n"));
        wire.extend(chunk(b"data: {\"channel\":\"c\",\"pub\":{\"data\":1}}\r\n\r\n"));
        for step in [1, 5, wire.len()] {
            let (got, done) = decode(Msgs::Sse, true, &wire, step);
            assert_eq!(got, ["{\"connect\":{}}", "{}", "{\"channel\":\"c\",\"pub\":{\"data\":1}}"], "step {step}");
            assert!(!done);
        }
    }

    #[test]
    fn varint_prefixed_messages_across_chunks() {
        let big = vec![b'x'; 300];
        let mut stream = vec![0u8]; // a ping: the empty message
        stream.extend_from_slice(&[3, b'a', b'b', b'c']);
        stream.extend_from_slice(&[0xAC, 0x02]); // 300
        stream.extend_from_slice(&big);
        // Chunks cut inside the two-byte length and inside the message.
        let wire = [chunk(&stream[..5]), chunk(&stream[5..6]), chunk(&stream[6..100]), chunk(&stream[100..])].concat();
        for step in [1, 9, wire.len()] {
            let (got, _) = decode(Msgs::Varint, true, &wire, step);
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!((got[0].as_str(), got[1].as_str(), got[2].len()), ("", "abc", 300));
        }
    }

    #[test]
    fn a_body_without_chunks_runs_to_the_close() {
        let wire = b"{\"a\":1}\n{\"b\":2}\n{\"c\"";
        let (got, done) = decode(Msgs::Lines, false, wire, 3);
        assert_eq!((got, done), (vec!["{\"a\":1}".to_string(), "{\"b\":2}".to_string()], false));
    }

    #[test]
    fn chunk_extensions_and_trailers() {
        let wire = b"8;ext=1\r\n{\"a\":1}\n\r\n0\r\nX-Trailer: y\r\n\r\n";
        let (got, done) = decode(Msgs::Lines, true, wire, 4);
        assert_eq!((got, done), (vec!["{\"a\":1}".to_string()], true));
    }

    #[test]
    fn refuses_bad_framing() {
        let bad = |msgs: Msgs, wire: &[u8]| Body::new(msgs, true).feed(wire, |_| {}).unwrap_err();
        assert!(bad(Msgs::Lines, b"zz\r\nab\r\n").contains("bad chunk-size"));
        assert!(bad(Msgs::Lines, b"2\r\nabXX").contains("CRLF"));
        assert!(bad(Msgs::Lines, b"ffffffffff\r\n").contains("at most"));
        assert!(bad(Msgs::Lines, &[b'1'; MAX_LINE + 1]).contains("too long"));
        assert!(bad(Msgs::Varint, &chunk(&[0xFF; 11])).contains("varint"));
        let huge = [0x80, 0x80, 0x80, 0x80, 0x40]; // 2^34
        assert!(bad(Msgs::Varint, &chunk(&huge)).contains("protobuf message"));
        // An incomplete chunk waits.
        assert_eq!(Body::new(Msgs::Lines, true).feed(b"10\r\nabc", |_| {}), Ok(0));
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(url_encode("{\"token\":\"a.b-c_d~\"} /+"), "%7B%22token%22%3A%22a.b-c_d~%22%7D%20%2F%2B");
    }
}
