//! Streaming load benchmark against the real `spindle` binary (release build) on a random port
//! with its own SQLite file; the client runs on the same machine and shares its CPUs.
//!
//! - `fanout`: many concurrent SSE subscribers (`GET /threads/{t}/runs/{r}/stream`) on one
//!   resumable run of the `agent` graph. The measured run is queued (`enqueue`) behind a "gate"
//!   run on the same thread, so every subscriber is attached before its first event and all
//!   events are delivered live. Run twice: paced (`--delay` seconds per node step) and burst
//!   (no delay: the delivery rate the server sustains).
//! - `runs`: many concurrent `POST /threads/{t}/runs/stream`, each on its own thread.
//!
//! Every stream asks for `stream_resumable`, so each event carries an id (1, 2, … per run): each
//! subscriber must see exactly 1..N, with N what a join after the run's end replays. Latency
//! from a node's output to the subscriber is the receive time minus the `timestamp` of `debug`
//! events (taken when the node output is published; same machine clock). The server's resident
//! memory (`VmRSS` from `/proc/<pid>/status`) is sampled every 50 ms during each scenario; its
//! peak (`VmHWM`) is reset before each scenario through `/proc/<pid>/clear_refs` where allowed.
//!
//! `cargo bench --bench streams` (options: `-- --subscribers N --delay S --gate S --runs N
//! --run-delay S --only fanout|runs --repeat N`; `--repeat` runs the scenarios again on the same
//! server, to see whether its memory levels off). Exits with status 1 when an event is lost,
//! reordered or duplicated, a stream fails, hangs or is cut off, or a run does not succeed.

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../tests/support/binary.rs"]
mod binary;

use bench::{create_thread, option};
use binary::{memory, Server};
use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

const FANOUT_MODES: [&str; 5] = ["values", "updates", "messages-tuple", "debug", "custom"];
/// The modes of the `runs` scenario; `debug` is there for its timestamps (latency).
const RUN_MODES: [&str; 4] = ["values", "updates", "messages-tuple", "debug"];

fn start_server() -> Server {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    // Forward warnings (a cut-off subscriber, a failed write) so they show next to the figures.
    Server::start(&level, |line| {
        if line.contains("WARN") || line.contains("ERROR") {
            eprintln!("server: {line}");
        }
    })
}

/// The soft and hard `Max open files` of this process, as written in `/proc/self/limits`.
fn open_file_limits() -> Option<(String, String)> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
}

fn limit_value(text: &str) -> u64 {
    text.parse().unwrap_or(u64::MAX)
}

/// Makes sure this process (and so the server it starts, which inherits the limit) may open
/// `needed` files: raises the soft limit to the hard one with `prlimit` (util-linux) when it is
/// too low, since there is no libc binding here to call `setrlimit`; fails clearly otherwise.
fn ensure_open_files(needed: u64) {
    let Some((soft, hard)) = open_file_limits() else {
        eprintln!(
            "cannot read /proc/self/limits; assuming the open-file limit allows {needed} files"
        );
        return;
    };
    if limit_value(&soft) >= needed {
        return;
    }
    if limit_value(&hard) >= needed {
        let raised = Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
        if matches!(raised, Ok(status) if status.success()) {
            if let Some((soft, _)) = open_file_limits() {
                if limit_value(&soft) >= needed {
                    eprintln!("raised the open-file limit from {soft} to {hard} with prlimit");
                    return;
                }
            }
        }
    }
    eprintln!(
        "the open-file limit is {soft} (hard {hard}) but this benchmark needs about {needed} \
         (one socket per stream in the client and in the server); raise it in the shell first, \
         e.g. `ulimit -n {needed}`, or ask for fewer streams (--subscribers, --runs)"
    );
    std::process::exit(2);
}

/// Samples the server's `VmRSS` every 50 ms on its own thread; `finish` answers the largest.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                peak = peak.max(memory(pid).rss_kb);
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { stop, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Memory figures of one scenario, in kB.
struct Memory {
    before: u64,
    peak_sampled: u64,
    /// `VmHWM` at the end: the peak since the reset before the scenario (or since start-up
    /// when the reset is not allowed).
    high_water: u64,
    high_water_reset: bool,
    after: u64,
}

struct MemoryWatch {
    pid: u32,
    before: u64,
    high_water_reset: bool,
    sampler: RssSampler,
}

impl MemoryWatch {
    fn start(pid: u32) -> Self {
        let before = memory(pid).rss_kb;
        // Writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current one.
        let high_water_reset = fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        Self {
            pid,
            before,
            high_water_reset,
            sampler: RssSampler::start(pid),
        }
    }

    /// Stops sampling, then reads the resident size once the server has had `settle` to go
    /// quiet.
    async fn finish(self, settle: Duration) -> Memory {
        let peak_sampled = self.sampler.finish();
        let high_water = memory(self.pid).peak_kb;
        tokio::time::sleep(settle).await;
        Memory {
            before: self.before,
            peak_sampled,
            high_water,
            high_water_reset: self.high_water_reset,
            after: memory(self.pid).rss_kb,
        }
    }
}

/// What one SSE stream delivered.
#[derive(Default)]
struct Tally {
    /// Events (not heartbeats) received.
    events: u64,
    /// Bytes of the body, heartbeats included.
    bytes: u64,
    /// The largest event id seen.
    last_id: u64,
    /// Ids skipped between two received events.
    lost: u64,
    /// Events whose id is not above the previous one (reordered or duplicated).
    out_of_order: u64,
    /// Events without an `id:` line, or malformed frames.
    malformed: u64,
    first_problem: Option<String>,
    /// The data of an `error` event, if one came.
    error_event: Option<String>,
    /// The `run_id` of the `metadata` event.
    run_id: Option<String>,
    /// Receive time minus the `timestamp` of each live `debug` event, in ms.
    latencies: Vec<f64>,
    /// `debug` events published before this subscriber connected (replayed, not live).
    replayed: u64,
    first_event: Option<Instant>,
    last_event: Option<Instant>,
    /// The stream ended with a transport error.
    failed: Option<String>,
    /// The stream was still open at the deadline.
    hung: bool,
}

impl Tally {
    fn problem(&mut self, text: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(text);
        }
    }

    fn frame(
        &mut self,
        frame: &[u8],
        received: DateTime<Utc>,
        now: Instant,
        connected: DateTime<Utc>,
    ) {
        let Ok(text) = std::str::from_utf8(frame) else {
            self.malformed += 1;
            self.problem("a frame is not UTF-8".into());
            return;
        };
        let (mut name, mut data, mut id) = (None, None, None);
        for line in text.split("\r\n") {
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value);
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(value);
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value);
            } else if !line.starts_with(':') {
                self.malformed += 1;
                self.problem(format!("unexpected line {line:?}"));
            }
        }
        let Some(name) = name else {
            // A heartbeat comment.
            return;
        };
        let data = data.unwrap_or_default();
        self.events += 1;
        self.first_event.get_or_insert(now);
        self.last_event = Some(now);
        if self.events == 1 && name != "metadata" {
            self.problem(format!("the first event is {name:?}, not metadata"));
        }
        match id.map(str::parse::<u64>) {
            Some(Ok(id)) => {
                if id > self.last_id + 1 {
                    self.lost += id - self.last_id - 1;
                    self.problem(format!("id {id} after {}", self.last_id));
                } else if id <= self.last_id {
                    self.out_of_order += 1;
                    self.problem(format!("id {id} after {}", self.last_id));
                }
                self.last_id = self.last_id.max(id);
            }
            _ => {
                self.malformed += 1;
                self.problem(format!("a {name} event without a numeric id"));
            }
        }
        match name {
            "metadata" => {
                if let Ok(metadata) = serde_json::from_str::<Value>(data) {
                    self.run_id = metadata["run_id"].as_str().map(str::to_owned);
                }
            }
            "error" => self.error_event = Some(data.to_owned()),
            "debug" => {
                let published = serde_json::from_str::<Value>(data)
                    .ok()
                    .and_then(|debug| debug["timestamp"].as_str().map(str::to_owned))
                    .and_then(|text| DateTime::parse_from_rfc3339(&text).ok());
                match published {
                    Some(published) if published < connected => self.replayed += 1,
                    Some(published) => {
                        let micros = (received - published.with_timezone(&Utc))
                            .num_microseconds()
                            .unwrap_or(i64::MAX);
                        self.latencies.push(micros as f64 / 1000.0);
                    }
                    None => {
                        self.malformed += 1;
                        self.problem("a debug event without a timestamp".into());
                    }
                }
            }
            _ => {}
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads an SSE response to its end (or `deadline`), checking ids and timing `debug` events.
async fn consume(
    mut response: reqwest::Response,
    connected: DateTime<Utc>,
    deadline: tokio::time::Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => {
                tally.hung = true;
                break;
            }
            Ok(Err(error)) => {
                tally.failed = Some(format!("the body failed: {error}"));
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        let received = Utc::now();
        let now = Instant::now();
        tally.bytes += chunk.len() as u64;
        buffer.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(length) = find(&buffer[start..], b"\r\n\r\n") {
            tally.frame(&buffer[start..start + length], received, now, connected);
            start += length + 4;
        }
        buffer.drain(..start);
    }
    if !buffer.is_empty() && !tally.hung && tally.failed.is_none() {
        tally.malformed += 1;
        tally.problem(format!(
            "the stream ended inside a frame: {} bytes left",
            buffer.len()
        ));
    }
    tally
}

/// A stream request: sends it, checks the status, then consumes the events.
async fn stream(
    request: reqwest::RequestBuilder,
    deadline: tokio::time::Instant,
) -> (Tally, Duration) {
    let sent = Instant::now();
    let response = match tokio::time::timeout_at(deadline, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            let mut message = format!("the request failed: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            return (
                Tally {
                    failed: Some(message),
                    ..Tally::default()
                },
                sent.elapsed(),
            );
        }
        Err(_) => {
            return (
                Tally {
                    hung: true,
                    ..Tally::default()
                },
                sent.elapsed(),
            )
        }
    };
    let connected = Utc::now();
    let headers = sent.elapsed();
    if response.status() != 200 {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return (
            Tally {
                failed: Some(format!("status {status}: {body}")),
                ..Tally::default()
            },
            headers,
        );
    }
    (consume(response, connected, deadline).await, headers)
}

async fn post_json(client: &reqwest::Client, url: String, body: Value) -> Value {
    let response = client.post(&url).json(&body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "POST {url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "GET {url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

fn agent_input() -> Value {
    json!({"messages": [{"role": "user", "content": "what's the weather in sf?"}]})
}

/// Waits until the run has left `pending` and `running`; answers its status.
async fn final_status(
    client: &reqwest::Client,
    url: &str,
    thread_id: &str,
    run_id: &str,
) -> String {
    loop {
        let run = get_json(client, format!("{url}/threads/{thread_id}/runs/{run_id}")).await;
        let status = run["status"].as_str().unwrap_or_default().to_owned();
        if status != "pending" && status != "running" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a join after the run's end replays (every event of a resumable run): the reference N.
async fn replayed_count(
    client: &reqwest::Client,
    url: &str,
    thread_id: &str,
    run_id: &str,
) -> Tally {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let request = client.get(format!("{url}/threads/{thread_id}/runs/{run_id}/stream"));
    stream(request, deadline).await.0
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// Checks of a set of streams against their reference counts, summed.
#[derive(Default)]
struct Checks {
    streams: usize,
    events: u64,
    bytes: u64,
    lost: u64,
    out_of_order: u64,
    malformed: u64,
    cut_off: usize,
    failed: usize,
    hung: usize,
    latencies: Vec<f64>,
    replayed: u64,
    first_problem: Option<String>,
}

impl Checks {
    fn add(&mut self, tally: Tally, expected: u64) {
        self.streams += 1;
        self.events += tally.events;
        self.bytes += tally.bytes;
        // A stream that stopped early lost the events after its last one.
        self.lost += tally.lost + expected.saturating_sub(tally.last_id);
        self.out_of_order += tally.out_of_order + tally.last_id.saturating_sub(expected);
        self.malformed += tally.malformed;
        self.replayed += tally.replayed;
        self.cut_off += usize::from(tally.error_event.is_some());
        self.failed += usize::from(tally.failed.is_some());
        self.hung += usize::from(tally.hung);
        let problem = tally
            .failed
            .clone()
            .or(tally
                .error_event
                .as_ref()
                .map(|error| format!("error event {error}")))
            .or(tally.first_problem.clone())
            .or((tally.last_id != expected)
                .then(|| format!("last id {} where the run has {expected}", tally.last_id)))
            .or(tally.hung.then(|| "still open at the deadline".to_owned()));
        if self.first_problem.is_none() {
            self.first_problem = problem;
        }
        self.latencies.extend(tally.latencies);
    }

    fn ok(&self) -> bool {
        self.lost + self.out_of_order + self.malformed == 0
            && self.cut_off + self.failed + self.hung == 0
    }
}

struct FanoutReport {
    subscribers: usize,
    delay: f64,
    connect_all: Duration,
    /// Subscribers whose response headers came after the run's first event.
    late: usize,
    per_subscriber: u64,
    checks: Checks,
    window: Duration,
    status: String,
    memory: Memory,
}

/// One run, `subscribers` joins of its stream.
async fn fanout(
    client: &reqwest::Client,
    url: &str,
    pid: u32,
    subscribers: usize,
    delay: f64,
    gate: f64,
) -> FanoutReport {
    let thread_id = create_thread(client, url).await;
    let memory = MemoryWatch::start(pid);
    let runs = format!("{url}/threads/{thread_id}/runs");
    // The gate: a run that holds the thread while the subscribers attach to the queued one.
    post_json(
        client,
        runs.clone(),
        json!({
            "assistant_id": "agent",
            "input": agent_input(),
            "config": {"configurable": {"delay": gate / 3.0}},
        }),
    )
    .await;
    let run = post_json(
        client,
        runs.clone(),
        json!({
            "assistant_id": "agent",
            "input": agent_input(),
            "stream_mode": FANOUT_MODES,
            "stream_resumable": true,
            "multitask_strategy": "enqueue",
            "config": {"configurable": {"delay": delay}},
        }),
    )
    .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(gate + 3.0 * delay + 60.0);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let request = client.get(format!("{runs}/{run_id}/stream"));
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (tally, headers) = stream(request, deadline).await;
            (tally, sent + headers)
        }));
    }
    let mut tallies = Vec::with_capacity(subscribers);
    for task in tasks {
        tallies.push(task.await.unwrap());
    }
    let memory = memory.finish(Duration::from_secs(1)).await;
    let status = final_status(client, url, &thread_id, &run_id).await;
    let reference = replayed_count(client, url, &thread_id, &run_id).await;
    let per_subscriber = reference.last_id;
    assert!(
        reference.events == per_subscriber && reference.lost + reference.out_of_order == 0,
        "the join after the end replays {} events with last id {}: {:?}",
        reference.events,
        reference.last_id,
        reference.first_problem,
    );
    // Response headers come once the join is registered; the first event when the gate ends.
    let attached = tallies.iter().map(|(_, attached)| *attached).max();
    let connect_all = attached.map_or(Duration::ZERO, |attached| attached - started);
    let first = tallies
        .iter()
        .filter_map(|(tally, _)| tally.first_event)
        .min();
    let late = tallies
        .iter()
        .filter(|(_, attached)| first.is_some_and(|first| *attached > first))
        .count();
    let last = tallies
        .iter()
        .filter_map(|(tally, _)| tally.last_event)
        .max();
    let window = match (first, last) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    let mut checks = Checks::default();
    for (tally, _) in tallies {
        checks.add(tally, per_subscriber);
    }
    checks.latencies.sort_by(f64::total_cmp);
    FanoutReport {
        subscribers,
        delay,
        connect_all,
        late,
        per_subscriber,
        checks,
        window,
        status,
        memory,
    }
}

struct RunsReport {
    runs: usize,
    delay: f64,
    checks: Checks,
    wall: Duration,
    headers: Vec<f64>,
    not_success: usize,
    per_run: (u64, u64),
    memory: Memory,
}

/// `runs` concurrent streaming runs, each on its own thread.
async fn concurrent_runs(
    client: &reqwest::Client,
    url: &str,
    pid: u32,
    runs: usize,
    delay: f64,
) -> RunsReport {
    let limit = Arc::new(Semaphore::new(32));
    let mut creating = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (client, url, limit) = (client.clone(), url.to_owned(), limit.clone());
        creating.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            create_thread(&client, &url).await
        }));
    }
    let mut threads = Vec::with_capacity(runs);
    for task in creating {
        threads.push(task.await.unwrap());
    }
    let memory = MemoryWatch::start(pid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(runs);
    for thread_id in &threads {
        let request = client
            .post(format!("{url}/threads/{thread_id}/runs/stream"))
            .json(&json!({
                "assistant_id": "agent",
                "input": agent_input(),
                "stream_mode": RUN_MODES,
                "stream_resumable": true,
                "config": {"configurable": {"delay": delay}},
            }));
        tasks.push(tokio::spawn(stream(request, deadline)));
    }
    let mut results = Vec::with_capacity(runs);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let wall = started.elapsed();
    let memory = memory.finish(Duration::from_secs(1)).await;

    // Each run's reference: its status and what a join after its end replays.
    let mut checking = Vec::with_capacity(runs);
    for (thread_id, (tally, headers)) in threads.into_iter().zip(results) {
        let (client, url, limit) = (client.clone(), url.to_owned(), limit.clone());
        checking.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let Some(run_id) = tally.run_id.clone() else {
                return (tally, headers, None, "no metadata event".to_owned());
            };
            let status = final_status(&client, &url, &thread_id, &run_id).await;
            let reference = replayed_count(&client, &url, &thread_id, &run_id).await;
            let expected = (reference.events == reference.last_id
                && reference.lost + reference.out_of_order == 0)
                .then_some(reference.last_id);
            (tally, headers, expected, status)
        }));
    }
    let mut checks = Checks::default();
    let mut header_times = Vec::with_capacity(runs);
    let mut not_success = 0;
    let mut per_run = (u64::MAX, 0);
    for task in checking {
        let (tally, headers, expected, status) = task.await.unwrap();
        header_times.push(headers.as_secs_f64() * 1000.0);
        if status != "success" {
            not_success += 1;
            if checks.first_problem.is_none() {
                checks.first_problem = Some(format!("a run ended {status}"));
            }
        }
        let expected = expected.unwrap_or_else(|| {
            checks.malformed += 1;
            checks
                .first_problem
                .get_or_insert_with(|| "a join after the run's end does not replay 1..N".into());
            tally.last_id
        });
        per_run = (per_run.0.min(expected), per_run.1.max(expected));
        checks.add(tally, expected);
    }
    checks.latencies.sort_by(f64::total_cmp);
    header_times.sort_by(f64::total_cmp);
    RunsReport {
        runs,
        delay,
        checks,
        wall,
        headers: header_times,
        not_success,
        per_run,
        memory,
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn memory_rows(memory: &[&Memory]) -> Vec<(String, Vec<String>)> {
    let each =
        |cell: &dyn Fn(&Memory) -> String| memory.iter().map(|memory| cell(memory)).collect();
    let high_water = if memory.iter().all(|memory| memory.high_water_reset) {
        "server peak RSS (`VmHWM`, reset before the scenario)"
    } else {
        "server peak RSS (`VmHWM` since start-up)"
    };
    vec![
        (
            "server RSS before".into(),
            each(&|memory| mb(memory.before)),
        ),
        (
            "server peak RSS (`VmRSS` sampled every 50 ms)".into(),
            each(&|memory| mb(memory.peak_sampled)),
        ),
        (high_water.into(), each(&|memory| mb(memory.high_water))),
        (
            "server RSS 1 s after".into(),
            each(&|memory| mb(memory.after)),
        ),
    ]
}

fn problems(checks: &Checks) -> String {
    format!(
        "{} / {} / {}",
        checks.lost,
        checks.out_of_order,
        checks.cut_off + checks.failed + checks.hung + checks.malformed as usize
    )
}

fn print_table(header: &[String], rows: &[(String, Vec<String>)]) {
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for (measure, cells) in rows {
        println!("| {measure} | {} |", cells.join(" | "));
    }
    println!();
}

fn print_fanout(reports: &[FanoutReport]) {
    let mut header =
        vec!["fan-out: one run, concurrent `GET …/runs/{r}/stream` subscribers".to_owned()];
    for report in reports {
        header.push(if report.delay > 0.0 {
            format!("paced ({} s per node step)", report.delay)
        } else {
            "burst (no delay)".to_owned()
        });
    }
    let each = |cell: &dyn Fn(&FanoutReport) -> String| reports.iter().map(cell).collect();
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            "subscribers".into(),
            each(&|report| report.subscribers.to_string()),
        ),
        (
            "events per subscriber (ids 1..N)".into(),
            each(&|report| report.per_subscriber.to_string()),
        ),
        (
            "total events delivered".into(),
            each(&|report| report.checks.events.to_string()),
        ),
        (
            "from the first event to the last subscriber's last event".into(),
            each(&|report| format!("{:.2} s", report.window.as_secs_f64())),
        ),
        (
            "delivery rate, all subscribers".into(),
            each(&|report| {
                format!(
                    "{:.0} events/s",
                    report.checks.events as f64 / report.window.as_secs_f64()
                )
            }),
        ),
        (
            "node output to subscriber, p50 (`debug` events)".into(),
            each(&|report| format!("{:.2} ms", percentile(&report.checks.latencies, 0.50))),
        ),
        (
            "node output to subscriber, p99".into(),
            each(&|report| format!("{:.2} ms", percentile(&report.checks.latencies, 0.99))),
        ),
        (
            "node output to subscriber, max".into(),
            each(&|report| format!("{:.2} ms", percentile(&report.checks.latencies, 1.0))),
        ),
        (
            "`debug` events timed / replayed to a late subscriber".into(),
            each(&|report| {
                format!(
                    "{} / {}",
                    report.checks.latencies.len(),
                    report.checks.replayed
                )
            }),
        ),
        (
            "lost / reordered or duplicated / failed streams".into(),
            each(&|report| problems(&report.checks)),
        ),
        ("run status".into(), each(&|report| report.status.clone())),
        (
            "all subscribers attached (response headers) after".into(),
            each(&|report| format!("{:.2} s", report.connect_all.as_secs_f64())),
        ),
        (
            "subscribers attached after the run's first event".into(),
            each(&|report| report.late.to_string()),
        ),
    ];
    rows.extend(memory_rows(
        &reports
            .iter()
            .map(|report| &report.memory)
            .collect::<Vec<_>>(),
    ));
    print_table(&header, &rows);
}

fn print_runs(report: &RunsReport) {
    let checks = &report.checks;
    let wall = report.wall.as_secs_f64();
    let per_run = if report.per_run.0 == report.per_run.1 {
        report.per_run.0.to_string()
    } else {
        format!("{}–{}", report.per_run.0, report.per_run.1)
    };
    let header = vec![
        format!(
            "{} concurrent `POST /threads/{{t}}/runs/stream`, one thread each, `agent` {} s per node step",
            report.runs, report.delay
        ),
        "result".to_owned(),
    ];
    let mut rows: Vec<(String, Vec<String>)> = vec![
        ("events per run (ids 1..N)".into(), vec![per_run]),
        (
            "total events delivered".into(),
            vec![checks.events.to_string()],
        ),
        (
            "bytes per run stream (a resumable run's events stay 600 s)".into(),
            vec![format!(
                "{:.1} kB",
                checks.bytes as f64 / report.runs as f64 / 1024.0
            )],
        ),
        (
            "wall time, all runs streamed to the end".into(),
            vec![format!("{wall:.2} s")],
        ),
        (
            "events/s, all streams".into(),
            vec![format!("{:.0}", checks.events as f64 / wall)],
        ),
        (
            "runs/s".into(),
            vec![format!("{:.0}", report.runs as f64 / wall)],
        ),
        (
            "request to response headers, p50 / p99 / max".into(),
            vec![format!(
                "{:.1} ms / {:.1} ms / {:.1} ms",
                percentile(&report.headers, 0.50),
                percentile(&report.headers, 0.99),
                percentile(&report.headers, 1.0)
            )],
        ),
        (
            "node output to subscriber, p50 / p99 (`debug` events)".into(),
            vec![format!(
                "{:.2} ms / {:.2} ms",
                percentile(&checks.latencies, 0.50),
                percentile(&checks.latencies, 0.99)
            )],
        ),
        (
            "node output to subscriber, max".into(),
            vec![format!("{:.2} ms", percentile(&checks.latencies, 1.0))],
        ),
        (
            "lost / reordered or duplicated / failed streams".into(),
            vec![problems(checks)],
        ),
        (
            "runs not ending `success`".into(),
            vec![report.not_success.to_string()],
        ),
    ];
    rows.extend(memory_rows(&[&report.memory]));
    print_table(&header, &rows);
}

struct Options {
    subscribers: usize,
    delay: f64,
    gate: f64,
    runs: usize,
    run_delay: f64,
    fanout: bool,
    concurrent_runs: bool,
    repeat: usize,
}

/// Runs the scenarios and prints their tables; false when a check failed.
async fn scenarios(url: String, pid: u32, options: Options) -> bool {
    let client = reqwest::Client::new();
    // Warm up: a few streamed runs, so the first figures are not start-up ones.
    let thread_id = create_thread(&client, &url).await;
    for _ in 0..5 {
        let body = json!({
            "assistant_id": "agent",
            "input": agent_input(),
            "stream_mode": RUN_MODES,
            "config": {"configurable": {"delay": 0}},
        });
        let request = client
            .post(format!("{url}/threads/{thread_id}/runs/stream"))
            .json(&body);
        stream(
            request,
            tokio::time::Instant::now() + Duration::from_secs(30),
        )
        .await;
    }
    println!(
        "Spindle streaming benchmark: {} CPUs shared by the server and this client.\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut ok = true;
    for _ in 0..options.repeat {
        if options.fanout {
            let (subscribers, gate) = (options.subscribers, options.gate);
            let paced = fanout(&client, &url, pid, subscribers, options.delay, gate).await;
            let burst = fanout(&client, &url, pid, subscribers, 0.0, gate).await;
            let reports = [paced, burst];
            print_fanout(&reports);
            for report in &reports {
                ok &= report.checks.ok() && report.status == "success";
                if let Some(problem) = &report.checks.first_problem {
                    eprintln!("fan-out (delay {}): first problem: {problem}", report.delay);
                }
            }
        }
        if options.concurrent_runs {
            let report = concurrent_runs(&client, &url, pid, options.runs, options.run_delay).await;
            print_runs(&report);
            ok &= report.checks.ok() && report.not_success == 0;
            if let Some(problem) = &report.checks.first_problem {
                eprintln!("runs: first problem: {problem}");
            }
        }
    }
    ok
}

fn main() {
    let only = option("--only", String::new());
    let options = Options {
        subscribers: option("--subscribers", 1000),
        delay: option("--delay", 2.0),
        gate: option("--gate", 3.0),
        runs: option("--runs", 500),
        run_delay: option("--run-delay", 0.05),
        fanout: only != "runs",
        concurrent_runs: only != "fanout",
        repeat: option("--repeat", 1),
    };
    // Client and server each hold one socket per stream, plus files and listeners.
    ensure_open_files(options.subscribers.max(options.runs) as u64 + 256);
    let server = start_server();
    let (url, pid) = (server.url.clone(), server.pid());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = runtime.block_on(scenarios(url, pid, options));
    drop(server);
    if !ok {
        eprintln!(
            "FAILED: a stream lost, reordered or duplicated events, or failed, hung or was cut \
             off, or a run did not succeed (see above)"
        );
        std::process::exit(1);
    }
}
