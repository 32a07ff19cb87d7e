//! RunActor: one attempt of a run, for any engine. Started by its ThreadActor, which sends
//! `BeginRun` (the engine applies the input and marks the run `running`, atomically, or
//! continues a run a crash left `running`) and may send `StopRun`. The engine's start and its
//! execution run in spawned tasks, so a panic fails only this run; the run's time limit ends it
//! with `timeout`. Every checkpoint write goes through a port fenced in storage on the run still
//! being `running` in this attempt: once stopped, deleted or resumed by a newer attempt, it can
//! never write again. It reports the end with `RunFinished` to whoever started it, unless it was
//! told to stop; it does not know the thread actor's type.

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Recipient,
};
use tokio::task::{AbortHandle, JoinError};

use super::checkpoints::{AttemptCheckpoints, StoredCheckpoints};
use super::protocol::{BeginRun, RunEnd, RunFinished, StopRun};
use crate::domain::ids::RunId;
use crate::domain::run::{Run, RunError};
use crate::engine::{Engine, Execution, RunExit, RunStart};
use crate::storage::SharedStore;
use crate::stream::RunStream;

/// The time limits of runs (`None`: no limit).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunLimits {
    /// Of the whole run: it then ends with status `timeout`.
    pub run: Option<Duration>,
    /// Of each node task: the run then fails with NodeTimeoutError.
    pub node: Option<Duration>,
}

/// Executes one attempt of a run.
pub struct RunActor {
    run: Option<Run>,
    run_id: RunId,
    engine: Arc<dyn Engine>,
    store: SharedStore,
    /// Where the end is reported.
    reports: Recipient<RunFinished>,
    /// The execution task, once started; aborted on stop.
    execution: Option<AbortHandle>,
    /// Set by `StopRun`: the thread actor already knows, so nothing is reported.
    stop_requested: bool,
    /// Set once the end has been reported (or needs no report).
    reported: bool,
    /// Where the run's events go.
    stream: Arc<RunStream>,
    limits: RunLimits,
    /// This attempt's number, once begun: its end report names it.
    attempt: u32,
}

impl RunActor {
    /// A run actor for `run`, executed by `engine`, reporting to `reports`.
    pub fn new(
        run: Run,
        engine: Arc<dyn Engine>,
        store: SharedStore,
        reports: Recipient<RunFinished>,
        stream: Arc<RunStream>,
        limits: RunLimits,
    ) -> Self {
        Self {
            run_id: run.run_id,
            run: Some(run),
            engine,
            store,
            reports,
            execution: None,
            stop_requested: false,
            reported: false,
            stream,
            limits,
            attempt: 0,
        }
    }

    fn report(&mut self, end: RunEnd) {
        self.reports.do_send(RunFinished {
            run_id: self.run_id,
            attempt: self.attempt,
            end,
        });
        self.reported = true;
    }

    /// Runs the execution to its end under the run's time limit, in a task of its own.
    fn spawn_execution(&mut self, execution: Execution, ctx: &mut Context<Self>) {
        let limit = self.limits.run;
        let handle = tokio::spawn(async move {
            let exit = match limit {
                None => execution.ended.await,
                // Dropping the execution on timeout stops it.
                Some(limit) => match tokio::time::timeout(limit, execution.ended).await {
                    Ok(exit) => exit,
                    Err(_) => {
                        return RunEnd::TimedOut(RunError::new(
                            "TimeoutError",
                            format!(
                                "the run did not finish within {}s (runtime.run_timeout_seconds)",
                                limit.as_secs_f64()
                            ),
                        ))
                    }
                },
            };
            match exit {
                RunExit::Completed { values, next } => RunEnd::Success { values, next },
                RunExit::Failed(error) => RunEnd::Failed(error),
                // Fenced: storage no longer has this attempt in flight. When the thread actor
                // stopped it, it ignores this report; otherwise the run was removed behind its
                // back and the report lets it move on.
                RunExit::Fenced => RunEnd::Vanished,
            }
        });
        self.execution = Some(handle.abort_handle());
        ctx.spawn(
            wrap_future(handle).map(|result, actor: &mut Self, ctx| actor.executed(result, ctx)),
        );
    }

    fn executed(&mut self, result: Result<RunEnd, JoinError>, ctx: &mut Context<Self>) {
        let end = match result {
            Ok(end) => Some(end),
            Err(join_error) if join_error.is_cancelled() => None,
            Err(join_error) => Some(RunEnd::Failed(RunError::new(
                "RuntimeError",
                format!("the run's executor panicked: {join_error}"),
            ))),
        };
        match end {
            Some(end) => self.report(end),
            None => self.reported = true,
        }
        ctx.stop();
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(execution) = self.execution.take() {
            execution.abort();
        }
        if !self.reported && !self.stop_requested {
            log::warn!("run actor stopped unexpectedly run_id={}", self.run_id);
            self.report(RunEnd::Failed(RunError::new(
                "RuntimeError",
                "the run actor stopped unexpectedly",
            )));
        }
    }
}

impl Handler<BeginRun> for RunActor {
    type Result = AtomicResponse<Self, Result<(), RunError>>;

    fn handle(&mut self, message: BeginRun, _: &mut Context<Self>) -> Self::Result {
        self.attempt = message.attempt;
        let Some(run) = self.run.take() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(RunError::new(
                "RuntimeError",
                "the run was begun twice",
            )))));
        };
        let checkpoints = AttemptCheckpoints {
            thread: StoredCheckpoints {
                store: self.store.clone(),
                thread_id: run.thread_id,
            },
            run_id: run.run_id,
            attempt: message.attempt,
            recovered: message.recovered,
        };
        let start = RunStart {
            run,
            attempt: message.attempt,
            recovered: message.recovered,
            checkpoints: Arc::new(checkpoints),
            stream: self.stream.clone(),
            node_timeout: self.limits.node,
        };
        // Input coercion and reducers run in a task of their own: a panic fails only this run.
        let started = tokio::spawn(self.engine.start(start));
        let started = async move {
            started.await.unwrap_or_else(|join_error| {
                Err(RunError::new(
                    "RuntimeError",
                    format!("starting the run panicked: {join_error}"),
                ))
            })
        };
        AtomicResponse::new(Box::pin(wrap_future(started).map(
            move |started, actor: &mut Self, ctx| match started {
                Ok(execution) => {
                    actor.spawn_execution(execution, ctx);
                    Ok(())
                }
                Err(error) => {
                    // The thread actor records the failure from this reply.
                    actor.reported = true;
                    ctx.stop();
                    Err(error)
                }
            },
        )))
    }
}

impl Handler<StopRun> for RunActor {
    type Result = ();

    fn handle(&mut self, _: StopRun, ctx: &mut Context<Self>) {
        self.stop_requested = true;
        if let Some(execution) = self.execution.take() {
            execution.abort();
        }
        ctx.stop();
    }
}
