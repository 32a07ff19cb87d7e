//! Double-texting under load: many threads at once, five rapid texts per thread, for each
//! strategy. Every thread is checked: the runs that remain and their statuses, the human
//! messages in the state, rolled-back runs being 404, no checkpoint of a deleted run, no thread
//! left busy.

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{run_id, spawn_app, Reply, TestApp};

const THREADS: usize = 100;
const TEXTS: usize = 5;

fn text(thread: usize, number: usize) -> String {
    format!("thread {thread} text {number}")
}

/// Sends `TEXTS` texts with `strategy` to each of `THREADS` new threads of the `gated` graph,
/// all threads at once, while each thread's first run is held at its gate; then opens the gates.
/// Returns each thread's id and the replies to its texts.
async fn texts_on_many_threads(app: &TestApp, strategy: &str) -> Vec<(String, Vec<Reply>)> {
    let threads = join_all((0..THREADS).map(|_| app.create_thread())).await;
    join_all(
        threads
            .into_iter()
            .enumerate()
            .map(|(index, thread_id)| async move {
                let mut replies = Vec::new();
                for number in 1..=TEXTS {
                    replies.push(
                        app.gated_run(&thread_id, &text(index, number), &thread_id, strategy)
                            .await,
                    );
                }
                app.gates.open(&thread_id);
                (thread_id, replies)
            }),
    )
    .await
}

async fn run_statuses(app: &TestApp, thread_id: &str) -> Vec<(String, String)> {
    let reply = app
        .get(&format!("/threads/{thread_id}/runs?limit=100"))
        .await;
    assert_eq!(reply.status, 200);
    let mut runs: Vec<(String, String)> = reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            (
                run["run_id"].as_str().unwrap().to_owned(),
                run["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    runs.reverse(); // oldest first
    runs
}

async fn assert_storage_is_clean(app: &TestApp) {
    assert_eq!(
        app.orphaned_checkpoints().await,
        0,
        "a checkpoint references a deleted run"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM threads WHERE status = 'busy'")
            .await,
        0,
        "a thread was left busy"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM runs WHERE status IN ('pending', 'running')")
            .await,
        0,
        "a run was left in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_on_100_threads_keeps_only_the_last_text_and_deletes_the_rest() {
    let app = spawn_app().await;
    let threads = texts_on_many_threads(&app, "rollback").await;
    join_all(
        threads
            .iter()
            .enumerate()
            .map(|(index, (thread_id, replies))| {
                let app = &app;
                async move {
                    let run_ids: Vec<String> = replies.iter().map(run_id).collect();
                    let last = &run_ids[TEXTS - 1];
                    let values = app.join(thread_id, last).await;
                    assert_eq!(values["messages"].as_array().unwrap().len(), 2, "{values}");
                    assert_eq!(
                        run_statuses(app, thread_id).await,
                        vec![(last.clone(), "success".to_owned())]
                    );
                    for rolled_back in &run_ids[..TEXTS - 1] {
                        let reply = app
                            .get(&format!("/threads/{thread_id}/runs/{rolled_back}"))
                            .await;
                        assert_eq!(
                            reply.status, 404,
                            "rolled-back run {rolled_back} still exists"
                        );
                    }
                    assert_eq!(
                        app.human_messages(thread_id).await,
                        vec![text(index, TEXTS)]
                    );
                    let messages = app.messages(thread_id).await;
                    assert_eq!(
                        messages[1],
                        ("ai".to_owned(), format!("You said: {}", text(index, TEXTS)))
                    );
                    let thread = app.get(&format!("/threads/{thread_id}")).await;
                    assert_eq!(thread.body["status"], "idle");
                }
            }),
    )
    .await;
    assert_storage_is_clean(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM runs").await, THREADS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupt_on_100_threads_keeps_every_text_and_interrupts_all_but_the_last() {
    let app = spawn_app().await;
    let threads = texts_on_many_threads(&app, "interrupt").await;
    join_all(
        threads
            .iter()
            .enumerate()
            .map(|(index, (thread_id, replies))| {
                let app = &app;
                async move {
                    let run_ids: Vec<String> = replies.iter().map(run_id).collect();
                    app.join(thread_id, &run_ids[TEXTS - 1]).await;
                    let expected: Vec<(String, String)> = run_ids
                        .iter()
                        .enumerate()
                        .map(|(number, run_id)| {
                            let status = if number == TEXTS - 1 {
                                "success"
                            } else {
                                "interrupted"
                            };
                            (run_id.clone(), status.to_owned())
                        })
                        .collect();
                    assert_eq!(run_statuses(app, thread_id).await, expected);
                    // Each run applied its input when it started, and each started before the next text.
                    let texts: Vec<String> =
                        (1..=TEXTS).map(|number| text(index, number)).collect();
                    assert_eq!(app.human_messages(thread_id).await, texts);
                    let messages = app.messages(thread_id).await;
                    assert_eq!(
                        messages.last().unwrap().1,
                        format!("You said: {}", text(index, TEXTS))
                    );
                    assert_eq!(messages.len(), TEXTS + 1);
                    let thread = app.get(&format!("/threads/{thread_id}")).await;
                    assert_eq!(thread.body["status"], "idle");
                }
            }),
    )
    .await;
    assert_storage_is_clean(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueue_on_100_threads_runs_every_text_in_order() {
    let app = spawn_app().await;
    let threads = texts_on_many_threads(&app, "enqueue").await;
    join_all(
        threads
            .iter()
            .enumerate()
            .map(|(index, (thread_id, replies))| {
                let app = &app;
                async move {
                    let run_ids: Vec<String> = replies.iter().map(run_id).collect();
                    app.join(thread_id, &run_ids[TEXTS - 1]).await;
                    let expected: Vec<(String, String)> = run_ids
                        .iter()
                        .map(|run_id| (run_id.clone(), "success".to_owned()))
                        .collect();
                    assert_eq!(run_statuses(app, thread_id).await, expected);
                    let conversation: Vec<(String, String)> = (1..=TEXTS)
                        .flat_map(|number| {
                            [
                                ("human".to_owned(), text(index, number)),
                                (
                                    "ai".to_owned(),
                                    format!("You said: {}", text(index, number)),
                                ),
                            ]
                        })
                        .collect();
                    assert_eq!(app.messages(thread_id).await, conversation);
                    let thread = app.get(&format!("/threads/{thread_id}")).await;
                    assert_eq!(thread.body["status"], "idle");
                }
            }),
    )
    .await;
    assert_storage_is_clean(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reject_on_100_threads_refuses_every_text_while_the_first_runs() {
    let app = spawn_app().await;
    let rows_before = app.count("SELECT COUNT(*) FROM runs").await;
    let threads = texts_on_many_threads(&app, "reject").await;
    join_all(threads.iter().enumerate().map(|(index, (thread_id, replies))| {
        let app = &app;
        async move {
            let first = run_id(&replies[0]);
            for refused in &replies[1..] {
                assert_eq!(refused.status, 409, "{:?}", refused.body);
                assert_eq!(
                    refused.detail(),
                    "Thread is already running a task. Wait for it to finish or choose a different multitask strategy."
                );
            }
            app.join(thread_id, &first).await;
            assert_eq!(run_statuses(app, thread_id).await, vec![(first, "success".to_owned())]);
            assert_eq!(app.human_messages(thread_id).await, vec![text(index, 1)]);
            let thread = app.get(&format!("/threads/{thread_id}")).await;
            assert_eq!(thread.body["status"], "idle");
        }
    }))
    .await;
    assert_storage_is_clean(&app).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM runs").await,
        rows_before + THREADS as i64
    );
}

/// Without gates, with the real agent graph and real timing: a text may arrive while the
/// previous run is mid-step, just finishing, or already done. Whatever the timing, a run either
/// finished before the next text (it stays, `success`) or was rolled back (404, no trace).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_races_on_100_threads_never_leave_a_trace_of_a_rolled_back_run() {
    let app = spawn_app().await;
    let threads = join_all((0..THREADS).map(|_| app.create_thread())).await;
    let sent = join_all(threads.iter().enumerate().map(|(index, thread_id)| {
        let app = &app;
        async move {
            let mut run_ids = Vec::new();
            for number in 1..=TEXTS {
                let reply = app
                    .create_run(
                        thread_id,
                        json!({
                            "assistant_id": "agent",
                            "input": {"messages": [{"role": "user", "content": format!("weather in {}", text(index, number))}]},
                            "config": {"configurable": {"delay": 0.01 * (number % 3) as f64}},
                            "multitask_strategy": "rollback",
                        }),
                    )
                    .await;
                run_ids.push(run_id(&reply));
            }
            (thread_id.clone(), run_ids)
        }
    }))
    .await;
    let mut survivors_total = 0;
    for (thread_id, run_ids) in &sent {
        app.join(thread_id, run_ids.last().unwrap()).await;
        let runs = run_statuses(&app, thread_id).await;
        assert!(
            runs.iter().all(|(_, status)| status == "success"),
            "{runs:?}"
        );
        assert_eq!(runs.last().unwrap().0, *run_ids.last().unwrap());
        let mut expected_humans = Vec::new();
        for (number, run_id) in run_ids.iter().enumerate() {
            let reply = app
                .get(&format!("/threads/{thread_id}/runs/{run_id}"))
                .await;
            if runs.iter().any(|(survivor, _)| survivor == run_id) {
                assert_eq!(reply.status, 200);
                expected_humans.push(number);
            } else {
                assert_eq!(
                    reply.status, 404,
                    "run {run_id} was neither kept nor deleted"
                );
            }
        }
        let humans = app.human_messages(thread_id).await;
        let index = threads
            .iter()
            .position(|thread| thread == thread_id)
            .unwrap();
        let expected: Vec<String> = expected_humans
            .iter()
            .map(|number| format!("weather in {}", text(index, number + 1)))
            .collect();
        assert_eq!(
            humans, expected,
            "the state holds exactly the inputs of the surviving runs"
        );
        // Every surviving run answered completely: human, tool call, tool result, answer.
        assert_eq!(
            app.messages(thread_id).await.len(),
            4 * expected_humans.len()
        );
        survivors_total += expected_humans.len();
    }
    assert!(survivors_total >= THREADS);
    assert_storage_is_clean(&app).await;
}
