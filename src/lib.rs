//! Gyre: a real-time messaging server compatible with Centrifugo, built thread-per-core on
//! monoio. See `ARCHITECTURE.md` for the data path and the ordering invariants.

pub mod admin;
pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod io;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod protocol;
pub mod runtime;
pub mod shard;
pub mod token;
pub mod wire;
pub mod ws;
