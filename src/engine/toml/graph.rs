//! The `Graph` type: state channels with their reducers, nodes and edges, and what they do at run
//! time (apply a superstep's updates, route to the next nodes, render `/graph` and `/schemas`).
//! Building a graph from its declaration is in `registry.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};

use super::messages;
use super::node::Node;
use crate::domain::run::{Breakpoints, RunError};
use crate::domain::JsonMap;

/// The virtual entry node.
pub const START: &str = "__start__";
/// The virtual exit node.
pub const END: &str = "__end__";

/// A graph declaration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("graph '{graph}': {message}")]
pub struct GraphError {
    pub graph: String,
    pub message: String,
}

/// How a channel combines the updates written to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reducer {
    /// LangChain `add_messages`.
    Messages,
    /// List concatenation.
    Append,
    /// Last value wins; two writes in one superstep are an error.
    Replace,
}

impl Reducer {
    pub(super) fn parse(text: &str) -> Option<Self> {
        match text {
            "messages" => Some(Reducer::Messages),
            "append" => Some(Reducer::Append),
            "replace" => Some(Reducer::Replace),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Reducer::Messages => "messages",
            Reducer::Append => "append",
            Reducer::Replace => "replace",
        }
    }
}

/// A state channel.
#[derive(Clone, Debug)]
pub struct Channel {
    pub name: String,
    pub reducer: Reducer,
}

/// An outgoing edge of a node.
#[derive(Clone, Debug)]
pub enum Edge {
    /// Always go to `to`.
    Static { to: String },
    /// Go to `then` when the last message is an AI message with tool calls, else `otherwise`.
    HasToolCalls { then: String, otherwise: String },
    /// Go to `cases[state[key]]`, or `otherwise` when the value has no case (or is missing).
    Switch {
        key: String,
        cases: BTreeMap<String, String>,
        otherwise: String,
    },
}

impl Edge {
    /// Every node this edge may lead to.
    pub(super) fn targets(&self) -> Vec<&String> {
        match self {
            Edge::Static { to } => vec![to],
            Edge::HasToolCalls { then, otherwise } => vec![then, otherwise],
            Edge::Switch {
                cases, otherwise, ..
            } => cases.values().chain([otherwise]).collect(),
        }
    }
}

/// The case label of a state value for switch edges: strings as they are, anything else as JSON.
fn case_label(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A node of a graph.
#[derive(Clone)]
pub struct NodeDef {
    pub name: String,
    /// The declared kind, for `/graph` and logs.
    pub kind: &'static str,
    pub node: Arc<dyn Node>,
    /// For a `subgraph` node, the graph it runs (the executor runs it in its own namespace).
    pub subgraph: Option<Arc<Graph>>,
}

/// A validated, executable graph.
pub struct Graph {
    pub id: String,
    pub description: Option<String>,
    pub channels: Vec<Channel>,
    pub nodes: Vec<NodeDef>,
    /// Outgoing edges by source node (including `__start__`).
    pub edges: HashMap<String, Vec<Edge>>,
    pub interrupt_before: Option<Breakpoints>,
    pub interrupt_after: Option<Breakpoints>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Graph {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeDef> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// Position of a node in declaration order, used to order tasks and updates.
    fn order(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .unwrap_or(usize::MAX)
    }

    /// Values of a thread that has never been written: list channels start empty.
    pub fn initial_values(&self) -> JsonMap {
        self.channels
            .iter()
            .filter(|channel| channel.reducer != Reducer::Replace)
            .map(|channel| (channel.name.clone(), json!([])))
            .collect()
    }

    /// Applies the updates of one superstep (in the given order) through the channel reducers.
    /// Keys that are not channels are ignored, as LangGraph does.
    pub fn apply_updates(
        &self,
        values: &mut JsonMap,
        updates: &[&JsonMap],
    ) -> Result<(), RunError> {
        for channel in &self.channels {
            let writes: Vec<&Value> = updates
                .iter()
                .filter_map(|update| update.get(&channel.name))
                .collect();
            if writes.is_empty() {
                continue;
            }
            match channel.reducer {
                Reducer::Replace => {
                    if writes.len() > 1 {
                        return Err(RunError::new(
                            "InvalidUpdateError",
                            format!(
                                "At key '{}': Can receive only one value per step. Use an Annotated key to handle multiple values.",
                                channel.name
                            ),
                        ));
                    }
                    values.insert(channel.name.clone(), writes[0].clone());
                }
                Reducer::Append => {
                    let mut list = match values.remove(&channel.name) {
                        Some(Value::Array(list)) => list,
                        Some(Value::Null) | None => Vec::new(),
                        Some(other) => vec![other],
                    };
                    for write in writes {
                        match write {
                            Value::Array(items) => list.extend(items.iter().cloned()),
                            item => list.push(item.clone()),
                        }
                    }
                    values.insert(channel.name.clone(), Value::Array(list));
                }
                Reducer::Messages => {
                    let mut list = match values.remove(&channel.name) {
                        Some(Value::Array(list)) => list,
                        _ => Vec::new(),
                    };
                    for write in writes {
                        list = messages::add_messages(&list, write)?;
                    }
                    values.insert(channel.name.clone(), Value::Array(list));
                }
            }
        }
        Ok(())
    }

    /// The input of this graph run as a subgraph: the parent's state, restricted to the channels
    /// this graph has.
    pub fn input_from(&self, parent_state: &JsonMap) -> JsonMap {
        self.channels
            .iter()
            .filter_map(|channel| {
                parent_state
                    .get(&channel.name)
                    .map(|value| (channel.name.clone(), value.clone()))
            })
            .collect()
    }

    /// The update a subgraph's final `values` make to this graph, whose state was `before`: the
    /// channels both graphs have. List channels contribute only what the subgraph added (message
    /// channels merge by id, so their whole list is safe); replace channels their value.
    pub fn output_from(&self, subgraph: &Graph, before: &JsonMap, mut values: JsonMap) -> JsonMap {
        let mut update = JsonMap::new();
        for channel in &self.channels {
            if !subgraph.channels.iter().any(|own| own.name == channel.name) {
                continue;
            }
            let Some(value) = values.remove(&channel.name) else {
                continue;
            };
            let value = match (channel.reducer, value) {
                (Reducer::Append, Value::Array(mut items)) => {
                    let earlier = before
                        .get(&channel.name)
                        .and_then(Value::as_array)
                        .filter(|earlier| items.starts_with(earlier))
                        .map_or(0, Vec::len);
                    Value::Array(items.split_off(earlier))
                }
                (_, value) => value,
            };
            update.insert(channel.name.clone(), value);
        }
        update
    }

    /// The nodes to run after `executed` wrote their updates into `values`: the union of their
    /// outgoing edges, in declaration order, without `__end__`.
    pub fn next_after(&self, executed: &[String], values: &JsonMap) -> Vec<String> {
        let last_message = values
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|list| list.last());
        let has_tool_calls =
            last_message.is_some_and(|message| !messages::tool_calls(message).is_empty());
        let mut next: Vec<String> = Vec::new();
        for source in executed {
            for edge in self.edges.get(source).into_iter().flatten() {
                let target = match edge {
                    Edge::Static { to } => to,
                    Edge::HasToolCalls { then, otherwise } => {
                        if has_tool_calls {
                            then
                        } else {
                            otherwise
                        }
                    }
                    Edge::Switch {
                        key,
                        cases,
                        otherwise,
                    } => case_label(values.get(key))
                        .and_then(|label| cases.get(&label))
                        .unwrap_or(otherwise),
                };
                if target != END && !next.contains(target) {
                    next.push(target.clone());
                }
            }
        }
        next.sort_by_key(|name| self.order(name));
        next
    }

    /// The drawable graph for `GET /assistants/{id}/graph`.
    pub fn drawable(&self) -> Value {
        let mut nodes = vec![json!({"id": START, "type": "schema", "data": START})];
        for node in &self.nodes {
            nodes.push(json!({
                "id": node.name,
                "type": "runnable",
                "data": {"id": ["spindle", node.kind], "name": node.name},
            }));
        }
        nodes.push(json!({"id": END, "type": "schema", "data": END}));
        let mut sources: Vec<&String> = self.edges.keys().collect();
        sources.sort_by_key(|name| {
            if *name == START {
                0
            } else {
                self.order(name).saturating_add(1)
            }
        });
        let mut edges = Vec::new();
        for source in sources {
            for edge in &self.edges[source] {
                match edge {
                    Edge::Static { to } => edges.push(json!({"source": source, "target": to})),
                    conditional => {
                        let mut targets = conditional.targets();
                        targets.dedup();
                        for target in targets {
                            edges.push(
                                json!({"source": source, "target": target, "conditional": true}),
                            );
                        }
                    }
                }
            }
        }
        json!({"nodes": nodes, "edges": edges})
    }

    /// The schemas of the subgraphs by namespace (`node`, nested ones `node|inner` with
    /// `recurse`), only those under `namespace` when given; `{}` when there are none.
    pub fn subgraph_schemas(&self, namespace: Option<&str>, recurse: bool) -> Value {
        let mut found = JsonMap::new();
        self.collect_subgraphs("", namespace, recurse, &mut found);
        Value::Object(found)
    }

    fn collect_subgraphs(
        &self,
        prefix: &str,
        namespace: Option<&str>,
        recurse: bool,
        found: &mut JsonMap,
    ) {
        for node in &self.nodes {
            let Some(subgraph) = &node.subgraph else {
                continue;
            };
            let path = format!("{prefix}{}", node.name);
            let wanted = namespace.map_or(true, |namespace| path == namespace);
            if wanted {
                found.insert(path.clone(), subgraph.schemas());
            }
            let deeper =
                namespace.is_some_and(|namespace| namespace.starts_with(&format!("{path}|")));
            if recurse && wanted || deeper {
                subgraph.collect_subgraphs(&format!("{path}|"), namespace, recurse, found);
            }
        }
    }

    /// JSON Schemas of the state, input, output, config and context for `/schemas`.
    pub fn schemas(&self) -> Value {
        let properties: JsonMap = self
            .channels
            .iter()
            .map(|channel| {
                let schema = match channel.reducer {
                    Reducer::Messages => json!({"type": "array", "items": {"type": "object"},
                        "title": channel.name, "description": "messages (add_messages)"}),
                    Reducer::Append => json!({"type": "array", "title": channel.name,
                        "description": channel.reducer.name()}),
                    Reducer::Replace => json!({"title": channel.name,
                        "description": channel.reducer.name()}),
                };
                (channel.name.clone(), schema)
            })
            .collect();
        let state = json!({"title": self.id, "type": "object", "properties": properties});
        let config = json!({"title": "Configurable", "type": "object", "properties": {
            "delay": {"type": "number", "description": "seconds each model and tool step takes"}
        }});
        json!({
            "graph_id": self.id,
            "input_schema": state,
            "output_schema": state,
            "state_schema": state,
            "config_schema": config,
            "context_schema": config,
        })
    }
}
