//! The commands a thread actor carries out for its callers, each atomically (no other message
//! is handled until its writes are committed): submit a run (its multitask strategy decided by
//! the pure queue core), join a run, subscribe to its stream, cancel runs, delete a run, delete
//! the thread, update the state.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::fut::{self, wrap_future};
use actix::{ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler};
use serde_json::Value;
use tokio::sync::oneshot;

use super::actor::ThreadActor;
use super::queue::Admission;
use crate::actors::checkpoints::StoredCheckpoints;
use crate::actors::error::ThreadError;
use crate::actors::protocol::{
    CancelRuns, DeleteRun, DeleteThread, JoinRun, RunAccepted, RunOutcome, RunReply, SubmitRun,
    SubscribeRun, UpdateState,
};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::RunId;
use crate::domain::multitask::CancelAction;
use crate::domain::run::{IfNotExists, Run, RunStatus};
use crate::domain::time::Timestamp;
use crate::domain::NotFound;
use crate::engine::StateUpdate;
use crate::storage::InsertRun;
use crate::stream::Subscription;

impl ThreadActor {
    /// Forgets runs that storage has just stopped, and tells their waiters.
    /// Returns whether one of them was a stateless run whose thread is to be deleted.
    fn forget_stopped(&mut self, run_ids: &[RunId], action: CancelAction) -> bool {
        let stopped_temporary = self.runs.forget(run_ids);
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
}

impl Handler<SubmitRun> for ThreadActor {
    type Result = AtomicResponse<Self, Result<RunAccepted, ThreadError>>;

    fn handle(&mut self, message: SubmitRun, _: &mut Context<Self>) -> Self::Result {
        if let Err(refused) = self.touch_to_change() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused))));
        }
        let SubmitRun { mut new_run, reply } = message;
        new_run.created_at =
            self.runs
                .stamp(Timestamp::now(), new_run.after_seconds, new_run.created_at);
        let admission = self.runs.admit(new_run.multitask_strategy);
        log::debug!(
            "multitask decision thread_id={} run_id={} strategy={} in_flight={} admission={admission:?}",
            self.thread_id,
            new_run.run_id,
            new_run.multitask_strategy.as_str(),
            self.runs.in_flight().len()
        );
        let stop = match admission {
            Admission::Reject => {
                return AtomicResponse::new(Box::pin(fut::ready(Err(ThreadError::Busy))))
            }
            Admission::Admit { stop } => stop,
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
                    let outcome = (reply == RunReply::Wait).then(|| actor.add_waiter(run.run_id));
                    let stream = actor.hub.open(run.run_id, run.kwargs.resumable);
                    let subscription = (reply == RunReply::Stream).then(|| stream.subscribe(None));
                    actor.runs.enqueue(run.clone());
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
            .runs
            .is_in_flight(message.run_id)
            .then(|| self.add_waiter(message.run_id)))
    }
}

impl Handler<SubscribeRun> for ThreadActor {
    type Result = Result<Option<Subscription>, ThreadError>;

    fn handle(&mut self, message: SubscribeRun, _: &mut Context<Self>) -> Self::Result {
        self.touch()?;
        let stream = if self.runs.is_in_flight(message.run_id) {
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
        let in_flight = self.runs.in_flight();
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
            .runs
            .active()
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
        let in_flight = self.runs.in_flight();
        let is_active = self
            .runs
            .active()
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
                    let temporary = actor.runs.forget(&[run_id]);
                    log::info!("run deleted run_id={run_id} thread_id={}", actor.thread_id);
                    actor.resolve(run_id, RunOutcome::Deleted);
                    let next = if temporary {
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
        let had_active = self.runs.active().is_some();
        let in_flight = self.runs.in_flight();
        let stopping = self.stop_active();
        let deleted = self.store.delete_thread(self.thread_id);
        let steps = stopping.then(move |(), _, _| wrap_future(deleted)).map(
            move |result, actor: &mut Self, ctx| match result {
                Ok(()) => {
                    if let Some(timer) = actor.timer.take() {
                        ctx.cancel_future(timer);
                    }
                    actor.runs.clear();
                    let waiting = actor.waiters.keys().copied().collect::<Vec<_>>();
                    for run_id in in_flight.into_iter().chain(waiting) {
                        actor.resolve(run_id, RunOutcome::Deleted);
                    }
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
        let in_flight = self.runs.in_flight();
        if !in_flight.is_empty() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(ThreadError::InFlight {
                thread_id,
                runs: in_flight,
            }))));
        }
        let store = self.store.clone();
        let engines = self.engines.clone();
        #[cfg(any(test, feature = "testing"))]
        let panics = std::mem::take(&mut self.state_update_panics);
        let update = async move {
            let thread = store.get_thread(thread_id).await?;
            // A checkpoint that does not exist is a 404 whatever the thread's graph.
            if let Some(checkpoint_id) = message.checkpoint_id {
                store
                    .checkpoint(thread_id, String::new(), checkpoint_id)
                    .await?
                    .ok_or(ThreadError::NotFound(NotFound::Checkpoint(checkpoint_id)))?;
            }
            let graph_id = thread
                .metadata
                .get("graph_id")
                .and_then(Value::as_str)
                .ok_or(ThreadError::NoGraph(thread_id))?;
            let engine = engines
                .get(graph_id)
                .cloned()
                .ok_or_else(|| ThreadError::GraphNotServed(graph_id.to_owned()))?;
            let request = StateUpdate {
                thread_id,
                graph_id: graph_id.to_owned(),
                values: message.values,
                as_node: message.as_node,
                checkpoint_id: message.checkpoint_id,
            };
            let checkpoints = Arc::new(StoredCheckpoints { store, thread_id });
            // Graph code (the reducers) runs in a task of its own: a panic fails only this
            // request, never this actor.
            tokio::spawn(async move {
                #[cfg(any(test, feature = "testing"))]
                if panics {
                    panic!("fault injected: the state update's reducers panicked");
                }
                engine.update_state(request, checkpoints).await
            })
            .await
            .map_err(|join_error| ThreadError::Panicked(format!("the state update: {join_error}")))?
            .map_err(ThreadError::from)
        };
        let steps = wrap_future(update).then(move |prepared, actor: &mut Self, _| match prepared {
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
        });
        AtomicResponse::new(Box::pin(steps))
    }
}
