//! SQL of retention: finding idle threads (on a reader) and deleting or pruning them (on the
//! writer, a bounded batch per job). Each job checks again, inside its own transaction, that a
//! thread has no run pending or running, so it can never race a run being inserted: the writer
//! serialises both. Pruning keeps the head and never touches `updated_at`.

use rusqlite::{named_params, Connection};

use crate::domain::ids::ThreadId;
use crate::domain::time::Timestamp;
use crate::storage::{PruneAction, PruneCounts, StorageError};

/// Most threads one write job (one transaction savepoint) deletes or prunes, so a sweep never
/// holds the writer for long; other jobs queue between batches.
pub const BATCH_THREADS: usize = 500;

/// Where a scan of idle threads resumes: the last `(updated_at, thread_id)` it returned.
pub type ScanCursor = (Timestamp, ThreadId);

/// Up to `limit` threads last updated before `cutoff`, after `after`, in `(updated_at,
/// thread_id)` order, that have no run in flight and (for `KeepLatest`) still have something
/// to prune. Runs on a reader: the writer checks each thread again before it acts.
pub fn idle_threads(
    connection: &Connection,
    cutoff: Timestamp,
    after: Option<ScanCursor>,
    action: PruneAction,
    limit: usize,
) -> Result<Vec<ScanCursor>, StorageError> {
    // A pruned thread keeps its old `updated_at`, so it stays idle; this filter is what keeps
    // it from going to the writer again at every sweep (two index probes per thread here).
    let (delete, keep) = match action {
        PruneAction::Delete => (true, 0),
        PruneAction::KeepLatest(keep) => (false, keep.max(1)),
    };
    let (after_updated_at, after_thread_id) = match after {
        Some((updated_at, thread_id)) => (updated_at.to_string(), thread_id.to_string()),
        None => (String::new(), String::new()),
    };
    let mut statement = connection.prepare_cached(
        "SELECT updated_at, thread_id FROM threads AS t
         WHERE updated_at < :cutoff
           AND (updated_at, thread_id) > (:after_updated_at, :after_thread_id)
           AND NOT EXISTS (SELECT 1 FROM runs AS r
                           WHERE r.thread_id = t.thread_id AND r.status IN ('pending', 'running'))
           AND (:delete
                OR EXISTS (SELECT 1 FROM checkpoints AS c
                           WHERE c.thread_id = t.thread_id AND c.checkpoint_ns = ''
                           LIMIT 1 OFFSET :keep)
                OR EXISTS (SELECT 1 FROM checkpoints AS c
                           WHERE c.thread_id = t.thread_id AND c.checkpoint_ns > ''))
         ORDER BY updated_at, thread_id
         LIMIT :limit",
    )?;
    let rows = statement.query_map(
        named_params! {
            ":cutoff": cutoff,
            ":after_updated_at": after_updated_at,
            ":after_thread_id": after_thread_id,
            ":delete": delete,
            ":keep": keep,
            ":limit": limit as i64,
        },
        |row| Ok((row.get("updated_at")?, row.get("thread_id")?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes or prunes each of `thread_ids` that exists, has no run pending or running, and (with
/// a `cutoff`) was last updated before it; the others are skipped and not counted. Call inside
/// one write job with at most `BATCH_THREADS` ids.
pub fn prune(
    connection: &Connection,
    thread_ids: &[ThreadId],
    action: PruneAction,
    cutoff: Option<Timestamp>,
) -> Result<PruneCounts, StorageError> {
    let mut counts = PruneCounts::default();
    for &thread_id in thread_ids {
        if !eligible(connection, thread_id, cutoff)? {
            continue;
        }
        match action {
            PruneAction::Delete => {
                counts.checkpoints_deleted += count_checkpoints(connection, thread_id)?;
                super::threads::delete(connection, thread_id)?;
                counts.threads_deleted += 1;
            }
            PruneAction::KeepLatest(keep) => {
                counts.checkpoints_deleted += keep_latest(connection, thread_id, keep.max(1))?;
                counts.threads_pruned += 1;
            }
        }
    }
    Ok(counts)
}

/// Whether the thread exists, has no run in flight and, with a cutoff, is idle since before it.
fn eligible(
    connection: &Connection,
    thread_id: ThreadId,
    cutoff: Option<Timestamp>,
) -> Result<bool, StorageError> {
    let mut statement = connection.prepare_cached(
        "SELECT 1 FROM threads AS t
         WHERE thread_id = :thread_id
           AND (:cutoff IS NULL OR updated_at < :cutoff)
           AND NOT EXISTS (SELECT 1 FROM runs AS r
                           WHERE r.thread_id = t.thread_id AND r.status IN ('pending', 'running'))",
    )?;
    Ok(statement.exists(named_params! {":thread_id": thread_id, ":cutoff": cutoff})?)
}

fn count_checkpoints(connection: &Connection, thread_id: ThreadId) -> Result<u64, StorageError> {
    let count: i64 = connection
        .prepare_cached("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?")?
        .query_row([thread_id], |row| row.get(0))?;
    Ok(count as u64)
}

/// Deletes all but the newest `keep` root checkpoints, then every subgraph checkpoint except
/// those of the kept checkpoints' pending tasks (namespace `node:task_id`, or below it), which
/// belong to a step still to be run. Returns how many checkpoints went.
fn keep_latest(
    connection: &Connection,
    thread_id: ThreadId,
    keep: u32,
) -> Result<u64, StorageError> {
    // `parent_checkpoint_id` is not a foreign key, so the oldest kept checkpoint may name a
    // parent that is gone; the head itself is unchanged, as GET /threads/{t}/state shows it.
    let root = connection
        .prepare_cached(
            "DELETE FROM checkpoints
             WHERE thread_id = :thread_id AND checkpoint_ns = ''
               AND checkpoint_id NOT IN (
                   SELECT checkpoint_id FROM checkpoints
                   WHERE thread_id = :thread_id AND checkpoint_ns = ''
                   ORDER BY checkpoint_id DESC LIMIT :keep)",
        )?
        .execute(named_params! {":thread_id": thread_id, ":keep": keep})?;
    // Runs after the root delete, so only the kept root checkpoints remain to be consulted.
    let subgraphs = connection
        .prepare_cached(
            "DELETE FROM checkpoints AS c
             WHERE c.thread_id = :thread_id AND c.checkpoint_ns > ''
               AND NOT EXISTS (
                   SELECT 1 FROM checkpoints AS kept, json_each(kept.tasks) AS task
                   WHERE kept.thread_id = :thread_id AND kept.checkpoint_ns = ''
                     AND (c.checkpoint_ns = json_extract(task.value, '$.name') || ':'
                                            || json_extract(task.value, '$.id')
                          OR substr(c.checkpoint_ns, 1,
                                    length(json_extract(task.value, '$.name'))
                                    + length(json_extract(task.value, '$.id')) + 2)
                             = json_extract(task.value, '$.name') || ':'
                               || json_extract(task.value, '$.id') || '|'))",
        )?
        .execute(named_params! {":thread_id": thread_id})?;
    Ok((root + subgraphs) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Connection {
        let mut connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch("PRAGMA foreign_keys = ON")
            .unwrap();
        crate::storage::sqlite::migrate::migrate(&mut connection).unwrap();
        connection
    }

    fn thread(connection: &Connection, updated_at: &str) -> ThreadId {
        let thread_id = ThreadId::generate();
        connection
            .execute(
                "INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata,
                 status, config) VALUES (?1, ?2, ?2, ?2, '{}', 'idle', '{}')",
                rusqlite::params![thread_id, updated_at],
            )
            .unwrap();
        thread_id
    }

    fn checkpoint(
        connection: &Connection,
        thread_id: ThreadId,
        namespace: &str,
        id: &str,
        tasks: &str,
    ) {
        connection
            .execute(
                "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, step, source,
                 \"values\", next, tasks, metadata, updated_by, created_at)
                 VALUES (?1, ?2, ?3, 0, 'loop', '{}', '[]', ?4, '{}', '[]', '')",
                rusqlite::params![thread_id, namespace, id, tasks],
            )
            .unwrap();
    }

    fn namespaces(connection: &Connection, thread_id: ThreadId) -> Vec<String> {
        let mut statement = connection
            .prepare(
                "SELECT checkpoint_ns || '/' || checkpoint_id FROM checkpoints WHERE thread_id = ?
                 ORDER BY checkpoint_ns, checkpoint_id",
            )
            .unwrap();
        let rows = statement.query_map([thread_id], |row| row.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    const OLD: &str = "2020-01-01T00:00:00.000000+00:00";

    #[test]
    fn keep_latest_keeps_the_head_and_the_subgraphs_of_its_pending_tasks() {
        let connection = database();
        let thread_id = thread(&connection, OLD);
        let task = "1f0e0000-0000-7000-8000-000000000001";
        checkpoint(&connection, thread_id, "", "a", "[]");
        checkpoint(&connection, thread_id, "", "b", "[]");
        checkpoint(
            &connection,
            thread_id,
            "",
            "c",
            &format!(r#"[{{"id": "{task}", "name": "inner"}}]"#),
        );
        checkpoint(&connection, thread_id, "inner:old-task", "x", "[]");
        checkpoint(&connection, thread_id, &format!("inner:{task}"), "y", "[]");
        checkpoint(
            &connection,
            thread_id,
            &format!("inner:{task}|deeper:t"),
            "z",
            "[]",
        );
        checkpoint(&connection, thread_id, &format!("inner:{task}x"), "w", "[]");

        let counts = prune(&connection, &[thread_id], PruneAction::KeepLatest(1), None).unwrap();

        assert_eq!(
            namespaces(&connection, thread_id),
            [
                "/c".to_owned(),
                format!("inner:{task}/y"),
                format!("inner:{task}|deeper:t/z"),
            ]
        );
        assert_eq!(counts.checkpoints_deleted, 4);
        assert_eq!(counts.threads_pruned, 1);
    }

    #[test]
    fn keep_zero_still_keeps_the_head() {
        let connection = database();
        let thread_id = thread(&connection, OLD);
        checkpoint(&connection, thread_id, "", "a", "[]");
        checkpoint(&connection, thread_id, "", "b", "[]");
        prune(&connection, &[thread_id], PruneAction::KeepLatest(0), None).unwrap();
        assert_eq!(namespaces(&connection, thread_id), ["/b"]);
    }

    #[test]
    fn idle_scan_pages_by_cursor_and_skips_threads_with_nothing_to_prune() {
        let connection = database();
        let cutoff = Timestamp::now();
        let first = thread(&connection, "2020-01-01T00:00:00.000000+00:00");
        let second = thread(&connection, "2020-01-02T00:00:00.000000+00:00");
        let pruned = thread(&connection, "2020-01-03T00:00:00.000000+00:00");
        let fresh = thread(&connection, "2999-01-01T00:00:00.000000+00:00");
        for thread_id in [first, second, fresh] {
            checkpoint(&connection, thread_id, "", "a", "[]");
            checkpoint(&connection, thread_id, "", "b", "[]");
        }
        checkpoint(&connection, pruned, "", "a", "[]");
        let action = PruneAction::KeepLatest(1);

        let page = idle_threads(&connection, cutoff, None, action, 1).unwrap();
        assert_eq!(page.iter().map(|row| row.1).collect::<Vec<_>>(), [first]);
        let page = idle_threads(&connection, cutoff, page.last().copied(), action, 10).unwrap();
        assert_eq!(page.iter().map(|row| row.1).collect::<Vec<_>>(), [second]);
        let all = idle_threads(&connection, cutoff, None, PruneAction::Delete, 10).unwrap();
        assert_eq!(
            all.len(),
            3,
            "every idle thread is a candidate for deletion"
        );
    }
}
