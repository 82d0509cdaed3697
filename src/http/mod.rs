//! HTTP/1.1: the wire codec ([`codec`]), a connection's ordered output ([`out`]) and the
//! keep-alive connection loop with the router ([`serve`]).

pub mod ops;
pub mod out;
pub mod serve;
