//! The built-in node kinds declared in graph files (`noop`, the scripted chat model, `tools`,
//! `interrupt`, the `subgraph` placeholder) and `build`, the factory that makes the node a
//! declaration describes, of any kind (the `openai` model and `http` and `command` nodes
//! included). The contract every node keeps is in `node.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use serde_json::Value;

use super::emit::ModelInfo;
use super::graph::Graph;
use super::messages;
use super::node::{
    messages_of, messages_update, step_delay, NativeNodes, Node, NodeInput, NodeResult,
};
use super::scripted;
use super::spec::NodeSpec;
use super::tools::{self, Tool, Toolbox};
use super::{external, openai};
use crate::domain::run::RunError;
use crate::domain::JsonMap;

/// What building a node may refer to besides its own declaration.
pub(super) struct BuildContext<'a> {
    pub native: &'a NativeNodes,
    /// The graph file's tools.
    pub tools: &'a Toolbox,
    /// The graph file's directory.
    pub dir: &'a Path,
    /// The graphs built so far, for subgraph nodes.
    pub graphs: &'a BTreeMap<String, Arc<Graph>>,
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
            .get(function)
            .map(|node| ("native", node))
            .ok_or_else(|| {
                format!("node '{name}' uses native function '{function}', which is not registered")
            }),
    }
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The node of a `subgraph` declaration: the executor runs the subgraph itself, in its own
/// checkpoint namespace, so this is never invoked.
struct RunsInExecutor;

impl Node for RunsInExecutor {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let message = format!("subgraph node '{}' runs through the executor", input.node);
        Box::pin(async move { Err(RunError::new("RuntimeError", message).into()) })
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
            let pieces = if messages::tool_calls(&reply).is_empty() {
                scripted::words(&messages::content_text(&reply))
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
                Some(message) if messages::message_type(message) == Some("ai") => {
                    messages::tool_calls(message).to_vec()
                }
                _ => return Err(RunError::new("ValueError", "No AIMessage found in input").into()),
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
