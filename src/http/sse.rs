//! Streaming response bodies: Server-Sent Events from a run's stream (with heartbeats, a
//! `stream_mode` filter and the error event of a cut-off subscriber), and the keep-alive JSON
//! body of `/wait` and `/join` (a `\n` per heartbeat until the result is ready). Both can cancel
//! their run when the client goes away (`on_disconnect: "cancel"`, `cancel_on_disconnect`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::actors::{CancelRuns, ThreadActor};
use crate::domain::ids::RunId;
use crate::domain::multitask::CancelAction;
use crate::domain::stream_mode::StreamMode;
use crate::stream::{sse_frame, Item, Subscription};

const HEARTBEAT: &[u8] = b": heartbeat\r\n\r\n";

/// How often a response whose run is cancelled when its client goes away writes a heartbeat
/// (when its run is quiet), whatever `stream.heartbeat_seconds` says. A closed connection is
/// only noticed by a write that fails, the second after the peer went away, so a client that
/// disconnects is noticed within two of these.
const DISCONNECT_PROBE: Duration = Duration::from_millis(300);

/// Cancels a run (as `interrupt`) when dropped before `finish`: the response body is dropped
/// when the client disconnects.
pub struct DisconnectGuard {
    target: Option<(Addr<ThreadActor>, RunId)>,
}

impl DisconnectGuard {
    /// A guard that cancels `run_id` on disconnect when `cancel` is set.
    pub fn new(cancel: bool, thread: Addr<ThreadActor>, run_id: RunId) -> Self {
        Self {
            target: cancel.then_some((thread, run_id)),
        }
    }

    /// The response was delivered whole: nothing to cancel.
    fn finish(&mut self) {
        self.target = None;
    }

    /// How often the response must write while its run is quiet: `heartbeat`, or more often
    /// when a disconnect cancels the run, so that it is noticed within a second.
    fn write_interval(&self, heartbeat: Duration) -> Duration {
        match self.target {
            Some(_) => heartbeat.min(DISCONNECT_PROBE),
            None => heartbeat,
        }
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some((thread, run_id)) = self.target.take() {
            log::info!("client disconnected, cancelling run run_id={run_id}");
            thread.do_send(CancelRuns {
                run_ids: vec![run_id],
                action: CancelAction::Interrupt,
                on_disconnect: true,
            });
        }
    }
}

fn heartbeat_timer(every: Duration) -> Interval {
    let mut timer = interval_at(Instant::now() + every, every);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// Which events a join asked for (`stream_mode`); `metadata` and `error` always pass.
#[derive(Clone, Debug, Default)]
pub struct ModeFilter {
    modes: Option<HashSet<String>>,
}

impl ModeFilter {
    /// Passes everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Passes the events of these modes (none: everything).
    pub fn of(modes: Vec<StreamMode>) -> Self {
        let set: HashSet<String> = modes
            .into_iter()
            .flat_map(|mode| [mode.as_str(), mode.event_name()])
            .map(str::to_owned)
            .collect();
        Self {
            modes: (!set.is_empty()).then_some(set),
        }
    }

    fn passes(&self, event: &str) -> bool {
        let Some(modes) = &self.modes else {
            return true;
        };
        let base = event.split('|').next().unwrap_or(event);
        let base = base.split('/').next().unwrap_or(base);
        matches!(base, "metadata" | "error") || modes.contains(base)
    }
}

struct SseState {
    subscription: Subscription,
    filter: ModeFilter,
    heartbeat: Interval,
    guard: DisconnectGuard,
    done: bool,
}

fn error_frame(error: &str, message: &str) -> Bytes {
    sse_frame(
        "error",
        &json!({"error": error, "message": message}).to_string(),
        None,
    )
}

/// The body of an SSE response: the subscription's events, heartbeats while it is quiet, and
/// the end when the run ends.
fn sse_body(
    state: SseState,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + 'static {
    stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            tokio::select! {
                item = state.subscription.next() => match item {
                    Some(Item::Event(event)) => {
                        if state.filter.passes(&event.name) {
                            return Some((Ok(event.frame.clone()), state));
                        }
                    }
                    Some(Item::CutOff) => {
                        state.done = true;
                        state.guard.finish();
                        let frame = error_frame(
                            "StreamOverflow",
                            "This client fell too far behind the run and was disconnected; reconnect to continue.",
                        );
                        return Some((Ok(frame), state));
                    }
                    Some(Item::Gap { oldest }) => {
                        state.done = true;
                        state.guard.finish();
                        let frame = error_frame(
                            "StreamGap",
                            &format!("Events after the given Last-Event-ID are no longer kept; the oldest kept event is {oldest}."),
                        );
                        return Some((Ok(frame), state));
                    }
                    None => {
                        state.guard.finish();
                        return None;
                    }
                },
                _ = state.heartbeat.tick() => {
                    return Some((Ok(Bytes::from_static(HEARTBEAT)), state));
                }
            }
        }
    })
}

/// Headers of every SSE response, plus the run's locations when given.
fn sse_response(locations: Option<(String, String)>) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, "text/event-stream; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"));
    if let Some((location, content_location)) = locations {
        response
            .insert_header((header::LOCATION, location))
            .insert_header((header::CONTENT_LOCATION, content_location));
    }
    response
}

/// A 200 SSE response streaming `subscription`.
pub fn events(
    subscription: Subscription,
    filter: ModeFilter,
    heartbeat: Duration,
    guard: DisconnectGuard,
    locations: Option<(String, String)>,
) -> HttpResponse {
    let state = SseState {
        subscription,
        filter,
        heartbeat: heartbeat_timer(guard.write_interval(heartbeat)),
        guard,
        done: false,
    };
    sse_response(locations).streaming(sse_body(state))
}

/// A 200 SSE response that sends one `error` event, then ends.
pub fn single_error(error: &str, message: &str) -> HttpResponse {
    let frame = error_frame(error, message);
    sse_response(None).streaming(stream::once(async move { Ok::<_, Infallible>(frame) }))
}

/// A 200 SSE response with no events (a finished run that kept none).
pub fn empty() -> HttpResponse {
    sse_response(None).streaming(stream::empty::<Result<Bytes, Infallible>>())
}

struct WaitState {
    result: Option<BoxFuture<'static, Value>>,
    heartbeat: Interval,
    guard: DisconnectGuard,
}

/// A 200 JSON response whose body is `result` once ready. A result ready within one heartbeat
/// is a plain JSON body; otherwise the body starts at once and gets a `\n` per heartbeat while
/// waiting (JSON parsers skip leading whitespace).
pub async fn keep_alive_json(
    mut result: BoxFuture<'static, Value>,
    heartbeat: Duration,
    mut guard: DisconnectGuard,
    content_location: String,
    location: String,
) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_LOCATION, content_location))
        .insert_header((header::LOCATION, location));
    let heartbeat = guard.write_interval(heartbeat);
    if let Ok(value) = tokio::time::timeout(heartbeat, &mut result).await {
        guard.finish();
        return response.json(value);
    }
    let state = WaitState {
        result: Some(result),
        heartbeat: heartbeat_timer(heartbeat),
        guard,
    };
    let keep_alive = stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"\n")) });
    let body = stream::unfold(state, |mut state| async move {
        let result = state.result.as_mut()?;
        tokio::select! {
            value = result => {
                state.result = None;
                state.guard.finish();
                let text = serde_json::to_vec(&value).unwrap_or_else(|_| b"null".to_vec());
                Some((Ok::<_, Infallible>(Bytes::from(text)), state))
            }
            _ = state.heartbeat.tick() => Some((Ok(Bytes::from_static(b"\n")), state)),
        }
    });
    response
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .streaming(keep_alive.chain(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_passes_named_modes_and_always_metadata_and_errors() {
        let filter = ModeFilter::of(vec![StreamMode::Updates, StreamMode::MessagesTuple]);
        for passing in ["updates", "updates|sub:1", "messages", "metadata", "error"] {
            assert!(filter.passes(passing), "{passing}");
        }
        assert!(filter.passes("messages/partial"));
        assert!(!filter.passes("values"));
        assert!(ModeFilter::all().passes("values"));
    }
}
