//! Opening connections: the writer sets WAL, `synchronous=NORMAL` and the size cap
//! (`max_page_count`, so a write past it fails with `SQLITE_FULL` like a full disk); every
//! connection turns on foreign keys (rollback relies on their cascades) and a busy timeout.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::storage::StorageError;

/// Opens the read-write connection, creating the file and its directory if needed.
/// `max_size_bytes` caps the database file (`None`: only the disk limits it).
pub fn open_writer(
    path: &Path,
    busy_timeout: Duration,
    max_size_bytes: Option<u64>,
) -> Result<Connection, StorageError> {
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
    if let Some(max_size_bytes) = max_size_bytes {
        cap_size(&connection, path, max_size_bytes)?;
    }
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Sets `max_page_count` so the file cannot grow past `max_size_bytes`. SQLite never sets it
/// below the current size, so a file already past the cap stays as it is and takes no new pages.
fn cap_size(connection: &Connection, path: &Path, max_size_bytes: u64) -> Result<(), StorageError> {
    let page_size: u64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    let wanted_pages = (max_size_bytes / page_size.max(1)).max(1);
    let max_pages: u64 = connection.query_row(
        &format!("PRAGMA max_page_count = {wanted_pages}"),
        [],
        |row| row.get(0),
    )?;
    if max_pages > wanted_pages {
        log::warn!(
            "database is already larger than database.max_size_mb; it may not grow path={} size_bytes={}",
            path.display(),
            max_pages * page_size
        );
    }
    log::info!(
        "database size capped path={} max_size_bytes={max_size_bytes} max_pages={max_pages} page_size={page_size}",
        path.display()
    );
    Ok(())
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
