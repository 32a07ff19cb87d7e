//! `AppState`: what every handler can reach (the runtime, and the HTTP settings).

use std::time::Duration;

use crate::actors::Runtime;
use crate::storage::SharedStore;

/// What every handler can reach.
pub struct AppState {
    pub runtime: Runtime,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Interval of SSE heartbeats and `/wait` keep-alives.
    pub heartbeat: Duration,
}

impl AppState {
    /// The store, for reads and for writes that touch no run.
    pub fn store(&self) -> &SharedStore {
        self.runtime.store()
    }
}
