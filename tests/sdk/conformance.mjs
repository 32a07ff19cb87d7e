// Spindle conformance through the official JavaScript SDK (@langchain/langgraph-sdk).
//
// Run by tests/sdk_js.rs against the real `spindle` binary; SPINDLE_URL names the server.
// Each check prints `ok <name>`; any failure throws and exits non-zero.

import assert from "node:assert/strict";
import { Client } from "@langchain/langgraph-sdk";

const client = new Client({ apiUrl: process.env.SPINDLE_URL });

const ask = (text) => ({ messages: [{ role: "user", content: text }] });
const types = (messages) => messages.map((message) => message.type);
const show = (value) => JSON.stringify(value, null, 1);

// Asserts the weather exchange for `place`: human, ai with a tool call, tool, ai answer.
function assertWeather(messages, place) {
  assert.deepEqual(types(messages), ["human", "ai", "tool", "ai"], show(messages));
  assert.equal(messages[0].content, `what's the weather in ${place}?`, show(messages));
  assert.ok(messages[1].tool_calls?.length > 0, show(messages));
  assert.equal(messages[1].tool_calls[0].name, "tavily_search_results_json", show(messages));
  assert.ok(String(messages[3].content).includes(`The weather in ${place}`), show(messages));
}

async function collect(stream) {
  const events = [];
  for await (const chunk of stream) events.push(chunk);
  return events;
}

async function checkRollback() {
  const thread = await client.threads.create();
  const first = await client.runs.create(thread.thread_id, "agent", {
    input: ask("what's the weather in sf?"),
  });
  const second = await client.runs.create(thread.thread_id, "agent", {
    input: ask("what's the weather in nyc?"),
    multitaskStrategy: "rollback",
  });
  await client.runs.join(thread.thread_id, second.run_id);
  const state = await client.threads.getState(thread.thread_id);
  const messages = state.values.messages;
  assertWeather(messages, "nyc");
  for (const message of messages) {
    const said = JSON.stringify([message.content, message.tool_calls ?? []]);
    assert.ok(!said.includes("sf"), show(messages));
  }
  await assert.rejects(client.runs.get(thread.thread_id, first.run_id), (error) => {
    assert.equal(error.status, 404, String(error));
    return true;
  });
}

async function checkStream() {
  const thread = await client.threads.create();
  const events = await collect(
    client.runs.stream(thread.thread_id, "agent", {
      input: ask("what's the weather in nyc?"),
      streamMode: ["values", "updates"],
    }),
  );
  const names = events.map((event) => event.event);
  assert.equal(names[0], "metadata", show(events));
  assert.equal(typeof events[0].data.run_id, "string", show(events));
  assert.ok(names.includes("values") && names.includes("updates"), show(names));
  const unexpected = names.filter((name) => !["metadata", "values", "updates"].includes(name));
  assert.deepEqual(unexpected, [], show(events));
  const updated = events
    .filter((event) => event.event === "updates")
    .flatMap((event) => Object.keys(event.data));
  assert.deepEqual(updated, ["agent", "tools", "agent"], show(events));
  const values = events.filter((event) => event.event === "values");
  assertWeather(values.at(-1).data.messages, "nyc");
}

async function checkStatelessWait() {
  const values = await client.runs.wait(null, "agent", { input: ask("hi") });
  const last = values.messages.at(-1);
  assert.equal(last.type, "ai", show(values));
  assert.equal(last.content, "You said: hi", show(values));
}

async function checkJoinStream() {
  const thread = await client.threads.create();
  const run = await client.runs.create(thread.thread_id, "agent", {
    input: ask("what's the weather in sf?"),
    streamMode: ["values", "updates"],
    streamResumable: true,
  });
  const events = await collect(client.runs.joinStream(thread.thread_id, run.run_id));
  const names = events.map((event) => event.event);
  assert.equal(names[0], "metadata", show(events));
  assert.ok(names.includes("values"), show(names));
  const values = events.filter((event) => event.event === "values");
  assertWeather(values.at(-1).data.messages, "sf");
}

for (const [name, check] of [
  ["check_rollback", checkRollback],
  ["check_stream", checkStream],
  ["check_stateless_wait", checkStatelessWait],
  ["check_join_stream", checkJoinStream],
]) {
  await check();
  console.log(`ok ${name}`);
}
