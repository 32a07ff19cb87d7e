//! Building graphs: `parse_spec`, `Graph::from_spec` (every channel, node, edge and breakpoint
//! of a declaration checked at load), and the `GraphRegistry` of a server's graph files, which
//! builds each graph after the graphs its subgraph nodes run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::graph::{Channel, Edge, Graph, GraphError, NodeDef, Reducer, END, START};
use super::kinds::{self, BuildContext};
use super::node::NativeNodes;
use super::spec::{EdgeSpec, GraphSpec, NodeSpec};
use super::tools::Toolbox;
use crate::domain::run::Breakpoints;

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
            let (kind, node) = kinds::build(node_spec, &context).map_err(fail)?;
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
    use serde_json::{json, Value};

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
