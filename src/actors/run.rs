//! RunActor: executes one run. Started by its ThreadActor, which sends `BeginRun` (apply the
//! input and mark the run `running`, atomically) and may send `StopRun`. The graph executes in a
//! spawned task, so a panic fails only this run. Every checkpoint write is fenced in storage on
//! the run still being `running`: once stopped or deleted, this run can never write again.
//! It reports the end with `RunFinished` to its thread, unless it was told to stop.

use std::sync::Arc;

use actix::fut::wrap_future;
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler,
    Message,
};
use futures_util::future::BoxFuture;
use tokio::task::{AbortHandle, JoinError};

use super::thread::{RunEnd, RunFinished, ThreadActor};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::run::{Run, RunError};
use crate::graph::emit::{Emitter, Modes};
use crate::graph::executor::{
    self, Begin, CheckpointSink, Command, Finish, Halt, RunPlan, DEFAULT_RECURSION_LIMIT,
};
use crate::graph::Graph;
use crate::storage::{Db, StorageError};
use crate::stream::RunStream;

/// Applies the run's input and marks it `running`; replies once that is committed. Sent once by
/// the ThreadActor, which waits for the reply before handling its next command. An error means
/// the run never started and the thread actor records it as failed.
#[derive(Message)]
#[rtype(result = "Result<(), RunError>")]
pub struct BeginRun;

/// Stops the run: its graph task is aborted and the actor stops without reporting. Sent by the
/// ThreadActor, which then records the run as interrupted or deletes it. Idempotent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRun;

/// Executes one run.
pub struct RunActor {
    run: Run,
    graph: Arc<Graph>,
    db: Db,
    thread: Addr<ThreadActor>,
    /// The graph task, once started; aborted on stop.
    execution: Option<AbortHandle>,
    /// Set by `StopRun`: the thread actor already knows, so nothing is reported.
    stop_requested: bool,
    /// Set once the end has been reported (or needs no report).
    reported: bool,
    /// Where the run's events go.
    stream: Arc<RunStream>,
}

impl RunActor {
    /// A run actor for `run`, reporting to `thread`.
    pub fn new(
        run: Run,
        graph: Arc<Graph>,
        db: Db,
        thread: Addr<ThreadActor>,
        stream: Arc<RunStream>,
    ) -> Self {
        Self {
            run,
            graph,
            db,
            thread,
            execution: None,
            stop_requested: false,
            reported: false,
            stream,
        }
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
        }
    }

    fn spawn_execution(&mut self, plan: RunPlan, begin: Begin, ctx: &mut Context<Self>) {
        let mut sink = DbSink {
            db: self.db.clone(),
        };
        let handle = tokio::spawn(async move {
            let result = executor::execute(&plan, begin.cursor, begin.resuming, &mut sink).await;
            if let Ok(finish) = &result {
                plan.emitter.run_finished(&finish.values);
            }
            result
        });
        self.execution = Some(handle.abort_handle());
        ctx.spawn(
            wrap_future(handle).map(|result, actor: &mut Self, ctx| actor.executed(result, ctx)),
        );
    }

    fn executed(
        &mut self,
        result: Result<Result<Finish, Halt>, JoinError>,
        ctx: &mut Context<Self>,
    ) {
        let end = match result {
            Ok(Ok(finish)) => {
                let mut values = finish.values;
                if !finish.interrupts.is_empty() {
                    let chunks = finish.interrupts.iter().map(|i| i.to_chunk()).collect();
                    values.insert("__interrupt__".into(), serde_json::Value::Array(chunks));
                }
                Some(RunEnd::Success {
                    values: Arc::new(values),
                    next: finish.next,
                })
            }
            Ok(Err(Halt::Failed(error))) => Some(RunEnd::Failed(error)),
            // Fenced: storage no longer has this run in flight. When the thread actor stopped it,
            // it ignores this report; otherwise the run was removed behind its back and the
            // report lets it move on.
            Ok(Err(Halt::Fenced)) => Some(RunEnd::Vanished),
            Err(join_error) if join_error.is_cancelled() => None,
            Err(join_error) => Some(RunEnd::Failed(RunError::new(
                "RuntimeError",
                format!("the run's executor panicked: {join_error}"),
            ))),
        };
        if let Some(end) = end {
            self.thread.do_send(RunFinished {
                run_id: self.run.run_id,
                end,
            });
        }
        self.reported = true;
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
            log::warn!("run actor stopped unexpectedly run_id={}", self.run.run_id);
            self.thread.do_send(RunFinished {
                run_id: self.run.run_id,
                end: RunEnd::Failed(RunError::new(
                    "RuntimeError",
                    "the run actor stopped unexpectedly",
                )),
            });
        }
    }
}

fn storage_failure(error: StorageError) -> RunError {
    RunError::new("StorageError", error.to_string())
}

impl Handler<BeginRun> for RunActor {
    type Result = AtomicResponse<Self, Result<(), RunError>>;

    fn handle(&mut self, _: BeginRun, _: &mut Context<Self>) -> Self::Result {
        let plan = self.plan();
        let db = self.db.clone();
        let thread_id = self.run.thread_id;
        let run_id = self.run.run_id;
        let fork_from = self.run.kwargs.checkpoint_id;
        let prepare = async move {
            // `metadata` comes first on every run stream, also when the run fails to start.
            plan.emitter.run_started(plan.input.as_ref());
            let base = match fork_from {
                Some(checkpoint_id) => Some(
                    db.checkpoint(thread_id, String::new(), checkpoint_id)
                        .await
                        .map_err(storage_failure)?
                        .ok_or_else(|| {
                            RunError::new(
                                "ValueError",
                                format!("Checkpoint {checkpoint_id} not found"),
                            )
                        })?,
                ),
                None => db.head(thread_id).await.map_err(storage_failure)?,
            };
            let mut begin = executor::begin(&plan, base.as_ref(), fork_from.is_some())?;
            let start = std::mem::take(&mut begin.checkpoints);
            db.start_run(run_id, start.clone())
                .await
                .map_err(storage_failure)?;
            plan.emitter.run_began(&start, &begin.cursor.values);
            Ok((plan, begin))
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
        AtomicResponse::new(Box::pin(wrap_future(prepare).map(
            |result: Result<(RunPlan, Begin), RunError>, actor: &mut Self, ctx| match result {
                Ok((plan, begin)) => {
                    actor.spawn_execution(plan, begin, ctx);
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

/// Persists a run's checkpoints through the fenced writer.
#[derive(Clone)]
struct DbSink {
    db: Db,
}

impl CheckpointSink for DbSink {
    fn save(&mut self, checkpoint: Checkpoint) -> BoxFuture<'static, Result<(), Halt>> {
        let saved = self.db.save_checkpoint(checkpoint);
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
