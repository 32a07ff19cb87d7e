//! Query types: the filters, sort orders and pages of searches and history reads, as the API
//! accepts them and every storage backend answers them, and the limits and key rules every
//! filter obeys before it reaches a backend. Pure data and rules; no SQL.

use serde::Deserialize;

use super::errors::ValidationError;
use super::ids::{CheckpointId, ThreadId};
use super::thread::ThreadStatus;
use super::JsonMap;

/// Most keys of one JSON filter (`metadata` or `values`). Each key is one condition of the
/// query; SQLite refuses a WHERE clause more than 1,000 conditions deep.
pub const MAX_FILTER_KEYS: usize = 100;

/// Longest key of a JSON filter, in bytes (UTF-8).
pub const MAX_FILTER_KEY_BYTES: usize = 1024;

/// Largest JSON filter, keys and values written as compact JSON, in bytes.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;

/// Most ids of a thread search's `ids`, as many as the largest page. Each id is one query
/// parameter; SQLite allows 32,766 in one statement.
pub const MAX_FILTER_IDS: usize = 1000;

/// Checks the JSON filter in body field `field`: at most `MAX_FILTER_KEYS` keys of at most
/// `MAX_FILTER_KEY_BYTES` each, at most `MAX_FILTER_BYTES` in all, and no key containing NUL.
/// A NUL cannot be matched by any backend (a SQLite JSON path ends at it; PostgreSQL's `jsonb`
/// refuses `\u0000`); every other character, `"` and `\` included, is matched exactly.
pub fn check_json_filter(field: &str, filter: &JsonMap) -> Result<(), ValidationError> {
    let invalid = |problem: String| {
        ValidationError::Invalid(format!("Invalid request body: field `{field}`: {problem}"))
    };
    if filter.len() > MAX_FILTER_KEYS {
        return Err(invalid(format!(
            "at most {MAX_FILTER_KEYS} keys, got {}",
            filter.len()
        )));
    }
    for key in filter.keys() {
        if key.len() > MAX_FILTER_KEY_BYTES {
            return Err(invalid(format!(
                "a key of {} bytes; at most {MAX_FILTER_KEY_BYTES}",
                key.len()
            )));
        }
        if key.contains('\0') {
            return Err(invalid(format!(
                "the key {key:?} contains a NUL character, which no filter can match"
            )));
        }
    }
    let bytes = json_size(filter);
    if bytes > MAX_FILTER_BYTES {
        return Err(invalid(format!(
            "the filter is {bytes} bytes of JSON; at most {MAX_FILTER_BYTES}"
        )));
    }
    Ok(())
}

/// Checks the number of ids in body field `field` against `MAX_FILTER_IDS`.
pub fn check_filter_ids(field: &str, count: usize) -> Result<(), ValidationError> {
    if count > MAX_FILTER_IDS {
        return Err(ValidationError::Invalid(format!(
            "Invalid request body: field `{field}`: at most {MAX_FILTER_IDS} ids, got {count}"
        )));
    }
    Ok(())
}

/// The size of `filter` written as compact JSON, counted without writing it anywhere.
fn json_size(filter: &JsonMap) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a JSON map into a counter cannot fail: its keys are strings and it does no IO.
    let _ = serde_json::to_writer(&mut counter, filter);
    counter.0
}

/// `asc` or `desc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// What thread search sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadSortBy {
    ThreadId,
    Status,
    CreatedAt,
    #[default]
    UpdatedAt,
    StateUpdatedAt,
}

/// What assistant search sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssistantSortBy {
    AssistantId,
    GraphId,
    Name,
    #[default]
    CreatedAt,
    UpdatedAt,
}

/// One page of a search: the order, then `limit` items after skipping `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page<S> {
    pub sort_by: S,
    pub order: SortOrder,
    pub limit: i64,
    pub offset: i64,
}

/// Filters of thread search and count.
#[derive(Clone, Debug, Default)]
pub struct ThreadFilter {
    pub ids: Option<Vec<ThreadId>>,
    /// Exact match on top-level metadata keys.
    pub metadata: Option<JsonMap>,
    /// Exact match on top-level keys of the thread's values.
    pub values: Option<JsonMap>,
    pub status: Option<ThreadStatus>,
}

impl ThreadFilter {
    /// Checks the filter's sizes and keys (see `check_json_filter`, `check_filter_ids`).
    pub fn check(&self) -> Result<(), ValidationError> {
        if let Some(ids) = &self.ids {
            check_filter_ids("ids", ids.len())?;
        }
        if let Some(metadata) = &self.metadata {
            check_json_filter("metadata", metadata)?;
        }
        if let Some(values) = &self.values {
            check_json_filter("values", values)?;
        }
        Ok(())
    }
}

/// Filters of assistant search and count.
#[derive(Clone, Debug, Default)]
pub struct AssistantFilter {
    /// Exact match on top-level metadata keys.
    pub metadata: Option<JsonMap>,
    pub graph_id: Option<String>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
}

impl AssistantFilter {
    /// Checks the metadata filter's sizes and keys (see `check_json_filter`).
    pub fn check(&self) -> Result<(), ValidationError> {
        match &self.metadata {
            Some(metadata) => check_json_filter("metadata", metadata),
            None => Ok(()),
        }
    }
}

/// Filters of a history query.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    pub limit: i64,
    /// Only checkpoints older than this one.
    pub before: Option<CheckpointId>,
    /// Exact match on top-level metadata keys.
    pub metadata: Option<JsonMap>,
    pub checkpoint_ns: String,
    /// Only this checkpoint.
    pub checkpoint_id: Option<CheckpointId>,
}

impl HistoryQuery {
    /// Checks the metadata filter's sizes and keys (see `check_json_filter`).
    pub fn check(&self) -> Result<(), ValidationError> {
        match &self.metadata {
            Some(metadata) => check_json_filter("metadata", metadata),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// Checks `filter` as body field `metadata`: `Ok` when `expected` is `None`, otherwise an
    /// error whose text contains `expected`.
    fn check(filter: Value, expected: Option<&str>) {
        let Value::Object(filter) = filter else {
            panic!("a filter is an object")
        };
        match (check_json_filter("metadata", &filter), expected) {
            (Ok(()), None) => {}
            (Err(ValidationError::Invalid(message)), Some(expected)) => assert!(
                message.starts_with("Invalid request body: field `metadata`: ")
                    && message.contains(expected),
                "{message:?} lacks {expected:?}"
            ),
            (outcome, expected) => panic!("{outcome:?}, expected {expected:?}"),
        }
    }

    fn keys(count: usize) -> Value {
        Value::Object(
            (0..count)
                .map(|index| (format!("k{index}"), json!(1)))
                .collect(),
        )
    }

    #[test]
    fn json_filters_are_bounded_and_refuse_only_keys_with_nul() {
        check(json!({}), None);
        check(json!({"a": 1, "b": {"c": [1, 2]}, "d": null}), None);
        check(
            json!({"say \"hi\"": 1, "back\\slash": 2, "dot.ted[0]": 3, "": 4}),
            None,
        );
        check(json!({"line\nbreak": 1, "tab\t": 2, "é": 3}), None);
        check(
            json!({"a\u{0}b": 1}),
            Some("the key \"a\\0b\" contains a NUL character"),
        );
        check(json!({"\u{0}": 1}), Some("NUL"));
        // A NUL in a value is data like any other.
        check(json!({"a": "x\u{0}y"}), None);
        check(keys(MAX_FILTER_KEYS), None);
        check(keys(MAX_FILTER_KEYS + 1), Some("at most 100 keys, got 101"));
        check(keys(5000), Some("at most 100 keys, got 5000"));
        check(json!({"k".repeat(MAX_FILTER_KEY_BYTES): 1}), None);
        check(
            json!({"k".repeat(MAX_FILTER_KEY_BYTES + 1): 1}),
            Some("a key of 1025 bytes; at most 1024"),
        );
        // `{"v":"…"}` is 8 bytes around the value.
        check(json!({"v": "x".repeat(MAX_FILTER_BYTES - 8)}), None);
        check(
            json!({"v": "x".repeat(MAX_FILTER_BYTES - 7)}),
            Some("the filter is 65537 bytes of JSON; at most 65536"),
        );
    }

    #[test]
    fn thread_filters_bound_their_ids_and_check_both_json_filters() {
        let ids = |count: usize| Some(vec![ThreadId::generate(); count]);
        let filter = |ids, metadata, values| ThreadFilter {
            ids,
            metadata,
            values,
            status: None,
        };
        assert_eq!(filter(ids(MAX_FILTER_IDS), None, None).check(), Ok(()));
        assert_eq!(
            filter(ids(MAX_FILTER_IDS + 1), None, None).check(),
            Err(ValidationError::Invalid(
                "Invalid request body: field `ids`: at most 1000 ids, got 1001".into()
            ))
        );
        let nul = || json!({"\u{0}": 1}).as_object().cloned();
        for (metadata, values, field) in [(nul(), None, "`metadata`"), (None, nul(), "`values`")] {
            let message = filter(None, metadata, values)
                .check()
                .unwrap_err()
                .to_string();
            assert!(message.contains(field), "{message}");
        }
    }
}
