//! What a run tells its stream, in the shapes of the LangGraph stream modes: `values`,
//! `updates`, `messages` (the tuple form), legacy `messages/*`, `custom`, `debug`, `tasks`,
//! `checkpoints` and `events` (a subset of LangChain's `astream_events` v2). The executor and the
//! nodes report what happens (a checkpoint, a task start, a node's output, a token); the
//! `Emitter` renders it for each mode the run asked for and publishes it on the run's stream.
//! Order per superstep, as the reference server emits it: task starts, then per task messages,
//! updates and its result, then `values` and the checkpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::checkpoint::{Checkpoint, Interrupt};
use crate::domain::ids::{RunId, ThreadId};
use crate::domain::stream_mode::StreamMode;
use crate::domain::time::Timestamp;
use crate::domain::JsonMap;
use crate::stream::{metadata_event, RunStream};

/// The stream modes a run may ask for, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modes(u16);

impl Modes {
    pub const VALUES: Modes = Modes(1);
    pub const UPDATES: Modes = Modes(1 << 1);
    pub const MESSAGES_TUPLE: Modes = Modes(1 << 2);
    pub const MESSAGES: Modes = Modes(1 << 3);
    pub const DEBUG: Modes = Modes(1 << 4);
    pub const TASKS: Modes = Modes(1 << 5);
    pub const CHECKPOINTS: Modes = Modes(1 << 6);
    pub const CUSTOM: Modes = Modes(1 << 7);
    pub const EVENTS: Modes = Modes(1 << 8);

    /// The bit of one mode.
    fn bit(mode: StreamMode) -> Modes {
        match mode {
            StreamMode::Values => Modes::VALUES,
            StreamMode::Updates => Modes::UPDATES,
            StreamMode::MessagesTuple => Modes::MESSAGES_TUPLE,
            StreamMode::Messages => Modes::MESSAGES,
            StreamMode::Debug => Modes::DEBUG,
            StreamMode::Tasks => Modes::TASKS,
            StreamMode::Checkpoints => Modes::CHECKPOINTS,
            StreamMode::Custom => Modes::CUSTOM,
            StreamMode::Events => Modes::EVENTS,
        }
    }

    /// The set of these modes.
    pub fn of(modes: &[StreamMode]) -> Modes {
        Modes(modes.iter().fold(0, |bits, mode| bits | Self::bit(*mode).0))
    }

    /// Whether any of `other` is set.
    pub fn has(self, other: Modes) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether either `messages` form is set.
    pub fn any_messages(self) -> bool {
        self.has(Modes(Modes::MESSAGES.0 | Modes::MESSAGES_TUPLE.0))
    }
}

/// One node execution within a superstep, as streams describe it.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub id: Uuid,
    pub node: String,
    pub step: i64,
    /// The LangChain run id of this execution (`events` mode).
    pub lc_run_id: Uuid,
}

impl TaskInfo {
    fn triggers(&self) -> Value {
        json!([format!("branch:to:{}", self.node)])
    }
}

/// The chat model that produced a message, for `messages` metadata and `events`.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub provider: String,
    pub model: String,
    /// The LangChain run id of this model call.
    pub lc_run_id: Uuid,
}

/// What an `events` event is about.
enum Scope<'a> {
    Graph,
    Node(&'a TaskInfo),
    Model(&'a TaskInfo, &'a ModelInfo),
}

/// Renders a run's happenings for the stream modes it asked for.
pub struct Emitter {
    stream: Option<Arc<RunStream>>,
    modes: Modes,
    thread_id: ThreadId,
    run_id: RunId,
    /// The run's attempt, reported in the `metadata` event and the tasks' `run_attempt`.
    attempt: u32,
    /// Run metadata as tasks carry it (`metadata` of `debug`/`tasks` task events).
    task_metadata: JsonMap,
    /// The run's `configurable`, for the `config` of checkpoint events.
    configurable: JsonMap,
    graph_lc_run_id: Uuid,
    /// Messages streamed token by token, by id, accumulated (legacy `messages/partial`).
    /// Shared with the emitters of the run's subgraphs: a message streamed in a subgraph is not
    /// sent again whole when the parent's node returns it.
    streamed: Arc<Mutex<HashMap<String, Value>>>,
    /// The checkpoint namespace of the graph this emitter renders: empty for the run's own
    /// graph, `node:task_id` (joined with `|` when nested) for a subgraph.
    namespace: String,
    /// `stream_subgraphs`: subgraphs publish their events with a `|<namespace>` suffix.
    subgraphs: bool,
}

fn iso_now() -> Value {
    json!(Timestamp::now())
}

fn message_id(message: &Value) -> Option<&str> {
    message.get("id").and_then(Value::as_str)
}

fn messages_in(update: &JsonMap) -> Vec<&Value> {
    let mut found = vec![];
    for value in update.values() {
        match value {
            Value::Array(items) => found.extend(items.iter().filter(|item| is_message(item))),
            item if is_message(item) => found.push(item),
            _ => {}
        }
    }
    found
}

fn is_message(value: &Value) -> bool {
    value.get("type").and_then(Value::as_str).is_some() && value.get("content").is_some()
}

impl Emitter {
    /// An emitter publishing on `stream` (none: nothing is rendered) for `modes`.
    pub fn new(
        stream: Option<Arc<RunStream>>,
        modes: Modes,
        thread_id: ThreadId,
        run_id: RunId,
        attempt: u32,
        run_metadata: &JsonMap,
        configurable: &JsonMap,
    ) -> Self {
        let mut task_metadata = run_metadata.clone();
        task_metadata.insert("run_attempt".into(), json!(attempt));
        task_metadata.insert("run_id".into(), json!(run_id));
        let mut config = JsonMap::new();
        config.insert("checkpoint_ns".into(), json!(""));
        for (key, value) in configurable {
            config.insert(key.clone(), value.clone());
        }
        Self {
            stream,
            modes,
            thread_id,
            run_id,
            attempt,
            task_metadata,
            configurable: config,
            graph_lc_run_id: Uuid::now_v7(),
            streamed: Arc::new(Mutex::new(HashMap::new())),
            namespace: String::new(),
            subgraphs: false,
        }
    }

    /// With `stream_subgraphs`: subgraph events reach the stream, suffixed with their namespace.
    pub fn with_subgraphs(mut self, subgraphs: bool) -> Self {
        self.subgraphs = subgraphs;
        self
    }

    /// The emitter of a subgraph running in checkpoint namespace `namespace`: it publishes with a
    /// `|<namespace>` suffix when the run streams subgraphs, and nothing otherwise.
    pub fn subgraph(&self, namespace: String) -> Self {
        let mut configurable = self.configurable.clone();
        configurable.insert("checkpoint_ns".into(), json!(namespace));
        Self {
            stream: self.stream.clone().filter(|_| self.subgraphs),
            modes: self.modes,
            thread_id: self.thread_id,
            run_id: self.run_id,
            attempt: self.attempt,
            task_metadata: self.task_metadata.clone(),
            configurable,
            graph_lc_run_id: Uuid::now_v7(),
            streamed: self.streamed.clone(),
            namespace,
            subgraphs: self.subgraphs,
        }
    }

    /// The namespace of a task of this emitter's graph (`langgraph_checkpoint_ns`).
    fn task_namespace(&self, task: &TaskInfo) -> String {
        if self.namespace.is_empty() {
            format!("{}:{}", task.node, task.id)
        } else {
            format!("{}|{}:{}", self.namespace, task.node, task.id)
        }
    }

    /// An emitter that renders nothing.
    pub fn silent() -> Self {
        Self::new(
            None,
            Modes::default(),
            ThreadId(Uuid::nil()),
            RunId(Uuid::nil()),
            1,
            &JsonMap::new(),
            &JsonMap::new(),
        )
    }

    fn wants(&self, modes: Modes) -> bool {
        self.stream.is_some() && self.modes.has(modes)
    }

    fn publish(&self, name: &str, data: &Value) {
        if let Some(stream) = &self.stream {
            if self.namespace.is_empty() {
                stream.publish(name, data);
            } else {
                stream.publish(&format!("{name}|{}", self.namespace), data);
            }
        }
    }

    /// `metadata`: the first event of every run stream.
    pub fn run_started(&self, input: Option<&Value>) {
        self.publish("metadata", &metadata_event(self.run_id, self.attempt));
        self.lc_event("on_chain_start", Scope::Graph, json!({"input": input}));
    }

    /// The checkpoints written when the run started, with `values` after the input applied.
    pub fn run_began(&self, checkpoints: &[Checkpoint], values: &JsonMap) {
        match checkpoints.split_last() {
            Some((last, earlier)) => {
                for checkpoint in earlier {
                    self.checkpoint(checkpoint);
                }
                self.values(values);
                self.checkpoint(last);
            }
            None => self.values(values),
        }
    }

    /// `values`: the whole state.
    pub fn values(&self, values: &JsonMap) {
        if self.wants(Modes::VALUES) {
            self.publish("values", &json!(values));
        }
    }

    fn config_of(&self, checkpoint_id: impl serde::Serialize) -> Value {
        let mut configurable = self.configurable.clone();
        configurable.insert("checkpoint_id".into(), json!(checkpoint_id));
        json!({ "configurable": configurable })
    }

    /// A checkpoint was written: `debug` (type `checkpoint`) and `checkpoints`.
    pub fn checkpoint(&self, checkpoint: &Checkpoint) {
        let debug = self.wants(Modes::DEBUG);
        if !debug && !self.wants(Modes::CHECKPOINTS) {
            return;
        }
        let tasks: Vec<Value> = checkpoint
            .tasks
            .iter()
            .map(|task| json!({"id": task.id, "name": task.name, "interrupts": [], "state": null}))
            .collect();
        let config = self.config_of(checkpoint.checkpoint_id);
        let parent_config = checkpoint
            .parent_checkpoint_id
            .map(|parent| self.config_of(parent));
        let mut payload = json!({
            "config": config,
            "parent_config": parent_config,
            "values": checkpoint.values,
            "metadata": checkpoint.metadata,
            "next": checkpoint.next,
            "tasks": tasks,
        });
        if self.wants(Modes::CHECKPOINTS) {
            self.publish("checkpoints", &payload);
        }
        if debug {
            payload["checkpoint"] = json!({
                "checkpoint_id": checkpoint.checkpoint_id,
                "thread_id": self.thread_id,
                "checkpoint_ns": self.namespace,
            });
            payload["parent_checkpoint"] = checkpoint
                .parent_checkpoint_id
                .map(|parent| {
                    json!({"checkpoint_id": parent, "thread_id": self.thread_id, "checkpoint_ns": self.namespace})
                })
                .unwrap_or(Value::Null);
            self.publish(
                "debug",
                &json!({"step": checkpoint.step, "timestamp": iso_now(), "type": "checkpoint", "payload": payload}),
            );
        }
    }

    /// A node starts: `debug` (type `task`), `tasks`, and `on_chain_start`.
    pub fn task_started(&self, task: &TaskInfo, input: &JsonMap) {
        if self.wants(Modes::DEBUG) || self.wants(Modes::TASKS) {
            let payload = json!({
                "id": task.id,
                "name": task.node,
                "input": input,
                "triggers": task.triggers(),
                "metadata": self.task_metadata,
            });
            if self.wants(Modes::DEBUG) {
                self.publish(
                    "debug",
                    &json!({"step": task.step, "timestamp": iso_now(), "type": "task", "payload": payload}),
                );
            }
            if self.wants(Modes::TASKS) {
                self.publish("tasks", &payload);
            }
        }
        self.lc_event("on_chain_start", Scope::Node(task), json!({"input": input}));
    }

    /// A node that ran on `input` finished with `update`: its messages not streamed already and
    /// not part of its input (a subgraph hands back the whole list), `updates`, `debug` (type
    /// `task_result`), `tasks`, and `on_chain_end`.
    pub fn task_finished(&self, task: &TaskInfo, update: Option<&JsonMap>, input: &JsonMap) {
        if self.stream.is_none() {
            return;
        }
        if self.modes.any_messages() {
            let messages = update.map(messages_in).unwrap_or_default();
            if !messages.is_empty() {
                let known: std::collections::HashSet<&str> = messages_in(input)
                    .into_iter()
                    .filter_map(message_id)
                    .collect();
                for message in messages {
                    if !message_id(message).is_some_and(|id| known.contains(id)) {
                        self.whole_message(task, message);
                    }
                }
            }
        }
        if self.wants(Modes::UPDATES) {
            self.publish("updates", &json!({ task.node.clone(): update }));
        }
        if self.wants(Modes::DEBUG) || self.wants(Modes::TASKS) {
            let payload = json!({
                "id": task.id,
                "name": task.node,
                "error": null,
                "result": update.cloned().unwrap_or_default(),
                "interrupts": [],
            });
            if self.wants(Modes::DEBUG) {
                self.publish(
                    "debug",
                    &json!({"step": task.step, "timestamp": iso_now(), "type": "task_result", "payload": payload}),
                );
            }
            if self.wants(Modes::TASKS) {
                self.publish("tasks", &payload);
            }
        }
        self.lc_event("on_chain_end", Scope::Node(task), json!({"output": update}));
    }

    /// The run stopped at a static breakpoint: `updates` gets `{"__interrupt__": []}`.
    pub fn breakpoint(&self) {
        if self.wants(Modes::UPDATES) {
            self.publish("updates", &json!({"__interrupt__": []}));
        }
    }

    /// The run paused at dynamic interrupts: `updates` `{"__interrupt__": […]}`, then the state
    /// with `__interrupt__` as a `values` chunk (sent even when only `updates` was asked for).
    pub fn interrupted(&self, values: &JsonMap, interrupts: &[Interrupt]) {
        if self.stream.is_none() {
            return;
        }
        let chunks: Vec<Value> = interrupts.iter().map(Interrupt::to_chunk).collect();
        if self.wants(Modes::UPDATES) {
            self.publish("updates", &json!({"__interrupt__": chunks}));
        }
        let mut state = values.clone();
        state.insert("__interrupt__".into(), Value::Array(chunks));
        self.publish("values", &Value::Object(state));
    }

    /// The run finished: `on_chain_end` of the graph.
    pub fn run_finished(&self, values: &JsonMap) {
        self.lc_event("on_chain_end", Scope::Graph, json!({"output": values}));
    }

    /// An `events` event (LangChain `astream_events` v2 shape) about the graph, a node or a model.
    fn lc_event(&self, event: &str, scope: Scope, data: Value) {
        if !self.wants(Modes::EVENTS) {
            return;
        }
        let (name, tags, run_id, metadata, parent_ids) = match scope {
            Scope::Graph => (
                json!("LangGraph"),
                json!([]),
                self.graph_lc_run_id,
                Value::Object(self.task_metadata.clone()),
                json!([]),
            ),
            Scope::Node(task) => (
                json!(task.node),
                json!([format!("graph:step:{}", task.step)]),
                task.lc_run_id,
                self.message_metadata(task, None),
                json!([self.graph_lc_run_id]),
            ),
            Scope::Model(task, model) => (
                json!(model.model),
                json!(["seq:step:1"]),
                model.lc_run_id,
                self.message_metadata(task, Some(model)),
                json!([self.graph_lc_run_id, task.lc_run_id]),
            ),
        };
        self.publish(
            "events",
            &json!({
                "event": event,
                "data": data,
                "name": name,
                "tags": tags,
                "run_id": run_id,
                "metadata": metadata,
                "parent_ids": parent_ids,
            }),
        );
    }

    /// `custom`: whatever a node writes.
    pub fn custom(&self, value: &Value) {
        if self.wants(Modes::CUSTOM) {
            self.publish("custom", value);
        }
    }

    fn message_metadata(&self, task: &TaskInfo, model: Option<&ModelInfo>) -> Value {
        let mut metadata = self.task_metadata.clone();
        metadata.insert("thread_id".into(), json!(self.thread_id));
        metadata.insert("run_id".into(), json!(self.run_id));
        metadata.insert("ls_integration".into(), json!("langgraph"));
        metadata.insert("langgraph_step".into(), json!(task.step));
        metadata.insert("langgraph_node".into(), json!(task.node));
        metadata.insert("langgraph_triggers".into(), task.triggers());
        metadata.insert("langgraph_path".into(), json!(["__pregel_pull", task.node]));
        metadata.insert(
            "langgraph_checkpoint_ns".into(),
            json!(self.task_namespace(task)),
        );
        if let Some(model) = model {
            metadata.insert("ls_provider".into(), json!(model.provider));
            metadata.insert("ls_model_name".into(), json!(model.model));
            metadata.insert("ls_model_type".into(), json!("chat"));
        }
        Value::Object(metadata)
    }

    /// A message a node returned whole (not token-streamed).
    fn whole_message(&self, task: &TaskInfo, message: &Value) {
        if let Some(id) = message_id(message) {
            let streamed = self.streamed.lock().unwrap_or_else(|e| e.into_inner());
            if streamed.contains_key(id) {
                return;
            }
        }
        let metadata = self.message_metadata(task, None);
        if self.modes.has(Modes::MESSAGES_TUPLE) {
            self.publish("messages", &json!([message, metadata]));
        }
        if self.modes.has(Modes::MESSAGES) {
            if let Some(id) = message_id(message) {
                self.publish("messages/metadata", &json!({ id: {"metadata": metadata} }));
            }
            self.publish("messages/complete", &json!([message]));
        }
    }

    /// A chat model call starts (`events`: `on_chat_model_start`).
    pub fn model_started(&self, task: &TaskInfo, model: &ModelInfo, messages: &[Value]) {
        self.lc_event(
            "on_chat_model_start",
            Scope::Model(task, model),
            json!({"input": {"messages": [messages]}}),
        );
    }

    /// A chat model produced a chunk (`AIMessageChunk` dict; chunks of one message share an
    /// id): `messages` tuples, legacy `messages/partial` with the text so far, and
    /// `on_chat_model_stream`.
    pub fn model_chunk(&self, task: &TaskInfo, model: &ModelInfo, chunk: &Value) {
        if self.stream.is_none() {
            return;
        }
        let Some(id) = message_id(chunk).map(str::to_owned) else {
            return;
        };
        let legacy = self.modes.has(Modes::MESSAGES);
        let (first, accumulated) = {
            let mut streamed = self.streamed.lock().unwrap_or_else(|e| e.into_inner());
            let first = !streamed.contains_key(&id);
            let entry = streamed.entry(id.clone()).or_insert_with(|| {
                let mut message = chunk.clone();
                message["type"] = json!("ai");
                message["content"] = json!("");
                if let Some(object) = message.as_object_mut() {
                    object.remove("chunk_position");
                    object.remove("tool_call_chunks");
                }
                message
            });
            if legacy {
                let text = format!(
                    "{}{}",
                    entry["content"].as_str().unwrap_or_default(),
                    chunk["content"].as_str().unwrap_or_default()
                );
                entry["content"] = json!(text);
            }
            (first, legacy.then(|| entry.clone()))
        };
        let any = self.modes.any_messages() || self.modes.has(Modes::EVENTS);
        if !any {
            return;
        }
        let metadata = self.message_metadata(task, Some(model));
        if self.modes.has(Modes::MESSAGES_TUPLE) {
            self.publish("messages", &json!([chunk, metadata]));
        }
        if let Some(accumulated) = accumulated {
            if first {
                self.publish("messages/metadata", &json!({ id: {"metadata": metadata} }));
            }
            self.publish("messages/partial", &json!([accumulated]));
        }
        self.lc_event(
            "on_chat_model_stream",
            Scope::Model(task, model),
            json!({ "chunk": chunk }),
        );
    }

    /// A chat model call ended with `message` (`events`: `on_chat_model_end`).
    pub fn model_finished(&self, task: &TaskInfo, model: &ModelInfo, message: &Value) {
        self.lc_event(
            "on_chat_model_end",
            Scope::Model(task, model),
            json!({"output": message}),
        );
    }
}

/// A node's handle on its run's stream: custom events and model tokens.
#[derive(Clone)]
pub struct NodeStream {
    emitter: Arc<Emitter>,
    task: Arc<TaskInfo>,
}

impl std::fmt::Debug for NodeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStream")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl NodeStream {
    /// The handle of one task.
    pub fn new(emitter: Arc<Emitter>, task: TaskInfo) -> Self {
        Self {
            emitter,
            task: Arc::new(task),
        }
    }

    /// A handle that goes nowhere (for calling nodes outside a run).
    pub fn silent(node: &str) -> Self {
        Self::new(
            Arc::new(Emitter::silent()),
            TaskInfo {
                id: Uuid::nil(),
                node: node.to_owned(),
                step: 0,
                lc_run_id: Uuid::nil(),
            },
        )
    }

    /// Emits a `custom` event.
    pub fn custom(&self, value: Value) {
        self.emitter.custom(&value);
    }

    /// Whether token chunks would reach anyone (so a model may skip producing them).
    pub fn wants_tokens(&self) -> bool {
        self.emitter.stream.is_some()
            && (self.emitter.modes.any_messages() || self.emitter.modes.has(Modes::EVENTS))
    }

    /// A chat model call starts.
    pub fn model_started(&self, model: &ModelInfo, messages: &[Value]) {
        self.emitter.model_started(&self.task, model, messages);
    }

    /// A chat model produced a token chunk.
    pub fn model_chunk(&self, model: &ModelInfo, chunk: &Value) {
        self.emitter.model_chunk(&self.task, model, chunk);
    }

    /// A chat model call ended.
    pub fn model_finished(&self, model: &ModelInfo, message: &Value) {
        self.emitter.model_finished(&self.task, model, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Item, StreamLimits};

    #[test]
    fn modes_hold_exactly_the_stream_modes_asked_for() {
        let modes = Modes::of(&[StreamMode::Values, StreamMode::MessagesTuple]);
        assert!(modes.has(Modes::VALUES) && modes.any_messages());
        assert!(!modes.has(Modes::DEBUG));
        // An unknown mode name never gets this far: `StreamMode::parse` refuses it.
        assert_eq!(StreamMode::parse("tools"), None);
    }

    #[tokio::test]
    async fn streamed_tokens_grow_in_legacy_mode_and_are_not_repeated_whole() {
        let stream = Arc::new(RunStream::new(
            RunId(Uuid::now_v7()),
            true,
            &StreamLimits::default(),
        ));
        let emitter = Arc::new(Emitter::new(
            Some(stream.clone()),
            Modes::of(&[StreamMode::Messages, StreamMode::MessagesTuple]),
            ThreadId(Uuid::now_v7()),
            RunId(Uuid::now_v7()),
            1,
            &JsonMap::new(),
            &JsonMap::new(),
        ));
        let task = TaskInfo {
            id: Uuid::now_v7(),
            node: "agent".into(),
            step: 1,
            lc_run_id: Uuid::now_v7(),
        };
        let node = NodeStream::new(emitter.clone(), task.clone());
        let model = ModelInfo {
            provider: "scripted".into(),
            model: "scripted".into(),
            lc_run_id: Uuid::now_v7(),
        };
        for word in ["hello", " there"] {
            node.model_chunk(
                &model,
                &json!({"content": word, "type": "AIMessageChunk", "id": "m1"}),
            );
        }
        let whole = json!({"messages": [{"content": "hello there", "type": "ai", "id": "m1"}]});
        emitter.task_finished(&task, whole.as_object(), &JsonMap::new());
        stream.end();
        let mut subscription = stream.subscribe(None);
        let mut frames = vec![];
        while let Some(Item::Event(event)) = subscription.next().await {
            frames.push(String::from_utf8(event.frame.to_vec()).unwrap());
        }
        let names: Vec<&str> = frames
            .iter()
            .map(|frame| frame.lines().next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "event: messages",
                "event: messages/metadata",
                "event: messages/partial",
                "event: messages",
                "event: messages/partial",
            ]
        );
        assert!(frames[4].contains("\"content\":\"hello there\""));
        assert!(frames[4].contains("\"type\":\"ai\""));
    }
}
