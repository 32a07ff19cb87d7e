//! Threads: create, get, patch, delete, search, count, copy, prune; thread state (get, at a checkpoint,
//! update) and history.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{self, json_body};
use super::reply::paginated;
use super::state::AppState;
use crate::actors::{DeleteThread, ThreadError, UpdateState};
use crate::domain::checkpoint::empty_state;
use crate::domain::checkpoint::CheckpointRef;
use crate::domain::ids::{CheckpointId, ThreadId};
use crate::domain::query::{HistoryQuery, Page, SortOrder, ThreadFilter, ThreadSortBy};
use crate::domain::thread::{IfExists, Thread, ThreadStatus};
use crate::domain::{strip_keys, JsonMap, NotFound, RESERVED_METADATA_KEYS};
use crate::engine::StateAt;
use crate::error::ApiError;
use crate::storage::PruneAction;

const THREAD_FIELDS: [&str; 10] = [
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "status",
    "config",
    "values",
    "interrupts",
    "error",
];

fn thread_json(thread: &Thread) -> Value {
    serde_json::to_value(thread).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
struct ThreadCreate {
    thread_id: Option<String>,
    metadata: Option<JsonMap>,
    if_exists: Option<IfExists>,
    // Accepted for compatibility; per-thread TTLs are not implemented (retention is server-wide).
    #[allow(dead_code)]
    ttl: Option<Value>,
    supersteps: Option<Value>,
}

/// `POST /threads`
pub async fn create(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let request: ThreadCreate = json_body(&body)?;
    if request.supersteps.is_some() {
        return Err(ApiError::NotImplemented(
            "`supersteps` on thread creation is not supported yet".into(),
        ));
    }
    let thread_id = match request.thread_id.as_deref() {
        Some(text) => extract::thread_id(text)?,
        None => ThreadId::generate(),
    };
    let mut metadata = request.metadata.unwrap_or_default();
    strip_keys(&mut metadata, &RESERVED_METADATA_KEYS);
    let thread = state
        .store()
        .create_thread(thread_id, metadata, request.if_exists.unwrap_or_default())
        .await?;
    Ok(HttpResponse::Ok().json(thread_json(&thread)))
}

/// `GET /threads/{thread_id}`
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let thread = state.store().get_thread(thread_id).await?;
    Ok(HttpResponse::Ok().json(thread_json(&thread)))
}

#[derive(Deserialize)]
struct ThreadPatch {
    metadata: Option<JsonMap>,
    // Accepted for compatibility; per-thread TTLs are not implemented (retention is server-wide).
    #[allow(dead_code)]
    ttl: Option<Value>,
}

/// `PATCH /threads/{thread_id}`: shallow-merges metadata.
pub async fn patch(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let patch: ThreadPatch = json_body(&body)?;
    let mut metadata = patch.metadata.unwrap_or_default();
    strip_keys(&mut metadata, &RESERVED_METADATA_KEYS);
    let thread = state.store().patch_thread(thread_id, metadata).await?;
    let minimal = request
        .headers()
        .get("Prefer")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("return=minimal"));
    if minimal {
        return Ok(HttpResponse::NoContent().finish());
    }
    Ok(HttpResponse::Ok().json(thread_json(&thread)))
}

/// `DELETE /threads/{thread_id}`: stops its active run, then deletes it with its runs and checkpoints.
pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    state.runtime.tell(thread_id, DeleteThread).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Most thread ids one `POST /threads/prune` takes.
const MAX_PRUNE_IDS: usize = 1000;

/// `strategy` of `POST /threads/prune`.
#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum PruneStrategy {
    /// Delete the threads (their runs stopped first).
    #[default]
    Delete,
    /// Keep only each thread's newest checkpoint; threads with runs in flight are skipped.
    KeepLatest,
}

#[derive(Deserialize)]
struct ThreadPrune {
    thread_ids: Vec<String>,
    #[serde(default)]
    strategy: PruneStrategy,
}

/// `POST /threads/prune`: deletes the threads, or keeps only their newest checkpoint. Replies
/// `{"pruned_count": n}`; unknown ids (and, for `keep_latest`, threads with runs in flight) are
/// skipped and not counted. Not atomic across threads: on a failure, those done stay done.
pub async fn prune(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let request: ThreadPrune = json_body(&body)?;
    if request.thread_ids.len() > MAX_PRUNE_IDS {
        return Err(ApiError::Validation(format!(
            "Invalid request body: field `thread_ids`: at most {MAX_PRUNE_IDS} ids, got {}",
            request.thread_ids.len()
        )));
    }
    let mut thread_ids = Vec::with_capacity(request.thread_ids.len());
    let mut seen = std::collections::HashSet::new();
    for (index, text) in request.thread_ids.iter().enumerate() {
        let thread_id = extract::thread_id(text).map_err(|error| {
            ApiError::Validation(format!(
                "Invalid request body: field `thread_ids[{index}]`: {error}"
            ))
        })?;
        // A repeated id is pruned, and counted, once.
        if seen.insert(thread_id) {
            thread_ids.push(thread_id);
        }
    }
    let pruned_count = match request.strategy {
        PruneStrategy::Delete => {
            let mut deleted = 0u64;
            for thread_id in thread_ids {
                match state.runtime.command(thread_id, DeleteThread).await?.0 {
                    Ok(()) => deleted += 1,
                    Err(ThreadError::NotFound(_)) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            deleted
        }
        PruneStrategy::KeepLatest => state
            .store()
            .prune_threads(thread_ids, PruneAction::KeepLatest(1))
            .await?
            .threads(),
    };
    Ok(HttpResponse::Ok().json(json!({ "pruned_count": pruned_count })))
}

#[derive(Deserialize)]
struct ThreadSearch {
    ids: Option<Vec<String>>,
    metadata: Option<JsonMap>,
    values: Option<JsonMap>,
    status: Option<ThreadStatus>,
    limit: Option<i64>,
    offset: Option<i64>,
    sort_by: Option<ThreadSortBy>,
    sort_order: Option<SortOrder>,
    select: Option<Vec<String>>,
    extract: Option<Value>,
}

fn thread_filter(
    ids: Option<Vec<String>>,
    metadata: Option<JsonMap>,
    values: Option<JsonMap>,
    status: Option<ThreadStatus>,
) -> Result<ThreadFilter, ApiError> {
    let ids = ids
        .map(|ids| {
            ids.iter()
                .map(|id| extract::thread_id(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let filter = ThreadFilter {
        ids,
        metadata,
        values,
        status,
    };
    filter.check()?;
    Ok(filter)
}

/// `POST /threads/search`
pub async fn search(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let request: ThreadSearch = json_body(&body)?;
    if request.extract.is_some() {
        return Err(ApiError::NotImplemented(
            "`extract` in thread search is not supported yet".into(),
        ));
    }
    let limit = extract::limit(request.limit, 10, 1000)?;
    let offset = extract::offset(request.offset)?;
    let filter = thread_filter(
        request.ids,
        request.metadata,
        request.values,
        request.status,
    )?;
    let page = Page {
        sort_by: request.sort_by.unwrap_or_default(),
        order: request.sort_order.unwrap_or_default(),
        limit,
        offset,
    };
    let total = state.store().count_threads(filter.clone());
    let page = state.store().search_threads(filter, page);
    let (total, page) = (total.await?, page.await?);
    let items = extract::select(
        page.iter().map(thread_json).collect(),
        request.select.as_deref(),
        &THREAD_FIELDS,
    )?;
    Ok(paginated(items, total, offset))
}

#[derive(Deserialize)]
struct ThreadCount {
    metadata: Option<JsonMap>,
    values: Option<JsonMap>,
    status: Option<ThreadStatus>,
}

/// `POST /threads/count`
pub async fn count(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let request: ThreadCount = json_body(&body)?;
    let filter = thread_filter(None, request.metadata, request.values, request.status)?;
    Ok(HttpResponse::Ok().json(state.store().count_threads(filter).await?))
}

/// `POST /threads/{thread_id}/copy`: a new thread with the same metadata and checkpoints.
pub async fn copy(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let copy_id = ThreadId(uuid::Uuid::new_v4());
    let thread = state.store().copy_thread(thread_id, copy_id).await?;
    Ok(HttpResponse::Ok().json(thread_json(&thread)))
}

/// `GET /threads/{thread_id}/state`
pub async fn get_state(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let latest = state.runtime.state(thread_id, StateAt::default()).await?;
    Ok(HttpResponse::Ok().json(latest.unwrap_or_else(empty_state)))
}

async fn state_at(
    state: &AppState,
    thread_id: ThreadId,
    checkpoint_ns: String,
    checkpoint_id: CheckpointId,
) -> Result<HttpResponse, ApiError> {
    let at = StateAt {
        checkpoint_ns,
        checkpoint_id: Some(checkpoint_id),
    };
    let rendered = state
        .runtime
        .state(thread_id, at)
        .await?
        .ok_or(ApiError::NotFound(NotFound::CheckpointInThread {
            checkpoint_id,
            thread_id,
        }))?;
    Ok(HttpResponse::Ok().json(rendered))
}

/// `GET /threads/{thread_id}/state/{checkpoint_id}`
pub async fn get_state_at(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path.0)?;
    let checkpoint_id = extract::checkpoint_id(&path.1)?;
    state_at(&state, thread_id, String::new(), checkpoint_id).await
}

#[derive(Deserialize)]
struct StateAtCheckpoint {
    checkpoint: CheckpointRef,
    #[allow(dead_code)] // Subgraph states come with subgraphs (#4).
    subgraphs: Option<bool>,
}

/// `POST /threads/{thread_id}/state/checkpoint`
pub async fn post_state_checkpoint(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let request: StateAtCheckpoint = json_body(&body)?;
    match request.checkpoint.checkpoint_id.as_deref() {
        Some(text) => {
            let checkpoint_id = extract::checkpoint_id(text)?;
            state_at(
                &state,
                thread_id,
                request.checkpoint.checkpoint_ns.unwrap_or_default(),
                checkpoint_id,
            )
            .await
        }
        None => get_state(state, web::Path::from(thread_id.to_string())).await,
    }
}

#[derive(Deserialize)]
struct StateUpdate {
    values: Option<Value>,
    as_node: Option<String>,
    checkpoint: Option<CheckpointRef>,
    checkpoint_id: Option<String>,
}

/// `POST /threads/{thread_id}/state`: a `source: update` checkpoint, as if `as_node` wrote `values`.
pub async fn update_state(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let request: StateUpdate = json_body(&body)?;
    let checkpoint_id = extract::named_checkpoint(request.checkpoint_id, request.checkpoint)?;
    let update = UpdateState {
        values: request.values,
        as_node: request.as_node,
        checkpoint_id,
    };
    let checkpoint = state.runtime.update_state(thread_id, update).await?;
    let reference = checkpoint.reference();
    Ok(HttpResponse::Ok().json(json!({
        "checkpoint": reference,
        "configurable": reference,
        "checkpoint_id": checkpoint.checkpoint_id,
    })))
}

/// Default number of checkpoints a history request returns, as on the official server (the SDKs
/// always send their own limit).
const HISTORY_DEFAULT_LIMIT: i64 = 1;

const STATE_FIELDS: [&str; 10] = [
    "values",
    "next",
    "tasks",
    "metadata",
    "created_at",
    "checkpoint",
    "parent_checkpoint",
    "interrupts",
    "checkpoint_id",
    "parent_checkpoint_id",
];

async fn history(
    state: &AppState,
    thread_id: ThreadId,
    query: HistoryQuery,
    select: Option<&[String]>,
) -> Result<HttpResponse, ApiError> {
    let states = state.runtime.history(thread_id, query).await?;
    Ok(HttpResponse::Ok().json(extract::select(states, select, &STATE_FIELDS)?))
}

/// `GET /threads/{thread_id}/history?limit=&before=`
pub async fn get_history(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let pairs = extract::query_pairs(request.query_string())?;
    let query = HistoryQuery {
        limit: extract::limit(
            extract::integer(&pairs, "limit")?,
            HISTORY_DEFAULT_LIMIT,
            1000,
        )?,
        before: extract::last(&pairs, "before")
            .map(extract::checkpoint_id)
            .transpose()?,
        ..HistoryQuery::default()
    };
    history(&state, thread_id, query, None).await
}

#[derive(Deserialize)]
struct HistoryBody {
    limit: Option<i64>,
    before: Option<Value>,
    metadata: Option<JsonMap>,
    checkpoint: Option<CheckpointRef>,
    select: Option<Vec<String>>,
}

/// `before` as a checkpoint id, `{checkpoint_id}` or `{configurable: {checkpoint_id}}`.
fn before_id(before: &Value) -> Result<CheckpointId, ApiError> {
    let text = match before {
        Value::String(text) => Some(text.as_str()),
        Value::Object(object) => object
            .get("checkpoint_id")
            .or_else(|| {
                object
                    .get("configurable")
                    .and_then(|inner| inner.get("checkpoint_id"))
            })
            .and_then(Value::as_str),
        _ => None,
    };
    let text = text.ok_or_else(|| {
        ApiError::Validation("Invalid request body: field `before`: expected a checkpoint id or {\"checkpoint_id\": …}".into())
    })?;
    extract::checkpoint_id(text)
}

/// `POST /threads/{thread_id}/history`
pub async fn post_history(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let thread_id = extract::thread_id(&path)?;
    let request: HistoryBody = json_body(&body)?;
    let checkpoint = request.checkpoint.unwrap_or_default();
    let query = HistoryQuery {
        limit: extract::limit(request.limit, HISTORY_DEFAULT_LIMIT, 1000)?,
        before: request
            .before
            .as_ref()
            .filter(|before| !before.is_null())
            .map(before_id)
            .transpose()?,
        metadata: request.metadata,
        checkpoint_ns: checkpoint.checkpoint_ns.unwrap_or_default(),
        checkpoint_id: checkpoint
            .checkpoint_id
            .as_deref()
            .map(extract::checkpoint_id)
            .transpose()?,
    };
    query.check()?;
    history(&state, thread_id, query, request.select.as_deref()).await
}
