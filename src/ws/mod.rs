//! WebSocket: the RFC 6455 codec ([`codec`]), a connection's write queue ([`out`]) and
//! client sessions speaking the Centrifuge protocol ([`session`]).

pub mod commands;
pub mod out;
pub mod session;
