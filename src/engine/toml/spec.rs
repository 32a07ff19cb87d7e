//! The graph declaration format: one TOML file per graph, read from the files listed in
//! `[graphs] files` of the settings. Documented in `docs/graphs.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Tools that `chat_model` and `tools` nodes may name, besides the built-in ones.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolSpec>,
    /// The directory of the graph file: relative command paths and working directories start here.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// A tool declared in a graph file. Every kind has a description and a JSON Schema for its
/// arguments, which a chat model bound to the tool receives.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolSpec {
    /// POSTs the call's arguments as JSON to `url`; the response body is the result.
    Http {
        url: String,
        description: Option<String>,
        /// JSON Schema of the arguments (default: any object).
        parameters: Option<toml::Value>,
        /// Extra request headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Seconds before an attempt fails (default 30).
        timeout_seconds: Option<f64>,
        /// Retries of transient failures (default: those of a table without fields).
        retry: Option<RetrySpec>,
    },
    /// Runs `command` (program and arguments) with the call's arguments as JSON on stdin; its
    /// stdout is the result. Killed when it overruns its timeout.
    Command {
        command: Vec<String>,
        description: Option<String>,
        parameters: Option<toml::Value>,
        /// Extra environment variables.
        #[serde(default)]
        env: BTreeMap<String, String>,
        timeout_seconds: Option<f64>,
        /// Retries of failed attempts (default: one attempt).
        retry: Option<RetrySpec>,
    },
}

/// How a call out of Spindle (a chat model, a tool, an `http` or `command` node) retries a failed
/// attempt. Documented in `docs/graphs.md`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (default 3).
    #[serde(default = "RetrySpec::default_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt, in ms (default 500).
    #[serde(default = "RetrySpec::default_backoff_ms")]
    pub backoff_ms: u64,
    /// Each later wait is the previous one times this (default 2).
    #[serde(default = "RetrySpec::default_backoff_factor")]
    pub backoff_factor: f64,
    /// Longest wait, in ms (default 10000).
    #[serde(default = "RetrySpec::default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Shorten each wait by a random part of up to a quarter (default: on, except for `http` and
    /// `command` nodes).
    pub jitter: Option<bool>,
    /// The HTTP statuses that are retried (default `[408, 429, "5xx"]`).
    pub statuses: Option<Vec<StatusSpec>>,
    /// Longest wait a `Retry-After` header may ask for, in ms (default 60000).
    #[serde(default = "RetrySpec::default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
}

/// An entry of `retry.statuses`: a status code, or a class of them (`"4xx"`, `"5xx"`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Class(String),
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: Self::default_attempts(),
            backoff_ms: Self::default_backoff_ms(),
            backoff_factor: Self::default_backoff_factor(),
            max_backoff_ms: Self::default_max_backoff_ms(),
            jitter: None,
            statuses: None,
            max_retry_after_ms: Self::default_max_retry_after_ms(),
        }
    }
}

impl RetrySpec {
    fn default_attempts() -> u32 {
        3
    }
    fn default_backoff_ms() -> u64 {
        500
    }
    fn default_backoff_factor() -> f64 {
        2.0
    }
    fn default_max_backoff_ms() -> u64 {
        10_000
    }
    fn default_max_retry_after_ms() -> u64 {
        60_000
    }
    /// The statuses retried when `statuses` is not given.
    pub fn default_statuses() -> Vec<StatusSpec> {
        vec![
            StatusSpec::Code(408),
            StatusSpec::Code(429),
            StatusSpec::Class("5xx".into()),
        ]
    }
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
        /// `scripted`: the built-in offline model; `openai`: any OpenAI-compatible endpoint.
        provider: String,
        /// Tools bound to the model.
        #[serde(default)]
        tools: Vec<String>,
        /// Scripted only: how long each call takes unless the run's `configurable.delay`
        /// (seconds) says otherwise.
        #[serde(default)]
        delay_ms: u64,
        /// OpenAI-compatible: the API root, e.g. `https://api.openai.com/v1`.
        base_url: Option<String>,
        /// OpenAI-compatible: the model name sent with each request.
        model: Option<String>,
        /// OpenAI-compatible: the environment variable holding the API key (never logged).
        api_key_env: Option<String>,
        temperature: Option<f64>,
        max_tokens: Option<u64>,
        /// A system message put before the conversation.
        system_prompt: Option<String>,
        /// Seconds the endpoint may keep an attempt waiting (default 60).
        timeout_seconds: Option<f64>,
        /// Ask for a token stream (default true); tokens feed `messages` mode live.
        stream: Option<bool>,
        /// OpenAI-compatible: retries of transient failures (default: 3 attempts, as the OpenAI
        /// client makes).
        retry: Option<RetrySpec>,
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
    /// POSTs `{state, config}` to `url` and applies the returned JSON as a partial update.
    Http {
        name: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Seconds per attempt before it fails (default 60).
        timeout_seconds: Option<f64>,
        retry: Option<RetrySpec>,
    },
    /// Runs `command` with `{state, config}` on stdin and applies its stdout as a partial update.
    Command {
        name: String,
        command: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        timeout_seconds: Option<f64>,
        retry: Option<RetrySpec>,
    },
    /// Runs another configured graph on this graph's state.
    Subgraph { name: String, graph: String },
}

impl NodeSpec {
    /// The node's name.
    pub fn name(&self) -> &str {
        match self {
            NodeSpec::Noop { name }
            | NodeSpec::ChatModel { name, .. }
            | NodeSpec::Tools { name, .. }
            | NodeSpec::Interrupt { name, .. }
            | NodeSpec::Native { name, .. }
            | NodeSpec::Http { name, .. }
            | NodeSpec::Command { name, .. }
            | NodeSpec::Subgraph { name, .. } => name,
        }
    }
}

/// An edge: `from` → `to`; a conditional edge `from` → `when` ? `then` : `else`; or a switch on
/// the value of a state key, `from` → `cases[state[switch]]`, else `else`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub from: String,
    pub to: Option<String>,
    /// The router of a conditional edge: `has_tool_calls`.
    pub when: Option<String>,
    pub then: Option<String>,
    /// The state key a switch edge routes on.
    pub switch: Option<String>,
    /// Switch targets by the key's value (strings as they are, other values as JSON text).
    pub cases: Option<BTreeMap<String, String>>,
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
        spec.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if spec.id.is_none() {
            spec.id = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .map(str::to_owned);
        }
        Ok(spec)
    }
}
