//! Settings: `config/spindle.toml` (every setting, commented), then `config/$SPINDLE_ENV.toml`
//! if present, then `SPINDLE_<SECTION>__<KEY>` environment variables; later wins. Command-line
//! flags are applied by `main` on top. Only this module (and `main`) read the environment.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// Every setting.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub runtime: RuntimeSettings,
    pub stream: StreamSettings,
    pub retention: RetentionSettings,
    pub graphs: GraphSettings,
    /// The directory of the main config file; graph files are relative to it.
    #[serde(skip)]
    pub config_dir: PathBuf,
}

/// `[server]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// HTTP worker threads; 0 means one per CPU.
    pub workers: usize,
    pub body_limit_bytes: usize,
    /// On SIGTERM/SIGINT, seconds running runs get to finish before they are stopped (to resume
    /// on the next start).
    pub shutdown_grace_seconds: f64,
    /// Host names (ports ignored) the server answers to besides the loopback names and its own
    /// address; `[]` means only those when bound to loopback and any host otherwise; `["*"]`
    /// means any host. Guards against DNS rebinding.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origins of web pages allowed to call the API (CORS, and state-changing requests that
    /// carry an `Origin`); `["*"]` means any. Requests without an `Origin` are not affected.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// Seconds an idle keep-alive connection stays open. Longer than clients' own pool expiry
    /// (httpx 5 s, Node 4 s, load balancers 60 s), so the server is never the side that closes a
    /// connection a client is reusing, not even after the process was paused.
    #[serde(default = "default_keep_alive_seconds")]
    pub keep_alive_seconds: f64,
}

fn default_keep_alive_seconds() -> f64 {
    75.0
}

/// `[database]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// The SQLite file; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// Read-only connections, each on its own thread.
    pub readers: usize,
    pub busy_timeout_ms: u64,
    /// Largest database file, in MiB; a write that needs more fails with 503 (0: no limit).
    pub max_size_mb: u64,
}

/// `[runtime]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Arbiter threads that host thread and run actors; 0 means one per CPU.
    pub arbiters: usize,
    /// What happens at start-up to a run left `running` by a crash.
    pub on_restart: OnRestart,
    /// Starts a run may have (the first one plus resumes after crashes) before it is marked
    /// `error`, so a run that crashes the server cannot wedge its thread.
    pub max_attempts: u32,
    /// Wall-clock limit of a run, in seconds; it then ends with status `timeout` (0: none).
    pub run_timeout_seconds: f64,
    /// Limit of one node task, in seconds; the run then fails with NodeTimeoutError (0: none).
    pub node_timeout_seconds: f64,
    /// Seconds a thread actor with nothing to do stays in memory before it is dropped (it comes
    /// back from SQLite on the next command).
    pub actor_idle_seconds: f64,
    /// Refuse (422) run inputs, commands and state updates that carry an AI message with tool
    /// calls: the graph's `tools` node would run configured tools with a client's arguments.
    /// Optional in a settings file (default false), so files written before it still load.
    #[serde(default)]
    pub refuse_client_tool_calls: bool,
}

/// `0` means no limit.
fn limit(seconds: f64) -> Option<std::time::Duration> {
    (seconds > 0.0).then(|| std::time::Duration::from_secs_f64(seconds))
}

impl RuntimeSettings {
    /// The run time limit, if any.
    pub fn run_timeout(&self) -> Option<std::time::Duration> {
        limit(self.run_timeout_seconds)
    }

    /// The node task time limit, if any.
    pub fn node_timeout(&self) -> Option<std::time::Duration> {
        limit(self.node_timeout_seconds)
    }

    /// How long an idle thread actor stays.
    pub fn actor_idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.actor_idle_seconds)
    }
}

impl ServerSettings {
    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.shutdown_grace_seconds)
    }

    /// How long an idle keep-alive connection stays open.
    pub fn keep_alive(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.keep_alive_seconds)
    }
}

impl RetentionSettings {
    /// How long a thread stays untouched before it is swept, if retention is on.
    pub fn thread_idle(&self) -> Option<std::time::Duration> {
        limit(self.thread_idle_days * 86_400.0)
    }

    /// The interval between sweeps.
    pub fn sweep_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.sweep_interval_seconds)
    }
}

/// `runtime.on_restart`
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    /// Continue from the run's last checkpoint.
    Resume,
    /// Mark the run `error`.
    Error,
}

/// `[retention]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Threads not updated for this many days are swept (0: never). Fractions allowed.
    pub thread_idle_days: f64,
    /// What the sweep does to such a thread.
    pub action: RetentionAction,
    /// With `action = "prune"`: root checkpoints kept per thread (the newest ones).
    pub keep_checkpoints: u32,
    /// Seconds between sweeps.
    pub sweep_interval_seconds: f64,
}

/// `retention.action`
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RetentionAction {
    /// Delete the thread with its runs and checkpoints.
    Delete,
    /// Keep the thread and its runs; delete all but its newest checkpoints.
    Prune,
}

/// `[stream]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Seconds between `: heartbeat` comments on SSE responses and `\n` keep-alives on
    /// `/wait` and `/join`.
    pub heartbeat_seconds: f64,
    /// Events each run keeps for clients that join it late.
    pub replay_events: usize,
    /// Bytes of events each run keeps for clients that join it late. (This and the other byte
    /// limits are optional in a settings file, so files written before them still load.)
    #[serde(default = "default_replay_bytes")]
    pub replay_bytes: usize,
    /// Events a `stream_resumable` run keeps for `Last-Event-ID` reconnects.
    pub resumable_events: usize,
    /// Bytes of events a `stream_resumable` run keeps.
    #[serde(default = "default_resumable_bytes")]
    pub resumable_bytes: usize,
    /// Bytes of events all runs keep together; past it the oldest go first.
    #[serde(default = "default_total_bytes")]
    pub total_bytes: usize,
    /// Events queued for one subscriber before it is cut off as too slow.
    pub subscriber_events: usize,
    /// Seconds a resumable run's events stay after it ends.
    pub retention_seconds: u64,
}

fn default_replay_bytes() -> usize {
    crate::stream::StreamLimits::default().replay_bytes
}

fn default_resumable_bytes() -> usize {
    crate::stream::StreamLimits::default().resumable_bytes
}

fn default_total_bytes() -> usize {
    crate::stream::StreamLimits::default().total_bytes
}

impl StreamSettings {
    /// The heartbeat interval.
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.heartbeat_seconds)
    }

    /// The limits of the stream hub.
    pub fn limits(&self) -> crate::stream::StreamLimits {
        crate::stream::StreamLimits {
            replay_events: self.replay_events,
            replay_bytes: self.replay_bytes,
            resumable_events: self.resumable_events,
            resumable_bytes: self.resumable_bytes,
            total_bytes: self.total_bytes,
            subscriber_events: self.subscriber_events,
            retention: std::time::Duration::from_secs(self.retention_seconds),
        }
    }
}

/// `[graphs]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSettings {
    /// Graph declaration files, relative to the config file's directory.
    pub files: Vec<PathBuf>,
}

/// The default location of the main config file.
pub const DEFAULT_CONFIG: &str = "config/spindle.toml";

/// Where the settings came from, for the start-up log.
#[derive(Debug, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    pub env_overrides: Vec<String>,
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })
}

fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(inner)) => {
                merge_tables(existing, inner)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Parses an environment value as a TOML value (`8123`, `true`, `["a"]`), else as a string.
fn env_value(text: &str) -> toml::Value {
    format!("value = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Loads the settings from `config_path` (default `config/spindle.toml`) and its overlays.
pub fn load(config_path: Option<&Path>) -> Result<(Settings, Sources), ConfigError> {
    let path = config_path.unwrap_or(Path::new(DEFAULT_CONFIG)).to_owned();
    let mut sources = Sources::default();
    let mut table = read_table(&path)?;
    sources.files.push(path.clone());
    let config_dir = path.parent().map(Path::to_owned).unwrap_or_default();
    if let Ok(environment) = std::env::var("SPINDLE_ENV") {
        let overlay_path = config_dir.join(format!("{environment}.toml"));
        if overlay_path.exists() {
            merge_tables(&mut table, read_table(&overlay_path)?);
            sources.files.push(overlay_path);
        }
    }
    for (name, value) in std::env::vars() {
        let Some(rest) = name.strip_prefix("SPINDLE_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::Invalid(format!(
                "{name}: [{section}] is not a table"
            )));
        };
        section_table.insert(key, env_value(&value));
        sources.env_overrides.push(name);
    }
    let mut settings: Settings =
        toml::Value::Table(table)
            .try_into()
            .map_err(|error: toml::de::Error| ConfigError::Parse {
                path: path.clone(),
                message: error.to_string(),
            })?;
    settings.config_dir = config_dir;
    settings.validate()?;
    Ok((settings, sources))
}

impl Settings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database.readers == 0 {
            return Err(ConfigError::Invalid(
                "database.readers must be at least 1".into(),
            ));
        }
        if self.graphs.files.is_empty() {
            return Err(ConfigError::Invalid("graphs.files lists no graph".into()));
        }
        let stream = &self.stream;
        if !(stream.heartbeat_seconds.is_finite()
            && (0.01..=3600.0).contains(&stream.heartbeat_seconds))
        {
            return Err(ConfigError::Invalid(
                "stream.heartbeat_seconds must be between 0.01 and 3600".into(),
            ));
        }
        if stream.replay_events == 0
            || stream.resumable_events == 0
            || stream.subscriber_events == 0
        {
            return Err(ConfigError::Invalid(
                "stream.replay_events, stream.resumable_events and stream.subscriber_events must be positive".into(),
            ));
        }
        let seconds = [
            (
                "server.shutdown_grace_seconds",
                self.server.shutdown_grace_seconds,
            ),
            ("server.keep_alive_seconds", self.server.keep_alive_seconds),
            (
                "runtime.run_timeout_seconds",
                self.runtime.run_timeout_seconds,
            ),
            (
                "runtime.node_timeout_seconds",
                self.runtime.node_timeout_seconds,
            ),
            (
                "retention.thread_idle_days",
                self.retention.thread_idle_days,
            ),
        ];
        for (name, value) in seconds {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a number of at least 0"
                )));
            }
        }
        let positive = [
            (
                "runtime.actor_idle_seconds",
                self.runtime.actor_idle_seconds,
            ),
            (
                "retention.sweep_interval_seconds",
                self.retention.sweep_interval_seconds,
            ),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value >= 0.001) {
                return Err(ConfigError::Invalid(format!("{name} must be positive")));
            }
        }
        if self.runtime.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "runtime.max_attempts must be at least 1".into(),
            ));
        }
        if self.retention.action == RetentionAction::Prune && self.retention.keep_checkpoints == 0 {
            return Err(ConfigError::Invalid(
                "retention.keep_checkpoints must be at least 1 with action = \"prune\"".into(),
            ));
        }
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::Invalid(
                "server.body_limit_bytes must be positive".into(),
            ));
        }
        self.server.validate_browser_settings()
    }
}

impl ServerSettings {
    /// Checks `allowed_hosts` and `cors_allowed_origins`: `"*"`, or entries a request can match.
    fn validate_browser_settings(&self) -> Result<(), ConfigError> {
        for host in &self.allowed_hosts {
            if let Some(problem) = host_entry_problem(host) {
                return Err(ConfigError::Invalid(format!(
                    "server.allowed_hosts: {host:?} {problem}"
                )));
            }
        }
        for origin in &self.cors_allowed_origins {
            if let Some(problem) = origin_entry_problem(origin) {
                return Err(ConfigError::Invalid(format!(
                    "server.cors_allowed_origins: {origin:?} {problem}"
                )));
            }
        }
        Ok(())
    }
}

/// What is wrong with an `allowed_hosts` entry, if anything: it is `*` or a bare host name or
/// address (an IPv6 address with or without brackets), without scheme, port or path.
fn host_entry_problem(host: &str) -> Option<&'static str> {
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    let not_a_name =
        "is not a host name: give a name or an address alone, such as \"spindle.example.com\"";
    if host == "*" || unbracketed.parse::<std::net::Ipv6Addr>().is_ok() {
        None
    } else if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@".contains(c)) {
        Some(not_a_name)
    } else if host.contains(':') {
        Some("has a port: ports are not matched, give the host alone")
    } else if host.contains(['[', ']']) {
        Some(not_a_name)
    } else {
        None
    }
}

/// What is wrong with a `cors_allowed_origins` entry, if anything: it is `*` or an origin as
/// browsers send it, `scheme://host[:port]`, with no path, not even a trailing `/`.
fn origin_entry_problem(origin: &str) -> Option<&'static str> {
    if origin == "*" {
        return None;
    }
    match origin.split_once("://") {
        Some((scheme, authority))
            if !scheme.is_empty()
                && !authority.is_empty()
                && !authority.contains(|c: char| c.is_whitespace() || "/?#@".contains(c)) =>
        {
            None
        }
        _ => Some(
            "is not an origin: write scheme://host[:port] with no path or trailing slash, \
             such as \"http://localhost:3000\"",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_file_loads_and_lists_both_graphs() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG);
        let (settings, sources) = load(Some(&path)).unwrap();
        assert_eq!(settings.server.port, 8123);
        assert_eq!(settings.server.host, "127.0.0.1");
        assert_eq!(settings.graphs.files.len(), 3);
        assert_eq!(sources.files, [path]);
    }

    #[test]
    fn the_example_config_loads_and_a_file_without_the_newer_settings_gets_their_defaults() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        load(Some(&root.join("config/examples/spindle.toml"))).unwrap();
        let current = std::fs::read_to_string(root.join(DEFAULT_CONFIG)).unwrap();
        let older: String = current
            .lines()
            .filter(|line| {
                ![
                    "refuse_client_tool_calls",
                    "allowed_hosts",
                    "cors_allowed_origins",
                    "keep_alive_seconds",
                    "replay_bytes",
                    "resumable_bytes",
                    "total_bytes",
                ]
                .iter()
                .any(|key| line.starts_with(key))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("older.toml");
        std::fs::write(&path, older).unwrap();
        let (settings, _) = load(Some(&path)).unwrap();
        assert!(!settings.runtime.refuse_client_tool_calls);
        assert!(settings.server.allowed_hosts.is_empty());
        assert!(settings.server.cors_allowed_origins.is_empty());
        assert_eq!(settings.server.keep_alive_seconds, 75.0);
        let defaults = crate::stream::StreamLimits::default();
        let limits = settings.stream.limits();
        assert_eq!(
            (
                limits.replay_bytes,
                limits.resumable_bytes,
                limits.total_bytes
            ),
            (
                defaults.replay_bytes,
                defaults.resumable_bytes,
                defaults.total_bytes
            )
        );
    }

    #[test]
    fn browser_settings_accept_names_addresses_and_origins_and_refuse_what_cannot_match() {
        for host in [
            "*",
            "localhost",
            "spindle.example.com",
            "10.0.0.5",
            "::1",
            "[::1]",
        ] {
            assert_eq!(host_entry_problem(host), None, "{host}");
        }
        for host in [
            "",
            "localhost:8123",
            "http://localhost",
            "a b",
            "[::1]:8123",
        ] {
            assert!(host_entry_problem(host).is_some(), "{host}");
        }
        for origin in ["*", "http://localhost:3000", "https://app.example.com"] {
            assert_eq!(origin_entry_problem(origin), None, "{origin}");
        }
        for origin in [
            "",
            "localhost:3000",
            "http://localhost:3000/",
            "http://",
            "null",
        ] {
            assert!(origin_entry_problem(origin).is_some(), "{origin}");
        }
    }

    #[test]
    fn env_values_parse_as_toml_or_fall_back_to_strings() {
        assert_eq!(env_value("8123"), toml::Value::Integer(8123));
        assert_eq!(env_value("true"), toml::Value::Boolean(true));
        assert_eq!(
            env_value("data/x.db"),
            toml::Value::String("data/x.db".into())
        );
    }
}
