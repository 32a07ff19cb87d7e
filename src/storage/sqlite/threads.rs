//! SQL for the `threads` table.

use rusqlite::types::Value as SqlValue;
use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::codec::{json_column, optional_json_column, to_json};
use super::filter::{order_sql, Where};
use crate::domain::checkpoint::TaskRecord;
use crate::domain::ids::ThreadId;
use crate::domain::query::{Page, ThreadFilter, ThreadSortBy};
use crate::domain::run::RunError;
use crate::domain::thread::{Thread, ThreadStatus};
use crate::domain::time::Timestamp;
use crate::domain::{JsonMap, NotFound};
use crate::storage::StorageError;

const COLUMNS: &str =
    "thread_id, created_at, updated_at, state_updated_at, metadata, status, config, \"values\", interrupts, error";

fn map_row(row: &Row<'_>) -> rusqlite::Result<Thread> {
    let status: String = row.get("status")?;
    Ok(Thread {
        thread_id: row.get("thread_id")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        state_updated_at: row.get("state_updated_at")?,
        metadata: json_column(row, "metadata")?,
        status: ThreadStatus::parse(&status).unwrap_or(ThreadStatus::Idle),
        config: json_column(row, "config")?,
        values: optional_json_column(row, "values")?,
        interrupts: json_column(row, "interrupts")?,
        error: optional_json_column(row, "error")?,
    })
}

/// The thread, if it exists.
pub fn get(connection: &Connection, thread_id: ThreadId) -> Result<Option<Thread>, StorageError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM threads WHERE thread_id = ?"
    ))?;
    Ok(statement.query_row([thread_id], map_row).optional()?)
}

/// The thread, or a 404 error.
pub fn require(connection: &Connection, thread_id: ThreadId) -> Result<Thread, StorageError> {
    get(connection, thread_id)?.ok_or(StorageError::NotFound(NotFound::Thread(thread_id)))
}

/// Whether the thread exists.
pub fn exists(connection: &Connection, thread_id: ThreadId) -> Result<bool, StorageError> {
    let mut statement = connection.prepare_cached("SELECT 1 FROM threads WHERE thread_id = ?")?;
    Ok(statement.exists([thread_id])?)
}

/// Inserts a new thread; the id must be free.
pub fn insert(connection: &Connection, thread: &Thread) -> Result<(), StorageError> {
    connection
        .prepare_cached(&format!(
            "INSERT INTO threads ({COLUMNS}) VALUES (:thread_id, :created_at, :updated_at, :state_updated_at,
             :metadata, :status, :config, :values, :interrupts, :error)"
        ))?
        .execute(named_params! {
            ":thread_id": thread.thread_id,
            ":created_at": thread.created_at,
            ":updated_at": thread.updated_at,
            ":state_updated_at": thread.state_updated_at,
            ":metadata": to_json(&thread.metadata)?,
            ":status": thread.status.as_str(),
            ":config": to_json(&thread.config)?,
            ":values": thread.values.as_ref().map(to_json).transpose()?,
            ":interrupts": to_json(&thread.interrupts)?,
            ":error": thread.error.as_ref().map(to_json).transpose()?,
        })?;
    Ok(())
}

/// A new idle thread with no state.
pub fn new_thread(thread_id: ThreadId, metadata: JsonMap, now: Timestamp) -> Thread {
    Thread {
        thread_id,
        created_at: now,
        updated_at: now,
        state_updated_at: now,
        metadata,
        status: ThreadStatus::Idle,
        config: JsonMap::new(),
        values: None,
        interrupts: JsonMap::new(),
        error: None,
    }
}

/// Replaces a thread's metadata.
pub fn set_metadata(
    connection: &Connection,
    thread_id: ThreadId,
    metadata: &JsonMap,
    now: Timestamp,
) -> Result<(), StorageError> {
    connection
        .prepare_cached("UPDATE threads SET metadata = ?, updated_at = ? WHERE thread_id = ?")?
        .execute(rusqlite::params![to_json(metadata)?, now, thread_id])?;
    Ok(())
}

/// Marks a thread busy (a run was inserted) and records the graph and assistant it runs.
pub fn mark_busy(
    connection: &Connection,
    thread_id: ThreadId,
    metadata: &JsonMap,
    now: Timestamp,
) -> Result<(), StorageError> {
    connection
        .prepare_cached(
            "UPDATE threads SET status = 'busy', metadata = ?, updated_at = ? WHERE thread_id = ?",
        )?
        .execute(rusqlite::params![to_json(metadata)?, now, thread_id])?;
    Ok(())
}

/// Deletes a thread (its runs and checkpoints go by cascade); false if it did not exist.
pub fn delete(connection: &Connection, thread_id: ThreadId) -> Result<bool, StorageError> {
    Ok(connection.execute("DELETE FROM threads WHERE thread_id = ?", [thread_id])? > 0)
}

/// How settling a thread changes its `error` field.
pub enum ErrorChange<'a> {
    /// Leave it.
    Keep,
    /// Set it to null (a run succeeded).
    Clear,
    /// A run failed with this error; the thread becomes `error`.
    Set(&'a RunError),
}

/// Recomputes a thread after its runs changed: status by `ThreadStatus::settle` from the latest
/// checkpoint, and the cached `values` and pending `interrupts` copied from that checkpoint.
pub fn settle(
    connection: &Connection,
    thread_id: ThreadId,
    in_flight: bool,
    error: ErrorChange<'_>,
    now: Timestamp,
) -> Result<ThreadStatus, StorageError> {
    let head: Option<(Vec<String>, Vec<TaskRecord>)> = connection
        .prepare_cached(
            "SELECT next, tasks FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''
             ORDER BY checkpoint_id DESC LIMIT 1",
        )?
        .query_row([thread_id], |row| {
            Ok((json_column(row, "next")?, json_column(row, "tasks")?))
        })
        .optional()?;
    let head_has_next = head.as_ref().is_some_and(|(next, _)| !next.is_empty());
    let tasks = head.map(|(_, tasks)| tasks).unwrap_or_default();
    let interrupts: JsonMap = tasks
        .iter()
        .filter(|task| !task.interrupts.is_empty())
        .map(|task| (task.id.to_string(), serde_json::json!(task.interrupts)))
        .collect();
    let status = ThreadStatus::settle(
        in_flight,
        matches!(error, ErrorChange::Set(_)),
        head_has_next,
    );
    let (error_change, error_json) = match error {
        ErrorChange::Keep => ("keep", None),
        ErrorChange::Clear => ("clear", None),
        ErrorChange::Set(run_error) => ("set", Some(to_json(run_error)?)),
    };
    connection
        .prepare_cached(
            "UPDATE threads SET status = ?1, updated_at = ?2, state_updated_at = ?2,
                \"values\" = (SELECT \"values\" FROM checkpoints WHERE thread_id = ?3 AND checkpoint_ns = ''
                              ORDER BY checkpoint_id DESC LIMIT 1),
                error = CASE ?4 WHEN 'keep' THEN error WHEN 'clear' THEN NULL ELSE ?5 END,
                interrupts = ?6
             WHERE thread_id = ?3",
        )?
        .execute(rusqlite::params![
            status.as_str(),
            now,
            thread_id,
            error_change,
            error_json,
            to_json(&interrupts)?
        ])?;
    Ok(status)
}

fn filter_clause(filter: &ThreadFilter) -> Where {
    let mut clause = Where::default();
    if let Some(ids) = &filter.ids {
        let marks = vec!["?"; ids.len()].join(", ");
        clause.push(
            format!("thread_id IN ({marks})"),
            ids.iter().map(|id| SqlValue::Text(id.to_string())),
        );
    }
    if let Some(metadata) = &filter.metadata {
        clause.json_matches("metadata", metadata);
    }
    if let Some(values) = &filter.values {
        clause.json_matches("\"values\"", values);
    }
    if let Some(status) = filter.status {
        clause.push("status = ?", [SqlValue::Text(status.as_str().into())]);
    }
    clause
}

fn sort_column(sort_by: ThreadSortBy) -> &'static str {
    match sort_by {
        ThreadSortBy::ThreadId => "thread_id",
        ThreadSortBy::Status => "status",
        ThreadSortBy::CreatedAt => "created_at",
        ThreadSortBy::UpdatedAt => "updated_at",
        ThreadSortBy::StateUpdatedAt => "state_updated_at",
    }
}

/// A page of threads.
pub fn search(
    connection: &Connection,
    filter: &ThreadFilter,
    page: Page<ThreadSortBy>,
) -> Result<Vec<Thread>, StorageError> {
    let order = order_sql(page.order);
    filter_clause(filter).page(
        connection,
        &format!("SELECT {COLUMNS} FROM threads"),
        &format!("{} {order}, thread_id {order}", sort_column(page.sort_by)),
        page.limit,
        page.offset,
        map_row,
    )
}

/// How many threads match.
pub fn count(connection: &Connection, filter: &ThreadFilter) -> Result<i64, StorageError> {
    filter_clause(filter).count(connection, "threads")
}
