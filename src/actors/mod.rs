//! The actor tree. Every command that changes a thread goes through that thread's `ThreadActor`,
//! whose mailbox serialises them; each run executes in a child `RunActor`.
//!
//! ```text
//! actix System
//! ├── DbWriter          one thread, the only writable connection (storage::writer)
//! ├── DbReader          pool of read-only connections (storage::reader)
//! └── ThreadRegistry    ThreadId -> Addr<ThreadActor>, starts them supervised on a pool of arbiters
//!     └── ThreadActor   one per active thread: active run + FIFO queue + join waiters
//!         └── RunActor  at most one per thread: executes the graph, writes fenced checkpoints
//! ```
//! Imports: domain, graph, storage. Never actix-web.

pub mod run;
pub mod thread;
pub mod thread_registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::MailboxError;

use crate::domain::ids::{RunId, ThreadId};
use crate::domain::run::RunError;
use crate::domain::JsonMap;
use crate::storage::StorageError;
pub use run::RunActor;
pub use run::RunLimits;
pub use thread::{
    CancelRuns, DeleteRun, DeleteThread, InjectFault, JoinRun, RunAccepted, SubmitRun,
    SubscribeRun, ThreadActor, ThreadSettings, UpdateState,
};
pub use thread_registry::{GetThread, LiveThreads, Shutdown, ShutdownReport, ThreadRegistry};

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
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The thread actor could not be reached.
    #[error("thread actor unavailable: {0}")]
    Mailbox(#[from] MailboxError),
    /// The thread actor retired (idle) just before the command arrived: ask the registry for
    /// the thread's actor again.
    #[error("the thread actor retired; ask the registry again")]
    Retired,
}

/// How a run ended, as told to the clients waiting on it (`/join`, `/wait`).
#[derive(Clone, Debug)]
pub enum RunOutcome {
    /// Finished (possibly at a breakpoint) with these values.
    Success(Arc<JsonMap>),
    /// The graph failed.
    Failed(RunError),
    /// Cancelled or superseded with `interrupt`: its checkpoints remain.
    Interrupted,
    /// Rolled back or deleted: the run no longer exists.
    Deleted,
}

/// Retries a storage call while it fails for a reason that may pass (a lock held by another
/// process, a full disk, a failed commit): up to 8 retries over about 7 seconds.
pub(crate) async fn with_retries<T, F, Fut>(what: &str, attempt: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    retrying(what, true, attempt).await
}

/// `with_retries` for a caller that waits out an unavailable database (full, locked) itself
/// without blocking its actor: such a failure is returned at once.
pub(crate) async fn with_retries_until_unavailable<T, F, Fut>(
    what: &str,
    attempt: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    retrying(what, false, attempt).await
}

async fn retrying<T, F, Fut>(
    what: &str,
    retry_unavailable: bool,
    mut attempt: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        match attempt().await {
            Err(error)
                if !error.is_permanent() && (retry_unavailable || !error.is_unavailable()) =>
            {
                log::warn!(
                    "storage call failed, retrying in {}ms what={what}: {error:#}",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
    attempt().await
}
