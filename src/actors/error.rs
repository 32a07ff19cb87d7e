//! ThreadError: why a command to a thread actor (or to the runtime around it) was not carried
//! out. Typed; `error.rs` renders it for clients.

use actix::MailboxError;

use crate::domain::ids::{RunId, ThreadId};
use crate::domain::{NotFound, ValidationError};
use crate::engine::{EngineError, PortError};
use crate::storage::StorageError;

/// A thread command that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// `multitask_strategy: reject` while runs are in flight (409).
    #[error("the thread is busy and the run's strategy is reject")]
    Busy,
    /// A state update while these runs are in flight (409).
    #[error("thread {thread_id} has runs in flight: {runs:?}")]
    InFlight {
        thread_id: ThreadId,
        runs: Vec<RunId>,
    },
    /// A state update on a thread that no run has assigned a graph to (400).
    #[error("thread {0} has no graph")]
    NoGraph(ThreadId),
    /// The thread's graph is not served here (400).
    #[error("graph {0} is not served")]
    GraphNotServed(String),
    /// The engine refused a state update; the text says why (400).
    #[error("{0}")]
    InvalidUpdate(String),
    /// Code the command ran panicked (500); the actor and the thread go on.
    #[error("{0} panicked")]
    Panicked(String),
    /// The engine failed (500); the text says how.
    #[error("the engine failed: {0}")]
    Engine(String),
    /// The request is invalid (4xx).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Something the request named does not exist (404).
    #[error("not found: {0:?}")]
    NotFound(NotFound),
    /// The server is shutting down and accepts no new runs (503).
    #[error("the server is shutting down")]
    Draining,
    /// Storage failed (503 when the cause may pass, else 500). A lookup that found nothing is
    /// `NotFound`, never this.
    #[error(transparent)]
    Storage(StorageError),
    /// The thread actor could not be reached.
    #[error("thread actor unavailable: {0}")]
    Mailbox(#[from] MailboxError),
    /// The thread actor retired (idle) just before the command arrived: ask the registry for
    /// the thread's actor again.
    #[error("the thread actor retired; ask the registry again")]
    Retired,
}

impl From<StorageError> for ThreadError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound(missing) => ThreadError::NotFound(missing),
            other => ThreadError::Storage(other),
        }
    }
}

impl From<PortError> for ThreadError {
    fn from(error: PortError) -> Self {
        match error {
            PortError::NotFound(missing) => ThreadError::NotFound(missing),
            PortError::Failed {
                message,
                unavailable,
            } => ThreadError::Storage(StorageError::Backend {
                backend: "storage",
                message,
                unavailable,
            }),
            PortError::Fenced => ThreadError::Engine("a write was fenced".into()),
        }
    }
}

impl From<EngineError> for ThreadError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Invalid(message) => ThreadError::InvalidUpdate(message),
            EngineError::UnknownGraph(graph_id) => ThreadError::GraphNotServed(graph_id),
            EngineError::Port(port) => ThreadError::from(port),
        }
    }
}
