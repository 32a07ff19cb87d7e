//! Storage: the `Store` trait, the one way the runtime and the HTTP layer reach the database,
//! and its typed errors. Backends live in their own folders (`sqlite/`; later `postgres/`) and
//! only `startup.rs` names them; `conformance` is the suite every backend must pass.
//! Nothing here names a backend's types.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod sqlite;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::domain::assistant::{Assistant, AssistantChange, AssistantVersion};
use crate::domain::checkpoint::{Checkpoint, Interrupt};
use crate::domain::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use crate::domain::multitask::CancelAction;
use crate::domain::query::{
    AssistantFilter, AssistantSortBy, HistoryQuery, Page, ThreadFilter, ThreadSortBy,
};
use crate::domain::run::{Run, RunError, RunStatus};
use crate::domain::thread::{IfExists, Thread, ThreadStatus};
use crate::domain::time::Timestamp;
pub use crate::domain::Unavailable;
use crate::domain::{AlreadyExists, JsonMap, NotFound};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The named thing does not exist.
    #[error("not found: {0:?}")]
    NotFound(NotFound),
    /// The write would create something that exists already.
    #[error("already exists: {0:?}")]
    Conflict(AlreadyExists),
    /// A run write refused because the run is no longer running in that attempt (it was
    /// stopped, deleted or resumed by a newer attempt).
    #[error("the run is no longer running")]
    Fenced,
    /// The backend failed; `unavailable` is set when the cause may pass (503).
    #[error("{backend} error: {message}")]
    Backend {
        backend: &'static str,
        message: String,
        unavailable: Option<Unavailable>,
    },
    #[error(
        "the database has schema version {found} but this binary supports versions up to \
         {supported}: it was written by a newer version of Spindle; run that version (or newer), \
         or point database.path at another file"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// The job's work succeeded or never ran, but its transaction did not commit.
    #[error("the write transaction failed to commit: {message}")]
    CommitFailed {
        message: String,
        /// Set when the cause may pass (the transaction failed for a lock or a full disk).
        unavailable: Option<Unavailable>,
    },
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("the database readers have stopped")]
    ReaderGone,
    #[error("cannot use {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StorageError {
    /// True for answers that retrying cannot change (missing, conflicting, fenced, too new).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StorageError::NotFound(_)
                | StorageError::Conflict(_)
                | StorageError::Fenced
                | StorageError::SchemaTooNew { .. }
        )
    }

    /// True when the database is temporarily unable to write (locked by another process, disk
    /// full): the request may succeed later (503).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable().is_some()
    }

    /// Why the database cannot take this write now, if the cause may pass.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            StorageError::Backend { unavailable, .. }
            | StorageError::CommitFailed { unavailable, .. } => *unavailable,
            _ => None,
        }
    }
}

/// The new run and what its insertion does to the runs already in flight.
#[derive(Debug)]
pub struct InsertRun {
    pub run: Run,
    /// Create the thread with this metadata if it does not exist (`if_not_exists: create`).
    pub create_thread_metadata: Option<JsonMap>,
    /// In-flight runs to stop in the same transaction, and how.
    pub stop: Option<(CancelAction, Vec<RunId>)>,
}

/// A run's terminal status, written by its thread actor.
#[derive(Clone, Debug)]
pub struct FinishRun {
    pub thread_id: ThreadId,
    pub run_id: RunId,
    pub status: RunStatus,
    pub error: Option<RunError>,
    /// Whether other runs remain in flight on the thread (it stays `busy`).
    pub in_flight_after: bool,
}

/// A stored run with what it produced.
#[derive(Debug)]
pub struct RunResult {
    pub run: Run,
    /// Why it failed, when its status is `error`.
    pub error: Option<RunError>,
    /// Values of the last checkpoint it wrote, if any.
    pub values: Option<JsonMap>,
    /// The dynamic interrupts pending at that checkpoint.
    pub interrupts: Vec<Interrupt>,
}

/// What retention does to a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneAction {
    /// Delete the thread; its runs, checkpoints and pending writes go with it.
    Delete,
    /// Keep the thread and its runs; keep only the newest `n` root checkpoints (at least one: the
    /// head, so the thread's state does not change) and the subgraph checkpoints of the head's
    /// pending tasks; delete every other checkpoint.
    KeepLatest(u32),
}

/// What a sweep or a prune did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub threads_deleted: u64,
    /// Threads kept with their checkpoints pruned (counted even if nothing was left to delete).
    pub threads_pruned: u64,
    /// Checkpoints deleted, those of deleted threads included.
    pub checkpoints_deleted: u64,
}

impl PruneCounts {
    /// Threads deleted or pruned.
    pub fn threads(&self) -> u64 {
        self.threads_deleted + self.threads_pruned
    }

    /// Adds another batch's counts.
    pub fn add(&mut self, other: PruneCounts) {
        self.threads_deleted += other.threads_deleted;
        self.threads_pruned += other.threads_pruned;
        self.checkpoints_deleted += other.checkpoints_deleted;
    }
}

/// The answer of a storage operation.
pub type StoreFuture<T> = BoxFuture<'static, Result<T, StorageError>>;

/// A shared handle to the database.
pub type SharedStore = Arc<dyn Store>;

/// The storage operations of Spindle. One method is one job.
///
/// **The write-ordering contract** (every backend must keep it; `conformance` checks it):
/// - a write is *queued when the method is called*, not when its future is first polled: two
///   writes called one after the other commit in that order, even if the caller awaits neither
///   yet (the thread actor relies on this to order a stop before an insert); `sweep` alone is
///   several jobs queued one after the other as its future runs;
/// - a write's future resolves only after its transaction has *committed*: a caller that hears
///   `Ok` may tell a client, and a crash cannot take it back;
/// - a write is *all-or-nothing*: on `Err` nothing of it is stored;
/// - every write on behalf of a run is *fenced* in its own transaction, and answers
///   `StorageError::Fenced` otherwise: `start_run` and `save_checkpoint` on the run being in
///   flight in that attempt, `finish_run` on the run (of that thread) being in flight (the thread
///   actor records only the end of the attempt it started); deleting a run deletes its
///   checkpoints with it.
///
/// Reads see committed data only. A full or locked database answers with an error whose
/// `unavailable()` is set; closing writes (a run's end, deletions, releases) may exceed a
/// configured size cap so that a full database can still end its runs and free space.
pub trait Store: Send + Sync + 'static {
    // ----- threads -----

    /// Creates a thread; an existing id is a conflict unless `if_exists` is `do_nothing`.
    fn create_thread(
        &self,
        thread_id: ThreadId,
        metadata: JsonMap,
        if_exists: IfExists,
    ) -> StoreFuture<Thread>;

    /// Shallow-merges `metadata` into the thread's metadata.
    fn patch_thread(&self, thread_id: ThreadId, metadata: JsonMap) -> StoreFuture<Thread>;

    /// Copies a thread and its checkpoints (not its runs) under a new id.
    fn copy_thread(&self, from: ThreadId, to: ThreadId) -> StoreFuture<Thread>;

    /// Deletes a thread with its runs and checkpoints (a closing write).
    fn delete_thread(&self, thread_id: ThreadId) -> StoreFuture<()>;

    /// The thread, or `NotFound`.
    fn get_thread(&self, thread_id: ThreadId) -> StoreFuture<Thread>;

    /// A page of threads.
    fn search_threads(
        &self,
        filter: ThreadFilter,
        page: Page<ThreadSortBy>,
    ) -> StoreFuture<Vec<Thread>>;

    /// How many threads match.
    fn count_threads(&self, filter: ThreadFilter) -> StoreFuture<i64>;

    /// Threads whose metadata names the assistant (`DELETE /assistants/{id}?delete_threads`).
    fn threads_of_assistant(&self, assistant_id: AssistantId) -> StoreFuture<Vec<ThreadId>>;

    /// Threads marked `busy` with no run in flight are settled, so none stays busy with nothing
    /// to do (start-up). Returns how many.
    fn settle_stranded_threads(&self) -> StoreFuture<usize>;

    /// Threads that have pending or running runs.
    fn threads_in_flight(&self) -> StoreFuture<Vec<ThreadId>>;

    // ----- retention -----

    /// Deletes or prunes (`action`) every thread last updated before `cutoff` that has no run
    /// pending or running, in bounded batches (several jobs: other writes go between them; each
    /// batch checks every thread again, so a run inserted meanwhile is never raced). Batches are
    /// closing writes.
    fn sweep(&self, cutoff: Timestamp, action: PruneAction) -> StoreFuture<PruneCounts>;

    /// Deletes or prunes each of these threads that exists and has no run pending or running;
    /// the others are skipped and not counted (one job per batch of threads).
    fn prune_threads(
        &self,
        thread_ids: Vec<ThreadId>,
        action: PruneAction,
    ) -> StoreFuture<PruneCounts>;

    // ----- run life cycle (called by the thread actor, which serialises them per thread) -----

    /// Inserts a run as `pending` (the thread becomes `busy` and records the run's graph and
    /// assistant), first stopping the in-flight runs named in `stop`: `interrupt` marks them
    /// `interrupted`, `rollback` deletes them with their checkpoints. Returns the stored run
    /// (metadata merged with the thread's). `NotFound(ThreadOrAssistant)`, writing nothing, when
    /// the thread is missing (and no `create_thread_metadata` is given) or the run's assistant
    /// does not exist: once an assistant's deletion is committed, no run of it can be inserted.
    fn insert_run(&self, insert: InsertRun) -> StoreFuture<Run>;

    /// Starts attempt number `attempt` of a run and writes the checkpoints of its start (input
    /// applied) in the same transaction: a pending run becomes `running`; with `recovered`, a
    /// run left `running` by a crash continues. The attempt number, which fences the attempt's
    /// writes, must be the run's attempts so far plus one; `Fenced` if it is not, or if the run
    /// is no longer pending (or running, when `recovered`).
    fn start_run(
        &self,
        run_id: RunId,
        attempt: u32,
        start: Vec<Checkpoint>,
        recovered: bool,
    ) -> StoreFuture<()>;

    /// Writes a checkpoint of a run's attempt. `Fenced` if the run is no longer running in that
    /// attempt.
    fn save_checkpoint(&self, checkpoint: Checkpoint, attempt: u32) -> StoreFuture<()>;

    /// Writes a run's terminal status and settles its thread (a closing write). `Fenced` if the
    /// run is no longer pending or running, or is not a run of `finish.thread_id`.
    fn finish_run(&self, finish: FinishRun) -> StoreFuture<ThreadStatus>;

    /// Recomputes a thread's status and cached values (after one of its runs disappeared without
    /// the thread actor's doing).
    fn settle_thread(&self, thread_id: ThreadId, in_flight: bool) -> StoreFuture<ThreadStatus>;

    /// Stops in-flight runs of a thread (cancel): `interrupt` marks them `interrupted`,
    /// `rollback` deletes them with their checkpoints; then settles the thread. Returns how many
    /// runs were stopped: named runs of other threads, or not in flight, are left alone and not
    /// counted (with none stopped, the thread is left as it is).
    fn stop_runs(
        &self,
        thread_id: ThreadId,
        action: CancelAction,
        run_ids: Vec<RunId>,
        in_flight_after: bool,
    ) -> StoreFuture<usize>;

    /// Deletes a run of any status with its checkpoints, then settles the thread.
    fn delete_run(
        &self,
        thread_id: ThreadId,
        run_id: RunId,
        in_flight_after: bool,
    ) -> StoreFuture<()>;

    /// A run stopped by a graceful shutdown goes back to `pending` with its attempt given back.
    fn release_run(&self, run_id: RunId) -> StoreFuture<()>;

    /// The run, or `NotFound`.
    fn get_run(&self, thread_id: ThreadId, run_id: RunId) -> StoreFuture<Run>;

    /// A run that is no longer in flight: the run, its error if it failed, and the values of the
    /// last checkpoint it wrote. `None` if it does not exist.
    fn run_result(&self, thread_id: ThreadId, run_id: RunId) -> StoreFuture<Option<RunResult>>;

    /// A page of a thread's runs, newest first; `NotFound` for an unknown thread.
    fn list_runs(
        &self,
        thread_id: ThreadId,
        status: Option<RunStatus>,
        limit: i64,
        offset: i64,
    ) -> StoreFuture<Vec<Run>>;

    /// The thread's pending and running runs in start order, each with its attempts so far.
    fn in_flight_runs(&self, thread_id: ThreadId) -> StoreFuture<Vec<(Run, u32)>>;

    /// `(thread, run)` of every run with one of these statuses, oldest first.
    fn runs_with_status(&self, statuses: Vec<RunStatus>) -> StoreFuture<Vec<(ThreadId, RunId)>>;

    // ----- state -----

    /// Writes a `source: update` checkpoint and settles the thread on it.
    fn update_state(&self, checkpoint: Checkpoint) -> StoreFuture<()>;

    /// The thread's latest root checkpoint; `NotFound` for an unknown thread.
    fn head(&self, thread_id: ThreadId) -> StoreFuture<Option<Checkpoint>>;

    /// One checkpoint; `NotFound` for an unknown thread.
    fn checkpoint(
        &self,
        thread_id: ThreadId,
        checkpoint_ns: String,
        checkpoint_id: CheckpointId,
    ) -> StoreFuture<Option<Checkpoint>>;

    /// The thread's checkpoints, newest first; `NotFound` for an unknown thread.
    fn history(&self, thread_id: ThreadId, query: HistoryQuery) -> StoreFuture<Vec<Checkpoint>>;

    // ----- assistants -----

    /// Creates an assistant at version 1; an existing id is a conflict unless `if_exists` is
    /// `do_nothing`.
    fn create_assistant(
        &self,
        version: AssistantVersion,
        if_exists: IfExists,
    ) -> StoreFuture<Assistant>;

    /// Writes a new version made by `change` from the current one and points the assistant at it.
    fn patch_assistant(
        &self,
        assistant_id: AssistantId,
        change: AssistantChange,
    ) -> StoreFuture<Assistant>;

    /// Points the assistant at one of its stored versions.
    fn set_assistant_version(
        &self,
        assistant_id: AssistantId,
        version: i64,
    ) -> StoreFuture<Assistant>;

    /// Deletes an assistant and its versions (its threads are the caller's business).
    fn delete_assistant(&self, assistant_id: AssistantId) -> StoreFuture<()>;

    /// Creates the system assistant of each graph that lacks one; returns how many.
    fn ensure_system_assistants(&self, graph_ids: Vec<String>) -> StoreFuture<usize>;

    /// The assistant, or `None`.
    fn get_assistant(&self, assistant_id: AssistantId) -> StoreFuture<Option<Assistant>>;

    /// A page of assistants.
    fn search_assistants(
        &self,
        filter: AssistantFilter,
        page: Page<AssistantSortBy>,
    ) -> StoreFuture<Vec<Assistant>>;

    /// How many assistants match.
    fn count_assistants(&self, filter: AssistantFilter) -> StoreFuture<i64>;

    /// Versions of an assistant, newest first.
    fn assistant_versions(
        &self,
        assistant_id: AssistantId,
        metadata: Option<JsonMap>,
        limit: i64,
        offset: i64,
    ) -> StoreFuture<Vec<AssistantVersion>>;
}
