//! Storage: one SQLite file. `Db` is the only way in: writes go to the single `DbWriter` thread,
//! one job = one all-or-nothing transaction; reads go to the `DbReader` pool. SQL lives only in
//! this module; callers speak in domain types. Run writes are fenced on the run's status.

pub mod assistants;
pub mod checkpoints;
mod codec;
mod filter;
pub mod migrate;
mod open;
mod reader;
pub mod retention;
pub mod runs;
pub mod threads;
mod writer;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use crate::domain::assistant::{Assistant, AssistantVersion};
use crate::domain::checkpoint::{Checkpoint, Interrupt};
use crate::domain::ids::{AssistantId, RunId, ThreadId};
use crate::domain::multitask::CancelAction;
use crate::domain::run::{Run, RunError, RunStatus};
use crate::domain::thread::{IfExists, Thread, ThreadStatus};
use crate::domain::time::Timestamp;
use crate::domain::{merge_into, JsonMap};
pub use checkpoints::HistoryQuery;
pub use reader::DbReader;
pub use retention::{PruneAction, PruneCounts};
pub use threads::{ErrorChange, ThreadFilter};
pub use writer::DbWriter;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The named thing does not exist; the message is for the client.
    #[error("{0}")]
    NotFound(String),
    /// The write conflicts with what exists; the message is for the client.
    #[error("{0}")]
    Conflict(String),
    /// A run write refused because the run is no longer running (it was stopped or deleted).
    #[error("the run is no longer running")]
    Fenced,
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
            StorageError::Sqlite(error) => Unavailable::of(error),
            StorageError::CommitFailed { unavailable, .. } => *unavailable,
            _ => None,
        }
    }
}

/// Why a write failed for a reason that may pass: the request may be retried (503).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The disk, or the `database.max_size_mb` cap, is full (`SQLITE_FULL`).
    Full,
    /// Another connection or process holds the write lock past the busy timeout.
    Locked,
}

impl Unavailable {
    /// Classifies a SQLite error.
    pub fn of(error: &rusqlite::Error) -> Option<Unavailable> {
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Some(Unavailable::Full),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Some(Unavailable::Locked),
            _ => None,
        }
    }

    /// What a client is told.
    pub fn detail(self) -> &'static str {
        match self {
            Unavailable::Full => {
                "the database is full (disk full or database.max_size_mb reached): \
                 nothing was written; free space or raise the limit, then retry"
            }
            Unavailable::Locked => {
                "the database is locked by another process: nothing was written; retry later"
            }
        }
    }
}

/// The new run and what its insertion does to the runs already in flight.
#[derive(Debug)]
pub struct InsertRun {
    pub run: Run,
    /// Create the thread with this metadata if it does not exist (`if_not_exists: create`).
    pub create_thread_metadata: Option<JsonMap>,
    /// Graph the run executes, recorded in the thread's metadata.
    pub graph_id: String,
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

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    writer: DbWriter,
    reader: DbReader,
}

impl Db {
    /// Opens (creating if needed) and migrates the database, then starts the writer thread and
    /// `readers` reader threads. With `max_size_bytes`, a write that would grow the file past it
    /// fails with `Unavailable::Full`, as on a full disk.
    pub fn open(
        path: &Path,
        readers: usize,
        busy_timeout: Duration,
        max_size_bytes: Option<u64>,
    ) -> Result<Db, StorageError> {
        let mut connection = open::open_writer(path, busy_timeout, max_size_bytes)?;
        migrate::migrate(&mut connection)?;
        let writer = DbWriter::start(connection)?;
        let reader = DbReader::start(path, readers, busy_timeout)?;
        Ok(Db { writer, reader })
    }

    fn write<F, R>(&self, work: F) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.call(work)
    }

    /// `write` for closing writes (a run's terminal status, deletions), which may grow the file
    /// past `max_size_bytes` so that a full database can still end its runs and free space.
    fn write_closing<F, R>(&self, work: F) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.call_uncapped(work)
    }

    fn read<F, R>(&self, work: F) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        self.reader.call(work)
    }

    // ----- threads -----

    /// Creates a thread; an existing id is a conflict unless `if_exists` is `do_nothing`.
    pub fn create_thread(
        &self,
        thread_id: ThreadId,
        metadata: JsonMap,
        if_exists: IfExists,
    ) -> impl Future<Output = Result<Thread, StorageError>> {
        self.write(move |connection| {
            if let Some(existing) = threads::get(connection, thread_id)? {
                return match if_exists {
                    IfExists::DoNothing => Ok(existing),
                    IfExists::Raise => Err(StorageError::Conflict(format!(
                        "Thread with ID {thread_id} already exists"
                    ))),
                };
            }
            let thread = threads::new_thread(thread_id, metadata, Timestamp::now());
            threads::insert(connection, &thread)?;
            Ok(thread)
        })
    }

    /// Shallow-merges `metadata` into the thread's metadata.
    pub fn patch_thread(
        &self,
        thread_id: ThreadId,
        metadata: JsonMap,
    ) -> impl Future<Output = Result<Thread, StorageError>> {
        self.write(move |connection| {
            let mut thread = threads::require(connection, thread_id)?;
            merge_into(&mut thread.metadata, &metadata);
            thread.updated_at = Timestamp::now();
            threads::set_metadata(connection, thread_id, &thread.metadata, thread.updated_at)?;
            Ok(thread)
        })
    }

    /// Copies a thread and its checkpoints (not its runs) under a new id.
    pub fn copy_thread(
        &self,
        from: ThreadId,
        to: ThreadId,
    ) -> impl Future<Output = Result<Thread, StorageError>> {
        self.write(move |connection| {
            let source = threads::require(connection, from)?;
            let now = Timestamp::now();
            threads::insert(
                connection,
                &threads::new_thread(to, source.metadata.clone(), now),
            )?;
            checkpoints::copy_thread(connection, from, to)?;
            threads::settle(connection, to, false, ErrorChange::Keep, now)?;
            threads::require(connection, to)
        })
    }

    /// Deletes a thread with its runs and checkpoints.
    pub fn delete_thread(
        &self,
        thread_id: ThreadId,
    ) -> impl Future<Output = Result<(), StorageError>> {
        self.write_closing(move |connection| {
            if threads::delete(connection, thread_id)? {
                Ok(())
            } else {
                Err(threads::not_found(thread_id))
            }
        })
    }

    // ----- retention -----

    /// Deletes or prunes (`action`) every thread last updated before `cutoff` that has no run
    /// pending or running. Idle threads are found on a reader, page by page; each page is one
    /// write job of at most `retention::BATCH_THREADS` threads that checks every thread again, so
    /// other writes get the writer between batches and a run inserted meanwhile is never raced.
    /// Batches are closing writes: they may pass `database.max_size_mb`, to free a full database.
    pub async fn sweep(
        &self,
        cutoff: Timestamp,
        action: PruneAction,
    ) -> Result<PruneCounts, StorageError> {
        let mut totals = PruneCounts::default();
        let mut after = None;
        loop {
            let page = self
                .read(move |connection| {
                    retention::idle_threads(
                        connection,
                        cutoff,
                        after,
                        action,
                        retention::BATCH_THREADS,
                    )
                })
                .await?;
            let Some(&last) = page.last() else {
                return Ok(totals);
            };
            let full = page.len() == retention::BATCH_THREADS;
            let thread_ids: Vec<ThreadId> =
                page.into_iter().map(|(_, thread_id)| thread_id).collect();
            let counts = self
                .write_closing(move |connection| {
                    retention::prune(connection, &thread_ids, action, Some(cutoff))
                })
                .await?;
            totals.add(counts);
            if !full {
                return Ok(totals);
            }
            after = Some(last);
        }
    }

    /// Deletes or prunes (`action`) each of these threads that exists and has no run pending or
    /// running; the others are skipped and not counted. `POST /threads/prune` uses it for
    /// `keep_latest` (its `delete` goes through each thread's actor instead, to stop runs first).
    pub async fn prune_threads(
        &self,
        thread_ids: Vec<ThreadId>,
        action: PruneAction,
    ) -> Result<PruneCounts, StorageError> {
        let batches: Vec<_> = thread_ids
            .chunks(retention::BATCH_THREADS)
            .map(|batch| {
                let batch = batch.to_vec();
                self.write_closing(move |connection| {
                    retention::prune(connection, &batch, action, None)
                })
            })
            .collect();
        let mut totals = PruneCounts::default();
        for batch in batches {
            totals.add(batch.await?);
        }
        Ok(totals)
    }

    // ----- run life cycle (called by the thread actor, which serialises them per thread) -----

    /// Inserts a run as `pending` (the thread becomes `busy`), first stopping the in-flight runs
    /// named in `stop`: `interrupt` marks them `interrupted`, `rollback` deletes them with their
    /// checkpoints. Returns the stored run (metadata merged with the thread's).
    pub fn insert_run(&self, insert: InsertRun) -> impl Future<Output = Result<Run, StorageError>> {
        self.write(move |connection| {
            let InsertRun {
                mut run,
                create_thread_metadata,
                graph_id,
                stop,
            } = insert;
            let thread_id = run.thread_id;
            let now = Timestamp::now();
            let mut thread_metadata =
                match (threads::get(connection, thread_id)?, create_thread_metadata) {
                    (Some(thread), _) => thread.metadata,
                    (None, Some(metadata)) => {
                        threads::insert(
                            connection,
                            &threads::new_thread(thread_id, metadata.clone(), now),
                        )?;
                        metadata
                    }
                    (None, None) => {
                        return Err(StorageError::NotFound(
                            "Thread or assistant not found.".into(),
                        ));
                    }
                };
            let stopped_any = match &stop {
                Some((action, run_ids)) => {
                    stop_in_flight(connection, thread_id, *action, run_ids, now)? > 0
                }
                None => false,
            };
            let mut metadata = thread_metadata.clone();
            merge_into(&mut metadata, &run.metadata);
            metadata.insert("graph_id".into(), graph_id.clone().into());
            metadata.insert("assistant_id".into(), serde_json::json!(run.assistant_id));
            run.metadata = metadata;
            if let Some(config_metadata) = run.kwargs.config.get_mut("metadata") {
                *config_metadata = serde_json::Value::Object(run.metadata.clone());
            }
            runs::insert(connection, &run)?;
            thread_metadata.insert("graph_id".into(), graph_id.into());
            thread_metadata.insert("assistant_id".into(), serde_json::json!(run.assistant_id));
            threads::mark_busy(connection, thread_id, &thread_metadata, now)?;
            if stopped_any {
                threads::settle(connection, thread_id, true, ErrorChange::Keep, now)?;
            }
            Ok(run)
        })
    }

    /// Starts an attempt of a run and writes the checkpoints of its start (input applied) in
    /// the same transaction: a pending run becomes `running`; with `recovered`, a run left
    /// `running` by a crash continues. Returns the attempt's number, which fences the attempt's
    /// writes. `Fenced` if the run is no longer pending (or running, when `recovered`).
    pub fn start_run(
        &self,
        run_id: RunId,
        start: Vec<Checkpoint>,
        recovered: bool,
    ) -> impl Future<Output = Result<u32, StorageError>> {
        self.write(move |connection| {
            let attempt = if recovered {
                runs::resume(connection, run_id)?
            } else {
                runs::start(connection, run_id)?
            };
            let attempt = attempt.ok_or(StorageError::Fenced)?;
            for checkpoint in &start {
                checkpoints::insert(connection, checkpoint)?;
            }
            Ok(attempt)
        })
    }

    /// Writes a checkpoint of a run's attempt. `Fenced` if the run is no longer running in that
    /// attempt: a stopped, rolled-back or resumed-since attempt can never write again.
    pub fn save_checkpoint(
        &self,
        checkpoint: Checkpoint,
        attempt: u32,
    ) -> impl Future<Output = Result<(), StorageError>> {
        self.write(move |connection| {
            let run_id = checkpoint.run_id.ok_or(StorageError::Fenced)?;
            if !runs::holds(connection, run_id, attempt)? {
                return Err(StorageError::Fenced);
            }
            checkpoints::insert(connection, &checkpoint)
        })
    }

    /// Writes a run's terminal status and settles its thread. `Fenced` if the run was no longer
    /// pending or running.
    pub fn finish_run(
        &self,
        finish: FinishRun,
    ) -> impl Future<Output = Result<ThreadStatus, StorageError>> {
        self.write_closing(move |connection| {
            let now = Timestamp::now();
            let from = [RunStatus::Running, RunStatus::Pending];
            if !runs::transition(
                connection,
                finish.run_id,
                &from,
                finish.status,
                finish.error.as_ref(),
                now,
            )? {
                return Err(StorageError::Fenced);
            }
            let error_change = match (&finish.error, finish.status) {
                (Some(error), _) => ErrorChange::Set(error),
                (None, RunStatus::Success) => ErrorChange::Clear,
                (None, _) => ErrorChange::Keep,
            };
            threads::settle(
                connection,
                finish.thread_id,
                finish.in_flight_after,
                error_change,
                now,
            )
        })
    }

    /// Recomputes a thread's status and cached values from storage (after one of its runs
    /// disappeared without the thread actor's doing).
    pub fn settle_thread(
        &self,
        thread_id: ThreadId,
        in_flight: bool,
    ) -> impl Future<Output = Result<ThreadStatus, StorageError>> {
        self.write_closing(move |connection| {
            threads::settle(
                connection,
                thread_id,
                in_flight,
                ErrorChange::Keep,
                Timestamp::now(),
            )
        })
    }

    /// Threads whose metadata names the assistant (`DELETE /assistants/{id}?delete_threads=true`).
    pub fn threads_of_assistant(
        &self,
        assistant_id: AssistantId,
    ) -> impl Future<Output = Result<Vec<ThreadId>, StorageError>> {
        self.read(move |connection| {
            let mut statement = connection.prepare(
                "SELECT thread_id FROM threads WHERE json_extract(metadata, '$.assistant_id') = ?",
            )?;
            let threads = statement
                .query_map([assistant_id], |row| row.get(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(threads)
        })
    }

    /// Stops in-flight runs of a thread (cancel endpoint): `interrupt` marks them `interrupted`,
    /// `rollback` deletes them with their checkpoints; then settles the thread. Returns how many
    /// runs were stopped.
    pub fn stop_runs(
        &self,
        thread_id: ThreadId,
        action: CancelAction,
        run_ids: Vec<RunId>,
        in_flight_after: bool,
    ) -> impl Future<Output = Result<usize, StorageError>> {
        self.write_closing(move |connection| {
            let now = Timestamp::now();
            let stopped = stop_in_flight(connection, thread_id, action, &run_ids, now)?;
            if stopped > 0 {
                threads::settle(
                    connection,
                    thread_id,
                    in_flight_after,
                    ErrorChange::Keep,
                    now,
                )?;
            }
            Ok(stopped)
        })
    }

    /// Deletes a run of any status with its checkpoints, then settles the thread.
    pub fn delete_run(
        &self,
        thread_id: ThreadId,
        run_id: RunId,
        in_flight_after: bool,
    ) -> impl Future<Output = Result<(), StorageError>> {
        self.write_closing(move |connection| {
            if !runs::delete(connection, thread_id, run_id, false)? {
                return Err(StorageError::NotFound(format!("Run {run_id} not found")));
            }
            threads::settle(
                connection,
                thread_id,
                in_flight_after,
                ErrorChange::Keep,
                Timestamp::now(),
            )?;
            Ok(())
        })
    }

    /// Writes a `source: update` checkpoint and settles the thread on it.
    pub fn update_state(
        &self,
        checkpoint: Checkpoint,
    ) -> impl Future<Output = Result<(), StorageError>> {
        self.write(move |connection| {
            checkpoints::insert(connection, &checkpoint)?;
            threads::settle(
                connection,
                checkpoint.thread_id,
                false,
                ErrorChange::Clear,
                Timestamp::now(),
            )?;
            Ok(())
        })
    }

    // ----- assistants -----

    /// Creates an assistant at version 1; an existing id is a conflict unless `if_exists` is
    /// `do_nothing`.
    pub fn create_assistant(
        &self,
        version: AssistantVersion,
        if_exists: IfExists,
    ) -> impl Future<Output = Result<Assistant, StorageError>> {
        self.write(move |connection| {
            if let Some(existing) = assistants::get(connection, version.assistant_id)? {
                return match if_exists {
                    IfExists::DoNothing => Ok(existing),
                    IfExists::Raise => Err(StorageError::Conflict(format!(
                        "Assistant {} already exists",
                        version.assistant_id
                    ))),
                };
            }
            let updated_at = version.created_at;
            assistants::put_version(connection, &version, updated_at)?;
            Ok(version.into_assistant(updated_at))
        })
    }

    /// Writes a new version made by `change` from the current one and points the assistant at it.
    pub fn patch_assistant<F>(
        &self,
        assistant_id: AssistantId,
        change: F,
    ) -> impl Future<Output = Result<Assistant, StorageError>>
    where
        F: FnOnce(&mut AssistantVersion) + Send + 'static,
    {
        self.write(move |connection| {
            let current = assistants::get(connection, assistant_id)?.ok_or_else(|| {
                StorageError::NotFound(format!("Assistant {assistant_id} not found"))
            })?;
            let now = Timestamp::now();
            let mut version = AssistantVersion {
                assistant_id,
                graph_id: current.graph_id,
                config: current.config,
                context: current.context,
                metadata: current.metadata,
                name: current.name,
                created_at: now,
                version: assistants::max_version(connection, assistant_id)? + 1,
                description: current.description,
            };
            change(&mut version);
            assistants::put_version(connection, &version, now)?;
            let mut assistant = version.into_assistant(now);
            assistant.created_at = current.created_at;
            Ok(assistant)
        })
    }

    /// Points the assistant at one of its stored versions.
    pub fn set_assistant_version(
        &self,
        assistant_id: AssistantId,
        version: i64,
    ) -> impl Future<Output = Result<Assistant, StorageError>> {
        self.write(move |connection| {
            let current = assistants::get(connection, assistant_id)?.ok_or_else(|| {
                StorageError::NotFound(format!("Assistant {assistant_id} not found"))
            })?;
            let stored =
                assistants::version(connection, assistant_id, version)?.ok_or_else(|| {
                    StorageError::NotFound(format!(
                        "Version {version} not found for assistant {assistant_id}"
                    ))
                })?;
            let now = Timestamp::now();
            assistants::put_version(connection, &stored, now)?;
            let mut assistant = stored.into_assistant(now);
            assistant.created_at = current.created_at;
            Ok(assistant)
        })
    }

    /// Deletes an assistant and its versions. Its threads, if they must go too, are deleted
    /// through their thread actors by the caller.
    pub fn delete_assistant(
        &self,
        assistant_id: AssistantId,
    ) -> impl Future<Output = Result<(), StorageError>> {
        self.write(move |connection| {
            if assistants::delete(connection, assistant_id)? {
                Ok(())
            } else {
                Err(StorageError::NotFound(format!(
                    "Assistant with ID {assistant_id} not found"
                )))
            }
        })
    }

    /// Creates the system assistant of each graph that lacks one.
    pub fn ensure_system_assistants(
        &self,
        graph_ids: Vec<String>,
    ) -> impl Future<Output = Result<usize, StorageError>> {
        self.write(move |connection| {
            let mut created = 0;
            for graph_id in graph_ids {
                let assistant_id = AssistantId::for_graph(&graph_id);
                if assistants::get(connection, assistant_id)?.is_some() {
                    continue;
                }
                let mut metadata = JsonMap::new();
                metadata.insert("created_by".into(), "system".into());
                let now = Timestamp::now();
                let version = AssistantVersion {
                    assistant_id,
                    graph_id: graph_id.clone(),
                    config: JsonMap::new(),
                    context: JsonMap::new(),
                    metadata,
                    name: graph_id,
                    created_at: now,
                    version: 1,
                    description: None,
                };
                assistants::put_version(connection, &version, now)?;
                created += 1;
            }
            Ok(created)
        })
    }

    // ----- reads -----

    /// The thread, or `NotFound`.
    pub fn get_thread(
        &self,
        thread_id: ThreadId,
    ) -> impl Future<Output = Result<Thread, StorageError>> {
        self.read(move |connection| threads::require(connection, thread_id))
    }

    /// A page of threads.
    pub fn search_threads(
        &self,
        filter: ThreadFilter,
        sort_column: &'static str,
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<Vec<Thread>, StorageError>> {
        self.read(move |connection| {
            threads::search(connection, &filter, sort_column, descending, limit, offset)
        })
    }

    /// How many threads match.
    pub fn count_threads(
        &self,
        filter: ThreadFilter,
    ) -> impl Future<Output = Result<i64, StorageError>> {
        self.read(move |connection| threads::count(connection, &filter))
    }

    /// The run, or `NotFound`.
    pub fn get_run(
        &self,
        thread_id: ThreadId,
        run_id: RunId,
    ) -> impl Future<Output = Result<Run, StorageError>> {
        self.read(move |connection| {
            runs::get(connection, thread_id, run_id)?
                .ok_or_else(|| StorageError::NotFound(format!("Run {run_id} not found")))
        })
    }

    /// What `/join` returns for a run that is no longer in flight: the run, its error if it
    /// failed, and the values of the last checkpoint it wrote.
    pub fn run_result(
        &self,
        thread_id: ThreadId,
        run_id: RunId,
    ) -> impl Future<Output = Result<Option<RunResult>, StorageError>> {
        self.read(move |connection| {
            let Some((run, error)) = runs::get_with_error(connection, thread_id, run_id)? else {
                return Ok(None);
            };
            let last = checkpoints::last_values_of_run(connection, thread_id, run_id)?;
            let (values, tasks) =
                last.map_or((None, vec![]), |(values, tasks)| (Some(values), tasks));
            let interrupts = tasks.into_iter().flat_map(|task| task.interrupts).collect();
            Ok(Some(RunResult {
                run,
                error,
                values,
                interrupts,
            }))
        })
    }

    /// A page of a thread's runs, newest first; `NotFound` for an unknown thread.
    pub fn list_runs(
        &self,
        thread_id: ThreadId,
        status: Option<RunStatus>,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<Vec<Run>, StorageError>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(threads::not_found(thread_id));
            }
            runs::list(connection, thread_id, status, limit, offset)
        })
    }

    /// The thread's pending and running runs in start order, each with its attempts so far.
    pub fn in_flight_runs(
        &self,
        thread_id: ThreadId,
    ) -> impl Future<Output = Result<Vec<(Run, u32)>, StorageError>> {
        self.read(move |connection| runs::in_flight(connection, thread_id))
    }

    /// A run stopped by a graceful shutdown goes back to `pending` with its attempt given back:
    /// it continues from its last checkpoint at the next start, first in its thread's queue.
    pub fn release_run(&self, run_id: RunId) -> impl Future<Output = Result<(), StorageError>> {
        self.write_closing(move |connection| {
            runs::release(connection, run_id)?;
            Ok(())
        })
    }

    /// Threads marked `busy` with no run in flight (none should exist: every write settles its
    /// thread) are settled, so none stays busy with nothing to do. Returns how many.
    pub fn settle_stranded_threads(&self) -> impl Future<Output = Result<usize, StorageError>> {
        self.write_closing(|connection| {
            let stranded: Vec<ThreadId> = connection
                .prepare(
                    "SELECT thread_id FROM threads WHERE status = 'busy' AND NOT EXISTS
                     (SELECT 1 FROM runs WHERE runs.thread_id = threads.thread_id
                      AND runs.status IN ('pending', 'running'))",
                )?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let now = Timestamp::now();
            for thread_id in &stranded {
                threads::settle(connection, *thread_id, false, ErrorChange::Keep, now)?;
            }
            Ok(stranded.len())
        })
    }

    /// Threads that have pending or running runs.
    pub fn threads_in_flight(&self) -> impl Future<Output = Result<Vec<ThreadId>, StorageError>> {
        self.read(runs::threads_in_flight)
    }

    /// `(thread, run)` of every run with one of these statuses.
    pub fn runs_with_status(
        &self,
        statuses: Vec<RunStatus>,
    ) -> impl Future<Output = Result<Vec<(ThreadId, RunId)>, StorageError>> {
        self.read(move |connection| runs::in_flight_with_status(connection, &statuses))
    }

    /// The thread's latest checkpoint; `NotFound` for an unknown thread.
    pub fn head(
        &self,
        thread_id: ThreadId,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StorageError>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(threads::not_found(thread_id));
            }
            checkpoints::head(connection, thread_id)
        })
    }

    /// One checkpoint; `NotFound` for an unknown thread.
    pub fn checkpoint(
        &self,
        thread_id: ThreadId,
        checkpoint_ns: String,
        checkpoint_id: crate::domain::ids::CheckpointId,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StorageError>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(threads::not_found(thread_id));
            }
            checkpoints::get(connection, thread_id, &checkpoint_ns, checkpoint_id)
        })
    }

    /// The thread's checkpoints, newest first; `NotFound` for an unknown thread.
    pub fn history(
        &self,
        thread_id: ThreadId,
        query: HistoryQuery,
    ) -> impl Future<Output = Result<Vec<Checkpoint>, StorageError>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(threads::not_found(thread_id));
            }
            checkpoints::history(connection, thread_id, &query)
        })
    }

    /// The assistant, or `None`.
    pub fn get_assistant(
        &self,
        assistant_id: AssistantId,
    ) -> impl Future<Output = Result<Option<Assistant>, StorageError>> {
        self.read(move |connection| assistants::get(connection, assistant_id))
    }

    /// A page of assistants.
    pub fn search_assistants(
        &self,
        filter: assistants::AssistantFilter,
        sort_column: &'static str,
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<Vec<Assistant>, StorageError>> {
        self.read(move |connection| {
            assistants::search(connection, &filter, sort_column, descending, limit, offset)
        })
    }

    /// How many assistants match.
    pub fn count_assistants(
        &self,
        filter: assistants::AssistantFilter,
    ) -> impl Future<Output = Result<i64, StorageError>> {
        self.read(move |connection| assistants::count(connection, &filter))
    }

    /// Versions of an assistant, newest first.
    pub fn assistant_versions(
        &self,
        assistant_id: AssistantId,
        metadata: Option<JsonMap>,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<Vec<AssistantVersion>, StorageError>> {
        self.read(move |connection| {
            assistants::versions(connection, assistant_id, metadata.as_ref(), limit, offset)
        })
    }

    /// Runs `work` on a reader connection; for tests and diagnostics only.
    #[doc(hidden)]
    pub fn read_raw<F, R>(&self, work: F) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        self.read(work)
    }
}

/// Stops the named in-flight runs of a thread inside the current transaction.
fn stop_in_flight(
    connection: &Connection,
    thread_id: ThreadId,
    action: CancelAction,
    run_ids: &[RunId],
    now: Timestamp,
) -> Result<usize, StorageError> {
    let mut stopped = 0;
    for run_id in run_ids {
        let changed = match action {
            CancelAction::Interrupt => runs::transition(
                connection,
                *run_id,
                &[RunStatus::Pending, RunStatus::Running],
                RunStatus::Interrupted,
                None,
                now,
            )?,
            CancelAction::Rollback => runs::delete(connection, thread_id, *run_id, true)?,
        };
        stopped += usize::from(changed);
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkpoint::CheckpointSource;
    use crate::domain::ids::CheckpointId;
    use crate::domain::multitask::MultitaskStrategy;

    fn open() -> (tempfile::TempDir, Db) {
        let directory = tempfile::tempdir().unwrap();
        let db = Db::open(
            &directory.path().join("test.db"),
            2,
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        (directory, db)
    }

    fn run(thread_id: ThreadId) -> Run {
        let now = Timestamp::now();
        Run {
            run_id: RunId::generate(),
            thread_id,
            assistant_id: AssistantId::for_graph("agent"),
            metadata: JsonMap::new(),
            status: RunStatus::Pending,
            kwargs: serde_json::from_value(serde_json::json!({
                "input": null, "command": null, "config": {}, "context": {}, "stream_mode": ["values"],
                "interrupt_before": null, "interrupt_after": null, "webhook": null, "feedback_keys": null,
                "temporary": false, "subgraphs": false, "resumable": false, "checkpoint_during": true,
                "durability": "async"
            }))
            .unwrap(),
            multitask_strategy: MultitaskStrategy::Enqueue,
            created_at: now,
            updated_at: now,
        }
    }

    fn checkpoint(thread_id: ThreadId, run_id: RunId, step: i64) -> Checkpoint {
        Checkpoint {
            thread_id,
            checkpoint_ns: String::new(),
            checkpoint_id: CheckpointId::generate(),
            parent_checkpoint_id: None,
            run_id: Some(run_id),
            step,
            source: CheckpointSource::Loop,
            values: JsonMap::new(),
            next: vec![],
            tasks: vec![],
            metadata: JsonMap::new(),
            created_at: Timestamp::now(),
            updated_by: vec![],
        }
    }

    fn insert(run: &Run, stop: Option<(CancelAction, Vec<RunId>)>) -> InsertRun {
        InsertRun {
            run: run.clone(),
            create_thread_metadata: None,
            graph_id: "agent".into(),
            stop,
        }
    }

    async fn checkpoints_of(db: &Db, run_id: RunId) -> i64 {
        db.read_raw(move |connection| {
            Ok(connection.query_row(
                "SELECT COUNT(*) FROM checkpoints WHERE run_id = ?",
                [run_id],
                |row| row.get(0),
            )?)
        })
        .await
        .unwrap()
    }

    /// A database with one thread whose run has started (its input checkpoint written).
    async fn one_started_run() -> (tempfile::TempDir, Db, Thread, Run) {
        let (directory, db) = open();
        let thread = db
            .create_thread(ThreadId::generate(), JsonMap::new(), IfExists::Raise)
            .await
            .unwrap();
        let first = run(thread.thread_id);
        db.insert_run(insert(&first, None)).await.unwrap();
        db.start_run(
            first.run_id,
            vec![checkpoint(thread.thread_id, first.run_id, -1)],
            false,
        )
        .await
        .unwrap();
        (directory, db, thread, first)
    }

    #[tokio::test]
    async fn a_resumed_attempt_fences_the_writes_of_the_one_before_and_a_release_gives_it_back() {
        let (_directory, db, thread, first) = one_started_run().await;
        let resumed = db.start_run(first.run_id, vec![], true).await.unwrap();
        assert_eq!(resumed, 2);
        let stale = db
            .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 1)
            .await;
        assert!(matches!(stale, Err(StorageError::Fenced)), "{stale:?}");
        db.save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 2)
            .await
            .unwrap();
        // Released (shutdown): pending again with the attempt given back, so it cannot be
        // resumed as a crash orphan, and starting it again is attempt 2 once more.
        db.release_run(first.run_id).await.unwrap();
        assert!(matches!(
            db.start_run(first.run_id, vec![], true).await,
            Err(StorageError::Fenced)
        ));
        assert_eq!(db.start_run(first.run_id, vec![], false).await.unwrap(), 2);
        let stale = db
            .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 1), 1)
            .await;
        assert!(matches!(stale, Err(StorageError::Fenced)), "{stale:?}");
    }

    #[tokio::test]
    async fn rollback_deletes_the_run_and_its_checkpoints_and_fences_its_writes() {
        let (_directory, db, thread, first) = one_started_run().await;
        db.save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 1)
            .await
            .unwrap();
        assert_eq!(checkpoints_of(&db, first.run_id).await, 2);

        let second = run(thread.thread_id);
        db.insert_run(insert(
            &second,
            Some((CancelAction::Rollback, vec![first.run_id])),
        ))
        .await
        .unwrap();

        assert_eq!(checkpoints_of(&db, first.run_id).await, 0);
        assert!(matches!(
            db.get_run(thread.thread_id, first.run_id).await,
            Err(StorageError::NotFound(_))
        ));
        let late_write = db
            .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 1), 1)
            .await;
        assert!(
            matches!(late_write, Err(StorageError::Fenced)),
            "{late_write:?}"
        );
        assert_eq!(checkpoints_of(&db, first.run_id).await, 0);
        assert_eq!(
            db.get_thread(thread.thread_id).await.unwrap().status,
            ThreadStatus::Busy
        );
    }

    #[tokio::test]
    async fn interrupt_keeps_checkpoints_and_fences_later_writes() {
        let (_directory, db, thread, first) = one_started_run().await;
        let second = run(thread.thread_id);
        db.insert_run(insert(
            &second,
            Some((CancelAction::Interrupt, vec![first.run_id])),
        ))
        .await
        .unwrap();
        let stored = db.get_run(thread.thread_id, first.run_id).await.unwrap();
        assert_eq!(stored.status, RunStatus::Interrupted);
        assert_eq!(checkpoints_of(&db, first.run_id).await, 1);
        assert!(matches!(
            db.save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 1)
                .await,
            Err(StorageError::Fenced)
        ));
        let finish = FinishRun {
            thread_id: thread.thread_id,
            run_id: first.run_id,
            status: RunStatus::Success,
            error: None,
            in_flight_after: false,
        };
        assert!(matches!(
            db.finish_run(finish).await,
            Err(StorageError::Fenced)
        ));
    }

    #[tokio::test]
    async fn a_failed_job_in_a_batch_leaves_the_others_committed() {
        let (_directory, db) = open();
        let thread_id = ThreadId::generate();
        // Queued back to back, these are likely to share one transaction.
        let created = db.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
        let duplicate = db.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
        let other = db.create_thread(ThreadId::generate(), JsonMap::new(), IfExists::Raise);
        assert!(created.await.is_ok());
        assert!(matches!(duplicate.await, Err(StorageError::Conflict(_))));
        let other = other.await.unwrap();
        assert!(db.get_thread(other.thread_id).await.is_ok());
        assert_eq!(db.count_threads(ThreadFilter::default()).await.unwrap(), 2);
    }
}
