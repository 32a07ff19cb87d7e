//! SQL for the `runs` table. Every status change is fenced: it names the statuses it may change.

use rusqlite::types::Value as SqlValue;
use rusqlite::{named_params, params_from_iter, Connection, OptionalExtension, Row};

use super::codec::{json_column, optional_json_column, to_json};
use crate::domain::ids::{RunId, ThreadId};
use crate::domain::multitask::MultitaskStrategy;
use crate::domain::run::{Run, RunError, RunStatus};
use crate::domain::time::Timestamp;
use crate::storage::StorageError;

const COLUMNS: &str =
    "run_id, thread_id, assistant_id, graph_id, status, metadata, kwargs, multitask_strategy, error, created_at, updated_at";

fn map_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    let status: String = row.get("status")?;
    let strategy: String = row.get("multitask_strategy")?;
    Ok(Run {
        run_id: row.get("run_id")?,
        thread_id: row.get("thread_id")?,
        assistant_id: row.get("assistant_id")?,
        graph_id: row.get("graph_id")?,
        metadata: json_column(row, "metadata")?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Error),
        kwargs: json_column(row, "kwargs")?,
        multitask_strategy: MultitaskStrategy::parse(&strategy).unwrap_or_default(),
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

/// Inserts a new run.
pub fn insert(connection: &Connection, run: &Run) -> Result<(), StorageError> {
    connection
        .prepare_cached(&format!(
            "INSERT INTO runs ({COLUMNS}) VALUES (:run_id, :thread_id, :assistant_id, :graph_id, :status, :metadata,
             :kwargs, :multitask_strategy, NULL, :created_at, :updated_at)"
        ))?
        .execute(named_params! {
            ":run_id": run.run_id,
            ":thread_id": run.thread_id,
            ":assistant_id": run.assistant_id,
            ":graph_id": run.graph_id,
            ":status": run.status.as_str(),
            ":metadata": to_json(&run.metadata)?,
            ":kwargs": to_json(&run.kwargs)?,
            ":multitask_strategy": run.multitask_strategy.as_str(),
            ":created_at": run.created_at,
            ":updated_at": run.updated_at,
        })?;
    Ok(())
}

/// The run of that thread, if it exists.
pub fn get(
    connection: &Connection,
    thread_id: ThreadId,
    run_id: RunId,
) -> Result<Option<Run>, StorageError> {
    Ok(get_with_error(connection, thread_id, run_id)?.map(|(run, _)| run))
}

/// The run with its error, if it failed.
pub fn get_with_error(
    connection: &Connection,
    thread_id: ThreadId,
    run_id: RunId,
) -> Result<Option<(Run, Option<RunError>)>, StorageError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs WHERE run_id = ? AND thread_id = ?"
    ))?;
    Ok(statement
        .query_row(rusqlite::params![run_id, thread_id], |row| {
            Ok((map_row(row)?, optional_json_column(row, "error")?))
        })
        .optional()?)
}

/// A page of a thread's runs, newest first.
pub fn list(
    connection: &Connection,
    thread_id: ThreadId,
    status: Option<RunStatus>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Run>, StorageError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs WHERE thread_id = :thread_id AND (:status IS NULL OR status = :status)
         ORDER BY created_at DESC, run_id DESC LIMIT :limit OFFSET :offset"
    ))?;
    let runs = statement
        .query_map(
            named_params! {
                ":thread_id": thread_id,
                ":status": status.map(RunStatus::as_str),
                ":limit": limit,
                ":offset": offset,
            },
            map_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// The thread's pending and running runs in start order, each with how many times it was
/// started.
pub fn in_flight(
    connection: &Connection,
    thread_id: ThreadId,
) -> Result<Vec<(Run, u32)>, StorageError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS}, attempts FROM runs
         WHERE thread_id = ? AND status IN ('pending', 'running')
         ORDER BY created_at, run_id"
    ))?;
    let runs = statement
        .query_map([thread_id], |row| Ok((map_row(row)?, row.get("attempts")?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// Threads that have pending or running runs.
pub fn threads_in_flight(connection: &Connection) -> Result<Vec<ThreadId>, StorageError> {
    let mut statement = connection.prepare_cached(
        "SELECT DISTINCT thread_id FROM runs WHERE status IN ('pending', 'running')",
    )?;
    let threads = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(threads)
}

/// In-flight runs of any thread with one of `statuses`, for bulk cancel.
pub fn in_flight_with_status(
    connection: &Connection,
    statuses: &[RunStatus],
) -> Result<Vec<(ThreadId, RunId)>, StorageError> {
    let marks = vec!["?"; statuses.len()].join(", ");
    let mut statement = connection.prepare(&format!(
        "SELECT thread_id, run_id FROM runs WHERE status IN ({marks}) ORDER BY created_at, run_id"
    ))?;
    let params = statuses
        .iter()
        .map(|status| SqlValue::Text(status.as_str().into()));
    let runs = statement
        .query_map(params_from_iter(params), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// Moves a run of the thread from one of `from` to `to`; returns false when it was not in one
/// of `from` or is not a run of that thread (the fence: a stopped or deleted run cannot change
/// again, and a run is only ever changed on behalf of its own thread).
pub fn transition(
    connection: &Connection,
    thread_id: ThreadId,
    run_id: RunId,
    from: &[RunStatus],
    to: RunStatus,
    error: Option<&RunError>,
    now: Timestamp,
) -> Result<bool, StorageError> {
    let allowed = from
        .iter()
        .map(|status| status.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let changed = connection
        .prepare_cached(
            "UPDATE runs SET status = :to, error = :error, updated_at = :now
             WHERE run_id = :run_id AND thread_id = :thread_id
               AND instr(',' || :allowed || ',', ',' || status || ',') > 0",
        )?
        .execute(named_params! {
            ":to": to.as_str(),
            ":error": error.map(to_json).transpose()?,
            ":now": now,
            ":run_id": run_id,
            ":thread_id": thread_id,
            ":allowed": allowed,
        })?;
    Ok(changed > 0)
}

/// Starts attempt number `attempt` of a run: a pending run becomes `running` (with
/// `recovered`, a run left `running` stays so), counting the attempt, which fences the writes of
/// any earlier one. False, and nothing changes, unless the run is in that status with exactly
/// `attempt - 1` attempts so far.
pub fn start(
    connection: &Connection,
    run_id: RunId,
    attempt: u32,
    recovered: bool,
) -> Result<bool, StorageError> {
    // `updated_at` is not bumped by pending → running, as on the official server.
    let changed = connection
        .prepare_cached(
            "UPDATE runs SET status = 'running', attempts = :attempt
             WHERE run_id = :run_id AND attempts = :attempt - 1
             AND status = CASE WHEN :recovered THEN 'running' ELSE 'pending' END",
        )?
        .execute(named_params! {
            ":attempt": attempt,
            ":run_id": run_id,
            ":recovered": recovered,
        })?;
    Ok(changed > 0)
}

/// The fence of a run's writes: true while the run is `running` in this attempt. A stopped,
/// rolled-back or since resumed attempt can never write again.
pub fn holds(connection: &Connection, run_id: RunId, attempt: u32) -> Result<bool, StorageError> {
    Ok(connection
        .prepare_cached(
            "SELECT 1 FROM runs WHERE run_id = ? AND status = 'running' AND attempts = ?",
        )?
        .exists(rusqlite::params![run_id, attempt])?)
}

/// Puts a run stopped by a graceful shutdown back to `pending` and gives back its attempt (it
/// did not fail: it continues from its checkpoint at the next start without counting against
/// `max_attempts`, and `on_restart` does not apply to it).
pub fn release(connection: &Connection, run_id: RunId) -> Result<bool, StorageError> {
    let changed = connection
        .prepare_cached(
            "UPDATE runs SET status = 'pending', attempts = max(attempts - 1, 0)
             WHERE run_id = ? AND status = 'running'",
        )?
        .execute([run_id])?;
    Ok(changed > 0)
}

/// Deletes the run (its checkpoints and writes go by cascade); with `in_flight_only`, only if
/// pending or running. Returns whether a row was deleted.
pub fn delete(
    connection: &Connection,
    thread_id: ThreadId,
    run_id: RunId,
    in_flight_only: bool,
) -> Result<bool, StorageError> {
    let deleted = connection
        .prepare_cached(
            "DELETE FROM runs WHERE run_id = ? AND thread_id = ?
             AND (NOT ? OR status IN ('pending', 'running'))",
        )?
        .execute(rusqlite::params![run_id, thread_id, in_flight_only])?;
    Ok(deleted > 0)
}
