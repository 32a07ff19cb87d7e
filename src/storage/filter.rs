//! Building WHERE clauses for JSON filters: exact match of top-level keys of a JSON column.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::domain::JsonMap;

/// A WHERE clause under construction: conditions joined with AND, and their parameters.
#[derive(Default)]
pub struct Where {
    conditions: Vec<String>,
    pub params: Vec<SqlValue>,
}

impl Where {
    /// Adds `condition` with its positional parameters (`?`).
    pub fn push(
        &mut self,
        condition: impl Into<String>,
        params: impl IntoIterator<Item = SqlValue>,
    ) {
        self.conditions.push(condition.into());
        self.params.extend(params);
    }

    /// Adds: every key of `filter` equals the same key in the JSON `column`.
    /// A NULL column matches nothing (never an error).
    pub fn json_matches(&mut self, column: &str, filter: &JsonMap) {
        for (key, expected) in filter {
            let path = format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
            let expected_json = expected.to_string();
            let condition = match expected {
                // json_extract turns JSON objects and arrays into their minified text; compare
                // those as JSON text so key spacing cannot matter.
                Value::Object(_) | Value::Array(_) => {
                    format!("json_extract({column}, ?) = json(?)")
                }
                Value::Null => format!("json_type({column}, ?) = 'null' AND ? IS NOT NULL"),
                _ => format!("json_extract({column}, ?) = json_extract(?, '$')"),
            };
            self.push(
                condition,
                [SqlValue::Text(path), SqlValue::Text(expected_json)],
            );
        }
    }

    /// ` WHERE …` or an empty string.
    pub fn sql(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }
}
