//! Query types: the filters, sort orders and pages of searches and history reads, as the API
//! accepts them and every storage backend answers them. Pure data; no SQL.

use serde::Deserialize;

use super::ids::{CheckpointId, ThreadId};
use super::thread::ThreadStatus;
use super::JsonMap;

/// `asc` or `desc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// What thread search sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadSortBy {
    ThreadId,
    Status,
    CreatedAt,
    #[default]
    UpdatedAt,
    StateUpdatedAt,
}

/// What assistant search sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssistantSortBy {
    AssistantId,
    GraphId,
    Name,
    #[default]
    CreatedAt,
    UpdatedAt,
}

/// One page of a search: the order, then `limit` items after skipping `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page<S> {
    pub sort_by: S,
    pub order: SortOrder,
    pub limit: i64,
    pub offset: i64,
}

/// Filters of thread search and count.
#[derive(Clone, Debug, Default)]
pub struct ThreadFilter {
    pub ids: Option<Vec<ThreadId>>,
    /// Exact match on top-level metadata keys.
    pub metadata: Option<JsonMap>,
    /// Exact match on top-level keys of the thread's values.
    pub values: Option<JsonMap>,
    pub status: Option<ThreadStatus>,
}

/// Filters of assistant search and count.
#[derive(Clone, Debug, Default)]
pub struct AssistantFilter {
    /// Exact match on top-level metadata keys.
    pub metadata: Option<JsonMap>,
    pub graph_id: Option<String>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
}

/// Filters of a history query.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    pub limit: i64,
    /// Only checkpoints older than this one.
    pub before: Option<CheckpointId>,
    /// Exact match on top-level metadata keys.
    pub metadata: Option<JsonMap>,
    pub checkpoint_ns: String,
    /// Only this checkpoint.
    pub checkpoint_id: Option<CheckpointId>,
}
