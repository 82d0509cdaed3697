//! Error types shared by every protocol door.
//!
//! [`ApiError`] is the in-band error of the server API and the client protocol
//! (`{"code":N,"message":"..","temporary":true}`); codes and messages are Centrifugo's exactly.
//! [`Disconnect`] ends a client connection with a code and reason. [`Error`] is for internal
//! failures (I/O, configuration), with a kind that callers can match.

use std::fmt;

/// An in-band API / protocol error. Messages are `&'static` so errors cost nothing to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError {
    pub code: u32,
    pub message: &'static str,
    pub temporary: bool,
}

impl ApiError {
    pub const fn new(code: u32, message: &'static str) -> Self {
        ApiError { code, message, temporary: false }
    }
    pub const INTERNAL: ApiError = ApiError { code: 100, message: "internal server error", temporary: true };
    pub const UNAUTHORIZED: ApiError = ApiError::new(101, "unauthorized");
    pub const UNKNOWN_CHANNEL: ApiError = ApiError::new(102, "unknown channel");
    pub const PERMISSION_DENIED: ApiError = ApiError::new(103, "permission denied");
    pub const NOT_FOUND: ApiError = ApiError::new(104, "not found");
    pub const METHOD_NOT_FOUND: ApiError = ApiError::new(104, "method not found");
    pub const ALREADY_SUBSCRIBED: ApiError = ApiError::new(105, "already subscribed");
    pub const LIMIT_EXCEEDED: ApiError = ApiError::new(106, "limit exceeded");
    pub const BAD_REQUEST: ApiError = ApiError::new(107, "bad request");
    pub const NOT_AVAILABLE: ApiError = ApiError::new(108, "not available");
    pub const TOKEN_EXPIRED: ApiError = ApiError::new(109, "token expired");
    pub const EXPIRED: ApiError = ApiError::new(110, "expired");
    pub const TOO_MANY_REQUESTS: ApiError = ApiError { code: 111, message: "too many requests", temporary: true };
    pub const UNRECOVERABLE_POSITION: ApiError = ApiError::new(112, "unrecoverable position");
    pub const CONFLICT: ApiError = ApiError::new(113, "conflict");

    /// The server API's copy of an error: the server API never marks errors temporary
    /// (Centrifugo's `apiproto.Error` has only code and message).
    pub fn api_internal() -> ApiError {
        ApiError { temporary: false, ..ApiError::INTERNAL }
    }

    /// HTTP status for `error_mode: transport`.
    pub fn transport_status(&self) -> u16 {
        match self.code {
            100 => 500,
            102 | 104 => 404,
            107 | 108 => 400,
            112 => 416,
            113 => 409,
            _ => 500,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A reason to close a client connection (WebSocket close code + reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: std::borrow::Cow<'static, str>,
}

impl Disconnect {
    pub const fn new(code: u16, reason: &'static str) -> Self {
        Disconnect { code, reason: std::borrow::Cow::Borrowed(reason) }
    }
    pub const SHUTDOWN: Disconnect = Disconnect::new(3001, "shutdown");
    pub const INTERNAL: Disconnect = Disconnect::new(3004, "internal server error");
    pub const EXPIRED: Disconnect = Disconnect::new(3005, "connection expired");
    pub const SUB_EXPIRED: Disconnect = Disconnect::new(3006, "subscription expired");
    pub const SLOW: Disconnect = Disconnect::new(3008, "slow");
    pub const WRITE_ERROR: Disconnect = Disconnect::new(3009, "write error");
    pub const INSUFFICIENT_STATE: Disconnect = Disconnect::new(3010, "insufficient state");
    pub const FORCE_RECONNECT: Disconnect = Disconnect::new(3011, "force reconnect");
    pub const NO_PONG: Disconnect = Disconnect::new(3012, "no pong");
    pub const TOO_MANY_REQUESTS: Disconnect = Disconnect::new(3013, "too many requests");
    pub const INVALID_TOKEN: Disconnect = Disconnect::new(3500, "invalid token");
    pub const BAD_REQUEST: Disconnect = Disconnect::new(3501, "bad request");
    pub const STALE: Disconnect = Disconnect::new(3502, "stale");
    pub const FORCE_DISCONNECT: Disconnect = Disconnect::new(3503, "force disconnect");
    pub const CONNECTION_LIMIT: Disconnect = Disconnect::new(3504, "connection limit");
    pub const CHANNEL_LIMIT: Disconnect = Disconnect::new(3505, "channel limit");
    pub const INAPPROPRIATE_PROTOCOL: Disconnect = Disconnect::new(3506, "inappropriate protocol");
    pub const PERMISSION_DENIED: Disconnect = Disconnect::new(3507, "permission denied");
    pub const NOT_AVAILABLE: Disconnect = Disconnect::new(3508, "not available");
    pub const TOO_MANY_ERRORS: Disconnect = Disconnect::new(3509, "too many errors");
}

/// What went wrong inside the server (not visible to API callers as such).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Config,
    Io,
    Protocol,
    Token,
}

/// An internal error: a kind plus a human message.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, e.to_string())
    }
}
