//! Conformance checks of assistants and their versions: create, patch, pin a version, delete,
//! the system assistants, search and count with their filters, orders and pages, and the list of
//! versions.

use std::sync::Arc;

use serde_json::{json, Value};

use super::support::{
    assert_sorted_and_paged, conflict, new_thread, not_found, object, page, pause, sorted, wire,
};
use crate::domain::assistant::{AssistantChange, AssistantVersion};
use crate::domain::ids::AssistantId;
use crate::domain::query::{AssistantFilter, AssistantSortBy, Page, SortOrder};
use crate::domain::thread::IfExists;
use crate::domain::time::Timestamp;
use crate::domain::{AlreadyExists, JsonMap, NotFound};
use crate::storage::Store;

/// The first version of an assistant.
fn assistant(
    assistant_id: AssistantId,
    graph_id: &str,
    name: &str,
    created_at: &str,
    metadata: Value,
) -> AssistantVersion {
    AssistantVersion {
        assistant_id,
        graph_id: graph_id.into(),
        config: JsonMap::new(),
        context: JsonMap::new(),
        metadata: object(metadata),
        name: name.into(),
        created_at: Timestamp::parse(created_at).expect("a valid timestamp"),
        version: 1,
        description: None,
    }
}

/// A change of an assistant's metadata only.
fn metadata_change(metadata: Value) -> AssistantChange {
    AssistantChange {
        metadata: Some(object(metadata)),
        ..AssistantChange::default()
    }
}

/// How many assistants the store holds.
async fn assistant_count(store: &dyn Store) -> i64 {
    let everything = AssistantFilter::default();
    store.count_assistants(everything).await.expect("count")
}

/// The ids of a page of assistants matching `filter`.
async fn assistant_page(
    store: &dyn Store,
    filter: AssistantFilter,
    page: Page<AssistantSortBy>,
) -> Vec<AssistantId> {
    let found = store.search_assistants(filter, page).await.expect("search");
    found
        .iter()
        .map(|assistant| assistant.assistant_id)
        .collect()
}

/// The ids of every assistant matching `filter`, in id order; `count_assistants` must agree.
async fn matching_assistants(store: &dyn Store, filter: AssistantFilter) -> Vec<AssistantId> {
    let everything = page(AssistantSortBy::AssistantId, SortOrder::Asc, 100, 0);
    let found = assistant_page(store, filter.clone(), everything).await;
    let counted = store.count_assistants(filter).await.expect("count");
    assert_eq!(counted, found.len() as i64, "count and search agree");
    found
}

/// The version numbers `assistant_versions` returns.
async fn version_numbers(
    store: &dyn Store,
    assistant_id: AssistantId,
    metadata: Option<Value>,
    limit: i64,
    offset: i64,
) -> Vec<i64> {
    let versions = store
        .assistant_versions(assistant_id, metadata.map(object), limit, offset)
        .await
        .expect("versions");
    versions.iter().map(|version| version.version).collect()
}

/// When the first assistants of the suite were created.
const JANUARY_1: &str = "2020-01-01T00:00:00.000000+00:00";

/// Version 1 of a new `helper` assistant of the `agent` graph, created on January 1.
fn helper(metadata: Value) -> AssistantVersion {
    assistant(
        AssistantId::generate(),
        "agent",
        "helper",
        JANUARY_1,
        metadata,
    )
}

/// A new `helper` assistant with this metadata, created; returns its version 1.
async fn new_assistant(store: &dyn Store, metadata: Value) -> AssistantVersion {
    let first = helper(metadata);
    store
        .create_assistant(first.clone(), IfExists::Raise)
        .await
        .expect("created");
    first
}

/// The change that renames an assistant `renamed` and sets `stage: beta` in its metadata.
fn renaming() -> AssistantChange {
    AssistantChange {
        name: Some("renamed".into()),
        ..metadata_change(json!({ "stage": "beta" }))
    }
}

/// A new assistant is its version 1; its id taken, a create is a `Conflict`, or with
/// `do_nothing` answers the existing assistant unchanged.
pub async fn create_assistant_conflicts_unless_asked_to_do_nothing(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = helper(json!({ "team": "a" }));
    let assistant_id = first.assistant_id;
    assert_eq!(store.get_assistant(assistant_id).await.expect("read"), None);
    let created = store
        .create_assistant(first.clone(), IfExists::Raise)
        .await
        .expect("created");
    assert_eq!(created, first.clone().into_assistant(first.created_at));
    assert_eq!(
        store.get_assistant(assistant_id).await.expect("read"),
        Some(created.clone())
    );

    let rival = AssistantVersion {
        graph_id: "other".into(),
        name: "rival".into(),
        ..first
    };
    assert_eq!(
        conflict(store.create_assistant(rival.clone(), IfExists::Raise).await),
        AlreadyExists::Assistant(assistant_id)
    );
    let existing = store
        .create_assistant(rival, IfExists::DoNothing)
        .await
        .expect("the existing assistant");
    assert_eq!(existing, created);
    assert_eq!(
        store.get_assistant(assistant_id).await.expect("read"),
        Some(created)
    );
    assert_eq!(version_numbers(store, assistant_id, None, 10, 0).await, [1]);
    assert_eq!(assistant_count(store).await, 1);
}

/// A patch writes the next version from the current one: given fields replaced, metadata
/// merged, `created_at` kept; an unknown assistant is `NotFound(Assistant)`.
pub async fn patch_assistant_writes_the_next_version(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({ "team": "a" })).await;
    let assistant_id = first.assistant_id;
    let patched = store
        .patch_assistant(assistant_id, renaming())
        .await
        .expect("patched");
    assert_eq!(patched.version, 2);
    assert_eq!(patched.name, "renamed");
    assert_eq!(patched.graph_id, "agent");
    assert_eq!(
        patched.metadata,
        object(json!({ "team": "a", "stage": "beta" }))
    );
    assert_eq!(patched.created_at, first.created_at);
    assert!(patched.updated_at > first.created_at);
    let stored = store.get_assistant(assistant_id).await.expect("read");
    assert_eq!(wire(&stored), wire(&Some(patched)));

    let again = store
        .patch_assistant(assistant_id, metadata_change(json!({ "stage": "prod" })))
        .await
        .expect("patched");
    assert_eq!(again.version, 3);
    assert_eq!(again.name, "renamed");
    assert_eq!(
        again.metadata,
        object(json!({ "team": "a", "stage": "prod" }))
    );
    assert_eq!(
        version_numbers(store, assistant_id, None, 10, 0).await,
        [3, 2, 1]
    );

    let unknown = AssistantId::generate();
    assert_eq!(
        not_found(
            store
                .patch_assistant(unknown, AssistantChange::default())
                .await
        ),
        NotFound::Assistant(unknown)
    );
}

/// Setting a version points the assistant at a stored one without writing a new one; the next
/// patch builds on it and is numbered after the highest. An unknown version is
/// `NotFound(AssistantVersion)`, an unknown assistant `NotFound(Assistant)`.
pub async fn set_assistant_version_points_at_a_stored_version(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({ "team": "a" })).await;
    let assistant_id = first.assistant_id;
    store
        .patch_assistant(assistant_id, renaming())
        .await
        .expect("patched");

    let back = store
        .set_assistant_version(assistant_id, 1)
        .await
        .expect("set");
    assert_eq!(back.version, 1);
    assert_eq!(back.name, "helper");
    assert_eq!(back.metadata, first.metadata);
    assert_eq!(back.created_at, first.created_at);
    assert!(back.updated_at > first.created_at);
    let stored = store.get_assistant(assistant_id).await.expect("read");
    assert_eq!(wire(&stored), wire(&Some(back)));
    assert_eq!(
        version_numbers(store, assistant_id, None, 10, 0).await,
        [2, 1]
    );

    let forward = store
        .set_assistant_version(assistant_id, 2)
        .await
        .expect("set");
    assert_eq!((forward.version, forward.name.as_str()), (2, "renamed"));
    store
        .set_assistant_version(assistant_id, 1)
        .await
        .expect("set");
    let next = store
        .patch_assistant(assistant_id, metadata_change(json!({ "x": 1 })))
        .await
        .expect("patched");
    assert_eq!(next.version, 3);
    assert_eq!(next.name, "helper");
    assert_eq!(next.metadata, object(json!({ "team": "a", "x": 1 })));

    assert_eq!(
        not_found(store.set_assistant_version(assistant_id, 99).await),
        NotFound::AssistantVersion {
            assistant_id,
            version: 99
        }
    );
    let unknown = AssistantId::generate();
    assert_eq!(
        not_found(store.set_assistant_version(unknown, 1).await),
        NotFound::Assistant(unknown)
    );
}

/// Deleting an assistant deletes its versions (a new one of the same id starts at 1) but not
/// the threads that name it; an unknown assistant is `NotFound(AssistantToDelete)`.
pub async fn delete_assistant_removes_it_with_its_versions(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({})).await;
    let assistant_id = first.assistant_id;
    store
        .patch_assistant(assistant_id, metadata_change(json!({ "x": 1 })))
        .await
        .expect("patched");
    let thread_id = new_thread(store, json!({ "assistant_id": assistant_id })).await;

    store.delete_assistant(assistant_id).await.expect("deleted");
    assert_eq!(store.get_assistant(assistant_id).await.expect("read"), None);
    assert_eq!(
        version_numbers(store, assistant_id, None, 10, 0).await,
        Vec::<i64>::new()
    );
    assert_eq!(assistant_count(store).await, 0);
    assert_eq!(
        not_found(store.delete_assistant(assistant_id).await),
        NotFound::AssistantToDelete(assistant_id)
    );
    assert_eq!(
        not_found(
            store
                .patch_assistant(assistant_id, AssistantChange::default())
                .await
        ),
        NotFound::Assistant(assistant_id)
    );
    assert_eq!(
        not_found(store.set_assistant_version(assistant_id, 1).await),
        NotFound::Assistant(assistant_id)
    );
    assert_eq!(
        store
            .threads_of_assistant(assistant_id)
            .await
            .expect("threads"),
        vec![thread_id]
    );

    let again = store
        .create_assistant(first, IfExists::Raise)
        .await
        .expect("created again");
    assert_eq!(again.version, 1);
    assert_eq!(version_numbers(store, assistant_id, None, 10, 0).await, [1]);
}

/// Each graph without its system assistant gets one (version 1, named after the graph,
/// `created_by: system`); graphs that have one are skipped, so a second call creates none.
pub async fn ensure_system_assistants_creates_only_the_missing_ones(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let graphs = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
    let custom = assistant(
        AssistantId::for_graph("custom"),
        "custom",
        "mine",
        JANUARY_1,
        json!({}),
    );
    let custom = store
        .create_assistant(custom, IfExists::Raise)
        .await
        .expect("created");

    let ensure = |names| store.ensure_system_assistants(graphs(names));
    assert_eq!(ensure(&["agent", "other"]).await.expect("ensured"), 2);
    assert_eq!(ensure(&["agent", "other"]).await.expect("ensured"), 0);
    assert_eq!(
        ensure(&["agent", "third", "custom"])
            .await
            .expect("ensured"),
        1
    );
    assert_eq!(ensure(&[]).await.expect("ensured"), 0);
    assert_eq!(assistant_count(store).await, 4);

    let agent_id = AssistantId::for_graph("agent");
    let agent = store
        .get_assistant(agent_id)
        .await
        .expect("read")
        .expect("the system assistant");
    assert_eq!(agent.graph_id, "agent");
    assert_eq!(agent.name, "agent");
    assert_eq!(agent.version, 1);
    assert_eq!(agent.metadata, object(json!({ "created_by": "system" })));
    assert_eq!(agent.config, JsonMap::new());
    assert_eq!(agent.context, JsonMap::new());
    assert_eq!(agent.description, None);
    assert_eq!(agent.updated_at, agent.created_at);
    assert_eq!(version_numbers(store, agent_id, None, 10, 0).await, [1]);
    assert_eq!(
        store
            .get_assistant(custom.assistant_id)
            .await
            .expect("read"),
        Some(custom)
    );
}

/// Three assistants `[p, q, r]` with ids that sort `r, p, q`: `p` (graph `beta`, name `alpha
/// bot`, created 2020-01-03, `team: x`), `q` (`alpha`, `mid`, 2020-01-01, `team: x`), `r`
/// (`gamma`, `zeta helper`, 2020-01-02, `team: y`); then `r` and after it `q` patched
/// (`patched: 1`, `patched: 2`).
async fn three_assistants(store: &dyn Store) -> [AssistantId; 3] {
    let ids = sorted((0..3).map(|_| AssistantId::generate()).collect());
    let [r, p, q] = [ids[0], ids[1], ids[2]];
    let versions = [
        assistant(
            p,
            "beta",
            "alpha bot",
            "2020-01-03T00:00:00.000000+00:00",
            json!({ "team": "x" }),
        ),
        assistant(q, "alpha", "mid", JANUARY_1, json!({ "team": "x" })),
        assistant(
            r,
            "gamma",
            "zeta helper",
            "2020-01-02T00:00:00.000000+00:00",
            json!({ "team": "y" }),
        ),
    ];
    for version in versions {
        store
            .create_assistant(version, IfExists::Raise)
            .await
            .expect("created");
    }
    for (assistant_id, mark) in [(r, 1), (q, 2)] {
        pause().await;
        store
            .patch_assistant(assistant_id, metadata_change(json!({ "patched": mark })))
            .await
            .expect("patched");
    }
    [p, q, r]
}

/// Each filter of assistant search (and count) selects exactly its assistants: metadata,
/// graph, a case-insensitive part of the name; filters combine.
pub async fn search_assistants_filters_by_metadata_graph_and_name(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let [p, q, r] = three_assistants(store).await;
    let by_metadata = |metadata: Value| AssistantFilter {
        metadata: Some(object(metadata)),
        ..AssistantFilter::default()
    };
    let by_graph = |graph_id: &str| AssistantFilter {
        graph_id: Some(graph_id.into()),
        ..AssistantFilter::default()
    };
    let by_name = |name: &str| AssistantFilter {
        name: Some(name.into()),
        ..AssistantFilter::default()
    };
    let cases = [
        (AssistantFilter::default(), sorted(vec![p, q, r])),
        (by_metadata(json!({ "team": "x" })), sorted(vec![p, q])),
        (by_metadata(json!({ "patched": 2 })), vec![q]),
        (by_metadata(json!({ "team": "y", "patched": 1 })), vec![r]),
        (by_metadata(json!({ "team": "z" })), vec![]),
        (by_graph("beta"), vec![p]),
        (by_graph("delta"), vec![]),
        (by_name("BOT"), vec![p]),
        (by_name("e"), vec![r]),
        (by_name("A"), sorted(vec![p, r])),
        (by_name("zz"), vec![]),
        (
            AssistantFilter {
                name: Some("a".into()),
                ..by_metadata(json!({ "team": "x" }))
            },
            vec![p],
        ),
        (
            AssistantFilter {
                graph_id: Some("alpha".into()),
                ..by_name("MID")
            },
            vec![q],
        ),
    ];
    for (filter, expected) in cases {
        let described = format!("{filter:?}");
        assert_eq!(
            matching_assistants(store, filter).await,
            expected,
            "{described}"
        );
    }
}

/// Assistant search sorts by each key in both orders and pages.
pub async fn search_assistants_sorts_by_every_key_both_ways_and_pages(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let [p, q, r] = three_assistants(store).await;
    let expected = vec![
        (AssistantSortBy::AssistantId, vec![r, p, q]),
        (AssistantSortBy::GraphId, vec![q, p, r]),
        (AssistantSortBy::Name, vec![p, q, r]),
        (AssistantSortBy::CreatedAt, vec![q, r, p]),
        (AssistantSortBy::UpdatedAt, vec![p, r, q]),
    ];
    assert_sorted_and_paged(expected, |page| {
        assistant_page(store, AssistantFilter::default(), page)
    })
    .await;
}

/// An assistant's versions come newest first, page, and filter by their metadata; an unknown
/// assistant has none.
pub async fn assistant_versions_are_newest_first_and_filter_by_metadata(store: Arc<dyn Store>) {
    let store: &dyn Store = &*store;
    let first = new_assistant(store, json!({ "team": "x" })).await;
    let assistant_id = first.assistant_id;
    for stage in ["beta", "prod"] {
        store
            .patch_assistant(assistant_id, metadata_change(json!({ "stage": stage })))
            .await
            .expect("patched");
    }
    let cases = [
        (None, 10, 0, vec![3, 2, 1]),
        (None, 1, 1, vec![2]),
        (None, 10, 3, vec![]),
        (Some(json!({ "stage": "beta" })), 10, 0, vec![2]),
        (Some(json!({ "team": "x" })), 10, 0, vec![3, 2, 1]),
        (
            Some(json!({ "team": "x", "stage": "prod" })),
            10,
            0,
            vec![3],
        ),
        (Some(json!({ "stage": "none" })), 10, 0, vec![]),
    ];
    for (metadata, limit, offset, expected) in cases {
        let described = format!("{metadata:?} limit {limit} offset {offset}");
        assert_eq!(
            version_numbers(store, assistant_id, metadata, limit, offset).await,
            expected,
            "{described}"
        );
    }
    let versions = store
        .assistant_versions(assistant_id, None, 10, 0)
        .await
        .expect("versions");
    assert_eq!(versions[2], first);
    assert_eq!(
        versions[0].metadata,
        object(json!({ "team": "x", "stage": "prod" }))
    );
    assert_eq!(
        (versions[0].assistant_id, versions[0].name.as_str()),
        (assistant_id, "helper")
    );
    let unknown = AssistantId::generate();
    assert_eq!(
        version_numbers(store, unknown, None, 10, 0).await,
        Vec::<i64>::new()
    );
}
