//! The example graphs of `config/examples/` load, and the offline one runs: a command node
//! classifies, a switch edge routes, a subgraph answers.

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};

async fn examples() -> TestApp {
    spawn_app_with(|settings| {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let file = std::fs::read_to_string(examples.join("spindle.toml")).unwrap();
        let table: toml::Table = toml::from_str(&file).unwrap();
        settings.graphs.files = table["graphs"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file.as_str().unwrap().into())
            .collect();
        settings.config_dir = examples;
    })
    .await
}

async fn triage(app: &TestApp, question: &str) -> (Value, Vec<Value>) {
    let thread_id = app.create_thread().await;
    let events = app
        .stream_run(
            &thread_id,
            json!({
                "assistant_id": "triage",
                "input": {"messages": [{"role": "user", "content": question}]},
                "stream_mode": ["custom", "values"],
                "config": {"configurable": {"delay": 0}},
            }),
        )
        .await
        .collect()
        .await;
    let custom: Vec<Value> = events
        .iter()
        .filter(|event| event.name == "custom")
        .map(|event| event.data.clone())
        .collect();
    let last = events
        .iter()
        .rev()
        .find(|event| event.name == "values")
        .expect("a values event")
        .data
        .clone();
    (last, custom)
}

#[tokio::test]
async fn every_example_graph_loads_and_triage_routes_with_its_command_node() {
    let app = examples().await;
    let graphs: Vec<String> = app
        .post("/assistants/search", json!({"limit": 20}))
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|assistant| assistant["graph_id"].as_str().unwrap().to_owned())
        .collect();
    for graph in ["agent", "triage", "openai_agent", "scored_review"] {
        assert!(graphs.iter().any(|id| id == graph), "{graph} in {graphs:?}");
    }

    let (weather, progress) = triage(&app, "what's the weather in sf?").await;
    assert_eq!(weather["topic"], "weather");
    assert_eq!(
        progress,
        [
            json!({"progress": "classifying", "chars": 25}),
            json!({"progress": "done", "topic": "weather"})
        ]
    );
    // The agent subgraph called the search tool and answered with its result.
    let messages = weather["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[2]["type"], "tool");
    assert!(messages[3]["content"]
        .as_str()
        .unwrap()
        .starts_with("The weather in sf is"));

    let (other, _) = triage(&app, "hello there").await;
    assert_eq!(other["topic"], "other");
    assert_eq!(other["messages"][1]["content"], "You said: hello there");
}
