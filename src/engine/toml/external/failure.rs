//! Why one exchange with an endpoint or a program failed (`Failure`), and the bounds every
//! exchange of an `http` or `command` node or tool keeps: its time (`within`), the size of its
//! answer (`collect`), and how much of a bad answer an error message quotes.

use std::future::Future;
use std::time::Duration;

use crate::engine::toml::retry::{AttemptError, Transience};

/// The most output kept from one answer (the final update, or a tool's result).
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// How many characters of an unexpected answer an error message quotes.
pub(super) const QUOTE_CHARS: usize = 300;

/// Why one exchange with an endpoint or a program failed; `message` has no subject, so that
/// callers can say "node 'x' …" or "tool 'x' …".
#[derive(Debug)]
pub(in crate::engine::toml) struct Failure {
    pub(super) kind: FailureKind,
    pub(in crate::engine::toml) message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// The attempt overran its time.
    Timeout,
    /// The endpoint could not be reached, or the connection broke.
    Transport,
    /// The endpoint answered with a non-2xx status, asking for a wait before the next attempt
    /// or not (`Retry-After`).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// The program could not be started.
    Spawn,
    /// The program exited unsuccessfully.
    Exit,
    /// The answer is not what the protocol expects.
    Output,
}

impl Failure {
    pub(super) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl AttemptError for Failure {
    /// Timeouts, connection errors and failed exits are transient; a status is retried when the
    /// policy lists it; unstartable programs and bad output are not retried.
    fn transience(&self) -> Transience {
        match self.kind {
            FailureKind::Timeout | FailureKind::Transport | FailureKind::Exit => {
                Transience::Transient
            }
            FailureKind::Status { code, retry_after } => Transience::Status { code, retry_after },
            FailureKind::Spawn | FailureKind::Output => Transience::Permanent,
        }
    }

    fn logged(&self) -> String {
        match self.kind {
            FailureKind::Status { code, .. } => format!("status={code}"),
            FailureKind::Timeout => "error=timeout".into(),
            FailureKind::Transport => "error=connection".into(),
            FailureKind::Exit => "error=exit".into(),
            FailureKind::Spawn => "error=spawn".into(),
            FailureKind::Output => "error=output".into(),
        }
    }
}

/// Runs `work`, failing with a timeout when it takes longer than `limit` (the work is dropped).
pub(in crate::engine::toml) async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(Failure::new(
            FailureKind::Timeout,
            format!("timed out after {} s", limit.as_secs_f64()),
        ))
    })
}

/// Appends `chunk` to `output`, failing once the output exceeds the limit.
pub(in crate::engine::toml) fn collect(output: &mut Vec<u8>, chunk: &[u8]) -> Result<(), Failure> {
    output.extend_from_slice(chunk);
    check_size(output.len())
}

pub(super) fn check_size(size: usize) -> Result<(), Failure> {
    if size > MAX_OUTPUT_BYTES {
        return Err(Failure::new(
            FailureKind::Output,
            format!("answered more than {} MiB", MAX_OUTPUT_BYTES >> 20),
        ));
    }
    Ok(())
}

/// `text`, cut to its first characters, in quotes with escapes.
pub(super) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// An error and its sources, joined by ": " (reqwest's own message leaves out the cause).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_answers_are_quoted_cut() {
        let long = "x".repeat(10_000);
        let quoted = quote(&long);
        assert!(
            quoted.len() < 400 && quoted.ends_with("(10000 bytes)"),
            "{quoted}"
        );
    }
}
