//! Node kinds: what a node is given (state and config), what it returns (a partial update), and
//! the built-in kinds declared in graph files. Rust users add kinds through `NativeNodes`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use serde_json::Value;

use super::emit::{ModelInfo, NodeStream};
use super::scripted;
use super::spec::NodeSpec;
use super::tools::{self, Tool, Toolbox};
use super::{external, openai, Graph};
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
    /// Where `interrupt` leaves its value for the executor.
    pub(crate) interrupted: Arc<std::sync::Mutex<Option<Value>>>,
}

/// The error class `NodeInput::interrupt` returns; the executor turns it into a pending interrupt.
pub const INTERRUPT_ERROR: &str = "GraphInterrupt";

impl NodeInput {
    /// Pauses the run with `value` (a question for a human, say), unless this execution resumes
    /// it: then returns the resume value. Use with `?`: `let answer = input.interrupt(question)?;`
    pub fn interrupt(&self, value: Value) -> Result<Value, RunError> {
        if let Some(resume) = &self.resume {
            return Ok(resume.clone());
        }
        *self
            .interrupted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(value);
        Err(RunError::new(
            INTERRUPT_ERROR,
            "the node paused the run with an interrupt",
        ))
    }

    /// The value `interrupt` paused with, if it did.
    pub(crate) fn take_interrupt(interrupted: &std::sync::Mutex<Option<Value>>) -> Option<Value> {
        interrupted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// A node's partial state update (`None`: no update), or the error that fails the run.
pub type NodeResult = Result<Option<JsonMap>, RunError>;

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
}

/// What building a node may refer to besides its own declaration.
pub(super) struct BuildContext<'a> {
    pub native: &'a NativeNodes,
    /// The graph file's tools.
    pub tools: &'a Toolbox,
    /// The graph file's directory.
    pub dir: &'a std::path::Path,
    /// The graphs built so far, for subgraph nodes.
    pub graphs: &'a std::collections::BTreeMap<String, Arc<Graph>>,
}

/// Builds the node a declaration describes; errors say what is wrong with it.
pub(super) fn build(
    spec: &NodeSpec,
    context: &BuildContext<'_>,
) -> Result<(&'static str, Arc<dyn Node>), String> {
    match spec {
        NodeSpec::Noop { .. } => Ok(("noop", Arc::new(Noop))),
        NodeSpec::ChatModel {
            name,
            provider,
            tools,
            delay_ms,
            ..
        } => {
            let bound = context.tools.resolve(name, tools)?;
            match provider.as_str() {
                "scripted" => Ok((
                    "chat_model",
                    Arc::new(ScriptedChatModel {
                        tools: tools.clone(),
                        delay: Duration::from_millis(*delay_ms),
                    }),
                )),
                "openai" => Ok(("chat_model", Arc::new(openai::ChatModel::new(spec, bound)?))),
                _ => Err(format!(
                    "node '{name}' has chat model provider '{provider}'; expected \"scripted\" or \"openai\""
                )),
            }
        }
        NodeSpec::Tools {
            name,
            tools,
            delay_ms,
        } => Ok((
            "tools",
            Arc::new(ToolsNode {
                tools: context.tools.resolve(name, tools)?,
                delay: Duration::from_millis(*delay_ms),
            }),
        )),
        NodeSpec::Http { .. } => Ok(("http", Arc::new(external::HttpNode::new(spec)?))),
        NodeSpec::Command { .. } => Ok((
            "command",
            Arc::new(external::CommandNode::new(spec, context.dir)?),
        )),
        NodeSpec::Subgraph { name, graph } => match context.graphs.get(graph) {
            Some(_) => Ok(("subgraph", Arc::new(RunsInExecutor))),
            None => Err(format!(
                "node '{name}' runs graph '{graph}', which is not declared (or declared after it, or part of a cycle)"
            )),
        },
        NodeSpec::Interrupt {
            name: _,
            value,
            resume_key,
        } => Ok((
            "interrupt",
            Arc::new(InterruptNode {
                value: serde_json::to_value(value).unwrap_or(Value::Null),
                resume_key: resume_key.clone(),
            }),
        )),
        NodeSpec::Native { name, function } => context
            .native
            .functions
            .get(function)
            .map(|node| ("native", node.clone()))
            .ok_or_else(|| {
                format!("node '{name}' uses native function '{function}', which is not registered")
            }),
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

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

pub(super) fn messages_of(state: &JsonMap) -> &[Value] {
    state
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(super) fn messages_update(messages: Vec<Value>) -> JsonMap {
    let mut update = JsonMap::new();
    update.insert("messages".into(), Value::Array(messages));
    update
}

/// The node of a `subgraph` declaration: the executor runs the subgraph itself, in its own
/// checkpoint namespace, so this is never invoked.
struct RunsInExecutor;

impl Node for RunsInExecutor {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let message = format!("subgraph node '{}' runs through the executor", input.node);
        Box::pin(async move { Err(RunError::new("RuntimeError", message)) })
    }
}

/// A node that returns no update (the `echo` graph measures the runtime's own overhead with it).
struct Noop;

impl Node for Noop {
    fn invoke(&self, _input: NodeInput) -> BoxFuture<'static, NodeResult> {
        Box::pin(async { Ok(None) })
    }
}

/// The built-in offline chat model. A text answer streams in word-sized chunks, the node's
/// delay spread over them; a tool call comes whole.
struct ScriptedChatModel {
    tools: Vec<String>,
    delay: Duration,
}

impl Node for ScriptedChatModel {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let delay = step_delay(&input.config, self.delay);
        let history = messages_of(&input.state).to_vec();
        let reply = scripted::reply(&history, &self.tools);
        let stream = input.stream;
        Box::pin(async move {
            let model = ModelInfo {
                provider: "scripted".into(),
                model: "scripted".into(),
                lc_run_id: uuid::Uuid::now_v7(),
            };
            stream.model_started(&model, &history);
            let pieces = if super::messages::tool_calls(&reply).is_empty() {
                scripted::words(&super::messages::content_text(&reply))
            } else {
                vec![]
            };
            if pieces.is_empty() {
                pause(delay).await;
            } else {
                let each = delay / pieces.len() as u32;
                let count = pieces.len();
                for (index, piece) in pieces.into_iter().enumerate() {
                    pause(each).await;
                    if stream.wants_tokens() {
                        let chunk = scripted::chunk(&reply, piece, index + 1 == count);
                        stream.model_chunk(&model, &chunk);
                    }
                }
            }
            stream.model_finished(&model, &reply);
            Ok(Some(messages_update(vec![reply])))
        })
    }
}

/// Pauses the run with a fixed value; resumed, it writes the resume value to a state key.
struct InterruptNode {
    value: Value,
    resume_key: String,
}

impl Node for InterruptNode {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let answer = input.interrupt(self.value.clone());
        let key = self.resume_key.clone();
        Box::pin(async move {
            let mut update = JsonMap::new();
            update.insert(key, answer?);
            Ok(Some(update))
        })
    }
}

/// Executes the tool calls of the last AI message, concurrently, one tool message per call.
struct ToolsNode {
    tools: Vec<Arc<Tool>>,
    delay: Duration,
}

impl Node for ToolsNode {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let delay = step_delay(&input.config, self.delay);
        let last = messages_of(&input.state).last().cloned();
        let tools = self.tools.clone();
        Box::pin(async move {
            let calls = match &last {
                Some(message) if super::messages::message_type(message) == Some("ai") => {
                    super::messages::tool_calls(message).to_vec()
                }
                _ => return Err(RunError::new("ValueError", "No AIMessage found in input")),
            };
            let results = join_all(calls.iter().map(|call| {
                let tools = &tools;
                async move {
                    pause(delay).await;
                    tools::run_call(call, tools).await
                }
            }))
            .await;
            Ok(Some(messages_update(results)))
        })
    }
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
