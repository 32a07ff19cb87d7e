//! The superstep loop. `begin` computes, without IO, what a run writes before its first node runs
//! (input or fork checkpoints); `execute` runs supersteps: all triggered nodes concurrently, each in
//! its own task, then their updates merged through the reducers and one checkpoint handed to the
//! `CheckpointSink` before the next step. Dropping the `execute` future aborts the node tasks.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::emit::{Emitter, NodeStream, TaskInfo};
use super::graph::{Graph, START};
use super::node::{NodeError, NodeInput, NodeResult};
use crate::domain::checkpoint::{Checkpoint, CheckpointSource, Interrupt, TaskRecord};
use crate::domain::ids::{task_id, CheckpointId, RunId, ThreadId};
use crate::domain::run::{Breakpoints, RunError};
use crate::domain::time::Timestamp;
use crate::domain::JsonMap;

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

/// A run's `command`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command {
    /// The value for the pending interrupt, or `{interrupt_id: value, …}`.
    pub resume: Option<Value>,
    /// A state update applied through the reducers before continuing.
    pub update: Option<JsonMap>,
    /// Nodes to run next instead of the pending ones.
    pub goto: Vec<Goto>,
}

/// A `command.goto` target: a node, run on the state, or a `Send`: a node run on its own input.
#[derive(Clone, Debug, PartialEq)]
pub struct Goto {
    pub node: String,
    pub send: Option<JsonMap>,
}

impl Goto {
    fn parse(value: &Value) -> Result<Goto, String> {
        const EXPECTED: &str = "`goto` must be a node name, a Send ({\"node\": name, \"input\": object}) or a list of them";
        match value {
            Value::String(node) => Ok(Goto {
                node: node.clone(),
                send: None,
            }),
            Value::Object(fields) => {
                let node = fields.get("node").and_then(Value::as_str);
                let input = match fields.get("input") {
                    None | Some(Value::Null) => Some(JsonMap::new()),
                    Some(Value::Object(input)) => Some(input.clone()),
                    Some(_) => None,
                };
                let known = fields.keys().all(|key| key == "node" || key == "input");
                match (node, input, known) {
                    (Some(node), Some(input), true) => Ok(Goto {
                        node: node.to_owned(),
                        send: Some(input),
                    }),
                    _ => Err(format!("{EXPECTED}, got {value}")),
                }
            }
            other => Err(format!("{EXPECTED}, got {other}")),
        }
    }
}

impl Command {
    /// Parses `{resume?, update?, goto?}`; errors say what is wrong, for a 422.
    pub fn parse(value: &Value) -> Result<Command, String> {
        let Value::Object(fields) = value else {
            return Err(format!("expected an object, got {value}"));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|key| !["resume", "update", "goto"].contains(&key.as_str()))
        {
            return Err(format!(
                "unknown field `{unknown}`: expected resume, update or goto"
            ));
        }
        let update = match fields.get("update") {
            None | Some(Value::Null) => None,
            Some(Value::Object(update)) => Some(update.clone()),
            Some(other) => return Err(format!("`update` must be an object, got {other}")),
        };
        let goto = match fields.get("goto") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(targets)) => {
                targets.iter().map(Goto::parse).collect::<Result<_, _>>()?
            }
            Some(target) => vec![Goto::parse(target)?],
        };
        Ok(Command {
            resume: fields
                .get("resume")
                .filter(|resume| !resume.is_null())
                .cloned(),
            update,
            goto,
        })
    }
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

/// The checkpoint metadata every checkpoint of a run shares: scalar `configurable` and run
/// metadata entries (nested values and internal keys skipped), then `thread_id` and `run_id`.
pub fn base_metadata(
    configurable: &JsonMap,
    run_metadata: &JsonMap,
    thread_id: ThreadId,
    run_id: RunId,
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
    metadata.insert("thread_id".into(), json!(thread_id));
    metadata.insert("run_id".into(), json!(run_id));
    metadata
}

impl RunPlan {
    fn checkpoint(
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
    fn subgraph(&self, graph: Arc<Graph>, task: &TaskInfo, checkpoint: CheckpointId) -> RunPlan {
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

    fn breaks(breakpoints: &[Breakpoints], nodes: &[String]) -> bool {
        breakpoints
            .iter()
            .any(|points| nodes.iter().any(|node| points.contains(node)))
    }
}

/// The tasks pending at a checkpoint: one per node of `next`, with deterministic ids.
fn pending_tasks(checkpoint_id: &CheckpointId, step: i64, next: &[String]) -> Vec<TaskRecord> {
    task_ids(checkpoint_id, step + 1, next)
        .into_iter()
        .zip(next)
        .map(|(id, name)| TaskRecord {
            id,
            name: name.clone(),
            error: None,
            result: None,
            interrupts: vec![],
            send: None,
        })
        .collect()
}

/// The ids of the tasks of superstep `step` run from `checkpoint_id`: a node that `Send`s
/// trigger more than once gets a distinct id per task.
fn task_ids(checkpoint_id: &CheckpointId, step: i64, next: &[String]) -> Vec<uuid::Uuid> {
    next.iter()
        .enumerate()
        .map(|(index, name)| {
            match next[..index]
                .iter()
                .filter(|earlier| *earlier == name)
                .count()
            {
                0 => task_id(checkpoint_id, step, name),
                repeat => task_id(checkpoint_id, step, &format!("{name}#{repeat}")),
            }
        })
        .collect()
}

/// Copies what pending tasks carry (their `Send` input, and with `results` the result of a task
/// that completed) from the same tasks at an earlier checkpoint, matched by position.
fn carry_over(tasks: &mut [TaskRecord], earlier: &[TaskRecord], results: bool) {
    for (task, old) in tasks.iter_mut().zip(earlier) {
        if task.name == old.name {
            task.send = old.send.clone();
            if results {
                task.result = old.result.clone();
            }
        }
    }
}

fn cursor_of(checkpoint: &Checkpoint) -> Cursor {
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

const MULTIPLE_INTERRUPTS: &str = "When there are multiple pending interrupts, you must specify the interrupt id when resuming. Docs: https://docs.langchain.com/oss/python/langgraph/add-human-in-the-loop#resume-multiple-interrupts-with-one-invocation";

/// Which task each resume value goes to (by position: several tasks of one node, started by
/// Sends, are answered one by one): a bare value answers the only pending interrupt;
/// `{interrupt_id: value, …}` answers those named.
fn resume_by_task(resume: &Value, tasks: &[TaskRecord]) -> Result<HashMap<usize, Value>, RunError> {
    let pending: Vec<(usize, &Interrupt)> = tasks
        .iter()
        .enumerate()
        .flat_map(|(index, task)| {
            task.interrupts
                .iter()
                .map(move |interrupt| (index, interrupt))
        })
        .collect();
    if pending.is_empty() {
        return Err(RunError::new(
            "ValueError",
            "There is no pending interrupt to resume on this thread",
        ));
    }
    let by_id = resume.as_object().filter(|map| {
        !map.is_empty()
            && map
                .keys()
                .all(|key| pending.iter().any(|(_, interrupt)| interrupt.id == *key))
    });
    match (by_id, pending.as_slice()) {
        (Some(map), _) => Ok(pending
            .iter()
            .filter_map(|(index, interrupt)| {
                map.get(&interrupt.id).map(|value| (*index, value.clone()))
            })
            .collect()),
        (None, [(index, _)]) => Ok(HashMap::from([(*index, resume.clone())])),
        (None, _) => Err(RunError::new("RuntimeError", MULTIPLE_INTERRUPTS)),
    }
}

/// The interrupt id of a task's interrupt.
fn interrupt_id(task: &uuid::Uuid) -> String {
    uuid::Uuid::new_v5(task, b"interrupt").simple().to_string()
}

/// Computes what a run writes before its first node: with input, an `input` checkpoint (the
/// `__start__` task pending) and the `loop` checkpoint with the input applied; without input, a
/// `fork` copy when starting from an older checkpoint, or nothing. `base` is the checkpoint to start
/// from: the thread's latest, or the one the run names (`fork` true).
pub fn begin(plan: &RunPlan, base: Option<&Checkpoint>, fork: bool) -> Result<Begin, RunError> {
    if let Some(command) = &plan.command {
        return begin_command(plan, command, base);
    }
    let input = plan.input.as_ref().filter(|input| !input.is_null());
    match (input, base) {
        (Some(input), base) => {
            let Value::Object(update) = input else {
                return Err(RunError::new(
                    "InvalidUpdateError",
                    format!("Expected dict as graph input, got {input}"),
                ));
            };
            let (parent, step, mut values) = match base {
                Some(base) => (Some(base.checkpoint_id), base.step + 1, base.values.clone()),
                None => (None, -1, plan.graph.initial_values()),
            };
            let mut input_checkpoint = plan.checkpoint(
                parent,
                step,
                CheckpointSource::Input,
                values.clone(),
                vec![START.into()],
                vec![],
            );
            // On an input checkpoint the pending `__start__` task's result is the run input.
            input_checkpoint.tasks[0].result = Some(input.clone());
            plan.graph.apply_updates(&mut values, &[update])?;
            let next = plan.graph.next_after(&[START.into()], &values);
            let start_checkpoint = plan.checkpoint(
                Some(input_checkpoint.checkpoint_id),
                step + 1,
                CheckpointSource::Loop,
                values.clone(),
                next,
                vec![START.into()],
            );
            Ok(Begin {
                cursor: cursor_of(&start_checkpoint),
                checkpoints: vec![input_checkpoint, start_checkpoint],
                resuming: false,
            })
        }
        (None, Some(base)) if fork => {
            let mut copy = plan.checkpoint(
                Some(base.checkpoint_id),
                base.step + 1,
                CheckpointSource::Fork,
                base.values.clone(),
                base.next.clone(),
                base.updated_by.clone(),
            );
            carry_over(&mut copy.tasks, &base.tasks, false);
            Ok(Begin {
                cursor: cursor_of(&copy),
                checkpoints: vec![copy],
                resuming: true,
            })
        }
        (None, Some(base)) => Ok(Begin {
            cursor: cursor_of(base),
            checkpoints: vec![],
            resuming: true,
        }),
        (None, None) => Err(RunError::new(
            "EmptyInputError",
            "Received no input for __start__ and the thread has no checkpoint to continue from",
        )),
    }
}

/// Where a run left `running` by a crash continues, given `head`, the thread's latest checkpoint,
/// which this run wrote. It goes on as it would have: from a checkpoint written when it began
/// (a `fork` copy or a command's `input`) without firing the breakpoints before those nodes
/// again; from one written after a superstep with them, or it ends there at once when that
/// superstep's nodes are in `interrupt_after` (`Err(finish)`).
pub fn recover(plan: &RunPlan, head: &Checkpoint) -> Result<Begin, Finish> {
    let mut cursor = cursor_of(head);
    let began_here = matches!(
        head.source,
        CheckpointSource::Fork | CheckpointSource::Input
    );
    if began_here {
        // A command's resume values had not been used yet: answer the same interrupts again.
        if let Some(resume) = plan
            .command
            .as_ref()
            .and_then(|command| command.resume.as_ref())
        {
            cursor.resume = resume_by_task(resume, &head.tasks).unwrap_or_default();
        }
    } else if !cursor.next.is_empty() && RunPlan::breaks(&plan.interrupt_after, &head.updated_by) {
        return Err(Finish {
            values: cursor.values,
            next: cursor.next,
            interrupts: vec![],
        });
    }
    Ok(Begin {
        checkpoints: vec![],
        cursor,
        resuming: began_here,
    })
}

/// Starts from a `command`: resume values resolved against the base's pending interrupts, then
/// `update` and `goto` (if any) written as one `input` checkpoint before the first step.
fn begin_command(
    plan: &RunPlan,
    command: &Command,
    base: Option<&Checkpoint>,
) -> Result<Begin, RunError> {
    let Some(base) = base else {
        return Err(RunError::new(
            "EmptyInputError",
            "A command needs a thread with a checkpoint to continue from",
        ));
    };
    let resume = match &command.resume {
        Some(resume) => resume_by_task(resume, &base.tasks)?,
        None => HashMap::new(),
    };
    if command.update.is_none() && command.goto.is_empty() {
        let mut cursor = cursor_of(base);
        cursor.resume = resume;
        return Ok(Begin {
            cursor,
            checkpoints: vec![],
            resuming: true,
        });
    }
    let mut values = base.values.clone();
    if let Some(update) = &command.update {
        plan.graph.apply_updates(&mut values, &[update])?;
    }
    let next = if command.goto.is_empty() {
        base.next.clone()
    } else {
        command.goto.iter().map(|goto| goto.node.clone()).collect()
    };
    let mut checkpoint = plan.checkpoint(
        Some(base.checkpoint_id),
        base.step + 1,
        CheckpointSource::Input,
        values,
        next,
        base.updated_by.clone(),
    );
    // Without `goto` the same nodes stay pending: the results of those that completed in an
    // interrupted superstep carry over. Nodes named by `goto` always run.
    if command.goto.is_empty() {
        carry_over(&mut checkpoint.tasks, &base.tasks, true);
    } else {
        for (task, goto) in checkpoint.tasks.iter_mut().zip(&command.goto) {
            task.send = goto.send.clone().map(Value::Object);
        }
    }
    let mut cursor = cursor_of(&checkpoint);
    cursor.resume = if command.goto.is_empty() {
        resume
    } else {
        // The pending tasks changed: a resume value goes to the first new task of its node.
        let mut moved = HashMap::new();
        for (index, value) in resume {
            let name = &base.tasks[index].name;
            if let Some(position) = (0..checkpoint.tasks.len()).find(|position| {
                checkpoint.tasks[*position].name == *name && !moved.contains_key(position)
            }) {
                moved.insert(position, value);
            }
        }
        moved
    };
    Ok(Begin {
        cursor,
        checkpoints: vec![checkpoint],
        resuming: true,
    })
}

/// Builds the `source: update` checkpoint of a state update: `values` (an object, a list of
/// objects, or null) applied through the reducers as if `as_node` wrote them, on top of `base`.
/// `as_node` defaults to the node that wrote `base` (`__start__` on a fresh thread); the next nodes
/// follow from its edges. Errors are client mistakes, described for a 400.
pub fn update_state(
    graph: &Graph,
    thread_id: ThreadId,
    base: Option<&Checkpoint>,
    values: Option<&Value>,
    as_node: Option<&str>,
) -> Result<Checkpoint, String> {
    let as_node = match as_node {
        Some(name) if name == START || graph.node(name).is_some() => name.to_owned(),
        Some(name) => return Err(format!("Node {name} does not exist")),
        None => match base.map(|base| base.updated_by.as_slice()) {
            None | Some([]) => START.to_owned(),
            Some([single]) => single.clone(),
            Some(_) => return Err("Ambiguous update, specify as_node".to_owned()),
        },
    };
    let updates: Vec<&JsonMap> = match values {
        None | Some(Value::Null) => vec![],
        Some(Value::Object(update)) => vec![update],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_object()
                    .ok_or("values must be an object, a list of objects or null")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("values must be an object, a list of objects or null".to_owned()),
    };
    let mut state = base.map_or_else(|| graph.initial_values(), |base| base.values.clone());
    for update in updates {
        graph
            .apply_updates(&mut state, &[update])
            .map_err(|error| format!("{}: {}", error.error, error.message))?;
    }
    let next = graph.next_after(std::slice::from_ref(&as_node), &state);
    let step = base.map_or(-1, |base| base.step) + 1;
    let checkpoint_id = CheckpointId::generate();
    let tasks = pending_tasks(&checkpoint_id, step, &next);
    let mut metadata = JsonMap::new();
    metadata.insert("graph_id".into(), json!(graph.id));
    metadata.insert("thread_id".into(), json!(thread_id));
    metadata.insert("source".into(), json!(CheckpointSource::Update.as_str()));
    metadata.insert("step".into(), json!(step));
    metadata.insert("parents".into(), json!({}));
    Ok(Checkpoint {
        thread_id,
        checkpoint_ns: String::new(),
        checkpoint_id,
        parent_checkpoint_id: base.map(|base| base.checkpoint_id),
        run_id: None,
        step,
        source: CheckpointSource::Update,
        values: state,
        next,
        tasks,
        metadata,
        created_at: Timestamp::now(),
        updated_by: vec![as_node],
    })
}

/// Aborts a spawned task when dropped, so dropping the executor stops its nodes.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(error) => error.to_string(),
    }
}

/// A task of a superstep: running, or completed before (its result reused).
enum Running {
    Done,
    Task(AbortOnDrop<NodeResult>),
}

/// Some tasks of the superstep interrupted: the state stays as it was, and a checkpoint records
/// the same pending nodes with the interrupts and the results of the tasks that completed, so
/// a resume re-runs only the interrupted ones.
async fn interrupted(
    plan: &RunPlan,
    cursor: Cursor,
    step: i64,
    results: Vec<Option<JsonMap>>,
    raised: Vec<(usize, Value)>,
    sink: &mut dyn CheckpointSink,
) -> Result<Finish, Halt> {
    let mut checkpoint = plan.checkpoint(
        Some(cursor.checkpoint_id),
        step,
        CheckpointSource::Loop,
        cursor.values,
        cursor.next,
        cursor.updated_by,
    );
    carry_over(&mut checkpoint.tasks, &cursor.tasks, false);
    for (index, (task, result)) in checkpoint.tasks.iter_mut().zip(results).enumerate() {
        match raised.iter().find(|(raised_by, _)| *raised_by == index) {
            Some((_, value)) => task.interrupts.push(Interrupt {
                id: interrupt_id(&task.id),
                value: value.clone(),
            }),
            None => task.result = Some(result.map_or(Value::Null, Value::Object)),
        }
    }
    sink.save(checkpoint.clone()).await?;
    let interrupts: Vec<Interrupt> = checkpoint.interrupts().into_iter().cloned().collect();
    plan.emitter.interrupted(&checkpoint.values, &interrupts);
    plan.emitter.checkpoint(&checkpoint);
    Ok(Finish {
        values: checkpoint.values,
        next: checkpoint.next,
        interrupts,
    })
}

/// Runs a subgraph task: the parent's state (its channels that the subgraph has) is the input;
/// the subgraph checkpoints in its own namespace; its final values become the task's update.
fn subgraph(
    plan: RunPlan,
    parent: Arc<Graph>,
    state: Arc<JsonMap>,
    mut sink: Box<dyn CheckpointSink>,
) -> BoxFuture<'static, NodeResult> {
    fn error_of(halt: Halt) -> NodeError {
        match halt {
            Halt::Failed(error) => NodeError::Failed(error),
            Halt::Fenced => NodeError::Fenced,
        }
    }
    Box::pin(async move {
        let mut plan = plan;
        let input = plan.graph.input_from(&state);
        plan.input = Some(Value::Object(input));
        let begin = begin(&plan, None, false)?;
        for checkpoint in &begin.checkpoints {
            sink.save(checkpoint.clone()).await.map_err(error_of)?;
        }
        plan.emitter
            .run_began(&begin.checkpoints, &begin.cursor.values);
        let finish = execute(&plan, begin.cursor, false, sink.as_mut())
            .await
            .map_err(error_of)?;
        if !finish.interrupts.is_empty() {
            return Err(RunError::new(
                "SubgraphInterruptError",
                format!(
                    "graph '{}' paused with an interrupt inside a subgraph; interrupts in subgraphs are not supported yet",
                    plan.graph.id
                ),
            )
            .into());
        }
        Ok(Some(parent.output_from(&plan.graph, &state, finish.values)))
    })
}

/// Executes supersteps from `cursor` until no node is triggered, a breakpoint fires, a node
/// fails, the recursion limit is hit, or the sink fences the run.
pub async fn execute(
    plan: &RunPlan,
    cursor: Cursor,
    resuming: bool,
    sink: &mut dyn CheckpointSink,
) -> Result<Finish, Halt> {
    let mut cursor = cursor;
    let mut first_step = true;
    let mut supersteps: u64 = 0;
    loop {
        if cursor.next.is_empty() {
            return Ok(Finish {
                values: cursor.values,
                next: vec![],
                interrupts: vec![],
            });
        }
        let skip_breakpoint = first_step && resuming;
        if !skip_breakpoint && RunPlan::breaks(&plan.interrupt_before, &cursor.next) {
            plan.emitter.breakpoint();
            return Ok(Finish {
                values: cursor.values,
                next: cursor.next,
                interrupts: vec![],
            });
        }
        supersteps += 1;
        if supersteps > plan.recursion_limit {
            return Err(Halt::Failed(RunError::new(
                "GraphRecursionError",
                format!(
                    "Recursion limit of {} reached without hitting a stop condition. You can increase the limit by setting the `recursion_limit` config key.",
                    plan.recursion_limit
                ),
            )));
        }
        let step = cursor.step + 1;
        let state = Arc::new(cursor.values.clone());
        let mut tasks: Vec<(TaskInfo, Option<Value>, Running)> =
            Vec::with_capacity(cursor.next.len());
        let ids = task_ids(&cursor.checkpoint_id, step, &cursor.next);
        for (index, (name, id)) in cursor.next.iter().zip(ids).enumerate() {
            let task = TaskInfo {
                id,
                node: name.clone(),
                step,
                lc_run_id: uuid::Uuid::now_v7(),
            };
            let record = cursor
                .tasks
                .get(index)
                .filter(|record| record.name == *name);
            // A task that completed in a superstep another task interrupted keeps its result.
            let completed = record
                .filter(|record| record.interrupts.is_empty())
                .and_then(|record| record.result.clone())
                .filter(|_| name != START);
            // A task a `Send` started runs on the Send's input instead of the state.
            let state = match record.and_then(|record| record.send.as_ref()) {
                Some(Value::Object(input)) => Arc::new(input.clone()),
                _ => state.clone(),
            };
            if let Some(result) = completed {
                tasks.push((task, Some(result), Running::Done));
                continue;
            }
            plan.emitter.task_started(&task, &state);
            let definition = plan.graph.node(name);
            if let Some(graph) = definition.and_then(|definition| definition.subgraph.clone()) {
                let child = plan.subgraph(graph, &task, cursor.checkpoint_id);
                let run = subgraph(child, plan.graph.clone(), state.clone(), sink.share());
                let handle = tokio::spawn(run);
                tasks.push((task, None, Running::Task(AbortOnDrop(handle))));
                continue;
            }
            let node = definition.map(|definition| definition.node.clone());
            let input = NodeInput {
                node: name.clone(),
                step,
                state: state.clone(),
                config: plan.node_config.clone(),
                stream: NodeStream::new(plan.emitter.clone(), task.clone()),
                resume: cursor.resume.get(&index).cloned(),
            };
            let limit = plan.node_timeout;
            let handle = tokio::spawn(async move {
                let Some(node) = node else {
                    return Err(RunError::new(
                        "TaskNotFound",
                        format!("node '{}' is not part of the graph", input.node),
                    )
                    .into());
                };
                let Some(limit) = limit else {
                    return node.invoke(input).await;
                };
                let name = input.node.clone();
                // Dropping the node's future on timeout stops it (and kills its processes).
                tokio::time::timeout(limit, node.invoke(input))
                    .await
                    .unwrap_or_else(|_| {
                        Err(RunError::new(
                            "NodeTimeoutError",
                            format!(
                                "node '{name}' did not finish within {}s (runtime.node_timeout_seconds)",
                                limit.as_secs_f64()
                            ),
                        )
                        .into())
                    })
            });
            tasks.push((task, None, Running::Task(AbortOnDrop(handle))));
        }
        // Every task is already running; awaiting them in order only fixes the merge order.
        let mut results: Vec<Option<JsonMap>> = Vec::with_capacity(tasks.len());
        let mut interrupts: Vec<(usize, Value)> = vec![];
        for (index, (info, completed, running)) in tasks.iter_mut().enumerate() {
            let task = match running {
                Running::Done => {
                    results.push(completed.take().and_then(|result| match result {
                        Value::Object(update) => Some(update),
                        _ => None,
                    }));
                    continue;
                }
                Running::Task(task) => task,
            };
            match (&mut task.0).await {
                Ok(Ok(update)) => {
                    plan.emitter.task_finished(info, update.as_ref(), &state);
                    results.push(update);
                }
                Ok(Err(NodeError::Fenced)) => return Err(Halt::Fenced),
                Ok(Err(NodeError::Interrupted(value))) => {
                    interrupts.push((index, value));
                    results.push(None);
                }
                Ok(Err(NodeError::Failed(error))) => return Err(Halt::Failed(error)),
                Err(join_error) => {
                    return Err(Halt::Failed(RunError::new(
                        "NodePanic",
                        format!(
                            "node '{}' panicked: {}",
                            info.node,
                            panic_message(join_error)
                        ),
                    )))
                }
            }
        }
        drop(tasks);
        if !interrupts.is_empty() {
            return interrupted(plan, cursor, step, results, interrupts, sink).await;
        }
        let updates: Vec<&JsonMap> = results.iter().flatten().collect();
        let mut values = cursor.values;
        plan.graph.apply_updates(&mut values, &updates)?;
        let executed = cursor.next;
        let next = plan.graph.next_after(&executed, &values);
        let checkpoint = plan.checkpoint(
            Some(cursor.checkpoint_id),
            step,
            CheckpointSource::Loop,
            values,
            next,
            executed.clone(),
        );
        cursor = cursor_of(&checkpoint);
        sink.save(checkpoint.clone()).await?;
        plan.emitter.values(&cursor.values);
        plan.emitter.checkpoint(&checkpoint);
        if !cursor.next.is_empty() && RunPlan::breaks(&plan.interrupt_after, &executed) {
            plan.emitter.breakpoint();
            return Ok(Finish {
                values: cursor.values,
                next: cursor.next,
                interrupts: vec![],
            });
        }
        first_step = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::node::NativeNodes;
    use crate::graph::parse_spec;

    struct Collect(Vec<Checkpoint>);

    impl CheckpointSink for Collect {
        fn save(&mut self, checkpoint: Checkpoint) -> BoxFuture<'static, Result<(), Halt>> {
            self.0.push(checkpoint);
            Box::pin(async { Ok(()) })
        }

        /// Subgraph checkpoints are not collected.
        fn share(&self) -> Box<dyn CheckpointSink> {
            Box::new(Collect(vec![]))
        }
    }

    fn plan(graph_toml: &str, input: Value) -> RunPlan {
        let graph = crate::graph::Graph::from_spec(
            parse_spec("g", graph_toml).unwrap(),
            &NativeNodes::default(),
        )
        .unwrap();
        let thread_id = ThreadId::generate();
        let run_id = RunId::generate();
        RunPlan {
            graph: Arc::new(graph),
            thread_id,
            run_id,
            input: Some(input),
            node_config: Arc::new(json!({"delay": 0}).as_object().unwrap().clone()),
            base_metadata: base_metadata(&JsonMap::new(), &JsonMap::new(), thread_id, run_id),
            recursion_limit: DEFAULT_RECURSION_LIMIT,
            interrupt_before: vec![],
            interrupt_after: vec![],
            emitter: Arc::new(Emitter::silent()),
            command: None,
            namespace: String::new(),
            parents: JsonMap::new(),
            node_timeout: None,
        }
    }

    const AGENT: &str = include_str!("../../config/graphs/agent.toml");

    #[tokio::test]
    async fn the_agent_answers_a_weather_question_in_four_messages() {
        let plan = plan(
            AGENT,
            json!({"messages": [{"role": "user", "content": "what's the weather in nyc?"}]}),
        );
        let begin = begin(&plan, None, false).unwrap();
        assert_eq!(begin.checkpoints.len(), 2);
        assert_eq!(
            (begin.checkpoints[0].step, begin.checkpoints[0].source),
            (-1, CheckpointSource::Input)
        );
        assert_eq!(begin.checkpoints[0].next, ["__start__"]);
        assert_eq!(begin.checkpoints[1].next, ["agent"]);
        let mut sink = Collect(vec![]);
        let finish = execute(&plan, begin.cursor, begin.resuming, &mut sink)
            .await
            .unwrap();
        let kinds: Vec<&str> = finish.values["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["human", "ai", "tool", "ai"]);
        let steps: Vec<i64> = sink.0.iter().map(|c| c.step).collect();
        assert_eq!(steps, [1, 2, 3]);
        assert_eq!(
            sink.0[0].parent_checkpoint_id,
            Some(begin.checkpoints[1].checkpoint_id)
        );
        assert_eq!(sink.0[2].metadata["source"], "loop");
        assert_eq!(sink.0[2].metadata["run_id"], json!(plan.run_id));
    }

    #[tokio::test]
    async fn a_recovered_run_continues_from_its_checkpoint_as_the_run_would_have() {
        let mut plan = plan(AGENT, json!({"messages": "weather in sf"}));
        let started = begin(&plan, None, false).unwrap();
        let mut sink = Collect(vec![]);
        execute(&plan, started.cursor, false, &mut sink)
            .await
            .unwrap();
        // After the agent's first step (a tool call), `tools` is next.
        let after_agent = sink.0[0].clone();
        assert_eq!(after_agent.next, ["tools"]);
        assert_eq!(after_agent.updated_by, ["agent"]);

        // Recovered there, it runs the remaining steps only: tools, then the answer.
        let recovered = recover(&plan, &after_agent).unwrap();
        assert!(!recovered.resuming && recovered.checkpoints.is_empty());
        let mut rest = Collect(vec![]);
        let finish = execute(&plan, recovered.cursor, recovered.resuming, &mut rest)
            .await
            .unwrap();
        assert_eq!(rest.0.len(), 2);
        assert_eq!(finish.values["messages"].as_array().unwrap().len(), 4);

        // A breakpoint before `tools` still stops it; one after `agent` ends it at once.
        plan.interrupt_before = vec![Breakpoints::Nodes(vec!["tools".into()])];
        let recovered = recover(&plan, &after_agent).unwrap();
        let finish = execute(&plan, recovered.cursor, recovered.resuming, &mut rest)
            .await
            .unwrap();
        assert_eq!(finish.next, ["tools"]);
        plan.interrupt_before = vec![];
        plan.interrupt_after = vec![Breakpoints::Nodes(vec!["agent".into()])];
        let Err(finish) = recover(&plan, &after_agent) else {
            panic!("a run that had reached interrupt_after must end there");
        };
        assert_eq!(finish.next, ["tools"]);

        // From a checkpoint written when it began (a fork copy), breakpoints before its next
        // nodes do not fire again, as they did not for the run.
        let mut fork = after_agent.clone();
        fork.source = CheckpointSource::Fork;
        plan.interrupt_after = vec![];
        plan.interrupt_before = vec![Breakpoints::Nodes(vec!["tools".into()])];
        let recovered = recover(&plan, &fork).unwrap();
        assert!(recovered.resuming);
    }

    #[tokio::test]
    async fn interrupt_before_stops_and_a_resume_continues_past_it() {
        let mut plan = plan(AGENT, json!({"messages": "weather in sf"}));
        plan.interrupt_before = vec![Breakpoints::Nodes(vec!["tools".into()])];
        let started = begin(&plan, None, false).unwrap();
        let mut sink = Collect(vec![]);
        let finish = execute(&plan, started.cursor, false, &mut sink)
            .await
            .unwrap();
        assert_eq!(finish.next, ["tools"]);
        let head = sink.0.last().unwrap().clone();
        plan.input = None;
        let resumed = begin(&plan, Some(&head), false).unwrap();
        assert!(resumed.checkpoints.is_empty() && resumed.resuming);
        let finish = execute(&plan, resumed.cursor, true, &mut sink)
            .await
            .unwrap();
        assert!(finish.next.is_empty());
        assert_eq!(finish.values["messages"].as_array().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_loop_without_exit_hits_the_recursion_limit() {
        let looping = "[channels]\nn = \"append\"\n[[nodes]]\nname = \"a\"\nkind = \"noop\"\n[[edges]]\nfrom = \"__start__\"\nto = \"a\"\n[[edges]]\nfrom = \"a\"\nto = \"a\"\n";
        let mut plan = plan(looping, json!({}));
        plan.recursion_limit = 3;
        let started = begin(&plan, None, false).unwrap();
        let mut sink = Collect(vec![]);
        match execute(&plan, started.cursor, false, &mut sink).await {
            Err(Halt::Failed(error)) => assert_eq!(error.error, "GraphRecursionError"),
            other => panic!("expected a recursion error, got {other:?}"),
        }
        assert_eq!(sink.0.len(), 3);
    }

    #[tokio::test]
    async fn a_panicking_node_fails_only_its_run() {
        let mut native = NativeNodes::default();
        native.register("boom", |_input: NodeInput| async { panic!("kaboom") });
        let spec = parse_spec("p", "[channels]\n[[nodes]]\nname = \"a\"\nkind = \"native\"\nfunction = \"boom\"\n[[edges]]\nfrom = \"__start__\"\nto = \"a\"\n").unwrap();
        let mut plan = plan(AGENT, json!({}));
        plan.graph = Arc::new(crate::graph::Graph::from_spec(spec, &native).unwrap());
        let started = begin(&plan, None, false).unwrap();
        match execute(&plan, started.cursor, false, &mut Collect(vec![])).await {
            Err(Halt::Failed(error)) => {
                assert_eq!(error.error, "NodePanic");
                assert!(error.message.contains("kaboom"));
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
    }

    #[test]
    fn a_state_update_as_the_agent_with_a_tool_call_makes_tools_next() {
        let plan = plan(AGENT, json!({}));
        let thread_id = plan.thread_id;
        let fresh = update_state(
            &plan.graph,
            thread_id,
            None,
            Some(&json!({"messages": "hi"})),
            None,
        )
        .unwrap();
        assert_eq!(
            (fresh.step, fresh.next.clone()),
            (0, vec!["agent".to_owned()])
        );
        let call = json!({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "name": "tavily_search_results_json", "args": {"query": "q"}}]}]});
        let update = update_state(
            &plan.graph,
            thread_id,
            Some(&fresh),
            Some(&call),
            Some("agent"),
        )
        .unwrap();
        assert_eq!(update.next, ["tools"]);
        assert_eq!(update.parent_checkpoint_id, Some(fresh.checkpoint_id));
        assert_eq!(update.metadata["source"], "update");
        assert_eq!(update.values["messages"].as_array().unwrap().len(), 2);
        assert_eq!(
            update_state(&plan.graph, thread_id, Some(&update), None, Some("bogus")).unwrap_err(),
            "Node bogus does not exist"
        );
    }

    #[test]
    fn a_run_without_input_or_checkpoint_is_an_empty_input_error() {
        let mut plan = plan(AGENT, json!({}));
        plan.input = None;
        assert_eq!(
            begin(&plan, None, false).unwrap_err().error,
            "EmptyInputError"
        );
    }
}
