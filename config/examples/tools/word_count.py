"""A command tool: the tool call's arguments arrive as JSON on stdin; stdout is the result."""

import json
import sys

arguments = json.load(sys.stdin)
text = arguments.get("text")
if not isinstance(text, str):
    print("the 'text' argument (a string) is required", file=sys.stderr)
    sys.exit(2)
print(len(text.split()))
