//! The runtime: the actor tree. Every command that changes a thread goes through that thread's
//! `ThreadActor`, whose mailbox serialises them; each run executes in a child `RunActor`.
//!
//! ```text
//! actix System
//! └── ThreadRegistry    ThreadId -> Addr<ThreadActor>, starts them supervised on a pool of arbiters
//!     └── ThreadActor   one per active thread: active run + FIFO queue + join waiters
//!         └── RunActor  at most one per thread: executes one attempt of a run
//! ```
//! Messages live in `protocol`; a child holds a `Recipient` of its parent's messages, never the
//! parent's address. Imports: domain, stream, storage, engine. Never actix-web, never a backend.

mod checkpoints;
pub mod error;
#[cfg(any(test, feature = "testing"))]
mod faults;
pub mod protocol;
pub mod registry;
mod retry;
pub mod run;
pub mod runtime;
pub mod thread;

pub use error::ThreadError;
#[cfg(any(test, feature = "testing"))]
pub use protocol::InjectFault;
pub use protocol::{
    CancelRuns, DeleteRun, DeleteThread, JoinRun, RunAccepted, RunOutcome, RunReply, SubmitRun,
    SubscribeRun, UpdateState,
};
pub use registry::{GetThread, LiveThreads, Shutdown, ShutdownReport, ThreadRegistry};
pub use run::{RunActor, RunLimits};
pub use runtime::Runtime;
pub use thread::{ThreadActor, ThreadSettings};
