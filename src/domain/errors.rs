//! Typed client mistakes found while reading a request. Ids name only their kind; `error.rs`
//! renders every variant once, at the HTTP edge.

/// A client mistake found while reading a request; becomes a 4xx at the HTTP edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A path or body id that is not a UUID (422).
    #[error("invalid {kind} id")]
    InvalidId { kind: &'static str },
    /// A body or query field with the wrong shape or value (422); the text names the field.
    #[error("{0}")]
    Invalid(String),
    /// A request that is well-formed but contradicts itself (400).
    #[error("{0}")]
    BadRequest(String),
    /// A valid request for something this server does not do yet (501).
    #[error("{0}")]
    Unsupported(String),
}

/// Why the database cannot take a write now, for a reason that may pass: the request may be
/// retried (503).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The disk, or the `database.max_size_mb` cap, is full.
    Full,
    /// Another connection or process holds the write lock past the busy timeout.
    Locked,
}
