//! Graceful shutdown of the real binary: on SIGTERM it refuses new runs with 503 and
//! `Retry-After`, lets a running run finish within the grace period, stops a run that outlasts
//! it (back to `pending`, its attempt given back) and exits with status 0; the next start resumes
//! the stopped run and starts the runs left pending.

#[path = "support/binary.rs"]
mod binary;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use binary::Server;
use serde_json::{json, Value};

/// How long any wait in this test may take before it fails.
const DEADLINE: Duration = Duration::from_secs(60);

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(server: &Server) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(DEADLINE)
                .build()
                .unwrap(),
            url: server.url.clone(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value, Option<String>) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            retry_after,
        )
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    async fn thread(&self) -> String {
        let (status, body, _) = self.post("/threads", json!({})).await;
        assert_eq!(status, 200, "{body}");
        body["thread_id"].as_str().unwrap().to_owned()
    }

    /// Starts an `agent` run saying `text` whose steps take `delay` seconds each.
    async fn run(&self, thread: &str, text: &str, delay: f64) -> (u16, Value, Option<String>) {
        self.post(
            &format!("/threads/{thread}/runs"),
            json!({
                "assistant_id": "agent",
                "input": {"messages": [{"role": "user", "content": text}]},
                "config": {"configurable": {"delay": delay}},
            }),
        )
        .await
    }

    /// Polls until the run has `status`.
    async fn wait_for(&self, thread: &str, run: &str, status: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let found = self.get(&format!("/threads/{thread}/runs/{run}")).await;
            if found["status"] == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run} did not become {status}: {found}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The contents of the thread's human messages and of its final AI answers, in order.
    async fn conversation(&self, thread: &str) -> Vec<(String, String)> {
        let state = self.get(&format!("/threads/{thread}/state")).await;
        state["values"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|message| message["type"] == "human" || message["type"] == "ai")
            .filter(|message| message["tool_calls"].as_array().map_or(true, Vec::is_empty))
            .map(|message| {
                (
                    message["type"].as_str().unwrap().to_owned(),
                    message["content"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

fn run_id(reply: &(u16, Value, Option<String>)) -> String {
    assert_eq!(reply.0, 200, "{}", reply.1);
    reply.1["run_id"].as_str().unwrap().to_owned()
}

fn attempts(server: &Server, run: &str) -> (String, i64) {
    let connection = rusqlite::Connection::open(server.database_path()).unwrap();
    connection
        .query_row(
            "SELECT status, attempts FROM runs WHERE run_id = ?",
            [run],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
}

fn overrides(grace_seconds: f64) -> Vec<(String, String)> {
    vec![(
        "SPINDLE_SERVER__SHUTDOWN_GRACE_SECONDS".into(),
        grace_seconds.to_string(),
    )]
}

#[test]
fn sigterm_drains_runs_refuses_new_ones_exits_zero_and_the_next_start_resumes_the_rest() {
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = |logs: &Arc<Mutex<Vec<String>>>| {
        let logs = logs.clone();
        move |line: &str| logs.lock().unwrap().push(line.to_owned())
    };
    let mut server = Server::start_with_env(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml")),
        "info",
        &overrides(60.0),
        log(&logs),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // 1. A long grace period: the running run finishes before the server exits.
    let (thread, finishing, late) = runtime.block_on(async {
        let client = Client::new(&server);
        let thread = client.thread().await;
        let finishing = run_id(&client.run(&thread, "finish me", 0.5).await);
        client.wait_for(&thread, &finishing, "running").await;
        server.signal_terminate();
        // Runs are refused as soon as the signal is handled; one accepted just before stays
        // pending and starts at the next start.
        let other = client.thread().await;
        let mut late = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let reply = client.run(&other, "too late?", 0.0).await;
            if reply.0 == 503 {
                assert!(
                    reply.1["detail"]
                        .as_str()
                        .unwrap()
                        .contains("shutting down"),
                    "{}",
                    reply.1
                );
                assert!(reply.2.is_some(), "503 without Retry-After");
                break;
            }
            late.push((other.clone(), run_id(&reply)));
            assert!(tokio::time::Instant::now() < deadline, "never refused");
        }
        (thread, finishing, late)
    });
    let exit = server.wait();
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(attempts(&server, &finishing), ("success".into(), 1));
    for (_, run) in &late {
        assert_eq!(attempts(&server, run).0, "pending");
    }
    assert!(logs
        .lock()
        .unwrap()
        .iter()
        .any(|line| line.contains("shutdown complete")));

    // 2. A short grace period: the run outlasting it is stopped, goes back to `pending` with its
    // attempt given back, and continues from its checkpoint at the next start.
    server.restart(&overrides(0.2), log(&logs));
    let stopped = runtime.block_on(async {
        let client = Client::new(&server);
        for (thread, run) in &late {
            client.wait_for(thread, run, "success").await;
        }
        let stopped = run_id(&client.run(&thread, "outlast the grace", 1.0).await);
        client.wait_for(&thread, &stopped, "running").await;
        stopped
    });
    server.signal_terminate();
    let exit = server.wait();
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(attempts(&server, &stopped), ("pending".into(), 0));

    server.restart(&[], log(&logs));
    runtime.block_on(async {
        let client = Client::new(&server);
        client.wait_for(&thread, &stopped, "success").await;
        // Each input answered once, the resumed one included.
        let conversation = client.conversation(&thread).await;
        let humans: Vec<&str> = conversation
            .iter()
            .filter(|(kind, _)| kind == "human")
            .map(|(_, text)| text.as_str())
            .collect();
        assert_eq!(
            humans,
            ["finish me", "outlast the grace"],
            "{conversation:?}"
        );
        let answers = conversation.iter().filter(|(kind, _)| kind == "ai").count();
        assert_eq!(answers, 2, "{conversation:?}");
        let state = client.get(&format!("/threads/{thread}")).await;
        assert_eq!(state["status"], "idle");
    });
    assert_eq!(attempts(&server, &stopped), ("success".into(), 1));
}
