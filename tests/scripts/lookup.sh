#!/bin/sh
# Test program for a `command` tool (tests/api/external.rs): answers with $LEVEL and the
# arguments it read from stdin, with surrounding whitespace the tool trims.
args=$(cat)
printf '\n  level %s: %s  \n\n' "$LEVEL" "$args"
