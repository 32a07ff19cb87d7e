//! The ThreadActor itself: its state (the pure `RunQueue`, the clients waiting for runs, the
//! timers), its life cycle (started, restarted by its supervisor, retired when idle) and the
//! small helpers every handler uses. The handlers live beside it by concern.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::{wrap_future, LocalBoxActorFuture};
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, SpawnHandle, Supervised};
use tokio::sync::oneshot;

use super::queue::RunQueue;
use crate::actors::error::ThreadError;
use crate::actors::protocol::{RegistryClient, Retire, RunOutcome, StopRun, ThreadDied};
use crate::actors::run::{RunActor, RunLimits};
use crate::config::OnRestart;
use crate::domain::ids::{RunId, ThreadId};
use crate::engine::Engines;
use crate::storage::{SharedStore, StorageError};
use crate::stream::StreamHub;

/// One step of a handler: a future that runs on the actor, with access to its state.
pub(super) type Step<T> = LocalBoxActorFuture<ThreadActor, T>;

/// What the settings tell every thread actor.
#[derive(Clone, Debug)]
pub struct ThreadSettings {
    pub limits: RunLimits,
    pub on_restart: OnRestart,
    pub max_attempts: u32,
    /// An actor with nothing to do for this long retires.
    pub idle: Duration,
    /// Raised at shutdown: no run starts any more.
    pub draining: Arc<AtomicBool>,
}

/// The actor of one thread.
pub struct ThreadActor {
    pub(super) thread_id: ThreadId,
    pub(super) store: SharedStore,
    pub(super) engines: Arc<Engines>,
    /// The runs in flight and their order; the active run's handle is its actor's address.
    pub(super) runs: RunQueue<Addr<RunActor>>,
    /// Clients waiting for a run's outcome.
    pub(super) waiters: HashMap<RunId, Vec<oneshot::Sender<RunOutcome>>>,
    /// Wakes the actor when the first queued run is due.
    pub(super) timer: Option<SpawnHandle>,
    /// Run event streams.
    pub(super) hub: Arc<StreamHub>,
    /// Told when this actor's thread is gone for good, or it retires.
    pub(super) registry: RegistryClient,
    pub(super) settings: Arc<ThreadSettings>,
    /// Told when no run executes any more (shutdown).
    pub(super) drained: Vec<oneshot::Sender<()>>,
    /// When the actor last handled a command.
    touched: Instant,
    /// Set once the registry has forgotten this actor: it refuses every command (the sender
    /// asks the registry again) and stops once nobody holds its address.
    pub(super) retired: bool,
    /// The idle check.
    idle_timer: Option<SpawnHandle>,
    /// Test-only: the next state update panics where its reducers run.
    #[cfg(any(test, feature = "testing"))]
    pub(super) state_update_panics: bool,
}

impl ThreadActor {
    /// A thread actor; its state is loaded from storage when it starts.
    pub fn new(
        thread_id: ThreadId,
        store: SharedStore,
        engines: Arc<Engines>,
        hub: Arc<StreamHub>,
        registry: RegistryClient,
        settings: Arc<ThreadSettings>,
    ) -> Self {
        Self {
            thread_id,
            store,
            engines,
            runs: RunQueue::default(),
            waiters: HashMap::new(),
            timer: None,
            hub,
            registry,
            settings,
            drained: Vec::new(),
            touched: Instant::now(),
            retired: false,
            idle_timer: None,
            #[cfg(any(test, feature = "testing"))]
            state_update_panics: false,
        }
    }

    /// Notes a command; a retired actor refuses it (the sender asks the registry again, which
    /// starts a fresh actor).
    pub(super) fn touch(&mut self) -> Result<(), ThreadError> {
        if self.retired {
            return Err(ThreadError::Retired);
        }
        self.touched = Instant::now();
        Ok(())
    }

    /// `touch` for a command that changes the thread: refused with 503 while a run's end
    /// waits for the database, since storage still has that run in flight.
    pub(super) fn touch_to_change(&mut self) -> Result<(), ThreadError> {
        self.touch()?;
        match self.runs.first_stall() {
            Some((run_id, cause)) => Err(ThreadError::Storage(StorageError::CommitFailed {
                message: format!("the end of run {run_id} on this thread is not recorded yet"),
                unavailable: Some(cause),
            })),
            None => Ok(()),
        }
    }

    /// Checks now and then whether the actor has had nothing to do for the idle time; if so it
    /// asks the registry to forget it and retires.
    fn arm_idle_check(&mut self, ctx: &mut Context<Self>) {
        let idle = self.settings.idle;
        let check = ctx.run_later(idle / 2, move |actor, ctx| {
            actor.idle_timer = None;
            if actor.retired {
                return;
            }
            let quiet = actor.runs.is_quiet() && actor.waiters.is_empty() && actor.timer.is_none();
            if !quiet || actor.touched.elapsed() < idle {
                actor.arm_idle_check(ctx);
                return;
            }
            let retire = actor.registry.retire.send(Retire {
                thread_id: actor.thread_id,
                generation: actor.registry.generation,
            });
            // Nothing else is handled until the registry answers.
            ctx.wait(wrap_future(retire).map(|forgotten, actor: &mut Self, ctx| {
                if forgotten.unwrap_or(false) {
                    log::debug!("thread actor retired thread_id={}", actor.thread_id);
                    actor.retired = true;
                } else {
                    actor.arm_idle_check(ctx);
                }
            }));
        });
        self.idle_timer = Some(check);
    }

    /// No run executes: tell whoever waits for that (shutdown).
    pub(super) fn notify_drained(&mut self) {
        // A stalled run end counts: its run is still `running` in storage, and the next start
        // would resume it (spending an attempt) if the shutdown did not wait for it.
        if !self.runs.is_executing() {
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// A receiver for `run_id`'s outcome.
    pub(super) fn add_waiter(&mut self, run_id: RunId) -> oneshot::Receiver<RunOutcome> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.entry(run_id).or_default().push(sender);
        receiver
    }

    /// A run has ended: its stream ends (after an `error` event if it failed) and its waiters
    /// get the outcome.
    pub(super) fn resolve(&mut self, run_id: RunId, outcome: RunOutcome) {
        match &outcome {
            RunOutcome::Deleted => self.hub.discard(run_id),
            RunOutcome::Failed(error) => {
                if let Some(stream) = self.hub.get(run_id) {
                    stream.publish("error", &serde_json::json!(error));
                }
                self.hub.finish(run_id);
            }
            RunOutcome::Success(_) | RunOutcome::Interrupted => self.hub.finish(run_id),
        }
        for waiter in self.waiters.remove(&run_id).into_iter().flatten() {
            let _ = waiter.send(outcome.clone());
        }
    }
}

impl Actor for ThreadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            // Another actor owns the thread now.
            return;
        }
        log::debug!("thread actor started thread_id={}", self.thread_id);
        let recovery = self.recover();
        ctx.wait(recovery);
        self.arm_idle_check(ctx);
    }
}

impl Drop for ThreadActor {
    /// An actor is dropped after it retired (the registry forgot it first), or when it died: a
    /// panic in a handler (its supervisor restarts only actors that stop, and restarts keep the
    /// actor) or the whole system stopping. Unless it retired, stop its run, whose writes the
    /// next attempt fences anyway, and tell the registry, which starts a new actor for the
    /// thread unless the server is shutting down.
    fn drop(&mut self) {
        if self.retired || self.settings.draining.load(Ordering::SeqCst) {
            return;
        }
        log::warn!(
            "thread actor dropped while registered (a panic in a handler, or the system stopping) thread_id={}",
            self.thread_id
        );
        if let Some(active) = self.runs.take_active() {
            active.handle.do_send(StopRun);
        }
        self.registry.died.do_send(ThreadDied {
            thread_id: self.thread_id,
            generation: self.registry.generation,
        });
    }
}

impl Supervised for ThreadActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        log::warn!("thread actor restarting thread_id={}", self.thread_id);
        if let Some(active) = self.runs.take_active() {
            active.handle.do_send(StopRun);
        }
        self.runs.reset();
        self.timer = None;
        self.idle_timer = None;
    }
}

/// Test-only hooks of `actors::faults`.
#[cfg(any(test, feature = "testing"))]
impl ThreadActor {
    /// The thread this actor serialises.
    pub(crate) fn thread_id(&self) -> ThreadId {
        self.thread_id
    }

    /// The next state update panics where its reducers run.
    pub(crate) fn panic_in_next_state_update(&mut self) {
        self.state_update_panics = true;
    }

    /// The active run's actor stops as if it had died.
    pub(crate) fn kill_active_run(&self) {
        if let Some(active) = self.runs.active() {
            active.handle.do_send(crate::actors::protocol::Die);
        }
    }
}
