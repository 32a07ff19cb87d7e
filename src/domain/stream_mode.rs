//! The stream modes a run may ask for: the one list of them, in the order the official server
//! names them in its errors.

use serde::{Deserialize, Serialize};

/// A `stream_mode` of a run or a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamMode {
    Values,
    /// The legacy form: `messages/metadata`, `messages/partial`, `messages/complete`.
    Messages,
    /// `[chunk, metadata]` pairs, sent as event `messages`.
    MessagesTuple,
    Tasks,
    Checkpoints,
    Updates,
    /// LangChain `astream_events` v2 shapes.
    Events,
    Debug,
    Custom,
}

impl StreamMode {
    /// Every mode, in the order the official server lists them.
    pub const ALL: [StreamMode; 9] = [
        StreamMode::Values,
        StreamMode::Messages,
        StreamMode::MessagesTuple,
        StreamMode::Tasks,
        StreamMode::Checkpoints,
        StreamMode::Updates,
        StreamMode::Events,
        StreamMode::Debug,
        StreamMode::Custom,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Values => "values",
            StreamMode::Messages => "messages",
            StreamMode::MessagesTuple => "messages-tuple",
            StreamMode::Tasks => "tasks",
            StreamMode::Checkpoints => "checkpoints",
            StreamMode::Updates => "updates",
            StreamMode::Events => "events",
            StreamMode::Debug => "debug",
            StreamMode::Custom => "custom",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == text)
    }

    /// The wire spellings of every mode, as a list for error messages (`["values", …]`).
    pub fn listed() -> String {
        format!("{:?}", Self::ALL.map(Self::as_str))
    }

    /// The SSE event name this mode's events carry (`messages-tuple` events are `messages`).
    pub fn event_name(self) -> &'static str {
        match self {
            StreamMode::MessagesTuple => "messages",
            other => other.as_str(),
        }
    }
}

impl AsRef<str> for StreamMode {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_round_trips_through_its_spelling_and_json() {
        for mode in StreamMode::ALL {
            assert_eq!(StreamMode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        assert_eq!(StreamMode::parse("tools"), None);
        assert!(StreamMode::listed().starts_with("[\"values\", \"messages\", \"messages-tuple\""));
    }
}
