//! The `openai` chat model provider: any OpenAI-compatible chat completions endpoint (OpenAI,
//! vLLM, llama.cpp server, Ollama, LiteLLM). Converts the `messages` channel to OpenAI messages,
//! POSTs `{base_url}/chat/completions` (streamed or not) and turns the answer into a LangChain AI
//! message, sending `AIMessageChunk`s live while it streams. The API key is read from the
//! environment at call time and is never logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::emit::{ModelInfo, NodeStream};
use super::messages::message_type;
use super::node::{messages_of, messages_update, Node, NodeInput, NodeResult};
use super::spec::NodeSpec;
use super::tools::Tool;
use crate::domain::run::RunError;

/// A chat model node backed by an OpenAI-compatible endpoint.
pub struct ChatModel {
    settings: Arc<Settings>,
    client: reqwest::Client,
}

/// A node's validated declaration.
#[derive(Debug)]
struct Settings {
    node: String,
    /// `{base_url}/chat/completions`.
    endpoint: String,
    /// `base_url` without a trailing slash, user name or password, for logs and error messages.
    shown_url: String,
    model: String,
    api_key_env: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    system_prompt: Option<String>,
    /// The longest wait for the response to start, and between two pieces of its body.
    timeout: Duration,
    stream: bool,
    /// The bound tools as OpenAI `tools` entries.
    tools: Vec<Value>,
}

/// Default `timeout_seconds`.
const DEFAULT_TIMEOUT_SECONDS: f64 = 60.0;

/// The provider name in `ModelInfo` and `response_metadata.model_provider`.
const PROVIDER: &str = "openai";

/// Longest stream line accepted; a server sending more without a newline is broken.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

impl ChatModel {
    /// Builds the node from a `chat_model` declaration with `provider = "openai"` and the tools
    /// bound to it; errors name the node and the field that is missing or wrong.
    pub fn new(spec: &NodeSpec, tools: Vec<Arc<Tool>>) -> Result<Self, String> {
        let settings = Settings::from_spec(spec, &tools)?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .user_agent(concat!("spindle/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                format!(
                    "node '{}': cannot build an HTTP client: {}",
                    settings.node,
                    super::external::chain(&error)
                )
            })?;
        Ok(ChatModel {
            settings: Arc::new(settings),
            client,
        })
    }
}

impl Node for ChatModel {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let settings = self.settings.clone();
        let client = self.client.clone();
        let history = messages_of(&input.state).to_vec();
        let stream = input.stream;
        Box::pin(async move {
            let message = call(&settings, &client, &history, &stream).await?;
            Ok(Some(messages_update(vec![message])))
        })
    }
}

impl Settings {
    fn from_spec(spec: &NodeSpec, tools: &[Arc<Tool>]) -> Result<Self, String> {
        let NodeSpec::ChatModel {
            name,
            delay_ms,
            base_url,
            model,
            api_key_env,
            temperature,
            max_tokens,
            system_prompt,
            timeout_seconds,
            stream,
            ..
        } = spec
        else {
            return Err(format!("node '{}' is not a chat_model node", spec.name()));
        };
        let base_url = match base_url.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(format!(
                    "node '{name}' uses provider \"openai\" but has no base_url; set it to the API root, e.g. \"https://api.openai.com/v1\""
                ))
            }
            Some(url) => url.trim_end_matches('/').to_owned(),
        };
        let shown_url = match reqwest::Url::parse(&base_url) {
            Ok(mut url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                // Credentials in the URL are secrets: show it without them.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.as_str().trim_end_matches('/').to_owned()
            }
            _ => {
                return Err(format!(
                    "node '{name}' has base_url \"{base_url}\"; expected an http:// or https:// URL"
                ))
            }
        };
        let model = match model.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(format!(
                    "node '{name}' uses provider \"openai\" but has no model; set it to the model name the endpoint serves"
                ))
            }
            Some(model) => model.to_owned(),
        };
        if let Some(variable) = api_key_env {
            if variable.is_empty() || variable.contains(['=', '\0']) {
                return Err(format!(
                    "node '{name}' has api_key_env \"{variable}\"; expected the name of an environment variable"
                ));
            }
        }
        if let Some(temperature) = temperature {
            if !(temperature.is_finite() && (0.0..=2.0).contains(temperature)) {
                return Err(format!(
                    "node '{name}' has temperature {temperature}; expected a number from 0 to 2"
                ));
            }
        }
        if *max_tokens == Some(0) {
            return Err(format!(
                "node '{name}' has max_tokens 0; expected at least 1"
            ));
        }
        let timeout_seconds = timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        let timeout = Some(timeout_seconds)
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .ok_or_else(|| {
                format!(
                    "node '{name}' has timeout_seconds {timeout_seconds}; expected a positive number"
                )
            })?;
        if *delay_ms != 0 {
            return Err(format!(
                "node '{name}' has delay_ms {delay_ms}, which only the scripted provider uses; remove it"
            ));
        }
        for tool in tools {
            let valid = !tool.name.is_empty()
                && tool.name.len() <= 64
                && tool
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "node '{name}' binds tool '{}', a name OpenAI-compatible endpoints refuse; use at most 64 letters, digits, '_' or '-'",
                    tool.name
                ));
            }
        }
        Ok(Settings {
            node: name.clone(),
            endpoint: format!("{base_url}/chat/completions"),
            shown_url,
            model,
            api_key_env: api_key_env.clone(),
            temperature: *temperature,
            max_tokens: *max_tokens,
            system_prompt: system_prompt.clone(),
            timeout,
            stream: stream.unwrap_or(true),
            tools: tools.iter().map(|tool| tool.binding()).collect(),
        })
    }

    /// The API key from the variable `api_key_env` names, read now; errors name the variable,
    /// never a value.
    fn api_key(&self) -> Result<Option<String>, RunError> {
        let Some(variable) = &self.api_key_env else {
            return Ok(None);
        };
        // Surrounding whitespace (a newline from a key file, say) is not part of the key.
        let problem = match std::env::var(variable).as_deref().map(str::trim) {
            Ok("") => "is empty",
            Ok(key) if !key.bytes().all(|byte| (b' '..=b'~').contains(&byte)) => {
                "holds characters an HTTP header cannot carry"
            }
            Ok(key) => return Ok(Some(key.to_owned())),
            Err(std::env::VarError::NotPresent) => "is not set",
            Err(std::env::VarError::NotUnicode(_)) => "is not valid Unicode",
        };
        Err(RunError::new(
            "OpenAIError",
            format!(
                "node '{}': the environment variable {variable} (api_key_env) {problem}",
                self.node
            ),
        ))
    }

    /// The chat completions request for a conversation.
    fn request_body(&self, history: &[Value]) -> Result<Value, RunError> {
        let mut messages = Vec::with_capacity(history.len() + 1);
        if let Some(prompt) = self.system_prompt.as_deref().filter(|p| !p.is_empty()) {
            messages.push(json!({"role": "system", "content": prompt}));
        }
        for message in history {
            messages.push(openai_message(message).map_err(|problem| {
                RunError::new("ValueError", format!("node '{}': {problem}", self.node))
            })?);
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("messages".into(), Value::Array(messages));
        if let Some(temperature) = self.temperature {
            body.insert("temperature".into(), json!(temperature));
        }
        if let Some(max_tokens) = self.max_tokens {
            body.insert("max_tokens".into(), json!(max_tokens));
        }
        if !self.tools.is_empty() {
            body.insert("tools".into(), Value::Array(self.tools.clone()));
        }
        body.insert("stream".into(), json!(self.stream));
        if self.stream {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Ok(Value::Object(body))
    }

    fn timed_out(&self) -> RunError {
        RunError::new(
            "APITimeoutError",
            format!(
                "Request timed out: node '{}' got no answer from {}/chat/completions within {} seconds (timeout_seconds)",
                self.node,
                self.shown_url,
                self.timeout.as_secs_f64()
            ),
        )
    }

    fn transport_error(&self, error: reqwest::Error) -> RunError {
        if error.is_timeout() {
            return self.timed_out();
        }
        let what = if error.is_connect() {
            format!("cannot connect to {}", self.shown_url)
        } else if error.is_body() || error.is_decode() {
            format!("the response from {} broke off", self.shown_url)
        } else {
            format!("the request to {} failed", self.shown_url)
        };
        // The URL is named above without credentials; the error would repeat it with them.
        let error = error.without_url();
        RunError::new(
            "APIConnectionError",
            format!(
                "Connection error: node '{}': {what}: {}",
                self.node,
                super::external::chain(&error)
            ),
        )
    }

    /// Awaits one network step, bounded by the node's timeout.
    async fn within<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, reqwest::Error>>,
    ) -> Result<T, RunError> {
        match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.transport_error(error)),
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// One model call: the request, the answer (streamed to `stream` as chunks when asked for) and
/// the log lines around it.
async fn call(
    settings: &Settings,
    client: &reqwest::Client,
    history: &[Value],
    stream: &NodeStream,
) -> Result<Value, RunError> {
    let api_key = settings.api_key()?;
    let body = settings.request_body(history)?;
    let lc_run_id = Uuid::now_v7();
    let model = ModelInfo {
        provider: PROVIDER.into(),
        model: settings.model.clone(),
        lc_run_id,
    };
    let message_id = format!("lc_run--{lc_run_id}");
    log::info!(
        "chat model call started node={} model={} base_url={} streaming={}",
        settings.node,
        settings.model,
        settings.shown_url,
        settings.stream
    );
    stream.model_started(&model, history);
    let started = Instant::now();
    let outcome = exchange(
        settings,
        client,
        &body,
        api_key.as_deref(),
        &message_id,
        |chunk| stream.model_chunk(&model, &chunk),
        stream.wants_tokens(),
    )
    .await;
    let elapsed_ms = started.elapsed().as_millis();
    match outcome {
        Ok(message) => {
            let usage = &message["usage_metadata"];
            log::info!(
                "chat model call finished node={} model={} elapsed_ms={elapsed_ms} input_tokens={} output_tokens={} finish_reason={} tool_calls={}",
                settings.node,
                settings.model,
                usage["input_tokens"],
                usage["output_tokens"],
                message["response_metadata"]["finish_reason"],
                message["tool_calls"].as_array().map_or(0, Vec::len),
            );
            stream.model_finished(&model, &message);
            Ok(message)
        }
        Err(error) => {
            log::warn!(
                "chat model call failed node={} model={} elapsed_ms={elapsed_ms} error={}: {}",
                settings.node,
                settings.model,
                error.error,
                error.message
            );
            Err(error)
        }
    }
}

/// Sends the request and reads the answer; `on_chunk` gets each `AIMessageChunk` when
/// `wants_chunks` (and the endpoint streams).
async fn exchange(
    settings: &Settings,
    client: &reqwest::Client,
    body: &Value,
    api_key: Option<&str>,
    message_id: &str,
    mut on_chunk: impl FnMut(Value),
    wants_chunks: bool,
) -> Result<Value, RunError> {
    let mut request = client.post(&settings.endpoint).json(body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let mut response = settings.within(request.send()).await?;
    let status = response.status();
    if !status.is_success() {
        // The error body is only for the message: its start is enough, and a failure reading
        // it leaves it out.
        let start = read_body(settings, &mut response, ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        return Err(status_error(status, &String::from_utf8_lossy(&start)));
    }
    let is_event_stream = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    // A server that ignores `stream: true` answers with one JSON body; that is fine too.
    if !(settings.stream && is_event_stream) {
        let bytes = read_body(settings, &mut response, MAX_RESPONSE_BYTES).await?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        return parse_completion(&bytes, &settings.model, message_id);
    }
    let mut lines = SseLines::default();
    let mut assembler = StreamAssembler::new(&settings.model);
    let mut received = 0;
    while !assembler.done {
        let Some(bytes) = settings.within(response.chunk()).await? else {
            for data in lines.finish()? {
                assembler.take(&data, message_id, wants_chunks, &mut on_chunk)?;
            }
            break;
        };
        received += bytes.len();
        if received > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        for data in lines.feed(&bytes)? {
            assembler.take(&data, message_id, wants_chunks, &mut on_chunk)?;
        }
    }
    let message = assembler.finish(message_id)?;
    if wants_chunks {
        on_chunk(last_chunk(&message));
    }
    Ok(message)
}

/// The most a model's answer may take, streamed or not; a larger one fails the call.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How much of an error body is read for the error message.
const ERROR_BODY_BYTES: usize = 64 * 1024;

fn too_large() -> RunError {
    RunError::new(
        "ModelResponseError",
        format!(
            "the model's answer is larger than {} MiB",
            MAX_RESPONSE_BYTES >> 20
        ),
    )
}

/// Reads a body until it ends or passes `limit` bytes (then it stops: the caller decides), each
/// piece within the call's timeout.
async fn read_body(
    settings: &Settings,
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, RunError> {
    let mut body = Vec::new();
    while body.len() <= limit {
        match settings.within(response.chunk()).await? {
            Some(bytes) => body.extend_from_slice(&bytes),
            None => break,
        }
    }
    Ok(body)
}

/// The error an HTTP error status gives, classed like the OpenAI Python client's exceptions.
fn status_error(status: reqwest::StatusCode, body: &str) -> RunError {
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

fn response_error(problem: impl Into<String>) -> RunError {
    RunError::new("ModelResponseError", problem)
}

/// The first `limit` characters of `text`, marked when cut.
fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A message's content as plain text: a string, the text of its parts, or other JSON as text.
fn text_of(content: &Value) -> String {
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
fn openai_message(message: &Value) -> Result<Value, String> {
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
struct RawCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// What a completion says, streamed or not.
#[derive(Debug)]
struct Answer {
    content: String,
    calls: Vec<RawCall>,
    finish_reason: Option<String>,
    model_name: String,
    response_id: Option<String>,
    usage: Option<Value>,
}

/// A call's arguments as a JSON object, or the LangChain-style error saying why not.
fn parse_arguments(name: &str, arguments: &str) -> Result<Value, String> {
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
    fn into_message(self, message_id: &str) -> Value {
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
fn reported_error(value: &Value) -> Option<RunError> {
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
fn parse_completion(body: &[u8], model: &str, message_id: &str) -> Result<Value, RunError> {
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

/// Splits a Server-Sent Events body, fed in arbitrary pieces, into the `data` of its events.
#[derive(Debug, Default)]
struct SseLines {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseLines {
    /// Takes the next bytes; returns the data of every event they complete.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, RunError> {
        // The bytes held from before have no newline: only the new ones are searched.
        let mut search_from = self.buffer.len();
        self.buffer.extend_from_slice(bytes);
        let mut events = vec![];
        let mut start = 0;
        while let Some(offset) = self.buffer[search_from..]
            .iter()
            .position(|byte| *byte == b'\n')
        {
            let end = search_from + offset;
            let line = std::str::from_utf8(&self.buffer[start..end])
                .map_err(|_| response_error("a line of the event stream is not UTF-8"))?
                .trim_end_matches('\r')
                .to_owned();
            self.line(&line, &mut events);
            start = end + 1;
            search_from = start;
        }
        self.buffer.drain(..start);
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(response_error(format!(
                "a line of the event stream is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        Ok(events)
    }

    /// The body ended: the data of an event left without its closing blank line.
    fn finish(&mut self) -> Result<Vec<String>, RunError> {
        let mut events = self.feed(b"\n")?;
        self.line("", &mut events);
        Ok(events)
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(self.data.join("\n"));
                self.data.clear();
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        // `event`, `id` and `retry` carry nothing a completion stream needs.
        if field == "data" {
            self.data
                .push(value.strip_prefix(' ').unwrap_or(value).to_owned());
        }
    }
}

/// A tool call being streamed, by its `index`.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Builds the answer from streamed `chat.completion.chunk`s.
#[derive(Debug)]
struct StreamAssembler {
    model: String,
    chunks: usize,
    done: bool,
    response_id: Option<String>,
    model_name: Option<String>,
    content: String,
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

/// What one stream chunk added to the message.
#[derive(Debug, PartialEq)]
struct Delta {
    content: String,
    tool_call_chunks: Vec<Value>,
}

impl StreamAssembler {
    fn new(model: &str) -> Self {
        StreamAssembler {
            model: model.to_owned(),
            chunks: 0,
            done: false,
            response_id: None,
            model_name: None,
            content: String::new(),
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Takes one event's data and hands what it added to `on_chunk` as an `AIMessageChunk`.
    fn take(
        &mut self,
        data: &str,
        message_id: &str,
        wants_chunks: bool,
        on_chunk: &mut impl FnMut(Value),
    ) -> Result<(), RunError> {
        if let Some(delta) = self.push(data)? {
            if wants_chunks {
                on_chunk(delta_chunk(&delta, message_id));
            }
        }
        Ok(())
    }

    /// Takes one event's data; returns what it added to the message, if anything.
    fn push(&mut self, data: &str) -> Result<Option<Delta>, RunError> {
        if self.done {
            return Ok(None);
        }
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let value: Value = serde_json::from_str(data).map_err(|error| {
            response_error(format!(
                "a chunk of the event stream is not JSON ({error}): {}",
                truncate(data, 200)
            ))
        })?;
        if let Some(error) = reported_error(&value) {
            return Err(error);
        }
        if !value.is_object() {
            return Err(response_error(format!(
                "a chunk of the event stream is not a JSON object: {}",
                truncate(data, 200)
            )));
        }
        self.chunks += 1;
        if let Some(id) = value["id"].as_str() {
            self.response_id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(model) = value["model"].as_str() {
            self.model_name = Some(model.to_owned());
        }
        if value["usage"].is_object() {
            self.usage = Some(value["usage"].clone());
        }
        let choices = match value.get("choices") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(choices)) => choices,
            Some(_) => {
                return Err(response_error(
                    "the choices of a stream chunk is not a list",
                ))
            }
        };
        let Some(choice) = choices
            .iter()
            .find(|choice| choice["index"].as_u64().unwrap_or(0) == 0)
        else {
            return Ok(None);
        };
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
        let delta = &choice["delta"];
        let piece = text_of(&delta["content"]);
        self.content.push_str(&piece);
        let mut tool_call_chunks = vec![];
        if let Some(calls) = delta["tool_calls"].as_array() {
            for (position, call) in calls.iter().enumerate() {
                let index = call["index"].as_u64().unwrap_or(position as u64);
                let id = call["id"].as_str().filter(|id| !id.is_empty());
                let name = call["function"]["name"].as_str();
                let arguments = call["function"]["arguments"].as_str();
                let partial = self.calls.entry(index).or_default();
                if let (None, Some(id)) = (&partial.id, id) {
                    partial.id = Some(id.to_owned());
                }
                // The name comes once; a server repeating it whole must not double it.
                if let Some(name) = name.filter(|name| *name != partial.name) {
                    partial.name.push_str(name);
                }
                if let Some(arguments) = arguments {
                    partial.arguments.push_str(arguments);
                }
                tool_call_chunks.push(json!({
                    "name": name,
                    "args": arguments,
                    "id": id,
                    "index": index,
                    "type": "tool_call_chunk",
                }));
            }
        }
        if piece.is_empty() && tool_call_chunks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Delta {
            content: piece,
            tool_call_chunks,
        }))
    }

    /// The whole message, once the stream has ended.
    fn finish(self, message_id: &str) -> Result<Value, RunError> {
        if self.chunks == 0 {
            return Err(response_error(
                "the event stream ended without any completion chunk",
            ));
        }
        if !self.done && self.finish_reason.is_none() {
            return Err(response_error(
                "the event stream ended before a finish_reason or [DONE]",
            ));
        }
        let answer = Answer {
            content: self.content,
            calls: self
                .calls
                .into_values()
                .map(|call| RawCall {
                    id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                })
                .collect(),
            finish_reason: self.finish_reason,
            model_name: self.model_name.unwrap_or(self.model),
            response_id: self.response_id,
            usage: self.usage,
        };
        Ok(answer.into_message(message_id))
    }
}

/// The `AIMessageChunk` dict of one delta (the shape `scripted::chunk` gives); its `tool_calls`
/// are the chunk's complete calls, as LangChain derives them.
fn delta_chunk(delta: &Delta, message_id: &str) -> Value {
    let mut tool_calls = vec![];
    let mut invalid_tool_calls = vec![];
    for chunk in &delta.tool_call_chunks {
        let name = chunk["name"].as_str().unwrap_or_default();
        let arguments = chunk["args"].as_str().unwrap_or_default();
        match parse_arguments(name, arguments) {
            Ok(args) => tool_calls
                .push(json!({"name": name, "args": args, "id": chunk["id"], "type": "tool_call"})),
            Err(_) => invalid_tool_calls.push(json!({
                "name": chunk["name"],
                "args": chunk["args"],
                "id": chunk["id"],
                "error": null,
                "type": "invalid_tool_call",
            })),
        }
    }
    json!({
        "content": delta.content,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": "AIMessageChunk",
        "name": null,
        "id": message_id,
        "tool_calls": tool_calls,
        "invalid_tool_calls": invalid_tool_calls,
        "usage_metadata": null,
        "tool_call_chunks": delta.tool_call_chunks,
        "chunk_position": null,
    })
}

/// The closing `AIMessageChunk`: no content, the message's metadata and usage, and
/// `chunk_position: "last"`.
fn last_chunk(message: &Value) -> Value {
    json!({
        "content": "",
        "additional_kwargs": {},
        "response_metadata": message["response_metadata"],
        "type": "AIMessageChunk",
        "name": null,
        "id": message["id"],
        "tool_calls": [],
        "invalid_tool_calls": [],
        "usage_metadata": message["usage_metadata"],
        "tool_call_chunks": [],
        "chunk_position": "last",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> NodeSpec {
        toml::from_str(&format!(
            "name = \"agent\"\nkind = \"chat_model\"\nprovider = \"openai\"\n{extra}"
        ))
        .unwrap()
    }

    const VALID: &str = "base_url = \"http://127.0.0.1:9/v1/\"\nmodel = \"llama3.1\"\n";

    fn settings(extra: &str) -> Result<Settings, String> {
        let search = Arc::new(Tool::builtin("tavily_search_results_json").unwrap());
        Settings::from_spec(&spec(&format!("{VALID}{extra}")), &[search])
    }

    fn refusal(toml: &str) -> String {
        Settings::from_spec(&spec(toml), &[]).unwrap_err()
    }

    #[test]
    fn a_declaration_is_checked_naming_the_node_and_the_field() {
        let checks = [
            ("model = \"m\"", "base_url"),
            ("base_url = \"\"\nmodel = \"m\"", "base_url"),
            ("base_url = \"ftp://x/v1\"\nmodel = \"m\"", "base_url"),
            ("base_url = \"not a url\"\nmodel = \"m\"", "base_url"),
            ("base_url = \"http://x/v1\"", "model"),
            ("base_url = \"http://x/v1\"\nmodel = \" \"", "model"),
            (&format!("{VALID}temperature = 2.5"), "temperature 2.5"),
            (&format!("{VALID}temperature = -0.1"), "temperature -0.1"),
            (&format!("{VALID}temperature = nan"), "temperature NaN"),
            (&format!("{VALID}timeout_seconds = 0"), "timeout_seconds 0"),
            (
                &format!("{VALID}timeout_seconds = -1"),
                "timeout_seconds -1",
            ),
            (
                &format!("{VALID}timeout_seconds = inf"),
                "timeout_seconds inf",
            ),
            (
                &format!("{VALID}timeout_seconds = 1e300"),
                "timeout_seconds",
            ),
            (&format!("{VALID}max_tokens = 0"), "max_tokens 0"),
            (&format!("{VALID}delay_ms = 200"), "delay_ms 200"),
            (&format!("{VALID}api_key_env = \"\""), "api_key_env"),
            (&format!("{VALID}api_key_env = \"A=B\""), "api_key_env"),
        ];
        for (toml, field) in checks {
            let message = refusal(toml);
            assert!(message.contains("node 'agent'"), "{toml}: {message}");
            assert!(message.contains(field), "{toml}: {message}");
        }
    }

    #[test]
    fn a_valid_declaration_keeps_its_options_and_trims_the_url() {
        let settings = settings("temperature = 0.2\nmax_tokens = 64\nstream = false").unwrap();
        assert_eq!(settings.shown_url, "http://127.0.0.1:9/v1");
        assert_eq!(settings.endpoint, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(settings.timeout, Duration::from_secs(60));
        assert!(!settings.stream);
        assert_eq!(
            settings.tools[0]["function"]["name"],
            "tavily_search_results_json"
        );
        assert!(Settings::from_spec(&spec(VALID), &[]).unwrap().stream);
    }

    #[test]
    fn credentials_in_the_base_url_are_used_but_never_shown() {
        let settings = Settings::from_spec(
            &spec("base_url = \"https://user:pw@example.com/v1/\"\nmodel = \"m\""),
            &[],
        )
        .unwrap();
        assert_eq!(
            settings.endpoint,
            "https://user:pw@example.com/v1/chat/completions"
        );
        assert_eq!(settings.shown_url, "https://example.com/v1");
        assert!(!settings.timed_out().message.contains("pw"));
    }

    #[test]
    fn a_tool_name_the_api_refuses_is_named() {
        let mut tools = BTreeMap::new();
        tools.insert(
            "bad name".to_owned(),
            toml::from_str("kind = \"http\"\nurl = \"http://x\"").unwrap(),
        );
        let toolbox = super::super::tools::Toolbox::new(&tools, std::path::Path::new(".")).unwrap();
        let bound = toolbox.resolve("agent", &["bad name".to_owned()]).unwrap();
        let message = Settings::from_spec(&spec(VALID), &bound).unwrap_err();
        assert!(message.contains("'bad name'"), "{message}");
    }

    #[test]
    fn an_unset_or_empty_key_variable_is_named_never_a_value() {
        let variable = "SPINDLE_OPENAI_UNIT_TEST_KEY_7F3A";
        let settings = settings(&format!("api_key_env = \"{variable}\"")).unwrap();
        std::env::remove_var(variable);
        let error = settings.api_key().unwrap_err();
        assert_eq!(error.error, "OpenAIError");
        assert!(error.message.contains(variable), "{}", error.message);
        assert!(error.message.contains("is not set"), "{}", error.message);
        std::env::set_var(variable, "  ");
        assert!(settings.api_key().unwrap_err().message.contains("is empty"));
        std::env::set_var(variable, "sk-secret-value\n");
        assert_eq!(
            settings.api_key().unwrap().as_deref(),
            Some("sk-secret-value")
        );
        std::env::remove_var(variable);
        assert_eq!(
            Settings::from_spec(&spec(VALID), &[])
                .unwrap()
                .api_key()
                .unwrap(),
            None
        );
    }

    #[test]
    fn langchain_messages_become_openai_messages_after_the_system_prompt() {
        let settings =
            settings("system_prompt = \"Be brief.\"\ntemperature = 0.2\nmax_tokens = 64").unwrap();
        let history = [
            json!({"type": "system", "content": "From the thread.", "id": "s"}),
            json!({"type": "human", "content": [{"type": "text", "text": "weather"}, " in nyc?"], "id": "h", "name": "ann"}),
            json!({"type": "ai", "content": "", "id": "a", "tool_calls": [
                {"name": "tavily_search_results_json", "args": {"query": "weather in nyc"}, "id": "call_1", "type": "tool_call"}
            ]}),
            json!({"type": "tool", "content": "{\"temp_c\": 20}", "tool_call_id": "call_1", "id": "t", "name": "tavily_search_results_json"}),
            json!({"type": "ai", "content": [{"type": "text", "text": "It is 20°C."}], "id": "a2", "tool_calls": []}),
        ];
        let body = settings.request_body(&history).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "From the thread."},
                {"role": "user", "content": [{"type": "text", "text": "weather"}, {"type": "text", "text": " in nyc?"}], "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "tavily_search_results_json", "arguments": "{\"query\":\"weather in nyc\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 20}"},
                {"role": "assistant", "content": "It is 20°C."},
            ])
        );
        assert_eq!(body["model"], "llama3.1");
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn optional_request_fields_are_left_out_when_unset() {
        let settings = Settings::from_spec(&spec(&format!("{VALID}stream = false")), &[]).unwrap();
        let body = settings
            .request_body(&[json!({"type": "human", "content": "hi"})])
            .unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["model", "messages", "stream"]);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn a_message_the_api_cannot_take_fails_naming_its_type() {
        let settings = settings("").unwrap();
        let error = settings
            .request_body(&[json!({"type": "remove", "id": "x"})])
            .unwrap_err();
        assert_eq!(error.error, "ValueError");
        assert!(error.message.contains("'remove'"), "{}", error.message);
    }

    const COMPLETION: &str = r#"{
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

    /// The same answer as `COMPLETION`, streamed: the second call's arguments split over chunks
    /// (it stays invalid), then a usage chunk.
    const STREAM: &str = concat!(
        ": keep-alive comment\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"llama3.1-served\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"llama3.1-served\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"search\",\"arguments\":\"\"}}]}}]}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"llama3.1-served\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"query\\\": \"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"llama3.1-served\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"nyc\\\"}\"}},{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"search\",\"arguments\":\"{\\\"query\\\": \"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"llama3.1-served\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"llama3.1-served\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}\n\n",
        "data: [DONE]\n\n",
    );

    /// Feeds `text` in pieces of `size` bytes; returns the chunks sent and the message.
    fn assemble(text: &str, size: usize) -> Result<(Vec<Value>, Value), RunError> {
        let mut lines = SseLines::default();
        let mut assembler = StreamAssembler::new("llama3.1");
        let mut chunks = vec![];
        let mut on_chunk = |chunk: Value| chunks.push(chunk);
        for piece in text.as_bytes().chunks(size) {
            for data in lines.feed(piece)? {
                assembler.take(&data, "lc_run--x", true, &mut on_chunk)?;
            }
        }
        for data in lines.finish()? {
            assembler.take(&data, "lc_run--x", true, &mut on_chunk)?;
        }
        let message = assembler.finish("lc_run--x")?;
        chunks.push(last_chunk(&message));
        Ok((chunks, message))
    }

    #[test]
    fn a_stream_assembles_to_the_message_the_whole_completion_gives() {
        let whole = parse_completion(COMPLETION.as_bytes(), "llama3.1", "lc_run--x").unwrap();
        for size in [1, 7, 64, STREAM.len()] {
            let (chunks, message) = assemble(STREAM, size).unwrap();
            assert_eq!(message, whole, "pieces of {size} bytes");
            assert_eq!(chunks.len(), 4, "{chunks:#?}");
            assert!(chunks
                .iter()
                .all(|chunk| chunk["id"] == "lc_run--x" && chunk["type"] == "AIMessageChunk"));
            assert_eq!(
                chunks[0]["tool_call_chunks"],
                json!([{"name": "search", "args": "", "id": "call_a", "index": 0, "type": "tool_call_chunk"}])
            );
            assert_eq!(chunks[2]["tool_call_chunks"][1]["index"], 1);
            let last = chunks.last().unwrap();
            assert_eq!(last["chunk_position"], "last");
            assert_eq!(last["usage_metadata"], whole["usage_metadata"]);
            assert_eq!(last["response_metadata"], whole["response_metadata"]);
            assert!(chunks[..3]
                .iter()
                .all(|chunk| chunk["chunk_position"].is_null()));
        }
    }

    #[test]
    fn streamed_text_arrives_in_chunks_that_concatenate_to_the_content() {
        let mut text = String::new();
        for piece in ["The", " weather", " is", " fine."] {
            text.push_str(&format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": piece}}]})
            ));
        }
        text.push_str(
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        );
        // No [DONE] and no final blank line: the finish_reason is enough.
        text.push_str(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}",
        );
        let (chunks, message) = assemble(&text, 5).unwrap();
        let contents: Vec<&str> = chunks
            .iter()
            .map(|c| c["content"].as_str().unwrap())
            .collect();
        assert_eq!(contents, ["The", " weather", " is", " fine.", ""]);
        assert_eq!(message["content"], "The weather is fine.");
        assert_eq!(message["response_metadata"]["finish_reason"], "stop");
        assert_eq!(
            message["usage_metadata"],
            json!({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7})
        );
    }

    #[test]
    fn a_broken_stream_is_a_model_response_error_saying_what_is_wrong() {
        let start = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        let checks = [
            ("data: {not json\n\n".to_owned(), "not JSON"),
            ("data: [1, 2]\n\n".to_owned(), "not a JSON object"),
            ("data: {\"choices\": 3}\n\n".to_owned(), "not a list"),
            (
                ": only a comment\n\n".to_owned(),
                "without any completion chunk",
            ),
            (start.to_owned(), "before a finish_reason or [DONE]"),
        ];
        for (text, problem) in checks {
            let error = assemble(&text, 3).unwrap_err();
            assert_eq!(error.error, "ModelResponseError", "{text}");
            assert!(error.message.contains(problem), "{text}: {}", error.message);
        }
        let error = assemble(
            &format!("{start}data: {{\"error\": {{\"message\": \"model crashed\"}}}}\n\n"),
            9,
        )
        .unwrap_err();
        assert_eq!(error.error, "APIError");
        assert!(error.message.contains("model crashed"));
    }

    #[test]
    fn sse_lines_join_multi_line_data_and_ignore_other_fields() {
        let mut lines = SseLines::default();
        let events = lines
            .feed(b"event: x\nid: 1\ndata: a\ndata:b\nretry: 5\n\n: c\n\ndata: [DONE]\r\n\r\n")
            .unwrap();
        assert_eq!(events, ["a\nb", "[DONE]"]);
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

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_connection_error_and_a_silent_one_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = ChatModel::new(
            &spec(&format!(
                "base_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"m\"\ntimeout_seconds = 0.2"
            )),
            vec![],
        )
        .unwrap();
        let history = [json!({"type": "human", "content": "hi"})];
        let stream = NodeStream::silent("agent");
        // The listener accepts (the kernel does) but never answers.
        let error = call(&silent.settings, &silent.client, &history, &stream)
            .await
            .unwrap_err();
        assert_eq!(error.error, "APITimeoutError");
        assert!(error.message.contains("0.2 seconds"), "{}", error.message);
        drop(listener);
        let error = call(&silent.settings, &silent.client, &history, &stream)
            .await
            .unwrap_err();
        assert_eq!(error.error, "APIConnectionError", "{}", error.message);
        assert!(
            error.message.contains(&format!("127.0.0.1:{port}")),
            "{}",
            error.message
        );
    }
}
