//! A request for a run (the body of the run-creating endpoints) and the rule that turns it into
//! a run: configuration and metadata merged over the assistant's, reserved keys stripped,
//! `command` parsed once into its typed form, stream modes checked, defaults applied. Pure:
//! whoever creates runs (HTTP handlers, later crons, MCP, A2A) goes through `build_run`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::assistant::Assistant;
use super::checkpoint::{named_checkpoint, CheckpointRef};
use super::command::Command;
use super::ids::{RunId, ThreadId};
use super::multitask::MultitaskStrategy;
use super::run::{Breakpoints, Durability, IfNotExists, NewRun, RunKwargs};
use super::stream_mode::StreamMode;
use super::time::Timestamp;
use super::{
    merge_into, strip_keys, JsonMap, ValidationError, RESERVED_CONFIG_KEYS, RESERVED_METADATA_KEYS,
};

/// Longest accepted `after_seconds`: one year.
const MAX_AFTER_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// `stream_mode`: one mode or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StreamModes {
    One(String),
    Many(Vec<String>),
}

/// What a client going away does to the run it waits for.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    Cancel,
    Continue,
}

/// What happens to a stateless run's temporary thread when the run ends.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnCompletion {
    /// The thread and its runs are deleted.
    #[default]
    Delete,
    /// The thread stays, like any other.
    Keep,
}

/// A request for a run, as the run-creating endpoints take it (and crons, MCP, A2A will).
/// Unknown fields (such as `strict_resume`) are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct RunRequest {
    pub assistant_id: String,
    pub input: Option<Value>,
    pub command: Option<Value>,
    pub metadata: Option<JsonMap>,
    pub config: Option<JsonMap>,
    pub context: Option<JsonMap>,
    pub checkpoint: Option<CheckpointRef>,
    pub checkpoint_id: Option<String>,
    pub stream_mode: Option<StreamModes>,
    pub stream_subgraphs: Option<bool>,
    pub stream_resumable: Option<bool>,
    pub feedback_keys: Option<Vec<String>>,
    pub interrupt_before: Option<Breakpoints>,
    pub interrupt_after: Option<Breakpoints>,
    pub webhook: Option<String>,
    pub multitask_strategy: Option<MultitaskStrategy>,
    pub if_not_exists: Option<IfNotExists>,
    pub after_seconds: Option<f64>,
    pub durability: Option<Durability>,
    pub checkpoint_during: Option<bool>,
    /// `/stream` and `/wait`: cancel the run when the client goes away.
    pub on_disconnect: Option<OnDisconnect>,
    /// Stateless runs only.
    pub on_completion: Option<OnCompletion>,
}

impl RunRequest {
    /// Whether the client asked that the run be cancelled when it goes away.
    pub fn cancel_on_disconnect(&self) -> bool {
        self.on_disconnect == Some(OnDisconnect::Cancel)
    }
}

fn object_field(config: &mut JsonMap, key: &str) -> Result<Option<JsonMap>, ValidationError> {
    match config.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(ValidationError::Invalid(format!(
            "Invalid request body: field `config.{key}`: expected an object, got {other}"
        ))),
    }
}

/// Validates a run request and builds the run: configuration merged over the assistant's,
/// reserved keys stripped, defaults applied.
pub fn build_run(
    thread_id: ThreadId,
    request: RunRequest,
    assistant: &Assistant,
    stateless: bool,
) -> Result<NewRun, ValidationError> {
    if stateless
        && request.command.as_ref().is_some_and(|command| {
            command
                .get("resume")
                .is_some_and(|resume| !resume.is_null())
        })
    {
        return Err(ValidationError::BadRequest(
            "You must provide a thread_id when resuming.".into(),
        ));
    }
    let command = request
        .command
        .filter(|command| !command.is_null())
        .map(|command| {
            Command::parse(&command).map_err(|problem| {
                ValidationError::Invalid(format!(
                    "Invalid request body: field `command`: {problem}"
                ))
            })
        })
        .transpose()?;
    if request.webhook.as_deref() == Some("") {
        return Err(ValidationError::Invalid(
            "Invalid request body: field `webhook`: must not be empty".into(),
        ));
    }
    if request.webhook.is_some() {
        return Err(ValidationError::Unsupported(
            "`webhook` is not supported yet".into(),
        ));
    }
    let mut config = request.config.unwrap_or_default();
    let user_configurable = object_field(&mut config, "configurable")?;
    let config_metadata = object_field(&mut config, "metadata")?;
    if let Some(limit) = config.get("recursion_limit") {
        if !limit.is_u64() {
            return Err(ValidationError::Invalid(format!(
                "Invalid request body: field `config.recursion_limit`: expected a non-negative integer, got {limit}"
            )));
        }
    }
    let has_configurable = user_configurable
        .as_ref()
        .is_some_and(|map| !map.is_empty());
    let has_context = request.context.as_ref().is_some_and(|map| !map.is_empty());
    if has_configurable && has_context {
        return Err(ValidationError::BadRequest(
            "Cannot specify both configurable and context. Prefer setting context alone. Context was introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable.".into(),
        ));
    }
    let after_seconds = request.after_seconds.unwrap_or(0.0);
    if !(0.0..=MAX_AFTER_SECONDS).contains(&after_seconds) {
        return Err(ValidationError::Invalid(format!(
            "Invalid request body: field `after_seconds`: expected 0 to {MAX_AFTER_SECONDS} seconds, got {after_seconds}"
        )));
    }
    let created_at = Timestamp::now()
        .plus_seconds(after_seconds)
        .ok_or_else(|| {
            ValidationError::Invalid(format!(
                "Invalid request body: field `after_seconds`: {after_seconds} is out of range"
            ))
        })?;
    let stream_mode = match request.stream_mode {
        None => vec!["values".to_owned()],
        Some(StreamModes::One(mode)) => vec![mode],
        Some(StreamModes::Many(modes)) => modes,
    };
    let stream_mode = stream_mode
        .iter()
        .map(|mode| {
            StreamMode::parse(mode).ok_or_else(|| {
                ValidationError::Invalid(format!(
                    "Invalid request body: field `stream_mode`: '{mode}' is not one of {}",
                    StreamMode::listed()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let checkpoint_id = named_checkpoint(request.checkpoint_id, request.checkpoint)?;

    let run_id = RunId::generate();
    let mut user_configurable = user_configurable.unwrap_or_default();
    strip_keys(&mut user_configurable, &RESERVED_CONFIG_KEYS);
    let mut configurable = match assistant.config.get("configurable") {
        Some(Value::Object(defaults)) => defaults.clone(),
        _ => JsonMap::new(),
    };
    merge_into(&mut configurable, &user_configurable);
    configurable.insert("run_id".into(), json!(run_id));
    configurable.insert("thread_id".into(), json!(thread_id));
    configurable.insert("graph_id".into(), json!(assistant.graph_id));
    configurable.insert("assistant_id".into(), json!(assistant.assistant_id));
    let mut context = assistant.context.clone();
    let mut request_context = request.context.unwrap_or(user_configurable);
    strip_keys(&mut request_context, &RESERVED_CONFIG_KEYS);
    merge_into(&mut context, &request_context);

    let mut thread_metadata = request.metadata.unwrap_or_default();
    strip_keys(&mut thread_metadata, &RESERVED_METADATA_KEYS);
    let mut metadata = assistant.metadata.clone();
    for extra in config_metadata.iter().chain([&thread_metadata]) {
        merge_into(&mut metadata, extra);
    }
    strip_keys(&mut metadata, &RESERVED_METADATA_KEYS);
    config.insert("configurable".into(), Value::Object(configurable));
    config.insert("metadata".into(), Value::Object(metadata.clone()));

    let durability = request
        .durability
        .unwrap_or(match request.checkpoint_during {
            Some(false) => Durability::Exit,
            _ => Durability::Async,
        });
    let kwargs = RunKwargs {
        input: request.input,
        command,
        config,
        context,
        stream_mode,
        interrupt_before: request.interrupt_before,
        interrupt_after: request.interrupt_after,
        webhook: None,
        feedback_keys: request.feedback_keys,
        temporary: stateless && request.on_completion.unwrap_or_default() == OnCompletion::Delete,
        subgraphs: request.stream_subgraphs.unwrap_or(false),
        resumable: request.stream_resumable.unwrap_or(false),
        checkpoint_during: request.checkpoint_during.unwrap_or(true),
        durability,
        checkpoint_id,
    };
    Ok(NewRun {
        run_id,
        thread_id,
        assistant_id: assistant.assistant_id,
        graph_id: assistant.graph_id.clone(),
        metadata,
        kwargs,
        multitask_strategy: request.multitask_strategy.unwrap_or_default(),
        if_not_exists: if stateless {
            IfNotExists::Create
        } else {
            request.if_not_exists.unwrap_or_default()
        },
        thread_metadata,
        created_at,
        after_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::assistant::AssistantVersion;
    use crate::domain::ids::AssistantId;
    use crate::domain::stream_mode::StreamMode;

    fn assistant() -> Assistant {
        AssistantVersion {
            assistant_id: AssistantId::for_graph("agent"),
            graph_id: "agent".into(),
            config: json!({"configurable": {"delay": 1, "model": "a"}})
                .as_object()
                .unwrap()
                .clone(),
            context: JsonMap::new(),
            metadata: json!({"team": "x"}).as_object().unwrap().clone(),
            name: "agent".into(),
            created_at: Timestamp::now(),
            version: 1,
            description: None,
        }
        .into_assistant(Timestamp::now())
    }

    fn request(body: Value) -> RunRequest {
        serde_json::from_value(body).unwrap()
    }

    fn build(body: Value, stateless: bool) -> Result<NewRun, ValidationError> {
        build_run(ThreadId::generate(), request(body), &assistant(), stateless)
    }

    #[test]
    fn a_run_merges_its_config_and_metadata_over_the_assistants_and_strips_reserved_keys() {
        let run = build(
            json!({
                "assistant_id": "agent",
                "config": {"configurable": {"model": "b", "langgraph_auth_user": "forged"}},
                "metadata": {"mine": 1, "run_id": "forged"},
                "stream_mode": "updates",
                "command": {"resume": true},
            }),
            false,
        )
        .unwrap();
        let configurable = run.kwargs.configurable();
        assert_eq!(configurable["delay"], 1);
        assert_eq!(configurable["model"], "b");
        assert!(!configurable.contains_key("langgraph_auth_user"));
        assert_eq!(configurable["run_id"], json!(run.run_id));
        assert_eq!(configurable["graph_id"], "agent");
        assert_eq!(Value::Object(run.metadata), json!({"team": "x", "mine": 1}));
        assert_eq!(run.kwargs.stream_mode, [StreamMode::Updates]);
        assert_eq!(run.kwargs.command.unwrap().resume, Some(json!(true)));
        assert_eq!(run.graph_id, "agent");
    }

    #[test]
    fn bad_requests_are_refused_with_what_is_wrong() {
        let refused = |body: Value, stateless: bool| build(body, stateless).unwrap_err();
        assert_eq!(
            refused(
                json!({"assistant_id": "agent", "command": {"resume": 1}}),
                true
            ),
            ValidationError::BadRequest("You must provide a thread_id when resuming.".into())
        );
        assert!(matches!(
            refused(json!({"assistant_id": "agent", "stream_mode": ["tools"]}), false),
            ValidationError::Invalid(message) if message.contains("'tools' is not one of")
        ));
        assert!(matches!(
            refused(json!({"assistant_id": "agent", "command": {"jump": 1}}), false),
            ValidationError::Invalid(message) if message.contains("field `command`")
        ));
        assert!(matches!(
            refused(
                json!({"assistant_id": "agent", "webhook": "http://x"}),
                false
            ),
            ValidationError::Unsupported(_)
        ));
        assert!(matches!(
            refused(
                json!({"assistant_id": "agent", "config": {"configurable": {"a": 1}}, "context": {"b": 2}}),
                false
            ),
            ValidationError::BadRequest(_)
        ));
    }

    #[test]
    fn a_stateless_run_is_temporary_and_creates_its_thread() {
        let run = build(json!({"assistant_id": "agent"}), true).unwrap();
        assert!(run.kwargs.temporary);
        assert_eq!(run.if_not_exists, IfNotExists::Create);
        let kept = build(
            json!({"assistant_id": "agent", "on_completion": "keep"}),
            true,
        )
        .unwrap();
        assert!(!kept.kwargs.temporary);
    }
}
