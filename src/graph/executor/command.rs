//! A run's `command` (`resume`, `update`, `goto` with node names or `Send`s), parsed from its
//! JSON with errors that say what is wrong, for a 422.

use serde_json::Value;

use crate::domain::JsonMap;

/// A run's `command`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command {
    /// The value for the pending interrupt, or `{interrupt_id: value, …}`.
    pub resume: Option<Value>,
    /// A state update applied through the reducers before continuing.
    pub update: Option<JsonMap>,
    /// Nodes to run next instead of the pending ones.
    pub goto: Vec<Goto>,
}

/// A `command.goto` target: a node, run on the state, or a `Send`: a node run on its own input.
#[derive(Clone, Debug, PartialEq)]
pub struct Goto {
    pub node: String,
    pub send: Option<JsonMap>,
}

impl Goto {
    fn parse(value: &Value) -> Result<Goto, String> {
        const EXPECTED: &str = "`goto` must be a node name, a Send ({\"node\": name, \"input\": object}) or a list of them";
        match value {
            Value::String(node) => Ok(Goto {
                node: node.clone(),
                send: None,
            }),
            Value::Object(fields) => {
                let node = fields.get("node").and_then(Value::as_str);
                let input = match fields.get("input") {
                    None | Some(Value::Null) => Some(JsonMap::new()),
                    Some(Value::Object(input)) => Some(input.clone()),
                    Some(_) => None,
                };
                let known = fields.keys().all(|key| key == "node" || key == "input");
                match (node, input, known) {
                    (Some(node), Some(input), true) => Ok(Goto {
                        node: node.to_owned(),
                        send: Some(input),
                    }),
                    _ => Err(format!("{EXPECTED}, got {value}")),
                }
            }
            other => Err(format!("{EXPECTED}, got {other}")),
        }
    }
}

impl Command {
    /// Parses `{resume?, update?, goto?}`; errors say what is wrong, for a 422.
    pub fn parse(value: &Value) -> Result<Command, String> {
        let Value::Object(fields) = value else {
            return Err(format!("expected an object, got {value}"));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|key| !["resume", "update", "goto"].contains(&key.as_str()))
        {
            return Err(format!(
                "unknown field `{unknown}`: expected resume, update or goto"
            ));
        }
        let update = match fields.get("update") {
            None | Some(Value::Null) => None,
            Some(Value::Object(update)) => Some(update.clone()),
            Some(other) => return Err(format!("`update` must be an object, got {other}")),
        };
        let goto = match fields.get("goto") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(targets)) => {
                targets.iter().map(Goto::parse).collect::<Result<_, _>>()?
            }
            Some(target) => vec![Goto::parse(target)?],
        };
        Ok(Command {
            resume: fields
                .get("resume")
                .filter(|resume| !resume.is_null())
                .cloned(),
            update,
            goto,
        })
    }
}
