//! Engines: what executes a graph. The `Engine` trait is all the runtime and the HTTP layer know
//! of it: describing a graph (drawing, schemas, subgraphs), starting one attempt of a run with a
//! fenced checkpoint port and a stream to publish on (dropping the execution stops it), and
//! reading and updating a thread's state. `Engines` maps each graph id to its engine. Engines
//! live in their own folders (`toml/`; later `python/`) and only `startup.rs` names them.
//! Nothing here names storage, actix or actix-web.

pub mod ports;
mod state;
pub mod toml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{CheckpointId, ThreadId};
use crate::domain::query::HistoryQuery;
use crate::domain::run::{Run, RunError, RunKwargs};
use crate::domain::JsonMap;
use crate::stream::RunStream;
pub use ports::{PortError, PortFuture, RunCheckpoints, ThreadCheckpoints};
pub use state::{stored_history, stored_state, StateAt};

/// Why an engine could not describe a graph or update a state.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine does not serve this graph.
    #[error("graph {0} is not served by this engine")]
    UnknownGraph(String),
    /// A state update the graph refuses (a client mistake: 400); the text says why.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing through a port failed.
    #[error("{0:?}")]
    Port(PortError),
}

impl From<PortError> for EngineError {
    fn from(error: PortError) -> Self {
        EngineError::Port(error)
    }
}

/// Everything one attempt of a run needs to start.
pub struct RunStart {
    /// The run, with its typed arguments (`kwargs.command` parsed, `kwargs.stream_mode` typed).
    pub run: Run,
    /// This attempt's number: it is reported on the stream and in checkpoint metadata, and the
    /// checkpoint port's writes are fenced on it.
    pub attempt: u32,
    /// A crash (or a restart of the thread's actor) left the run `running`: the attempt
    /// continues from the run's latest checkpoint instead of applying its input again.
    pub recovered: bool,
    /// The thread's checkpoints and this attempt's fenced writes.
    pub checkpoints: Arc<dyn RunCheckpoints>,
    /// Where the run's events go.
    pub stream: Arc<RunStream>,
    /// A node still running after this long fails the run with NodeTimeoutError.
    pub node_timeout: Option<Duration>,
}

/// How a run's execution ended, as the engine saw it.
#[derive(Debug)]
pub enum RunExit {
    /// Finished, possibly paused at a breakpoint or an interrupt (`next` non-empty); `values`
    /// carries `__interrupt__` when it paused at interrupts.
    Completed {
        values: Arc<JsonMap>,
        next: Vec<String>,
    },
    /// The graph failed.
    Failed(RunError),
    /// Storage no longer has the attempt in flight: it stopped without writing anything more.
    Fenced,
}

/// A started attempt.
pub struct Execution {
    /// Resolves with how the run ended. Dropping it stops the run: its node tasks are aborted,
    /// their requests dropped and their processes killed.
    pub ended: BoxFuture<'static, RunExit>,
}

/// A state update (`POST /threads/{t}/state`): `values` applied as if `as_node` wrote them, on
/// top of the checkpoint `checkpoint_id` (default: the latest).
#[derive(Clone, Debug)]
pub struct StateUpdate {
    pub thread_id: ThreadId,
    pub graph_id: String,
    pub values: Option<Value>,
    pub as_node: Option<String>,
    pub checkpoint_id: Option<CheckpointId>,
}

/// An engine's answer.
pub type EngineFuture<T> = BoxFuture<'static, Result<T, EngineError>>;

/// What executes graphs. One engine serves several graphs; `Engines` routes by graph id.
pub trait Engine: Send + Sync + 'static {
    /// The graphs this engine serves, in a stable order.
    fn graph_ids(&self) -> Vec<String>;

    /// The drawable graph (`GET /assistants/{id}/graph`).
    fn drawing(&self, graph_id: &str) -> EngineFuture<Value>;

    /// The JSON schemas of state, input, output, config and context (`/schemas`).
    fn schemas(&self, graph_id: &str) -> EngineFuture<Value>;

    /// The schemas of the graph's subgraphs by namespace, those under `namespace` when given,
    /// nested ones too with `recurse` (`/subgraphs`).
    fn subgraphs(
        &self,
        graph_id: &str,
        namespace: Option<&str>,
        recurse: bool,
    ) -> EngineFuture<Value>;

    /// Checks a run's arguments against its graph before the run is accepted: what cannot run
    /// (a `command.goto` to a node the graph does not have, say) is refused with the reason, a
    /// client mistake, and nothing is written. By default, everything is accepted.
    fn check_run(&self, graph_id: &str, kwargs: &RunKwargs) -> Result<(), String> {
        let _ = (graph_id, kwargs);
        Ok(())
    }

    /// Starts one attempt of a run: applies its input (or command, or continues it) through the
    /// checkpoint port and publishes the run's events, `metadata` first. Resolves once the
    /// attempt has begun in storage (or failed to: the run fails with that error), with the
    /// execution that then runs to its end.
    fn start(&self, start: RunStart) -> BoxFuture<'static, Result<Execution, RunError>>;

    /// The state at a checkpoint as `GET /threads/{t}/state` renders it (`None`: the thread
    /// has no such checkpoint). By default, the stored checkpoint as it is.
    fn state(
        &self,
        checkpoints: Arc<dyn ThreadCheckpoints>,
        at: StateAt,
    ) -> PortFuture<Option<Value>> {
        stored_state(checkpoints, at)
    }

    /// The thread's states, newest first (`/history`). By default, the stored checkpoints.
    fn history(
        &self,
        checkpoints: Arc<dyn ThreadCheckpoints>,
        query: HistoryQuery,
    ) -> PortFuture<Vec<Value>> {
        stored_history(checkpoints, query)
    }

    /// Builds the `source: update` checkpoint of a state update, reading what it needs through
    /// `checkpoints`; the caller writes it (and polls this future in a task of its own, so a
    /// panic in graph code, such as a reducer, fails only this request).
    fn update_state(
        &self,
        update: StateUpdate,
        checkpoints: Arc<dyn ThreadCheckpoints>,
    ) -> EngineFuture<Checkpoint>;
}

/// Every served graph by id, each with the engine that serves it.
#[derive(Default)]
pub struct Engines {
    graphs: BTreeMap<String, Arc<dyn Engine>>,
}

impl Engines {
    /// Adds every graph `engine` serves; a graph id served twice is an error naming it.
    pub fn add(&mut self, engine: Arc<dyn Engine>) -> Result<(), String> {
        for graph_id in engine.graph_ids() {
            if self.graphs.contains_key(&graph_id) {
                return Err(format!("graph '{graph_id}' is declared by two engines"));
            }
            self.graphs.insert(graph_id, engine.clone());
        }
        Ok(())
    }

    /// The engine of `graph_id`.
    pub fn get(&self, graph_id: &str) -> Option<&Arc<dyn Engine>> {
        self.graphs.get(graph_id)
    }

    /// Whether `graph_id` is served.
    pub fn serves(&self, graph_id: &str) -> bool {
        self.graphs.contains_key(graph_id)
    }

    /// Every served graph id, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.graphs.keys().map(String::as_str)
    }
}
