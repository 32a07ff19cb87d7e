//! The messages of the actor tree, in one place and naming no actor type: what callers send a
//! thread actor, what a thread actor and its run actor tell each other, and what a thread actor
//! tells its registry. A child holds a `Recipient` of its parent's messages, never the parent's
//! address, so a run actor needs no thread actor to exist (and a second kind of run actor none).

use std::sync::Arc;

use actix::{Message, Recipient};
use serde_json::Value;
use tokio::sync::oneshot;

use super::error::ThreadError;
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{CheckpointId, RunId, ThreadId};
use crate::domain::multitask::CancelAction;
use crate::domain::run::{NewRun, Run, RunError};
use crate::domain::JsonMap;
use crate::stream::Subscription;

// ----- to a thread actor, from callers (HTTP handlers, start-up, the registry) -----

/// Creates a run on this thread, applying its multitask strategy to the runs in flight. Sent by
/// the runtime for every caller that creates runs.
#[derive(Clone, Message)]
#[rtype(result = "Result<RunAccepted, ThreadError>")]
pub struct SubmitRun {
    pub new_run: NewRun,
    pub reply: RunReply,
}

/// What the creator of a run wants back besides the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunReply {
    /// The run object only.
    Run,
    /// A receiver of the run's outcome (`/wait`).
    Wait,
    /// A subscription to the run's stream, taken before it can start (`/stream`).
    Stream,
}

/// The reply to `SubmitRun`: the stored run (status `pending`), its outcome and its stream
/// if asked for.
pub struct RunAccepted {
    pub run: Run,
    pub outcome: Option<oneshot::Receiver<RunOutcome>>,
    pub subscription: Option<Subscription>,
}

/// How a run ended, as told to the clients waiting on it (`/join`, `/wait`).
#[derive(Clone, Debug)]
pub enum RunOutcome {
    /// Finished (possibly at a breakpoint) with these values.
    Success(Arc<JsonMap>),
    /// The graph failed.
    Failed(RunError),
    /// Cancelled or superseded with `interrupt`: its checkpoints remain.
    Interrupted,
    /// Rolled back or deleted: the run no longer exists.
    Deleted,
}

/// Waits for a run: `Some(receiver)` while it is in flight, `None` when it is not (the caller
/// then reads its stored result). Sent by `/join`. Changes nothing.
#[derive(Clone, Message)]
#[rtype(result = "Result<Option<oneshot::Receiver<RunOutcome>>, ThreadError>")]
pub struct JoinRun {
    pub run_id: RunId,
}

/// Subscribes to a run's stream: while the run is in flight (its stream is ended only by the
/// thread actor, so the subscription is sure to end), or while a finished run's events are
/// retained. `None` when there is nothing to subscribe to. Sent by the join-stream endpoint.
#[derive(Clone, Message)]
#[rtype(result = "Result<Option<Subscription>, ThreadError>")]
pub struct SubscribeRun {
    pub run_id: RunId,
    pub resumable: bool,
    /// `Last-Event-ID`: replay the events after it.
    pub after: Option<u64>,
}

/// Stops the named runs that are in flight (`interrupt` keeps them as `interrupted`, `rollback`
/// deletes them). Replies with how many were stopped; 0 means none of them was in flight. Sent by
/// the cancel endpoints. Idempotent.
#[derive(Clone, Message)]
#[rtype(result = "Result<usize, ThreadError>")]
pub struct CancelRuns {
    pub run_ids: Vec<RunId>,
    pub action: CancelAction,
    /// Sent because a client went away (`on_disconnect: cancel`): ignored while the server
    /// shuts down, since it is the server that cut the client off.
    pub on_disconnect: bool,
}

/// Deletes a run of any status with its checkpoints, stopping it first if it is active.
/// Sent by `DELETE /threads/{t}/runs/{r}`.
#[derive(Clone, Message)]
#[rtype(result = "Result<(), ThreadError>")]
pub struct DeleteRun {
    pub run_id: RunId,
}

/// Deletes the thread with its runs and checkpoints, stopping its active run first.
/// Sent by `DELETE /threads/{t}`.
#[derive(Clone, Message)]
#[rtype(result = "Result<(), ThreadError>")]
pub struct DeleteThread;

/// Writes a `source: update` checkpoint (409 while runs are in flight). Sent by
/// `POST /threads/{t}/state`; replies with the new checkpoint.
#[derive(Clone, Message)]
#[rtype(result = "Result<Checkpoint, ThreadError>")]
pub struct UpdateState {
    pub values: Option<Value>,
    pub as_node: Option<String>,
    pub checkpoint_id: Option<CheckpointId>,
}

/// Replies once the thread has no run executing; sent by the registry at shutdown, after it
/// raised the shared `draining` flag (so no run starts any more).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Drain;

/// Stops the executing run, if any, and puts it back to `pending` in storage with its attempt
/// given back, so it continues from its last checkpoint at the next start. Sent by the registry when the shutdown grace period
/// is over; replies with the run it stopped.
#[derive(Message)]
#[rtype(result = "Option<RunId>")]
pub struct Halt;

// ----- between a thread actor and its run actor -----

/// Begins attempt `attempt` of the run: its engine applies the input and marks it `running`
/// (with `recovered`: continues a run a crash left `running` from its last checkpoint); replies
/// once that is committed. Sent once by the thread actor, which waits for the reply before
/// handling its next command. An error means the attempt never started and the thread actor
/// records the run as failed.
#[derive(Message)]
#[rtype(result = "Result<(), RunError>")]
pub struct BeginRun {
    /// The run's attempts so far plus one; storage refuses any other.
    pub attempt: u32,
    pub recovered: bool,
}

/// Stops the run: its execution is aborted and the run actor stops without reporting. Sent by
/// the thread actor, which then records the run as interrupted or deletes it. Idempotent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRun;

/// How a run's execution ended.
#[derive(Debug)]
pub enum RunEnd {
    /// Finished, possibly stopped at a breakpoint (`next` non-empty).
    Success {
        values: Arc<JsonMap>,
        next: Vec<String>,
    },
    Failed(RunError),
    /// It hit the run time limit (status `timeout`).
    TimedOut(RunError),
    /// Its writes were fenced: storage no longer has it in flight (it was removed without the
    /// thread actor's doing). Nothing is recorded for it; the thread is settled and moves on.
    Vanished,
}

/// A run's execution ended. Sent by its run actor (not when it was told to stop); the thread
/// actor records it and starts the next queued run. Ignored for a run that is no longer active.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunFinished {
    pub run_id: RunId,
    /// The attempt that ended; the report of an older attempt is ignored.
    pub attempt: u32,
    pub end: RunEnd,
}

// ----- from a thread actor to its registry -----

/// An idle thread actor asks to be forgotten. Replies true when the registry no longer hands
/// out its address (the actor then refuses every command); false when it must stay (another
/// actor is registered for the thread, or the server is shutting down).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Retire {
    pub thread_id: ThreadId,
    /// Which actor of the thread asks: the number the registry gave it when it started it.
    pub generation: u64,
}

/// Drops the registry's address of a thread actor whose thread is gone for good (a stateless
/// run's temporary thread); the actor stops once no address to it remains. Sent by that actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetThread {
    pub thread_id: ThreadId,
    pub generation: u64,
}

/// A thread actor went away without stopping (a panic in one of its handlers): the registry
/// forgets it and starts a new one for the thread, which rebuilds from storage. Sent by the
/// actor as it is dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ThreadDied {
    pub thread_id: ThreadId,
    pub generation: u64,
}

/// What a thread actor may tell its registry, and the generation the registry started it with.
#[derive(Clone)]
pub struct RegistryClient {
    pub retire: Recipient<Retire>,
    pub forget: Recipient<ForgetThread>,
    pub died: Recipient<ThreadDied>,
    pub generation: u64,
}

// ----- test-only fault injection -----

/// Fault injection for tests: the thread actor stops as if it had failed (its supervisor
/// restarts it and it rebuilds from storage), panics inside a handler, or stops its run's actor
/// as if that had died.
#[cfg(any(test, feature = "testing"))]
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub enum InjectFault {
    ThreadActorDies,
    /// A panic in the handler of this message.
    ThreadActorPanics,
    /// The next state update panics where its reducers run.
    StateUpdatePanics,
    RunActorDies,
}

/// Fault injection for tests: the run actor stops as if it had died (its execution is aborted
/// and nothing asked it to stop).
#[cfg(any(test, feature = "testing"))]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Die;
