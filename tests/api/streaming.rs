//! Streaming: SSE framing and headers, the event order of every stream mode, event ids and
//! `Last-Event-ID` resume, late joiners, disconnect behaviour, the end of a rolled-back run's
//! stream, the slow-subscriber cutoff, `/wait` keep-alives and errors, and stateless runs.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{run_id, spawn_app, spawn_app_with, TestApp, DEADLINE};
use crate::sse::{names, SseEvent, SseReader};

async fn open(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> SseReader {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(body) = body {
        request = request.json(&body);
    }
    SseReader::new(request.send().await.unwrap())
}

fn weather(modes: &[&str]) -> Value {
    json!({
        "assistant_id": "agent",
        "input": {"messages": [{"role": "user", "content": "what is the weather in sf"}]},
        "config": {"configurable": {"delay": 0}},
        "stream_mode": modes,
    })
}

fn gated(text: &str, gate: &str, extra: Value) -> Value {
    let mut body = json!({
        "assistant_id": "gated",
        "input": {"messages": [{"role": "user", "content": text}]},
        "config": {"configurable": {"gate": gate}},
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// The run id a stream's `Content-Location` names.
fn run_of(reader: &SseReader) -> String {
    let location = reader.header("content-location");
    location.rsplit('/').next().unwrap().to_owned()
}

/// Polls until the run's status is `status`.
async fn wait_for_run_status(app: &TestApp, thread_id: &str, run_id: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let current = app.run_status(thread_id, run_id).await;
        if current == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} did not become {status}; it is {current}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stream_follows_the_reference_order_for_values_updates_messages_and_debug() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let mut reader = app
        .stream_run(
            &thread_id,
            weather(&["values", "updates", "messages-tuple", "debug"]),
        )
        .await;
    assert_eq!(
        reader.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(reader.header("cache-control"), "no-store");
    let location = reader.header("location");
    let content_location = reader.header("content-location");
    assert!(location.ends_with("/stream") && location.starts_with(&content_location));
    let events = reader.collect().await;
    let text = String::from_utf8(reader.raw.clone()).unwrap();
    assert!(text.starts_with("event: metadata\r\ndata: {"), "{text:.80}");
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in the framing"
    );
    assert!(
        !text.contains("\r\nid: "),
        "a non-resumable run sends no ids"
    );

    let run_id = content_location.rsplit('/').next().unwrap().to_owned();
    assert_eq!(events[0].data, json!({"run_id": run_id, "attempt": 1}));
    let kind = |event: &SseEvent| match event.name.as_str() {
        "debug" => format!("debug:{}", event.data["type"].as_str().unwrap()),
        other => other.to_owned(),
    };
    let mut kinds: Vec<String> = events.iter().map(kind).collect();
    // The answer streams as several chunks; fold them into one for the order check.
    kinds.dedup();
    let step = [
        "debug:task",
        "messages",
        "updates",
        "debug:task_result",
        "values",
        "debug:checkpoint",
    ];
    let mut expected = vec!["metadata", "debug:checkpoint", "values", "debug:checkpoint"];
    for _ in 0..3 {
        expected.extend(step);
    }
    assert_eq!(kinds, expected);

    let updates: Vec<&str> = events
        .iter()
        .filter(|event| event.name == "updates")
        .map(|event| {
            event
                .data
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()
        })
        .collect();
    assert_eq!(updates, ["agent", "tools", "agent"]);
    let last_values = &events
        .iter()
        .rev()
        .find(|event| event.name == "values")
        .unwrap()
        .data;
    let answer = last_values["messages"][3].clone();
    assert_eq!(last_values["messages"].as_array().unwrap().len(), 4);

    // The answer's chunks share its id and add up to its text; metadata names the node.
    let chunks: Vec<&SseEvent> = events
        .iter()
        .filter(|event| event.name == "messages" && event.data[0]["type"] == "AIMessageChunk")
        .collect();
    assert!(chunks.len() > 3, "the answer streams word by word");
    assert!(chunks
        .iter()
        .all(|chunk| chunk.data[0]["id"] == answer["id"]));
    let text: String = chunks
        .iter()
        .map(|chunk| chunk.data[0]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, answer["content"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap().data[0]["chunk_position"], "last");
    let metadata = &chunks[0].data[1];
    assert_eq!(metadata["langgraph_node"], "agent");
    assert_eq!(metadata["langgraph_step"], 3);
    assert_eq!(metadata["thread_id"], thread_id.as_str());
    assert_eq!(metadata["ls_integration"], "langgraph");

    let tool_call = events
        .iter()
        .find(|event| event.name == "messages")
        .unwrap();
    assert_eq!(tool_call.data[0]["type"], "ai");
    assert_eq!(
        tool_call.data[0]["tool_calls"][0]["name"],
        "tavily_search_results_json"
    );
    let first_checkpoint = &events[1].data;
    assert_eq!(first_checkpoint["step"], -1);
    assert_eq!(first_checkpoint["payload"]["next"], json!(["__start__"]));
    assert_eq!(first_checkpoint["payload"]["metadata"]["source"], "input");
    assert_eq!(first_checkpoint["payload"]["parent_config"], Value::Null);
    // The stream closes once the run has ended and storage says so.
    assert_eq!(app.run_status(&thread_id, &run_id).await, "success");
}

#[tokio::test]
async fn legacy_messages_tasks_checkpoints_and_events_modes_have_their_shapes() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let events = app
        .stream_run(
            &thread_id,
            weather(&["messages", "tasks", "checkpoints", "events"]),
        )
        .await
        .collect()
        .await;

    // Legacy messages: metadata once per message id, whole messages complete, the streamed
    // answer as partials whose text grows.
    let metadata_ids: Vec<String> = events
        .iter()
        .filter(|event| event.name == "messages/metadata")
        .map(|event| {
            event
                .data
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(
        metadata_ids.len(),
        3,
        "tool call, tool result, streamed answer"
    );
    let complete: Vec<&str> = events
        .iter()
        .filter(|event| event.name == "messages/complete")
        .map(|event| event.data[0]["type"].as_str().unwrap())
        .collect();
    assert_eq!(complete, ["ai", "tool"]);
    let partials: Vec<String> = events
        .iter()
        .filter(|event| event.name == "messages/partial")
        .map(|event| event.data[0]["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(partials.len() > 3);
    for pair in partials.windows(2) {
        assert!(
            pair[1].starts_with(&pair[0]) && pair[1].len() > pair[0].len(),
            "{pair:?}"
        );
    }
    assert!(partials.last().unwrap().starts_with("The weather in sf is"));
    assert!(events
        .iter()
        .filter(|event| event.name == "messages/partial")
        .all(|event| event.data[0]["type"] == "ai"));

    // Tasks: a start then a result for each node.
    let tasks: Vec<(String, bool)> = events
        .iter()
        .filter(|event| event.name == "tasks")
        .map(|event| {
            (
                event.data["name"].as_str().unwrap().to_owned(),
                event.data.get("result").is_some(),
            )
        })
        .collect();
    let expected: Vec<(String, bool)> = ["agent", "tools", "agent"]
        .iter()
        .flat_map(|node| [(node.to_string(), false), (node.to_string(), true)])
        .collect();
    assert_eq!(tasks, expected);

    // Checkpoints: input, start, then one per step, with config but no checkpoint key.
    let checkpoints: Vec<&SseEvent> = events
        .iter()
        .filter(|event| event.name == "checkpoints")
        .collect();
    assert_eq!(checkpoints.len(), 5);
    assert!(checkpoints
        .iter()
        .all(|event| event.data.get("checkpoint").is_none()));
    assert_eq!(checkpoints[4].data["next"], json!([]));
    assert_eq!(
        checkpoints[4].data["parent_config"]["configurable"]["checkpoint_id"],
        checkpoints[3].data["config"]["configurable"]["checkpoint_id"]
    );

    // Events: the graph's chain start first and end last, node chains and model tokens between.
    let lc: Vec<(&str, &str)> = events
        .iter()
        .filter(|event| event.name == "events")
        .map(|event| {
            (
                event.data["event"].as_str().unwrap(),
                event.data["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(lc.first(), Some(&("on_chain_start", "LangGraph")));
    assert_eq!(lc.last(), Some(&("on_chain_end", "LangGraph")));
    for wanted in [
        ("on_chain_start", "tools"),
        ("on_chain_end", "agent"),
        ("on_chat_model_start", "scripted"),
        ("on_chat_model_stream", "scripted"),
        ("on_chat_model_end", "scripted"),
    ] {
        assert!(lc.contains(&wanted), "{wanted:?} missing from {lc:?}");
    }
    assert_eq!(
        names(&events)
            .iter()
            .filter(|name| **name == "values" || **name == "updates")
            .count(),
        0
    );
}

#[tokio::test]
async fn custom_events_reach_the_stream_in_order() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let events = app.stream_run(&thread_id,
        json!({"assistant_id": "emitter", "input": {}, "config": {"configurable": {"events": 5}}, "stream_mode": ["custom", "updates"]}),
    )
    .await
    .collect()
    .await;
    assert_eq!(
        names(&events),
        ["metadata", "custom", "custom", "custom", "custom", "custom", "updates"]
    );
    let indexes: Vec<i64> = events[1..6]
        .iter()
        .map(|event| event.data["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn resumable_ids_increase_and_last_event_id_resumes_exactly_after_it() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let mut body = weather(&["values", "updates", "messages-tuple"]);
    body["stream_resumable"] = json!(true);
    let mut reader = app.stream_run(&thread_id, body).await;
    let run_id = run_of(&reader);
    let live = reader.collect().await;
    let ids: Vec<u64> = live
        .iter()
        .map(|event| event.id.expect("every event has an id"))
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());

    // The run has ended; its events are retained. `-` replays everything.
    let all = app
        .join_stream(&thread_id, &run_id, Some("-"))
        .await
        .collect()
        .await;
    assert_eq!(
        all.iter()
            .map(|event| event.id.unwrap())
            .collect::<Vec<_>>(),
        ids
    );
    let huge = app
        .join_stream(&thread_id, &run_id, Some(&u64::MAX.to_string()))
        .await;
    assert!({
        let mut huge = huge;
        huge.collect().await
    }
    .is_empty());
    for after in [
        1,
        2,
        ids.len() as u64 / 2,
        ids.len() as u64 - 1,
        ids.len() as u64,
    ] {
        let resumed = app
            .join_stream(&thread_id, &run_id, Some(&after.to_string()))
            .await
            .collect()
            .await;
        let got: Vec<u64> = resumed.iter().map(|event| event.id.unwrap()).collect();
        assert_eq!(
            got,
            ((after + 1)..=ids.len() as u64).collect::<Vec<_>>(),
            "after {after}"
        );
        let same: Vec<&Value> = resumed.iter().map(|event| &event.data).collect();
        let expected: Vec<&Value> = live[after as usize..]
            .iter()
            .map(|event| &event.data)
            .collect();
        assert_eq!(same, expected);
    }
}

#[tokio::test]
async fn a_reconnect_during_the_run_gets_every_later_event_exactly_once() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let mut first = app.stream_run(&thread_id, gated("hello", "resume", json!({"stream_resumable": true, "stream_mode": ["values", "updates", "messages-tuple"]}))).await;
    let run_id = run_of(&first);
    let mut seen = vec![];
    // metadata and the input values arrive before the gate.
    for _ in 0..2 {
        seen.push(first.next().await.unwrap());
    }
    app.gates.arrivals("resume", 1).await;
    drop(first);
    let last = seen.last().unwrap().id.unwrap().to_string();
    let mut second = app.join_stream(&thread_id, &run_id, Some(&last)).await;
    app.gates.open("resume");
    seen.extend(second.collect().await);
    let ids: Vec<u64> = seen.iter().map(|event| event.id.unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert!(ids.len() > 5, "{:?}", names(&seen));
    assert_eq!(seen.last().unwrap().name, "values");
}

#[tokio::test]
async fn a_late_joiner_gets_the_replay_buffer_then_live_events_and_a_filter() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let reply = app
        .create_run(
            &thread_id,
            gated(
                "late",
                "late",
                json!({"stream_mode": ["values", "updates"]}),
            ),
        )
        .await;
    let run_id = run_id(&reply);
    app.gates.arrivals("late", 1).await;
    let mut everything = app.join_stream(&thread_id, &run_id, None).await;
    let mut updates_only = open(
        &app,
        reqwest::Method::GET,
        &format!("/threads/{thread_id}/runs/{run_id}/stream?stream_mode=updates"),
        None,
    )
    .await;
    assert_eq!(everything.next().await.unwrap().name, "metadata");
    assert_eq!(everything.next().await.unwrap().name, "values");
    // While the run waits at its gate, heartbeats keep the stream alive.
    assert_eq!(everything.raw_chunk().await, b": heartbeat\r\n\r\n");
    // A Last-Event-ID means nothing without ids: such a join still gets the replay buffer.
    let mut with_id = app.join_stream(&thread_id, &run_id, Some("3")).await;
    assert_eq!(with_id.next().await.unwrap().name, "metadata");
    assert_eq!(with_id.next().await.unwrap().name, "values");
    app.gates.open("late");
    let rest = everything.collect().await;
    assert_eq!(names(&rest), ["updates", "values", "updates", "values"]);
    assert!(rest.iter().all(|event| event.id.is_none()));
    assert_eq!(
        names(&updates_only.collect().await),
        ["metadata", "updates", "updates"]
    );
    // A finished run that was not resumable keeps nothing: the join ends at once, empty.
    assert!(app
        .join_stream(&thread_id, &run_id, None)
        .await
        .collect()
        .await
        .is_empty());
    // An unknown run: one error event.
    let unknown = app
        .join_stream(&thread_id, &uuid(), None)
        .await
        .collect()
        .await;
    assert_eq!(names(&unknown), ["error"]);
    assert_eq!(unknown[0].data["message"], "404: Run not found");
}

fn uuid() -> String {
    "00000000-0000-4000-8000-000000000001".into()
}

#[tokio::test]
async fn on_disconnect_cancel_interrupts_the_run_and_continue_keeps_it() {
    let app = spawn_app().await;
    // POST …/runs/stream with on_disconnect cancel.
    let cancelled = app.create_thread().await;
    let mut reader = app
        .stream_run(
            &cancelled,
            gated("bye", "cancel", json!({"on_disconnect": "cancel"})),
        )
        .await;
    let run = run_of(&reader);
    assert_eq!(reader.next().await.unwrap().name, "metadata");
    app.gates.arrivals("cancel", 1).await;
    drop(reader);
    wait_for_run_status(&app, &cancelled, &run, "interrupted").await;
    app.wait_for_thread_status(&cancelled, "interrupted").await;

    // A background run ignores on_disconnect: its response ends at once, the run goes on.
    let background = app.create_thread().await;
    let reply = app
        .create_run(
            &background,
            gated("bg", "background", json!({"on_disconnect": "cancel"})),
        )
        .await;
    let run = run_id(&reply);
    app.gates.arrivals("background", 1).await;
    app.gates.open("background");
    app.join(&background, &run).await;
    assert_eq!(app.run_status(&background, &run).await, "success");

    // The default (continue): the run goes on and succeeds.
    let kept = app.create_thread().await;
    let mut reader = app
        .stream_run(&kept, gated("stay", "continue", json!({})))
        .await;
    let run = run_of(&reader);
    assert_eq!(reader.next().await.unwrap().name, "metadata");
    app.gates.arrivals("continue", 1).await;
    drop(reader);
    app.gates.open("continue");
    app.join(&kept, &run).await;
    assert_eq!(app.run_status(&kept, &run).await, "success");

    // /wait with on_disconnect cancel.
    let waited = app.create_thread().await;
    let request = app
        .client
        .post(format!("{}/threads/{waited}/runs/wait", app.address))
        .json(&gated("wait", "wait", json!({"on_disconnect": "cancel"})))
        .send();
    let response = request.await.unwrap();
    let run = response.headers()["content-location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    app.gates.arrivals("wait", 1).await;
    drop(response);
    wait_for_run_status(&app, &waited, &run, "interrupted").await;

    // Join-stream and join with cancel_on_disconnect=true.
    for (gate, path) in [("join-stream", "stream"), ("join", "join")] {
        let thread_id = app.create_thread().await;
        let run = run_id(
            &app.create_run(&thread_id, gated("j", gate, json!({})))
                .await,
        );
        app.gates.arrivals(gate, 1).await;
        let response = app
            .client
            .get(format!(
                "{}/threads/{thread_id}/runs/{run}/{path}?cancel_on_disconnect=true",
                app.address
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        wait_for_run_status(&app, &thread_id, &run, "interrupted").await;
    }
}

/// Polls until the run is `interrupted`, failing if that takes more than `within`.
async fn interrupted_within(app: &TestApp, thread_id: &str, run_id: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let current = app.run_status(thread_id, run_id).await;
        if current == "interrupted" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} was not cancelled within {within:?} of its client going away; it is {current}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_run_within_a_second_whatever_the_heartbeat() {
    // The default heartbeat: a disconnect is noticed by a write, and heartbeats are 5 s apart.
    let app = spawn_app_with(|settings| settings.stream.heartbeat_seconds = 5.0).await;
    let within = Duration::from_millis(1500);

    let thread_id = app.create_thread().await;
    let mut reader = app
        .stream_run(
            &thread_id,
            gated("bye", "stream-gone", json!({"on_disconnect": "cancel"})),
        )
        .await;
    let run = run_of(&reader);
    assert_eq!(reader.next().await.unwrap().name, "metadata");
    app.gates.arrivals("stream-gone", 1).await;
    drop(reader);
    interrupted_within(&app, &thread_id, &run, within).await;

    let thread_id = app.create_thread().await;
    let response = app
        .client
        .post(format!("{}/threads/{thread_id}/runs/wait", app.address))
        .json(&gated(
            "bye",
            "wait-gone",
            json!({"on_disconnect": "cancel"}),
        ))
        .send()
        .await
        .unwrap();
    let run = response.headers()["content-location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    app.gates.arrivals("wait-gone", 1).await;
    drop(response);
    interrupted_within(&app, &thread_id, &run, within).await;

    for (gate, path) in [("join-stream-gone", "stream"), ("join-gone", "join")] {
        let thread_id = app.create_thread().await;
        let run = run_id(
            &app.create_run(&thread_id, gated("j", gate, json!({})))
                .await,
        );
        app.gates.arrivals(gate, 1).await;
        let response = app
            .client
            .get(format!(
                "{}/threads/{thread_id}/runs/{run}/{path}?cancel_on_disconnect=true",
                app.address
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        interrupted_within(&app, &thread_id, &run, within).await;
    }
}

#[tokio::test]
async fn a_rolled_back_run_s_stream_ends_cleanly_and_promptly() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let mut first = app
        .stream_run(&thread_id, gated("first", "never", json!({})))
        .await;
    let first_run = run_of(&first);
    assert_eq!(first.next().await.unwrap().name, "metadata");
    app.gates.arrivals("never", 1).await;
    let mut second = app
        .stream_run(
            &thread_id,
            gated("second", "open", json!({"multitask_strategy": "rollback"})),
        )
        .await;
    // The first stream ends without an error event, while its gate is still closed.
    let rest = first.collect().await;
    assert!(
        rest.iter().all(|event| event.name != "error"),
        "{:?}",
        names(&rest)
    );
    assert_eq!(app.run_status(&thread_id, &first_run).await, Value::Null);
    app.gates.open("open");
    let events = second.collect().await;
    assert_eq!(events[0].name, "metadata");
    let last = &events.last().unwrap().data;
    assert_eq!(last["messages"][0]["content"], "second");
    assert_eq!(last["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn interrupted_deleted_and_cancelled_runs_end_their_streams_without_an_error() {
    let app = spawn_app().await;
    for (index, how) in ["interrupt", "delete", "cancel", "delete thread"]
        .iter()
        .enumerate()
    {
        let thread_id = app.create_thread().await;
        let gate = format!("held-{index}");
        let mut reader = app
            .stream_run(&thread_id, gated("held", &gate, json!({})))
            .await;
        let run = run_of(&reader);
        assert_eq!(reader.next().await.unwrap().name, "metadata");
        app.gates.arrivals(&gate, 1).await;
        match *how {
            "interrupt" => {
                let next = gated("next", "open", json!({"multitask_strategy": "interrupt"}));
                assert_eq!(app.create_run(&thread_id, next).await.status, 200);
            }
            "delete" => {
                let path = format!("/threads/{thread_id}/runs/{run}");
                assert_eq!(app.delete(&path).await.status, 204);
            }
            "cancel" => {
                let path = format!("/threads/{thread_id}/runs/{run}/cancel");
                assert_eq!(app.post(&path, json!({})).await.status, 202);
            }
            _ => assert_eq!(
                app.delete(&format!("/threads/{thread_id}")).await.status,
                204
            ),
        }
        let rest = reader.collect().await;
        assert!(
            rest.iter().all(|event| event.name == "values"),
            "{how}: {:?}",
            names(&rest)
        );
    }
    app.gates.open("open");
}

#[tokio::test]
async fn a_stalled_subscriber_is_cut_off_and_the_others_get_everything() {
    let app = spawn_app_with(|settings| settings.stream.subscriber_events = 256).await;
    let thread_id = app.create_thread().await;
    // 64 MB of events, 4 per millisecond: far more than the socket buffers between the server
    // and a client that does not read, at a pace a reading client keeps up with.
    let count = 4000;
    let mut stalled = app.stream_run(&thread_id,
        json!({"assistant_id": "emitter", "input": {}, "config": {"configurable": {"events": count, "size": 16384, "gate": "big", "burst": 4}}, "stream_mode": ["custom"]}),
    )
    .await;
    let run = run_of(&stalled);
    app.gates.arrivals("big", 1).await;
    let mut reader = app.join_stream(&thread_id, &run, None).await;
    assert_eq!(reader.next().await.unwrap().name, "metadata");
    app.gates.open("big");
    let read = reader.collect().await;
    let indexes: Vec<u64> = read
        .iter()
        .map(|event| event.data["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indexes,
        (0..count).collect::<Vec<_>>(),
        "the reading subscriber got every event in order"
    );
    // The stalled one gets what fitted in its buffers, then a clear error, then the end.
    let got = stalled.collect().await;
    let last = got.last().unwrap();
    assert_eq!(
        last.name,
        "error",
        "{:?}",
        &names(&got)[got.len().saturating_sub(3)..]
    );
    assert_eq!(last.data["error"], "StreamOverflow");
    assert!(got.len() < count as usize, "it was cut off before the end");
    assert_eq!(app.run_status(&thread_id, &run).await, "success");
}

#[tokio::test]
async fn wait_keeps_the_connection_alive_and_reports_errors() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let response = app
        .client
        .post(format!("{}/threads/{thread_id}/runs/wait", app.address))
        .json(&gated("slow", "keepalive", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with("/join"));
    let mut response = response;
    let first = tokio::time::timeout(DEADLINE, response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        &first[..],
        b"\n",
        "a keep-alive newline while the run waits"
    );
    app.gates.open("keepalive");
    let mut body = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let values: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(values["messages"][1]["content"], "You said: slow");

    let failed = app
        .post(
            &format!("/threads/{thread_id}/runs/wait"),
            json!({"assistant_id": "faulty", "input": {}, "config": {"configurable": {"fault": "error"}}}),
        )
        .await;
    assert_eq!(failed.status, 200);
    assert_eq!(
        failed.body,
        json!({"__error__": {"error": "ValueError", "message": "the fault node failed on purpose"}})
    );
    // The stream of a failing run ends with the error event.
    let events = app.stream_run(&thread_id, json!({"assistant_id": "faulty", "input": {}, "config": {"configurable": {"fault": "error"}}}))
        .await
        .collect()
        .await;
    assert_eq!(events.last().unwrap().name, "error");
    assert_eq!(events.last().unwrap().data["error"], "ValueError");
}

#[tokio::test]
async fn stateless_runs_delete_their_thread_unless_asked_to_keep_it() {
    let app = spawn_app().await;
    let body = |on_completion: Option<&str>| {
        let mut body = json!({"assistant_id": "agent", "input": {"messages": "hi"}, "config": {"configurable": {"delay": 0}}});
        if let Some(on_completion) = on_completion {
            body["on_completion"] = json!(on_completion);
        }
        body
    };
    let deleted = app.post("/runs/wait", body(None)).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(deleted.body["messages"][1]["content"], "You said: hi");
    let location = deleted.headers["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    let thread_path = location.split("/runs/").next().unwrap().to_owned();
    wait_for_gone(&app, &thread_path).await;

    let kept = app.post("/runs/wait", body(Some("keep"))).await;
    let location = kept.headers["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    let thread_path = location.split("/runs/").next().unwrap();
    let state = app.get(&format!("{thread_path}/state")).await;
    assert_eq!(
        state.body["values"]["messages"][1]["content"],
        "You said: hi"
    );
    assert_eq!(app.get(&location).await.body["status"], "success");

    // Stateless stream: events, then the temporary thread goes.
    let mut reader = open(
        &app,
        reqwest::Method::POST,
        "/runs/stream",
        Some(body(None)),
    )
    .await;
    let location = reader.header("content-location");
    let events = reader.collect().await;
    assert_eq!(names(&events), ["metadata", "values", "values"]);
    wait_for_gone(&app, location.split("/runs/").next().unwrap()).await;

    // Background and batch.
    let run = app.post("/runs", body(Some("keep"))).await;
    assert_eq!(run.status, 200);
    app.join(
        run.body["thread_id"].as_str().unwrap(),
        run.body["run_id"].as_str().unwrap(),
    )
    .await;
    let batch = app
        .post("/runs/batch", json!([body(None), body(Some("keep"))]))
        .await;
    assert_eq!(batch.status, 200, "{:?}", batch.body);
    let runs = batch.body.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    wait_for_gone(
        &app,
        &format!("/threads/{}", runs[0]["thread_id"].as_str().unwrap()),
    )
    .await;
    let kept_thread = runs[1]["thread_id"].as_str().unwrap();
    app.join(kept_thread, runs[1]["run_id"].as_str().unwrap())
        .await;
    assert_eq!(app.thread_status(kept_thread).await, "idle");

    // A bad item fails the whole batch before anything runs.
    let before = app.row_counts().await;
    let bad = app
        .post("/runs/batch", json!([body(None), {"assistant_id": 5}]))
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.detail().contains("item 1"), "{}", bad.detail());
    let mut bad_mode = body(Some("keep"));
    bad_mode["stream_mode"] = json!("bogus");
    let bad = app
        .post("/runs/batch", json!([body(Some("keep")), bad_mode]))
        .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert!(
        bad.detail().starts_with("request body item 1"),
        "{}",
        bad.detail()
    );
    let unknown = app
        .post(
            "/runs/batch",
            json!([body(Some("keep")), {"assistant_id": uuid()}]),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(app.row_counts().await, before);

    // A cancelled stateless run's thread goes too, by cancel or by its client going away.
    let mut reader = open(
        &app,
        reqwest::Method::POST,
        "/runs/stream",
        Some(json!({"assistant_id": "gated", "input": {"messages": "x"}, "config": {"configurable": {"gate": "stateless"}}, "on_disconnect": "cancel"})),
    )
    .await;
    let location = reader.header("content-location");
    assert_eq!(reader.next().await.unwrap().name, "metadata");
    app.gates.arrivals("stateless", 1).await;
    drop(reader);
    wait_for_gone(&app, location.split("/runs/").next().unwrap()).await;
    let run = app
        .post("/runs", json!({"assistant_id": "gated", "input": {"messages": "x"}, "config": {"configurable": {"gate": "stateless-cancel"}}}))
        .await;
    let thread_id = run.body["thread_id"].as_str().unwrap();
    app.gates.arrivals("stateless-cancel", 1).await;
    let cancel = app
        .post(
            &format!(
                "/threads/{thread_id}/runs/{}/cancel",
                run.body["run_id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 202);
    wait_for_gone(&app, &format!("/threads/{thread_id}")).await;
    let resume = app
        .post(
            "/runs",
            json!({"assistant_id": "agent", "command": {"resume": "x"}}),
        )
        .await;
    assert_eq!(resume.status, 400);
    assert_eq!(
        resume.detail(),
        "You must provide a thread_id when resuming."
    );
}

async fn wait_for_gone(app: &TestApp, thread_path: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while app.get(thread_path).await.status != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{thread_path} was not deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_resumable_run_keeps_its_events_within_a_byte_budget_and_a_reconnect_sees_the_gap() {
    let app = spawn_app_with(|settings| settings.stream.resumable_bytes = 64 * 1024).await;
    let thread_id = app.create_thread().await;
    // 40 events of 10 KB: about 400 KB, far more than the 64 KB a resumable run may keep, and
    // far fewer events than the 10,000 it may keep by count.
    let mut events = app
        .stream_run(
            &thread_id,
            json!({"assistant_id": "emitter", "input": {}, "stream_resumable": true,
                   "config": {"configurable": {"events": 40, "size": 10_000}},
                   "stream_mode": ["custom"]}),
        )
        .await;
    let run = run_of(&events);
    let live = events.collect().await;
    assert_eq!(
        live.iter().filter(|event| event.name == "custom").count(),
        40
    );

    let replayed = app
        .join_stream(&thread_id, &run, Some("0"))
        .await
        .collect()
        .await;
    assert_eq!(replayed[0].name, "error", "{:?}", names(&replayed));
    assert_eq!(replayed[0].data["error"], "StreamGap");
    // The gap names the oldest event kept: only the newest few fit in 64 KB.
    let message = replayed[0].data["message"].as_str().unwrap();
    let oldest: u64 = message
        .rsplit(' ')
        .next()
        .and_then(|word| word.trim_end_matches('.').parse().ok())
        .unwrap_or_else(|| panic!("no oldest id in {message:?}"));
    let last = live.last().and_then(|event| event.id).unwrap();
    assert!(last - oldest < 10, "kept {oldest}..={last} of 40 events");
    // A reconnect after the oldest kept event gets the rest, in order, to the end.
    let rest = app
        .join_stream(&thread_id, &run, Some(&oldest.to_string()))
        .await
        .collect()
        .await;
    let ids: Vec<u64> = rest.iter().filter_map(|event| event.id).collect();
    assert_eq!(ids, ((oldest + 1)..=last).collect::<Vec<_>>());
}
