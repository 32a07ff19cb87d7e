-- 0001_init: the first schema of Spindle.
-- Ids are hyphenated UUID text; JSON payloads are TEXT; timestamps are ISO-8601 UTC text with
-- microseconds and a fixed width, so text order is time order.

CREATE TABLE assistants (
    assistant_id TEXT PRIMARY KEY,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL,   -- JSON object
    context      TEXT NOT NULL,   -- JSON object
    metadata     TEXT NOT NULL,   -- JSON object
    version      INTEGER NOT NULL, -- the version the assistant currently points at
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- Every version ever written; PATCH adds one, /latest moves `assistants.version` between them.
CREATE TABLE assistant_versions (
    assistant_id TEXT NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL,
    context      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (assistant_id, version)
);

CREATE TABLE threads (
    thread_id        TEXT PRIMARY KEY,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    state_updated_at TEXT NOT NULL,
    metadata         TEXT NOT NULL,   -- JSON object
    status           TEXT NOT NULL CHECK (status IN ('idle', 'busy', 'interrupted', 'error')),
    config           TEXT NOT NULL,   -- JSON object
    "values"         TEXT,            -- JSON copy of the latest checkpoint's values; NULL until a run ends
    interrupts       TEXT NOT NULL DEFAULT '{}',
    error            TEXT             -- JSON {"error", "message"} of the last failed run
);
CREATE INDEX threads_updated_at ON threads (updated_at);

CREATE TABLE runs (
    run_id             TEXT PRIMARY KEY,
    thread_id          TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
    assistant_id       TEXT NOT NULL,
    status             TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'interrupted')),
    metadata           TEXT NOT NULL,  -- JSON object
    kwargs             TEXT NOT NULL,  -- JSON object: input, config, context, stream_mode, ...
    multitask_strategy TEXT NOT NULL
        CHECK (multitask_strategy IN ('reject', 'rollback', 'interrupt', 'enqueue')),
    error              TEXT,           -- JSON {"error", "message"} when status is 'error'
    created_at         TEXT NOT NULL,  -- includes after_seconds: runs of a thread start in this order
    updated_at         TEXT NOT NULL
);
CREATE INDEX runs_thread_created ON runs (thread_id, created_at, run_id);
CREATE INDEX runs_in_flight ON runs (status) WHERE status IN ('pending', 'running');

-- A checkpoint belongs to the run that wrote it (run_id NULL for state updates and copies).
-- Deleting a run deletes its checkpoints and their pending writes by cascade: no checkpoint can
-- outlive a rolled-back run.
CREATE TABLE checkpoints (
    thread_id            TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
    checkpoint_ns        TEXT NOT NULL,
    checkpoint_id        TEXT NOT NULL,   -- time-ordered: the greatest id is the thread's head
    parent_checkpoint_id TEXT,
    run_id               TEXT REFERENCES runs (run_id) ON DELETE CASCADE,
    step                 INTEGER NOT NULL,
    source               TEXT NOT NULL CHECK (source IN ('input', 'loop', 'update', 'fork')),
    "values"             TEXT NOT NULL,   -- JSON object
    next                 TEXT NOT NULL,   -- JSON array of node names
    tasks                TEXT NOT NULL,   -- JSON array of {id, name, error?, result?}
    metadata             TEXT NOT NULL,   -- JSON object
    updated_by           TEXT NOT NULL,   -- JSON array: nodes whose writes produced it
    created_at           TEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX checkpoints_run ON checkpoints (run_id);

-- Writes of tasks that finished in a superstep that did not complete.
CREATE TABLE checkpoint_writes (
    thread_id     TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    value         TEXT NOT NULL,   -- JSON
    run_id        TEXT REFERENCES runs (run_id) ON DELETE CASCADE,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx),
    FOREIGN KEY (thread_id, checkpoint_ns, checkpoint_id)
        REFERENCES checkpoints (thread_id, checkpoint_ns, checkpoint_id) ON DELETE CASCADE
);
CREATE INDEX checkpoint_writes_run ON checkpoint_writes (run_id);
