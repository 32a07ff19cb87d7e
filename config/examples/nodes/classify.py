"""A command node: reads {"state", "config", "node"} on stdin, reports progress as custom
stream events (one {"custom": ...} JSON line each), then prints the partial state update."""

import json
import os
import sys

request = json.load(sys.stdin)
messages = request["state"].get("messages", [])
question = ""
for message in reversed(messages):
    if message.get("type") == "human":
        content = message.get("content")
        question = content if isinstance(content, str) else json.dumps(content)
        break

print(json.dumps({"custom": {"progress": "classifying", "chars": len(question)}}), flush=True)
keywords = os.environ.get("CLASSIFY_KEYWORDS", "weather").split(",")
topic = "weather" if any(word in question.lower() for word in keywords) else "other"
print(json.dumps({"custom": {"progress": "done", "topic": topic}}), flush=True)
print(json.dumps({"topic": topic}))
