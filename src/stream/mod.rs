//! Run event streams: the fan-out between a run and the clients watching it. Each run has a
//! `RunStream`: events get increasing ids (1, 2, …) and are framed for Server-Sent Events once,
//! then shared by every subscriber. A bounded replay buffer serves late joiners and
//! `Last-Event-ID` reconnects. Publishing never blocks: each subscriber has a bounded queue, and
//! a subscriber whose queue is full is cut off (it sees an `error` event after what it already
//! had). The `StreamHub` finds a run's stream; it keeps a resumable run's stream for a retention
//! time after the run ends. Imports: domain only.

mod hub;
mod run_stream;

pub use hub::StreamHub;
pub use run_stream::{
    metadata_event, sse_frame, Event, Item, RunStream, StreamLimits, Subscription,
};
