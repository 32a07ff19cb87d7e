//! Opening connections: the writer sets WAL and `synchronous=NORMAL`; every connection turns on
//! foreign keys (rollback relies on their cascades) and a busy timeout.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StorageError;

/// Opens the read-write connection, creating the file and its directory if needed.
pub fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StorageError> {
    if let Some(directory) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(directory).map_err(|source| StorageError::Io {
            path: directory.display().to_string(),
            source,
        })?;
    }
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!(
            "database does not support WAL path={} journal_mode={mode}",
            path.display()
        );
    }
    connection.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Opens a read-only connection; call after the writer has created and migrated the file.
pub fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StorageError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    connection.execute_batch("PRAGMA foreign_keys = ON;")?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}
