//! An `openai` chat model node's validated declaration (`Settings`), and what it derives for
//! each call: the API key read from the environment, the request body, and the node's timeout
//! with the timeout and connection errors it gives.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::wire::openai_message;
use crate::domain::run::RunError;
use crate::engine::toml::external::chain;
use crate::engine::toml::retry::{Owner, RetryPolicy};
use crate::engine::toml::spec::NodeSpec;
use crate::engine::toml::tools::Tool;

/// A node's validated declaration.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) node: String,
    /// `{base_url}/chat/completions`.
    pub(super) endpoint: String,
    /// `base_url` without a trailing slash, user name or password, for logs and error messages.
    pub(super) shown_url: String,
    pub(super) model: String,
    api_key_env: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    system_prompt: Option<String>,
    /// The longest wait for the response to start, and between two pieces of its body.
    pub(super) timeout: Duration,
    pub(super) stream: bool,
    /// The bound tools as OpenAI `tools` entries.
    tools: Vec<Value>,
    /// How a call retries transient failures (by default as the OpenAI client does).
    pub(super) retry: RetryPolicy,
}

/// Default `timeout_seconds`.
const DEFAULT_TIMEOUT_SECONDS: f64 = 60.0;

impl Settings {
    pub(super) fn from_spec(spec: &NodeSpec, tools: &[Arc<Tool>]) -> Result<Self, String> {
        let NodeSpec::ChatModel {
            name,
            delay_ms,
            base_url,
            model,
            api_key_env,
            temperature,
            max_tokens,
            system_prompt,
            timeout_seconds,
            stream,
            retry,
            ..
        } = spec
        else {
            return Err(format!("node '{}' is not a chat_model node", spec.name()));
        };
        let base_url = match base_url.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(format!(
                    "node '{name}' uses provider \"openai\" but has no base_url; set it to the API root, e.g. \"https://api.openai.com/v1\""
                ))
            }
            Some(url) => url.trim_end_matches('/').to_owned(),
        };
        let shown_url = match reqwest::Url::parse(&base_url) {
            Ok(mut url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                // Credentials in the URL are secrets: show it without them.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.as_str().trim_end_matches('/').to_owned()
            }
            _ => {
                return Err(format!(
                    "node '{name}' has base_url \"{base_url}\"; expected an http:// or https:// URL"
                ))
            }
        };
        let model = match model.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(format!(
                    "node '{name}' uses provider \"openai\" but has no model; set it to the model name the endpoint serves"
                ))
            }
            Some(model) => model.to_owned(),
        };
        if let Some(variable) = api_key_env {
            if variable.is_empty() || variable.contains(['=', '\0']) {
                return Err(format!(
                    "node '{name}' has api_key_env \"{variable}\"; expected the name of an environment variable"
                ));
            }
        }
        if let Some(temperature) = temperature {
            if !(temperature.is_finite() && (0.0..=2.0).contains(temperature)) {
                return Err(format!(
                    "node '{name}' has temperature {temperature}; expected a number from 0 to 2"
                ));
            }
        }
        if *max_tokens == Some(0) {
            return Err(format!(
                "node '{name}' has max_tokens 0; expected at least 1"
            ));
        }
        let timeout_seconds = timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        let timeout = Some(timeout_seconds)
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .ok_or_else(|| {
                format!(
                    "node '{name}' has timeout_seconds {timeout_seconds}; expected a positive number"
                )
            })?;
        if *delay_ms != 0 {
            return Err(format!(
                "node '{name}' has delay_ms {delay_ms}, which only the scripted provider uses; remove it"
            ));
        }
        for tool in tools {
            let valid = !tool.name.is_empty()
                && tool.name.len() <= 64
                && tool
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "node '{name}' binds tool '{}', a name OpenAI-compatible endpoints refuse; use at most 64 letters, digits, '_' or '-'",
                    tool.name
                ));
            }
        }
        Ok(Settings {
            node: name.clone(),
            endpoint: format!("{base_url}/chat/completions"),
            shown_url,
            model,
            api_key_env: api_key_env.clone(),
            temperature: *temperature,
            max_tokens: *max_tokens,
            system_prompt: system_prompt.clone(),
            timeout,
            stream: stream.unwrap_or(true),
            tools: tools.iter().map(|tool| tool.binding()).collect(),
            retry: RetryPolicy::new(&format!("node '{name}'"), retry.as_ref(), Owner::Call)?,
        })
    }

    /// The API key from the variable `api_key_env` names, read now; errors name the variable,
    /// never a value.
    pub(super) fn api_key(&self) -> Result<Option<String>, RunError> {
        let Some(variable) = &self.api_key_env else {
            return Ok(None);
        };
        // Surrounding whitespace (a newline from a key file, say) is not part of the key.
        let problem = match std::env::var(variable).as_deref().map(str::trim) {
            Ok("") => "is empty",
            Ok(key) if !key.bytes().all(|byte| (b' '..=b'~').contains(&byte)) => {
                "holds characters an HTTP header cannot carry"
            }
            Ok(key) => return Ok(Some(key.to_owned())),
            Err(std::env::VarError::NotPresent) => "is not set",
            Err(std::env::VarError::NotUnicode(_)) => "is not valid Unicode",
        };
        Err(RunError::new(
            "OpenAIError",
            format!(
                "node '{}': the environment variable {variable} (api_key_env) {problem}",
                self.node
            ),
        ))
    }

    /// The chat completions request for a conversation.
    pub(super) fn request_body(&self, history: &[Value]) -> Result<Value, RunError> {
        let mut messages = Vec::with_capacity(history.len() + 1);
        if let Some(prompt) = self.system_prompt.as_deref().filter(|p| !p.is_empty()) {
            messages.push(json!({"role": "system", "content": prompt}));
        }
        for message in history {
            messages.push(openai_message(message).map_err(|problem| {
                RunError::new("ValueError", format!("node '{}': {problem}", self.node))
            })?);
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("messages".into(), Value::Array(messages));
        if let Some(temperature) = self.temperature {
            body.insert("temperature".into(), json!(temperature));
        }
        if let Some(max_tokens) = self.max_tokens {
            body.insert("max_tokens".into(), json!(max_tokens));
        }
        if !self.tools.is_empty() {
            body.insert("tools".into(), Value::Array(self.tools.clone()));
        }
        body.insert("stream".into(), json!(self.stream));
        if self.stream {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Ok(Value::Object(body))
    }

    fn timed_out(&self) -> RunError {
        RunError::new(
            "APITimeoutError",
            format!(
                "Request timed out: node '{}' got no answer from {}/chat/completions within {} seconds (timeout_seconds)",
                self.node,
                self.shown_url,
                self.timeout.as_secs_f64()
            ),
        )
    }

    fn transport_error(&self, error: reqwest::Error) -> RunError {
        if error.is_timeout() {
            return self.timed_out();
        }
        let what = if error.is_connect() {
            format!("cannot connect to {}", self.shown_url)
        } else if error.is_body() || error.is_decode() {
            format!("the response from {} broke off", self.shown_url)
        } else {
            format!("the request to {} failed", self.shown_url)
        };
        // The URL is named above without credentials; the error would repeat it with them.
        let error = error.without_url();
        RunError::new(
            "APIConnectionError",
            format!(
                "Connection error: node '{}': {what}: {}",
                self.node,
                chain(&error)
            ),
        )
    }

    /// Awaits one network step, bounded by the node's timeout.
    pub(super) async fn within<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, reqwest::Error>>,
    ) -> Result<T, RunError> {
        match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.transport_error(error)),
            Err(_) => Err(self.timed_out()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    pub(in crate::engine::toml::openai) fn spec(extra: &str) -> NodeSpec {
        toml::from_str(&format!(
            "name = \"agent\"\nkind = \"chat_model\"\nprovider = \"openai\"\n{extra}"
        ))
        .unwrap()
    }

    const VALID: &str = "base_url = \"http://127.0.0.1:9/v1/\"\nmodel = \"llama3.1\"\n";

    fn settings(extra: &str) -> Result<Settings, String> {
        let search = Arc::new(Tool::builtin("tavily_search_results_json").unwrap());
        Settings::from_spec(&spec(&format!("{VALID}{extra}")), &[search])
    }

    fn refusal(toml: &str) -> String {
        Settings::from_spec(&spec(toml), &[]).unwrap_err()
    }

    #[test]
    fn a_declaration_is_checked_naming_the_node_and_the_field() {
        let checks = [
            ("model = \"m\"", "base_url"),
            ("base_url = \"\"\nmodel = \"m\"", "base_url"),
            ("base_url = \"ftp://x/v1\"\nmodel = \"m\"", "base_url"),
            ("base_url = \"not a url\"\nmodel = \"m\"", "base_url"),
            ("base_url = \"http://x/v1\"", "model"),
            ("base_url = \"http://x/v1\"\nmodel = \" \"", "model"),
            (&format!("{VALID}temperature = 2.5"), "temperature 2.5"),
            (&format!("{VALID}temperature = -0.1"), "temperature -0.1"),
            (&format!("{VALID}temperature = nan"), "temperature NaN"),
            (&format!("{VALID}timeout_seconds = 0"), "timeout_seconds 0"),
            (
                &format!("{VALID}timeout_seconds = -1"),
                "timeout_seconds -1",
            ),
            (
                &format!("{VALID}timeout_seconds = inf"),
                "timeout_seconds inf",
            ),
            (
                &format!("{VALID}timeout_seconds = 1e300"),
                "timeout_seconds",
            ),
            (&format!("{VALID}max_tokens = 0"), "max_tokens 0"),
            (&format!("{VALID}delay_ms = 200"), "delay_ms 200"),
            (&format!("{VALID}api_key_env = \"\""), "api_key_env"),
            (&format!("{VALID}api_key_env = \"A=B\""), "api_key_env"),
            (
                &format!("{VALID}retry = {{ max_attempts = 0 }}"),
                "retry.max_attempts 0",
            ),
            (
                &format!("{VALID}retry = {{ statuses = [\"2xx\"] }}"),
                "retry.statuses \"2xx\"",
            ),
        ];
        for (toml, field) in checks {
            let message = refusal(toml);
            assert!(message.contains("node 'agent'"), "{toml}: {message}");
            assert!(message.contains(field), "{toml}: {message}");
        }
    }

    #[test]
    fn a_valid_declaration_keeps_its_options_and_trims_the_url() {
        let settings = settings("temperature = 0.2\nmax_tokens = 64\nstream = false").unwrap();
        assert_eq!(settings.shown_url, "http://127.0.0.1:9/v1");
        assert_eq!(settings.endpoint, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(settings.timeout, Duration::from_secs(60));
        assert_eq!(settings.retry.max_attempts, 3, "as the OpenAI client");
        assert!(!settings.stream);
        assert_eq!(
            settings.tools[0]["function"]["name"],
            "tavily_search_results_json"
        );
        assert!(Settings::from_spec(&spec(VALID), &[]).unwrap().stream);
    }

    #[test]
    fn credentials_in_the_base_url_are_used_but_never_shown() {
        let settings = Settings::from_spec(
            &spec("base_url = \"https://user:pw@example.com/v1/\"\nmodel = \"m\""),
            &[],
        )
        .unwrap();
        assert_eq!(
            settings.endpoint,
            "https://user:pw@example.com/v1/chat/completions"
        );
        assert_eq!(settings.shown_url, "https://example.com/v1");
        assert!(!settings.timed_out().message.contains("pw"));
    }

    #[test]
    fn a_tool_name_the_api_refuses_is_named() {
        let mut tools = BTreeMap::new();
        tools.insert(
            "bad name".to_owned(),
            toml::from_str("kind = \"http\"\nurl = \"http://x\"").unwrap(),
        );
        let toolbox =
            crate::engine::toml::tools::Toolbox::new(&tools, std::path::Path::new(".")).unwrap();
        let bound = toolbox.resolve("agent", &["bad name".to_owned()]).unwrap();
        let message = Settings::from_spec(&spec(VALID), &bound).unwrap_err();
        assert!(message.contains("'bad name'"), "{message}");
    }

    #[test]
    fn an_unset_or_empty_key_variable_is_named_never_a_value() {
        let variable = "SPINDLE_OPENAI_UNIT_TEST_KEY_7F3A";
        let settings = settings(&format!("api_key_env = \"{variable}\"")).unwrap();
        std::env::remove_var(variable);
        let error = settings.api_key().unwrap_err();
        assert_eq!(error.error, "OpenAIError");
        assert!(error.message.contains(variable), "{}", error.message);
        assert!(error.message.contains("is not set"), "{}", error.message);
        std::env::set_var(variable, "  ");
        assert!(settings.api_key().unwrap_err().message.contains("is empty"));
        std::env::set_var(variable, "sk-secret-value\n");
        assert_eq!(
            settings.api_key().unwrap().as_deref(),
            Some("sk-secret-value")
        );
        std::env::remove_var(variable);
        assert_eq!(
            Settings::from_spec(&spec(VALID), &[])
                .unwrap()
                .api_key()
                .unwrap(),
            None
        );
    }

    #[test]
    fn langchain_messages_become_openai_messages_after_the_system_prompt() {
        let settings =
            settings("system_prompt = \"Be brief.\"\ntemperature = 0.2\nmax_tokens = 64").unwrap();
        let history = [
            json!({"type": "system", "content": "From the thread.", "id": "s"}),
            json!({"type": "human", "content": [{"type": "text", "text": "weather"}, " in nyc?"], "id": "h", "name": "ann"}),
            json!({"type": "ai", "content": "", "id": "a", "tool_calls": [
                {"name": "tavily_search_results_json", "args": {"query": "weather in nyc"}, "id": "call_1", "type": "tool_call"}
            ]}),
            json!({"type": "tool", "content": "{\"temp_c\": 20}", "tool_call_id": "call_1", "id": "t", "name": "tavily_search_results_json"}),
            json!({"type": "ai", "content": [{"type": "text", "text": "It is 20°C."}], "id": "a2", "tool_calls": []}),
        ];
        let body = settings.request_body(&history).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "From the thread."},
                {"role": "user", "content": [{"type": "text", "text": "weather"}, {"type": "text", "text": " in nyc?"}], "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "tavily_search_results_json", "arguments": "{\"query\":\"weather in nyc\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 20}"},
                {"role": "assistant", "content": "It is 20°C."},
            ])
        );
        assert_eq!(body["model"], "llama3.1");
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn optional_request_fields_are_left_out_when_unset() {
        let settings = Settings::from_spec(&spec(&format!("{VALID}stream = false")), &[]).unwrap();
        let body = settings
            .request_body(&[json!({"type": "human", "content": "hi"})])
            .unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["model", "messages", "stream"]);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn a_message_the_api_cannot_take_fails_naming_its_type() {
        let settings = settings("").unwrap();
        let error = settings
            .request_body(&[json!({"type": "remove", "id": "x"})])
            .unwrap_err();
        assert_eq!(error.error, "ValueError");
        assert!(error.message.contains("'remove'"), "{}", error.message);
    }
}
