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
    let single = batch.len() == 1;
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        if !single {
            if let Err(error) = connection.execute_batch("SAVEPOINT job") {
                log::error!("cannot open a savepoint: {error:#}");
            }
        }
        let (succeeded, reply) = job.run(connection);
        let ended = match (single, succeeded) {
            (true, _) => Ok(()),
            (false, true) => connection.execute_batch("RELEASE job"),
            (false, false) => connection.execute_batch("ROLLBACK TO job; RELEASE job"),
        };
        if let Err(error) = ended {
            log::error!("cannot close a savepoint: {error:#}");
        }
        replies.push((succeeded, reply));
    }
    // A lone job that failed is rolled back whole; otherwise failed jobs were undone by their
    // savepoint and the rest commits.
    let lone_failure = single && !replies[0].0;
    let commit = if lone_failure {
        connection.execute_batch("ROLLBACK").map(|_| ())
    } else {
        connection.execute_batch("COMMIT")
    };
    let commit_error = match commit {
        Ok(()) => None,
        Err(error) => {
            let error = StorageError::from(error);
            log::error!("write transaction failed jobs={}: {error:#}", replies.len());
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            (!lone_failure).then_some(error)
        }
    };
    for (_, reply) in replies {
        reply(commit_error.as_ref());
    }
}
