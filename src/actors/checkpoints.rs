//! The engine's checkpoint ports over the store: a thread's checkpoints, and one run attempt's
//! writes, each fenced in storage on the run still holding that attempt. Storage errors become
//! port errors here, so engines never name storage.

use futures_util::future::BoxFuture;

use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{CheckpointId, RunId, ThreadId};
use crate::domain::query::HistoryQuery;
use crate::engine::{PortError, PortFuture, RunCheckpoints, ThreadCheckpoints};
use crate::storage::{SharedStore, StorageError};

/// A storage error as a port error.
fn port_error(error: StorageError) -> PortError {
    match error {
        StorageError::Fenced => PortError::Fenced,
        StorageError::NotFound(missing) => PortError::NotFound(missing),
        other => PortError::Failed {
            unavailable: other.unavailable(),
            message: other.to_string(),
        },
    }
}

/// A store call as a port answer.
fn port<T: Send + 'static>(call: BoxFuture<'static, Result<T, StorageError>>) -> PortFuture<T> {
    Box::pin(async move { call.await.map_err(port_error) })
}

/// The checkpoints of one thread.
pub struct StoredCheckpoints {
    pub store: SharedStore,
    pub thread_id: ThreadId,
}

impl ThreadCheckpoints for StoredCheckpoints {
    fn head(&self) -> PortFuture<Option<Checkpoint>> {
        port(self.store.head(self.thread_id))
    }

    fn checkpoint(
        &self,
        checkpoint_ns: String,
        checkpoint_id: CheckpointId,
    ) -> PortFuture<Option<Checkpoint>> {
        port(
            self.store
                .checkpoint(self.thread_id, checkpoint_ns, checkpoint_id),
        )
    }

    fn history(&self, query: HistoryQuery) -> PortFuture<Vec<Checkpoint>> {
        port(self.store.history(self.thread_id, query))
    }
}

/// One attempt of a run: its thread's checkpoints and its fenced writes.
pub struct AttemptCheckpoints {
    pub thread: StoredCheckpoints,
    pub run_id: RunId,
    pub attempt: u32,
    /// A crash left the run `running`: beginning counts the attempt without a status change.
    pub recovered: bool,
}

impl ThreadCheckpoints for AttemptCheckpoints {
    fn head(&self) -> PortFuture<Option<Checkpoint>> {
        self.thread.head()
    }

    fn checkpoint(
        &self,
        checkpoint_ns: String,
        checkpoint_id: CheckpointId,
    ) -> PortFuture<Option<Checkpoint>> {
        self.thread.checkpoint(checkpoint_ns, checkpoint_id)
    }

    fn history(&self, query: HistoryQuery) -> PortFuture<Vec<Checkpoint>> {
        self.thread.history(query)
    }
}

impl RunCheckpoints for AttemptCheckpoints {
    fn begin(&self, start: Vec<Checkpoint>) -> PortFuture<()> {
        port(
            self.thread
                .store
                .start_run(self.run_id, self.attempt, start, self.recovered),
        )
    }

    fn save(&self, checkpoint: Checkpoint) -> PortFuture<()> {
        port(self.thread.store.save_checkpoint(checkpoint, self.attempt))
    }
}
