"""Spindle conformance through the official Python SDK (langgraph-sdk).

Run by tests/sdk.rs against the real `spindle` binary; SPINDLE_URL names the server.
Each check prints `ok <name>`; any failure raises and exits non-zero.
"""

import asyncio
import os

import httpx
from langchain_core.messages import convert_to_messages
from langgraph_sdk import get_client

URL = os.environ["SPINDLE_URL"]
SLOW = {"configurable": {"delay": 0.3}}
FAST = {"configurable": {"delay": 0}}


def ask(text):
    return {"messages": [{"role": "user", "content": text}]}


def humans(state):
    return [m.content for m in convert_to_messages(state["values"]["messages"]) if m.type == "human"]


async def expect_status(coroutine, status):
    try:
        await coroutine
    except httpx.HTTPStatusError as error:
        assert error.response.status_code == status, (error.response.status_code, error.response.text)
        assert "detail" in error.response.json()
        return error.response.json()["detail"]
    raise AssertionError(f"expected HTTP {status}")


async def check_reject(client):
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.create(tid, "agent", input=ask("weather in sf"), config=SLOW)
    detail = await expect_status(
        client.runs.create(tid, "agent", input=ask("weather in nyc"), multitask_strategy="reject"), 409)
    assert detail.startswith("Thread is already running a task"), detail
    await client.runs.join(tid, first["run_id"])
    runs = await client.runs.list(tid)
    assert [run["status"] for run in runs] == ["success"], runs
    assert humans(await client.threads.get_state(tid)) == ["weather in sf"]


async def check_enqueue(client):
    tid = (await client.threads.create())["thread_id"]
    await client.runs.create(tid, "agent", input=ask("weather in sf"), config=SLOW)
    second = await client.runs.create(tid, "agent", input=ask("weather in nyc"), config=FAST)
    await client.runs.join(tid, second["run_id"])
    runs = await client.runs.list(tid)
    assert [run["status"] for run in runs] == ["success", "success"], runs
    assert humans(await client.threads.get_state(tid)) == ["weather in sf", "weather in nyc"]


async def check_interrupt(client):
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.create(tid, "agent", input=ask("weather in sf"), config=SLOW)
    second = await client.runs.create(
        tid, "agent", input=ask("weather in nyc"), config=FAST, multitask_strategy="interrupt")
    await client.runs.join(tid, second["run_id"])
    assert (await client.runs.get(tid, first["run_id"]))["status"] == "interrupted"
    assert (await client.runs.get(tid, second["run_id"]))["status"] == "success"
    assert humans(await client.threads.get_state(tid)) == ["weather in sf", "weather in nyc"]


async def check_rollback(client):
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.create(tid, "agent", input=ask("weather in sf"), config=SLOW)
    second = await client.runs.create(
        tid, "agent", input=ask("weather in nyc"), config=FAST, multitask_strategy="rollback")
    values = await client.runs.join(tid, second["run_id"])
    assert [m["type"] for m in values["messages"]] == ["human", "ai", "tool", "ai"], values
    await expect_status(client.runs.get(tid, first["run_id"]), 404)
    assert [run["run_id"] for run in await client.runs.list(tid)] == [second["run_id"]]
    assert humans(await client.threads.get_state(tid)) == ["weather in nyc"]
    history = await client.threads.get_history(tid)
    assert all(entry["metadata"]["run_id"] == second["run_id"] for entry in history), history


async def check_rollback_on_many_threads(client):
    """Twenty threads at once, five rapid texts each, every text rolling back the one before."""

    async def one_thread(index):
        tid = (await client.threads.create())["thread_id"]
        runs = []
        for number in range(5):
            run = await client.runs.create(
                tid, "agent", input=ask(f"weather in city{index}x{number}"),
                config={"configurable": {"delay": 0.05}}, multitask_strategy="rollback")
            runs.append(run["run_id"])
        await client.runs.join(tid, runs[-1])
        kept = [run["run_id"] for run in reversed(await client.runs.list(tid, limit=10))]
        assert kept[-1] == runs[-1], kept
        for run_id in runs:
            if run_id not in kept:
                await expect_status(client.runs.get(tid, run_id), 404)
        expected = [f"weather in city{index}x{number}" for number, run_id in enumerate(runs) if run_id in kept]
        assert humans(await client.threads.get_state(tid)) == expected
        assert (await client.threads.get(tid))["status"] == "idle"

    await asyncio.gather(*(one_thread(index) for index in range(20)))


async def check_wait_cancel_delete(client):
    tid = (await client.threads.create())["thread_id"]
    values = await client.runs.wait(tid, "echo", input=ask("hello"))
    assert values["messages"][0]["content"] == "hello"
    slow = await client.runs.create(tid, "agent", input=ask("weather in sf"), config={"configurable": {"delay": 5}})
    await client.runs.cancel(tid, slow["run_id"], wait=True)
    assert (await client.runs.get(tid, slow["run_id"]))["status"] == "interrupted"
    await client.runs.delete(tid, slow["run_id"])
    await expect_status(client.runs.get(tid, slow["run_id"]), 404)
    doomed = await client.runs.create(tid, "agent", input=ask("weather in rome"), config={"configurable": {"delay": 5}})
    await client.runs.cancel(tid, doomed["run_id"], action="rollback")
    await expect_status(client.runs.get(tid, doomed["run_id"]), 404)
    assert (await client.threads.get(tid))["status"] == "idle"
    assert humans(await client.threads.get_state(tid)) == ["hello"]


async def check_state_and_history(client):
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "agent", input=ask("weather in oslo"), config=FAST)
    history = await client.threads.get_history(tid, limit=3)
    assert [entry["metadata"]["step"] for entry in history] == [3, 2, 1]
    assert history[0]["parent_checkpoint"]["checkpoint_id"] == history[1]["checkpoint"]["checkpoint_id"]
    older = await client.threads.get_history(tid, limit=10, before=history[1]["checkpoint"])
    assert [entry["metadata"]["step"] for entry in older] == [1, 0, -1]
    at = await client.threads.get_state(tid, checkpoint_id=history[2]["checkpoint_id"])
    assert at["checkpoint_id"] == history[2]["checkpoint_id"]
    update = await client.threads.update_state(tid, {"messages": [{"role": "assistant", "content": "",
        "tool_calls": [{"id": "c1", "name": "tavily_search_results_json", "args": {"query": "weather in lima"}}]}]},
        as_node="agent")
    state = await client.threads.get_state(tid)
    assert state["next"] == ["tools"] and state["checkpoint"]["checkpoint_id"] == update["checkpoint"]["checkpoint_id"]
    assert (await client.threads.get(tid))["status"] == "interrupted"
    resumed = await client.runs.wait(tid, "agent", input=None, config=FAST)
    assert "lima" in resumed["messages"][-1]["content"]


async def check_breakpoint(client):
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "agent", input=ask("weather in sf"), config=FAST, interrupt_before=["tools"])
    assert (await client.threads.get_state(tid))["next"] == ["tools"]
    assert (await client.threads.get(tid))["status"] == "interrupted"
    values = await client.runs.wait(tid, "agent", input=None, config=FAST)
    assert len(values["messages"]) == 4


async def check_threads(client):
    thread = await client.threads.create(metadata={"suite": "sdk", "n": 1})
    tid = thread["thread_id"]
    await client.threads.update(tid, metadata={"n": 2})
    assert (await client.threads.get(tid))["metadata"] == {"suite": "sdk", "n": 2}
    found = await client.threads.search(metadata={"suite": "sdk"})
    assert [t["thread_id"] for t in found] == [tid]
    assert await client.threads.count(metadata={"suite": "sdk"}) == 1
    await client.runs.wait(tid, "echo", input=ask("copy me"))
    copy = await client.threads.copy(tid)
    assert humans(await client.threads.get_state(copy["thread_id"])) == ["copy me"]
    await client.threads.delete(tid)
    await expect_status(client.threads.get(tid), 404)


async def check_prune(client):
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "echo", input=ask("one"))
    await client.runs.wait(tid, "echo", input=ask("two"))
    state = await client.threads.get_state(tid)
    kept = await client.threads.prune([tid], strategy="keep_latest")
    assert kept == {"pruned_count": 1}, kept
    assert await client.threads.get_state(tid) == state
    assert len(await client.threads.get_history(tid, limit=100)) == 1
    missing = "00000000-0000-4000-8000-000000000000"
    assert await client.threads.prune([tid, missing]) == {"pruned_count": 1}
    await expect_status(client.threads.get(tid), 404)


async def check_assistants(client):
    agent = await client.assistants.get("fe096781-5601-53d2-b2f6-0d3403f7e9ca")
    assert agent["graph_id"] == "agent"
    graph = await client.assistants.get_graph(agent["assistant_id"])
    assert {node["id"] for node in graph["nodes"]} >= {"agent", "tools"}
    assert (await client.assistants.get_schemas(agent["assistant_id"]))["graph_id"] == "agent"
    created = await client.assistants.create("echo", config={"configurable": {"x": 1}}, name="mine")
    updated = await client.assistants.update(created["assistant_id"], name="mine v2")
    assert updated["version"] == 2
    versions = await client.assistants.get_versions(created["assistant_id"])
    assert [version["version"] for version in versions] == [2, 1]
    assert (await client.assistants.set_latest(created["assistant_id"], 1))["name"] == "mine"
    assert len(await client.assistants.search(graph_id="echo")) == 2
    await client.assistants.delete(created["assistant_id"])
    await expect_status(client.assistants.get(created["assistant_id"]), 404)


async def check_stream(client):
    thread = await client.threads.create()
    tid = thread["thread_id"]
    parts = [part async for part in client.runs.stream(
        tid, "agent", input=ask("what's the weather in sf?"), config=FAST,
        stream_mode=["values", "updates", "messages-tuple"])]
    assert parts[0].event == "metadata" and parts[0].data["attempt"] == 1, parts[0]
    assert {part.event for part in parts} == {"metadata", "values", "updates", "messages"}, parts
    nodes = [next(iter(part.data)) for part in parts if part.event == "updates"]
    assert nodes == ["agent", "tools", "agent"], nodes
    final = [part.data for part in parts if part.event == "values"][-1]
    answer = convert_to_messages(final["messages"])[-1]
    chunks = [part.data[0] for part in parts if part.event == "messages" and part.data[0]["type"] == "AIMessageChunk"]
    assert len(chunks) > 3 and {chunk["id"] for chunk in chunks} == {answer.id}, chunks
    assert "".join(chunk["content"] for chunk in chunks) == answer.content
    assert all(part.data[1]["langgraph_node"] in ("agent", "tools") for part in parts if part.event == "messages")


async def check_join_stream_resume(client):
    thread = await client.threads.create()
    tid = thread["thread_id"]
    parts, run_id = [], None
    async for part in client.runs.stream(tid, "agent", input=ask("what's the weather in sf?"), config=SLOW,
                                         stream_mode=["values", "updates"], stream_resumable=True):
        parts.append(part)
        if part.event == "metadata":
            run_id = part.data["run_id"]
        if len(parts) == 3:
            break  # the client goes away mid-run; the run continues (on_disconnect defaults to continue)
    assert all(part.id for part in parts), parts
    rest = [part async for part in client.runs.join_stream(tid, run_id, last_event_id=parts[-1].id)]
    ids = [int(part.id) for part in parts + rest]
    assert ids == list(range(1, len(ids) + 1)), ids
    assert len(convert_to_messages(rest[-1].data["messages"])) == 4, rest[-1]
    replay = [part async for part in client.runs.join_stream(tid, run_id, last_event_id="-",
                                                                  stream_mode="updates")]
    assert [part.event for part in replay] == ["metadata", "updates", "updates", "updates"], replay
    assert (await client.runs.get(tid, run_id))["status"] == "success"


async def check_stateless(client):
    values = await client.runs.wait(None, "agent", input=ask("hello there"), config=FAST)
    assert values["messages"][-1]["content"] == "You said: hello there", values
    parts = [part async for part in client.runs.stream(None, "echo", input={"x": 1})]
    assert [part.event for part in parts] == ["metadata", "values", "values"], parts
    failed = await client.runs.wait(None, "agent", input="not an object", raise_error=False)
    assert failed["__error__"]["error"] == "InvalidUpdateError", failed


async def check_dynamic_interrupt(client):
    thread = await client.threads.create()
    tid = thread["thread_id"]
    paused = await client.runs.wait(tid, "review", input=ask("ship it?"))
    [interrupt] = paused["__interrupt__"]
    assert interrupt["value"] == {"question": "Send this answer?"}, paused
    assert (await client.threads.get(tid))["status"] == "interrupted"
    state = await client.threads.get_state(tid)
    assert state["next"] == ["review"] and state["interrupts"][0]["id"] == interrupt["id"], state
    parts = [part async for part in client.runs.stream(tid, "review", command={"resume": {interrupt["id"]: True}},
                                                       stream_mode="updates")]
    assert [part.event for part in parts] == ["metadata", "updates"], parts
    assert parts[1].data == {"review": {"approved": True}}, parts[1]
    state = await client.threads.get_state(tid)
    assert state["values"]["approved"] is True and state["next"] == [] and state["interrupts"] == [], state
    assert (await client.threads.get(tid))["status"] == "idle"


async def check_fork(client):
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "agent", input=ask("weather in oslo"), config=FAST)
    history = await client.threads.get_history(tid, limit=10)
    [calling] = [entry for entry in history if entry["next"] == ["tools"]]
    source = calling["checkpoint"]["checkpoint_id"]
    # Time travel by running from a past checkpoint: the tools step runs again on a new branch.
    replayed = await client.runs.wait(tid, "agent", input=None, config=FAST, checkpoint_id=source)
    assert "oslo" in replayed["messages"][-1]["content"], replayed
    # Edit the past: the model's tool call, replaced as if the agent asked about rome.
    call = calling["values"]["messages"][-1]
    edited = dict(call, tool_calls=[dict(call["tool_calls"][0], args={"query": "weather in rome"})])
    update = await client.threads.update_state(tid, {"messages": [edited]}, as_node="agent", checkpoint_id=source)
    state = await client.threads.get_state(tid)
    assert state["checkpoint"]["checkpoint_id"] == update["checkpoint"]["checkpoint_id"], state
    assert state["metadata"]["source"] == "update" and state["next"] == ["tools"], state
    assert state["parent_checkpoint"]["checkpoint_id"] == source, state
    answer = await client.runs.wait(tid, "agent", input=None, config=FAST)
    assert "rome" in answer["messages"][-1]["content"], answer
    assert len(answer["messages"]) == 4, answer
    # History keeps every branch; three checkpoints grew from the source: the original tools
    # step, the replay's fork and the update.
    everything = await client.threads.get_history(tid, limit=100)
    children = [entry["metadata"]["source"] for entry in everything
                if (entry["parent_checkpoint"] or {}).get("checkpoint_id") == source]
    assert sorted(children) == ["fork", "loop", "update"], children
    contents = {entry["values"]["messages"][-1]["content"] for entry in everything
                if entry["metadata"]["source"] == "loop" and entry["next"] == []}
    assert any("oslo" in text for text in contents) and any("rome" in text for text in contents), contents


async def main():
    client = get_client(url=URL)
    for check in [check_reject, check_enqueue, check_interrupt, check_rollback, check_rollback_on_many_threads,
                  check_wait_cancel_delete, check_state_and_history, check_breakpoint, check_threads, check_prune,
                  check_assistants, check_stream, check_join_stream_resume, check_stateless,
                  check_dynamic_interrupt, check_fork]:
        await check(client)
        print("ok", check.__name__, flush=True)


asyncio.run(main())
