//! Small pieces the benchmarks and the binary-driven tests share, included with `#[path]`:
//! command-line options of a bench (`-- --name value`, `-- --flag`) and creating a thread.

use std::str::FromStr;

use serde_json::{json, Value};

/// The value after `name` on the command line, or `default`.
#[allow(dead_code)] // Not every user needs it.
pub fn option<T: FromStr>(name: &str, default: T) -> T {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Whether `name` is on the command line.
#[allow(dead_code)] // Not every user needs it.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|argument| argument == name)
}

/// Creates a thread; returns its id.
#[allow(dead_code)] // Not every user needs it.
pub async fn create_thread(client: &reqwest::Client, url: &str) -> String {
    let thread: Value = client
        .post(format!("{url}/threads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    thread["thread_id"].as_str().unwrap().to_owned()
}
