-- kvweave results store, schema version 1 (ARCHITECTURE.md section 6).
-- Migrations are forward-only: a later change is a new file 0002_<what>.sql; this one is
-- never edited once released. The build embeds every file of this folder listed in
-- store/meson.build; the store applies the missing ones in order, all in one
-- transaction, and records each in schema_migrations and PRAGMA user_version.
-- Times are seconds since the Unix epoch (REAL).

CREATE TABLE runs (
    uuid           TEXT PRIMARY KEY NOT NULL,
    parent         TEXT,                -- the sweep's parent run (no foreign key: shards
                                        -- may bring a cell before its parent)
    pipeline       TEXT NOT NULL,
    yaml           TEXT,
    yaml_sha256    TEXT,
    cell_label     TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'RUNNING'
                   CHECK (status IN ('RUNNING', 'FINISHED', 'FAILED', 'KILLED')),
    start_time     REAL NOT NULL,
    end_time       REAL,
    kw_version     TEXT,
    git_commit     TEXT,
    host           TEXT,
    cpu            TEXT,
    gpu            TEXT,
    cuda           TEXT,
    model_id       TEXT,
    model_sha256   TEXT,
    dataset_id     TEXT,
    dataset_sha256 TEXT,
    device         TEXT,
    seed           INTEGER
);
CREATE INDEX runs_start ON runs (start_time);
CREATE INDEX runs_pipeline ON runs (pipeline, start_time);
CREATE INDEX runs_resume ON runs (yaml_sha256, cell_label, start_time);
CREATE INDEX runs_parent ON runs (parent);

CREATE TABLE params (
    run   TEXT NOT NULL REFERENCES runs (uuid) ON DELETE CASCADE,
    key   TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (run, key)
);

-- sample NULL: a run-level metric. One value per (run, sample, key, step): writing it
-- again replaces it, so a resumed sample does not leave a stale duplicate.
CREATE TABLE metrics (
    run       TEXT NOT NULL REFERENCES runs (uuid) ON DELETE CASCADE,
    sample    INTEGER,
    key       TEXT NOT NULL,
    value     REAL,
    step      INTEGER NOT NULL DEFAULT 0,
    timestamp REAL NOT NULL
);
CREATE UNIQUE INDEX metrics_one ON metrics (run, coalesce(sample, -1), key, step);
CREATE INDEX metrics_sample ON metrics (run, sample, key);
CREATE INDEX metrics_key ON metrics (key);

CREATE TABLE samples (
    run        TEXT NOT NULL REFERENCES runs (uuid) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    sample_id  TEXT,
    input_hash TEXT,
    prediction TEXT,
    answers    TEXT,                    -- JSON array
    status     TEXT NOT NULL CHECK (status IN ('FINISHED', 'FAILED')),
    error      TEXT,
    PRIMARY KEY (run, idx)
);
CREATE INDEX samples_status ON samples (run, status);

-- stage '*': the totals of one lane for the whole run.
CREATE TABLE stages (
    run        TEXT NOT NULL REFERENCES runs (uuid) ON DELETE CASCADE,
    stage      TEXT NOT NULL,
    lane       TEXT NOT NULL,
    tasks      INTEGER NOT NULL DEFAULT 0,
    busy_s     REAL NOT NULL DEFAULT 0,
    wait_s     REAL NOT NULL DEFAULT 0,
    peak_bytes INTEGER,
    PRIMARY KEY (run, stage, lane)
);

CREATE TABLE artifacts (
    run    TEXT NOT NULL REFERENCES runs (uuid) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    path   TEXT NOT NULL,
    PRIMARY KEY (run, name)
);
CREATE INDEX artifacts_sha ON artifacts (sha256);

-- Stage-output cache: key = sha256 of everything that shapes the output; the blob lives
-- at path (under $KVWEAVE_HOME/cache), bytes long, with content hash sha256.
CREATE TABLE cache (
    key     TEXT PRIMARY KEY NOT NULL,
    what    TEXT,
    path    TEXT NOT NULL,
    bytes   INTEGER NOT NULL,
    sha256  TEXT NOT NULL,
    created REAL NOT NULL
);
