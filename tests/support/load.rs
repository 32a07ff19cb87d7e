//! Run load, shared by the memory benchmark (`benches/memory.rs`) and the soak test
//! (`tests/soak.rs`), which include it with `#[path]` (next to `binary.rs`, whose `memory` it
//! samples): the `agent` run each new thread gets, and the mix of run operations a soak client
//! loops over (`soak`) with the server's memory sampled as it goes. Every response is checked (status, no `__error__`, no
//! `error` event), so a failed operation is counted and its first failure kept, never hidden.

use std::collections::VecDeque;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::binary::{memory, Memory};

/// Kilobytes as megabytes (MiB), for printing.
pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The size of a SQLite database with its `-wal` and `-shm` files, in bytes.
pub fn database_bytes(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            fs::metadata(name).ok()
        })
        .map(|metadata| metadata.len())
        .sum()
}

/// A client for the load: one connection pool, and a timeout so a hung server fails the load
/// instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("the HTTP client builds")
}

/// The input of an `agent` run: the scripted model answers a weather question with a tool call,
/// the tool answers, the model replies, so the run takes three steps and adds four messages.
pub fn agent_input() -> Value {
    json!({"messages": [{"role": "user", "content": "what's the weather in sf?"}]})
}

/// `POST /threads`: a new thread's id.
pub async fn create_thread(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let thread = post(client, &format!("{url}/threads"), &json!({})).await?;
    thread["thread_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("POST /threads answered no thread_id: {thread}"))
}

/// `POST /threads/{thread_id}/runs/wait` of an `agent` run with no step delay; fails unless the
/// run succeeds.
pub async fn wait_agent_run(
    client: &reqwest::Client,
    url: &str,
    thread_id: &str,
) -> Result<(), String> {
    let result = post(
        client,
        &format!("{url}/threads/{thread_id}/runs/wait"),
        &run_body("agent", 0.0, "enqueue"),
    )
    .await?;
    succeeded(&result)
}

/// Operation and run counts of a soak, shared by its clients.
#[derive(Debug, Default)]
pub struct Tally {
    /// Operations finished, successfully or not.
    pub operations: AtomicU64,
    /// Runs created.
    pub runs: AtomicU64,
    /// Operations that failed.
    pub failures: AtomicU64,
    /// The first failure's description.
    pub first_failure: Mutex<Option<String>>,
}

/// One memory sample of a soak.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Time since the load started.
    pub elapsed: Duration,
    /// The server's memory then.
    pub memory: Memory,
    /// Runs created by then.
    pub runs: u64,
}

/// The operations of the mix, numbered as in `SoakClient::step`.
pub const ALL_OPERATIONS: [u64; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// Runs the mix of `SoakClient::step` (only `operations` of it, taken in turn) from `clients`
/// concurrent clients for `duration`, sampling
/// the memory of the server `pid` at the start and every `interval`; `on_sample` sees each
/// sample as it is taken. Answers the samples and the tally once every client has finished its
/// last operation.
pub async fn soak(
    url: &str,
    pid: u32,
    clients: usize,
    operations: &[u64],
    duration: Duration,
    interval: Duration,
    mut on_sample: impl FnMut(&Sample),
) -> (Vec<Sample>, Arc<Tally>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let http = client();
    let mut workers = Vec::new();
    for index in 0..clients {
        let mut soak_client = SoakClient {
            client: http.clone(),
            url: url.to_owned(),
            step: index as u64,
            operations: operations.to_vec(),
            pool: VecDeque::new(),
        };
        let (stop, tally) = (stop.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = soak_client.step(&tally).await;
                tally.operations.fetch_add(1, Ordering::Relaxed);
                if let Err(failure) = result {
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                    let mut first = tally.first_failure.lock().unwrap();
                    first.get_or_insert(failure);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let sample = Sample {
            elapsed: started.elapsed(),
            memory: memory(pid),
            runs: tally.runs.load(Ordering::Relaxed),
        };
        on_sample(&sample);
        samples.push(sample);
        if sample.elapsed >= duration {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a soak client does not panic");
    }
    (samples, tally)
}

/// How many times a pooled thread is reused before it is retired, which bounds the size of its
/// state (each `agent` run adds four messages).
const RUNS_PER_THREAD: u32 = 12;
/// Threads a soak client keeps for repeat runs.
const POOL_THREADS: usize = 8;

/// One soak client: a cursor into the mix and its pool of threads for repeat runs. It runs one
/// operation at a time, so a pooled thread is idle whenever it is picked.
struct SoakClient {
    client: reqwest::Client,
    url: String,
    step: u64,
    /// The operations this client takes in turn.
    operations: Vec<u64>,
    /// Thread ids and the runs each has had.
    pool: VecDeque<(String, u32)>,
}

impl SoakClient {
    /// Runs the next operation of the mix and waits for its runs to end: 0 a new thread and a
    /// `/wait`; 1 `/wait`, 2 background run and join, 3 `POST …/runs/stream`, 8 background run
    /// and join-stream, each on a pooled thread; 4, 7, 9 double-texting with rollback, interrupt
    /// and enqueue; 5 a stateless `/runs/wait`; 6 a new thread and an `echo` run.
    async fn step(&mut self, tally: &Tally) -> Result<(), String> {
        let step = self.step;
        self.step += 1;
        match self.operations[step as usize % self.operations.len()] {
            0 => {
                let thread_id = create_thread(&self.client, &self.url).await?;
                self.pool.push_back((thread_id.clone(), 0));
                if self.pool.len() > POOL_THREADS {
                    self.pool.pop_front();
                }
                tally.runs.fetch_add(1, Ordering::Relaxed);
                wait_agent_run(&self.client, &self.url, &thread_id).await
            }
            1 => {
                let thread_id = self.pooled_thread(1).await?;
                tally.runs.fetch_add(1, Ordering::Relaxed);
                wait_agent_run(&self.client, &self.url, &thread_id).await
            }
            2 => {
                let thread_id = self.pooled_thread(1).await?;
                tally.runs.fetch_add(1, Ordering::Relaxed);
                let run_id = self.create_run(&thread_id, 0.0, "enqueue").await?;
                self.join(&thread_id, &run_id).await
            }
            3 => {
                let thread_id = self.pooled_thread(1).await?;
                tally.runs.fetch_add(1, Ordering::Relaxed);
                let mut body = run_body("agent", 0.0, "enqueue");
                body["stream_mode"] = json!(["values", "updates", "messages-tuple"]);
                let url = format!("{}/threads/{thread_id}/runs/stream", self.url);
                let response = self.client.post(&url).json(&body).send().await;
                read_stream(&url, response, true).await
            }
            4 => self.double_text("rollback", tally).await,
            5 => {
                tally.runs.fetch_add(1, Ordering::Relaxed);
                let result = post(
                    &self.client,
                    &format!("{}/runs/wait", self.url),
                    &run_body("agent", 0.0, "enqueue"),
                )
                .await?;
                succeeded(&result)
            }
            6 => {
                let thread_id = create_thread(&self.client, &self.url).await?;
                tally.runs.fetch_add(1, Ordering::Relaxed);
                let result = post(
                    &self.client,
                    &format!("{}/threads/{thread_id}/runs/wait", self.url),
                    &json!({"assistant_id": "echo", "input": {}}),
                )
                .await?;
                succeeded(&result)
            }
            7 => self.double_text("interrupt", tally).await,
            8 => {
                let thread_id = self.pooled_thread(1).await?;
                tally.runs.fetch_add(1, Ordering::Relaxed);
                let run_id = self.create_run(&thread_id, 0.0, "enqueue").await?;
                let url = format!(
                    "{}/threads/{thread_id}/runs/{run_id}/stream?stream_mode=values",
                    self.url
                );
                // A run that ended before the join is not streamed again (it was not
                // resumable), so the stream may be empty.
                let response = self.client.get(&url).send().await;
                read_stream(&url, response, false).await
            }
            9 => self.double_text("enqueue", tally).await,
            other => Err(format!("the mix has no operation {other}")),
        }
    }

    /// A thread of the pool (a new one if the pool is empty), counted as having `runs` more runs;
    /// a thread that reaches `RUNS_PER_THREAD` leaves the pool.
    async fn pooled_thread(&mut self, runs: u32) -> Result<String, String> {
        if self.pool.is_empty() {
            let thread_id = create_thread(&self.client, &self.url).await?;
            self.pool.push_back((thread_id, 0));
        }
        let index = (self.step as usize) % self.pool.len();
        let (thread_id, used) = &mut self.pool[index];
        *used += runs;
        let thread_id = thread_id.clone();
        if *used >= RUNS_PER_THREAD {
            self.pool.remove(index);
        }
        Ok(thread_id)
    }

    /// Double-texting: a background run slowed to 20 ms per step, then a second run with
    /// `strategy` while the first is (probably) still going; waits for the second. Whether the
    /// first had ended by then changes nothing checked here.
    async fn double_text(&mut self, strategy: &str, tally: &Tally) -> Result<(), String> {
        let thread_id = self.pooled_thread(2).await?;
        tally.runs.fetch_add(2, Ordering::Relaxed);
        self.create_run(&thread_id, 0.02, "enqueue").await?;
        let second = self.create_run(&thread_id, 0.0, strategy).await?;
        self.join(&thread_id, &second).await
    }

    /// `POST /threads/{thread_id}/runs` of an `agent` run: its id.
    async fn create_run(
        &self,
        thread_id: &str,
        delay_seconds: f64,
        strategy: &str,
    ) -> Result<String, String> {
        let run = post(
            &self.client,
            &format!("{}/threads/{thread_id}/runs", self.url),
            &run_body("agent", delay_seconds, strategy),
        )
        .await?;
        run["run_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("POST /threads/{thread_id}/runs answered no run_id: {run}"))
    }

    /// `GET /threads/{thread_id}/runs/{run_id}/join`: fails unless the run succeeded.
    async fn join(&self, thread_id: &str, run_id: &str) -> Result<(), String> {
        let url = format!("{}/threads/{thread_id}/runs/{run_id}/join", self.url);
        let response = self.client.get(&url).send().await;
        succeeded(&json_body(&url, response).await?)
    }
}

/// The body of a run request.
fn run_body(assistant_id: &str, delay_seconds: f64, strategy: &str) -> Value {
    json!({
        "assistant_id": assistant_id,
        "input": agent_input(),
        "config": {"configurable": {"delay": delay_seconds}},
        "multitask_strategy": strategy,
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<Value, String> {
    let response = client.post(url).json(body).send().await;
    json_body(url, response).await
}

/// The JSON body of a 200 response.
async fn json_body(
    url: &str,
    response: reqwest::Result<reqwest::Response>,
) -> Result<Value, String> {
    let response = response.map_err(|error| format!("{url}: {error}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| format!("{url}: reading the body: {error}"))?;
    if status != 200 {
        return Err(format!("{url}: status {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|error| format!("{url}: {error}: {text}"))
}

/// Reads an event stream to its end; fails on a status other than 200, an `error` event, or no
/// `metadata` event when `expect_events`.
async fn read_stream(
    url: &str,
    response: reqwest::Result<reqwest::Response>,
    expect_events: bool,
) -> Result<(), String> {
    let response = response.map_err(|error| format!("{url}: {error}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| format!("{url}: reading the stream: {error}"))?;
    let missing = expect_events && !text.contains("event: metadata");
    if status != 200 || missing || text.contains("event: error") {
        return Err(format!("{url}: status {status}: {text}"));
    }
    Ok(())
}

/// Fails if a `/wait` or `/join` result is a run's error.
fn succeeded(result: &Value) -> Result<(), String> {
    match result.get("__error__") {
        Some(error) => Err(format!("the run failed: {error}")),
        None => Ok(()),
    }
}
