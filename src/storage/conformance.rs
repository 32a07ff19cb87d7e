//! The conformance suite of `Store`: what every storage backend must do, written against the
//! trait only, so a second backend runs it unchanged. A backend's tests call
//! `store_conformance_suite!(open)` with an async `open()` that returns a guard (kept alive for
//! the test) and a fresh, empty store; every check becomes one `#[tokio::test]`.

use std::sync::Arc;

use serde_json::json;

use super::{FinishRun, InsertRun, StorageError, Store};
use crate::domain::checkpoint::{Checkpoint, CheckpointSource};
use crate::domain::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use crate::domain::multitask::{CancelAction, MultitaskStrategy};
use crate::domain::query::HistoryQuery;
use crate::domain::run::{Run, RunStatus};
use crate::domain::thread::{IfExists, Thread, ThreadStatus};
use crate::domain::time::Timestamp;
use crate::domain::{JsonMap, NotFound};

/// Generates one `#[tokio::test]` per conformance check, each on a store from `$open`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($open:path) => {
        $crate::store_conformance_suite!(@checks $open;
            a_write_is_queued_when_it_is_called,
            a_failed_job_in_a_batch_leaves_the_others_committed,
            a_resumed_attempt_fences_the_writes_of_the_one_before_and_a_release_gives_it_back,
            rollback_deletes_the_run_and_its_checkpoints_and_fences_its_writes,
            interrupt_keeps_checkpoints_and_fences_later_writes
        );
    };
    (@checks $open:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, store) = $open().await;
                $crate::storage::conformance::$check(store).await;
            }
        )*
    };
}

/// A pending run of the `agent` graph on `thread_id`.
pub fn run(thread_id: ThreadId) -> Run {
    let now = Timestamp::now();
    Run {
        run_id: RunId::generate(),
        thread_id,
        assistant_id: AssistantId::for_graph("agent"),
        graph_id: "agent".into(),
        metadata: JsonMap::new(),
        status: RunStatus::Pending,
        kwargs: serde_json::from_value(json!({
            "input": null, "command": null, "config": {}, "context": {}, "stream_mode": ["values"],
            "interrupt_before": null, "interrupt_after": null, "webhook": null, "feedback_keys": null,
            "temporary": false, "subgraphs": false, "resumable": false, "checkpoint_during": true,
            "durability": "async"
        }))
        .expect("valid run arguments"),
        multitask_strategy: MultitaskStrategy::Enqueue,
        created_at: now,
        updated_at: now,
    }
}

/// A root checkpoint of `run_id` at `step`, with nothing left to run.
pub fn checkpoint(thread_id: ThreadId, run_id: RunId, step: i64) -> Checkpoint {
    Checkpoint {
        thread_id,
        checkpoint_ns: String::new(),
        checkpoint_id: CheckpointId::generate(),
        parent_checkpoint_id: None,
        run_id: Some(run_id),
        step,
        source: CheckpointSource::Loop,
        values: JsonMap::new(),
        next: vec![],
        tasks: vec![],
        metadata: JsonMap::new(),
        created_at: Timestamp::now(),
        updated_by: vec![],
    }
}

fn insert(run: &Run, stop: Option<(CancelAction, Vec<RunId>)>) -> InsertRun {
    InsertRun {
        run: run.clone(),
        create_thread_metadata: None,
        stop,
    }
}

/// How many root checkpoints of the thread `run_id` wrote.
async fn checkpoints_of(store: &dyn Store, thread_id: ThreadId, run_id: RunId) -> usize {
    let query = HistoryQuery {
        limit: 10_000,
        ..HistoryQuery::default()
    };
    store
        .history(thread_id, query)
        .await
        .expect("history of an existing thread")
        .iter()
        .filter(|checkpoint| checkpoint.run_id == Some(run_id))
        .count()
}

/// A store with one thread whose run has started (its input checkpoint written).
async fn one_started_run(store: &dyn Store) -> (Thread, Run) {
    let thread = store
        .create_thread(ThreadId::generate(), JsonMap::new(), IfExists::Raise)
        .await
        .expect("thread created");
    let first = run(thread.thread_id);
    store
        .insert_run(insert(&first, None))
        .await
        .expect("run inserted");
    store
        .start_run(
            first.run_id,
            1,
            vec![checkpoint(thread.thread_id, first.run_id, -1)],
            false,
        )
        .await
        .expect("run started");
    (thread, first)
}

/// Writes are queued when called: a delete called after a create commits after it, even when
/// the delete is awaited first.
pub async fn a_write_is_queued_when_it_is_called(store: Arc<dyn Store>) {
    let thread_id = ThreadId::generate();
    let created = store.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
    let deleted = store.delete_thread(thread_id);
    deleted.await.expect("the delete runs after the create");
    created.await.expect("the create committed first");
    assert!(matches!(
        store.get_thread(thread_id).await,
        Err(StorageError::NotFound(NotFound::Thread(missing))) if missing == thread_id
    ));
}

/// One job's failure does not fail the jobs that share its transaction.
pub async fn a_failed_job_in_a_batch_leaves_the_others_committed(store: Arc<dyn Store>) {
    let thread_id = ThreadId::generate();
    // Queued back to back, these are likely to share one transaction.
    let created = store.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
    let duplicate = store.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
    let other = store.create_thread(ThreadId::generate(), JsonMap::new(), IfExists::Raise);
    assert!(created.await.is_ok());
    assert!(matches!(duplicate.await, Err(StorageError::Conflict(_))));
    let other = other.await.expect("the other thread is created");
    assert!(store.get_thread(other.thread_id).await.is_ok());
    assert_eq!(
        store
            .count_threads(Default::default())
            .await
            .expect("count"),
        2
    );
}

/// A resumed attempt fences the one before it; a release gives the attempt back.
pub async fn a_resumed_attempt_fences_the_writes_of_the_one_before_and_a_release_gives_it_back(
    store: Arc<dyn Store>,
) {
    let (thread, first) = one_started_run(&*store).await;
    // An attempt number other than the next one is refused.
    assert!(matches!(
        store.start_run(first.run_id, 3, vec![], true).await,
        Err(StorageError::Fenced)
    ));
    store
        .start_run(first.run_id, 2, vec![], true)
        .await
        .expect("resumed as attempt 2");
    let stale = store
        .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 1)
        .await;
    assert!(matches!(stale, Err(StorageError::Fenced)), "{stale:?}");
    store
        .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 2)
        .await
        .expect("the current attempt writes");
    // Released (shutdown): pending again with the attempt given back, so it cannot be resumed
    // as a crash orphan, and starting it again is attempt 2 once more.
    store.release_run(first.run_id).await.expect("released");
    assert!(matches!(
        store.start_run(first.run_id, 2, vec![], true).await,
        Err(StorageError::Fenced)
    ));
    store
        .start_run(first.run_id, 2, vec![], false)
        .await
        .expect("started again as attempt 2");
    let stale = store
        .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 1), 1)
        .await;
    assert!(matches!(stale, Err(StorageError::Fenced)), "{stale:?}");
}

/// Rollback deletes the run with its checkpoints in the insert of its replacement, and the
/// rolled-back run can never write again.
pub async fn rollback_deletes_the_run_and_its_checkpoints_and_fences_its_writes(
    store: Arc<dyn Store>,
) {
    let (thread, first) = one_started_run(&*store).await;
    store
        .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 1)
        .await
        .expect("checkpoint saved");
    assert_eq!(
        checkpoints_of(&*store, thread.thread_id, first.run_id).await,
        2
    );

    let second = run(thread.thread_id);
    store
        .insert_run(insert(
            &second,
            Some((CancelAction::Rollback, vec![first.run_id])),
        ))
        .await
        .expect("replacement inserted");

    assert_eq!(
        checkpoints_of(&*store, thread.thread_id, first.run_id).await,
        0
    );
    assert!(matches!(
        store.get_run(thread.thread_id, first.run_id).await,
        Err(StorageError::NotFound(NotFound::Run(_)))
    ));
    let late_write = store
        .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 1), 1)
        .await;
    assert!(
        matches!(late_write, Err(StorageError::Fenced)),
        "{late_write:?}"
    );
    assert_eq!(
        checkpoints_of(&*store, thread.thread_id, first.run_id).await,
        0
    );
    assert_eq!(
        store
            .get_thread(thread.thread_id)
            .await
            .expect("thread")
            .status,
        ThreadStatus::Busy
    );
}

/// Interrupt keeps the run's checkpoints; the run can neither write nor finish afterwards.
pub async fn interrupt_keeps_checkpoints_and_fences_later_writes(store: Arc<dyn Store>) {
    let (thread, first) = one_started_run(&*store).await;
    let second = run(thread.thread_id);
    store
        .insert_run(insert(
            &second,
            Some((CancelAction::Interrupt, vec![first.run_id])),
        ))
        .await
        .expect("replacement inserted");
    let stored = store
        .get_run(thread.thread_id, first.run_id)
        .await
        .expect("run kept");
    assert_eq!(stored.status, RunStatus::Interrupted);
    assert_eq!(
        checkpoints_of(&*store, thread.thread_id, first.run_id).await,
        1
    );
    assert!(matches!(
        store
            .save_checkpoint(checkpoint(thread.thread_id, first.run_id, 0), 1)
            .await,
        Err(StorageError::Fenced)
    ));
    let finish = FinishRun {
        thread_id: thread.thread_id,
        run_id: first.run_id,
        status: RunStatus::Success,
        error: None,
        in_flight_after: false,
    };
    assert!(matches!(
        store.finish_run(finish).await,
        Err(StorageError::Fenced)
    ));
}
