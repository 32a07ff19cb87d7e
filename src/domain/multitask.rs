//! Double-texting: what happens to a new run when its thread already has runs in flight.
//! `decide` is the one place this rule lives; the thread actor carries out its answer.

use serde::{Deserialize, Serialize};

/// The `multitask_strategy` of a run request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultitaskStrategy {
    /// Refuse the new run with 409 and change nothing.
    Reject,
    /// Stop and delete every in-flight run with its checkpoints, then start the new run.
    Rollback,
    /// Stop every in-flight run (status `interrupted`, checkpoints kept), then start the new run.
    Interrupt,
    /// Queue the new run behind the in-flight ones (the default).
    #[default]
    Enqueue,
}

impl MultitaskStrategy {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MultitaskStrategy::Reject => "reject",
            MultitaskStrategy::Rollback => "rollback",
            MultitaskStrategy::Interrupt => "interrupt",
            MultitaskStrategy::Enqueue => "enqueue",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Reject, Self::Rollback, Self::Interrupt, Self::Enqueue]
            .into_iter()
            .find(|strategy| strategy.as_str() == text)
    }
}

/// What the thread actor must do with a new run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is in flight: insert the run and start it now (or when its `after_seconds` is due).
    Start,
    /// Insert the run at the back of the queue.
    Enqueue,
    /// Refuse: 409, nothing is written.
    Reject,
    /// Stop all in-flight runs, mark them `interrupted`, insert and start the new run.
    InterruptInFlight,
    /// Stop all in-flight runs, delete them with their checkpoints, insert and start the new run.
    RollbackInFlight,
}

/// Decides the fate of a new run given how many runs are pending or running on its thread.
pub fn decide(strategy: MultitaskStrategy, in_flight: usize) -> Decision {
    if in_flight == 0 {
        return Decision::Start;
    }
    match strategy {
        MultitaskStrategy::Reject => Decision::Reject,
        MultitaskStrategy::Enqueue => Decision::Enqueue,
        MultitaskStrategy::Interrupt => Decision::InterruptInFlight,
        MultitaskStrategy::Rollback => Decision::RollbackInFlight,
    }
}

/// What the cancel endpoints do to the runs they name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelAction {
    /// Stop; status `interrupted`; checkpoints kept.
    #[default]
    Interrupt,
    /// Stop; delete the run and its checkpoints.
    Rollback,
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision as D;
    use MultitaskStrategy as S;

    fn check(strategy: MultitaskStrategy, in_flight: usize, expected: Decision) {
        assert_eq!(
            decide(strategy, in_flight),
            expected,
            "{strategy:?} with {in_flight} in flight"
        );
    }

    #[test]
    fn every_strategy_starts_at_once_on_an_idle_thread() {
        check(S::Reject, 0, D::Start);
        check(S::Rollback, 0, D::Start);
        check(S::Interrupt, 0, D::Start);
        check(S::Enqueue, 0, D::Start);
    }

    #[test]
    fn strategies_act_on_in_flight_runs() {
        check(S::Reject, 1, D::Reject);
        check(S::Reject, 3, D::Reject);
        check(S::Enqueue, 1, D::Enqueue);
        check(S::Enqueue, 4, D::Enqueue);
        check(S::Interrupt, 1, D::InterruptInFlight);
        check(S::Interrupt, 2, D::InterruptInFlight);
        check(S::Rollback, 1, D::RollbackInFlight);
        check(S::Rollback, 5, D::RollbackInFlight);
    }

    #[test]
    fn strategy_spelling_round_trips() {
        for strategy in [S::Reject, S::Rollback, S::Interrupt, S::Enqueue] {
            assert_eq!(MultitaskStrategy::parse(strategy.as_str()), Some(strategy));
        }
        assert_eq!(MultitaskStrategy::default(), S::Enqueue);
    }
}
