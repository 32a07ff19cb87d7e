//! SQL for the `assistants` and `assistant_versions` tables.

use rusqlite::types::Value as SqlValue;
use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::codec::{json_column, to_json};
use super::filter::{order_sql, Where};
use crate::domain::assistant::{Assistant, AssistantVersion};
use crate::domain::ids::AssistantId;
use crate::domain::query::{AssistantFilter, AssistantSortBy, Page};
use crate::domain::time::Timestamp;
use crate::domain::JsonMap;
use crate::storage::StorageError;

const COLUMNS: &str =
    "assistant_id, graph_id, config, context, metadata, name, created_at, updated_at, version, description";

fn map_row(row: &Row<'_>) -> rusqlite::Result<Assistant> {
    Ok(map_version(row)?.into_assistant(row.get("updated_at")?))
}

fn map_version(row: &Row<'_>) -> rusqlite::Result<AssistantVersion> {
    Ok(AssistantVersion {
        assistant_id: row.get("assistant_id")?,
        graph_id: row.get("graph_id")?,
        config: json_column(row, "config")?,
        context: json_column(row, "context")?,
        metadata: json_column(row, "metadata")?,
        name: row.get("name")?,
        created_at: row.get("created_at")?,
        version: row.get("version")?,
        description: row.get("description")?,
    })
}

/// The assistant, if it exists.
pub fn get(
    connection: &Connection,
    assistant_id: AssistantId,
) -> Result<Option<Assistant>, StorageError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM assistants WHERE assistant_id = ?"
    ))?;
    Ok(statement.query_row([assistant_id], map_row).optional()?)
}

/// Writes a version row and points the assistant at it (inserting the assistant if new).
pub fn put_version(
    connection: &Connection,
    version: &AssistantVersion,
    updated_at: Timestamp,
) -> Result<(), StorageError> {
    let params = named_params! {
        ":assistant_id": version.assistant_id,
        ":version": version.version,
        ":graph_id": version.graph_id,
        ":name": version.name,
        ":description": version.description,
        ":config": to_json(&version.config)?,
        ":context": to_json(&version.context)?,
        ":metadata": to_json(&version.metadata)?,
        ":created_at": version.created_at,
        ":updated_at": updated_at,
    };
    connection
        .prepare_cached(
            "INSERT INTO assistants (assistant_id, graph_id, name, description, config, context, metadata,
                version, created_at, updated_at)
             VALUES (:assistant_id, :graph_id, :name, :description, :config, :context, :metadata, :version,
                :created_at, :updated_at)
             ON CONFLICT (assistant_id) DO UPDATE SET graph_id = excluded.graph_id, name = excluded.name,
                description = excluded.description, config = excluded.config, context = excluded.context,
                metadata = excluded.metadata, version = excluded.version, updated_at = excluded.updated_at",
        )?
        .execute(params)?;
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO assistant_versions (assistant_id, version, graph_id, name, description, config,
                context, metadata, created_at)
             VALUES (:assistant_id, :version, :graph_id, :name, :description, :config, :context, :metadata,
                :created_at)",
        )?
        .execute(named_params! {
            ":assistant_id": version.assistant_id,
            ":version": version.version,
            ":graph_id": version.graph_id,
            ":name": version.name,
            ":description": version.description,
            ":config": to_json(&version.config)?,
            ":context": to_json(&version.context)?,
            ":metadata": to_json(&version.metadata)?,
            ":created_at": version.created_at,
        })?;
    Ok(())
}

/// The highest version number written for the assistant.
pub fn max_version(
    connection: &Connection,
    assistant_id: AssistantId,
) -> Result<i64, StorageError> {
    Ok(connection.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM assistant_versions WHERE assistant_id = ?",
        [assistant_id],
        |row| row.get(0),
    )?)
}

/// One stored version.
pub fn version(
    connection: &Connection,
    assistant_id: AssistantId,
    version: i64,
) -> Result<Option<AssistantVersion>, StorageError> {
    let mut statement = connection.prepare_cached(
        "SELECT * FROM assistant_versions WHERE assistant_id = ? AND version = ?",
    )?;
    Ok(statement
        .query_row(rusqlite::params![assistant_id, version], map_version)
        .optional()?)
}

/// Versions of an assistant, newest first.
pub fn versions(
    connection: &Connection,
    assistant_id: AssistantId,
    metadata: Option<&JsonMap>,
    limit: i64,
    offset: i64,
) -> Result<Vec<AssistantVersion>, StorageError> {
    let mut clause = Where::default();
    clause.push(
        "assistant_id = ?",
        [SqlValue::Text(assistant_id.to_string())],
    );
    if let Some(metadata) = metadata {
        clause.json_matches("metadata", metadata);
    }
    clause.page(
        connection,
        "SELECT * FROM assistant_versions",
        "version DESC",
        limit,
        offset,
        map_version,
    )
}

/// Deletes an assistant and its versions; false if it did not exist.
pub fn delete(connection: &Connection, assistant_id: AssistantId) -> Result<bool, StorageError> {
    Ok(connection.execute(
        "DELETE FROM assistants WHERE assistant_id = ?",
        [assistant_id],
    )? > 0)
}

fn filter_clause(filter: &AssistantFilter) -> Where {
    let mut clause = Where::default();
    if let Some(metadata) = &filter.metadata {
        clause.json_matches("metadata", metadata);
    }
    if let Some(graph_id) = &filter.graph_id {
        clause.push("graph_id = ?", [SqlValue::Text(graph_id.clone())]);
    }
    if let Some(name) = &filter.name {
        clause.push(
            "instr(lower(name), lower(?)) > 0",
            [SqlValue::Text(name.clone())],
        );
    }
    clause
}

fn sort_column(sort_by: AssistantSortBy) -> &'static str {
    match sort_by {
        AssistantSortBy::AssistantId => "assistant_id",
        AssistantSortBy::GraphId => "graph_id",
        AssistantSortBy::Name => "name",
        AssistantSortBy::CreatedAt => "created_at",
        AssistantSortBy::UpdatedAt => "updated_at",
    }
}

/// A page of assistants.
pub fn search(
    connection: &Connection,
    filter: &AssistantFilter,
    page: Page<AssistantSortBy>,
) -> Result<Vec<Assistant>, StorageError> {
    let order = order_sql(page.order);
    filter_clause(filter).page(
        connection,
        &format!("SELECT {COLUMNS} FROM assistants"),
        &format!(
            "{} {order}, assistant_id {order}",
            sort_column(page.sort_by)
        ),
        page.limit,
        page.offset,
        map_row,
    )
}

/// How many assistants match.
pub fn count(connection: &Connection, filter: &AssistantFilter) -> Result<i64, StorageError> {
    filter_clause(filter).count(connection, "assistants")
}
