//! The `openai` chat model provider: any OpenAI-compatible chat completions endpoint (OpenAI,
//! vLLM, llama.cpp server, Ollama, LiteLLM). The `ChatModel` node POSTs to
//! `{base_url}/chat/completions` (streamed or not) and turns the answer into a LangChain AI
//! message, sending `AIMessageChunk`s live while it streams, and retrying transient failures
//! (`../retry.rs`). Settings: `settings.rs`; formats: `wire.rs`; stream reading: `stream.rs`.
//! The API key is read at call time and never logged.

mod settings;
mod stream;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::emit::{ModelInfo, NodeStream};
use super::external::chain;
use super::node::{messages_of, messages_update, Node, NodeInput, NodeResult};
use super::retry::{retry_after, AttemptError, Transience};
use super::spec::NodeSpec;
use super::tools::Tool;
use crate::domain::run::RunError;
use settings::Settings;
use stream::{last_chunk, SseLines, StreamAssembler};
use wire::{parse_completion, status_error, PROVIDER};

/// A chat model node backed by an OpenAI-compatible endpoint.
pub struct ChatModel {
    settings: Arc<Settings>,
    client: reqwest::Client,
}

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
                    chain(&error)
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

/// One model call: the request, made again after a transient failure as the node's retry policy
/// says, the answer (streamed to `stream` as chunks when asked for) and the log lines around it.
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
    let outcome = settings
        .retry
        .run(&format!("node={}", settings.node), |_| {
            exchange(
                settings,
                client,
                &body,
                api_key.as_deref(),
                &message_id,
                |chunk| stream.model_chunk(&model, &chunk),
                stream.wants_tokens(),
            )
        })
        .await
        .map_err(|gave_up| {
            let message = gave_up.counted(&gave_up.error.error.message);
            RunError::new(gave_up.error.error.error, message)
        });
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

/// A failed attempt at a model call: the run's error, and whether another attempt may succeed.
struct CallFailure {
    error: RunError,
    transience: Transience,
}

impl CallFailure {
    /// A connection that failed or broke, or an attempt that overran its time.
    fn transient(error: RunError) -> Self {
        CallFailure {
            error,
            transience: Transience::Transient,
        }
    }
}

/// Bad answers, reported errors and refusals are not retried.
impl From<RunError> for CallFailure {
    fn from(error: RunError) -> Self {
        CallFailure {
            error,
            transience: Transience::Permanent,
        }
    }
}

impl AttemptError for CallFailure {
    fn transience(&self) -> Transience {
        self.transience
    }

    fn logged(&self) -> String {
        match self.transience {
            Transience::Status { code, .. } => format!("status={code}"),
            _ => format!("error={}", self.error.error),
        }
    }
}

/// Sends the request and reads the answer; `on_chunk` gets each `AIMessageChunk` when
/// `wants_chunks` (and the endpoint streams). A stream that breaks off after a chunk was handed
/// on fails for good: another attempt would send its tokens again.
async fn exchange(
    settings: &Settings,
    client: &reqwest::Client,
    body: &Value,
    api_key: Option<&str>,
    message_id: &str,
    mut on_chunk: impl FnMut(Value),
    wants_chunks: bool,
) -> Result<Value, CallFailure> {
    let mut request = client.post(&settings.endpoint).json(body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let mut response = settings
        .within(request.send())
        .await
        .map_err(CallFailure::transient)?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = retry_after(status, response.headers());
        // The error body is only for the message: its start is enough, and a failure reading
        // it leaves it out.
        let start = read_body(settings, &mut response, ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        return Err(CallFailure {
            error: status_error(status, &String::from_utf8_lossy(&start)),
            transience: Transience::Status {
                code: status.as_u16(),
                retry_after,
            },
        });
    }
    let is_event_stream = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    // A server that ignores `stream: true` answers with one JSON body; that is fine too.
    if !(settings.stream && is_event_stream) {
        let bytes = read_body(settings, &mut response, MAX_RESPONSE_BYTES)
            .await
            .map_err(CallFailure::transient)?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(too_large().into());
        }
        return Ok(parse_completion(&bytes, &settings.model, message_id)?);
    }
    let mut lines = SseLines::default();
    let mut assembler = StreamAssembler::new(&settings.model);
    let mut received = 0;
    while !assembler.done {
        let next = settings.within(response.chunk()).await;
        let next = next.map_err(|error| {
            if assembler.handed_on {
                CallFailure::from(error)
            } else {
                CallFailure::transient(error)
            }
        })?;
        let Some(bytes) = next else {
            for data in lines.finish()? {
                assembler.take(&data, message_id, wants_chunks, &mut on_chunk)?;
            }
            break;
        };
        received += bytes.len();
        if received > MAX_RESPONSE_BYTES {
            return Err(too_large().into());
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use settings::tests::spec;

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
