//! Threads: create, get, patch, delete, search, count, copy.

use serde_json::{json, Value};

use crate::helpers::{run_id, spawn_app};

#[tokio::test]
async fn a_new_thread_is_idle_with_no_values() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/threads",
            json!({"metadata": {"owner": "ann", "thread_id": "stripped"}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let thread = &reply.body;
    assert_eq!(thread["status"], "idle");
    assert_eq!(thread["values"], Value::Null);
    assert_eq!(
        thread["metadata"],
        json!({"owner": "ann"}),
        "reserved keys are stripped"
    );
    let keys: Vec<&str> = thread
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "thread_id",
            "created_at",
            "updated_at",
            "state_updated_at",
            "metadata",
            "status",
            "config",
            "values",
            "interrupts",
            "error"
        ]
    );
    assert!(thread["created_at"].as_str().unwrap().ends_with("+00:00"));
    let fetched = app
        .get(&format!(
            "/threads/{}",
            thread["thread_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(fetched.body, reply.body);
}

#[tokio::test]
async fn a_client_chosen_id_is_kept_and_duplicates_conflict_unless_do_nothing() {
    let app = spawn_app().await;
    let thread_id = uuid::Uuid::new_v4().to_string();
    let created = app
        .post(
            "/threads",
            json!({"thread_id": thread_id, "metadata": {"v": 1}}),
        )
        .await;
    assert_eq!(created.body["thread_id"], thread_id);
    let duplicate = app.post("/threads", json!({"thread_id": thread_id})).await;
    assert_eq!(
        (duplicate.status, duplicate.detail().to_owned()),
        (409, format!("Thread with ID {thread_id} already exists"))
    );
    let existing = app
        .post(
            "/threads",
            json!({"thread_id": thread_id, "if_exists": "do_nothing", "metadata": {"v": 2}}),
        )
        .await;
    assert_eq!(
        (existing.status, existing.body["metadata"]["v"].clone()),
        (200, json!(1))
    );
}

#[tokio::test]
async fn patch_merges_metadata_and_delete_removes_everything() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let patched = app
        .request(
            reqwest::Method::PATCH,
            &format!("/threads/{thread_id}"),
            Some(json!({"metadata": {"a": 1}})),
        )
        .await;
    assert_eq!(patched.body["metadata"], json!({"a": 1}));
    let patched = app
        .request(
            reqwest::Method::PATCH,
            &format!("/threads/{thread_id}"),
            Some(json!({"metadata": {"b": 2}})),
        )
        .await;
    assert_eq!(patched.body["metadata"], json!({"a": 1, "b": 2}));
    app.post(
        &format!("/threads/{thread_id}/runs/wait"),
        json!({"assistant_id": "echo", "input": {"messages": "x"}}),
    )
    .await;
    let deleted = app.delete(&format!("/threads/{thread_id}")).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.get(&format!("/threads/{thread_id}")).await.status, 404);
    assert_eq!(app.count("SELECT COUNT(*) FROM runs").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM checkpoints").await, 0);
    assert_eq!(
        app.delete(&format!("/threads/{thread_id}")).await.status,
        404
    );
    let missing = app
        .request(
            reqwest::Method::PATCH,
            &format!("/threads/{thread_id}"),
            Some(json!({"metadata": {}})),
        )
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn deleting_a_thread_stops_its_active_run() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let run = run_id(&app.gated_run(&thread_id, "x", &thread_id, "enqueue").await);
    app.gates.arrivals(&thread_id, 1).await;
    assert_eq!(
        app.delete(&format!("/threads/{thread_id}")).await.status,
        204
    );
    let joined = app.join(&thread_id, &run).await;
    assert_eq!(joined["__error__"]["message"], "404: Run not found");
    app.gates.open(&thread_id);
    assert_eq!(app.count("SELECT COUNT(*) FROM checkpoints").await, 0);
}

#[tokio::test]
async fn search_filters_sorts_pages_and_counts() {
    let app = spawn_app().await;
    for index in 0..5 {
        app.post(
            "/threads",
            json!({"metadata": {"team": if index % 2 == 0 { "red" } else { "blue" }, "n": index}}),
        )
        .await;
    }
    let red = app
        .post(
            "/threads/search",
            json!({"metadata": {"team": "red"}, "sort_by": "created_at", "sort_order": "asc"}),
        )
        .await;
    let numbers: Vec<i64> = red
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [0, 2, 4]);
    assert_eq!(red.headers["x-pagination-total"], "3");
    let page = app
        .post(
            "/threads/search",
            json!({"limit": 2, "offset": 0, "select": ["thread_id", "status"]}),
        )
        .await;
    assert_eq!(page.body.as_array().unwrap().len(), 2);
    assert_eq!(page.body[0].as_object().unwrap().len(), 2);
    assert_eq!(page.headers["x-pagination-next"], "2");
    assert_eq!(page.headers["x-pagination-total"], "5");
    let count = app
        .post("/threads/count", json!({"metadata": {"team": "blue"}}))
        .await;
    assert_eq!(count.body, json!(2));
    let idle = app.post("/threads/count", json!({"status": "idle"})).await;
    assert_eq!(idle.body, json!(5));
    let by_values = app
        .post("/threads/search", json!({"values": {"messages": []}}))
        .await;
    assert_eq!(
        by_values.status, 200,
        "threads with no values never break a values filter"
    );
    let bad_select = app
        .post("/threads/search", json!({"select": ["bogus"]}))
        .await;
    assert_eq!(bad_select.status, 422);
}

#[tokio::test]
async fn copy_duplicates_metadata_and_checkpoints_but_not_runs() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    app.post(
        &format!("/threads/{thread_id}/runs/wait"),
        json!({"assistant_id": "echo", "input": {"messages": "copied"}}),
    )
    .await;
    let copy = app
        .post(&format!("/threads/{thread_id}/copy"), json!({}))
        .await;
    assert_eq!(copy.status, 200);
    let copy_id = copy.body["thread_id"].as_str().unwrap().to_owned();
    assert_ne!(copy_id, thread_id);
    assert_eq!(copy.body["metadata"]["graph_id"], "echo");
    assert_eq!(app.human_messages(&copy_id).await, ["copied"]);
    assert_eq!(
        app.get(&format!("/threads/{copy_id}/runs")).await.body,
        json!([])
    );
    let unknown = app
        .post(
            &format!("/threads/{}/copy", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    let continued = app
        .post(
            &format!("/threads/{copy_id}/runs/wait"),
            json!({"assistant_id": "echo", "input": {"messages": "more"}}),
        )
        .await;
    assert_eq!(continued.body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn health_and_info_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get("/ok").await.body, json!({"ok": true}));
    let info = app.get("/info").await;
    assert_eq!(info.body["flags"]["assistants"], true);
    let head = app.request(reqwest::Method::HEAD, "/ok", None).await;
    assert_eq!(head.status, 200);
}
