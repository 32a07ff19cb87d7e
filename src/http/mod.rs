//! The HTTP API: the whole route table in `routes`, one file per resource. Handlers parse and
//! validate, then talk to a thread actor (anything that changes a thread's runs or state) or to
//! storage (reads, and writes that touch no run). Imports: domain, graph, actors, storage, error.
//! Never rusqlite.

mod assistants;
mod extract;
mod health;
mod runs;
mod sse;
mod threads;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Handler, Message};
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{guard, web, HttpResponse, Resource, Route};
use serde_json::Value;

use crate::actors::{GetThread, ThreadActor, ThreadError, ThreadRegistry};
use crate::domain::ids::ThreadId;
use crate::domain::NotFound;
use crate::error::ApiError;
use crate::graph::GraphRegistry;
use crate::storage::SharedStore;
use crate::stream::StreamHub;

/// What every handler can reach.
pub struct AppState {
    pub store: SharedStore,
    pub registry: Addr<ThreadRegistry>,
    pub graphs: Arc<GraphRegistry>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Run event streams.
    pub hub: Arc<StreamHub>,
    /// Interval of SSE heartbeats and `/wait` keep-alives.
    pub heartbeat: Duration,
    /// Raised at shutdown: new runs get 503.
    pub draining: Arc<AtomicBool>,
}

impl AppState {
    /// The actor of a thread (started if needed).
    async fn thread(&self, thread_id: ThreadId) -> Result<Addr<ThreadActor>, ApiError> {
        Ok(self.registry.send(GetThread { thread_id }).await?)
    }

    /// 503 while the server shuts down: runs are not accepted any more.
    pub fn accepting_runs(&self) -> Result<(), ApiError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(ApiError::Unavailable {
                detail: "The server is shutting down and accepts no new runs; retry shortly.",
                cause: "shutting down".into(),
            });
        }
        Ok(())
    }

    /// Sends a command to the thread's actor; replies with its answer and the actor's address.
    /// An actor that retired (idle) just before the command arrived refuses it unhandled: the
    /// registry is asked again, and starts a fresh actor.
    pub async fn command<M, R>(
        &self,
        thread_id: ThreadId,
        message: M,
    ) -> Result<(Result<R, ThreadError>, Addr<ThreadActor>), ApiError>
    where
        M: Message<Result = Result<R, ThreadError>> + Clone + Send + 'static,
        R: Send + 'static,
        ThreadActor: Handler<M>,
    {
        for _ in 0..8 {
            let actor = self.thread(thread_id).await?;
            match actor.send(message.clone()).await? {
                Err(ThreadError::Retired) => continue,
                reply => return Ok((reply, actor)),
            }
        }
        Err(ApiError::from(ThreadError::Retired))
    }

    /// Sends a command to the thread's actor and returns its answer.
    pub async fn tell<M, R>(&self, thread_id: ThreadId, message: M) -> Result<R, ApiError>
    where
        M: Message<Result = Result<R, ThreadError>> + Clone + Send + 'static,
        R: Send + 'static,
        ThreadActor: Handler<M>,
    {
        let (reply, _) = self.command(thread_id, message).await?;
        Ok(reply?)
    }
}

/// Registers every route of the API.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(resource("/").route(get().to(health::ok)))
        .service(resource("/ok").route(get().to(health::ok)))
        .service(resource("/info").route(get().to(health::info)))
        .service(resource("/assistants").route(web::post().to(assistants::create)))
        .service(resource("/assistants/search").route(web::post().to(assistants::search)))
        .service(resource("/assistants/count").route(web::post().to(assistants::count)))
        .service(
            resource("/assistants/{assistant_id}")
                .route(get().to(assistants::get))
                .route(web::patch().to(assistants::patch))
                .route(web::delete().to(assistants::delete)),
        )
        .service(resource("/assistants/{assistant_id}/graph").route(get().to(assistants::graph)))
        .service(
            resource("/assistants/{assistant_id}/schemas").route(get().to(assistants::schemas)),
        )
        .service(
            resource("/assistants/{assistant_id}/subgraphs").route(get().to(assistants::subgraphs)),
        )
        .service(
            resource("/assistants/{assistant_id}/subgraphs/{namespace}")
                .route(get().to(assistants::subgraphs_in)),
        )
        .service(
            resource("/assistants/{assistant_id}/versions")
                .route(web::post().to(assistants::versions)),
        )
        .service(
            resource("/assistants/{assistant_id}/latest").route(web::post().to(assistants::latest)),
        )
        .service(resource("/threads").route(web::post().to(threads::create)))
        .service(resource("/threads/search").route(web::post().to(threads::search)))
        .service(resource("/threads/count").route(web::post().to(threads::count)))
        .service(resource("/threads/prune").route(web::post().to(threads::prune)))
        .service(
            resource("/threads/{thread_id}")
                .route(get().to(threads::get))
                .route(web::patch().to(threads::patch))
                .route(web::delete().to(threads::delete)),
        )
        .service(resource("/threads/{thread_id}/copy").route(web::post().to(threads::copy)))
        .service(
            resource("/threads/{thread_id}/state")
                .route(get().to(threads::get_state))
                .route(web::post().to(threads::update_state)),
        )
        .service(
            resource("/threads/{thread_id}/state/checkpoint")
                .route(web::post().to(threads::post_state_checkpoint)),
        )
        .service(
            resource("/threads/{thread_id}/state/{checkpoint_id}")
                .route(get().to(threads::get_state_at)),
        )
        .service(
            resource("/threads/{thread_id}/history")
                .route(get().to(threads::get_history))
                .route(web::post().to(threads::post_history)),
        )
        .service(
            resource("/threads/{thread_id}/runs")
                .route(get().to(runs::list))
                .route(web::post().to(runs::create)),
        )
        .service(resource("/threads/{thread_id}/runs/wait").route(web::post().to(runs::wait)))
        .service(resource("/threads/{thread_id}/runs/stream").route(web::post().to(runs::stream)))
        .service(
            resource("/threads/{thread_id}/runs/{run_id}")
                .route(get().to(runs::get))
                .route(web::delete().to(runs::delete)),
        )
        .service(resource("/threads/{thread_id}/runs/{run_id}/join").route(get().to(runs::join)))
        .service(
            resource("/threads/{thread_id}/runs/{run_id}/stream")
                .route(get().to(runs::join_stream)),
        )
        .service(
            resource("/threads/{thread_id}/runs/{run_id}/cancel")
                .route(web::post().to(runs::cancel)),
        )
        .service(resource("/runs").route(web::post().to(runs::create_stateless)))
        .service(resource("/runs/wait").route(web::post().to(runs::wait_stateless)))
        .service(resource("/runs/stream").route(web::post().to(runs::stream_stateless)))
        .service(resource("/runs/batch").route(web::post().to(runs::batch)))
        .service(resource("/runs/cancel").route(web::post().to(runs::cancel_many)))
        .default_service(web::to(not_found));
}

/// A resource whose unmatched methods get a JSON 405.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// A route for GET that also answers HEAD.
fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(NotFound::Route))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Gives actix-web's own 413 (body over the limit) our JSON error body.
pub fn payload_too_large<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let limit = response
        .request()
        .app_data::<web::Data<AppState>>()
        .map_or(0, |state| state.body_limit);
    let (request, _) = response.into_parts();
    let replaced = actix_web::ResponseError::error_response(&ApiError::PayloadTooLarge(format!(
        "Request body too large (limit: {limit} bytes)"
    )));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, replaced).map_into_right_body(),
    ))
}

/// 200 JSON with `Content-Location` (and `Location` when given), as run-creating endpoints send.
pub fn json_with_location(
    body: &impl serde::Serialize,
    content_location: String,
    location: Option<String>,
) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CONTENT_LOCATION, content_location));
    if let Some(location) = location {
        response.insert_header((header::LOCATION, location));
    }
    response.json(body)
}

/// 200 JSON array with `X-Pagination-Total` and, when another page exists, `X-Pagination-Next`.
pub fn paginated(items: Vec<Value>, total: i64, offset: i64) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.insert_header(("X-Pagination-Total", total.to_string()));
    let next = offset + items.len() as i64;
    if next < total {
        response.insert_header(("X-Pagination-Next", next.to_string()));
    }
    response.json(items)
}
