//! SDK conformance: the official Python SDK (`langgraph-sdk`, from PyPI, installed by this test
//! into a virtualenv under the target directory) against the real `spindle` binary on port 0
//! with its own database. Runs the seed program unchanged (only its URL is pointed at
//! the test server) and `tests/sdk/conformance.py`.

#[path = "support/binary.rs"]
mod binary;

use binary::Server;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const PACKAGES: [&str; 2] = ["langgraph-sdk==0.4.14", "langchain-core==1.7.2"];

/// The virtualenv's python, created once per target directory.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
        let python = venv.join("bin/python");
        let marker = venv.join(format!("installed-{}", PACKAGES.join("-")));
        if !marker.exists() {
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 is installed");
            assert!(
                status.success(),
                "cannot create the virtualenv at {}",
                venv.display()
            );
            let status = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PACKAGES)
                .stdin(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "pip install {PACKAGES:?} failed");
            std::fs::write(&marker, b"").unwrap();
        }
        python
    })
}

/// Runs a Python program against `server`; returns its stdout, failing the test on a non-zero exit.
fn run_python(server: &Server, source: &str) -> String {
    let output = Command::new(python())
        .arg("-c")
        .arg(source)
        .env("SPINDLE_URL", &server.url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_seed_program_runs_unchanged_and_rolls_back_the_first_run() {
    let server = Server::start("info", |_| {});
    let seed = include_str!("sdk/seed.py");
    assert!(seed.contains("http://127.0.0.1:8123"));
    let output = run_python(&server, &seed.replace("http://127.0.0.1:8123", &server.url));
    let banners: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("===="))
        .collect();
    assert_eq!(banners.len(), 4, "{output}");
    for (banner, kind) in
        banners
            .iter()
            .zip(["Human Message", "Ai Message", "Tool Message", "Ai Message"])
    {
        assert!(banner.contains(kind), "{banner} should be {kind}\n{output}");
    }
    assert!(output.contains("what's the weather in nyc?"), "{output}");
    assert!(
        !output.contains("sf"),
        "the rolled-back question left a trace:\n{output}"
    );
    assert!(output.contains("query: weather in nyc"), "{output}");
    assert!(output.contains("The weather in nyc is"), "{output}");
    assert!(
        output
            .trim_end()
            .ends_with("Original run was correctly deleted"),
        "{output}"
    );
}

#[test]
fn every_strategy_and_resource_works_through_the_python_sdk() {
    let server = Server::start("info", |_| {});
    let output = run_python(&server, include_str!("sdk/conformance.py"));
    for check in [
        "check_reject",
        "check_enqueue",
        "check_interrupt",
        "check_rollback",
        "check_rollback_on_many_threads",
        "check_wait_cancel_delete",
        "check_state_and_history",
        "check_breakpoint",
        "check_threads",
        "check_prune",
        "check_assistants",
        "check_stream",
        "check_join_stream_resume",
        "check_stateless",
        "check_dynamic_interrupt",
        "check_fork",
    ] {
        assert!(
            output.contains(&format!("ok {check}\n")),
            "{check} did not pass:\n{output}"
        );
    }
}

#[path = "support/openai.rs"]
mod openai_server;

#[test]
fn a_real_model_agent_loop_runs_through_the_python_sdk() {
    let model = openai_server::FakeOpenAi::start();
    let key_variable = "SPINDLE_SDK_TEST_OPENAI_KEY";
    // The binary inherits the variable; the graph names it, never its value.
    std::env::set_var(key_variable, "sk-sdk-test");
    let directory = tempfile::tempdir().unwrap();
    let settings =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml"))
            .unwrap();
    let files_line = settings
        .lines()
        .find(|line| line.starts_with("files = "))
        .expect("config/spindle.toml lists graph files");
    std::fs::write(
        directory.path().join("spindle.toml"),
        settings.replace(files_line, "files = [\"model_agent.toml\"]"),
    )
    .unwrap();
    let graph = openai_server::agent_graph(
        "model_agent",
        &model.base_url,
        &format!("api_key_env = \"{key_variable}\"\nsystem_prompt = \"Answer in one sentence.\""),
    );
    std::fs::write(directory.path().join("model_agent.toml"), graph).unwrap();
    let answer = "It is sunny in nyc, 21 degrees.";
    for _ in ["stream", "wait"] {
        model
            .push(openai_server::Reply::tool_call(
                "call_sdk",
                "tavily_search_results_json",
                &serde_json::json!({"query": "weather in nyc"}),
            ))
            .push(openai_server::Reply::text(answer));
    }
    let server = Server::start_with_config(&directory.path().join("spindle.toml"), "info", |_| {});

    let output = run_python(&server, include_str!("sdk/model_loop.py"));

    for check in ["ok stream", "ok wait"] {
        assert!(output.contains(check), "{check} missing:\n{output}");
    }
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        assert_eq!(request.authorization.as_deref(), Some("Bearer sk-sdk-test"));
        assert_eq!(request.body["model"], "test-model");
        assert_eq!(request.body["stream"], true);
        assert_eq!(
            request.body["messages"][0],
            serde_json::json!({"role": "system", "content": "Answer in one sentence."})
        );
    }
    let roles: Vec<&str> = requests[3].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(requests[3].body["messages"][3]["tool_call_id"], "call_sdk");
}

#[test]
fn the_example_graphs_run_a_command_node_a_switch_and_a_subgraph_through_the_python_sdk() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/spindle.toml");
    let server = Server::start_with_config(&config, "info", |_| {});
    let output = run_python(&server, include_str!("sdk/examples.py"));
    for check in [
        "ok subgraph stream research:",
        "ok subgraph state",
        "ok switch",
    ] {
        assert!(output.contains(check), "{check} missing:\n{output}");
    }
}
