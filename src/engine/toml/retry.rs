//! Retries of calls out of Spindle: chat model calls, `http` tools, `http` and `command` nodes,
//! and `command` tools that ask for it. `RetryPolicy` is what a `retry` table declares (or the
//! default of its owner); `RetryPolicy::run` makes the attempts with backon's exponential
//! backoff, a jitter and `Retry-After`. The waits live in the caller's future: a stopped run drops
//! it, and with it the wait or the attempt in flight.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use log::info;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::spec::{RetrySpec, StatusSpec};

/// What a failed attempt says about the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transience {
    /// Another attempt would fail the same way: a refusal, a bad answer, a program that cannot
    /// start.
    Permanent,
    /// The connection failed or broke, the attempt overran its time, or a program failed.
    Transient,
    /// The endpoint answered with an error status: retried when the policy lists it, and then not
    /// before `retry_after` when the endpoint asked for that wait.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
}

/// A failed attempt, as the retry loop sees it.
pub(super) trait AttemptError {
    /// Whether another attempt may succeed.
    fn transience(&self) -> Transience;
    /// What a retry's log line names: `status=<code>` or `error=<class>`; never a payload.
    fn logged(&self) -> String;
}

/// Who owns a policy, which decides what an absent `retry` table and an absent `jitter` mean.
#[derive(Clone, Copy, Debug)]
pub(super) enum Owner {
    /// Chat models and `http` tools: the defaults of the table without one, with jitter.
    Call,
    /// `http` and `command` nodes: one attempt without a table; waits without jitter unless asked.
    Node,
    /// `command` tools: one attempt without a table (a failed program may have done part of its
    /// work); with one, jitter.
    CommandTool,
}

/// How often, how far apart and after which failures a call is made again.
#[derive(Clone, Debug)]
pub(super) struct RetryPolicy {
    /// Attempts in all, the first included.
    pub(super) max_attempts: u32,
    /// The waits: the first wait, the factor, the longest wait, and `max_attempts - 1` waits.
    backoff: ExponentialBuilder,
    /// Each wait is shortened by a random part of up to a quarter (as the OpenAI client does).
    jitter: bool,
    /// The HTTP statuses that are retried.
    statuses: Vec<StatusSpec>,
    /// The longest wait a `Retry-After` can ask for.
    max_retry_after: Duration,
}

/// The failure that ended a call, and how many attempts were made.
#[derive(Debug)]
pub(super) struct GaveUp<E> {
    pub(super) error: E,
    /// "2 attempts made", or "1 attempt made; this failure is not retried" when it ended
    /// attempts the policy would have allowed.
    pub(super) note: String,
    /// Whether the policy allowed more than one attempt.
    retries_allowed: bool,
}

impl<E> GaveUp<E> {
    /// `message` followed by the note in brackets when more than one attempt was allowed (as
    /// models and tools word their errors; nodes always give the note).
    pub(super) fn counted(&self, message: &str) -> String {
        if self.retries_allowed {
            format!("{message} ({})", self.note)
        } else {
            message.to_owned()
        }
    }
}

impl RetryPolicy {
    /// The policy `spec` declares for `subject` ("node 'x'", "tool 'x'"), with the defaults of
    /// its `owner`; errors name the subject and the field.
    pub(super) fn new(
        subject: &str,
        spec: Option<&RetrySpec>,
        owner: Owner,
    ) -> Result<Self, String> {
        let default = RetrySpec::default();
        let (spec, jitter) = match (spec, owner) {
            (None, Owner::Node | Owner::CommandTool) => {
                let single = RetrySpec {
                    max_attempts: 1,
                    ..default
                };
                return Self::checked(subject, &single, false);
            }
            (None, Owner::Call) => (&default, true),
            (Some(spec), Owner::Node) => (spec, spec.jitter.unwrap_or(false)),
            (Some(spec), Owner::Call | Owner::CommandTool) => (spec, spec.jitter.unwrap_or(true)),
        };
        Self::checked(subject, spec, jitter)
    }

    fn checked(subject: &str, spec: &RetrySpec, jitter: bool) -> Result<Self, String> {
        if spec.max_attempts == 0 {
            return Err(format!(
                "{subject} has retry.max_attempts 0; expected at least 1 (the first attempt counts)"
            ));
        }
        if !(spec.backoff_factor.is_finite() && spec.backoff_factor >= 0.0) {
            return Err(format!(
                "{subject} has retry.backoff_factor {}; expected a finite number of at least 0",
                spec.backoff_factor
            ));
        }
        let statuses = match &spec.statuses {
            Some(statuses) => statuses.clone(),
            None => RetrySpec::default_statuses(),
        };
        for status in &statuses {
            if status_range(status).is_none() {
                let shown = match status {
                    StatusSpec::Code(code) => code.to_string(),
                    StatusSpec::Class(class) => format!("{class:?}"),
                };
                return Err(format!(
                    "{subject} has retry.statuses {shown}; expected error statuses from 400 to 599, or \"4xx\" or \"5xx\""
                ));
            }
        }
        let max_backoff = Duration::from_millis(spec.max_backoff_ms);
        // backon does not cap the first wait: a first wait above the longest is the longest.
        let first = Duration::from_millis(spec.backoff_ms).min(max_backoff);
        let backoff = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_factor(spec.backoff_factor as f32)
            .with_max_delay(max_backoff)
            .with_max_times(spec.max_attempts as usize - 1);
        Ok(RetryPolicy {
            max_attempts: spec.max_attempts,
            backoff,
            jitter,
            statuses,
            max_retry_after: Duration::from_millis(spec.max_retry_after_ms),
        })
    }

    /// Whether a failure of this kind is retried (attempts left or not).
    pub(super) fn retries(&self, transience: Transience) -> bool {
        match transience {
            Transience::Permanent => false,
            Transience::Transient => true,
            Transience::Status { code, .. } => self
                .statuses
                .iter()
                .filter_map(status_range)
                .any(|range| range.contains(&code)),
        }
    }

    /// Whether another attempt follows the failure of attempt number `attempt` (1-based).
    pub(super) fn retries_after(&self, error: &impl AttemptError, attempt: u32) -> bool {
        attempt < self.max_attempts && self.retries(error.transience())
    }

    /// Calls `attempt` with the attempt number (from 1) until it succeeds, fails for good, or the
    /// attempts run out; each retry is logged at info with `subject` (`node=x`, `tool=x`), what
    /// failed, the attempt and the wait. Dropping the future stops it at once, waits included.
    pub(super) async fn run<T, E, Fut>(
        &self,
        subject: &str,
        mut attempt: impl FnMut(u32) -> Fut,
    ) -> Result<T, GaveUp<E>>
    where
        E: AttemptError,
        Fut: Future<Output = Result<T, E>>,
    {
        let made = AtomicU32::new(0);
        let outcome = (|| attempt(made.fetch_add(1, Ordering::Relaxed) + 1))
            .retry(self.backoff)
            .sleep(tokio::time::sleep)
            .when(|error: &E| self.retries(error.transience()))
            .adjust(|error: &E, backoff: Option<Duration>| {
                backoff.map(|backoff| self.wait(error.transience(), backoff))
            })
            .notify(|error: &E, wait: Duration| {
                info!(
                    "call failed, retrying {subject} {} attempt={}/{} wait_ms={}",
                    error.logged(),
                    made.load(Ordering::Relaxed),
                    self.max_attempts,
                    wait.as_millis()
                );
            })
            .await;
        let attempts = made.load(Ordering::Relaxed);
        outcome.map_err(|error| {
            let note = self.note(attempts, error.transience());
            GaveUp {
                error,
                note,
                retries_allowed: self.max_attempts > 1,
            }
        })
    }

    /// The wait before the next attempt: the backoff (with jitter), or longer when the endpoint
    /// asked for that with `Retry-After` (at most `max_retry_after`).
    fn wait(&self, transience: Transience, backoff: Duration) -> Duration {
        let backoff = if self.jitter {
            backoff.mul_f64(1.0 - 0.25 * fastrand::f64())
        } else {
            backoff
        };
        match transience {
            Transience::Status {
                retry_after: Some(asked),
                ..
            } => backoff.max(asked.min(self.max_retry_after)),
            _ => backoff,
        }
    }

    fn note(&self, attempts: u32, transience: Transience) -> String {
        let made = match attempts {
            1 => "1 attempt made".to_owned(),
            count => format!("{count} attempts made"),
        };
        if !self.retries(transience) && attempts < self.max_attempts {
            format!("{made}; this failure is not retried")
        } else {
            made
        }
    }
}

/// The statuses an entry of `retry.statuses` stands for; `None` when it is not a valid entry.
fn status_range(status: &StatusSpec) -> Option<std::ops::RangeInclusive<u16>> {
    match status {
        StatusSpec::Code(code @ 400..=599) => Some(*code..=*code),
        StatusSpec::Class(class) if class == "4xx" => Some(400..=499),
        StatusSpec::Class(class) if class == "5xx" => Some(500..=599),
        _ => None,
    }
}

/// The wait a 429 or 503 answer asks for: `retry-after-ms` (milliseconds, as OpenAI's servers
/// send), else `Retry-After` in seconds or as an HTTP date. Other statuses ask for nothing.
pub(super) fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let seconds = |text: &str, scale: f64| {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite() && *number >= 0.0)
            .and_then(|number| Duration::try_from_secs_f64(number / scale).ok())
    };
    if let Some(wait) = header("retry-after-ms").and_then(|text| seconds(text, 1000.0)) {
        return Some(wait);
    }
    let text = header("retry-after")?;
    seconds(text, 1.0).or_else(|| {
        let date = httpdate::parse_http_date(text.trim()).ok()?;
        // A date in the past asks for no wait.
        Some(
            date.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    })
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    fn policy(text: &str, owner: Owner) -> RetryPolicy {
        let spec: RetrySpec = toml::from_str(text).unwrap();
        RetryPolicy::new("node 'x'", Some(&spec), owner).unwrap()
    }

    fn waits(policy: &RetryPolicy) -> Vec<u128> {
        policy
            .backoff
            .build()
            .map(|wait| wait.as_millis())
            .collect()
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_cap() {
        let policy = policy(
            "max_attempts = 5\nbackoff_ms = 100\nbackoff_factor = 3.0\nmax_backoff_ms = 500",
            Owner::Node,
        );
        assert_eq!(waits(&policy), [100, 300, 500, 500]);
        // Without jitter a node waits exactly that.
        let exact = policy.wait(Transience::Transient, Duration::from_millis(300));
        assert_eq!(exact, Duration::from_millis(300));
    }

    #[test]
    fn the_defaults_are_those_of_the_openai_client_for_calls_and_one_attempt_for_nodes() {
        let call = RetryPolicy::new("node 'x'", None, Owner::Call).unwrap();
        assert_eq!(call.max_attempts, 3);
        assert_eq!(waits(&call), [500, 1000]);
        assert!(call.jitter);
        for _ in 0..100 {
            let wait = call.wait(Transience::Transient, Duration::from_millis(1000));
            assert!(
                (750..=1000).contains(&wait.as_millis()),
                "jitter shortens by at most a quarter: {wait:?}"
            );
        }
        for owner in [Owner::Node, Owner::CommandTool] {
            let single = RetryPolicy::new("node 'x'", None, owner).unwrap();
            assert_eq!(single.max_attempts, 1);
            assert!(waits(&single).is_empty());
        }
        assert!(!policy("max_attempts = 2", Owner::Node).jitter);
        assert!(policy("max_attempts = 2\njitter = true", Owner::Node).jitter);
        assert!(!policy("jitter = false", Owner::Call).jitter);
        assert!(policy("max_attempts = 2", Owner::CommandTool).jitter);
    }

    #[test]
    fn statuses_408_429_and_5xx_are_retried_by_default_and_the_list_replaces_them() {
        let default = RetryPolicy::new("node 'x'", None, Owner::Call).unwrap();
        let status = |code| Transience::Status {
            code,
            retry_after: None,
        };
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(default.retries(status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!default.retries(status(code)), "{code}");
        }
        assert!(default.retries(Transience::Transient));
        assert!(!default.retries(Transience::Permanent));
        let listed = policy("statuses = [503, \"4xx\"]", Owner::Call);
        assert!(listed.retries(status(503)) && listed.retries(status(404)));
        assert!(!listed.retries(status(500)));
    }

    #[test]
    fn a_bad_table_is_refused_naming_the_field() {
        let refusal = |text: &str| {
            let spec: RetrySpec = toml::from_str(text).unwrap();
            RetryPolicy::new("tool 't'", Some(&spec), Owner::Call).unwrap_err()
        };
        assert!(refusal("max_attempts = 0").contains("tool 't' has retry.max_attempts 0"));
        assert!(refusal("backoff_factor = -1.0").contains("retry.backoff_factor -1"));
        assert!(refusal("backoff_factor = nan").contains("retry.backoff_factor NaN"));
        assert!(refusal("statuses = [200]").contains("retry.statuses 200"));
        assert!(refusal("statuses = [\"5x\"]").contains("retry.statuses \"5x\""));
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_maximum_and_never_shortens_the_backoff() {
        let policy = policy("max_retry_after_ms = 5000\njitter = false", Owner::Call);
        let asked = |seconds| Transience::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(seconds)),
        };
        let backoff = Duration::from_millis(500);
        assert_eq!(policy.wait(asked(2), backoff), Duration::from_secs(2));
        assert_eq!(policy.wait(asked(60), backoff), Duration::from_secs(5));
        assert_eq!(policy.wait(asked(0), backoff), backoff);
    }

    #[test]
    fn retry_after_is_read_in_seconds_milliseconds_or_as_a_date_on_429_and_503() {
        let headers = |pairs: &[(&'static str, String)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            retry_after(too_many, &headers(&[("retry-after", "2".into())])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                &headers(&[
                    ("retry-after", "1.5".into()),
                    ("retry-after-ms", "250".into())
                ])
            ),
            Some(Duration::from_millis(250))
        );
        let later = SystemTime::now() + Duration::from_secs(30);
        let date = retry_after(
            too_many,
            &headers(&[("retry-after", httpdate::fmt_http_date(later))]),
        )
        .unwrap();
        assert!(
            date > Duration::from_secs(25) && date <= Duration::from_secs(30),
            "{date:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(30));
        assert_eq!(
            retry_after(too_many, &headers(&[("retry-after", past)])),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(too_many, &headers(&[("retry-after", "soon".into())])),
            None
        );
        assert_eq!(
            retry_after(
                StatusCode::INTERNAL_SERVER_ERROR,
                &headers(&[("retry-after", "2".into())])
            ),
            None
        );
    }

    /// A failure for the loop tests.
    #[derive(Debug)]
    struct Flop(Transience);

    impl AttemptError for Flop {
        fn transience(&self) -> Transience {
            self.0
        }
        fn logged(&self) -> String {
            "error=Flop".into()
        }
    }

    #[tokio::test]
    async fn the_loop_stops_at_success_at_a_permanent_failure_or_when_attempts_run_out() {
        let policy = policy("max_attempts = 3\nbackoff_ms = 1", Owner::Call);
        let mut seen = vec![];
        let outcome: Result<u32, _> = policy
            .run("node=x", |attempt| {
                seen.push(attempt);
                async move {
                    match attempt {
                        3 => Ok(attempt),
                        _ => Err(Flop(Transience::Transient)),
                    }
                }
            })
            .await;
        assert_eq!(outcome.unwrap(), 3);
        assert_eq!(seen, [1, 2, 3]);

        let gave_up = policy
            .run("node=x", |_| async {
                Err::<(), _>(Flop(Transience::Transient))
            })
            .await
            .unwrap_err();
        assert_eq!(gave_up.note, "3 attempts made");

        let gave_up = policy
            .run("node=x", |_| async {
                Err::<(), _>(Flop(Transience::Permanent))
            })
            .await
            .unwrap_err();
        assert_eq!(gave_up.note, "1 attempt made; this failure is not retried");
    }
}
