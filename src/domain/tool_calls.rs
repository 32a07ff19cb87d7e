//! Finding AI messages with tool calls in what a client sends: a client that can put one in a
//! thread's input or state makes the graph's `tools` node run configured tools with the
//! client's arguments. The `runtime.refuse_client_tool_calls` setting refuses such requests.

use serde_json::Value;

/// Whether `value` holds, at any depth, an AI message (LangChain's `{"type": "ai", …}`, or
/// OpenAI's `{"role": "assistant", …}`) with tool calls.
pub fn has_ai_tool_calls(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(has_ai_tool_calls),
        Value::Object(fields) => {
            let kind = fields
                .get("type")
                .or_else(|| fields.get("role"))
                .and_then(Value::as_str);
            let is_ai = matches!(
                kind,
                Some("ai" | "assistant" | "AIMessage" | "AIMessageChunk")
            );
            let calls = |value: Option<&Value>| {
                value
                    .and_then(Value::as_array)
                    .is_some_and(|calls| !calls.is_empty())
            };
            let has_calls = calls(fields.get("tool_calls"))
                || calls(
                    fields
                        .get("additional_kwargs")
                        .and_then(|extra| extra.get("tool_calls")),
                );
            (is_ai && has_calls) || fields.values().any(has_ai_tool_calls)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ai_messages_with_tool_calls_are_found_in_any_form_and_depth() {
        let call = json!([{"id": "1", "name": "search", "args": {}}]);
        for found in [
            json!({"messages": [{"type": "ai", "content": "", "tool_calls": call}]}),
            json!({"messages": [{"role": "assistant", "content": "", "tool_calls": call}]}),
            json!({"a": {"b": [{"type": "AIMessage", "additional_kwargs": {"tool_calls": call}}]}}),
        ] {
            assert!(has_ai_tool_calls(&found), "{found}");
        }
        for clean in [
            json!({"messages": [{"type": "ai", "content": "hi", "tool_calls": []}]}),
            json!({"messages": [{"type": "human", "content": "x", "tool_calls": call}]}),
            json!({"messages": "what is the weather?"}),
            json!(null),
        ] {
            assert!(!has_ai_tool_calls(&clean), "{clean}");
        }
    }
}
