//! ThreadRegistry: maps a ThreadId to the address of its ThreadActor, starting one (supervised, on
//! one of a fixed pool of arbiters) on first use, or when the one it had is dead (a panic in a
//! handler kills an actor for good; its supervisor restarts only actors that stop). Callers ask
//! it for the address, then send their command to the thread actor directly. A thread actor with
//! nothing to do for `runtime.actor_idle_seconds` asks to be forgotten (`Retire`); it then
//! refuses commands, so a sender that raced the retirement asks again and gets a fresh actor,
//! rebuilt from storage. At shutdown it drains every thread actor (`Shutdown`). This is where a
//! cluster-wide lease per thread will be taken.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message,
    MessageResult, ResponseActFuture, Supervisor, WrapFuture,
};
use futures_util::future::join_all;

use super::protocol::{Drain, ForgetThread, Halt, RegistryClient, Retire, ThreadDied};
use super::thread::{ThreadActor, ThreadSettings};
use crate::domain::ids::ThreadId;
use crate::engine::Engines;
use crate::storage::SharedStore;
use crate::stream::StreamHub;

/// Returns the thread's actor, starting it if needed. Sent by the runtime and start-up.
#[derive(Message)]
#[rtype(result = "Addr<ThreadActor>")]
pub struct GetThread {
    pub thread_id: ThreadId,
}

/// How many thread actors are in memory. Sent by tests.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveThreads;

/// Graceful shutdown: no run starts any more (the shared `draining` flag), running runs get
/// `grace` to finish, then the rest are stopped and left to resume at the next start. Replies
/// once every thread actor is quiet.
#[derive(Message)]
#[rtype(result = "ShutdownReport")]
pub struct Shutdown {
    pub grace: Duration,
}

/// What a shutdown did.
#[derive(Clone, Debug, Default)]
pub struct ShutdownReport {
    /// Runs stopped at the end of the grace period; they resume at the next start.
    pub stopped: usize,
}

/// How long the halt at the end of a shutdown may take.
const HALT_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry of live thread actors.
pub struct ThreadRegistry {
    store: SharedStore,
    engines: Arc<Engines>,
    arbiters: Vec<ArbiterHandle>,
    /// Each live thread actor with the generation it was started with.
    threads: HashMap<ThreadId, (Addr<ThreadActor>, u64)>,
    /// The generation the next thread actor gets: `Retire` and `ForgetThread` name it, so a
    /// stale actor can never make the registry forget its successor.
    next_generation: u64,
    hub: Arc<StreamHub>,
    settings: Arc<ThreadSettings>,
}

impl ThreadRegistry {
    /// A registry that starts thread actors on `arbiters` (at least one).
    pub fn new(
        store: SharedStore,
        engines: Arc<Engines>,
        arbiters: Vec<ArbiterHandle>,
        hub: Arc<StreamHub>,
        settings: ThreadSettings,
    ) -> Self {
        assert!(
            !arbiters.is_empty(),
            "the registry needs at least one arbiter"
        );
        Self {
            store,
            engines,
            arbiters,
            threads: HashMap::new(),
            next_generation: 0,
            hub,
            settings: Arc::new(settings),
        }
    }
}

impl Actor for ThreadRegistry {
    type Context = Context<Self>;
}

impl Handler<GetThread> for ThreadRegistry {
    type Result = MessageResult<GetThread>;

    fn handle(&mut self, message: GetThread, ctx: &mut Context<Self>) -> Self::Result {
        let thread_id = message.thread_id;
        if let Some((address, generation)) = self.threads.get(&thread_id) {
            if address.connected() {
                return MessageResult(address.clone());
            }
            log::warn!(
                "thread actor found dead, starting a new one thread_id={thread_id} generation={generation}"
            );
        }
        MessageResult(self.start_actor(thread_id, ctx))
    }
}

impl ThreadRegistry {
    /// Starts the thread's actor (supervised, on the arbiter its id picks) with a new
    /// generation, and registers it.
    fn start_actor(&mut self, thread_id: ThreadId, ctx: &mut Context<Self>) -> Addr<ThreadActor> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let index = (thread_id.0.as_u128() % self.arbiters.len() as u128) as usize;
        let store = self.store.clone();
        let engines = self.engines.clone();
        let hub = self.hub.clone();
        let settings = self.settings.clone();
        let registry = RegistryClient {
            retire: ctx.address().recipient(),
            forget: ctx.address().recipient(),
            died: ctx.address().recipient(),
            generation,
        };
        let address = Supervisor::start_in_arbiter(&self.arbiters[index], move |_| {
            ThreadActor::new(thread_id, store, engines, hub, registry, settings)
        });
        self.threads
            .insert(thread_id, (address.clone(), generation));
        address
    }

    /// Whether `thread_id`'s registered actor is the one of `generation`.
    fn holds(&self, thread_id: ThreadId, generation: u64) -> bool {
        self.threads
            .get(&thread_id)
            .is_some_and(|(_, registered)| *registered == generation)
    }
}

impl Handler<ThreadDied> for ThreadRegistry {
    type Result = ();

    fn handle(&mut self, message: ThreadDied, ctx: &mut Context<Self>) {
        if !self.holds(message.thread_id, message.generation) {
            return;
        }
        self.threads.remove(&message.thread_id);
        if self.settings.draining.load(Ordering::SeqCst) {
            // Its runs resume at the next start, as after a crash.
            return;
        }
        log::warn!(
            "thread actor died, starting a new one thread_id={} generation={}",
            message.thread_id,
            message.generation
        );
        // The new actor rebuilds from storage: a run the dead one had in flight continues as a
        // new attempt, which fences whatever the old attempt still tries to write.
        self.start_actor(message.thread_id, ctx);
    }
}

impl Handler<ForgetThread> for ThreadRegistry {
    type Result = ();

    fn handle(&mut self, message: ForgetThread, _: &mut Context<Self>) {
        if self.holds(message.thread_id, message.generation) {
            self.threads.remove(&message.thread_id);
        }
    }
}

impl Handler<Retire> for ThreadRegistry {
    type Result = bool;

    fn handle(&mut self, message: Retire, _: &mut Context<Self>) -> bool {
        if self.settings.draining.load(Ordering::SeqCst) {
            return false;
        }
        if !self.holds(message.thread_id, message.generation) {
            return false;
        }
        self.threads.remove(&message.thread_id);
        true
    }
}

impl Handler<LiveThreads> for ThreadRegistry {
    type Result = usize;

    fn handle(&mut self, _: LiveThreads, _: &mut Context<Self>) -> usize {
        self.threads.len()
    }
}

impl Handler<Shutdown> for ThreadRegistry {
    type Result = ResponseActFuture<Self, ShutdownReport>;

    fn handle(&mut self, message: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.settings.draining.store(true, Ordering::SeqCst);
        let actors: Vec<Addr<ThreadActor>> = self
            .threads
            .values()
            .map(|(address, _)| address.clone())
            .collect();
        log::info!(
            "shutdown: draining thread actors count={} grace_ms={}",
            actors.len(),
            message.grace.as_millis()
        );
        let deadline = Instant::now() + message.grace;
        async move {
            let quiet = async {
                let drains = join_all(actors.iter().map(|actor| actor.send(Drain))).await;
                join_all(drains.into_iter().flatten()).await
            };
            let within_grace = tokio::time::timeout_at(deadline.into(), quiet)
                .await
                .is_ok();
            if !within_grace {
                log::info!("shutdown: grace period over, stopping the runs still executing");
            }
            // Always halt: a run that finished in time reports nothing to stop. An actor that
            // does not answer in time (stuck retrying storage) is left to the process exit; its
            // run resumes at the next start as after a crash.
            let halts = join_all(actors.iter().map(|actor| actor.send(Halt)));
            let stopped = match tokio::time::timeout(HALT_TIMEOUT, halts).await {
                Ok(halted) => halted.into_iter().flatten().flatten().count(),
                Err(_) => {
                    log::warn!("shutdown: some thread actors did not stop their runs in time");
                    0
                }
            };
            ShutdownReport { stopped }
        }
        .into_actor(self)
        .map(|report, _, _| report)
        .boxed_local()
    }
}
