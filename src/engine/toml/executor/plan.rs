//! What a run executes with and what execution gives back: the `RunPlan` fixed when a run starts
//! (and derived for a subgraph task), the `Cursor` of where execution stands, `Begin`, `Finish`,
//! `Halt`, the `CheckpointSink` that persists checkpoints, and the metadata they all carry.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::tasks::pending_tasks;
use crate::domain::checkpoint::{Checkpoint, CheckpointSource, Interrupt, TaskRecord};
use crate::domain::command::Command;
use crate::domain::ids::{CheckpointId, RunId, ThreadId};
use crate::domain::run::{Breakpoints, RunError};
use crate::domain::time::Timestamp;
use crate::domain::JsonMap;
use crate::engine::toml::emit::{Emitter, TaskInfo};
use crate::engine::toml::graph::Graph;

/// Default `recursion_limit`: supersteps a run may execute.
pub const DEFAULT_RECURSION_LIMIT: u64 = 25;

/// Everything a run needs to execute, fixed when it starts.
pub struct RunPlan {
    pub graph: Arc<Graph>,
    pub thread_id: ThreadId,
    pub run_id: RunId,
    /// The run input; `None` (or JSON `null`) continues from the current checkpoint.
    pub input: Option<Value>,
    /// What nodes see as their configuration.
    pub node_config: Arc<JsonMap>,
    /// Copied into the metadata of every checkpoint the run writes.
    pub base_metadata: JsonMap,
    pub recursion_limit: u64,
    /// The graph's and the run's breakpoints.
    pub interrupt_before: Vec<Breakpoints>,
    pub interrupt_after: Vec<Breakpoints>,
    /// Renders what happens for the run's stream.
    pub emitter: Arc<Emitter>,
    /// `command`: resume interrupts, update the state, go to nodes. Takes precedence over input.
    pub command: Option<Command>,
    /// The checkpoint namespace: empty for the run's graph, `node:task_id` for a subgraph.
    pub namespace: String,
    /// `metadata.parents` of every checkpoint: the parent graphs' checkpoints by namespace.
    pub parents: JsonMap,
    /// A node task still running after this long fails the run with NodeTimeoutError.
    pub node_timeout: Option<std::time::Duration>,
}

/// Where execution stands: the latest checkpoint and what runs next.
#[derive(Clone, Debug)]
pub struct Cursor {
    pub checkpoint_id: CheckpointId,
    pub step: i64,
    pub values: JsonMap,
    pub next: Vec<String>,
    /// The pending tasks, with the results of tasks that completed in an interrupted superstep.
    pub tasks: Vec<TaskRecord>,
    /// The nodes that wrote this state.
    pub updated_by: Vec<String>,
    /// Resume values for the next superstep, by node.
    /// Resume values for the next superstep, by the position of the task they answer.
    pub resume: HashMap<usize, Value>,
}

/// What a run writes when it starts, and where it then continues.
#[derive(Debug)]
pub struct Begin {
    /// Written in the same transaction that marks the run `running`.
    pub checkpoints: Vec<Checkpoint>,
    /// Where execution continues (nothing runs when its `next` is empty).
    pub cursor: Cursor,
    /// True when continuing a checkpoint rather than applying new input: breakpoints before the
    /// first step do not fire again.
    pub resuming: bool,
}

/// How a run ended without failing.
#[derive(Clone, Debug)]
pub struct Finish {
    pub values: JsonMap,
    /// Non-empty when the run stopped at a breakpoint or an interrupt.
    pub next: Vec<String>,
    /// The dynamic interrupts the run stopped at.
    pub interrupts: Vec<Interrupt>,
}

/// Why execution stopped early.
#[derive(Debug)]
pub enum Halt {
    /// The graph failed; the run ends with status `error`.
    Failed(RunError),
    /// The run is no longer `running` in storage (it was stopped or rolled back): it must not write
    /// or report anything more.
    Fenced,
}

impl From<RunError> for Halt {
    fn from(error: RunError) -> Self {
        Halt::Failed(error)
    }
}

/// Receives each checkpoint before the next superstep starts.
pub trait CheckpointSink: Send {
    /// Persists a checkpoint of this run.
    fn save(&mut self, checkpoint: Checkpoint) -> BoxFuture<'static, Result<(), Halt>>;

    /// A sink for the same run that a subgraph task can own.
    fn share(&self) -> Box<dyn CheckpointSink>;
}

/// The checkpoint metadata every checkpoint of a run's attempt shares: scalar `configurable` and
/// run metadata entries (nested values and internal keys skipped), then `run_attempt`,
/// `thread_id` and `run_id`.
pub fn base_metadata(
    configurable: &JsonMap,
    run_metadata: &JsonMap,
    thread_id: ThreadId,
    run_id: RunId,
    attempt: u32,
) -> JsonMap {
    const SKIPPED: [&str; 9] = [
        "thread_id",
        "run_id",
        "checkpoint_id",
        "checkpoint_ns",
        "checkpoint_map",
        "langgraph_step",
        "langgraph_node",
        "langgraph_triggers",
        "langgraph_path",
    ];
    let mut metadata = JsonMap::new();
    for (key, value) in configurable.iter().chain(run_metadata.iter()) {
        let scalar = matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_));
        if scalar && !key.starts_with("__") && !SKIPPED.contains(&key.as_str()) {
            metadata.insert(key.clone(), value.clone());
        }
    }
    metadata.insert("run_attempt".into(), json!(attempt));
    metadata.insert("thread_id".into(), json!(thread_id));
    metadata.insert("run_id".into(), json!(run_id));
    metadata
}

impl RunPlan {
    pub(super) fn checkpoint(
        &self,
        parent: Option<CheckpointId>,
        step: i64,
        source: CheckpointSource,
        values: JsonMap,
        next: Vec<String>,
        updated_by: Vec<String>,
    ) -> Checkpoint {
        let checkpoint_id = CheckpointId::generate();
        let tasks = pending_tasks(&checkpoint_id, step, &next);
        let mut metadata = self.base_metadata.clone();
        metadata.insert("source".into(), json!(source.as_str()));
        metadata.insert("step".into(), json!(step));
        metadata.insert("parents".into(), Value::Object(self.parents.clone()));
        Checkpoint {
            thread_id: self.thread_id,
            checkpoint_ns: self.namespace.clone(),
            checkpoint_id,
            parent_checkpoint_id: parent,
            run_id: Some(self.run_id),
            step,
            source,
            values,
            next,
            tasks,
            metadata,
            created_at: Timestamp::now(),
            updated_by,
        }
    }

    /// The plan of `graph` run as the task `task` of this plan's graph, from `checkpoint`.
    pub(super) fn subgraph(
        &self,
        graph: Arc<Graph>,
        task: &TaskInfo,
        checkpoint: CheckpointId,
    ) -> RunPlan {
        let own = format!("{}:{}", task.node, task.id);
        let namespace = if self.namespace.is_empty() {
            own
        } else {
            format!("{}|{own}", self.namespace)
        };
        let mut parents = self.parents.clone();
        parents.insert(self.namespace.clone(), json!(checkpoint));
        RunPlan {
            graph,
            thread_id: self.thread_id,
            run_id: self.run_id,
            input: None,
            node_config: self.node_config.clone(),
            base_metadata: self.base_metadata.clone(),
            recursion_limit: self.recursion_limit,
            interrupt_before: vec![],
            interrupt_after: vec![],
            emitter: Arc::new(self.emitter.subgraph(namespace.clone())),
            command: None,
            namespace,
            parents,
            node_timeout: self.node_timeout,
        }
    }

    pub(super) fn breaks(breakpoints: &[Breakpoints], nodes: &[String]) -> bool {
        breakpoints
            .iter()
            .any(|points| nodes.iter().any(|node| points.contains(node)))
    }
}

/// The cursor at `checkpoint`, with no resume values.
pub(super) fn cursor_of(checkpoint: &Checkpoint) -> Cursor {
    Cursor {
        checkpoint_id: checkpoint.checkpoint_id,
        step: checkpoint.step,
        values: checkpoint.values.clone(),
        next: checkpoint.next.clone(),
        tasks: checkpoint.tasks.clone(),
        updated_by: checkpoint.updated_by.clone(),
        resume: HashMap::new(),
    }
}
