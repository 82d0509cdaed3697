//! The Redis RESP2 reply decoder (`gyre::engine::redis::resp::decode`), fed as the engine's
//! connections read: bytes appended to one buffer, replies drained after every read.
//!
//! - The replies, the error and (without an error) the bytes left over do not depend on
//!   where the reads were cut.
//! - `Ok(None)` consumes nothing; a decoded reply consumes exactly its own bytes (decoding
//!   the consumed bytes alone gives the same reply and leaves nothing).
//! - Commands written by `resp::encode` decode back to the same arguments, as bulk strings.
//! - The value helpers (`bytes`, `int`, `into_array`) never panic.
//!
//! Input: 2 bytes of split point, then the wire bytes.

#![no_main]

use bytes::BytesMut;
use gyre::engine::redis::resp::{self, ProtocolError, Value};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Outcome {
    values: Vec<Value>,
    error: Option<ProtocolError>,
    rest: Vec<u8>,
}

fn touch(v: &Value) {
    let _ = v.bytes();
    let _ = v.int();
    if let Value::Array(items) = v {
        items.iter().for_each(touch);
    }
    let _ = v.clone().into_array();
}

fn run(reads: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut values = Vec::new();
    for r in reads {
        buf.extend_from_slice(r);
        loop {
            let before = buf.clone();
            match resp::decode(&mut buf) {
                Ok(Some(v)) => {
                    touch(&v);
                    let used = before.len() - buf.len();
                    assert!(used > 0, "a reply consumed nothing");
                    let mut alone = BytesMut::from(&before[..used]);
                    assert_eq!(resp::decode(&mut alone), Ok(Some(v.clone())), "the reply's bytes alone");
                    assert!(alone.is_empty(), "the reply's bytes alone left {} bytes", alone.len());
                    values.push(v);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "an incomplete reply consumed bytes");
                    break;
                }
                // The connection is dropped on an error: what is left does not matter.
                Err(e) => return Outcome { values, error: Some(e), rest: Vec::new() },
            }
        }
    }
    Outcome { values, error: None, rest: buf.to_vec() }
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
    // Byte by byte on short inputs.
    if input.len() <= 64 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte");
    }

    // The input cut into arguments at 0xff bytes: a command round-trips.
    let args: Vec<&[u8]> = input.split(|&b| b == 0xff).collect();
    let mut wire = BytesMut::new();
    resp::encode(&args, &mut wire);
    let decoded = resp::decode(&mut wire).expect("an encoded command decodes").expect("complete");
    assert!(wire.is_empty());
    let want = Value::Array(args.iter().map(|a| Value::Bulk(bytes::Bytes::copy_from_slice(a))).collect());
    assert_eq!(decoded, want);
});
