//! A run's life on its thread: starting the next queued run in a run actor, stopping the active
//! one, and recording how a run ended (its terminal status, its waiters and stream told, the
//! next run started). A run end the database cannot take now stalls the thread instead of
//! blocking it: the write is retried in the background (`stall`, `EndRetried`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::fut::{self, wrap_future};
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Message,
};

use super::actor::{Step, ThreadActor};
use super::queue::{ActiveRun, Next};
use crate::actors::protocol::{BeginRun, ForgetThread, RunEnd, RunFinished, RunOutcome, StopRun};
use crate::actors::retry::with_retries_until_unavailable;
use crate::actors::run::RunActor;
use crate::domain::ids::{RunId, ThreadId};
use crate::domain::run::{RunError, RunStatus};
use crate::domain::thread::ThreadStatus;
use crate::domain::time::Timestamp;
use crate::storage::{FinishRun, SharedStore, StorageError, Unavailable};
use crate::stream::metadata_event;

/// Longest pause between two tries to record a stalled run end.
const STALL_RETRY_MAX: Duration = Duration::from_secs(2);

/// The first queued run's `after_seconds` delay has passed. Sent by the actor to itself.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct StartDue;

/// The background retry of a stalled run end is over. Sent by the actor to itself.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct EndRetried {
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
pub(super) struct Ended {
    run_id: RunId,
    started: Option<Instant>,
    status: Option<RunStatus>,
    outcome: RunOutcome,
    write: EndWrite,
}

/// Writes a run's end (or settles the thread); returns the thread's new status.
async fn write_end(
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

impl ThreadActor {
    /// Stops the active run, if any; resolves once its actor has stopped and will write nothing.
    pub(super) fn stop_active(&mut self) -> Step<()> {
        match self.runs.take_active() {
            Some(active) => wrap_future(async move {
                // A closed mailbox means it has stopped already, which is all we need.
                let _ = active.handle.send(StopRun).await;
            })
            .boxed_local(),
            None => fut::ready(()).boxed_local(),
        }
    }

    /// After a failed write that followed stopping a run, memory and storage may disagree:
    /// stop, so the supervisor restarts the actor and it rebuilds from storage.
    pub(super) fn rebuild(&mut self, error: &StorageError, ctx: &mut Context<Self>) {
        log::error!(
            "thread actor rebuilds from storage thread_id={} after: {error:#}",
            self.thread_id
        );
        ctx.stop();
    }

    /// Starts the first queued run if none is active and it is due; otherwise arms the timer.
    pub(super) fn start_next(&mut self, ctx: &mut Context<Self>) -> Step<()> {
        self.notify_drained();
        let draining = self.settings.draining.load(Ordering::SeqCst);
        let next = self.runs.next(Timestamp::now(), draining);
        if next == Next::Busy {
            return fut::ready(()).boxed_local();
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let (run, attempt, recovered) = match next {
            Next::Busy | Next::Idle => return fut::ready(()).boxed_local(),
            Next::Wait(delay) => {
                self.timer = Some(ctx.run_later(delay, |_, ctx| ctx.notify(StartDue)));
                return fut::ready(()).boxed_local();
            }
            Next::Start {
                run,
                attempt,
                recovered,
            } => (run, attempt, recovered),
        };
        let run_id = run.run_id;
        let graph_id = run.graph_id.clone();
        let stream = self.hub.open(run_id, run.kwargs.resumable);
        let Some(engine) = self.engines.get(&graph_id).cloned() else {
            let error = RunError::new(
                "ValueError",
                format!("Graph '{graph_id}' is not configured on this server"),
            );
            stream.publish("metadata", &metadata_event(run_id, attempt));
            return self.record_end(run_id, None, RunEnd::Failed(error));
        };
        let limits = self.settings.limits;
        let run_actor = RunActor::new(
            *run,
            engine,
            self.store.clone(),
            ctx.address().recipient(),
            stream,
            limits,
        )
        .start();
        let begin = run_actor.send(BeginRun { attempt, recovered });
        wrap_future(begin)
            .then(move |reply, actor: &mut Self, _| match reply {
                Ok(Ok(())) => {
                    log::info!(
                        "run started run_id={run_id} thread_id={} graph_id={graph_id} attempt={attempt}",
                        actor.thread_id
                    );
                    actor.runs.set_active(ActiveRun {
                        run_id,
                        attempt,
                        handle: run_actor,
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
    pub(super) fn record_end(
        &mut self,
        run_id: RunId,
        started: Option<Instant>,
        end: RunEnd,
    ) -> Step<()> {
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
        let in_flight_after = self.runs.others_in_flight();
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
                write_end(store.clone(), thread_id, write.clone())
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
        if self.runs.take_temporary(run_id) {
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
        self.runs.stall(ended.run_id, cause);
        let (store, thread_id, write) = (self.store.clone(), self.thread_id, ended.write.clone());
        let retried = async move {
            let mut delay = Duration::from_millis(100);
            loop {
                tokio::time::sleep(delay).await;
                match write_end(store.clone(), thread_id, write.clone()).await {
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
    pub(super) fn delete_temporary_thread(&mut self, ctx: &mut Context<Self>) -> Step<()> {
        if !self.runs.is_quiet() {
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
                actor.registry.forget.do_send(ForgetThread {
                    thread_id: actor.thread_id,
                    generation: actor.registry.generation,
                });
            }
            Err(error) => log::warn!(
                "temporary thread not deleted thread_id={}: {error:#}",
                actor.thread_id
            ),
        })
        .boxed_local()
    }
}

impl Handler<RunFinished> for ThreadActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, message: RunFinished, _: &mut Context<Self>) -> Self::Result {
        if !self.runs.is_active(message.run_id, message.attempt) {
            log::debug!(
                "end of a run attempt that is no longer active ignored run_id={} attempt={}",
                message.run_id,
                message.attempt
            );
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let started = self.runs.take_active().map(|active| active.started);
        AtomicResponse::new(self.record_end(message.run_id, started, message.end))
    }
}

impl Handler<EndRetried> for ThreadActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, message: EndRetried, ctx: &mut Context<Self>) -> Self::Result {
        let run_id = message.ended.run_id;
        if !self.runs.unstall(run_id) {
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
