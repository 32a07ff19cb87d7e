//! State updates (`POST /threads/{id}/state`): the `source: update` checkpoint of values
//! applied as if a node wrote them, with the next nodes that follow from its edges.

use serde_json::{json, Value};

use super::tasks::pending_tasks;
use crate::domain::checkpoint::{Checkpoint, CheckpointSource};
use crate::domain::ids::{CheckpointId, ThreadId};
use crate::domain::time::Timestamp;
use crate::domain::JsonMap;
use crate::engine::toml::graph::{Graph, START};

/// Builds the `source: update` checkpoint of a state update: `values` (an object, a list of
/// objects, or null) applied through the reducers as if `as_node` wrote them, on top of `base`.
/// `as_node` defaults to the node that wrote `base` (`__start__` on a fresh thread); the next nodes
/// follow from its edges. Errors are client mistakes, described for a 400.
pub fn update_state(
    graph: &Graph,
    thread_id: ThreadId,
    base: Option<&Checkpoint>,
    values: Option<&Value>,
    as_node: Option<&str>,
) -> Result<Checkpoint, String> {
    let as_node = match as_node {
        Some(name) if name == START || graph.node(name).is_some() => name.to_owned(),
        Some(name) => return Err(format!("Node {name} does not exist")),
        None => match base.map(|base| base.updated_by.as_slice()) {
            None | Some([]) => START.to_owned(),
            Some([single]) => single.clone(),
            Some(_) => return Err("Ambiguous update, specify as_node".to_owned()),
        },
    };
    let updates: Vec<&JsonMap> = match values {
        None | Some(Value::Null) => vec![],
        Some(Value::Object(update)) => vec![update],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_object()
                    .ok_or("values must be an object, a list of objects or null")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("values must be an object, a list of objects or null".to_owned()),
    };
    let mut state = base.map_or_else(|| graph.initial_values(), |base| base.values.clone());
    for update in updates {
        graph
            .apply_updates(&mut state, &[update])
            .map_err(|error| format!("{}: {}", error.error, error.message))?;
    }
    let next = graph.next_after(std::slice::from_ref(&as_node), &state);
    let step = base.map_or(-1, |base| base.step) + 1;
    let checkpoint_id = CheckpointId::generate();
    let tasks = pending_tasks(&checkpoint_id, step, &next);
    let mut metadata = JsonMap::new();
    metadata.insert("graph_id".into(), json!(graph.id));
    metadata.insert("thread_id".into(), json!(thread_id));
    metadata.insert("source".into(), json!(CheckpointSource::Update.as_str()));
    metadata.insert("step".into(), json!(step));
    metadata.insert("parents".into(), json!({}));
    Ok(Checkpoint {
        thread_id,
        checkpoint_ns: String::new(),
        checkpoint_id,
        parent_checkpoint_id: base.map(|base| base.checkpoint_id),
        run_id: None,
        step,
        source: CheckpointSource::Update,
        values: state,
        next,
        tasks,
        metadata,
        created_at: Timestamp::now(),
        updated_by: vec![as_node],
    })
}
