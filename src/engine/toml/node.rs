//! The node contract: what a node is given (`NodeInput`: state and config), what it returns (a
//! partial update, or a `NodeError`: failed, interrupted, fenced), the `Node` trait and the
//! `NativeNodes` Rust users register, plus small helpers node kinds share. The built-in kinds are
//! in `kinds.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::emit::NodeStream;
use crate::domain::run::RunError;
use crate::domain::JsonMap;

/// What a node sees when it runs.
#[derive(Clone, Debug)]
pub struct NodeInput {
    /// The node's name in the graph.
    pub node: String,
    /// The superstep being executed.
    pub step: i64,
    /// The state before this superstep.
    pub state: Arc<JsonMap>,
    /// The run's `configurable` with its `context` merged over it.
    pub config: Arc<JsonMap>,
    /// Where the node sends `custom` events and model tokens.
    pub stream: NodeStream,
    /// The value this execution resumes an interrupt with (`command.resume`), if any.
    pub resume: Option<Value>,
}

impl NodeInput {
    /// Pauses the run with `value` (a question for a human, say), unless this execution resumes
    /// it: then returns the resume value. Use with `?`: `let answer = input.interrupt(question)?;`
    pub fn interrupt(&self, value: Value) -> Result<Value, NodeError> {
        match &self.resume {
            Some(resume) => Ok(resume.clone()),
            None => Err(NodeError::Interrupted(value)),
        }
    }
}

/// Why a node produced no update.
#[derive(Debug)]
pub enum NodeError {
    /// The node failed; the run ends with this error.
    Failed(RunError),
    /// The node paused the run with this value (`NodeInput::interrupt`); the executor records a
    /// pending interrupt.
    Interrupted(Value),
    /// A subgraph task found the run fenced by storage: the run must not write anything more.
    Fenced,
}

impl From<RunError> for NodeError {
    fn from(error: RunError) -> Self {
        NodeError::Failed(error)
    }
}

/// A node's partial state update (`None`: no update), or why there is none.
pub type NodeResult = Result<Option<JsonMap>, NodeError>;

/// Node logic. Invocations run in their own task: a panic fails only the run.
pub trait Node: Send + Sync + 'static {
    /// Runs the node once.
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult>;
}

impl<F, Fut> Node for F
where
    F: Fn(NodeInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = NodeResult> + Send + 'static,
{
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        Box::pin(self(input))
    }
}

/// Rust node functions that graph files can use with `kind = "native"`.
#[derive(Clone, Default)]
pub struct NativeNodes {
    functions: HashMap<String, Arc<dyn Node>>,
}

impl NativeNodes {
    /// Registers `node` under `name`.
    pub fn register(&mut self, name: impl Into<String>, node: impl Node) -> &mut Self {
        self.functions.insert(name.into(), Arc::new(node));
        self
    }

    /// The function registered under `name`.
    pub(super) fn get(&self, name: &str) -> Option<Arc<dyn Node>> {
        self.functions.get(name).cloned()
    }
}

/// How long a scripted step takes: `configurable.delay` in seconds if set, else the node default.
pub fn step_delay(config: &JsonMap, default: Duration) -> Duration {
    match config.get("delay") {
        Some(Value::Number(seconds)) => seconds
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .map(|seconds| Duration::from_secs_f64(seconds.min(3600.0)))
            .unwrap_or(Duration::ZERO),
        Some(Value::String(text)) => text
            .parse::<f64>()
            .ok()
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .map(|seconds| Duration::from_secs_f64(seconds.min(3600.0)))
            .unwrap_or(default),
        _ => default,
    }
}

/// The `messages` channel of a state; empty when there is none.
pub(super) fn messages_of(state: &JsonMap) -> &[Value] {
    state
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The update that appends `messages` to the `messages` channel.
pub(super) fn messages_update(messages: Vec<Value>) -> JsonMap {
    let mut update = JsonMap::new();
    update.insert("messages".into(), Value::Array(messages));
    update
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delay_comes_from_configurable_seconds_or_the_default() {
        let default = Duration::from_millis(200);
        let config = |value: Value| json!({"delay": value}).as_object().unwrap().clone();
        assert_eq!(step_delay(&JsonMap::new(), default), default);
        assert_eq!(
            step_delay(&config(json!(0.5)), default),
            Duration::from_millis(500)
        );
        assert_eq!(step_delay(&config(json!(0)), default), Duration::ZERO);
        assert_eq!(step_delay(&config(json!("x")), default), default);
    }
}
