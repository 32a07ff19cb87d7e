//! Tasks of a superstep: their deterministic ids, the pending tasks a checkpoint records, what
//! pending tasks carry over from an earlier checkpoint, and the ids of their interrupts.

use crate::domain::checkpoint::TaskRecord;
use crate::domain::ids::{task_id, CheckpointId};

/// The tasks pending at a checkpoint: one per node of `next`, with deterministic ids.
pub(super) fn pending_tasks(
    checkpoint_id: &CheckpointId,
    step: i64,
    next: &[String],
) -> Vec<TaskRecord> {
    task_ids(checkpoint_id, step + 1, next)
        .into_iter()
        .zip(next)
        .map(|(id, name)| TaskRecord {
            id,
            name: name.clone(),
            error: None,
            result: None,
            interrupts: vec![],
            send: None,
        })
        .collect()
}

/// The ids of the tasks of superstep `step` run from `checkpoint_id`: a node that `Send`s
/// trigger more than once gets a distinct id per task.
pub(super) fn task_ids(
    checkpoint_id: &CheckpointId,
    step: i64,
    next: &[String],
) -> Vec<uuid::Uuid> {
    next.iter()
        .enumerate()
        .map(|(index, name)| {
            match next[..index]
                .iter()
                .filter(|earlier| *earlier == name)
                .count()
            {
                0 => task_id(checkpoint_id, step, name),
                repeat => task_id(checkpoint_id, step, &format!("{name}#{repeat}")),
            }
        })
        .collect()
}

/// Copies what pending tasks carry (their `Send` input, and with `results` the result of a task
/// that completed) from the same tasks at an earlier checkpoint, matched by position.
pub(super) fn carry_over(tasks: &mut [TaskRecord], earlier: &[TaskRecord], results: bool) {
    for (task, old) in tasks.iter_mut().zip(earlier) {
        if task.name == old.name {
            task.send = old.send.clone();
            if results {
                task.result = old.result.clone();
            }
        }
    }
}

/// The interrupt id of a task's interrupt.
pub(super) fn interrupt_id(task: &uuid::Uuid) -> String {
    uuid::Uuid::new_v5(task, b"interrupt").simple().to_string()
}
