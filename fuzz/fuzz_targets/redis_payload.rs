//! What arrives on a channel's Redis PUB/SUB topic
//! (`gyre::engine::redis::codec::decode_channel_message`): `__p1:<offset>:<epoch>__` +
//! publication, `__j__` / `__l__` + client info, or a bare publication. Any bytes may come
//! from a shared Redis, so decoding must never panic, and what decodes must survive being
//! written again the way the engine writes it:
//! - a publication re-encoded with `publication_prefix` + `encode_publication` decodes to the
//!   same publication and position;
//! - a join/leave re-encoded with `join_payload` / `leave_payload` decodes to the same info.
//!
//! Input: the PUB/SUB payload.

#![no_main]

use bytes::Bytes;
use gyre::engine::redis::codec::{self, ChannelMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    let Some(msg) = codec::decode_channel_message(&payload) else { return };
    let again = match &msg {
        ChannelMessage::Publication(p, pos, delta) => {
            let body = codec::encode_publication(&p.data, p.info.as_deref(), p.tags.as_ref(), *delta);
            let mut wire = Vec::new();
            if let Some(pos) = pos {
                wire.extend_from_slice(codec::publication_prefix(pos.offset, &pos.epoch).as_bytes());
            }
            wire.extend_from_slice(&body);
            let got = codec::decode_channel_message(&Bytes::from(wire))
                .unwrap_or_else(|| panic!("a re-encoded publication does not decode: {msg:?}"));
            // The stored offset field is not written back (Redis assigns offsets): compare
            // with the offset the prefix carries, or 0 without one.
            match (&got, pos) {
                (ChannelMessage::Publication(q, qpos, qdelta), _) => {
                    assert_eq!(qpos, pos, "position");
                    assert_eq!(qdelta, delta, "delta");
                    assert_eq!(q.data, p.data, "data");
                    assert_eq!(q.info, p.info, "info");
                    assert_eq!(q.tags, p.tags, "tags");
                    if pos.as_ref().is_some_and(|x| x.offset > 0) {
                        assert_eq!(q.offset, p.offset, "offset");
                    }
                }
                _ => panic!("a re-encoded publication decoded as {got:?}"),
            }
            return;
        }
        ChannelMessage::Join(i) => codec::join_payload(i),
        ChannelMessage::Leave(i) => codec::leave_payload(i),
    };
    assert_eq!(codec::decode_channel_message(&again), Some(msg), "join/leave round trip");
});
