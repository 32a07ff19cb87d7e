//! The `openai` chat model provider: any OpenAI-compatible chat completions endpoint (OpenAI,
//! vLLM, llama.cpp server, Ollama, LiteLLM).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::nodes::{Node, NodeInput, NodeResult};
use super::spec::NodeSpec;
use super::tools::Tool;
use crate::domain::run::RunError;

/// A chat model node backed by an OpenAI-compatible endpoint.
pub struct ChatModel {
    name: String,
    tools: Vec<Arc<Tool>>,
}

impl ChatModel {
    /// Builds the node from a `chat_model` declaration with `provider = "openai"` and the tools
    /// bound to it; errors name what is missing or wrong.
    pub fn new(spec: &NodeSpec, tools: Vec<Arc<Tool>>) -> Result<Self, String> {
        Ok(ChatModel {
            name: spec.name().to_owned(),
            tools,
        })
    }
}

impl Node for ChatModel {
    fn invoke(&self, _input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let message = format!(
            "node '{}': the openai provider is not built yet ({} tools)",
            self.name,
            self.tools.len()
        );
        Box::pin(async move { Err(RunError::new("NotImplementedError", message)) })
    }
}
