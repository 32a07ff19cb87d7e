-- 0002_run_attempts: how many times each run has been started, counting the resumes after a
-- crash; a run past `runtime.max_attempts` is marked `error` instead of started again.
ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
