//! Lookups that found nothing and creates that found something: an entity and its id, never
//! the words a client reads (`error.rs` renders them once, at the HTTP edge).

use super::ids::{AssistantId, CheckpointId, RunId, ThreadId};

/// Something a request named that does not exist (404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// No route matches the request.
    Route,
    Thread(ThreadId),
    Run(RunId),
    Assistant(AssistantId),
    /// An assistant a delete named (the official server words this one differently).
    AssistantToDelete(AssistantId),
    AssistantVersion {
        assistant_id: AssistantId,
        version: i64,
    },
    Checkpoint(CheckpointId),
    /// A checkpoint read by id on a thread.
    CheckpointInThread {
        checkpoint_id: CheckpointId,
        thread_id: ThreadId,
    },
    /// A run names a thread (without `if_not_exists: create`) or an assistant that is missing.
    ThreadOrAssistant,
    /// A graph id no engine serves; `known` lists those that are served.
    Graph {
        graph_id: String,
        known: Vec<String>,
    },
    /// An assistant whose graph is no longer served.
    GraphOfAssistant {
        graph_id: String,
        assistant_id: AssistantId,
    },
    /// A cancel named runs none of which exists.
    RunsToCancel,
    /// A cancel named runs that exist, none of them in flight.
    RunsInFlightToCancel,
}

/// Something a create names that exists already (409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlreadyExists {
    Thread(ThreadId),
    Assistant(AssistantId),
}
