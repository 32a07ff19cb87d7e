//! RunActor: executes one attempt of a run. Started by its ThreadActor, which sends `BeginRun`
//! (apply the input and mark the run `running`, atomically; or, for a run a crash left
//! `running`, continue from its last checkpoint) and may send `StopRun`. The graph executes in a
//! spawned task, so a panic fails only this run; the run's time limit ends it with `timeout`.
//! Every checkpoint write is fenced in storage on the run still being `running` in this attempt:
//! once stopped, deleted or resumed by a newer attempt, it can never write again.
//! It reports the end with `RunFinished` to its thread, unless it was told to stop.

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Recipient,
};
use futures_util::future::BoxFuture;
use tokio::task::{AbortHandle, JoinError};

use super::protocol::{BeginRun, RunEnd, RunFinished, StopRun};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::run::{Run, RunError};
use crate::graph::emit::{Emitter, Modes};
use crate::graph::executor::{
    self, Begin, CheckpointSink, Command, Finish, Halt, RunPlan, DEFAULT_RECURSION_LIMIT,
};
use crate::graph::Graph;
use crate::storage::{SharedStore, StorageError};
use crate::stream::RunStream;

/// The time limits of runs (`None`: no limit).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunLimits {
    /// Of the whole run: it then ends with status `timeout`.
    pub run: Option<Duration>,
    /// Of each node task: the run then fails with NodeTimeoutError.
    pub node: Option<Duration>,
}

/// Executes one run.
pub struct RunActor {
    run: Run,
    graph: Arc<Graph>,
    store: SharedStore,
    /// Where the end is reported: the thread actor, which this actor does not know.
    thread: Recipient<RunFinished>,
    /// The graph task, once started; aborted on stop.
    execution: Option<AbortHandle>,
    /// Set by `StopRun`: the thread actor already knows, so nothing is reported.
    stop_requested: bool,
    /// Set once the end has been reported (or needs no report).
    reported: bool,
    /// Where the run's events go.
    stream: Arc<RunStream>,
    limits: RunLimits,
    /// This attempt's number, once begun: it fences the attempt's writes.
    attempt: u32,
}

impl RunActor {
    /// A run actor for `run`, reporting to `thread`.
    pub fn new(
        run: Run,
        graph: Arc<Graph>,
        store: SharedStore,
        thread: Recipient<RunFinished>,
        stream: Arc<RunStream>,
        limits: RunLimits,
    ) -> Self {
        Self {
            run,
            graph,
            store,
            thread,
            execution: None,
            stop_requested: false,
            reported: false,
            stream,
            limits,
            attempt: 0,
        }
    }

    fn report(&mut self, end: RunEnd) {
        self.thread.do_send(RunFinished {
            run_id: self.run.run_id,
            attempt: self.attempt,
            end,
        });
        self.reported = true;
    }

    fn plan(&self) -> RunPlan {
        let kwargs = &self.run.kwargs;
        let breakpoints = |graph_level: &Option<_>, run_level: &Option<_>| {
            [graph_level, run_level]
                .into_iter()
                .flatten()
                .cloned()
                .collect()
        };
        // Modes were validated when the run was created; an unknown one streams nothing extra.
        let modes = Modes::parse(&kwargs.stream_mode).unwrap_or(Modes::VALUES);
        let emitter = Emitter::new(
            Some(self.stream.clone()),
            modes,
            self.run.thread_id,
            self.run.run_id,
            &self.run.metadata,
            &kwargs.configurable(),
        )
        .with_subgraphs(kwargs.subgraphs);
        RunPlan {
            // Validated when the run was created.
            command: kwargs
                .command
                .as_ref()
                .and_then(|command| Command::parse(command).ok()),
            emitter: Arc::new(emitter),
            graph: self.graph.clone(),
            thread_id: self.run.thread_id,
            run_id: self.run.run_id,
            input: kwargs.input.clone(),
            node_config: Arc::new(kwargs.node_config()),
            base_metadata: executor::base_metadata(
                &kwargs.configurable(),
                &self.run.metadata,
                self.run.thread_id,
                self.run.run_id,
            ),
            recursion_limit: kwargs.recursion_limit().unwrap_or(DEFAULT_RECURSION_LIMIT),
            interrupt_before: breakpoints(&self.graph.interrupt_before, &kwargs.interrupt_before),
            interrupt_after: breakpoints(&self.graph.interrupt_after, &kwargs.interrupt_after),
            namespace: String::new(),
            parents: crate::domain::JsonMap::new(),
            node_timeout: self.limits.node,
        }
    }

    fn spawn_execution(&mut self, plan: RunPlan, begin: Begin, ctx: &mut Context<Self>) {
        let mut sink = DbSink {
            store: self.store.clone(),
            attempt: self.attempt,
        };
        let limit = self.limits.run;
        let handle = tokio::spawn(async move {
            let execution = executor::execute(&plan, begin.cursor, begin.resuming, &mut sink);
            let result = match limit {
                None => execution.await,
                // Dropping the execution on timeout stops its node tasks.
                Some(limit) => match tokio::time::timeout(limit, execution).await {
                    Ok(result) => result,
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
            if let Ok(finish) = &result {
                plan.emitter.run_finished(&finish.values);
            }
            Self::ended(result)
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

    /// How the graph's execution ended.
    fn ended(result: Result<Finish, Halt>) -> RunEnd {
        match result {
            Ok(finish) => {
                let mut values = finish.values;
                if !finish.interrupts.is_empty() {
                    let chunks = finish.interrupts.iter().map(|i| i.to_chunk()).collect();
                    values.insert("__interrupt__".into(), serde_json::Value::Array(chunks));
                }
                RunEnd::Success {
                    values: Arc::new(values),
                    next: finish.next,
                }
            }
            Err(Halt::Failed(error)) => RunEnd::Failed(error),
            // Fenced: storage no longer has this attempt in flight. When the thread actor stopped
            // it, it ignores this report; otherwise the run was removed behind its back and the
            // report lets it move on.
            Err(Halt::Fenced) => RunEnd::Vanished,
        }
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(execution) = self.execution.take() {
            execution.abort();
        }
        if !self.reported && !self.stop_requested {
            log::warn!("run actor stopped unexpectedly run_id={}", self.run.run_id);
            self.report(RunEnd::Failed(RunError::new(
                "RuntimeError",
                "the run actor stopped unexpectedly",
            )));
        }
    }
}

fn storage_failure(error: StorageError) -> RunError {
    RunError::new("StorageError", error.to_string())
}

impl Handler<BeginRun> for RunActor {
    type Result = AtomicResponse<Self, Result<u32, RunError>>;

    fn handle(&mut self, message: BeginRun, _: &mut Context<Self>) -> Self::Result {
        let plan = self.plan();
        let store = self.store.clone();
        let thread_id = self.run.thread_id;
        let run_id = self.run.run_id;
        let fork_from = self.run.kwargs.checkpoint_id;
        let recovered = message.recovered;
        let prepare = async move {
            // `metadata` comes first on every run stream, also when the run fails to start.
            plan.emitter.run_started(plan.input.as_ref());
            // A run a crash left running: count the attempt first, which fences every write of
            // the earlier attempt, then continue from its latest checkpoint. If it wrote none,
            // it began without writing any, and beginning again is the same.
            let recovered_attempt = if recovered {
                Some(
                    store
                        .start_run(run_id, vec![], true)
                        .await
                        .map_err(storage_failure)?,
                )
            } else {
                None
            };
            let head = store.head(thread_id).await.map_err(storage_failure)?;
            // The head is this run's own when it continues: after a crash, or when a shutdown
            // stopped it and put it back to pending (its earlier attempt has stopped).
            if let Some(own) = head.as_ref().filter(|head| head.run_id == Some(run_id)) {
                let attempt = match recovered_attempt {
                    Some(attempt) => attempt,
                    None => store
                        .start_run(run_id, vec![], false)
                        .await
                        .map_err(storage_failure)?,
                };
                log::info!(
                    "run resumed from its last checkpoint run_id={run_id} attempt={attempt} checkpoint_id={} next={}",
                    own.checkpoint_id,
                    own.next.join(",")
                );
                let start = executor::recover(&plan, own);
                if let Ok(begin) = &start {
                    plan.emitter.run_began(&[], &begin.cursor.values);
                }
                return Ok((plan, start, attempt));
            }
            let base = match fork_from {
                Some(checkpoint_id) => Some(
                    store
                        .checkpoint(thread_id, String::new(), checkpoint_id)
                        .await
                        .map_err(storage_failure)?
                        .ok_or_else(|| {
                            RunError::new(
                                "ValueError",
                                format!("Checkpoint {checkpoint_id} not found"),
                            )
                        })?,
                ),
                None => head,
            };
            let mut begin = executor::begin(&plan, base.as_ref(), fork_from.is_some())?;
            let start = std::mem::take(&mut begin.checkpoints);
            let attempt = match recovered_attempt {
                Some(attempt) => {
                    for checkpoint in &start {
                        store
                            .save_checkpoint(checkpoint.clone(), attempt)
                            .await
                            .map_err(storage_failure)?;
                    }
                    attempt
                }
                None => store
                    .start_run(run_id, start.clone(), false)
                    .await
                    .map_err(storage_failure)?,
            };
            plan.emitter.run_began(&start, &begin.cursor.values);
            Ok((plan, Ok(begin), attempt))
        };
        // Input coercion and reducers run in a task of their own: a panic fails only this run.
        let prepare = async move {
            tokio::spawn(prepare).await.unwrap_or_else(|join_error| {
                Err(RunError::new(
                    "RuntimeError",
                    format!("starting the run panicked: {join_error}"),
                ))
            })
        };
        type Prepared = (RunPlan, Result<Begin, Finish>, u32);
        AtomicResponse::new(Box::pin(wrap_future(prepare).map(
            |result: Result<Prepared, RunError>, actor: &mut Self, ctx| match result {
                Ok((plan, start, attempt)) => {
                    actor.attempt = attempt;
                    match start {
                        Ok(begin) => actor.spawn_execution(plan, begin, ctx),
                        // It had already stopped at a breakpoint: it ends now.
                        Err(finish) => {
                            plan.emitter.run_finished(&finish.values);
                            actor.executed(Ok(Self::ended(Ok(finish))), ctx);
                        }
                    }
                    Ok(attempt)
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

/// Persists an attempt's checkpoints through the fenced writer.
#[derive(Clone)]
struct DbSink {
    store: SharedStore,
    attempt: u32,
}

impl CheckpointSink for DbSink {
    fn save(&mut self, checkpoint: Checkpoint) -> BoxFuture<'static, Result<(), Halt>> {
        let saved = self.store.save_checkpoint(checkpoint, self.attempt);
        Box::pin(async move {
            saved.await.map_err(|error| match error {
                StorageError::Fenced => Halt::Fenced,
                other => Halt::Failed(storage_failure(other)),
            })
        })
    }

    fn share(&self) -> Box<dyn CheckpointSink> {
        Box::new(self.clone())
    }
}
