//! Retention soak benchmark, against the real `spindle` binary (release build) on a random port
//! with its own SQLite file; the client runs on the same machine.
//! Concurrent clients each create a new thread and run the `echo` graph on it with a padded
//! message (`POST /threads/{t}/runs/wait`), over and over, for `--seconds`. Retention deletes
//! threads idle for `--idle` seconds, sweeping every `--interval` seconds (set through
//! `SPINDLE_RETENTION__*` variables, which the server inherits). Every `--sample` seconds the
//! table shows runs done, threads stored and the sizes of the database file and its `-wal`
//! file: with retention on they level off; with `--off` they grow with the runs.
//!
//! `cargo bench --bench retention` (options: `-- --seconds S --clients C --idle S --interval S
//! --sample S --padding BYTES --off`).

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../tests/support/binary.rs"]
mod binary;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{create_thread, flag, option};
use binary::Server;
use serde_json::json;

fn size_of(path: &Path, suffix: &str) -> u64 {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::metadata(name).map_or(0, |metadata| metadata.len())
}

fn mebibytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn one_thread_one_run(client: &reqwest::Client, url: &str, padding: &str) {
    let thread_id = create_thread(client, url).await;
    let response = client
        .post(format!("{url}/threads/{thread_id}/runs/wait"))
        .json(&json!({
            "assistant_id": "echo",
            "input": {"messages": [{"role": "user", "content": padding}]},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}

async fn thread_count(client: &reqwest::Client, url: &str) -> i64 {
    client
        .post(format!("{url}/threads/count"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn main() {
    let seconds = option("--seconds", 120.0);
    let clients = option("--clients", 8.0) as usize;
    let idle = option("--idle", 10.0);
    let interval = option("--interval", 2.0);
    let sample = option("--sample", 5.0);
    let padding = "x".repeat(option("--padding", 1000.0) as usize);
    let retention = !flag("--off");
    // Set before the server starts (no other thread runs yet); the server inherits them.
    let idle_days = if retention { idle / 86_400.0 } else { 0.0 };
    std::env::set_var("SPINDLE_RETENTION__THREAD_IDLE_DAYS", idle_days.to_string());
    std::env::set_var("SPINDLE_RETENTION__ACTION", "delete");
    std::env::set_var(
        "SPINDLE_RETENTION__SWEEP_INTERVAL_SECONDS",
        interval.to_string(),
    );
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let server = Server::start(&format!("{level},spindle::retention=info"), |line| {
        if line.contains("retention sweep") {
            eprintln!("{line}");
        }
    });
    let database = server.database_path();
    let url = server.url.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let padding = Arc::new(padding);
        let mut workers = Vec::new();
        for _ in 0..clients {
            let (url, stop, completed, padding) =
                (url.clone(), stop.clone(), completed.clone(), padding.clone());
            workers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    one_thread_one_run(&client, &url, &padding).await;
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // A fresh connection per sample: a pooled one idle for the whole sample interval may be
        // closed by the server's keep-alive timeout just as it is reused.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        println!(
            "retention {}; {clients} clients, one new thread per run, {} B message",
            if retention {
                format!("on: delete threads idle {idle} s, sweep every {interval} s")
            } else {
                "off".into()
            },
            padding.len()
        );
        println!("| t (s) | runs | runs/s | threads stored | db (MiB) | wal (MiB) | total (MiB) |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        let started = Instant::now();
        let mut last_runs = 0;
        let mut totals = Vec::new();
        let mut next_sample = Duration::ZERO;
        while next_sample.as_secs_f64() < seconds {
            next_sample += Duration::from_secs_f64(sample);
            tokio::time::sleep_until((started + next_sample).into()).await;
            let runs = completed.load(Ordering::Relaxed);
            let threads = thread_count(&client, &url).await;
            let (db, wal) = (size_of(&database, ""), size_of(&database, "-wal"));
            totals.push(db + wal);
            println!(
                "| {:.0} | {runs} | {:.0} | {threads} | {:.1} | {:.1} | {:.1} |",
                started.elapsed().as_secs_f64(),
                (runs - last_runs) as f64 / sample,
                mebibytes(db),
                mebibytes(wal),
                mebibytes(db + wal)
            );
            last_runs = runs;
        }
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }
        let half = totals.len() / 2;
        if let (Some(middle), Some(last)) = (totals.get(half), totals.last()) {
            println!(
                "total size at the middle {:.1} MiB, at the end {:.1} MiB (growth over the second half: {:+.0}%)",
                mebibytes(*middle),
                mebibytes(*last),
                (*last as f64 / (*middle).max(1) as f64 - 1.0) * 100.0
            );
        }
    });
}
