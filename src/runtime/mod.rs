//! Threads talking by message passing: each worker's inbox ([`inbox`]) and the worker, the
//! router of its event loop ([`worker`]).

pub mod engines;
pub mod inbox;
pub mod worker;
