//! Crash recovery (issue 5) against the real binary: runs under load survive three SIGKILLs and
//! restarts on the same database, each acknowledged input answered exactly once and in order;
//! a run left running past `runtime.max_attempts`, or with `runtime.on_restart = "error"`, ends
//! `error` without wedging its thread.

#[path = "support/bench.rs"]
mod bench;
#[path = "support/binary.rs"]
mod binary;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Notify;

use bench::create_thread;
use binary::Server;

/// Threads under load; every cycle adds texts to the same threads.
const THREADS: usize = 60;
/// Texts sent to each thread per cycle (fewer if the kill comes first).
const TEXTS_PER_CYCLE: usize = 4;
/// Kill, restart, repeat.
const CYCLES: usize = 3;
/// A cycle's server is killed once this many of its requests have been acknowledged, while
/// the rest are in flight or not sent yet.
const KILL_AFTER_ACKNOWLEDGED: usize = THREADS * TEXTS_PER_CYCLE * 3 / 4;
/// Seconds each of the three steps of an `agent` run (model, tool, model) takes.
const STEP_DELAY_SECONDS: f64 = 0.1;
/// The load test is about resuming, not giving up: a run may be running at every one of the
/// three kills, which the default `max_attempts` (3) would rightly end as `error`. Giving up is
/// tested on its own below.
const LOAD_ENVIRONMENT: [(&str, &str); 1] = [("SPINDLE_RUNTIME__MAX_ATTEMPTS", "10")];
/// The statuses a run ends in.
const FINISHED: [&str; 4] = ["success", "error", "timeout", "interrupted"];
/// Longest wait for anything the tests poll for.
const DEADLINE: Duration = Duration::from_secs(60);

/// Three cycles of: 60 threads under load (each thread gets its texts one request after the
/// other, so their `created_at` order is the order they were sent; all threads at once; every
/// fourth thread gets one `rollback` per cycle, at a position that moves, the first right after
/// a restart included; the other texts `enqueue`), SIGKILL once 180 requests of the cycle are
/// acknowledged, restart on the same database and go on sending to the same threads.
/// Every text is a weather question naming a unique place, which the `agent` graph answers in
/// three steps: an AI message calling the search tool for that place, the tool message, and a
/// final AI message "The weather in <place> is …".
///
/// After the last restart, once no thread has runs in flight, for every thread:
/// - the thread is `idle` and every surviving run is `success`;
/// - "answered once": the thread's messages are, for each surviving run in `created_at` order,
///   exactly its human message followed by exactly those three answer messages for its place;
/// - every acknowledged run survives, unless a rollback run created after it (acknowledged, or
///   found in the database) may have deleted it, in which case it is either there or 404;
/// - a surviving run's input is a text that was sent: one never acknowledged (the kill came
///   mid-request) may exist, and if so is held to the same rules, once;
/// - and in the database file: `PRAGMA integrity_check` is `ok`, no foreign key is broken, no
///   checkpoint outlives its run, no run is in flight and no thread is `busy`.
///
/// Each restart's log must show runs both left running (resumed from their checkpoints) and
/// pending (queued again) at the kill, none given up; no process may log an error or a panic.
#[test]
fn acknowledged_runs_survive_three_kills_under_load_answered_once_in_order() {
    let started = Instant::now();
    let runtime = runtime();
    let environment = load_environment();
    let log = ServerLog::default();
    let mut server =
        Server::start_with_env(&default_config(), "info", &environment, log.collector());
    let client = reqwest::Client::new();
    let mut conversations: Vec<Conversation> = runtime.block_on(async {
        let mut conversations = Vec::new();
        for _ in 0..THREADS {
            conversations.push(Conversation {
                thread_id: create_thread(&client, &server.url).await,
                texts: Vec::new(),
            });
        }
        conversations
    });

    // Act: load, kill, restart; three times.
    let mut recoveries = Vec::new();
    for cycle in 0..CYCLES {
        let cycle_started = Instant::now();
        let acknowledged =
            runtime.block_on(load_then_crash(&mut server, &mut conversations, cycle));
        let killed_after = cycle_started.elapsed();
        recoveries.push(log.take());
        server.restart(&environment, log.collector());
        let texts_of_cycle = || {
            conversations
                .iter()
                .flat_map(|conversation| &conversation.texts)
                .filter(move |text| text.cycle == cycle)
        };
        println!(
            "cycle {}: sent={} acknowledged={acknowledged} rollbacks acknowledged={} killed after {:.1}s",
            cycle + 1,
            texts_of_cycle().count(),
            texts_of_cycle()
                .filter(|text| text.rollback && text.ack.is_some())
                .count(),
            killed_after.as_secs_f64()
        );
    }
    let unsettled = runtime.block_on(wait_until_settled(&client, &server.url, &conversations));
    let settled_after = started.elapsed();
    if !unsettled.is_empty() {
        println!(
            "timed out after {DEADLINE:?} waiting for these threads to finish their runs: {unsettled:?}"
        );
    }
    let (failures, surviving) =
        runtime.block_on(check_threads(&client, &server.url, &conversations));
    server.crash();
    recoveries.push(log.take());

    // Assert.
    for (index, lines) in recoveries.iter().enumerate().skip(1) {
        let recovery = Recovery::parse(lines);
        println!(
            "restart {index}: threads recovered={} runs left running={} (resumed from a checkpoint={}, highest attempt={}) given up={} pending queued again={}",
            recovery.threads,
            recovery.left_running,
            recovery.from_checkpoint,
            recovery.highest_attempt,
            recovery.given_up,
            recovery.pending
        );
        assert!(
            recovery.left_running > 0 && recovery.pending > 0,
            "kill {index} should find runs both running and queued: {recovery:?}"
        );
        assert!(
            recovery.from_checkpoint > 0,
            "runs left running at kill {index} should continue from their checkpoints: {recovery:?}"
        );
        assert_eq!(
            recovery.given_up, 0,
            "no run may be given up at restart {index}"
        );
    }
    let mut rolled_back = vec![0; CYCLES];
    let mut committed_unacknowledged = vec![0; CYCLES];
    for text in conversations
        .iter()
        .flat_map(|conversation| &conversation.texts)
    {
        match (&text.ack, surviving.contains(&text.place)) {
            (Some(_), false) => rolled_back[text.cycle] += 1,
            (None, true) => committed_unacknowledged[text.cycle] += 1,
            _ => {}
        }
    }
    println!(
        "per cycle: acknowledged runs deleted by a later rollback {rolled_back:?}, unacknowledged runs found committed {committed_unacknowledged:?}; all settled {:.1}s after the start",
        settled_after.as_secs_f64()
    );
    if !failures.is_empty() {
        let first = &failures[0].0;
        panic!(
            "{} of {THREADS} threads are wrong:\n{}\nlog lines (of every process) about thread {first} and its runs:\n{}",
            failures.len(),
            failures
                .iter()
                .take(10)
                .map(|(thread_id, failure)| format!("thread {thread_id}: {failure}"))
                .collect::<Vec<_>>()
                .join("\n"),
            lines_about(first, &recoveries).join("\n")
        );
    }
    let faults: Vec<&String> = recoveries
        .iter()
        .flatten()
        .filter(|line| line.contains(" ERROR ") || line.contains("panicked"))
        .collect();
    assert!(faults.is_empty(), "the server logged faults: {faults:#?}");
    check_database(&server);
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
}

/// A run left running by a kill, restarted with `max_attempts = 1`, is not resumed: it ends
/// `error` naming `runtime.max_attempts`, the thread is `error` (not `busy`), and the thread
/// takes a new run.
/// Thread creation, a state update and cancels (of a running and of a queued run) acknowledged
/// just before a SIGKILL are all there after the restart, and the cancelled runs stay cancelled.
#[test]
fn thread_creation_state_updates_and_cancels_acknowledged_before_a_kill_survive_it() {
    let runtime = runtime();
    let log = ServerLog::default();
    let mut server = Server::start("info", log.collector());
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let response = client.post(path).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!((200..300).contains(&status), "{status}: {body}");
            body
        }
    };
    let (created, cancelled) = runtime.block_on(async {
        let url = &server.url;
        let created = post(
            format!("{url}/threads"),
            json!({"metadata": {"graph_id": "agent", "kept": true}}),
        )
        .await["thread_id"]
            .as_str()
            .unwrap()
            .to_owned();
        post(
            format!("{url}/threads/{created}/state"),
            json!({"values": {"messages": [{"role": "user", "content": "kept across the kill"}]}, "as_node": "tools"}),
        )
        .await;

        let busy = create_thread(&client, url).await;
        let long = long_run(&client, url, &busy, "long").await;
        let queued = long_run(&client, url, &busy, "queued").await;
        wait_for_status(&client, url, &busy, &long, &["running"]).await;
        for run in [&long, &queued] {
            post(
                format!("{url}/threads/{busy}/runs/{run}/cancel?action=interrupt"),
                json!({}),
            )
            .await;
        }
        (created, (busy, long, queued))
    });
    // Killed right after the last acknowledgement.
    server.restart(&[], log.collector());

    runtime.block_on(async {
        let url = &server.url;
        let thread = get(&client, &format!("{url}/threads/{created}")).await;
        assert_eq!(thread["metadata"]["kept"], true, "{thread}");
        let state = get(&client, &format!("{url}/threads/{created}/state")).await;
        assert_eq!(
            state["values"]["messages"][0]["content"], "kept across the kill",
            "{state}"
        );
        let (busy, long, queued) = &cancelled;
        for run in [long, queued] {
            let run = get(&client, &format!("{url}/threads/{busy}/runs/{run}")).await;
            assert_eq!(run["status"], "interrupted", "{run}");
        }
        let thread = get(&client, &format!("{url}/threads/{busy}")).await;
        assert_ne!(thread["status"], "busy", "{thread}");
    });
    let lines = log.take();
    assert_eq!(count_lines(&lines, "run resumed"), 0, "{lines:#?}");
}

#[test]
fn a_run_killed_past_max_attempts_ends_in_error_and_its_thread_takes_new_runs() {
    let runtime = runtime();
    let log = ServerLog::default();
    let mut server = Server::start("info", log.collector());
    let client = reqwest::Client::new();
    let (thread_id, run_id) = runtime.block_on(async {
        let thread_id = create_thread(&client, &server.url).await;
        let run_id = long_run(&client, &server.url, &thread_id, "long").await;
        wait_for_status(&client, &server.url, &thread_id, &run_id, &["running"]).await;
        (thread_id, run_id)
    });

    server.restart(
        &[("SPINDLE_RUNTIME__MAX_ATTEMPTS".into(), "1".into())],
        log.collector(),
    );

    runtime.block_on(async {
        let run = wait_for_status(&client, &server.url, &thread_id, &run_id, &FINISHED).await;
        assert_eq!(run["status"], "error");
        let outcome = get(
            &client,
            &format!("{}/threads/{thread_id}/runs/{run_id}/join", server.url),
        )
        .await;
        let message = outcome["__error__"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("runtime.max_attempts = 1"), "{outcome}");
        let thread = get(&client, &format!("{}/threads/{thread_id}", server.url)).await;
        assert_eq!(thread["status"], "error", "{thread}");
        assert!(
            thread["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("max_attempts")),
            "{thread}"
        );

        let values = wait_run(&client, &server.url, &thread_id, "hello again").await;
        let messages = values["messages"].as_array().unwrap();
        assert_eq!(messages.last().unwrap()["content"], "You said: hello again");
        let thread = get(&client, &format!("{}/threads/{thread_id}", server.url)).await;
        assert_eq!(thread["status"], "idle", "{thread}");
    });
    let lines = log.take();
    assert_eq!(
        count_lines(
            &lines,
            &format!("run left running is not resumed run_id={run_id}")
        ),
        1,
        "{lines:#?}"
    );
}

/// With `on_restart = "error"`, a run left running by a kill ends `error` naming the setting,
/// and the run queued behind it still runs, so the thread ends `idle`.
#[test]
fn with_on_restart_error_a_killed_run_ends_in_error_and_the_queue_still_runs() {
    let runtime = runtime();
    let mut server = Server::start("info", |_| {});
    let client = reqwest::Client::new();
    let (thread_id, long_run_id, queued_run_id) = runtime.block_on(async {
        let thread_id = create_thread(&client, &server.url).await;
        let long_run_id = long_run(&client, &server.url, &thread_id, "long").await;
        wait_for_status(&client, &server.url, &thread_id, &long_run_id, &["running"]).await;
        let queued = submit(
            &client,
            &server.url,
            &thread_id,
            &question("queued"),
            0.0,
            "enqueue",
        )
        .await
        .expect("the queued run is acknowledged");
        assert_eq!(queued["status"], "pending");
        (
            thread_id,
            long_run_id,
            queued["run_id"].as_str().unwrap().to_owned(),
        )
    });

    server.restart(
        &[("SPINDLE_RUNTIME__ON_RESTART".into(), "error".into())],
        |_| {},
    );

    runtime.block_on(async {
        let queued =
            wait_for_status(&client, &server.url, &thread_id, &queued_run_id, &FINISHED).await;
        assert_eq!(queued["status"], "success");
        let long = get(
            &client,
            &format!("{}/threads/{thread_id}/runs/{long_run_id}", server.url),
        )
        .await;
        assert_eq!(long["status"], "error", "{long}");
        let outcome = get(
            &client,
            &format!("{}/threads/{thread_id}/runs/{long_run_id}/join", server.url),
        )
        .await;
        let message = outcome["__error__"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("on_restart"), "{outcome}");
        let thread = get(&client, &format!("{}/threads/{thread_id}", server.url)).await;
        assert_eq!(thread["status"], "idle", "{thread}");
        let messages = thread["values"]["messages"].as_array().unwrap();
        let last = messages.last().unwrap()["content"].as_str().unwrap();
        assert!(last.starts_with("The weather in queued is"), "{last}");
    });
}

/// One thread's texts, in the order they were sent, over all cycles.
struct Conversation {
    thread_id: String,
    texts: Vec<Text>,
}

/// One request: a unique weather question.
struct Text {
    cycle: usize,
    place: String,
    rollback: bool,
    /// The run id and `created_at` of the 200 reply; `None` when the kill came first.
    ack: Option<Acknowledgement>,
}

struct Acknowledgement {
    run_id: String,
    created_at: String,
}

/// Log lines of one server process, shared with its log-draining thread.
#[derive(Clone, Default)]
struct ServerLog {
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServerLog {
    fn collector(&self) -> impl Fn(&str) + Send + 'static {
        let lines = self.lines.clone();
        move |line| lines.lock().unwrap().push(line.to_owned())
    }

    /// The lines logged so far; the next process starts with none.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// What a restart's log says it found (the `thread recovered` and `run resumed` lines).
#[derive(Debug, Default)]
struct Recovery {
    threads: usize,
    left_running: usize,
    from_checkpoint: usize,
    highest_attempt: u64,
    given_up: usize,
    pending: usize,
}

impl Recovery {
    fn parse(lines: &[String]) -> Recovery {
        let mut recovery = Recovery::default();
        for line in lines {
            if line.contains("thread recovered thread_id=") {
                recovery.threads += 1;
                recovery.left_running += field(line, "resumed=") as usize;
                recovery.given_up += field(line, "failed=") as usize;
                recovery.pending += field(line, "pending=") as usize;
            }
            if line.contains("run resumed from its last checkpoint") {
                recovery.from_checkpoint += 1;
                recovery.highest_attempt = recovery.highest_attempt.max(field(line, "attempt="));
            }
        }
        recovery
    }
}

/// The log lines naming a thread or one of its runs (found through the lines naming both).
fn lines_about<'a>(thread_id: &str, logs: &'a [Vec<String>]) -> Vec<&'a str> {
    let run_ids: HashSet<&str> = logs
        .iter()
        .flatten()
        .filter(|line| line.contains(thread_id))
        .filter_map(|line| line.split_once("run_id=")?.1.split_whitespace().next())
        .collect();
    logs.iter()
        .flatten()
        .filter(|line| {
            line.contains(thread_id)
                || line
                    .split_once("run_id=")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|run_id| run_ids.contains(run_id))
        })
        .map(String::as_str)
        .take(300)
        .collect()
}

/// The number after `key` in a `key=value` log line.
fn field(line: &str, key: &str) -> u64 {
    let (_, rest) = line
        .split_once(&format!(" {key}"))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key} in {line}"))
}

fn count_lines(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|line| line.contains(needle)).count()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn default_config() -> std::path::PathBuf {
    concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml").into()
}

fn load_environment() -> Vec<(String, String)> {
    LOAD_ENVIRONMENT
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Whether this text is sent with `rollback`: in every fourth thread, once per cycle.
fn rolls_back(thread_index: usize, cycle: usize, index_in_cycle: usize) -> bool {
    thread_index % 4 == 0 && (thread_index / 4 + cycle) % TEXTS_PER_CYCLE == index_in_cycle
}

/// A weather question about `place`, which the scripted model answers through the search tool.
fn question(place: &str) -> String {
    format!("what's the weather in {place}?")
}

/// Sends this cycle's texts to every thread (each thread's one after the other, all threads at
/// once), kills the server with SIGKILL once `KILL_AFTER_ACKNOWLEDGED` are acknowledged, and
/// records each sent text with its acknowledgement. Returns how many were acknowledged.
async fn load_then_crash(
    server: &mut Server,
    conversations: &mut [Conversation],
    cycle: usize,
) -> usize {
    let client = reqwest::Client::new();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let enough = Arc::new(Notify::new());
    let mut senders = Vec::new();
    for (thread_index, conversation) in conversations.iter().enumerate() {
        let texts: Vec<(String, bool)> = (0..TEXTS_PER_CYCLE)
            .map(|index_in_cycle| {
                let index = cycle * TEXTS_PER_CYCLE + index_in_cycle;
                let place = format!("t{thread_index:02}-n{index:02}");
                (place, rolls_back(thread_index, cycle, index_in_cycle))
            })
            .collect();
        let (client, url, thread_id) = (
            client.clone(),
            server.url.clone(),
            conversation.thread_id.clone(),
        );
        let (acknowledged, killed, enough) = (acknowledged.clone(), killed.clone(), enough.clone());
        senders.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for (place, rollback) in texts {
                let strategy = if rollback { "rollback" } else { "enqueue" };
                let reply = submit(
                    &client,
                    &url,
                    &thread_id,
                    &question(&place),
                    STEP_DELAY_SECONDS,
                    strategy,
                )
                .await;
                let ack = match reply {
                    Ok(run) => Some(Acknowledgement {
                        run_id: run["run_id"].as_str().unwrap().to_owned(),
                        created_at: run["created_at"].as_str().unwrap().to_owned(),
                    }),
                    Err(failure) => {
                        assert!(
                            killed.load(Ordering::SeqCst),
                            "a request failed before the kill: thread {thread_id}: {failure}"
                        );
                        None
                    }
                };
                let stop = ack.is_none();
                sent.push((place, rollback, ack));
                if stop {
                    break;
                }
                if acknowledged.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKNOWLEDGED {
                    enough.notify_one();
                }
            }
            sent
        }));
    }
    tokio::time::timeout(DEADLINE, enough.notified())
        .await
        .unwrap_or_else(|_| panic!("{KILL_AFTER_ACKNOWLEDGED} requests should be acknowledged"));
    killed.store(true, Ordering::SeqCst);
    server.crash();
    for (conversation, sender) in conversations.iter_mut().zip(senders) {
        for (place, rollback, ack) in sender.await.unwrap() {
            conversation.texts.push(Text {
                cycle,
                place,
                rollback,
                ack,
            });
        }
    }
    acknowledged.load(Ordering::SeqCst)
}

/// `POST /threads/{t}/runs` with an `agent` run on `text`: the run JSON of a 200, or why not.
/// Enqueues a run whose steps take a minute each, asking about `place`; returns its id.
async fn long_run(client: &reqwest::Client, url: &str, thread_id: &str, place: &str) -> String {
    let run = submit(client, url, thread_id, &question(place), 60.0, "enqueue")
        .await
        .expect("the run is acknowledged");
    run["run_id"].as_str().unwrap().to_owned()
}

async fn submit(
    client: &reqwest::Client,
    url: &str,
    thread_id: &str,
    text: &str,
    delay_seconds: f64,
    strategy: &str,
) -> Result<Value, String> {
    let body = json!({
        "assistant_id": "agent",
        "input": {"messages": [{"role": "human", "content": text}]},
        "config": {"configurable": {"delay": delay_seconds}},
        "multitask_strategy": strategy,
    });
    let response = client
        .post(format!("{url}/threads/{thread_id}/runs"))
        .json(&body)
        .send()
        .await
        .map_err(|error| format!("{error:#}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| format!("{error:#}"))?;
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|error| format!("{error}: {text}"))
}

/// `POST /threads/{t}/runs/wait` with a text the scripted model echoes; the final values.
async fn wait_run(client: &reqwest::Client, url: &str, thread_id: &str, text: &str) -> Value {
    let response = client
        .post(format!("{url}/threads/{thread_id}/runs/wait"))
        .json(&json!({
            "assistant_id": "agent",
            "input": {"messages": [{"role": "human", "content": text}]},
            "config": {"configurable": {"delay": 0}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// GET a JSON body, failing the test on anything but 200.
async fn get(client: &reqwest::Client, url: &str) -> Value {
    let (status, body) = get_status(client, url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

async fn get_status(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls a run until its status is one of `statuses`; returns the run.
async fn wait_for_status(
    client: &reqwest::Client,
    url: &str,
    thread_id: &str,
    run_id: &str,
    statuses: &[&str],
) -> Value {
    let run_url = format!("{url}/threads/{thread_id}/runs/{run_id}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let run = get(client, &run_url).await;
        if statuses.iter().any(|status| run["status"] == *status) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for run {run_id} to be {statuses:?}: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The thread's runs, oldest first (`created_at`, then run id: the order they start in).
async fn runs_of(client: &reqwest::Client, url: &str, thread_id: &str) -> Vec<Value> {
    let runs = get(
        client,
        &format!("{url}/threads/{thread_id}/runs?limit=1000"),
    )
    .await;
    let mut runs = runs.as_array().unwrap().clone();
    runs.sort_by_key(|run| {
        (
            run["created_at"].as_str().unwrap().to_owned(),
            run["run_id"].as_str().unwrap().to_owned(),
        )
    });
    runs
}

/// Waits until no thread has a run pending or running and every thread is `idle`; returns the
/// threads still unsettled at the deadline (the checks then say what is wrong with them).
async fn wait_until_settled(
    client: &reqwest::Client,
    url: &str,
    conversations: &[Conversation],
) -> Vec<String> {
    let mut unsettled: Vec<&str> = conversations
        .iter()
        .map(|conversation| conversation.thread_id.as_str())
        .collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut still = Vec::new();
        for thread_id in unsettled {
            let thread = get(client, &format!("{url}/threads/{thread_id}")).await;
            let in_flight = runs_of(client, url, thread_id)
                .await
                .iter()
                .any(|run| run["status"] == "pending" || run["status"] == "running");
            if thread["status"] != "idle" || in_flight {
                still.push(thread_id);
            }
        }
        unsettled = still;
        if unsettled.is_empty() || Instant::now() > deadline {
            return unsettled.into_iter().map(str::to_owned).collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks every thread (see the load test's doc). Returns the failures as (thread id, what is
/// wrong) and the places of the runs that exist.
async fn check_threads(
    client: &reqwest::Client,
    url: &str,
    conversations: &[Conversation],
) -> (Vec<(String, String)>, HashSet<String>) {
    let mut failures = Vec::new();
    let mut surviving = HashSet::new();
    for conversation in conversations {
        match check_thread(client, url, conversation).await {
            Ok(places) => surviving.extend(places),
            Err(failure) => failures.push((conversation.thread_id.clone(), failure)),
        }
    }
    (failures, surviving)
}

async fn check_thread(
    client: &reqwest::Client,
    url: &str,
    conversation: &Conversation,
) -> Result<Vec<String>, String> {
    let thread_id = &conversation.thread_id;
    let thread = get(client, &format!("{url}/threads/{thread_id}")).await;
    let runs = runs_of(client, url, thread_id).await;
    if thread["status"] != "idle" {
        let statuses: Vec<String> = runs
            .iter()
            .map(|run| format!("{} {}", run["run_id"], run["status"]))
            .collect();
        return Err(format!(
            "status {} instead of idle; its runs: {statuses:?}",
            thread["status"]
        ));
    }
    let by_place: HashMap<&str, &Text> = conversation
        .texts
        .iter()
        .map(|text| (text.place.as_str(), text))
        .collect();
    // The surviving runs, in start order, as the places they ask about.
    let mut places = Vec::new();
    let mut surviving_ids = HashSet::new();
    // The latest rollback that may have deleted earlier runs: any surviving one (it was
    // committed, acknowledged or not), and any acknowledged one.
    let mut latest_rollback: Option<(String, String)> = None;
    for run in &runs {
        let run_id = run["run_id"].as_str().unwrap();
        let content = run["kwargs"]["input"]["messages"][0]["content"]
            .as_str()
            .unwrap_or_default();
        let place = content
            .strip_prefix("what's the weather in ")
            .and_then(|rest| rest.strip_suffix('?'))
            .unwrap_or_default();
        let Some(text) = by_place.get(place) else {
            return Err(format!(
                "run {run_id} has an input that was never sent: {content:?}"
            ));
        };
        if run["status"] != "success" {
            return Err(format!(
                "run {run_id} ({place}) is {} instead of success",
                run["status"]
            ));
        }
        if let Some(ack) = &text.ack {
            if ack.run_id != run_id {
                return Err(format!(
                    "{place} was acknowledged as run {} but run {run_id} has it",
                    ack.run_id
                ));
            }
        }
        if places.contains(&place) {
            return Err(format!("{place} has two runs"));
        }
        if run["multitask_strategy"] == "rollback" {
            let key = (
                run["created_at"].as_str().unwrap().to_owned(),
                run_id.to_owned(),
            );
            latest_rollback = latest_rollback.max(Some(key));
        }
        places.push(place);
        surviving_ids.insert(run_id.to_owned());
    }
    for text in &conversation.texts {
        if let (true, Some(ack)) = (text.rollback, &text.ack) {
            latest_rollback =
                latest_rollback.max(Some((ack.created_at.clone(), ack.run_id.clone())));
        }
    }
    for text in &conversation.texts {
        let Some(ack) = &text.ack else { continue };
        if surviving_ids.contains(&ack.run_id) {
            continue;
        }
        let superseded = latest_rollback
            .as_ref()
            .is_some_and(|rollback| *rollback > (ack.created_at.clone(), ack.run_id.clone()));
        if !superseded {
            return Err(format!(
                "acknowledged run {} ({}, cycle {}) is gone and no later rollback explains it",
                ack.run_id,
                text.place,
                text.cycle + 1
            ));
        }
        let (status, body) = get_status(
            client,
            &format!("{url}/threads/{thread_id}/runs/{}", ack.run_id),
        )
        .await;
        if status != 404 {
            return Err(format!(
                "rolled-back run {} answers {status}: {body}",
                ack.run_id
            ));
        }
    }
    let state = get(client, &format!("{url}/threads/{thread_id}/state")).await;
    let messages = state["values"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check_messages(&messages, &places)?;
    Ok(places.iter().map(|place| place.to_string()).collect())
}

/// The messages are, for each place in order, exactly: the human question, one AI message
/// calling the search tool for that place, its tool message, and one final answer about it.
fn check_messages(messages: &[Value], places: &[&str]) -> Result<(), String> {
    let describe = |message: &Value| {
        format!(
            "{} {:?} tool_calls={}",
            message["type"].as_str().unwrap_or("?"),
            message["content"].as_str().unwrap_or("?"),
            message["tool_calls"]
        )
    };
    let expected_count = places.len() * 4;
    if messages.len() != expected_count {
        return Err(format!(
            "{} messages for {} surviving runs (expected {expected_count}); places {places:?}; messages:\n{}",
            messages.len(),
            places.len(),
            messages.iter().map(describe).collect::<Vec<_>>().join("\n")
        ));
    }
    for (place, group) in places.iter().zip(messages.chunks(4)) {
        let [human, call, result, answer] = group else {
            unreachable!("chunks of 4")
        };
        let calls = call["tool_calls"].as_array().cloned().unwrap_or_default();
        let answered = human["type"] == "human"
            && human["content"] == question(place)
            && call["type"] == "ai"
            && calls.len() == 1
            && calls[0]["args"]["query"] == format!("weather in {place}")
            && result["type"] == "tool"
            && result["tool_call_id"] == calls[0]["id"]
            && answer["type"] == "ai"
            && answer["tool_calls"].as_array().is_some_and(Vec::is_empty)
            && answer["content"]
                .as_str()
                .is_some_and(|content| content.starts_with(&format!("The weather in {place} is")));
        if !answered {
            return Err(format!(
                "{place} is not answered exactly once in order; places {places:?}; messages:\n{}",
                messages.iter().map(describe).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    Ok(())
}

/// The database file after the server is gone: intact, no dangling rows, nothing in flight.
fn check_database(server: &Server) {
    let connection = rusqlite::Connection::open(server.database_path()).unwrap();
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let broken_keys = connection
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .count();
    assert_eq!(broken_keys, 0, "foreign_key_check found broken references");
    let count = |sql: &str| -> i64 { connection.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM checkpoints WHERE run_id IS NOT NULL AND run_id NOT IN (SELECT run_id FROM runs)"),
        0,
        "checkpoints outlive their runs"
    );
    assert_eq!(
        count("SELECT count(*) FROM checkpoint_writes WHERE run_id IS NOT NULL AND run_id NOT IN (SELECT run_id FROM runs)"),
        0,
        "pending writes outlive their runs"
    );
    assert_eq!(
        count("SELECT count(*) FROM runs WHERE status IN ('pending', 'running')"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM threads WHERE status = 'busy'"),
        0
    );
    println!(
        "database: runs={} checkpoints={} highest attempts={}",
        count("SELECT count(*) FROM runs"),
        count("SELECT count(*) FROM checkpoints"),
        count("SELECT max(attempts) FROM runs")
    );
}
