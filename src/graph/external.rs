//! `http` and `command` nodes: node logic in any language. The node gets `{state, config}` as
//! JSON and answers with newline-delimited JSON: `{"custom": …}` lines, streamed as `custom`
//! events while it works, then the partial state update.

use std::path::Path;

use futures_util::future::BoxFuture;

use super::nodes::{Node, NodeInput, NodeResult};
use super::spec::NodeSpec;
use crate::domain::run::RunError;

/// A node that POSTs to a URL.
pub struct HttpNode {
    name: String,
}

impl HttpNode {
    /// Builds the node from an `http` declaration.
    pub fn new(spec: &NodeSpec) -> Result<Self, String> {
        Ok(HttpNode {
            name: spec.name().to_owned(),
        })
    }
}

impl Node for HttpNode {
    fn invoke(&self, _input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let message = format!("node '{}': http nodes are not built yet", self.name);
        Box::pin(async move { Err(RunError::new("NotImplementedError", message)) })
    }
}

/// A node that runs a program.
pub struct CommandNode {
    name: String,
}

impl CommandNode {
    /// Builds the node from a `command` declaration; relative paths start at `dir`.
    pub fn new(spec: &NodeSpec, _dir: &Path) -> Result<Self, String> {
        Ok(CommandNode {
            name: spec.name().to_owned(),
        })
    }
}

impl Node for CommandNode {
    fn invoke(&self, _input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let message = format!("node '{}': command nodes are not built yet", self.name);
        Box::pin(async move { Err(RunError::new("NotImplementedError", message)) })
    }
}
