//! SDK conformance: the official JavaScript SDK (`@langchain/langgraph-sdk`, from npm, installed
//! by this test under the target directory) run by Node against the real `spindle` binary on
//! port 0 with its own database. Runs `tests/sdk/conformance.mjs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SDK: &str = "@langchain/langgraph-sdk@2.0.0";

/// The directory holding `node_modules` with the SDK, installed once per target directory.
fn install() -> PathBuf {
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk-node");
    let marker = directory.join(format!("installed-{}", SDK.replace('/', "-")));
    if !marker.exists() {
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("package.json"), br#"{"private": true}"#).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", SDK])
            .current_dir(&directory)
            .stdin(Stdio::null())
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm install {SDK} failed");
        std::fs::write(&marker, b"").unwrap();
    }
    directory
}

/// The real binary on port 0 with a fresh database; killed on drop.
struct Server {
    child: Child,
    url: String,
    _directory: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let directory = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .args(["serve", "--port", "0", "--config"])
            .arg(root.join("config/spindle.toml"))
            .arg("--database")
            .arg(directory.path().join("spindle.db"))
            .env("RUST_LOG", "info")
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
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url,
            _directory: directory,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn streams_joins_waits_and_rollback_work_through_the_javascript_sdk() {
    let directory = install();
    // ESM resolves packages from the importing file's directory, so the program sits beside
    // `node_modules`; written then renamed, so a concurrent run never reads half a file.
    let program = directory.join("conformance.mjs");
    let partial = directory.join(format!("conformance.mjs.{}", std::process::id()));
    std::fs::write(&partial, include_str!("sdk/conformance.mjs")).unwrap();
    std::fs::rename(&partial, &program).unwrap();
    let server = Server::start();
    let output = Command::new("node")
        .arg(&program)
        .current_dir(&directory)
        .env("SPINDLE_URL", &server.url)
        .stdin(Stdio::null())
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for check in [
        "check_rollback",
        "check_stream",
        "check_stateless_wait",
        "check_join_stream",
    ] {
        assert!(
            stdout.contains(&format!("ok {check}\n")),
            "{check} did not pass:\n{stdout}"
        );
    }
}
