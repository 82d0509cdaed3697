//! RFC 7692 permessage-deflate in the one mode Gyre negotiates, as Centrifugo does: no context
//! takeover in either direction, so every message is a raw DEFLATE stream of its own (32 KiB
//! window) that a sync flush ends. The negotiation of the opening handshake, the compression
//! of outgoing messages and the bounded inflation of incoming ones; no I/O.
//!
//! Because no message depends on an earlier one, a compressed frame can be shared like a plain
//! one: a publication compressed once goes to every subscriber that negotiated the extension.
//!
//! The (de)compressor state is large (a 32 KiB window and hash tables), so each thread keeps
//! one per level and one inflater, reset before each message instead of allocated for it.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::http::Head;
use super::ws::{frame_in_place_compressed, OpCode, WsError, MAX_HEADER};

/// The `Sec-WebSocket-Extensions` answer to an accepted offer, whatever parameters it had.
pub const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// How a sync flush ends a DEFLATE stream: removed from every compressed message (RFC 7692
/// §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Appended to a compressed message before inflating it: the removed tail, then an empty final
/// block, so that a complete message ends the stream and a truncated one is told apart.
const END: [u8; 9] = [0, 0, 0xff, 0xff, 0x01, 0, 0, 0xff, 0xff];

/// Compression levels: -2 Huffman coding only, -1 the default (6), 0 stored, 1 fastest to 9 best.
pub const LEVELS: std::ops::RangeInclusive<i32> = -2..=9;

/// The Huffman-only level, which flate2 does not offer: run on zlib-rs (flate2's backend here)
/// directly.
const HUFFMAN_ONLY: i8 = -2;

/// The `Sec-WebSocket-Extensions` value to answer an opening handshake with: [`RESPONSE`]
/// when the transport has compression on and the client offers permessage-deflate, else none
/// (no header). Every WebSocket transport's handshake asks this.
pub fn negotiate(enabled: bool, head: &Head) -> Option<&'static str> {
    (enabled && offered(head)).then_some(RESPONSE)
}

/// Whether the opening handshake offers permessage-deflate: any offer in any
/// `Sec-WebSocket-Extensions` header named so, whatever its parameters (the answer is always
/// [`RESPONSE`], which every client must accept).
pub fn offered(head: &Head) -> bool {
    head.headers.iter().any(|(name, value)| name == "sec-websocket-extensions" && offers(value))
}

/// Whether one header value holds a permessage-deflate offer. Offers are separated by commas
/// outside quoted parameter values; an offer's name comes before its first `;`.
fn offers(value: &[u8]) -> bool {
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for i in 0..=value.len() {
        let b = value.get(i).copied().unwrap_or(b',');
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b',' => {
                let offer = &value[start..i];
                let name = offer.split(|&c| c == b';').next().unwrap_or(b"");
                if name.trim_ascii().eq_ignore_ascii_case(b"permessage-deflate") {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    false
}

/// What a connection that negotiated the extension compresses, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// One of [`LEVELS`].
    pub level: i8,
    /// Messages of at most this many bytes are sent uncompressed (0: every message is
    /// compressed).
    pub min_size: u32,
}

impl Deflate {
    /// `level` must be one of [`LEVELS`] (the configuration is checked at start-up); a min
    /// size beyond 4 GiB is kept as 4 GiB.
    pub fn new(level: i32, min_size: usize) -> Deflate {
        assert!(LEVELS.contains(&level), "compression level {level} out of range");
        Deflate { level: level as i8, min_size: u32::try_from(min_size).unwrap_or(u32::MAX) }
    }

    /// Whether a message of `len` bytes is compressed: only when longer than the min size.
    pub fn wants(&self, len: usize) -> bool {
        len > self.min_size as usize
    }
}

/// A compressor of one level, reused for every message of that level on this thread.
enum Deflater {
    Flate(Compress),
    Huffman(Box<zlib_rs::Deflate>),
}

impl Deflater {
    fn new(level: i8) -> Deflater {
        match level {
            HUFFMAN_ONLY => {
                let config = zlib_rs::DeflateConfig {
                    window_bits: -15,
                    strategy: zlib_rs::Strategy::HuffmanOnly,
                    ..zlib_rs::DeflateConfig::default()
                };
                Deflater::Huffman(Box::new(zlib_rs::Deflate::new_with_config(config)))
            }
            -1 => Deflater::Flate(Compress::new(Compression::default(), false)),
            l => Deflater::Flate(Compress::new(Compression::new(l as u32), false)),
        }
    }

    /// Appends `input` as a complete sync-flushed raw DEFLATE stream.
    fn run(&mut self, input: &[u8], out: &mut Vec<u8>) {
        // Enough for the worst case (stored blocks: 5 bytes per 16 KiB or less, plus the
        // flush), so one call normally does it all.
        out.reserve(input.len() + input.len() / 1024 * 5 + 64);
        let mut rest = input;
        match self {
            Deflater::Flate(c) => {
                c.reset();
                loop {
                    let (before, written) = (c.total_in(), out.len());
                    // A fresh stream with room to write has no error to report.
                    let _ = c.compress_vec(rest, out, FlushCompress::Sync);
                    let taken = (c.total_in() - before) as usize;
                    rest = &rest[taken..];
                    // Done when all input is taken and the flush did not fill the buffer.
                    let room = out.len() < out.capacity();
                    if (rest.is_empty() && room) || (taken == 0 && out.len() == written && room) {
                        return;
                    }
                    out.reserve(out.capacity().max(64));
                }
            }
            Deflater::Huffman(c) => {
                c.reset();
                loop {
                    let start = out.len();
                    out.resize(out.capacity(), 0);
                    let (before_in, before_out) = (c.total_in(), c.total_out());
                    // As above: no error to report.
                    let _ = c.compress(rest, &mut out[start..], zlib_rs::DeflateFlush::SyncFlush);
                    let (taken, written) = ((c.total_in() - before_in) as usize, (c.total_out() - before_out) as usize);
                    out.truncate(start + written);
                    rest = &rest[taken..];
                    let room = out.len() < out.capacity();
                    if (rest.is_empty() && room) || (taken == 0 && written == 0 && room) {
                        return;
                    }
                    out.reserve(out.capacity().max(64));
                }
            }
        }
    }
}

thread_local! {
    static DEFLATERS: RefCell<Vec<(i8, Deflater)>> = const { RefCell::new(Vec::new()) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Appends `payload` compressed as a permessage-deflate message: raw DEFLATE at `level` (one
/// of [`LEVELS`]), sync-flushed, the trailing `00 00 ff ff` removed.
pub fn compress(level: i8, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    DEFLATERS.with(|d| {
        let mut d = d.borrow_mut();
        let at = match d.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                d.push((level, Deflater::new(level)));
                d.len() - 1
            }
        };
        d[at].1.run(payload, out);
    });
    debug_assert!(payload.is_empty() || out[start..].ends_with(&TAIL), "a sync flush ends with an empty stored block");
    if out[start..].ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}

/// A complete server frame (FIN and RSV1 set) whose payload is `payload` compressed.
pub fn frame(op: OpCode, payload: &[u8], level: i8) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_HEADER + payload.len() + 64);
    buf.resize(MAX_HEADER, 0);
    compress(level, payload, &mut buf);
    frame_in_place_compressed(op, buf)
}

/// Inflates one compressed message (its frames' payloads joined) as a fresh raw DEFLATE
/// stream, the removed tail restored. Stops with [`WsError::TooBig`] as soon as the output
/// would exceed `limit` bytes, so at most `limit + 1` bytes are ever held whatever the input
/// claims; malformed or truncated data is a protocol error.
pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, WsError> {
    INFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = cell.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let cap = limit.saturating_add(1);
        let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).max(64).min(cap));
        let (mut input, mut end): (&[u8], &[u8]) = (data, &END);
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(WsError::TooBig);
                }
                out.reserve_exact(out.capacity().min(cap - out.len()));
            }
            let src = if input.is_empty() { end } else { input };
            let before = d.total_in();
            let status = d
                .decompress_vec(src, &mut out, FlushDecompress::None)
                .map_err(|_| WsError::Protocol("invalid compressed data"))?;
            let taken = (d.total_in() - before) as usize;
            if input.is_empty() {
                end = &end[taken..];
            } else {
                input = &input[taken..];
            }
            if out.len() > limit {
                return Err(WsError::TooBig);
            }
            if status == Status::StreamEnd {
                return Ok(out);
            }
            // Everything taken and room left, yet the stream goes on: the data ended inside
            // a block.
            if input.is_empty() && end.is_empty() && out.len() < out.capacity() {
                return Err(WsError::Protocol("truncated compressed data"));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ws::{encode_client_frame, frame as plain_frame, Decoder, Message};
    use bytes::BytesMut;

    fn head(exts: &[&str]) -> Head {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for e in exts {
            text.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
        }
        text.push_str("\r\n");
        crate::wire::http::parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn negotiation() {
        assert!(offered(&head(&["permessage-deflate"])));
        assert!(offered(&head(&["permessage-deflate; client_max_window_bits"])));
        assert!(offered(&head(&["x-foo, permessage-deflate; server_max_window_bits=10"])));
        assert!(offered(&head(&["x-foo", "Permessage-Deflate ;client_no_context_takeover"])));
        assert!(offered(&head(&["x; a=\"q,\\\"r\", permessage-deflate"])));
        assert!(!offered(&head(&[])));
        assert!(!offered(&head(&["x-webkit-deflate-frame"])));
        assert!(!offered(&head(&["permessage-deflate-x", "foo; permessage-deflate"])));
        // A name inside a quoted parameter value is no offer.
        assert!(!offered(&head(&["x; a=\"y, permessage-deflate\""])));
        assert_eq!(negotiate(true, &head(&["permessage-deflate"])), Some(RESPONSE));
        assert_eq!(negotiate(false, &head(&["permessage-deflate"])), None);
        assert_eq!(negotiate(true, &head(&["deflate-frame"])), None);
    }

    /// Inflates what [`compress`] wrote, the way a client does.
    fn round_trip(level: i8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress(level, payload, &mut out);
        assert!(!out.ends_with(&TAIL) || payload.is_empty(), "tail removed");
        inflate(&out, payload.len()).unwrap()
    }

    #[test]
    fn round_trip_every_level() {
        let json: Vec<u8> = (0..2000).flat_map(|i| format!("{{\"n\":{i},\"v\":\"abc\"}}").into_bytes()).collect();
        let noise: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for level in LEVELS {
            let level = level as i8;
            for payload in [&b""[..], b"{}", b"a", &json, &noise] {
                assert_eq!(round_trip(level, payload), payload, "level {level}, {} bytes", payload.len());
            }
        }
        let mut one = Vec::new();
        compress(1, &json, &mut one);
        assert!(one.len() < json.len() / 3, "compresses: {} of {}", one.len(), json.len());
        let mut stored = Vec::new();
        compress(0, &json, &mut stored);
        assert!(stored.len() > json.len(), "level 0 stores");
        // Each message is independent: the same input gives the same bytes every time.
        let mut again = Vec::new();
        compress(1, &json, &mut again);
        assert_eq!(one, again);
    }

    #[test]
    fn frames_have_rsv1_and_decode() {
        let payload = br#"{"push":{"channel":"news","pub":{"data":{"text":"hello hello hello hello"}}}}"#;
        let f = frame(OpCode::Text, payload, 1);
        assert_eq!(f[0], 0x80 | 0x40 | 0x1, "FIN + RSV1 + text");
        let mut dec = Decoder::client(1 << 20, 1 << 20).with_inflate(1 << 20);
        assert_eq!(dec.decode(&mut BytesMut::from(&f[..])).unwrap(), Some(Message::Text(Bytes::from_static(payload))));
        // A plain frame still decodes on a connection that negotiated the extension.
        let p = plain_frame(OpCode::Binary, b"\x00\x01");
        assert_eq!(
            dec.decode(&mut BytesMut::from(&p[..])).unwrap(),
            Some(Message::Binary(Bytes::from_static(b"\0\x01")))
        );
    }

    #[test]
    fn min_size_is_strict() {
        let d = Deflate::new(1, 10);
        assert!(!d.wants(10));
        assert!(d.wants(11));
        assert!(Deflate::new(1, 0).wants(1));
        assert!(!Deflate::new(1, 0).wants(0));
        assert_eq!(Deflate::new(-2, usize::MAX).min_size, u32::MAX);
    }

    const MASK: [u8; 4] = [9, 8, 7, 6];

    /// A masked client frame; `rsv1` marks it compressed.
    fn client_frame(fin: bool, rsv1: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let code = match op {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            9 => OpCode::Ping,
            _ => OpCode::Close,
        };
        encode_client_frame(code, payload, MASK, &mut out);
        out[0] = (out[0] & 0x0f) | if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 };
        out
    }

    fn compressed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress(6, payload, &mut out);
        out
    }

    fn server(inflate_limit: Option<usize>) -> Decoder {
        let d = Decoder::new(1 << 16, 1 << 16);
        match inflate_limit {
            Some(l) => d.with_inflate(l),
            None => d,
        }
    }

    #[test]
    fn incoming_compressed_messages() {
        let text = "ünïcode {\"id\":1} ".repeat(50);
        let z = compressed(text.as_bytes());
        let mut d = server(Some(1 << 20));
        let mut wire = client_frame(true, true, 1, &z);
        // Fragmented: RSV1 on the first frame only.
        wire.extend(client_frame(false, true, 2, &z[..z.len() / 2]));
        wire.extend(client_frame(true, false, 9, b"p"));
        wire.extend(client_frame(true, false, 0, &z[z.len() / 2..]));
        wire.extend(client_frame(true, false, 1, b"plain"));
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Message::Text(Bytes::from(text.clone()))));
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Message::Ping(Bytes::from_static(b"p"))));
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Message::Binary(Bytes::from(text))));
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Message::Text(Bytes::from_static(b"plain"))));
        assert!(buf.is_empty());
    }

    #[test]
    fn rsv1_rules() {
        let z = compressed(b"hello");
        let proto = |mut d: Decoder, wire: Vec<u8>| {
            let r = d.decode(&mut BytesMut::from(&wire[..]));
            assert!(matches!(r, Err(WsError::Protocol(_))), "{r:?}");
            assert_eq!(r.unwrap_err().close_code(), 1002);
        };
        // Not negotiated.
        proto(server(None), client_frame(true, true, 1, &z));
        // On a control frame or a continuation.
        proto(server(Some(100)), client_frame(true, true, 9, b""));
        let mut wire = client_frame(false, true, 1, &z[..2]);
        wire.extend(client_frame(true, true, 0, &z[2..]));
        proto(server(Some(100)), wire);
        // RSV2 and RSV3 stay errors.
        let mut wire = client_frame(true, true, 1, &z);
        wire[0] |= 0x20;
        proto(server(Some(100)), wire);
        // Not DEFLATE data.
        proto(server(Some(100)), client_frame(true, true, 1, &[0xff; 20]));
        // Invalid UTF-8 once inflated.
        let r = server(Some(100)).decode(&mut BytesMut::from(&client_frame(true, true, 1, &compressed(&[0xc3]))[..]));
        assert_eq!(r, Err(WsError::InvalidUtf8));
    }

    #[test]
    fn bombs_are_stopped_at_the_limit() {
        // 64 MiB of zeros is about 64 KiB compressed at level 9.
        let zeros = vec![0u8; 64 << 20];
        let mut z = Vec::new();
        compress(9, &zeros, &mut z);
        assert!(z.len() < 1 << 17, "{}", z.len());
        assert_eq!(inflate(&z, 1 << 20), Err(WsError::TooBig));
        assert_eq!(inflate(&z, zeros.len()).map(|v| v.len()), Ok(zeros.len()));
        // Just at and just over the limit.
        let z = compressed(&[b'a'; 1000]);
        assert_eq!(inflate(&z, 1000).map(|v| v.len()), Ok(1000));
        assert_eq!(inflate(&z, 999), Err(WsError::TooBig));
        // Through the decoder: 1009.
        let mut d = Decoder::new(1 << 20, 1 << 20).with_inflate(4096);
        let small = compressed(&[b'x'; 5000]);
        let r = d.decode(&mut BytesMut::from(&client_frame(true, true, 2, &small)[..]));
        assert_eq!(r, Err(WsError::TooBig));
        assert_eq!(WsError::TooBig.close_code(), 1009);
        // The compressed size is held to the message limit before anything is inflated.
        let mut d = Decoder::new(100, 100).with_inflate(1 << 20);
        let big = compressed(&noise(500));
        let r = d.decode(&mut BytesMut::from(&client_frame(true, true, 2, &big)[..]));
        assert_eq!(r, Err(WsError::TooBig));
    }

    fn noise(n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect()
    }

    #[test]
    fn inflate_edge_cases() {
        // An empty message is one byte compressed (a stored block's header, its length in
        // the removed tail); no byte at all is not DEFLATE data.
        assert_eq!(compressed(b""), [0x00]);
        assert_eq!(inflate(&[0x00], 10), Ok(Vec::new()));
        assert_eq!(inflate(&[0x00], 0), Ok(Vec::new()));
        assert!(matches!(inflate(&[], 10), Err(WsError::Protocol(_))));
        // A message that ends the stream itself (a final block) is complete too.
        let mut whole = Vec::with_capacity(64);
        let mut c = Compress::new(Compression::new(6), false);
        c.compress_vec(b"final", &mut whole, FlushCompress::Finish).unwrap();
        assert_eq!(inflate(&whole, 100), Ok(b"final".to_vec()));
        // Cut inside a block.
        for level in [1, 6] {
            let mut z = Vec::new();
            compress(level, &"some text, some more text ".repeat(100).into_bytes(), &mut z);
            let r = inflate(&z[..z.len() / 2], 1 << 20);
            assert!(matches!(r, Err(WsError::Protocol(_))), "level {level}: {r:?}");
        }
        let z = compressed(&noise(3000));
        let r = inflate(&z[..z.len() / 2], 1 << 20);
        assert!(matches!(r, Err(WsError::Protocol(_))), "stored: {r:?}");
        // A stored block cut short: what follows is taken as its data, and the stream never
        // ends.
        let mut z = Vec::new();
        compress(0, &noise(3000), &mut z);
        assert_eq!(inflate(&z[..1000], 1 << 20), Err(WsError::Protocol("truncated compressed data")));
    }
}
