"""The example graphs of config/examples through the official Python SDK: the `triage` graph's
command node reports progress as custom events, its switch edge routes a weather question to
the `agent` subgraph, and `stream_subgraphs` shows that subgraph's events under its namespace.

Run by tests/sdk.rs against the real `spindle` binary serving config/examples/spindle.toml.
"""

import asyncio
import os

from langgraph_sdk import get_client

URL = os.environ["SPINDLE_URL"]
FAST = {"configurable": {"delay": 0}}


def ask(text):
    return {"messages": [{"role": "user", "content": text}]}


async def main():
    client = get_client(url=URL)
    tid = (await client.threads.create())["thread_id"]
    parts = [part async for part in client.runs.stream(
        tid, "triage", input=ask("weather in lisbon?"), config=FAST,
        stream_mode=["updates", "custom"], stream_subgraphs=True)]
    events = [part.event for part in parts]
    assert events[0] == "metadata", events
    custom = [part.data for part in parts if part.event == "custom"]
    assert [event["progress"] for event in custom] == ["classifying", "done"], custom
    parent = [list(part.data) for part in parts if part.event == "updates"]
    assert parent == [["classify"], ["research"]], parent
    inner = [part for part in parts if part.event.startswith("updates|research:")]
    assert [list(part.data) for part in inner] == [["agent"], ["tools"], ["agent"]], events
    namespace = inner[0].event.split("|", 1)[1]
    print("ok subgraph stream", namespace, flush=True)

    state = await client.threads.get_state(tid)
    messages = state["values"]["messages"]
    assert state["values"]["topic"] == "weather", state
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"], messages
    assert messages[-1]["content"].startswith("The weather in lisbon is"), messages[-1]
    inner_history = await client.threads.get_history(tid, limit=20, checkpoint={"checkpoint_ns": namespace})
    assert inner_history and all(entry["checkpoint"]["checkpoint_ns"] == namespace for entry in inner_history)
    assert inner_history[0]["values"]["messages"][-1]["id"] == messages[-1]["id"], inner_history[0]
    print("ok subgraph state", flush=True)

    other = await client.runs.wait(None, "triage", input=ask("hello"), config=FAST)
    assert other["topic"] == "other" and other["messages"][-1]["content"] == "You said: hello", other
    print("ok switch", flush=True)


asyncio.run(main())
