//! DbWriter: the one thread that owns the only read-write connection.
//! Every write is a job sent to it; jobs run in arrival order. Jobs that queue up while a
//! transaction commits are batched into the next one (group commit), each inside its own
//! savepoint, so each job stays all-or-nothing and its reply is sent only after COMMIT.
//! Closing jobs (a run's terminal status, deletions) run with the size cap lifted, so a full
//! database can still end its runs and free space.
//! It is a plain thread rather than a `SyncArbiter` because batching needs to drain the mailbox.

use std::future::Future;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::storage::{StorageError, Unavailable};

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 256;

type Reply = Box<dyn FnOnce(Option<&StorageError>) + Send>;

/// How a job's work went: `Err` carries why it failed when the cause may pass.
type Outcome = Result<(), Option<Unavailable>>;

trait WriteJob: Send {
    /// Runs the job's SQL; returns how it went and how to deliver its reply once the
    /// transaction's fate (`Some(error)` if it did not commit) is known.
    fn run(self: Box<Self>, connection: &Connection) -> (Outcome, Reply);

    /// Replies with `error` without running the job.
    fn fail(self: Box<Self>, error: &StorageError);

    /// Whether the job may grow the file past the size cap.
    fn uncapped(&self) -> bool;
}

struct Job<F, R> {
    work: F,
    reply: oneshot::Sender<Result<R, StorageError>>,
    uncapped: bool,
}

impl<F, R> WriteJob for Job<F, R>
where
    F: FnOnce(&Connection) -> Result<R, StorageError> + Send,
    R: Send + 'static,
{
    fn run(self: Box<Self>, connection: &Connection) -> (Outcome, Reply) {
        let Job { work, reply, .. } = *self;
        let result = work(connection);
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(error) => Err(error.unavailable()),
        };
        let deliver: Reply = Box::new(move |commit_error| {
            let outcome = match commit_error {
                None => result,
                Some(error) => Err(not_committed(error)),
            };
            // The caller may have gone away (for example a cancelled request); nothing to do.
            let _ = reply.send(outcome);
        });
        (outcome, deliver)
    }

    fn fail(self: Box<Self>, error: &StorageError) {
        let _ = self.reply.send(Err(not_committed(error)));
    }

    fn uncapped(&self) -> bool {
        self.uncapped
    }
}

/// The error a job gets when its transaction did not commit because of `error`; it keeps
/// whether the cause may pass, so the client gets a 503 rather than a 500.
fn not_committed(error: &StorageError) -> StorageError {
    let message = match error {
        StorageError::CommitFailed { message, .. } => message.clone(),
        other => other.to_string(),
    };
    StorageError::CommitFailed {
        message,
        unavailable: error.unavailable(),
    }
}

/// The most pages SQLite allows (`SQLITE_MAX_PAGE_COUNT`; larger settings are clamped to it).
const NO_PAGE_CAP: u64 = 4_294_967_294;

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct DbWriter {
    sender: Sender<Box<dyn WriteJob>>,
}

impl DbWriter {
    /// Starts the writer thread on a migrated connection; its `max_page_count` is the size cap.
    pub fn start(connection: Connection) -> Result<Self, StorageError> {
        let max_pages: u64 = connection.query_row("PRAGMA max_page_count", [], |row| row.get(0))?;
        let (sender, receiver) = crossbeam_channel::unbounded::<Box<dyn WriteJob>>();
        thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || write_loop(connection, max_pages, receiver))
            .map_err(|source| StorageError::Io {
                path: "db-writer thread".into(),
                source,
            })?;
        Ok(Self { sender })
    }

    /// Queues `work` now (so call order is commit order) and returns its committed result.
    pub fn call<F, R>(&self, work: F) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        self.queue(work, false)
    }

    /// `call` for a closing write (a run's terminal status, a deletion): it may grow the file
    /// past the size cap, so a full database can still end its runs and free space. Closing
    /// writes are small and bounded (at most one copy of a thread's state each), so the file
    /// exceeds the cap by little. The disk's own limit still applies.
    pub fn call_uncapped<F, R>(&self, work: F) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        self.queue(work, true)
    }

    fn queue<F, R>(&self, work: F, uncapped: bool) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            work,
            reply,
            uncapped,
        };
        let queued = self.sender.send(Box::new(job)).is_ok();
        async move {
            if !queued {
                return Err(StorageError::WriterGone);
            }
            receiver.await.unwrap_or(Err(StorageError::WriterGone))
        }
    }
}

fn write_loop(connection: Connection, max_pages: u64, receiver: Receiver<Box<dyn WriteJob>>) {
    log::debug!("db writer started");
    let mut leftover: Vec<Box<dyn WriteJob>> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut leftover);
        if batch.is_empty() {
            match receiver.recv() {
                Ok(first) => batch.push(first),
                Err(_) => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        leftover = run_batch(&connection, max_pages, batch);
    }
    log::debug!("db writer stopped");
}

/// Runs a batch in one transaction. When SQLite aborts the transaction part-way, the jobs that
/// ran fail (their writes are gone) and the jobs that had not run yet are returned, to run in
/// the next transaction: one job's failure never fails a job that did not share its fate.
fn run_batch(
    connection: &Connection,
    max_pages: u64,
    batch: Vec<Box<dyn WriteJob>>,
) -> Vec<Box<dyn WriteJob>> {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        let error = StorageError::from(error);
        log_failure("cannot begin a write transaction", batch.len(), &error);
        for job in batch {
            job.fail(&error);
        }
        return Vec::new();
    }
    let mut replies = Vec::with_capacity(batch.len());
    let mut aborted: Option<StorageError> = None;
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        if let Err(error) = connection.execute_batch("SAVEPOINT job") {
            let error = StorageError::from(error);
            job.fail(&error);
            aborted = Some(error);
            break;
        }
        let uncapped = job.uncapped() && max_pages < NO_PAGE_CAP;
        if uncapped {
            set_max_pages(connection, NO_PAGE_CAP);
        }
        let (outcome, reply) = job.run(connection);
        if uncapped {
            // SQLite keeps the cap at the file's size if the job grew it past `max_pages`.
            set_max_pages(connection, max_pages);
        }
        replies.push(reply);
        if connection.is_autocommit() {
            // SQLite rolled the whole transaction back on its own (disk full, I/O error): nothing
            // of this batch was written, so no job that ran in it may report success.
            let unavailable = outcome.err().flatten();
            let cause = match unavailable {
                Some(Unavailable::Full) => "database or disk is full",
                Some(Unavailable::Locked) => "database is locked",
                None => "disk full or I/O error",
            };
            aborted = Some(StorageError::CommitFailed {
                message: format!("the database rolled back the transaction ({cause})"),
                unavailable,
            });
            break;
        }
        let close = if outcome.is_ok() {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(error) = connection.execute_batch(close) {
            aborted = Some(StorageError::from(error));
            break;
        }
    }
    let failure = match aborted {
        Some(error) => Some(error),
        None => connection
            .execute_batch("COMMIT")
            .err()
            .map(StorageError::from),
    };
    if let Some(error) = &failure {
        log_failure("write transaction failed", replies.len(), error);
        if !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
    }
    for reply in replies {
        reply(failure.as_ref());
    }
    jobs.collect()
}

/// Sets `max_page_count`; this only fails if the connection is unusable, which the next
/// statement reports.
fn set_max_pages(connection: &Connection, max_pages: u64) {
    if let Err(error) =
        connection.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |_| {
            Ok(())
        })
    {
        log::error!("cannot set max_page_count={max_pages}: {error:#}");
    }
}

/// A full or locked database is an operating condition (the clients get 503), not a fault.
fn log_failure(what: &str, jobs: usize, error: &StorageError) {
    if error.is_unavailable() {
        log::warn!("{what} jobs={jobs}: {error:#}");
    } else {
        log::error!("{what} jobs={jobs}: {error:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, DbWriter, std::path::PathBuf) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("w.db");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        (directory, DbWriter::start(connection).unwrap(), path)
    }

    fn insert(value: i64) -> impl FnOnce(&Connection) -> Result<(), StorageError> + Send + 'static {
        move |connection| {
            connection.execute("INSERT INTO t (v) VALUES (?)", [value])?;
            Ok(())
        }
    }

    fn rows(path: &std::path::Path) -> Vec<i64> {
        let connection = Connection::open(path).unwrap();
        let mut statement = connection.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let values = statement.query_map([], |row| row.get(0)).unwrap();
        values.collect::<Result<_, _>>().unwrap()
    }

    /// Holds the writer busy inside a job, so that the jobs queued next share one transaction.
    fn hold(
        writer: &DbWriter,
    ) -> (
        std::sync::mpsc::Sender<()>,
        impl std::future::Future<Output = Result<(), StorageError>>,
    ) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (entered, entering) = std::sync::mpsc::channel::<()>();
        let held = writer.call(move |_| {
            entered.send(()).ok();
            released.recv().ok();
            Ok(())
        });
        entering.recv().expect("the writer runs the holding job");
        (release, held)
    }

    #[tokio::test]
    async fn a_failing_job_in_a_batch_is_undone_alone() {
        let (_directory, writer, path) = writer();
        let (release, held) = hold(&writer);
        let first = writer.call(insert(1));
        let duplicate = writer.call(insert(1));
        let third = writer.call(insert(3));
        release.send(()).unwrap();
        held.await.unwrap();
        assert!(first.await.is_ok());
        assert!(duplicate.await.is_err());
        assert!(third.await.is_ok());
        assert_eq!(rows(&path), [1, 3]);
    }

    #[tokio::test]
    async fn when_sqlite_aborts_the_transaction_the_jobs_that_ran_fail_and_the_rest_run_next() {
        let (_directory, writer, path) = writer();
        let (release, held) = hold(&writer);
        let before = writer.call(insert(1));
        // Stands in for SQLite rolling the transaction back on its own (SQLITE_FULL, SQLITE_IOERR).
        let aborting = writer.call(|connection: &Connection| {
            connection.execute_batch("ROLLBACK")?;
            Ok(())
        });
        let after = writer.call(insert(2));
        release.send(()).unwrap();
        held.await.unwrap();
        assert!(
            before.await.is_err(),
            "its write was rolled back with the transaction"
        );
        assert!(aborting.await.is_err());
        assert!(
            after.await.is_ok(),
            "it had not run: it runs in the next transaction"
        );
        assert_eq!(rows(&path), [2]);
        assert!(
            writer.call(insert(5)).await.is_ok(),
            "the writer keeps working"
        );
        assert_eq!(rows(&path), [2, 5]);
    }

    /// A writer whose file is capped at 8 pages, with a table for big rows.
    fn capped_writer() -> (tempfile::TempDir, DbWriter, std::path::PathBuf) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("w.db");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE t (v INTEGER PRIMARY KEY); CREATE TABLE big (blob BLOB);
                 PRAGMA max_page_count = 8;",
            )
            .unwrap();
        (directory, DbWriter::start(connection).unwrap(), path)
    }

    fn insert_big() -> impl FnOnce(&Connection) -> Result<(), StorageError> + Send + 'static {
        |connection| {
            connection.execute("INSERT INTO big (blob) VALUES (zeroblob(100000))", [])?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_full_database_fails_with_a_retryable_error_and_the_jobs_queued_after_still_run() {
        let (_directory, writer, path) = capped_writer();
        let (release, held) = hold(&writer);
        let before = writer.call(insert(1));
        let too_big = writer.call(insert_big());
        let after = writer.call(insert(2));
        release.send(()).unwrap();
        held.await.unwrap();
        let refused = too_big.await.unwrap_err();
        assert_eq!(
            refused.unavailable(),
            Some(Unavailable::Full),
            "{refused:?}"
        );
        // SQLite answers SQLITE_FULL on a one-row insert by rolling back the whole transaction:
        // the job that shared it reports a retryable failure, never a lost success.
        match before.await {
            Ok(()) => assert!(rows(&path).contains(&1)),
            Err(error) => assert_eq!(error.unavailable(), Some(Unavailable::Full), "{error:?}"),
        }
        assert!(after.await.is_ok(), "it runs in the next transaction");
        assert!(rows(&path).contains(&2));
    }

    #[tokio::test]
    async fn a_closing_job_may_pass_the_cap_and_the_cap_holds_again_after_it() {
        let (_directory, writer, path) = capped_writer();
        assert!(writer.call(insert_big()).await.is_err());
        assert!(writer.call_uncapped(insert_big()).await.is_ok());
        let refused = writer.call(insert_big()).await.unwrap_err();
        assert_eq!(
            refused.unavailable(),
            Some(Unavailable::Full),
            "{refused:?}"
        );
        let big_rows: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM big", [], |row| row.get(0))
            .unwrap();
        assert_eq!(big_rows, 1);
    }
}
