//! The newline-delimited answer of an `http` or `command` node: leading `{"custom": …}` lines
//! published as `custom` events as they complete, then the partial state update.

use serde_json::Value;

use super::failure::{check_size, quote, Failure, FailureKind};
use crate::domain::JsonMap;
use crate::engine::toml::emit::NodeStream;

/// The newline-delimited answer of one attempt: leading `{"custom": …}` lines are published as
/// they complete; the rest is the final update.
pub(super) struct NodeOutput<'a> {
    stream: &'a NodeStream,
    /// The current, unfinished line.
    line: Vec<u8>,
    /// Everything after the last custom line.
    rest: Vec<u8>,
}

impl<'a> NodeOutput<'a> {
    pub(super) fn new(stream: &'a NodeStream) -> Self {
        NodeOutput {
            stream,
            line: Vec::new(),
            rest: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, mut chunk: &[u8]) -> Result<(), Failure> {
        while let Some(end) = chunk.iter().position(|byte| *byte == b'\n') {
            self.line.extend_from_slice(&chunk[..=end]);
            chunk = &chunk[end + 1..];
            let line = std::mem::take(&mut self.line);
            self.take_line(line);
        }
        self.line.extend_from_slice(chunk);
        check_size(self.line.len() + self.rest.len())
    }

    /// A custom line counts only while nothing else came since the last one: inside a
    /// pretty-printed update, a line like `{"custom": 1}` is part of the update. Blank lines
    /// before the update are dropped, so `rest` starts at its first non-blank line.
    fn take_line(&mut self, line: Vec<u8>) {
        if self.rest.is_empty() {
            if let Some(value) = custom_value(&line) {
                self.stream.custom(value);
                return;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                return;
            }
        }
        self.rest.extend_from_slice(&line);
    }

    pub(super) fn finish(mut self) -> Result<Option<JsonMap>, Failure> {
        let line = std::mem::take(&mut self.line);
        self.take_line(line);
        let text = std::str::from_utf8(&self.rest).map_err(|_| {
            Failure::new(
                FailureKind::Output,
                "answered with output that is not UTF-8",
            )
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(update)) => Ok(Some(update)),
            Ok(Value::Null) => Ok(None),
            Ok(_) => Err(Failure::new(
                FailureKind::Output,
                format!(
                    "answered with {}; expected a JSON object (a partial state update) or null",
                    quote(text)
                ),
            )),
            Err(error) => Err(Failure::new(
                FailureKind::Output,
                format!(
                    "answered with output that is not JSON ({error}): {}; expected {{\"custom\": …}} lines, then a JSON object or null",
                    quote(text)
                ),
            )),
        }
    }
}

/// The value of a line that is a JSON object whose only key is `custom`.
fn custom_value(line: &[u8]) -> Option<Value> {
    let line = line.trim_ascii();
    if !line.starts_with(b"{") {
        return None;
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(mut object)) if object.len() == 1 => object.remove("custom"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn output_of(chunks: &[&str]) -> Result<Option<JsonMap>, Failure> {
        let stream = NodeStream::silent("node");
        let mut output = NodeOutput::new(&stream);
        for chunk in chunks {
            output.push(chunk.as_bytes()).unwrap();
        }
        output.finish()
    }

    #[test]
    fn custom_lines_then_an_update_split_anywhere() {
        let update = output_of(&["{\"cus", "tom\": 1}\n{\"custom\": 2}\n{\"a\"", ": 1}\n"]);
        assert_eq!(update.unwrap().unwrap()["a"], 1);
    }

    #[test]
    fn blank_lines_before_the_update_are_dropped_as_they_come() {
        // 300,000 blank lines: kept, each line would rescan all the earlier ones (minutes).
        let blank = "\n".repeat(300_000);
        let update = output_of(&[&blank, "{\"custom\": 1}\n", &blank, "{\"a\": 1}\n", &blank]);
        assert_eq!(update.unwrap().unwrap()["a"], 1);
    }

    #[test]
    fn a_pretty_printed_update_with_a_custom_looking_line_is_one_update() {
        let text = "{\n  \"items\": [\n    {\"custom\": 1}\n  ]\n}\n";
        let update = output_of(&[text]);
        assert_eq!(
            Value::Object(update.unwrap().unwrap()),
            json!({"items": [{"custom": 1}]})
        );
    }

    #[test]
    fn empty_or_null_is_no_update_and_other_values_fail() {
        assert!(output_of(&[""]).unwrap().is_none());
        assert!(output_of(&["{\"custom\": 1}\n"]).unwrap().is_none());
        assert!(output_of(&["null\n"]).unwrap().is_none());
        let failure = output_of(&["[1, 2]"]).unwrap_err();
        assert_eq!(failure.kind, FailureKind::Output);
        assert!(failure.message.contains("[1, 2]"), "{}", failure.message);
        let failure = output_of(&["not json"]).unwrap_err();
        assert!(failure.message.contains("not JSON"), "{}", failure.message);
        let failure = output_of(&["{\"a\": 1}\n{\"custom\": 2}\n"]).unwrap_err();
        assert!(failure.message.contains("trailing"), "{}", failure.message);
    }
}
