//! RESP2, the Redis wire protocol: command encoding and an incremental reply decoder.
//!
//! Hand-written rather than a codec crate: the decoder needs to hand out bulk strings as
//! zero-copy `Bytes` slices of the read buffer (publication payloads go straight into frames),
//! and RESP2 is small enough that the whole codec is shorter than the glue around a crate.

use bytes::{Bytes, BytesMut};

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    /// `+OK` and other simple strings.
    Simple(Bytes),
    Bulk(Bytes),
    Array(Vec<Value>),
    /// `-ERR ...`: the text after the dash.
    Error(Bytes),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bulk(b) | Value::Simple(b) => Some(b),
            _ => None,
        }
    }

    /// An integer, or a string holding one (Lua numbers come back as integers, hash fields
    /// as strings).
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bulk(b) | Value::Simple(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The peer sent something that is not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// Nesting deeper than this is refused (our scripts return at most 4 levels).
const MAX_DEPTH: usize = 32;
/// Longest bulk string accepted (Redis's own proto-max-bulk-len default).
const MAX_BULK: usize = 512 << 20;

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    out.reserve(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(b"*");
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(b"$");
        out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes one complete reply from the front of `buf`, consuming it; `Ok(None)` when more
/// bytes are needed (nothing is consumed then).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Value>, ProtocolError> {
    let Some(end) = scan(buf, 0, 0)? else { return Ok(None) };
    let frozen = buf.split_to(end).freeze();
    let (v, used) = build(&frozen, 0);
    debug_assert_eq!(used, end);
    Ok(Some(v))
}

/// The end of the line starting at `pos` (index of its `\r`), if complete.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    memchr::memchr(b'\n', buf.get(pos..)?).map(|i| pos + i).filter(|&n| n > pos && buf[n - 1] == b'\r').map(|n| n - 1)
}

fn parse_int(s: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(s).ok().and_then(|s| s.parse().ok()).ok_or(ProtocolError("bad integer"))
}

/// Validates one value starting at `pos`; returns the position after it when complete.
fn scan(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nesting too deep"));
    }
    let Some(&kind) = buf.get(pos) else { return Ok(None) };
    let Some(eol) = line_end(buf, pos + 1) else {
        // A line without its terminator yet; refuse absurdly long header lines.
        return if buf.len() - pos > 64 << 10 && kind != b'+' && kind != b'-' {
            Err(ProtocolError("header line too long"))
        } else {
            Ok(None)
        };
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => parse_int(line).map(|_| Some(next)),
        b'$' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let n = n as usize;
            if n > MAX_BULK {
                return Err(ProtocolError("bulk string too long"));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string without CRLF"));
            }
            Ok(Some(next + n + 2))
        }
        b'*' => {
            let n = parse_int(line)?;
            let mut at = next;
            for _ in 0..n.max(0) {
                match scan(buf, at, depth + 1)? {
                    Some(e) => at = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

/// Builds the value `scan` validated at `pos`, slicing bulk strings out of `buf`.
fn build(buf: &Bytes, pos: usize) -> (Value, usize) {
    let kind = buf[pos];
    let eol = line_end(buf, pos + 1).expect("scanned");
    let line = buf.slice(pos + 1..eol);
    let next = eol + 2;
    match kind {
        b'+' => (Value::Simple(line), next),
        b'-' => (Value::Error(line), next),
        b':' => (Value::Int(parse_int(&line).expect("scanned")), next),
        b'$' => {
            let n = parse_int(&line).expect("scanned");
            if n < 0 {
                return (Value::Nil, next);
            }
            let n = n as usize;
            (Value::Bulk(buf.slice(next..next + n)), next + n + 2)
        }
        _ => {
            let n = parse_int(&line).expect("scanned");
            if n < 0 {
                return (Value::Nil, next);
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut at = next;
            for _ in 0..n {
                let (v, e) = build(buf, at);
                items.push(v);
                at = e;
            }
            (Value::Array(items), at)
        }
    }
}

/// Skips `n` bytes of `buf` (used by tests).
#[cfg(test)]
fn advance(buf: &mut BytesMut, n: usize) {
    use bytes::Buf;
    buf.advance(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn encodes_commands() {
        let mut out = BytesMut::new();
        encode(&["SET", "k", ""], &mut out);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn decodes_every_type_and_nesting() {
        let wire = b"+OK\r\n-ERR bad\r\n:42\r\n$-1\r\n$3\r\nabc\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n";
        let mut buf = BytesMut::from(&wire[..]);
        let mut got = Vec::new();
        while let Some(v) = decode(&mut buf).unwrap() {
            got.push(v);
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                Value::Simple(b("OK")),
                Value::Error(b("ERR bad")),
                Value::Int(42),
                Value::Nil,
                Value::Bulk(b("abc")),
                Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Bulk(b(""))])]),
                Value::Nil,
            ]
        );
    }

    #[test]
    fn incomplete_input_consumes_nothing_at_any_cut() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\nl\r\n:7\r\n";
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let first = decode(&mut buf).unwrap();
            if cut < wire.len() - 4 {
                assert_eq!(first, None, "cut {cut}");
                assert_eq!(buf.len(), cut);
            }
            buf.extend_from_slice(&wire[cut..]);
            let mut all = Vec::new();
            if let Some(v) = first {
                all.push(v);
            }
            while let Some(v) = decode(&mut buf).unwrap() {
                all.push(v);
            }
            assert_eq!(all.len(), 2, "cut {cut}");
            assert_eq!(
                all[0],
                Value::Array(vec![Value::Bulk(b("message")), Value::Bulk(b("ch")), Value::Bulk(b("he\r\nl"))])
            );
        }
    }

    #[test]
    fn refuses_garbage_and_deep_nesting() {
        assert!(decode(&mut BytesMut::from(&b"?x\r\n"[..])).is_err());
        assert!(decode(&mut BytesMut::from(&b":x\r\n"[..])).is_err());
        assert!(decode(&mut BytesMut::from(&b"$3\r\nabcd\r\n"[..])).is_err());
        let deep = "*1\r\n".repeat(100) + ":1\r\n";
        assert!(decode(&mut BytesMut::from(deep.as_bytes())).is_err());
        let mut buf = BytesMut::from(&b"+OK\r\n"[..]);
        advance(&mut buf, 5);
        assert_eq!(decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn value_helpers() {
        assert_eq!(Value::Bulk(b("17")).int(), Some(17));
        assert_eq!(Value::Int(-3).int(), Some(-3));
        assert_eq!(Value::Nil.int(), None);
    }
}
