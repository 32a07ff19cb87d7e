//! The graph declaration format: one TOML file per graph, read from the files listed in
//! `[graphs] files` of the settings. Documented in `docs/graphs.md`.

use std::path::Path;

use serde::Deserialize;

use crate::domain::run::Breakpoints;

/// A graph file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// The graph id; defaults to the file name without `.toml`.
    pub id: Option<String>,
    pub description: Option<String>,
    /// Static breakpoints applied to every run of the graph (runs may add their own).
    pub interrupt_before: Option<Breakpoints>,
    pub interrupt_after: Option<Breakpoints>,
    /// State channels and their reducers, in declaration order.
    pub channels: toml::Table,
    pub nodes: Vec<NodeSpec>,
    pub edges: Vec<EdgeSpec>,
}

/// One node: a name plus a built-in kind and its options.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeSpec {
    /// Returns no update.
    Noop { name: String },
    /// A chat model that reads the `messages` channel and appends its answer.
    ChatModel {
        name: String,
        /// `scripted`: the built-in offline model.
        provider: String,
        /// Tools bound to the model.
        #[serde(default)]
        tools: Vec<String>,
        /// How long each call takes unless the run's `configurable.delay` (seconds) says otherwise.
        #[serde(default)]
        delay_ms: u64,
    },
    /// Executes every tool call of the last AI message and appends one tool message per call.
    Tools {
        name: String,
        tools: Vec<String>,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Pauses the run with `value` (a dynamic interrupt); a run resuming it with
    /// `command.resume` writes the resume value to the state key `resume_key`.
    Interrupt {
        name: String,
        value: toml::Value,
        resume_key: String,
    },
    /// A Rust function registered through the library (`NativeNodes`).
    Native { name: String, function: String },
}

impl NodeSpec {
    /// The node's name.
    pub fn name(&self) -> &str {
        match self {
            NodeSpec::Noop { name }
            | NodeSpec::ChatModel { name, .. }
            | NodeSpec::Tools { name, .. }
            | NodeSpec::Interrupt { name, .. }
            | NodeSpec::Native { name, .. } => name,
        }
    }
}

/// An edge: `from` → `to`, or a conditional edge `from` → `when` ? `then` : `else`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub from: String,
    pub to: Option<String>,
    /// The router of a conditional edge: `has_tool_calls`.
    pub when: Option<String>,
    pub then: Option<String>,
    #[serde(rename = "else")]
    pub otherwise: Option<String>,
}

impl GraphSpec {
    /// Reads and parses a graph file; the id defaults to the file stem.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read graph file {}: {error}", path.display()))?;
        let mut spec: GraphSpec = toml::from_str(&text)
            .map_err(|error| format!("invalid graph file {}: {error}", path.display()))?;
        if spec.id.is_none() {
            spec.id = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .map(str::to_owned);
        }
        Ok(spec)
    }
}
