//! The seams, used from outside: a run actor executes a run of an engine it has never heard of
//! (defined here, beside the TOML engine's graphs), writes through the fenced checkpoint port
//! into a real SQLite store, and reports its end to whatever recipient started it, with no
//! thread actor anywhere.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use futures_util::future::{self, BoxFuture};
use serde_json::{json, Value};
use spindle::actors::protocol::{BeginRun, RunEnd, RunFinished};
use spindle::actors::{RunActor, RunLimits};
use spindle::domain::checkpoint::Checkpoint;
use spindle::domain::ids::ThreadId;
use spindle::domain::run::RunError;
use spindle::domain::thread::IfExists;
use spindle::engine::{
    Engine, EngineError, EngineFuture, Execution, RunExit, RunStart, StateUpdate, ThreadCheckpoints,
};
use spindle::storage::conformance::{checkpoint, run, with_run_assistants};
use spindle::storage::sqlite::SqliteStore;
use spindle::storage::{InsertRun, StorageError, Store};
use spindle::stream::{RunStream, StreamLimits};
use tokio::sync::mpsc;

/// An engine of one graph, `agent`, whose runs write one checkpoint and end with `{"done": n}`,
/// `n` the attempt.
struct OneStep;

impl Engine for OneStep {
    fn graph_ids(&self) -> Vec<String> {
        vec!["agent".into()]
    }

    fn drawing(&self, _: &str) -> EngineFuture<Value> {
        Box::pin(future::ready(Ok(json!({}))))
    }

    fn schemas(&self, _: &str) -> EngineFuture<Value> {
        Box::pin(future::ready(Ok(json!({}))))
    }

    fn subgraphs(&self, _: &str, _: Option<&str>, _: bool) -> EngineFuture<Value> {
        Box::pin(future::ready(Ok(json!({}))))
    }

    fn start(&self, start: RunStart) -> BoxFuture<'static, Result<Execution, RunError>> {
        Box::pin(async move {
            let run = &start.run;
            let first = checkpoint(run.thread_id, run.run_id, -1);
            start
                .checkpoints
                .begin(vec![first])
                .await
                .map_err(|error| error.into_run_error())?;
            let values = json!({"done": start.attempt}).as_object().unwrap().clone();
            Ok(Execution {
                ended: Box::pin(future::ready(RunExit::Completed {
                    values: Arc::new(values),
                    next: vec![],
                })),
            })
        })
    }

    fn update_state(
        &self,
        update: StateUpdate,
        _: Arc<dyn ThreadCheckpoints>,
    ) -> EngineFuture<Checkpoint> {
        Box::pin(future::ready(Err(EngineError::UnknownGraph(
            update.graph_id,
        ))))
    }
}

/// Receives the end reports a run actor sends, in place of a thread actor.
struct Reports(mpsc::UnboundedSender<RunFinished>);

impl Actor for Reports {
    type Context = Context<Self>;
}

impl Handler<RunFinished> for Reports {
    type Result = ();

    fn handle(&mut self, report: RunFinished, _: &mut Context<Self>) {
        let _ = self.0.send(report);
    }
}

#[test]
fn a_run_actor_runs_any_engine_and_reports_to_whoever_started_it() {
    let directory = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async move {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                &directory.path().join("seams.db"),
                1,
                Duration::from_secs(5),
                None,
            )
            .unwrap(),
        );
        with_run_assistants(&*store).await;
        let thread_id = ThreadId::generate();
        store
            .create_thread(thread_id, Default::default(), IfExists::Raise)
            .await
            .unwrap();
        let pending = store
            .insert_run(InsertRun {
                run: run(thread_id),
                create_thread_metadata: None,
                stop: None,
            })
            .await
            .unwrap();
        let run_id = pending.run_id;

        let (sender, mut received) = mpsc::unbounded_channel();
        let reports = Reports(sender).start();
        let stream = Arc::new(RunStream::new(run_id, false, &StreamLimits::default()));
        let run_actor = RunActor::new(
            pending,
            Arc::new(OneStep),
            store.clone(),
            reports.recipient(),
            stream,
            RunLimits::default(),
        )
        .start();
        run_actor
            .send(BeginRun {
                attempt: 1,
                recovered: false,
            })
            .await
            .unwrap()
            .unwrap();

        let report = received.recv().await.unwrap();
        assert_eq!((report.run_id, report.attempt), (run_id, 1));
        match report.end {
            RunEnd::Success { values, next } => {
                assert_eq!(Value::Object((*values).clone()), json!({"done": 1}));
                assert!(next.is_empty());
            }
            other => panic!("expected a success, got {other:?}"),
        }
        // The engine's start went through the fence: the run is running in attempt 1, and its
        // checkpoint is stored; a write of any other attempt is refused.
        let head = store.head(thread_id).await.unwrap().unwrap();
        assert_eq!(head.run_id, Some(run_id));
        let stale = store
            .save_checkpoint(checkpoint(thread_id, run_id, 0), 2)
            .await;
        assert!(matches!(stale, Err(StorageError::Fenced)), "{stale:?}");
    });
}
