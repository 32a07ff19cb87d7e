//! Runs: create on a thread (background, wait, stream) or stateless (a temporary thread), list,
//! get, delete, join (JSON or SSE), cancel, bulk cancel. Everything that changes runs goes
//! through the thread's actor; reads go to storage; streams come from the stream hub.

use std::collections::BTreeMap;

use actix::Addr;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{self, json_body, CheckpointRef};
use super::sse::{self, DisconnectGuard, ModeFilter};
use super::{json_with_location, AppState};
use crate::actors::{
    CancelRuns, DeleteRun, JoinRun, RunAccepted, RunOutcome, SubmitRun, SubscribeRun, ThreadActor,
};
use crate::domain::assistant::Assistant;
use crate::domain::checkpoint::Interrupt;
use crate::domain::ids::{AssistantId, RunId, ThreadId};
use crate::domain::multitask::{CancelAction, MultitaskStrategy};
use crate::domain::run::{Breakpoints, Durability, IfNotExists, NewRun, Run, RunKwargs, RunStatus};
use crate::domain::time::Timestamp;
use crate::domain::{
    merge_into, strip_keys, JsonMap, NotFound, RESERVED_CONFIG_KEYS, RESERVED_METADATA_KEYS,
};
use crate::error::ApiError;
use crate::graph::executor::Command;
use crate::storage::{RunResult, SharedStore, StorageError};

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

/// What happens to a stateless run's temporary thread when the run ends.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum OnCompletion {
    /// The thread and its runs are deleted.
    #[default]
    Delete,
    /// The thread stays, like any other.
    Keep,
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
    /// `/stream` and `/wait`: cancel the run when the client goes away.
    on_disconnect: Option<OnDisconnect>,
    /// Stateless runs only.
    on_completion: Option<OnCompletion>,
}

impl RunCreate {
    fn cancel_on_disconnect(&self) -> bool {
        self.on_disconnect == Some(OnDisconnect::Cancel)
    }
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
        .store
        .get_assistant(assistant_id)
        .await?
        .ok_or(ApiError::NotFound(NotFound::ThreadOrAssistant))?;
    if state.graphs.get(&assistant.graph_id).is_none() {
        return Err(ApiError::NotFound(NotFound::GraphOfAssistant {
            graph_id: assistant.graph_id,
            assistant_id,
        }));
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
    stateless: bool,
) -> Result<NewRun, ApiError> {
    if stateless
        && request.command.as_ref().is_some_and(|command| {
            command
                .get("resume")
                .is_some_and(|resume| !resume.is_null())
        })
    {
        return Err(ApiError::BadRequest(
            "You must provide a thread_id when resuming.".into(),
        ));
    }
    let command = request.command.filter(|command| !command.is_null());
    if let Some(command) = &command {
        Command::parse(command).map_err(|problem| {
            ApiError::Validation(format!("Invalid request body: field `command`: {problem}"))
        })?;
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

/// How a run-creating endpoint answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The run object, at once.
    Run,
    /// The run's result once it ends (`/wait`).
    Wait,
    /// The run's events (`/stream`).
    Stream,
}

/// Validates a run request into a run. `thread_id: None` makes a stateless run on a new
/// temporary thread. Also says whether the client asked for `on_disconnect: "cancel"`.
async fn prepare(
    state: &AppState,
    thread_id: Option<ThreadId>,
    request: RunCreate,
) -> Result<(NewRun, bool), ApiError> {
    let assistant = resolve_assistant(state, &request.assistant_id).await?;
    let cancel_on_disconnect = request.cancel_on_disconnect();
    let new_run = build_run(
        thread_id.unwrap_or_else(ThreadId::generate),
        request,
        &assistant,
        thread_id.is_none(),
    )?;
    Ok((new_run, cancel_on_disconnect))
}

/// Hands a prepared run to its thread's actor.
async fn submit(
    state: &AppState,
    new_run: NewRun,
    reply: Reply,
) -> Result<(RunAccepted, Addr<ThreadActor>), ApiError> {
    state.accepting_runs()?;
    let thread_id = new_run.thread_id;
    let submit = SubmitRun {
        new_run,
        wait: reply == Reply::Wait,
        subscribe: reply == Reply::Stream,
    };
    let (accepted, thread) = state.command(thread_id, submit).await?;
    Ok((accepted?, thread))
}

/// Answers a run-creating request the way its endpoint does.
async fn create_run(
    state: &AppState,
    thread_id: Option<ThreadId>,
    body: &Bytes,
    reply: Reply,
) -> Result<HttpResponse, ApiError> {
    let request: RunCreate = json_body(body)?;
    let (new_run, cancel_on_disconnect) = prepare(state, thread_id, request).await?;
    let (accepted, thread) = submit(state, new_run, reply).await?;
    let RunAccepted {
        run,
        outcome,
        subscription,
    } = accepted;
    let location = run_location(&run);
    // Only a response that lasts as long as the run can see its client go away.
    let guard = DisconnectGuard::new(
        cancel_on_disconnect && reply != Reply::Run,
        thread,
        run.run_id,
    );
    Ok(match (reply, subscription) {
        (Reply::Stream, Some(subscription)) => sse::events(
            subscription,
            ModeFilter::all(),
            state.heartbeat,
            guard,
            Some((format!("{location}/stream"), location)),
        ),
        (Reply::Wait, _) => {
            let db_state = (state.store.clone(), run.thread_id, run.run_id);
            let result = Box::pin(async move {
                let outcome = match outcome {
                    Some(receiver) => receiver.await.ok(),
                    None => None,
                };
                let (store, thread_id, run_id) = db_state;
                outcome_json(&store, thread_id, run_id, outcome).await
            });
            sse::keep_alive_json(
                result,
                state.heartbeat,
                guard,
                location.clone(),
                format!("{location}/join"),
            )
            .await
        }
        _ => json_with_location(&run, location, None),
    })
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
    let thread_id = extract::thread_id(&path)?;
    create_run(&state, Some(thread_id), &body, Reply::Run).await
}

/// `POST /threads/{thread_id}/runs/wait`: runs and answers with that run's final values.
pub async fn wait(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    create_run(&state, Some(thread_id), &body, Reply::Wait).await
}

/// `POST /threads/{thread_id}/runs/stream`: runs and streams its events.
pub async fn stream(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    create_run(&state, Some(thread_id), &body, Reply::Stream).await
}

/// `POST /runs`: a stateless background run.
pub async fn create_stateless(
    state: web::Data<AppState>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    create_run(&state, None, &body, Reply::Run).await
}

/// `POST /runs/wait`: a stateless run, answered with its final values.
pub async fn wait_stateless(
    state: web::Data<AppState>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    create_run(&state, None, &body, Reply::Wait).await
}

/// `POST /runs/stream`: a stateless run, streamed.
pub async fn stream_stateless(
    state: web::Data<AppState>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    create_run(&state, None, &body, Reply::Stream).await
}

/// `POST /runs/batch`: several stateless background runs; every body is validated before any
/// run is created.
pub async fn batch(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let bodies: Vec<Value> = serde_json::from_slice(&body).map_err(|_| {
        ApiError::Validation("Invalid request body: expected a JSON array of run bodies".into())
    })?;
    let mut prepared = Vec::with_capacity(bodies.len());
    for (index, body) in bodies.into_iter().enumerate() {
        let what = format!("request body item {index}");
        let request: RunCreate = extract::from_value(body, &what)?;
        let (new_run, _) = prepare(&state, None, request)
            .await
            .map_err(|error| match error {
                ApiError::Validation(_) | ApiError::BadRequest(_) | ApiError::NotFound(_) => {
                    ApiError::InItem {
                        index,
                        error: Box::new(error),
                    }
                }
                other => other,
            })?;
        prepared.push(new_run);
    }
    let mut runs = Vec::with_capacity(prepared.len());
    for new_run in prepared {
        let (accepted, _) = submit(&state, new_run, Reply::Run).await?;
        runs.push(accepted.run);
    }
    Ok(HttpResponse::Ok().json(runs))
}

fn run_not_found_error() -> Value {
    json!({"__error__": {"error": "HTTPException", "message": "404: Run not found"}})
}

/// What `/wait` and `/join` answer: the final values of that run, `{"__error__": …}` if it
/// failed, or the 404 error object if it no longer exists.
async fn outcome_json(
    store: &SharedStore,
    thread_id: ThreadId,
    run_id: RunId,
    outcome: Option<RunOutcome>,
) -> Value {
    let stored = match outcome {
        Some(RunOutcome::Success(values)) => return Value::Object((*values).clone()),
        Some(RunOutcome::Failed(error)) => return json!({ "__error__": error }),
        Some(RunOutcome::Deleted) => return run_not_found_error(),
        Some(RunOutcome::Interrupted) | None => stored_result(store, thread_id, run_id).await,
    };
    // The response has begun (200): a storage failure can only be reported in the body.
    stored.unwrap_or_else(
        |error| json!({"__error__": {"error": "StorageError", "message": error.to_string()}}),
    )
}

/// The result of a run that is no longer in flight, read from storage.
async fn stored_result(
    store: &SharedStore,
    thread_id: ThreadId,
    run_id: RunId,
) -> Result<Value, ApiError> {
    let Some(RunResult {
        run,
        error,
        values,
        interrupts,
    }) = store.run_result(thread_id, run_id).await?
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
    let mut values = values.unwrap_or_default();
    if !interrupts.is_empty() {
        let chunks = interrupts.iter().map(Interrupt::to_chunk).collect();
        values.insert("__interrupt__".into(), Value::Array(chunks));
    }
    Ok(Value::Object(values))
}

/// `GET /threads/{thread_id}/runs/{run_id}/join?cancel_on_disconnect=`: waits for the run,
/// then answers like `/wait`.
pub async fn join(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path.0)?;
    let run_id = extract::run_id(&path.1)?;
    let pairs = extract::query_pairs(request.query_string())?;
    let (waiting, thread) = state.command(thread_id, JoinRun { run_id }).await?;
    let waiting = waiting?;
    let guard = DisconnectGuard::new(
        waiting.is_some() && extract::flag(&pairs, "cancel_on_disconnect"),
        thread,
        run_id,
    );
    let store = state.store.clone();
    let result = Box::pin(async move {
        let outcome = match waiting {
            Some(receiver) => receiver.await.ok(),
            None => None,
        };
        outcome_json(&store, thread_id, run_id, outcome).await
    });
    let location = format!("/threads/{thread_id}/runs/{run_id}");
    Ok(sse::keep_alive_json(
        result,
        state.heartbeat,
        guard,
        location.clone(),
        format!("{location}/join"),
    )
    .await)
}

/// The `stream_mode` of a join: repeated parameters, each a mode or a JSON array of modes.
fn join_modes(pairs: &[(String, String)]) -> Result<Vec<String>, ApiError> {
    let mut modes = vec![];
    // The Python SDK sends an empty `stream_mode=` when none is asked for.
    for (_, value) in pairs
        .iter()
        .filter(|(name, value)| name == "stream_mode" && !value.is_empty())
    {
        match serde_json::from_str::<Vec<String>>(value) {
            Ok(list) => modes.extend(list),
            Err(_) => modes.push(value.clone()),
        }
    }
    if let Some(unknown) = modes
        .iter()
        .find(|mode| !STREAM_MODES.contains(&mode.as_str()))
    {
        return Err(ApiError::Validation(format!(
            "Invalid stream_mode '{unknown}': expected one of {STREAM_MODES:?}"
        )));
    }
    Ok(modes)
}

/// The `Last-Event-ID` header: `-` (everything) or an event id; absent means the replay buffer.
fn last_event_id(request: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = request.headers().get("Last-Event-ID") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "-" || text.is_empty() {
        return Ok(Some(0));
    }
    text.parse::<u64>().map(Some).map_err(|_| {
        ApiError::Validation(format!(
            "Invalid Last-Event-ID '{text}': expected an event id from this run's stream, or -"
        ))
    })
}

/// `GET /threads/{thread_id}/runs/{run_id}/stream?stream_mode=&cancel_on_disconnect=`: joins the
/// run's stream (replaying what the run keeps, or what follows `Last-Event-ID`), then live
/// events until the run ends.
pub async fn join_stream(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path.0)?;
    let run_id = extract::run_id(&path.1)?;
    let pairs = extract::query_pairs(request.query_string())?;
    let filter = ModeFilter::of(join_modes(&pairs)?);
    let after = last_event_id(&request)?;
    let run = match state.store.get_run(thread_id, run_id).await {
        Ok(run) => run,
        Err(StorageError::NotFound(_)) => {
            return Ok(sse::single_error("HTTPException", "404: Run not found"))
        }
        Err(other) => return Err(other.into()),
    };
    // The thread actor subscribes: it alone ends run streams, so the subscription cannot
    // race the run's end.
    let subscribe = SubscribeRun {
        run_id,
        resumable: run.kwargs.resumable,
        after,
    };
    let (subscription, thread) = state.command(thread_id, subscribe).await?;
    let subscription = subscription?;
    let Some(subscription) = subscription else {
        return Ok(sse::empty());
    };
    let guard = DisconnectGuard::new(
        run.status.is_in_flight() && extract::flag(&pairs, "cancel_on_disconnect"),
        thread,
        run_id,
    );
    let location = format!("/threads/{thread_id}/runs/{run_id}");
    Ok(sse::events(
        subscription,
        filter,
        state.heartbeat,
        guard,
        Some((format!("{location}/stream"), location)),
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
    let runs = state
        .store
        .list_runs(thread_id, status, limit, offset)
        .await?;
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
    let run = state.store.get_run(thread_id, run_id).await?;
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
    state.tell(thread_id, DeleteRun { run_id }).await?;
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

/// Cancels runs of one thread; 404 with the reference's messages when none was in flight.
async fn cancel_on_thread(
    state: &AppState,
    thread_id: ThreadId,
    run_ids: Vec<RunId>,
    action: CancelAction,
) -> Result<usize, ApiError> {
    let cancel = CancelRuns {
        run_ids: run_ids.clone(),
        action,
        on_disconnect: false,
    };
    let cancelled = state.tell(thread_id, cancel).await?;
    if cancelled > 0 {
        return Ok(cancelled);
    }
    for run_id in run_ids {
        match state.store.get_run(thread_id, run_id).await {
            Ok(_) => return Err(ApiError::NotFound(NotFound::RunsInFlightToCancel)),
            Err(StorageError::NotFound(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::NotFound(NotFound::RunsToCancel))
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
        CancelAction::Interrupt => stored_result(&state.store, thread_id, run_id).await?,
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
            for (thread_id, run_id) in state.store.runs_with_status(statuses).await? {
                by_thread.entry(thread_id).or_default().push(run_id);
            }
            if by_thread.is_empty() {
                return Err(ApiError::NotFound(NotFound::RunsToCancel));
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
