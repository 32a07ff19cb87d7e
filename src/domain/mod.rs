//! Pure data and rules of the LangGraph Platform model: ids, runs, threads, assistants, checkpoints
//! and the double-texting decision.
//! No IO here: nothing in `domain` may name actix, actix-web or rusqlite.

pub mod assistant;
pub mod checkpoint;
pub mod command;
pub mod errors;
pub mod ids;
pub mod missing;
pub mod multitask;
pub mod query;
pub mod run;
pub mod run_request;
pub mod stream_mode;
pub mod thread;
pub mod time;
pub mod tool_calls;

pub use errors::{Unavailable, ValidationError};
pub use missing::{AlreadyExists, NotFound};

/// A JSON object, the shape of metadata, config and state values on the wire.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

/// Metadata keys the server owns; stripped from client input as the official server does.
pub const RESERVED_METADATA_KEYS: [&str; 5] = [
    "thread_id",
    "assistant_id",
    "run_id",
    "cron_id",
    "counters_since_delta_snapshot",
];

/// `configurable` and `context` keys the server owns; stripped from client input.
pub const RESERVED_CONFIG_KEYS: [&str; 13] = [
    "langgraph_auth_user",
    "langgraph_auth_user_id",
    "langgraph_auth_permissions",
    "langgraph_request_id",
    "__langsmith_project__",
    "__langsmith_example_id__",
    "__request_start_time_ms__",
    "__after_seconds__",
    "__otel_traceparent__",
    "__otel_tracestate__",
    "__dd_trace_headers__",
    "__pregel_node_finished",
    "__context_provided__",
];

/// Removes the `reserved` keys from `map`.
pub fn strip_keys(map: &mut JsonMap, reserved: &[&str]) {
    map.retain(|key, _| !reserved.contains(&key.as_str()));
}

/// Shallow-merges `patch` into `base`: keys of `patch` win.
pub fn merge_into(base: &mut JsonMap, patch: &JsonMap) {
    for (key, value) in patch {
        base.insert(key.clone(), value.clone());
    }
}
