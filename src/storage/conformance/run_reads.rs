//! Conformance checks of reading runs: one run on its thread, a run's result, a thread's runs
//! by page and status, the runs in flight with their attempts, and the runs of every thread by
//! status.

use std::sync::Arc;

use serde_json::json;

use super::support::{
    boom, checkpoint, delayed_run, end_while_others_wait, ended_run, finish, in_flight, new_thread,
    not_found, object, pending_run, run, runs_of_every_status, saved, started_run, task,
};
use crate::domain::checkpoint::{Checkpoint, Interrupt};
use crate::domain::ids::{RunId, ThreadId};
use crate::domain::run::{Run, RunStatus};
use crate::domain::NotFound;
use crate::storage::Store;

/// A run is found only on its own thread.
pub async fn get_run_finds_a_run_only_on_its_own_thread(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let mine = pending_run(store, thread_id).await;
    let elsewhere = new_thread(store, json!({})).await;
    assert_eq!(
        store.get_run(thread_id, mine.run_id).await.expect("run"),
        mine
    );
    for other in [elsewhere, ThreadId::generate()] {
        assert_eq!(
            not_found(store.get_run(other, mine.run_id).await),
            NotFound::Run(mine.run_id)
        );
    }
    let unknown = RunId::generate();
    assert_eq!(
        not_found(store.get_run(thread_id, unknown).await),
        NotFound::Run(unknown)
    );
}

/// A run's result has its error and the values and pending interrupts of the last root
/// checkpoint it wrote (not a subgraph's, not another run's); `None` for a run unknown on
/// that thread.
pub async fn run_result_has_the_values_and_interrupts_of_the_runs_last_root_checkpoint(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let paused = started_run(store, thread_id).await;
    saved(store, &paused, json!({ "n": 1 })).await;
    let interrupts = vec![
        Interrupt {
            id: "i1".into(),
            value: json!("name?"),
        },
        Interrupt {
            id: "i2".into(),
            value: json!({ "age": true }),
        },
    ];
    let last = Checkpoint {
        values: object(json!({ "n": 2 })),
        next: vec!["ask".into(), "other".into()],
        tasks: vec![task("ask", interrupts.clone()), task("other", vec![])],
        ..checkpoint(thread_id, paused.run_id, 1)
    };
    store.save_checkpoint(last, 1).await.expect("saved");
    let inner = Checkpoint {
        checkpoint_ns: "ask:task".into(),
        values: object(json!({ "sub": true })),
        ..checkpoint(thread_id, paused.run_id, 0)
    };
    store.save_checkpoint(inner, 1).await.expect("saved");
    store
        .finish_run(finish(&paused, RunStatus::Success, None))
        .await
        .expect("finished");
    let failed = started_run(store, thread_id).await;
    saved(store, &failed, json!({ "n": 3 })).await;
    store
        .finish_run(finish(&failed, RunStatus::Error, Some(boom())))
        .await
        .expect("finished");
    let queued = pending_run(store, thread_id).await;

    let result_of = |run: &Run| store.run_result(thread_id, run.run_id);
    let paused_result = result_of(&paused).await.expect("read").expect("exists");
    assert_eq!(
        paused_result.run,
        store.get_run(thread_id, paused.run_id).await.expect("run")
    );
    assert_eq!(paused_result.run.status, RunStatus::Success);
    assert_eq!(paused_result.error, None);
    assert_eq!(paused_result.values, Some(object(json!({ "n": 2 }))));
    assert_eq!(paused_result.interrupts, interrupts);

    let failed_result = result_of(&failed).await.expect("read").expect("exists");
    assert_eq!(failed_result.run.status, RunStatus::Error);
    assert_eq!(failed_result.error, Some(boom()));
    assert_eq!(failed_result.values, Some(object(json!({ "n": 3 }))));
    assert_eq!(failed_result.interrupts, vec![]);

    let queued_result = result_of(&queued).await.expect("read").expect("exists");
    assert_eq!(queued_result.run, queued);
    assert_eq!(queued_result.error, None);
    assert_eq!(queued_result.values, None);
    assert_eq!(queued_result.interrupts, vec![]);

    assert!(result_of(&run(thread_id)).await.expect("read").is_none());
    let elsewhere = new_thread(store, json!({})).await;
    assert!(store
        .run_result(elsewhere, paused.run_id)
        .await
        .expect("read")
        .is_none());
}

/// A thread's runs list newest first by creation time (which `after_seconds` moves), filter by
/// status and page; an unknown thread is `NotFound(Thread)`.
pub async fn list_runs_pages_newest_first_and_filters_by_status(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let late = delayed_run(store, thread_id).await;
    let early = pending_run(store, thread_id).await;
    let middle = pending_run(store, thread_id).await;
    end_while_others_wait(store, &early, RunStatus::Success, None).await;

    let cases = [
        (None, 10, 0, vec![&late, &middle, &early]),
        (None, 2, 1, vec![&middle, &early]),
        (None, 10, 3, vec![]),
        (Some(RunStatus::Pending), 10, 0, vec![&late, &middle]),
        (Some(RunStatus::Pending), 1, 1, vec![&middle]),
        (Some(RunStatus::Success), 10, 0, vec![&early]),
        (Some(RunStatus::Error), 10, 0, vec![]),
    ];
    for (status, limit, offset, expected) in cases {
        let listed = store
            .list_runs(thread_id, status, limit, offset)
            .await
            .expect("runs");
        let ids: Vec<RunId> = listed.iter().map(|run| run.run_id).collect();
        let expected: Vec<RunId> = expected.iter().map(|run| run.run_id).collect();
        assert_eq!(ids, expected, "{status:?} limit {limit} offset {offset}");
    }
    assert_eq!(
        store.list_runs(thread_id, None, 1, 1).await.expect("runs"),
        vec![middle]
    );
    let quiet = new_thread(store, json!({})).await;
    assert_eq!(
        store.list_runs(quiet, None, 10, 0).await.expect("runs"),
        vec![]
    );
    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(store.list_runs(unknown, None, 10, 0).await),
        NotFound::Thread(unknown)
    );
}

/// A thread's runs in flight come in start order (creation time), each with its attempts so
/// far; ended runs are left out; an unknown thread has none.
pub async fn in_flight_runs_are_in_start_order_with_their_attempts(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let late = delayed_run(store, thread_id).await;
    ended_run(store, thread_id, json!({}), RunStatus::Success).await;
    let early = started_run(store, thread_id).await;
    store
        .start_run(early.run_id, 2, vec![], true)
        .await
        .expect("resumed as attempt 2");
    let middle = pending_run(store, thread_id).await;
    assert_eq!(
        in_flight(store, thread_id).await,
        vec![
            (early.run_id, RunStatus::Running, 2),
            (middle.run_id, RunStatus::Pending, 0),
            (late.run_id, RunStatus::Pending, 0),
        ]
    );
    assert_eq!(
        store.in_flight_runs(thread_id).await.expect("in flight")[1],
        (middle, 0)
    );
    assert_eq!(in_flight(store, ThreadId::generate()).await, vec![]);
}

/// Runs with any of the given statuses, of every thread, oldest first; none for no status.
pub async fn runs_with_status_lists_matching_runs_of_every_thread_oldest_first(
    store: Arc<dyn Store>,
) {
    let all = runs_of_every_status(&*store).await;
    let [pending, running, queued, succeeded, failed, interrupted] = &all;
    use RunStatus::*;
    let cases = [
        (vec![Pending], vec![pending, queued]),
        (vec![Running], vec![running]),
        (vec![Running, Pending], vec![pending, running, queued]),
        (
            vec![Success, Error, Interrupted],
            vec![succeeded, failed, interrupted],
        ),
        (vec![Timeout], vec![]),
        (vec![], vec![]),
        (RunStatus::ALL.to_vec(), all.iter().collect()),
    ];
    for (statuses, expected) in cases {
        let expected: Vec<(ThreadId, RunId)> = expected
            .iter()
            .map(|run| (run.thread_id, run.run_id))
            .collect();
        assert_eq!(
            store
                .runs_with_status(statuses.clone())
                .await
                .expect("runs"),
            expected,
            "{statuses:?}"
        );
    }
}
