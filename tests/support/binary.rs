//! The real `spindle` binary, for the SDK tests and the benchmarks: started on port 0 with the
//! default config (or another settings file) and a fresh database in a temporary directory (or
//! at a given path); its address is read from the start-up log line; killed on drop. It can be
//! crashed (SIGKILL) and restarted on the same database; `memory` reads a process's resident
//! memory. Included with `#[path]` by each user.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The database file's name inside the server's temporary directory.
const DATABASE_FILE: &str = "spindle.db";

/// A running server.
pub struct Server {
    child: Child,
    pub url: String,
    /// Holds the database unless it was given; removed when the server is dropped.
    _directory: Option<tempfile::TempDir>,
    database: PathBuf,
    /// What the process was started with, so `restart` starts it the same way.
    config: PathBuf,
    rust_log: String,
}

impl Server {
    /// Starts the binary with `RUST_LOG=<rust_log>,spindle::startup=info` (the listen line must
    /// get through); every later log line goes to `on_log_line`.
    #[allow(dead_code)] // Not every user needs it.
    pub fn start(rust_log: &str, on_log_line: impl Fn(&str) + Send + 'static) -> Server {
        Self::start_with_config(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml")),
            rust_log,
            on_log_line,
        )
    }

    /// `start` with another settings file (its graph files are relative to its directory).
    #[allow(dead_code)] // Not every user needs it.
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
        let database = directory.path().join(DATABASE_FILE);
        Self::start_on(
            config,
            rust_log,
            environment,
            Some(directory),
            database,
            on_log_line,
        )
    }

    /// `start_with_env` on the database file `database` (which the caller cleans up), for a
    /// database on a file system of its own.
    #[allow(dead_code)] // Not every user needs it.
    pub fn start_with_database(
        config: &Path,
        rust_log: &str,
        environment: &[(String, String)],
        database: &Path,
        on_log_line: impl Fn(&str) + Send + 'static,
    ) -> Server {
        Self::start_on(
            config,
            rust_log,
            environment,
            None,
            database.to_owned(),
            on_log_line,
        )
    }

    fn start_on(
        config: &Path,
        rust_log: &str,
        environment: &[(String, String)],
        directory: Option<tempfile::TempDir>,
        database: PathBuf,
        on_log_line: impl Fn(&str) + Send + 'static,
    ) -> Server {
        let (child, url) = spawn(config, rust_log, &database, environment, on_log_line);
        Server {
            child,
            url,
            _directory: directory,
            database,
            config: config.to_owned(),
            rust_log: rust_log.to_owned(),
        }
    }

    /// Kills the server with SIGKILL, as a crash would (no shutdown code runs), and waits until
    /// it has exited; the database stays. Does nothing to a server that has already exited.
    #[allow(dead_code)] // Not every user needs it.
    pub fn crash(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
            kill(pid, Signal::SIGKILL).unwrap();
        }
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the server to exit (a graceful shutdown); returns how it
    /// exited.
    #[allow(dead_code)] // Not every user needs it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM without waiting; `wait` collects the exit.
    #[allow(dead_code)] // Not every user needs it.
    pub fn signal_terminate(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
    }

    /// Waits for the server to exit; returns how it exited.
    #[allow(dead_code)] // Not every user needs it.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Crashes the server if it still runs, then starts it again with the same config and log
    /// level on the same database, with `environment` instead of the earlier extra variables
    /// and log lines going to `on_log_line`. It listens on a new port: `url` changes.
    #[allow(dead_code)] // Not every user needs it.
    pub fn restart(
        &mut self,
        environment: &[(String, String)],
        on_log_line: impl Fn(&str) + Send + 'static,
    ) {
        self.crash();
        let (child, url) = spawn(
            &self.config,
            &self.rust_log,
            &self.database_path(),
            environment,
            on_log_line,
        );
        self.child = child;
        self.url = url;
    }

    /// The server's SQLite file (its `-wal` and `-shm` files sit next to it).
    #[allow(dead_code)] // Not every user needs it.
    pub fn database_path(&self) -> PathBuf {
        self.database.clone()
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

/// The server's memory, in kB.
#[derive(Clone, Copy, Debug, Default)]
#[allow(dead_code)] // Not every user reads both.
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss_kb: u64,
    /// The largest resident size so far (`VmHWM`).
    pub peak_kb: u64,
}

/// Reads the memory of process `pid` from `/proc/<pid>/status` (zeros if it is gone).
#[allow(dead_code)] // Not every user needs it.
pub fn memory(pid: u32) -> Memory {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    Memory {
        rss_kb: field("VmRSS"),
        peak_kb: field("VmHWM"),
    }
}

/// Starts the binary on `database` and returns it with its URL, read from the start-up log.
fn spawn(
    config: &Path,
    rust_log: &str,
    database: &Path,
    environment: &[(String, String)],
    on_log_line: impl Fn(&str) + Send + 'static,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--port", "0", "--config"])
        .arg(config)
        .arg("--database")
        .arg(database)
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
        // Start-up lines (recovery among them) go to the collector too.
        on_log_line(&line);
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            on_log_line(&line);
        }
    });
    (child, url)
}
