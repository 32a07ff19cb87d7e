//! `spawn_app` and `TestApp`: a real Spindle server on port 0 with its own SQLite file, in its
//! own actix System thread, plus typed request helpers and the test graphs' gates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use spindle::config::{
    DatabaseSettings, GraphSettings, OnRestart, RetentionAction, RetentionSettings,
    RuntimeSettings, ServerSettings, Settings, StreamSettings,
};
use spindle::domain::run::RunError;
use spindle::engine::toml::node::{NativeNodes, NodeInput};
use spindle::startup::Application;
use tokio::sync::watch;

use crate::sse::SseReader;

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One gate of the `gated` test graph.
struct Gate {
    open: watch::Sender<bool>,
    arrivals: watch::Sender<usize>,
}

/// Gates by name; the `gated` graph's gate node waits at the one named by `configurable.gate`.
#[derive(Clone, Default)]
pub struct Gates {
    gates: Arc<Mutex<HashMap<String, Arc<Gate>>>>,
}

impl Gates {
    fn gate(&self, name: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap();
        gates
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Gate {
                    open: watch::channel(false).0,
                    arrivals: watch::channel(0).0,
                })
            })
            .clone()
    }

    /// Lets every run waiting at (or later reaching) the gate pass.
    pub fn open(&self, name: &str) {
        self.gate(name).open.send_replace(true);
    }

    /// Waits until `count` runs have reached the gate.
    pub async fn arrivals(&self, name: &str, count: usize) {
        let mut arrivals = self.gate(name).arrivals.subscribe();
        tokio::time::timeout(DEADLINE, arrivals.wait_for(|arrived| *arrived >= count))
            .await
            .unwrap_or_else(|_| panic!("gate {name}: {count} arrivals not reached in time"))
            .unwrap();
    }

    fn native_nodes(&self) -> NativeNodes {
        let mut native = NativeNodes::default();
        let gates = self.clone();
        native.register("gate", move |input: NodeInput| {
            let name = input
                .config
                .get("gate")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned();
            let gate = gates.gate(&name);
            async move {
                gate.arrivals.send_modify(|arrived| *arrived += 1);
                let mut open = gate.open.subscribe();
                open.wait_for(|open| *open)
                    .await
                    .map_err(|_| RunError::new("RuntimeError", "gate dropped"))?;
                Ok(None)
            }
        });
        let gates = self.clone();
        native.register("emit", move |input: NodeInput| {
            let gate = input
                .config
                .get("gate")
                .and_then(Value::as_str)
                .map(|name| gates.gate(name));
            async move {
                if let Some(gate) = gate {
                    gate.arrivals.send_modify(|arrived| *arrived += 1);
                    let mut open = gate.open.subscribe();
                    open.wait_for(|open| *open)
                        .await
                        .map_err(|_| RunError::new("RuntimeError", "gate dropped"))?;
                }
                let number = |key: &str, default: u64| {
                    input
                        .config
                        .get(key)
                        .and_then(Value::as_u64)
                        .unwrap_or(default)
                };
                let padding = "x".repeat(number("size", 10) as usize);
                // `burst` events at a time, then a millisecond's pause, like a node that works.
                let burst = number("burst", u64::MAX).max(1);
                for index in 0..number("events", 3) {
                    input
                        .stream
                        .custom(json!({"index": index, "padding": padding}));
                    if (index + 1) % burst == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Ok(None)
            }
        });
        // Appends the node's name to the `notes` channel.
        native.register("note", |input: NodeInput| async move {
            let mut update = serde_json::Map::new();
            update.insert("notes".into(), json!([input.node]));
            Ok(Some(update))
        });
        native.register("fault", |input: NodeInput| async move {
            match input.config.get("fault").and_then(Value::as_str) {
                Some("panic") => panic!("the fault node panicked on purpose"),
                Some("error") => {
                    Err(RunError::new("ValueError", "the fault node failed on purpose").into())
                }
                _ => Ok(None),
            }
        });
        native
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub gates: Gates,
    pub database_path: PathBuf,
    /// The thread registry, for fault injection and counting live thread actors.
    pub registry: actix::Addr<spindle::actors::ThreadRegistry>,
    system: actix::System,
    _directory: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.system.stop();
    }
}

/// Settings for a test server: port 0, a database in `directory`, the default graphs plus the
/// test graphs.
pub fn test_settings(directory: &std::path::Path) -> Settings {
    Settings {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            workers: 2,
            body_limit_bytes: 1024 * 1024,
            shutdown_grace_seconds: 5.0,
            allowed_hosts: Vec::new(),
            cors_allowed_origins: Vec::new(),
            keep_alive_seconds: 75.0,
        },
        database: DatabaseSettings {
            path: directory.join("spindle.db"),
            readers: 2,
            busy_timeout_ms: 5000,
            max_size_mb: 0,
        },
        runtime: RuntimeSettings {
            arbiters: 2,
            on_restart: OnRestart::Resume,
            max_attempts: 3,
            run_timeout_seconds: 0.0,
            node_timeout_seconds: 0.0,
            actor_idle_seconds: 60.0,
            refuse_client_tool_calls: false,
        },
        stream: StreamSettings {
            heartbeat_seconds: 0.2,
            replay_events: 256,
            replay_bytes: 8 << 20,
            resumable_events: 10_000,
            resumable_bytes: 32 << 20,
            total_bytes: 256 << 20,
            subscriber_events: 1024,
            retention_seconds: 600,
        },
        retention: RetentionSettings {
            thread_idle_days: 0.0,
            action: RetentionAction::Prune,
            keep_checkpoints: 1,
            sweep_interval_seconds: 3600.0,
        },
        graphs: GraphSettings {
            files: vec![
                "config/graphs/agent.toml".into(),
                "config/graphs/echo.toml".into(),
                "tests/graphs/gated.toml".into(),
                "tests/graphs/faulty.toml".into(),
                "tests/graphs/emitter.toml".into(),
                "tests/graphs/approval.toml".into(),
                "tests/graphs/outer.toml".into(),
                "tests/graphs/inner.toml".into(),
            ],
        },
        config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// Starts a server on a random port with a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server whose test settings `adjust` changes first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let directory = tempfile::tempdir().unwrap();
    let mut settings = test_settings(directory.path());
    adjust(&mut settings);
    let database_path = settings.database.path.clone();
    let gates = Gates::default();
    let native = gates.native_nodes();
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix::System::new();
        system.block_on(async move {
            let application = Application::build(settings, native)
                .await
                .expect("the server starts");
            ready
                .send((
                    application.port(),
                    application.registry(),
                    actix::System::current(),
                ))
                .unwrap();
            application.run_until_stopped().await.unwrap();
        });
    });
    let (port, registry, system) = tokio::task::spawn_blocking(move || {
        started
            .recv_timeout(DEADLINE)
            .expect("the server starts in time")
    })
    .await
    .unwrap();
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(DEADLINE)
            .build()
            .unwrap(),
        gates,
        database_path,
        registry,
        system,
        _directory: directory,
    }
}

/// A response's status and JSON body (`Value::Null` when empty).
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// Reads a response; a body that is not JSON becomes `Value::Null`.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        }
    }

    /// The `detail` of an error body.
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

impl TestApp {
    /// Sends a request with an optional JSON body.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request is sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        Reply {
            status,
            body,
            headers,
        }
    }

    /// Sends a raw body (for malformed-input tests).
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: &'static str) -> Reply {
        let response = self
            .client
            .request(method, format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a thread and returns its id.
    pub async fn create_thread(&self) -> String {
        let reply = self.post("/threads", json!({})).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["thread_id"].as_str().unwrap().to_owned()
    }

    /// Creates a run; returns the reply (status 200 with the run, or an error).
    pub async fn create_run(&self, thread_id: &str, body: Value) -> Reply {
        self.post(&format!("/threads/{thread_id}/runs"), body).await
    }

    /// Runs the `echo` graph on the thread to its end with `POST /threads/{t}/runs/wait`, the
    /// body's other fields from `extra`; checks that it answered 200.
    pub async fn echo_run(&self, thread_id: &str, extra: Value) -> Reply {
        let mut body = json!({"assistant_id": "echo", "input": {}});
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let reply = self
            .post(&format!("/threads/{thread_id}/runs/wait"), body)
            .await;
        assert_eq!(reply.status, 200, "echo run: {:?}", reply.body);
        reply
    }

    /// `POST /threads/{t}/runs/stream`: the run's event stream, once its response has begun.
    pub async fn stream_run(&self, thread_id: &str, body: Value) -> SseReader {
        let request = self
            .client
            .post(format!("{}/threads/{thread_id}/runs/stream", self.address))
            .json(&body);
        SseReader::new(request.send().await.unwrap())
    }

    /// `GET /threads/{t}/runs/{r}/stream` (joins a run's stream), with `Last-Event-ID` if given.
    pub async fn join_stream(
        &self,
        thread_id: &str,
        run_id: &str,
        last_event_id: Option<&str>,
    ) -> SseReader {
        let mut request = self.client.get(format!(
            "{}/threads/{thread_id}/runs/{run_id}/stream",
            self.address
        ));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        SseReader::new(request.send().await.unwrap())
    }

    /// Creates a run of the `gated` graph saying `text`, waiting at gate `gate`.
    pub async fn gated_run(
        &self,
        thread_id: &str,
        text: &str,
        gate: &str,
        strategy: &str,
    ) -> Reply {
        self.create_run(
            thread_id,
            json!({
                "assistant_id": "gated",
                "input": {"messages": [{"role": "user", "content": text}]},
                "config": {"configurable": {"gate": gate}},
                "multitask_strategy": strategy,
            }),
        )
        .await
    }

    /// Joins a run and returns its result body.
    pub async fn join(&self, thread_id: &str, run_id: &str) -> Value {
        let reply = tokio::time::timeout(
            DEADLINE,
            self.get(&format!("/threads/{thread_id}/runs/{run_id}/join")),
        )
        .await
        .unwrap_or_else(|_| panic!("run {run_id} did not end in time"));
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    }

    /// A run's `status` (`Value::Null` if it does not exist).
    pub async fn run_status(&self, thread_id: &str, run_id: &str) -> Value {
        self.get(&format!("/threads/{thread_id}/runs/{run_id}"))
            .await
            .body["status"]
            .clone()
    }

    /// A thread's `status` (`Value::Null` if it does not exist).
    pub async fn thread_status(&self, thread_id: &str) -> Value {
        self.get(&format!("/threads/{thread_id}")).await.body["status"].clone()
    }

    /// Polls until the thread's status is `status`.
    pub async fn wait_for_thread_status(&self, thread_id: &str, status: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let reply = self.get(&format!("/threads/{thread_id}")).await;
            if reply.body["status"] == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "thread {thread_id} did not become {status}; it is {}",
                reply.body["status"]
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The state's messages as `(type, content)` pairs.
    pub async fn messages(&self, thread_id: &str) -> Vec<(String, String)> {
        let state = self.get(&format!("/threads/{thread_id}/state")).await;
        assert_eq!(state.status, 200, "{:?}", state.body);
        state.body["values"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|message| {
                (
                    message["type"].as_str().unwrap_or_default().to_owned(),
                    message["content"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The contents of the human messages in the state, in order.
    pub async fn human_messages(&self, thread_id: &str) -> Vec<String> {
        self.messages(thread_id)
            .await
            .into_iter()
            .filter(|(kind, _)| kind == "human")
            .map(|(_, content)| content)
            .collect()
    }

    /// Runs one SQL query returning a single integer, on a read-only connection of its own.
    pub async fn count(&self, sql: &'static str) -> i64 {
        self.query_integer(sql, Vec::new()).await
    }

    /// Runs one SQL query with text parameters returning a single integer, on a read-only
    /// connection of its own (the server's store exposes no SQL).
    pub async fn query_integer(&self, sql: &str, params: Vec<String>) -> i64 {
        let path = self.database_path.clone();
        let sql = sql.to_owned();
        tokio::task::spawn_blocking(move || {
            let connection = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            connection.busy_timeout(DEADLINE).unwrap();
            connection
                .query_row(&sql, rusqlite::params_from_iter(params), |row| row.get(0))
                .unwrap()
        })
        .await
        .unwrap()
    }

    /// Total rows of every table: a rejected request must leave it unchanged.
    pub async fn row_counts(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in [
            "SELECT COUNT(*) FROM threads",
            "SELECT COUNT(*) FROM runs",
            "SELECT COUNT(*) FROM checkpoints",
            "SELECT COUNT(*) FROM checkpoint_writes",
            "SELECT COUNT(*) FROM assistants",
            "SELECT COUNT(*) FROM assistant_versions",
        ] {
            counts.push(self.count(table).await);
        }
        counts
    }

    /// Checkpoints (or pending writes) that reference a run that does not exist.
    pub async fn orphaned_checkpoints(&self) -> i64 {
        self.count(
            "SELECT (SELECT COUNT(*) FROM checkpoints c
                     WHERE (c.run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = c.run_id))
                        OR (json_extract(c.metadata, '$.run_id') IS NOT NULL AND c.source != 'update'
                            AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = json_extract(c.metadata, '$.run_id'))))
                  + (SELECT COUNT(*) FROM checkpoint_writes w
                     WHERE w.run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = w.run_id))",
        )
        .await
    }
}

/// The `run_id` of a run reply.
pub fn run_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "run not created: {:?}", reply.body);
    reply.body["run_id"].as_str().unwrap().to_owned()
}
