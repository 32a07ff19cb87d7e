//! The retry policy of an `http` or `command` node: how many attempts, and the exponential
//! backoff between them.

use std::time::Duration;

use crate::engine::toml::spec::RetrySpec;

/// How often, and how far apart, a node's attempts are made.
#[derive(Debug)]
pub(super) struct RetryPolicy {
    pub(super) max_attempts: u32,
    backoff_ms: f64,
    backoff_factor: f64,
    max_backoff_ms: f64,
}

impl RetryPolicy {
    /// The policy a `retry` table declares; without one, a single attempt.
    pub(super) fn new(owner: &str, spec: Option<&RetrySpec>) -> Result<Self, String> {
        let Some(spec) = spec else {
            return Ok(RetryPolicy {
                max_attempts: 1,
                backoff_ms: 0.0,
                backoff_factor: 1.0,
                max_backoff_ms: 0.0,
            });
        };
        if spec.max_attempts == 0 {
            return Err(format!(
                "{owner} has retry.max_attempts 0; expected at least 1 (the first attempt counts)"
            ));
        }
        if !(spec.backoff_factor.is_finite() && spec.backoff_factor >= 0.0) {
            return Err(format!(
                "{owner} has retry.backoff_factor {}; expected a finite number of at least 0",
                spec.backoff_factor
            ));
        }
        Ok(RetryPolicy {
            max_attempts: spec.max_attempts,
            backoff_ms: spec.backoff_ms as f64,
            backoff_factor: spec.backoff_factor,
            max_backoff_ms: spec.max_backoff_ms as f64,
        })
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let wait_ms = self.backoff_ms * self.backoff_factor.powi(exponent);
        // `min` also turns a NaN (0 ms times an infinite factor) into the cap.
        Duration::from_secs_f64(wait_ms.min(self.max_backoff_ms).max(0.0) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_cap() {
        let spec: RetrySpec = toml::from_str(
            "max_attempts = 5\nbackoff_ms = 100\nbackoff_factor = 3.0\nmax_backoff_ms = 500",
        )
        .unwrap();
        let policy = RetryPolicy::new("node 'x'", Some(&spec)).unwrap();
        let waits: Vec<u128> = (1..=4).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 300, 500, 500]);
    }
}
