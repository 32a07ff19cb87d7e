//! Storage faults: a full database (the `database.max_size_mb` cap, which fails writes exactly as
//! a full disk does) and a write lock held by another process give 503 with a clear detail and
//! leave nothing half-written; a database from a newer Spindle is refused at start-up; a database
//! of the first schema is upgraded with its data intact.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{json, Value};
use spindle::actors::Shutdown;
use spindle::storage::sqlite::migrate::MIGRATIONS;
use uuid::Uuid;

use crate::helpers::{run_id, spawn_app, spawn_app_with, Reply, TestApp};
use crate::sse::names;

/// Asserts a 503 that names the cause and tells the client when to retry.
fn assert_unavailable(reply: &Reply, cause: &str) {
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert!(
        reply.detail().contains(cause),
        "the detail names the cause ({cause}): {:?}",
        reply.body
    );
    assert!(
        reply.headers.contains_key("retry-after"),
        "a 503 carries Retry-After: {:?}",
        reply.headers
    );
}

/// `PRAGMA integrity_check` on the file, through a connection of our own.
fn integrity(path: &Path) -> String {
    let connection = Connection::open(path).unwrap();
    connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// Creates a thread with the given id and `padding` bytes of metadata.
async fn create_padded_thread(app: &TestApp, thread_id: &str, padding: usize) -> Reply {
    app.post(
        "/threads",
        json!({"thread_id": thread_id, "metadata": {"padding": "x".repeat(padding)}}),
    )
    .await
}

/// Creates threads with 40 KB of metadata until the database refuses one; returns the ids of
/// the acknowledged ones, and the id and reply of the refused one.
async fn fill(app: &TestApp) -> (Vec<String>, (String, Reply)) {
    let mut acknowledged = Vec::new();
    loop {
        assert!(acknowledged.len() < 200, "the database never filled up");
        let thread_id = Uuid::new_v4().to_string();
        let reply = create_padded_thread(app, &thread_id, 40_000).await;
        match reply.status {
            200 => acknowledged.push(thread_id),
            _ => return (acknowledged, (thread_id, reply)),
        }
    }
}

/// A run of the `echo` graph saying `text`.
fn echo_run(text: &str) -> Value {
    json!({
        "assistant_id": "echo",
        "input": {"messages": [{"role": "user", "content": text}]},
    })
}

#[actix_web::test]
async fn a_full_database_refuses_writes_with_503_and_keeps_every_acknowledged_write() {
    // Arrange: a 1 MiB cap, filled with threads of 40 KB of metadata each.
    let app = spawn_app_with(|settings| settings.database.max_size_mb = 1).await;
    let (acknowledged, (refused_id, reply)) = fill(&app).await;

    // Assert: a clear 503, nothing of the refused write, everything acknowledged still there.
    assert_unavailable(&reply, "database is full");
    assert!(!acknowledged.is_empty(), "some writes fit before the cap");
    let counts_when_full = app.row_counts().await;
    assert_eq!(
        app.get(&format!("/threads/{refused_id}")).await.status,
        404,
        "the refused thread was not written"
    );
    for thread_id in &acknowledged {
        let thread = app.get(&format!("/threads/{thread_id}")).await;
        assert_eq!(
            thread.status, 200,
            "acknowledged thread {thread_id} is lost"
        );
        assert_eq!(
            thread.body["metadata"]["padding"].as_str().map(str::len),
            Some(40_000)
        );
    }
    let search = app.post("/threads/search", json!({"limit": 1000})).await;
    assert_eq!(
        search.status, 200,
        "reads work while full: {:?}",
        search.body
    );
    assert_eq!(search.body.as_array().unwrap().len(), acknowledged.len());

    // Act: other writes while full.
    let patch = app
        .request(
            reqwest::Method::PATCH,
            &format!("/threads/{}", acknowledged[0]),
            Some(json!({"metadata": {"more": "y".repeat(200_000)}})),
        )
        .await;
    assert_unavailable(&patch, "database is full");
    let assistant = app
        .post(
            "/assistants",
            json!({"graph_id": "echo", "name": "x".repeat(200_000)}),
        )
        .await;
    assert_unavailable(&assistant, "database is full");
    assert_eq!(
        app.row_counts().await,
        counts_when_full,
        "refused writes left nothing"
    );

    // A run submitted while full is refused, or accepted and then ends cleanly.
    let thread_id = &acknowledged[0];
    let run = app
        .create_run(thread_id, echo_run(&"z".repeat(200_000)))
        .await;
    if run.status == 503 {
        assert_unavailable(&run, "database is full");
        assert_eq!(app.row_counts().await, counts_when_full);
    } else {
        let run_id = run_id(&run);
        app.join(thread_id, &run_id).await;
        let stored = app
            .get(&format!("/threads/{thread_id}/runs/{run_id}"))
            .await;
        assert_eq!(
            stored.body["status"], "error",
            "a run that cannot write fails: {:?}",
            stored.body
        );
        let thread = app.get(&format!("/threads/{thread_id}")).await;
        assert_ne!(thread.body["status"], "busy", "{:?}", thread.body);
        assert!(
            thread.body["error"]
                .to_string()
                .contains("database is full"),
            "the run's error says why: {:?}",
            thread.body
        );
    }
    assert_eq!(integrity(&app.database_path), "ok");
}

#[actix_web::test]
async fn a_run_that_can_no_longer_write_ends_with_an_error_saying_the_database_is_full() {
    // Arrange: a run with a 100 KB input waits at a gate; then the database fills up.
    let app = spawn_app_with(|settings| settings.database.max_size_mb = 1).await;
    let thread_id = app.create_thread().await;
    let run = app
        .create_run(
            &thread_id,
            json!({
                "assistant_id": "gated",
                "input": {"messages": [{"role": "user", "content": "w".repeat(100_000)}]},
                "config": {"configurable": {"gate": "full"}},
            }),
        )
        .await;
    let run_id = run_id(&run);
    app.gates.arrivals("full", 1).await;
    let (_, (_, refused)) = fill(&app).await;
    assert_unavailable(&refused, "database is full");

    // Act: the run goes on and needs room for its next checkpoint.
    app.gates.open("full");
    app.join(&thread_id, &run_id).await;

    // Assert: it ended with an error that says why, and the thread is not left busy.
    let stored = app
        .get(&format!("/threads/{thread_id}/runs/{run_id}"))
        .await;
    assert_eq!(stored.body["status"], "error", "{:?}", stored.body);
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(thread.body["status"], "error", "{:?}", thread.body);
    assert!(
        thread.body["error"].to_string().contains("full"),
        "the run's error says the database is full: {:?}",
        thread.body["error"]
    );
    assert_eq!(app.orphaned_checkpoints().await, 0);
    assert_eq!(integrity(&app.database_path), "ok");
}

#[actix_web::test]
async fn a_write_lock_held_by_another_process_gives_503_until_it_is_released() {
    // Arrange: a short busy timeout, a thread, and another connection holding the write lock.
    let app = spawn_app_with(|settings| settings.database.busy_timeout_ms = 200).await;
    let existing = app.create_thread().await;
    let other_process = Connection::open(&app.database_path).unwrap();
    other_process.execute_batch("BEGIN IMMEDIATE").unwrap();
    let counts_before = app.row_counts().await;
    let new_thread_id = Uuid::new_v4().to_string();

    // Act / assert: every kind of write is refused with a clear 503; reads keep working.
    let create = create_padded_thread(&app, &new_thread_id, 10).await;
    assert_unavailable(&create, "locked by another process");
    let patch = app
        .request(
            reqwest::Method::PATCH,
            &format!("/threads/{existing}"),
            Some(json!({"metadata": {"k": "v"}})),
        )
        .await;
    assert_unavailable(&patch, "locked by another process");
    let assistant = app.post("/assistants", json!({"graph_id": "echo"})).await;
    assert_unavailable(&assistant, "locked by another process");
    let run = app.create_run(&existing, echo_run("hello")).await;
    assert_unavailable(&run, "locked by another process");
    assert_eq!(app.get(&format!("/threads/{existing}")).await.status, 200);
    assert_eq!(
        app.get(&format!("/threads/{new_thread_id}")).await.status,
        404
    );
    assert_eq!(app.row_counts().await, counts_before, "nothing was written");
    assert_eq!(app.thread_status(&existing).await, "idle");

    // Act: the other process lets go; the same requests now succeed.
    other_process.execute_batch("COMMIT").unwrap();
    let create = create_padded_thread(&app, &new_thread_id, 10).await;
    assert_eq!(create.status, 200, "{:?}", create.body);
    let run = app.create_run(&existing, echo_run("hello")).await;
    let run_id = run_id(&run);
    app.join(&existing, &run_id).await;
    assert_eq!(app.run_status(&existing, &run_id).await, "success");
    assert_eq!(integrity(&app.database_path), "ok");
}

#[actix_web::test]
async fn a_run_that_ends_while_the_database_is_locked_waits_and_its_thread_refuses_changes_with_503(
) {
    // Arrange / act: a run ends while another process holds the write lock.
    let app = spawn_app_with(|settings| settings.database.busy_timeout_ms = 200).await;
    let (thread_id, first, other_process) = stall_on_a_lock(&app).await;

    // Assert: meanwhile other changes get 503 too, and the run is still in flight.
    let patch = app
        .request(
            reqwest::Method::PATCH,
            &format!("/threads/{thread_id}"),
            Some(json!({"metadata": {"k": "v"}})),
        )
        .await;
    assert_unavailable(&patch, "locked by another process");
    assert_eq!(app.run_status(&thread_id, &first).await, "running");
    // A client joins the run's stream: the run counts as in flight, so it is subscribed (the
    // response has begun) and waits for the end.
    let mut joined = app.join_stream(&thread_id, &first, None).await;

    // Act: the other process lets go.
    other_process.execute_batch("COMMIT").unwrap();

    // Assert: the run's end is recorded (an error naming the lock), the joined stream ends with
    // it, and the thread takes runs again.
    let events = joined.collect().await;
    let last = events.last().expect("the joined stream has events");
    assert_eq!(last.name, "error", "{:?}", names(&events));
    assert_eq!(app.run_status(&thread_id, &first).await, "error");
    let thread = app.get(&format!("/threads/{thread_id}")).await;
    assert_eq!(thread.body["status"], "error", "{:?}", thread.body);
    assert!(
        thread.body["error"].to_string().contains("locked"),
        "the run's error says why: {:?}",
        thread.body["error"]
    );
    let next = app.create_run(&thread_id, echo_run("after the lock")).await;
    let next_id = run_id(&next);
    app.join(&thread_id, &next_id).await;
    assert_eq!(app.run_status(&thread_id, &next_id).await, "success");
    assert_eq!(integrity(&app.database_path), "ok");
}

#[actix_web::test]
async fn a_shutdown_waits_for_a_run_end_that_waits_for_the_database() {
    // Arrange: a run's end waits for another process's write lock.
    let app = spawn_app_with(|settings| settings.database.busy_timeout_ms = 200).await;
    let (thread_id, first, other_process) = stall_on_a_lock(&app).await;

    // Act: the server starts shutting down (new runs are refused), then the lock goes.
    let shutdown = app.registry.send(Shutdown {
        grace: Duration::from_secs(30),
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app
        .gated_run(&thread_id, "again", "never", "reject")
        .await
        .detail()
        .contains("shutting down")
    {
        assert!(Instant::now() < deadline, "the shutdown never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other_process.execute_batch("COMMIT").unwrap();
    let report = shutdown.await.unwrap();

    // Assert: the drain waited for the run's end to be written: nothing was left `running`
    // for the next start to resume.
    assert_eq!(report.stopped, 0);
    assert_eq!(app.run_status(&thread_id, &first).await, "error");
}

/// Starts a gated run on a new thread, has another process take the write lock, and lets the
/// run go on: neither its next checkpoint nor its end can be written. Returns once the thread
/// refuses a new run with 503 naming the lock (409 while the run is still active): the thread
/// id, the run id and the connection holding the lock.
async fn stall_on_a_lock(app: &TestApp) -> (String, String, Connection) {
    let thread_id = app.create_thread().await;
    let run = app.gated_run(&thread_id, "hello", "locked", "reject").await;
    let first = run_id(&run);
    app.gates.arrivals("locked", 1).await;
    let other_process = Connection::open(&app.database_path).unwrap();
    other_process.execute_batch("BEGIN IMMEDIATE").unwrap();
    app.gates.open("locked");
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let reply = app.gated_run(&thread_id, "again", "never", "reject").await;
        match reply.status {
            409 => {
                assert!(Instant::now() < deadline, "the run never ended");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break reply,
        }
    };
    assert_unavailable(&refused, "locked by another process");
    (thread_id, first, other_process)
}

#[actix_web::test]
async fn a_database_written_by_a_newer_spindle_is_refused_at_start_up() {
    // Arrange: a file whose schema version is beyond what this binary knows.
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("newer.db");
    let newer = MIGRATIONS.len() as i64 + 3;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();

    // Act: start the real binary on it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--port", "0", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/spindle.toml"))
        .arg("--database")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the spindle binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the server did not refuse the newer database within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    // Assert: a non-zero exit whose message names both versions and the cause.
    assert!(
        !status.success(),
        "it exited with {status}; stderr: {stderr}"
    );
    for expected in [
        format!("schema version {newer}"),
        format!("supports versions up to {}", MIGRATIONS.len()),
        "newer version of Spindle".to_owned(),
    ] {
        assert!(
            stderr.contains(&expected),
            "stderr lacks {expected:?}: {stderr}"
        );
    }
    let untouched: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(untouched, newer, "the file was left as it was");
}

/// Copies the rows of every table of the first schema from `source` into `target`, a file that
/// has only migration 0001: the columns both have, so rows written by today's server take the
/// shape they had in the first schema (later migrations only add).
fn copy_into_first_schema(source: &Path, target: &Path) {
    let connection = Connection::open(target).unwrap();
    connection.execute_batch(MIGRATIONS[0].1).unwrap();
    connection.pragma_update(None, "user_version", 1).unwrap();
    connection
        .execute("ATTACH DATABASE ?1 AS source", [source.to_str().unwrap()])
        .unwrap();
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY rowid")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let columns = |schema: &str, table: &str| -> Vec<String> {
        connection
            .prepare(&format!("PRAGMA {schema}.table_info(\"{table}\")"))
            .unwrap()
            .query_map([], |row| row.get::<_, String>(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    for table in tables {
        let source_columns = columns("source", &table);
        let shared: Vec<String> = columns("main", &table)
            .into_iter()
            .filter(|column| source_columns.contains(column))
            .map(|column| format!("\"{column}\""))
            .collect();
        let list = shared.join(", ");
        connection
            .execute(
                &format!(
                    "INSERT INTO main.\"{table}\" ({list}) SELECT {list} FROM source.\"{table}\""
                ),
                [],
            )
            .unwrap();
    }
    connection.execute("DETACH DATABASE source", []).unwrap();
}

#[actix_web::test]
async fn a_database_of_the_first_schema_is_upgraded_with_its_data_intact() {
    // Arrange: today's server writes an assistant, a thread, a run and its checkpoints; the
    // rows go into a file of the first schema.
    let writer = spawn_app().await;
    let assistant = writer
        .post(
            "/assistants",
            json!({"graph_id": "echo", "name": "kept", "metadata": {"owner": "upgrade"}}),
        )
        .await;
    assert_eq!(assistant.status, 200, "{:?}", assistant.body);
    let assistant_id = assistant.body["assistant_id"].as_str().unwrap().to_owned();
    let thread_id = writer.create_thread().await;
    let first_run = run_id(
        &writer
            .create_run(
                &thread_id,
                json!({
                    "assistant_id": assistant_id,
                    "input": {"messages": [{"role": "user", "content": "before the upgrade"}]},
                }),
            )
            .await,
    );
    writer.join(&thread_id, &first_run).await;
    let history_before = writer
        .get(&format!("/threads/{thread_id}/history"))
        .await
        .body;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("first-schema.db");
    copy_into_first_schema(&writer.database_path, &path);
    drop(writer);

    // Act: start on the old file.
    let app = spawn_app_with(|settings| settings.database.path = path.clone()).await;

    // Assert: the schema is current and the data reads as before.
    let version = app.count("PRAGMA user_version").await;
    assert_eq!(version, MIGRATIONS.len() as i64);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM pragma_table_info('runs') WHERE name = 'attempts'")
            .await,
        1
    );
    let stored = app.get(&format!("/assistants/{assistant_id}")).await;
    assert_eq!(stored.status, 200, "{:?}", stored.body);
    assert_eq!(stored.body["name"], "kept");
    assert_eq!(stored.body["metadata"]["owner"], "upgrade");
    assert_eq!(app.thread_status(&thread_id).await, "idle");
    assert_eq!(app.run_status(&thread_id, &first_run).await, "success");
    assert_eq!(app.human_messages(&thread_id).await, ["before the upgrade"]);
    let history_after = app.get(&format!("/threads/{thread_id}/history")).await.body;
    assert_eq!(history_after, history_before, "checkpoints read as before");

    // And a new run works on the upgraded file.
    let second_run = run_id(
        &app.create_run(
            &thread_id,
            json!({
                "assistant_id": assistant_id,
                "input": {"messages": [{"role": "user", "content": "after the upgrade"}]},
            }),
        )
        .await,
    );
    app.join(&thread_id, &second_run).await;
    assert_eq!(app.run_status(&thread_id, &second_run).await, "success");
    assert_eq!(
        app.human_messages(&thread_id).await,
        ["before the upgrade", "after the upgrade"]
    );
    assert_eq!(integrity(&app.database_path), "ok");
}
