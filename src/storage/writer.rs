//! DbWriter: the one thread that owns the only read-write connection.
//! Every write is a job sent to it; jobs run in arrival order. Jobs that queue up while a
//! transaction commits are batched into the next one (group commit), each inside its own
//! savepoint, so each job stays all-or-nothing and its reply is sent only after COMMIT.
//! It is a plain thread rather than a `SyncArbiter` because batching needs to drain the mailbox.

use std::future::Future;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StorageError;

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 256;

type Reply = Box<dyn FnOnce(Option<&StorageError>) + Send>;

trait WriteJob: Send {
    /// Runs the job's SQL; returns whether it succeeded and how to deliver its reply once the
    /// transaction's fate (`Some(error)` if COMMIT failed) is known.
    fn run(self: Box<Self>, connection: &Connection) -> (bool, Reply);

    /// Replies with `error` without running the job.
    fn fail(self: Box<Self>, error: &StorageError);
}

struct Job<F, R> {
    work: F,
    reply: oneshot::Sender<Result<R, StorageError>>,
}

impl<F, R> WriteJob for Job<F, R>
where
    F: FnOnce(&Connection) -> Result<R, StorageError> + Send,
    R: Send + 'static,
{
    fn run(self: Box<Self>, connection: &Connection) -> (bool, Reply) {
        let Job { work, reply } = *self;
        let result = work(connection);
        let succeeded = result.is_ok();
        let deliver: Reply = Box::new(move |commit_error| {
            let outcome = match commit_error {
                None => result,
                Some(error) => Err(StorageError::CommitFailed(error.to_string())),
            };
            // The caller may have gone away (for example a cancelled request); nothing to do.
            let _ = reply.send(outcome);
        });
        (succeeded, deliver)
    }

    fn fail(self: Box<Self>, error: &StorageError) {
        let _ = self
            .reply
            .send(Err(StorageError::CommitFailed(error.to_string())));
    }
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct DbWriter {
    sender: Sender<Box<dyn WriteJob>>,
}

impl DbWriter {
    /// Starts the writer thread on a migrated connection.
    pub fn start(connection: Connection) -> Result<Self, StorageError> {
        let (sender, receiver) = crossbeam_channel::unbounded::<Box<dyn WriteJob>>();
        thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || write_loop(connection, receiver))
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
        let (reply, receiver) = oneshot::channel();
        let queued = self.sender.send(Box::new(Job { work, reply })).is_ok();
        async move {
            if !queued {
                return Err(StorageError::WriterGone);
            }
            receiver.await.unwrap_or(Err(StorageError::WriterGone))
        }
    }
}

fn write_loop(connection: Connection, receiver: Receiver<Box<dyn WriteJob>>) {
    log::debug!("db writer started");
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&connection, batch);
    }
    log::debug!("db writer stopped");
}

fn run_batch(connection: &Connection, batch: Vec<Box<dyn WriteJob>>) {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        let error = StorageError::from(error);
        log::error!("cannot begin a write transaction: {error:#}");
        for job in batch {
            job.fail(&error);
        }
        return;
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
        let (succeeded, reply) = job.run(connection);
        replies.push(reply);
        if connection.is_autocommit() {
            // SQLite rolled the whole transaction back on its own (disk full, I/O error): nothing
            // of this batch was written, so no job of it may report success.
            aborted = Some(StorageError::CommitFailed(
                "the database rolled back the transaction (disk full or I/O error)".into(),
            ));
            break;
        }
        let close = if succeeded {
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
        log::error!("write transaction failed jobs={}: {error:#}", replies.len());
        if !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        for job in jobs {
            job.fail(error);
        }
    }
    for reply in replies {
        reply(failure.as_ref());
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
    async fn when_sqlite_aborts_the_transaction_no_job_of_the_batch_reports_success() {
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
        assert!(after.await.is_err(), "it never ran");
        assert_eq!(rows(&path), Vec::<i64>::new());
        assert!(
            writer.call(insert(5)).await.is_ok(),
            "the writer keeps working"
        );
        assert_eq!(rows(&path), [5]);
    }
}
