//! RFC 6455 framing with no I/O: the opening-handshake accept key, a frame decoder that
//! reassembles messages from a `BytesMut` read buffer, and frame encoders for both directions.
//!
//! Written here rather than taken from a crate because a publication's server frame is encoded
//! once, header included, and the same `Bytes` is queued to every subscriber; a codec bound to
//! one stream encodes per connection and cannot share an encoded frame across connections.
//!
//! The decoder runs in server mode (client frames must be masked) or client mode (frames must
//! be unmasked), the latter for tests and the bundled load tool. On a connection that
//! negotiated permessage-deflate it inflates compressed messages (RSV1, [`super::deflate`]).

use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest header a server (unmasked) frame can have.
pub const MAX_HEADER: usize = 10;

/// Control frame payloads are limited to 125 bytes (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    use base64::Engine as _;
    let mut sha = Sha1::new();
    sha.update(sec_websocket_key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// One complete message (data messages reassembled from their fragments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// Status code and reason; `None` for an empty close payload.
    Close(Option<(u16, String)>),
}

/// Why the peer's frames were rejected; the connection is then closed with [`WsError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    Protocol(&'static str),
    TooBig,
    InvalidUtf8,
}

impl WsError {
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::TooBig => 1009,
            WsError::InvalidUtf8 => 1007,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Protocol(why) => write!(f, "websocket protocol error: {why}"),
            WsError::TooBig => f.write_str("websocket message too big"),
            WsError::InvalidUtf8 => f.write_str("websocket text is not valid UTF-8"),
        }
    }
}

impl std::error::Error for WsError {}

/// A fragmented data message being reassembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// Its first frame had RSV1: the data is inflated when complete.
    compressed: bool,
    data: BytesMut,
}

/// Frame decoder: consumes frames from the front of a read buffer, yields whole messages.
#[derive(Debug)]
pub struct Decoder {
    /// Limits in bytes, kept as `u32` (saturating: 4 GiB is beyond any frame a server takes)
    /// so the decoder every connection's reader holds stays small.
    max_frame: u32,
    max_message: u32,
    /// permessage-deflate was negotiated: the most bytes a compressed message may inflate to.
    /// Without it a frame with RSV1 is a protocol error.
    max_inflated: Option<u32>,
    /// Server mode: frames must be masked. Client mode: frames must not be.
    expect_masked: bool,
    partial: Option<Partial>,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    /// RSV1 on the first frame of a data message: it is compressed.
    compressed: bool,
    op: OpCode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

/// A limit as the decoder keeps it.
fn clamp(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

impl Decoder {
    /// Server-side decoder: accepts only masked frames.
    pub fn new(max_frame: usize, max_message: usize) -> Decoder {
        Decoder {
            max_frame: clamp(max_frame),
            max_message: clamp(max_message),
            max_inflated: None,
            expect_masked: true,
            partial: None,
        }
    }

    /// Client-side decoder: accepts only unmasked frames.
    pub fn client(max_frame: usize, max_message: usize) -> Decoder {
        Decoder { expect_masked: false, ..Decoder::new(max_frame, max_message) }
    }

    /// The connection negotiated permessage-deflate: compressed messages (RSV1) are inflated,
    /// to at most `max_inflated` bytes (their compressed size is held to the message limit).
    pub fn with_inflate(self, max_inflated: usize) -> Decoder {
        Decoder { max_inflated: Some(clamp(max_inflated)), ..self }
    }

    /// Decodes the next complete message from the front of `buf`, consuming its frames.
    /// `Ok(None)` means more bytes are needed; fragments already consumed are kept here.
    /// After an error the connection must be closed: the decoder state is unspecified.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WsError> {
        loop {
            let Some(h) = self.parse_header(buf)? else {
                return Ok(None);
            };
            let total = h.header_len + h.payload_len;
            if buf.len() < total {
                // The header passed the size checks, so the whole frame may be buffered:
                // reserve once instead of growing as the reads arrive.
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.payload_len);
            if let Some(mask) = h.mask {
                apply_mask(&mut payload, mask);
            }
            match h.op {
                OpCode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                OpCode::Close => return parse_close(&payload).map(|c| Some(Message::Close(c))),
                OpCode::Text | OpCode::Binary => {
                    let text = h.op == OpCode::Text;
                    if h.fin {
                        return self.finish(text, h.compressed, payload.freeze()).map(Some);
                    }
                    self.partial = Some(Partial { text, compressed: h.compressed, data: payload });
                }
                OpCode::Continuation => {
                    // parse_header has rejected a continuation with no message in progress.
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(WsError::Protocol("continuation without a started message"));
                    };
                    partial.data.extend_from_slice(&payload);
                    if h.fin {
                        if let Some(Partial { text, compressed, data }) = self.partial.take() {
                            return self.finish(text, compressed, data.freeze()).map(Some);
                        }
                    }
                }
            }
        }
    }

    /// Parses and validates the header at the front of `buf` without consuming it, so that an
    /// oversized or malformed frame is rejected before any of its payload is buffered.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, WsError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        // RSV1 is permessage-deflate's, and only once it is negotiated.
        let compressed = b0 & 0x40 != 0 && self.max_inflated.is_some();
        if b0 & 0x70 != 0 && !(compressed && b0 & 0x30 == 0) {
            return Err(WsError::Protocol("reserved bits set"));
        }
        let fin = b0 & 0x80 != 0;
        let op = OpCode::from_bits(b0 & 0x0F).ok_or(WsError::Protocol("unknown opcode"))?;
        if compressed && !matches!(op, OpCode::Text | OpCode::Binary) {
            return Err(WsError::Protocol("RSV1 on a control frame or a continuation"));
        }
        let len7 = (b1 & 0x7F) as usize;
        if op.is_control() {
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
            if len7 > MAX_CONTROL {
                return Err(WsError::Protocol("control frame too long"));
            }
        } else if op == OpCode::Continuation {
            if self.partial.is_none() {
                return Err(WsError::Protocol("continuation without a started message"));
            }
        } else if self.partial.is_some() {
            return Err(WsError::Protocol("new data frame inside a fragmented message"));
        }
        let masked = b1 & 0x80 != 0;
        if masked != self.expect_masked {
            return Err(WsError::Protocol(if masked { "masked server frame" } else { "unmasked client frame" }));
        }
        let (payload_len, mut header_len) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(WsError::Protocol("payload length has the high bit set"));
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        if payload_len > self.max_frame as u64 {
            return Err(WsError::TooBig);
        }
        let payload_len = payload_len as usize;
        if let Some(p) = &self.partial {
            if op == OpCode::Continuation && p.data.len() + payload_len > self.max_message as usize {
                return Err(WsError::TooBig);
            }
        } else if !op.is_control() && payload_len > self.max_message as usize {
            return Err(WsError::TooBig);
        }
        let mask = if masked {
            if buf.len() < header_len + 4 {
                return Ok(None);
            }
            let m = buf[header_len..header_len + 4].try_into().expect("4 bytes");
            header_len += 4;
            Some(m)
        } else {
            None
        };
        Ok(Some(Header { fin, compressed, op, mask, header_len, payload_len }))
    }

    /// Completes a data message: inflates it when it was compressed, then validates text as
    /// UTF-8 over the whole message, so that a code point split across fragments is accepted.
    fn finish(&self, text: bool, compressed: bool, data: Bytes) -> Result<Message, WsError> {
        let data = match self.max_inflated {
            Some(limit) if compressed => Bytes::from(super::deflate::inflate(&data, limit as usize)?),
            _ => data,
        };
        finish(text, data)
    }
}

/// A complete data message's checks (see [`Decoder::finish`]).
fn finish(text: bool, data: Bytes) -> Result<Message, WsError> {
    if text {
        std::str::from_utf8(&data).map_err(|_| WsError::InvalidUtf8)?;
        Ok(Message::Text(data))
    } else {
        Ok(Message::Binary(data))
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                return Err(WsError::Protocol("invalid close code"));
            }
            // A reason that is not UTF-8 is inconsistent data of a text type: 1007, as for text.
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// Codes a peer may send (RFC 6455 §7.4): 1004-1006 and 1015 are reserved for local use,
/// 1012+ are unassigned in the RFC, below 3000 is reserved for the protocol.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// XORs `data` with the 4-byte mask, eight bytes per step: the mask phase is the same at every
/// multiple of 4, so two mask copies form one 64-bit word.
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Header length of a server (unmasked) frame with `payload_len` bytes of payload.
pub fn header_len(payload_len: usize) -> usize {
    if payload_len <= 125 {
        2
    } else if payload_len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// A frame header (FIN set) in a stack buffer, and its length.
fn encode_header(op: OpCode, payload_len: usize, mask_bit: u8) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = 0x80 | op.bits();
    let n = if payload_len <= 125 {
        h[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        h[1] = mask_bit | 126;
        h[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        h[1] = mask_bit | 127;
        h[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// Appends one final (unfragmented), unmasked server frame.
pub fn encode_frame(op: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let (h, n) = encode_header(op, payload.len(), 0);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

/// One server frame as shareable bytes.
pub fn frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    encode_frame(op, payload, &mut out);
    out.into()
}

/// Turns a buffer of [`MAX_HEADER`] placeholder bytes followed by a payload into a server frame
/// without copying the payload: the header is written right before it and the unused front is
/// sliced off. Lets a caller encode a payload straight into the buffer that becomes the frame.
pub fn frame_in_place(op: OpCode, buf: Vec<u8>) -> Bytes {
    place_header(op, buf, 0)
}

/// [`frame_in_place`] for a payload compressed by permessage-deflate: RSV1 is set.
pub fn frame_in_place_compressed(op: OpCode, buf: Vec<u8>) -> Bytes {
    place_header(op, buf, 0x40)
}

fn place_header(op: OpCode, mut buf: Vec<u8>, rsv: u8) -> Bytes {
    assert!(buf.len() >= MAX_HEADER, "frame_in_place needs MAX_HEADER reserved bytes");
    let payload_len = buf.len() - MAX_HEADER;
    let (mut h, n) = encode_header(op, payload_len, 0);
    h[0] |= rsv;
    let start = MAX_HEADER - n;
    buf[start..MAX_HEADER].copy_from_slice(&h[..n]);
    Bytes::from(buf).slice(start..)
}

/// The opcode and payload of a complete server frame as [`frame`] builds it (unmasked, FIN
/// set); `None` for anything else.
pub fn server_frame_parts(f: &[u8]) -> Option<(OpCode, &[u8])> {
    let (&b0, &b1) = (f.first()?, f.get(1)?);
    if b0 & 0xF0 != 0x80 || b1 & 0x80 != 0 {
        return None;
    }
    let op = OpCode::from_bits(b0 & 0x0F)?;
    let (len, start) = match b1 & 0x7F {
        126 => (u16::from_be_bytes(f.get(2..4)?.try_into().ok()?) as u64, 4),
        127 => (u64::from_be_bytes(f.get(2..10)?.try_into().ok()?), 10),
        n => (n as u64, 2),
    };
    let payload = f.get(start..)?;
    (payload.len() as u64 == len).then_some((op, payload))
}

/// A close frame; the reason is cut on a char boundary so the payload stays within 125 bytes.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    frame(OpCode::Close, &payload[..2 + end])
}

/// Appends one final, masked client frame.
pub fn encode_client_frame(op: OpCode, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let (h, n) = encode_header(op, payload.len(), 0x80);
    out.reserve(n + 4 + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame with full control over FIN, RSV, opcode bits and length form.
    fn raw(fin: bool, b0_extra: u8, op: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | b0_extra | op];
        let mbit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n <= 125 => out.push(mbit | n as u8),
            n if n <= 0xFFFF => {
                out.push(mbit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mbit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let start = out.len() + if mask.is_some() { 4 } else { 0 };
        if let Some(m) = mask {
            out.extend_from_slice(&m);
        }
        out.extend_from_slice(payload);
        if let Some(m) = mask {
            for (i, b) in out[start..].iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        out
    }

    fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        raw(fin, 0, op, Some(MASK), payload)
    }

    fn server() -> Decoder {
        Decoder::new(1 << 20, 1 << 21)
    }

    /// Decodes everything in `bytes` (whole), returning messages and the final error if any.
    fn decode_all(d: &mut Decoder, buf: &mut BytesMut) -> Result<Vec<Message>, WsError> {
        let mut out = Vec::new();
        while let Some(m) = d.decode(buf)? {
            out.push(m);
        }
        Ok(out)
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Message>, WsError> {
        server().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn every_length_form_round_trips() {
        for len in [0usize, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut wire = Vec::new();
            encode_client_frame(OpCode::Binary, &payload, MASK, &mut wire);
            assert_eq!(wire.len(), header_len(len) + 4 + len);
            let mut buf = BytesMut::from(&wire[..]);
            let msg = server().decode(&mut buf).unwrap().unwrap();
            assert_eq!(msg, Message::Binary(Bytes::from(payload.clone())));
            assert!(buf.is_empty());

            let f = frame(OpCode::Binary, &payload);
            assert_eq!(f.len(), header_len(len) + len);
            let form = match len {
                0..=125 => len as u8,
                126..=65535 => 126,
                _ => 127,
            };
            assert_eq!(f[1], form, "len {len}");
            let mut buf = BytesMut::from(&f[..]);
            let msg = Decoder::client(1 << 20, 1 << 20).decode(&mut buf).unwrap().unwrap();
            assert_eq!(msg, Message::Binary(Bytes::from(payload.clone())));

            let mut inplace = vec![0u8; MAX_HEADER];
            inplace.extend_from_slice(&payload);
            assert_eq!(frame_in_place(OpCode::Binary, inplace), f);
            assert_eq!(server_frame_parts(&f), Some((OpCode::Binary, &payload[..])));
            assert_eq!(server_frame_parts(&f[..f.len() - 1]), None);
            let mut rsv1 = f.to_vec();
            rsv1[0] |= 0x40;
            assert_eq!(server_frame_parts(&rsv1), None);
        }
    }

    #[test]
    fn non_minimal_length_accepted() {
        let mut wire = vec![0x82, 0x80 | 126, 0, 3];
        wire.extend_from_slice(&[0; 4]);
        wire.extend_from_slice(b"abc");
        assert_eq!(decode_one(&wire).unwrap(), Some(Message::Binary(Bytes::from_static(b"abc"))));
        let mut wire = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 3];
        wire.extend_from_slice(&[0; 4]);
        wire.extend_from_slice(b"abc");
        assert_eq!(decode_one(&wire).unwrap(), Some(Message::Binary(Bytes::from_static(b"abc"))));
    }

    #[test]
    fn mask_matches_bytewise() {
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut data = orig.clone();
            apply_mask(&mut data, MASK);
            for (i, b) in data.iter().enumerate() {
                assert_eq!(*b, orig[i] ^ MASK[i % 4]);
            }
        }
    }

    #[test]
    fn fragmented_with_interleaved_ping() {
        let mut wire = masked(false, 0x1, b"Hel");
        wire.extend(masked(true, 0x9, b"p"));
        wire.extend(masked(false, 0x0, b"lo"));
        wire.extend(masked(true, 0xA, b""));
        wire.extend(masked(true, 0x0, b"!"));
        let msgs = decode_all(&mut server(), &mut BytesMut::from(&wire[..])).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Pong(Bytes::new()),
                Message::Text(Bytes::from_static(b"Hello!")),
            ]
        );
    }

    #[test]
    fn utf8_split_across_fragments() {
        let text = "aé€😀".as_bytes();
        let mut wire = Vec::new();
        // Split inside every multi-byte sequence.
        for (i, chunk) in text.chunks(3).enumerate() {
            let last = (i + 1) * 3 >= text.len();
            wire.extend(masked(last, if i == 0 { 0x1 } else { 0x0 }, chunk));
        }
        let msgs = decode_all(&mut server(), &mut BytesMut::from(&wire[..])).unwrap();
        assert_eq!(msgs, vec![Message::Text(Bytes::from_static(text))]);
    }

    /// A stream of varied messages and what it decodes to.
    fn sample_stream() -> (Vec<u8>, Vec<Message>) {
        let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        encode_client_frame(OpCode::Text, b"{\"id\":1}", MASK, &mut wire);
        encode_client_frame(OpCode::Binary, &big, [1, 2, 3, 4], &mut wire);
        wire.extend(masked(false, 0x2, &big[..130]));
        wire.extend(masked(true, 0x9, b"ping"));
        wire.extend(masked(true, 0x0, &big[130..]));
        encode_client_frame(OpCode::Text, "ünï".as_bytes(), MASK, &mut wire);
        encode_client_frame(OpCode::Close, &[0x03, 0xE8, b'b', b'y', b'e'], MASK, &mut wire);
        let expected = vec![
            Message::Text(Bytes::from_static(b"{\"id\":1}")),
            Message::Binary(Bytes::from(big.clone())),
            Message::Ping(Bytes::from_static(b"ping")),
            Message::Binary(Bytes::from(big)),
            Message::Text(Bytes::from("ünï")),
            Message::Close(Some((1000, "bye".into()))),
        ];
        (wire, expected)
    }

    #[test]
    fn split_at_every_position_gives_same_messages() {
        let (wire, expected) = sample_stream();
        assert_eq!(decode_all(&mut server(), &mut BytesMut::from(&wire[..])).unwrap(), expected);
        for split in 0..=wire.len() {
            let mut d = server();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = decode_all(&mut d, &mut buf).unwrap();
            buf.extend_from_slice(&wire[split..]);
            got.extend(decode_all(&mut d, &mut buf).unwrap());
            assert_eq!(got, expected, "split at {split}");
            assert!(buf.is_empty());
        }
        let mut d = server();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &wire {
            buf.extend_from_slice(&[*b]);
            got.extend(decode_all(&mut d, &mut buf).unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn masking_rules() {
        assert_eq!(decode_one(&raw(true, 0, 0x1, None, b"hi")), Err(WsError::Protocol("unmasked client frame")));
        let mut buf = BytesMut::from(&masked(true, 0x1, b"hi")[..]);
        assert!(matches!(Decoder::client(100, 100).decode(&mut buf), Err(WsError::Protocol(_))));
        let mut buf = BytesMut::from(&raw(true, 0, 0x1, None, b"hi")[..]);
        assert_eq!(Decoder::client(100, 100).decode(&mut buf), Ok(Some(Message::Text(Bytes::from_static(b"hi")))));
    }

    #[test]
    fn header_errors() {
        let proto = |wire: Vec<u8>| assert!(matches!(decode_one(&wire), Err(WsError::Protocol(_))), "{wire:?}");
        for rsv in [0x40, 0x20, 0x10] {
            proto(raw(true, rsv, 0x1, Some(MASK), b"x"));
        }
        for op in [0x3, 0x7, 0xB, 0xF] {
            proto(masked(true, op, b"x"));
        }
        proto(masked(true, 0x9, &[0; 126]));
        proto(masked(true, 0xA, &[0; 200]));
        proto(masked(false, 0x9, b"x"));
        proto(masked(false, 0x8, b""));
        proto(masked(true, 0x0, b"x"));
        let mut wire = masked(false, 0x1, b"a");
        wire.extend(masked(true, 0x2, b"b"));
        proto(wire);
        let mut wire = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        wire.extend_from_slice(&MASK);
        proto(wire);
    }

    #[test]
    fn too_big_is_detected_from_the_header() {
        // Only the header is present: the declared length alone must trigger the error.
        let mut d = Decoder::new(100, 150);
        let mut buf = BytesMut::from(&[0x82u8, 0x80 | 126, 0x03, 0xE8][..]);
        assert_eq!(d.decode(&mut buf), Err(WsError::TooBig));
        let mut buf = BytesMut::from(&[0x82u8, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(Decoder::new(100, 150).decode(&mut buf), Err(WsError::TooBig));
        // Assembled message over max_message, each fragment within max_frame.
        let mut d = Decoder::new(100, 150);
        let mut buf = BytesMut::from(&masked(false, 0x2, &[0; 100])[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&masked(true, 0x0, &[0; 60])[..8]);
        assert_eq!(d.decode(&mut buf), Err(WsError::TooBig));
        // A single frame within max_frame but over max_message.
        let mut buf = BytesMut::from(&masked(true, 0x2, &[0; 90])[..]);
        assert_eq!(Decoder::new(100, 80).decode(&mut buf), Err(WsError::TooBig));
    }

    #[test]
    fn invalid_utf8_text() {
        assert_eq!(decode_one(&masked(true, 0x1, &[b'a', 0xFF])), Err(WsError::InvalidUtf8));
        let mut wire = masked(false, 0x1, &[0xC3]);
        wire.extend(masked(true, 0x0, b"a"));
        assert_eq!(decode_all(&mut server(), &mut BytesMut::from(&wire[..])), Err(WsError::InvalidUtf8));
        // Binary is not checked.
        assert!(decode_one(&masked(true, 0x2, &[0xFF])).unwrap().is_some());
    }

    #[test]
    fn close_payloads() {
        let close = |payload: &[u8]| decode_one(&masked(true, 0x8, payload));
        assert_eq!(close(b""), Ok(Some(Message::Close(None))));
        assert!(matches!(close(&[0x03]), Err(WsError::Protocol(_))));
        for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice("réason".as_bytes());
            assert_eq!(close(&p), Ok(Some(Message::Close(Some((code, "réason".into()))))), "{code}");
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000, 2999, 5000, 65535] {
            assert!(matches!(close(&code.to_be_bytes()), Err(WsError::Protocol(_))), "{code}");
        }
        assert_eq!(close(&[0x03, 0xE8, 0xFF]), Err(WsError::InvalidUtf8));
    }

    #[test]
    fn close_frame_truncates_on_char_boundary() {
        let reason = "é".repeat(100);
        let f = close_frame(3501, &reason);
        assert_eq!(f[0], 0x88);
        assert!(f[1] as usize <= MAX_CONTROL);
        let msg = Decoder::client(1000, 1000).decode(&mut BytesMut::from(&f[..])).unwrap();
        let Some(Message::Close(Some((code, r)))) = msg else { panic!("{msg:?}") };
        assert_eq!(code, 3501);
        assert_eq!(r, "é".repeat(61));
        assert_eq!(close_frame(1000, "").as_ref(), &[0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn close_codes() {
        assert_eq!(WsError::Protocol("x").close_code(), 1002);
        assert_eq!(WsError::TooBig.close_code(), 1009);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
    }
}
