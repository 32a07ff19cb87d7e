//! Checkpoints: the state of a thread after a step, and their rendering as the API's ThreadState.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::errors::ValidationError;
use super::ids::{CheckpointId, RunId, ThreadId};
use super::time::Timestamp;
use super::JsonMap;

/// Why a checkpoint was written (`metadata.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointSource {
    /// A run's input is about to be applied (the `__start__` task is pending).
    Input,
    /// After a superstep.
    Loop,
    /// `POST /threads/{t}/state`.
    Update,
    /// Copy of an older checkpoint that a run was started from.
    Fork,
}

impl CheckpointSource {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointSource::Input => "input",
            CheckpointSource::Loop => "loop",
            CheckpointSource::Update => "update",
            CheckpointSource::Fork => "fork",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Input, Self::Loop, Self::Update, Self::Fork]
            .into_iter()
            .find(|source| source.as_str() == text)
    }
}

/// A task pending at a checkpoint: one node that the next superstep runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: Uuid,
    pub name: String,
    /// The error the task failed with, when the run failed in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The task's input/result where known (the run input for `__start__`; the update of a task
    /// that completed in a superstep another task interrupted, reused when the run resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Dynamic interrupts raised by this task, pending until a run resumes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupts: Vec<Interrupt>,
    /// The state a `Send` (`command.goto` `{"node", "input"}`) gave this task, run instead of
    /// the graph state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<Value>,
}

/// A pending dynamic interrupt: the value a node paused with, and the id a resume names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interrupt {
    pub id: String,
    pub value: Value,
}

impl Interrupt {
    /// The wire form in `values` and `updates` stream chunks and `/wait` results.
    pub fn to_chunk(&self) -> Value {
        json!({"value": self.value, "id": self.id, "response_schema": null})
    }
}

/// One persisted checkpoint of a thread.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub thread_id: ThreadId,
    pub checkpoint_ns: String,
    pub checkpoint_id: CheckpointId,
    pub parent_checkpoint_id: Option<CheckpointId>,
    /// The run that wrote it; `None` for state updates and copies.
    pub run_id: Option<RunId>,
    pub step: i64,
    pub source: CheckpointSource,
    pub values: JsonMap,
    /// Nodes the next superstep runs; empty when the graph has finished.
    pub next: Vec<String>,
    pub tasks: Vec<TaskRecord>,
    pub metadata: JsonMap,
    pub created_at: Timestamp,
    /// Nodes whose writes produced this checkpoint (the default `as_node` of a state update).
    pub updated_by: Vec<String>,
}

fn checkpoint_ref(thread_id: ThreadId, checkpoint_ns: &str, checkpoint_id: CheckpointId) -> Value {
    json!({
        "checkpoint_id": checkpoint_id,
        "thread_id": thread_id,
        "checkpoint_ns": checkpoint_ns,
    })
}

impl Checkpoint {
    /// This checkpoint as the API's ThreadState object.
    pub fn to_state(&self) -> Value {
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .map(|task| {
                json!({
                    "id": task.id,
                    "name": task.name,
                    "path": ["__pregel_pull", task.name],
                    "error": task.error,
                    "interrupts": task.interrupts,
                    "checkpoint": null,
                    "state": null,
                    "result": task.result,
                })
            })
            .collect();
        json!({
            "values": self.values,
            "next": self.next,
            "tasks": tasks,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "checkpoint": checkpoint_ref(self.thread_id, &self.checkpoint_ns, self.checkpoint_id),
            "parent_checkpoint": self.parent_checkpoint_id
                .map(|parent| checkpoint_ref(self.thread_id, &self.checkpoint_ns, parent)),
            "interrupts": self.interrupts(),
            "checkpoint_id": self.checkpoint_id,
            "parent_checkpoint_id": self.parent_checkpoint_id,
        })
    }

    /// Every pending interrupt, task by task.
    pub fn interrupts(&self) -> Vec<&Interrupt> {
        self.tasks
            .iter()
            .flat_map(|task| &task.interrupts)
            .collect()
    }

    /// A thread's `interrupts`: `{task_id: [{id, value}]}` for the tasks with some.
    pub fn interrupts_by_task(&self) -> JsonMap {
        self.tasks
            .iter()
            .filter(|task| !task.interrupts.is_empty())
            .map(|task| (task.id.to_string(), json!(task.interrupts)))
            .collect()
    }

    /// A reference to this checkpoint: `{thread_id, checkpoint_ns, checkpoint_id}`.
    pub fn reference(&self) -> Value {
        json!({
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "checkpoint_id": self.checkpoint_id,
        })
    }
}

/// The ThreadState of a thread that has no checkpoint yet.
pub fn empty_state() -> Value {
    json!({
        "values": {},
        "next": [],
        "tasks": [],
        "metadata": null,
        "created_at": null,
        "checkpoint": null,
        "parent_checkpoint": null,
        "interrupts": [],
        "checkpoint_id": null,
        "parent_checkpoint_id": null,
    })
}

/// A checkpoint reference in a request body: `{checkpoint_id?, checkpoint_ns?, …}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CheckpointRef {
    pub checkpoint_id: Option<String>,
    pub checkpoint_ns: Option<String>,
}

/// The checkpoint a body names, by `checkpoint_id` or by `checkpoint: {checkpoint_id}`
/// (invalid if it is not a UUID).
pub fn named_checkpoint(
    direct: Option<String>,
    reference: Option<CheckpointRef>,
) -> Result<Option<CheckpointId>, ValidationError> {
    direct
        .or_else(|| reference.and_then(|reference| reference.checkpoint_id))
        .map(|text| CheckpointId::parse(&text))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_state_has_the_reference_keys_in_order() {
        let checkpoint = Checkpoint {
            thread_id: ThreadId::generate(),
            checkpoint_ns: String::new(),
            checkpoint_id: CheckpointId::generate(),
            parent_checkpoint_id: None,
            run_id: None,
            step: 0,
            source: CheckpointSource::Loop,
            values: JsonMap::new(),
            next: vec!["tools".into()],
            tasks: vec![TaskRecord {
                id: Uuid::nil(),
                name: "tools".into(),
                error: None,
                result: None,
                interrupts: vec![],
                send: None,
            }],
            metadata: JsonMap::new(),
            created_at: Timestamp::now(),
            updated_by: vec![],
        };
        let state = checkpoint.to_state();
        let keys: Vec<&str> = state
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "values",
                "next",
                "tasks",
                "metadata",
                "created_at",
                "checkpoint",
                "parent_checkpoint",
                "interrupts",
                "checkpoint_id",
                "parent_checkpoint_id"
            ]
        );
        assert_eq!(state["tasks"][0]["path"], json!(["__pregel_pull", "tools"]));
        assert_eq!(state["parent_checkpoint"], Value::Null);
    }
}
