//! Memory benchmark against the real `spindle` binary (release build) on a random port with its
//! own SQLite file; the client runs on the same machine. The server's `VmRSS` and `VmHWM` (peak)
//! come from `/proc/<pid>/status`.
//!
//! - Default: creates `--threads` threads (100,000) and runs one `agent` run on each
//!   (`POST /threads/{t}/runs/wait`, one user message, no step delay: three steps, four messages
//!   of state), from `--clients` concurrent clients (64); prints progress every second. Then it
//!   stops the load, waits out the thread actors' idle time (`--idle` seconds, 5, passed to the
//!   server as `SPINDLE_RUNTIME__ACTOR_IDLE_SECONDS`) and polls until the RSS stops falling.
//!   Prints threads, runs/s, peak RSS, idle RSS and database size.
//! - `--soak SECONDS`: the mix of `tests/support/load.rs` (new and repeat threads, `/wait`,
//!   background runs and join, streams and join-streams, stateless runs, double-texting with
//!   rollback, interrupt and enqueue) from `--clients` clients (32), sampling every `--interval`
//!   seconds (10); prints the samples and the RSS growth from the first sample after `--warmup`
//!   seconds (60) to the last. `--ops 0,5` runs only those operations of the mix (numbered in
//!   `SoakClient::step`), to find which one holds memory.
//!
//! `cargo bench --bench memory` (options: `-- --threads N --clients C --idle S --soak SECONDS
//! --interval S --warmup S --ops N,N,… --env NAME=VALUE`, `--env` repeatable, e.g. `MALLOC_ARENA_MAX=2`).

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../tests/support/binary.rs"]
mod binary;
#[path = "../tests/support/load.rs"]
mod load;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::option;
use binary::{memory, Memory, Server};
use load::mb;

/// Every `--env NAME=VALUE` of the command line.
fn extra_environment() -> Vec<(String, String)> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .windows(2)
        .filter(|pair| pair[0] == "--env")
        .filter_map(|pair| pair[1].split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn start_server(idle_seconds: f64) -> Server {
    // Logging stays at warn so 100,000 access lines do not cost the server or the figures.
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let mut environment = vec![(
        "SPINDLE_RUNTIME__ACTOR_IDLE_SECONDS".to_owned(),
        idle_seconds.to_string(),
    )];
    environment.extend(extra_environment());
    eprintln!("server environment: {environment:?}");
    Server::start_with_env(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml")),
        &level,
        &environment,
        |line| {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("server: {line}");
            }
        },
    )
}

fn main() {
    let soak_seconds: u64 = option("--soak", 0);
    let idle_seconds: f64 = option("--idle", 5.0);
    let server = start_server(idle_seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if soak_seconds > 0 {
        runtime.block_on(soak(&server, soak_seconds));
    } else {
        runtime.block_on(threads(&server, idle_seconds));
    }
}

/// The default mode: many threads, one run each, then idle.
async fn threads(server: &Server, idle_seconds: f64) {
    let threads: u64 = option("--threads", 100_000);
    let clients: usize = option("--clients", 64);
    let pid = server.pid();
    let before = memory(pid);
    println!(
        "{threads} threads, one `agent` run each, {clients} clients; actor idle time {idle_seconds} s; server RSS before {:.1} MB",
        mb(before.rss_kb)
    );
    let next = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let client = load::client();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), server.url.clone());
        let (next, completed) = (next.clone(), completed.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < threads {
                let thread_id = load::create_thread(&client, &url).await.unwrap();
                load::wait_agent_run(&client, &url, &thread_id)
                    .await
                    .unwrap();
                completed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let done = Arc::new(AtomicBool::new(false));
    let progress = {
        let (done, completed) = (done.clone(), completed.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            let mut last = 0;
            ticks.tick().await;
            while !done.load(Ordering::Relaxed) {
                ticks.tick().await;
                let now = completed.load(Ordering::Relaxed);
                let Memory { rss_kb, peak_kb } = memory(pid);
                println!(
                    "{:>5.0} s  {now:>7} threads with a run  {:>5} runs/s  RSS {:>6.1} MB  peak {:>6.1} MB",
                    started.elapsed().as_secs_f64(),
                    now - last,
                    mb(rss_kb),
                    mb(peak_kb)
                );
                last = now;
            }
        })
    };
    let started = Instant::now();
    for worker in workers {
        worker.await.expect("a client does not panic");
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    progress.await.unwrap();
    let loaded = memory(pid);
    let database_mb = load::database_bytes(&server.database_path()) as f64 / 1_048_576.0;
    println!(
        "load done in {:.1} s; RSS {:.1} MB, peak {:.1} MB; database {database_mb:.1} MB",
        elapsed.as_secs_f64(),
        mb(loaded.rss_kb),
        mb(loaded.peak_kb)
    );

    // Idle: past the actors' idle time, wait until the RSS has not fallen by more than 1 MB for
    // 10 s, or give up two minutes later.
    let idle_started = Instant::now();
    let earliest = Duration::from_secs_f64(idle_seconds + 2.0);
    let deadline = earliest + Duration::from_secs(120);
    let mut lowest = loaded.rss_kb;
    let mut last_drop = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_kb = memory(pid).rss_kb;
        if rss_kb + 1024 < lowest {
            last_drop = Instant::now();
        }
        lowest = lowest.min(rss_kb);
        let waited = idle_started.elapsed();
        println!(
            "idle {:>4.0} s  RSS {:>6.1} MB",
            waited.as_secs_f64(),
            mb(rss_kb)
        );
        let settled = waited >= earliest && last_drop.elapsed() >= Duration::from_secs(10);
        if settled || waited >= deadline {
            break;
        }
    }
    let idle = memory(pid);
    let database_mb = load::database_bytes(&server.database_path()) as f64 / 1_048_576.0;
    println!();
    println!("| measure (`agent` graph, client on the same machine) | result |");
    println!("|---|---|");
    println!(
        "| threads created, one `/wait` run each ({clients} clients) | {} in {:.1} s |",
        completed.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    println!(
        "| throughput (thread + run) | {:.0} runs/s |",
        completed.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| server RSS before / peak (`VmHWM`) | {:.1} MB / {:.1} MB |",
        mb(before.rss_kb),
        mb(idle.peak_kb)
    );
    println!(
        "| server RSS once idle ({idle_seconds} s actor idle time, {:.0} s after the load) | {:.1} MB |",
        idle_started.elapsed().as_secs_f64(),
        mb(idle.rss_kb)
    );
    println!("| database size (with WAL) | {database_mb:.1} MB |");
}

/// `--soak SECONDS`: the run mix, with memory samples.
async fn soak(server: &Server, seconds: u64) {
    let clients: usize = option("--clients", 32);
    let interval = Duration::from_secs(option("--interval", 10));
    let warmup = Duration::from_secs(option("--warmup", 60));
    let operations: Vec<u64> = option("--ops", String::new())
        .split(',')
        .filter_map(|number| number.trim().parse().ok())
        .collect();
    let operations = if operations.is_empty() {
        load::ALL_OPERATIONS.to_vec()
    } else {
        operations
    };
    println!(
        "soak: {seconds} s of the run mix (operations {operations:?}), {clients} clients, a sample every {interval:?}"
    );
    println!("| time | runs | runs/s | RSS | peak |");
    println!("|---|---|---|---|---|");
    let mut previous: Option<load::Sample> = None;
    let (samples, tally) = load::soak(
        &server.url,
        server.pid(),
        clients,
        &operations,
        Duration::from_secs(seconds),
        interval,
        |sample| {
            let rate = previous.map_or(0.0, |previous| {
                (sample.runs - previous.runs) as f64
                    / (sample.elapsed - previous.elapsed).as_secs_f64()
            });
            println!(
                "| {:.0} s | {} | {rate:.0} | {:.1} MB | {:.1} MB |",
                sample.elapsed.as_secs_f64(),
                sample.runs,
                mb(sample.memory.rss_kb),
                mb(sample.memory.peak_kb)
            );
            previous = Some(*sample);
        },
    )
    .await;
    let database_mb = load::database_bytes(&server.database_path()) as f64 / 1_048_576.0;
    let failures = tally.failures.load(Ordering::Relaxed);
    println!(
        "operations {}, runs {}, failures {failures}; database {database_mb:.1} MB",
        tally.operations.load(Ordering::Relaxed),
        tally.runs.load(Ordering::Relaxed)
    );
    if let Some(failure) = tally.first_failure.lock().unwrap().as_ref() {
        println!("first failure: {failure}");
    }
    let after_warmup = samples
        .iter()
        .find(|sample| sample.elapsed >= warmup)
        .or(samples.last())
        .expect("a soak takes at least one sample");
    let last = samples.last().expect("a soak takes at least one sample");
    let growth_kb = last.memory.rss_kb as i64 - after_warmup.memory.rss_kb as i64;
    println!(
        "RSS growth from {:.0} s (after the {:.0} s warm-up) to {:.0} s: {:.1} MB -> {:.1} MB ({:+.1} MB); peak {:.1} MB",
        after_warmup.elapsed.as_secs_f64(),
        warmup.as_secs_f64(),
        last.elapsed.as_secs_f64(),
        mb(after_warmup.memory.rss_kb),
        mb(last.memory.rss_kb),
        growth_kb as f64 / 1024.0,
        mb(last.memory.peak_kb)
    );
    if failures > 0 {
        std::process::exit(1);
    }
}
