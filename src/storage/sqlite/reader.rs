//! DbReader: a pool of threads, each owning one read-only connection. WAL lets them read while
//! the writer writes; each job runs in its own read transaction, so it sees one snapshot.
//! Connections are opened only after the writer has migrated the database.

use std::future::Future;
use std::path::Path;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::open::open_reader;
use crate::storage::StorageError;

type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the reader pool; cheap to clone.
#[derive(Clone)]
pub struct DbReader {
    sender: Sender<ReadJob>,
}

impl DbReader {
    /// Opens `count` read-only connections and starts one thread for each.
    pub fn start(path: &Path, count: usize, busy_timeout: Duration) -> Result<Self, StorageError> {
        let (sender, receiver) = crossbeam_channel::unbounded::<ReadJob>();
        for index in 0..count.max(1) {
            let connection = open_reader(path, busy_timeout)?;
            let receiver = receiver.clone();
            thread::Builder::new()
                .name(format!("db-reader-{index}"))
                .spawn(move || read_loop(connection, receiver))
                .map_err(|source| StorageError::Io {
                    path: "db-reader thread".into(),
                    source,
                })?;
        }
        Ok(Self { sender })
    }

    /// Runs `work` on the next free reader inside a read transaction.
    pub fn call<F, R>(&self, work: F) -> impl Future<Output = Result<R, StorageError>>
    where
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let job: ReadJob = Box::new(move |connection: &mut Connection| {
            let result = connection
                .transaction()
                .map_err(StorageError::from)
                .and_then(|transaction| work(&transaction));
            let _ = reply.send(result);
        });
        let queued = self.sender.send(job).is_ok();
        async move {
            if !queued {
                return Err(StorageError::ReaderGone);
            }
            receiver.await.unwrap_or(Err(StorageError::ReaderGone))
        }
    }
}

fn read_loop(mut connection: Connection, receiver: Receiver<ReadJob>) {
    while let Ok(job) = receiver.recv() {
        job(&mut connection);
    }
}
