//! Reading requests: JSON bodies, query strings and path ids, each failure a 422 (413 for a body
//! over the limit) whose `detail` names the field and what was expected.

use actix_web::web::Bytes;
use serde::de::DeserializeOwned;

use crate::domain::checkpoint::{self, CheckpointRef};
use crate::domain::ids::{AssistantId, CheckpointId, RunId, ThreadId};
use crate::error::ApiError;

/// Parses a JSON body. An empty body counts as `{}`; malformed JSON and schema mismatches are
/// 422 naming the path of the offending field.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let value: serde_json::Value = serde_json::from_slice(text)
        .map_err(|_| ApiError::Validation("Invalid JSON in request body".into()))?;
    if !value.is_object() {
        return Err(ApiError::Validation(format!(
            "Invalid request body: expected a JSON object, got {}",
            kind_of(&value)
        )));
    }
    from_value(value, "request body")
}

/// Deserialises a JSON value, naming the failing field in the 422.
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
        if path == "." {
            ApiError::Validation(format!("Invalid {what}: {inner}"))
        } else {
            ApiError::Validation(format!("Invalid {what}: field `{path}`: {inner}"))
        }
    })
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Every `key=value` pair of a query string, in order (repeated keys kept).
///
/// The rule for a repeated parameter, on every endpoint, is the official server's: the last
/// value counts (`last`, `flag`, `integer`). Only list parameters (`stream_mode`, `select`)
/// take every value.
pub fn query_pairs(query_string: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query_string)
        .map_err(|error| ApiError::Validation(format!("Invalid query string: {error}")))
}

/// The value of a single-valued query parameter: its last one when repeated.
pub fn last<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

/// A boolean query flag: `true`, `1` or `yes` (any case) are true; absent is false.
pub fn flag(pairs: &[(String, String)], key: &str) -> bool {
    last(pairs, key)
        .is_some_and(|value| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// An integer query parameter; one that is not is a 422 worded as the official server does
/// (`Invalid limit abc`).
pub fn integer(pairs: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    last(pairs, key)
        .map(|value| {
            value
                .parse::<i64>()
                .map_err(|_| ApiError::Validation(format!("Invalid {key} {value}")))
        })
        .transpose()
}

/// A path thread id (422 if not a UUID).
pub fn thread_id(text: &str) -> Result<ThreadId, ApiError> {
    Ok(ThreadId::parse(text)?)
}

/// A path run id (422 if not a UUID).
pub fn run_id(text: &str) -> Result<RunId, ApiError> {
    Ok(RunId::parse(text)?)
}

/// A path assistant id (422 if not a UUID).
pub fn assistant_id(text: &str) -> Result<AssistantId, ApiError> {
    Ok(AssistantId::parse(text)?)
}

/// A checkpoint id (422 if not a UUID).
pub fn checkpoint_id(text: &str) -> Result<CheckpointId, ApiError> {
    Ok(CheckpointId::parse(text)?)
}

/// The checkpoint a body names, by `checkpoint_id` or by `checkpoint: {checkpoint_id}`
/// (422 if it is not a UUID).
pub fn named_checkpoint(
    direct: Option<String>,
    reference: Option<CheckpointRef>,
) -> Result<Option<CheckpointId>, ApiError> {
    Ok(checkpoint::named_checkpoint(direct, reference)?)
}

/// `limit` within `1..=max` (422 otherwise).
pub fn limit(value: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value.unwrap_or(default) {
        limit if (1..=max).contains(&limit) => Ok(limit),
        other => Err(ApiError::Validation(format!(
            "Invalid limit {other}: expected 1 to {max}"
        ))),
    }
}

/// `offset` at least 0 (422 otherwise).
pub fn offset(value: Option<i64>) -> Result<i64, ApiError> {
    match value.unwrap_or(0) {
        offset if offset >= 0 => Ok(offset),
        other => Err(ApiError::Validation(format!(
            "Invalid offset {other}: expected 0 or more"
        ))),
    }
}

/// Keeps only the `select`ed top-level fields of each object (422 for an unknown field).
pub fn select(
    items: Vec<serde_json::Value>,
    select: Option<&[String]>,
    allowed: &[&str],
) -> Result<Vec<serde_json::Value>, ApiError> {
    let Some(select) = select.filter(|select| !select.is_empty()) else {
        return Ok(items);
    };
    let unknown: Vec<&String> = select
        .iter()
        .filter(|field| !allowed.contains(&field.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Validation(format!(
            "Invalid select columns: {unknown:?}. Expected: {allowed:?}"
        )));
    }
    Ok(items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::Object(mut object) => {
                object.retain(|key, _| select.contains(key));
                serde_json::Value::Object(object)
            }
            other => other,
        })
        .collect())
}
