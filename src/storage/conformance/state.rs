//! Conformance checks of state and checkpoints: a state update, the head, one checkpoint by
//! namespace and id, and the history with its pages and filters.

use std::sync::Arc;

use serde_json::json;

use super::support::{
    asking, every, failed_run, history_ids, new_thread, not_found, object, pause, thread_of, update,
};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{CheckpointId, ThreadId};
use crate::domain::query::HistoryQuery;
use crate::domain::thread::ThreadStatus;
use crate::domain::{JsonMap, NotFound};
use crate::storage::Store;

/// A state update writes its checkpoint and settles the thread on it: its values and pending
/// interrupts, idle or interrupted, any error cleared.
pub async fn update_state_writes_a_checkpoint_and_settles_the_thread_on_it(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    failed_run(store, thread_id).await;
    let before = thread_of(store, thread_id).await;
    pause().await;

    let state = update(thread_id, json!({ "topic": "x" }));
    store.update_state(state.clone()).await.expect("updated");
    assert_eq!(
        store.head(thread_id).await.expect("head"),
        Some(state.clone())
    );
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Idle);
    assert_eq!(thread.values, Some(json!({ "topic": "x" })));
    assert_eq!(thread.error, None);
    assert_eq!(thread.interrupts, JsonMap::new());
    assert!(thread.state_updated_at > before.state_updated_at);
    assert!(thread.updated_at > before.updated_at);

    let asking = asking();
    let paused = Checkpoint {
        next: vec!["ask".into()],
        tasks: vec![asking],
        ..update(thread_id, json!({ "topic": "y" }))
    };
    store.update_state(paused.clone()).await.expect("updated");
    let thread = thread_of(store, thread_id).await;
    assert_eq!(thread.status, ThreadStatus::Interrupted);
    assert_eq!(thread.values, Some(json!({ "topic": "y" })));
    assert_eq!(thread.interrupts, paused.interrupts_by_task());
    assert_eq!(thread.interrupts.len(), 1);
    assert_eq!(
        store.history(thread_id, every("")).await.expect("history"),
        vec![paused, state]
    );
}

/// The head is the root checkpoint with the greatest id (ids are time-ordered), whatever the
/// order of writing and however new a subgraph checkpoint is; `None` before any, `NotFound`
/// for an unknown thread.
pub async fn head_is_the_root_checkpoint_with_the_greatest_id(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(store.head(unknown).await),
        NotFound::Thread(unknown)
    );
    let thread_id = new_thread(store, json!({})).await;
    assert_eq!(store.head(thread_id).await.expect("head"), None);

    let (older, newer) = (CheckpointId::generate(), CheckpointId::generate());
    let newest = Checkpoint {
        checkpoint_id: newer,
        ..update(thread_id, json!({ "n": 2 }))
    };
    let oldest = Checkpoint {
        checkpoint_id: older,
        ..update(thread_id, json!({ "n": 1 }))
    };
    store.update_state(newest.clone()).await.expect("updated");
    store.update_state(oldest).await.expect("updated");
    let inner = Checkpoint {
        checkpoint_ns: "inner:task".into(),
        ..update(thread_id, json!({ "sub": 1 }))
    };
    store.update_state(inner).await.expect("updated");
    assert_eq!(store.head(thread_id).await.expect("head"), Some(newest));
    assert_eq!(
        thread_of(store, thread_id).await.values,
        Some(json!({ "n": 2 }))
    );
}

/// One checkpoint is read by thread, namespace and id; anything else is `None`, and an unknown
/// thread is `NotFound`.
pub async fn checkpoint_reads_one_checkpoint_by_namespace_and_id(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let root = update(thread_id, json!({ "n": 1 }));
    let inner = Checkpoint {
        checkpoint_ns: "inner:task".into(),
        ..update(thread_id, json!({ "sub": 1 }))
    };
    for written in [&root, &inner] {
        store.update_state(written.clone()).await.expect("updated");
    }
    let elsewhere = new_thread(store, json!({})).await;
    let read = |thread_id, namespace: &str, checkpoint_id| {
        store.checkpoint(thread_id, namespace.into(), checkpoint_id)
    };
    let cases = [
        (thread_id, "", root.checkpoint_id, Some(&root)),
        (thread_id, "inner:task", inner.checkpoint_id, Some(&inner)),
        (thread_id, "", inner.checkpoint_id, None),
        (thread_id, "inner:task", root.checkpoint_id, None),
        (thread_id, "", CheckpointId::generate(), None),
        (elsewhere, "", root.checkpoint_id, None),
    ];
    for (thread_id, namespace, checkpoint_id, expected) in cases {
        assert_eq!(
            read(thread_id, namespace, checkpoint_id)
                .await
                .expect("read"),
            expected.cloned(),
            "{namespace:?} {checkpoint_id}"
        );
    }
    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(read(unknown, "", root.checkpoint_id).await),
        NotFound::Thread(unknown)
    );
}

/// History lists one namespace newest first, and narrows by `limit`, `before`, `metadata` and
/// `checkpoint_id`, which combine; an unknown thread is `NotFound`.
pub async fn history_pages_newest_first_with_its_filters(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let thread_id = new_thread(store, json!({})).await;
    let mut roots = Vec::new();
    for step in 1..=4 {
        let parity = if step % 2 == 0 { "even" } else { "odd" };
        let state = Checkpoint {
            step,
            metadata: object(json!({ "step": step, "parity": parity })),
            ..update(thread_id, json!({ "n": step }))
        };
        store.update_state(state.clone()).await.expect("updated");
        roots.push(state);
    }
    let mut inner = Vec::new();
    for n in 1..=2 {
        let state = Checkpoint {
            checkpoint_ns: "inner:task".into(),
            ..update(thread_id, json!({ "sub": n }))
        };
        store.update_state(state.clone()).await.expect("updated");
        inner.push(state.checkpoint_id);
    }
    let [c1, c2, c3, c4] = [0, 1, 2, 3].map(|index| roots[index].checkpoint_id);
    let [s1, s2] = [inner[0], inner[1]];

    roots.reverse();
    assert_eq!(
        store.history(thread_id, every("")).await.expect("history"),
        roots
    );
    let root = every("");
    let cases = [
        (
            HistoryQuery {
                limit: 2,
                ..root.clone()
            },
            vec![c4, c3],
        ),
        (
            HistoryQuery {
                before: Some(c3),
                ..root.clone()
            },
            vec![c2, c1],
        ),
        (
            HistoryQuery {
                before: Some(c3),
                limit: 1,
                ..root.clone()
            },
            vec![c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "even" }))),
                ..root.clone()
            },
            vec![c4, c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "even", "step": 2 }))),
                ..root.clone()
            },
            vec![c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "even" }))),
                before: Some(c4),
                ..root.clone()
            },
            vec![c2],
        ),
        (
            HistoryQuery {
                metadata: Some(object(json!({ "parity": "none" }))),
                ..root.clone()
            },
            vec![],
        ),
        (
            HistoryQuery {
                checkpoint_id: Some(c3),
                ..root.clone()
            },
            vec![c3],
        ),
        (
            HistoryQuery {
                checkpoint_id: Some(s1),
                ..root.clone()
            },
            vec![],
        ),
        (every("inner:task"), vec![s2, s1]),
        (
            HistoryQuery {
                before: Some(s2),
                ..every("inner:task")
            },
            vec![s1],
        ),
        (every("elsewhere"), vec![]),
    ];
    for (query, expected) in cases {
        let described = format!("{query:?}");
        assert_eq!(
            history_ids(store, thread_id, query).await,
            expected,
            "{described}"
        );
    }
    let unknown = ThreadId::generate();
    assert_eq!(
        not_found(store.history(unknown, every("")).await),
        NotFound::Thread(unknown)
    );
}
