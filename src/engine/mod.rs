//! The storage boundary between a shard's logic and where history and presence live.
//! [`memory`] keeps them in the owning worker's memory; a Redis engine sits behind the same
//! calls for multi-node setups.

pub mod memory;
pub mod redis;
