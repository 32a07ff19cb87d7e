//! `http` and `command` nodes: node logic in any language. The node gets `{state, config, node}`
//! as JSON and answers with newline-delimited JSON (`output.rs`). Here: the node types, the
//! `Target` they and `http`/`command` tools send to (`http.rs`, `command.rs`), and each attempt
//! under a timeout, made by the retry policy of `../retry.rs`; failures and bounds are in
//! `failure.rs`.

mod command;
mod failure;
mod http;
mod output;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use log::info;
use serde_json::json;

use super::emit::NodeStream;
use super::node::{Node, NodeInput, NodeResult};
use super::retry::{GaveUp, Owner, RetryPolicy};
use super::spec::NodeSpec;
use crate::domain::run::RunError;
use crate::domain::JsonMap;
use command::Program;
use failure::FailureKind;
pub(super) use failure::{chain, collect, within, Failure};
use http::Endpoint;
use output::NodeOutput;

/// A node that POSTs `{state, config, node}` to a URL and applies the answer.
pub struct HttpNode {
    node: ExternalNode,
}

impl HttpNode {
    /// Builds the node from an `http` declaration; errors name the node and the bad field.
    pub fn new(spec: &NodeSpec) -> Result<Self, String> {
        Ok(HttpNode {
            node: ExternalNode::new(spec, Path::new(""))?,
        })
    }
}

impl Node for HttpNode {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        self.node.invoke(input)
    }
}

/// A node that runs a program with `{state, config, node}` on its stdin and applies its stdout.
pub struct CommandNode {
    node: ExternalNode,
}

impl CommandNode {
    /// Builds the node from a `command` declaration; relative paths start at `dir`.
    pub fn new(spec: &NodeSpec, dir: &Path) -> Result<Self, String> {
        Ok(CommandNode {
            node: ExternalNode::new(spec, dir)?,
        })
    }
}

impl Node for CommandNode {
    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        self.node.invoke(input)
    }
}

/// How long one attempt of an external node may take unless its declaration says otherwise.
const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where an external node or tool sends its input: an HTTP endpoint or a program.
#[derive(Debug)]
pub(super) enum Target {
    Http(Box<Endpoint>),
    Command(Program),
}

impl Target {
    /// The endpoint `url` of `owner` ("node 'x'", "tool 'x'"); errors name the bad field.
    pub(super) fn http(
        owner: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        Ok(Target::Http(Box::new(Endpoint::new(owner, url, headers)?)))
    }

    /// The program `command` of `owner`, run in `dir`; errors name the bad field.
    pub(super) fn command(
        owner: &str,
        command: &[String],
        env: &BTreeMap<String, String>,
        dir: &Path,
    ) -> Result<Self, String> {
        Ok(Target::Command(Program::new(owner, command, env, dir)?))
    }

    /// What logs and messages call the target: the URL without query and credentials, or the
    /// program path. Never header values, environment values or arguments.
    pub(super) fn describe(&self) -> String {
        match self {
            Target::Http(endpoint) => endpoint.describe(),
            Target::Command(program) => program.program.display().to_string(),
        }
    }

    /// Whether the target is an HTTP endpoint.
    pub(super) fn is_http(&self) -> bool {
        matches!(self, Target::Http(_))
    }

    /// Sends `input` (JSON) and feeds every chunk of the answer to `sink` as it arrives. Dropping
    /// the future closes the request or kills the program.
    pub(super) async fn exchange(
        &self,
        input: Bytes,
        sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        match self {
            Target::Http(endpoint) => endpoint.post(input, sink).await,
            Target::Command(program) => program.run(input, sink).await,
        }
    }
}

/// Parses `timeout_seconds` of `owner`: a positive number of seconds, or `default` when absent.
pub(super) fn timeout_of(
    owner: &str,
    seconds: Option<f64>,
    default: Duration,
) -> Result<Duration, String> {
    match seconds {
        None => Ok(default),
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| format!("{owner} has timeout_seconds {seconds}, which is too large"))
        }
        Some(seconds) => Err(format!(
            "{owner} has timeout_seconds {seconds}; expected a positive number"
        )),
    }
}

/// An `http` or `command` node: its target, its per-attempt timeout and its retry policy.
struct ExternalNode {
    inner: Arc<Attempts>,
}

impl ExternalNode {
    fn new(spec: &NodeSpec, dir: &Path) -> Result<Self, String> {
        let owner = format!("node '{}'", spec.name());
        let (target, error_class, timeout_seconds, retry) = match spec {
            NodeSpec::Http {
                url,
                headers,
                timeout_seconds,
                retry,
                ..
            } => (
                Target::http(&owner, url, headers)?,
                "HttpNodeError",
                timeout_seconds,
                retry,
            ),
            NodeSpec::Command {
                command,
                env,
                timeout_seconds,
                retry,
                ..
            } => (
                Target::command(&owner, command, env, dir)?,
                "CommandNodeError",
                timeout_seconds,
                retry,
            ),
            _ => return Err(format!("{owner} is neither an http nor a command node")),
        };
        Ok(ExternalNode {
            inner: Arc::new(Attempts {
                node: spec.name().to_owned(),
                timeout: timeout_of(&owner, *timeout_seconds, DEFAULT_NODE_TIMEOUT)?,
                retry: RetryPolicy::new(&owner, retry.as_ref(), Owner::Node)?,
                target,
                error_class,
            }),
        })
    }

    fn invoke(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        let attempts = self.inner.clone();
        Box::pin(async move { attempts.run(input).await })
    }
}

/// One external node's attempts at a task.
struct Attempts {
    node: String,
    target: Target,
    /// The class of errors other than timeouts and bad output.
    error_class: &'static str,
    /// Per attempt.
    timeout: Duration,
    retry: RetryPolicy,
}

impl Attempts {
    /// Makes attempts until one succeeds, one fails for good, or the policy gives up; custom
    /// events of failed attempts stay published.
    async fn run(&self, input: NodeInput) -> NodeResult {
        let payload =
            json!({"state": &*input.state, "config": &*input.config, "node": &input.node});
        let payload = Bytes::from(payload.to_string());
        let max = self.retry.max_attempts;
        let target = self.target.describe();
        let target = target.as_str();
        let stream = &input.stream;
        let subject = format!("node={}", self.node);
        self.retry
            .run(&subject, |attempt| {
                let payload = payload.clone();
                async move {
                    info!(
                        "external node attempt started node={} target={target} attempt={attempt}/{max}",
                        self.node
                    );
                    let started = Instant::now();
                    let outcome = within(self.timeout, self.attempt(payload, stream)).await;
                    let elapsed_ms = started.elapsed().as_millis();
                    match &outcome {
                        Ok(_) => info!(
                            "external node attempt finished node={} target={target} attempt={attempt}/{max} elapsed_ms={elapsed_ms} outcome=success",
                            self.node
                        ),
                        Err(failure) => info!(
                            "external node attempt finished node={} target={target} attempt={attempt}/{max} elapsed_ms={elapsed_ms} outcome=error class={} retry={}",
                            self.node,
                            self.class_of(failure),
                            self.retry.retries_after(failure, attempt)
                        ),
                    }
                    outcome
                }
            })
            .await
            .map_err(|gave_up| self.give_up(gave_up).into())
    }

    async fn attempt(
        &self,
        payload: Bytes,
        stream: &NodeStream,
    ) -> Result<Option<JsonMap>, Failure> {
        let mut output = NodeOutput::new(stream);
        self.target
            .exchange(payload, |chunk| output.push(chunk))
            .await?;
        output.finish()
    }

    fn class_of(&self, failure: &Failure) -> &'static str {
        match failure.kind {
            FailureKind::Timeout => "NodeTimeoutError",
            FailureKind::Output => "NodeOutputError",
            _ => self.error_class,
        }
    }

    fn give_up(&self, gave_up: GaveUp<Failure>) -> RunError {
        let failure = gave_up.error;
        RunError::new(
            self.class_of(&failure),
            format!(
                "node '{}' {} ({})",
                self.node, failure.message, gave_up.note
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_checked_at_load() {
        let node = |text: &str| -> Result<ExternalNode, String> {
            let spec: NodeSpec = toml::from_str(text).unwrap();
            ExternalNode::new(&spec, Path::new("/graphs"))
        };
        let error = |text: &str| node(text).err().expect("the declaration is refused");
        assert!(error("name = 'n'\nkind = 'http'\nurl = 'nope'").contains("node 'n' has url"));
        assert!(error("name = 'n'\nkind = 'http'\nurl = 'ftp://x/'").contains("http or https"));
        assert!(error("name = 'n'\nkind = 'command'\ncommand = []").contains("empty command"));
        assert!(
            error("name = 'n'\nkind = 'command'\ncommand = ['x']\ntimeout_seconds = 0")
                .contains("timeout_seconds 0")
        );
        assert!(
            error("name = 'n'\nkind = 'command'\ncommand = ['x']\nretry = {max_attempts = 0}")
                .contains("retry.max_attempts 0")
        );
        assert!(error(
            "name = 'n'\nkind = 'command'\ncommand = ['x']\nretry = {backoff_factor = -1.0}"
        )
        .contains("retry.backoff_factor -1"));
        assert!(error(
            "name = 'n'\nkind = 'command'\ncommand = ['x']\nretry = {backoff_factor = nan}"
        )
        .contains("retry.backoff_factor NaN"));
        let secret = error(
            "name = 'n'\nkind = 'http'\nurl = 'http://x/'\nheaders = {Authorization = \"secret\\n\"}",
        );
        assert!(
            secret.contains("Authorization") && !secret.contains("secret"),
            "{secret}"
        );
        assert!(node("name = 'n'\nkind = 'http'\nurl = 'http://127.0.0.1:1/x'").is_ok());
    }

    #[test]
    fn debug_output_hides_header_and_env_values() {
        let headers = BTreeMap::from([("X-Key".to_owned(), "hunter2".to_owned())]);
        let endpoint =
            Endpoint::new("tool 't'", "http://u:pw@127.0.0.1:1/a?token=t", &headers).unwrap();
        let text = format!("{endpoint:?}");
        assert!(!text.contains("hunter2") && !text.contains("pw") && !text.contains("token"));
        let env = BTreeMap::from([("KEY".to_owned(), "hunter2".to_owned())]);
        let program = Program::new("tool 't'", &["x".to_owned()], &env, Path::new("")).unwrap();
        assert!(!format!("{program:?}").contains("hunter2"));
    }
}
