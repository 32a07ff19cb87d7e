//! Runs: create, wait, join, list, get, delete, cancel, breakpoints, errors, scheduling.

use serde_json::{json, Value};

use spindle::domain::ids::AssistantId;

use crate::helpers::{run_id, spawn_app, spawn_app_with};

fn echo(text: &str) -> Value {
    json!({"assistant_id": "echo", "input": {"messages": [{"role": "user", "content": text}]}})
}

#[tokio::test]
async fn creating_a_run_returns_it_pending_with_its_content_location() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app.create_run(&thread_id, echo("hi")).await;
    assert_eq!(reply.status, 200);
    let run = &reply.body;
    assert_eq!(run["status"], "pending");
    assert_eq!(run["thread_id"], thread_id);
    assert_eq!(
        run["assistant_id"],
        AssistantId::for_graph("echo").to_string()
    );
    assert_eq!(run["multitask_strategy"], "enqueue");
    assert_eq!(run["kwargs"]["stream_mode"], json!(["values"]));
    assert_eq!(run["metadata"]["graph_id"], "echo");
    let keys: Vec<&str> = run
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "run_id",
            "thread_id",
            "assistant_id",
            "metadata",
            "status",
            "kwargs",
            "multitask_strategy",
            "created_at",
            "updated_at"
        ]
    );
    let location = reply.headers["content-location"].to_str().unwrap();
    assert_eq!(
        location,
        format!(
            "/threads/{thread_id}/runs/{}",
            run["run_id"].as_str().unwrap()
        )
    );
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(thread.body["metadata"]["graph_id"], "echo");
}

#[tokio::test]
async fn wait_returns_the_final_values_with_location_headers() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": "what's the weather in nyc?"}]},
                   "config": {"configurable": {"delay": 0}}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let kinds: Vec<&str> = reply.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["human", "ai", "tool", "ai"]);
    assert_eq!(
        reply.body["messages"][1]["tool_calls"][0]["args"],
        json!({"query": "weather in nyc"})
    );
    let content_location = reply.headers["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        format!("{content_location}/join")
    );
    let run = app.get(&content_location).await;
    assert_eq!(run.body["status"], "success");
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(thread.body["status"], "idle");
    assert_eq!(thread.body["values"], reply.body);
}

#[tokio::test]
async fn join_returns_the_values_of_that_run_not_of_the_thread() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let first = run_id(
        &app.gated_run(&thread_id, "one", &thread_id, "enqueue")
            .await,
    );
    let second = run_id(
        &app.gated_run(&thread_id, "two", &thread_id, "enqueue")
            .await,
    );
    app.gates.open(&thread_id);
    let latest = app.join(&thread_id, &second).await;
    assert_eq!(latest["messages"].as_array().unwrap().len(), 4);
    let earlier = app.join(&thread_id, &first).await;
    let contents: Vec<&str> = earlier["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["one", "You said: one"]);
}

#[tokio::test]
async fn joining_an_unknown_run_answers_the_not_found_error_object() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let missing = uuid::Uuid::now_v7();
    let body = app.join(&thread_id, &missing.to_string()).await;
    assert_eq!(
        body,
        json!({"__error__": {"error": "HTTPException", "message": "404: Run not found"}})
    );
}

#[tokio::test]
async fn a_failing_node_fails_its_run_and_the_thread_until_a_run_succeeds() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "faulty", "input": {}, "config": {"configurable": {"fault": "error"}}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({"__error__": {"error": "ValueError", "message": "the fault node failed on purpose"}})
    );
    let failed_run = reply.headers["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get(&failed_run).await.body["status"], "error");
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(thread.body["status"], "error");
    assert_eq!(thread.body["error"]["error"], "ValueError");
    // Joining it later gives the same error.
    let joined = app.get(&format!("{failed_run}/join")).await;
    assert_eq!(
        joined.body["__error__"]["message"],
        "the fault node failed on purpose"
    );

    let ok = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "faulty", "input": {}}),
        )
        .await;
    assert_eq!(ok.status, 200);
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(
        (thread.body["status"].clone(), thread.body["error"].clone()),
        (json!("idle"), Value::Null)
    );
}

#[tokio::test]
async fn a_panicking_node_fails_only_its_own_run() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "faulty", "input": {}, "config": {"configurable": {"fault": "panic"}}}),
        )
        .await;
    assert_eq!(reply.body["__error__"]["error"], "NodePanic");
    assert!(reply.body["__error__"]["message"]
        .as_str()
        .unwrap()
        .contains("panicked on purpose"));
    // The server and the thread keep working.
    let other = app.create_thread().await;
    let fine = app
        .post(&format!("/threads/{other}/runs/wait"), echo("still here"))
        .await;
    assert_eq!(fine.body["messages"][0]["content"], "still here");
    let again = app
        .post(&format!("/threads/{thread_id}/runs/wait"), echo("again"))
        .await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn runs_are_listed_newest_first_and_filtered_by_status() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let mut ids = Vec::new();
    for text in ["a", "b", "c"] {
        let reply = app
            .post(&format!("/threads/{thread_id}/runs/wait"), echo(text))
            .await;
        ids.push(
            reply.headers["content-location"]
                .to_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    let listed = app.get(&format!("/threads/{thread_id}/runs")).await;
    let listed: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["run_id"].as_str().unwrap())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    let page = app
        .get(&format!(
            "/threads/{thread_id}/runs?limit=1&offset=1&select=run_id&select=status"
        ))
        .await;
    assert_eq!(page.body, json!([{"run_id": ids[1], "status": "success"}]));
    let none = app
        .get(&format!("/threads/{thread_id}/runs?status=error"))
        .await;
    assert_eq!(none.body, json!([]));
    let unknown = app
        .get(&format!("/threads/{}/runs", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn cancel_interrupt_keeps_the_run_and_its_checkpoints() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let run = run_id(
        &app.gated_run(&thread_id, "hold", &thread_id, "enqueue")
            .await,
    );
    app.gates.arrivals(&thread_id, 1).await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel"),
            json!(null),
        )
        .await;
    assert_eq!((reply.status, reply.body.clone()), (202, Value::Null));
    assert_eq!(app.run_status(&thread_id, &run).await, "interrupted");
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(
        thread.body["status"], "interrupted",
        "the gate node was still to run"
    );
    assert_eq!(app.human_messages(&thread_id).await, ["hold"]);
    let again = app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel"),
            json!(null),
        )
        .await;
    assert_eq!(again.status, 404);
    assert!(again.detail().starts_with("No matching runs to cancel"));
    let unknown = app
        .post(
            &format!("/threads/{thread_id}/runs/{}/cancel", uuid::Uuid::now_v7()),
            json!(null),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.detail()),
        (404, "No runs found to cancel.")
    );
    // Nothing the stopped run does later can write: open its gate and run something else.
    app.gates.open(&thread_id);
    let resumed = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "gated", "input": null,
        "config": {"configurable": {"gate": thread_id}}}),
        )
        .await;
    assert_eq!(resumed.body["messages"][1]["content"], "You said: hold");
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[tokio::test]
async fn cancel_with_wait_answers_the_values_once_stopped() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let run = run_id(
        &app.gated_run(&thread_id, "hold", &thread_id, "enqueue")
            .await,
    );
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel?wait=1"),
            json!(null),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["messages"][0]["content"], "hold");
    assert!(reply.headers.contains_key("content-location"));
}

#[tokio::test]
async fn cancel_rollback_deletes_the_run_and_reverts_the_state() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    app.gates.open("open");
    app.post(
        &format!("/threads/{thread_id}/runs/wait"),
        json!({"assistant_id": "gated", "input": {"messages": "kept"},
        "config": {"configurable": {"gate": "open"}}}),
    )
    .await;
    let run = run_id(
        &app.gated_run(&thread_id, "dropped", &thread_id, "enqueue")
            .await,
    );
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel?action=rollback"),
            json!(null),
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(
        app.get(&format!("/threads/{thread_id}/runs/{run}"))
            .await
            .status,
        404
    );
    assert_eq!(app.human_messages(&thread_id).await, ["kept"]);
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(
        thread.body["status"], "idle",
        "no thread stays busy after a rollback"
    );
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[tokio::test]
async fn cancelling_a_queued_run_leaves_the_active_one_running() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let active = run_id(
        &app.gated_run(&thread_id, "first", &thread_id, "enqueue")
            .await,
    );
    let queued = run_id(
        &app.gated_run(&thread_id, "second", &thread_id, "enqueue")
            .await,
    );
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/{queued}/cancel"),
            json!(null),
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(app.run_status(&thread_id, &queued).await, "interrupted");
    assert_eq!(app.thread_status(&thread_id).await, "busy");
    app.gates.open(&thread_id);
    app.join(&thread_id, &active).await;
    assert_eq!(app.human_messages(&thread_id).await, ["first"]);
    app.wait_for_thread_status(&thread_id, "idle").await;
}

#[tokio::test]
async fn deleting_an_active_run_stops_it_first() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let run = run_id(
        &app.gated_run(&thread_id, "doomed", &thread_id, "enqueue")
            .await,
    );
    app.gates.arrivals(&thread_id, 1).await;
    let reply = app
        .delete(&format!("/threads/{thread_id}/runs/{run}"))
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        app.get(&format!("/threads/{thread_id}/runs/{run}"))
            .await
            .status,
        404
    );
    assert_eq!(app.thread_status(&thread_id).await, "idle");
    let checkpoints = app.count("SELECT COUNT(*) FROM checkpoints").await;
    assert_eq!(checkpoints, 0, "the run's checkpoints went with it");
    // The gate opening now must not let the deleted run write anything.
    app.gates.open(&thread_id);
    let later = app
        .post(&format!("/threads/{thread_id}/runs/wait"), echo("after"))
        .await;
    assert_eq!(later.status, 200);
    assert_eq!(app.human_messages(&thread_id).await, ["after"]);
    assert_eq!(app.orphaned_checkpoints().await, 0);
    let missing = app
        .delete(&format!("/threads/{thread_id}/runs/{run}"))
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn bulk_cancel_by_ids_and_by_status() {
    let app = spawn_app().await;
    let first_thread = app.create_thread().await;
    let second_thread = app.create_thread().await;
    let first = run_id(
        &app.gated_run(&first_thread, "x", &first_thread, "enqueue")
            .await,
    );
    let second = run_id(
        &app.gated_run(&second_thread, "y", &second_thread, "enqueue")
            .await,
    );
    let by_ids = app
        .post(
            "/runs/cancel",
            json!({"thread_id": first_thread, "run_ids": [first]}),
        )
        .await;
    assert_eq!(by_ids.status, 204);
    assert_eq!(app.run_status(&first_thread, &first).await, "interrupted");
    let by_status = app
        .post("/runs/cancel?action=rollback", json!({"status": "all"}))
        .await;
    assert_eq!(by_status.status, 204);
    assert_eq!(
        app.get(&format!("/threads/{second_thread}/runs/{second}"))
            .await
            .status,
        404
    );
    let nothing = app.post("/runs/cancel", json!({"status": "running"})).await;
    assert_eq!(nothing.status, 404);
    let both = app
        .post(
            "/runs/cancel",
            json!({"status": "all", "thread_id": first_thread}),
        )
        .await;
    assert_eq!(both.status, 422);
    let empty = app.post("/runs/cancel", json!({})).await;
    assert_eq!(empty.status, 422);
}

#[tokio::test]
async fn after_seconds_keeps_a_run_pending_until_due() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let mut body = echo("later");
    body["after_seconds"] = json!(0.5);
    let reply = app.create_run(&thread_id, body).await;
    let run = run_id(&reply);
    assert_eq!(app.run_status(&thread_id, &run).await, "pending");
    assert_eq!(app.thread_status(&thread_id).await, "busy");
    let refused = app
        .create_run(
            &thread_id,
            json!({"assistant_id": "echo", "input": {}, "multitask_strategy": "reject"}),
        )
        .await;
    assert_eq!(refused.status, 409, "a scheduled run counts as in flight");
    let values = app.join(&thread_id, &run).await;
    assert_eq!(values["messages"][0]["content"], "later");
    assert_eq!(app.run_status(&thread_id, &run).await, "success");
}

#[tokio::test]
async fn a_static_breakpoint_stops_the_run_and_input_null_resumes_it() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "agent", "input": {"messages": "what's the weather in sf?"},
                   "interrupt_before": ["tools"], "config": {"configurable": {"delay": 0}}}),
        )
        .await;
    assert_eq!(reply.body["messages"].as_array().unwrap().len(), 2);
    assert!(reply.body.get("__interrupt__").is_none());
    let run = reply.headers["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get(&run).await.body["status"], "success");
    assert_eq!(app.thread_status(&thread_id).await, "interrupted");
    let state = app.get(&format!("/threads/{thread_id}/state")).await;
    assert_eq!(state.body["next"], json!(["tools"]));
    assert_eq!(state.body["tasks"][0]["name"], "tools");

    let resumed = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "agent", "input": null, "interrupt_before": ["tools"], "config": {"configurable": {"delay": 0}}}),
        )
        .await;
    let kinds: Vec<&str> = resumed.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["human", "ai", "tool", "ai"]);
    assert_eq!(app.thread_status(&thread_id).await, "idle");

    let after = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "agent", "input": {"messages": "weather in paris"}, "interrupt_after": ["agent"],
                   "config": {"configurable": {"delay": 0}}}),
        )
        .await;
    assert_eq!(after.body["messages"].as_array().unwrap().len(), 6);
    assert_eq!(
        app.get(&format!("/threads/{thread_id}/state")).await.body["next"],
        json!(["tools"])
    );
}

#[tokio::test]
async fn if_not_exists_create_makes_the_thread() {
    let app = spawn_app().await;
    let thread_id = uuid::Uuid::now_v7().to_string();
    let refused = app.create_run(&thread_id, echo("x")).await;
    assert_eq!(
        (refused.status, refused.detail()),
        (404, "Thread or assistant not found.")
    );
    let mut body = echo("x");
    body["if_not_exists"] = json!("create");
    body["metadata"] = json!({"owner": "me"});
    let run = run_id(&app.create_run(&thread_id, body).await);
    app.join(&thread_id, &run).await;
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(thread.status, 200);
    assert_eq!(thread.body["metadata"]["owner"], "me");
    assert_eq!(
        thread.body["metadata"].get("created_by"),
        None,
        "the thread gets the request's metadata, not the assistant's"
    );
}

#[tokio::test]
async fn assistants_are_named_by_graph_id_or_uuid() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let echo_id = AssistantId::for_graph("echo").to_string();
    let by_uuid = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": echo_id, "input": {"messages": "x"}}),
        )
        .await;
    assert_eq!(by_uuid.status, 200);
    assert_eq!(by_uuid.body["messages"][0]["content"], "x");
    let unknown_uuid = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": uuid::Uuid::new_v4(), "input": {}}),
        )
        .await;
    assert_eq!(
        (unknown_uuid.status, unknown_uuid.detail()),
        (404, "Thread or assistant not found.")
    );
    let unknown = app
        .post(
            &format!("/threads/{thread_id}/runs"),
            json!({"assistant_id": "nope", "input": {}}),
        )
        .await;
    assert_eq!(unknown.status, 422);
    assert!(
        unknown.detail().contains(
            "One of the registered graphs: agent, approval, echo, emitter, faulty, gated"
        ),
        "{}",
        unknown.detail()
    );
}

/// Another process holds the database's write lock longer than the busy timeout while a run
/// ends: the run fails cleanly, its end is recorded once the lock is gone, and no thread is left
/// busy. (The sleep sets how long the injected fault lasts; no assertion depends on timing.)
#[tokio::test]
async fn a_write_lock_held_by_another_process_never_leaves_a_thread_busy() {
    let app = spawn_app_with(|settings| settings.database.busy_timeout_ms = 100).await;
    let thread_id = app.create_thread().await;
    let run = run_id(
        &app.gated_run(&thread_id, "locked out", &thread_id, "enqueue")
            .await,
    );
    let queued = run_id(
        &app.gated_run(&thread_id, "after the lock", &thread_id, "enqueue")
            .await,
    );
    app.gates.arrivals(&thread_id, 1).await;
    let path = app.database_path.clone();
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let holder = std::thread::spawn(move || {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        connection.execute_batch("COMMIT").unwrap();
    });
    is_locked.await.unwrap();
    app.gates.open(&thread_id);
    let failed = app.join(&thread_id, &run).await;
    assert_eq!(failed["__error__"]["error"], "StorageError", "{failed}");
    holder.join().unwrap();
    let next = app.join(&thread_id, &queued).await;
    assert_eq!(
        next["messages"].as_array().unwrap().last().unwrap()["content"],
        "You said: after the lock"
    );
    assert_eq!(app.run_status(&thread_id, &run).await, "error");
    app.wait_for_thread_status(&thread_id, "idle").await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM runs WHERE status IN ('pending', 'running')")
            .await,
        0
    );
}
