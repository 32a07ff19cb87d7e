//! `TomlEngine`: the `Engine` of graphs declared in TOML. It plans a run (stream modes,
//! breakpoints, node configuration, checkpoint metadata), begins it through the fenced checkpoint
//! port (input, command, fork, or continuing a recovered run), and hands the superstep executor
//! a sink that writes through the same port.

use std::sync::Arc;

use futures_util::future::{self, BoxFuture};
use serde_json::Value;

use super::emit::{Emitter, Modes};
use super::executor::{
    self, Begin, CheckpointSink, Finish, Halt, RunPlan, DEFAULT_RECURSION_LIMIT,
};
use super::graph::Graph;
use super::registry::GraphRegistry;
use crate::domain::checkpoint::Checkpoint;
use crate::domain::run::{RunError, RunKwargs};
use crate::domain::{JsonMap, NotFound};
use crate::engine::{
    Engine, EngineError, EngineFuture, Execution, PortError, RunCheckpoints, RunExit, RunStart,
    StateUpdate, ThreadCheckpoints,
};
use crate::stream::metadata_event;

/// The engine of the graphs declared in TOML files.
pub struct TomlEngine {
    graphs: GraphRegistry,
}

impl TomlEngine {
    /// The engine of these graphs.
    pub fn new(graphs: GraphRegistry) -> Self {
        Self { graphs }
    }

    fn graph(&self, graph_id: &str) -> Result<Arc<Graph>, EngineError> {
        self.graphs
            .get(graph_id)
            .ok_or_else(|| EngineError::UnknownGraph(graph_id.to_owned()))
    }

    /// A description computed at once from the graph.
    fn describe(
        &self,
        graph_id: &str,
        describe: impl FnOnce(&Graph) -> Value,
    ) -> EngineFuture<Value> {
        let described = self.graph(graph_id).map(|graph| describe(&graph));
        Box::pin(future::ready(described))
    }
}

/// What a run of `graph` needs to execute, fixed when its attempt starts.
fn plan(graph: Arc<Graph>, start: &RunStart) -> RunPlan {
    let run = &start.run;
    let kwargs = &run.kwargs;
    let breakpoints = |graph_level: &Option<_>, run_level: &Option<_>| {
        [graph_level, run_level]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    };
    let configurable = kwargs.configurable();
    let emitter = Emitter::new(
        Some(start.stream.clone()),
        Modes::of(&kwargs.stream_mode),
        run.thread_id,
        run.run_id,
        start.attempt,
        &run.metadata,
        &configurable,
    )
    .with_subgraphs(kwargs.subgraphs);
    RunPlan {
        command: kwargs.command.clone(),
        emitter: Arc::new(emitter),
        thread_id: run.thread_id,
        run_id: run.run_id,
        input: kwargs.input.clone(),
        node_config: Arc::new(kwargs.node_config()),
        base_metadata: executor::base_metadata(
            &configurable,
            &run.metadata,
            run.thread_id,
            run.run_id,
            start.attempt,
        ),
        recursion_limit: kwargs.recursion_limit().unwrap_or(DEFAULT_RECURSION_LIMIT),
        interrupt_before: breakpoints(&graph.interrupt_before, &kwargs.interrupt_before),
        interrupt_after: breakpoints(&graph.interrupt_after, &kwargs.interrupt_after),
        namespace: String::new(),
        parents: JsonMap::new(),
        node_timeout: start.node_timeout,
        graph,
    }
}

/// Writes an attempt's checkpoints through its fenced port.
#[derive(Clone)]
struct PortSink(Arc<dyn RunCheckpoints>);

impl CheckpointSink for PortSink {
    fn save(&mut self, checkpoint: Checkpoint) -> BoxFuture<'static, Result<(), Halt>> {
        let saved = self.0.save(checkpoint);
        Box::pin(async move {
            saved.await.map_err(|error| match error {
                PortError::Fenced => Halt::Fenced,
                other => Halt::Failed(other.into_run_error()),
            })
        })
    }

    fn share(&self) -> Box<dyn CheckpointSink> {
        Box::new(self.clone())
    }
}

/// How the executor's result ends the run.
fn exit(result: Result<Finish, Halt>) -> RunExit {
    match result {
        Ok(finish) => {
            let mut values = finish.values;
            if !finish.interrupts.is_empty() {
                let chunks = finish.interrupts.iter().map(|i| i.to_chunk()).collect();
                values.insert("__interrupt__".into(), Value::Array(chunks));
            }
            RunExit::Completed {
                values: Arc::new(values),
                next: finish.next,
            }
        }
        Err(Halt::Failed(error)) => RunExit::Failed(error),
        // Storage no longer has this attempt in flight.
        Err(Halt::Fenced) => RunExit::Fenced,
    }
}

/// The execution from where the attempt began (or the end it had reached already).
fn execution(
    plan: RunPlan,
    start: Result<Begin, Finish>,
    checkpoints: Arc<dyn RunCheckpoints>,
) -> Execution {
    Execution {
        ended: Box::pin(async move {
            let result = match start {
                Ok(begin) => {
                    let mut sink = PortSink(checkpoints);
                    executor::execute(&plan, begin.cursor, begin.resuming, &mut sink).await
                }
                // It had already stopped at a breakpoint: it ends now.
                Err(finish) => Ok(finish),
            };
            if let Ok(finish) = &result {
                plan.emitter.run_finished(&finish.values);
            }
            exit(result)
        }),
    }
}

/// Begins an attempt: publishes `metadata`, then either continues the run from its own latest
/// checkpoint (after a crash, or a shutdown that put it back to pending) or writes its start
/// (input, command or fork) in the transaction that marks it running.
async fn begin(graph: Arc<Graph>, start: RunStart) -> Result<Execution, RunError> {
    let plan = plan(graph, &start);
    let RunStart {
        run,
        attempt,
        recovered,
        checkpoints,
        ..
    } = start;
    let (thread_id, run_id) = (run.thread_id, run.run_id);
    // `metadata` comes first on every run stream, also when the run fails to start.
    plan.emitter.run_started(plan.input.as_ref());
    let failed = PortError::into_run_error;
    // A run a crash left running: count the attempt first, which fences every write of the
    // earlier attempt, then continue from its latest checkpoint. If it wrote none, it began
    // without writing any, and beginning again is the same.
    if recovered {
        checkpoints.begin(vec![]).await.map_err(failed)?;
    }
    let head = checkpoints.head().await.map_err(failed)?;
    // The head is this run's own when it continues: after a crash, or when a shutdown stopped
    // it and put it back to pending (its earlier attempt has stopped).
    if let Some(own) = head.as_ref().filter(|head| head.run_id == Some(run_id)) {
        if !recovered {
            checkpoints.begin(vec![]).await.map_err(failed)?;
        }
        log::info!(
            "run resumed from its last checkpoint run_id={run_id} attempt={attempt} checkpoint_id={} next={}",
            own.checkpoint_id,
            own.next.join(",")
        );
        let continued = executor::recover(&plan, own);
        if let Ok(begin) = &continued {
            plan.emitter.run_began(&[], &begin.cursor.values);
        }
        return Ok(execution(plan, continued, checkpoints));
    }
    let fork_from = run.kwargs.checkpoint_id;
    let base = match fork_from {
        Some(checkpoint_id) => Some(
            checkpoints
                .checkpoint(String::new(), checkpoint_id)
                .await
                .map_err(failed)?
                .ok_or_else(|| {
                    RunError::new(
                        "ValueError",
                        format!("Checkpoint {checkpoint_id} not found"),
                    )
                })?,
        ),
        None => head,
    };
    let mut began = executor::begin(&plan, base.as_ref(), fork_from.is_some())?;
    let written = std::mem::take(&mut began.checkpoints);
    if recovered {
        for checkpoint in &written {
            checkpoints.save(checkpoint.clone()).await.map_err(failed)?;
        }
    } else {
        checkpoints.begin(written.clone()).await.map_err(failed)?;
    }
    log::debug!("run began thread_id={thread_id} run_id={run_id} attempt={attempt}");
    plan.emitter.run_began(&written, &began.cursor.values);
    Ok(execution(plan, Ok(began), checkpoints))
}

impl Engine for TomlEngine {
    fn graph_ids(&self) -> Vec<String> {
        self.graphs.ids().map(str::to_owned).collect()
    }

    fn drawing(&self, graph_id: &str) -> EngineFuture<Value> {
        self.describe(graph_id, Graph::drawable)
    }

    fn schemas(&self, graph_id: &str) -> EngineFuture<Value> {
        self.describe(graph_id, Graph::schemas)
    }

    fn subgraphs(
        &self,
        graph_id: &str,
        namespace: Option<&str>,
        recurse: bool,
    ) -> EngineFuture<Value> {
        self.describe(graph_id, |graph| graph.subgraph_schemas(namespace, recurse))
    }

    fn check_run(&self, graph_id: &str, kwargs: &RunKwargs) -> Result<(), String> {
        let graph = self.graph(graph_id).map_err(|error| error.to_string())?;
        let gotos = kwargs.command.iter().flat_map(|command| &command.goto);
        for goto in gotos {
            if graph.node(&goto.node).is_none() {
                return Err(format!(
                    "Invalid request body: field `command.goto`: '{}' is not a node of graph '{graph_id}'",
                    goto.node
                ));
            }
        }
        Ok(())
    }

    fn start(&self, start: RunStart) -> BoxFuture<'static, Result<Execution, RunError>> {
        match self.graphs.get(&start.run.graph_id) {
            Some(graph) => Box::pin(begin(graph, start)),
            None => {
                // `Engines` routes runs by graph id, so this is not expected; the stream still
                // opens with `metadata`, as the contract says.
                let run = &start.run;
                start
                    .stream
                    .publish("metadata", &metadata_event(run.run_id, start.attempt));
                let error = RunError::new(
                    "ValueError",
                    format!("Graph '{}' is not configured on this server", run.graph_id),
                );
                Box::pin(future::ready(Err(error)))
            }
        }
    }

    fn update_state(
        &self,
        update: StateUpdate,
        checkpoints: Arc<dyn ThreadCheckpoints>,
    ) -> EngineFuture<Checkpoint> {
        let graph = match self.graph(&update.graph_id) {
            Ok(graph) => graph,
            Err(error) => return Box::pin(future::ready(Err(error))),
        };
        Box::pin(async move {
            let base = match update.checkpoint_id {
                Some(checkpoint_id) => Some(
                    checkpoints
                        .checkpoint(String::new(), checkpoint_id)
                        .await?
                        .ok_or(PortError::NotFound(NotFound::Checkpoint(checkpoint_id)))?,
                ),
                None => checkpoints.head().await?,
            };
            executor::update_state(
                &graph,
                update.thread_id,
                base.as_ref(),
                update.values.as_ref(),
                update.as_node.as_deref(),
            )
            .map_err(EngineError::Invalid)
        })
    }
}
