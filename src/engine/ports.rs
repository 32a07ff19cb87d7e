//! What an engine needs from the rest of Spindle, as traits the runtime implements: reading a
//! thread's checkpoints, and one run attempt's fenced writes. An engine never names storage; the
//! runtime adapts the store to these ports (so a Python engine's checkpoint bridge talks to the
//! same fence as the TOML executor).

use futures_util::future::BoxFuture;

use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::CheckpointId;
use crate::domain::query::HistoryQuery;
use crate::domain::run::RunError;
use crate::domain::{NotFound, Unavailable};

/// A port's answer.
pub type PortFuture<T> = BoxFuture<'static, Result<T, PortError>>;

/// Why a read or write through a port failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortError {
    /// The run no longer holds its attempt (it was stopped, deleted, or resumed by a newer
    /// attempt): it must stop and write nothing more.
    Fenced,
    /// What was read does not exist.
    NotFound(NotFound),
    /// Storage failed; the text says why, and `unavailable` whether the cause may pass (a
    /// full disk, a lock held elsewhere), which the runtime answers with 503.
    Failed {
        message: String,
        unavailable: Option<Unavailable>,
    },
}

impl PortError {
    /// The error a run fails with when a port failed while it started or ran.
    pub fn into_run_error(self) -> RunError {
        let message = match self {
            PortError::Fenced => "the run is no longer running".to_owned(),
            PortError::NotFound(missing) => format!("not found: {missing:?}"),
            PortError::Failed { message, .. } => message,
        };
        RunError::new("StorageError", message)
    }
}

/// The checkpoints of one thread, as an engine reads them.
pub trait ThreadCheckpoints: Send + Sync {
    /// The latest root checkpoint, if any.
    fn head(&self) -> PortFuture<Option<Checkpoint>>;

    /// One checkpoint, if it exists.
    fn checkpoint(
        &self,
        checkpoint_ns: String,
        checkpoint_id: CheckpointId,
    ) -> PortFuture<Option<Checkpoint>>;

    /// Checkpoints, newest first.
    fn history(&self, query: HistoryQuery) -> PortFuture<Vec<Checkpoint>>;
}

/// One attempt of a run: its thread's checkpoints, and its writes, each fenced in storage on the
/// run still being in flight in this attempt.
pub trait RunCheckpoints: ThreadCheckpoints {
    /// Begins the attempt: a pending run becomes `running` (a run a crash left `running` counts
    /// the new attempt, which fences the writes of the one before), and `start` is written in
    /// the same transaction. `Fenced` if the run is no longer where this attempt expects it.
    fn begin(&self, start: Vec<Checkpoint>) -> PortFuture<()>;

    /// Writes a checkpoint of the attempt; `Fenced` once the attempt no longer holds the run.
    fn save(&self, checkpoint: Checkpoint) -> PortFuture<()>;
}
