//! Graphs: state channels with reducers, nodes and edges, declared in config and executed in
//! supersteps (see `executor`). Depends only on `domain`; never on actix, actix-web or rusqlite.

pub mod emit;
pub mod executor;
pub mod external;
pub mod messages;
pub mod nodes;
pub mod openai;
pub mod scripted;
pub mod spec;
pub mod tools;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::domain::run::{Breakpoints, RunError};
use crate::domain::JsonMap;
use nodes::{BuildContext, NativeNodes, Node};
use spec::{EdgeSpec, GraphSpec, NodeSpec};
use tools::Toolbox;

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
    fn parse(text: &str) -> Option<Self> {
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
    fn targets(&self) -> Vec<&String> {
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
    /// Builds a graph from its declaration; every node and edge is checked here, so a graph that
    /// loads cannot fail on structure at run time.
    pub fn from_spec(spec: GraphSpec, native: &NativeNodes) -> Result<Self, GraphError> {
        Self::build(spec, native, &BTreeMap::new())
    }

    /// `from_spec` with the graphs that subgraph nodes may run.
    fn build(
        spec: GraphSpec,
        native: &NativeNodes,
        graphs: &BTreeMap<String, Arc<Graph>>,
    ) -> Result<Self, GraphError> {
        let id = spec.id.clone().unwrap_or_default();
        let fail = |message: String| GraphError {
            graph: id.clone(),
            message,
        };
        if id.is_empty() {
            return Err(fail("the graph needs an id".into()));
        }
        let mut channels = Vec::new();
        for (name, reducer) in &spec.channels {
            let reducer = reducer
                .as_str()
                .and_then(Reducer::parse)
                .ok_or_else(|| {
                    fail(format!(
                        "channel '{name}' has reducer {reducer}; expected \"messages\", \"append\" or \"replace\""
                    ))
                })?;
            channels.push(Channel {
                name: name.clone(),
                reducer,
            });
        }
        let toolbox = Toolbox::new(&spec.tools, &spec.dir).map_err(&fail)?;
        let context = BuildContext {
            native,
            tools: &toolbox,
            dir: &spec.dir,
            graphs,
        };
        let mut nodes = Vec::new();
        for node_spec in &spec.nodes {
            let name = node_spec.name().to_owned();
            if name == START || name == END || name.is_empty() || name.contains('|') {
                return Err(fail(format!("'{name}' is not a valid node name")));
            }
            if nodes.iter().any(|node: &NodeDef| node.name == name) {
                return Err(fail(format!("node '{name}' is declared twice")));
            }
            let (kind, node) = nodes::build(node_spec, &context).map_err(fail)?;
            let subgraph = match node_spec {
                NodeSpec::Subgraph { graph, .. } => graphs.get(graph).cloned(),
                _ => None,
            };
            nodes.push(NodeDef {
                name,
                kind,
                node,
                subgraph,
            });
        }
        let known = |name: &str| name == END || nodes.iter().any(|node| node.name == name);
        let mut edges: HashMap<String, Vec<Edge>> = HashMap::new();
        for edge_spec in &spec.edges {
            let edge = Self::edge(edge_spec).map_err(&fail)?;
            if edge_spec.from != START && !nodes.iter().any(|node| node.name == edge_spec.from) {
                return Err(fail(format!("edge from unknown node '{}'", edge_spec.from)));
            }
            if let Some(unknown) = edge.targets().into_iter().find(|target| !known(target)) {
                return Err(fail(format!("edge to unknown node '{unknown}'")));
            }
            edges.entry(edge_spec.from.clone()).or_default().push(edge);
        }
        if !edges.contains_key(START) {
            return Err(fail(format!("no edge leaves '{START}'")));
        }
        let uses_messages = nodes
            .iter()
            .any(|node| matches!(node.kind, "chat_model" | "tools"))
            || edges
                .values()
                .flatten()
                .any(|edge| matches!(edge, Edge::HasToolCalls { .. }));
        if uses_messages && !channels.iter().any(|channel| channel.name == "messages") {
            return Err(fail(
                "chat_model and tools nodes and has_tool_calls edges need a 'messages' channel"
                    .into(),
            ));
        }
        let graph = Graph {
            id: id.clone(),
            description: spec.description,
            channels,
            nodes,
            edges,
            interrupt_before: spec.interrupt_before,
            interrupt_after: spec.interrupt_after,
        };
        for breakpoints in [&graph.interrupt_before, &graph.interrupt_after]
            .into_iter()
            .flatten()
        {
            if let Breakpoints::Nodes(names) = breakpoints {
                if let Some(unknown) = names.iter().find(|name| graph.node(name).is_none()) {
                    return Err(fail(format!("breakpoint on unknown node '{unknown}'")));
                }
            }
        }
        Ok(graph)
    }

    fn edge(spec: &EdgeSpec) -> Result<Edge, String> {
        if let Some(key) = &spec.switch {
            return match (&spec.to, &spec.when, &spec.then, &spec.cases) {
                (None, None, None, Some(cases)) if !cases.is_empty() => Ok(Edge::Switch {
                    key: key.clone(),
                    cases: cases.clone(),
                    otherwise: spec.otherwise.clone().unwrap_or_else(|| END.to_owned()),
                }),
                _ => Err(format!(
                    "switch edge from '{}' needs `cases` (value = node) and optionally `else`, and no `to`, `when` or `then`",
                    spec.from
                )),
            };
        }
        if spec.cases.is_some() {
            return Err(format!(
                "edge from '{}' has `cases` without `switch`",
                spec.from
            ));
        }
        match (&spec.to, &spec.when, &spec.then, &spec.otherwise) {
            (Some(to), None, None, None) => Ok(Edge::Static { to: to.clone() }),
            (None, Some(when), Some(then), Some(otherwise)) if when == "has_tool_calls" => {
                Ok(Edge::HasToolCalls {
                    then: then.clone(),
                    otherwise: otherwise.clone(),
                })
            }
            (None, Some(when), _, _) if when != "has_tool_calls" => Err(format!(
                "edge from '{}' has unknown router '{when}'; expected \"has_tool_calls\"",
                spec.from
            )),
            _ => Err(format!(
                "edge from '{}' needs either `to`, or `when`, `then` and `else`, or `switch` and `cases`",
                spec.from
            )),
        }
    }

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

/// Every configured graph by id.
#[derive(Debug, Default)]
pub struct GraphRegistry {
    graphs: BTreeMap<String, Arc<Graph>>,
}

impl GraphRegistry {
    /// Loads the graph files (paths relative to `base_dir`) and checks them.
    pub fn load(
        files: &[impl AsRef<Path>],
        base_dir: &Path,
        native: &NativeNodes,
    ) -> Result<Self, GraphError> {
        let mut pending = Vec::new();
        for file in files {
            let path = base_dir.join(file.as_ref());
            let spec = GraphSpec::read(&path).map_err(|message| GraphError {
                graph: path.display().to_string(),
                message,
            })?;
            pending.push(spec);
        }
        let mut registry = GraphRegistry::default();
        // A graph is built once every graph its subgraph nodes run is built.
        while !pending.is_empty() {
            let ready = pending.iter().position(|spec| {
                subgraphs_of(spec)
                    .iter()
                    .all(|graph| registry.graphs.contains_key(*graph))
            });
            let spec = match ready {
                Some(index) => pending.remove(index),
                // Nothing can be built: report the first graph with its missing subgraph.
                None => pending.remove(0),
            };
            let graph = Graph::build(spec, native, &registry.graphs)?;
            registry.insert(graph)?;
        }
        Ok(registry)
    }

    /// Adds a graph; ids must be unique.
    pub fn insert(&mut self, graph: Graph) -> Result<(), GraphError> {
        if self.graphs.contains_key(&graph.id) {
            return Err(GraphError {
                graph: graph.id.clone(),
                message: "declared twice".into(),
            });
        }
        self.graphs.insert(graph.id.clone(), Arc::new(graph));
        Ok(())
    }

    /// The graph with this id.
    pub fn get(&self, graph_id: &str) -> Option<Arc<Graph>> {
        self.graphs.get(graph_id).cloned()
    }

    /// Graph ids in sorted order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.graphs.keys().map(String::as_str)
    }
}

/// The graphs a spec's subgraph nodes run.
fn subgraphs_of(spec: &GraphSpec) -> Vec<&str> {
    spec.nodes
        .iter()
        .filter_map(|node| match node {
            NodeSpec::Subgraph { graph, .. } => Some(graph.as_str()),
            _ => None,
        })
        .collect()
}

/// Parses a graph declaration from TOML text (used by tests and examples).
pub fn parse_spec(id: &str, text: &str) -> Result<GraphSpec, String> {
    let mut spec: GraphSpec = toml::from_str(text).map_err(|error| error.to_string())?;
    spec.id.get_or_insert_with(|| id.to_owned());
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = r#"
        [channels]
        messages = "messages"
        [[nodes]]
        name = "agent"
        kind = "chat_model"
        provider = "scripted"
        tools = ["tavily_search_results_json"]
        [[nodes]]
        name = "tools"
        kind = "tools"
        tools = ["tavily_search_results_json"]
        [[edges]]
        from = "__start__"
        to = "agent"
        [[edges]]
        from = "agent"
        when = "has_tool_calls"
        then = "tools"
        else = "__end__"
        [[edges]]
        from = "tools"
        to = "agent"
    "#;

    fn agent() -> Graph {
        Graph::from_spec(parse_spec("agent", AGENT).unwrap(), &NativeNodes::default()).unwrap()
    }

    #[test]
    fn routes_on_tool_calls() {
        let graph = agent();
        let mut values = graph.initial_values();
        assert_eq!(graph.next_after(&[START.into()], &values), ["agent"]);
        values.insert("messages".into(), json!([{"type": "ai", "content": "", "tool_calls": [{"id": "1", "name": "t", "args": {}}]}]));
        assert_eq!(graph.next_after(&["agent".into()], &values), ["tools"]);
        values.insert(
            "messages".into(),
            json!([{"type": "ai", "content": "done", "tool_calls": []}]),
        );
        assert!(graph.next_after(&["agent".into()], &values).is_empty());
    }

    #[test]
    fn switch_edges_route_on_a_state_value() {
        let spec = parse_spec(
            "s",
            r#"
            [channels]
            route = "replace"
            [[nodes]]
            name = "a"
            kind = "noop"
            [[nodes]]
            name = "b"
            kind = "noop"
            [[nodes]]
            name = "c"
            kind = "noop"
            [[edges]]
            from = "__start__"
            switch = "route"
            cases = { left = "a", "2" = "b" }
            else = "c"
        "#,
        )
        .unwrap();
        let graph = Graph::from_spec(spec, &NativeNodes::default()).unwrap();
        let route = |value: Value| {
            let values = json!({ "route": value }).as_object().unwrap().clone();
            graph.next_after(&[START.into()], &values)
        };
        assert_eq!(route(json!("left")), ["a"]);
        assert_eq!(route(json!(2)), ["b"]);
        assert_eq!(route(json!("up")), ["c"]);
        assert_eq!(route(Value::Null), ["c"]);
        let drawn = graph.drawable();
        assert_eq!(drawn["edges"].as_array().unwrap().len(), 3);
        let no_cases = parse_spec("s", "[channels]\n[[nodes]]\nname = \"a\"\nkind = \"noop\"\n[[edges]]\nfrom = \"__start__\"\nswitch = \"k\"\n").unwrap();
        let error = Graph::from_spec(no_cases, &NativeNodes::default()).unwrap_err();
        assert!(error.to_string().contains("needs `cases`"), "{error}");
    }

    #[test]
    fn a_subgraph_hands_its_parent_only_what_it_added_to_list_channels() {
        let spec = "[channels]\nnotes = \"append\"\nlast = \"replace\"\nown = \"replace\"\n[[nodes]]\nname = \"a\"\nkind = \"noop\"\n[[edges]]\nfrom = \"__start__\"\nto = \"a\"\n";
        let parent =
            Graph::from_spec(parse_spec("p", spec).unwrap(), &NativeNodes::default()).unwrap();
        let child_spec = spec.replace("own = \"replace\"\n", "");
        let child = Graph::from_spec(
            parse_spec("c", &child_spec).unwrap(),
            &NativeNodes::default(),
        )
        .unwrap();
        let before = json!({"notes": [1], "last": "x", "own": 7})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            Value::Object(child.input_from(&before)),
            json!({"notes": [1], "last": "x"})
        );
        let after = json!({"notes": [1, 2, 3], "last": "y", "own": 9})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            Value::Object(parent.output_from(&child, &before, after)),
            json!({"notes": [2, 3], "last": "y"})
        );
    }

    #[test]
    fn bad_declarations_are_refused_with_the_reason() {
        let broken = AGENT.replace(
            "to = \"agent\"\n        [[edges]]\n        from = \"agent\"",
            "to = \"nowhere\"\n        [[edges]]\n        from = \"agent\"",
        );
        let error = Graph::from_spec(
            parse_spec("agent", &broken).unwrap(),
            &NativeNodes::default(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown node 'nowhere'"),
            "{error}"
        );
        let unknown_kind = parse_spec("x", "[channels]\n[[nodes]]\nname = \"a\"\nkind = \"teleport\"\n[[edges]]\nfrom = \"__start__\"\nto = \"a\"\n");
        assert!(unknown_kind.unwrap_err().contains("teleport"));
    }

    #[test]
    fn replace_channels_take_one_write_per_step() {
        let spec = parse_spec("r", "[channels]\nx = \"replace\"\nl = \"append\"\n[[nodes]]\nname = \"a\"\nkind = \"noop\"\n[[edges]]\nfrom = \"__start__\"\nto = \"a\"\n").unwrap();
        let graph = Graph::from_spec(spec, &NativeNodes::default()).unwrap();
        let mut values = graph.initial_values();
        let first = json!({"x": 1, "l": [1]}).as_object().unwrap().clone();
        let second = json!({"x": 2, "l": 2}).as_object().unwrap().clone();
        graph.apply_updates(&mut values, &[&first]).unwrap();
        graph.apply_updates(&mut values, &[&second]).unwrap();
        assert_eq!(Value::Object(values.clone()), json!({"l": [1, 2], "x": 2}));
        let error = graph
            .apply_updates(&mut values, &[&first, &second])
            .unwrap_err();
        assert_eq!(error.error, "InvalidUpdateError");
    }
}
