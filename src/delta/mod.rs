//! Fossil delta compression of publications, for subscribers that asked for it
//! (`delta: "fossil"` in subscribe, allowed by the namespace's `allowed_delta_types`).
//!
//! The owner of a channel keeps, per channel with delta subscribers in play, the data of the
//! last publication it delivered and a sequence number ([`Bases`]). A publication published
//! with `delta` (the API flag or the namespace's `delta_publish`) gets one fossil patch
//! against that data, computed once on the owner whatever the number of subscribers
//! ([`DeltaPub`]); each subscriber's hub entry remembers the sequence number of the last
//! publication it was sent, and gets the patch only when the patch's base is exactly that
//! publication. Otherwise (its first publication, after a gap, after recovery, a patch no
//! smaller than the data) it gets the full data — which JSON clients receive as a JSON string,
//! as Centrifugo sends it once delta is negotiated, so that they keep the exact bytes as the
//! next base.
//!
//! Map channels patch per key instead ([`DeltaPub::keyed`]): a change published with `delta`
//! is patched against the key's previous value on the owner, and every live subscriber holds
//! that value (it loaded the state, then followed every change of the key), so each gets the
//! patch — unless a tags filter may have kept the previous value from it: it gets the full
//! data. Removals carry no data and end the key's chain.
//!
//! Centrifugo takes the base from the stream (history) and so sends patches only to
//! positioned subscribers of channels with history; the owner's own record works without
//! history too and never sends a patch against a base the subscriber does not hold.

pub mod fossil;

use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;

/// What the owner worked out for one publication (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaPub {
    /// This publication's number in the channel's sequence on this node (from 1).
    pub seq: u64,
    /// The number of the publication `patch` applies to (0: none).
    pub base: u64,
    /// The fossil patch from the base's data to this publication's data, when one was asked
    /// for and is smaller than the data.
    pub patch: Option<Bytes>,
    /// A map channel's change: the patch is against the key's previous value, which every
    /// live subscriber of the channel holds (`seq` and `base` are 0).
    pub keyed: bool,
}

impl DeltaPub {
    /// A map channel's change of a key whose previous value was `prev` (see [`keyed`]).
    ///
    /// [`keyed`]: DeltaPub::keyed
    pub fn keyed(prev: &[u8], data: &[u8]) -> DeltaPub {
        DeltaPub { seq: 0, base: 0, patch: patch(prev, data), keyed: true }
    }
}

/// The last publication the owner delivered on each channel that uses deltas, and, on map
/// channels whose changes reach this node from other nodes (the Redis engine), each key's
/// last value once a change of the channel asked for a delta.
#[derive(Default)]
pub struct Bases {
    last: AHashMap<Arc<str>, (u64, Bytes)>,
    keys: AHashMap<Arc<str>, AHashMap<Arc<str>, Bytes>>,
}

impl Bases {
    /// A publication of `data` to `channel` is delivered; `requested`: it was published with
    /// `delta`. `None` while no publication of the channel asked for a delta (nothing is kept).
    pub fn step(&mut self, channel: &Arc<str>, data: &Bytes, requested: bool) -> Option<DeltaPub> {
        match self.last.get_mut(channel) {
            Some((seq, last)) => {
                let base = *seq;
                let patch = if requested { patch(last, data) } else { None };
                *seq += 1;
                *last = data.clone();
                Some(DeltaPub { seq: *seq, base, patch, keyed: false })
            }
            None if requested => {
                self.last.insert(channel.clone(), (1, data.clone()));
                Some(DeltaPub { seq: 1, base: 0, patch: None, keyed: false })
            }
            None => None,
        }
    }

    /// A map channel's change of `key` to `data` (or its removal) is delivered; `requested`:
    /// it was published with `delta`. The patch is against the key's value this node last
    /// delivered — which its live subscribers hold, since the node hears every change of the
    /// channel while it has subscribers (the values are forgotten with the last one).
    pub fn key_step(
        &mut self,
        channel: &Arc<str>,
        key: &Arc<str>,
        data: &Bytes,
        removed: bool,
        requested: bool,
    ) -> Option<DeltaPub> {
        let values = match self.keys.get_mut(channel) {
            Some(v) => v,
            None if requested && !removed => self.keys.entry(channel.clone()).or_default(),
            None => return None,
        };
        if removed {
            values.remove(key);
            return None;
        }
        let prev = values.insert(key.clone(), data.clone())?;
        requested.then(|| DeltaPub::keyed(&prev, data))
    }

    /// The channel has no subscribers left on this node.
    pub fn forget(&mut self, channel: &str) {
        self.last.remove(channel);
        self.keys.remove(channel);
    }

    /// How many channels have a kept publication.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The fossil patch that turns `base` into `data`, when it is smaller than `data`.
pub fn patch(base: &[u8], data: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(64);
    fossil::encode(base, data, &mut out);
    (out.len() < data.len()).then(|| Bytes::from(out))
}

/// The data of `pubs` as JSON strings ([`json_string`]), as JSON clients that negotiated delta
/// receive full data; removals carry none and stay as they are.
pub fn as_json_strings(pubs: &mut [crate::model::Publication]) {
    for p in pubs.iter_mut().filter(|p| !p.removed) {
        if let Some(bytes) = json_string(&p.data.bytes) {
            p.data = crate::model::Payload { bytes, binary: false };
        }
    }
}

/// `data` as a JSON string literal (quotes and escapes included): how JSON clients receive a
/// publication's data once delta is negotiated. `None` when `data` is not UTF-8.
pub fn json_string(data: &[u8]) -> Option<Bytes> {
    let s = std::str::from_utf8(data).ok()?;
    let mut out = Vec::with_capacity(s.len() + 2 + s.len() / 8);
    crate::wire::json::string(&mut out, s);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: u32) -> Vec<u8> {
        let mut s = String::from("{");
        for i in 0..60 {
            s.push_str(&format!("\"field{i}\":\"value {}\",", if i == 17 { n } else { i }));
        }
        s.push_str(&format!("\"n\":{n}}}"));
        s.into_bytes()
    }

    #[test]
    fn patches_apply_and_are_small() {
        let (a, b) = (doc(1), doc(2));
        let p = patch(&a, &b).expect("a small change gives a patch");
        assert!(p.len() < 40, "{}", String::from_utf8_lossy(&p));
        assert_eq!(fossil::apply(&a, &p).unwrap(), b);
        // Unrelated data: no patch (the full data is smaller).
        assert_eq!(patch(b"0123456789abcdefghijklmnopqrstuvwxyz", b"zyxwvutsrqponmlkjihgfedcba9876543210"), None);
    }

    #[test]
    fn bases_follow_the_channel() {
        let mut b = Bases::default();
        let ch: Arc<str> = "c".into();
        let (d1, d2, d3) = (Bytes::from(doc(1)), Bytes::from(doc(2)), Bytes::from(doc(3)));
        assert_eq!(b.step(&ch, &d1, false), None, "nothing kept before a delta publish");
        assert_eq!(b.step(&ch, &d1, true), Some(DeltaPub { seq: 1, base: 0, patch: None, keyed: false }));
        let second = b.step(&ch, &d2, true).unwrap();
        assert_eq!((second.seq, second.base), (2, 1));
        assert_eq!(fossil::apply(&d1, &second.patch.unwrap()).unwrap(), d2);
        // A publication without `delta` moves the base on without a patch.
        assert_eq!(b.step(&ch, &d3, false), Some(DeltaPub { seq: 3, base: 2, patch: None, keyed: false }));
        b.forget("c");
        assert!(b.is_empty());
    }

    #[test]
    fn key_bases_follow_each_key() {
        let mut b = Bases::default();
        let (ch, k, other): (Arc<str>, Arc<str>, Arc<str>) = ("m".into(), "k".into(), "o".into());
        let (d1, d2, d3) = (Bytes::from(doc(1)), Bytes::from(doc(2)), Bytes::from(doc(3)));
        assert_eq!(b.key_step(&ch, &k, &d1, false, false), None, "nothing kept before a delta change");
        assert_eq!(b.key_step(&ch, &k, &d1, false, true), None, "no value of the key yet");
        let p = b.key_step(&ch, &k, &d2, false, true).unwrap();
        assert!(p.keyed);
        assert_eq!(fossil::apply(&d1, &p.patch.unwrap()).unwrap(), d2);
        // Another key has its own base; a change without `delta` moves the base on.
        assert_eq!(b.key_step(&ch, &other, &d1, false, true), None);
        assert_eq!(b.key_step(&ch, &k, &d3, false, false), None);
        let p = b.key_step(&ch, &k, &d1, false, true).unwrap();
        assert_eq!(fossil::apply(&d3, &p.patch.unwrap()).unwrap(), d1);
        // A removal ends the key's chain; forgetting the channel drops every key.
        assert_eq!(b.key_step(&ch, &k, &Bytes::new(), true, false), None);
        assert_eq!(b.key_step(&ch, &k, &d2, false, true), None);
        b.forget("m");
        assert_eq!(b.key_step(&ch, &other, &d2, false, true), None);
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_string(b"{\"a\":\"\xc3\xa9\"}").unwrap(), &b"\"{\\\"a\\\":\\\"\xc3\xa9\\\"}\""[..]);
        assert_eq!(json_string(b"\xff"), None);
    }
}
