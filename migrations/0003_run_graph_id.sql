-- 0003_run_graph_id: the graph a run executes, in a column of its own (before, only the run's
-- metadata named it).
ALTER TABLE runs ADD COLUMN graph_id TEXT NOT NULL DEFAULT '';
UPDATE runs SET graph_id = COALESCE(json_extract(metadata, '$.graph_id'), '');
