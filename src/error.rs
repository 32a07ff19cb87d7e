//! ApiError: the only type that becomes an HTTP error response, and the only code that picks
//! HTTP statuses. Bodies are `{"detail": "..."}` as on the official server; 5xx bodies are
//! generic and the cause is logged once here.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::ThreadError;
use crate::domain::ValidationError;
use crate::storage::StorageError;

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
    #[error("{0}")]
    NotFound(String),
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
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
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let detail = match self {
            ApiError::Internal(cause) => {
                log::error!("request failed: {cause}");
                "Internal Server Error".to_owned()
            }
            ApiError::Unavailable { detail, cause } => {
                log::warn!("request refused, service unavailable: {cause}");
                (*detail).to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable { .. }) {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(json!({ "detail": detail }))
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        match error {
            ValidationError::InvalidId { .. } | ValidationError::Invalid(_) => {
                ApiError::Validation(error.to_string())
            }
            ValidationError::BadRequest(message) => ApiError::BadRequest(message),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound(message) => ApiError::NotFound(message),
            StorageError::Conflict(message) => ApiError::Conflict(message),
            other => match other.unavailable() {
                Some(unavailable) => ApiError::Unavailable {
                    detail: unavailable.detail(),
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
            ThreadError::Busy => ApiError::Conflict(error.to_string()),
            ThreadError::Conflict(message) => ApiError::Conflict(message),
            ThreadError::BadRequest(message) => ApiError::BadRequest(message),
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

impl From<actix::MailboxError> for ApiError {
    fn from(error: actix::MailboxError) -> Self {
        ApiError::Unavailable {
            detail: BUSY_DETAIL,
            cause: format!("actor mailbox: {error}"),
        }
    }
}
