//! `subgraph` nodes: a node that runs another configured graph on its parent's state.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::nodes::{Node, NodeInput, NodeResult};
use super::Graph;
use crate::domain::run::RunError;

/// Runs `graph` as one node of another graph.
pub struct SubgraphNode {
    graph: Arc<Graph>,
}

impl SubgraphNode {
    pub fn new(graph: Arc<Graph>) -> Self {
        SubgraphNode { graph }
    }
}

impl Node for SubgraphNode {
    fn invoke(&self, _input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let message = format!("subgraph '{}' is not built yet", self.graph.id);
        Box::pin(async move { Err(RunError::new("NotImplementedError", message)) })
    }
}
