//! `StreamHub`: finds a run's stream, and keeps a resumable run's stream for the retention
//! time after the run ends. Its streams share one `Budget` of bytes: when they hold more, the
//! streams of ended runs go first, oldest first, then each running stream's oldest events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::run_stream::{Budget, RunStream, StreamLimits};
use crate::domain::ids::RunId;

#[derive(Default)]
struct Streams {
    open: HashMap<RunId, Arc<RunStream>>,
    /// Ended resumable streams, oldest first, with the time they may be dropped.
    expiring: VecDeque<(Instant, RunId)>,
}

/// Finds the stream of a run.
pub struct StreamHub {
    limits: StreamLimits,
    budget: Arc<Budget>,
    streams: Mutex<Streams>,
}

impl StreamHub {
    /// A hub whose streams use `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            budget: Arc::new(Budget::new(limits.total_bytes)),
            limits,
            streams: Mutex::new(Streams::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Streams> {
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stream of a run, created if needed.
    pub fn open(&self, run_id: RunId, resumable: bool) -> Arc<RunStream> {
        let mut streams = self.lock();
        self.expire(&mut streams);
        streams
            .open
            .entry(run_id)
            .or_insert_with(|| {
                Arc::new(RunStream::with_budget(
                    run_id,
                    resumable,
                    &self.limits,
                    self.budget.clone(),
                ))
            })
            .clone()
    }

    /// The stream of a run, if it is open or still retained.
    pub fn get(&self, run_id: RunId) -> Option<Arc<RunStream>> {
        let mut streams = self.lock();
        self.expire(&mut streams);
        streams.open.get(&run_id).cloned()
    }

    /// Ends a run's stream. A resumable stream stays for the retention time; others go now.
    pub fn finish(&self, run_id: RunId) {
        let mut streams = self.lock();
        let Some(stream) = streams.open.get(&run_id).cloned() else {
            return;
        };
        stream.end();
        if stream.resumable() && !self.limits.retention.is_zero() {
            self.budget.retain(&stream);
            streams
                .expiring
                .push_back((Instant::now() + self.limits.retention, run_id));
        } else {
            streams.open.remove(&run_id);
        }
        self.expire(&mut streams);
    }

    /// Drops a run's stream at once (the run was deleted), ending it first.
    pub fn discard(&self, run_id: RunId) {
        if let Some(stream) = self.lock().open.remove(&run_id) {
            stream.end();
        }
    }

    /// Drops the retained streams whose time is up, and, while the streams hold more bytes
    /// than their budget, the oldest retained ones before their time.
    fn expire(&self, streams: &mut Streams) {
        let now = Instant::now();
        while let Some((deadline, run_id)) = streams.expiring.front().copied() {
            if deadline > now && !self.budget.exceeded() {
                break;
            }
            streams.expiring.pop_front();
            if streams
                .open
                .get(&run_id)
                .is_some_and(|stream| stream.ended())
            {
                streams.open.remove(&run_id);
            }
        }
    }

    /// Streams held (open or retained).
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no stream is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the streams' buffers hold together.
    pub fn buffered_bytes(&self) -> usize {
        self.budget.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn limits(replay: usize, subscriber: usize) -> StreamLimits {
        StreamLimits {
            replay_events: replay,
            resumable_events: replay,
            subscriber_events: subscriber,
            retention: Duration::from_secs(60),
            ..StreamLimits::default()
        }
    }

    #[test]
    fn the_hub_keeps_resumable_streams_after_the_end_and_drops_the_others() {
        let hub = StreamHub::new(limits(10, 10));
        let (plain, resumable) = (RunId::generate(), RunId::generate());
        hub.open(plain, false).publish("metadata", &json!({}));
        hub.open(resumable, true).publish("metadata", &json!({}));
        hub.finish(plain);
        hub.finish(resumable);
        assert!(hub.get(plain).is_none());
        let kept = hub.get(resumable).unwrap();
        assert!(kept.ended());
        hub.discard(resumable);
        assert!(hub.is_empty());
    }

    #[test]
    fn past_its_budget_the_hub_drops_the_oldest_retained_streams_first() {
        let hub = StreamHub::new(StreamLimits {
            total_bytes: 6_000,
            ..limits(10_000, 10)
        });
        let big = "x".repeat(1000);
        let (old, newer) = (RunId::generate(), RunId::generate());
        for run_id in [old, newer] {
            let stream = hub.open(run_id, true);
            for step in 0..2 {
                stream.publish("values", &json!({ "step": step, "padding": big }));
            }
            hub.finish(run_id);
        }
        assert!(hub.get(old).is_some() && hub.get(newer).is_some());
        // A running stream pushes the total past the budget: the oldest retained stream gives
        // up its events first; the running one keeps all of its own.
        let running = hub.open(RunId::generate(), true);
        for step in 0..2 {
            running.publish("values", &json!({ "step": step, "padding": big }));
        }
        assert_eq!(hub.get(old).map(|stream| stream.buffered_bytes()), Some(0));
        assert!(hub.get(newer).unwrap().buffered_bytes() > 0);
        assert!(running.buffered_bytes() > 2_000);
        assert!(hub.buffered_bytes() <= 6_000, "{}", hub.buffered_bytes());
    }
}
