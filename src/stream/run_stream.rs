//! `RunStream`: the fan-out of one run's events. Events get increasing ids (1, 2, …) and are
//! framed for Server-Sent Events once, then shared by every subscriber. A replay buffer, bounded
//! by events and by bytes (per run, and in total through the hub's `Budget`), serves late
//! joiners and `Last-Event-ID` reconnects; the oldest events go first, and a reconnect that
//! needs them gets a gap. Publishing never blocks: each subscriber has a bounded queue, and a
//! subscriber whose queue is full is cut off (it sees an `error` event after what it already
//! had).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::domain::ids::RunId;

/// The sizes and times that bound memory.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Events a run keeps for late joiners.
    pub replay_events: usize,
    /// Bytes of events a run keeps for late joiners.
    pub replay_bytes: usize,
    /// Events a `stream_resumable` run keeps for `Last-Event-ID` reconnects.
    pub resumable_events: usize,
    /// Bytes of events a `stream_resumable` run keeps.
    pub resumable_bytes: usize,
    /// Bytes of events every run's buffer keeps together (the hub's `Budget`).
    pub total_bytes: usize,
    /// Events queued for one subscriber before it is cut off.
    pub subscriber_events: usize,
    /// How long a resumable run's events stay after it ends.
    pub retention: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            replay_events: 256,
            replay_bytes: 8 << 20,
            resumable_events: 10_000,
            resumable_bytes: 32 << 20,
            total_bytes: 256 << 20,
            subscriber_events: 1024,
            retention: Duration::from_secs(600),
        }
    }
}

/// The bytes every run's replay buffer holds together, against their total limit; shared by a
/// hub and its streams. It knows the streams of ended runs that are retained (resumable), oldest
/// first: past the limit, their buffers are emptied before a running stream loses events.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    retained: Mutex<VecDeque<Weak<RunStream>>>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            retained: Mutex::new(VecDeque::new()),
        }
    }

    /// Notes an ended stream kept for reconnects; its buffer goes first when bytes run short.
    pub fn retain(&self, stream: &Arc<RunStream>) {
        let mut retained = self.retained_streams();
        // Streams leave in the order they came (one retention time each): forget those gone.
        while retained
            .front()
            .is_some_and(|oldest| oldest.strong_count() == 0)
        {
            retained.pop_front();
        }
        retained.push_back(Arc::downgrade(stream));
    }

    fn retained_streams(&self) -> MutexGuard<'_, VecDeque<Weak<RunStream>>> {
        self.retained
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Empties the buffers of retained streams, oldest first, until the budget holds.
    fn reclaim(&self) {
        while self.exceeded() {
            let oldest = self.retained_streams().pop_front();
            let Some(oldest) = oldest else {
                return;
            };
            if let Some(stream) = oldest.upgrade() {
                stream.clear_buffer();
            }
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Whether more than the limit is held.
    pub fn exceeded(&self) -> bool {
        self.used() > self.limit
    }

    fn take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl Event {
    /// What keeping the event costs, roughly: its frame, its name and their bookkeeping.
    fn cost(&self) -> usize {
        self.frame.len() + self.name.len() + 64
    }
}

/// One event of a run, framed for SSE.
#[derive(Debug)]
pub struct Event {
    /// 1 for the first event of a run, then increasing by one.
    pub id: u64,
    /// The SSE event name (`metadata`, `values`, `messages`, `updates|sub:…`, …).
    pub name: String,
    /// `event: …\r\ndata: …\r\n[id: …\r\n]\r\n`.
    pub frame: Bytes,
}

/// The data of the `metadata` event that opens every run stream.
pub fn metadata_event(run_id: RunId, attempt: u32) -> Value {
    serde_json::json!({"run_id": run_id, "attempt": attempt})
}

/// Frames one SSE event: compact JSON on one line, CRLF line ends, `id:` when given.
pub fn sse_frame(name: &str, data: &str, id: Option<u64>) -> Bytes {
    let mut text = String::with_capacity(name.len() + data.len() + 32);
    text.push_str("event: ");
    text.push_str(name);
    text.push_str("\r\ndata: ");
    text.push_str(data);
    text.push_str("\r\n");
    if let Some(id) = id {
        text.push_str("id: ");
        text.push_str(&id.to_string());
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    Bytes::from(text)
}

struct Subscriber {
    sender: mpsc::Sender<Arc<Event>>,
    cut_off: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    last_id: u64,
    /// The `metadata` event, kept so every join starts with it.
    first: Option<Arc<Event>>,
    replay: VecDeque<Arc<Event>>,
    /// Bytes the replay buffer holds.
    replay_bytes: usize,
    /// The highest id dropped from the replay buffer (0: none): a reconnect after an earlier
    /// id has a gap.
    dropped_through: u64,
    subscribers: Vec<Subscriber>,
    ended: bool,
}

impl State {
    /// Drops the oldest buffered event, giving its bytes back; false when none is left.
    fn drop_oldest(&mut self, budget: &Budget) -> bool {
        let Some(oldest) = self.replay.pop_front() else {
            return false;
        };
        let cost = oldest.cost();
        self.replay_bytes -= cost;
        budget.give_back(cost);
        self.dropped_through = oldest.id;
        true
    }
}

/// The event stream of one run.
pub struct RunStream {
    run_id: RunId,
    resumable: bool,
    /// Events and bytes its replay buffer keeps at most.
    capacity: usize,
    capacity_bytes: usize,
    /// The bytes every stream's buffer holds together.
    budget: Arc<Budget>,
    subscriber_events: usize,
    state: Mutex<State>,
}

/// What a subscription yields.
#[derive(Debug)]
pub enum Item {
    Event(Arc<Event>),
    /// The subscriber fell too far behind and was cut off; nothing more follows.
    CutOff,
    /// Events after the requested id were dropped from the replay buffer; the rest follow.
    Gap {
        oldest: u64,
    },
}

/// A subscriber's view of a run stream: replayed events, then live ones, then the end.
pub struct Subscription {
    replay: VecDeque<Item>,
    receiver: mpsc::Receiver<Arc<Event>>,
    cut_off: Arc<AtomicBool>,
    done: bool,
}

impl Subscription {
    /// The next item; `None` once the run has ended (or the subscriber was cut off).
    pub async fn next(&mut self) -> Option<Item> {
        if let Some(item) = self.replay.pop_front() {
            return Some(item);
        }
        if self.done {
            return None;
        }
        match self.receiver.recv().await {
            Some(event) => Some(Item::Event(event)),
            None => {
                self.done = true;
                self.cut_off.load(Ordering::Acquire).then_some(Item::CutOff)
            }
        }
    }
}

impl RunStream {
    /// A stream for `run_id` with a budget of its own (`limits.total_bytes`); tests use it.
    pub fn new(run_id: RunId, resumable: bool, limits: &StreamLimits) -> Self {
        Self::with_budget(
            run_id,
            resumable,
            limits,
            Arc::new(Budget::new(limits.total_bytes)),
        )
    }

    /// A stream for `run_id` whose buffer counts against `budget`, shared with other streams.
    pub fn with_budget(
        run_id: RunId,
        resumable: bool,
        limits: &StreamLimits,
        budget: Arc<Budget>,
    ) -> Self {
        let (capacity, capacity_bytes) = if resumable {
            (limits.resumable_events, limits.resumable_bytes)
        } else {
            (limits.replay_events, limits.replay_bytes)
        };
        Self {
            run_id,
            resumable,
            capacity: capacity.max(1),
            capacity_bytes,
            budget,
            subscriber_events: limits.subscriber_events.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the stream, so keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The run this stream belongs to.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// Whether events carry ids on the wire.
    pub fn resumable(&self) -> bool {
        self.resumable
    }

    /// Publishes an event to every subscriber and the replay buffer. Never blocks; ignored
    /// once the stream has ended.
    pub fn publish(&self, name: &str, data: &Value) {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
        self.publish_raw(name, &data);
    }

    /// Like `publish`, with the data already serialised.
    pub fn publish_raw(&self, name: &str, data: &str) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        state.last_id += 1;
        let id = state.last_id;
        let event = Arc::new(Event {
            id,
            name: name.to_owned(),
            frame: sse_frame(name, data, self.resumable.then_some(id)),
        });
        if state.first.is_none() {
            state.first = Some(event.clone());
        }
        let cost = event.cost();
        state.replay.push_back(event.clone());
        state.replay_bytes += cost;
        self.budget.take(cost);
        // The oldest events go first, until this buffer is within its own limits.
        while state.replay.len() > self.capacity || state.replay_bytes > self.capacity_bytes {
            if !state.drop_oldest(&self.budget) {
                break;
            }
        }
        state.subscribers.retain(
            |subscriber| match subscriber.sender.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    log::warn!(
                        "stream subscriber cut off: too far behind run_id={} buffer={}",
                        self.run_id,
                        self.subscriber_events
                    );
                    subscriber.cut_off.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        );
        if self.budget.exceeded() {
            // Past the total: retained streams of ended runs give up their buffers first
            // (without this stream's lock held, so no two stream locks are ever nested), then
            // this stream its oldest events.
            drop(state);
            self.budget.reclaim();
            let mut state = self.lock();
            while self.budget.exceeded() {
                if !state.drop_oldest(&self.budget) {
                    break;
                }
            }
        }
    }

    /// Empties the replay buffer (a retained stream whose bytes the budget needs back); a
    /// reconnect then gets a gap.
    fn clear_buffer(&self) {
        let mut state = self.lock();
        while state.drop_oldest(&self.budget) {}
    }

    /// Ends the stream: subscribers get what is queued, then the end. Idempotent.
    pub fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        state.subscribers.clear();
    }

    /// Whether the stream has ended.
    pub fn ended(&self) -> bool {
        self.lock().ended
    }

    /// Subscribes. `after: None` replays the buffer (starting with `metadata`); `Some(id)`
    /// replays the buffered events after that id (a reconnect with `Last-Event-ID`).
    /// Without `resumable` the events carry no ids, so `after` is ignored: the subscriber gets
    /// the replay buffer, then live events.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let after = after.filter(|_| self.resumable);
        let mut state = self.lock();
        let mut replay = VecDeque::new();
        // The oldest id the buffer still has, or would have next.
        let oldest = state.dropped_through + 1;
        match after {
            None => {
                if let Some(first) = state.first.as_ref().filter(|first| first.id < oldest) {
                    replay.push_back(Item::Event(first.clone()));
                }
            }
            Some(after) => {
                if after.saturating_add(1) < oldest {
                    replay.push_back(Item::Gap { oldest });
                }
            }
        }
        let after = after.unwrap_or(0);
        replay.extend(
            state
                .replay
                .iter()
                .filter(|event| event.id > after)
                .map(|event| Item::Event(event.clone())),
        );
        let (sender, receiver) = mpsc::channel(self.subscriber_events);
        let cut_off = Arc::new(AtomicBool::new(false));
        if !state.ended {
            state.subscribers.push(Subscriber {
                sender,
                cut_off: cut_off.clone(),
            });
        }
        Subscription {
            replay,
            receiver,
            cut_off,
            done: false,
        }
    }

    /// Live subscribers (for tests and logs).
    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Bytes its replay buffer holds.
    pub fn buffered_bytes(&self) -> usize {
        self.lock().replay_bytes
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        let state = self.lock();
        self.budget.give_back(state.replay_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(replay: usize, subscriber: usize) -> StreamLimits {
        StreamLimits {
            replay_events: replay,
            resumable_events: replay,
            subscriber_events: subscriber,
            retention: Duration::from_secs(60),
            ..StreamLimits::default()
        }
    }

    fn ids(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|item| match item {
                Item::Event(event) => Some(event.id),
                _ => None,
            })
            .collect()
    }

    async fn drain(subscription: &mut Subscription) -> Vec<Item> {
        let mut items = vec![];
        while let Some(item) = subscription.next().await {
            items.push(item);
        }
        items
    }

    #[test]
    fn frames_use_crlf_and_carry_the_id_when_resumable() {
        assert_eq!(
            &sse_frame("values", "{\"a\":1}", Some(7))[..],
            b"event: values\r\ndata: {\"a\":1}\r\nid: 7\r\n\r\n"
        );
        assert_eq!(
            &sse_frame("metadata", "{}", None)[..],
            b"event: metadata\r\ndata: {}\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_reconnect_gets_every_later_event_exactly_once() {
        let stream = RunStream::new(RunId::generate(), true, &limits(100, 100));
        let mut live = stream.subscribe(None);
        for step in 0..10 {
            stream.publish("values", &json!({ "step": step }));
        }
        let mut resumed = stream.subscribe(Some(4));
        for step in 10..12 {
            stream.publish("values", &json!({ "step": step }));
        }
        stream.end();
        assert_eq!(ids(&drain(&mut live).await), (1..=12).collect::<Vec<_>>());
        assert_eq!(
            ids(&drain(&mut resumed).await),
            (5..=12).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_late_joiner_gets_the_first_event_then_the_replay_buffer() {
        let stream = RunStream::new(RunId::generate(), false, &limits(3, 100));
        for step in 0..10 {
            stream.publish("values", &json!(step));
        }
        let mut late = stream.subscribe(None);
        stream.end();
        assert_eq!(ids(&drain(&mut late).await), [1, 8, 9, 10]);
        assert_eq!(
            ids(&drain(&mut stream.subscribe(Some(2))).await),
            [1, 8, 9, 10]
        );
        let resumable = RunStream::new(RunId::generate(), true, &limits(3, 100));
        for step in 0..10 {
            resumable.publish("values", &json!(step));
        }
        resumable.end();
        assert!(drain(&mut resumable.subscribe(Some(u64::MAX)))
            .await
            .is_empty());
        let mut gap = resumable.subscribe(Some(2));
        let items = drain(&mut gap).await;
        assert!(matches!(items[0], Item::Gap { oldest: 8 }));
        assert_eq!(ids(&items), [8, 9, 10]);
    }

    #[tokio::test]
    async fn a_stalled_subscriber_is_cut_off_without_slowing_the_others() {
        let stream = RunStream::new(RunId::generate(), false, &limits(10, 4));
        let mut stalled = stream.subscribe(None);
        let mut reader = stream.subscribe(None);
        let mut read = vec![];
        for step in 0..20 {
            stream.publish("values", &json!(step));
            match reader.next().await {
                Some(Item::Event(event)) => read.push(event.id),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        stream.end();
        assert_eq!(read, (1..=20).collect::<Vec<_>>());
        let items = drain(&mut stalled).await;
        assert_eq!(ids(&items), [1, 2, 3, 4]);
        assert!(matches!(items.last(), Some(Item::CutOff)));
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn a_buffer_keeps_its_bytes_within_its_limit_and_a_reconnect_past_them_gets_a_gap() {
        let limits = StreamLimits {
            resumable_bytes: 4096,
            ..limits(10_000, 100)
        };
        let stream = RunStream::new(RunId::generate(), true, &limits);
        let big = "x".repeat(1000);
        for step in 0..20 {
            stream.publish("values", &json!({ "step": step, "padding": big }));
        }
        assert!(
            stream.buffered_bytes() <= 4096,
            "{}",
            stream.buffered_bytes()
        );
        stream.end();
        let items = drain(&mut stream.subscribe(Some(0))).await;
        let Item::Gap { oldest } = items[0] else {
            panic!("expected a gap first, got {:?}", items[0]);
        };
        assert!(oldest > 1);
        assert_eq!(ids(&items), (oldest..=20).collect::<Vec<_>>());
    }

    #[test]
    fn streams_sharing_a_budget_hold_no_more_than_it_together() {
        let limits = limits(10_000, 100);
        let budget = Arc::new(Budget::new(10_000));
        let streams: Vec<RunStream> = (0..4)
            .map(|_| RunStream::with_budget(RunId::generate(), true, &limits, budget.clone()))
            .collect();
        let big = "x".repeat(1000);
        for step in 0..50 {
            for stream in &streams {
                stream.publish("values", &json!({ "step": step, "padding": big }));
            }
        }
        assert!(budget.used() <= 10_000, "{}", budget.used());
        let held: usize = streams.iter().map(RunStream::buffered_bytes).sum();
        assert_eq!(held, budget.used());
        drop(streams);
        assert_eq!(budget.used(), 0);
    }
}
