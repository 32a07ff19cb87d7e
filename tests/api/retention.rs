//! Retention: `POST /threads/prune` (delete, keep_latest, validation) and the idle-thread sweeper
//! (delete and prune), which must leave threads with runs in flight and recently updated threads
//! alone.

use std::time::Duration;

use serde_json::{json, Value};
use spindle::config::RetentionAction;

use crate::helpers::{run_id, spawn_app, spawn_app_with, TestApp, DEADLINE};

/// Rows of `table` (`runs` or `checkpoints`) that belong to the thread.
async fn rows_of(app: &TestApp, table: &'static str, thread_id: &str) -> i64 {
    app.query_integer(
        &format!("SELECT COUNT(*) FROM {table} WHERE thread_id = ?"),
        vec![thread_id.to_owned()],
    )
    .await
}

/// A thread with `runs` finished runs of the `gated` graph (its gate `open` opened), each adding
/// two messages and several checkpoints.
async fn thread_with_runs(app: &TestApp, runs: usize) -> String {
    app.gates.open("open");
    let thread_id = app.create_thread().await;
    for index in 0..runs {
        let reply = app
            .post(
                &format!("/threads/{thread_id}/runs/wait"),
                json!({
                    "assistant_id": "gated",
                    "input": {"messages": [{"role": "user", "content": format!("message {index}")}]},
                    "config": {"configurable": {"gate": "open"}},
                }),
            )
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    thread_id
}

/// A thread whose `gated` run waits at gate `gate` until the test opens it; returns
/// `(thread_id, run_id)`.
async fn thread_with_held_run(app: &TestApp, gate: &str) -> (String, String) {
    let thread_id = app.create_thread().await;
    let run = app.gated_run(&thread_id, "held", gate, "reject").await;
    let run_id = run_id(&run);
    app.gates.arrivals(gate, 1).await;
    (thread_id, run_id)
}

async fn prune(app: &TestApp, body: Value) -> crate::helpers::Reply {
    app.post("/threads/prune", body).await
}

async fn history_length(app: &TestApp, thread_id: &str) -> usize {
    let history = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 100}),
        )
        .await;
    assert_eq!(history.status, 200, "{:?}", history.body);
    history.body.as_array().unwrap().len()
}

/// Polls `done` every few milliseconds until it holds; fails naming `what` at the deadline.
async fn poll_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn prune_delete_removes_the_threads_with_their_runs_and_checkpoints_and_skips_unknown_ids() {
    let app = spawn_app().await;
    let first = thread_with_runs(&app, 1).await;
    let second = thread_with_runs(&app, 2).await;
    let kept = thread_with_runs(&app, 1).await;
    let kept_checkpoints = rows_of(&app, "checkpoints", &kept).await;
    let unknown = uuid::Uuid::new_v4().to_string();

    let reply = prune(
        &app,
        json!({"thread_ids": [first, unknown, second, first], "strategy": "delete"}),
    )
    .await;

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body, json!({"pruned_count": 2}));
    for thread_id in [&first, &second] {
        assert_eq!(app.get(&format!("/threads/{thread_id}")).await.status, 404);
        assert_eq!(rows_of(&app, "runs", thread_id).await, 0);
        assert_eq!(rows_of(&app, "checkpoints", thread_id).await, 0);
    }
    assert_eq!(app.get(&format!("/threads/{kept}")).await.status, 200);
    assert_eq!(rows_of(&app, "checkpoints", &kept).await, kept_checkpoints);
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[actix_web::test]
async fn prune_defaults_to_delete_and_stops_a_run_in_flight_first() {
    let app = spawn_app().await;
    let (thread_id, run_id) = thread_with_held_run(&app, "prune-delete").await;

    let reply = prune(&app, json!({"thread_ids": [thread_id]})).await;

    assert_eq!(reply.body, json!({"pruned_count": 1}));
    assert_eq!(app.get(&format!("/threads/{thread_id}")).await.status, 404);
    assert_eq!(app.run_status(&thread_id, &run_id).await, Value::Null);
    app.gates.open("prune-delete");
    assert_eq!(rows_of(&app, "checkpoints", &thread_id).await, 0);
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[actix_web::test]
async fn prune_keep_latest_keeps_only_the_head_so_the_state_is_unchanged() {
    let app = spawn_app().await;
    let thread_id = thread_with_runs(&app, 2).await;
    let state_before = app.get(&format!("/threads/{thread_id}/state")).await.body;
    let thread_before = app.get(&format!("/threads/{thread_id}")).await.body;
    assert!(rows_of(&app, "checkpoints", &thread_id).await > 2);
    let unknown = uuid::Uuid::new_v4().to_string();

    let reply = prune(
        &app,
        json!({"thread_ids": [thread_id, unknown], "strategy": "keep_latest"}),
    )
    .await;

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body, json!({"pruned_count": 1}));
    assert_eq!(rows_of(&app, "checkpoints", &thread_id).await, 1);
    assert_eq!(rows_of(&app, "runs", &thread_id).await, 2);
    assert_eq!(
        app.get(&format!("/threads/{thread_id}/state")).await.body,
        state_before
    );
    assert_eq!(history_length(&app, &thread_id).await, 1);
    assert_eq!(
        app.get(&format!("/threads/{thread_id}")).await.body,
        thread_before,
        "pruning changes neither the thread's values nor its updated_at"
    );
    assert_eq!(
        app.human_messages(&thread_id).await,
        ["message 0", "message 1"]
    );
}

#[actix_web::test]
async fn prune_keep_latest_skips_a_thread_with_a_run_in_flight() {
    let app = spawn_app().await;
    let idle = thread_with_runs(&app, 2).await;
    let (busy, run_id) = thread_with_held_run(&app, "prune-busy").await;
    let busy_checkpoints = rows_of(&app, "checkpoints", &busy).await;
    assert!(busy_checkpoints > 0);

    let reply = prune(
        &app,
        json!({"thread_ids": [busy, idle], "strategy": "keep_latest"}),
    )
    .await;

    assert_eq!(reply.body, json!({"pruned_count": 1}));
    assert_eq!(rows_of(&app, "checkpoints", &idle).await, 1);
    assert_eq!(rows_of(&app, "checkpoints", &busy).await, busy_checkpoints);
    app.gates.open("prune-busy");
    let result = app.join(&busy, &run_id).await;
    assert_eq!(result["messages"][1]["content"], "You said: held");
    assert_eq!(app.run_status(&busy, &run_id).await, "success");
}

#[actix_web::test]
async fn prune_rejects_bad_input_with_a_422_naming_the_field() {
    let app = spawn_app().await;
    let thread_id = thread_with_runs(&app, 1).await;
    let counts_before = app.row_counts().await;
    let too_many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let cases = [
        (json!({}), "thread_ids"),
        (json!({"thread_ids": thread_id}), "thread_ids"),
        (json!({"thread_ids": [thread_id, "nope"]}), "thread_ids[1]"),
        (
            json!({"thread_ids": [thread_id], "strategy": "all"}),
            "strategy",
        ),
        (json!({"thread_ids": too_many}), "thread_ids"),
    ];

    for (body, field) in cases {
        let reply = prune(&app, body.clone()).await;

        assert_eq!(reply.status, 422, "{body}: {:?}", reply.body);
        assert!(
            reply.detail().contains(&format!("`{field}`")),
            "{body}: {}",
            reply.detail()
        );
    }
    assert_eq!(app.row_counts().await, counts_before);
}

/// Test settings with retention on: threads idle for a second are swept every 50 ms.
fn sweeping(action: RetentionAction) -> impl FnOnce(&mut spindle::config::Settings) {
    move |settings| {
        settings.retention.thread_idle_days = 1.0 / 86_400.0;
        settings.retention.action = action;
        settings.retention.keep_checkpoints = 1;
        settings.retention.sweep_interval_seconds = 0.05;
    }
}

#[actix_web::test]
async fn the_sweeper_deletes_idle_threads_but_not_busy_or_recently_updated_ones() {
    let app = spawn_app_with(sweeping(RetentionAction::Delete)).await;
    // The busy thread is older than the idle one, so the sweep that takes the idle one sees it.
    let (busy, run_id) = thread_with_held_run(&app, "sweep-busy").await;
    let fresh = app.create_thread().await;
    let idle = thread_with_runs(&app, 1).await;

    // Keeping `fresh` updated while waiting proves the sweeper spares a recent thread.
    poll_until("the idle thread is deleted", || async {
        let patched = app
            .request(
                reqwest::Method::PATCH,
                &format!("/threads/{fresh}"),
                Some(json!({"metadata": {"touched": true}})),
            )
            .await;
        assert_eq!(patched.status, 200, "the fresh thread was swept");
        app.get(&format!("/threads/{idle}")).await.status == 404
    })
    .await;

    assert_eq!(rows_of(&app, "runs", &idle).await, 0);
    assert_eq!(rows_of(&app, "checkpoints", &idle).await, 0);
    assert_eq!(app.get(&format!("/threads/{busy}")).await.status, 200);
    app.gates.open("sweep-busy");
    let result = app.join(&busy, &run_id).await;
    assert_eq!(result["messages"][1]["content"], "You said: held");
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[actix_web::test]
async fn the_sweeper_prunes_idle_threads_to_their_head_but_leaves_busy_ones_alone() {
    let app = spawn_app_with(sweeping(RetentionAction::Prune)).await;
    let (busy, run_id) = thread_with_held_run(&app, "sweep-prune").await;
    let busy_checkpoints = rows_of(&app, "checkpoints", &busy).await;
    let idle = thread_with_runs(&app, 2).await;
    let state_before = app.get(&format!("/threads/{idle}/state")).await.body;

    poll_until("the idle thread keeps one checkpoint", || async {
        rows_of(&app, "checkpoints", &idle).await == 1
    })
    .await;

    assert_eq!(
        app.get(&format!("/threads/{idle}/state")).await.body,
        state_before
    );
    assert_eq!(rows_of(&app, "runs", &idle).await, 2);
    assert_eq!(rows_of(&app, "checkpoints", &busy).await, busy_checkpoints);
    app.gates.open("sweep-prune");
    app.join(&busy, &run_id).await;
    assert_eq!(app.run_status(&busy, &run_id).await, "success");
}
