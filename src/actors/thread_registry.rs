//! ThreadRegistry: maps a ThreadId to the address of its ThreadActor, starting one (supervised, on
//! one of a fixed pool of arbiters) on first use. HTTP handlers ask it for the address, then send
//! their command to the thread actor directly. Idle thread actors stay until shutdown for now.
// TODO(#5): drop idle thread actors after a configurable idle time.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{
    Actor, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message, MessageResult, Supervisor,
};

use super::thread::ThreadActor;
use crate::domain::ids::ThreadId;
use crate::graph::GraphRegistry;
use crate::storage::Db;
use crate::stream::StreamHub;

/// Returns the thread's actor, starting it if needed. Sent by HTTP handlers and start-up.
#[derive(Message)]
#[rtype(result = "Addr<ThreadActor>")]
pub struct GetThread {
    pub thread_id: ThreadId,
}

/// Drops the registry's address of a thread actor whose thread is gone for good (a stateless
/// run's temporary thread); the actor stops once no address to it remains. Sent by that actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetThread {
    pub thread_id: ThreadId,
}

/// The registry of live thread actors.
pub struct ThreadRegistry {
    db: Db,
    graphs: Arc<GraphRegistry>,
    arbiters: Vec<ArbiterHandle>,
    threads: HashMap<ThreadId, Addr<ThreadActor>>,
    hub: Arc<StreamHub>,
}

impl ThreadRegistry {
    /// A registry that starts thread actors on `arbiters` (at least one).
    pub fn new(
        db: Db,
        graphs: Arc<GraphRegistry>,
        arbiters: Vec<ArbiterHandle>,
        hub: Arc<StreamHub>,
    ) -> Self {
        assert!(
            !arbiters.is_empty(),
            "the registry needs at least one arbiter"
        );
        Self {
            db,
            graphs,
            arbiters,
            threads: HashMap::new(),
            hub,
        }
    }
}

impl Actor for ThreadRegistry {
    type Context = Context<Self>;
}

impl Handler<GetThread> for ThreadRegistry {
    type Result = MessageResult<GetThread>;

    fn handle(&mut self, message: GetThread, ctx: &mut Context<Self>) -> Self::Result {
        let registry = ctx.address();
        let thread_id = message.thread_id;
        let address = self.threads.entry(thread_id).or_insert_with(|| {
            let index = (thread_id.0.as_u128() % self.arbiters.len() as u128) as usize;
            let db = self.db.clone();
            let graphs = self.graphs.clone();
            let hub = self.hub.clone();
            Supervisor::start_in_arbiter(&self.arbiters[index], move |_| {
                ThreadActor::new(thread_id, db, graphs, hub, registry)
            })
        });
        MessageResult(address.clone())
    }
}

impl Handler<ForgetThread> for ThreadRegistry {
    type Result = ();

    fn handle(&mut self, message: ForgetThread, _: &mut Context<Self>) {
        self.threads.remove(&message.thread_id);
    }
}
