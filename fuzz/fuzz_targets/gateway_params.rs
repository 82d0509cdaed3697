//! Gateway (CONNMIX) API parameters: `conn.call` (`gyre::gateway::mesh::parse_call`),
//! `mesh.send` (`parse_send`), send/publish data (`MeshData::parse`), and what they lead to.
//!
//! - Parsing any JSON params object never panics.
//! - A parsed action survives the node-to-node form: `MeshOp::from_json(op.to_json())` gives
//!   the same action.
//! - Data becomes a publication payload (`MeshData::payload`) that is JSON unless binary, and
//!   the frame a raw client gets for it (`raw_publication_frame`) is one complete, unmasked
//!   WebSocket frame the client-side decoder reads back (text frames hold UTF-8).
//! - The gateway event for a client frame (`frame_json`) is JSON that serializes.
//!
//! Input: the params as JSON text (anything else is tried as a raw client frame's data).

#![no_main]

use bytes::BytesMut;
use gyre::gateway::{self, mesh};
use gyre::wire::ws::{Decoder, Message};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_frame(payload: &gyre::model::Payload) {
    let frame = gyre::push::raw_publication_frame(payload);
    let mut dec = Decoder::client(1 << 30, 1 << 30);
    let mut buf = BytesMut::from(&frame[..]);
    let msg = dec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("raw client frame does not decode: {e:?}"))
        .expect("complete frame");
    assert!(buf.is_empty(), "bytes after the frame");
    match msg {
        Message::Text(t) => assert!(std::str::from_utf8(&t).is_ok(), "text frame with invalid UTF-8"),
        Message::Binary(_) => assert!(payload.binary, "a JSON payload sent as binary"),
        other => panic!("unexpected frame {other:?}"),
    }
}

fn same(a: &mesh::MeshOp, b: &mesh::MeshOp) -> bool {
    a.to_json() == b.to_json()
}

fuzz_target!(|data: &[u8]| {
    let _ = gateway::frame_json(true, data).to_string();
    let _ = gateway::frame_json(false, data).to_string();
    let _ = gateway::canonical_header(&String::from_utf8_lossy(data));

    let Ok(Value::Object(p)) = serde_json::from_slice::<Value>(data) else { return };
    for op in [mesh::parse_call(&p), mesh::parse_send(&p)].into_iter().flatten() {
        let j = op.to_json();
        let back = mesh::MeshOp::from_json(&j).unwrap_or_else(|| panic!("{j} does not parse back"));
        assert!(same(&op, &back), "{op:?} came back as {back:?}");
        let _ = op.client();
    }
    if let Ok(d) = mesh::MeshData::parse(&p) {
        let payload = d.payload();
        if !payload.binary {
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(&payload.bytes).is_ok(),
                "text data became a payload that is not JSON: {:?}",
                String::from_utf8_lossy(&payload.bytes)
            );
        }
        check_frame(&payload);
    }
});
