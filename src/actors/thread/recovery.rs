//! Recovery: when a thread actor starts (first use, after its supervisor restarted it, or at
//! start-up for a thread with runs in flight) it rebuilds its queue from storage. A run left
//! `running` has lost its actor (a crash, a shutdown, a restart): it continues from its last
//! checkpoint as a new attempt, unless the settings say to fail it or it used up its attempts.

use actix::fut::{self, wrap_future};
use actix::ActorFutureExt;

use super::actor::{Step, ThreadActor};
use crate::actors::protocol::RunEnd;
use crate::actors::retry::with_retries;
use crate::config::OnRestart;
use crate::domain::ids::RunId;
use crate::domain::run::RunError;

/// Why a run left `running` after `attempts` starts is not continued, if it is not.
fn gives_up(on_restart: OnRestart, max_attempts: u32, attempts: u32) -> Option<RunError> {
    if on_restart == OnRestart::Error {
        return Some(RunError::new(
            "RuntimeError",
            "the server stopped while this run was running, and runtime.on_restart is \"error\"",
        ));
    }
    (attempts >= max_attempts).then(|| {
        RunError::new(
            "RuntimeError",
            format!(
                "the run was started {attempts} times without finishing (runtime.max_attempts = {max_attempts}); it is not resumed again"
            ),
        )
    })
}

impl ThreadActor {
    /// Rebuilds the queue from storage, fails the runs it gives up on, then starts the first.
    pub(super) fn recover(&mut self) -> Step<()> {
        let thread_id = self.thread_id;
        let store = self.store.clone();
        wrap_future(async move { with_retries("load runs", || store.in_flight_runs(thread_id)).await })
            .then(move |result, actor: &mut Self, ctx| {
                let runs = match result {
                    Ok(runs) => runs,
                    Err(error) => {
                        // Starting empty would strand the pending runs: stop and be restarted.
                        actor.rebuild(&error, ctx);
                        return fut::ready(Vec::new()).boxed_local();
                    }
                };
                let (on_restart, max_attempts) =
                    (actor.settings.on_restart, actor.settings.max_attempts);
                let failed = actor.runs.rebuild(runs, |run, attempts| {
                    let error = gives_up(on_restart, max_attempts, attempts)?;
                    log::warn!(
                        "run left running is not resumed run_id={} thread_id={thread_id} attempts={attempts}: {}",
                        run.run_id,
                        error.message
                    );
                    Some(error)
                });
                let resumed = actor.runs.recovered_count();
                let pending = actor.runs.pending_count();
                if pending > 0 || !failed.is_empty() {
                    log::info!(
                        "thread recovered thread_id={thread_id} resumed={resumed} failed={} pending={}",
                        failed.len(),
                        pending - resumed
                    );
                }
                fut::ready(failed).boxed_local()
            })
            .then(|failed: Vec<(RunId, RunError)>, _: &mut Self, _| {
                let mut steps = fut::ready(()).boxed_local();
                for (run_id, error) in failed {
                    steps = steps
                        .then(move |(), actor: &mut Self, _| {
                            actor.record_end(run_id, None, RunEnd::Failed(error))
                        })
                        .boxed_local();
                }
                steps
                    .then(|(), actor: &mut Self, ctx| actor.start_next(ctx))
                    .boxed_local()
            })
            .boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_given_up_on_by_setting_or_after_its_attempts() {
        assert!(gives_up(OnRestart::Error, 3, 0).is_some());
        assert!(gives_up(OnRestart::Resume, 3, 2).is_none());
        let error = gives_up(OnRestart::Resume, 3, 3).unwrap();
        assert!(
            error.message.contains("runtime.max_attempts = 3"),
            "{}",
            error.message
        );
    }
}
