//! Conformance checks of the run life cycle and its fencing: insert, start, checkpoint saves,
//! finish, settle, stop, delete, release, resume, rollback and interrupt; a write of a run that
//! is not running in that attempt is `Fenced`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::support::{
    asking, assert_fenced, assert_run_gone, assert_settled, boom, checkpoint, checkpoints_of,
    end_while_others_wait, ended_run, every, failed_run, finish, history_ids, in_flight, insert,
    inserted, new_thread, not_found, object, one_started_run, pause, pending_run, root_ids, run,
    run_status, save_step, saved, started_run, task, thread_of, wire,
};
use crate::domain::checkpoint::{Checkpoint, CheckpointSource};
use crate::domain::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use crate::domain::multitask::CancelAction;
use crate::domain::run::{Run, RunStatus};
use crate::domain::thread::ThreadStatus;
use crate::domain::{JsonMap, NotFound};
use crate::storage::{FinishRun, InsertRun, Store};

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

/// A run whose assistant does not exist (it was deleted) is `NotFound` and nothing is written,
/// so a deletion of an assistant and the creation of its runs cannot interleave.
pub async fn insert_run_refuses_a_run_whose_assistant_is_gone(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let agent = AssistantId::for_graph("agent");
    store.delete_assistant(agent).await.expect("deleted");
    assert_eq!(
        not_found(store.insert_run(insert(&run(thread_id), None)).await),
        NotFound::ThreadOrAssistant
    );
    assert_eq!(
        store.in_flight_runs(thread_id).await.expect("in flight"),
        vec![]
    );
    assert_eq!(thread_of(store, thread_id).await.status, ThreadStatus::Idle);
    let created = ThreadId::generate();
    let asked = InsertRun {
        create_thread_metadata: Some(JsonMap::new()),
        ..insert(&run(created), None)
    };
    assert_eq!(
        not_found(store.insert_run(asked).await),
        NotFound::ThreadOrAssistant
    );
    assert_eq!(
        not_found(store.get_thread(created).await),
        NotFound::Thread(created)
    );
}
