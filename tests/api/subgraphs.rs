//! Subgraphs: a node that runs another configured graph. Its checkpoints live in their own
//! namespace (`<node>:<task_id>`), its updates reach the parent once, and `stream_subgraphs`
//! streams its events with a `|<namespace>` suffix.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};
use crate::sse::names;

fn ask(text: &str, extra: Value) -> Value {
    let mut body = json!({"assistant_id": "outer", "input": {"messages": [{"role": "user", "content": text}]}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn stream(app: &TestApp, thread_id: &str, body: Value) -> Vec<crate::sse::SseEvent> {
    app.stream_run(thread_id, body).await.collect().await
}

#[tokio::test]
async fn a_subgraph_runs_in_its_own_namespace_and_updates_its_parent_once() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            ask("hi", json!({})),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // `prepare` noted once, the subgraph's `jot` once: the subgraph got the parent's notes as
    // input and handed back only what it added.
    assert_eq!(reply.body["notes"], json!(["prepare", "jot"]));
    let contents: Vec<&str> = reply.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "hi",
            "You said: hi",
            "Is there anything else I can help with?"
        ]
    );

    // The parent's history has only its own checkpoints: input, start, prepare, research, answer.
    let history = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 20}),
        )
        .await
        .body;
    let parent: Vec<&Value> = history.as_array().unwrap().iter().collect();
    assert_eq!(parent.len(), 5, "{history}");
    assert!(parent
        .iter()
        .all(|state| state["checkpoint"]["checkpoint_ns"] == ""));
    // The research task's namespace holds the subgraph's own checkpoints, whose metadata names
    // the parent checkpoint the task ran from.
    let before_research = parent
        .iter()
        .find(|state| state["next"] == json!(["research"]))
        .unwrap();
    let task_id = before_research["tasks"][0]["id"].as_str().unwrap();
    let namespace = format!("research:{task_id}");
    let inner = app
        .post(
            &format!("/threads/{thread_id}/history"),
            json!({"limit": 20, "checkpoint": {"checkpoint_ns": namespace}}),
        )
        .await
        .body;
    let inner = inner.as_array().unwrap();
    let sources: Vec<&str> = inner
        .iter()
        .map(|state| state["metadata"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["loop", "loop", "loop", "input"], "{inner:?}");
    assert_eq!(inner[0]["values"]["notes"], json!(["prepare", "jot"]));
    assert_eq!(inner[0]["checkpoint"]["checkpoint_ns"], namespace);
    assert_eq!(
        inner[0]["metadata"]["parents"][""],
        before_research["checkpoint"]["checkpoint_id"]
    );
    let state = app.get(&format!("/threads/{thread_id}/state")).await.body;
    assert_eq!(state["values"]["notes"], json!(["prepare", "jot"]));
    assert_eq!(app.thread_status(&thread_id).await, "idle");
}

#[tokio::test]
async fn stream_subgraphs_suffixes_the_subgraph_events_with_its_namespace() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let modes = json!({"stream_mode": ["updates", "messages-tuple"]});
    let plain = stream(&app, &thread_id, ask("one", modes.clone())).await;
    assert!(
        names(&plain).iter().all(|name| !name.contains('|')),
        "{:?}",
        names(&plain)
    );
    let updates: Vec<&Value> = plain
        .iter()
        .filter(|event| event.name == "updates")
        .map(|event| &event.data)
        .collect();
    let nodes: Vec<&String> = updates
        .iter()
        .flat_map(|update| update.as_object().unwrap().keys())
        .collect();
    assert_eq!(nodes, ["prepare", "research", "answer"]);
    // Each message reaches `messages` once: the subgraph's answer (its node hands back the whole
    // list, input included), then the parent's; never the human input.
    let contents = |events: &[crate::sse::SseEvent], name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|event| event.name == name)
            .map(|event| event.data[0]["content"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        contents(&plain, "messages").concat(),
        "You said: oneIs there anything else I can help with?"
    );

    let mut with_subgraphs = modes.clone();
    with_subgraphs["stream_subgraphs"] = json!(true);
    let events = stream(&app, &thread_id, ask("two", with_subgraphs)).await;
    let names = names(&events);
    let suffixed: Vec<&&str> = names.iter().filter(|name| name.contains('|')).collect();
    assert!(!suffixed.is_empty(), "{names:?}");
    let namespace = suffixed[0].split_once('|').unwrap().1;
    assert!(namespace.starts_with("research:"), "{namespace}");
    assert!(
        suffixed
            .iter()
            .all(|name| name.ends_with(&format!("|{namespace}"))),
        "{names:?}"
    );
    // The subgraph's nodes report as updates in its namespace, between the parent's prepare and
    // research updates.
    let position = |name: &str| names.iter().position(|candidate| *candidate == name);
    let think = events
        .iter()
        .position(|event| {
            event.name == format!("updates|{namespace}") && event.data.get("think").is_some()
        })
        .expect("the subgraph's think update");
    let jot = events
        .iter()
        .position(|event| {
            event.name == format!("updates|{namespace}") && event.data.get("jot").is_some()
        })
        .expect("the subgraph's jot update");
    let research = events
        .iter()
        .position(|event| event.name == "updates" && event.data.get("research").is_some())
        .unwrap();
    assert!(think < jot && jot < research, "{names:?}");
    // The subgraph's answer streams as chunks in its namespace and is not repeated whole by
    // the parent's `research` node.
    let chunks = contents(&events, &format!("messages|{namespace}"));
    assert_eq!(chunks.concat(), "You said: two", "{chunks:?}");
    assert_eq!(
        contents(&events, "messages").concat(),
        "Is there anything else I can help with?"
    );
    assert!(position("metadata") == Some(0));
    // Its model message carries the nested namespace in the tuple metadata.
    let message = events
        .iter()
        .find(|event| event.name == format!("messages|{namespace}"))
        .expect("the subgraph's message");
    let metadata_ns = message.data[1]["langgraph_checkpoint_ns"].as_str().unwrap();
    assert!(
        metadata_ns.starts_with(&format!("{namespace}|think:")),
        "{metadata_ns}"
    );
}

#[tokio::test]
async fn rolling_back_a_run_removes_its_subgraph_checkpoints_too() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            ask("hi", json!({})),
        )
        .await;
    assert_eq!(reply.status, 200);
    let subgraph_rows = app
        .count("SELECT count(*) FROM checkpoints WHERE checkpoint_ns != ''")
        .await;
    assert_eq!(subgraph_rows, 4);
    let runs = app.get(&format!("/threads/{thread_id}/runs")).await.body;
    let run_id = runs[0]["run_id"].as_str().unwrap();
    let deleted = app
        .delete(&format!("/threads/{thread_id}/runs/{run_id}"))
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        app.count("SELECT count(*) FROM checkpoints WHERE checkpoint_ns != ''")
            .await,
        0
    );
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[tokio::test]
async fn the_subgraphs_endpoint_lists_the_subgraph_schemas_by_namespace() {
    let app = spawn_app().await;
    let assistants = app
        .post("/assistants/search", json!({"graph_id": "outer"}))
        .await
        .body;
    let assistant_id = assistants[0]["assistant_id"].as_str().unwrap();
    let all = app
        .get(&format!("/assistants/{assistant_id}/subgraphs"))
        .await;
    assert_eq!(all.status, 200);
    let namespaces: Vec<&String> = all.body.as_object().unwrap().keys().collect();
    assert_eq!(namespaces, ["research"]);
    assert_eq!(all.body["research"]["graph_id"], "inner");
    let one = app
        .get(&format!("/assistants/{assistant_id}/subgraphs/research"))
        .await;
    assert_eq!(one.body, all.body);
    let none = app
        .get(&format!("/assistants/{assistant_id}/subgraphs/nowhere"))
        .await;
    assert_eq!(none.body, json!({}));
    let bad = app.get("/assistants/not-a-uuid/subgraphs/research").await;
    assert_eq!(bad.status, 422);
    assert!(bad.detail().contains("assistant ID"), "{}", bad.detail());
    let unknown = app
        .get(&format!("/assistants/{}/subgraphs", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status, 404);
    assert!(!unknown.detail().is_empty());
}
