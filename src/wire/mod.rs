//! Wire codecs: pure functions from bytes to values and back, no I/O and no state beyond a
//! decoder's buffer position. [`http`]: HTTP/1.1 heads, bodies and responses; [`ws`]: RFC 6455
//! frames; [`deflate`]: RFC 7692 permessage-deflate (whose (de)compressors each thread keeps
//! for reuse); [`json`]: the JSON writer primitives shared by the server API and client protocol.

pub mod deflate;
pub mod http;
pub mod json;
pub mod ws;
