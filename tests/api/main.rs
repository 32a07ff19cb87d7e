//! The integration tests: a real server on a random port, a fresh SQLite file per test.

mod assistants;
mod browser;
mod double_texting;
mod durability;
mod examples;
mod external;
mod filters;
mod helpers;
mod hitl;
mod models;
mod protocol;
mod retention;
mod runs;
mod seams;
mod sse;
mod state;
mod storage_faults;
mod streaming;
mod subgraphs;
mod threads;
mod validation;
