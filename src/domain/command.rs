//! A run's `command` (`resume`, `update`, `goto` with node names or `Send`s), parsed once from
//! its JSON (with errors that say what is wrong, for a 422) and kept typed in the run's
//! arguments. On the wire and in storage it stays exactly the JSON the client sent.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::JsonMap;

/// A run's `command`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command {
    /// The value for the pending interrupt, or `{interrupt_id: value, …}`.
    pub resume: Option<Value>,
    /// A state update applied through the reducers before continuing.
    pub update: Option<JsonMap>,
    /// Nodes to run next instead of the pending ones.
    pub goto: Vec<Goto>,
    /// The JSON it was parsed from, shown as the run's `kwargs.command`.
    raw: Value,
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(deserializer)?;
        Command::parse(&raw).map_err(serde::de::Error::custom)
    }
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
            raw: value.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_command_keeps_the_json_it_came_from_and_parses_it_once() {
        let raw = json!({"resume": null, "goto": {"node": "a", "input": {"x": 1}}});
        let command: Command = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(command.resume, None);
        assert_eq!(command.goto[0].node, "a");
        assert_eq!(serde_json::to_value(&command).unwrap(), raw);
        let error = Command::parse(&json!({"jump": 1})).unwrap_err();
        assert_eq!(
            error,
            "unknown field `jump`: expected resume, update or goto"
        );
    }
}
