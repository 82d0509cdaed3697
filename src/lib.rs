//! Gyre: a real-time messaging server compatible with Centrifugo, built thread-per-core on
//! monoio. See `ARCHITECTURE.md` for the data path and the ordering invariants.
//!
//! The module map, bottom to top. A module may import only modules above it in this list
//! (within a folder, files may import each other); `scripts/imports.py` checks that no import
//! loop spans two folders.

// -- ground: pure values and codecs, no I/O, no threads --
/// The server API: commands, their parser and their JSON answers.
pub mod api;
/// Config from file, env and flags; the Redis address parser.
pub mod config;
/// Fossil delta compression of publications: the owner's bases and the patches.
pub mod delta;
/// Error types: API errors, disconnect reasons, internal errors.
pub mod error;
/// Tags filters: subscribers' filters over publication tags.
pub mod filter;
/// Socket reads shared by every connection kind.
pub mod io;
/// Log output as Centrifugo writes it: JSON lines (a file, a pipe) or console lines.
pub mod logging;
/// Per-worker counters, the Prometheus text, the process figures parsed from `/proc` text.
pub mod metrics;
/// Shared values: publications, payloads, positions, client info, publish/history params.
pub mod model;
/// Single-thread wake-ups and oneshots.
pub mod notify;
/// The Centrifuge client protocol: commands, replies, pushes (JSON and protobuf); `v1`, the
/// older protocol of Centrifugo 2.x/3.x clients.
pub mod protocol;
/// JWT verification and signing (HS256/384/512).
pub mod token;
/// Wire codecs: HTTP/1.1, RFC 6455 frames, RFC 7692 permessage-deflate, JSON writer primitives.
pub mod wire;

// -- per-worker state: no sockets --
/// What fan-out needs of a client (format, queue, held pushes) and the session handle.
pub mod client;
/// Memory and Redis engines and the NATS broker: where channel state lives, how nodes talk.
pub mod engine;
/// This worker's clients and subscriptions; the last leg of fan-out.
pub mod hub;
/// A push prepared once for all subscribers.
pub mod push;
/// The owned channels: subscriber counts per worker over the engine; channel ownership.
pub mod shard;

// -- threads and routing --
/// The node and its peers: info, channels, control messages between nodes.
pub mod cluster;
/// The server API's executor (HTTP, gRPC, admin).
pub mod exec;
/// Inboxes and the worker, the router of an event loop.
pub mod runtime;

// -- features and transports, on top --
/// The admin page's data and assets.
pub mod admin;
/// The gateway ("mesh") API: queues, backends, mesh actions.
pub mod gateway;
/// The gRPC servers: the server API, and the unidirectional client stream (`grpc::uni`).
pub mod grpc;
/// HTTP/1.1 connections and the router.
pub mod http;
/// Shared poll channels on their owner worker: tracked keys and the backend poll loop.
pub mod poll;
/// Calls to the application backend (HTTP and gRPC proxies).
pub mod proxy;
/// The composition root: binds, starts and stops everything.
pub mod server;
/// The client session, independent of its transport.
pub mod session;
/// SockJS (Centrifugo 2.x/3.x's fallback transport): websocket, xhr-streaming, xhr-polling.
pub mod sockjs;
/// The HTTP transports: HTTP-streaming and SSE with emulation, unidirectional SSE and stream.
pub mod stream;
/// The WebSocket transports (bidirectional and unidirectional).
pub mod ws;
