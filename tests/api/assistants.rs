//! Assistants: system assistants per graph, create, patch with versions, search, graph, schemas.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use spindle::domain::ids::AssistantId;

use crate::helpers::{spawn_app, DEADLINE};

#[tokio::test]
async fn every_graph_has_a_system_assistant_with_the_official_id() {
    let app = spawn_app().await;
    let agent = app
        .get("/assistants/fe096781-5601-53d2-b2f6-0d3403f7e9ca")
        .await;
    assert_eq!(agent.status, 200);
    assert_eq!(agent.body["graph_id"], "agent");
    assert_eq!(agent.body["metadata"], json!({"created_by": "system"}));
    assert_eq!(agent.body["version"], 1);
    let keys: Vec<&str> = agent
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "assistant_id",
            "graph_id",
            "config",
            "context",
            "metadata",
            "name",
            "created_at",
            "updated_at",
            "version",
            "description"
        ]
    );
    let by_name = app.get("/assistants/agent").await;
    assert_eq!(
        (by_name.status, by_name.detail()),
        (422, "Invalid assistant ID: must be a UUID")
    );
    let graph = app.get("/assistants/agent/graph").await;
    let nodes: Vec<&str> = graph.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["__start__", "agent", "tools", "__end__"]);
    assert!(graph.body["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["source"] == "agent" && e["target"] == "tools" && e["conditional"] == true));
    let schemas = app
        .get(&format!(
            "/assistants/{}/schemas",
            AssistantId::for_graph("agent")
        ))
        .await;
    assert_eq!(schemas.body["graph_id"], "agent");
    assert_eq!(
        schemas.body["state_schema"]["properties"]["messages"]["type"],
        "array"
    );
    let count = app.post("/assistants/count", json!({})).await;
    assert_eq!(count.body, json!(8));
}

#[tokio::test]
async fn patching_an_assistant_writes_versions_and_latest_moves_between_them() {
    let app = spawn_app().await;
    let created = app
        .post("/assistants", json!({"graph_id": "agent", "name": "weather", "config": {"configurable": {"delay": 0}}, "metadata": {"team": "a"}}))
        .await;
    assert_eq!(created.status, 200);
    assert_eq!(
        created.body["context"],
        json!({"delay": 0}),
        "configurable is mirrored into context"
    );
    let id = created.body["assistant_id"].as_str().unwrap().to_owned();
    let patched = app
        .request(
            reqwest::Method::PATCH,
            &format!("/assistants/{id}"),
            Some(json!({"name": "weather v2", "metadata": {"tier": 1}})),
        )
        .await;
    assert_eq!(
        (
            patched.body["version"].clone(),
            patched.body["name"].clone()
        ),
        (json!(2), json!("weather v2"))
    );
    assert_eq!(patched.body["metadata"], json!({"team": "a", "tier": 1}));
    let versions = app
        .post(&format!("/assistants/{id}/versions"), json!({}))
        .await;
    let numbers: Vec<i64> = versions
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    let restored = app
        .post(&format!("/assistants/{id}/latest"), json!({"version": 1}))
        .await;
    assert_eq!(
        (
            restored.body["version"].clone(),
            restored.body["name"].clone()
        ),
        (json!(1), json!("weather"))
    );
    let missing_version = app
        .post(&format!("/assistants/{id}/latest"), json!({"version": 9}))
        .await;
    assert_eq!(missing_version.status, 404);
    let found = app
        .post("/assistants/search", json!({"metadata": {"team": "a"}}))
        .await;
    assert_eq!(found.body.as_array().unwrap().len(), 1);
    let by_graph = app
        .post(
            "/assistants/search",
            json!({"graph_id": "agent", "limit": 10}),
        )
        .await;
    assert_eq!(by_graph.body.as_array().unwrap().len(), 2);

    // A run through the custom assistant uses its configuration (delay 0 makes it quick).
    let thread_id = app.create_thread().await;
    let run = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": id, "input": {"messages": "weather in oslo"}}),
        )
        .await;
    assert_eq!(run.body["messages"].as_array().unwrap().len(), 4);
    assert_eq!(
        app.get(&format!("/threads/{thread_id}")).await.body["metadata"]["assistant_id"],
        id
    );

    assert_eq!(app.delete(&format!("/assistants/{id}")).await.status, 204);
    assert_eq!(app.get(&format!("/assistants/{id}")).await.status, 404);
    assert_eq!(app.delete(&format!("/assistants/{id}")).await.status, 404);
}

#[tokio::test]
async fn assistant_creation_checks_the_graph_and_duplicates() {
    let app = spawn_app().await;
    let unknown = app.post("/assistants", json!({"graph_id": "nope"})).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown
        .detail()
        .starts_with("Graph 'nope' not found. Expected one of:"));
    let id = uuid::Uuid::new_v4();
    assert_eq!(
        app.post(
            "/assistants",
            json!({"graph_id": "echo", "assistant_id": id})
        )
        .await
        .status,
        200
    );
    let duplicate = app
        .post(
            "/assistants",
            json!({"graph_id": "echo", "assistant_id": id}),
        )
        .await;
    assert_eq!(duplicate.status, 409);
    let existing = app
        .post(
            "/assistants",
            json!({"graph_id": "echo", "assistant_id": id, "if_exists": "do_nothing"}),
        )
        .await;
    assert_eq!(existing.status, 200);
}

#[tokio::test]
async fn deleting_an_assistant_with_its_threads_stops_their_runs() {
    let app = spawn_app().await;
    let created = app.post("/assistants", json!({"graph_id": "gated"})).await;
    let assistant_id = created.body["assistant_id"].as_str().unwrap().to_owned();
    let thread_id = app.create_thread().await;
    let run = app
        .create_run(
            &thread_id,
            json!({"assistant_id": assistant_id, "input": {"messages": "x"},
            "config": {"configurable": {"gate": thread_id}}}),
        )
        .await;
    let run_id = crate::helpers::run_id(&run);
    app.gates.arrivals(&thread_id, 1).await;
    let deleted = app
        .delete(&format!("/assistants/{assistant_id}?delete_threads=true"))
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.get(&format!("/threads/{thread_id}")).await.status, 404);
    assert_eq!(
        app.join(&thread_id, &run_id).await["__error__"]["message"],
        "404: Run not found"
    );
    app.gates.open(&thread_id);
    // The same thread id can be used again at once: nothing is left waiting on the old run.
    let again = app
        .post(&format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "echo", "input": {"messages": "fresh"}, "if_not_exists": "create"}))
        .await;
    assert_eq!(again.body["messages"][0]["content"], "fresh");
    assert_eq!(app.thread_status(&thread_id).await, "idle");
    assert_eq!(app.orphaned_checkpoints().await, 0);
}

#[tokio::test]
async fn no_run_of_an_assistant_created_while_it_is_deleted_with_its_threads_survives() {
    let app = spawn_app().await;
    let created = app
        .post("/assistants", json!({"graph_id": "echo", "name": "doomed"}))
        .await;
    let assistant_id = created.body["assistant_id"].as_str().unwrap().to_owned();
    // Eight clients keep creating runs of it, each on a new thread, until each has been
    // refused five times (or made 300 tries); the deletion starts once 40 runs were accepted.
    let accepted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, address) = (app.client.clone(), app.address.clone());
            let (assistant_id, accepted) = (assistant_id.clone(), accepted.clone());
            tokio::spawn(async move {
                let mut runs = vec![];
                let mut refused = 0;
                for _ in 0..300 {
                    if refused == 5 {
                        break;
                    }
                    let thread_id = uuid::Uuid::new_v4().to_string();
                    let reply = client
                        .post(format!("{address}/threads/{thread_id}/runs"))
                        .json(&json!({"assistant_id": assistant_id, "input": {},
                                      "if_not_exists": "create"}))
                        .send()
                        .await
                        .unwrap();
                    let status = reply.status().as_u16();
                    let body: serde_json::Value = reply.json().await.unwrap();
                    match status {
                        200 => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            runs.push((thread_id, body["run_id"].as_str().unwrap().to_owned()));
                        }
                        404 => {
                            assert_eq!(body["detail"], "Thread or assistant not found.");
                            refused += 1;
                        }
                        other => panic!("run creation answered {other}: {body}"),
                    }
                }
                runs
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while accepted.load(Ordering::SeqCst) < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs were not accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let deleted = app
        .delete(&format!("/assistants/{assistant_id}?delete_threads=true"))
        .await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);

    for client in clients {
        for (thread_id, run_id) in client.await.unwrap() {
            let run = app
                .get(&format!("/threads/{thread_id}/runs/{run_id}"))
                .await;
            assert_eq!(run.status, 404, "run {run_id} survived: {:?}", run.body);
        }
    }
    let left = app
        .post(
            "/threads/search",
            json!({"metadata": {"assistant_id": assistant_id}}),
        )
        .await;
    assert_eq!(
        left.body,
        json!([]),
        "threads of the deleted assistant remain"
    );
}
