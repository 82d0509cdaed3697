//! Legacy ndjson stream: `LineSplitter` + `decode_line` must give the same pieces and the same
//! decoded commands however the body is cut into reads, and must match a plain model of the
//! splitter (split on `\n`, lines longer than `max_line` → TooLong, trim, skip blank lines).
//!
//! Every line also checks the hand-written publish reader against the general decoder: when
//! `fast::publish` answers, `decode_line_general` gives the same command; `fast::route` never
//! panics. Each line is also read as the body of a `batch`: when `fast::batch` answers,
//! `decode_batch_general` gives the same publishes.
//!
//! Input: 2 bytes of split point, then the body.

#![no_main]

use gyre::api::parse::{decode_batch_general, decode_line, decode_line_general, LineSplitter, Piece};
use gyre::api::{fast, Command, Method};
use libfuzzer_sys::fuzz_target;

/// What one piece came to: the line and its decoded (id, method or error code).
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Line { bytes: Vec<u8>, id: u32, command: Result<Method, u32> },
    TooLong,
}

fn line(bytes: &[u8]) -> Out {
    let _ = fast::route(bytes);
    if let Some(f) = fast::publish(bytes) {
        let g = decode_line_general(bytes);
        assert_eq!(g.id, f.id);
        match g.command {
            Ok(Command::Publish(p)) => {
                assert_eq!(&*p.channel, f.channel);
                assert_eq!(&p.data.bytes[..], f.data);
                assert_eq!(p.skip_history, f.skip_history);
                assert!(p.tags.is_none() && p.idempotency_key.is_none() && !p.delta && p.version == 0);
            }
            other => panic!("fast reader accepted a line the decoder reads as {other:?}"),
        }
    }
    if let Some((publishes, parallel)) = fast::batch(bytes) {
        match decode_batch_general(bytes) {
            Ok(Command::Batch(b)) => {
                assert_eq!(b.parallel, parallel);
                assert_eq!(b.commands.len(), publishes.len());
                for (c, f) in b.commands.iter().zip(&publishes) {
                    let Ok(Command::Publish(p)) = c else { panic!("fast batch reader accepted a command read as {c:?}") };
                    assert_eq!((&*p.channel, &p.data.bytes[..], p.skip_history), (f.channel, f.data, f.skip_history));
                    assert!(p.tags.is_none() && p.idempotency_key.is_none() && !p.delta && p.version == 0);
                }
            }
            other => panic!("fast batch reader accepted a body the decoder reads as {other:?}"),
        }
    }
    let l = decode_line(bytes);
    Out::Line { bytes: bytes.to_vec(), id: l.id, command: l.command.map(|c| c.method()).map_err(|e| e.code) }
}

fn split(chunks: &[&[u8]], max_line: usize) -> Vec<Out> {
    let mut s = LineSplitter::new(max_line);
    let mut out = Vec::new();
    let mut f = |p: Piece<'_>| {
        out.push(match p {
            Piece::Line(l) => {
                assert!(!l.is_empty() && l.len() <= max_line, "line of {} bytes, max {max_line}", l.len());
                line(l)
            }
            Piece::TooLong => Out::TooLong,
        })
    };
    for c in chunks {
        s.feed(c, &mut f);
        assert!(s.buffered() <= max_line, "buffered {} > max_line {max_line}", s.buffered());
    }
    s.finish(&mut f);
    assert_eq!(s.buffered(), 0);
    out
}

/// The splitter's contract written the slow way.
fn model(body: &[u8], max_line: usize) -> Vec<Out> {
    let mut segs: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if body.last() == Some(&b'\n') {
        segs.pop();
    }
    segs.into_iter()
        .filter_map(|seg| {
            if seg.len() > max_line {
                return Some(Out::TooLong);
            }
            let t = seg.trim_ascii();
            (!t.is_empty()).then(|| line(t))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let s = u16::from_le_bytes([data[0], data[1]]) as usize;
    let body = &data[2..];
    let a = s % (body.len() + 1);
    let b = (s.rotate_left(8) & 0xffff) % (body.len() + 1);
    let (lo, hi) = (a.min(b), a.max(b));
    // A large limit (nothing too long) and a small one derived from the input.
    for max_line in [1 << 20, 1 + (s >> 4) % 64] {
        let whole = split(&[body], max_line);
        assert_eq!(whole, model(body, max_line), "whole body vs model, max_line {max_line}");
        assert_eq!(split(&[&body[..a], &body[a..]], max_line), whole, "two pieces at {a}, max_line {max_line}");
        assert_eq!(
            split(&[&body[..lo], &body[lo..hi], &body[hi..]], max_line),
            whole,
            "three pieces at {lo},{hi}, max_line {max_line}"
        );
    }
});
