//! Assistants: create, get, patch (a new version), delete, search, count, versions, latest, and
//! the graph's drawing and schemas.

use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::extract::{self, json_body};
use super::reply::paginated;
use super::state::AppState;
use crate::domain::assistant::{Assistant, AssistantChange, AssistantVersion};
use crate::domain::ids::AssistantId;
use crate::domain::query::{self, AssistantFilter, AssistantSortBy, Page, SortOrder};
use crate::domain::thread::IfExists;
use crate::domain::time::Timestamp;
use crate::domain::{JsonMap, NotFound};
use crate::engine::Engine;
use crate::error::ApiError;

const ASSISTANT_FIELDS: [&str; 10] = [
    "assistant_id",
    "graph_id",
    "config",
    "context",
    "metadata",
    "name",
    "created_at",
    "updated_at",
    "version",
    "description",
];

fn unknown_graph(state: &AppState, graph_id: &str) -> ApiError {
    ApiError::NotFound(NotFound::Graph {
        graph_id: graph_id.to_owned(),
        known: state.runtime.engines().ids().map(str::to_owned).collect(),
    })
}

fn assistant_not_found(assistant_id: AssistantId) -> ApiError {
    ApiError::NotFound(NotFound::Assistant(assistant_id))
}

#[derive(Deserialize)]
struct AssistantCreate {
    graph_id: String,
    assistant_id: Option<String>,
    config: Option<JsonMap>,
    context: Option<JsonMap>,
    metadata: Option<JsonMap>,
    if_exists: Option<IfExists>,
    name: Option<String>,
    description: Option<String>,
}

/// `POST /assistants`
pub async fn create(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let request: AssistantCreate = json_body(&body)?;
    if !state.runtime.engines().serves(&request.graph_id) {
        return Err(unknown_graph(&state, &request.graph_id));
    }
    let assistant_id = match request.assistant_id.as_deref() {
        Some(text) => extract::assistant_id(text)?,
        None => AssistantId::generate(),
    };
    let mut version = AssistantVersion {
        assistant_id,
        graph_id: request.graph_id,
        config: request.config.unwrap_or_default(),
        context: request.context.unwrap_or_default(),
        metadata: request.metadata.unwrap_or_default(),
        name: request.name.unwrap_or_else(|| "Untitled".into()),
        created_at: Timestamp::now(),
        version: 1,
        description: request.description,
    };
    version.mirror_context();
    let assistant = state
        .store()
        .create_assistant(version, request.if_exists.unwrap_or_default())
        .await?;
    Ok(HttpResponse::Ok().json(assistant))
}

/// `GET /assistants/{assistant_id}`
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let assistant_id = extract::assistant_id(&path)?;
    let assistant = state
        .store()
        .get_assistant(assistant_id)
        .await?
        .ok_or_else(|| assistant_not_found(assistant_id))?;
    Ok(HttpResponse::Ok().json(assistant))
}

#[derive(Deserialize)]
struct AssistantPatch {
    graph_id: Option<String>,
    config: Option<JsonMap>,
    context: Option<JsonMap>,
    metadata: Option<JsonMap>,
    name: Option<String>,
    description: Option<String>,
}

/// `PATCH /assistants/{assistant_id}`: writes a new version (metadata is merged, the rest replaced).
pub async fn patch(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let assistant_id = extract::assistant_id(&path)?;
    let request: AssistantPatch = json_body(&body)?;
    if let Some(graph_id) = &request.graph_id {
        if !state.runtime.engines().serves(graph_id) {
            return Err(unknown_graph(&state, graph_id));
        }
    }
    let change = AssistantChange {
        graph_id: request.graph_id,
        config: request.config,
        context: request.context,
        metadata: request.metadata,
        name: request.name,
        description: request.description,
    };
    let assistant = state.store().patch_assistant(assistant_id, change).await?;
    Ok(HttpResponse::Ok().json(assistant))
}

/// `DELETE /assistants/{assistant_id}?delete_threads=`: with `delete_threads`, each of its
/// threads is deleted through its thread actor (which stops its active run first).
pub async fn delete(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let assistant_id = extract::assistant_id(&path)?;
    let pairs = extract::query_pairs(request.query_string())?;
    let delete_threads = extract::flag(&pairs, "delete_threads");
    state
        .runtime
        .delete_assistant(assistant_id, delete_threads)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct AssistantSearch {
    metadata: Option<JsonMap>,
    graph_id: Option<String>,
    name: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    sort_by: Option<AssistantSortBy>,
    sort_order: Option<SortOrder>,
    select: Option<Vec<String>>,
}

/// `POST /assistants/search`
pub async fn search(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let request: AssistantSearch = json_body(&body)?;
    let limit = extract::limit(request.limit, 10, 1000)?;
    let offset = extract::offset(request.offset)?;
    let filter = AssistantFilter {
        metadata: request.metadata,
        graph_id: request.graph_id,
        name: request.name,
    };
    filter.check()?;
    let page = Page {
        sort_by: request.sort_by.unwrap_or_default(),
        order: request.sort_order.unwrap_or_default(),
        limit,
        offset,
    };
    let total = state.store().count_assistants(filter.clone());
    let page = state.store().search_assistants(filter, page);
    let (total, page) = (total.await?, page.await?);
    let items = page
        .iter()
        .map(|assistant| serde_json::to_value(assistant).unwrap_or(Value::Null))
        .collect();
    let items = extract::select(items, request.select.as_deref(), &ASSISTANT_FIELDS)?;
    Ok(paginated(items, total, offset))
}

#[derive(Deserialize)]
struct AssistantCount {
    metadata: Option<JsonMap>,
    graph_id: Option<String>,
    name: Option<String>,
}

/// `POST /assistants/count`
pub async fn count(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let request: AssistantCount = json_body(&body)?;
    let filter = AssistantFilter {
        metadata: request.metadata,
        graph_id: request.graph_id,
        name: request.name,
    };
    filter.check()?;
    Ok(HttpResponse::Ok().json(state.store().count_assistants(filter).await?))
}

#[derive(Deserialize)]
struct VersionsQuery {
    metadata: Option<JsonMap>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `POST /assistants/{assistant_id}/versions`: newest first.
pub async fn versions(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let assistant_id = extract::assistant_id(&path)?;
    let request: VersionsQuery = json_body(&body)?;
    let limit = extract::limit(request.limit, 10, 1000)?;
    let offset = extract::offset(request.offset)?;
    if let Some(metadata) = &request.metadata {
        query::check_json_filter("metadata", metadata)?;
    }
    if state.store().get_assistant(assistant_id).await?.is_none() {
        return Err(assistant_not_found(assistant_id));
    }
    let versions = state
        .store()
        .assistant_versions(assistant_id, request.metadata, limit, offset)
        .await?;
    Ok(HttpResponse::Ok().json(versions))
}

#[derive(Deserialize)]
struct LatestVersion {
    version: i64,
}

/// `POST /assistants/{assistant_id}/latest` with `{"version": n}`.
pub async fn latest(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let assistant_id = extract::assistant_id(&path)?;
    let request: LatestVersion = json_body(&body)?;
    let assistant = state
        .store()
        .set_assistant_version(assistant_id, request.version)
        .await?;
    Ok(HttpResponse::Ok().json(assistant))
}

/// The graph of an assistant, with its engine; `/graph` also accepts a graph id in place of the
/// assistant id.
async fn graph_of(
    state: &AppState,
    text: &str,
    allow_graph_id: bool,
) -> Result<(Arc<dyn Engine>, String), ApiError> {
    let engines = state.runtime.engines();
    if allow_graph_id {
        if let Some(engine) = engines.get(text) {
            return Ok((engine.clone(), text.to_owned()));
        }
    }
    let assistant_id = extract::assistant_id(text)?;
    let assistant: Assistant = state
        .store()
        .get_assistant(assistant_id)
        .await?
        .ok_or_else(|| assistant_not_found(assistant_id))?;
    let engine = engines
        .get(&assistant.graph_id)
        .ok_or_else(|| unknown_graph(state, &assistant.graph_id))?;
    Ok((engine.clone(), assistant.graph_id))
}

/// `GET /assistants/{assistant_id}/graph`
pub async fn graph(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (engine, graph_id) = graph_of(&state, &path, true).await?;
    Ok(HttpResponse::Ok().json(engine.drawing(&graph_id).await?))
}

/// `GET /assistants/{assistant_id}/schemas`
pub async fn schemas(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (engine, graph_id) = graph_of(&state, &path, false).await?;
    Ok(HttpResponse::Ok().json(engine.schemas(&graph_id).await?))
}

/// `?recurse=` of the subgraphs endpoints (`true`, `1` or `yes`; anything else is false).
fn recurse(request: &HttpRequest) -> Result<bool, ApiError> {
    let pairs = extract::query_pairs(request.query_string())?;
    Ok(extract::flag(&pairs, "recurse"))
}

/// `GET /assistants/{assistant_id}/subgraphs`: the schemas of the graph's subgraphs by
/// namespace (the node that runs each), nested ones too with `recurse=true`.
pub async fn subgraphs(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (engine, graph_id) = graph_of(&state, &path, false).await?;
    let recurse = recurse(&request)?;
    Ok(HttpResponse::Ok().json(engine.subgraphs(&graph_id, None, recurse).await?))
}

/// `GET /assistants/{assistant_id}/subgraphs/{namespace}`: the same, for one namespace.
pub async fn subgraphs_in(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (assistant, namespace) = path.into_inner();
    let (engine, graph_id) = graph_of(&state, &assistant, false).await?;
    let recurse = recurse(&request)?;
    Ok(HttpResponse::Ok().json(
        engine
            .subgraphs(&graph_id, Some(&namespace), recurse)
            .await?,
    ))
}
