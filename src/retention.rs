//! The retention sweeper: a task that, every `retention.sweep_interval_seconds`, deletes or prunes
//! the threads nobody has updated for `retention.thread_idle_days` (see `Store::sweep`: bounded
//! batches, threads with runs in flight left alone). Started by `startup.rs` when retention is
//! on; it runs on the arbiter that starts it until the actix System stops. Owns no state.

use std::time::{Duration, Instant};

use crate::config::{RetentionAction, RetentionSettings};
use crate::domain::time::Timestamp;
use crate::storage::{PruneAction, PruneCounts, SharedStore, StorageError};

/// Sweeps idle threads on a timer.
pub struct Sweeper {
    store: SharedStore,
    /// Threads not updated for this long are swept.
    idle: Duration,
    action: PruneAction,
    interval: Duration,
}

impl Sweeper {
    /// The sweeper the settings ask for, or `None` when retention is off.
    pub fn new(store: SharedStore, settings: &RetentionSettings) -> Option<Sweeper> {
        let idle = settings.thread_idle()?;
        let action = match settings.action {
            RetentionAction::Delete => PruneAction::Delete,
            RetentionAction::Prune => PruneAction::KeepLatest(settings.keep_checkpoints.max(1)),
        };
        Some(Sweeper {
            store,
            idle,
            action,
            interval: settings.sweep_interval(),
        })
    }

    /// Spawns the sweeping loop on the current arbiter: one sweep at once, then one per
    /// interval (a sweep that overruns delays the next instead of piling up).
    pub fn start(self) {
        log::info!(
            "retention sweeper started idle_seconds={} action={:?} interval_seconds={}",
            self.idle.as_secs_f64(),
            self.action,
            self.interval.as_secs_f64()
        );
        actix::spawn(async move {
            // A zero interval would make `interval` panic; a millisecond is as good as continuous.
            let mut ticks = tokio::time::interval(self.interval.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let started = Instant::now();
                match self.sweep_once().await {
                    Ok(counts) => log_sweep(counts, started.elapsed()),
                    Err(error) => {
                        log::warn!("retention sweep failed, retrying next interval: {error:#}")
                    }
                }
            }
        });
    }

    /// One sweep of the threads idle since before now minus the idle time.
    pub async fn sweep_once(&self) -> Result<PruneCounts, StorageError> {
        // A cutoff before year 0 cannot be written; no thread can be that old anyway.
        let Some(cutoff) = Timestamp::now().plus_seconds(-self.idle.as_secs_f64()) else {
            return Ok(PruneCounts::default());
        };
        self.store.sweep(cutoff, self.action).await
    }
}

/// Info when the sweep changed something; debug when it found nothing, so that a short interval
/// does not fill the log.
fn log_sweep(counts: PruneCounts, elapsed: Duration) {
    let level = if counts == PruneCounts::default() {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "retention sweep threads_deleted={} threads_pruned={} checkpoints_deleted={} elapsed_ms={}",
        counts.threads_deleted,
        counts.threads_pruned,
        counts.checkpoints_deleted,
        elapsed.as_millis()
    );
}
