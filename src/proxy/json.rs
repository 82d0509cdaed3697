//! The HTTP proxy protocol's JSON: a [`Request`] as the body of the call, the body of a 200
//! answer as a [`Response`].
