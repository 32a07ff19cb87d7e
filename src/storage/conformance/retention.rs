//! Conformance checks of retention: a sweep that deletes idle threads or keeps their latest
//! checkpoints, and pruning named threads, with the counts each reports.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use super::support::{
    ended_run, every, every_run, history_ids, matching_threads, new_thread, not_found, now, pause,
    pending_run, root_ids, sorted, task, thread_of, update, wire,
};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::ThreadId;
use crate::domain::query::ThreadFilter;
use crate::domain::run::RunStatus;
use crate::domain::NotFound;
use crate::storage::{PruneAction, PruneCounts, Store};

/// The counts of a sweep or prune: threads deleted, threads pruned, checkpoints deleted.
fn pruned(threads_deleted: u64, threads_pruned: u64, checkpoints_deleted: u64) -> PruneCounts {
    PruneCounts {
        threads_deleted,
        threads_pruned,
        checkpoints_deleted,
    }
}

/// Writes `count` state updates on the thread (values `{n: 1}`, `{n: 2}`, …); returns them.
async fn states(store: &dyn Store, thread_id: ThreadId, count: i64) -> Vec<Checkpoint> {
    let mut written = Vec::new();
    for n in 1..=count {
        let state = update(thread_id, json!({ "n": n }));
        store
            .update_state(state.clone())
            .await
            .expect("state updated");
        written.push(state);
    }
    written
}

/// A sweep that deletes takes every thread last updated before the cutoff with no run in flight,
/// with its runs and checkpoints, and counts them; busy threads and threads updated since stay.
pub async fn sweep_deletes_only_threads_idle_since_before_the_cutoff(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let done = new_thread(store, json!({})).await;
    let ended = ended_run(store, done, json!({ "n": 1 }), RunStatus::Success).await;
    let empty = new_thread(store, json!({})).await;
    let busy = new_thread(store, json!({})).await;
    let working = pending_run(store, busy).await;
    pause().await;
    let cutoff = now();
    pause().await;
    let fresh = new_thread(store, json!({})).await;

    let counts = store
        .sweep(cutoff, PruneAction::Delete)
        .await
        .expect("swept");
    assert_eq!(counts, pruned(2, 0, 2));
    for gone in [done, empty] {
        assert_eq!(
            not_found(store.get_thread(gone).await),
            NotFound::Thread(gone)
        );
    }
    assert_eq!(
        not_found(store.get_run(done, ended.run_id).await),
        NotFound::Run(ended.run_id)
    );
    assert_eq!(
        matching_threads(store, ThreadFilter::default()).await,
        sorted(vec![busy, fresh])
    );
    assert_eq!(every_run(store).await, vec![(busy, working.run_id)]);
    assert_eq!(
        store
            .sweep(cutoff, PruneAction::Delete)
            .await
            .expect("swept"),
        pruned(0, 0, 0)
    );
}

/// A sweep that keeps the latest `n` keeps the newest `n` root checkpoints and the subgraph
/// checkpoints of the head's pending tasks, deletes the rest and leaves the thread itself (its
/// state, status and `updated_at`) as it was; busy and fresh threads are not touched.
pub async fn sweep_keep_latest_prunes_old_checkpoints_but_keeps_the_head_and_the_state(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let kept = new_thread(store, json!({})).await;
    let older = states(store, kept, 2).await;
    let pending = task("inner", vec![]);
    let child_namespace = format!("inner:{}", pending.id);
    let stray_namespace = format!("inner:{}", Uuid::new_v4());
    let child = Checkpoint {
        checkpoint_ns: child_namespace.clone(),
        ..update(kept, json!({ "sub": 1 }))
    };
    let stray = Checkpoint {
        checkpoint_ns: stray_namespace.clone(),
        ..update(kept, json!({ "sub": 0 }))
    };
    let head = Checkpoint {
        next: vec!["inner".into()],
        tasks: vec![pending],
        ..update(kept, json!({ "n": 3 }))
    };
    for written in [&stray, &child, &head] {
        store.update_state(written.clone()).await.expect("updated");
    }
    let busy = new_thread(store, json!({})).await;
    states(store, busy, 3).await;
    pending_run(store, busy).await;
    pause().await;
    let cutoff = now();
    pause().await;
    let fresh = new_thread(store, json!({})).await;
    states(store, fresh, 3).await;
    let before = wire(&thread_of(store, kept).await);

    let counts = store
        .sweep(cutoff, PruneAction::KeepLatest(2))
        .await
        .expect("swept");
    assert_eq!(counts, pruned(0, 1, 2));
    assert_eq!(
        root_ids(store, kept).await,
        vec![head.checkpoint_id, older[1].checkpoint_id]
    );
    assert_eq!(
        history_ids(store, kept, every(&child_namespace)).await,
        vec![child.checkpoint_id]
    );
    assert_eq!(
        history_ids(store, kept, every(&stray_namespace)).await,
        vec![]
    );
    assert_eq!(store.head(kept).await.expect("head"), Some(head));
    assert_eq!(wire(&thread_of(store, kept).await), before);
    assert_eq!(
        wire(&thread_of(store, kept).await)["status"],
        json!("interrupted")
    );
    for untouched in [busy, fresh] {
        assert_eq!(root_ids(store, untouched).await.len(), 3);
    }
}

/// Pruning named threads skips (and does not count) unknown threads and threads with a run in
/// flight, whatever their age; `KeepLatest(0)` still keeps the head, and a thread with nothing
/// to delete is counted as pruned.
pub async fn prune_threads_skips_unknown_and_busy_threads_without_counting_them(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let two = new_thread(store, json!({})).await;
    let written = states(store, two, 2).await;
    let busy = new_thread(store, json!({})).await;
    states(store, busy, 2).await;
    pending_run(store, busy).await;
    let one = new_thread(store, json!({})).await;
    states(store, one, 1).await;
    let unknown = ThreadId::generate();
    let before = wire(&thread_of(store, two).await);

    let counts = store
        .prune_threads(vec![two, unknown, busy, one], PruneAction::KeepLatest(0))
        .await
        .expect("pruned");
    assert_eq!(counts, pruned(0, 2, 1));
    assert_eq!(root_ids(store, two).await, vec![written[1].checkpoint_id]);
    assert_eq!(wire(&thread_of(store, two).await), before);
    assert_eq!(root_ids(store, one).await.len(), 1);
    assert_eq!(root_ids(store, busy).await.len(), 2);

    let counts = store
        .prune_threads(vec![two, unknown, busy], PruneAction::Delete)
        .await
        .expect("pruned");
    assert_eq!(counts, pruned(1, 0, 1));
    assert_eq!(
        not_found(store.get_thread(two).await),
        NotFound::Thread(two)
    );
    assert_eq!(
        matching_threads(store, ThreadFilter::default()).await,
        sorted(vec![busy, one])
    );
    assert_eq!(
        store
            .prune_threads(vec![], PruneAction::Delete)
            .await
            .expect("pruned"),
        pruned(0, 0, 0)
    );
}
