//! A fake OpenAI-compatible chat completions server for the tests: real HTTP/1.1 on 127.0.0.1
//! port 0 (plain threads, one per connection, no async runtime), answering each
//! `POST …/chat/completions` with the next scripted reply, streamed as SSE or whole as the
//! request asks. It records every request with the time it arrived, and can fail (with headers
//! such as `Retry-After`), send a malformed body, drop the connection, break a stream off, or
//! hold its answer until the test releases it or the client hangs up. Included with `#[path]`.
#![allow(dead_code)] // Each including test crate uses a different part of it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a test waits for the server to see something before failing.
const DEADLINE: Duration = Duration::from_secs(30);

/// A tool call the scripted model makes.
#[derive(Clone, Debug)]
pub struct ScriptedCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model writes them: JSON text (or not, for invalid-call tests).
    pub arguments: String,
}

/// What the server answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A completion: streamed when the request has `stream: true` (the text in word pieces,
    /// each call's arguments split over three chunks, then the finish chunk, a usage chunk
    /// when `stream_options.include_usage`, and `[DONE]`), else one JSON body.
    Answer {
        content: String,
        tool_calls: Vec<ScriptedCall>,
        prompt_tokens: u64,
        completion_tokens: u64,
        /// Streamed only: after this many text pieces, wait until `release` (or a hang-up).
        pause_after: Option<usize>,
    },
    /// An error status with a body.
    Fail { status: u16, body: String },
    /// An error status with extra headers (`Retry-After`, say) and a body.
    FailWith {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// No answer at all: the connection is closed once the request is read.
    Drop,
    /// A streamed answer of `content` that breaks off (the connection closes mid-body) after
    /// `pieces` text pieces.
    Cut { content: String, pieces: usize },
    /// A 200 with this content type and body, as they are.
    Raw {
        content_type: &'static str,
        body: String,
    },
    /// No answer until `release` (then a 503) or until the client hangs up.
    Hold,
}

impl Reply {
    /// A text answer.
    pub fn text(content: &str) -> Reply {
        Reply::Answer {
            content: content.to_owned(),
            tool_calls: vec![],
            prompt_tokens: 20,
            completion_tokens: 7,
            pause_after: None,
        }
    }

    /// An answer calling one tool with `arguments`.
    pub fn tool_call(id: &str, name: &str, arguments: &Value) -> Reply {
        Reply::Answer {
            content: String::new(),
            tool_calls: vec![ScriptedCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments: arguments.to_string(),
            }],
            prompt_tokens: 10,
            completion_tokens: 5,
            pause_after: None,
        }
    }

    /// An OpenAI-style error: `{"error": {"message", "type"}}` with `status`.
    pub fn fail(status: u16, message: &str) -> Reply {
        Reply::Fail {
            status,
            body: json!({"error": {"message": message, "type": "test_error", "code": null}})
                .to_string(),
        }
    }

    /// This error answer with an extra header.
    pub fn with_header(self, name: &'static str, value: &str) -> Reply {
        match self {
            Reply::Fail { status, body } => Reply::FailWith {
                status,
                headers: vec![(name, value.to_owned())],
                body,
            },
            Reply::FailWith {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value.to_owned()));
                Reply::FailWith {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }

    /// This answer, streamed, pauses after `pieces` text pieces until `release`.
    pub fn paused_after(mut self, pieces: usize) -> Reply {
        if let Reply::Answer { pause_after, .. } = &mut self {
            *pause_after = Some(pieces);
        }
        self
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub body: Value,
    /// The `Authorization` header, if there was one.
    pub authorization: Option<String>,
    /// When the request had been read.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    requests: Vec<Recorded>,
    released: bool,
    /// Answers whose client hung up before the end (while held, or between pieces).
    hangups: usize,
    /// Answers that ended with no write failing: sent whole, dropped or cut as scripted, or
    /// held until the client hung up.
    answered: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stopping: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds, failing the test after the deadline.
    fn wait_until(&self, what: &str, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        let mut state = self.lock();
        while !done(&state) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("the fake OpenAI server never saw {what}"));
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running fake server; stopped on drop.
pub struct FakeOpenAi {
    /// The API root to put in `base_url`: `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
    port: u16,
    shared: Arc<Shared>,
}

impl FakeOpenAi {
    /// Starts the server on a free loopback port.
    pub fn start() -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port is free");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(connection) = connection else { continue };
                let shared = accepting.clone();
                std::thread::spawn(move || serve(connection, &shared));
            }
        });
        FakeOpenAi {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            port,
            shared,
        }
    }

    /// Queues the answer to a later request (replies are used in order).
    pub fn push(&self, reply: Reply) -> &Self {
        self.shared.lock().replies.push_back(reply);
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Lets every held or paused answer go on, now and later.
    pub fn release(&self) {
        self.shared.lock().released = true;
        self.shared.changed.notify_all();
    }

    /// Waits until `count` requests have arrived.
    pub fn wait_for_requests(&self, count: usize) {
        self.shared
            .wait_until(&format!("{count} requests"), |state| {
                state.requests.len() >= count
            });
    }

    /// Waits until `count` answers have ended with no write failing (see `State::answered`).
    pub fn wait_for_answers(&self, count: usize) {
        self.shared
            .wait_until(&format!("{count} answers sent"), |state| {
                state.answered >= count
            });
    }

    /// Waits until the clients of `count` answers have hung up before their end.
    pub fn wait_for_hangups(&self, count: usize) {
        self.shared
            .wait_until(&format!("{count} clients hang up"), |state| {
                state.hangups >= count
            });
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.release();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request, records it and answers with the next reply; the connection then closes.
fn serve(mut connection: TcpStream, shared: &Shared) {
    let Some((path, headers, body)) = read_request(&connection) else {
        return;
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut state = shared.lock();
        state.requests.push(Recorded {
            path: path.clone(),
            body: body.clone(),
            authorization: header("authorization"),
            at: Instant::now(),
        });
        shared.changed.notify_all();
        if path.ends_with("/chat/completions") {
            state.replies.pop_front()
        } else {
            Some(Reply::fail(404, &format!("no route for {path}")))
        }
    };
    let reply = reply.unwrap_or_else(|| Reply::fail(500, "the test scripted no more replies"));
    // A write that fails means the client went away mid-answer: it may hang up before a
    // paused answer reaches its pause, and that counts as a hang-up too.
    let outcome = answer(&mut connection, shared, &body, reply);
    // The connection closes before the answer is counted: a test waiting for the count acts on
    // an answer the client has whole (or has seen dropped or cut).
    drop(connection);
    let mut state = shared.lock();
    match outcome {
        Ok(()) => state.answered += 1,
        Err(_) => state.hangups += 1,
    }
    drop(state);
    shared.changed.notify_all();
}

type Request = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(connection: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(connection.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_owned();
    let mut headers = vec![];
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, headers, body))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn whole(
    connection: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    whole_with(connection, status, &[], content_type, body)
}

fn whole_with(
    connection: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        connection,
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )?;
    connection.flush()
}

/// Sends one piece of a chunked body at once.
fn send_chunk(connection: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(connection, "{:x}\r\n{data}\r\n", data.len())?;
    connection.flush()
}

/// Waits until the test releases held answers (`true`) or the client hangs up (`false`).
fn hold(connection: &TcpStream, shared: &Shared) -> bool {
    let _ = connection.set_nonblocking(true);
    let mut state = shared.lock();
    loop {
        if state.released {
            let _ = connection.set_nonblocking(false);
            return true;
        }
        let mut probe = [0u8; 1];
        // A closed connection reads end-of-file (or a reset); an open, quiet one would block.
        let gone = match connection.peek(&mut probe) {
            Ok(read) => read == 0,
            Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
        };
        if gone {
            state.hangups += 1;
            shared.changed.notify_all();
            return false;
        }
        state = shared
            .changed
            .wait_timeout(state, Duration::from_millis(20))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn answer(
    connection: &mut TcpStream,
    shared: &Shared,
    request: &Value,
    reply: Reply,
) -> std::io::Result<()> {
    let model = request["model"].as_str().unwrap_or("fake-model").to_owned();
    match reply {
        Reply::Fail { status, body } => whole(connection, status, "application/json", &body),
        Reply::FailWith {
            status,
            headers,
            body,
        } => whole_with(connection, status, &headers, "application/json", &body),
        // Dropping the connection (in `serve`) is the whole answer.
        Reply::Drop => Ok(()),
        Reply::Cut { content, pieces } => {
            write!(
                connection,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )?;
            for piece in content.split_inclusive(' ').take(pieces) {
                let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
                send_chunk(connection, &format!("data: {chunk}\n\n"))?;
            }
            // No closing chunk: the client sees the body break off when the connection closes.
            Ok(())
        }
        Reply::Raw { content_type, body } => whole(connection, 200, content_type, &body),
        Reply::Hold => {
            if hold(connection, shared) {
                whole(
                    connection,
                    503,
                    "application/json",
                    r#"{"error": {"message": "released"}}"#,
                )
            } else {
                Ok(())
            }
        }
        Reply::Answer {
            content,
            tool_calls,
            prompt_tokens,
            completion_tokens,
            pause_after,
        } => {
            let finish_reason = if tool_calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            let usage = json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            });
            if request["stream"] != true {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|call| {
                        json!({"id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments}})
                    })
                    .collect();
                let mut message = json!({
                    "role": "assistant",
                    "content": if content.is_empty() && !calls.is_empty() { Value::Null } else { json!(content) },
                });
                if !calls.is_empty() {
                    message["tool_calls"] = Value::Array(calls);
                }
                let body = json!({
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                    "usage": usage,
                });
                return whole(connection, 200, "application/json", &body.to_string());
            }
            write!(
                connection,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )?;
            let event = |choices: Value, usage: Value| {
                let mut chunk = json!({
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": choices,
                });
                if !usage.is_null() {
                    chunk["usage"] = usage;
                }
                format!("data: {chunk}\n\n")
            };
            let delta = |delta: Value, finish: Value| {
                event(
                    json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
                    Value::Null,
                )
            };
            send_chunk(
                connection,
                &delta(json!({"role": "assistant", "content": ""}), Value::Null),
            )?;
            for (index, piece) in content.split_inclusive(' ').enumerate() {
                if pause_after == Some(index) && !hold(connection, shared) {
                    return Ok(());
                }
                send_chunk(connection, &delta(json!({"content": piece}), Value::Null))?;
            }
            for (index, call) in tool_calls.iter().enumerate() {
                send_chunk(
                    connection,
                    &delta(
                        json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": ""}}]}),
                        Value::Null,
                    ),
                )?;
                for piece in thirds(&call.arguments) {
                    send_chunk(
                        connection,
                        &delta(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                            Value::Null,
                        ),
                    )?;
                }
            }
            send_chunk(connection, &delta(json!({}), json!(finish_reason)))?;
            if request["stream_options"]["include_usage"] == true {
                send_chunk(connection, &event(json!([]), usage))?;
            }
            send_chunk(connection, "data: [DONE]\n\n")?;
            write!(connection, "0\r\n\r\n")?;
            connection.flush()
        }
    }
}

/// `text` in three pieces (split on character boundaries) that concatenate back to it.
fn thirds(text: &str) -> Vec<String> {
    let characters: Vec<char> = text.chars().collect();
    let size = characters.len().div_ceil(3).max(1);
    characters
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// A graph file of the agent loop with an `openai` model node; `options` are extra node lines.
pub fn agent_graph(id: &str, base_url: &str, options: &str) -> String {
    format!(
        r#"
id = "{id}"

[channels]
messages = "messages"

[[nodes]]
name = "agent"
kind = "chat_model"
provider = "openai"
base_url = "{base_url}"
model = "test-model"
tools = ["tavily_search_results_json"]
{options}

[[nodes]]
name = "tools"
kind = "tools"
tools = ["tavily_search_results_json"]

[[edges]]
from = "__start__"
to = "agent"

[[edges]]
from = "agent"
when = "has_tool_calls"
then = "tools"
else = "__end__"

[[edges]]
from = "tools"
to = "agent"
"#
    )
}
