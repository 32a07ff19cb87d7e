//! ThreadActor: the serialisation point of one thread. Every command that changes the thread
//! (submit, cancel, delete a run, delete the thread, update the state, and a run's end) is
//! handled here one at a time, each handler atomic (no other message is handled until its
//! writes are committed), so "what is in flight and what happens to a new run" is decided
//! without races. It owns the active RunActor, the FIFO queue of pending runs and the clients
//! waiting for runs to end. Started by the ThreadRegistry under a Supervisor; on (re)start it
//! rebuilds its queue from storage.
//!
//! Split by concern: `queue` (the pure core: in-flight runs, double-texting, start order),
//! `actor` (state and life cycle), `commands` (what callers ask), `lifecycle` (starting and
//! ending runs), `recovery` (rebuilding from storage), `shutdown` (drain and halt).

mod actor;
mod commands;
mod lifecycle;
mod queue;
mod recovery;
mod shutdown;

pub use actor::{ThreadActor, ThreadSettings};
