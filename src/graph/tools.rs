//! Tools a chat model can call and a `tools` node executes: built-in ones, and `http` and
//! `command` tools declared in a graph file's `[tools.<name>]` tables.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use super::scripted;
use super::spec::ToolSpec;

/// A tool: what the model is told about it, and how it runs.
#[derive(Debug)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    kind: ToolKind,
}

#[derive(Debug)]
enum ToolKind {
    /// The canned offline search of the default `agent` graph.
    Search,
    Http {
        url: String,
        headers: BTreeMap<String, String>,
        timeout: Duration,
    },
    Command {
        command: Vec<String>,
        env: BTreeMap<String, String>,
        dir: std::path::PathBuf,
        timeout: Duration,
    },
}

/// Default time a declared tool may take.
const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

impl Tool {
    /// The built-in tool called `name`, if there is one.
    pub fn builtin(name: &str) -> Option<Tool> {
        (name == scripted::SEARCH_TOOL).then(|| Tool {
            name: name.to_owned(),
            description: "A search engine. Input should be a search query.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"query": {"type": "string", "description": "search query to look up"}},
                "required": ["query"],
            }),
            kind: ToolKind::Search,
        })
    }

    /// The tool a graph file declares as `[tools.<name>]`; `dir` is the graph file's directory.
    pub fn from_spec(name: &str, spec: &ToolSpec, dir: &Path) -> Result<Tool, String> {
        let timeout = |seconds: Option<f64>| -> Result<Duration, String> {
            match seconds {
                None => Ok(DEFAULT_TOOL_TIMEOUT),
                Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
                    Ok(Duration::from_secs_f64(seconds))
                }
                Some(seconds) => Err(format!(
                    "tool '{name}' has timeout_seconds {seconds}; expected a positive number"
                )),
            }
        };
        let schema = |parameters: &Option<toml::Value>| match parameters {
            Some(schema) => serde_json::to_value(schema).unwrap_or(Value::Null),
            None => json!({"type": "object", "properties": {}}),
        };
        let (description, parameters, kind) = match spec {
            ToolSpec::Http {
                url,
                description,
                parameters,
                headers,
                timeout_seconds,
            } => (
                description,
                schema(parameters),
                ToolKind::Http {
                    url: url.clone(),
                    headers: headers.clone(),
                    timeout: timeout(*timeout_seconds)?,
                },
            ),
            ToolSpec::Command {
                command,
                description,
                parameters,
                env,
                timeout_seconds,
            } => {
                if command.is_empty() {
                    return Err(format!("tool '{name}' has an empty command"));
                }
                (
                    description,
                    schema(parameters),
                    ToolKind::Command {
                        command: command.clone(),
                        env: env.clone(),
                        dir: dir.to_path_buf(),
                        timeout: timeout(*timeout_seconds)?,
                    },
                )
            }
        };
        if !parameters.is_object() {
            return Err(format!(
                "tool '{name}' has parameters that are not a JSON Schema object"
            ));
        }
        Ok(Tool {
            name: name.to_owned(),
            description: description.clone().unwrap_or_else(|| name.to_owned()),
            parameters,
            kind,
        })
    }

    /// The tool as an OpenAI chat completions `tools` entry.
    pub fn binding(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }

    /// Executes one tool call (`{name, args, id}`); the result is a tool message, with status
    /// `error` when the tool failed.
    pub async fn call(&self, call: &Value) -> Value {
        let outcome: Result<String, String> = match &self.kind {
            ToolKind::Search => scripted::search_tool(&call["args"]),
            ToolKind::Http { .. } | ToolKind::Command { .. } => {
                Err(format!("tool '{}' cannot run yet", self.name))
            }
        };
        match outcome {
            Ok(content) => tool_message(call, content, "success"),
            Err(error) => tool_message(call, format!("Error: {error}"), "error"),
        }
    }
}

/// A tool message answering `call`.
pub fn tool_message(call: &Value, content: String, status: &str) -> Value {
    json!({
        "content": content,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": "tool",
        "name": call["name"],
        "id": Uuid::new_v4().to_string(),
        "tool_call_id": call["id"],
        "artifact": null,
        "status": status,
    })
}

/// The tools of one graph by name: the declared ones and the built-in ones.
#[derive(Debug, Default)]
pub struct Toolbox {
    tools: BTreeMap<String, Arc<Tool>>,
}

impl Toolbox {
    /// Builds the declared tools of a graph file in `dir`.
    pub fn new(specs: &BTreeMap<String, ToolSpec>, dir: &Path) -> Result<Self, String> {
        let mut tools = BTreeMap::new();
        for (name, spec) in specs {
            tools.insert(name.clone(), Arc::new(Tool::from_spec(name, spec, dir)?));
        }
        Ok(Toolbox { tools })
    }

    /// The tools `node` names, in order; an unknown name is an error that lists the known ones.
    pub fn resolve(&self, node: &str, names: &[String]) -> Result<Vec<Arc<Tool>>, String> {
        names
            .iter()
            .map(|name| {
                self.tools
                    .get(name)
                    .cloned()
                    .or_else(|| Tool::builtin(name).map(Arc::new))
                    .ok_or_else(|| {
                        let mut known: Vec<&str> = self.tools.keys().map(String::as_str).collect();
                        known.extend(scripted::BUILTIN_TOOLS);
                        format!(
                            "node '{node}' names tool '{name}', which is neither declared under [tools] nor built in; known tools: {}",
                            known.join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// Executes `call` with the tool it names among `tools`; an unknown name gives an error message
/// that lists the tools there are, so the model can correct itself.
pub async fn run_call(call: &Value, tools: &[Arc<Tool>]) -> Value {
    let name = call["name"].as_str().unwrap_or_default();
    match tools.iter().find(|tool| tool.name == name) {
        Some(tool) => tool.call(call).await,
        None => {
            let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_str()).collect();
            tool_message(
                call,
                format!(
                    "Error: {name} is not a valid tool, try one of [{}].",
                    names.join(", ")
                ),
                "error",
            )
        }
    }
}
