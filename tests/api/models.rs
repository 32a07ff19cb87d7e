//! Chat model nodes against a real OpenAI-compatible server on loopback.
