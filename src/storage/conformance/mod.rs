//! The conformance suite of `Store`: what every storage backend must do, written against the
//! trait only, so a second backend runs it unchanged. A backend's tests call
//! `store_conformance_suite!(open)` with an async `open()` that returns a guard (kept alive for
//! the test) and a fresh, empty store; every check becomes one `#[tokio::test]`. The checks cover
//! every method of the trait, one file an area; `support` holds what they share. Every check
//! but the assistants' starts with the system assistants of graphs `agent` and `other`, whose
//! runs the fixtures insert (a run needs its assistant).

mod assistants;
mod ordering;
mod retention;
mod run_reads;
mod runs;
mod state;
mod support;
mod threads;

pub use assistants::*;
pub use ordering::*;
pub use retention::*;
pub use run_reads::*;
pub use runs::*;
pub use state::*;
pub use support::{checkpoint, now, object, run, update, with_run_assistants};
pub use threads::*;

/// Generates one `#[tokio::test]` per conformance check, each on a store from `$open`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($open:path) => {
        $crate::store_conformance_suite!(@checks $open;
            // the write-ordering contract
            a_write_is_queued_when_it_is_called,
            a_write_is_visible_to_the_read_that_follows_its_ok,
            a_failed_job_in_a_batch_leaves_the_others_committed,
            a_failed_write_leaves_nothing_behind,
            // threads
            create_thread_conflicts_unless_asked_to_do_nothing,
            patch_thread_merges_metadata_shallowly,
            copy_thread_copies_the_checkpoints_but_not_the_runs,
            delete_thread_takes_its_runs_and_checkpoints_with_it,
            search_threads_filters_by_ids_metadata_values_and_status,
            search_threads_matches_keys_with_quotes_backslashes_and_path_characters,
            search_threads_sorts_by_every_key_both_ways_and_pages,
            threads_of_assistant_are_those_whose_metadata_names_it,
            threads_in_flight_are_those_with_a_pending_or_running_run,
            settle_stranded_threads_settles_busy_threads_with_no_run_in_flight,
            // the run life cycle
            insert_run_stores_a_pending_run_and_marks_the_thread_busy,
            insert_run_creates_a_missing_thread_only_when_asked_to,
            start_run_begins_attempt_one_with_its_checkpoints_and_only_once,
            save_checkpoint_is_fenced_unless_the_run_is_running_in_that_attempt,
            finish_run_stores_the_end_and_settles_the_thread,
            settle_thread_recomputes_the_status_and_values_from_the_head,
            stop_runs_counts_only_the_threads_runs_in_flight_and_settles_it,
            delete_run_removes_a_run_of_any_status_with_its_checkpoints,
            release_run_changes_only_a_running_run,
            a_resumed_attempt_fences_the_writes_of_the_one_before_and_a_release_gives_it_back,
            rollback_deletes_the_run_and_its_checkpoints_and_fences_its_writes,
            interrupt_keeps_checkpoints_and_fences_later_writes,
            insert_run_refuses_a_run_whose_assistant_is_gone,
            // reading runs
            get_run_finds_a_run_only_on_its_own_thread,
            run_result_has_the_values_and_interrupts_of_the_runs_last_root_checkpoint,
            list_runs_pages_newest_first_and_filters_by_status,
            in_flight_runs_are_in_start_order_with_their_attempts,
            runs_with_status_lists_matching_runs_of_every_thread_oldest_first,
            // state
            update_state_writes_a_checkpoint_and_settles_the_thread_on_it,
            head_is_the_root_checkpoint_with_the_greatest_id,
            checkpoint_reads_one_checkpoint_by_namespace_and_id,
            history_pages_newest_first_with_its_filters,
            // retention
            sweep_deletes_only_threads_idle_since_before_the_cutoff,
            sweep_keep_latest_prunes_old_checkpoints_but_keeps_the_head_and_the_state,
            prune_threads_skips_unknown_and_busy_threads_without_counting_them;
            // assistants, on a store without any
            bare
            create_assistant_conflicts_unless_asked_to_do_nothing,
            patch_assistant_writes_the_next_version,
            set_assistant_version_points_at_a_stored_version,
            delete_assistant_removes_it_with_its_versions,
            ensure_system_assistants_creates_only_the_missing_ones,
            search_assistants_filters_by_metadata_graph_and_name,
            search_assistants_sorts_by_every_key_both_ways_and_pages,
            assistant_versions_are_newest_first_and_filter_by_metadata
        );
    };
    (@checks $open:path; $($check:ident),* ; bare $($bare:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, store) = $open().await;
                $crate::storage::conformance::with_run_assistants(&*store).await;
                $crate::storage::conformance::$check(store).await;
            }
        )*
        $(
            #[tokio::test]
            async fn $bare() {
                let (_guard, store) = $open().await;
                $crate::storage::conformance::$bare(store).await;
            }
        )*
    };
}
