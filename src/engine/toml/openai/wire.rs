//! The OpenAI wire format: LangChain messages as OpenAI chat messages, a chat completion parsed
//! into a LangChain AI message (tool calls, invalid tool calls, usage metadata), and the errors
//! an endpoint's answers map to (HTTP statuses, reported errors, malformed responses).

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::domain::run::RunError;
use crate::engine::toml::messages::message_type;

/// The provider name in `ModelInfo` and `response_metadata.model_provider`.
pub(super) const PROVIDER: &str = "openai";

/// The error an HTTP error status gives, classed like the OpenAI Python client's exceptions.
pub(super) fn status_error(status: reqwest::StatusCode, body: &str) -> RunError {
    let code = status.as_u16();
    let class = match code {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        409 => "ConflictError",
        422 => "UnprocessableEntityError",
        429 => "RateLimitError",
        500.. => "InternalServerError",
        _ => "APIStatusError",
    };
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let detail = parsed
        .as_ref()
        .and_then(|value| {
            [
                &value["error"]["message"],
                &value["error"],
                &value["message"],
                &value["detail"],
            ]
            .into_iter()
            .find_map(|field| field.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| match body.trim() {
            "" => status
                .canonical_reason()
                .unwrap_or("no error message")
                .to_owned(),
            text => truncate(text, 500),
        });
    RunError::new(class, format!("Error code: {code} - {detail}"))
}

pub(super) fn response_error(problem: impl Into<String>) -> RunError {
    RunError::new("ModelResponseError", problem)
}

/// The first `limit` characters of `text`, marked when cut.
pub(super) fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A message's content as plain text: a string, the text of its parts, or other JSON as text.
pub(super) fn text_of(content: &Value) -> String {
    match content {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(text) => Some(text.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect(),
        other => other.to_string(),
    }
}

/// A user message's content: a string as it is; parts as OpenAI content parts (bare strings
/// become text parts, others pass unchanged).
fn user_content(content: &Value) -> Value {
    match content {
        Value::String(_) => content.clone(),
        Value::Array(parts) => Value::Array(
            parts
                .iter()
                .map(|part| match part {
                    Value::String(text) => json!({"type": "text", "text": text}),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => json!(text_of(other)),
    }
}

/// One LangChain message dict as an OpenAI chat message; `Err` says why it cannot be sent.
pub(super) fn openai_message(message: &Value) -> Result<Value, String> {
    let kind = message_type(message)
        .or_else(|| message.get("role").and_then(Value::as_str))
        .unwrap_or("");
    let content = message.get("content").unwrap_or(&Value::Null);
    let mut converted = match kind {
        "human" | "user" => json!({"role": "user", "content": user_content(content)}),
        "system" | "developer" => json!({"role": "system", "content": text_of(content)}),
        "ai" | "assistant" => {
            let calls: Vec<Value> = message
                .get("tool_calls")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|call| {
                    let arguments = match call.get("args") {
                        None | Some(Value::Null) => "{}".to_owned(),
                        Some(args) => args.to_string(),
                    };
                    json!({
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": arguments},
                    })
                })
                .collect();
            let text = text_of(content);
            let content = if text.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                json!(text)
            };
            let mut assistant = json!({"role": "assistant", "content": content});
            if !calls.is_empty() {
                assistant["tool_calls"] = Value::Array(calls);
            }
            assistant
        }
        "tool" => {
            return Ok(json!({
                "role": "tool",
                "tool_call_id": message.get("tool_call_id").unwrap_or(&Value::Null),
                "content": text_of(content),
            }))
        }
        "function" => {
            return Ok(json!({
                "role": "function",
                "name": message.get("name").unwrap_or(&Value::Null),
                "content": text_of(content),
            }))
        }
        "chat" => match message.get("role").and_then(Value::as_str) {
            Some(role) => json!({"role": role, "content": text_of(content)}),
            None => return Err("a chat message has no role".to_owned()),
        },
        other => {
            return Err(format!(
                "a message of type '{other}' cannot be sent to a chat model"
            ))
        }
    };
    if let Some(name) = message
        .get("name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
    {
        converted["name"] = json!(name);
    }
    Ok(converted)
}

/// A tool call as the model made it: arguments still JSON text.
#[derive(Debug, Default)]
pub(super) struct RawCall {
    pub(super) id: Option<String>,
    pub(super) name: String,
    pub(super) arguments: String,
}

/// What a completion says, streamed or not.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) content: String,
    pub(super) calls: Vec<RawCall>,
    pub(super) finish_reason: Option<String>,
    pub(super) model_name: String,
    pub(super) response_id: Option<String>,
    pub(super) usage: Option<Value>,
}

/// A call's arguments as a JSON object, or the LangChain-style error saying why not.
pub(super) fn parse_arguments(name: &str, arguments: &str) -> Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(args @ Value::Object(_)) => Ok(args),
        Ok(_) => Err(format!(
            "Function {name} arguments:\n\n{arguments}\n\nare not a JSON object."
        )),
        Err(error) => Err(format!(
            "Function {name} arguments:\n\n{arguments}\n\nare not valid JSON. Received JSONDecodeError {error}"
        )),
    }
}

/// OpenAI `usage` as LangChain `usage_metadata`.
fn usage_metadata(usage: Option<&Value>) -> Value {
    let Some(usage) = usage.filter(|usage| usage.is_object()) else {
        return Value::Null;
    };
    let input = usage["prompt_tokens"].as_u64().unwrap_or(0);
    let output = usage["completion_tokens"].as_u64().unwrap_or(0);
    let total = usage["total_tokens"].as_u64().unwrap_or(input + output);
    let mut metadata = json!({
        "input_tokens": input,
        "output_tokens": output,
        "total_tokens": total,
    });
    if let Some(cached) = usage["prompt_tokens_details"]["cached_tokens"].as_u64() {
        metadata["input_token_details"] = json!({"cache_read": cached});
    }
    if let Some(reasoning) = usage["completion_tokens_details"]["reasoning_tokens"].as_u64() {
        metadata["output_token_details"] = json!({"reasoning": reasoning});
    }
    metadata
}

impl Answer {
    /// The AI message dict, in the shape `scripted` gives (LangChain `model_dump()` order).
    pub(super) fn into_message(self, message_id: &str) -> Value {
        let mut tool_calls = vec![];
        let mut invalid_tool_calls = vec![];
        for call in self.calls {
            let id = call
                .id
                .unwrap_or_else(|| format!("call_{}", &Uuid::new_v4().simple().to_string()[..24]));
            match parse_arguments(&call.name, &call.arguments) {
                Ok(args) => tool_calls.push(json!({
                    "name": call.name,
                    "args": args,
                    "id": id,
                    "type": "tool_call",
                })),
                Err(error) => invalid_tool_calls.push(json!({
                    "name": call.name,
                    "args": call.arguments,
                    "id": id,
                    "error": error,
                    "type": "invalid_tool_call",
                })),
            }
        }
        let mut response_metadata = Map::new();
        response_metadata.insert("finish_reason".into(), json!(self.finish_reason));
        response_metadata.insert("model_name".into(), json!(self.model_name));
        if let Some(id) = self.response_id {
            response_metadata.insert("id".into(), json!(id));
        }
        response_metadata.insert("model_provider".into(), json!(PROVIDER));
        json!({
            "content": self.content,
            "additional_kwargs": {},
            "response_metadata": response_metadata,
            "type": "ai",
            "name": null,
            "id": message_id,
            "tool_calls": tool_calls,
            "invalid_tool_calls": invalid_tool_calls,
            "usage_metadata": usage_metadata(self.usage.as_ref()),
        })
    }
}

/// The error object a response carries instead of an answer, if any.
pub(super) fn reported_error(value: &Value) -> Option<RunError> {
    let error = value.get("error").filter(|error| !error.is_null())?;
    let message = error["message"]
        .as_str()
        .or_else(|| error.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string());
    Some(RunError::new(
        "APIError",
        format!("the endpoint reported an error: {message}"),
    ))
}

/// Parses a non-streamed chat completion into the AI message.
pub(super) fn parse_completion(
    body: &[u8],
    model: &str,
    message_id: &str,
) -> Result<Value, RunError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        response_error(format!(
            "the response body is not JSON ({error}): {}",
            truncate(&String::from_utf8_lossy(body), 200)
        ))
    })?;
    if let Some(error) = reported_error(&value) {
        return Err(error);
    }
    let choice = match value.get("choices") {
        Some(Value::Array(choices)) => choices
            .first()
            .ok_or_else(|| response_error("the response has an empty choices list"))?,
        Some(_) => return Err(response_error("the response's choices is not a list")),
        None => return Err(response_error("the response has no choices")),
    };
    let message = choice
        .get("message")
        .filter(|message| message.is_object())
        .ok_or_else(|| response_error("choices[0] of the response has no message object"))?;
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                let function = &call["function"];
                let name = function["name"].as_str().ok_or_else(|| {
                    response_error(format!(
                        "choices[0].message.tool_calls[{index}] has no function name"
                    ))
                })?;
                let arguments = match &function["arguments"] {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    // Some servers send the arguments as an object rather than JSON text.
                    other => other.to_string(),
                };
                Ok(RawCall {
                    id: call["id"].as_str().map(str::to_owned),
                    name: name.to_owned(),
                    arguments,
                })
            })
            .collect::<Result<_, RunError>>()?,
        Some(_) => {
            return Err(response_error(
                "choices[0].message.tool_calls is not a list",
            ))
        }
    };
    let answer = Answer {
        content: text_of(message.get("content").unwrap_or(&Value::Null)),
        calls,
        finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
        model_name: value["model"].as_str().unwrap_or(model).to_owned(),
        response_id: value["id"].as_str().map(str::to_owned),
        usage: value.get("usage").cloned(),
    };
    Ok(answer.into_message(message_id))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::engine::toml::openai) const COMPLETION: &str = r#"{
        "id": "chatcmpl-1", "object": "chat.completion", "model": "llama3.1-served",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "search", "arguments": "{\"query\": \"nyc\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "search", "arguments": "{\"query\": "}}
            ]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    }"#;

    #[test]
    fn a_completion_becomes_an_ai_message_with_valid_and_invalid_tool_calls() {
        let message = parse_completion(COMPLETION.as_bytes(), "llama3.1", "lc_run--x").unwrap();
        let keys: Vec<&str> = message
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "content",
                "additional_kwargs",
                "response_metadata",
                "type",
                "name",
                "id",
                "tool_calls",
                "invalid_tool_calls",
                "usage_metadata"
            ]
        );
        assert_eq!(message["content"], "");
        assert_eq!(message["type"], "ai");
        assert_eq!(message["id"], "lc_run--x");
        assert_eq!(
            message["tool_calls"],
            json!([{"name": "search", "args": {"query": "nyc"}, "id": "call_a", "type": "tool_call"}])
        );
        let invalid = &message["invalid_tool_calls"][0];
        assert_eq!(
            (
                &invalid["name"],
                &invalid["args"],
                &invalid["id"],
                &invalid["type"]
            ),
            (
                &json!("search"),
                &json!("{\"query\": "),
                &json!("call_b"),
                &json!("invalid_tool_call")
            )
        );
        assert!(invalid["error"]
            .as_str()
            .unwrap()
            .contains("are not valid JSON"));
        assert_eq!(
            message["response_metadata"],
            json!({"finish_reason": "tool_calls", "model_name": "llama3.1-served", "id": "chatcmpl-1", "model_provider": "openai"})
        );
        assert_eq!(
            message["usage_metadata"],
            json!({"input_tokens": 12, "output_tokens": 5, "total_tokens": 17})
        );
    }

    #[test]
    fn a_text_completion_without_usage_has_null_usage_metadata() {
        let body = r#"{"choices": [{"message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}]}"#;
        let message = parse_completion(body.as_bytes(), "llama3.1", "lc_run--y").unwrap();
        assert_eq!(message["content"], "Hi!");
        assert_eq!(message["tool_calls"], json!([]));
        assert_eq!(message["usage_metadata"], Value::Null);
        assert_eq!(message["response_metadata"]["model_name"], "llama3.1");
        assert!(message["response_metadata"].get("id").is_none());
    }

    #[test]
    fn a_malformed_completion_is_a_model_response_error_saying_what_is_wrong() {
        let checks = [
            ("not json", "not JSON"),
            (r#"{"id": "x"}"#, "no choices"),
            (r#"{"choices": []}"#, "empty choices"),
            (r#"{"choices": {}}"#, "not a list"),
            (r#"{"choices": [{"finish_reason": "stop"}]}"#, "no message"),
            (
                r#"{"choices": [{"message": {"tool_calls": [{"id": "c"}]}}]}"#,
                "no function name",
            ),
        ];
        for (body, problem) in checks {
            let error = parse_completion(body.as_bytes(), "m", "id").unwrap_err();
            assert_eq!(error.error, "ModelResponseError", "{body}");
            assert!(error.message.contains(problem), "{body}: {}", error.message);
        }
        let error =
            parse_completion(br#"{"error": {"message": "overloaded"}}"#, "m", "id").unwrap_err();
        assert_eq!(
            (error.error.as_str(), error.message.contains("overloaded")),
            ("APIError", true)
        );
    }

    #[test]
    fn http_statuses_map_to_the_openai_client_error_classes() {
        let check = |status: u16, body: &str, class: &str, message: &str| {
            let error = status_error(reqwest::StatusCode::from_u16(status).unwrap(), body);
            assert_eq!(
                (error.error.as_str(), error.message.as_str()),
                (class, message)
            );
        };
        let openai = r#"{"error": {"message": "Invalid model", "type": "invalid_request_error"}}"#;
        check(
            400,
            openai,
            "BadRequestError",
            "Error code: 400 - Invalid model",
        );
        check(
            401,
            r#"{"error": "bad key"}"#,
            "AuthenticationError",
            "Error code: 401 - bad key",
        );
        check(
            403,
            "",
            "PermissionDeniedError",
            "Error code: 403 - Forbidden",
        );
        check(
            404,
            r#"{"detail": "Not Found"}"#,
            "NotFoundError",
            "Error code: 404 - Not Found",
        );
        check(409, "busy", "ConflictError", "Error code: 409 - busy");
        check(
            422,
            r#"{"message": "bad"}"#,
            "UnprocessableEntityError",
            "Error code: 422 - bad",
        );
        check(
            429,
            openai,
            "RateLimitError",
            "Error code: 429 - Invalid model",
        );
        check(
            500,
            "<html>oops</html>",
            "InternalServerError",
            "Error code: 500 - <html>oops</html>",
        );
        check(503, "{}", "InternalServerError", "Error code: 503 - {}");
        check(418, "teapot", "APIStatusError", "Error code: 418 - teapot");
        let long = "x".repeat(2000);
        let error = status_error(reqwest::StatusCode::BAD_GATEWAY, &long);
        assert!(
            error.message.len() < 600 && error.message.ends_with('…'),
            "{}",
            error.message
        );
    }
}
