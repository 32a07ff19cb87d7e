//! Soak: the real `spindle` binary (the debug build under `cargo test`) on port 0 with its own
//! database and a short actor idle time, under the run mix of `tests/support/load.rs` for about
//! 50 s (8 clients; about 5,000 runs in a debug build on 2 cores). Asserts that no operation
//! fails and that memory stays flat: the RSS at the end is at most `MARGIN_MB` above the RSS
//! after `WARMUP` (by then the actors of the first threads have retired and SQLite's page caches
//! are full). Every sample is printed, so a failure shows the curve.
//! The long version is `cargo bench --bench memory -- --soak SECONDS`.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/load.rs"]
mod load;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use binary::Server;
use load::mb;

/// Load before the reference sample.
const WARMUP: Duration = Duration::from_secs(20);
/// Allowed RSS growth after the warm-up. Measured with idle eviction: -0.5 to +0.6 MB in debug
/// builds, at most +1.6 MB over 45 s in release runs of parts of the mix (allocator slack). A
/// slower machine does fewer runs and so grows less; a leak of 2 KB per run shows as +6 MB.
const MARGIN_MB: f64 = 6.0;

#[test]
fn memory_stays_flat_under_a_sustained_run_mix() {
    let server = Server::start_with_env(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml")),
        "warn",
        &[(
            "SPINDLE_RUNTIME__ACTOR_IDLE_SECONDS".to_owned(),
            "1".to_owned(),
        )],
        |line| eprintln!("server: {line}"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (samples, tally) = runtime.block_on(load::soak(
        &server.url,
        server.pid(),
        8,
        &load::ALL_OPERATIONS,
        Duration::from_secs(50),
        Duration::from_secs(5),
        |sample| {
            eprintln!(
                "{:>3.0} s  runs {:>6}  RSS {:>6.1} MB  peak {:>6.1} MB",
                sample.elapsed.as_secs_f64(),
                sample.runs,
                mb(sample.memory.rss_kb),
                mb(sample.memory.peak_kb)
            )
        },
    ));
    eprintln!(
        "operations {}, runs {}, failures {}; database {:.1} MB",
        tally.operations.load(Ordering::Relaxed),
        tally.runs.load(Ordering::Relaxed),
        tally.failures.load(Ordering::Relaxed),
        load::database_bytes(&server.database_path()) as f64 / 1_048_576.0
    );
    let reference = samples
        .iter()
        .find(|sample| sample.elapsed >= WARMUP)
        .expect("the soak lasts past the warm-up");
    let last = samples.last().expect("the soak takes samples");
    let growth_mb = mb(last.memory.rss_kb) - mb(reference.memory.rss_kb);
    eprintln!(
        "RSS growth from {:.0} s to {:.0} s: {growth_mb:+.1} MB over {} runs",
        reference.elapsed.as_secs_f64(),
        last.elapsed.as_secs_f64(),
        last.runs - reference.runs
    );
    assert_eq!(
        tally.failures.load(Ordering::Relaxed),
        0,
        "first failure: {:?}",
        tally.first_failure.lock().unwrap()
    );
    assert!(
        growth_mb <= MARGIN_MB,
        "the server's RSS grew by {growth_mb:.1} MB after the warm-up (allowed {MARGIN_MB} MB)"
    );
}
