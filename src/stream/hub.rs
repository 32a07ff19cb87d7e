//! `StreamHub`: finds a run's stream, and keeps a resumable run's stream for the retention
//! time after the run ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::run_stream::{RunStream, StreamLimits};
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
    streams: Mutex<Streams>,
}

impl StreamHub {
    /// A hub whose streams use `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
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
        Self::expire(&mut streams);
        streams
            .open
            .entry(run_id)
            .or_insert_with(|| Arc::new(RunStream::new(run_id, resumable, &self.limits)))
            .clone()
    }

    /// The stream of a run, if it is open or still retained.
    pub fn get(&self, run_id: RunId) -> Option<Arc<RunStream>> {
        let mut streams = self.lock();
        Self::expire(&mut streams);
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
            streams
                .expiring
                .push_back((Instant::now() + self.limits.retention, run_id));
        } else {
            streams.open.remove(&run_id);
        }
        Self::expire(&mut streams);
    }

    /// Drops a run's stream at once (the run was deleted), ending it first.
    pub fn discard(&self, run_id: RunId) {
        if let Some(stream) = self.lock().open.remove(&run_id) {
            stream.end();
        }
    }

    fn expire(streams: &mut Streams) {
        let now = Instant::now();
        while let Some((deadline, run_id)) = streams.expiring.front().copied() {
            if deadline > now {
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
}
