//! A really full disk (issue 5, storage faults): the real binary with its database on a small
//! tmpfs of its own, under runs, filled until writes no longer fit. Needs permission to mount a
//! tmpfs (root with CAP_SYS_ADMIN); elsewhere it says so and does nothing. The database cap
//! (`database.max_size_mb`) cases run everywhere, in tests/api/storage_faults.rs.

#[path = "support/bench.rs"]
mod bench;
#[path = "support/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use bench::create_thread;
use binary::Server;

/// The file system's size while it fills up, then after it is given room.
const SMALL: &str = "4m";
const ROOMY: &str = "64m";
/// Threads with runs in flight while the disk fills.
const THREADS: usize = 8;
/// Runs queued on each of them.
const RUNS_PER_THREAD: usize = 3;
/// Seconds each step of an `agent` run takes: long enough for the disk to fill (well under a
/// second) while the first run of every loaded thread is still in its first step.
const STEP_DELAY_SECONDS: f64 = 2.5;
/// Metadata of each thread that fills the disk.
const PADDING: usize = 40_000;
/// Longest wait for anything the test polls for.
const DEADLINE: Duration = Duration::from_secs(90);

/// While the disk is full:
/// - a write that does not fit gets 503 with `Retry-After` and a detail saying the database is
///   full; no request ever gets another 5xx;
/// - a run that ends cannot record its end: its thread stalls (it logs so) but stays
///   responsive: a new run on it gets 503 at once rather than hanging until there is room;
/// - every acknowledged thread stays readable with its metadata, and reads work.
///
/// Once the file system has room again, without a restart:
/// - writes are taken again and a new run answers;
/// - every run of the loaded threads ends (`success`, or `error` saying the database was full),
///   and no thread stays `busy`.
///
/// After a SIGKILL and a restart on the same file: every acknowledged thread is there with its
/// metadata, `PRAGMA integrity_check` is `ok`, nothing is in flight, and no process logged a
/// panic.
#[test]
fn a_full_disk_gives_503_loses_nothing_and_the_server_recovers_once_there_is_room() {
    let Some(disk) = TinyDisk::mount(SMALL) else {
        eprintln!("skipped: mounting a tmpfs needs root with CAP_SYS_ADMIN");
        return;
    };
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let collector = {
        let logs = logs.clone();
        move |line: &str| logs.lock().unwrap().push(line.to_owned())
    };
    let config = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml"));
    let mut server = Server::start_with_database(
        &config,
        "warn",
        &[],
        &disk.path.join("spindle.db"),
        collector.clone(),
    );
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    runtime.block_on(async {
        let url = server.url.clone();
        // Arrange: runs in flight on eight threads.
        let mut loaded = Vec::new();
        for _ in 0..THREADS {
            let thread_id = create_thread(&client, &url).await;
            for index in 0..RUNS_PER_THREAD {
                let (status, body, _) = post(
                    &client,
                    &format!("{url}/threads/{thread_id}/runs"),
                    agent_run(&format!("text {index}"), STEP_DELAY_SECONDS),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
            loaded.push(thread_id);
        }

        // Act: fill the disk with threads carrying 40 KB of metadata each.
        let mut acknowledged = Vec::new();
        let refused = loop {
            assert!(acknowledged.len() < 500, "the disk never filled up");
            let thread_id = uuid::Uuid::new_v4().to_string();
            let (status, body, retry_after) = post(
                &client,
                &format!("{url}/threads"),
                json!({"thread_id": thread_id, "metadata": {"padding": "x".repeat(PADDING)}}),
            )
            .await;
            match status {
                200 => acknowledged.push(thread_id),
                _ => break (thread_id, status, body, retry_after),
            }
        };
        let (refused_id, status, body, retry_after) = refused;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("database is full")),
            "the detail names the cause: {body}"
        );
        assert!(retry_after.is_some(), "a 503 carries Retry-After");
        assert!(
            !acknowledged.is_empty(),
            "some threads fit before the disk filled"
        );
        println!(
            "the disk filled after {} threads of {PADDING} bytes",
            acknowledged.len()
        );

        // Assert, while full: a thread whose run could not record its end answers at once.
        let stalled = wait_for_stall(&logs).await;
        let (status, body, retry_after) = post(
            &client,
            &format!("{url}/threads/{stalled}/runs"),
            agent_run("while stalled", 0.0),
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["detail"].to_string().contains("database is full"),
            "{body}"
        );
        assert!(retry_after.is_some(), "a 503 carries Retry-After");
        let (status, thread) = get(&client, &format!("{url}/threads/{stalled}")).await;
        assert_eq!(status, 200, "{thread}");

        // More writes get 503 or fit, reads work, nothing acknowledged is lost.
        for thread_id in &loaded {
            let (status, body, _) = post(
                &client,
                &format!("{url}/threads/{thread_id}/runs"),
                agent_run("while full", 0.0),
            )
            .await;
            assert!(status == 200 || status == 503, "{status}: {body}");
        }
        let (status, _) = get(&client, &format!("{url}/threads/{refused_id}")).await;
        assert_eq!(status, 404, "the refused thread was not written");
        check_acknowledged(&client, &url, &acknowledged).await;

        // Act: the file system gets room again.
        disk.resize(ROOMY);

        // Assert: writes work again without a restart, and everything in flight settles.
        let thread_id = create_thread(&client, &url).await;
        let (status, answer, _) = post(
            &client,
            &format!("{url}/threads/{thread_id}/runs/wait"),
            agent_run("after the disk has room", 0.0),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["messages"][1]["content"], "You said: after the disk has room",
            "the scripted model answers: {answer}"
        );
        loaded.push(thread_id);
        let ended = settle(&client, &url, &loaded).await;
        println!("runs of the loaded threads after the disk had room again: {ended:?}");
        check_acknowledged(&client, &url, &acknowledged).await;

        // Act: a crash and a restart on the same file.
        server.restart(&[], collector.clone());
        let url = server.url.clone();

        // Assert: the acknowledged threads survived it.
        check_acknowledged(&client, &url, &acknowledged).await;
        settle(&client, &url, &loaded).await;
    });
    server.crash();

    let connection = rusqlite::Connection::open(server.database_path()).unwrap();
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let count = |sql: &str| -> i64 { connection.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM runs WHERE status IN ('pending', 'running')"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM threads WHERE status = 'busy'"),
        0
    );
    let panics: Vec<String> = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("panicked"))
        .cloned()
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:#?}");
}

/// A tmpfs mounted on a temporary directory; unmounted on drop.
struct TinyDisk {
    path: PathBuf,
    _directory: tempfile::TempDir,
}

impl TinyDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it), or `None` where that is not
    /// allowed.
    fn mount(size: &str) -> Option<TinyDisk> {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().to_owned();
        let mounted = mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &path,
        );
        mounted.then_some(TinyDisk {
            path,
            _directory: directory,
        })
    }

    /// Gives the file system a new size, with its files in place.
    fn resize(&self, size: &str) {
        assert!(
            mount(&["-o", &format!("remount,size={size}")], &self.path),
            "the tmpfs could not be resized"
        );
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        // Lazily: a server still running on it must not keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Runs `mount <arguments> <path>`; whether it succeeded.
fn mount(arguments: &[&str], path: &Path) -> bool {
    Command::new("mount")
        .args(arguments)
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// An `agent` run on `text`, each step taking `delay_seconds`; queued behind the thread's runs.
fn agent_run(text: &str, delay_seconds: f64) -> Value {
    json!({
        "assistant_id": "agent",
        "input": {"messages": [{"role": "human", "content": text}]},
        "config": {"configurable": {"delay": delay_seconds}},
        "multitask_strategy": "enqueue",
    })
}

/// POSTs `body`; the status, the JSON body, and the `Retry-After` header. Any 5xx but 503 fails.
async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value, Option<String>) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert!(status < 500 || status == 503, "POST {url}: {status} {body}");
    (status, body, retry_after)
}

/// GETs a JSON body; the status and the body. Any 5xx fails.
async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert!(status < 500, "GET {url}: {status} {body}");
    (status, body)
}

/// Waits until the server logs that a run's end could not be recorded; returns its thread.
async fn wait_for_stall(logs: &Mutex<Vec<String>>) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let found = logs
            .lock()
            .unwrap()
            .iter()
            .find(|line| line.contains("run end not recorded yet"))
            .and_then(|line| line.split("thread_id=").nth(1))
            .and_then(|rest| rest.split([' ', ':']).next())
            .map(str::to_owned);
        if let Some(thread_id) = found {
            return thread_id;
        }
        assert!(
            Instant::now() < deadline,
            "no run end stalled on the full disk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every acknowledged thread is readable with its whole metadata, and a search finds them all.
async fn check_acknowledged(client: &reqwest::Client, url: &str, acknowledged: &[String]) {
    for thread_id in acknowledged {
        let (status, thread) = get(client, &format!("{url}/threads/{thread_id}")).await;
        assert_eq!(status, 200, "acknowledged thread {thread_id} is lost");
        assert_eq!(
            thread["metadata"]["padding"].as_str().map(str::len),
            Some(PADDING),
            "thread {thread_id}"
        );
    }
}

/// Waits until no run of `threads` is pending or running and none of them is `busy`; then
/// checks each run ended `success`, or `error` saying the database was full. Returns how many
/// runs ended in each status.
async fn settle(client: &reqwest::Client, url: &str, threads: &[String]) -> Vec<(String, usize)> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut unsettled = Vec::new();
        let mut runs = Vec::new();
        for thread_id in threads {
            let (_, thread) = get(client, &format!("{url}/threads/{thread_id}")).await;
            let (_, listed) =
                get(client, &format!("{url}/threads/{thread_id}/runs?limit=100")).await;
            let listed = listed.as_array().cloned().unwrap_or_default();
            let in_flight = listed
                .iter()
                .any(|run| run["status"] == "pending" || run["status"] == "running");
            if thread["status"] == "busy" || in_flight {
                unsettled.push(thread_id.clone());
            }
            if thread["status"] == "error" {
                // Its last run failed: the only failure expected is the full disk.
                assert!(
                    thread["error"].to_string().contains("full"),
                    "thread {thread_id} failed for another reason: {}",
                    thread["error"]
                );
            }
            runs.extend(listed.into_iter().map(|run| (thread_id.clone(), run)));
        }
        if unsettled.is_empty() {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for (thread_id, run) in &runs {
                let status = run["status"].as_str().unwrap_or_default().to_owned();
                assert!(
                    status == "success" || status == "error",
                    "run {} of thread {thread_id} ended {status}",
                    run["run_id"]
                );
                match counts.iter_mut().find(|(seen, _)| *seen == status) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((status, 1)),
                }
            }
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "threads still busy or with runs in flight: {unsettled:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
