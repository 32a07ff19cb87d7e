//! Spindle: a self-hosted agent server that speaks the LangGraph Platform HTTP API.
//! See ARCHITECTURE.md for the actor tree, the code map and the invariants.

pub mod domain;
pub mod graph;
pub mod storage;
pub mod actors;
