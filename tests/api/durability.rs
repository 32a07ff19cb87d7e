//! Durability and operations in one process: supervision faults (a thread actor or a run actor
//! dies), run and node time limits, idle thread actors retiring and coming back, and the drain
//! of a graceful shutdown. Crashes of the real binary (SIGKILL) are in tests/crash.rs; SIGTERM
//! in tests/shutdown.rs.

use std::time::Duration;

use serde_json::{json, Value};
use spindle::actors::{GetThread, InjectFault, JoinRun, LiveThreads, Shutdown, ThreadError};
use spindle::domain::ids::{RunId, ThreadId};

use crate::helpers::{run_id, spawn_app, spawn_app_with, TestApp, DEADLINE};

fn thread_id(text: &str) -> ThreadId {
    ThreadId(text.parse().unwrap())
}

async fn inject(app: &TestApp, thread: &str, fault: InjectFault) {
    inject_into(app, thread, fault).await.unwrap();
}

/// Injects a fault; the reply is an error when the fault killed the actor before it answered.
async fn inject_into(
    app: &TestApp,
    thread: &str,
    fault: InjectFault,
) -> Result<(), actix::MailboxError> {
    let actor = app
        .registry
        .send(GetThread {
            thread_id: thread_id(thread),
        })
        .await
        .unwrap();
    actor.send(fault).await
}

async fn attempts(app: &TestApp, run: &str) -> i64 {
    app.query_integer(
        "SELECT attempts FROM runs WHERE run_id = ?",
        vec![run.to_owned()],
    )
    .await
}

/// Polls until the registry holds `count` thread actors.
async fn wait_for_live_threads(app: &TestApp, count: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let live = app.registry.send(LiveThreads).await.unwrap();
        if live == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{live} thread actors live, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_thread_actor_that_dies_is_restarted_and_resumes_its_run_and_its_queue() {
    let app = spawn_app().await;
    let thread = app.create_thread().await;
    let first = run_id(&app.gated_run(&thread, "first", "held", "enqueue").await);
    app.gates.arrivals("held", 1).await;
    let second = run_id(&app.gated_run(&thread, "second", "open", "enqueue").await);
    let third = run_id(&app.gated_run(&thread, "third", "open", "enqueue").await);
    app.gates.open("open");

    inject(&app, &thread, InjectFault::ThreadActorDies).await;
    // The restarted actor rebuilt its queue from SQLite and continued the running run: it
    // reached the gate again, as a second attempt whose first one can no longer write.
    app.gates.arrivals("held", 2).await;
    assert_eq!(attempts(&app, &first).await, 2);
    app.gates.open("held");

    for run in [&first, &second, &third] {
        app.join(&thread, run).await;
        assert_eq!(app.run_status(&thread, run).await, "success");
    }
    app.wait_for_thread_status(&thread, "idle").await;
    assert_eq!(
        app.messages(&thread).await,
        [
            ("human", "first"),
            ("ai", "You said: first"),
            ("human", "second"),
            ("ai", "You said: second"),
            ("human", "third"),
            ("ai", "You said: third"),
        ]
        .map(|(kind, text)| (kind.to_owned(), text.to_owned()))
    );
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[tokio::test]
async fn a_resumed_run_reports_its_real_attempt_on_its_stream_and_in_its_checkpoints() {
    let app = spawn_app().await;
    let thread = app.create_thread().await;
    let run = run_id(
        &app.create_run(
            &thread,
            json!({
                "assistant_id": "gated",
                "input": {"messages": [{"role": "user", "content": "held"}]},
                "config": {"configurable": {"gate": "held"}},
                "stream_resumable": true,
            }),
        )
        .await,
    );
    app.gates.arrivals("held", 1).await;
    inject(&app, &thread, InjectFault::ThreadActorDies).await;
    // The restarted actor resumed the run as a second attempt, which reached the gate again.
    app.gates.arrivals("held", 2).await;
    app.gates.open("held");
    app.join(&thread, &run).await;

    let events = app
        .join_stream(&thread, &run, Some("-"))
        .await
        .collect()
        .await;
    let attempts: Vec<&Value> = events
        .iter()
        .filter(|event| event.name == "metadata")
        .map(|event| &event.data["attempt"])
        .collect();
    assert_eq!(attempts, [&json!(1), &json!(2)], "{events:?}");

    let history = app
        .post(&format!("/threads/{thread}/history"), json!({"limit": 10}))
        .await;
    let by_step: Vec<(i64, i64)> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|state| {
            let metadata = &state["metadata"];
            (
                metadata["step"].as_i64().unwrap(),
                metadata["run_attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    // Newest first: the gate and the reply by the second attempt, the input and the start by
    // the first.
    assert_eq!(by_step, [(2, 2), (1, 2), (0, 1), (-1, 1)]);
}

#[tokio::test]
async fn a_thread_actor_that_panics_in_a_handler_is_replaced_and_its_thread_goes_on() {
    let app = spawn_app().await;
    let thread = app.create_thread().await;
    app.gates.open("open");
    let first = run_id(&app.gated_run(&thread, "first", "open", "enqueue").await);
    app.join(&thread, &first).await;

    // A panic kills an actix actor for good (its supervisor restarts only actors that stop):
    // the registry must not keep handing out the dead address.
    let killed = inject_into(&app, &thread, InjectFault::ThreadActorPanics).await;
    assert!(killed.is_err(), "the panicking handler did not answer");

    // A command that reached the dead actor's mailbox before it closed gets a 503 to retry;
    // the thread must not stay unreachable.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let second = loop {
        let reply = app.gated_run(&thread, "second", "open", "enqueue").await;
        if reply.status != 503 || tokio::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(second.status, 200, "{:?}", second.body);
    app.join(&thread, &run_id(&second)).await;
    assert_eq!(app.human_messages(&thread).await, ["first", "second"]);
    app.wait_for_thread_status(&thread, "idle").await;
}

#[tokio::test]
async fn a_run_whose_thread_actor_panics_continues_at_once_under_a_new_actor() {
    let app = spawn_app().await;
    let thread = app.create_thread().await;
    let held = run_id(&app.gated_run(&thread, "held", "held", "enqueue").await);
    app.gates.arrivals("held", 1).await;

    let killed = inject_into(&app, &thread, InjectFault::ThreadActorPanics).await;
    assert!(killed.is_err(), "the panicking handler did not answer");
    // No client command follows: the registry learns of the death and starts a new actor,
    // which resumes the run as a second attempt.
    app.gates.arrivals("held", 2).await;
    app.gates.open("held");
    app.join(&thread, &held).await;
    assert_eq!(app.run_status(&thread, &held).await, "success");
    assert_eq!(attempts(&app, &held).await, 2);
    assert_eq!(app.human_messages(&thread).await, ["held"]);
    app.wait_for_thread_status(&thread, "idle").await;
}

#[tokio::test]
async fn a_state_update_whose_reducers_panic_fails_only_that_request() {
    let app = spawn_app().await;
    let thread = app.create_thread().await;
    app.gates.open("open");
    let first = run_id(&app.gated_run(&thread, "first", "open", "enqueue").await);
    app.join(&thread, &first).await;
    let update = json!({"values": {"messages": [{"role": "user", "content": "edited"}]}});

    inject(&app, &thread, InjectFault::StateUpdatePanics).await;
    let failed = app
        .post(&format!("/threads/{thread}/state"), update.clone())
        .await;
    assert_eq!(failed.status, 500, "{:?}", failed.body);
    assert_eq!(failed.detail(), "Internal Server Error");

    // The thread's actor lived through it: the same update now works, and so do runs.
    let updated = app.post(&format!("/threads/{thread}/state"), update).await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    let second = run_id(&app.gated_run(&thread, "second", "open", "enqueue").await);
    app.join(&thread, &second).await;
    assert_eq!(
        app.human_messages(&thread).await,
        ["first", "edited", "second"]
    );
}

#[tokio::test]
async fn a_run_actor_that_dies_fails_its_run_and_the_thread_moves_on() {
    let app = spawn_app().await;
    let thread = app.create_thread().await;
    let first = run_id(&app.gated_run(&thread, "first", "held", "enqueue").await);
    app.gates.arrivals("held", 1).await;
    let second = run_id(&app.gated_run(&thread, "second", "open", "enqueue").await);
    app.gates.open("open");

    inject(&app, &thread, InjectFault::RunActorDies).await;
    app.join(&thread, &second).await;
    let failed = app
        .get(&format!("/threads/{thread}/runs/{first}"))
        .await
        .body;
    assert_eq!(failed["status"], "error", "{failed}");
    assert_eq!(app.run_status(&thread, &second).await, "success");
    app.wait_for_thread_status(&thread, "idle").await;
    // The failed run's input stays, as with any failed run; it got no answer.
    assert_eq!(
        app.messages(&thread).await,
        [
            ("human", "first"),
            ("human", "second"),
            ("ai", "You said: second")
        ]
        .map(|(kind, text)| (kind.to_owned(), text.to_owned()))
    );
    let joined = app.join(&thread, &first).await;
    assert_eq!(
        joined["__error__"]["message"], "the run actor stopped unexpectedly",
        "{joined}"
    );
}

#[tokio::test]
async fn a_run_past_its_time_limit_ends_with_status_timeout_and_the_thread_moves_on() {
    let app = spawn_app_with(|settings| settings.runtime.run_timeout_seconds = 0.3).await;
    let thread = app.create_thread().await;
    let slow = run_id(&app.gated_run(&thread, "slow", "never", "enqueue").await);
    let next = run_id(&app.gated_run(&thread, "next", "open", "enqueue").await);
    app.gates.open("open");
    let joined = app.join(&thread, &slow).await;
    assert_eq!(joined["__error__"]["error"], "TimeoutError", "{joined}");
    assert!(
        joined["__error__"]["message"]
            .as_str()
            .unwrap()
            .contains("run_timeout_seconds"),
        "{joined}"
    );
    assert_eq!(app.run_status(&thread, &slow).await, "timeout");
    app.join(&thread, &next).await;
    assert_eq!(app.run_status(&thread, &next).await, "success");
    app.wait_for_thread_status(&thread, "idle").await;
}

#[tokio::test]
async fn a_node_past_its_time_limit_fails_the_run_with_a_clear_error() {
    let app = spawn_app_with(|settings| settings.runtime.node_timeout_seconds = 0.3).await;
    let thread = app.create_thread().await;
    let slow = run_id(&app.gated_run(&thread, "slow", "never", "enqueue").await);
    let joined = app.join(&thread, &slow).await;
    assert_eq!(joined["__error__"]["error"], "NodeTimeoutError", "{joined}");
    let message = joined["__error__"]["message"].as_str().unwrap();
    assert!(
        message.contains("'gate'") && message.contains("node_timeout_seconds"),
        "{message}"
    );
    assert_eq!(app.run_status(&thread, &slow).await, "error");
    app.wait_for_thread_status(&thread, "error").await;
}

#[tokio::test]
async fn idle_thread_actors_retire_and_come_back_on_the_next_command() {
    let app = spawn_app_with(|settings| settings.runtime.actor_idle_seconds = 0.2).await;
    let thread = app.create_thread().await;
    app.gates.open("open");
    let first = run_id(&app.gated_run(&thread, "first", "open", "enqueue").await);
    app.join(&thread, &first).await;
    wait_for_live_threads(&app, 0).await;

    // The retired actor refuses commands that still reach it, unhandled, so the sender asks
    // the registry again.
    let retired = app
        .registry
        .send(GetThread {
            thread_id: thread_id(&thread),
        })
        .await
        .unwrap();
    wait_for_live_threads(&app, 0).await;
    let refused = retired
        .send(JoinRun {
            run_id: RunId(first.parse().unwrap()),
        })
        .await
        .unwrap();
    assert!(matches!(refused, Err(ThreadError::Retired)), "{refused:?}");
    drop(retired);

    // The next command gets a fresh actor, rebuilt from SQLite.
    let second = run_id(&app.gated_run(&thread, "second", "open", "enqueue").await);
    app.join(&thread, &second).await;
    assert_eq!(app.human_messages(&thread).await, ["first", "second"]);
    wait_for_live_threads(&app, 0).await;
}

#[tokio::test]
async fn a_shutdown_refuses_new_runs_and_stops_the_running_one_to_resume_later() {
    let app = spawn_app().await;
    let thread = app.create_thread().await;
    let held = run_id(&app.gated_run(&thread, "held", "held", "enqueue").await);
    app.gates.arrivals("held", 1).await;
    let queued = run_id(&app.gated_run(&thread, "queued", "open", "enqueue").await);

    let report = app
        .registry
        .send(Shutdown {
            grace: Duration::from_millis(100),
        })
        .await
        .unwrap();
    assert_eq!(report.stopped, 1);

    let refused = app
        .create_run(
            &thread,
            json!({"assistant_id": "gated", "input": {"messages": []}}),
        )
        .await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(
        refused.detail().contains("shutting down"),
        "{:?}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    // The stopped run is pending again, with its attempt given back; the queued one stays pending.
    assert_eq!(app.run_status(&thread, &held).await, "pending");
    assert_eq!(attempts(&app, &held).await, 0);
    assert_eq!(app.run_status(&thread, &queued).await, "pending");
    assert_eq!(app.thread_status(&thread).await, "busy");
}
