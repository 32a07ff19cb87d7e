//! Conformance checks of threads: create, patch, copy and delete; search and count with their
//! filters, orders and pages; the threads of an assistant, those in flight, and settling the
//! stranded ones.

use std::sync::Arc;

use serde_json::{json, Value};

use super::support::{
    assert_fenced, assert_sorted_and_paged, conflict, end_while_others_wait, ended_run, every,
    every_run, failed_run, finish, inserted, matching_threads, new_thread, not_found, object,
    pause, pending_run, run, runs_of_every_status, save_step, sorted, started_run, thread_count,
    thread_of, thread_page, update, wire,
};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{AssistantId, ThreadId};
use crate::domain::multitask::CancelAction;
use crate::domain::query::{ThreadFilter, ThreadSortBy};
use crate::domain::run::{Run, RunStatus};
use crate::domain::thread::{IfExists, ThreadStatus};
use crate::domain::{AlreadyExists, JsonMap, NotFound};
use crate::storage::Store;

/// A thread filter on metadata only.
fn metadata_filter(metadata: Value) -> ThreadFilter {
    ThreadFilter {
        metadata: Some(object(metadata)),
        ..ThreadFilter::default()
    }
}

/// A new thread is idle with no state; its id taken, a create is a `Conflict`, or with
/// `do_nothing` answers the existing thread unchanged.
pub async fn create_thread_conflicts_unless_asked_to_do_nothing(store: Arc<dyn Store>) {
    let thread_id = ThreadId::generate();
    assert_eq!(
        not_found(store.get_thread(thread_id).await),
        NotFound::Thread(thread_id)
    );
    let metadata = object(json!({ "owner": "ann" }));
    let created = store
        .create_thread(thread_id, metadata.clone(), IfExists::Raise)
        .await
        .expect("created");
    assert_eq!(created.thread_id, thread_id);
    assert_eq!(created.metadata, metadata);
    assert_eq!(created.status, ThreadStatus::Idle);
    assert_eq!(created.config, JsonMap::new());
    assert_eq!(created.values, None);
    assert_eq!(created.interrupts, JsonMap::new());
    assert_eq!(created.error, None);
    assert_eq!(created.updated_at, created.created_at);
    assert_eq!(created.state_updated_at, created.created_at);
    assert_eq!(wire(&thread_of(&*store, thread_id).await), wire(&created));

    let other = object(json!({ "owner": "bob" }));
    assert_eq!(
        conflict(
            store
                .create_thread(thread_id, other.clone(), IfExists::Raise)
                .await
        ),
        AlreadyExists::Thread(thread_id)
    );
    let existing = store
        .create_thread(thread_id, other, IfExists::DoNothing)
        .await
        .expect("the existing thread");
    assert_eq!(wire(&existing), wire(&created));
    assert_eq!(wire(&thread_of(&*store, thread_id).await), wire(&created));
    assert_eq!(thread_count(&*store).await, 1);
}

/// A patch merges top-level keys (a nested object is replaced whole) and moves `updated_at`
/// only; an unknown thread is `NotFound`.
pub async fn patch_thread_merges_metadata_shallowly(store: Arc<dyn Store>) {
    let thread_id = new_thread(
        &*store,
        json!({ "kept": 1, "nested": { "x": 1 }, "over": "old" }),
    )
    .await;
    let before = thread_of(&*store, thread_id).await;
    pause().await;
    let patched = store
        .patch_thread(
            thread_id,
            object(json!({ "nested": { "y": 2 }, "over": "new", "added": true })),
        )
        .await
        .expect("patched");
    let merged = object(json!({ "kept": 1, "nested": { "y": 2 }, "over": "new", "added": true }));
    assert_eq!(patched.metadata, merged);
    assert!(patched.updated_at > before.updated_at);
    assert_eq!(patched.created_at, before.created_at);
    assert_eq!(patched.state_updated_at, before.state_updated_at);
    assert_eq!(patched.status, ThreadStatus::Idle);
    assert_eq!(wire(&thread_of(&*store, thread_id).await), wire(&patched));

    let unchanged = store
        .patch_thread(thread_id, JsonMap::new())
        .await
        .expect("an empty patch");
    assert_eq!(unchanged.metadata, merged);

    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(store.patch_thread(unknown, JsonMap::new()).await),
        NotFound::Thread(unknown)
    );
}

/// A copy has the source's metadata and every checkpoint of every namespace, detached from the
/// runs that wrote them (which are not copied) and naming the copy in their metadata; it
/// outlives its source. An unknown source is `NotFound` and creates nothing.
pub async fn copy_thread_copies_the_checkpoints_but_not_the_runs(store: Arc<dyn Store>) {
    let source = new_thread(&*store, json!({ "owner": "ann" })).await;
    ended_run(&*store, source, json!({ "n": 1 }), RunStatus::Success).await;
    let subgraph = Checkpoint {
        checkpoint_ns: "inner:task".into(),
        ..update(source, json!({ "sub": 1 }))
    };
    store.update_state(subgraph).await.expect("subgraph state");
    store
        .update_state(update(source, json!({ "n": 2 })))
        .await
        .expect("state updated");

    let to = ThreadId::generate();
    let copied = store.copy_thread(source, to).await.expect("copied");
    assert_eq!(copied.thread_id, to);
    assert_eq!(copied.metadata, thread_of(&*store, source).await.metadata);
    assert_eq!(copied.status, ThreadStatus::Idle);
    assert_eq!(copied.values, Some(json!({ "n": 2 })));
    assert_eq!(wire(&thread_of(&*store, to).await), wire(&copied));
    assert_eq!(
        store.list_runs(to, None, 10, 0).await.expect("runs"),
        vec![]
    );

    let mut expected = Vec::new();
    for namespace in ["", "inner:task"] {
        let originals = store
            .history(source, every(namespace))
            .await
            .expect("history");
        let copies: Vec<Checkpoint> = originals
            .into_iter()
            .map(|original| {
                let mut metadata = original.metadata.clone();
                metadata.insert("thread_id".into(), json!(to));
                Checkpoint {
                    thread_id: to,
                    run_id: None,
                    metadata,
                    ..original
                }
            })
            .collect();
        assert_eq!(
            store.history(to, every(namespace)).await.expect("history"),
            copies
        );
        expected.push(copies);
    }
    assert_eq!(expected.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);

    store.delete_thread(source).await.expect("source deleted");
    for (namespace, copies) in ["", "inner:task"].into_iter().zip(expected) {
        assert_eq!(
            store.history(to, every(namespace)).await.expect("history"),
            copies
        );
    }

    let (unknown, target) = (ThreadId::generate(), ThreadId::generate());
    assert_eq!(
        not_found(store.copy_thread(unknown, target).await),
        NotFound::Thread(unknown)
    );
    assert_eq!(
        not_found(store.get_thread(target).await),
        NotFound::Thread(target)
    );
}

/// Deleting a thread deletes its runs (in flight or not) and checkpoints; its runs can no
/// longer write; other threads are untouched; an unknown thread is `NotFound`.
pub async fn delete_thread_takes_its_runs_and_checkpoints_with_it(store: Arc<dyn Store>) {
    let thread_id = new_thread(&*store, json!({})).await;
    let done = ended_run(&*store, thread_id, json!({ "n": 1 }), RunStatus::Success).await;
    let running = started_run(&*store, thread_id).await;
    let other = new_thread(&*store, json!({})).await;
    let kept = pending_run(&*store, other).await;

    store.delete_thread(thread_id).await.expect("deleted");
    assert_eq!(
        not_found(store.get_thread(thread_id).await),
        NotFound::Thread(thread_id)
    );
    for gone in [&done, &running] {
        assert_eq!(
            not_found(store.get_run(thread_id, gone.run_id).await),
            NotFound::Run(gone.run_id)
        );
        assert!(store
            .run_result(thread_id, gone.run_id)
            .await
            .expect("read")
            .is_none());
    }
    assert_eq!(
        not_found(store.list_runs(thread_id, None, 10, 0).await),
        NotFound::Thread(thread_id)
    );
    assert_eq!(
        not_found(store.history(thread_id, every("")).await),
        NotFound::Thread(thread_id)
    );
    assert_eq!(
        not_found(store.head(thread_id).await),
        NotFound::Thread(thread_id)
    );
    assert_eq!(
        store.in_flight_runs(thread_id).await.expect("in flight"),
        vec![]
    );
    assert_fenced(save_step(&*store, &running, 0, 1).await);
    assert_eq!(every_run(&*store).await, vec![(other, kept.run_id)]);
    assert_eq!(
        store.threads_in_flight().await.expect("threads"),
        vec![other]
    );
    assert_eq!(
        not_found(store.delete_thread(thread_id).await),
        NotFound::Thread(thread_id)
    );
    assert_eq!(thread_count(&*store).await, 1);
}

/// Four threads `[a, b, c, d]`, created in that order with ids that sort `b, d, a, c`, then
/// made to differ, a pause between writes: `c` patched (`color: red`); `b` given the values
/// `{topic: cats}` with a node next (interrupted); `d` a pending run (busy); `a` a run that
/// failed (error). Metadata: `a` and `b` have `group: x`, `c` has `group: y`; `a` and `d` name
/// the `agent` graph from their runs.
async fn four_threads(store: &dyn Store) -> [ThreadId; 4] {
    let ids = sorted((0..4).map(|_| ThreadId::generate()).collect());
    let [b, d, a, c] = [ids[0], ids[1], ids[2], ids[3]];
    let metadata = [
        json!({ "group": "x" }),
        json!({ "group": "x" }),
        json!({ "group": "y" }),
        json!({}),
    ];
    for (thread_id, metadata) in [a, b, c, d].into_iter().zip(metadata) {
        store
            .create_thread(thread_id, object(metadata), IfExists::Raise)
            .await
            .expect("thread created");
        pause().await;
    }
    store
        .patch_thread(c, object(json!({ "color": "red" })))
        .await
        .expect("patched");
    pause().await;
    let state = Checkpoint {
        next: vec!["node".into()],
        ..update(b, json!({ "topic": "cats" }))
    };
    store.update_state(state).await.expect("state updated");
    pause().await;
    pending_run(store, d).await;
    pause().await;
    failed_run(store, a).await;
    [a, b, c, d]
}

/// Each filter of thread search (and count) selects exactly its threads; filters combine.
pub async fn search_threads_filters_by_ids_metadata_values_and_status(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let [a, b, c, d] = four_threads(store).await;
    let all = ThreadFilter::default();
    assert_eq!(matching_threads(store, all).await, sorted(vec![a, b, c, d]));
    let ids = ThreadFilter {
        ids: Some(vec![a, c, ThreadId::generate()]),
        ..ThreadFilter::default()
    };
    assert_eq!(matching_threads(store, ids).await, sorted(vec![a, c]));
    let cases = [
        (json!({ "group": "x" }), sorted(vec![a, b])),
        (json!({ "graph_id": "agent" }), sorted(vec![a, d])),
        (json!({ "group": "x", "graph_id": "agent" }), vec![a]),
        (json!({ "color": "red" }), vec![c]),
        (json!({ "group": "z" }), vec![]),
    ];
    for (metadata, expected) in cases {
        assert_eq!(
            matching_threads(store, metadata_filter(metadata.clone())).await,
            expected,
            "metadata {metadata}"
        );
    }
    for (values, expected) in [
        (json!({ "topic": "cats" }), vec![b]),
        (json!({ "topic": "dogs" }), vec![]),
    ] {
        let filter = ThreadFilter {
            values: Some(object(values)),
            ..ThreadFilter::default()
        };
        assert_eq!(matching_threads(store, filter).await, expected);
    }
    let statuses = [
        (ThreadStatus::Busy, d),
        (ThreadStatus::Error, a),
        (ThreadStatus::Idle, c),
        (ThreadStatus::Interrupted, b),
    ];
    for (status, expected) in statuses {
        let filter = ThreadFilter {
            status: Some(status),
            ..ThreadFilter::default()
        };
        assert_eq!(
            matching_threads(store, filter).await,
            vec![expected],
            "{status:?}"
        );
    }
    let combined = ThreadFilter {
        ids: Some(vec![a, b]),
        status: Some(ThreadStatus::Interrupted),
        ..metadata_filter(json!({ "group": "x" }))
    };
    assert_eq!(matching_threads(store, combined).await, vec![b]);
}

/// A metadata filter matches any key a filter may hold (every key but one with NUL, which
/// `check_json_filter` refuses): quotes, backslashes, JSON-path characters, control characters,
/// the empty key.
pub async fn search_threads_matches_keys_with_quotes_backslashes_and_path_characters(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let keys = [
        "say \"hi\"",
        "\"",
        "back\\slash",
        "\\\"",
        "\\u0022",
        "dot.ted[0]",
        "$",
        "line\nbreak",
        "é",
        "",
    ];
    let mut threads = Vec::new();
    for key in keys {
        threads.push(new_thread(store, json!({ key: "here" })).await);
    }
    for (key, thread_id) in keys.iter().zip(threads) {
        assert_eq!(
            matching_threads(store, metadata_filter(json!({ *key: "here" }))).await,
            vec![thread_id],
            "key {key:?}"
        );
        assert_eq!(
            matching_threads(store, metadata_filter(json!({ *key: "elsewhere" }))).await,
            vec![],
            "key {key:?}"
        );
    }
}

/// Thread search sorts by each key in both orders (ties by id, in the same order) and pages.
pub async fn search_threads_sorts_by_every_key_both_ways_and_pages(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let [a, b, c, d] = four_threads(store).await;
    // Statuses sort by their spelling: busy, error, idle, interrupted.
    let expected = vec![
        (ThreadSortBy::CreatedAt, vec![a, b, c, d]),
        (ThreadSortBy::ThreadId, vec![b, d, a, c]),
        (ThreadSortBy::UpdatedAt, vec![c, b, d, a]),
        (ThreadSortBy::StateUpdatedAt, vec![c, d, b, a]),
        (ThreadSortBy::Status, vec![d, a, c, b]),
    ];
    assert_sorted_and_paged(expected, |page| {
        thread_page(store, ThreadFilter::default(), page)
    })
    .await;
}

/// The threads of an assistant are those whose metadata names it, as a run records it (the
/// latest run's assistant wins) or as it was created.
pub async fn threads_of_assistant_are_those_whose_metadata_names_it(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let agent = AssistantId::for_graph("agent");
    let other = AssistantId::for_graph("other");
    let ran = new_thread(store, json!({})).await;
    pending_run(store, ran).await;
    let switched = new_thread(store, json!({})).await;
    inserted(
        store,
        &Run {
            assistant_id: other,
            ..run(switched)
        },
    )
    .await;
    let named = new_thread(store, json!({ "assistant_id": agent })).await;
    new_thread(store, json!({})).await;

    let of = move |assistant_id| async move {
        sorted(
            store
                .threads_of_assistant(assistant_id)
                .await
                .expect("threads"),
        )
    };
    assert_eq!(of(agent).await, sorted(vec![ran, named]));
    assert_eq!(of(other).await, vec![switched]);
    assert_eq!(of(AssistantId::generate()).await, vec![]);

    pending_run(store, switched).await;
    assert_eq!(of(agent).await, sorted(vec![ran, switched, named]));
    assert_eq!(of(other).await, vec![]);
}

/// The threads in flight are those with a pending or running run, each once.
pub async fn threads_in_flight_are_those_with_a_pending_or_running_run(store: Arc<dyn Store>) {
    let [pending, running, queued, ..] = runs_of_every_status(&*store).await;
    let in_flight = store.threads_in_flight().await.expect("threads");
    assert_eq!(
        sorted(in_flight),
        sorted(vec![pending.thread_id, running.thread_id])
    );
    store
        .finish_run(finish(&pending, RunStatus::Success, None))
        .await
        .expect("finished");
    store
        .stop_runs(
            running.thread_id,
            CancelAction::Interrupt,
            vec![running.run_id],
            true,
        )
        .await
        .expect("stopped");
    assert_eq!(
        store.threads_in_flight().await.expect("threads"),
        vec![queued.thread_id]
    );
}

/// A busy thread with no run in flight is settled as its head says; one with a run pending or
/// running stays busy; settling again finds none.
pub async fn settle_stranded_threads_settles_busy_threads_with_no_run_in_flight(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let stranded = new_thread(store, json!({})).await;
    let paused = new_thread(store, json!({})).await;
    let state = Checkpoint {
        next: vec!["node".into()],
        ..update(paused, json!({ "n": 1 }))
    };
    store.update_state(state).await.expect("state updated");
    for thread_id in [stranded, paused] {
        let ended = pending_run(store, thread_id).await;
        let status = end_while_others_wait(store, &ended, RunStatus::Success, None).await;
        assert_eq!(status, ThreadStatus::Busy);
    }
    let working = new_thread(store, json!({})).await;
    started_run(store, working).await;
    let waiting = new_thread(store, json!({})).await;
    pending_run(store, waiting).await;

    assert_eq!(store.settle_stranded_threads().await.expect("settled"), 2);
    assert_eq!(thread_of(store, stranded).await.status, ThreadStatus::Idle);
    let paused = thread_of(store, paused).await;
    assert_eq!(paused.status, ThreadStatus::Interrupted);
    assert_eq!(paused.values, Some(json!({ "n": 1 })));
    for busy in [working, waiting] {
        assert_eq!(thread_of(store, busy).await.status, ThreadStatus::Busy);
    }
    assert_eq!(store.settle_stranded_threads().await.expect("settled"), 0);
}
