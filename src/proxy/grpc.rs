//! gRPC proxies: Centrifugo's `centrifugal.centrifugo.proxy.CentrifugoProxy` service
//! (`proto/proxy.proto`), called through tonic on one client thread of the node.
//!
//! The interface the sessions use: [`call`] for the unary kinds and [`open_stream`] for
//! subscription streams. Both return at once; the answer comes through the callback, which
//! runs on the client thread (the caller hands it to its worker's inbox).

use std::sync::Arc;

use bytes::Bytes;

use super::{CallError, Headers, Proxy, Request, Response, StreamEvent};

/// Calls the unary method of `proxy.kind` with `req` and `metadata`; `done` gets the answer
/// (or why there is none) within the proxy's timeout.
pub fn call(
    proxy: &Arc<Proxy>,
    req: Request,
    metadata: Headers,
    done: Box<dyn FnOnce(Result<Response, CallError>) + Send>,
) {
    let _ = (proxy, req, metadata);
    done(Err(CallError::Grpc("gRPC proxies are not available in this build".into())));
}

/// An open subscription stream: dropping it cancels the stream.
pub struct StreamHandle {
    _private: (),
}

impl StreamHandle {
    /// Sends a client's publication into a bidirectional stream; false when it is closed (or
    /// unidirectional).
    pub fn publish(&self, data: Bytes) -> bool {
        let _ = data;
        false
    }
}

/// Opens `SubscribeUnidirectional` (or `SubscribeBidirectional`, sending `req` first) and
/// reports its events, in order, to `on_event`: the subscribe answer first (within the
/// proxy's timeout), then publications, then its end.
pub fn open_stream(
    proxy: &Arc<Proxy>,
    req: Request,
    metadata: Headers,
    bidirectional: bool,
    mut on_event: Box<dyn FnMut(StreamEvent) + Send>,
) -> StreamHandle {
    let _ = (proxy, req, metadata, bidirectional);
    on_event(StreamEvent::Subscribed(Box::new(Err(CallError::Grpc(
        "gRPC proxies are not available in this build".into(),
    )))));
    StreamHandle { _private: () }
}
