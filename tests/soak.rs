//! Soak: the real `spindle` binary (the debug build under `cargo test`) on port 0 with its own
//! database and a short actor idle time, under the run mix of `tests/support/load.rs` for about
//! 50 s. Asserts that memory stays flat: see `memory_stays_flat_under_a_sustained_run_mix`.
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

#[test]
fn memory_stays_flat_under_a_sustained_run_mix() {
    let server = Server::start_with_env(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml")),
        "warn",
        &[("SPINDLE_RUNTIME__ACTOR_IDLE_SECONDS".to_owned(), "1".to_owned())],
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
    assert_eq!(
        tally.failures.load(Ordering::Relaxed),
        0,
        "first failure: {:?}",
        tally.first_failure.lock().unwrap()
    );
}
