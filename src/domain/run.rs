//! Runs: the Run object on the wire, its status machine and the stored run arguments (`kwargs`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::command::Command;
use super::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use super::multitask::MultitaskStrategy;
use super::stream_mode::StreamMode;
use super::time::Timestamp;
use super::JsonMap;

/// Run status on the wire: `pending → running → success | error | timeout | interrupted`.
/// A rolled-back run has no status: its row is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Running,
    Success,
    Error,
    Timeout,
    Interrupted,
}

impl RunStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Success,
        RunStatus::Error,
        RunStatus::Timeout,
        RunStatus::Interrupted,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Error => "error",
            RunStatus::Timeout => "timeout",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Pending and running runs are "in flight": double-texting strategies act on them.
    pub fn is_in_flight(self) -> bool {
        matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

/// `interrupt_before` / `interrupt_after`: every node (`"*"`) or a list of node names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Breakpoints {
    /// `"*"`: every node.
    All(AllNodes),
    /// The listed nodes.
    Nodes(Vec<String>),
}

/// The literal `"*"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AllNodes {
    #[serde(rename = "*")]
    Star,
}

impl Breakpoints {
    /// Whether a breakpoint is set on `node`.
    pub fn contains(&self, node: &str) -> bool {
        match self {
            Breakpoints::All(_) => true,
            Breakpoints::Nodes(nodes) => nodes.iter().any(|name| name == node),
        }
    }
}

impl<'de> Deserialize<'de> for Breakpoints {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Nodes(Vec<String>),
        }
        match Raw::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected \"*\" or a list of node names"))?
        {
            Raw::Text(text) if text == "*" => Ok(Breakpoints::All(AllNodes::Star)),
            Raw::Text(text) => Err(serde::de::Error::custom(format!(
                "expected \"*\" or a list of node names, got the string {text:?}"
            ))),
            Raw::Nodes(nodes) => Ok(Breakpoints::Nodes(nodes)),
        }
    }
}

/// How eagerly a run persists checkpoints; Spindle writes every checkpoint before the next step
/// for `sync` and `async`, and only the last one for `exit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Sync,
    #[default]
    Async,
    Exit,
}

/// The run arguments stored with a run and shown as `kwargs` on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunKwargs {
    /// The graph input; `null` continues from the current checkpoint.
    pub input: Option<Value>,
    /// `{update?, resume?, goto?}`; takes precedence over `input`.
    pub command: Option<Command>,
    /// `{configurable, metadata, recursion_limit?, tags?, …}` as the graph sees it.
    pub config: JsonMap,
    /// The run context; nodes see it merged over `config.configurable`.
    pub context: JsonMap,
    /// Requested stream modes (always a list).
    pub stream_mode: Vec<StreamMode>,
    pub interrupt_before: Option<Breakpoints>,
    pub interrupt_after: Option<Breakpoints>,
    pub webhook: Option<String>,
    pub feedback_keys: Option<Vec<String>>,
    /// True for stateless runs whose thread is deleted afterwards.
    pub temporary: bool,
    pub subgraphs: bool,
    pub resumable: bool,
    pub checkpoint_during: bool,
    pub durability: Durability,
    /// Start from this checkpoint instead of the thread's latest one (time travel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<CheckpointId>,
}

impl RunKwargs {
    /// `config.configurable`, or an empty map.
    pub fn configurable(&self) -> JsonMap {
        match self.config.get("configurable") {
            Some(Value::Object(map)) => map.clone(),
            _ => JsonMap::new(),
        }
    }

    /// What graph nodes see as their configuration: `configurable` with `context` over it.
    pub fn node_config(&self) -> JsonMap {
        let mut config = self.configurable();
        super::merge_into(&mut config, &self.context);
        config
    }

    /// `config.recursion_limit` if set.
    pub fn recursion_limit(&self) -> Option<u64> {
        self.config.get("recursion_limit").and_then(Value::as_u64)
    }
}

/// A graph failure as reported on the wire: `{"error": "<class>", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    pub error: String,
    pub message: String,
}

impl RunError {
    /// A failure of the given class with a message.
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            message: message.into(),
        }
    }
}

/// A run as returned by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: RunId,
    pub thread_id: ThreadId,
    pub assistant_id: AssistantId,
    /// The graph the run executes (not on the wire: the run's metadata names it there).
    #[serde(skip)]
    pub graph_id: String,
    pub metadata: JsonMap,
    pub status: RunStatus,
    pub kwargs: RunKwargs,
    pub multitask_strategy: MultitaskStrategy,
    /// Creation time plus `after_seconds`: runs on a thread start in this order.
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What to do when a run names a thread that does not exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IfNotExists {
    /// 404 (the default).
    #[default]
    Reject,
    /// Create the thread with the id from the path.
    Create,
}

/// A validated request for a new run, before the thread actor decides its fate.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub run_id: RunId,
    pub thread_id: ThreadId,
    pub assistant_id: AssistantId,
    pub graph_id: String,
    /// Assistant, request and `config.metadata` merged; thread metadata is merged in at insert.
    pub metadata: JsonMap,
    pub kwargs: RunKwargs,
    pub multitask_strategy: MultitaskStrategy,
    pub if_not_exists: IfNotExists,
    /// Metadata of the thread if `if_not_exists: create` creates it (the request's metadata).
    pub thread_metadata: JsonMap,
    /// When the request was read, plus `after_seconds`; the thread actor stamps the run again
    /// when it takes it, so a thread's runs are ordered as its actor received them.
    pub created_at: Timestamp,
    /// `after_seconds`: the run starts no earlier than this long after it is created.
    pub after_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakpoints_accept_star_and_lists_but_not_a_bare_name() {
        let star: Breakpoints = serde_json::from_str("\"*\"").unwrap();
        assert!(star.contains("anything"));
        let nodes: Breakpoints = serde_json::from_str("[\"tools\"]").unwrap();
        assert!(nodes.contains("tools") && !nodes.contains("agent"));
        assert!(serde_json::from_str::<Breakpoints>("\"tools\"").is_err());
        assert_eq!(serde_json::to_string(&star).unwrap(), "\"*\"");
    }

    #[test]
    fn status_spelling_round_trips() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                Value::String(status.as_str().into())
            );
        }
    }
}
