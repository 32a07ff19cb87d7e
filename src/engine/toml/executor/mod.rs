//! The superstep loop: `execute` runs all triggered nodes concurrently, each in its own task,
//! then merges their updates through the reducers and hands one checkpoint to the
//! `CheckpointSink` before the next step; dropping its future aborts the node tasks. Where a run
//! starts is `begin.rs` (no IO); the plan and results are `plan.rs`; `command.rs`, `tasks.rs` and
//! `update.rs` (state updates) hold the rest.

mod begin;
mod plan;
mod tasks;
mod update;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::emit::{NodeStream, TaskInfo};
use super::graph::{Graph, START};
use super::node::{NodeError, NodeInput, NodeResult};
use crate::domain::checkpoint::{CheckpointSource, Interrupt};
use crate::domain::run::RunError;
use crate::domain::JsonMap;
pub use begin::{begin, recover};
use plan::cursor_of;
pub use plan::{
    base_metadata, Begin, CheckpointSink, Cursor, Finish, Halt, RunPlan, DEFAULT_RECURSION_LIMIT,
};
use tasks::{carry_over, interrupt_id, task_ids};
pub use update::update_state;

/// Aborts a spawned task when dropped, so dropping the executor stops its nodes.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(error) => error.to_string(),
    }
}

/// A task of a superstep: running, or completed before (its result reused).
enum Running {
    Done,
    Task(AbortOnDrop<NodeResult>),
}

/// Some tasks of the superstep interrupted: the state stays as it was, and a checkpoint records
/// the same pending nodes with the interrupts and the results of the tasks that completed, so
/// a resume re-runs only the interrupted ones.
async fn interrupted(
    plan: &RunPlan,
    cursor: Cursor,
    step: i64,
    results: Vec<Option<JsonMap>>,
    raised: Vec<(usize, Value)>,
    sink: &mut dyn CheckpointSink,
) -> Result<Finish, Halt> {
    let mut checkpoint = plan.checkpoint(
        Some(cursor.checkpoint_id),
        step,
        CheckpointSource::Loop,
        cursor.values,
        cursor.next,
        cursor.updated_by,
    );
    carry_over(&mut checkpoint.tasks, &cursor.tasks, false);
    for (index, (task, result)) in checkpoint.tasks.iter_mut().zip(results).enumerate() {
        match raised.iter().find(|(raised_by, _)| *raised_by == index) {
            Some((_, value)) => task.interrupts.push(Interrupt {
                id: interrupt_id(&task.id),
                value: value.clone(),
            }),
            None => task.result = Some(result.map_or(Value::Null, Value::Object)),
        }
    }
    sink.save(checkpoint.clone()).await?;
    let interrupts: Vec<Interrupt> = checkpoint.interrupts().into_iter().cloned().collect();
    plan.emitter.interrupted(&checkpoint.values, &interrupts);
    plan.emitter.checkpoint(&checkpoint);
    Ok(Finish {
        values: checkpoint.values,
        next: checkpoint.next,
        interrupts,
    })
}

/// Runs a subgraph task: the parent's state (its channels that the subgraph has) is the input;
/// the subgraph checkpoints in its own namespace; its final values become the task's update.
fn subgraph(
    plan: RunPlan,
    parent: Arc<Graph>,
    state: Arc<JsonMap>,
    mut sink: Box<dyn CheckpointSink>,
) -> BoxFuture<'static, NodeResult> {
    fn error_of(halt: Halt) -> NodeError {
        match halt {
            Halt::Failed(error) => NodeError::Failed(error),
            Halt::Fenced => NodeError::Fenced,
        }
    }
    Box::pin(async move {
        let mut plan = plan;
        let input = plan.graph.input_from(&state);
        plan.input = Some(Value::Object(input));
        let begin = begin(&plan, None, false)?;
        for checkpoint in &begin.checkpoints {
            sink.save(checkpoint.clone()).await.map_err(error_of)?;
        }
        plan.emitter
            .run_began(&begin.checkpoints, &begin.cursor.values);
        let finish = execute(&plan, begin.cursor, false, sink.as_mut())
            .await
            .map_err(error_of)?;
        if !finish.interrupts.is_empty() {
            return Err(RunError::new(
                "SubgraphInterruptError",
                format!(
                    "graph '{}' paused with an interrupt inside a subgraph; interrupts in subgraphs are not supported yet",
                    plan.graph.id
                ),
            )
            .into());
        }
        Ok(Some(parent.output_from(&plan.graph, &state, finish.values)))
    })
}

/// Executes supersteps from `cursor` until no node is triggered, a breakpoint fires, a node
/// fails, the recursion limit is hit, or the sink fences the run.
pub async fn execute(
    plan: &RunPlan,
    cursor: Cursor,
    resuming: bool,
    sink: &mut dyn CheckpointSink,
) -> Result<Finish, Halt> {
    let mut cursor = cursor;
    let mut first_step = true;
    let mut supersteps: u64 = 0;
    loop {
        if cursor.next.is_empty() {
            return Ok(Finish {
                values: cursor.values,
                next: vec![],
                interrupts: vec![],
            });
        }
        let skip_breakpoint = first_step && resuming;
        if !skip_breakpoint && RunPlan::breaks(&plan.interrupt_before, &cursor.next) {
            plan.emitter.breakpoint();
            return Ok(Finish {
                values: cursor.values,
                next: cursor.next,
                interrupts: vec![],
            });
        }
        supersteps += 1;
        if supersteps > plan.recursion_limit {
            return Err(Halt::Failed(RunError::new(
                "GraphRecursionError",
                format!(
                    "Recursion limit of {} reached without hitting a stop condition. You can increase the limit by setting the `recursion_limit` config key.",
                    plan.recursion_limit
                ),
            )));
        }
        let step = cursor.step + 1;
        let state = Arc::new(cursor.values.clone());
        let mut tasks: Vec<(TaskInfo, Option<Value>, Running)> =
            Vec::with_capacity(cursor.next.len());
        let ids = task_ids(&cursor.checkpoint_id, step, &cursor.next);
        for (index, (name, id)) in cursor.next.iter().zip(ids).enumerate() {
            let task = TaskInfo {
                id,
                node: name.clone(),
                step,
                lc_run_id: uuid::Uuid::now_v7(),
            };
            let record = cursor
                .tasks
                .get(index)
                .filter(|record| record.name == *name);
            // A task that completed in a superstep another task interrupted keeps its result.
            let completed = record
                .filter(|record| record.interrupts.is_empty())
                .and_then(|record| record.result.clone())
                .filter(|_| name != START);
            // A task a `Send` started runs on the Send's input instead of the state.
            let state = match record.and_then(|record| record.send.as_ref()) {
                Some(Value::Object(input)) => Arc::new(input.clone()),
                _ => state.clone(),
            };
            if let Some(result) = completed {
                tasks.push((task, Some(result), Running::Done));
                continue;
            }
            plan.emitter.task_started(&task, &state);
            let definition = plan.graph.node(name);
            if let Some(graph) = definition.and_then(|definition| definition.subgraph.clone()) {
                let child = plan.subgraph(graph, &task, cursor.checkpoint_id);
                let run = subgraph(child, plan.graph.clone(), state.clone(), sink.share());
                let handle = tokio::spawn(run);
                tasks.push((task, None, Running::Task(AbortOnDrop(handle))));
                continue;
            }
            let node = definition.map(|definition| definition.node.clone());
            let input = NodeInput {
                node: name.clone(),
                step,
                state: state.clone(),
                config: plan.node_config.clone(),
                stream: NodeStream::new(plan.emitter.clone(), task.clone()),
                resume: cursor.resume.get(&index).cloned(),
            };
            let limit = plan.node_timeout;
            let handle = tokio::spawn(async move {
                let Some(node) = node else {
                    return Err(RunError::new(
                        "TaskNotFound",
                        format!("node '{}' is not part of the graph", input.node),
                    )
                    .into());
                };
                let Some(limit) = limit else {
                    return node.invoke(input).await;
                };
                let name = input.node.clone();
                // Dropping the node's future on timeout stops it (and kills its processes).
                tokio::time::timeout(limit, node.invoke(input))
                    .await
                    .unwrap_or_else(|_| {
                        Err(RunError::new(
                            "NodeTimeoutError",
                            format!(
                                "node '{name}' did not finish within {}s (runtime.node_timeout_seconds)",
                                limit.as_secs_f64()
                            ),
                        )
                        .into())
                    })
            });
            tasks.push((task, None, Running::Task(AbortOnDrop(handle))));
        }
        // Every task is already running; awaiting them in order only fixes the merge order.
        let mut results: Vec<Option<JsonMap>> = Vec::with_capacity(tasks.len());
        let mut interrupts: Vec<(usize, Value)> = vec![];
        for (index, (info, completed, running)) in tasks.iter_mut().enumerate() {
            let task = match running {
                Running::Done => {
                    results.push(completed.take().and_then(|result| match result {
                        Value::Object(update) => Some(update),
                        _ => None,
                    }));
                    continue;
                }
                Running::Task(task) => task,
            };
            match (&mut task.0).await {
                Ok(Ok(update)) => {
                    plan.emitter.task_finished(info, update.as_ref(), &state);
                    results.push(update);
                }
                Ok(Err(NodeError::Fenced)) => return Err(Halt::Fenced),
                Ok(Err(NodeError::Interrupted(value))) => {
                    interrupts.push((index, value));
                    results.push(None);
                }
                Ok(Err(NodeError::Failed(error))) => return Err(Halt::Failed(error)),
                Err(join_error) => {
                    return Err(Halt::Failed(RunError::new(
                        "NodePanic",
                        format!(
                            "node '{}' panicked: {}",
                            info.node,
                            panic_message(join_error)
                        ),
                    )))
                }
            }
        }
        drop(tasks);
        if !interrupts.is_empty() {
            return interrupted(plan, cursor, step, results, interrupts, sink).await;
        }
        let updates: Vec<&JsonMap> = results.iter().flatten().collect();
        let mut values = cursor.values;
        plan.graph.apply_updates(&mut values, &updates)?;
        let executed = cursor.next;
        let next = plan.graph.next_after(&executed, &values);
        let checkpoint = plan.checkpoint(
            Some(cursor.checkpoint_id),
            step,
            CheckpointSource::Loop,
            values,
            next,
            executed.clone(),
        );
        cursor = cursor_of(&checkpoint);
        sink.save(checkpoint.clone()).await?;
        plan.emitter.values(&cursor.values);
        plan.emitter.checkpoint(&checkpoint);
        if !cursor.next.is_empty() && RunPlan::breaks(&plan.interrupt_after, &executed) {
            plan.emitter.breakpoint();
            return Ok(Finish {
                values: cursor.values,
                next: cursor.next,
                interrupts: vec![],
            });
        }
        first_step = false;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::checkpoint::Checkpoint;
    use crate::domain::ids::{RunId, ThreadId};
    use crate::domain::run::Breakpoints;
    use crate::engine::toml::emit::Emitter;
    use crate::engine::toml::node::NativeNodes;
    use crate::engine::toml::registry::parse_spec;

    struct Collect(Vec<Checkpoint>);

    impl CheckpointSink for Collect {
        fn save(&mut self, checkpoint: Checkpoint) -> BoxFuture<'static, Result<(), Halt>> {
            self.0.push(checkpoint);
            Box::pin(async { Ok(()) })
        }

        /// Subgraph checkpoints are not collected.
        fn share(&self) -> Box<dyn CheckpointSink> {
            Box::new(Collect(vec![]))
        }
    }

    fn plan(graph_toml: &str, input: Value) -> RunPlan {
        let graph = crate::engine::toml::graph::Graph::from_spec(
            parse_spec("g", graph_toml).unwrap(),
            &NativeNodes::default(),
        )
        .unwrap();
        let thread_id = ThreadId::generate();
        let run_id = RunId::generate();
        RunPlan {
            graph: Arc::new(graph),
            thread_id,
            run_id,
            input: Some(input),
            node_config: Arc::new(json!({"delay": 0}).as_object().unwrap().clone()),
            base_metadata: base_metadata(&JsonMap::new(), &JsonMap::new(), thread_id, run_id, 1),
            recursion_limit: DEFAULT_RECURSION_LIMIT,
            interrupt_before: vec![],
            interrupt_after: vec![],
            emitter: Arc::new(Emitter::silent()),
            command: None,
            namespace: String::new(),
            parents: JsonMap::new(),
            node_timeout: None,
        }
    }

    const AGENT: &str = include_str!("../../../../config/graphs/agent.toml");

    #[tokio::test]
    async fn the_agent_answers_a_weather_question_in_four_messages() {
        let plan = plan(
            AGENT,
            json!({"messages": [{"role": "user", "content": "what's the weather in nyc?"}]}),
        );
        let begin = begin(&plan, None, false).unwrap();
        assert_eq!(begin.checkpoints.len(), 2);
        assert_eq!(
            (begin.checkpoints[0].step, begin.checkpoints[0].source),
            (-1, CheckpointSource::Input)
        );
        assert_eq!(begin.checkpoints[0].next, ["__start__"]);
        assert_eq!(begin.checkpoints[1].next, ["agent"]);
        let mut sink = Collect(vec![]);
        let finish = execute(&plan, begin.cursor, begin.resuming, &mut sink)
            .await
            .unwrap();
        let kinds: Vec<&str> = finish.values["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["human", "ai", "tool", "ai"]);
        let steps: Vec<i64> = sink.0.iter().map(|c| c.step).collect();
        assert_eq!(steps, [1, 2, 3]);
        assert_eq!(
            sink.0[0].parent_checkpoint_id,
            Some(begin.checkpoints[1].checkpoint_id)
        );
        assert_eq!(sink.0[2].metadata["source"], "loop");
        assert_eq!(sink.0[2].metadata["run_id"], json!(plan.run_id));
    }

    #[tokio::test]
    async fn a_recovered_run_continues_from_its_checkpoint_as_the_run_would_have() {
        let mut plan = plan(AGENT, json!({"messages": "weather in sf"}));
        let started = begin(&plan, None, false).unwrap();
        let mut sink = Collect(vec![]);
        execute(&plan, started.cursor, false, &mut sink)
            .await
            .unwrap();
        // After the agent's first step (a tool call), `tools` is next.
        let after_agent = sink.0[0].clone();
        assert_eq!(after_agent.next, ["tools"]);
        assert_eq!(after_agent.updated_by, ["agent"]);

        // Recovered there, it runs the remaining steps only: tools, then the answer.
        let recovered = recover(&plan, &after_agent).unwrap();
        assert!(!recovered.resuming && recovered.checkpoints.is_empty());
        let mut rest = Collect(vec![]);
        let finish = execute(&plan, recovered.cursor, recovered.resuming, &mut rest)
            .await
            .unwrap();
        assert_eq!(rest.0.len(), 2);
        assert_eq!(finish.values["messages"].as_array().unwrap().len(), 4);

        // A breakpoint before `tools` still stops it; one after `agent` ends it at once.
        plan.interrupt_before = vec![Breakpoints::Nodes(vec!["tools".into()])];
        let recovered = recover(&plan, &after_agent).unwrap();
        let finish = execute(&plan, recovered.cursor, recovered.resuming, &mut rest)
            .await
            .unwrap();
        assert_eq!(finish.next, ["tools"]);
        plan.interrupt_before = vec![];
        plan.interrupt_after = vec![Breakpoints::Nodes(vec!["agent".into()])];
        let Err(finish) = recover(&plan, &after_agent) else {
            panic!("a run that had reached interrupt_after must end there");
        };
        assert_eq!(finish.next, ["tools"]);

        // From a checkpoint written when it began (a fork copy), breakpoints before its next
        // nodes do not fire again, as they did not for the run.
        let mut fork = after_agent.clone();
        fork.source = CheckpointSource::Fork;
        plan.interrupt_after = vec![];
        plan.interrupt_before = vec![Breakpoints::Nodes(vec!["tools".into()])];
        let recovered = recover(&plan, &fork).unwrap();
        assert!(recovered.resuming);
    }

    #[tokio::test]
    async fn interrupt_before_stops_and_a_resume_continues_past_it() {
        let mut plan = plan(AGENT, json!({"messages": "weather in sf"}));
        plan.interrupt_before = vec![Breakpoints::Nodes(vec!["tools".into()])];
        let started = begin(&plan, None, false).unwrap();
        let mut sink = Collect(vec![]);
        let finish = execute(&plan, started.cursor, false, &mut sink)
            .await
            .unwrap();
        assert_eq!(finish.next, ["tools"]);
        let head = sink.0.last().unwrap().clone();
        plan.input = None;
        let resumed = begin(&plan, Some(&head), false).unwrap();
        assert!(resumed.checkpoints.is_empty() && resumed.resuming);
        let finish = execute(&plan, resumed.cursor, true, &mut sink)
            .await
            .unwrap();
        assert!(finish.next.is_empty());
        assert_eq!(finish.values["messages"].as_array().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_loop_without_exit_hits_the_recursion_limit() {
        let looping = "[channels]\nn = \"append\"\n[[nodes]]\nname = \"a\"\nkind = \"noop\"\n[[edges]]\nfrom = \"__start__\"\nto = \"a\"\n[[edges]]\nfrom = \"a\"\nto = \"a\"\n";
        let mut plan = plan(looping, json!({}));
        plan.recursion_limit = 3;
        let started = begin(&plan, None, false).unwrap();
        let mut sink = Collect(vec![]);
        match execute(&plan, started.cursor, false, &mut sink).await {
            Err(Halt::Failed(error)) => assert_eq!(error.error, "GraphRecursionError"),
            other => panic!("expected a recursion error, got {other:?}"),
        }
        assert_eq!(sink.0.len(), 3);
    }

    #[tokio::test]
    async fn a_panicking_node_fails_only_its_run() {
        let mut native = NativeNodes::default();
        native.register("boom", |_input: NodeInput| async { panic!("kaboom") });
        let spec = parse_spec("p", "[channels]\n[[nodes]]\nname = \"a\"\nkind = \"native\"\nfunction = \"boom\"\n[[edges]]\nfrom = \"__start__\"\nto = \"a\"\n").unwrap();
        let mut plan = plan(AGENT, json!({}));
        plan.graph = Arc::new(crate::engine::toml::graph::Graph::from_spec(spec, &native).unwrap());
        let started = begin(&plan, None, false).unwrap();
        match execute(&plan, started.cursor, false, &mut Collect(vec![])).await {
            Err(Halt::Failed(error)) => {
                assert_eq!(error.error, "NodePanic");
                assert!(error.message.contains("kaboom"));
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
    }

    #[test]
    fn a_state_update_as_the_agent_with_a_tool_call_makes_tools_next() {
        let plan = plan(AGENT, json!({}));
        let thread_id = plan.thread_id;
        let fresh = update_state(
            &plan.graph,
            thread_id,
            None,
            Some(&json!({"messages": "hi"})),
            None,
        )
        .unwrap();
        assert_eq!(
            (fresh.step, fresh.next.clone()),
            (0, vec!["agent".to_owned()])
        );
        let call = json!({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "name": "tavily_search_results_json", "args": {"query": "q"}}]}]});
        let update = update_state(
            &plan.graph,
            thread_id,
            Some(&fresh),
            Some(&call),
            Some("agent"),
        )
        .unwrap();
        assert_eq!(update.next, ["tools"]);
        assert_eq!(update.parent_checkpoint_id, Some(fresh.checkpoint_id));
        assert_eq!(update.metadata["source"], "update");
        assert_eq!(update.values["messages"].as_array().unwrap().len(), 2);
        assert_eq!(
            update_state(&plan.graph, thread_id, Some(&update), None, Some("bogus")).unwrap_err(),
            "Node bogus does not exist"
        );
    }

    #[test]
    fn a_run_without_input_or_checkpoint_is_an_empty_input_error() {
        let mut plan = plan(AGENT, json!({}));
        plan.input = None;
        assert_eq!(
            begin(&plan, None, false).unwrap_err().error,
            "EmptyInputError"
        );
    }
}
