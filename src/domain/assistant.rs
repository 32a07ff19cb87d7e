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

impl AssistantVersion {
    /// Copies `config.configurable` into `context` when the context is empty, as the official
    /// server does when only the former is given.
    pub fn mirror_context(&mut self) {
        if self.context.is_empty() {
            if let Some(serde_json::Value::Object(configurable)) = self.config.get("configurable") {
                self.context.clone_from(configurable);
            }
        }
    }
}

/// A change to an assistant, written as its next version (`PATCH /assistants/{id}`): the given
/// fields replace the current ones, except `metadata`, which is merged in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AssistantChange {
    pub graph_id: Option<String>,
    pub config: Option<JsonMap>,
    /// Without it, the context mirrors the (new) config's `configurable` if it is empty.
    pub context: Option<JsonMap>,
    pub metadata: Option<JsonMap>,
    pub name: Option<String>,
    pub description: Option<String>,
}

impl AssistantChange {
    /// Applies the change to `version`, the copy of the current version that becomes the next.
    pub fn apply(self, version: &mut AssistantVersion) {
        if let Some(graph_id) = self.graph_id {
            version.graph_id = graph_id;
        }
        if let Some(config) = self.config {
            version.config = config;
        }
        match self.context {
            Some(context) => version.context = context,
            None => version.mirror_context(),
        }
        if let Some(metadata) = self.metadata {
            super::merge_into(&mut version.metadata, &metadata);
        }
        if let Some(name) = self.name {
            version.name = name;
        }
        if self.description.is_some() {
            version.description = self.description;
        }
    }
}
