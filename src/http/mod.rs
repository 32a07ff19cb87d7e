//! The HTTP API: the whole route table in `routes`, one file per resource. Handlers parse and
//! validate, then go through the runtime (anything that changes a thread's runs or state,
//! creating runs, reading state) or to storage (reads, and writes that touch no run). Routes and
//! DTOs only. Imports: domain, actors, engine, storage, error. Never a backend.

mod assistants;
mod browser;
mod extract;
mod health;
mod reply;
mod runs;
mod sse;
mod state;
mod threads;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{guard, web, HttpResponse, Resource, Route};

use crate::domain::NotFound;
use crate::error::ApiError;
pub use browser::{cors, refuse_foreign, BrowserPolicy};
pub use state::AppState;

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

/// Longest request target (path and query) a handler reads, in bytes; longer is 414.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// Most request headers a handler reads; more is 431.
pub const MAX_HEADERS: usize = 64;

/// Most bytes of request headers (names and values) a handler reads; more is 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses a request whose URL or headers are over the limits, with a JSON 414 or 431, before
/// any handler runs. The limits sit below actix-web's own (a head of 128 KiB, 96 headers):
/// a head over those, or one it cannot parse, it answers itself (431 or 400) with an empty body
/// and closes the connection, before any of this code runs.
pub async fn check_head(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> actix_web::Result<ServiceResponse<EitherBody<impl MessageBody>>> {
    let url_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let refusal = if url_bytes > MAX_URL_BYTES {
        Some(ApiError::UriTooLong(format!(
            "URL too long: {url_bytes} bytes, at most {MAX_URL_BYTES}"
        )))
    } else if headers.len() > MAX_HEADERS {
        Some(ApiError::HeadersTooLarge(format!(
            "Request headers too large: {} headers, at most {MAX_HEADERS}",
            headers.len()
        )))
    } else if header_bytes > MAX_HEADER_BYTES {
        Some(ApiError::HeadersTooLarge(format!(
            "Request headers too large: {header_bytes} bytes, at most {MAX_HEADER_BYTES}"
        )))
    } else {
        None
    };
    match refusal {
        Some(error) => Ok(request.error_response(error).map_into_right_body()),
        None => Ok(next.call(request).await?.map_into_left_body()),
    }
}

/// Gives actix-web's own 413 (body over the limit) our JSON error body.
pub fn payload_too_large<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let limit = response
        .request()
        .app_data::<web::Data<AppState>>()
        .map_or(0, |state| state.body_limit);
    replaced(
        response,
        ApiError::PayloadTooLarge(format!("Request body too large (limit: {limit} bytes)")),
    )
}

/// Gives actix-web's own 400 (a body it could not read) our JSON error body, with what was
/// wrong; a 400 of ours passes unchanged.
pub fn unreadable_body<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let Some(error) = response
        .response()
        .error()
        .filter(|error| error.as_error::<ApiError>().is_none())
    else {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    };
    let detail = match error.as_error::<PayloadError>() {
        Some(PayloadError::Incomplete(_)) => "Malformed request body: it ended before it was \
            complete (a broken chunked encoding, or fewer bytes than its Content-Length)"
            .to_owned(),
        Some(PayloadError::EncodingCorrupted) => {
            "Malformed request body: its Content-Encoding could not be decoded".to_owned()
        }
        Some(other) => format!("Malformed request body: {other}"),
        None => format!("Malformed request: {error}"),
    };
    replaced(response, ApiError::Malformed(detail))
}

/// `response` with the body and status of `error` in place of actix-web's own.
fn replaced<B>(
    response: ServiceResponse<B>,
    error: ApiError,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (request, _) = response.into_parts();
    let replacement = actix_web::ResponseError::error_response(&error);
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, replacement).map_into_right_body(),
    ))
}
