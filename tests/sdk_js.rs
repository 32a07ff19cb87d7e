//! SDK conformance: the official JavaScript SDK (`@langchain/langgraph-sdk`, from npm, installed
//! by this test under the target directory) run by Node against the real `spindle` binary on
//! port 0 with its own database. Runs `tests/sdk/conformance.mjs`.

#[path = "support/binary.rs"]
mod binary;

use binary::Server;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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

#[test]
fn streams_joins_waits_and_rollback_work_through_the_javascript_sdk() {
    let directory = install();
    // ESM resolves packages from the importing file's directory, so the program sits beside
    // `node_modules`; written then renamed, so a concurrent run never reads half a file.
    let program = directory.join("conformance.mjs");
    let partial = directory.join(format!("conformance.mjs.{}", std::process::id()));
    std::fs::write(&partial, include_str!("sdk/conformance.mjs")).unwrap();
    std::fs::rename(&partial, &program).unwrap();
    let server = Server::start("info", |_| {});
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
