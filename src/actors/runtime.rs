//! `Runtime`: the runtime as its callers see it. HTTP handlers (and later the cron scheduler,
//! MCP and A2A) create runs, send commands to threads and read state through it, so every
//! caller creates a run exactly the same way: the assistant resolved, the request built into a
//! run by `domain::run_request`, the run handed to its thread's actor, and a command resent when
//! the actor it reached had just retired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Addr, Handler, Message};
use serde_json::Value;

use super::checkpoints::StoredCheckpoints;
use super::error::ThreadError;
use super::protocol::{DeleteThread, RunAccepted, RunReply, SubmitRun, UpdateState};
use super::registry::{GetThread, ThreadRegistry};
use super::thread::ThreadActor;
use crate::domain::assistant::Assistant;
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{AssistantId, ThreadId};
use crate::domain::query::HistoryQuery;
use crate::domain::run::NewRun;
use crate::domain::run_request::{build_run, RunRequest};
use crate::domain::tool_calls::has_ai_tool_calls;
use crate::domain::{NotFound, ValidationError};
use crate::engine::{stored_history, stored_state, Engine, Engines, StateAt, ThreadCheckpoints};
use crate::storage::SharedStore;

/// How many times a command is resent to a thread whose actor keeps retiring under it.
const RETIRED_RESENDS: usize = 8;

/// The runtime's entry points; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    store: SharedStore,
    engines: Arc<Engines>,
    registry: Addr<ThreadRegistry>,
    /// Raised at shutdown: new runs are refused.
    draining: Arc<AtomicBool>,
    /// Refuse client-supplied AI messages with tool calls (`runtime.refuse_client_tool_calls`).
    refuse_client_tool_calls: bool,
}

impl Runtime {
    /// The runtime over these parts (wired by `startup.rs`).
    pub fn new(
        store: SharedStore,
        engines: Arc<Engines>,
        registry: Addr<ThreadRegistry>,
        draining: Arc<AtomicBool>,
        refuse_client_tool_calls: bool,
    ) -> Self {
        Self {
            store,
            engines,
            registry,
            draining,
            refuse_client_tool_calls,
        }
    }

    /// With `runtime.refuse_client_tool_calls`, refuses `value` (the request's `field`) when it
    /// carries an AI message with tool calls, which a graph's `tools` node would execute.
    fn check_client_tool_calls(&self, field: &str, value: &Value) -> Result<(), ThreadError> {
        if self.refuse_client_tool_calls && has_ai_tool_calls(value) {
            return Err(ThreadError::Invalid(ValidationError::Invalid(format!(
                "Invalid request body: field `{field}`: it holds an AI message with tool calls, \
                 which this server does not accept from clients (runtime.refuse_client_tool_calls)"
            ))));
        }
        Ok(())
    }

    /// The store, for reads and for writes that touch no run.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The served graphs and their engines.
    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    /// Sends a command to the thread's actor (started if needed); replies with its answer and
    /// the actor's address. An actor that retired (idle) just before the command arrived
    /// refuses it unhandled: the registry is asked again, and starts a fresh actor.
    pub async fn command<M, R>(
        &self,
        thread_id: ThreadId,
        message: M,
    ) -> Result<(Result<R, ThreadError>, Addr<ThreadActor>), ThreadError>
    where
        M: Message<Result = Result<R, ThreadError>> + Clone + Send + 'static,
        R: Send + 'static,
        ThreadActor: Handler<M>,
    {
        for _ in 0..RETIRED_RESENDS {
            let actor = self.registry.send(GetThread { thread_id }).await?;
            match actor.send(message.clone()).await? {
                Err(ThreadError::Retired) => continue,
                reply => return Ok((reply, actor)),
            }
        }
        Err(ThreadError::Retired)
    }

    /// Sends a command to the thread's actor and returns its answer.
    pub async fn tell<M, R>(&self, thread_id: ThreadId, message: M) -> Result<R, ThreadError>
    where
        M: Message<Result = Result<R, ThreadError>> + Clone + Send + 'static,
        R: Send + 'static,
        ThreadActor: Handler<M>,
    {
        self.command(thread_id, message).await?.0
    }

    /// Refused while the server shuts down: runs are not accepted any more.
    pub fn accepting_runs(&self) -> Result<(), ThreadError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(ThreadError::Draining);
        }
        Ok(())
    }

    /// Writes a `source: update` checkpoint through the thread's actor (409 while runs are in
    /// flight); replies with the new checkpoint.
    pub async fn update_state(
        &self,
        thread_id: ThreadId,
        update: UpdateState,
    ) -> Result<Checkpoint, ThreadError> {
        if let Some(values) = &update.values {
            self.check_client_tool_calls("values", values)?;
        }
        self.tell(thread_id, update).await
    }

    /// Deletes an assistant; with `delete_threads`, its threads too, each through its actor
    /// (which stops its runs first). Runs created meanwhile cannot survive it: threads are
    /// deleted once while the assistant exists, then again after its deletion is committed,
    /// from when storage refuses its new runs, to catch threads a run took in between.
    pub async fn delete_assistant(
        &self,
        assistant_id: AssistantId,
        delete_threads: bool,
    ) -> Result<(), ThreadError> {
        if self.store.get_assistant(assistant_id).await?.is_none() {
            return Err(ThreadError::NotFound(NotFound::AssistantToDelete(
                assistant_id,
            )));
        }
        if delete_threads {
            self.delete_threads_of(assistant_id).await?;
        }
        self.store.delete_assistant(assistant_id).await?;
        if delete_threads {
            self.delete_threads_of(assistant_id).await?;
        }
        log::info!("assistant deleted assistant_id={assistant_id} delete_threads={delete_threads}");
        Ok(())
    }

    /// Deletes every thread whose metadata names the assistant, through the threads' actors.
    async fn delete_threads_of(&self, assistant_id: AssistantId) -> Result<(), ThreadError> {
        for thread_id in self.store.threads_of_assistant(assistant_id).await? {
            match self.tell(thread_id, DeleteThread).await {
                Ok(()) | Err(ThreadError::NotFound(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// The assistant a run names: a UUID, or a graph id meaning that graph's system assistant.
    pub async fn resolve_assistant(&self, text: &str) -> Result<Assistant, ThreadError> {
        let assistant_id = match AssistantId::parse(text) {
            Ok(assistant_id) => assistant_id,
            Err(_) if self.engines.serves(text) => AssistantId::for_graph(text),
            Err(_) => {
                let graphs: Vec<&str> = self.engines.ids().collect();
                return Err(ThreadError::Invalid(ValidationError::Invalid(format!(
                    "Invalid assistant: '{text}'. Must be either:\n- A valid assistant UUID, or\n- One of the registered graphs: {}",
                    graphs.join(", ")
                ))));
            }
        };
        let assistant = self
            .store
            .get_assistant(assistant_id)
            .await?
            .ok_or(ThreadError::NotFound(NotFound::ThreadOrAssistant))?;
        if !self.engines.serves(&assistant.graph_id) {
            return Err(ThreadError::NotFound(NotFound::GraphOfAssistant {
                graph_id: assistant.graph_id,
                assistant_id,
            }));
        }
        Ok(assistant)
    }

    /// Builds a run from a request; `thread_id: None` makes a stateless run on a new temporary
    /// thread.
    pub async fn prepare_run(
        &self,
        thread_id: Option<ThreadId>,
        request: RunRequest,
    ) -> Result<NewRun, ThreadError> {
        let assistant = self.resolve_assistant(&request.assistant_id).await?;
        let new_run = build_run(
            thread_id.unwrap_or_else(ThreadId::generate),
            request,
            &assistant,
            thread_id.is_none(),
        )?;
        let kwargs = &new_run.kwargs;
        if let Some(input) = &kwargs.input {
            self.check_client_tool_calls("input", input)?;
        }
        if let Some(update) = kwargs
            .command
            .as_ref()
            .and_then(|command| command.update.as_ref())
        {
            self.check_client_tool_calls("command.update", &Value::Object(update.clone()))?;
        }
        if let Some(engine) = self.engines.get(&new_run.graph_id) {
            engine
                .check_run(&new_run.graph_id, &new_run.kwargs)
                .map_err(ValidationError::Invalid)?;
        }
        Ok(new_run)
    }

    /// Hands a built run to its thread's actor, which applies its multitask strategy.
    pub async fn submit_run(
        &self,
        new_run: NewRun,
        reply: RunReply,
    ) -> Result<(RunAccepted, Addr<ThreadActor>), ThreadError> {
        self.accepting_runs()?;
        let thread_id = new_run.thread_id;
        let submit = SubmitRun { new_run, reply };
        let (accepted, thread) = self.command(thread_id, submit).await?;
        Ok((accepted?, thread))
    }

    /// A thread's checkpoints, with the engine that serves its graph if a run has assigned it
    /// one that is served (a thread no graph has run shows its stored state). `NotFound` for an
    /// unknown thread.
    async fn reader(
        &self,
        thread_id: ThreadId,
    ) -> Result<(Option<Arc<dyn Engine>>, Arc<dyn ThreadCheckpoints>), ThreadError> {
        let thread = self.store.get_thread(thread_id).await?;
        let engine = thread
            .metadata
            .get("graph_id")
            .and_then(Value::as_str)
            .and_then(|graph_id| self.engines.get(graph_id).cloned());
        let checkpoints = Arc::new(StoredCheckpoints {
            store: self.store.clone(),
            thread_id,
        });
        Ok((engine, checkpoints))
    }

    /// A thread's state at `at`, rendered by its graph's engine (`None`: no such checkpoint).
    pub async fn state(
        &self,
        thread_id: ThreadId,
        at: StateAt,
    ) -> Result<Option<Value>, ThreadError> {
        let state = match self.reader(thread_id).await? {
            (Some(engine), checkpoints) => engine.state(checkpoints, at),
            (None, checkpoints) => stored_state(checkpoints, at),
        };
        Ok(state.await?)
    }

    /// A thread's states, newest first, rendered by its graph's engine.
    pub async fn history(
        &self,
        thread_id: ThreadId,
        query: HistoryQuery,
    ) -> Result<Vec<Value>, ThreadError> {
        let history = match self.reader(thread_id).await? {
            (Some(engine), checkpoints) => engine.history(checkpoints, query),
            (None, checkpoints) => stored_history(checkpoints, query),
        };
        Ok(history.await?)
    }
}
