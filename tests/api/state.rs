//! Thread state and history: reading, checkpoints linked to their parents, updates, forks.

use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_fresh_thread_has_the_empty_state_and_no_history() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let state = app.get(&format!("/threads/{thread_id}/state")).await;
    assert_eq!(state.body["values"], json!({}));
    assert_eq!(state.body["checkpoint"], Value::Null);
    let history = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 10}),
        )
        .await;
    assert_eq!(history.body, json!([]));
    assert_eq!(
        app.get(&format!("/threads/{}/state", uuid::Uuid::now_v7()))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn history_is_newest_first_and_each_checkpoint_links_to_its_parent() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let run = app
        .post(&format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "agent", "input": {"messages": "weather in sf"}, "config": {"configurable": {"delay": 0}},
                   "metadata": {"tag": "t1"}}))
        .await;
    let run_id = run.headers["content-location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let history = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 10}),
        )
        .await;
    let entries = history.body.as_array().unwrap();
    let steps: Vec<i64> = entries
        .iter()
        .map(|entry| entry["metadata"]["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [3, 2, 1, 0, -1]);
    let sources: Vec<&str> = entries
        .iter()
        .map(|entry| entry["metadata"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["loop", "loop", "loop", "loop", "input"]);
    for pair in entries.windows(2) {
        assert_eq!(
            pair[0]["parent_checkpoint"]["checkpoint_id"],
            pair[1]["checkpoint"]["checkpoint_id"]
        );
        assert_eq!(pair[0]["parent_checkpoint_id"], pair[1]["checkpoint_id"]);
    }
    assert_eq!(entries[4]["parent_checkpoint"], Value::Null);
    assert_eq!(entries[4]["tasks"][0]["name"], "__start__");
    assert_eq!(
        entries[4]["tasks"][0]["result"],
        json!({"messages": "weather in sf"})
    );
    let metadata = &entries[0]["metadata"];
    assert_eq!(
        (
            metadata["run_id"].as_str().unwrap(),
            metadata["tag"].as_str().unwrap()
        ),
        (run_id.as_str(), "t1")
    );
    assert_eq!(metadata["graph_id"], "agent");
    assert_eq!(metadata["delay"], 0);

    let state = app.get(&format!("/threads/{thread_id}/state")).await;
    assert_eq!(state.body, entries[0].clone());
    let default_limit = app.get(&format!("/threads/{thread_id}/history")).await;
    assert_eq!(default_limit.body.as_array().unwrap().len(), 1);
    let before = entries[1]["checkpoint_id"].as_str().unwrap();
    let older = app
        .get(&format!(
            "/threads/{thread_id}/history?limit=10&before={before}"
        ))
        .await;
    assert_eq!(older.body.as_array().unwrap().len(), 3);
    let by_object = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 10, "before": {"checkpoint_id": before}}),
        )
        .await;
    assert_eq!(by_object.body, older.body);
    let inputs = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 10, "metadata": {"source": "input"}}),
        )
        .await;
    assert_eq!(inputs.body.as_array().unwrap().len(), 1);
    let at = app
        .get(&format!(
            "/threads/{thread_id}/state/{}",
            entries[2]["checkpoint_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(at.body, entries[2].clone());
    let posted = app
        .post(
            &format!("/threads/{thread_id}/state/checkpoint"),
            json!({"checkpoint": {"checkpoint_id": entries[2]["checkpoint_id"]}}),
        )
        .await;
    assert_eq!(posted.body, entries[2].clone());
    let unknown = app
        .get(&format!(
            "/threads/{thread_id}/state/{}",
            uuid::Uuid::now_v7()
        ))
        .await;
    assert_eq!(unknown.status, 404);
    let bad_limit = app
        .get(&format!("/threads/{thread_id}/history?limit=abc"))
        .await;
    assert_eq!(
        (bad_limit.status, bad_limit.detail()),
        (422, "Invalid limit abc")
    );
}

#[tokio::test]
async fn a_second_run_continues_the_step_count() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    for text in ["one", "two"] {
        app.post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "echo", "input": {"messages": text}}),
        )
        .await;
    }
    let history = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 10}),
        )
        .await;
    let steps: Vec<i64> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["metadata"]["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [4, 3, 2, 1, 0, -1]);
}

#[tokio::test]
async fn updating_the_state_as_the_agent_with_a_tool_call_makes_tools_next() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let never_run = app
        .post(
            &format!("/threads/{thread_id}/state"),
            json!({"values": {"messages": "x"}}),
        )
        .await;
    assert_eq!(never_run.status, 400);
    assert!(never_run.detail().contains("has no assigned graph ID"));
    app.post(&format!("/threads/{thread_id}/runs/wait"), json!({"assistant_id": "agent", "input": {"messages": "hello"}, "config": {"configurable": {"delay": 0}}})).await;
    let update = app
        .post(
            &format!("/threads/{thread_id}/state"),
            json!({"as_node": "agent", "values": {"messages": [{"role": "assistant", "content": "",
                "tool_calls": [{"id": "call_1", "name": "tavily_search_results_json", "args": {"query": "weather in rome"}}]}]}}),
        )
        .await;
    assert_eq!(update.status, 200, "{:?}", update.body);
    let checkpoint_id = update.body["checkpoint_id"].as_str().unwrap().to_owned();
    assert_eq!(update.body["checkpoint"]["checkpoint_id"], checkpoint_id);
    let state = app.get(&format!("/threads/{thread_id}/state")).await;
    assert_eq!(state.body["next"], json!(["tools"]));
    assert_eq!(state.body["metadata"]["source"], "update");
    assert_eq!(state.body["checkpoint_id"], checkpoint_id);
    assert_eq!(app.thread_status(&thread_id).await, "interrupted");
    let unknown_node = app
        .post(
            &format!("/threads/{thread_id}/state"),
            json!({"as_node": "bogus", "values": {}}),
        )
        .await;
    assert_eq!(
        (unknown_node.status, unknown_node.detail()),
        (400, "Node bogus does not exist")
    );
    // Resuming runs the tool and the model's answer.
    let resumed = app.post(&format!("/threads/{thread_id}/runs/wait"), json!({"assistant_id": "agent", "input": null, "config": {"configurable": {"delay": 0}}})).await;
    let last = resumed.body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["content"]
            .as_str()
            .unwrap()
            .starts_with("The weather in rome is"),
        "{last}"
    );
}

#[tokio::test]
async fn updating_the_state_while_a_run_is_in_flight_conflicts() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    app.gated_run(&thread_id, "x", &thread_id, "enqueue").await;
    let update = app
        .post(
            &format!("/threads/{thread_id}/state"),
            json!({"values": {"messages": "y"}}),
        )
        .await;
    assert_eq!(update.status, 409);
    assert!(update
        .detail()
        .starts_with(&format!("Thread {thread_id} has in-flight runs")));
    app.gates.open(&thread_id);
}

#[tokio::test]
async fn running_from_a_past_checkpoint_forks_the_history() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    for text in ["first", "second"] {
        app.post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "echo", "input": {"messages": text}}),
        )
        .await;
    }
    let history = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 10}),
        )
        .await;
    let after_first = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["metadata"]["step"] == 1)
        .unwrap()
        .clone();
    let source_id = after_first["checkpoint_id"].as_str().unwrap();
    let fork = app
        .post(&format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "echo", "input": {"messages": "branch"}, "checkpoint_id": source_id}))
        .await;
    let contents: Vec<&str> = fork.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["first", "branch"]);
    assert_eq!(app.human_messages(&thread_id).await, ["first", "branch"]);
    let replay = app
        .post(&format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "echo", "input": null, "checkpoint": {"checkpoint_id": source_id}}))
        .await;
    assert_eq!(replay.status, 200);
    let state = app.get(&format!("/threads/{thread_id}/state")).await;
    assert_eq!(state.body["metadata"]["source"], "fork");
    assert_eq!(state.body["metadata"]["step"], 2);
    assert_eq!(state.body["parent_checkpoint_id"], source_id);
    assert_eq!(app.human_messages(&thread_id).await, ["first"]);
}
