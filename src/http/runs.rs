//! Runs of a thread: create (background and wait), list, get, delete, join, cancel, bulk cancel.
//! Everything that changes runs goes through the thread's actor; reads go to storage.

use std::collections::BTreeMap;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{self, json_body, CheckpointRef};
use super::{json_with_location, AppState};
use crate::actors::{CancelRuns, DeleteRun, JoinRun, RunOutcome, SubmitRun};
use crate::domain::assistant::Assistant;
use crate::domain::ids::{AssistantId, RunId, ThreadId};
use crate::domain::multitask::{CancelAction, MultitaskStrategy};
use crate::domain::run::{Breakpoints, Durability, IfNotExists, NewRun, Run, RunKwargs, RunStatus};
use crate::domain::time::Timestamp;
use crate::domain::{
    merge_into, strip_keys, JsonMap, RESERVED_CONFIG_KEYS, RESERVED_METADATA_KEYS,
};
use crate::error::ApiError;
use crate::storage::{RunResult, StorageError};

const RUN_FIELDS: [&str; 9] = [
    "run_id",
    "thread_id",
    "assistant_id",
    "metadata",
    "status",
    "kwargs",
    "multitask_strategy",
    "created_at",
    "updated_at",
];

/// Longest accepted `after_seconds`: one year.
const MAX_AFTER_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Stream modes a run may request.
const STREAM_MODES: [&str; 9] = [
    "values",
    "messages",
    "messages-tuple",
    "tasks",
    "checkpoints",
    "updates",
    "events",
    "debug",
    "custom",
];

#[derive(Deserialize)]
#[serde(untagged)]
enum StreamModes {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnDisconnect {
    Cancel,
    Continue,
}

/// The body of the run-creating endpoints. Unknown fields (such as `strict_resume`) are ignored.
#[derive(Deserialize)]
struct RunCreate {
    assistant_id: String,
    input: Option<Value>,
    command: Option<Value>,
    metadata: Option<JsonMap>,
    config: Option<JsonMap>,
    context: Option<JsonMap>,
    checkpoint: Option<CheckpointRef>,
    checkpoint_id: Option<String>,
    stream_mode: Option<StreamModes>,
    stream_subgraphs: Option<bool>,
    stream_resumable: Option<bool>,
    feedback_keys: Option<Vec<String>>,
    interrupt_before: Option<Breakpoints>,
    interrupt_after: Option<Breakpoints>,
    webhook: Option<String>,
    multitask_strategy: Option<MultitaskStrategy>,
    if_not_exists: Option<IfNotExists>,
    after_seconds: Option<f64>,
    durability: Option<Durability>,
    checkpoint_during: Option<bool>,
    #[allow(dead_code)] // Validated here; acted on by the streaming endpoints (#3).
    on_disconnect: Option<OnDisconnect>,
}

/// Finds the assistant a run names: a UUID, or a graph id meaning that graph's system assistant.
async fn resolve_assistant(state: &AppState, text: &str) -> Result<Assistant, ApiError> {
    let assistant_id = match AssistantId::parse(text) {
        Ok(assistant_id) => assistant_id,
        Err(_) if state.graphs.get(text).is_some() => AssistantId::for_graph(text),
        Err(_) => {
            let graphs: Vec<&str> = state.graphs.ids().collect();
            return Err(ApiError::Validation(format!(
                "Invalid assistant: '{text}'. Must be either:\n- A valid assistant UUID, or\n- One of the registered graphs: {}",
                graphs.join(", ")
            )));
        }
    };
    let assistant = state
        .db
        .get_assistant(assistant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("Thread or assistant not found.".into()))?;
    if state.graphs.get(&assistant.graph_id).is_none() {
        return Err(ApiError::NotFound(format!(
            "Graph '{}' of assistant {assistant_id} is not configured on this server",
            assistant.graph_id
        )));
    }
    Ok(assistant)
}

fn object_field(config: &mut JsonMap, key: &str) -> Result<Option<JsonMap>, ApiError> {
    match config.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(ApiError::Validation(format!(
            "Invalid request body: field `config.{key}`: expected an object, got {other}"
        ))),
    }
}

/// Validates a run request and builds the run: configuration merged over the assistant's,
/// reserved keys stripped, defaults applied.
fn build_run(
    thread_id: ThreadId,
    request: RunCreate,
    assistant: &Assistant,
) -> Result<NewRun, ApiError> {
    if request.command.is_some() {
        return Err(ApiError::NotImplemented(
            "`command` (resume, goto, update) is not supported yet; resume a static breakpoint with `input: null`".into(),
        ));
    }
    if request.webhook.as_deref() == Some("") {
        return Err(ApiError::Validation(
            "Invalid request body: field `webhook`: must not be empty".into(),
        ));
    }
    if request.webhook.is_some() {
        return Err(ApiError::NotImplemented(
            "`webhook` is not supported yet".into(),
        ));
    }
    let mut config = request.config.unwrap_or_default();
    let user_configurable = object_field(&mut config, "configurable")?;
    let config_metadata = object_field(&mut config, "metadata")?;
    if let Some(limit) = config.get("recursion_limit") {
        if !limit.is_u64() {
            return Err(ApiError::Validation(format!(
                "Invalid request body: field `config.recursion_limit`: expected a non-negative integer, got {limit}"
            )));
        }
    }
    let has_configurable = user_configurable
        .as_ref()
        .is_some_and(|map| !map.is_empty());
    let has_context = request.context.as_ref().is_some_and(|map| !map.is_empty());
    if has_configurable && has_context {
        return Err(ApiError::BadRequest(
            "Cannot specify both configurable and context. Prefer setting context alone. Context was introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable.".into(),
        ));
    }
    let after_seconds = request.after_seconds.unwrap_or(0.0);
    if !(0.0..=MAX_AFTER_SECONDS).contains(&after_seconds) {
        return Err(ApiError::Validation(format!(
            "Invalid request body: field `after_seconds`: expected 0 to {MAX_AFTER_SECONDS} seconds, got {after_seconds}"
        )));
    }
    let created_at = Timestamp::now()
        .plus_seconds(after_seconds)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "Invalid request body: field `after_seconds`: {after_seconds} is out of range"
            ))
        })?;
    let stream_mode = match request.stream_mode {
        None => vec!["values".to_owned()],
        Some(StreamModes::One(mode)) => vec![mode],
        Some(StreamModes::Many(modes)) => modes,
    };
    if let Some(unknown) = stream_mode
        .iter()
        .find(|mode| !STREAM_MODES.contains(&mode.as_str()))
    {
        return Err(ApiError::Validation(format!(
            "Invalid request body: field `stream_mode`: '{unknown}' is not one of {STREAM_MODES:?}"
        )));
    }
    let checkpoint_id = extract::named_checkpoint(request.checkpoint_id, request.checkpoint)?;

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
        command: None,
        config,
        context,
        stream_mode,
        interrupt_before: request.interrupt_before,
        interrupt_after: request.interrupt_after,
        webhook: None,
        feedback_keys: request.feedback_keys,
        temporary: false,
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
        if_not_exists: request.if_not_exists.unwrap_or_default(),
        thread_metadata,
        created_at,
    })
}

async fn submit(
    state: &AppState,
    path: &str,
    body: &Bytes,
    wait: bool,
) -> Result<crate::actors::RunAccepted, ApiError> {
    let thread_id = extract::thread_id(path)?;
    let request: RunCreate = json_body(body)?;
    let assistant = resolve_assistant(state, &request.assistant_id).await?;
    let new_run = build_run(thread_id, request, &assistant)?;
    let thread = state.thread(thread_id).await?;
    Ok(thread.send(SubmitRun { new_run, wait }).await??)
}

fn run_location(run: &Run) -> String {
    format!("/threads/{}/runs/{}", run.thread_id, run.run_id)
}

/// `POST /threads/{thread_id}/runs`: a background run.
pub async fn create(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let accepted = submit(&state, &path, &body, false).await?;
    Ok(json_with_location(
        &accepted.run,
        run_location(&accepted.run),
        None,
    ))
}

/// `POST /threads/{thread_id}/runs/wait`: runs and answers with that run's final values.
pub async fn wait(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let accepted = submit(&state, &path, &body, true).await?;
    let run = accepted.run;
    let outcome = match accepted.outcome {
        Some(receiver) => receiver.await.ok(),
        None => None,
    };
    let result = outcome_json(&state, run.thread_id, run.run_id, outcome).await?;
    let location = run_location(&run);
    Ok(json_with_location(
        &result,
        location.clone(),
        Some(format!("{location}/join")),
    ))
}

fn run_not_found_error() -> Value {
    json!({"__error__": {"error": "HTTPException", "message": "404: Run not found"}})
}

/// What `/wait` and `/join` answer: the final values of that run, `{"__error__": …}` if it
/// failed, or the 404 error object if it no longer exists.
async fn outcome_json(
    state: &AppState,
    thread_id: ThreadId,
    run_id: RunId,
    outcome: Option<RunOutcome>,
) -> Result<Value, ApiError> {
    match outcome {
        Some(RunOutcome::Success(values)) => Ok(Value::Object((*values).clone())),
        Some(RunOutcome::Failed(error)) => Ok(json!({ "__error__": error })),
        Some(RunOutcome::Deleted) => Ok(run_not_found_error()),
        Some(RunOutcome::Interrupted) | None => stored_result(state, thread_id, run_id).await,
    }
}

/// The result of a run that is no longer in flight, read from storage.
async fn stored_result(
    state: &AppState,
    thread_id: ThreadId,
    run_id: RunId,
) -> Result<Value, ApiError> {
    let Some(RunResult { run, error, values }) = state.db.run_result(thread_id, run_id).await?
    else {
        return Ok(run_not_found_error());
    };
    if run.status == RunStatus::Error {
        let error = error.map_or_else(
            || json!({"error": "RuntimeError", "message": "the run failed"}),
            |error| json!(error),
        );
        return Ok(json!({ "__error__": error }));
    }
    Ok(Value::Object(values.unwrap_or_default()))
}

/// `GET /threads/{thread_id}/runs/{run_id}/join`: waits for the run, then answers like `/wait`.
pub async fn join(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path.0)?;
    let run_id = extract::run_id(&path.1)?;
    let waiting = state
        .thread(thread_id)
        .await?
        .send(JoinRun { run_id })
        .await??;
    let outcome = match waiting {
        Some(receiver) => receiver.await.ok(),
        None => None,
    };
    let result = outcome_json(&state, thread_id, run_id, outcome).await?;
    let location = format!("/threads/{thread_id}/runs/{run_id}");
    Ok(json_with_location(
        &result,
        location.clone(),
        Some(format!("{location}/join")),
    ))
}

/// `GET /threads/{thread_id}/runs?limit=&offset=&status=&select=`: newest first.
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let pairs = extract::query_pairs(request.query_string())?;
    let number = |key: &str| -> Result<Option<i64>, ApiError> {
        pairs
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| {
                value.parse::<i64>().map_err(|_| {
                    ApiError::Validation(format!("Invalid {key} {value}: expected an integer"))
                })
            })
            .transpose()
    };
    let limit = extract::limit(number("limit")?, 10, 1000)?;
    let offset = extract::offset(number("offset")?)?;
    let status = match pairs.iter().rev().find(|(name, _)| name == "status") {
        Some((_, text)) => Some(RunStatus::parse(text).ok_or_else(|| {
            ApiError::Validation(format!(
                "Invalid status '{text}': expected one of pending, running, success, error, timeout, interrupted"
            ))
        })?),
        None => None,
    };
    let select: Vec<String> = pairs
        .iter()
        .filter(|(name, _)| name == "select")
        .map(|(_, value)| value.clone())
        .collect();
    let runs = state.db.list_runs(thread_id, status, limit, offset).await?;
    let items = runs
        .iter()
        .map(|run| serde_json::to_value(run).unwrap_or(Value::Null))
        .collect();
    Ok(HttpResponse::Ok().json(extract::select(items, Some(&select), &RUN_FIELDS)?))
}

/// `GET /threads/{thread_id}/runs/{run_id}`
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path.0)?;
    let run_id = extract::run_id(&path.1)?;
    let run = state.db.get_run(thread_id, run_id).await?;
    Ok(HttpResponse::Ok().json(run))
}

/// `DELETE /threads/{thread_id}/runs/{run_id}`: stops the run first if it is active, then deletes
/// it with its checkpoints.
pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path.0)?;
    let run_id = extract::run_id(&path.1)?;
    state
        .thread(thread_id)
        .await?
        .send(DeleteRun { run_id })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

fn cancel_action(pairs: &[(String, String)]) -> Result<CancelAction, ApiError> {
    match pairs
        .iter()
        .rev()
        .find(|(name, _)| name == "action")
        .map(|(_, value)| value.as_str())
    {
        None | Some("interrupt") => Ok(CancelAction::Interrupt),
        Some("rollback") => Ok(CancelAction::Rollback),
        Some(other) => Err(ApiError::Validation(format!(
            "Invalid action '{other}': expected interrupt or rollback"
        ))),
    }
}

const NOTHING_TO_CANCEL: &str = "No matching runs to cancel. Please verify the thread ID and run IDs are correct, and the runs haven't been deleted or completed.";
const NO_RUNS_FOUND: &str = "No runs found to cancel.";

/// Cancels runs of one thread; 404 with the reference's messages when none was in flight.
async fn cancel_on_thread(
    state: &AppState,
    thread_id: ThreadId,
    run_ids: Vec<RunId>,
    action: CancelAction,
) -> Result<usize, ApiError> {
    let cancelled = state
        .thread(thread_id)
        .await?
        .send(CancelRuns {
            run_ids: run_ids.clone(),
            action,
        })
        .await??;
    if cancelled > 0 {
        return Ok(cancelled);
    }
    for run_id in run_ids {
        match state.db.get_run(thread_id, run_id).await {
            Ok(_) => return Err(ApiError::NotFound(NOTHING_TO_CANCEL.into())),
            Err(StorageError::NotFound(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::NotFound(NO_RUNS_FOUND.into()))
}

/// `POST /threads/{thread_id}/runs/{run_id}/cancel?wait=&action=`: 202 at once, or with `wait`
/// 200 and the run's values once it has stopped.
pub async fn cancel(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path.0)?;
    let run_id = extract::run_id(&path.1)?;
    let pairs = extract::query_pairs(request.query_string())?;
    let action = cancel_action(&pairs)?;
    cancel_on_thread(&state, thread_id, vec![run_id], action).await?;
    if !extract::flag(&pairs, "wait") {
        return Ok(HttpResponse::Accepted().finish());
    }
    // The actor replies once the run has stopped and storage says so.
    let result = match action {
        CancelAction::Interrupt => stored_result(&state, thread_id, run_id).await?,
        CancelAction::Rollback => json!({}),
    };
    let location = format!("/threads/{thread_id}/runs/{run_id}");
    Ok(json_with_location(
        &result,
        location.clone(),
        Some(format!("{location}/join")),
    ))
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum BulkStatus {
    Pending,
    Running,
    All,
}

#[derive(Deserialize)]
struct BulkCancel {
    thread_id: Option<String>,
    run_ids: Option<Vec<String>>,
    status: Option<BulkStatus>,
}

/// `POST /runs/cancel?action=`: `{thread_id, run_ids}` or `{status}` (every thread); 204.
pub async fn cancel_many(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let pairs = extract::query_pairs(request.query_string())?;
    let action = cancel_action(&pairs)?;
    let body: BulkCancel = json_body(&body)?;
    match (body.status, body.thread_id, body.run_ids) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::Validation(
            "When providing a 'status', 'thread_id' and 'run_ids' must be omitted.".into(),
        )),
        (Some(status), None, None) => {
            let statuses = match status {
                BulkStatus::Pending => vec![RunStatus::Pending],
                BulkStatus::Running => vec![RunStatus::Running],
                BulkStatus::All => vec![RunStatus::Pending, RunStatus::Running],
            };
            let mut by_thread: BTreeMap<ThreadId, Vec<RunId>> = BTreeMap::new();
            for (thread_id, run_id) in state.db.runs_with_status(statuses).await? {
                by_thread.entry(thread_id).or_default().push(run_id);
            }
            if by_thread.is_empty() {
                return Err(ApiError::NotFound(NO_RUNS_FOUND.into()));
            }
            for (thread_id, run_ids) in by_thread {
                // A run may have finished since the query: that is not an error here.
                match cancel_on_thread(&state, thread_id, run_ids, action).await {
                    Ok(_) | Err(ApiError::NotFound(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            Ok(HttpResponse::NoContent().finish())
        }
        (None, Some(thread_id), Some(run_ids)) if !run_ids.is_empty() => {
            let thread_id = extract::thread_id(&thread_id)?;
            let run_ids = run_ids.iter().map(|id| extract::run_id(id)).collect::<Result<Vec<_>, _>>()?;
            cancel_on_thread(&state, thread_id, run_ids, action).await?;
            Ok(HttpResponse::NoContent().finish())
        }
        _ => Err(ApiError::Validation(
            "Invalid request body: provide either `status`, or `thread_id` with a non-empty `run_ids`".into(),
        )),
    }
}
