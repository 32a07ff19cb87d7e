import asyncio, httpx
from langchain_core.messages import convert_to_messages
from langgraph_sdk import get_client

async def main():
    client = get_client(url="http://127.0.0.1:8123")
    assistant_id = "agent"
    thread = await client.threads.create()
    rolled_back_run = await client.runs.create(
        thread["thread_id"], assistant_id,
        input={"messages": [{"role": "user", "content": "what's the weather in sf?"}]})
    run = await client.runs.create(
        thread["thread_id"], assistant_id,
        input={"messages": [{"role": "user", "content": "what's the weather in nyc?"}]},
        multitask_strategy="rollback")
    await client.runs.join(thread["thread_id"], run["run_id"])
    state = await client.threads.get_state(thread["thread_id"])
    for m in convert_to_messages(state["values"]["messages"]):
        m.pretty_print()
    try:
        await client.runs.get(thread["thread_id"], rolled_back_run["run_id"])
    except httpx.HTTPStatusError as _:
        print("Original run was correctly deleted")

asyncio.run(main())
