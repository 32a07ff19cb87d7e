//! Search, count and history filters: every endpoint that takes one bounds its size (keys, key
//! length, bytes, ids) and refuses keys no storage backend can match, with a 422 naming the
//! field and the limit, never a 500; keys with quotes or backslashes match like any other key.

use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::validation::refused;

/// The system assistant of the `agent` graph.
const AGENT: &str = "fe096781-5601-53d2-b2f6-0d3403f7e9ca";

/// Every endpoint that takes a JSON filter, with the field that carries it. The thread has
/// checkpoints, so its history filter reaches storage.
fn filtered_endpoints(thread_id: &str) -> Vec<(String, &'static str)> {
    vec![
        ("/threads/search".into(), "metadata"),
        ("/threads/search".into(), "values"),
        ("/threads/count".into(), "metadata"),
        ("/threads/count".into(), "values"),
        ("/assistants/search".into(), "metadata"),
        ("/assistants/count".into(), "metadata"),
        (format!("/threads/{thread_id}/history"), "metadata"),
        (format!("/assistants/{AGENT}/versions"), "metadata"),
    ]
}

/// A thread with one finished run of the `echo` graph, so it has checkpoints.
async fn thread_with_history(app: &TestApp) -> String {
    let thread_id = app.create_thread().await;
    app.echo_run(&thread_id, json!({})).await;
    thread_id
}

/// A filter with `count` keys `k0`, `k1`, ….
fn many_keys(count: usize) -> Value {
    let keys: Map<String, Value> = (0..count)
        .map(|index| (format!("k{index}"), json!(1)))
        .collect();
    Value::Object(keys)
}

#[tokio::test]
async fn a_filter_key_containing_nul_is_422_on_every_filtered_endpoint() {
    let app = spawn_app().await;
    let thread_id = thread_with_history(&app).await;
    for (path, field) in filtered_endpoints(&thread_id) {
        let body = json!({ field: {"a\u{0}b": 1} });
        refused(&app, Method::POST, &path, Some(body), 422, field).await;
        let body = json!({ field: {"a\u{0}b": 1} });
        refused(&app, Method::POST, &path, Some(body), 422, "NUL").await;
    }
}

#[tokio::test]
async fn more_filter_keys_than_the_limit_are_422_naming_the_field_and_the_limit() {
    let app = spawn_app().await;
    let thread_id = thread_with_history(&app).await;
    for (path, field) in filtered_endpoints(&thread_id) {
        let at_limit = app.post(&path, json!({ field: many_keys(100) })).await;
        assert_eq!(at_limit.status, 200, "{path} {field}: {:?}", at_limit.body);
        for count in [101, 999, 5000] {
            let body = json!({ field: many_keys(count) });
            let expected = format!("field `{field}`: at most 100 keys, got {count}");
            refused(&app, Method::POST, &path, Some(body), 422, &expected).await;
        }
    }
}

#[tokio::test]
async fn a_filter_key_or_filter_over_its_byte_limit_is_422() {
    let app = spawn_app().await;
    let thread_id = thread_with_history(&app).await;
    let long_key = "k".repeat(1025);
    let big_value = "v".repeat(64 * 1024);
    for (path, field) in filtered_endpoints(&thread_id) {
        let at_limit = app
            .post(&path, json!({ field: {"k".repeat(1024): 1} }))
            .await;
        assert_eq!(at_limit.status, 200, "{path} {field}: {:?}", at_limit.body);
        let body = json!({ field: {long_key.clone(): 1} });
        let expected = format!("field `{field}`: a key of 1025 bytes; at most 1024");
        refused(&app, Method::POST, &path, Some(body), 422, &expected).await;
        let body = json!({ field: {"blob": big_value.clone()} });
        let expected = format!("field `{field}`: the filter is 65547 bytes of JSON; at most 65536");
        refused(&app, Method::POST, &path, Some(body), 422, &expected).await;
    }
}

#[tokio::test]
async fn more_thread_ids_than_the_limit_are_422_naming_the_field_and_the_limit() {
    // Room for 40,000 ids in one body, so the id limit is what refuses them.
    let app = spawn_app_with(|settings| settings.server.body_limit_bytes = 4 * 1024 * 1024).await;
    let ids = |count: usize| -> Vec<String> {
        (0..count)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect()
    };
    let at_limit = app.post("/threads/search", json!({"ids": ids(1000)})).await;
    assert_eq!(at_limit.status, 200, "{:?}", at_limit.body);
    for count in [1001, 32_765, 40_000] {
        let body = json!({"ids": ids(count)});
        let expected = format!("field `ids`: at most 1000 ids, got {count}");
        refused(
            &app,
            Method::POST,
            "/threads/search",
            Some(body),
            422,
            &expected,
        )
        .await;
    }
}

#[tokio::test]
async fn filter_keys_with_quotes_backslashes_and_path_characters_match_like_any_other_key() {
    let app = spawn_app().await;
    let keys = [
        "say \"hi\"",
        "\"",
        "back\\slash",
        "\\\"",
        "dot.ted[0]",
        "$",
        "line\nbreak",
        "",
    ];
    let metadata: Map<String, Value> = keys
        .iter()
        .map(|key| ((*key).to_owned(), json!(format!("value of {key}"))))
        .collect();
    let thread = app
        .post("/threads", json!({"metadata": metadata.clone()}))
        .await;
    let thread_id = thread.body["thread_id"].as_str().unwrap().to_owned();
    let assistant = app
        .post(
            "/assistants",
            json!({"graph_id": "echo", "metadata": metadata.clone()}),
        )
        .await;
    let assistant_id = assistant.body["assistant_id"].as_str().unwrap().to_owned();
    app.echo_run(&thread_id, json!({"metadata": metadata.clone()}))
        .await;

    // Each search answers exactly its one item: (path, the id field, the id).
    let searches = [
        ("/threads/search".to_owned(), "thread_id", thread_id.clone()),
        (
            "/assistants/search".to_owned(),
            "assistant_id",
            assistant_id.clone(),
        ),
        (
            format!("/assistants/{assistant_id}/versions"),
            "assistant_id",
            assistant_id.clone(),
        ),
    ];
    for key in keys {
        let filter = json!({ key: format!("value of {key}") });
        for (path, field, id) in &searches {
            let found = app.post(path, json!({"metadata": filter})).await;
            let ids: Option<Vec<&Value>> = found
                .body
                .as_array()
                .map(|items| items.iter().map(|item| &item[field]).collect());
            assert_eq!(ids, Some(vec![&json!(id)]), "{path} by {key:?}");
        }
        for path in ["/threads/count", "/assistants/count"] {
            let count = app.post(path, json!({"metadata": filter})).await;
            assert_eq!(count.body, json!(1), "{path} by {key:?}");
            let other = json!({ key: "another value" });
            let none = app.post(path, json!({"metadata": other})).await;
            assert_eq!(none.body, json!(0), "{path} by {key:?} and another value");
        }
        let history = app
            .post(
                &format!("/threads/{thread_id}/history"),
                json!({"limit": 10, "metadata": filter}),
            )
            .await;
        let states = history.body.as_array().map_or(0, Vec::len);
        assert!(states > 0, "history by {key:?}: {:?}", history.body);
    }
}
