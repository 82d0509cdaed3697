//! HTTP/1.1: the wire codec ([`codec`]), a connection's ordered output ([`out`]) and the
//! keep-alive connection loop with the router ([`serve`]); publish lines of legacy streams
//! spread over their channels' owners ([`pipeline`]).

pub mod ops;
pub mod out;
pub mod pipeline;
pub mod serve;
mod transports;
mod upgrade;
