//! Graphs: state channels with reducers, nodes and edges, declared in config and executed in
//! supersteps (see `executor`). Depends only on `domain`; never on actix, actix-web or rusqlite.
//! This file only declares the modules and re-exports what the rest of the crate uses.

pub mod emit;
pub mod executor;
pub mod external;
// The `Graph` type's own file; outside code names it `crate::graph::Graph` (re-exported here).
#[allow(clippy::module_inception)]
mod graph;
mod kinds;
pub mod messages;
pub mod node;
pub mod openai;
mod registry;
pub mod scripted;
pub mod spec;
pub mod tools;

pub use graph::{Channel, Edge, Graph, GraphError, NodeDef, Reducer, END, START};
pub use registry::{parse_spec, GraphRegistry};
