//! http and command nodes and tools against real servers and scripts on loopback: updates and
//! custom events, retries, timeouts, failures, malformed output, and cancellation that kills
//! the program and closes the request. Graph files are written per test, with the port in them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{run_id, spawn_app_with, TestApp, DEADLINE};
use crate::sse::{names, SseEvent, SseReader};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts");

/// One request the loopback server received.
#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    headers: HashMap<String, String>,
    body: Value,
}

/// What the loopback server saw, and the switch that lets `/node/update` finish.
struct Hub {
    requests: Mutex<Vec<Recorded>>,
    /// Requests to a `hold` endpoint being held open.
    held: watch::Sender<usize>,
    /// Held requests whose client closed the connection.
    dropped: watch::Sender<usize>,
    release: watch::Sender<bool>,
}

/// A real HTTP/1.1 server on 127.0.0.1 port 0, serving node and tool endpoints:
/// `/node/update` streams two custom lines, waits for `release`, then sends an update;
/// `/node/pretty` answers one pretty-printed object; `/node/flaky` fails twice with 503;
/// `/node/down` always answers 503, `/node/reject` 400, `/node/malformed` text;
/// `/node/hold` and `/tool/hold` never answer and record when the client goes away;
/// `/tool/weather` answers a JSON string; `/tool/broken` answers 500; `/tool/flaky` answers
/// 503 once, then a JSON string.
struct Loopback {
    port: u16,
    hub: Arc<Hub>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Loopback {
    async fn start() -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hub = Arc::new(Hub {
            requests: Mutex::new(vec![]),
            held: watch::channel(0).0,
            dropped: watch::channel(0).0,
            release: watch::channel(false).0,
        });
        let serving = hub.clone();
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, serving.clone()));
            }
        });
        Loopback { port, hub, server }
    }

    /// The requests made to `path`, in order.
    fn requests(&self, path: &str) -> Vec<Recorded> {
        let requests = self.hub.requests.lock().unwrap();
        requests
            .iter()
            .filter(|request| request.path == path)
            .cloned()
            .collect()
    }

    fn release(&self) {
        self.hub.release.send_replace(true);
    }

    async fn wait_for_held(&self, count: usize) {
        wait_for_count(&self.hub.held, count, "held requests").await;
    }

    async fn wait_for_dropped(&self, count: usize) {
        wait_for_count(
            &self.hub.dropped,
            count,
            "held requests dropped by the client",
        )
        .await;
    }
}

async fn wait_for_count(counter: &watch::Sender<usize>, count: usize, what: &str) {
    let mut receiver = counter.subscribe();
    tokio::time::timeout(DEADLINE, receiver.wait_for(|seen| *seen >= count))
        .await
        .unwrap_or_else(|_| panic!("{count} {what} not seen in time"))
        .unwrap();
}

async fn serve(mut socket: TcpStream, hub: Arc<Hub>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let path = request.path.clone();
    let attempt = {
        let mut requests = hub.requests.lock().unwrap();
        requests.push(request.clone());
        requests.iter().filter(|seen| seen.path == path).count()
    };
    match path.as_str() {
        "/node/update" => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n";
            let lines = "{\"custom\": {\"step\": 1}}\n{\"custom\": {\"step\": 2}}\n";
            if socket
                .write_all(format!("{head}{lines}").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut release = hub.release.subscribe();
            let _ = release.wait_for(|open| *open).await;
            let messages = request.body["state"]["messages"]
                .as_array()
                .map_or(0, Vec::len);
            let node = request.body["node"].as_str().unwrap_or_default();
            let update = json!({"notes": [format!("http saw {messages} messages at node {node}")]});
            let _ = socket.write_all(format!("{update}\n").as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        "/node/pretty" => {
            let update = json!({"notes": ["pretty"], "messages": [{"type": "ai", "content": "from a pretty body"}]});
            let text = serde_json::to_string_pretty(&update).unwrap();
            respond(&mut socket, 200, "application/json", &text).await;
        }
        "/node/flaky" if attempt <= 2 => {
            respond(&mut socket, 503, "text/plain", "try again later").await
        }
        "/node/flaky" => {
            let text = json!({"notes": [format!("third time lucky: attempt {attempt}")]});
            respond(&mut socket, 200, "application/json", &text.to_string()).await;
        }
        "/node/down" => respond(&mut socket, 503, "text/plain", "down for maintenance").await,
        "/node/reject" => respond(&mut socket, 400, "text/plain", "the state lacks a field").await,
        "/node/malformed" => respond(&mut socket, 200, "text/plain", "this is not json\n").await,
        "/node/hold" | "/tool/hold" => {
            hub.held.send_modify(|held| *held += 1);
            // The client sends nothing after its request: the next read ends when it goes away.
            let mut byte = [0u8; 1];
            while let Ok(1..) = socket.read(&mut byte).await {}
            hub.dropped.send_modify(|dropped| *dropped += 1);
        }
        "/tool/weather" => {
            let city = request.body["city"].as_str().unwrap_or("nowhere");
            let text = json!(format!("sunny in {city}"));
            respond(&mut socket, 200, "application/json", &text.to_string()).await;
        }
        "/tool/broken" => respond(&mut socket, 500, "text/plain", "upstream exploded").await,
        "/tool/flaky" if attempt == 1 => {
            respond(&mut socket, 503, "text/plain", "warming up").await
        }
        "/tool/flaky" => {
            let text = json!(format!("ready at attempt {attempt}"));
            respond(&mut socket, 200, "application/json", &text.to_string()).await;
        }
        _ => respond(&mut socket, 404, "text/plain", "no such endpoint").await,
    }
}

async fn respond(socket: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// Reads one request: its path, lowercase headers and JSON body.
async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let count = socket.read(&mut chunk).await.ok()?;
        if count == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..count]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|length| length.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let count = socket.read(&mut chunk).await.ok()?;
        if count == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..count]);
    }
    let body = serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(Value::Null);
    Some(Recorded {
        path,
        headers,
        body,
    })
}

/// A server with test graphs written to a directory of their own, and a loopback server.
struct Fixture {
    app: TestApp,
    server: Loopback,
    /// Where the graph files are; command nodes run here. `scripts` links to tests/scripts.
    dir: PathBuf,
    _directory: tempfile::TempDir,
}

/// A graph file `id` with `messages` and `notes` channels; `{port}` in `body` is the loopback
/// server's port.
struct GraphFile {
    id: &'static str,
    body: String,
}

/// A graph whose one node, `work`, is declared by `node` (a TOML fragment).
fn node_graph(id: &'static str, node: &str) -> GraphFile {
    GraphFile {
        id,
        body: format!(
            "[[nodes]]\nname = \"work\"\n{node}\n\n[[edges]]\nfrom = \"__start__\"\nto = \"work\"\n"
        ),
    }
}

async fn fixture(graphs: Vec<GraphFile>) -> Fixture {
    let server = Loopback::start().await;
    let directory = tempfile::tempdir().unwrap();
    let dir = directory.path().canonicalize().unwrap();
    std::os::unix::fs::symlink(SCRIPTS, dir.join("scripts")).unwrap();
    std::fs::create_dir(dir.join("bin")).unwrap();
    std::os::unix::fs::symlink("/bin/sh", dir.join("bin/sh")).unwrap();
    let mut files = vec![];
    for graph in graphs {
        let text = format!(
            "id = \"{}\"\n\n[channels]\nmessages = \"messages\"\nnotes = \"append\"\n\n{}",
            graph.id,
            graph.body.replace("{port}", &server.port.to_string())
        );
        let path = dir.join(format!("{}.toml", graph.id));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let app = spawn_app_with(|settings| settings.graphs.files.extend(files)).await;
    Fixture {
        app,
        server,
        dir,
        _directory: directory,
    }
}

/// Reads events until `count` custom events have arrived; returns everything read.
async fn until_customs(reader: &mut SseReader, count: usize) -> Vec<SseEvent> {
    let mut events = vec![];
    while events
        .iter()
        .filter(|event: &&SseEvent| event.name == "custom")
        .count()
        < count
    {
        events.push(reader.next().await.expect("the stream is still open"));
    }
    events
}

/// Runs `body` on a new thread and waits for its result (`__error__` when it failed).
async fn run_wait(app: &TestApp, body: Value) -> (String, Value) {
    let thread_id = app.create_thread().await;
    let reply = app
        .post(&format!("/threads/{thread_id}/runs/wait"), body)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    (thread_id, reply.body)
}

fn hello(assistant_id: &str, configurable: Value) -> Value {
    json!({
        "assistant_id": assistant_id,
        "input": {"messages": [{"role": "user", "content": "hello"}]},
        "config": {"configurable": configurable},
    })
}

/// The run error of a `/wait` result, as (class, message).
fn error_of(result: &Value) -> (String, String) {
    let error = &result["__error__"];
    assert!(error.is_object(), "the run did not fail: {result}");
    (
        error["error"].as_str().unwrap().to_owned(),
        error["message"].as_str().unwrap().to_owned(),
    )
}

/// Polls until the file holds a pid, and returns it.
async fn wait_for_pid(path: &Path) -> u32 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().parse().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pid in {} in time",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the process runs: it has a /proc entry that is not a zombie (killed, not yet reaped).
fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X'))
        }
        Err(_) => false,
    }
}

/// Polls until the process no longer runs.
async fn wait_until_gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while process_runs(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The run's state's `notes`.
async fn notes(app: &TestApp, thread_id: &str) -> Value {
    let state = app.get(&format!("/threads/{thread_id}/state")).await;
    assert_eq!(state.status, 200, "{:?}", state.body);
    state.body["values"]["notes"].clone()
}

const PYTHON_NODE: &str =
    "kind = \"command\"\ncommand = [\"python3\", \"scripts/external.py\", \"node\"]";

#[tokio::test]
async fn an_http_node_streams_custom_events_then_applies_its_update() {
    let fixture = fixture(vec![
        node_graph(
            "http_node",
            "kind = \"http\"\nurl = \"http://127.0.0.1:{port}/node/update\"\nheaders = { \"X-Api-Key\" = \"k-123\" }",
        ),
        node_graph(
            "pretty_node",
            "kind = \"http\"\nurl = \"http://127.0.0.1:{port}/node/pretty\"",
        ),
    ])
    .await;
    let app = &fixture.app;
    let thread_id = app.create_thread().await;

    let mut body = hello("http_node", json!({"topic": "scores"}));
    body["stream_mode"] = json!(["custom", "values"]);
    let mut reader = app.stream_run(&thread_id, body).await;
    // Both custom events arrive while the server still holds the final update back.
    let mut events = until_customs(&mut reader, 2).await;
    fixture.server.release();
    events.extend(reader.collect().await);

    assert_eq!(
        names(&events),
        ["metadata", "values", "custom", "custom", "values"]
    );
    assert_eq!(events[2].data, json!({"step": 1}));
    assert_eq!(events[3].data, json!({"step": 2}));
    assert_eq!(
        events[4].data["notes"],
        json!(["http saw 1 messages at node work"])
    );
    assert_eq!(
        notes(app, &thread_id).await,
        json!(["http saw 1 messages at node work"])
    );
    let requests = fixture.server.requests("/node/update");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.headers["x-api-key"], "k-123");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.body["node"], "work");
    assert_eq!(request.body["config"]["topic"], "scores");
    assert_eq!(request.body["state"]["messages"][0]["content"], "hello");

    let (thread_id, result) = run_wait(app, hello("pretty_node", json!({}))).await;
    assert_eq!(result["notes"], json!(["pretty"]));
    assert_eq!(result["messages"][1]["content"], "from a pretty body");
    assert_eq!(notes(app, &thread_id).await, json!(["pretty"]));
}

#[tokio::test]
async fn a_command_node_streams_custom_events_then_applies_its_update() {
    let fixture = fixture(vec![
        node_graph(
            "command_node",
            &format!("{PYTHON_NODE}\nenv = {{ LEVEL = \"7\" }}"),
        ),
        node_graph(
            "relative_program",
            "kind = \"command\"\ncommand = [\"bin/sh\", \"-c\", \"cat >/dev/null; echo '{\\\"notes\\\": [\\\"relative\\\"]}'\"]",
        ),
    ])
    .await;
    let app = &fixture.app;
    let thread_id = app.create_thread().await;
    let release_file = fixture.dir.join("release");

    let mut body = hello(
        "command_node",
        json!({"release_file": release_file.to_str().unwrap()}),
    );
    body["stream_mode"] = json!(["custom", "values"]);
    let mut reader = app.stream_run(&thread_id, body).await;
    // The program waits for the release file after its custom lines.
    let mut events = until_customs(&mut reader, 2).await;
    std::fs::write(&release_file, "").unwrap();
    events.extend(reader.collect().await);

    assert_eq!(
        names(&events),
        ["metadata", "values", "custom", "custom", "values"]
    );
    assert_eq!(events[2].data, json!({"step": 1}));
    assert_eq!(events[3].data, json!({"step": 2}));
    let expected = json!([
        "command saw 1 messages at node work",
        format!("cwd {}", fixture.dir.display()),
        "level 7",
    ]);
    assert_eq!(events[4].data["notes"], expected);
    assert_eq!(notes(app, &thread_id).await, expected);

    let (_, result) = run_wait(app, hello("relative_program", json!({}))).await;
    assert_eq!(result["notes"], json!(["relative"]));
}

#[tokio::test]
async fn transient_failures_are_retried_and_others_are_not() {
    let retry = "retry = { max_attempts = 3, backoff_ms = 10, backoff_factor = 2.0 }";
    let fixture = fixture(vec![
        node_graph(
            "flaky",
            &format!("kind = \"http\"\nurl = \"http://127.0.0.1:{{port}}/node/flaky\"\n{retry}"),
        ),
        node_graph(
            "reject",
            &format!("kind = \"http\"\nurl = \"http://127.0.0.1:{{port}}/node/reject\"\n{retry}"),
        ),
        node_graph(
            "down",
            "kind = \"http\"\nurl = \"http://127.0.0.1:{port}/node/down\"\nretry = { max_attempts = 2, backoff_ms = 10 }",
        ),
        node_graph("flaky_command", &format!("{PYTHON_NODE}\n{retry}")),
    ])
    .await;
    let app = &fixture.app;

    let (thread_id, result) = run_wait(app, hello("flaky", json!({}))).await;
    assert_eq!(
        result["notes"],
        json!(["third time lucky: attempt 3"]),
        "{result}"
    );
    assert_eq!(fixture.server.requests("/node/flaky").len(), 3);
    assert_eq!(app.thread_status(&thread_id).await, "idle");

    let (_, result) = run_wait(app, hello("reject", json!({}))).await;
    let (class, message) = error_of(&result);
    assert_eq!(class, "HttpNodeError");
    assert_eq!(
        message,
        "node 'work' answered HTTP 400 Bad Request: \"the state lacks a field\" (1 attempt made; this failure is not retried)"
    );
    assert_eq!(fixture.server.requests("/node/reject").len(), 1);

    let (_, result) = run_wait(app, hello("down", json!({}))).await;
    let (class, message) = error_of(&result);
    assert_eq!(class, "HttpNodeError");
    assert_eq!(
        message,
        "node 'work' answered HTTP 503 Service Unavailable: \"down for maintenance\" (2 attempts made)"
    );
    assert_eq!(fixture.server.requests("/node/down").len(), 2);

    let counter = fixture.dir.join("counter");
    let (_, result) = run_wait(
        app,
        hello(
            "flaky_command",
            json!({"mode": "flaky", "counter_file": counter.to_str().unwrap()}),
        ),
    )
    .await;
    assert_eq!(
        result["notes"],
        json!(["succeeded at attempt 3"]),
        "{result}"
    );
}

#[tokio::test]
async fn an_attempt_that_overruns_its_timeout_fails_the_run_and_is_stopped() {
    let fixture = fixture(vec![
        node_graph(
            "slow_http",
            "kind = \"http\"\nurl = \"http://127.0.0.1:{port}/node/hold\"\ntimeout_seconds = 0.3",
        ),
        node_graph(
            "slow_command",
            &format!("{PYTHON_NODE}\ntimeout_seconds = 1"),
        ),
    ])
    .await;
    let app = &fixture.app;

    let (thread_id, result) = run_wait(app, hello("slow_http", json!({}))).await;
    assert_eq!(
        error_of(&result),
        (
            "NodeTimeoutError".to_owned(),
            "node 'work' timed out after 0.3 s (1 attempt made)".to_owned()
        )
    );
    fixture.server.wait_for_dropped(1).await;
    let run = app.get(&format!("/threads/{thread_id}/runs")).await;
    assert_eq!(run.body[0]["status"], "error");
    // A failed run leaves the thread `error`; the thread takes new runs, and is idle after one.
    assert_eq!(app.thread_status(&thread_id).await, "error");
    let again = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "echo", "input": {"messages": "next"}}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(app.thread_status(&thread_id).await, "idle");

    let pid_file = fixture.dir.join("slow.pid");
    let (_, result) = run_wait(
        app,
        hello(
            "slow_command",
            json!({"mode": "block", "pid_file": pid_file.to_str().unwrap()}),
        ),
    )
    .await;
    assert_eq!(
        error_of(&result),
        (
            "NodeTimeoutError".to_owned(),
            "node 'work' timed out after 1 s (1 attempt made)".to_owned()
        )
    );
    // The program may not have got as far as writing its pid before it was killed.
    if pid_file.exists() {
        wait_until_gone(wait_for_pid(&pid_file).await).await;
    }
}

#[tokio::test]
async fn a_failed_exit_or_malformed_output_fails_the_run_with_what_went_wrong() {
    let fixture = fixture(vec![
        node_graph(
            "command",
            &format!("{PYTHON_NODE}\nretry = {{ max_attempts = 2, backoff_ms = 1 }}"),
        ),
        node_graph(
            "http_malformed",
            "kind = \"http\"\nurl = \"http://127.0.0.1:{port}/node/malformed\"\nretry = { max_attempts = 3 }",
        ),
        node_graph(
            "missing_program",
            "kind = \"command\"\ncommand = [\"./no-such-program\"]",
        ),
    ])
    .await;
    let app = &fixture.app;

    let (_, result) = run_wait(app, hello("command", json!({"mode": "fail"}))).await;
    let (class, message) = error_of(&result);
    assert_eq!(class, "CommandNodeError");
    assert!(
        message.starts_with(
            "node 'work' exited unsuccessfully (exit status: 3); stderr ends: noise\nnoise\n"
        ),
        "{message}"
    );
    assert!(
        message.ends_with("the real reason: the disk is on fire (2 attempts made)"),
        "{message}"
    );
    assert!(message.len() < 4096 + 200, "stderr is cut to its end");

    let (_, result) = run_wait(app, hello("command", json!({"mode": "malformed"}))).await;
    let (class, message) = error_of(&result);
    assert_eq!(class, "NodeOutputError");
    assert!(
        message.starts_with("node 'work' answered with output that is not JSON"),
        "{message}"
    );
    assert!(
        message.contains("\"this is not json\"")
            && message.ends_with("(1 attempt made; this failure is not retried)"),
        "{message}"
    );

    let (_, result) = run_wait(app, hello("http_malformed", json!({}))).await;
    let (class, message) = error_of(&result);
    assert_eq!(class, "NodeOutputError");
    assert!(message.contains("this is not json"), "{message}");
    assert_eq!(fixture.server.requests("/node/malformed").len(), 1);

    let (_, result) = run_wait(app, hello("missing_program", json!({}))).await;
    let (class, message) = error_of(&result);
    assert_eq!(class, "CommandNodeError");
    assert!(
        message.starts_with(&format!(
            "node 'work' could not start {}/./no-such-program",
            fixture.dir.display()
        )),
        "{message}"
    );
}

/// A graph whose two nodes, an http node and a command node, both hang until stopped.
fn holding_graph() -> GraphFile {
    GraphFile {
        id: "holding",
        body: format!(
            "[[nodes]]\nname = \"held_http\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{{port}}/node/hold\"\n\n\
             [[nodes]]\nname = \"held_command\"\n{PYTHON_NODE}\n\n\
             [[edges]]\nfrom = \"__start__\"\nto = \"held_http\"\n\n\
             [[edges]]\nfrom = \"__start__\"\nto = \"held_command\"\n"
        ),
    }
}

/// Starts a run of `graph` on a new thread whose python node blocks, and waits until that program
/// runs; returns the thread, the run and the program's pid.
async fn start_blocking_run(fixture: &Fixture, graph: &str) -> (String, String, u32) {
    let app = &fixture.app;
    let thread_id = app.create_thread().await;
    let pid_file = fixture.dir.join(format!("{thread_id}.pid"));
    let run = run_id(
        &app.create_run(
            &thread_id,
            hello(
                graph,
                json!({"mode": "block", "pid_file": pid_file.to_str().unwrap()}),
            ),
        )
        .await,
    );
    let pid = wait_for_pid(&pid_file).await;
    assert!(process_runs(pid), "the node's program runs");
    (thread_id, run, pid)
}

/// Starts a `holding` run on a new thread and waits until both nodes hang; returns the thread,
/// the run and the program's pid.
async fn start_holding_run(fixture: &Fixture) -> (String, String, u32) {
    let started = start_blocking_run(fixture, "holding").await;
    fixture.server.wait_for_held(1).await;
    started
}

#[tokio::test]
async fn cancelling_a_run_kills_its_program_and_closes_its_request() {
    let fixture = fixture(vec![holding_graph()]).await;
    let app = &fixture.app;
    let (thread_id, run, pid) = start_holding_run(&fixture).await;

    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel"),
            json!(null),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);

    wait_until_gone(pid).await;
    fixture.server.wait_for_dropped(1).await;
    assert_eq!(app.run_status(&thread_id, &run).await, "interrupted");
}

#[tokio::test]
async fn a_rollback_double_text_kills_the_program_and_closes_the_request() {
    let fixture = fixture(vec![holding_graph()]).await;
    let app = &fixture.app;
    let (thread_id, first, pid) = start_holding_run(&fixture).await;

    let second = run_id(
        &app.create_run(
            &thread_id,
            json!({"assistant_id": "echo", "input": {"messages": "instead"}, "multitask_strategy": "rollback"}),
        )
        .await,
    );

    wait_until_gone(pid).await;
    fixture.server.wait_for_dropped(1).await;
    let result = app.join(&thread_id, &second).await;
    assert_eq!(result["messages"][0]["content"], "instead", "{result}");
    assert_eq!(app.run_status(&thread_id, &first).await, Value::Null);
    assert_eq!(app.thread_status(&thread_id).await, "idle");
}

#[tokio::test]
async fn a_tools_node_runs_http_and_command_tools_and_reports_each_failure() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let tools = format!(
        r#"[tools.weather]
kind = "http"
url = "http://127.0.0.1:{{port}}/tool/weather"
description = "Current weather for a city"
parameters = {{ type = "object", properties = {{ city = {{ type = "string" }} }}, required = ["city"] }}
headers = {{ "X-Team" = "a" }}

[tools.lookup]
kind = "command"
command = ["sh", "scripts/lookup.sh"]
env = {{ LEVEL = "1" }}

[tools.broken]
kind = "http"
url = "http://127.0.0.1:{{port}}/tool/broken"
retry = {{ max_attempts = 1 }}

[tools.offline]
kind = "http"
url = "http://127.0.0.1:{closed_port}/tool"

[tools.stuck]
kind = "http"
url = "http://127.0.0.1:{{port}}/tool/hold"
timeout_seconds = 0.3
retry = {{ max_attempts = 1 }}

[tools.sleepy]
kind = "command"
command = ["python3", "scripts/external.py", "sleepy-tool"]
timeout_seconds = 0.5

[[nodes]]
name = "tools"
kind = "tools"
tools = ["weather", "lookup", "broken", "offline", "stuck", "sleepy"]

[[edges]]
from = "__start__"
to = "tools"
"#
    );
    let fixture = fixture(vec![GraphFile {
        id: "toolbox",
        body: tools,
    }])
    .await;
    let app = &fixture.app;
    let pid_file = fixture.dir.join("sleepy.pid");
    let calls = json!([
        {"name": "weather", "args": {"city": "Paris"}, "id": "call_weather"},
        {"name": "lookup", "args": {"key": "x"}, "id": "call_lookup"},
        {"name": "broken", "args": {}, "id": "call_broken"},
        {"name": "offline", "args": {}, "id": "call_offline"},
        {"name": "stuck", "args": {}, "id": "call_stuck"},
        {"name": "sleepy", "args": {"pid_file": pid_file.to_str().unwrap()}, "id": "call_sleepy"},
        {"name": "nonexistent", "args": {}, "id": "call_unknown"},
    ]);
    let input = json!({"messages": [
        {"type": "human", "content": "go"},
        {"type": "ai", "content": "", "tool_calls": calls},
    ]});

    let (_, result) = run_wait(app, json!({"assistant_id": "toolbox", "input": input})).await;

    let messages = result["messages"].as_array().unwrap();
    let answers: Vec<(&str, &str, &str)> = messages[2..]
        .iter()
        .map(|message| {
            assert_eq!(message["type"], "tool");
            (
                message["tool_call_id"].as_str().unwrap(),
                message["status"].as_str().unwrap(),
                message["content"].as_str().unwrap(),
            )
        })
        .collect();
    let described = |id: &str| {
        answers
            .iter()
            .find(|(call_id, _, _)| *call_id == id)
            .map(|(_, status, content)| (status.to_string(), content.to_string()))
            .unwrap_or_else(|| panic!("no answer to {id}: {answers:?}"))
    };
    assert_eq!(answers.len(), 7, "{answers:?}");
    assert_eq!(
        described("call_weather"),
        ("success".into(), "sunny in Paris".into())
    );
    assert_eq!(
        described("call_lookup"),
        ("success".into(), "level 1: {\"key\":\"x\"}".into())
    );
    assert_eq!(
        described("call_broken"),
        (
            "error".into(),
            "Error: tool 'broken' answered HTTP 500 Internal Server Error: \"upstream exploded\""
                .into()
        )
    );
    let (status, content) = described("call_offline");
    assert_eq!(status, "error");
    assert!(
        content.starts_with(&format!(
            "Error: tool 'offline' could not reach http://127.0.0.1:{closed_port}/tool"
        )),
        "{content}"
    );
    assert_eq!(
        described("call_stuck"),
        (
            "error".into(),
            "Error: tool 'stuck' timed out after 0.3 s".into()
        )
    );
    assert_eq!(
        described("call_sleepy"),
        (
            "error".into(),
            "Error: tool 'sleepy' timed out after 0.5 s".into()
        )
    );
    let (status, content) = described("call_unknown");
    assert_eq!(status, "error");
    assert!(
        content.starts_with("Error: nonexistent is not a valid tool"),
        "{content}"
    );

    let weather = fixture.server.requests("/tool/weather");
    assert_eq!(weather.len(), 1);
    assert_eq!(weather[0].body, json!({"city": "Paris"}));
    assert_eq!(weather[0].headers["x-team"], "a");
    fixture.server.wait_for_dropped(1).await;
    // The overrunning program was killed, if it got as far as writing its pid.
    if pid_file.exists() {
        wait_until_gone(wait_for_pid(&pid_file).await).await;
    }
}

/// A graph whose `tools` node runs the tool `name`, declared by `tool` (a TOML fragment).
fn tool_graph(id: &'static str, name: &str, tool: &str) -> GraphFile {
    GraphFile {
        id,
        body: format!(
            "[tools.{name}]\n{tool}\n\n[[nodes]]\nname = \"tools\"\nkind = \"tools\"\ntools = [\"{name}\"]\n\n[[edges]]\nfrom = \"__start__\"\nto = \"tools\"\n"
        ),
    }
}

/// Runs `graph` on a call of `tool` and returns the tool message.
async fn call_tool(app: &TestApp, graph: &str, tool: &str) -> Value {
    let input = json!({"messages": [
        {"type": "human", "content": "go"},
        {"type": "ai", "content": "", "tool_calls": [{"name": tool, "args": {}, "id": "call_1"}]},
    ]});
    let (_, result) = run_wait(app, json!({"assistant_id": graph, "input": input})).await;
    let message = result["messages"][2].clone();
    assert_eq!(message["tool_call_id"], "call_1", "{result}");
    message
}

#[tokio::test]
async fn an_http_tool_retries_a_503_and_its_call_succeeds() {
    // No `retry` table: http tools retry transient failures by default.
    let fixture = fixture(vec![tool_graph(
        "flaky_tool",
        "flaky",
        "kind = \"http\"\nurl = \"http://127.0.0.1:{port}/tool/flaky\"",
    )])
    .await;

    let message = call_tool(&fixture.app, "flaky_tool", "flaky").await;

    assert_eq!(
        (&message["status"], &message["content"]),
        (&json!("success"), &json!("ready at attempt 2")),
        "{message}"
    );
    assert_eq!(fixture.server.requests("/tool/flaky").len(), 2);
}

#[tokio::test]
async fn an_http_tool_whose_retries_run_out_says_how_many_attempts_were_made() {
    let fixture = fixture(vec![tool_graph(
        "broken_tool",
        "broken",
        "kind = \"http\"\nurl = \"http://127.0.0.1:{port}/tool/broken\"\nretry = { max_attempts = 2, backoff_ms = 10 }",
    )])
    .await;

    let message = call_tool(&fixture.app, "broken_tool", "broken").await;

    assert_eq!(
        (&message["status"], &message["content"]),
        (
            &json!("error"),
            &json!("Error: tool 'broken' answered HTTP 500 Internal Server Error: \"upstream exploded\" (2 attempts made)")
        ),
        "{message}"
    );
    assert_eq!(fixture.server.requests("/tool/broken").len(), 2);
}

#[tokio::test]
async fn cancelling_a_run_kills_what_its_program_started_too() {
    // `; true` keeps the shell from exec-ing python: python is the shell's child, not the node's.
    let wrapped = node_graph(
        "wrapped",
        "kind = \"command\"\ncommand = [\"sh\", \"-c\", \"python3 scripts/external.py node; true\"]",
    );
    let fixture = fixture(vec![wrapped]).await;
    let app = &fixture.app;
    let (thread_id, run, grandchild) = start_blocking_run(&fixture, "wrapped").await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel"),
            json!(null),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    wait_until_gone(grandchild).await;
    assert_eq!(app.run_status(&thread_id, &run).await, "interrupted");
}
