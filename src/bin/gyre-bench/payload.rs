//! The message body every publisher sends and every subscriber looks for:
//! `{"t":<send time, ns>,"p":<publisher>,"s":<sequence>,"x":"xxx…"}`, padded to `--size`.
//!
//! It is valid JSON (Centrifugo's `data` must be), and subscribers find it by scanning the
//! received bytes for `{"t":` instead of decoding the protocol: the same scan works in a JSON
//! push, inside a protobuf `Publication.data`, a RESP bulk string and a NATS `MSG` body, so all
//! targets pay the same, small client cost.
//!
//! Sequences count per (publisher, channel) from 1; a subscriber listens to one channel, so
//! it tracks the last sequence per publisher and sees gaps (lost) and repeats (duplicated).

use memchr::memmem;

/// What a payload starts with.
pub const MARK: &[u8] = b"{\"t\":";

/// The smallest body: `{"t":`, 19 digits, `,"p":`, 10, `,"s":`, 19, `}`.
const MAX_BARE: usize = 5 + 19 + 5 + 10 + 5 + 19 + 1;

/// Appends a payload of `size` bytes (or the bare fields when `size` is smaller).
pub fn encode(out: &mut Vec<u8>, t: u64, p: u32, s: u64, size: usize) {
    let start = out.len();
    out.extend_from_slice(MARK);
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(t).as_bytes());
    out.extend_from_slice(b",\"p\":");
    out.extend_from_slice(b.format(p).as_bytes());
    out.extend_from_slice(b",\"s\":");
    out.extend_from_slice(b.format(s).as_bytes());
    const PAD_FIELD: usize = 7; // ,"x":""
    let used = out.len() - start + 1;
    if size >= used + PAD_FIELD {
        out.extend_from_slice(b",\"x\":\"");
        let pad = size - used - PAD_FIELD;
        out.resize(out.len() + pad, b'x');
        out.push(b'"');
    }
    out.push(b'}');
}

/// Bytes a payload of `size` takes (for buffer sizing).
pub fn encoded_len(size: usize) -> usize {
    size.max(MAX_BARE)
}

/// One payload found in received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub t: u64,
    pub p: u32,
    pub s: u64,
}

/// The searcher for [`MARK`], built once (building one per call cost as much as the search).
fn finder() -> &'static memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(MARK))
}

/// Calls `f` for every payload in `buf`; returns how many were found.
pub fn scan(buf: &[u8], mut f: impl FnMut(Seen)) -> usize {
    let mut n = 0;
    for i in finder().find_iter(buf) {
        if let Some(seen) = parse(&buf[i + MARK.len()..]) {
            f(seen);
            n += 1;
        }
    }
    n
}

/// Parses `T,"p":P,"s":S` at the front of `b`.
fn parse(b: &[u8]) -> Option<Seen> {
    let (t, b) = digits(b)?;
    let b = b.strip_prefix(b",\"p\":")?;
    let (p, b) = digits(b)?;
    let b = b.strip_prefix(b",\"s\":")?;
    let (s, _) = digits(b)?;
    Some(Seen { t, p: u32::try_from(p).ok()?, s })
}

/// The decimal number at the front of `b` and what follows it. At most 19 digits, so the
/// value cannot overflow and needs no checked arithmetic (this runs for every field of every
/// received message).
fn digits(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b.iter().take(20) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v * 10 + d as u64;
        n += 1;
    }
    if n == 0 || n > 19 {
        return None;
    }
    Some((v, &b[n..]))
}

/// Sequence bookkeeping of one subscriber (one channel).
#[derive(Debug, Default)]
pub struct Track {
    /// Last sequence seen per publisher (0 = none yet).
    last: Vec<u64>,
    pub lost: u64,
    pub duplicated: u64,
}

impl Track {
    pub fn new(publishers: usize) -> Track {
        Track { last: vec![0; publishers], lost: 0, duplicated: 0 }
    }

    /// Records sequence `s` of publisher `p`. A jump counts the skipped ones as lost; a
    /// sequence at or below the last one counts as duplicated (the server keeps per-channel
    /// order from one publisher, so a late message is also an ordering fault).
    pub fn observe(&mut self, p: u32, s: u64) {
        let Some(last) = self.last.get_mut(p as usize) else {
            return;
        };
        if s > *last {
            self.lost += s - *last - 1;
            *last = s;
        } else {
            self.duplicated += 1;
        }
    }

    /// Messages of each publisher sent after the last one seen (`sent[p]` = its last sequence
    /// on this channel): lost at the end of the run.
    pub fn missing_at_end(&self, sent: impl Fn(usize) -> u64) -> u64 {
        self.last.iter().enumerate().map(|(p, &l)| sent(p).saturating_sub(l)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        for size in [0, 10, 60, 100, 1000] {
            let mut out = Vec::new();
            encode(&mut out, 123_456_789_012, 7, 42, size);
            if size >= 60 {
                assert_eq!(out.len(), size);
            }
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["t"], 123_456_789_012u64);
            let mut got = Vec::new();
            assert_eq!(scan(&out, |s| got.push(s)), 1);
            assert_eq!(got[0], Seen { t: 123_456_789_012, p: 7, s: 42 });
        }
    }

    #[test]
    fn finds_payloads_in_protocol_frames() {
        let mut a = Vec::new();
        encode(&mut a, 1, 0, 1, 40);
        let mut b = Vec::new();
        encode(&mut b, 2, 1, 9, 40);
        let frame = format!(
            "{{\"push\":{{\"channel\":\"c\",\"pub\":{{\"data\":{}}}}}}}\n{{}}\n{{\"push\":{{\"channel\":\"c\",\"pub\":{{\"data\":{},\"offset\":3}}}}}}",
            String::from_utf8(a).unwrap(),
            String::from_utf8(b).unwrap()
        );
        let mut got = Vec::new();
        scan(frame.as_bytes(), |s| got.push((s.p, s.s)));
        assert_eq!(got, vec![(0, 1), (1, 9)]);
    }

    #[test]
    fn reads_numbers_of_up_to_19_digits() {
        assert_eq!(digits(b"0,"), Some((0, &b","[..])));
        assert_eq!(digits(b"9999999999999999999}"), Some((9_999_999_999_999_999_999, &b"}"[..])));
        assert_eq!(digits(b"12345678901234567890"), None, "20 digits");
        assert_eq!(digits(b",1"), None);
        assert_eq!(digits(b""), None);
        assert_eq!(parse(b"1,\"p\":x"), None);
    }

    #[test]
    fn tracks_gaps_and_repeats() {
        let mut t = Track::new(2);
        for s in [1, 2, 4, 4, 5] {
            t.observe(0, s);
        }
        t.observe(1, 1);
        t.observe(5, 1); // unknown publisher: ignored
        assert_eq!((t.lost, t.duplicated), (1, 1));
        assert_eq!(t.missing_at_end(|p| if p == 0 { 7 } else { 1 }), 2);
    }
}
