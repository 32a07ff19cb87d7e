//! A thread actor's part of a graceful shutdown: `Drain` answers once no run executes (the
//! shared `draining` flag already keeps new ones from starting), `Halt` stops the run still
//! executing when the grace period is over and puts it back to pending, to continue at the
//! next start.

use actix::fut::wrap_future;
use actix::{ActorFutureExt, AtomicResponse, Context, Handler, MessageResult};
use tokio::sync::oneshot;

use super::actor::{Step, ThreadActor};
use crate::actors::protocol::{Drain, Halt, StopRun};
use crate::actors::retry::with_retries;
use crate::domain::ids::RunId;

impl Handler<Drain> for ThreadActor {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        let (sender, receiver) = oneshot::channel();
        self.drained.push(sender);
        self.notify_drained();
        MessageResult(receiver)
    }
}

impl Handler<Halt> for ThreadActor {
    type Result = AtomicResponse<Self, Option<RunId>>;

    fn handle(&mut self, _: Halt, _: &mut Context<Self>) -> Self::Result {
        // Runs a restart of this actor found running and that the drain kept from starting
        // did not fail either: they go back to pending too.
        let mut released = self.runs.recovered_runs();
        let Some((run_id, run_actor)) = self
            .runs
            .active()
            .map(|active| (active.run_id, active.handle.clone()))
        else {
            return AtomicResponse::new(Box::pin(self.release(released).map(|_, _, _| None)));
        };
        let steps =
            wrap_future(run_actor.send(StopRun)).then(move |stopped, actor: &mut Self, _| {
                // A closed mailbox means the run ended on its own just now: its `RunFinished` is
                // in this actor's mailbox and records the end; it is not released.
                let halted = stopped.is_ok();
                if halted {
                    actor.runs.take_active();
                    released.push(run_id);
                }
                actor
                    .release(released)
                    .map(move |_, _, _| halted.then_some(run_id))
            });
        AtomicResponse::new(Box::pin(steps))
    }
}

impl ThreadActor {
    /// Puts runs stopped by the shutdown back to pending, to continue at the next start. Their
    /// waiters and streams are left as they are: the server closes those connections as it
    /// stops, so no client mistakes a stopped run for a finished one.
    fn release(&mut self, run_ids: Vec<RunId>) -> Step<()> {
        let store = self.store.clone();
        let thread_id = self.thread_id;
        wrap_future(async move {
            for run_id in run_ids {
                match with_retries("release run", || store.release_run(run_id)).await {
                    Ok(()) => log::info!(
                        "run stopped by the shutdown; it continues at the next start run_id={run_id} thread_id={thread_id}"
                    ),
                    Err(error) => log::warn!(
                        "run stopped by the shutdown, not put back to pending run_id={run_id}: {error:#}"
                    ),
                }
            }
        })
        .map(|(), actor: &mut Self, _| actor.notify_drained())
        .boxed_local()
    }
}
