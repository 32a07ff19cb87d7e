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
}

/// `[runtime]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Arbiter threads that host thread and run actors; 0 means one per CPU.
    pub arbiters: usize,
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
    /// Events a `stream_resumable` run keeps for `Last-Event-ID` reconnects.
    pub resumable_events: usize,
    /// Events queued for one subscriber before it is cut off as too slow.
    pub subscriber_events: usize,
    /// Seconds a resumable run's events stay after it ends.
    pub retention_seconds: u64,
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
            resumable_events: self.resumable_events,
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
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::Invalid(
                "server.body_limit_bytes must be positive".into(),
            ));
        }
        Ok(())
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
    fn env_values_parse_as_toml_or_fall_back_to_strings() {
        assert_eq!(env_value("8123"), toml::Value::Integer(8123));
        assert_eq!(env_value("true"), toml::Value::Boolean(true));
        assert_eq!(
            env_value("data/x.db"),
            toml::Value::String("data/x.db".into())
        );
    }
}
