//! Where a run starts, without IO: `begin` computes the checkpoints written before the first
//! node (input, fork, or a `command`'s update and goto) and resolves resume values against the
//! pending interrupts; `recover` continues a run left `running` from its latest checkpoint.

use std::collections::HashMap;

use serde_json::Value;

use super::plan::{cursor_of, Begin, Finish, RunPlan};
use super::tasks::carry_over;
use crate::domain::checkpoint::{Checkpoint, CheckpointSource, Interrupt, TaskRecord};
use crate::domain::command::Command;
use crate::domain::run::RunError;
use crate::engine::toml::graph::START;

const MULTIPLE_INTERRUPTS: &str = "When there are multiple pending interrupts, you must specify the interrupt id when resuming. Docs: https://docs.langchain.com/oss/python/langgraph/add-human-in-the-loop#resume-multiple-interrupts-with-one-invocation";

/// Which task each resume value goes to (by position: several tasks of one node, started by
/// Sends, are answered one by one): a bare value answers the only pending interrupt;
/// `{interrupt_id: value, …}` answers those named.
fn resume_by_task(resume: &Value, tasks: &[TaskRecord]) -> Result<HashMap<usize, Value>, RunError> {
    let pending: Vec<(usize, &Interrupt)> = tasks
        .iter()
        .enumerate()
        .flat_map(|(index, task)| {
            task.interrupts
                .iter()
                .map(move |interrupt| (index, interrupt))
        })
        .collect();
    if pending.is_empty() {
        return Err(RunError::new(
            "ValueError",
            "There is no pending interrupt to resume on this thread",
        ));
    }
    let by_id = resume.as_object().filter(|map| {
        !map.is_empty()
            && map
                .keys()
                .all(|key| pending.iter().any(|(_, interrupt)| interrupt.id == *key))
    });
    match (by_id, pending.as_slice()) {
        (Some(map), _) => Ok(pending
            .iter()
            .filter_map(|(index, interrupt)| {
                map.get(&interrupt.id).map(|value| (*index, value.clone()))
            })
            .collect()),
        (None, [(index, _)]) => Ok(HashMap::from([(*index, resume.clone())])),
        (None, _) => Err(RunError::new("RuntimeError", MULTIPLE_INTERRUPTS)),
    }
}

/// Computes what a run writes before its first node: with input, an `input` checkpoint (the
/// `__start__` task pending) and the `loop` checkpoint with the input applied; without input, a
/// `fork` copy when starting from an older checkpoint, or nothing. `base` is the checkpoint to start
/// from: the thread's latest, or the one the run names (`fork` true).
pub fn begin(plan: &RunPlan, base: Option<&Checkpoint>, fork: bool) -> Result<Begin, RunError> {
    if let Some(command) = &plan.command {
        return begin_command(plan, command, base);
    }
    let input = plan.input.as_ref().filter(|input| !input.is_null());
    match (input, base) {
        (Some(input), base) => {
            let Value::Object(update) = input else {
                return Err(RunError::new(
                    "InvalidUpdateError",
                    format!("Expected dict as graph input, got {input}"),
                ));
            };
            let (parent, step, mut values) = match base {
                Some(base) => (Some(base.checkpoint_id), base.step + 1, base.values.clone()),
                None => (None, -1, plan.graph.initial_values()),
            };
            let mut input_checkpoint = plan.checkpoint(
                parent,
                step,
                CheckpointSource::Input,
                values.clone(),
                vec![START.into()],
                vec![],
            );
            // On an input checkpoint the pending `__start__` task's result is the run input.
            input_checkpoint.tasks[0].result = Some(input.clone());
            plan.graph.apply_updates(&mut values, &[update])?;
            let next = plan.graph.next_after(&[START.into()], &values);
            let start_checkpoint = plan.checkpoint(
                Some(input_checkpoint.checkpoint_id),
                step + 1,
                CheckpointSource::Loop,
                values.clone(),
                next,
                vec![START.into()],
            );
            Ok(Begin {
                cursor: cursor_of(&start_checkpoint),
                checkpoints: vec![input_checkpoint, start_checkpoint],
                resuming: false,
            })
        }
        (None, Some(base)) if fork => {
            let mut copy = plan.checkpoint(
                Some(base.checkpoint_id),
                base.step + 1,
                CheckpointSource::Fork,
                base.values.clone(),
                base.next.clone(),
                base.updated_by.clone(),
            );
            carry_over(&mut copy.tasks, &base.tasks, false);
            Ok(Begin {
                cursor: cursor_of(&copy),
                checkpoints: vec![copy],
                resuming: true,
            })
        }
        (None, Some(base)) => Ok(Begin {
            cursor: cursor_of(base),
            checkpoints: vec![],
            resuming: true,
        }),
        (None, None) => Err(RunError::new(
            "EmptyInputError",
            "Received no input for __start__ and the thread has no checkpoint to continue from",
        )),
    }
}

/// Where a run left `running` by a crash continues, given `head`, the thread's latest checkpoint,
/// which this run wrote. It goes on as it would have: from a checkpoint written when it began
/// (a `fork` copy or a command's `input`) without firing the breakpoints before those nodes
/// again; from one written after a superstep with them, or it ends there at once when that
/// superstep's nodes are in `interrupt_after` (`Err(finish)`).
pub fn recover(plan: &RunPlan, head: &Checkpoint) -> Result<Begin, Finish> {
    let mut cursor = cursor_of(head);
    let began_here = matches!(
        head.source,
        CheckpointSource::Fork | CheckpointSource::Input
    );
    if began_here {
        // A command's resume values had not been used yet: answer the same interrupts again.
        if let Some(resume) = plan
            .command
            .as_ref()
            .and_then(|command| command.resume.as_ref())
        {
            cursor.resume = resume_by_task(resume, &head.tasks).unwrap_or_default();
        }
    } else if !cursor.next.is_empty() && RunPlan::breaks(&plan.interrupt_after, &head.updated_by) {
        return Err(Finish {
            values: cursor.values,
            next: cursor.next,
            interrupts: vec![],
        });
    }
    Ok(Begin {
        checkpoints: vec![],
        cursor,
        resuming: began_here,
    })
}

/// Starts from a `command`: resume values resolved against the base's pending interrupts, then
/// `update` and `goto` (if any) written as one `input` checkpoint before the first step.
fn begin_command(
    plan: &RunPlan,
    command: &Command,
    base: Option<&Checkpoint>,
) -> Result<Begin, RunError> {
    let Some(base) = base else {
        return Err(RunError::new(
            "EmptyInputError",
            "A command needs a thread with a checkpoint to continue from",
        ));
    };
    let resume = match &command.resume {
        Some(resume) => resume_by_task(resume, &base.tasks)?,
        None => HashMap::new(),
    };
    if command.update.is_none() && command.goto.is_empty() {
        let mut cursor = cursor_of(base);
        cursor.resume = resume;
        return Ok(Begin {
            cursor,
            checkpoints: vec![],
            resuming: true,
        });
    }
    let mut values = base.values.clone();
    if let Some(update) = &command.update {
        plan.graph.apply_updates(&mut values, &[update])?;
    }
    let next = if command.goto.is_empty() {
        base.next.clone()
    } else {
        command.goto.iter().map(|goto| goto.node.clone()).collect()
    };
    let mut checkpoint = plan.checkpoint(
        Some(base.checkpoint_id),
        base.step + 1,
        CheckpointSource::Input,
        values,
        next,
        base.updated_by.clone(),
    );
    // Without `goto` the same nodes stay pending: the results of those that completed in an
    // interrupted superstep carry over. Nodes named by `goto` always run.
    if command.goto.is_empty() {
        carry_over(&mut checkpoint.tasks, &base.tasks, true);
    } else {
        for (task, goto) in checkpoint.tasks.iter_mut().zip(&command.goto) {
            task.send = goto.send.clone().map(Value::Object);
        }
    }
    let mut cursor = cursor_of(&checkpoint);
    cursor.resume = if command.goto.is_empty() {
        resume
    } else {
        // The pending tasks changed: a resume value goes to the first new task of its node.
        let mut moved = HashMap::new();
        for (index, value) in resume {
            let name = &base.tasks[index].name;
            if let Some(position) = (0..checkpoint.tasks.len()).find(|position| {
                checkpoint.tasks[*position].name == *name && !moved.contains_key(position)
            }) {
                moved.insert(position, value);
            }
        }
        moved
    };
    Ok(Begin {
        cursor,
        checkpoints: vec![checkpoint],
        resuming: true,
    })
}
