//! The conformance suite of `Store`: what every storage backend must do, written against the
//! trait only, so a second backend runs it unchanged. A backend's tests call
//! `store_conformance_suite!(open)` with an async `open()` that returns a guard (kept alive for
//! the test) and a fresh, empty store; every check becomes one `#[tokio::test]`.
//!
//! The checks cover every method of the trait: the write-ordering contract (queued at call,
//! visible once `Ok`, all-or-nothing), threads, the run life cycle and its fencing, state reads,
//! assistants and retention. What a backend stamps itself (timestamps) is compared in its wire
//! form, at the microsecond precision every backend stores.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{FinishRun, InsertRun, PruneAction, PruneCounts, StorageError, Store, StoreFuture};
use crate::domain::assistant::{AssistantChange, AssistantVersion};
use crate::domain::checkpoint::{Checkpoint, CheckpointSource, Interrupt, TaskRecord};
use crate::domain::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use crate::domain::multitask::{CancelAction, MultitaskStrategy};
use crate::domain::query::{
    AssistantFilter, AssistantSortBy, HistoryQuery, Page, SortOrder, ThreadFilter, ThreadSortBy,
};
use crate::domain::run::{Run, RunError, RunStatus};
use crate::domain::thread::{IfExists, Thread, ThreadStatus};
use crate::domain::time::Timestamp;
use crate::domain::{AlreadyExists, JsonMap, NotFound};

/// Generates one `#[tokio::test]` per conformance check, each on a store from `$open`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($open:path) => {
        $crate::store_conformance_suite!(@checks $open;
            // the write-ordering contract
            a_write_is_queued_when_it_is_called,
            a_write_is_visible_to_the_read_that_follows_its_ok,
            a_failed_job_in_a_batch_leaves_the_others_committed,
            a_failed_write_leaves_nothing_behind,
            // threads
            create_thread_conflicts_unless_asked_to_do_nothing,
            patch_thread_merges_metadata_shallowly,
            copy_thread_copies_the_checkpoints_but_not_the_runs,
            delete_thread_takes_its_runs_and_checkpoints_with_it,
            search_threads_filters_by_ids_metadata_values_and_status,
            search_threads_sorts_by_every_key_both_ways_and_pages,
            threads_of_assistant_are_those_whose_metadata_names_it,
            threads_in_flight_are_those_with_a_pending_or_running_run,
            settle_stranded_threads_settles_busy_threads_with_no_run_in_flight,
            // the run life cycle
            insert_run_stores_a_pending_run_and_marks_the_thread_busy,
            insert_run_creates_a_missing_thread_only_when_asked_to,
            start_run_begins_attempt_one_with_its_checkpoints_and_only_once,
            save_checkpoint_is_fenced_unless_the_run_is_running_in_that_attempt,
            finish_run_stores_the_end_and_settles_the_thread,
            settle_thread_recomputes_the_status_and_values_from_the_head,
            stop_runs_counts_only_the_threads_runs_in_flight_and_settles_it,
            delete_run_removes_a_run_of_any_status_with_its_checkpoints,
            release_run_changes_only_a_running_run,
            a_resumed_attempt_fences_the_writes_of_the_one_before_and_a_release_gives_it_back,
            rollback_deletes_the_run_and_its_checkpoints_and_fences_its_writes,
            interrupt_keeps_checkpoints_and_fences_later_writes,
            get_run_finds_a_run_only_on_its_own_thread,
            run_result_has_the_values_and_interrupts_of_the_runs_last_root_checkpoint,
            list_runs_pages_newest_first_and_filters_by_status,
            in_flight_runs_are_in_start_order_with_their_attempts,
            runs_with_status_lists_matching_runs_of_every_thread_oldest_first,
            // state
            update_state_writes_a_checkpoint_and_settles_the_thread_on_it,
            head_is_the_root_checkpoint_with_the_greatest_id,
            checkpoint_reads_one_checkpoint_by_namespace_and_id,
            history_pages_newest_first_with_its_filters,
            // assistants
            create_assistant_conflicts_unless_asked_to_do_nothing,
            patch_assistant_writes_the_next_version,
            set_assistant_version_points_at_a_stored_version,
            delete_assistant_removes_it_with_its_versions,
            ensure_system_assistants_creates_only_the_missing_ones,
            search_assistants_filters_by_metadata_graph_and_name,
            search_assistants_sorts_by_every_key_both_ways_and_pages,
            assistant_versions_are_newest_first_and_filter_by_metadata,
            // retention
            sweep_deletes_only_threads_idle_since_before_the_cutoff,
            sweep_keep_latest_prunes_old_checkpoints_but_keeps_the_head_and_the_state,
            prune_threads_skips_unknown_and_busy_threads_without_counting_them
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

// ----- fixtures and helpers -----

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
fn wire(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("a domain value serialises")
}

/// Lets the clock move on, so that writes on either side have distinct timestamps.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// The list sorted (for answers whose order the trait leaves open).
fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
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
fn task(name: &str, interrupts: Vec<Interrupt>) -> TaskRecord {
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
fn asking() -> TaskRecord {
    let question = Interrupt {
        id: "i1".into(),
        value: json!("name?"),
    };
    task("ask", vec![question])
}

/// The failure of a run that raised.
fn boom() -> RunError {
    RunError::new("ValueError", "boom")
}

/// Inserting `run`, first stopping `stop`.
fn insert(run: &Run, stop: Option<(CancelAction, Vec<RunId>)>) -> InsertRun {
    InsertRun {
        run: run.clone(),
        create_thread_metadata: None,
        stop,
    }
}

/// Ending `run` with `status` (and `error`), nothing left in flight on its thread.
fn finish(run: &Run, status: RunStatus, error: Option<RunError>) -> FinishRun {
    FinishRun {
        thread_id: run.thread_id,
        run_id: run.run_id,
        status,
        error,
        in_flight_after: false,
    }
}

/// The `NotFound` a call answered; any other answer fails the check.
fn not_found<T: Debug>(result: Result<T, StorageError>) -> NotFound {
    match result {
        Err(StorageError::NotFound(missing)) => missing,
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// The `Conflict` a create answered; any other answer fails the check.
fn conflict<T: Debug>(result: Result<T, StorageError>) -> AlreadyExists {
    match result {
        Err(StorageError::Conflict(existing)) => existing,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// Fails the check unless a run's write answered `Fenced`.
fn assert_fenced<T: Debug>(result: Result<T, StorageError>) {
    assert!(
        matches!(result, Err(StorageError::Fenced)),
        "expected Fenced, got {result:?}"
    );
}

/// A new thread with this metadata.
async fn new_thread(store: &dyn Store, metadata: Value) -> ThreadId {
    let thread_id = ThreadId::generate();
    store
        .create_thread(thread_id, object(metadata), IfExists::Raise)
        .await
        .expect("thread created");
    thread_id
}

/// The stored thread.
async fn thread_of(store: &dyn Store, thread_id: ThreadId) -> Thread {
    store.get_thread(thread_id).await.expect("thread exists")
}

/// The stored status of `run`.
async fn run_status(store: &dyn Store, run: &Run) -> RunStatus {
    store
        .get_run(run.thread_id, run.run_id)
        .await
        .expect("run exists")
        .status
}

/// Fails the check unless the thread is settled in `status` with these cached values.
async fn assert_settled(
    store: &dyn Store,
    thread_id: ThreadId,
    status: ThreadStatus,
    values: Option<Value>,
) {
    let thread = thread_of(store, thread_id).await;
    assert_eq!((thread.status, thread.values), (status, values));
}

/// Fails the check unless `run` is gone with every root checkpoint it wrote, `written` too.
async fn assert_run_gone(store: &dyn Store, run: &Run, written: &Checkpoint) {
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

/// `run` inserted with nothing to stop, as stored.
async fn inserted(store: &dyn Store, run: &Run) -> Run {
    store
        .insert_run(insert(run, None))
        .await
        .expect("run inserted")
}

/// A run inserted on an existing thread to start a minute from now (as with `after_seconds`).
async fn delayed_run(store: &dyn Store, thread_id: ThreadId) -> Run {
    let delayed = Run {
        created_at: now().plus_seconds(60.0).expect("in range"),
        ..run(thread_id)
    };
    inserted(store, &delayed).await
}

/// Ends `run` with `status` (and `error`) while other runs of its thread are still in flight;
/// returns the status its thread settled in.
async fn end_while_others_wait(
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
fn save_step(store: &dyn Store, run: &Run, step: i64, attempt: u32) -> StoreFuture<()> {
    store.save_checkpoint(checkpoint(run.thread_id, run.run_id, step), attempt)
}

/// A pending run inserted on an existing thread.
async fn pending_run(store: &dyn Store, thread_id: ThreadId) -> Run {
    inserted(store, &run(thread_id)).await
}

/// A run of an existing thread started in attempt 1, its input checkpoint written.
async fn started_run(store: &dyn Store, thread_id: ThreadId) -> Run {
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
async fn saved(store: &dyn Store, run: &Run, values: Value) -> Checkpoint {
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
async fn ended_run(
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
async fn failed_run(store: &dyn Store, thread_id: ThreadId) -> Run {
    let failed = pending_run(store, thread_id).await;
    store
        .finish_run(finish(&failed, RunStatus::Error, Some(boom())))
        .await
        .expect("finished");
    failed
}

/// A store with one thread whose run has started (its input checkpoint written).
async fn one_started_run(store: &dyn Store) -> (ThreadId, Run) {
    let thread_id = new_thread(store, json!({})).await;
    (thread_id, started_run(store, thread_id).await)
}

/// The thread's runs in flight as `(run, status, attempts)`, in start order.
async fn in_flight(store: &dyn Store, thread_id: ThreadId) -> Vec<(RunId, RunStatus, u32)> {
    let runs = store.in_flight_runs(thread_id).await.expect("in flight");
    runs.iter()
        .map(|(run, attempts)| (run.run_id, run.status, *attempts))
        .collect()
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

/// `(thread, run)` of every stored run, oldest first.
async fn every_run(store: &dyn Store) -> Vec<(ThreadId, RunId)> {
    let statuses = RunStatus::ALL.to_vec();
    store.runs_with_status(statuses).await.expect("runs")
}

/// How many threads the store holds.
async fn thread_count(store: &dyn Store) -> i64 {
    let everything = ThreadFilter::default();
    store.count_threads(everything).await.expect("count")
}

/// How many assistants the store holds.
async fn assistant_count(store: &dyn Store) -> i64 {
    let everything = AssistantFilter::default();
    store.count_assistants(everything).await.expect("count")
}

/// A history query of every checkpoint in `checkpoint_ns`.
fn every(checkpoint_ns: &str) -> HistoryQuery {
    HistoryQuery {
        limit: 1_000,
        checkpoint_ns: checkpoint_ns.into(),
        ..HistoryQuery::default()
    }
}

/// The ids of the thread's checkpoints that `query` returns, in order.
async fn history_ids(
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
async fn root_ids(store: &dyn Store, thread_id: ThreadId) -> Vec<CheckpointId> {
    history_ids(store, thread_id, every("")).await
}

/// How many root checkpoints of the thread `run_id` wrote.
async fn checkpoints_of(store: &dyn Store, thread_id: ThreadId, run_id: RunId) -> usize {
    store
        .history(thread_id, every(""))
        .await
        .expect("history of an existing thread")
        .iter()
        .filter(|checkpoint| checkpoint.run_id == Some(run_id))
        .count()
}

/// One page of a search.
fn page<S>(sort_by: S, order: SortOrder, limit: i64, offset: i64) -> Page<S> {
    Page {
        sort_by,
        order,
        limit,
        offset,
    }
}

/// The ids of a page of threads matching `filter`.
async fn thread_page(
    store: &dyn Store,
    filter: ThreadFilter,
    page: Page<ThreadSortBy>,
) -> Vec<ThreadId> {
    let found = store.search_threads(filter, page).await.expect("search");
    found.iter().map(|thread| thread.thread_id).collect()
}

/// The ids of every thread matching `filter`, in id order; `count_threads` must agree.
async fn matching_threads(store: &dyn Store, filter: ThreadFilter) -> Vec<ThreadId> {
    let everything = page(ThreadSortBy::ThreadId, SortOrder::Asc, 100, 0);
    let found = thread_page(store, filter.clone(), everything).await;
    let counted = store.count_threads(filter).await.expect("count");
    assert_eq!(counted, found.len() as i64, "count and search agree");
    found
}

/// A thread filter on metadata only.
fn metadata_filter(metadata: Value) -> ThreadFilter {
    ThreadFilter {
        metadata: Some(object(metadata)),
        ..ThreadFilter::default()
    }
}

/// The first version of an assistant.
fn assistant(
    assistant_id: AssistantId,
    graph_id: &str,
    name: &str,
    created_at: &str,
    metadata: Value,
) -> AssistantVersion {
    AssistantVersion {
        assistant_id,
        graph_id: graph_id.into(),
        config: JsonMap::new(),
        context: JsonMap::new(),
        metadata: object(metadata),
        name: name.into(),
        created_at: Timestamp::parse(created_at).expect("a valid timestamp"),
        version: 1,
        description: None,
    }
}

/// A change of an assistant's metadata only.
fn metadata_change(metadata: Value) -> AssistantChange {
    AssistantChange {
        metadata: Some(object(metadata)),
        ..AssistantChange::default()
    }
}

/// The ids of a page of assistants matching `filter`.
async fn assistant_page(
    store: &dyn Store,
    filter: AssistantFilter,
    page: Page<AssistantSortBy>,
) -> Vec<AssistantId> {
    let found = store.search_assistants(filter, page).await.expect("search");
    found
        .iter()
        .map(|assistant| assistant.assistant_id)
        .collect()
}

/// The ids of every assistant matching `filter`, in id order; `count_assistants` must agree.
async fn matching_assistants(store: &dyn Store, filter: AssistantFilter) -> Vec<AssistantId> {
    let everything = page(AssistantSortBy::AssistantId, SortOrder::Asc, 100, 0);
    let found = assistant_page(store, filter.clone(), everything).await;
    let counted = store.count_assistants(filter).await.expect("count");
    assert_eq!(counted, found.len() as i64, "count and search agree");
    found
}

/// The version numbers `assistant_versions` returns.
async fn version_numbers(
    store: &dyn Store,
    assistant_id: AssistantId,
    metadata: Option<Value>,
    limit: i64,
    offset: i64,
) -> Vec<i64> {
    let versions = store
        .assistant_versions(assistant_id, metadata.map(object), limit, offset)
        .await
        .expect("versions");
    versions.iter().map(|version| version.version).collect()
}

/// Each search order returns its expected ascending order, and the exact reverse descending;
/// every page (`limit`, `offset`) of either is the matching slice of it.
async fn assert_sorted_and_paged<S, T, F, Answer>(expected: Vec<(S, Vec<T>)>, search: F)
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

// ----- the write-ordering contract -----

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

// ----- threads -----

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
    let other = AssistantId::generate();
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

/// Runs of every status, in creation order on four threads: `pending` alone on the first;
/// `running` then `queued` (pending) on the second; `succeeded` then `failed` on the third;
/// `interrupted` on the fourth. A fifth thread has no run.
async fn runs_of_every_status(store: &dyn Store) -> [Run; 6] {
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

// ----- the run life cycle -----

/// A new run is stored pending with the thread's metadata under its own, its graph and
/// assistant recorded in its metadata (mirrored in `config.metadata`) and in the thread's; the
/// thread becomes busy.
pub async fn insert_run_stores_a_pending_run_and_marks_the_thread_busy(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({ "owner": "ann", "shared": "thread" })).await;
    let before = thread_of(store, thread_id).await;
    pause().await;
    let mut asked = run(thread_id);
    asked.metadata = object(json!({ "shared": "run", "mine": 1 }));
    asked.kwargs.config = object(json!({ "metadata": {}, "tags": ["t"] }));
    let stored = inserted(store, &asked).await;

    let agent = AssistantId::for_graph("agent");
    let metadata = object(json!({
        "owner": "ann", "shared": "run", "mine": 1, "graph_id": "agent", "assistant_id": agent
    }));
    let mut expected = asked.clone();
    expected.metadata = metadata.clone();
    expected
        .kwargs
        .config
        .insert("metadata".into(), Value::Object(metadata));
    assert_eq!(stored, expected);
    assert_eq!(
        store.get_run(thread_id, asked.run_id).await.expect("run"),
        stored
    );
    assert_eq!(
        store.in_flight_runs(thread_id).await.expect("in flight"),
        vec![(stored, 0)]
    );
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Busy);
    assert_eq!(
        thread.metadata,
        object(
            json!({ "owner": "ann", "shared": "thread", "graph_id": "agent", "assistant_id": agent })
        )
    );
    assert!(thread.updated_at > before.updated_at);

    // A run of another graph queues behind it; the thread now names that graph.
    let other = AssistantId::for_graph("other");
    let queued = Run {
        graph_id: "other".into(),
        assistant_id: other,
        ..run(thread_id)
    };
    let queued = inserted(store, &queued).await;
    assert_eq!(queued.status, RunStatus::Pending);
    assert_eq!(queued.graph_id, "other");
    assert_eq!(queued.metadata["graph_id"], json!("other"));
    assert_eq!(queued.metadata["assistant_id"], json!(other));
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.metadata["graph_id"], json!("other"));
    assert_eq!(thread.metadata["assistant_id"], json!(other));
    assert_eq!(thread.status, ThreadStatus::Busy);
}

/// A run on a missing thread is `NotFound` unless it brings the thread's metadata, which
/// creates the thread; the metadata of a thread that exists is kept.
pub async fn insert_run_creates_a_missing_thread_only_when_asked_to(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = ThreadId::generate();
    assert_eq!(
        not_found(store.insert_run(insert(&run(thread_id), None)).await),
        NotFound::ThreadOrAssistant
    );
    assert_eq!(
        not_found(store.get_thread(thread_id).await),
        NotFound::Thread(thread_id)
    );

    let create = |owner: &str, run: &Run| InsertRun {
        create_thread_metadata: Some(object(json!({ "owner": owner }))),
        ..insert(run, None)
    };
    let asked = Run {
        metadata: object(json!({ "mine": 1 })),
        ..run(thread_id)
    };
    let stored = store
        .insert_run(create("ann", &asked))
        .await
        .expect("inserted");
    let agent = AssistantId::for_graph("agent");
    assert_eq!(
        stored.metadata,
        object(json!({ "owner": "ann", "mine": 1, "graph_id": "agent", "assistant_id": agent }))
    );
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Busy);
    let thread_metadata =
        object(json!({ "owner": "ann", "graph_id": "agent", "assistant_id": agent }));
    assert_eq!(thread.metadata, thread_metadata);

    store
        .insert_run(create("bob", &run(thread_id)))
        .await
        .expect("inserted");
    assert_eq!(thread_of(store, thread_id).await.metadata, thread_metadata);
    assert_eq!(
        store
            .list_runs(thread_id, None, 10, 0)
            .await
            .expect("runs")
            .len(),
        2
    );
}

/// Starting a pending run makes it running in attempt 1 and writes its start checkpoints; a
/// start that is `Fenced` (already started, ended, unknown, or `recovered` while pending)
/// writes none of them.
pub async fn start_run_begins_attempt_one_with_its_checkpoints_and_only_once(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let first = pending_run(store, thread_id).await;
    let input = Checkpoint {
        source: CheckpointSource::Input,
        ..checkpoint(thread_id, first.run_id, -1)
    };
    let step = Checkpoint {
        values: object(json!({ "n": 0 })),
        ..checkpoint(thread_id, first.run_id, 0)
    };
    // Only the next attempt may begin: the first is 1.
    assert_fenced(store.start_run(first.run_id, 2, vec![], false).await);
    store
        .start_run(first.run_id, 1, vec![input.clone(), step.clone()], false)
        .await
        .expect("started");
    // Starting does not move the run's `updated_at`, as on the official server.
    let running = Run {
        status: RunStatus::Running,
        ..first.clone()
    };
    assert_eq!(
        store.in_flight_runs(thread_id).await.expect("in flight"),
        vec![(running, 1)]
    );
    assert_eq!(
        store.history(thread_id, every("")).await.expect("history"),
        vec![step.clone(), input.clone()]
    );

    let late = checkpoint(thread_id, first.run_id, 5);
    assert_fenced(
        store
            .start_run(first.run_id, 1, vec![late.clone()], false)
            .await,
    );
    let queued = pending_run(store, thread_id).await;
    let early = checkpoint(thread_id, queued.run_id, -1);
    assert_fenced(
        store
            .start_run(queued.run_id, 1, vec![early.clone()], true)
            .await,
    );
    assert_fenced(store.start_run(RunId::generate(), 1, vec![], false).await);
    end_while_others_wait(store, &first, RunStatus::Success, None).await;
    for recovered in [false, true] {
        assert_fenced(store.start_run(first.run_id, 2, vec![], recovered).await);
    }
    assert_eq!(
        in_flight(store, thread_id).await,
        vec![(queued.run_id, RunStatus::Pending, 0)]
    );
    assert_eq!(
        root_ids(store, thread_id).await,
        vec![step.checkpoint_id, input.checkpoint_id]
    );
}

/// A run's checkpoint is written only while the run is running in that very attempt: not
/// before it starts, not in another attempt, not after it ended or was deleted, and never for a
/// checkpoint that names no run. Subgraph checkpoints are fenced the same way.
pub async fn save_checkpoint_is_fenced_unless_the_run_is_running_in_that_attempt(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let waiting = pending_run(store, thread_id).await;
    for attempt in [0, 1] {
        assert_fenced(save_step(store, &waiting, 0, attempt).await);
    }
    let running = started_run(store, thread_id).await;
    for attempt in [0, 2] {
        assert_fenced(save_step(store, &running, 0, attempt).await);
    }
    let runless = Checkpoint {
        run_id: None,
        ..checkpoint(thread_id, running.run_id, 0)
    };
    assert_fenced(store.save_checkpoint(runless, 1).await);
    let written = saved(store, &running, json!({ "n": 1 })).await;
    assert_eq!(
        store
            .checkpoint(thread_id, String::new(), written.checkpoint_id)
            .await
            .expect("read"),
        Some(written)
    );
    let inner = Checkpoint {
        checkpoint_ns: "inner:task".into(),
        ..checkpoint(thread_id, running.run_id, 1)
    };
    store
        .save_checkpoint(inner.clone(), 1)
        .await
        .expect("subgraph checkpoint saved");
    assert_eq!(
        store
            .history(thread_id, every("inner:task"))
            .await
            .expect("history"),
        vec![inner.clone()]
    );

    end_while_others_wait(store, &running, RunStatus::Success, None).await;
    assert_fenced(save_step(store, &running, 2, 1).await);
    assert_fenced(
        store
            .save_checkpoint(
                Checkpoint {
                    checkpoint_id: CheckpointId::generate(),
                    ..inner
                },
                1,
            )
            .await,
    );
    let deleted = started_run(store, thread_id).await;
    store
        .delete_run(thread_id, deleted.run_id, true)
        .await
        .expect("deleted");
    assert_fenced(save_step(store, &deleted, 0, 1).await);

    assert_eq!(checkpoints_of(store, thread_id, waiting.run_id).await, 0);
    assert_eq!(checkpoints_of(store, thread_id, running.run_id).await, 2);
    assert_eq!(root_ids(store, thread_id).await.len(), 2);
    assert_eq!(
        history_ids(store, thread_id, every("inner:task"))
            .await
            .len(),
        1
    );
}

/// Ending a run stores its status and error and settles its thread: idle, `error` with the
/// error, `interrupted` when the head has a node next (a success clears the error), busy while
/// other runs are in flight. A run ends once; an unknown run, or one of another thread, is
/// `Fenced`; a pending run may end without starting.
pub async fn finish_run_stores_the_end_and_settles_the_thread(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let done = started_run(store, thread_id).await;
    saved(store, &done, json!({ "n": 1 })).await;
    let status = store
        .finish_run(finish(&done, RunStatus::Success, None))
        .await
        .expect("finished");
    assert_eq!(status, ThreadStatus::Idle);
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Idle);
    assert_eq!(thread.values, Some(json!({ "n": 1 })));
    assert_eq!(thread.error, None);
    assert_fenced(
        store
            .finish_run(finish(&done, RunStatus::Error, Some(boom())))
            .await,
    );
    assert_eq!(run_status(store, &done).await, RunStatus::Success);
    let result = store
        .run_result(thread_id, done.run_id)
        .await
        .expect("read");
    assert_eq!(result.expect("the run exists").error, None);

    let failed = started_run(store, thread_id).await;
    let status = store
        .finish_run(finish(&failed, RunStatus::Error, Some(boom())))
        .await
        .expect("finished");
    assert_eq!(status, ThreadStatus::Error);
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Error);
    assert_eq!(
        thread.error,
        Some(json!({ "error": "ValueError", "message": "boom" }))
    );
    assert_eq!(run_status(store, &failed).await, RunStatus::Error);
    let result = store
        .run_result(thread_id, failed.run_id)
        .await
        .expect("read");
    assert_eq!(result.expect("the run exists").error, Some(boom()));

    let paused = started_run(store, thread_id).await;
    let head = Checkpoint {
        next: vec!["tools".into()],
        tasks: vec![task("tools", vec![])],
        ..checkpoint(thread_id, paused.run_id, 0)
    };
    store.save_checkpoint(head, 1).await.expect("saved");
    let status = store
        .finish_run(finish(&paused, RunStatus::Success, None))
        .await
        .expect("finished");
    assert_eq!(status, ThreadStatus::Interrupted);
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Interrupted);
    assert_eq!(thread.error, None);

    let timed_out = started_run(store, thread_id).await;
    let queued = pending_run(store, thread_id).await;
    let status = end_while_others_wait(store, &timed_out, RunStatus::Timeout, Some(boom())).await;
    assert_eq!(status, ThreadStatus::Busy);
    assert_eq!(thread_of(store, thread_id).await.status, ThreadStatus::Busy);
    assert_eq!(run_status(store, &timed_out).await, RunStatus::Timeout);

    let elsewhere = new_thread(store, json!({})).await;
    assert_fenced(
        store
            .finish_run(FinishRun {
                thread_id: elsewhere,
                ..finish(&queued, RunStatus::Success, None)
            })
            .await,
    );
    assert_eq!(run_status(store, &queued).await, RunStatus::Pending);
    assert_eq!(thread_of(store, elsewhere).await.status, ThreadStatus::Idle);
    assert_fenced(
        store
            .finish_run(finish(&run(thread_id), RunStatus::Success, None))
            .await,
    );
    let status = store
        .finish_run(finish(&queued, RunStatus::Success, None))
        .await
        .expect("a pending run ends");
    assert_eq!(status, ThreadStatus::Idle);
    assert_eq!(run_status(store, &queued).await, RunStatus::Success);
    assert_eq!(thread_of(store, thread_id).await.error, None);
}

/// Settling recomputes a thread from its head: busy while in flight, else as the head says,
/// with the head's values and pending interrupts; no run changes.
pub async fn settle_thread_recomputes_the_status_and_values_from_the_head(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let running = started_run(store, thread_id).await;
    let asking = asking();
    let head = Checkpoint {
        values: object(json!({ "n": 2 })),
        next: vec!["ask".into()],
        tasks: vec![asking],
        ..checkpoint(thread_id, running.run_id, 0)
    };
    store.save_checkpoint(head.clone(), 1).await.expect("saved");

    let status = store.settle_thread(thread_id, true).await.expect("settled");
    assert_eq!(status, ThreadStatus::Busy);
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Busy);
    assert_eq!(thread.values, Some(json!({ "n": 2 })));
    assert_eq!(thread.interrupts, head.interrupts_by_task());
    assert_eq!(thread.interrupts.len(), 1);

    let status = store
        .settle_thread(thread_id, false)
        .await
        .expect("settled");
    assert_eq!(status, ThreadStatus::Interrupted);
    assert_eq!(
        thread_of(store, thread_id).await.status,
        ThreadStatus::Interrupted
    );
    assert_eq!(run_status(store, &running).await, RunStatus::Running);

    saved(store, &running, json!({ "n": 3 })).await;
    let status = store
        .settle_thread(thread_id, false)
        .await
        .expect("settled");
    assert_eq!(status, ThreadStatus::Idle);
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Idle);
    assert_eq!(thread.values, Some(json!({ "n": 3 })));
    assert_eq!(thread.interrupts, JsonMap::new());
}

/// Stopping counts only the named runs of this thread that were in flight: `rollback` deletes
/// them with their checkpoints, `interrupt` marks them interrupted; the thread settles (busy
/// when `in_flight_after`). With nothing in flight it answers 0 and changes nothing.
pub async fn stop_runs_counts_only_the_threads_runs_in_flight_and_settles_it(
    store: Arc<dyn Store>,
) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let done = ended_run(store, thread_id, json!({ "n": "done" }), RunStatus::Success).await;
    let running = started_run(store, thread_id).await;
    let rolled_back = saved(store, &running, json!({ "n": "running" })).await;
    let queued = pending_run(store, thread_id).await;
    let elsewhere = new_thread(store, json!({})).await;
    let foreign = pending_run(store, elsewhere).await;

    let named = vec![
        running.run_id,
        done.run_id,
        foreign.run_id,
        RunId::generate(),
    ];
    let stopped = store
        .stop_runs(thread_id, CancelAction::Rollback, named, true)
        .await
        .expect("stopped");
    assert_eq!(stopped, 1);
    assert_run_gone(store, &running, &rolled_back).await;
    assert_settled(
        store,
        thread_id,
        ThreadStatus::Busy,
        Some(json!({ "n": "done" })),
    )
    .await;

    let named = vec![queued.run_id, done.run_id, foreign.run_id];
    let stopped = store
        .stop_runs(thread_id, CancelAction::Interrupt, named, false)
        .await
        .expect("stopped");
    assert_eq!(stopped, 1);
    assert_eq!(run_status(store, &queued).await, RunStatus::Interrupted);
    assert_eq!(run_status(store, &done).await, RunStatus::Success);
    assert_eq!(run_status(store, &foreign).await, RunStatus::Pending);
    assert_eq!(thread_of(store, thread_id).await.status, ThreadStatus::Idle);
    assert_eq!(thread_of(store, elsewhere).await.status, ThreadStatus::Busy);

    let before = wire(&thread_of(store, thread_id).await);
    pause().await;
    for action in [CancelAction::Interrupt, CancelAction::Rollback] {
        let named = vec![queued.run_id, done.run_id];
        let stopped = store
            .stop_runs(thread_id, action, named, false)
            .await
            .expect("nothing to stop");
        assert_eq!(stopped, 0, "{action:?}");
    }
    assert_eq!(wire(&thread_of(store, thread_id).await), before);
    assert_eq!(run_status(store, &queued).await, RunStatus::Interrupted);
}

/// A run of any status can be deleted, its checkpoints with it, and the thread settles; an
/// unknown run, or one of another thread, is `NotFound(Run)`.
pub async fn delete_run_removes_a_run_of_any_status_with_its_checkpoints(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let done = ended_run(store, thread_id, json!({ "v": "done" }), RunStatus::Success).await;
    let failed = failed_run(store, thread_id).await;
    let running = started_run(store, thread_id).await;
    let written = saved(store, &running, json!({ "v": "running" })).await;
    let queued = pending_run(store, thread_id).await;
    let elsewhere = new_thread(store, json!({})).await;
    let foreign = pending_run(store, elsewhere).await;

    store
        .delete_run(thread_id, running.run_id, true)
        .await
        .expect("deleted");
    assert_run_gone(store, &running, &written).await;
    assert_settled(
        store,
        thread_id,
        ThreadStatus::Busy,
        Some(json!({ "v": "done" })),
    )
    .await;

    for ended in [&done, &failed] {
        store
            .delete_run(thread_id, ended.run_id, true)
            .await
            .expect("deleted");
    }
    assert_eq!(root_ids(store, thread_id).await, vec![]);
    store
        .delete_run(thread_id, queued.run_id, false)
        .await
        .expect("deleted");
    assert_settled(store, thread_id, ThreadStatus::Idle, None).await;
    assert_eq!(
        store.list_runs(thread_id, None, 10, 0).await.expect("runs"),
        vec![]
    );

    assert_eq!(
        not_found(store.delete_run(thread_id, queued.run_id, false).await),
        NotFound::Run(queued.run_id)
    );
    assert_eq!(
        not_found(store.delete_run(thread_id, foreign.run_id, false).await),
        NotFound::Run(foreign.run_id)
    );
    assert_eq!(run_status(store, &foreign).await, RunStatus::Pending);
}

/// A release puts only a running run back to pending with its attempt given back; it leaves a
/// pending, ended or unknown run as it is.
pub async fn release_run_changes_only_a_running_run(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let (thread_id, running) = one_started_run(store).await;
    let queued = pending_run(store, thread_id).await;
    let done = ended_run(store, thread_id, json!({}), RunStatus::Success).await;
    for untouched in [queued.run_id, done.run_id, RunId::generate()] {
        store.release_run(untouched).await.expect("released");
    }
    assert_eq!(run_status(store, &done).await, RunStatus::Success);
    assert_eq!(
        in_flight(store, thread_id).await,
        vec![
            (running.run_id, RunStatus::Running, 1),
            (queued.run_id, RunStatus::Pending, 0)
        ]
    );
    store.release_run(running.run_id).await.expect("released");
    assert_eq!(
        in_flight(store, thread_id).await,
        vec![
            (running.run_id, RunStatus::Pending, 0),
            (queued.run_id, RunStatus::Pending, 0)
        ]
    );
}

/// A resumed attempt fences the one before it; a release gives the attempt back.
pub async fn a_resumed_attempt_fences_the_writes_of_the_one_before_and_a_release_gives_it_back(
    store: Arc<dyn Store>,
) {
    let (_, first) = one_started_run(&*store).await;
    // Only the next attempt may resume it.
    assert_fenced(store.start_run(first.run_id, 3, vec![], true).await);
    store
        .start_run(first.run_id, 2, vec![], true)
        .await
        .expect("resumed as attempt 2");
    let stale = save_step(&*store, &first, 0, 1).await;
    assert_fenced(stale);
    save_step(&*store, &first, 0, 2)
        .await
        .expect("the current attempt writes");
    // Released (shutdown): pending again with the attempt given back, so it cannot be resumed
    // as a crash orphan, and starting it again is attempt 2 once more.
    store.release_run(first.run_id).await.expect("released");
    assert_fenced(store.start_run(first.run_id, 2, vec![], true).await);
    store
        .start_run(first.run_id, 2, vec![], false)
        .await
        .expect("started again as attempt 2");
    let stale = save_step(&*store, &first, 1, 1).await;
    assert_fenced(stale);
}

/// Rollback deletes the run with its checkpoints in the insert of its replacement, and the
/// rolled-back run can never write again.
pub async fn rollback_deletes_the_run_and_its_checkpoints_and_fences_its_writes(
    store: Arc<dyn Store>,
) {
    let (thread_id, first) = one_started_run(&*store).await;
    save_step(&*store, &first, 0, 1)
        .await
        .expect("checkpoint saved");
    assert_eq!(checkpoints_of(&*store, thread_id, first.run_id).await, 2);

    let second = run(thread_id);
    store
        .insert_run(insert(
            &second,
            Some((CancelAction::Rollback, vec![first.run_id])),
        ))
        .await
        .expect("replacement inserted");

    assert_eq!(checkpoints_of(&*store, thread_id, first.run_id).await, 0);
    assert_eq!(
        not_found(store.get_run(thread_id, first.run_id).await),
        NotFound::Run(first.run_id)
    );
    let late_write = save_step(&*store, &first, 1, 1).await;
    assert_fenced(late_write);
    assert_eq!(checkpoints_of(&*store, thread_id, first.run_id).await, 0);
    assert_eq!(
        thread_of(&*store, thread_id).await.status,
        ThreadStatus::Busy
    );
}

/// Interrupt keeps the run's checkpoints; the run can neither write nor finish afterwards.
pub async fn interrupt_keeps_checkpoints_and_fences_later_writes(store: Arc<dyn Store>) {
    let (thread_id, first) = one_started_run(&*store).await;
    let second = run(thread_id);
    store
        .insert_run(insert(
            &second,
            Some((CancelAction::Interrupt, vec![first.run_id])),
        ))
        .await
        .expect("replacement inserted");
    assert_eq!(run_status(&*store, &first).await, RunStatus::Interrupted);
    assert_eq!(checkpoints_of(&*store, thread_id, first.run_id).await, 1);
    assert_fenced(save_step(&*store, &first, 0, 1).await);
    assert_fenced(
        store
            .finish_run(finish(&first, RunStatus::Success, None))
            .await,
    );
    assert_eq!(
        thread_of(&*store, thread_id).await.status,
        ThreadStatus::Busy
    );
}

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

// ----- state -----

/// A state update writes its checkpoint and settles the thread on it: its values and pending
/// interrupts, idle or interrupted, any error cleared.
pub async fn update_state_writes_a_checkpoint_and_settles_the_thread_on_it(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    failed_run(store, thread_id).await;
    let before = thread_of(store, thread_id).await;
    pause().await;

    let state = update(thread_id, json!({ "topic": "x" }));
    store.update_state(state.clone()).await.expect("updated");
    assert_eq!(
        store.head(thread_id).await.expect("head"),
        Some(state.clone())
    );
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Idle);
    assert_eq!(thread.values, Some(json!({ "topic": "x" })));
    assert_eq!(thread.error, None);
    assert_eq!(thread.interrupts, JsonMap::new());
    assert!(thread.state_updated_at > before.state_updated_at);
    assert!(thread.updated_at > before.updated_at);

    let asking = asking();
    let paused = Checkpoint {
        next: vec!["ask".into()],
        tasks: vec![asking],
        ..update(thread_id, json!({ "topic": "y" }))
    };
    store.update_state(paused.clone()).await.expect("updated");
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Interrupted);
    assert_eq!(thread.values, Some(json!({ "topic": "y" })));
    assert_eq!(thread.interrupts, paused.interrupts_by_task());
    assert_eq!(thread.interrupts.len(), 1);
    assert_eq!(
        store.history(thread_id, every("")).await.expect("history"),
        vec![paused, state]
    );
}

/// The head is the root checkpoint with the greatest id (ids are time-ordered), whatever the
/// order of writing and however new a subgraph checkpoint is; `None` before any, `NotFound`
/// for an unknown thread.
pub async fn head_is_the_root_checkpoint_with_the_greatest_id(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(store.head(unknown).await),
        NotFound::Thread(unknown)
    );
    let thread_id = new_thread(store, json!({})).await;
    assert_eq!(store.head(thread_id).await.expect("head"), None);

    let (older, newer) = (CheckpointId::generate(), CheckpointId::generate());
    let newest = Checkpoint {
        checkpoint_id: newer,
        ..update(thread_id, json!({ "n": 2 }))
    };
    let oldest = Checkpoint {
        checkpoint_id: older,
        ..update(thread_id, json!({ "n": 1 }))
    };
    store.update_state(newest.clone()).await.expect("updated");
    store.update_state(oldest).await.expect("updated");
    let inner = Checkpoint {
        checkpoint_ns: "inner:task".into(),
        ..update(thread_id, json!({ "sub": 1 }))
    };
    store.update_state(inner).await.expect("updated");
    assert_eq!(store.head(thread_id).await.expect("head"), Some(newest));
    assert_eq!(
        thread_of(store, thread_id).await.values,
        Some(json!({ "n": 2 }))
    );
}

/// One checkpoint is read by thread, namespace and id; anything else is `None`, and an unknown
/// thread is `NotFound`.
pub async fn checkpoint_reads_one_checkpoint_by_namespace_and_id(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let root = update(thread_id, json!({ "n": 1 }));
    let inner = Checkpoint {
        checkpoint_ns: "inner:task".into(),
        ..update(thread_id, json!({ "sub": 1 }))
    };
    for written in [&root, &inner] {
        store.update_state(written.clone()).await.expect("updated");
    }
    let elsewhere = new_thread(store, json!({})).await;
    let read = |thread_id, namespace: &str, checkpoint_id| {
        store.checkpoint(thread_id, namespace.into(), checkpoint_id)
    };
    let cases = [
        (thread_id, "", root.checkpoint_id, Some(&root)),
        (thread_id, "inner:task", inner.checkpoint_id, Some(&inner)),
        (thread_id, "", inner.checkpoint_id, None),
        (thread_id, "inner:task", root.checkpoint_id, None),
        (thread_id, "", CheckpointId::generate(), None),
        (elsewhere, "", root.checkpoint_id, None),
    ];
    for (thread_id, namespace, checkpoint_id, expected) in cases {
        assert_eq!(
            read(thread_id, namespace, checkpoint_id)
                .await
                .expect("read"),
            expected.cloned(),
            "{namespace:?} {checkpoint_id}"
        );
    }
    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(read(unknown, "", root.checkpoint_id).await),
        NotFound::Thread(unknown)
    );
}

/// History lists one namespace newest first, and narrows by `limit`, `before`, `metadata` and
/// `checkpoint_id`, which combine; an unknown thread is `NotFound`.
pub async fn history_pages_newest_first_with_its_filters(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let mut roots = Vec::new();
    for step in 1..=4 {
        let parity = if step % 2 == 0 { "even" } else { "odd" };
        let state = Checkpoint {
            step,
            metadata: object(json!({ "step": step, "parity": parity })),
            ..update(thread_id, json!({ "n": step }))
        };
        store.update_state(state.clone()).await.expect("updated");
        roots.push(state);
    }
    let mut inner = Vec::new();
    for n in 1..=2 {
        let state = Checkpoint {
            checkpoint_ns: "inner:task".into(),
            ..update(thread_id, json!({ "sub": n }))
        };
        store.update_state(state.clone()).await.expect("updated");
        inner.push(state.checkpoint_id);
    }
    let [c1, c2, c3, c4] = [0, 1, 2, 3].map(|index| roots[index].checkpoint_id);
    let [s1, s2] = [inner[0], inner[1]];

    roots.reverse();
    assert_eq!(
        store.history(thread_id, every("")).await.expect("history"),
        roots
    );
    let root = every("");
    let cases = [
        (
            HistoryQuery {
                limit: 2,
                ..root.clone()
            },
            vec![c4, c3],
        ),
        (
            HistoryQuery {
                before: Some(c3),
                ..root.clone()
            },
            vec![c2, c1],
        ),
        (
            HistoryQuery {
                before: Some(c3),
                limit: 1,
                ..root.clone()
            },
            vec![c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "even" }))),
                ..root.clone()
            },
            vec![c4, c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "even", "step": 2 }))),
                ..root.clone()
            },
            vec![c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "even" }))),
                before: Some(c4),
                ..root.clone()
            },
            vec![c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "none" }))),
                ..root.clone()
            },
            vec![],
        ),
        (
            HistoryQuery {
                checkpoint_id: Some(c3),
                ..root.clone()
            },
            vec![c3],
        ),
        (
            HistoryQuery {
                checkpoint_id: Some(s1),
                ..root.clone()
            },
            vec![],
        ),
        (every("inner:task"), vec![s2, s1]),
        (
            HistoryQuery {
                before: Some(s2),
                ..every("inner:task")
            },
            vec![s1],
        ),
        (every("elsewhere"), vec![]),
    ];
    for (query, expected) in cases {
        let described = format!("{query:?}");
        assert_eq!(
            history_ids(store, thread_id, query).await,
            expected,
            "{described}"
        );
    }
    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(store.history(unknown, every("")).await),
        NotFound::Thread(unknown)
    );
}

// ----- assistants -----

/// When the first assistants of the suite were created.
const JANUARY_1: &str = "2020-01-01T00:00:00.000000+00:00";

/// Version 1 of a new `helper` assistant of the `agent` graph, created on January 1.
fn helper(metadata: Value) -> AssistantVersion {
    assistant(
        AssistantId::generate(),
        "agent",
        "helper",
        JANUARY_1,
        metadata,
    )
}

/// A new `helper` assistant with this metadata, created; returns its version 1.
async fn new_assistant(store: &dyn Store, metadata: Value) -> AssistantVersion {
    let first = helper(metadata);
    store
        .create_assistant(first.clone(), IfExists::Raise)
        .await
        .expect("created");
    first
}

/// The change that renames an assistant `renamed` and sets `stage: beta` in its metadata.
fn renaming() -> AssistantChange {
    AssistantChange {
        name: Some("renamed".into()),
        ..metadata_change(json!({ "stage": "beta" }))
    }
}

/// A new assistant is its version 1; its id taken, a create is a `Conflict`, or with
/// `do_nothing` answers the existing assistant unchanged.
pub async fn create_assistant_conflicts_unless_asked_to_do_nothing(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = helper(json!({ "team": "a" }));
    let assistant_id = first.assistant_id;
    assert_eq!(store.get_assistant(assistant_id).await.expect("read"), None);
    let created = store
        .create_assistant(first.clone(), IfExists::Raise)
        .await
        .expect("created");
    assert_eq!(created, first.clone().into_assistant(first.created_at));
    assert_eq!(
        store.get_assistant(assistant_id).await.expect("read"),
        Some(created.clone())
    );

    let rival = AssistantVersion {
        graph_id: "other".into(),
        name: "rival".into(),
        ..first
    };
    assert_eq!(
        conflict(store.create_assistant(rival.clone(), IfExists::Raise).await),
        AlreadyExists::Assistant(assistant_id)
    );
    let existing = store
        .create_assistant(rival, IfExists::DoNothing)
        .await
        .expect("the existing assistant");
    assert_eq!(existing, created);
    assert_eq!(
        store.get_assistant(assistant_id).await.expect("read"),
        Some(created)
    );
    assert_eq!(version_numbers(store, assistant_id, None, 10, 0).await, [1]);
    assert_eq!(assistant_count(store).await, 1);
}

/// A patch writes the next version from the current one: given fields replaced, metadata
/// merged, `created_at` kept; an unknown assistant is `NotFound(Assistant)`.
pub async fn patch_assistant_writes_the_next_version(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({ "team": "a" })).await;
    let assistant_id = first.assistant_id;
    let patched = store
        .patch_assistant(assistant_id, renaming())
        .await
        .expect("patched");
    assert_eq!(patched.version, 2);
    assert_eq!(patched.name, "renamed");
    assert_eq!(patched.graph_id, "agent");
    assert_eq!(
        patched.metadata,
        object(json!({ "team": "a", "stage": "beta" }))
    );
    assert_eq!(patched.created_at, first.created_at);
    assert!(patched.updated_at > first.created_at);
    let stored = store.get_assistant(assistant_id).await.expect("read");
    assert_eq!(wire(&stored), wire(&Some(patched)));

    let again = store
        .patch_assistant(assistant_id, metadata_change(json!({ "stage": "prod" })))
        .await
        .expect("patched");
    assert_eq!(again.version, 3);
    assert_eq!(again.name, "renamed");
    assert_eq!(
        again.metadata,
        object(json!({ "team": "a", "stage": "prod" }))
    );
    assert_eq!(
        version_numbers(store, assistant_id, None, 10, 0).await,
        [3, 2, 1]
    );

    let unknown = AssistantId::generate();
    assert_eq!(
        not_found(
            store
                .patch_assistant(unknown, AssistantChange::default())
                .await
        ),
        NotFound::Assistant(unknown)
    );
}

/// Setting a version points the assistant at a stored one without writing a new one; the next
/// patch builds on it and is numbered after the highest. An unknown version is
/// `NotFound(AssistantVersion)`, an unknown assistant `NotFound(Assistant)`.
pub async fn set_assistant_version_points_at_a_stored_version(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({ "team": "a" })).await;
    let assistant_id = first.assistant_id;
    store
        .patch_assistant(assistant_id, renaming())
        .await
        .expect("patched");

    let back = store
        .set_assistant_version(assistant_id, 1)
        .await
        .expect("set");
    assert_eq!(back.version, 1);
    assert_eq!(back.name, "helper");
    assert_eq!(back.metadata, first.metadata);
    assert_eq!(back.created_at, first.created_at);
    assert!(back.updated_at > first.created_at);
    let stored = store.get_assistant(assistant_id).await.expect("read");
    assert_eq!(wire(&stored), wire(&Some(back)));
    assert_eq!(
        version_numbers(store, assistant_id, None, 10, 0).await,
        [2, 1]
    );

    let forward = store
        .set_assistant_version(assistant_id, 2)
        .await
        .expect("set");
    assert_eq!((forward.version, forward.name.as_str()), (2, "renamed"));
    store
        .set_assistant_version(assistant_id, 1)
        .await
        .expect("set");
    let next = store
        .patch_assistant(assistant_id, metadata_change(json!({ "x": 1 })))
        .await
        .expect("patched");
    assert_eq!(next.version, 3);
    assert_eq!(next.name, "helper");
    assert_eq!(next.metadata, object(json!({ "team": "a", "x": 1 })));

    assert_eq!(
        not_found(store.set_assistant_version(assistant_id, 99).await),
        NotFound::AssistantVersion {
            assistant_id,
            version: 99
        }
    );
    let unknown = AssistantId::generate();
    assert_eq!(
        not_found(store.set_assistant_version(unknown, 1).await),
        NotFound::Assistant(unknown)
    );
}

/// Deleting an assistant deletes its versions (a new one of the same id starts at 1) but not
/// the threads that name it; an unknown assistant is `NotFound(AssistantToDelete)`.
pub async fn delete_assistant_removes_it_with_its_versions(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({})).await;
    let assistant_id = first.assistant_id;
    store
        .patch_assistant(assistant_id, metadata_change(json!({ "x": 1 })))
        .await
        .expect("patched");
    let thread_id = new_thread(store, json!({ "assistant_id": assistant_id })).await;

    store.delete_assistant(assistant_id).await.expect("deleted");
    assert_eq!(store.get_assistant(assistant_id).await.expect("read"), None);
    assert_eq!(
        version_numbers(store, assistant_id, None, 10, 0).await,
        Vec::<i64>::new()
    );
    assert_eq!(assistant_count(store).await, 0);
    assert_eq!(
        not_found(store.delete_assistant(assistant_id).await),
        NotFound::AssistantToDelete(assistant_id)
    );
    assert_eq!(
        not_found(
            store
                .patch_assistant(assistant_id, AssistantChange::default())
                .await
        ),
        NotFound::Assistant(assistant_id)
    );
    assert_eq!(
        not_found(store.set_assistant_version(assistant_id, 1).await),
        NotFound::Assistant(assistant_id)
    );
    assert_eq!(
        store
            .threads_of_assistant(assistant_id)
            .await
            .expect("threads"),
        vec![thread_id]
    );

    let again = store
        .create_assistant(first, IfExists::Raise)
        .await
        .expect("created again");
    assert_eq!(again.version, 1);
    assert_eq!(version_numbers(store, assistant_id, None, 10, 0).await, [1]);
}

/// Each graph without its system assistant gets one (version 1, named after the graph,
/// `created_by: system`); graphs that have one are skipped, so a second call creates none.
pub async fn ensure_system_assistants_creates_only_the_missing_ones(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let graphs = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
    let custom = assistant(
        AssistantId::for_graph("custom"),
        "custom",
        "mine",
        JANUARY_1,
        json!({}),
    );
    let custom = store
        .create_assistant(custom, IfExists::Raise)
        .await
        .expect("created");

    let ensure = |names| store.ensure_system_assistants(graphs(names));
    assert_eq!(ensure(&["agent", "other"]).await.expect("ensured"), 2);
    assert_eq!(ensure(&["agent", "other"]).await.expect("ensured"), 0);
    assert_eq!(
        ensure(&["agent", "third", "custom"])
            .await
            .expect("ensured"),
        1
    );
    assert_eq!(ensure(&[]).await.expect("ensured"), 0);
    assert_eq!(assistant_count(store).await, 4);

    let agent_id = AssistantId::for_graph("agent");
    let agent = store
        .get_assistant(agent_id)
        .await
        .expect("read")
        .expect("the system assistant");
    assert_eq!(agent.graph_id, "agent");
    assert_eq!(agent.name, "agent");
    assert_eq!(agent.version, 1);
    assert_eq!(agent.metadata, object(json!({ "created_by": "system" })));
    assert_eq!(agent.config, JsonMap::new());
    assert_eq!(agent.context, JsonMap::new());
    assert_eq!(agent.description, None);
    assert_eq!(agent.updated_at, agent.created_at);
    assert_eq!(version_numbers(store, agent_id, None, 10, 0).await, [1]);
    assert_eq!(
        store
            .get_assistant(custom.assistant_id)
            .await
            .expect("read"),
        Some(custom)
    );
}

/// Three assistants `[p, q, r]` with ids that sort `r, p, q`: `p` (graph `beta`, name `alpha
/// bot`, created 2020-01-03, `team: x`), `q` (`alpha`, `mid`, 2020-01-01, `team: x`), `r`
/// (`gamma`, `zeta helper`, 2020-01-02, `team: y`); then `r` and after it `q` patched
/// (`patched: 1`, `patched: 2`).
async fn three_assistants(store: &dyn Store) -> [AssistantId; 3] {
    let ids = sorted((0..3).map(|_| AssistantId::generate()).collect());
    let [r, p, q] = [ids[0], ids[1], ids[2]];
    let versions = [
        assistant(
            p,
            "beta",
            "alpha bot",
            "2020-01-03T00:00:00.000000+00:00",
            json!({ "team": "x" }),
        ),
        assistant(q, "alpha", "mid", JANUARY_1, json!({ "team": "x" })),
        assistant(
            r,
            "gamma",
            "zeta helper",
            "2020-01-02T00:00:00.000000+00:00",
            json!({ "team": "y" }),
        ),
    ];
    for version in versions {
        store
            .create_assistant(version, IfExists::Raise)
            .await
            .expect("created");
    }
    for (assistant_id, mark) in [(r, 1), (q, 2)] {
        pause().await;
        store
            .patch_assistant(assistant_id, metadata_change(json!({ "patched": mark })))
            .await
            .expect("patched");
    }
    [p, q, r]
}

/// Each filter of assistant search (and count) selects exactly its assistants: metadata,
/// graph, a case-insensitive part of the name; filters combine.
pub async fn search_assistants_filters_by_metadata_graph_and_name(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let [p, q, r] = three_assistants(store).await;
    let by_metadata = |metadata: Value| AssistantFilter {
        metadata: Some(object(metadata)),
        ..AssistantFilter::default()
    };
    let by_graph = |graph_id: &str| AssistantFilter {
        graph_id: Some(graph_id.into()),
        ..AssistantFilter::default()
    };
    let by_name = |name: &str| AssistantFilter {
        name: Some(name.into()),
        ..AssistantFilter::default()
    };
    let cases = [
        (AssistantFilter::default(), sorted(vec![p, q, r])),
        (by_metadata(json!({ "team": "x" })), sorted(vec![p, q])),
        (by_metadata(json!({ "patched": 2 })), vec![q]),
        (by_metadata(json!({ "team": "y", "patched": 1 })), vec![r]),
        (by_metadata(json!({ "team": "z" })), vec![]),
        (by_graph("beta"), vec![p]),
        (by_graph("delta"), vec![]),
        (by_name("BOT"), vec![p]),
        (by_name("e"), vec![r]),
        (by_name("A"), sorted(vec![p, r])),
        (by_name("zz"), vec![]),
        (
            AssistantFilter {
                name: Some("a".into()),
                ..by_metadata(json!({ "team": "x" }))
            },
            vec![p],
        ),
        (
            AssistantFilter {
                graph_id: Some("alpha".into()),
                ..by_name("MID")
            },
            vec![q],
        ),
    ];
    for (filter, expected) in cases {
        let described = format!("{filter:?}");
        assert_eq!(
            matching_assistants(store, filter).await,
            expected,
            "{described}"
        );
    }
}

/// Assistant search sorts by each key in both orders and pages.
pub async fn search_assistants_sorts_by_every_key_both_ways_and_pages(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let [p, q, r] = three_assistants(store).await;
    let expected = vec![
        (AssistantSortBy::AssistantId, vec![r, p, q]),
        (AssistantSortBy::GraphId, vec![q, p, r]),
        (AssistantSortBy::Name, vec![p, q, r]),
        (AssistantSortBy::CreatedAt, vec![q, r, p]),
        (AssistantSortBy::UpdatedAt, vec![p, r, q]),
    ];
    assert_sorted_and_paged(expected, |page| {
        assistant_page(store, AssistantFilter::default(), page)
    })
    .await;
}

/// An assistant's versions come newest first, page, and filter by their metadata; an unknown
/// assistant has none.
pub async fn assistant_versions_are_newest_first_and_filter_by_metadata(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({ "team": "x" })).await;
    let assistant_id = first.assistant_id;
    for stage in ["beta", "prod"] {
        store
            .patch_assistant(assistant_id, metadata_change(json!({ "stage": stage })))
            .await
            .expect("patched");
    }
    let cases = [
        (None, 10, 0, vec![3, 2, 1]),
        (None, 1, 1, vec![2]),
        (None, 10, 3, vec![]),
        (Some(json!({ "stage": "beta" })), 10, 0, vec![2]),
        (Some(json!({ "team": "x" })), 10, 0, vec![3, 2, 1]),
        (
            Some(json!({ "team": "x", "stage": "prod" })),
            10,
            0,
            vec![3],
        ),
        (Some(json!({ "stage": "none" })), 10, 0, vec![]),
    ];
    for (metadata, limit, offset, expected) in cases {
        let described = format!("{metadata:?} limit {limit} offset {offset}");
        assert_eq!(
            version_numbers(store, assistant_id, metadata, limit, offset).await,
            expected,
            "{described}"
        );
    }
    let versions = store
        .assistant_versions(assistant_id, None, 10, 0)
        .await
        .expect("versions");
    assert_eq!(versions[2], first);
    assert_eq!(
        versions[0].metadata,
        object(json!({ "team": "x", "stage": "prod" }))
    );
    assert_eq!(
        (versions[0].assistant_id, versions[0].name.as_str()),
        (assistant_id, "helper")
    );
    let unknown = AssistantId::generate();
    assert_eq!(
        version_numbers(store, unknown, None, 10, 0).await,
        Vec::<i64>::new()
    );
}

/// The counts of a sweep or prune: threads deleted, threads pruned, checkpoints deleted.
fn pruned(threads_deleted: u64, threads_pruned: u64, checkpoints_deleted: u64) -> PruneCounts {
    PruneCounts {
        threads_deleted,
        threads_pruned,
        checkpoints_deleted,
    }
}

// ----- retention -----

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
