//! Schema migrations: the SQL files of `migrations/`, embedded in order and counted in
//! `PRAGMA user_version`. A database newer than this binary is refused.

use rusqlite::{Connection, TransactionBehavior};

use crate::storage::StorageError;

/// Every migration, in order. Append only: never edit, reorder or delete a merged one.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/0001_init.sql"),
    ),
    (
        "0002_run_attempts",
        include_str!("../../../migrations/0002_run_attempts.sql"),
    ),
    (
        "0003_run_graph_id",
        include_str!("../../../migrations/0003_run_graph_id.sql"),
    ),
];

/// Applies the migrations the database lacks, in one transaction.
pub fn migrate(connection: &mut Connection) -> Result<(), StorageError> {
    let found: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StorageError::SchemaTooNew { found, supported });
    }
    if found == supported {
        log::debug!("database schema is current version={found}");
        return Ok(());
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (name, sql) in &MIGRATIONS[found as usize..] {
        transaction.execute_batch(sql)?;
        log::info!("applied migration name={name}");
    }
    transaction.pragma_update(None, "user_version", supported)?;
    transaction.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_list_matches_the_folder() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|(name, _)| format!("{name}.sql"))
            .collect();
        assert_eq!(files, listed);
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_a_newer_schema_is_refused() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        migrate(&mut connection).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        match migrate(&mut connection) {
            Err(error @ StorageError::SchemaTooNew { found: 99, .. }) => {
                let message = error.to_string();
                assert!(message.contains("newer version of Spindle"), "{message}");
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn each_historical_schema_upgrades_to_the_latest() {
        for applied in 1..MIGRATIONS.len() {
            let mut connection = Connection::open_in_memory().unwrap();
            for (_, sql) in &MIGRATIONS[..applied] {
                connection.execute_batch(sql).unwrap();
            }
            connection
                .pragma_update(None, "user_version", applied as i64)
                .unwrap();
            migrate(&mut connection).unwrap();
            let version: i64 = connection
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64, "from version {applied}");
        }
    }
}
