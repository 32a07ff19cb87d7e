//! Pure data and rules of the LangGraph Platform model: ids, runs, threads, assistants, checkpoints
//! and the double-texting decision.
//! No IO here: nothing in `domain` may name actix, actix-web or rusqlite.

pub mod assistant;
pub mod checkpoint;
pub mod ids;
pub mod multitask;
pub mod run;
pub mod thread;
pub mod time;

/// A JSON object, the shape of metadata, config and state values on the wire.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

/// A client mistake found while reading a request; becomes a 4xx at the HTTP edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A path or body id that is not a UUID (422).
    #[error("Invalid {kind} ID: must be a UUID")]
    InvalidId { kind: &'static str },
    /// A body or query field with the wrong shape or value (422).
    #[error("{0}")]
    Invalid(String),
    /// A request that is well-formed but contradicts itself (400).
    #[error("{0}")]
    BadRequest(String),
}

/// Shallow-merges `patch` into `base`: keys of `patch` win.
pub fn merge_into(base: &mut JsonMap, patch: &JsonMap) {
    for (key, value) in patch {
        base.insert(key.clone(), value.clone());
    }
}
