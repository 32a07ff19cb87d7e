//! Typed client mistakes found while reading a request. Ids name only their kind; `error.rs`
//! renders every variant once, at the HTTP edge. Also the bound on error text written to a log.

use std::borrow::Cow;

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

/// Most bytes of error text a log line carries; the rest is cut with a note of the full size.
pub const LOGGED_ERROR_BYTES: usize = 2048;

/// `text` cut to at most `max_bytes` (on a character boundary) followed by a note of its full
/// size, or `text` itself when it fits: a cause that embeds a whole statement or payload must
/// not become a log line of megabytes.
pub fn bounded(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… (truncated; {} bytes in all)",
        &text[..end],
        text.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn text_within_the_bound_is_kept_and_longer_text_is_cut_with_its_size() {
        assert_eq!(bounded("short", 5), "short");
        assert_eq!(bounded("abcdef", 3), "abc… (truncated; 6 bytes in all)");
        // A cut never splits a character: `é` is two bytes.
        assert_eq!(bounded("aé", 2), "a… (truncated; 3 bytes in all)");
        assert_eq!(bounded("", 0), "");
    }
}
