//! Human in the loop: dynamic interrupts pause a run (thread `interrupted`, `interrupts` on the
//! thread and its state, `__interrupt__` from `/wait`, `/join` and streams), and `command`
//! resumes them (a bare value, or values by interrupt id), updates the state or goes elsewhere.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};
use crate::sse::names;

async fn wait(app: &TestApp, thread_id: &str, body: Value) -> Value {
    let reply = app
        .post(&format!("/threads/{thread_id}/runs/wait"), body)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

fn ask(text: &str) -> Value {
    json!({"assistant_id": "approval", "input": {"messages": [{"role": "user", "content": text}]}})
}

fn resume(value: Value) -> Value {
    json!({"assistant_id": "approval", "command": {"resume": value}})
}

fn interrupt_ids(result: &Value) -> Vec<String> {
    result["__interrupt__"]
        .as_array()
        .unwrap_or_else(|| panic!("no __interrupt__ in {result}"))
        .iter()
        .map(|interrupt| interrupt["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn interrupts_pause_the_run_and_resume_by_id_then_by_value() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let paused = wait(&app, &thread_id, ask("hello")).await;
    assert_eq!(paused["messages"][0]["content"], "hello");
    let interrupts = paused["__interrupt__"].as_array().unwrap();
    assert_eq!(interrupts.len(), 2);
    assert_eq!(interrupts[0]["value"], json!({"question": "first?"}));
    assert_eq!(interrupts[1]["value"], "second?");
    assert_eq!(interrupts[0]["response_schema"], Value::Null);

    let thread = app.get(&format!("/threads/{thread_id}")).await.body;
    assert_eq!(thread["status"], "interrupted");
    assert_eq!(thread["interrupts"].as_object().unwrap().len(), 2);
    let state = app.get(&format!("/threads/{thread_id}/state")).await.body;
    assert_eq!(state["next"], json!(["ask_first", "ask_second"]));
    assert_eq!(state["interrupts"].as_array().unwrap().len(), 2);
    assert_eq!(
        state["tasks"][0]["interrupts"][0]["id"],
        interrupts[0]["id"]
    );
    // /join of the finished run answers the same way.
    let runs = app.get(&format!("/threads/{thread_id}/runs")).await.body;
    let run_id = runs[0]["run_id"].as_str().unwrap();
    assert_eq!(runs[0]["status"], "success");
    let joined = app.join(&thread_id, run_id).await;
    assert_eq!(interrupt_ids(&joined), interrupt_ids(&paused));

    // A bare value cannot choose between two interrupts: the run fails and nothing changes.
    let ambiguous = wait(&app, &thread_id, resume(json!("yes"))).await;
    assert_eq!(ambiguous["__error__"]["error"], "RuntimeError");
    assert!(ambiguous["__error__"]["message"]
        .as_str()
        .unwrap()
        .starts_with("When there are multiple pending interrupts"));

    // Answer the first by id: the second asks again, the first is not asked again.
    let ids = interrupt_ids(&paused);
    let partly = wait(&app, &thread_id, resume(json!({ ids[0].clone(): "yes" }))).await;
    let again = partly["__interrupt__"].as_array().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["value"], "second?");
    let state = app.get(&format!("/threads/{thread_id}/state")).await.body;
    assert_eq!(state["tasks"][0]["result"], json!({"first": "yes"}));

    // Now a bare value answers the only pending interrupt, and the run goes on to the reply.
    let done = wait(&app, &thread_id, resume(json!("no"))).await;
    assert!(done.get("__interrupt__").is_none(), "{done}");
    assert_eq!(
        (done["first"].clone(), done["second"].clone()),
        (json!("yes"), json!("no"))
    );
    assert_eq!(done["messages"][1]["content"], "You said: hello");
    let thread = app.get(&format!("/threads/{thread_id}")).await.body;
    assert_eq!(thread["status"], "idle");
    assert_eq!(thread["interrupts"], json!({}));

    // Nothing left to resume: the run fails with a clear error.
    let nothing = wait(&app, &thread_id, resume(json!("again"))).await;
    assert_eq!(nothing["__error__"]["error"], "ValueError");
}

#[tokio::test]
async fn streams_carry_the_interrupt_in_updates_and_values() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let mut body = ask("hi");
    body["stream_mode"] = json!(["updates"]);
    let events = app.stream_run(&thread_id, body).await.collect().await;
    assert_eq!(names(&events), ["metadata", "updates", "values"]);
    assert_eq!(events[1].data["__interrupt__"].as_array().unwrap().len(), 2);
    assert_eq!(
        events[2].data["__interrupt__"],
        events[1].data["__interrupt__"]
    );
    assert_eq!(events[2].data["messages"][0]["content"], "hi");
}

#[tokio::test]
async fn command_update_and_goto_continue_elsewhere() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    wait(&app, &thread_id, ask("edit me")).await;
    let done = wait(
        &app,
        &thread_id,
        json!({"assistant_id": "approval", "command": {"update": {"first": "edited"}, "goto": "reply"}}),
    )
    .await;
    assert!(done.get("__interrupt__").is_none(), "{done}");
    assert_eq!(done["first"], "edited");
    assert_eq!(done["messages"][1]["content"], "You said: edit me");
    let history = app
        .get(&format!("/threads/{thread_id}/history?limit=2"))
        .await
        .body;
    assert_eq!(history[1]["metadata"]["source"], "input");
    assert_eq!(history[1]["next"], json!(["reply"]));

    for (command, field) in [
        (json!("resume"), "command"),
        (json!({"goto": 5}), "goto"),
        (json!({"update": [1]}), "update"),
        (json!({"jump": "reply"}), "jump"),
        (json!({"goto": "nowhere"}), "'nowhere' is not a node"),
        (json!({"goto": "__end__"}), "'__end__' is not a node"),
        (json!({"goto": "__start__"}), "'__start__' is not a node"),
        (
            json!({"goto": {"node": "nowhere", "input": {}}}),
            "'nowhere'",
        ),
    ] {
        let before = app.row_counts().await;
        let reply = app
            .post(
                &format!("/threads/{thread_id}/runs"),
                json!({"assistant_id": "approval", "command": command}),
            )
            .await;
        assert_eq!(reply.status, 422, "{command}: {:?}", reply.body);
        assert!(reply.detail().contains(field), "{}", reply.detail());
        assert_eq!(app.row_counts().await, before);
    }
    // Nothing was written: the thread is as the last run left it.
    assert_eq!(app.thread_status(&thread_id).await, "idle");
}

#[tokio::test]
async fn goto_sends_run_a_node_once_per_send_on_its_own_input() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let first = json!({"assistant_id": "outer", "input": {"messages": [{"role": "user", "content": "hi"}]}});
    wait(&app, &thread_id, first).await;
    let human = |text: &str| json!({"messages": [{"type": "human", "content": text, "id": text}]});
    let sends = json!({"assistant_id": "outer", "command": {"goto": [
        {"node": "answer", "input": human("left")},
        {"node": "answer", "input": human("right")},
    ]}});
    let result = wait(&app, &thread_id, sends).await;
    let contents: Vec<&str> = result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    // Each Send's task answered its own input; the inputs themselves never reached the state.
    assert_eq!(
        contents[3..],
        ["You said: left", "You said: right"],
        "{contents:?}"
    );
    assert_eq!(contents.len(), 5);
    let history = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 2}),
        )
        .await
        .body;
    let command_checkpoint = &history[1];
    assert_eq!(command_checkpoint["metadata"]["source"], "input");
    assert_eq!(command_checkpoint["next"], json!(["answer", "answer"]));
    let tasks = command_checkpoint["tasks"].as_array().unwrap();
    assert_ne!(tasks[0]["id"], tasks[1]["id"]);

    let bad = app
        .post(
            &format!("/threads/{thread_id}/runs"),
            json!({"assistant_id": "outer", "command": {"goto": {"node": "answer", "input": 3}}}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.detail().contains("Send"), "{}", bad.detail());
}

#[tokio::test]
async fn interrupts_of_tasks_that_sends_started_are_answered_one_by_one() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let paused = wait(&app, &thread_id, ask("hello")).await;
    let both = interrupt_ids(&paused);
    let answer_both: serde_json::Map<String, Value> =
        both.iter().map(|id| (id.clone(), json!("ok"))).collect();
    wait(&app, &thread_id, resume(Value::Object(answer_both))).await;
    // Two Sends to the same interrupt node: two tasks, two interrupts.
    let sends = json!({"assistant_id": "approval", "command": {"goto": [
        {"node": "ask", "input": {}},
        {"node": "ask", "input": {}},
    ]}});
    let asked = wait(&app, &thread_id, sends).await;
    let ids = interrupt_ids(&asked);
    assert_eq!(ids.len(), 2, "{asked}");
    assert_ne!(ids[0], ids[1]);
    // Answering the second only: the first task asks again; the superstep changes no state
    // until both are answered.
    let partial = wait(&app, &thread_id, resume(json!({ids[1].clone(): "B"}))).await;
    assert_eq!(partial["answers"], json!([]), "{partial}");
    assert_eq!(interrupt_ids(&partial).len(), 1, "{partial}");
    let done = wait(&app, &thread_id, resume(json!("A"))).await;
    // Each task wrote its own answer, merged in task order.
    assert_eq!(done["answers"], json!(["A", "B"]), "{done}");
    assert!(done.get("__interrupt__").is_none(), "{done}");
    assert_eq!(app.thread_status(&thread_id).await, "idle");
}
