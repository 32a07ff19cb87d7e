//! The SQLite backend of `Store`: one file, one writer thread (`writer.rs`, group commit) and a
//! pool of readers (`reader.rs`). `SqliteStore` is the only way in; each trait method is one job
//! (a savepoint in a group-committed transaction). SQL lives in one file per table; only this
//! folder names rusqlite, and only `startup.rs` names this folder.

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

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use crate::domain::assistant::{Assistant, AssistantChange, AssistantVersion};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::errors::{bounded, LOGGED_ERROR_BYTES};
use crate::domain::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use crate::domain::multitask::CancelAction;
use crate::domain::query::{
    AssistantFilter, AssistantSortBy, HistoryQuery, Page, ThreadFilter, ThreadSortBy,
};
use crate::domain::run::{Run, RunStatus};
use crate::domain::thread::{IfExists, Thread, ThreadStatus};
use crate::domain::time::Timestamp;
use crate::domain::{merge_into, AlreadyExists, JsonMap, NotFound};
use crate::storage::{
    FinishRun, InsertRun, PruneAction, PruneCounts, RunResult, StorageError, Store, StoreFuture,
    Unavailable,
};
use reader::DbReader;
use threads::ErrorChange;
use writer::DbWriter;

/// The name storage errors give this backend.
const BACKEND: &str = "sqlite";

/// Most bytes of a failed statement's text that its storage error keeps.
const STATEMENT_BYTES: usize = 512;

impl From<rusqlite::Error> for StorageError {
    fn from(error: rusqlite::Error) -> Self {
        StorageError::Backend {
            backend: BACKEND,
            unavailable: unavailable_of(&error),
            message: message_of(&error),
        }
    }
}

/// The words of a SQLite error, bounded. rusqlite's text of an error in a statement's text
/// embeds the whole statement (hundreds of KB for a long `IN` list), and the error is logged:
/// keep the cause and the offset, and only the start of the statement.
fn message_of(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqlInputError {
            msg, sql, offset, ..
        } => format!(
            "{msg} at offset {offset} of the statement {}",
            bounded(sql, STATEMENT_BYTES)
        ),
        other => bounded(&other.to_string(), LOGGED_ERROR_BYTES).into_owned(),
    }
}

/// Why a SQLite error may pass: a full disk (or size cap), or a lock held too long.
fn unavailable_of(error: &rusqlite::Error) -> Option<Unavailable> {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Some(Unavailable::Full),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Some(Unavailable::Locked),
        _ => None,
    }
}

/// The SQLite store; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: DbWriter,
    reader: DbReader,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, then starts the writer thread and
    /// `readers` reader threads. With `max_size_bytes`, a write that would grow the file past it
    /// fails with `Unavailable::Full`, as on a full disk.
    pub fn open(
        path: &Path,
        readers: usize,
        busy_timeout: Duration,
        max_size_bytes: Option<u64>,
    ) -> Result<SqliteStore, StorageError> {
        let mut connection = open::open_writer(path, busy_timeout, max_size_bytes)?;
        migrate::migrate(&mut connection)?;
        let writer = DbWriter::start(connection)?;
        let reader = DbReader::start(path, readers, busy_timeout)?;
        Ok(SqliteStore { writer, reader })
    }

    fn write<F, R>(&self, work: F) -> StoreFuture<R>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        Box::pin(self.writer.call(work))
    }

    /// `write` for closing writes (a run's terminal status, deletions), which may grow the file
    /// past `max_size_bytes` so that a full database can still end its runs and free space.
    fn write_closing<F, R>(&self, work: F) -> StoreFuture<R>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        Box::pin(self.writer.call_uncapped(work))
    }

    fn read<F, R>(&self, work: F) -> StoreFuture<R>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        Box::pin(self.reader.call(work))
    }
}

impl Store for SqliteStore {
    // ----- threads -----

    fn create_thread(
        &self,
        thread_id: ThreadId,
        metadata: JsonMap,
        if_exists: IfExists,
    ) -> StoreFuture<Thread> {
        self.write(move |connection| {
            if let Some(existing) = threads::get(connection, thread_id)? {
                return match if_exists {
                    IfExists::DoNothing => Ok(existing),
                    IfExists::Raise => {
                        Err(StorageError::Conflict(AlreadyExists::Thread(thread_id)))
                    }
                };
            }
            let thread = threads::new_thread(thread_id, metadata, Timestamp::now());
            threads::insert(connection, &thread)?;
            Ok(thread)
        })
    }

    fn patch_thread(&self, thread_id: ThreadId, metadata: JsonMap) -> StoreFuture<Thread> {
        self.write(move |connection| {
            let mut thread = threads::require(connection, thread_id)?;
            merge_into(&mut thread.metadata, &metadata);
            thread.updated_at = Timestamp::now();
            threads::set_metadata(connection, thread_id, &thread.metadata, thread.updated_at)?;
            Ok(thread)
        })
    }

    fn copy_thread(&self, from: ThreadId, to: ThreadId) -> StoreFuture<Thread> {
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

    fn delete_thread(&self, thread_id: ThreadId) -> StoreFuture<()> {
        self.write_closing(move |connection| {
            if threads::delete(connection, thread_id)? {
                Ok(())
            } else {
                Err(StorageError::NotFound(NotFound::Thread(thread_id)))
            }
        })
    }

    // ----- retention -----

    fn sweep(&self, cutoff: Timestamp, action: PruneAction) -> StoreFuture<PruneCounts> {
        // Idle threads are found on a reader, page by page; each page is one write job of at
        // most `retention::BATCH_THREADS` threads.
        let store = self.clone();
        Box::pin(async move {
            let mut totals = PruneCounts::default();
            let mut after = None;
            loop {
                let page = store
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
                let counts = store
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
        })
    }

    fn prune_threads(
        &self,
        thread_ids: Vec<ThreadId>,
        action: PruneAction,
    ) -> StoreFuture<PruneCounts> {
        let batches: Vec<_> = thread_ids
            .chunks(retention::BATCH_THREADS)
            .map(|batch| {
                let batch = batch.to_vec();
                self.write_closing(move |connection| {
                    retention::prune(connection, &batch, action, None)
                })
            })
            .collect();
        Box::pin(async move {
            let mut totals = PruneCounts::default();
            for batch in batches {
                totals.add(batch.await?);
            }
            Ok(totals)
        })
    }

    // ----- run life cycle (called by the thread actor, which serialises them per thread) -----

    fn insert_run(&self, insert: InsertRun) -> StoreFuture<Run> {
        self.write(move |connection| {
            let InsertRun {
                mut run,
                create_thread_metadata,
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
                        return Err(StorageError::NotFound(NotFound::ThreadOrAssistant));
                    }
                };
            // A deleted assistant gets no new runs: its deletion and their creation cannot
            // interleave.
            if assistants::get(connection, run.assistant_id)?.is_none() {
                return Err(StorageError::NotFound(NotFound::ThreadOrAssistant));
            }
            let stopped_any = match &stop {
                Some((action, run_ids)) => {
                    stop_in_flight(connection, thread_id, *action, run_ids, now)? > 0
                }
                None => false,
            };
            let mut metadata = thread_metadata.clone();
            merge_into(&mut metadata, &run.metadata);
            metadata.insert("graph_id".into(), run.graph_id.clone().into());
            metadata.insert("assistant_id".into(), serde_json::json!(run.assistant_id));
            run.metadata = metadata;
            if let Some(config_metadata) = run.kwargs.config.get_mut("metadata") {
                *config_metadata = serde_json::Value::Object(run.metadata.clone());
            }
            runs::insert(connection, &run)?;
            thread_metadata.insert("graph_id".into(), run.graph_id.clone().into());
            thread_metadata.insert("assistant_id".into(), serde_json::json!(run.assistant_id));
            threads::mark_busy(connection, thread_id, &thread_metadata, now)?;
            if stopped_any {
                threads::settle(connection, thread_id, true, ErrorChange::Keep, now)?;
            }
            Ok(run)
        })
    }

    fn start_run(
        &self,
        run_id: RunId,
        attempt: u32,
        start: Vec<Checkpoint>,
        recovered: bool,
    ) -> StoreFuture<()> {
        self.write(move |connection| {
            if !runs::start(connection, run_id, attempt, recovered)? {
                return Err(StorageError::Fenced);
            }
            for checkpoint in &start {
                checkpoints::insert(connection, checkpoint)?;
            }
            Ok(())
        })
    }

    fn save_checkpoint(&self, checkpoint: Checkpoint, attempt: u32) -> StoreFuture<()> {
        self.write(move |connection| {
            let run_id = checkpoint.run_id.ok_or(StorageError::Fenced)?;
            if !runs::holds(connection, run_id, attempt)? {
                return Err(StorageError::Fenced);
            }
            checkpoints::insert(connection, &checkpoint)
        })
    }

    fn finish_run(&self, finish: FinishRun) -> StoreFuture<ThreadStatus> {
        self.write_closing(move |connection| {
            let now = Timestamp::now();
            let from = [RunStatus::Running, RunStatus::Pending];
            if !runs::transition(
                connection,
                finish.thread_id,
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

    fn settle_thread(&self, thread_id: ThreadId, in_flight: bool) -> StoreFuture<ThreadStatus> {
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

    fn threads_of_assistant(&self, assistant_id: AssistantId) -> StoreFuture<Vec<ThreadId>> {
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

    fn stop_runs(
        &self,
        thread_id: ThreadId,
        action: CancelAction,
        run_ids: Vec<RunId>,
        in_flight_after: bool,
    ) -> StoreFuture<usize> {
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

    fn delete_run(
        &self,
        thread_id: ThreadId,
        run_id: RunId,
        in_flight_after: bool,
    ) -> StoreFuture<()> {
        self.write_closing(move |connection| {
            if !runs::delete(connection, thread_id, run_id, false)? {
                return Err(StorageError::NotFound(NotFound::Run(run_id)));
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

    fn update_state(&self, checkpoint: Checkpoint) -> StoreFuture<()> {
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

    fn create_assistant(
        &self,
        version: AssistantVersion,
        if_exists: IfExists,
    ) -> StoreFuture<Assistant> {
        self.write(move |connection| {
            if let Some(existing) = assistants::get(connection, version.assistant_id)? {
                return match if_exists {
                    IfExists::DoNothing => Ok(existing),
                    IfExists::Raise => Err(StorageError::Conflict(AlreadyExists::Assistant(
                        version.assistant_id,
                    ))),
                };
            }
            let updated_at = version.created_at;
            assistants::put_version(connection, &version, updated_at)?;
            Ok(version.into_assistant(updated_at))
        })
    }

    fn patch_assistant(
        &self,
        assistant_id: AssistantId,
        change: AssistantChange,
    ) -> StoreFuture<Assistant> {
        self.write(move |connection| {
            let current = assistants::get(connection, assistant_id)?
                .ok_or(StorageError::NotFound(NotFound::Assistant(assistant_id)))?;
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
            change.apply(&mut version);
            assistants::put_version(connection, &version, now)?;
            let mut assistant = version.into_assistant(now);
            assistant.created_at = current.created_at;
            Ok(assistant)
        })
    }

    fn set_assistant_version(
        &self,
        assistant_id: AssistantId,
        version: i64,
    ) -> StoreFuture<Assistant> {
        self.write(move |connection| {
            let current = assistants::get(connection, assistant_id)?
                .ok_or(StorageError::NotFound(NotFound::Assistant(assistant_id)))?;
            let stored = assistants::version(connection, assistant_id, version)?.ok_or({
                StorageError::NotFound(NotFound::AssistantVersion {
                    assistant_id,
                    version,
                })
            })?;
            let now = Timestamp::now();
            assistants::put_version(connection, &stored, now)?;
            let mut assistant = stored.into_assistant(now);
            assistant.created_at = current.created_at;
            Ok(assistant)
        })
    }

    fn delete_assistant(&self, assistant_id: AssistantId) -> StoreFuture<()> {
        self.write(move |connection| {
            if assistants::delete(connection, assistant_id)? {
                Ok(())
            } else {
                Err(StorageError::NotFound(NotFound::AssistantToDelete(
                    assistant_id,
                )))
            }
        })
    }

    fn ensure_system_assistants(&self, graph_ids: Vec<String>) -> StoreFuture<usize> {
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

    fn get_thread(&self, thread_id: ThreadId) -> StoreFuture<Thread> {
        self.read(move |connection| threads::require(connection, thread_id))
    }

    fn search_threads(
        &self,
        filter: ThreadFilter,
        page: Page<ThreadSortBy>,
    ) -> StoreFuture<Vec<Thread>> {
        self.read(move |connection| threads::search(connection, &filter, page))
    }

    fn count_threads(&self, filter: ThreadFilter) -> StoreFuture<i64> {
        self.read(move |connection| threads::count(connection, &filter))
    }

    fn get_run(&self, thread_id: ThreadId, run_id: RunId) -> StoreFuture<Run> {
        self.read(move |connection| {
            runs::get(connection, thread_id, run_id)?
                .ok_or(StorageError::NotFound(NotFound::Run(run_id)))
        })
    }

    fn run_result(&self, thread_id: ThreadId, run_id: RunId) -> StoreFuture<Option<RunResult>> {
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

    fn list_runs(
        &self,
        thread_id: ThreadId,
        status: Option<RunStatus>,
        limit: i64,
        offset: i64,
    ) -> StoreFuture<Vec<Run>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(StorageError::NotFound(NotFound::Thread(thread_id)));
            }
            runs::list(connection, thread_id, status, limit, offset)
        })
    }

    fn in_flight_runs(&self, thread_id: ThreadId) -> StoreFuture<Vec<(Run, u32)>> {
        self.read(move |connection| runs::in_flight(connection, thread_id))
    }

    fn release_run(&self, run_id: RunId) -> StoreFuture<()> {
        self.write_closing(move |connection| {
            runs::release(connection, run_id)?;
            Ok(())
        })
    }

    fn settle_stranded_threads(&self) -> StoreFuture<usize> {
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

    fn threads_in_flight(&self) -> StoreFuture<Vec<ThreadId>> {
        self.read(runs::threads_in_flight)
    }

    fn runs_with_status(&self, statuses: Vec<RunStatus>) -> StoreFuture<Vec<(ThreadId, RunId)>> {
        self.read(move |connection| runs::in_flight_with_status(connection, &statuses))
    }

    fn head(&self, thread_id: ThreadId) -> StoreFuture<Option<Checkpoint>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(StorageError::NotFound(NotFound::Thread(thread_id)));
            }
            checkpoints::head(connection, thread_id)
        })
    }

    fn checkpoint(
        &self,
        thread_id: ThreadId,
        checkpoint_ns: String,
        checkpoint_id: CheckpointId,
    ) -> StoreFuture<Option<Checkpoint>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(StorageError::NotFound(NotFound::Thread(thread_id)));
            }
            checkpoints::get(connection, thread_id, &checkpoint_ns, checkpoint_id)
        })
    }

    fn history(&self, thread_id: ThreadId, query: HistoryQuery) -> StoreFuture<Vec<Checkpoint>> {
        self.read(move |connection| {
            if !threads::exists(connection, thread_id)? {
                return Err(StorageError::NotFound(NotFound::Thread(thread_id)));
            }
            checkpoints::history(connection, thread_id, &query)
        })
    }

    fn get_assistant(&self, assistant_id: AssistantId) -> StoreFuture<Option<Assistant>> {
        self.read(move |connection| assistants::get(connection, assistant_id))
    }

    fn search_assistants(
        &self,
        filter: AssistantFilter,
        page: Page<AssistantSortBy>,
    ) -> StoreFuture<Vec<Assistant>> {
        self.read(move |connection| assistants::search(connection, &filter, page))
    }

    fn count_assistants(&self, filter: AssistantFilter) -> StoreFuture<i64> {
        self.read(move |connection| assistants::count(connection, &filter))
    }

    fn assistant_versions(
        &self,
        assistant_id: AssistantId,
        metadata: Option<JsonMap>,
        limit: i64,
        offset: i64,
    ) -> StoreFuture<Vec<AssistantVersion>> {
        self.read(move |connection| {
            assistants::versions(connection, assistant_id, metadata.as_ref(), limit, offset)
        })
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
                thread_id,
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
    use std::sync::Arc;
    use std::time::Duration;

    use rusqlite::types::Value as SqlValue;

    use super::filter::Where;
    use super::SqliteStore;
    use crate::storage::Store;

    /// A fresh database file in a temporary folder (the guard).
    async fn open() -> (tempfile::TempDir, Arc<dyn Store>) {
        let directory = tempfile::tempdir().expect("a temporary folder");
        let store = SqliteStore::open(
            &directory.path().join("test.db"),
            2,
            Duration::from_secs(5),
            None,
        )
        .expect("the database opens");
        (directory, Arc::new(store))
    }

    crate::store_conformance_suite!(open);

    #[test]
    fn an_error_in_a_huge_statement_keeps_its_cause_but_not_the_whole_statement() {
        let connection = rusqlite::Connection::open_in_memory().expect("an in-memory database");
        connection
            .execute_batch("CREATE TABLE items (id TEXT)")
            .expect("the table is created");
        let mut clause = Where::default();
        let ids = (0..40_000).map(|index| SqlValue::Text(index.to_string()));
        let marks = vec!["?"; 40_000].join(", ");
        clause.push(format!("id IN ({marks})"), ids);
        let error = clause
            .page(&connection, "SELECT id FROM items", "id", 10, 0, |row| {
                row.get::<_, String>(0)
            })
            .expect_err("SQLite allows 32,766 parameters");
        let message = error.to_string();
        assert!(message.len() < 1024, "{} bytes: {message}", message.len());
        assert!(
            message.starts_with("sqlite error: too many SQL variables at offset "),
            "{message}"
        );
        assert!(
            message.contains("of the statement SELECT id FROM items WHERE id IN (?, ?")
                && message.ends_with(" bytes in all)"),
            "{message}"
        );
    }
}
