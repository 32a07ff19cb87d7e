//! Building WHERE clauses for JSON filters: exact match of top-level keys of a JSON column.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, Row};
use serde_json::Value;

use crate::domain::query::SortOrder;
use crate::domain::JsonMap;
use crate::storage::StorageError;

/// The SQL of a sort order.
pub fn order_sql(order: SortOrder) -> &'static str {
    match order {
        SortOrder::Asc => "ASC",
        SortOrder::Desc => "DESC",
    }
}

/// The JSON path of the top-level `key`, matching any key but one with NUL. SQLite reads a
/// quoted label up to the next `"` whatever precedes it, and compares a label holding a `\` by
/// its JSON escapes (since 3.45): so `\` is written `\\`, and `"` as `\u0022` (a `\"` would
/// end the label early, and the key would silently match nothing).
fn key_path(key: &str) -> String {
    let escaped = key.replace('\\', "\\\\").replace('"', "\\u0022");
    format!("$.\"{escaped}\"")
}

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
    /// A NULL column matches nothing (never an error). Keys are checked before they get here
    /// (`domain::query::check_json_filter`): a key with NUL would fail the statement.
    pub fn json_matches(&mut self, column: &str, filter: &JsonMap) {
        for (key, expected) in filter {
            let path = key_path(key);
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

    /// Runs `{select_from}{WHERE …} ORDER BY {order_by} LIMIT limit OFFSET offset` and maps the rows.
    /// `select_from` and `order_by` must be trusted SQL (column names are validated by callers).
    pub fn page<T>(
        self,
        connection: &Connection,
        select_from: &str,
        order_by: &str,
        limit: i64,
        offset: i64,
        map_row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StorageError> {
        let sql = format!(
            "{select_from}{} ORDER BY {order_by} LIMIT ? OFFSET ?",
            self.sql()
        );
        let mut params = self.params;
        params.push(SqlValue::Integer(limit));
        params.push(SqlValue::Integer(offset));
        let mut statement = connection.prepare(&sql)?;
        let rows = statement
            .query_map(params_from_iter(params), map_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// How many rows of `table` match.
    pub fn count(self, connection: &Connection, table: &str) -> Result<i64, StorageError> {
        let sql = format!("SELECT COUNT(*) FROM {table}{}", self.sql());
        Ok(connection.query_row(&sql, params_from_iter(self.params), |row| row.get(0))?)
    }
}
