//! SQL for the `checkpoints` table. The head of a thread is its checkpoint with the greatest id
//! in the root namespace.

use rusqlite::types::Value as SqlValue;
use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::codec::{json_column, to_json};
use super::filter::Where;
use crate::domain::checkpoint::{Checkpoint, CheckpointSource, TaskRecord};
use crate::domain::ids::{CheckpointId, RunId, ThreadId};
use crate::domain::query::HistoryQuery;
use crate::domain::JsonMap;
use crate::storage::StorageError;

const COLUMNS: &str =
    "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, step, source, \
                       \"values\", next, tasks, metadata, updated_by, created_at";

fn map_row(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    let source: String = row.get("source")?;
    Ok(Checkpoint {
        thread_id: row.get("thread_id")?,
        checkpoint_ns: row.get("checkpoint_ns")?,
        checkpoint_id: row.get("checkpoint_id")?,
        parent_checkpoint_id: row.get("parent_checkpoint_id")?,
        run_id: row.get("run_id")?,
        step: row.get("step")?,
        source: CheckpointSource::parse(&source).unwrap_or(CheckpointSource::Loop),
        values: json_column(row, "values")?,
        next: json_column(row, "next")?,
        tasks: json_column(row, "tasks")?,
        metadata: json_column(row, "metadata")?,
        updated_by: json_column(row, "updated_by")?,
        created_at: row.get("created_at")?,
    })
}

const INSERT_VALUES: &str =
    ":thread_id, :checkpoint_ns, :checkpoint_id, :parent_checkpoint_id, :run_id, :step, \
                             :source, :values, :next, :tasks, :metadata, :updated_by, :created_at";

fn insert_with(
    connection: &Connection,
    sql: &str,
    checkpoint: &Checkpoint,
) -> Result<usize, StorageError> {
    Ok(connection.prepare_cached(sql)?.execute(named_params! {
        ":thread_id": checkpoint.thread_id,
        ":checkpoint_ns": checkpoint.checkpoint_ns,
        ":checkpoint_id": checkpoint.checkpoint_id,
        ":parent_checkpoint_id": checkpoint.parent_checkpoint_id,
        ":run_id": checkpoint.run_id,
        ":step": checkpoint.step,
        ":source": checkpoint.source.as_str(),
        ":values": to_json(&checkpoint.values)?,
        ":next": to_json(&checkpoint.next)?,
        ":tasks": to_json(&checkpoint.tasks)?,
        ":metadata": to_json(&checkpoint.metadata)?,
        ":updated_by": to_json(&checkpoint.updated_by)?,
        ":created_at": checkpoint.created_at,
    })?)
}

/// Inserts a checkpoint unconditionally (state updates, run start inside its fenced transaction).
pub fn insert(connection: &Connection, checkpoint: &Checkpoint) -> Result<(), StorageError> {
    insert_with(
        connection,
        &format!("INSERT INTO checkpoints ({COLUMNS}) VALUES ({INSERT_VALUES})"),
        checkpoint,
    )?;
    Ok(())
}

/// The thread's latest checkpoint in the root namespace.
pub fn head(
    connection: &Connection,
    thread_id: ThreadId,
) -> Result<Option<Checkpoint>, StorageError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''
         ORDER BY checkpoint_id DESC LIMIT 1"
    ))?;
    Ok(statement.query_row([thread_id], map_row).optional()?)
}

/// One checkpoint by id.
pub fn get(
    connection: &Connection,
    thread_id: ThreadId,
    checkpoint_ns: &str,
    checkpoint_id: CheckpointId,
) -> Result<Option<Checkpoint>, StorageError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
    ))?;
    Ok(statement
        .query_row(
            rusqlite::params![thread_id, checkpoint_ns, checkpoint_id],
            map_row,
        )
        .optional()?)
}

/// The values of the last checkpoint a run wrote.
pub fn last_values_of_run(
    connection: &Connection,
    thread_id: ThreadId,
    run_id: RunId,
) -> Result<Option<(JsonMap, Vec<TaskRecord>)>, StorageError> {
    let mut statement = connection.prepare_cached(
        "SELECT \"values\", tasks FROM checkpoints
         WHERE thread_id = ? AND checkpoint_ns = '' AND run_id = ?
         ORDER BY checkpoint_id DESC LIMIT 1",
    )?;
    Ok(statement
        .query_row(rusqlite::params![thread_id, run_id], |row| {
            Ok((json_column(row, "values")?, json_column(row, "tasks")?))
        })
        .optional()?)
}

/// Checkpoints of a thread, newest first.
pub fn history(
    connection: &Connection,
    thread_id: ThreadId,
    query: &HistoryQuery,
) -> Result<Vec<Checkpoint>, StorageError> {
    let mut clause = Where::default();
    clause.push("thread_id = ?", [SqlValue::Text(thread_id.to_string())]);
    clause.push(
        "checkpoint_ns = ?",
        [SqlValue::Text(query.checkpoint_ns.clone())],
    );
    if let Some(before) = query.before {
        clause.push("checkpoint_id < ?", [SqlValue::Text(before.to_string())]);
    }
    if let Some(checkpoint_id) = query.checkpoint_id {
        clause.push(
            "checkpoint_id = ?",
            [SqlValue::Text(checkpoint_id.to_string())],
        );
    }
    if let Some(metadata) = &query.metadata {
        clause.json_matches("metadata", metadata);
    }
    clause.page(
        connection,
        &format!("SELECT {COLUMNS} FROM checkpoints"),
        "checkpoint_id DESC",
        query.limit,
        0,
        map_row,
    )
}

/// Copies every checkpoint of `from` into `to`, detached from the runs that wrote them.
pub fn copy_thread(
    connection: &Connection,
    from: ThreadId,
    to: ThreadId,
) -> Result<(), StorageError> {
    connection.execute(
        "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, step,
            source, \"values\", next, tasks, metadata, updated_by, created_at)
         SELECT ?2, checkpoint_ns, checkpoint_id, parent_checkpoint_id, NULL, step, source,
            \"values\", next, tasks, json_set(metadata, '$.thread_id', ?2), updated_by, created_at
         FROM checkpoints WHERE thread_id = ?1",
        rusqlite::params![from, to],
    )?;
    Ok(())
}
