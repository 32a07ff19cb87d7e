//! A thread's state as stored checkpoints render it (`Checkpoint::to_state`): what an engine
//! whose checkpoints are plain JSON (the TOML engine) answers, and what a thread that no graph
//! has run yet shows.

use std::sync::Arc;

use serde_json::Value;

use super::ports::{PortFuture, ThreadCheckpoints};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::CheckpointId;
use crate::domain::query::HistoryQuery;

/// Which state to read.
#[derive(Clone, Debug, Default)]
pub struct StateAt {
    /// The namespace of `checkpoint_id` (empty: the root graph).
    pub checkpoint_ns: String,
    /// A past checkpoint; `None`: the latest.
    pub checkpoint_id: Option<CheckpointId>,
}

/// The state at `at`, rendered from the stored checkpoint (`None`: no such checkpoint). The
/// latest state of a thread without checkpoints is the empty state.
pub fn stored_state(
    checkpoints: Arc<dyn ThreadCheckpoints>,
    at: StateAt,
) -> PortFuture<Option<Value>> {
    Box::pin(async move {
        match at.checkpoint_id {
            Some(checkpoint_id) => Ok(checkpoints
                .checkpoint(at.checkpoint_ns, checkpoint_id)
                .await?
                .map(|checkpoint| checkpoint.to_state())),
            None => {
                Ok(Some(checkpoints.head().await?.map_or_else(
                    crate::domain::checkpoint::empty_state,
                    |head| head.to_state(),
                )))
            }
        }
    })
}

/// The stored checkpoints of `query`, newest first, rendered as states.
pub fn stored_history(
    checkpoints: Arc<dyn ThreadCheckpoints>,
    query: HistoryQuery,
) -> PortFuture<Vec<Value>> {
    Box::pin(async move {
        let history = checkpoints.history(query).await?;
        Ok(history.iter().map(Checkpoint::to_state).collect())
    })
}
