//! The real `spindle` binary, for the SDK tests and the benchmarks: started on port 0 with the
//! default config (or another settings file) and a fresh database in a temporary directory; its
//! address is read from the start-up log line; killed on drop. Included with `#[path]` by each
//! user.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The database file's name inside the server's temporary directory.
const DATABASE_FILE: &str = "spindle.db";

/// A running server.
pub struct Server {
    child: Child,
    pub url: String,
    /// Holds the database; removed when the server is dropped.
    directory: tempfile::TempDir,
}

impl Server {
    /// Starts the binary with `RUST_LOG=<rust_log>,spindle::startup=info` (the listen line must
    /// get through); every later log line goes to `on_log_line`.
    pub fn start(rust_log: &str, on_log_line: impl Fn(&str) + Send + 'static) -> Server {
        Self::start_with_config(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml")),
            rust_log,
            on_log_line,
        )
    }

    /// `start` with another settings file (its graph files are relative to its directory).
    pub fn start_with_config(
        config: &Path,
        rust_log: &str,
        on_log_line: impl Fn(&str) + Send + 'static,
    ) -> Server {
        Self::start_with_env(config, rust_log, &[], on_log_line)
    }

    /// `start_with_config` with extra environment variables for the server (settings overrides
    /// such as `SPINDLE_RUNTIME__ACTOR_IDLE_SECONDS`, or allocator tuning).
    #[allow(dead_code)] // Not every user needs it.
    pub fn start_with_env(
        config: &Path,
        rust_log: &str,
        environment: &[(String, String)],
        on_log_line: impl Fn(&str) + Send + 'static,
    ) -> Server {
        let directory = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .args(["serve", "--port", "0", "--config"])
            .arg(config)
            .arg("--database")
            .arg(directory.path().join(DATABASE_FILE))
            .env("RUST_LOG", format!("{rust_log},spindle::startup=info"))
            .envs(environment.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the spindle binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server logs its address before exiting")
                .unwrap();
            if let Some((_, address)) = line.split_once("listening address=") {
                break address.trim().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                on_log_line(&line);
            }
        });
        Server {
            child,
            url,
            directory,
        }
    }

    /// The server's SQLite file (its `-wal` and `-shm` files sit next to it).
    #[allow(dead_code)] // Not every user needs it.
    pub fn database_path(&self) -> PathBuf {
        self.directory.path().join(DATABASE_FILE)
    }

    /// The server's process id.
    #[allow(dead_code)] // Not every user needs it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
