//! ApiError: the only type that becomes an HTTP error response, and the only code that picks
//! HTTP statuses. Bodies are `{"detail": "..."}` as on the official server; 5xx bodies are
//! generic and the cause is logged once here, cut to `LOGGED_ERROR_BYTES`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::ThreadError;
use crate::domain::errors::{bounded, LOGGED_ERROR_BYTES};
use crate::domain::ids::RunId;
use crate::domain::{AlreadyExists, NotFound, ValidationError};
use crate::engine::EngineError;
use crate::storage::{StorageError, Unavailable};

/// The detail of a 503 whose cause is internal (an actor that could not be reached).
const BUSY_DETAIL: &str = "The server is temporarily unable to handle the request; retry shortly.";

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown enum values, non-UUID ids (422).
    #[error("{0}")]
    Validation(String),
    /// A request that contradicts itself or the thread's state (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0:?}")]
    NotFound(NotFound),
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// A create that names something that exists (409).
    #[error("already exists: {0:?}")]
    Exists(AlreadyExists),
    /// A command refused because of the thread's runs in flight (409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request whose body cannot be read: a broken chunked or content encoding (400).
    #[error("{0}")]
    Malformed(String),
    /// A request target (path and query) longer than the server reads (414).
    #[error("{0}")]
    UriTooLong(String),
    /// More request headers, or more bytes of them, than the server reads (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A request whose `Host` is not one the server answers to, as a page that rebound its DNS
    /// name to this server sends (421).
    #[error("host not allowed: {host}")]
    HostNotAllowed { host: String },
    /// A request that changes something (or its CORS preflight) from a web page whose origin
    /// is not allowed (403).
    #[error("origin not allowed: {origin}")]
    OriginNotAllowed { origin: String },
    /// A valid request for something this server does not do yet (501).
    #[error("{0}")]
    NotImplemented(String),
    /// Temporarily unable to serve; the client may retry (503 with `Retry-After`). `detail` is
    /// for the client; `cause` is logged.
    #[error("{cause}")]
    Unavailable { detail: &'static str, cause: String },
    /// A server fault; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error about one item of a batch request; its status is the item's.
    #[error("request body item {index}: {error}")]
    InItem { index: usize, error: Box<ApiError> },
}

/// The words a client reads for something that was not found.
fn not_found_detail(missing: &NotFound) -> String {
    match missing {
        NotFound::Route => "Not Found".into(),
        NotFound::Thread(thread_id) => format!("Thread with ID {thread_id} not found"),
        NotFound::Run(run_id) => format!("Run {run_id} not found"),
        NotFound::Assistant(assistant_id) => format!("Assistant {assistant_id} not found"),
        NotFound::AssistantToDelete(assistant_id) => {
            format!("Assistant with ID {assistant_id} not found")
        }
        NotFound::AssistantVersion {
            assistant_id,
            version,
        } => format!("Version {version} not found for assistant {assistant_id}"),
        NotFound::Checkpoint(checkpoint_id) => format!("Checkpoint {checkpoint_id} not found"),
        NotFound::CheckpointInThread {
            checkpoint_id,
            thread_id,
        } => format!("Checkpoint {checkpoint_id} not found in thread {thread_id}"),
        NotFound::ThreadOrAssistant => "Thread or assistant not found.".into(),
        NotFound::Graph { graph_id, known } => {
            let known: Vec<String> = known.iter().map(|id| format!("'{id}'")).collect();
            format!(
                "Graph '{graph_id}' not found. Expected one of: [{}]",
                known.join(", ")
            )
        }
        NotFound::GraphOfAssistant {
            graph_id,
            assistant_id,
        } => format!(
            "Graph '{graph_id}' of assistant {assistant_id} is not configured on this server"
        ),
        NotFound::RunsToCancel => "No runs found to cancel.".into(),
        NotFound::RunsInFlightToCancel => "No matching runs to cancel. Please verify the thread ID and run IDs are correct, and the runs haven't been deleted or completed.".into(),
    }
}

/// The words a client reads when the database cannot take a write now.
fn unavailable_detail(cause: Unavailable) -> &'static str {
    match cause {
        Unavailable::Full => {
            "the database is full (disk full or database.max_size_mb reached): \
             nothing was written; free space or raise the limit, then retry"
        }
        Unavailable::Locked => {
            "the database is locked by another process: nothing was written; retry later"
        }
    }
}

/// The words a client reads for a create that names something that exists.
fn exists_detail(existing: &AlreadyExists) -> String {
    match existing {
        AlreadyExists::Thread(thread_id) => format!("Thread with ID {thread_id} already exists"),
        AlreadyExists::Assistant(assistant_id) => {
            format!("Assistant {assistant_id} already exists")
        }
    }
}

impl ApiError {
    /// The `detail` a client reads. 5xx causes are logged, not shown.
    fn detail(&self) -> String {
        match self {
            ApiError::NotFound(missing) => not_found_detail(missing),
            ApiError::Exists(existing) => exists_detail(existing),
            ApiError::Internal(cause) => {
                let cause = bounded(cause, LOGGED_ERROR_BYTES);
                log::error!("request failed: {cause}");
                "Internal Server Error".to_owned()
            }
            ApiError::Unavailable { detail, cause } => {
                let cause = bounded(cause, LOGGED_ERROR_BYTES);
                log::warn!("request refused, service unavailable: {cause}");
                (*detail).to_owned()
            }
            ApiError::InItem { index, error } => {
                format!("request body item {index}: {}", error.detail())
            }
            ApiError::HostNotAllowed { host } => format!(
                "Host '{host}' is not one this server answers to (a guard against DNS rebinding); \
                 to serve it, add its name to the setting server.allowed_hosts"
            ),
            ApiError::OriginNotAllowed { origin } => format!(
                "Origin '{origin}' is not allowed to make requests that change anything here, \
                 and nothing was changed; to allow its pages, add it to the setting \
                 server.cors_allowed_origins"
            ),
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Exists(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // RFC 9110's status for a request sent to a server unwilling to answer for its
            // target's authority; unlike 400 and 403, it says what to fix: the host.
            ApiError::HostNotAllowed { .. } => StatusCode::MISDIRECTED_REQUEST,
            ApiError::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InItem { error, .. } => error.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let detail = self.detail();
        let mut response = HttpResponse::build(self.status_code());
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(json!({ "detail": detail }))
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        match error {
            ValidationError::InvalidId { kind } => {
                ApiError::Validation(format!("Invalid {kind} ID: must be a UUID"))
            }
            ValidationError::Invalid(message) => ApiError::Validation(message),
            ValidationError::BadRequest(message) => ApiError::BadRequest(message),
            ValidationError::Unsupported(message) => ApiError::NotImplemented(message),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound(missing) => ApiError::NotFound(missing),
            StorageError::Conflict(existing) => ApiError::Exists(existing),
            other => match other.unavailable() {
                Some(unavailable) => ApiError::Unavailable {
                    detail: unavailable_detail(unavailable),
                    cause: format!("{other:#}"),
                },
                None => ApiError::Internal(format!("{other:#}")),
            },
        }
    }
}

impl From<ThreadError> for ApiError {
    fn from(error: ThreadError) -> Self {
        match error {
            ThreadError::Busy => ApiError::Conflict(
                "Thread is already running a task. Wait for it to finish or choose a different multitask strategy.".into(),
            ),
            ThreadError::InFlight { thread_id, runs } => {
                let listed: Vec<String> = runs.iter().map(RunId::to_string).collect();
                ApiError::Conflict(format!(
                    "Thread {thread_id} has in-flight runs: [{}]",
                    listed.join(", ")
                ))
            }
            ThreadError::NoGraph(thread_id) => ApiError::BadRequest(format!(
                "Thread '{thread_id}' has no assigned graph ID. Run the thread first or create it with metadata.graph_id."
            )),
            ThreadError::GraphNotServed(graph_id) => ApiError::BadRequest(format!(
                "Graph '{graph_id}' is not configured on this server"
            )),
            ThreadError::InvalidUpdate(message) => ApiError::BadRequest(message),
            ThreadError::Panicked(_) | ThreadError::Engine(_) => {
                ApiError::Internal(error.to_string())
            }
            ThreadError::Invalid(invalid) => ApiError::from(invalid),
            ThreadError::NotFound(missing) => ApiError::NotFound(missing),
            ThreadError::Draining => ApiError::Unavailable {
                detail: "The server is shutting down and accepts no new runs; retry shortly.",
                cause: "shutting down".into(),
            },
            ThreadError::Storage(storage) => ApiError::from(storage),
            ThreadError::Retired => ApiError::Unavailable {
                detail: BUSY_DETAIL,
                cause: error.to_string(),
            },
            ThreadError::Mailbox(mailbox) => ApiError::Unavailable {
                detail: BUSY_DETAIL,
                cause: format!("thread actor: {mailbox}"),
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        ApiError::from(ThreadError::from(error))
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(error: actix::MailboxError) -> Self {
        ApiError::Unavailable {
            detail: BUSY_DETAIL,
            cause: format!("actor mailbox: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::ThreadId;

    #[test]
    fn a_non_uuid_id_is_a_422_naming_its_kind() {
        let error = ApiError::from(ThreadId::parse("nope").unwrap_err());
        assert_eq!(error.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.detail(), "Invalid thread ID: must be a UUID");
    }

    #[test]
    fn an_item_of_a_batch_keeps_its_status_and_names_its_index() {
        let error = ApiError::InItem {
            index: 2,
            error: Box::new(ApiError::NotFound(NotFound::ThreadOrAssistant)),
        };
        assert_eq!(error.status_code(), StatusCode::NOT_FOUND);
        assert_eq!(
            error.detail(),
            "request body item 2: Thread or assistant not found."
        );
    }
}
