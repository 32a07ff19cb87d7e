//! The pure core of a thread actor: which runs of the thread are in flight (the active run, runs
//! whose end waits for the database, the FIFO queue of pending runs), what a new run's
//! multitask strategy does to them, the order runs start in, and what a restart recovers.
//! No IO and no actix here: the actor carries out what this decides, and the unit tests below
//! pin every strategy and the queue order.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::domain::ids::RunId;
use crate::domain::multitask::{decide, CancelAction, Decision, MultitaskStrategy};
use crate::domain::run::{Run, RunError, RunStatus};
use crate::domain::time::Timestamp;
use crate::storage::Unavailable;

/// The run executing now, with `A`, the handle that can stop it (the run actor's address).
#[derive(Debug)]
pub struct ActiveRun<A> {
    pub run_id: RunId,
    /// Its attempt: the end report of an older attempt is ignored.
    pub attempt: u32,
    pub handle: A,
    pub started: Instant,
}

/// What a new run does, by its multitask strategy and the runs in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Refused (409); nothing is written.
    Reject,
    /// Inserted and queued; `stop` names the runs in flight to stop first, and how.
    Admit {
        stop: Option<(CancelAction, Vec<RunId>)>,
    },
}

/// What the actor should do next about its queue.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Nothing can start: a run is active, an end waits for the database, or the server drains.
    Busy,
    /// The queue is empty.
    Idle,
    /// The first queued run is due after this long.
    Wait(Duration),
    /// Start `attempt` of this run (`recovered`: a crash left it running; it continues from its
    /// checkpoint).
    Start {
        run: Box<Run>,
        attempt: u32,
        recovered: bool,
    },
}

/// A pending run with how many times it was started before (a crash, a shutdown).
#[derive(Debug)]
struct Queued {
    run: Run,
    attempts: u32,
    /// A crash left it `running`: it continues from its last checkpoint when it starts.
    recovered: bool,
}

/// The runs of one thread that are in flight, and their order.
#[derive(Debug)]
pub struct RunQueue<A> {
    active: Option<ActiveRun<A>>,
    /// Pending runs in start order (`created_at`, then id).
    pending: Vec<Queued>,
    /// Runs that ended while the database could not take their end (disk full, foreign lock):
    /// still in flight in storage until the end is written.
    stalled: Vec<(RunId, Unavailable)>,
    /// In-flight stateless runs whose thread is deleted when they end.
    temporary: HashSet<RunId>,
    /// The creation time given to the last run submitted: the next one gets a later one.
    last_stamp: Option<Timestamp>,
}

impl<A> Default for RunQueue<A> {
    fn default() -> Self {
        Self {
            active: None,
            pending: Vec::new(),
            stalled: Vec::new(),
            temporary: HashSet::new(),
            last_stamp: None,
        }
    }
}

impl<A> RunQueue<A> {
    /// Pending and running runs: the active one first, then stalled ends, then the queue.
    pub fn in_flight(&self) -> Vec<RunId> {
        self.active
            .iter()
            .map(|active| active.run_id)
            .chain(self.stalled.iter().map(|(run_id, _)| *run_id))
            .chain(self.pending.iter().map(|queued| queued.run.run_id))
            .collect()
    }

    /// Whether `run_id` is in flight.
    pub fn is_in_flight(&self, run_id: RunId) -> bool {
        self.in_flight().contains(&run_id)
    }

    /// A run executes, or a run's end waits for the database.
    pub fn is_executing(&self) -> bool {
        self.active.is_some() || !self.stalled.is_empty()
    }

    /// Nothing in flight and nothing queued.
    pub fn is_quiet(&self) -> bool {
        self.active.is_none() && self.stalled.is_empty() && self.pending.is_empty()
    }

    /// What a new run with `strategy` does to the runs in flight (`domain::multitask::decide`).
    pub fn admit(&self, strategy: MultitaskStrategy) -> Admission {
        let in_flight = self.in_flight();
        match decide(strategy, in_flight.len()) {
            Decision::Reject => Admission::Reject,
            Decision::Start | Decision::Enqueue => Admission::Admit { stop: None },
            Decision::InterruptInFlight => Admission::Admit {
                stop: Some((CancelAction::Interrupt, in_flight)),
            },
            Decision::RollbackInFlight => Admission::Admit {
                stop: Some((CancelAction::Rollback, in_flight)),
            },
        }
    }

    /// The creation time of a run submitted at `now`: later than any before it on this thread
    /// (so runs queue in the order the actor received them), plus its `after_seconds`
    /// (`fallback` if that is out of range).
    pub fn stamp(&mut self, now: Timestamp, after_seconds: f64, fallback: Timestamp) -> Timestamp {
        let mut now = now;
        if let Some(last) = self.last_stamp.filter(|last| now <= *last) {
            now = last.plus_seconds(0.000_001).unwrap_or(last);
        }
        self.last_stamp = Some(now);
        now.plus_seconds(after_seconds).unwrap_or(fallback)
    }

    /// Queues a new pending run in start order.
    pub fn enqueue(&mut self, run: Run) {
        if run.kwargs.temporary {
            self.temporary.insert(run.run_id);
        }
        let position = self.pending.partition_point(|queued| {
            (queued.run.created_at, queued.run.run_id) <= (run.created_at, run.run_id)
        });
        self.pending.insert(
            position,
            Queued {
                run,
                attempts: 0,
                recovered: false,
            },
        );
    }

    /// Forgets runs that storage has stopped or deleted (queued ones leave the queue).
    /// Returns whether one of them was a stateless run whose thread is to be deleted.
    pub fn forget(&mut self, run_ids: &[RunId]) -> bool {
        self.pending
            .retain(|queued| !run_ids.contains(&queued.run.run_id));
        let temporary_before = self.temporary.len();
        self.temporary.retain(|run_id| !run_ids.contains(run_id));
        self.temporary.len() < temporary_before
    }

    /// Forgets everything (the thread is deleted).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.temporary.clear();
    }

    /// What to do next at `now`; takes the first queued run off the queue when it may start.
    pub fn next(&mut self, now: Timestamp, draining: bool) -> Next {
        if self.active.is_some() || !self.stalled.is_empty() || draining {
            return Next::Busy;
        }
        let Some(first) = self.pending.first() else {
            return Next::Idle;
        };
        let delay = first.run.created_at.after(now);
        if !delay.is_zero() {
            return Next::Wait(delay);
        }
        let Queued {
            run,
            attempts,
            recovered,
        } = self.pending.remove(0);
        Next::Start {
            run: Box::new(run),
            attempt: attempts + 1,
            recovered,
        }
    }

    /// The run now executing.
    pub fn set_active(&mut self, active: ActiveRun<A>) {
        self.active = Some(active);
    }

    /// The executing run, if any.
    pub fn active(&self) -> Option<&ActiveRun<A>> {
        self.active.as_ref()
    }

    /// Whether `run_id` in `attempt` is the executing run.
    pub fn is_active(&self, run_id: RunId, attempt: u32) -> bool {
        self.active
            .as_ref()
            .is_some_and(|active| active.run_id == run_id && active.attempt == attempt)
    }

    /// Takes the executing run (it is being stopped, or it ended).
    pub fn take_active(&mut self) -> Option<ActiveRun<A>> {
        self.active.take()
    }

    /// A run's end waits for the database.
    pub fn stall(&mut self, run_id: RunId, cause: Unavailable) {
        self.stalled.push((run_id, cause));
    }

    /// The stalled end of `run_id` was written (or failed for good); false if it was not stalled
    /// (the actor restarted since and rebuilt from storage).
    pub fn unstall(&mut self, run_id: RunId) -> bool {
        let before = self.stalled.len();
        self.stalled.retain(|(stalled, _)| *stalled != run_id);
        self.stalled.len() < before
    }

    /// The first run whose end waits for the database, and why.
    pub fn first_stall(&self) -> Option<(RunId, Unavailable)> {
        self.stalled.first().copied()
    }

    /// Whether other runs remain in flight besides the active one (the thread stays busy).
    pub fn others_in_flight(&self) -> bool {
        !self.pending.is_empty() || !self.stalled.is_empty()
    }

    /// Removes `run_id` from the stateless runs; true if it was one.
    pub fn take_temporary(&mut self, run_id: RunId) -> bool {
        self.temporary.remove(&run_id)
    }

    /// The runs a restart found running and that have not started again (a shutdown puts them
    /// back to pending).
    pub fn recovered_runs(&self) -> Vec<RunId> {
        self.pending
            .iter()
            .filter(|queued| queued.recovered)
            .map(|queued| queued.run.run_id)
            .collect()
    }

    /// Rebuilds the queue from storage's in-flight runs (start order, with their attempts): a run
    /// left `running` goes first and continues from its checkpoint, unless `gives_up` says why
    /// it must not (the settings, or too many attempts). Returns those to fail.
    pub fn rebuild(
        &mut self,
        runs: Vec<(Run, u32)>,
        gives_up: impl Fn(&Run, u32) -> Option<RunError>,
    ) -> Vec<(RunId, RunError)> {
        self.reset();
        let mut failed = Vec::new();
        let mut resumed = Vec::new();
        for (run, attempts) in runs {
            if run.kwargs.temporary {
                self.temporary.insert(run.run_id);
            }
            let recovered = run.status == RunStatus::Running;
            if !recovered {
                self.pending.push(Queued {
                    run,
                    attempts,
                    recovered,
                });
            } else if let Some(error) = gives_up(&run, attempts) {
                failed.push((run.run_id, error));
            } else {
                resumed.push(Queued {
                    run,
                    attempts,
                    recovered,
                });
            }
        }
        // A run left running started before every pending one: it goes first.
        self.pending.splice(0..0, resumed);
        failed
    }

    /// How many queued runs continue a run a crash left running.
    pub fn recovered_count(&self) -> usize {
        self.pending
            .iter()
            .filter(|queued| queued.recovered)
            .count()
    }

    /// How many runs are queued.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Forgets everything but the stamp (the actor restarts and rebuilds from storage).
    pub fn reset(&mut self) {
        self.active = None;
        self.pending.clear();
        self.stalled.clear();
        self.temporary.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{AssistantId, ThreadId};
    use MultitaskStrategy as S;

    fn run_at(thread_id: ThreadId, created_at: Timestamp, status: RunStatus) -> Run {
        Run {
            run_id: RunId::generate(),
            thread_id,
            assistant_id: AssistantId::for_graph("echo"),
            graph_id: "echo".into(),
            metadata: Default::default(),
            status,
            kwargs: serde_json::from_value(serde_json::json!({
                "input": {}, "command": null, "config": {}, "context": {},
                "stream_mode": ["values"], "interrupt_before": null, "interrupt_after": null,
                "webhook": null, "feedback_keys": null, "temporary": false, "subgraphs": false,
                "resumable": false, "checkpoint_during": true, "durability": "async"
            }))
            .unwrap(),
            multitask_strategy: S::Enqueue,
            created_at,
            updated_at: created_at,
        }
    }

    fn pending(queue: &mut RunQueue<()>, created_at: Timestamp) -> RunId {
        let run = run_at(ThreadId::generate(), created_at, RunStatus::Pending);
        let run_id = run.run_id;
        queue.enqueue(run);
        run_id
    }

    fn activate(queue: &mut RunQueue<()>) -> RunId {
        let now = Timestamp::now();
        pending(queue, now);
        let Next::Start { run, .. } = queue.next(now, false) else {
            panic!("the run is due");
        };
        queue.set_active(ActiveRun {
            run_id: run.run_id,
            attempt: 1,
            handle: (),
            started: Instant::now(),
        });
        run.run_id
    }

    #[test]
    fn every_strategy_admits_a_run_on_an_idle_thread_without_stopping_anything() {
        let queue = RunQueue::<()>::default();
        for strategy in [S::Reject, S::Enqueue, S::Interrupt, S::Rollback] {
            assert_eq!(
                queue.admit(strategy),
                Admission::Admit { stop: None },
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn reject_refuses_and_enqueue_queues_behind_the_runs_in_flight() {
        let mut queue = RunQueue::<()>::default();
        activate(&mut queue);
        assert_eq!(queue.admit(S::Reject), Admission::Reject);
        assert_eq!(queue.admit(S::Enqueue), Admission::Admit { stop: None });
    }

    #[test]
    fn interrupt_and_rollback_stop_every_run_in_flight_active_first() {
        let mut queue = RunQueue::<()>::default();
        let active = activate(&mut queue);
        let now = Timestamp::now();
        let queued = pending(&mut queue, now);
        let stalled = RunId::generate();
        queue.stall(stalled, Unavailable::Full);
        let everything = vec![active, stalled, queued];
        assert_eq!(
            queue.admit(S::Interrupt),
            Admission::Admit {
                stop: Some((CancelAction::Interrupt, everything.clone()))
            }
        );
        assert_eq!(
            queue.admit(S::Rollback),
            Admission::Admit {
                stop: Some((CancelAction::Rollback, everything))
            }
        );
    }

    #[test]
    fn a_stalled_end_counts_as_in_flight_and_keeps_the_queue_from_starting() {
        let mut queue = RunQueue::<()>::default();
        let run_id = RunId::generate();
        queue.stall(run_id, Unavailable::Locked);
        pending(&mut queue, Timestamp::now());
        assert_eq!(queue.admit(S::Reject), Admission::Reject);
        assert_eq!(queue.next(Timestamp::now(), false), Next::Busy);
        assert_eq!(queue.first_stall(), Some((run_id, Unavailable::Locked)));
        assert!(queue.unstall(run_id));
        assert!(!queue.unstall(run_id));
        assert!(matches!(
            queue.next(Timestamp::now(), false),
            Next::Start { .. }
        ));
    }

    #[test]
    fn runs_start_in_creation_order_whatever_order_they_were_queued_in() {
        let mut queue = RunQueue::<()>::default();
        let base = Timestamp::now();
        let later = base.plus_seconds(0.002).unwrap();
        let second = pending(&mut queue, later);
        let first = pending(&mut queue, base);
        let mut started = Vec::new();
        let now = later.plus_seconds(1.0).unwrap();
        while let Next::Start { run, .. } = queue.next(now, false) {
            started.push(run.run_id);
        }
        assert_eq!(started, [first, second]);
        assert_eq!(queue.next(now, false), Next::Idle);
    }

    #[test]
    fn a_run_not_yet_due_is_waited_for_and_nothing_starts_while_one_is_active_or_draining() {
        let mut queue = RunQueue::<()>::default();
        let now = Timestamp::now();
        pending(&mut queue, now.plus_seconds(5.0).unwrap());
        assert_eq!(queue.next(now, false), Next::Wait(Duration::from_secs(5)));
        assert_eq!(queue.next(now, true), Next::Busy);
        let mut busy = RunQueue::<()>::default();
        activate(&mut busy);
        pending(&mut busy, now);
        assert_eq!(busy.next(now, false), Next::Busy);
        let active = busy.take_active().unwrap();
        assert!(!busy.is_active(active.run_id, active.attempt));
        assert!(matches!(busy.next(now, false), Next::Start { .. }));
    }

    #[test]
    fn stamps_increase_in_submission_order_even_within_one_clock_tick() {
        let mut queue = RunQueue::<()>::default();
        let now = Timestamp::now();
        let first = queue.stamp(now, 0.0, now);
        let second = queue.stamp(now, 0.0, now);
        assert!(second > first);
        let delayed = queue.stamp(now, 10.0, now);
        assert_eq!(delayed.after(now).as_secs(), 10);
    }

    #[test]
    fn forgetting_a_stateless_run_says_its_thread_is_to_be_deleted() {
        let mut queue = RunQueue::<()>::default();
        let mut run = run_at(ThreadId::generate(), Timestamp::now(), RunStatus::Pending);
        run.kwargs.temporary = true;
        let run_id = run.run_id;
        queue.enqueue(run);
        let other = pending(&mut queue, Timestamp::now());
        assert!(!queue.forget(&[other]));
        assert!(queue.forget(&[run_id]));
        assert!(queue.is_quiet());
    }

    #[test]
    fn a_rebuild_puts_runs_left_running_first_and_fails_those_it_gives_up_on() {
        let mut queue = RunQueue::<()>::default();
        let thread_id = ThreadId::generate();
        let now = Timestamp::now();
        let waiting = run_at(thread_id, now, RunStatus::Pending);
        let resumed = run_at(
            thread_id,
            now.plus_seconds(1.0).unwrap(),
            RunStatus::Running,
        );
        let exhausted = run_at(
            thread_id,
            now.plus_seconds(2.0).unwrap(),
            RunStatus::Running,
        );
        let ids = (waiting.run_id, resumed.run_id, exhausted.run_id);
        let failed = queue.rebuild(
            vec![(waiting, 0), (resumed, 1), (exhausted, 3)],
            |_, attempts| (attempts >= 3).then(|| RunError::new("RuntimeError", "too many")),
        );
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, ids.2);
        assert_eq!(queue.recovered_count(), 1);
        let later = now.plus_seconds(5.0).unwrap();
        let order: Vec<(RunId, u32, bool)> =
            std::iter::from_fn(|| match queue.next(later, false) {
                Next::Start {
                    run,
                    attempt,
                    recovered,
                } => Some((run.run_id, attempt, recovered)),
                _ => None,
            })
            .collect();
        assert_eq!(order, [(ids.1, 2, true), (ids.0, 1, false)]);
    }
}
