//! Test-only fault injection (compiled with `cfg(test)` or the `testing` feature, never in a
//! release build): a thread actor that stops or panics, a state update whose reducers panic, a
//! run actor that dies.

use actix::{ActorContext, Context, Handler};

use super::protocol::{Die, InjectFault};
use super::run::RunActor;
use super::thread::ThreadActor;

impl Handler<InjectFault> for ThreadActor {
    type Result = ();

    fn handle(&mut self, fault: InjectFault, ctx: &mut Context<Self>) {
        log::warn!(
            "fault injected thread_id={} fault={fault:?}",
            self.thread_id()
        );
        match fault {
            InjectFault::ThreadActorDies => ctx.stop(),
            InjectFault::ThreadActorPanics => {
                panic!("fault injected: a thread actor handler panicked")
            }
            InjectFault::StateUpdatePanics => self.panic_in_next_state_update(),
            InjectFault::RunActorDies => self.kill_active_run(),
        }
    }
}

impl Handler<Die> for RunActor {
    type Result = ();

    fn handle(&mut self, _: Die, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
