//! ThreadActor: the serialisation point of one thread. Every command that changes the thread
//! (submit, cancel, delete a run, delete the thread, update the state, and a run's end) is
//! handled here one at a time, each handler atomic (no other message is handled until its
//! writes are committed), so "what is in flight and what happens to a new run" is decided
//! without races. It owns the active RunActor, the FIFO queue of pending runs and the clients
//! waiting for runs to end. Started by the ThreadRegistry under a Supervisor; on (re)start it
//! rebuilds its queue from SQLite.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::{self, wrap_future, LocalBoxActorFuture};
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler,
    Message, MessageResult, SpawnHandle, Supervised,
};
use serde_json::Value;
use tokio::sync::oneshot;

use super::run::{BeginRun, RunActor, RunLimits, StopRun};
use super::thread_registry::{ForgetThread, Retire, ThreadRegistry};
use super::{with_retries, with_retries_until_unavailable, RunOutcome, ThreadError};
use crate::config::OnRestart;
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{CheckpointId, RunId, ThreadId};
use crate::domain::multitask::{decide, CancelAction, Decision};
use crate::domain::run::{IfNotExists, NewRun, Run, RunError, RunStatus};
use crate::domain::thread::ThreadStatus;
use crate::domain::time::Timestamp;
use crate::domain::{JsonMap, NotFound};
use crate::graph::{emit, executor, GraphRegistry};
use crate::storage::{FinishRun, InsertRun, SharedStore, StorageError, Unavailable};
use crate::stream::{StreamHub, Subscription};

type Step<T> = LocalBoxActorFuture<ThreadActor, T>;

/// Creates a run on this thread, applying its multitask strategy to the runs in flight. Sent by
/// the run-creating HTTP handlers. With `wait`, the reply carries a receiver for the run's outcome.
#[derive(Clone, Message)]
#[rtype(result = "Result<RunAccepted, ThreadError>")]
pub struct SubmitRun {
    pub new_run: NewRun,
    pub wait: bool,
    /// Subscribe to the run's stream before it can start, so no event is missed.
    pub subscribe: bool,
}

/// The reply to `SubmitRun`: the stored run (status `pending`), its outcome and its stream
/// if asked for.
pub struct RunAccepted {
    pub run: Run,
    pub outcome: Option<oneshot::Receiver<RunOutcome>>,
    pub subscription: Option<Subscription>,
}

/// Waits for a run: `Some(receiver)` while it is in flight, `None` when it is not (the caller
/// then reads its stored result). Sent by `/join`. Changes nothing.
#[derive(Clone, Message)]
#[rtype(result = "Result<Option<oneshot::Receiver<RunOutcome>>, ThreadError>")]
pub struct JoinRun {
    pub run_id: RunId,
}

/// Subscribes to a run's stream: while the run is in flight (its stream is ended only by this
/// actor, so the subscription is sure to end), or while a finished run's events are retained.
/// `None` when there is nothing to subscribe to. Sent by the join-stream endpoint.
#[derive(Clone, Message)]
#[rtype(result = "Result<Option<Subscription>, ThreadError>")]
pub struct SubscribeRun {
    pub run_id: RunId,
    pub resumable: bool,
    /// `Last-Event-ID`: replay the events after it.
    pub after: Option<u64>,
}

/// Stops the named runs that are in flight (`interrupt` keeps them as `interrupted`, `rollback`
/// deletes them). Replies with how many were stopped; 0 means none of them was in flight. Sent by
/// the cancel endpoints. Idempotent.
#[derive(Clone, Message)]
#[rtype(result = "Result<usize, ThreadError>")]
pub struct CancelRuns {
    pub run_ids: Vec<RunId>,
    pub action: CancelAction,
    /// Sent because a client went away (`on_disconnect: cancel`): ignored while the server
    /// shuts down, since it is the server that cut the client off.
    pub on_disconnect: bool,
}

/// Deletes a run of any status with its checkpoints, stopping it first if it is active.
/// Sent by `DELETE /threads/{t}/runs/{r}`.
#[derive(Clone, Message)]
#[rtype(result = "Result<(), ThreadError>")]
pub struct DeleteRun {
    pub run_id: RunId,
}

/// Deletes the thread with its runs and checkpoints, stopping its active run first.
/// Sent by `DELETE /threads/{t}`.
#[derive(Clone, Message)]
#[rtype(result = "Result<(), ThreadError>")]
pub struct DeleteThread;

/// Writes a `source: update` checkpoint (409 while runs are in flight). Sent by
/// `POST /threads/{t}/state`; replies with the new checkpoint.
#[derive(Clone, Message)]
#[rtype(result = "Result<Checkpoint, ThreadError>")]
pub struct UpdateState {
    pub values: Option<Value>,
    pub as_node: Option<String>,
    pub checkpoint_id: Option<CheckpointId>,
}

/// How a run's execution ended.
#[derive(Debug)]
pub enum RunEnd {
    /// Finished, possibly stopped at a breakpoint (`next` non-empty).
    Success {
        values: Arc<JsonMap>,
        next: Vec<String>,
    },
    Failed(RunError),
    /// It hit the run time limit (status `timeout`).
    TimedOut(RunError),
    /// Its writes were fenced: storage no longer has it in flight (it was removed without this
    /// actor's doing). Nothing is recorded for it; the thread is settled and moves on.
    Vanished,
}

/// A run's execution ended. Sent by its RunActor (not when it was told to stop); the thread actor
/// records it and starts the next queued run. Ignored for a run that is no longer active.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RunFinished {
    pub run_id: RunId,
    /// The attempt that ended; the report of an older attempt is ignored.
    pub attempt: u32,
    pub end: RunEnd,
}

/// Replies once the thread has no run executing; sent by the registry at shutdown, after it
/// raised the shared `draining` flag (so no run starts any more).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Drain;

/// Stops the executing run, if any, leaving it `running` in storage with its attempt given
/// back, so it resumes at the next start. Sent by the registry when the shutdown grace period
/// is over; replies with the run it stopped.
#[derive(Message)]
#[rtype(result = "Option<RunId>")]
pub struct Halt;

/// Fault injection for tests: the thread actor stops as if it had failed (its supervisor
/// restarts it and it rebuilds from SQLite), or it stops its run's actor as if that had died.
#[doc(hidden)]
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub enum InjectFault {
    ThreadActorDies,
    RunActorDies,
}

/// What the settings tell every thread actor.
#[derive(Clone, Debug)]
pub struct ThreadSettings {
    pub limits: RunLimits,
    pub on_restart: OnRestart,
    pub max_attempts: u32,
    /// An actor with nothing to do for this long retires.
    pub idle: Duration,
    /// Raised at shutdown: no run starts any more.
    pub draining: Arc<AtomicBool>,
}

/// The first queued run's `after_seconds` delay has passed. Sent by the actor to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct StartDue;

/// The background retry of a stalled run end is over. Sent by the actor to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct EndRetried {
    ended: Ended,
    result: Result<ThreadStatus, StorageError>,
}

/// The write that records how a run ended.
#[derive(Clone)]
enum EndWrite {
    /// Its terminal status.
    Finish(FinishRun),
    /// Only the thread's status: the run left nothing to record (its writes were fenced).
    Settle { in_flight_after: bool },
}

/// A run that ended, while its end is being recorded.
struct Ended {
    run_id: RunId,
    started: Option<Instant>,
    status: Option<RunStatus>,
    outcome: RunOutcome,
    write: EndWrite,
}

/// Longest pause between two tries to record a stalled run end.
const STALL_RETRY_MAX: Duration = Duration::from_secs(2);

struct ActiveRun {
    run_id: RunId,
    attempt: u32,
    run_actor: Addr<RunActor>,
    started: Instant,
}

/// The actor of one thread.
pub struct ThreadActor {
    thread_id: ThreadId,
    store: SharedStore,
    graphs: Arc<GraphRegistry>,
    /// The run executing now, if any.
    active: Option<ActiveRun>,
    /// Pending runs in start order (`created_at`, then id).
    queue: Vec<Run>,
    /// Clients waiting for a run's outcome.
    waiters: HashMap<RunId, Vec<oneshot::Sender<RunOutcome>>>,
    /// Wakes the actor when the first queued run is due.
    timer: Option<SpawnHandle>,
    /// Run event streams.
    hub: Arc<StreamHub>,
    /// In-flight stateless runs whose thread is deleted when they end.
    temporary: HashSet<RunId>,
    /// Told when this actor's thread is gone for good, or it retires.
    registry: Addr<ThreadRegistry>,
    settings: Arc<ThreadSettings>,
    /// Runs a crash left `running`, to continue from their last checkpoint when they start.
    recovered: HashSet<RunId>,
    /// Told when no run executes any more (shutdown).
    drained: Vec<oneshot::Sender<()>>,
    /// When the actor last handled a command.
    touched: Instant,
    /// Set once the registry has forgotten this actor: it refuses every command (the sender
    /// asks the registry again) and stops once nobody holds its address.
    retired: bool,
    /// The idle check.
    idle_timer: Option<SpawnHandle>,
    /// The creation time given to the last run submitted: the next one gets a later one.
    last_stamp: Option<Timestamp>,
    /// Runs that ended while the database could not take their end (disk full, locked by
    /// another process): still in flight in storage, retried in the background. Meanwhile
    /// their waiters wait, no run starts, and commands that change the thread get 503.
    stalled: Vec<(RunId, Unavailable)>,
}

impl ThreadActor {
    /// A thread actor; its state is loaded from SQLite when it starts.
    pub fn new(
        thread_id: ThreadId,
        store: SharedStore,
        graphs: Arc<GraphRegistry>,
        hub: Arc<StreamHub>,
        registry: Addr<ThreadRegistry>,
        settings: Arc<ThreadSettings>,
    ) -> Self {
        Self {
            thread_id,
            store,
            graphs,
            active: None,
            queue: Vec::new(),
            waiters: HashMap::new(),
            timer: None,
            hub,
            temporary: HashSet::new(),
            registry,
            settings,
            recovered: HashSet::new(),
            drained: Vec::new(),
            touched: Instant::now(),
            retired: false,
            idle_timer: None,
            last_stamp: None,
            stalled: Vec::new(),
        }
    }

    /// The creation time of a run submitted now: later than any before it on this thread (so
    /// runs queue in the order this actor received them), plus its `after_seconds`.
    fn stamp(&mut self, new_run: &NewRun) -> Timestamp {
        let mut now = Timestamp::now();
        if let Some(last) = self.last_stamp.filter(|last| now <= *last) {
            now = last.plus_seconds(0.000_001).unwrap_or(last);
        }
        self.last_stamp = Some(now);
        now.plus_seconds(new_run.after_seconds)
            .unwrap_or(new_run.created_at)
    }

    /// Notes a command; a retired actor refuses it (the sender asks the registry again, which
    /// starts a fresh actor).
    fn touch(&mut self) -> Result<(), ThreadError> {
        if self.retired {
            return Err(ThreadError::Retired);
        }
        self.touched = Instant::now();
        Ok(())
    }

    /// `touch` for a command that changes the thread: refused with 503 while a run's end
    /// waits for the database, since storage still has that run in flight.
    fn touch_to_change(&mut self) -> Result<(), ThreadError> {
        self.touch()?;
        match self.stalled.first() {
            Some(&(run_id, cause)) => Err(ThreadError::Storage(StorageError::CommitFailed {
                message: format!("the end of run {run_id} on this thread is not recorded yet"),
                unavailable: Some(cause),
            })),
            None => Ok(()),
        }
    }

    /// Checks now and then whether the actor has had nothing to do for the idle time; if so it
    /// asks the registry to forget it and retires.
    fn arm_idle_check(&mut self, ctx: &mut Context<Self>) {
        let idle = self.settings.idle;
        let check = ctx.run_later(idle / 2, move |actor, ctx| {
            actor.idle_timer = None;
            if actor.retired {
                return;
            }
            let quiet = actor.active.is_none()
                && actor.stalled.is_empty()
                && actor.queue.is_empty()
                && actor.waiters.is_empty()
                && actor.timer.is_none();
            if !quiet || actor.touched.elapsed() < idle {
                actor.arm_idle_check(ctx);
                return;
            }
            let retire = actor.registry.send(Retire {
                thread_id: actor.thread_id,
                address: ctx.address(),
            });
            // Nothing else is handled until the registry answers.
            ctx.wait(wrap_future(retire).map(|forgotten, actor: &mut Self, ctx| {
                if forgotten.unwrap_or(false) {
                    log::debug!("thread actor retired thread_id={}", actor.thread_id);
                    actor.retired = true;
                } else {
                    actor.arm_idle_check(ctx);
                }
            }));
        });
        self.idle_timer = Some(check);
    }

    /// No run executes: tell whoever waits for that (shutdown).
    fn notify_drained(&mut self) {
        // A stalled run end counts: its run is still `running` in storage, and the next start
        // would resume it (spending an attempt) if the shutdown did not wait for it.
        if self.active.is_none() && self.stalled.is_empty() {
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Pending and running runs, active first (and runs whose end is not recorded yet).
    fn in_flight(&self) -> Vec<RunId> {
        self.active
            .iter()
            .map(|active| active.run_id)
            .chain(self.stalled.iter().map(|(run_id, _)| *run_id))
            .chain(self.queue.iter().map(|run| run.run_id))
            .collect()
    }

    fn enqueue(&mut self, run: Run) {
        if run.kwargs.temporary {
            self.temporary.insert(run.run_id);
        }
        let position = self.queue.partition_point(|queued| {
            (queued.created_at, queued.run_id) <= (run.created_at, run.run_id)
        });
        self.queue.insert(position, run);
    }

    fn add_waiter(&mut self, run_id: RunId) -> oneshot::Receiver<RunOutcome> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.entry(run_id).or_default().push(sender);
        receiver
    }

    /// A run has ended: its stream ends (after an `error` event if it failed) and its waiters
    /// get the outcome.
    fn resolve(&mut self, run_id: RunId, outcome: RunOutcome) {
        match &outcome {
            RunOutcome::Deleted => self.hub.discard(run_id),
            RunOutcome::Failed(error) => {
                if let Some(stream) = self.hub.get(run_id) {
                    stream.publish("error", &serde_json::json!(error));
                }
                self.hub.finish(run_id);
            }
            RunOutcome::Success(_) | RunOutcome::Interrupted => self.hub.finish(run_id),
        }
        for waiter in self.waiters.remove(&run_id).into_iter().flatten() {
            let _ = waiter.send(outcome.clone());
        }
    }

    /// Stops the active run, if any; resolves once its actor has stopped and will write nothing.
    fn stop_active(&mut self) -> Step<()> {
        match self.active.take() {
            Some(active) => wrap_future(async move {
                // A closed mailbox means it has stopped already, which is all we need.
                let _ = active.run_actor.send(StopRun).await;
            })
            .boxed_local(),
            None => fut::ready(()).boxed_local(),
        }
    }

    /// Forgets runs that storage has just stopped, and tells their waiters.
    /// Returns whether one of them was a stateless run whose thread is to be deleted.
    fn forget_stopped(&mut self, run_ids: &[RunId], action: CancelAction) -> bool {
        self.queue.retain(|run| !run_ids.contains(&run.run_id));
        let temporary_before = self.temporary.len();
        self.temporary.retain(|run_id| !run_ids.contains(run_id));
        let stopped_temporary = self.temporary.len() < temporary_before;
        for run_id in run_ids {
            let (outcome, verb) = match action {
                CancelAction::Interrupt => (RunOutcome::Interrupted, "interrupted"),
                CancelAction::Rollback => (RunOutcome::Deleted, "rolled back"),
            };
            log::info!("run {verb} run_id={run_id} thread_id={}", self.thread_id);
            self.resolve(*run_id, outcome);
        }
        stopped_temporary
    }

    /// After a failed write that followed stopping a run, memory and storage may disagree:
    /// stop, so the supervisor restarts the actor and it rebuilds from SQLite.
    fn rebuild(&mut self, error: &StorageError, ctx: &mut Context<Self>) {
        log::error!(
            "thread actor rebuilds from storage thread_id={} after: {error:#}",
            self.thread_id
        );
        ctx.stop();
    }

    /// Starts the first queued run if none is active and it is due; otherwise arms the timer.
    fn start_next(&mut self, ctx: &mut Context<Self>) -> Step<()> {
        self.notify_drained();
        if self.active.is_some()
            || !self.stalled.is_empty()
            || self.settings.draining.load(Ordering::SeqCst)
        {
            return fut::ready(()).boxed_local();
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let Some(first) = self.queue.first() else {
            return fut::ready(()).boxed_local();
        };
        let delay = first.created_at.until();
        if !delay.is_zero() {
            self.timer = Some(ctx.run_later(delay, |_, ctx| ctx.notify(StartDue)));
            return fut::ready(()).boxed_local();
        }
        let run = self.queue.remove(0);
        let run_id = run.run_id;
        let graph_id = run.graph_id.clone();
        let Some(graph) = self.graphs.get(&graph_id) else {
            let error = RunError::new(
                "ValueError",
                format!("Graph '{graph_id}' is not configured on this server"),
            );
            self.hub
                .open(run_id, run.kwargs.resumable)
                .publish("metadata", &emit::metadata_event(run_id));
            return self.record_end(run_id, None, RunEnd::Failed(error));
        };
        let stream = self.hub.open(run_id, run.kwargs.resumable);
        let limits = self.settings.limits;
        let run_actor = RunActor::new(
            run,
            graph,
            self.store.clone(),
            ctx.address(),
            stream,
            limits,
        )
        .start();
        let recovered = self.recovered.remove(&run_id);
        let begin = run_actor.send(BeginRun { recovered });
        wrap_future(begin)
            .then(move |reply, actor: &mut Self, _| match reply {
                Ok(Ok(attempt)) => {
                    log::info!(
                        "run started run_id={run_id} thread_id={} graph_id={graph_id} attempt={attempt}",
                        actor.thread_id
                    );
                    actor.active = Some(ActiveRun {
                        run_id,
                        attempt,
                        run_actor,
                        started: Instant::now(),
                    });
                    fut::ready(()).boxed_local()
                }
                Ok(Err(error)) => actor.record_end(run_id, None, RunEnd::Failed(error)),
                Err(mailbox) => {
                    let error = RunError::new(
                        "RuntimeError",
                        format!("the run actor did not start: {mailbox}"),
                    );
                    actor.record_end(run_id, None, RunEnd::Failed(error))
                }
            })
            .boxed_local()
    }

    /// Writes a run's terminal status, settles the thread, tells waiters, starts the next run.
    fn record_end(&mut self, run_id: RunId, started: Option<Instant>, end: RunEnd) -> Step<()> {
        let (status, error, outcome) = match end {
            RunEnd::Success { values, .. } => {
                (Some(RunStatus::Success), None, RunOutcome::Success(values))
            }
            RunEnd::Failed(error) => (
                Some(RunStatus::Error),
                Some(error.clone()),
                RunOutcome::Failed(error),
            ),
            RunEnd::TimedOut(error) => (
                Some(RunStatus::Timeout),
                Some(error.clone()),
                RunOutcome::Failed(error),
            ),
            RunEnd::Vanished => (None, None, RunOutcome::Interrupted),
        };
        let in_flight_after = !self.queue.is_empty() || !self.stalled.is_empty();
        let write = match status {
            Some(status) => EndWrite::Finish(FinishRun {
                thread_id: self.thread_id,
                run_id,
                status,
                error,
                in_flight_after,
            }),
            None => EndWrite::Settle { in_flight_after },
        };
        let ended = Ended {
            run_id,
            started,
            status,
            outcome,
            write,
        };
        let (store, thread_id, write) = (self.store.clone(), self.thread_id, ended.write.clone());
        let recorded = async move {
            with_retries_until_unavailable("record run end", || {
                record_end(store.clone(), thread_id, write.clone())
            })
            .await
        };
        wrap_future(recorded)
            .then(move |result, actor: &mut Self, ctx| actor.end_recorded(ended, result, ctx))
            .boxed_local()
    }

    /// The write of a run's end is over: tell its waiters and start the next run; or, if the
    /// database cannot take it now, keep retrying in the background (`stall`).
    fn end_recorded(
        &mut self,
        ended: Ended,
        result: Result<ThreadStatus, StorageError>,
        ctx: &mut Context<Self>,
    ) -> Step<()> {
        let run_id = ended.run_id;
        match result {
            Ok(thread_status) => {
                let elapsed_ms = ended
                    .started
                    .map_or(0, |started| started.elapsed().as_millis());
                log::info!(
                    "run finished run_id={run_id} thread_id={} status={} elapsed_ms={elapsed_ms} thread_status={}",
                    self.thread_id,
                    ended.status.map_or("removed", RunStatus::as_str),
                    thread_status.as_str()
                );
                self.resolve(run_id, ended.outcome);
            }
            Err(StorageError::Fenced) => {
                log::debug!("run end ignored: the run is no longer in flight run_id={run_id}");
                self.resolve(run_id, RunOutcome::Interrupted);
            }
            Err(error) => {
                match error.unavailable() {
                    Some(cause) => self.stall(ended, cause, &error, ctx),
                    // Storage still says the run is in flight: rebuild from it once it is
                    // back. Its waiters and stream stay: the rebuilt actor resumes the run,
                    // and its next attempt settles them.
                    None => self.rebuild(&error, ctx),
                }
                return fut::ready(()).boxed_local();
            }
        }
        if self.temporary.remove(&run_id) {
            return self.delete_temporary_thread(ctx);
        }
        self.start_next(ctx)
    }

    /// A run's end could not be recorded because the database cannot take writes for now (a
    /// full disk, a lock held by another process). Rebuilding would not help (the rebuilt actor
    /// would hit the same wall, and spend the run's attempts), and waiting inside a handler would
    /// leave every client of this thread hanging. So the actor stays responsive: the run counts
    /// as in flight, its waiters and stream wait, commands that change the thread get 503, no
    /// other run starts; the write is retried in the background until it lands.
    fn stall(
        &mut self,
        ended: Ended,
        cause: Unavailable,
        error: &StorageError,
        ctx: &mut Context<Self>,
    ) {
        log::warn!(
            "run end not recorded yet, retrying until the database takes writes again run_id={} thread_id={}: {error:#}",
            ended.run_id,
            self.thread_id
        );
        self.stalled.push((ended.run_id, cause));
        let (store, thread_id, write) = (self.store.clone(), self.thread_id, ended.write.clone());
        let retried = async move {
            let mut delay = Duration::from_millis(100);
            loop {
                tokio::time::sleep(delay).await;
                match record_end(store.clone(), thread_id, write.clone()).await {
                    Err(error) if error.is_unavailable() => {
                        delay = (delay * 2).min(STALL_RETRY_MAX);
                    }
                    result => return result,
                }
            }
        };
        // Dropped if the actor restarts: the rebuilt actor reads the run from storage.
        ctx.spawn(wrap_future(retried).map(move |result, _: &mut Self, ctx| {
            ctx.notify(EndRetried { ended, result });
        }));
    }

    /// A stateless run with `on_completion: "delete"` ended: the thread goes with its runs.
    fn delete_temporary_thread(&mut self, ctx: &mut Context<Self>) -> Step<()> {
        if self.active.is_some() || !self.queue.is_empty() || !self.stalled.is_empty() {
            // Someone queued more runs on this thread: it is no longer only the stateless run's.
            return self.start_next(ctx);
        }
        let store = self.store.clone();
        let thread_id = self.thread_id;
        // A full or locked database leaves the thread behind (retention can sweep it) rather
        // than holding every command to it.
        wrap_future(async move {
            with_retries_until_unavailable("delete thread", || store.delete_thread(thread_id)).await
        })
        .map(move |result, actor: &mut Self, _| match result {
            Ok(()) => {
                log::debug!("temporary thread deleted thread_id={}", actor.thread_id);
                // The registry forgets this actor, which stops once the last address to it is
                // dropped. Retired first: a command that still reaches it is refused, and its
                // sender asks the registry again, after it has forgotten this actor.
                actor.retired = true;
                actor.registry.do_send(ForgetThread {
                    thread_id: actor.thread_id,
                });
            }
            Err(error) => log::warn!(
                "temporary thread not deleted thread_id={}: {error:#}",
                actor.thread_id
            ),
        })
        .boxed_local()
    }

    /// Rebuilds the queue from SQLite. A run left `running` has lost its actor (a crash, a
    /// shutdown, or this actor's restart): it continues from its last checkpoint, unless the
    /// settings say to fail it or it has used up its attempts.
    fn recover(&mut self) -> Step<()> {
        let thread_id = self.thread_id;
        let store = self.store.clone();
        wrap_future(async move { with_retries("load runs", || store.in_flight_runs(thread_id)).await })
            .then(move |result, actor: &mut Self, ctx| {
                let runs = match result {
                    Ok(runs) => runs,
                    Err(error) => {
                        // Starting empty would strand the pending runs: stop and be restarted.
                        actor.rebuild(&error, ctx);
                        return fut::ready(Vec::new()).boxed_local();
                    }
                };
                actor.temporary.extend(
                    runs.iter()
                        .filter(|(run, _)| run.kwargs.temporary)
                        .map(|(run, _)| run.run_id),
                );
                let mut failed = Vec::new();
                let mut resumed = Vec::new();
                actor.queue.clear();
                for (run, attempts) in runs {
                    if run.status != RunStatus::Running {
                        actor.queue.push(run);
                    } else if let Some(error) = actor.gives_up(attempts) {
                        log::warn!(
                            "run left running is not resumed run_id={} thread_id={thread_id} attempts={attempts}: {}",
                            run.run_id,
                            error.message
                        );
                        failed.push((run.run_id, error));
                    } else {
                        actor.recovered.insert(run.run_id);
                        resumed.push(run);
                    }
                }
                // A run left running started before every pending one: it goes first.
                let resumed_count = resumed.len();
                actor.queue.splice(0..0, resumed);
                if !actor.queue.is_empty() || !failed.is_empty() {
                    log::info!(
                        "thread recovered thread_id={thread_id} resumed={resumed_count} failed={} pending={}",
                        failed.len(),
                        actor.queue.len() - resumed_count
                    );
                }
                fut::ready(failed).boxed_local()
            })
            .then(|failed: Vec<(RunId, RunError)>, _: &mut Self, _| {
                let mut steps = fut::ready(()).boxed_local();
                for (run_id, error) in failed {
                    steps = steps
                        .then(move |(), actor: &mut Self, _| {
                            actor.record_end(run_id, None, RunEnd::Failed(error))
                        })
                        .boxed_local();
                }
                steps.then(|(), actor: &mut Self, ctx| actor.start_next(ctx)).boxed_local()
            })
            .boxed_local()
    }

    /// Why a run left `running` after `attempts` starts is not continued, if it is not.
    fn gives_up(&self, attempts: u32) -> Option<RunError> {
        if self.settings.on_restart == OnRestart::Error {
            return Some(RunError::new(
                "RuntimeError",
                "the server stopped while this run was running, and runtime.on_restart is \"error\"",
            ));
        }
        (attempts >= self.settings.max_attempts).then(|| {
            RunError::new(
                "RuntimeError",
                format!(
                    "the run was started {attempts} times without finishing (runtime.max_attempts = {}); it is not resumed again",
                    self.settings.max_attempts
                ),
            )
        })
    }
}

impl Actor for ThreadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            // Another actor owns the thread now.
            return;
        }
        log::debug!("thread actor started thread_id={}", self.thread_id);
        let recovery = self.recover();
        ctx.wait(recovery);
        self.arm_idle_check(ctx);
    }
}

impl Supervised for ThreadActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        log::warn!("thread actor restarting thread_id={}", self.thread_id);
        if let Some(active) = self.active.take() {
            active.run_actor.do_send(StopRun);
        }
        self.queue.clear();
        self.timer = None;
        self.idle_timer = None;
        self.temporary.clear();
        self.recovered.clear();
        self.stalled.clear();
    }
}

/// Writes a run's end (or settles the thread); returns the thread's new status.
async fn record_end(
    store: SharedStore,
    thread_id: ThreadId,
    write: EndWrite,
) -> Result<ThreadStatus, StorageError> {
    match write {
        EndWrite::Finish(finish) => store.finish_run(finish).await,
        EndWrite::Settle { in_flight_after } => {
            store.settle_thread(thread_id, in_flight_after).await
        }
    }
}

impl Handler<SubmitRun> for ThreadActor {
    type Result = AtomicResponse<Self, Result<RunAccepted, ThreadError>>;

    fn handle(&mut self, message: SubmitRun, _: &mut Context<Self>) -> Self::Result {
        if let Err(refused) = self.touch_to_change() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused))));
        }
        let SubmitRun {
            mut new_run,
            wait,
            subscribe,
        } = message;
        new_run.created_at = self.stamp(&new_run);
        let in_flight = self.in_flight();
        let decision = decide(new_run.multitask_strategy, in_flight.len());
        log::debug!(
            "multitask decision thread_id={} run_id={} strategy={} in_flight={} decision={decision:?}",
            self.thread_id,
            new_run.run_id,
            new_run.multitask_strategy.as_str(),
            in_flight.len()
        );
        let stop = match decision {
            Decision::Reject => {
                return AtomicResponse::new(Box::pin(fut::ready(Err(ThreadError::Busy))))
            }
            Decision::Start | Decision::Enqueue => None,
            Decision::InterruptInFlight => Some((CancelAction::Interrupt, in_flight)),
            Decision::RollbackInFlight => Some((CancelAction::Rollback, in_flight)),
        };
        let stopping = if stop.is_some() {
            self.stop_active()
        } else {
            fut::ready(()).boxed_local()
        };
        let insert = InsertRun {
            create_thread_metadata: (new_run.if_not_exists == IfNotExists::Create)
                .then(|| new_run.thread_metadata.clone()),
            stop: stop.clone(),
            run: Run {
                run_id: new_run.run_id,
                thread_id: new_run.thread_id,
                assistant_id: new_run.assistant_id,
                graph_id: new_run.graph_id,
                metadata: new_run.metadata,
                status: RunStatus::Pending,
                kwargs: new_run.kwargs,
                multitask_strategy: new_run.multitask_strategy,
                created_at: new_run.created_at,
                updated_at: new_run.created_at,
            },
        };
        let store = self.store.clone();
        let steps = stopping
            .then(move |(), _, _| wrap_future(store.insert_run(insert)))
            .then(move |inserted, actor: &mut Self, ctx| match inserted {
                Err(error) => {
                    if stop
                        .as_ref()
                        .is_some_and(|(_, stopped)| !stopped.is_empty())
                    {
                        actor.rebuild(&error, ctx);
                    }
                    fut::ready(Err(ThreadError::from(error))).boxed_local()
                }
                Ok(run) => {
                    if let Some((action, stopped)) = stop {
                        // A stateless run's thread that gets more runs is no longer temporary.
                        actor.forget_stopped(&stopped, action);
                    }
                    let outcome = wait.then(|| actor.add_waiter(run.run_id));
                    let stream = actor.hub.open(run.run_id, run.kwargs.resumable);
                    let subscription = subscribe.then(|| stream.subscribe(None));
                    actor.enqueue(run.clone());
                    actor
                        .start_next(ctx)
                        .map(move |(), _, _| {
                            Ok(RunAccepted {
                                run,
                                outcome,
                                subscription,
                            })
                        })
                        .boxed_local()
                }
            });
        AtomicResponse::new(Box::pin(steps))
    }
}

impl Handler<JoinRun> for ThreadActor {
    type Result = Result<Option<oneshot::Receiver<RunOutcome>>, ThreadError>;

    fn handle(&mut self, message: JoinRun, _: &mut Context<Self>) -> Self::Result {
        self.touch()?;
        Ok(self
            .in_flight()
            .contains(&message.run_id)
            .then(|| self.add_waiter(message.run_id)))
    }
}

impl Handler<SubscribeRun> for ThreadActor {
    type Result = Result<Option<Subscription>, ThreadError>;

    fn handle(&mut self, message: SubscribeRun, _: &mut Context<Self>) -> Self::Result {
        self.touch()?;
        let stream = if self.in_flight().contains(&message.run_id) {
            Some(self.hub.open(message.run_id, message.resumable))
        } else {
            self.hub.get(message.run_id)
        };
        Ok(stream.map(|stream| stream.subscribe(message.after)))
    }
}

impl Handler<CancelRuns> for ThreadActor {
    type Result = AtomicResponse<Self, Result<usize, ThreadError>>;

    fn handle(&mut self, message: CancelRuns, _: &mut Context<Self>) -> Self::Result {
        if let Err(retired) = self.touch() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(retired))));
        }
        if message.on_disconnect && self.settings.draining.load(Ordering::SeqCst) {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(0))));
        }
        let in_flight = self.in_flight();
        let targets: Vec<RunId> = in_flight
            .iter()
            .copied()
            .filter(|run_id| message.run_ids.contains(run_id))
            .collect();
        if targets.is_empty() {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(0))));
        }
        // Cancelling a run in flight is a change: not while a run's end waits for the database.
        if let Err(refused) = self.touch_to_change() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused))));
        }
        let stops_active = self
            .active
            .as_ref()
            .is_some_and(|active| targets.contains(&active.run_id));
        let stopping = if stops_active {
            self.stop_active()
        } else {
            fut::ready(()).boxed_local()
        };
        let in_flight_after = in_flight.len() > targets.len();
        let stopped = self.store.stop_runs(
            self.thread_id,
            message.action,
            targets.clone(),
            in_flight_after,
        );
        let action = message.action;
        let steps = stopping.then(move |(), _, _| wrap_future(stopped)).then(
            move |result, actor: &mut Self, ctx| match result {
                Ok(count) => {
                    let next = if actor.forget_stopped(&targets, action) {
                        actor.delete_temporary_thread(ctx)
                    } else {
                        actor.start_next(ctx)
                    };
                    next.map(move |(), _, _| Ok(count)).boxed_local()
                }
                Err(error) => {
                    if stops_active {
                        actor.rebuild(&error, ctx);
                    }
                    fut::ready(Err(ThreadError::from(error))).boxed_local()
                }
            },
        );
        AtomicResponse::new(Box::pin(steps))
    }
}

impl Handler<DeleteRun> for ThreadActor {
    type Result = AtomicResponse<Self, Result<(), ThreadError>>;

    fn handle(&mut self, message: DeleteRun, _: &mut Context<Self>) -> Self::Result {
        if let Err(refused) = self.touch_to_change() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused))));
        }
        let run_id = message.run_id;
        let in_flight = self.in_flight();
        let is_active = self
            .active
            .as_ref()
            .is_some_and(|active| active.run_id == run_id);
        let stopping = if is_active {
            self.stop_active()
        } else {
            fut::ready(()).boxed_local()
        };
        let in_flight_after = in_flight.iter().any(|other| *other != run_id);
        let deleted = self
            .store
            .delete_run(self.thread_id, run_id, in_flight_after);
        let steps = stopping.then(move |(), _, _| wrap_future(deleted)).then(
            move |result, actor: &mut Self, ctx| match result {
                Ok(()) => {
                    actor.queue.retain(|run| run.run_id != run_id);
                    log::info!("run deleted run_id={run_id} thread_id={}", actor.thread_id);
                    actor.resolve(run_id, RunOutcome::Deleted);
                    let next = if actor.temporary.remove(&run_id) {
                        actor.delete_temporary_thread(ctx)
                    } else {
                        actor.start_next(ctx)
                    };
                    next.map(|(), _, _| Ok(())).boxed_local()
                }
                Err(error) => {
                    if is_active {
                        actor.rebuild(&error, ctx);
                    }
                    fut::ready(Err(ThreadError::from(error))).boxed_local()
                }
            },
        );
        AtomicResponse::new(Box::pin(steps))
    }
}

impl Handler<DeleteThread> for ThreadActor {
    type Result = AtomicResponse<Self, Result<(), ThreadError>>;

    fn handle(&mut self, _: DeleteThread, _: &mut Context<Self>) -> Self::Result {
        if let Err(refused) = self.touch_to_change() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused))));
        }
        let had_active = self.active.is_some();
        let in_flight = self.in_flight();
        let stopping = self.stop_active();
        let deleted = self.store.delete_thread(self.thread_id);
        let steps = stopping.then(move |(), _, _| wrap_future(deleted)).map(
            move |result, actor: &mut Self, ctx| match result {
                Ok(()) => {
                    if let Some(timer) = actor.timer.take() {
                        ctx.cancel_future(timer);
                    }
                    actor.queue.clear();
                    let waiting = actor.waiters.keys().copied().collect::<Vec<_>>();
                    for run_id in in_flight.into_iter().chain(waiting) {
                        actor.resolve(run_id, RunOutcome::Deleted);
                    }
                    actor.temporary.clear();
                    log::info!("thread deleted thread_id={}", actor.thread_id);
                    Ok(())
                }
                Err(error) => {
                    if had_active {
                        actor.rebuild(&error, ctx);
                    }
                    Err(ThreadError::from(error))
                }
            },
        );
        AtomicResponse::new(Box::pin(steps))
    }
}

impl Handler<UpdateState> for ThreadActor {
    type Result = AtomicResponse<Self, Result<Checkpoint, ThreadError>>;

    fn handle(&mut self, message: UpdateState, _: &mut Context<Self>) -> Self::Result {
        if let Err(refused) = self.touch_to_change() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused))));
        }
        let thread_id = self.thread_id;
        let in_flight = self.in_flight();
        if !in_flight.is_empty() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(ThreadError::InFlight {
                thread_id,
                runs: in_flight,
            }))));
        }
        let store = self.store.clone();
        let checkpoint_id = message.checkpoint_id;
        let reads = async move {
            let thread = store.get_thread(thread_id).await?;
            let base = match checkpoint_id {
                Some(checkpoint_id) => Some(
                    store
                        .checkpoint(thread_id, String::new(), checkpoint_id)
                        .await?
                        .ok_or(StorageError::NotFound(NotFound::Checkpoint(checkpoint_id)))?,
                ),
                None => store.head(thread_id).await?,
            };
            Ok::<_, StorageError>((thread, base))
        };
        let steps = wrap_future(reads).then(move |result, actor: &mut Self, _| {
            let prepared = result
                .map_err(ThreadError::from)
                .and_then(|(thread, base)| {
                    let graph_id = thread
                        .metadata
                        .get("graph_id")
                        .and_then(Value::as_str)
                        .ok_or(ThreadError::NoGraph(thread_id))?;
                    let graph = actor
                        .graphs
                        .get(graph_id)
                        .ok_or_else(|| ThreadError::GraphNotServed(graph_id.to_owned()))?;
                    executor::update_state(
                        &graph,
                        thread_id,
                        base.as_ref(),
                        message.values.as_ref(),
                        message.as_node.as_deref(),
                    )
                    .map_err(ThreadError::InvalidUpdate)
                });
            match prepared {
                Err(error) => fut::ready(Err(error)).boxed_local(),
                Ok(checkpoint) => wrap_future(actor.store.update_state(checkpoint.clone()))
                    .map(move |written, _, _| {
                        written.map_err(ThreadError::from)?;
                        log::info!(
                            "state updated thread_id={thread_id} checkpoint_id={}",
                            checkpoint.checkpoint_id
                        );
                        Ok(checkpoint)
                    })
                    .boxed_local(),
            }
        });
        AtomicResponse::new(Box::pin(steps))
    }
}

impl Handler<RunFinished> for ThreadActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, message: RunFinished, _: &mut Context<Self>) -> Self::Result {
        let is_active = self.active.as_ref().is_some_and(|active| {
            active.run_id == message.run_id && active.attempt == message.attempt
        });
        if !is_active {
            log::debug!(
                "end of a run attempt that is no longer active ignored run_id={} attempt={}",
                message.run_id,
                message.attempt
            );
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let started = self.active.take().map(|active| active.started);
        AtomicResponse::new(self.record_end(message.run_id, started, message.end))
    }
}

impl Handler<EndRetried> for ThreadActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, message: EndRetried, ctx: &mut Context<Self>) -> Self::Result {
        let run_id = message.ended.run_id;
        let before = self.stalled.len();
        self.stalled.retain(|(stalled, _)| *stalled != run_id);
        if self.stalled.len() == before {
            // The actor restarted since, and rebuilt from storage.
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        if message.result.is_ok() {
            log::info!(
                "run end recorded once the database took writes again run_id={run_id} thread_id={}",
                self.thread_id
            );
        }
        AtomicResponse::new(self.end_recorded(message.ended, message.result, ctx))
    }
}

impl Handler<StartDue> for ThreadActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: StartDue, ctx: &mut Context<Self>) -> Self::Result {
        self.timer = None;
        AtomicResponse::new(self.start_next(ctx))
    }
}

impl Handler<Drain> for ThreadActor {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        let (sender, receiver) = oneshot::channel();
        self.drained.push(sender);
        self.notify_drained();
        MessageResult(receiver)
    }
}

impl Handler<Halt> for ThreadActor {
    type Result = AtomicResponse<Self, Option<RunId>>;

    fn handle(&mut self, _: Halt, _: &mut Context<Self>) -> Self::Result {
        // Runs a restart of this actor found running and that the drain kept from starting
        // did not fail either: they go back to pending too.
        let mut released: Vec<RunId> = self.recovered.drain().collect();
        let Some(active) = self.active.as_ref() else {
            return AtomicResponse::new(Box::pin(self.release(released).map(|_, _, _| None)));
        };
        let (run_id, run_actor) = (active.run_id, active.run_actor.clone());
        let steps =
            wrap_future(run_actor.send(StopRun)).then(move |stopped, actor: &mut Self, _| {
                // A closed mailbox means the run ended on its own just now: its `RunFinished` is
                // in this actor's mailbox and records the end; it is not released.
                let halted = stopped.is_ok();
                if halted {
                    actor.active = None;
                    released.push(run_id);
                }
                actor
                    .release(released)
                    .map(move |_, _, _| halted.then_some(run_id))
            });
        AtomicResponse::new(Box::pin(steps))
    }
}

impl ThreadActor {
    /// Puts runs stopped by the shutdown back to pending, to continue at the next start. Their
    /// waiters and streams are left as they are: the server closes those connections as it
    /// stops, so no client mistakes a stopped run for a finished one.
    fn release(&mut self, run_ids: Vec<RunId>) -> Step<()> {
        let store = self.store.clone();
        let thread_id = self.thread_id;
        wrap_future(async move {
            for run_id in run_ids {
                match with_retries("release run", || store.release_run(run_id)).await {
                    Ok(()) => log::info!(
                        "run stopped by the shutdown; it continues at the next start run_id={run_id} thread_id={thread_id}"
                    ),
                    Err(error) => log::warn!(
                        "run stopped by the shutdown, not put back to pending run_id={run_id}: {error:#}"
                    ),
                }
            }
        })
        .map(|(), actor: &mut Self, _| actor.notify_drained())
        .boxed_local()
    }
}

impl Handler<InjectFault> for ThreadActor {
    type Result = ();

    fn handle(&mut self, fault: InjectFault, ctx: &mut Context<Self>) {
        log::warn!(
            "fault injected thread_id={} fault={fault:?}",
            self.thread_id
        );
        match fault {
            InjectFault::ThreadActorDies => ctx.stop(),
            InjectFault::RunActorDies => {
                if let Some(active) = &self.active {
                    active.run_actor.do_send(super::run::Die);
                }
            }
        }
    }
}
