//! HTTP request framing: `parse_head` then `BodyDecoder`, fed the way the server reads (bytes
//! appended to one buffer, head parsed once complete, body drained after every read). The
//! head, the body bytes, the error, completion and the bytes left over must not depend on
//! where the reads were cut.
//!
//! Input: 2 bytes of split point, then the raw request bytes.

#![no_main]

use bytes::{Buf, BytesMut};
use gyre::wire::http::{parse_head, BodyDecoder};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq, Default)]
struct Outcome {
    /// Debug of the parsed head and its length.
    head: Option<String>,
    body: Vec<u8>,
    error: Option<u16>,
    done: bool,
    /// Bytes after the body (the next pipelined request), once the body is done.
    rest: Vec<u8>,
}

fn run(reads: &[&[u8]]) -> Outcome {
    let mut o = Outcome::default();
    let mut buf = BytesMut::new();
    let mut decoder: Option<BodyDecoder> = None;
    for r in reads {
        buf.extend_from_slice(r);
        if decoder.is_none() {
            match parse_head(&buf) {
                Err(e) => {
                    o.error = Some(e.0);
                    return o;
                }
                Ok(None) => continue,
                Ok(Some((head, len))) => {
                    assert!(len > 0 && len <= buf.len(), "head length {len} of {}", buf.len());
                    o.head = Some(format!("{head:?} {len}"));
                    buf.advance(len);
                    decoder = Some(BodyDecoder::new(&head));
                }
            }
        }
        let d = decoder.as_mut().expect("head parsed");
        loop {
            match d.next(&mut buf) {
                Ok(Some(piece)) => {
                    assert!(!piece.is_empty(), "empty body piece");
                    o.body.extend_from_slice(&piece);
                }
                Ok(None) => break,
                Err(e) => {
                    o.error = Some(e.0);
                    return o;
                }
            }
        }
    }
    if let Some(d) = &decoder {
        o.done = d.is_done();
        if o.done {
            o.rest = buf.to_vec();
        }
    }
    o
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let s = u16::from_le_bytes([data[0], data[1]]) as usize;
    let input = &data[2..];
    let a = s % (input.len() + 1);
    let b = (s.rotate_left(8) & 0xffff) % (input.len() + 1);
    let (lo, hi) = (a.min(b), a.max(b));
    let whole = run(&[input]);
    assert_eq!(run(&[&input[..a], &input[a..]]), whole, "two reads split at {a}");
    assert_eq!(run(&[&input[..lo], &input[lo..hi], &input[hi..]]), whole, "three reads split at {lo},{hi}");
});
