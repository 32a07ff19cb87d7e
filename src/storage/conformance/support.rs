//! Shared fixtures and assertion helpers of the `Store` conformance suite: runs, checkpoints,
//! threads and searches as the checks build them, and the answers they expect (`not_found`,
//! `conflict`, `assert_fenced`, …). What a backend stamps itself (timestamps) is compared in its
//! wire form, at the microsecond precision every backend stores.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::checkpoint::{Checkpoint, CheckpointSource, Interrupt, TaskRecord};
use crate::domain::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use crate::domain::multitask::{CancelAction, MultitaskStrategy};
use crate::domain::query::{HistoryQuery, Page, SortOrder, ThreadFilter, ThreadSortBy};
use crate::domain::run::{Run, RunError, RunStatus};
use crate::domain::thread::{IfExists, Thread, ThreadStatus};
use crate::domain::time::Timestamp;
use crate::domain::{AlreadyExists, JsonMap, NotFound};
use crate::storage::{FinishRun, InsertRun, StorageError, Store, StoreFuture};

/// The current time at the microsecond precision a backend stores, so that what a check
/// writes compares equal to what it reads back.
pub fn now() -> Timestamp {
    Timestamp::parse(&Timestamp::now().to_string()).expect("a timestamp parses its own text")
}

/// The JSON object of a `json!` literal.
pub fn object(value: Value) -> JsonMap {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// The wire form of a value: what a backend stamps compares at the precision it stores.
pub(super) fn wire(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("a domain value serialises")
}

/// Lets the clock move on, so that writes on either side have distinct timestamps.
pub(super) async fn pause() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// The list sorted (for answers whose order the trait leaves open).
pub(super) fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// A pending run of the `agent` graph on `thread_id`.
pub fn run(thread_id: ThreadId) -> Run {
    let now = now();
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
        created_at: now(),
        updated_by: vec![],
    }
}

/// A root `source: update` checkpoint with these values, as a state update writes it.
pub fn update(thread_id: ThreadId, values: Value) -> Checkpoint {
    Checkpoint {
        run_id: None,
        source: CheckpointSource::Update,
        values: object(values),
        ..checkpoint(thread_id, RunId::generate(), 0)
    }
}

/// A pending task of node `name` with these dynamic interrupts.
pub(super) fn task(name: &str, interrupts: Vec<Interrupt>) -> TaskRecord {
    TaskRecord {
        id: Uuid::new_v4(),
        name: name.into(),
        error: None,
        result: None,
        interrupts,
        send: None,
    }
}

/// The pending task of node `ask`, paused on one interrupt `i1` that asks a name.
pub(super) fn asking() -> TaskRecord {
    let question = Interrupt {
        id: "i1".into(),
        value: json!("name?"),
    };
    task("ask", vec![question])
}

/// The failure of a run that raised.
pub(super) fn boom() -> RunError {
    RunError::new("ValueError", "boom")
}

/// Inserting `run`, first stopping `stop`.
pub(super) fn insert(run: &Run, stop: Option<(CancelAction, Vec<RunId>)>) -> InsertRun {
    InsertRun {
        run: run.clone(),
        create_thread_metadata: None,
        stop,
    }
}

/// Ending `run` with `status` (and `error`), nothing left in flight on its thread.
pub(super) fn finish(run: &Run, status: RunStatus, error: Option<RunError>) -> FinishRun {
    FinishRun {
        thread_id: run.thread_id,
        run_id: run.run_id,
        status,
        error,
        in_flight_after: false,
    }
}

/// The `NotFound` a call answered; any other answer fails the check.
pub(super) fn not_found<T: Debug>(result: Result<T, StorageError>) -> NotFound {
    match result {
        Err(StorageError::NotFound(missing)) => missing,
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// The `Conflict` a create answered; any other answer fails the check.
pub(super) fn conflict<T: Debug>(result: Result<T, StorageError>) -> AlreadyExists {
    match result {
        Err(StorageError::Conflict(existing)) => existing,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// Fails the check unless a run's write answered `Fenced`.
pub(super) fn assert_fenced<T: Debug>(result: Result<T, StorageError>) {
    assert!(
        matches!(result, Err(StorageError::Fenced)),
        "expected Fenced, got {result:?}"
    );
}

/// A new thread with this metadata.
pub(super) async fn new_thread(store: &dyn Store, metadata: Value) -> ThreadId {
    let thread_id = ThreadId::generate();
    store
        .create_thread(thread_id, object(metadata), IfExists::Raise)
        .await
        .expect("thread created");
    thread_id
}

/// The stored thread.
pub(super) async fn thread_of(store: &dyn Store, thread_id: ThreadId) -> Thread {
    store.get_thread(thread_id).await.expect("thread exists")
}

/// The stored status of `run`.
pub(super) async fn run_status(store: &dyn Store, run: &Run) -> RunStatus {
    store
        .get_run(run.thread_id, run.run_id)
        .await
        .expect("run exists")
        .status
}

/// Fails the check unless the thread is settled in `status` with these cached values.
pub(super) async fn assert_settled(
    store: &dyn Store,
    thread_id: ThreadId,
    status: ThreadStatus,
    values: Option<Value>,
) {
    let thread = thread_of(store, thread_id).await;
    assert_eq!((thread.status, thread.values), (status, values));
}

/// Fails the check unless `run` is gone with every root checkpoint it wrote, `written` too.
pub(super) async fn assert_run_gone(store: &dyn Store, run: &Run, written: &Checkpoint) {
    let (thread_id, run_id) = (run.thread_id, run.run_id);
    assert_eq!(
        not_found(store.get_run(thread_id, run_id).await),
        NotFound::Run(run_id)
    );
    assert_eq!(checkpoints_of(store, thread_id, run_id).await, 0);
    let namespace = written.checkpoint_ns.clone();
    let read = store.checkpoint(thread_id, namespace, written.checkpoint_id);
    assert_eq!(read.await.expect("read"), None);
}

/// Creates the system assistants of graphs `agent` and `other`, whose runs the fixtures insert.
pub async fn with_run_assistants(store: &dyn Store) {
    store
        .ensure_system_assistants(vec!["agent".into(), "other".into()])
        .await
        .expect("system assistants created");
}

/// `run` inserted with nothing to stop, as stored.
pub(super) async fn inserted(store: &dyn Store, run: &Run) -> Run {
    store
        .insert_run(insert(run, None))
        .await
        .expect("run inserted")
}

/// A run inserted on an existing thread to start a minute from now (as with `after_seconds`).
pub(super) async fn delayed_run(store: &dyn Store, thread_id: ThreadId) -> Run {
    let delayed = Run {
        created_at: now().plus_seconds(60.0).expect("in range"),
        ..run(thread_id)
    };
    inserted(store, &delayed).await
}

/// Ends `run` with `status` (and `error`) while other runs of its thread are still in flight;
/// returns the status its thread settled in.
pub(super) async fn end_while_others_wait(
    store: &dyn Store,
    run: &Run,
    status: RunStatus,
    error: Option<RunError>,
) -> ThreadStatus {
    let end = FinishRun {
        in_flight_after: true,
        ..finish(run, status, error)
    };
    store.finish_run(end).await.expect("finished")
}

/// Saves a plain root checkpoint of `run` at `step` as its attempt `attempt`.
pub(super) fn save_step(store: &dyn Store, run: &Run, step: i64, attempt: u32) -> StoreFuture<()> {
    store.save_checkpoint(checkpoint(run.thread_id, run.run_id, step), attempt)
}

/// A pending run inserted on an existing thread.
pub(super) async fn pending_run(store: &dyn Store, thread_id: ThreadId) -> Run {
    inserted(store, &run(thread_id)).await
}

/// A run of an existing thread started in attempt 1, its input checkpoint written.
pub(super) async fn started_run(store: &dyn Store, thread_id: ThreadId) -> Run {
    let started = pending_run(store, thread_id).await;
    store
        .start_run(
            started.run_id,
            1,
            vec![checkpoint(thread_id, started.run_id, -1)],
            false,
        )
        .await
        .expect("run started");
    started
}

/// A root checkpoint with these values saved by `run`'s first attempt.
pub(super) async fn saved(store: &dyn Store, run: &Run, values: Value) -> Checkpoint {
    let written = Checkpoint {
        values: object(values),
        ..checkpoint(run.thread_id, run.run_id, 0)
    };
    store
        .save_checkpoint(written.clone(), 1)
        .await
        .expect("checkpoint saved");
    written
}

/// A run of an existing thread that started, saved a root checkpoint with `values` and ended
/// with `status`, nothing else in flight.
pub(super) async fn ended_run(
    store: &dyn Store,
    thread_id: ThreadId,
    values: Value,
    status: RunStatus,
) -> Run {
    let ended = started_run(store, thread_id).await;
    saved(store, &ended, values).await;
    store
        .finish_run(finish(&ended, status, None))
        .await
        .expect("run finished");
    ended
}

/// A run of an existing thread that failed before it started (as one past its attempts does).
pub(super) async fn failed_run(store: &dyn Store, thread_id: ThreadId) -> Run {
    let failed = pending_run(store, thread_id).await;
    store
        .finish_run(finish(&failed, RunStatus::Error, Some(boom())))
        .await
        .expect("finished");
    failed
}

/// A store with one thread whose run has started (its input checkpoint written).
pub(super) async fn one_started_run(store: &dyn Store) -> (ThreadId, Run) {
    let thread_id = new_thread(store, json!({})).await;
    (thread_id, started_run(store, thread_id).await)
}

/// Runs of every status, in creation order on four threads: `pending` alone on the first;
/// `running` then `queued` (pending) on the second; `succeeded` then `failed` on the third;
/// `interrupted` on the fourth. A fifth thread has no run.
pub(super) async fn runs_of_every_status(store: &dyn Store) -> [Run; 6] {
    let threads = [
        new_thread(store, json!({})).await,
        new_thread(store, json!({})).await,
        new_thread(store, json!({})).await,
        new_thread(store, json!({})).await,
    ];
    new_thread(store, json!({})).await;
    let pending = pending_run(store, threads[0]).await;
    let running = started_run(store, threads[1]).await;
    let queued = pending_run(store, threads[1]).await;
    let succeeded = ended_run(store, threads[2], json!({}), RunStatus::Success).await;
    let failed = failed_run(store, threads[2]).await;
    let interrupted = pending_run(store, threads[3]).await;
    let stopped = store
        .stop_runs(
            threads[3],
            CancelAction::Interrupt,
            vec![interrupted.run_id],
            false,
        )
        .await
        .expect("stopped");
    assert_eq!(stopped, 1);
    [pending, running, queued, succeeded, failed, interrupted]
}

/// The thread's runs in flight as `(run, status, attempts)`, in start order.
pub(super) async fn in_flight(
    store: &dyn Store,
    thread_id: ThreadId,
) -> Vec<(RunId, RunStatus, u32)> {
    let runs = store.in_flight_runs(thread_id).await.expect("in flight");
    runs.iter()
        .map(|(run, attempts)| (run.run_id, run.status, *attempts))
        .collect()
}

/// `(thread, run)` of every stored run, oldest first.
pub(super) async fn every_run(store: &dyn Store) -> Vec<(ThreadId, RunId)> {
    let statuses = RunStatus::ALL.to_vec();
    store.runs_with_status(statuses).await.expect("runs")
}

/// How many threads the store holds.
pub(super) async fn thread_count(store: &dyn Store) -> i64 {
    let everything = ThreadFilter::default();
    store.count_threads(everything).await.expect("count")
}

/// A history query of every checkpoint in `checkpoint_ns`.
pub(super) fn every(checkpoint_ns: &str) -> HistoryQuery {
    HistoryQuery {
        limit: 1_000,
        checkpoint_ns: checkpoint_ns.into(),
        ..HistoryQuery::default()
    }
}

/// The ids of the thread's checkpoints that `query` returns, in order.
pub(super) async fn history_ids(
    store: &dyn Store,
    thread_id: ThreadId,
    query: HistoryQuery,
) -> Vec<CheckpointId> {
    let found = store
        .history(thread_id, query)
        .await
        .expect("history of an existing thread");
    found.iter().map(|found| found.checkpoint_id).collect()
}

/// The ids of the thread's root checkpoints, newest first.
pub(super) async fn root_ids(store: &dyn Store, thread_id: ThreadId) -> Vec<CheckpointId> {
    history_ids(store, thread_id, every("")).await
}

/// How many root checkpoints of the thread `run_id` wrote.
pub(super) async fn checkpoints_of(store: &dyn Store, thread_id: ThreadId, run_id: RunId) -> usize {
    store
        .history(thread_id, every(""))
        .await
        .expect("history of an existing thread")
        .iter()
        .filter(|checkpoint| checkpoint.run_id == Some(run_id))
        .count()
}

/// One page of a search.
pub(super) fn page<S>(sort_by: S, order: SortOrder, limit: i64, offset: i64) -> Page<S> {
    Page {
        sort_by,
        order,
        limit,
        offset,
    }
}

/// The ids of a page of threads matching `filter`.
pub(super) async fn thread_page(
    store: &dyn Store,
    filter: ThreadFilter,
    page: Page<ThreadSortBy>,
) -> Vec<ThreadId> {
    let found = store.search_threads(filter, page).await.expect("search");
    found.iter().map(|thread| thread.thread_id).collect()
}

/// The ids of every thread matching `filter`, in id order; `count_threads` must agree.
pub(super) async fn matching_threads(store: &dyn Store, filter: ThreadFilter) -> Vec<ThreadId> {
    let everything = page(ThreadSortBy::ThreadId, SortOrder::Asc, 100, 0);
    let found = thread_page(store, filter.clone(), everything).await;
    let counted = store.count_threads(filter).await.expect("count");
    assert_eq!(counted, found.len() as i64, "count and search agree");
    found
}

/// Each search order returns its expected ascending order, and the exact reverse descending;
/// every page (`limit`, `offset`) of either is the matching slice of it.
pub(super) async fn assert_sorted_and_paged<S, T, F, Answer>(expected: Vec<(S, Vec<T>)>, search: F)
where
    S: Copy + Debug,
    T: PartialEq + Debug + Clone,
    F: Fn(Page<S>) -> Answer,
    Answer: Future<Output = Vec<T>>,
{
    for (sort_by, ascending) in expected {
        let mut descending = ascending.clone();
        descending.reverse();
        for (order, all) in [(SortOrder::Asc, ascending), (SortOrder::Desc, descending)] {
            let total = all.len() as i64;
            for limit in 1..=total + 1 {
                for offset in 0..=total {
                    let start = offset.min(total) as usize;
                    let end = (offset + limit).min(total) as usize;
                    assert_eq!(
                        search(page(sort_by, order, limit, offset)).await,
                        all[start..end].to_vec(),
                        "{sort_by:?} {order:?} limit {limit} offset {offset}"
                    );
                }
            }
        }
    }
}
