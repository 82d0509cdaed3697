//! The WebSocket frame decoder and the client protocol decoders behind it. Fed as the server
//! reads (bytes appended to one buffer, frames drained after every read), the messages and
//! the error must not depend on where the reads were cut; decoding each message as JSON and
//! as protobuf commands must never panic.
//!
//! Input: 2 bytes of split point, then the raw client bytes.

#![no_main]

use bytes::BytesMut;
use gyre::protocol::{self, Format};
use gyre::wire::ws::{Decoder, Message};
use libfuzzer_sys::fuzz_target;

fn run(reads: &[&[u8]]) -> (Vec<String>, Option<u16>) {
    let mut dec = Decoder::new(4096, 16 * 1024);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for r in reads {
        buf.extend_from_slice(r);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    if let Message::Text(d) | Message::Binary(d) = &m {
                        let _ = protocol::decode(Format::Json, d);
                        let _ = protocol::decode(Format::Protobuf, d);
                    }
                    out.push(format!("{m:?}"));
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e.close_code())),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = u16::from_le_bytes([data[0], data[1]]) as usize;
    let input = &data[2..];
    let split = split % (input.len() + 1);
    let whole = run(&[input]);
    let two = run(&[&input[..split], &input[split..]]);
    assert_eq!(whole, two, "split at {split}");
});
