"""Test program for `command` nodes and tools (tests/api/external.rs).

`external.py node` is a command node: it reads {state, config, node} from stdin and acts on
`config["mode"]`. `external.py sleepy-tool` is a command tool that never answers.
"""

import json
import os
import sys
import time


def write_pid(path):
    # Written whole (rename), so a test never reads half a pid.
    with open(path + ".tmp", "w") as file:
        file.write(str(os.getpid()))
    os.rename(path + ".tmp", path)


def wait_for_file(path):
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit("the release file never appeared")
        time.sleep(0.01)


def emit(value):
    print(json.dumps(value), flush=True)


def node():
    request = json.load(sys.stdin)
    config = request["config"]
    mode = config.get("mode", "update")
    if mode == "update":
        emit({"custom": {"step": 1}})
        emit({"custom": {"step": 2}})
        if "release_file" in config:
            wait_for_file(config["release_file"])
        messages = request["state"].get("messages", [])
        update = {
            "notes": [
                f"command saw {len(messages)} messages at node {request['node']}",
                f"cwd {os.getcwd()}",
                f"level {os.environ.get('LEVEL')}",
            ]
        }
        # Pretty-printed on purpose: the update may span lines.
        print(json.dumps(update, indent=2))
    elif mode == "fail":
        emit({"custom": {"step": 1}})
        sys.stderr.write("noise\n" * 1000)
        sys.stderr.write("the real reason: the disk is on fire\n")
        sys.exit(3)
    elif mode == "malformed":
        print("this is not json")
    elif mode == "flaky":
        counter = config["counter_file"]
        count = int(open(counter).read()) if os.path.exists(counter) else 0
        with open(counter, "w") as file:
            file.write(str(count + 1))
        if count < 2:
            sys.exit(f"attempt {count + 1} fails")
        emit({"notes": [f"succeeded at attempt {count + 1}"]})
    elif mode == "block":
        write_pid(config["pid_file"])
        time.sleep(120)
    else:
        sys.exit(f"unknown mode {mode}")


def sleepy_tool():
    args = json.load(sys.stdin)
    write_pid(args["pid_file"])
    time.sleep(120)


if __name__ == "__main__":
    {"node": node, "sleepy-tool": sleepy_tool}[sys.argv[1]]()
