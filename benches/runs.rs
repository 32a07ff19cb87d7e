//! Load benchmark on the `echo` graph, against the real `spindle` binary (release build) on a
//! random port with its own SQLite file; the client runs on the same machine.
//! Measures the sequential latency of `POST /threads/{t}/runs/wait` (p50, p99) and the
//! throughput of 32 concurrent clients, each on its own thread. Every run writes its checkpoints
//! to SQLite before `/wait` answers.
//!
//! `cargo bench --bench runs` (options: `-- --sequential N --seconds S --clients C`).

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../tests/support/binary.rs"]
mod binary;

use bench::{create_thread, option};
use binary::Server;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

fn start_server() -> Server {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    Server::start(&level, |_| {})
}

async fn wait_run(client: &reqwest::Client, url: &str, thread_id: &str) {
    let response = client
        .post(format!("{url}/threads/{thread_id}/runs/wait"))
        .json(&json!({"assistant_id": "echo", "input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert!(!body.is_empty());
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn main() {
    let sequential = option::<u64>("--sequential", 3000) as usize;
    let seconds = option::<u64>("--seconds", 10);
    let clients = option::<u64>("--clients", 32) as usize;
    let server = start_server();
    let url = server.url.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = reqwest::Client::new();
        let thread_id = create_thread(&client, &url).await;
        for _ in 0..200 {
            wait_run(&client, &url, &thread_id).await;
        }
        let mut latencies = Vec::with_capacity(sequential);
        for _ in 0..sequential {
            let started = Instant::now();
            wait_run(&client, &url, &thread_id).await;
            latencies.push(started.elapsed());
        }
        latencies.sort();
        let p50 = percentile(&latencies, 0.50);
        let p99 = percentile(&latencies, 0.99);

        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..clients {
            let (url, stop, completed) = (url.clone(), stop.clone(), completed.clone());
            workers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let thread_id = create_thread(&client, &url).await;
                while !stop.load(Ordering::Relaxed) {
                    wait_run(&client, &url, &thread_id).await;
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let done = completed.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }
        let throughput = done as f64 / elapsed.as_secs_f64();

        println!("| measure (echo graph, client on the same machine) | result |");
        println!("|---|---|");
        println!("| sequential `POST /threads/{{t}}/runs/wait`, p50 ({sequential} runs) | {:.2} ms |", p50.as_secs_f64() * 1000.0);
        println!("| sequential `POST /threads/{{t}}/runs/wait`, p99 | {:.2} ms |", p99.as_secs_f64() * 1000.0);
        println!("| throughput, {clients} concurrent clients, one thread each ({seconds} s) | {throughput:.0} runs/s |");
    });
}
