//! LangChain messages: coercion of the accepted input forms into the serialised `model_dump()`
//! shape, the `add_messages` reducer (append, replace by id, remove, remove-all), and the tool
//! message that answers a tool call.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::domain::run::RunError;
use crate::domain::JsonMap;

/// The id that, in a `remove` message, clears every message before it.
pub const REMOVE_ALL_MESSAGES: &str = "__remove_all__";

fn value_error(message: impl Into<String>) -> RunError {
    RunError::new("ValueError", message)
}

fn unexpected_type(kind: &str) -> RunError {
    value_error(format!(
        "Unexpected message type: '{kind}'. Use one of 'human', 'user', 'ai', 'assistant', \
         'function', 'tool', 'system', or 'developer'."
    ))
}

/// Maps a role or type spelling to the serialised `type`.
fn canonical_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "human" | "user" | "HumanMessage" | "HumanMessageChunk" => "human",
        "ai" | "assistant" | "AIMessage" | "AIMessageChunk" => "ai",
        "system" | "developer" | "SystemMessage" | "SystemMessageChunk" => "system",
        "tool" | "ToolMessage" | "ToolMessageChunk" => "tool",
        "function" | "FunctionMessage" | "FunctionMessageChunk" => "function",
        "chat" | "ChatMessage" | "ChatMessageChunk" => "chat",
        "remove" | "RemoveMessage" => "remove",
        _ => return None,
    })
}

/// Normalises one tool call to `{name, args, id, type: "tool_call"}`; accepts the OpenAI
/// `{"function": {"name", "arguments"}}` form too.
fn normalize_tool_call(call: &Value) -> Value {
    let function = call.get("function");
    let name = call
        .get("name")
        .or_else(|| function.and_then(|f| f.get("name")))
        .cloned()
        .unwrap_or(Value::Null);
    let args = match call.get("args") {
        Some(args) => args.clone(),
        None => match function.and_then(|f| f.get("arguments")) {
            Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(json!({})),
            Some(other) => other.clone(),
            None => json!({}),
        },
    };
    json!({
        "name": name,
        "args": args,
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "type": "tool_call",
    })
}

/// Builds the serialised message of `kind` from the fields of `source`, in `model_dump()` key
/// order; fields the shape does not name are kept after the known ones.
fn build(kind: &'static str, source: &JsonMap) -> JsonMap {
    let field = |key: &str, default: Value| source.get(key).cloned().unwrap_or(default);
    let mut message = Map::new();
    if kind == "remove" {
        message.insert("type".into(), "remove".into());
        message.insert("id".into(), field("id", Value::Null));
        return message;
    }
    message.insert("content".into(), field("content", json!("")));
    message.insert(
        "additional_kwargs".into(),
        field("additional_kwargs", json!({})),
    );
    message.insert(
        "response_metadata".into(),
        field("response_metadata", json!({})),
    );
    message.insert("type".into(), kind.into());
    message.insert("name".into(), field("name", Value::Null));
    message.insert("id".into(), field("id", Value::Null));
    match kind {
        "ai" => {
            let tool_calls = match source.get("tool_calls") {
                Some(Value::Array(calls)) => calls.iter().map(normalize_tool_call).collect(),
                _ => Vec::new(),
            };
            message.insert("tool_calls".into(), Value::Array(tool_calls));
            message.insert(
                "invalid_tool_calls".into(),
                field("invalid_tool_calls", json!([])),
            );
            message.insert(
                "usage_metadata".into(),
                field("usage_metadata", Value::Null),
            );
        }
        "tool" => {
            message.insert("tool_call_id".into(), field("tool_call_id", Value::Null));
            message.insert("artifact".into(), field("artifact", Value::Null));
            message.insert("status".into(), field("status", json!("success")));
        }
        "chat" => {
            message.insert("role".into(), field("role", Value::Null));
        }
        _ => {}
    }
    const DROPPED: [&str; 4] = ["role", "type", "tool_call_chunks", "chunk_position"];
    for (key, value) in source {
        if !message.contains_key(key) && !DROPPED.contains(&key.as_str()) {
            message.insert(key.clone(), value.clone());
        }
    }
    message
}

/// Coerces one accepted input form into a serialised message: a string (human), a
/// `[role, content]` pair, a dict with `role` or `type`, or a LangChain constructor envelope.
pub fn coerce_message(value: &Value) -> Result<JsonMap, RunError> {
    match value {
        Value::String(text) => Ok(build("human", &json_map(json!({ "content": text })))),
        Value::Array(pair) if pair.len() == 2 => {
            let role = pair[0]
                .as_str()
                .ok_or_else(|| value_error("a message pair must start with a role string"))?;
            let kind = canonical_type(role).ok_or_else(|| unexpected_type(role))?;
            Ok(build(kind, &json_map(json!({ "content": pair[1] }))))
        }
        Value::Object(object) if object.get("lc").is_some() && object.get("kwargs").is_some() => {
            let class = object
                .get("id")
                .and_then(Value::as_array)
                .and_then(|path| path.last())
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = canonical_type(class).ok_or_else(|| unexpected_type(class))?;
            let kwargs = object
                .get("kwargs")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            Ok(build(kind, &kwargs))
        }
        Value::Object(object) => {
            let spelled = object
                .get("type")
                .or_else(|| object.get("role"))
                .and_then(Value::as_str)
                .ok_or_else(|| value_error("a message object needs a 'role' or 'type' field"))?;
            let kind = canonical_type(spelled).ok_or_else(|| unexpected_type(spelled))?;
            if kind == "tool" && object.get("tool_call_id").is_none() {
                return Err(value_error("a tool message needs a 'tool_call_id'"));
            }
            Ok(build(kind, object))
        }
        other => Err(value_error(format!(
            "Unsupported message type: {}",
            short_type_name(other)
        ))),
    }
}

fn short_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn json_map(value: Value) -> JsonMap {
    match value {
        Value::Object(map) => map,
        _ => JsonMap::new(),
    }
}

fn message_id(message: &JsonMap) -> Option<&str> {
    message.get("id").and_then(Value::as_str)
}

fn ensure_id(message: &mut JsonMap) {
    if message_id(message).is_none() {
        message.insert("id".into(), Value::String(Uuid::new_v4().to_string()));
    }
}

/// Coerces a channel update (one message or a list of them) into serialised messages with ids.
pub fn coerce_update(update: &Value) -> Result<Vec<JsonMap>, RunError> {
    let items: Vec<&Value> = match update {
        Value::Array(items) if !is_role_pair(items) => items.iter().collect(),
        single => vec![single],
    };
    items
        .into_iter()
        .map(|item| {
            let mut message = coerce_message(item)?;
            ensure_id(&mut message);
            Ok(message)
        })
        .collect()
}

/// `["human", "hi"]` is one message, not a list of two.
fn is_role_pair(items: &[Value]) -> bool {
    items.len() == 2 && items[0].as_str().and_then(canonical_type).is_some() && items[1].is_string()
}

/// The `add_messages` reducer: messages with a known id replace it in place, `remove` deletes by
/// id (an unknown id is an error), a `remove` of `__remove_all__` drops everything before it, and
/// the rest are appended.
pub fn add_messages(current: &[Value], update: &Value) -> Result<Vec<Value>, RunError> {
    let incoming = coerce_update(update)?;
    if let Some(position) = incoming.iter().rposition(|message| {
        message.get("type").and_then(Value::as_str) == Some("remove")
            && message_id(message) == Some(REMOVE_ALL_MESSAGES)
    }) {
        return Ok(incoming[position + 1..]
            .iter()
            .filter(|message| message.get("type").and_then(Value::as_str) != Some("remove"))
            .cloned()
            .map(Value::Object)
            .collect());
    }
    let mut merged: Vec<Option<Value>> = current.iter().cloned().map(Some).collect();
    for message in incoming {
        let id = message_id(&message).map(str::to_owned);
        let existing = id.as_deref().and_then(|id| {
            merged.iter().position(|slot| {
                slot.as_ref()
                    .and_then(|value| value.get("id"))
                    .and_then(Value::as_str)
                    == Some(id)
            })
        });
        let is_remove = message.get("type").and_then(Value::as_str) == Some("remove");
        match (is_remove, existing) {
            (true, Some(position)) => merged[position] = None,
            (true, None) => {
                return Err(value_error(format!(
                    "Attempting to delete a message with an ID that doesn't exist ('{}')",
                    id.unwrap_or_default()
                )))
            }
            (false, Some(position)) => merged[position] = Some(Value::Object(message)),
            (false, None) => merged.push(Some(Value::Object(message))),
        }
    }
    Ok(merged.into_iter().flatten().collect())
}

/// The text of a message's `content` (a string, or the `text` of its text blocks).
pub fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|block| match block {
                Value::String(text) => Some(text.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The `type` of a serialised message.
pub fn message_type(message: &Value) -> Option<&str> {
    message.get("type").and_then(Value::as_str)
}

/// The tool calls of an AI message (empty for any other message).
pub fn tool_calls(message: &Value) -> &[Value] {
    match (message_type(message), message.get("tool_calls")) {
        (Some("ai"), Some(Value::Array(calls))) => calls,
        _ => &[],
    }
}

/// A tool message answering `call`.
pub fn tool_message(call: &Value, content: String, status: &str) -> Value {
    json!({
        "content": content,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": "tool",
        "name": call["name"],
        "id": Uuid::new_v4().to_string(),
        "tool_call_id": call["id"],
        "artifact": null,
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(messages: &[Value]) -> Vec<&str> {
        messages.iter().map(|m| m["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn role_dicts_become_serialised_messages_in_model_dump_order() {
        let message = coerce_message(&json!({"role": "user", "content": "hi"})).unwrap();
        let keys: Vec<&str> = message.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "content",
                "additional_kwargs",
                "response_metadata",
                "type",
                "name",
                "id"
            ]
        );
        assert_eq!(message["type"], "human");
        let ai = coerce_message(&json!({"role": "assistant", "content": "",
            "tool_calls": [{"id": "c1", "name": "t", "args": {"q": 1}}]}))
        .unwrap();
        assert_eq!(
            ai["tool_calls"],
            json!([{"name": "t", "args": {"q": 1}, "id": "c1", "type": "tool_call"}])
        );
        assert_eq!(ai["usage_metadata"], Value::Null);
    }

    #[test]
    fn strings_pairs_and_constructor_envelopes_are_accepted() {
        assert_eq!(coerce_message(&json!("hello")).unwrap()["type"], "human");
        let pair = coerce_message(&json!(["ai", "yo"])).unwrap();
        assert_eq!(
            (pair["type"].clone(), pair["content"].clone()),
            (json!("ai"), json!("yo"))
        );
        let envelope = json!({"lc": 1, "type": "constructor",
            "id": ["langchain", "schema", "messages", "SystemMessage"], "kwargs": {"content": "s"}});
        assert_eq!(coerce_message(&envelope).unwrap()["type"], "system");
    }

    #[test]
    fn unknown_types_fail_with_the_reference_message() {
        let error = coerce_message(&json!({"type": "bogus", "content": "x"})).unwrap_err();
        assert_eq!(error.error, "ValueError");
        assert!(error
            .message
            .starts_with("Unexpected message type: 'bogus'"));
    }

    #[test]
    fn add_messages_appends_replaces_and_removes() {
        let current = add_messages(
            &[],
            &json!([
                {"type": "human", "content": "a", "id": "1"},
                {"type": "ai", "content": "b", "id": "2"},
            ]),
        )
        .unwrap();
        let replaced =
            add_messages(&current, &json!({"type": "ai", "content": "B", "id": "2"})).unwrap();
        assert_eq!(ids(&replaced), ["1", "2"]);
        assert_eq!(replaced[1]["content"], "B");
        let removed = add_messages(
            &replaced,
            &json!([{"type": "remove", "id": "1"},
            {"type": "human", "content": "c"}]),
        )
        .unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(removed[0]["id"], "2");
        assert!(removed[1]["id"].as_str().is_some_and(|id| !id.is_empty()));
    }

    #[test]
    fn removing_an_unknown_id_is_an_error_and_remove_all_clears() {
        let current =
            add_messages(&[], &json!({"type": "human", "content": "a", "id": "1"})).unwrap();
        let error = add_messages(&current, &json!({"type": "remove", "id": "nope"})).unwrap_err();
        assert!(error.message.contains("('nope')"));
        let cleared = add_messages(
            &current,
            &json!([{"type": "remove", "id": REMOVE_ALL_MESSAGES},
            {"type": "human", "content": "fresh", "id": "f"}]),
        )
        .unwrap();
        assert_eq!(ids(&cleared), ["f"]);
    }
}
