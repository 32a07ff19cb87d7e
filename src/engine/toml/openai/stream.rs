//! Reading a streamed chat completion: `SseLines` splits a Server-Sent Events body fed in any
//! pieces into its events' data, and `StreamAssembler` builds the AI message from the
//! `chat.completion.chunk`s while handing each delta on as an `AIMessageChunk`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::wire::{
    parse_arguments, reported_error, response_error, text_of, truncate, Answer, RawCall,
};
use crate::domain::run::RunError;

/// Longest stream line accepted; a server sending more without a newline is broken.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Splits a Server-Sent Events body, fed in arbitrary pieces, into the `data` of its events.
#[derive(Debug, Default)]
pub(super) struct SseLines {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseLines {
    /// Takes the next bytes; returns the data of every event they complete.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, RunError> {
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
    pub(super) fn finish(&mut self) -> Result<Vec<String>, RunError> {
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
pub(super) struct StreamAssembler {
    model: String,
    chunks: usize,
    pub(super) done: bool,
    /// Whether a chunk was handed on: a call that breaks off after that cannot be made again
    /// without the run's stream seeing the same tokens twice.
    pub(super) handed_on: bool,
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
    pub(super) fn new(model: &str) -> Self {
        StreamAssembler {
            model: model.to_owned(),
            chunks: 0,
            done: false,
            handed_on: false,
            response_id: None,
            model_name: None,
            content: String::new(),
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Takes one event's data and hands what it added to `on_chunk` as an `AIMessageChunk`.
    pub(super) fn take(
        &mut self,
        data: &str,
        message_id: &str,
        wants_chunks: bool,
        on_chunk: &mut impl FnMut(Value),
    ) -> Result<(), RunError> {
        if let Some(delta) = self.push(data)? {
            if wants_chunks {
                self.handed_on = true;
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
    pub(super) fn finish(self, message_id: &str) -> Result<Value, RunError> {
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
pub(super) fn last_chunk(message: &Value) -> Value {
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
    use crate::engine::toml::openai::wire::parse_completion;
    use crate::engine::toml::openai::wire::tests::COMPLETION;

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
}
