"""A real-model agent loop through the official Python SDK (langgraph-sdk).

Run by tests/sdk.rs against the real `spindle` binary, whose `model_agent` graph uses the
`openai` provider pointed at the test's fake OpenAI-compatible server. SPINDLE_URL names the
server. Each check prints `ok <name>`; any failure raises and exits non-zero.
"""

import asyncio
import os

from langchain_core.messages import AIMessageChunk, convert_to_messages
from langgraph_sdk import get_client

URL = os.environ["SPINDLE_URL"]
ASK = {"messages": [{"role": "user", "content": "what's the weather in nyc?"}]}
ANSWER = "It is sunny in nyc, 21 degrees."
SEARCH = "tavily_search_results_json"


def check_loop(raw):
    """The thread went model -> tools -> model and the answer uses the scripted text."""
    messages = convert_to_messages(raw)
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"], messages
    call = messages[1].tool_calls[0]
    assert call["name"] == SEARCH and call["args"] == {"query": "weather in nyc"}, call
    assert messages[2].tool_call_id == call["id"], (messages[2], call)
    assert "weather in nyc" in messages[2].content, messages[2]
    answer = messages[3]
    assert answer.content == ANSWER and not answer.tool_calls, answer
    # convert_to_messages keeps usage_metadata only in additional_kwargs: read the dict.
    assert raw[3]["usage_metadata"]["total_tokens"] == 27, raw[3]
    assert answer.response_metadata["model_provider"] == "openai", answer.response_metadata
    return messages, call, answer


async def check_stream(client):
    thread = await client.threads.create()
    parts = [part async for part in client.runs.stream(
        thread["thread_id"], "model_agent", input=ASK, stream_mode=["messages-tuple", "values"])]
    assert parts[0].event == "metadata", parts[0]
    final = [part.data for part in parts if part.event == "values"][-1]
    messages, call, answer = check_loop(final["messages"])
    chunks = [part.data[0] for part in parts
              if part.event == "messages" and part.data[0]["type"] == "AIMessageChunk"]
    assert {chunk["id"] for chunk in chunks} == {messages[1].id, answer.id}, chunks
    # LangChain merges the streamed chunks into the messages the thread kept.
    merged = {}
    for chunk in chunks:
        piece = AIMessageChunk(**chunk)
        merged[chunk["id"]] = merged[chunk["id"]] + piece if chunk["id"] in merged else piece
    text = merged[answer.id]
    assert text.content == ANSWER, text
    assert text.usage_metadata["total_tokens"] == 27, text.usage_metadata
    tool = merged[messages[1].id]
    assert [(c["name"], c["args"], c["id"]) for c in tool.tool_calls] == [
        (SEARCH, {"query": "weather in nyc"}, call["id"])], tool
    assert len([c for c in chunks if c["id"] == answer.id]) > 3, chunks
    assert all(part.data[1]["ls_provider"] == "openai"
               for part in parts if part.event == "messages" and part.data[0]["type"] == "AIMessageChunk")
    print("ok stream")


async def check_wait(client):
    thread = await client.threads.create()
    result = await client.runs.wait(thread["thread_id"], "model_agent", input=ASK)
    _, call, _ = check_loop(result["messages"])
    state = await client.threads.get_state(thread["thread_id"])
    assert convert_to_messages(state["values"]["messages"])[2].tool_call_id == call["id"]
    print("ok wait")


async def main():
    client = get_client(url=URL)
    await check_stream(client)
    await check_wait(client)


asyncio.run(main())
