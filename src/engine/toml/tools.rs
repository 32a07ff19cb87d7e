//! Tools a chat model can call and a `tools` node executes: built-in ones, and `http` and
//! `command` tools declared in a graph file's `[tools.<name>]` tables.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::info;
use serde_json::{json, Value};

use super::external::{self, Target};
use super::messages::tool_message;
use super::retry::{Owner, RetryPolicy};
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
    /// An `http` or `command` tool.
    External(Box<External>),
}

/// An `http` or `command` tool: the call's arguments go to `target` as JSON, each attempt within
/// `timeout`, retried as `retry` says.
#[derive(Debug)]
struct External {
    target: Target,
    timeout: Duration,
    retry: RetryPolicy,
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
        let owner = format!("tool '{name}'");
        let (description, parameters, target, timeout_seconds, retry) = match spec {
            ToolSpec::Http {
                url,
                description,
                parameters,
                headers,
                timeout_seconds,
                retry,
            } => (
                description,
                parameters,
                Target::http(&owner, url, headers)?,
                timeout_seconds,
                RetryPolicy::new(&owner, retry.as_ref(), Owner::Call)?,
            ),
            ToolSpec::Command {
                command,
                description,
                parameters,
                env,
                timeout_seconds,
                retry,
            } => (
                description,
                parameters,
                Target::command(&owner, command, env, dir)?,
                timeout_seconds,
                RetryPolicy::new(&owner, retry.as_ref(), Owner::CommandTool)?,
            ),
        };
        let parameters = match parameters {
            Some(schema) => serde_json::to_value(schema).unwrap_or(Value::Null),
            None => json!({"type": "object", "properties": {}}),
        };
        if !parameters.is_object() {
            return Err(format!(
                "{owner} has parameters that are not a JSON Schema object"
            ));
        }
        Ok(Tool {
            name: name.to_owned(),
            description: description.clone().unwrap_or_else(|| name.to_owned()),
            parameters,
            kind: ToolKind::External(Box::new(External {
                target,
                timeout: external::timeout_of(&owner, *timeout_seconds, DEFAULT_TOOL_TIMEOUT)?,
                retry,
            })),
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
            ToolKind::External(external) => self.call_external(external, &call["args"]).await,
        };
        match outcome {
            Ok(content) => tool_message(call, content, "success"),
            Err(error) => tool_message(call, format!("Error: {error}"), "error"),
        }
    }

    /// Sends `args` to an `http` or `command` tool. An HTTP body that is a JSON string gives the
    /// string itself; a program's stdout is trimmed. When more than one attempt was allowed, an
    /// error says how many were made.
    async fn call_external(&self, tool: &External, args: &Value) -> Result<String, String> {
        let External {
            target,
            timeout,
            retry,
        } = tool;
        let timeout = *timeout;
        let input = match args {
            Value::Null => Bytes::from_static(b"{}"),
            args => Bytes::from(args.to_string()),
        };
        let described = target.describe();
        info!("tool call started tool={} target={described}", self.name);
        let started = Instant::now();
        let mut attempts = 0;
        let outcome = retry
            .run(&format!("tool={}", self.name), |attempt| {
                attempts = attempt;
                let input = input.clone();
                async move {
                    let mut output = Vec::new();
                    external::within(
                        timeout,
                        target.exchange(input, |chunk| external::collect(&mut output, chunk)),
                    )
                    .await
                    .map(|()| output)
                }
            })
            .await;
        let elapsed_ms = started.elapsed().as_millis();
        let result = match outcome {
            Ok(_) => "success",
            Err(_) => "error",
        };
        info!(
            "tool call finished tool={} target={described} elapsed_ms={elapsed_ms} outcome={result} attempts={attempts}",
            self.name
        );
        let output = outcome.map_err(|gave_up| {
            gave_up.counted(&format!("tool '{}' {}", self.name, gave_up.error.message))
        })?;
        let text = String::from_utf8_lossy(&output);
        if !target.is_http() {
            return Ok(text.trim().to_owned());
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::String(content)) => Ok(content),
            _ => Ok(text.into_owned()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(text: &str) -> Result<Tool, String> {
        let spec: ToolSpec = toml::from_str(text).unwrap();
        Tool::from_spec("t", &spec, Path::new("/graphs"))
    }

    #[test]
    fn declared_tools_are_checked_at_load() {
        let error = |text: &str| declared(text).expect_err("the declaration is refused");
        assert!(error("kind = 'http'\nurl = 'not a url'").starts_with("tool 't' has url"));
        assert!(
            error("kind = 'command'\ncommand = []").starts_with("tool 't' has an empty command")
        );
        assert!(
            error("kind = 'command'\ncommand = ['x']\ntimeout_seconds = -1")
                .starts_with("tool 't' has timeout_seconds -1")
        );
        assert!(error("kind = 'http'\nurl = 'http://x/'\nparameters = 3").contains("JSON Schema"));
        assert!(
            error("kind = 'http'\nurl = 'http://x/'\nretry = {statuses = [200]}")
                .starts_with("tool 't' has retry.statuses 200")
        );
        assert!(
            error("kind = 'command'\ncommand = ['x']\nretry = {max_attempts = 0}")
                .starts_with("tool 't' has retry.max_attempts 0")
        );
        let tool = declared("kind = 'http'\nurl = 'http://x/'\ndescription = 'd'").unwrap();
        assert_eq!(tool.binding()["function"]["description"], "d");
    }
}
