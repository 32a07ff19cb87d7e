//! The TOML engine: graphs of state channels with reducers, nodes and edges, declared in TOML
//! files and executed in supersteps (see `executor`); `TomlEngine` is its `Engine`. Depends on
//! `domain`, `stream` and the engine seam; never on actix, storage or actix-web. This file only
//! declares the modules and re-exports what the rest of the crate uses.

pub mod emit;
mod engine;
pub mod executor;
pub mod external;
mod graph;
mod kinds;
pub mod messages;
pub mod node;
pub mod openai;
mod registry;
mod retry;
pub mod scripted;
pub mod spec;
pub mod tools;

pub use engine::TomlEngine;
pub use graph::{Channel, Edge, Graph, GraphError, NodeDef, Reducer, END, START};
pub use registry::{parse_spec, GraphRegistry};
