//! Conformance checks of the write-ordering contract: a write is queued when it is called,
//! visible to every read once its `Ok` is seen, and all-or-nothing, whatever else shares its
//! transaction.

use std::sync::Arc;

use serde_json::json;

use super::support::{
    checkpoint, conflict, every_run, finish, insert, new_thread, not_found, object, pending_run,
    root_ids, run, run_status, thread_count, thread_of, update, wire,
};
use crate::domain::ids::ThreadId;
use crate::domain::multitask::CancelAction;
use crate::domain::run::{Run, RunStatus};
use crate::domain::thread::{IfExists, ThreadStatus};
use crate::domain::{AlreadyExists, JsonMap, NotFound};
use crate::storage::{InsertRun, Store};

/// Writes are queued when called: a delete called after a create commits after it, even when
/// the delete is awaited first.
pub async fn a_write_is_queued_when_it_is_called(store: Arc<dyn Store>) {
    let thread_id = ThreadId::generate();
    let created = store.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
    let deleted = store.delete_thread(thread_id);
    deleted.await.expect("the delete runs after the create");
    created.await.expect("the create committed first");
    assert_eq!(
        not_found(store.get_thread(thread_id).await),
        NotFound::Thread(thread_id)
    );
}

/// A write's `Ok` means committed: the read that follows sees it, round after round.
pub async fn a_write_is_visible_to_the_read_that_follows_its_ok(store: Arc<dyn Store>) {
    let thread_id = new_thread(&*store, json!({})).await;
    for round in 0..10 {
        store
            .patch_thread(thread_id, object(json!({ "round": round })))
            .await
            .expect("patched");
        assert_eq!(
            thread_of(&*store, thread_id).await.metadata["round"],
            json!(round)
        );
        let next = pending_run(&*store, thread_id).await;
        assert_eq!(
            thread_of(&*store, thread_id).await.status,
            ThreadStatus::Busy
        );
        assert_eq!(run_status(&*store, &next).await, RunStatus::Pending);
        let status = store
            .finish_run(finish(&next, RunStatus::Success, None))
            .await
            .expect("finished");
        assert_eq!(status, ThreadStatus::Idle);
        assert_eq!(run_status(&*store, &next).await, RunStatus::Success);
        assert_eq!(
            thread_of(&*store, thread_id).await.status,
            ThreadStatus::Idle
        );
        let state = update(thread_id, json!({ "round": round }));
        store.update_state(state.clone()).await.expect("updated");
        assert_eq!(store.head(thread_id).await.expect("head"), Some(state));
    }
    assert_eq!(
        store
            .list_runs(thread_id, None, 100, 0)
            .await
            .expect("runs")
            .len(),
        10
    );
}

/// One job's failure does not fail the jobs that share its transaction.
pub async fn a_failed_job_in_a_batch_leaves_the_others_committed(store: Arc<dyn Store>) {
    let thread_id = ThreadId::generate();
    // Queued back to back, these are likely to share one transaction.
    let created = store.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
    let duplicate = store.create_thread(thread_id, JsonMap::new(), IfExists::Raise);
    let other = store.create_thread(ThreadId::generate(), JsonMap::new(), IfExists::Raise);
    assert!(created.await.is_ok());
    assert_eq!(conflict(duplicate.await), AlreadyExists::Thread(thread_id));
    let other = other.await.expect("the other thread is created");
    assert!(store.get_thread(other.thread_id).await.is_ok());
    assert_eq!(thread_count(&*store).await, 2);
}

/// A write that fails stores nothing of itself, not even the parts that ran before the failure
/// (a thread it created, runs it stopped, a run it started).
pub async fn a_failed_write_leaves_nothing_behind(store: Arc<dyn Store>) {
    // A run on a missing thread, not asked to create it: no thread and no run.
    let missing = ThreadId::generate();
    let orphan = run(missing);
    assert_eq!(
        not_found(store.insert_run(insert(&orphan, None)).await),
        NotFound::ThreadOrAssistant
    );
    assert_eq!(
        not_found(store.get_thread(missing).await),
        NotFound::Thread(missing)
    );
    assert_eq!(thread_count(&*store).await, 0);
    assert_eq!(every_run(&*store).await, vec![]);

    // A run whose id is taken fails after creating its thread: the thread goes with it.
    let thread_id = new_thread(&*store, json!({})).await;
    let first = pending_run(&*store, thread_id).await;
    let taken = Run {
        run_id: first.run_id,
        ..run(missing)
    };
    store
        .insert_run(InsertRun {
            create_thread_metadata: Some(object(json!({ "created": true }))),
            ..insert(&taken, None)
        })
        .await
        .expect_err("the run id is taken");
    assert_eq!(
        not_found(store.get_thread(missing).await),
        NotFound::Thread(missing)
    );

    // The same on the first run's thread, after interrupting it: the stop is undone too.
    let before = wire(&thread_of(&*store, thread_id).await);
    let again = Run {
        run_id: first.run_id,
        ..run(thread_id)
    };
    store
        .insert_run(insert(
            &again,
            Some((CancelAction::Interrupt, vec![first.run_id])),
        ))
        .await
        .expect_err("the run id is taken");
    assert_eq!(run_status(&*store, &first).await, RunStatus::Pending);
    assert_eq!(wire(&thread_of(&*store, thread_id).await), before);

    // A start whose checkpoints cannot all be written leaves the run pending, unstarted.
    let start = checkpoint(thread_id, first.run_id, -1);
    store
        .start_run(first.run_id, 1, vec![start.clone(), start.clone()], false)
        .await
        .expect_err("the same checkpoint twice");
    assert_eq!(
        store.in_flight_runs(thread_id).await.expect("in flight"),
        vec![(first.clone(), 0)]
    );
    assert_eq!(root_ids(&*store, thread_id).await, vec![]);
    store
        .start_run(first.run_id, 1, vec![start.clone()], false)
        .await
        .expect("started");
    assert_eq!(
        root_ids(&*store, thread_id).await,
        vec![start.checkpoint_id]
    );

    // A create that conflicts changes nothing of the existing thread.
    let before = wire(&thread_of(&*store, thread_id).await);
    conflict(
        store
            .create_thread(thread_id, object(json!({ "new": 1 })), IfExists::Raise)
            .await,
    );
    assert_eq!(wire(&thread_of(&*store, thread_id).await), before);
}
