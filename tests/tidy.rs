//! Tidy checks: every source file opens with a `//!` module doc, and the layering rules of
//! ARCHITECTURE.md hold (checked by grepping `use` paths and crate names).

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Source lines without comments, so prose may name anything.
fn code_of(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for directory in ["src", "tests", "benches"] {
        let directory = root().join(directory);
        if !directory.exists() {
            continue;
        }
        for file in rust_files(&directory) {
            let text = fs::read_to_string(&file).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
}

fn assert_layer(layer: &str, forbidden: &[&str]) {
    for file in rust_files(&root().join("src").join(layer)) {
        let code = code_of(&file);
        for name in forbidden {
            assert!(
                !code.contains(name),
                "{} uses {name}, which its layer must not",
                file.display()
            );
        }
    }
}

#[test]
fn domain_and_graph_know_nothing_of_actors_http_or_sqlite() {
    let forbidden = [
        "actix",
        "rusqlite",
        "crate::storage",
        "crate::actors",
        "crate::http",
        "crate::error",
    ];
    assert_layer("domain", &forbidden);
    assert_layer("graph", &forbidden);
    assert_layer("domain", &["crate::graph", "tokio"]);
}

#[test]
fn only_the_sqlite_backend_names_rusqlite_and_only_startup_names_the_backend() {
    let backend = root().join("src/storage/sqlite");
    for file in rust_files(&root().join("src")) {
        if file.starts_with(&backend) {
            continue;
        }
        let code = code_of(&file);
        assert!(
            !code.contains("rusqlite"),
            "{} names rusqlite",
            file.display()
        );
        let names_backend = code.contains("storage::sqlite") || code.contains("SqliteStore");
        assert!(
            !names_backend || file.ends_with("src/startup.rs"),
            "{} names the SQLite backend; only startup.rs may",
            file.display()
        );
    }
}

#[test]
fn only_http_error_and_startup_name_actix_web() {
    for file in rust_files(&root().join("src")) {
        let relative = file
            .strip_prefix(root().join("src"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let allowed = relative.starts_with("http/")
            || relative == "error.rs"
            || relative == "startup.rs"
            || relative == "main.rs";
        if !allowed {
            assert!(
                !code_of(&file).contains("actix_web"),
                "{relative} names actix_web"
            );
        }
    }
}

#[test]
fn storage_does_not_reach_up_into_actors_or_http() {
    assert_layer(
        "storage",
        &[
            "crate::actors",
            "crate::http",
            "crate::graph",
            "crate::error",
        ],
    );
    assert_layer("actors", &["crate::http", "crate::error"]);
}
