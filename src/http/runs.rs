//! Runs: create on a thread (background, wait, stream) or stateless (a temporary thread), list,
//! get, delete, join (JSON or SSE), cancel, bulk cancel. Everything that changes runs goes
//! through the thread's actor; reads go to storage; streams come from the stream hub.

use std::collections::BTreeMap;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{self, json_body};
use super::reply::json_with_location;
use super::sse::{self, DisconnectGuard, ModeFilter};
use super::state::AppState;
use crate::actors::{
    CancelRuns, DeleteRun, JoinRun, RunAccepted, RunOutcome, RunReply, SubscribeRun,
};
use crate::domain::checkpoint::Interrupt;
use crate::domain::ids::{RunId, ThreadId};
use crate::domain::multitask::CancelAction;
use crate::domain::run::{Run, RunStatus};
use crate::domain::run_request::RunRequest;
use crate::domain::stream_mode::StreamMode;
use crate::domain::NotFound;
use crate::error::ApiError;
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

/// Answers a run-creating request the way its endpoint does.
async fn create_run(
    state: &AppState,
    thread_id: Option<ThreadId>,
    body: &Bytes,
    reply: RunReply,
) -> Result<HttpResponse, ApiError> {
    let request: RunRequest = json_body(body)?;
    let cancel_on_disconnect = request.cancel_on_disconnect();
    let new_run = state.runtime.prepare_run(thread_id, request).await?;
    let (accepted, thread) = state.runtime.submit_run(new_run, reply).await?;
    let RunAccepted {
        run,
        outcome,
        subscription,
    } = accepted;
    let location = run_location(&run);
    // Only a response that lasts as long as the run can see its client go away.
    let guard = DisconnectGuard::new(
        cancel_on_disconnect && reply != RunReply::Run,
        thread,
        run.run_id,
    );
    Ok(match (reply, subscription) {
        (RunReply::Stream, Some(subscription)) => sse::events(
            subscription,
            ModeFilter::all(),
            state.heartbeat,
            guard,
            Some((format!("{location}/stream"), location)),
        ),
        (RunReply::Wait, _) => {
            let db_state = (state.store().clone(), run.thread_id, run.run_id);
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
    create_run(&state, Some(thread_id), &body, RunReply::Run).await
}

/// `POST /threads/{thread_id}/runs/wait`: runs and answers with that run's final values.
pub async fn wait(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    create_run(&state, Some(thread_id), &body, RunReply::Wait).await
}

/// `POST /threads/{thread_id}/runs/stream`: runs and streams its events.
pub async fn stream(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    create_run(&state, Some(thread_id), &body, RunReply::Stream).await
}

/// `POST /runs`: a stateless background run.
pub async fn create_stateless(
    state: web::Data<AppState>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    create_run(&state, None, &body, RunReply::Run).await
}

/// `POST /runs/wait`: a stateless run, answered with its final values.
pub async fn wait_stateless(
    state: web::Data<AppState>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    create_run(&state, None, &body, RunReply::Wait).await
}

/// `POST /runs/stream`: a stateless run, streamed.
pub async fn stream_stateless(
    state: web::Data<AppState>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    create_run(&state, None, &body, RunReply::Stream).await
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
        let request: RunRequest = extract::from_value(body, &what)?;
        let new_run = state
            .runtime
            .prepare_run(None, request)
            .await
            .map_err(ApiError::from)
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
        let (accepted, _) = state.runtime.submit_run(new_run, RunReply::Run).await?;
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
    let (waiting, thread) = state.runtime.command(thread_id, JoinRun { run_id }).await?;
    let waiting = waiting?;
    let guard = DisconnectGuard::new(
        waiting.is_some() && extract::flag(&pairs, "cancel_on_disconnect"),
        thread,
        run_id,
    );
    let store = state.store().clone();
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
fn join_modes(pairs: &[(String, String)]) -> Result<Vec<StreamMode>, ApiError> {
    let mut names = vec![];
    // The Python SDK sends an empty `stream_mode=` when none is asked for.
    for (_, value) in pairs
        .iter()
        .filter(|(name, value)| name == "stream_mode" && !value.is_empty())
    {
        match serde_json::from_str::<Vec<String>>(value) {
            Ok(list) => names.extend(list),
            Err(_) => names.push(value.clone()),
        }
    }
    names
        .iter()
        .map(|name| {
            StreamMode::parse(name).ok_or_else(|| {
                ApiError::Validation(format!(
                    "Invalid stream_mode '{name}': expected one of {}",
                    StreamMode::listed()
                ))
            })
        })
        .collect()
}

/// The `Last-Event-ID` header: `-` (everything) or an event id; absent means the replay buffer.
/// Anything else, bytes that are not UTF-8 included, is a 422.
fn last_event_id(request: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = request.headers().get("Last-Event-ID") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| {
            ApiError::Validation(
                "Invalid Last-Event-ID: not UTF-8; expected an event id from this run's stream, or -"
                    .into(),
            )
        })?
        .trim();
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
    let run = match state.store().get_run(thread_id, run_id).await {
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
    let (subscription, thread) = state.runtime.command(thread_id, subscribe).await?;
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
    let limit = extract::limit(extract::integer(&pairs, "limit")?, 10, 1000)?;
    let offset = extract::offset(extract::integer(&pairs, "offset")?)?;
    let status = match extract::last(&pairs, "status") {
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
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
        .store()
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
    let run = state.store().get_run(thread_id, run_id).await?;
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
    state.runtime.tell(thread_id, DeleteRun { run_id }).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn cancel_action(pairs: &[(String, String)]) -> Result<CancelAction, ApiError> {
    match extract::last(pairs, "action") {
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
    let cancelled = state.runtime.tell(thread_id, cancel).await?;
    if cancelled > 0 {
        return Ok(cancelled);
    }
    for run_id in run_ids {
        match state.store().get_run(thread_id, run_id).await {
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
        CancelAction::Interrupt => stored_result(state.store(), thread_id, run_id).await?,
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
            for (thread_id, run_id) in state.store().runs_with_status(statuses).await? {
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
