//! Spindle: a self-hosted agent server that speaks the LangGraph Platform HTTP API, with every
//! thread, run and checkpoint in one SQLite file. See ARCHITECTURE.md for the actor tree, the
//! code map and the invariants. This file only lists the modules.

pub mod actors;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod http;
pub mod retention;
pub mod startup;
pub mod storage;
pub mod stream;
