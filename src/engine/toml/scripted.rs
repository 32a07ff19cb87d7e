//! The built-in offline chat model and canned tools, so the default `agent` graph works with no
//! network. The model is deterministic apart from message and tool-call ids.

use serde_json::{json, Value};
use uuid::Uuid;

use super::messages::{content_text, message_type};

/// The canned web-search tool of the default `agent` graph.
pub const SEARCH_TOOL: &str = "tavily_search_results_json";

/// Tools that need no configuration.
pub const BUILTIN_TOOLS: [&str; 1] = [SEARCH_TOOL];

fn ai_message(content: String, calls: Vec<Value>) -> Value {
    json!({
        "content": content,
        "additional_kwargs": {},
        "response_metadata": {"model_name": "scripted", "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" }},
        "type": "ai",
        "name": null,
        "id": format!("lc_run--{}", Uuid::now_v7()),
        "tool_calls": calls,
        "invalid_tool_calls": [],
        "usage_metadata": null,
    })
}

/// The place a weather question asks about: the words after the last " in ", without
/// trailing punctuation ("what's the weather in nyc?" → "nyc").
fn weather_location(question: &str) -> Option<String> {
    let lower = question.to_lowercase();
    if !lower.contains("weather") {
        return None;
    }
    let after = lower
        .rsplit_once(" in ")
        .map(|(_, place)| place)
        .unwrap_or("");
    let place = after
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace());
    Some(if place.is_empty() {
        "your area".to_owned()
    } else {
        place.to_owned()
    })
}

/// The model's answer to a conversation: a tool call for a weather question when the search tool
/// is bound, a one-sentence answer that uses tool results after them, else an echo.
pub fn reply(messages: &[Value], tools: &[String]) -> Value {
    let Some(last) = messages.last() else {
        return ai_message("Hello! Ask me about the weather somewhere.".into(), vec![]);
    };
    match message_type(last) {
        Some("tool") => {
            let results: Vec<String> = messages
                .iter()
                .rev()
                .take_while(|message| message_type(message) == Some("tool"))
                .map(content_text)
                .collect();
            let summary = results
                .iter()
                .rev()
                .map(|text| describe_result(text))
                .collect::<Vec<_>>()
                .join("; ");
            ai_message(format!("{summary}."), vec![])
        }
        Some("human") => {
            let question = content_text(last);
            match weather_location(&question) {
                Some(place) if tools.iter().any(|tool| tool == SEARCH_TOOL) => {
                    let call = json!({
                        "name": SEARCH_TOOL,
                        "args": {"query": format!("weather in {place}")},
                        "id": format!("call_{}", &Uuid::new_v4().simple().to_string()[..24]),
                        "type": "tool_call",
                    });
                    ai_message(String::new(), vec![call])
                }
                _ => ai_message(format!("You said: {question}"), vec![]),
            }
        }
        _ => ai_message("Is there anything else I can help with?".into(), vec![]),
    }
}

/// Splits text into word-sized pieces that concatenate back to it ("a b" → "a", " b").
pub fn words(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = vec![];
    let mut previous_space = true;
    for character in text.chars() {
        let space = character.is_whitespace();
        if space && !previous_space || pieces.is_empty() {
            pieces.push(String::new());
        }
        if let Some(piece) = pieces.last_mut() {
            piece.push(character);
        }
        previous_space = space;
    }
    pieces
}

/// One streamed piece of `message` as an `AIMessageChunk` dict with the message's id; the last
/// one carries `chunk_position: "last"` and the response metadata.
pub fn chunk(message: &Value, piece: String, last: bool) -> Value {
    json!({
        "content": piece,
        "additional_kwargs": {},
        "response_metadata": if last { message["response_metadata"].clone() } else { json!({}) },
        "type": "AIMessageChunk",
        "name": null,
        "id": message["id"],
        "tool_calls": [],
        "invalid_tool_calls": [],
        "usage_metadata": null,
        "tool_call_chunks": [],
        "chunk_position": if last { json!("last") } else { Value::Null },
    })
}

/// One sentence about a search result, using its fields when it is the canned weather JSON.
fn describe_result(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    match parsed {
        Some(result) if result.get("temp_c").is_some() => {
            let query = result["query"].as_str().unwrap_or("the weather");
            let place = query.strip_prefix("weather in ").unwrap_or(query);
            format!(
                "The weather in {place} is {} and {}°C, according to the search result",
                result["conditions"].as_str().unwrap_or("unknown"),
                result["temp_c"]
            )
        }
        _ => format!("The search returned: {text}"),
    }
}

/// Canned search result: stable figures derived from the query text.
fn search(query: &str) -> Value {
    let seed: u32 = query.bytes().map(u32::from).sum();
    const CONDITIONS: [&str; 4] = ["sunny", "cloudy", "rainy", "windy"];
    json!({
        "query": query,
        "temp_c": 5 + seed % 25,
        "conditions": CONDITIONS[(seed % 4) as usize],
    })
}

/// The canned search tool on a call's arguments: the result text, or what is wrong with them.
pub fn search_tool(args: &Value) -> Result<String, String> {
    match args["query"].as_str() {
        Some(query) => Ok(search(query).to_string()),
        None => Err("the 'query' argument (a string) is required".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_concatenate_back_to_the_text() {
        let text = "The weather in nyc is  cloudy.";
        let pieces = words(text);
        assert_eq!(pieces[..3], ["The", " weather", " in"]);
        assert_eq!(pieces.concat(), text);
        assert!(words("").is_empty());
    }
    use crate::engine::toml::messages::tool_calls;

    fn human(text: &str) -> Value {
        json!({"type": "human", "content": text, "id": "h"})
    }

    #[test]
    fn a_weather_question_calls_the_search_tool_with_the_place() {
        let tools = vec![SEARCH_TOOL.to_owned()];
        let answer = reply(&[human("what's the weather in nyc?")], &tools);
        assert_eq!(tool_calls(&answer).len(), 1);
        assert_eq!(
            answer["tool_calls"][0]["args"],
            json!({"query": "weather in nyc"})
        );
        assert!(answer["id"].as_str().unwrap().starts_with("lc_run--"));
    }

    #[test]
    fn the_answer_after_a_tool_result_uses_it_in_one_sentence() {
        let tools = vec![SEARCH_TOOL.to_owned()];
        let question = human("what's the weather in nyc?");
        let call = reply(std::slice::from_ref(&question), &tools);
        let result = crate::engine::toml::messages::tool_message(
            &call["tool_calls"][0],
            search_tool(&call["tool_calls"][0]["args"]).unwrap(),
            "success",
        );
        assert_eq!(result["tool_call_id"], call["tool_calls"][0]["id"]);
        let answer = reply(&[question, call, result.clone()], &tools);
        let text = answer["content"].as_str().unwrap();
        let figures: Value = serde_json::from_str(result["content"].as_str().unwrap()).unwrap();
        assert!(text.starts_with("The weather in nyc is"), "{text}");
        assert!(text.contains(&format!("{}°C", figures["temp_c"])), "{text}");
        assert_eq!(text.matches('.').count(), 1, "one sentence: {text}");
        assert!(tool_calls(&answer).is_empty());
    }

    #[test]
    fn other_questions_are_echoed_and_bad_search_arguments_are_named() {
        assert_eq!(reply(&[human("hi")], &[])["content"], "You said: hi");
        let error = search_tool(&json!({"q": 1})).unwrap_err();
        assert!(error.contains("'query'"), "{error}");
    }
}
