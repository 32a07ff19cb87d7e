//! Threads: the Thread object on the wire and the rule that settles a thread's status.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::ThreadId;
use super::time::Timestamp;
use super::JsonMap;

/// Thread status on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadStatus {
    Idle,
    Busy,
    Interrupted,
    Error,
}

impl ThreadStatus {
    /// Every status.
    pub const ALL: [ThreadStatus; 4] = [
        ThreadStatus::Idle,
        ThreadStatus::Busy,
        ThreadStatus::Interrupted,
        ThreadStatus::Error,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadStatus::Idle => "idle",
            ThreadStatus::Busy => "busy",
            ThreadStatus::Interrupted => "interrupted",
            ThreadStatus::Error => "error",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// The status a thread settles in: `busy` while runs are in flight, else `error` after a failed
    /// run, else `interrupted` when the latest checkpoint still has nodes to run, else `idle`.
    pub fn settle(in_flight: bool, errored: bool, head_has_next: bool) -> Self {
        if in_flight {
            ThreadStatus::Busy
        } else if errored {
            ThreadStatus::Error
        } else if head_has_next {
            ThreadStatus::Interrupted
        } else {
            ThreadStatus::Idle
        }
    }
}

/// What `POST /threads` does when the thread id already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfExists {
    /// 409.
    #[default]
    Raise,
    /// Return the existing thread.
    DoNothing,
}

/// A thread as returned by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub thread_id: ThreadId,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub state_updated_at: Timestamp,
    pub metadata: JsonMap,
    pub status: ThreadStatus,
    pub config: JsonMap,
    /// Copy of the latest state values, refreshed when a run ends or the state is changed;
    /// `null` until then.
    pub values: Option<Value>,
    /// Pending dynamic interrupts by task id (`{}` when none).
    pub interrupts: JsonMap,
    /// `{"error", "message"}` of the last failed run, `null` otherwise.
    pub error: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThreadStatus::*;

    fn check(in_flight: bool, errored: bool, head_has_next: bool, expected: ThreadStatus) {
        assert_eq!(
            ThreadStatus::settle(in_flight, errored, head_has_next),
            expected
        );
    }

    #[test]
    fn settle_follows_the_reference_order() {
        check(true, true, true, Busy);
        check(true, false, false, Busy);
        check(false, true, true, Error);
        check(false, true, false, Error);
        check(false, false, true, Interrupted);
        check(false, false, false, Idle);
    }
}
