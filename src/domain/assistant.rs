//! Assistants: a graph plus configuration, versioned on every change.

use serde::{Deserialize, Serialize};

use super::ids::AssistantId;
use super::time::Timestamp;
use super::JsonMap;

/// An assistant as returned by the API (its latest version's fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub assistant_id: AssistantId,
    pub graph_id: String,
    pub config: JsonMap,
    pub context: JsonMap,
    pub metadata: JsonMap,
    pub name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
    pub description: Option<String>,
}

/// One stored version of an assistant (the same fields minus `updated_at`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssistantVersion {
    pub assistant_id: AssistantId,
    pub graph_id: String,
    pub config: JsonMap,
    pub context: JsonMap,
    pub metadata: JsonMap,
    pub name: String,
    pub created_at: Timestamp,
    pub version: i64,
    pub description: Option<String>,
}

impl AssistantVersion {
    /// This version as the assistant's current state, updated at `updated_at`.
    pub fn into_assistant(self, updated_at: Timestamp) -> Assistant {
        Assistant {
            assistant_id: self.assistant_id,
            graph_id: self.graph_id,
            config: self.config,
            context: self.context,
            metadata: self.metadata,
            name: self.name,
            created_at: self.created_at,
            updated_at,
            version: self.version,
            description: self.description,
        }
    }
}
