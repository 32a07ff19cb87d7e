//! Chat model nodes against a real OpenAI-compatible server on loopback.
//! The `openai` provider runs the agent loop (model, tools, model) streamed and not, sends what
//! LangChain's ChatOpenAI would (system prompt, converted tool calls and results, bound tools,
//! the key from the configured variable), streams its tokens live, retries transient failures
//! (rate limits, 5xx, dropped connections) honouring `Retry-After` and stopping when the run is
//! stopped, and turns every other failure of the endpoint into a failed run with a clear error.

#[path = "../support/openai.rs"]
mod openai_server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spindle::engine::toml::node::NativeNodes;
use spindle::engine::toml::{parse_spec, Graph};

use crate::helpers::{run_id, spawn_app_with, Reply as ApiReply, TestApp};
use openai_server::{agent_graph, FakeOpenAi, Reply};

const SEARCH: &str = "tavily_search_results_json";
const QUESTION: &str = "what's the weather in nyc?";

/// A test server with the given graph files (`(id, toml)`) written to a temporary directory.
struct ModelApp {
    app: TestApp,
    _graphs: tempfile::TempDir,
}

async fn spawn_with_graphs(graphs: &[(&str, String)]) -> ModelApp {
    let directory = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = vec![];
    for (id, toml) in graphs {
        let path = directory.path().join(format!("{id}.toml"));
        std::fs::write(&path, toml).unwrap();
        files.push(path);
    }
    let app = spawn_app_with(|settings| settings.graphs.files.extend(files)).await;
    ModelApp {
        app,
        _graphs: directory,
    }
}

fn ask(assistant_id: &str, text: &str) -> Value {
    json!({
        "assistant_id": assistant_id,
        "input": {"messages": [{"role": "user", "content": text}]},
    })
}

/// Runs `assistant_id` on a new thread with `/runs/wait`; returns the thread and the reply.
async fn wait_run(app: &TestApp, assistant_id: &str, text: &str) -> (String, ApiReply) {
    let thread_id = app.create_thread().await;
    let reply = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            ask(assistant_id, text),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    (thread_id, reply)
}

/// The run a reply's `Content-Location` names.
fn run_path(reply: &ApiReply) -> String {
    reply.headers["content-location"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Checks the thread's messages after the whole loop, and returns them.
async fn assert_agent_loop_messages(app: &TestApp, thread_id: &str, answer: &str) -> Vec<Value> {
    let state = app.get(&format!("/threads/{thread_id}/state")).await;
    let messages = state.body["values"]["messages"].as_array().unwrap().clone();
    let types: Vec<&str> = messages
        .iter()
        .map(|message| message["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["human", "ai", "tool", "ai"], "{messages:#?}");
    let call = &messages[1];
    assert_eq!(
        call["tool_calls"],
        json!([{"name": SEARCH, "args": {"query": "weather in nyc"}, "id": "call_1", "type": "tool_call"}])
    );
    assert_eq!(call["invalid_tool_calls"], json!([]));
    assert_eq!(
        call["usage_metadata"],
        json!({"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
    );
    assert_eq!(call["response_metadata"]["finish_reason"], "tool_calls");
    assert_eq!(call["response_metadata"]["model_provider"], "openai");
    assert_eq!(call["response_metadata"]["model_name"], "test-model");
    assert!(call["id"].as_str().unwrap().starts_with("lc_run--"));
    let result = &messages[2];
    assert_eq!(result["tool_call_id"], "call_1");
    assert_eq!(result["status"], "success");
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .contains("\"query\":\"weather in nyc\""),
        "{result}"
    );
    let last = &messages[3];
    assert_eq!(last["content"], answer);
    assert_eq!(last["tool_calls"], json!([]));
    assert_eq!(last["response_metadata"]["finish_reason"], "stop");
    assert_eq!(
        last["usage_metadata"],
        json!({"input_tokens": 20, "output_tokens": 7, "total_tokens": 27})
    );
    assert_ne!(last["id"], call["id"]);
    messages
}

/// Checks the second request carries the whole conversation in OpenAI form.
fn assert_second_request_converts_the_loop(request: &Value, messages: &[Value]) {
    let sent = request["messages"].as_array().unwrap();
    let roles: Vec<&str> = sent
        .iter()
        .map(|message| message["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"], "{sent:#?}");
    assert_eq!(sent[1], json!({"role": "user", "content": QUESTION}));
    assert_eq!(
        sent[2],
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": SEARCH, "arguments": "{\"query\":\"weather in nyc\"}"}}]})
    );
    assert_eq!(
        sent[3],
        json!({"role": "tool", "tool_call_id": "call_1", "content": messages[2]["content"]})
    );
}

fn script_the_loop(server: &FakeOpenAi, answer: &str) {
    server
        .push(Reply::tool_call(
            "call_1",
            SEARCH,
            &json!({"query": "weather in nyc"}),
        ))
        .push(Reply::text(answer));
}

#[tokio::test]
async fn a_non_streaming_model_runs_the_agent_loop_and_sends_what_chat_openai_would() {
    let server = FakeOpenAi::start();
    let key_variable = "SPINDLE_TEST_OPENAI_KEY_NON_STREAMING";
    std::env::set_var(key_variable, "sk-test-non-streaming");
    let options = format!(
        "stream = false\ntemperature = 0.2\nmax_tokens = 256\nsystem_prompt = \"You are a weather bot.\"\napi_key_env = \"{key_variable}\""
    );
    let model = spawn_with_graphs(&[(
        "model_agent",
        agent_graph("model_agent", &server.base_url, &options),
    )])
    .await;
    let answer = "It is sunny in nyc, 21°C.";
    script_the_loop(&server, answer);

    let (thread_id, reply) = wait_run(&model.app, "model_agent", QUESTION).await;

    assert_eq!(
        reply.body["messages"][3]["content"], answer,
        "{:?}",
        reply.body
    );
    let messages = assert_agent_loop_messages(&model.app, &thread_id, answer).await;
    assert_eq!(
        model.app.get(&run_path(&reply)).await.body["status"],
        "success"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer sk-test-non-streaming")
        );
        let body = &request.body;
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["stream"], false);
        assert!(body.get("stream_options").is_none(), "{body}");
        assert_eq!(body["tools"].as_array().unwrap().len(), 1);
        assert_eq!(body["tools"][0]["function"]["name"], SEARCH);
        assert_eq!(
            body["tools"][0]["function"]["parameters"]["required"],
            json!(["query"])
        );
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "You are a weather bot."})
        );
    }
    assert_eq!(requests[0].body["messages"].as_array().unwrap().len(), 2);
    assert_second_request_converts_the_loop(&requests[1].body, &messages);
}

#[tokio::test]
async fn a_streaming_model_assembles_split_tool_calls_and_the_usage_chunk() {
    let server = FakeOpenAi::start();
    let model = spawn_with_graphs(&[(
        "model_agent",
        agent_graph(
            "model_agent",
            &format!("{}/", server.base_url),
            "system_prompt = \"You are a weather bot.\"",
        ),
    )])
    .await;
    let answer = "It is sunny in nyc, 21°C.";
    script_the_loop(&server, answer);

    let (thread_id, _) = wait_run(&model.app, "model_agent", QUESTION).await;

    let messages = assert_agent_loop_messages(&model.app, &thread_id, answer).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(
            request.path, "/v1/chat/completions",
            "a trailing slash is trimmed"
        );
        assert_eq!(request.authorization, None, "no api_key_env, no key");
        assert_eq!(request.body["stream"], true);
        assert_eq!(
            request.body["stream_options"],
            json!({"include_usage": true})
        );
        assert!(request.body.get("temperature").is_none());
        assert!(request.body.get("max_tokens").is_none());
    }
    assert_second_request_converts_the_loop(&requests[1].body, &messages);
}

#[tokio::test]
async fn messages_tuple_streams_the_tokens_live_with_the_final_message_id() {
    let server = FakeOpenAi::start();
    let model = spawn_with_graphs(&[(
        "model_agent",
        agent_graph("model_agent", &server.base_url, ""),
    )])
    .await;
    let answer = "The weather in nyc is sunny today.";
    // The server stops after two words until the test has seen them.
    server.push(Reply::text(answer).paused_after(2));
    let thread_id = model.app.create_thread().await;
    let mut body = ask("model_agent", "hello");
    body["stream_mode"] = json!(["messages-tuple", "values"]);
    let mut reader = model.app.stream_run(&thread_id, body).await;

    let mut chunks: Vec<Value> = vec![];
    let mut events = vec![];
    while chunks.len() < 2 {
        let event = reader.next().await.expect("the stream goes on");
        if event.name == "messages" && event.data[0]["type"] == "AIMessageChunk" {
            if !event.data[0]["content"].as_str().unwrap().is_empty() {
                chunks.push(event.data[0].clone());
            }
            assert_eq!(event.data[1]["langgraph_node"], "agent");
            assert_eq!(event.data[1]["ls_provider"], "openai");
            assert_eq!(event.data[1]["ls_model_name"], "test-model");
        }
        events.push(event);
    }
    // Two words arrived while the model had not finished: they are live.
    let contents: Vec<&str> = chunks
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["The ", "weather "]);
    server.release();
    events.extend(reader.collect().await);

    let streamed: Vec<&Value> = events
        .iter()
        .filter(|event| event.name == "messages" && event.data[0]["type"] == "AIMessageChunk")
        .map(|event| &event.data[0])
        .collect();
    let final_values = events
        .iter()
        .rev()
        .find(|event| event.name == "values")
        .unwrap();
    let final_message = final_values.data["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(final_message["content"], answer);
    assert!(streamed.len() > 3, "{streamed:#?}");
    assert!(streamed
        .iter()
        .all(|chunk| chunk["id"] == final_message["id"]));
    let text: String = streamed
        .iter()
        .map(|chunk| chunk["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, answer);
    let last = streamed.last().unwrap();
    assert_eq!(last["chunk_position"], "last");
    assert_eq!(last["usage_metadata"], final_message["usage_metadata"]);
    assert_eq!(last["response_metadata"]["finish_reason"], "stop");
    // The streamed message is not sent again whole.
    let whole_ai = events
        .iter()
        .filter(|event| event.name == "messages" && event.data[0]["type"] == "ai")
        .count();
    assert_eq!(whole_ai, 0);
    assert_eq!(events.last().unwrap().name, "values");
}

/// One failure the endpoint (or the configuration) can produce, and the error it must give.
struct Failure {
    assistant: &'static str,
    reply: Option<Reply>,
    class: &'static str,
    message_contains: String,
}

#[tokio::test]
async fn every_endpoint_failure_fails_the_run_with_its_error_class_and_the_server_goes_on() {
    let server = FakeOpenAi::start();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unset_variable = "SPINDLE_TEST_OPENAI_KEY_NEVER_SET";
    std::env::remove_var(unset_variable);
    // One attempt each: this test is about the error of a failed attempt (retries have their
    // own tests below).
    let once = "retry = { max_attempts = 1 }";
    let model = spawn_with_graphs(&[
        (
            "whole",
            agent_graph(
                "whole",
                &server.base_url,
                &format!("stream = false\n{once}"),
            ),
        ),
        ("streamed", agent_graph("streamed", &server.base_url, once)),
        (
            "impatient",
            agent_graph(
                "impatient",
                &server.base_url,
                &format!("timeout_seconds = 0.3\n{once}"),
            ),
        ),
        (
            "unreachable",
            agent_graph(
                "unreachable",
                &format!("http://127.0.0.1:{closed_port}/v1"),
                once,
            ),
        ),
        (
            "keyless",
            agent_graph(
                "keyless",
                &server.base_url,
                &format!("api_key_env = \"{unset_variable}\""),
            ),
        ),
    ])
    .await;
    let failures = [
        Failure {
            assistant: "whole",
            reply: Some(Reply::fail(400, "Invalid value for 'model'")),
            class: "BadRequestError",
            message_contains: "Error code: 400 - Invalid value for 'model'".into(),
        },
        Failure {
            assistant: "streamed",
            reply: Some(Reply::fail(401, "Incorrect API key provided")),
            class: "AuthenticationError",
            message_contains: "Error code: 401 - Incorrect API key provided".into(),
        },
        Failure {
            assistant: "whole",
            reply: Some(Reply::fail(403, "Forbidden model")),
            class: "PermissionDeniedError",
            message_contains: "Error code: 403".into(),
        },
        Failure {
            assistant: "whole",
            reply: Some(Reply::fail(404, "The model does not exist")),
            class: "NotFoundError",
            message_contains: "Error code: 404 - The model does not exist".into(),
        },
        Failure {
            assistant: "streamed",
            reply: Some(Reply::fail(429, "Rate limit reached")),
            class: "RateLimitError",
            message_contains: "Error code: 429 - Rate limit reached".into(),
        },
        Failure {
            assistant: "whole",
            reply: Some(Reply::Fail {
                status: 500,
                body: "upstream exploded".into(),
            }),
            class: "InternalServerError",
            message_contains: "Error code: 500 - upstream exploded".into(),
        },
        Failure {
            assistant: "whole",
            reply: Some(Reply::Raw {
                content_type: "application/json",
                body: "{\"choices\": [".into(),
            }),
            class: "ModelResponseError",
            message_contains: "not JSON".into(),
        },
        Failure {
            assistant: "whole",
            reply: Some(Reply::Raw {
                content_type: "application/json",
                body: "{\"id\": \"chatcmpl-x\", \"object\": \"chat.completion\"}".into(),
            }),
            class: "ModelResponseError",
            message_contains: "no choices".into(),
        },
        Failure {
            assistant: "streamed",
            reply: Some(Reply::Raw {
                content_type: "text/event-stream",
                body: "data: {\"choices\": [{\"delta\": \n\n".into(),
            }),
            class: "ModelResponseError",
            message_contains: "a chunk of the event stream is not JSON".into(),
        },
        Failure {
            assistant: "streamed",
            reply: Some(Reply::Raw {
                content_type: "text/event-stream",
                body:
                    "data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"cut\"}}]}\n\n"
                        .into(),
            }),
            class: "ModelResponseError",
            message_contains: "ended before a finish_reason or [DONE]".into(),
        },
        Failure {
            assistant: "impatient",
            reply: Some(Reply::Hold),
            class: "APITimeoutError",
            message_contains: "within 0.3 seconds".into(),
        },
        Failure {
            assistant: "unreachable",
            reply: None,
            class: "APIConnectionError",
            message_contains: format!("cannot connect to http://127.0.0.1:{closed_port}/v1"),
        },
        Failure {
            assistant: "keyless",
            reply: None,
            class: "OpenAIError",
            message_contains: format!(
                "the environment variable {unset_variable} (api_key_env) is not set"
            ),
        },
    ];
    let mut expected_requests = 0;
    for failure in failures {
        if let Some(reply) = failure.reply {
            server.push(reply);
            expected_requests += 1;
        }
        let (thread_id, reply) = wait_run(&model.app, failure.assistant, QUESTION).await;
        let error = &reply.body["__error__"];
        assert_eq!(error["error"], failure.class, "{}: {error}", failure.class);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&failure.message_contains),
            "{}: {message}",
            failure.class
        );
        assert!(!message.contains("sk-"), "{message}");
        let run = model.app.get(&run_path(&reply)).await;
        assert_eq!(run.body["status"], "error", "{}", failure.class);
        let thread = model.app.get(&format!("/threads/{thread_id}")).await;
        assert_eq!(thread.body["status"], "error");
        assert_eq!(thread.body["error"]["error"], failure.class);
        assert_eq!(
            server.requests().len(),
            expected_requests,
            "{}",
            failure.class
        );
    }
    // The timed-out request was abandoned: its connection is closed.
    server.wait_for_hangups(1);

    // The server is still healthy and the same node works once the endpoint answers.
    server.push(Reply::text("Back to normal."));
    let (_, reply) = wait_run(&model.app, "whole", "hello").await;
    assert_eq!(reply.body["messages"][1]["content"], "Back to normal.");
}

#[tokio::test]
async fn invalid_tool_call_arguments_become_invalid_tool_calls_and_end_the_loop() {
    let server = FakeOpenAi::start();
    let model = spawn_with_graphs(&[(
        "model_agent",
        agent_graph("model_agent", &server.base_url, ""),
    )])
    .await;
    server.push(Reply::Answer {
        content: String::new(),
        tool_calls: vec![openai_server::ScriptedCall {
            id: "call_bad".into(),
            name: SEARCH.into(),
            arguments: "{\"query\": \"nyc".into(),
        }],
        prompt_tokens: 3,
        completion_tokens: 4,
        pause_after: None,
    });

    let (_, reply) = wait_run(&model.app, "model_agent", QUESTION).await;

    let messages = reply.body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        2,
        "no tool runs for an invalid call: {messages:#?}"
    );
    let ai = &messages[1];
    assert_eq!(ai["tool_calls"], json!([]));
    let invalid = &ai["invalid_tool_calls"][0];
    assert_eq!(invalid["id"], "call_bad");
    assert_eq!(invalid["args"], "{\"query\": \"nyc");
    assert_eq!(invalid["type"], "invalid_tool_call");
    assert!(invalid["error"]
        .as_str()
        .unwrap()
        .contains("are not valid JSON"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_endpoint_that_ignores_stream_true_and_answers_whole_still_works() {
    let server = FakeOpenAi::start();
    let model = spawn_with_graphs(&[(
        "model_agent",
        agent_graph("model_agent", &server.base_url, "stream = true"),
    )])
    .await;
    server.push(Reply::Raw {
        content_type: "application/json; charset=utf-8",
        body: json!({"id": "cmpl-9", "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Whole, not streamed."}}]})
        .to_string(),
    });

    let (_, reply) = wait_run(&model.app, "model_agent", "hello").await;

    assert_eq!(server.requests()[0].body["stream"], true);
    let answer = &reply.body["messages"][1];
    assert_eq!(
        answer["content"], "Whole, not streamed.",
        "{:?}",
        reply.body
    );
    assert_eq!(answer["response_metadata"]["id"], "cmpl-9");
    assert_eq!(answer["usage_metadata"], Value::Null);
}

#[tokio::test]
async fn cancelling_a_run_hangs_up_on_the_model_mid_stream() {
    let server = FakeOpenAi::start();
    let model = spawn_with_graphs(&[(
        "model_agent",
        agent_graph("model_agent", &server.base_url, ""),
    )])
    .await;
    server.push(Reply::text("one two three four").paused_after(2));
    let thread_id = model.app.create_thread().await;
    let run = run_id(
        &model
            .app
            .create_run(&thread_id, ask("model_agent", "hello"))
            .await,
    );
    server.wait_for_requests(1);

    let cancelled = model
        .app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel?wait=1"),
            json!(null),
        )
        .await;

    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    // The model's connection is closed rather than left to finish.
    server.wait_for_hangups(1);
    assert_eq!(model.app.run_status(&thread_id, &run).await, "interrupted");
    let messages = model.app.messages(&thread_id).await;
    assert_eq!(messages, [("human".to_owned(), "hello".to_owned())]);
}

/// A server with the agent graph `model_agent` on `server`, its model node declared with `options`.
async fn spawn_agent(server: &FakeOpenAi, options: &str) -> ModelApp {
    spawn_with_graphs(&[(
        "model_agent",
        agent_graph("model_agent", &server.base_url, options),
    )])
    .await
}

#[tokio::test]
async fn two_rate_limits_then_an_answer_make_one_successful_run_of_three_requests() {
    let server = FakeOpenAi::start();
    // The default retry policy: three attempts, as the OpenAI client makes.
    let model = spawn_agent(&server, "").await;
    server
        .push(Reply::fail(429, "Rate limit reached"))
        .push(Reply::fail(429, "Rate limit reached"))
        .push(Reply::text("Third time lucky."));

    let (thread_id, reply) = wait_run(&model.app, "model_agent", "hello").await;

    assert_eq!(
        reply.body["messages"][1]["content"], "Third time lucky.",
        "{:?}",
        reply.body
    );
    assert_eq!(
        model.app.get(&run_path(&reply)).await.body["status"],
        "success"
    );
    assert_eq!(model.app.thread_status(&thread_id).await, "idle");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|request| request.body == requests[0].body));
}

#[tokio::test]
async fn a_retry_after_is_waited_for_before_the_next_attempt() {
    let server = FakeOpenAi::start();
    // Without the header the wait would be the first backoff, at most 0.5 s.
    let model = spawn_agent(&server, "").await;
    server
        .push(Reply::fail(429, "Slow down").with_header("Retry-After", "1"))
        .push(Reply::text("Waited."));

    let (_, reply) = wait_run(&model.app, "model_agent", "hello").await;

    assert_eq!(reply.body["messages"][1]["content"], "Waited.");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test]
async fn a_bad_request_is_not_retried_and_its_error_says_so() {
    let server = FakeOpenAi::start();
    let model = spawn_agent(&server, "").await;
    server
        .push(Reply::fail(400, "Invalid value for 'messages'"))
        .push(Reply::text("never sent"));

    let (_, reply) = wait_run(&model.app, "model_agent", "hello").await;

    let error = &reply.body["__error__"];
    assert_eq!(error["error"], "BadRequestError", "{error}");
    assert_eq!(
        error["message"],
        "Error code: 400 - Invalid value for 'messages' (1 attempt made; this failure is not retried)"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn exhausted_retries_fail_the_run_saying_how_many_attempts_were_made() {
    let server = FakeOpenAi::start();
    let model = spawn_agent(
        &server,
        "retry = { max_attempts = 2, backoff_ms = 10, statuses = [503] }",
    )
    .await;
    server
        .push(Reply::fail(503, "Overloaded"))
        .push(Reply::fail(503, "Still overloaded"))
        .push(Reply::fail(500, "Not in the list"));

    let (_, reply) = wait_run(&model.app, "model_agent", "hello").await;
    let error = &reply.body["__error__"];
    assert_eq!(error["error"], "InternalServerError", "{error}");
    assert_eq!(
        error["message"],
        "Error code: 503 - Still overloaded (2 attempts made)"
    );
    assert_eq!(server.requests().len(), 2);

    // A 500 is not in this node's list: one attempt.
    let (_, reply) = wait_run(&model.app, "model_agent", "hello").await;
    assert_eq!(
        reply.body["__error__"]["message"],
        "Error code: 500 - Not in the list (1 attempt made; this failure is not retried)"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let server = FakeOpenAi::start();
    let model = spawn_agent(&server, "stream = false").await;
    server.push(Reply::Drop).push(Reply::text("Reconnected."));

    let (_, reply) = wait_run(&model.app, "model_agent", "hello").await;

    assert_eq!(
        reply.body["messages"][1]["content"], "Reconnected.",
        "{:?}",
        reply.body
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_stream_that_breaks_off_is_retried_unless_its_tokens_were_already_streamed() {
    let server = FakeOpenAi::start();
    let model = spawn_agent(&server, "").await;
    let cut = || Reply::Cut {
        content: "one two three".into(),
        pieces: 2,
    };

    // Nobody streams the tokens: the broken answer is simply asked for again.
    server.push(cut()).push(Reply::text("Whole this time."));
    let (_, reply) = wait_run(&model.app, "model_agent", "hello").await;
    assert_eq!(reply.body["messages"][1]["content"], "Whole this time.");
    assert_eq!(server.requests().len(), 2);

    // A client streams the tokens: they were sent, so asking again would send them twice.
    server.push(cut()).push(Reply::text("never sent"));
    let thread_id = model.app.create_thread().await;
    let mut body = ask("model_agent", "hello");
    body["stream_mode"] = json!(["messages-tuple"]);
    let events = model.app.stream_run(&thread_id, body).await.collect().await;
    let error = events
        .iter()
        .find(|event| event.name == "error")
        .expect("the run fails");
    assert_eq!(
        error.data["error"], "APIConnectionError",
        "{:?}",
        error.data
    );
    assert!(
        error.data["message"]
            .as_str()
            .unwrap()
            .ends_with("(1 attempt made; this failure is not retried)"),
        "{:?}",
        error.data
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn cancelling_a_run_during_a_backoff_wait_ends_it_with_no_further_request() {
    let server = FakeOpenAi::start();
    let model = spawn_agent(&server, "").await;
    let asked = Duration::from_secs(3);
    server.push(Reply::fail(503, "Overloaded").with_header("Retry-After", "3"));
    let thread_id = model.app.create_thread().await;
    let run = run_id(
        &model
            .app
            .create_run(&thread_id, ask("model_agent", "hello"))
            .await,
    );
    // The 503 has reached the node, which now waits for the asked 3 s.
    server.wait_for_answers(1);
    let first = server.requests()[0].at;

    let cancelled = model
        .app
        .post(
            &format!("/threads/{thread_id}/runs/{run}/cancel?wait=1"),
            json!(null),
        )
        .await;
    let acknowledged = Instant::now();

    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert!(
        acknowledged < first + asked,
        "the run ended only {:?} after the first request",
        acknowledged - first
    );
    assert_eq!(model.app.run_status(&thread_id, &run).await, "interrupted");
    // Had the wait outlived the run, its retry would reach the server when the wait was over.
    let retry_due = first + asked + Duration::from_millis(500);
    tokio::time::sleep_until(retry_due.into()).await;
    assert_eq!(
        server.requests().len(),
        1,
        "a request came after the cancel"
    );
}

#[test]
fn a_graph_with_a_bad_openai_node_refuses_to_load_naming_the_field() {
    let checks = [
        ("", "model = \"m\"", "no base_url"),
        ("base_url = \"http://127.0.0.1:1/v1\"", "", "no model"),
        (
            "base_url = \"http://127.0.0.1:1/v1\"",
            "model = \"m\"\ntemperature = 3.0",
            "temperature 3",
        ),
        (
            "base_url = \"http://127.0.0.1:1/v1\"",
            "model = \"m\"\ntimeout_seconds = 0",
            "timeout_seconds 0",
        ),
        (
            "base_url = \"http://127.0.0.1:1/v1\"",
            "model = \"m\"\ndelay_ms = 100",
            "delay_ms 100",
        ),
        (
            "base_url = \"localhost:1234\"",
            "model = \"m\"",
            "base_url \"localhost:1234\"",
        ),
    ];
    for (base_url, options, expected) in checks {
        let toml = format!(
            "[channels]\nmessages = \"messages\"\n\n[[nodes]]\nname = \"brain\"\nkind = \"chat_model\"\nprovider = \"openai\"\n{base_url}\n{options}\n\n[[edges]]\nfrom = \"__start__\"\nto = \"brain\"\n"
        );
        let spec = parse_spec("broken", &toml).unwrap();
        let error = Graph::from_spec(spec, &NativeNodes::default())
            .err()
            .unwrap_or_else(|| panic!("{expected}: the graph loaded"))
            .to_string();
        assert!(error.contains("graph 'broken'"), "{error}");
        assert!(error.contains("node 'brain'"), "{error}");
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

#[test]
fn the_commented_real_model_example_of_the_agent_graph_loads() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/graphs/agent.toml"
    ))
    .unwrap();
    let (graph, example) = text.split_once("# [[nodes]]").unwrap();
    let commented = format!("# [[nodes]]{example}");
    let example: Vec<&str> = commented
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .collect();
    let start = graph.find("[[nodes]]\nname = \"agent\"").unwrap();
    let end = start + 1 + graph[start + 1..].find("[[nodes]]").unwrap();
    let with_model = format!(
        "{}{}\n\n{}",
        &graph[..start],
        example.join("\n"),
        &graph[end..]
    );
    let spec = parse_spec("agent", &with_model).unwrap();
    assert!(
        Graph::from_spec(spec, &NativeNodes::default()).is_ok(),
        "{with_model}"
    );
    // As shipped, the agent graph keeps the offline scripted model.
    assert!(graph.contains("provider = \"scripted\""));
}
