//! `http` and `command` nodes: node logic in any language. The node gets `{state, config, node}`
//! as JSON and answers with newline-delimited JSON: `{"custom": …}` lines, streamed as `custom`
//! events while it works, then the partial state update. Also the plumbing that `http` and
//! `command` tools share with them: endpoints, programs, timeouts and bounded reads.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use log::info;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::emit::NodeStream;
use super::node::{Node, NodeInput, NodeResult};
use super::spec::{NodeSpec, RetrySpec};
use crate::domain::run::RunError;
use crate::domain::JsonMap;

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

/// The most output kept from one answer (the final update, or a tool's result).
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// How much of a program's stderr is kept for error messages: its end.
const STDERR_TAIL_BYTES: usize = 4096;

/// How many characters of an unexpected answer an error message quotes.
const QUOTE_CHARS: usize = 300;

/// Why one exchange with an endpoint or a program failed; `message` has no subject, so that
/// callers can say "node 'x' …" or "tool 'x' …".
#[derive(Debug)]
pub(super) struct Failure {
    kind: FailureKind,
    pub(super) message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    /// The attempt overran its time.
    Timeout,
    /// The endpoint could not be reached, or the connection broke.
    Transport,
    /// The endpoint answered with a non-2xx status; `retry` for 408, 429 and 5xx.
    Status { retry: bool },
    /// The program could not be started.
    Spawn,
    /// The program exited unsuccessfully.
    Exit,
    /// The answer is not what the protocol expects.
    Output,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// Whether another attempt may succeed: timeouts, connection errors, HTTP 408, 429 and 5xx,
    /// and failed exits are transient; other statuses, unstartable programs and bad output are not.
    fn retryable(&self) -> bool {
        match self.kind {
            FailureKind::Timeout | FailureKind::Transport | FailureKind::Exit => true,
            FailureKind::Status { retry } => retry,
            FailureKind::Spawn | FailureKind::Output => false,
        }
    }
}

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

/// An HTTP endpoint: a URL, extra headers, and the client that reaches it.
pub(super) struct Endpoint {
    url: Url,
    /// May hold secrets: never logged, and `Debug` shows only their names.
    headers: HeaderMap,
    client: reqwest::Client,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.describe())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Checks and builds an endpoint of `owner` ("node 'x'", "tool 'x'").
    fn new(owner: &str, url: &str, headers: &BTreeMap<String, String>) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|error| {
            format!("{owner} has url {url:?}, which is not a valid URL ({error})")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{owner} has url {:?}; expected an http or https URL",
                url.as_str()
            ));
        }
        let mut header_map = HeaderMap::new();
        for (name, value) in headers {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("{owner} has header {name:?}, which is not a valid header name")
            })?;
            // The value is not quoted: headers often carry credentials.
            let header_value = HeaderValue::from_str(value).map_err(|_| {
                format!("{owner} has a value for header {name:?} that is not a valid header value")
            })?;
            header_map.insert(header_name, header_value);
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|error| format!("{owner}: cannot build an HTTP client ({error})"))?;
        Ok(Endpoint {
            url,
            headers: header_map,
            client,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{}{}",
            self.url.origin().ascii_serialization(),
            self.url.path()
        )
    }

    /// POSTs `body` as JSON; a non-2xx status fails with the status and the start of the body.
    async fn post(
        &self,
        body: Bytes,
        sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/x-ndjson, application/json, text/plain")
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|error| {
                Failure::new(
                    FailureKind::Transport,
                    format!(
                        "could not reach {}: {}",
                        self.describe(),
                        chain(&error.without_url())
                    ),
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_failure(status, response).await);
        }
        self.read(response, sink).await
    }

    async fn status_failure(&self, status: StatusCode, response: reqwest::Response) -> Failure {
        let mut start = Vec::new();
        // Only the start of the body is quoted, so reading stops there; a broken body changes
        // nothing about the failure.
        let _ = self
            .read(response, |chunk| {
                start.extend_from_slice(chunk);
                if start.len() > QUOTE_CHARS * 4 {
                    return Err(Failure::new(FailureKind::Output, "enough is quoted"));
                }
                Ok(())
            })
            .await;
        let retry = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        Failure::new(
            FailureKind::Status { retry },
            format!(
                "answered HTTP {status}: {}",
                quote(&String::from_utf8_lossy(&start))
            ),
        )
    }

    async fn read(
        &self,
        mut response: reqwest::Response,
        mut sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        loop {
            let chunk = response.chunk().await.map_err(|error| {
                Failure::new(
                    FailureKind::Transport,
                    format!(
                        "broke off its answer from {}: {}",
                        self.describe(),
                        chain(&error.without_url())
                    ),
                )
            })?;
            match chunk {
                Some(chunk) => sink(&chunk)?,
                None => return Ok(()),
            }
        }
    }
}

/// A program with arguments, extra environment variables, and the directory it runs in.
pub(super) struct Program {
    program: PathBuf,
    args: Vec<String>,
    /// May hold secrets: `Debug` shows only the names.
    env: BTreeMap<String, String>,
    dir: PathBuf,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("dir", &self.dir)
            .finish()
    }
}

impl Program {
    /// Checks and builds the program `command` of `owner`: it runs in `dir`, and a relative
    /// program path with a `/` starts there.
    fn new(
        owner: &str,
        command: &[String],
        env: &BTreeMap<String, String>,
        dir: &Path,
    ) -> Result<Self, String> {
        let Some((program, args)) = command.split_first() else {
            return Err(format!(
                "{owner} has an empty command; expected [program, arguments…]"
            ));
        };
        if program.is_empty() {
            return Err(format!("{owner} has a command whose program is empty"));
        }
        if let Some(name) = env
            .keys()
            .find(|name| name.is_empty() || name.contains(['=', '\0']))
        {
            return Err(format!(
                "{owner} has env variable {name:?}; names must be non-empty, without '=' or NUL"
            ));
        }
        let path = Path::new(program);
        let program = if program.contains('/') && path.is_relative() {
            dir.join(path)
        } else {
            path.to_path_buf()
        };
        Ok(Program {
            program,
            args: args.to_vec(),
            env: env.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// Runs the program with `input` on its stdin (then closed), feeding stdout to `sink` as it
    /// comes. A failed exit fails with the status and the end of stderr. The child is killed
    /// when the future is dropped (a timeout, a cancelled run) or `sink` refuses more.
    async fn run(
        &self,
        input: Bytes,
        sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that stopping it stops what it started too.
            .process_group(0);
        if !self.dir.as_os_str().is_empty() {
            command.current_dir(&self.dir);
        }
        let started = |error: std::io::Error| {
            Failure::new(
                FailureKind::Spawn,
                format!("could not start {}: {error}", self.program.display()),
            )
        };
        let mut child = command.spawn().map_err(started)?;
        let _group = GroupKiller(child.id());
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(started(std::io::Error::other("its pipes are missing")));
        };
        let write = async move {
            // A program may exit without reading its input; its exit status tells what matters.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            Ok::<(), Failure>(())
        };
        let mut tail = Vec::new();
        let mut stderr_bytes = 0;
        let read_stderr = async {
            let _ = read_pipe(stderr, |chunk| {
                stderr_bytes += chunk.len();
                tail.extend_from_slice(chunk);
                if tail.len() > 2 * STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
                Ok(())
            })
            .await;
            Ok::<(), Failure>(())
        };
        tokio::try_join!(write, read_pipe(stdout, sink), read_stderr)?;
        let status = child.wait().await.map_err(|error| {
            Failure::new(
                FailureKind::Exit,
                format!("could not be waited for: {error}"),
            )
        })?;
        if status.success() {
            return Ok(());
        }
        // A cut tail starts at its first whole line.
        let cut = stderr_bytes > STDERR_TAIL_BYTES;
        let mut tail = &tail[tail.len().saturating_sub(STDERR_TAIL_BYTES)..];
        if let Some(newline) = tail.iter().position(|byte| *byte == b'\n').filter(|_| cut) {
            tail = &tail[newline + 1..];
        }
        let stderr = String::from_utf8_lossy(tail);
        let stderr = match (stderr.trim(), cut) {
            ("", _) => "stderr was empty".to_owned(),
            (text, false) => format!("stderr: {text}"),
            (text, true) => format!("stderr ends: {text}"),
        };
        Err(Failure::new(
            FailureKind::Exit,
            format!("exited unsuccessfully ({status}); {stderr}"),
        ))
    }
}

/// Kills a program's whole process group when dropped: whatever it started and left behind
/// when it ended, or everything when it is stopped early (a cancelled or rolled-back run, a
/// timeout, output refused). `kill_on_drop` alone would reach only the program, not the
/// processes it started (a shell script's commands, say).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let Some(leader) = self.0.and_then(|pid| i32::try_from(pid).ok()) else {
            return;
        };
        use nix::sys::signal::{killpg, Signal};
        // The group may be gone already; there is nothing to do about a failure here.
        if let Err(error) = killpg(nix::unistd::Pid::from_raw(leader), Signal::SIGKILL) {
            log::debug!("killing process group {leader}: {error}");
        }
    }
}

async fn read_pipe(
    mut pipe: impl AsyncRead + Unpin,
    mut sink: impl FnMut(&[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut buffer = vec![0; 8192];
    loop {
        let count = pipe.read(&mut buffer).await.map_err(|error| {
            Failure::new(
                FailureKind::Transport,
                format!("could not read its output: {error}"),
            )
        })?;
        if count == 0 {
            return Ok(());
        }
        sink(&buffer[..count])?;
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

/// Runs `work`, failing with a timeout when it takes longer than `limit` (the work is dropped).
pub(super) async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(Failure::new(
            FailureKind::Timeout,
            format!("timed out after {} s", limit.as_secs_f64()),
        ))
    })
}

/// Appends `chunk` to `output`, failing once the output exceeds the limit.
pub(super) fn collect(output: &mut Vec<u8>, chunk: &[u8]) -> Result<(), Failure> {
    output.extend_from_slice(chunk);
    check_size(output.len())
}

fn check_size(size: usize) -> Result<(), Failure> {
    if size > MAX_OUTPUT_BYTES {
        return Err(Failure::new(
            FailureKind::Output,
            format!("answered more than {} MiB", MAX_OUTPUT_BYTES >> 20),
        ));
    }
    Ok(())
}

/// `text`, cut to its first characters, in quotes with escapes.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// An error and its sources, joined by ": " (reqwest's own message leaves out the cause).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
                retry: RetryPolicy::new(&owner, retry.as_ref())?,
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

/// How often, and how far apart, a node's attempts are made.
#[derive(Debug)]
struct RetryPolicy {
    max_attempts: u32,
    backoff_ms: f64,
    backoff_factor: f64,
    max_backoff_ms: f64,
}

impl RetryPolicy {
    /// The policy a `retry` table declares; without one, a single attempt.
    fn new(owner: &str, spec: Option<&RetrySpec>) -> Result<Self, String> {
        let Some(spec) = spec else {
            return Ok(RetryPolicy {
                max_attempts: 1,
                backoff_ms: 0.0,
                backoff_factor: 1.0,
                max_backoff_ms: 0.0,
            });
        };
        if spec.max_attempts == 0 {
            return Err(format!(
                "{owner} has retry.max_attempts 0; expected at least 1 (the first attempt counts)"
            ));
        }
        if !(spec.backoff_factor.is_finite() && spec.backoff_factor >= 0.0) {
            return Err(format!(
                "{owner} has retry.backoff_factor {}; expected a finite number of at least 0",
                spec.backoff_factor
            ));
        }
        Ok(RetryPolicy {
            max_attempts: spec.max_attempts,
            backoff_ms: spec.backoff_ms as f64,
            backoff_factor: spec.backoff_factor,
            max_backoff_ms: spec.max_backoff_ms as f64,
        })
    }

    /// The wait after failed attempt number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let wait_ms = self.backoff_ms * self.backoff_factor.powi(exponent);
        // `min` also turns a NaN (0 ms times an infinite factor) into the cap.
        Duration::from_secs_f64(wait_ms.min(self.max_backoff_ms).max(0.0) / 1000.0)
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
        let mut attempt = 1;
        loop {
            info!(
                "external node attempt started node={} target={target} attempt={attempt}/{max}",
                self.node
            );
            let started = Instant::now();
            let outcome = within(self.timeout, self.attempt(payload.clone(), &input.stream)).await;
            let elapsed_ms = started.elapsed().as_millis();
            let failure = match outcome {
                Ok(update) => {
                    info!(
                        "external node attempt finished node={} target={target} attempt={attempt}/{max} elapsed_ms={elapsed_ms} outcome=success",
                        self.node
                    );
                    return Ok(update);
                }
                Err(failure) => failure,
            };
            let retry = failure.retryable() && attempt < max;
            info!(
                "external node attempt finished node={} target={target} attempt={attempt}/{max} elapsed_ms={elapsed_ms} outcome=error class={} retry={retry}",
                self.node,
                self.class_of(&failure)
            );
            if !retry {
                return Err(self.give_up(failure, attempt).into());
            }
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            attempt += 1;
        }
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

    fn give_up(&self, failure: Failure, attempts: u32) -> RunError {
        let made = match attempts {
            1 => "1 attempt made".to_owned(),
            count => format!("{count} attempts made"),
        };
        let note = if !failure.retryable() && attempts < self.retry.max_attempts {
            format!("{made}; this failure is not retried")
        } else {
            made
        };
        RunError::new(
            self.class_of(&failure),
            format!("node '{}' {} ({note})", self.node, failure.message),
        )
    }
}

/// The newline-delimited answer of one attempt: leading `{"custom": …}` lines are published as
/// they complete; the rest is the final update.
struct NodeOutput<'a> {
    stream: &'a NodeStream,
    /// The current, unfinished line.
    line: Vec<u8>,
    /// Everything after the last custom line.
    rest: Vec<u8>,
}

impl<'a> NodeOutput<'a> {
    fn new(stream: &'a NodeStream) -> Self {
        NodeOutput {
            stream,
            line: Vec::new(),
            rest: Vec::new(),
        }
    }

    fn push(&mut self, mut chunk: &[u8]) -> Result<(), Failure> {
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

    fn finish(mut self) -> Result<Option<JsonMap>, Failure> {
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

    #[test]
    fn long_answers_are_quoted_cut() {
        let long = "x".repeat(10_000);
        let quoted = quote(&long);
        assert!(
            quoted.len() < 400 && quoted.ends_with("(10000 bytes)"),
            "{quoted}"
        );
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_cap() {
        let spec: RetrySpec = toml::from_str(
            "max_attempts = 5\nbackoff_ms = 100\nbackoff_factor = 3.0\nmax_backoff_ms = 500",
        )
        .unwrap();
        let policy = RetryPolicy::new("node 'x'", Some(&spec)).unwrap();
        let waits: Vec<u128> = (1..=4).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 300, 500, 500]);
    }

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
    fn relative_program_paths_start_at_the_graph_directory() {
        let program = |name: &str| {
            Program::new(
                "node 'n'",
                &[name.to_owned()],
                &BTreeMap::new(),
                Path::new("/graphs"),
            )
            .unwrap()
            .program
        };
        assert_eq!(
            program("tools/run.sh"),
            PathBuf::from("/graphs/tools/run.sh")
        );
        assert_eq!(program("/bin/sh"), PathBuf::from("/bin/sh"));
        assert_eq!(program("python3"), PathBuf::from("python3"));
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
