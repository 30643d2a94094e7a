import GRDB

/// The database schema, as a list of named migrations.
///
/// A migration never changes once it has shipped: later changes are new
/// migrations appended to `registerAll`. Timestamps are seconds since the
/// Unix epoch (REAL), so `datetime(at, 'unixepoch')` shows them in sqlite3.
public enum Schema {
    /// Job states, in the `jobs.state` column.
    public static let states = ["pending", "active", "done", "failed", "canceled"]

    /// Registers every migration in order.
    public static func registerAll(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v1-jobs-images-models-metrics-environment") { db in
            try db.execute(sql: """
                CREATE TABLE environment (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    recorded_at REAL NOT NULL,
                    version TEXT NOT NULL,
                    host TEXT NOT NULL,
                    kernel TEXT NOT NULL,
                    kernel_versions TEXT NOT NULL,   -- JSON object: library -> version
                    threads INTEGER NOT NULL,
                    details TEXT NOT NULL            -- JSON object: anything else
                );

                CREATE TABLE jobs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL,
                    spool_name TEXT NOT NULL UNIQUE, -- file name under spool/active (the claim)
                    source_name TEXT NOT NULL,       -- file name as dropped into spool/incoming
                    content BLOB NOT NULL,
                    content_sha256 TEXT NOT NULL,
                    spec TEXT,                       -- validated JobSpec as JSON; NULL when rejected
                    state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'done', 'failed', 'canceled')),
                    priority INTEGER NOT NULL DEFAULT 0,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    cancel_requested INTEGER NOT NULL DEFAULT 0,
                    error TEXT,
                    total_images INTEGER NOT NULL DEFAULT 0,
                    output_dir TEXT,
                    environment_id INTEGER REFERENCES environment(id),
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    started_at REAL,
                    finished_at REAL
                );
                CREATE INDEX jobs_queue ON jobs(state, priority DESC, id);

                CREATE TABLE job_transitions (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    from_state TEXT,                 -- NULL for the first row
                    to_state TEXT NOT NULL,
                    at REAL NOT NULL,
                    reason TEXT
                );
                CREATE INDEX job_transitions_job ON job_transitions(job_id, id);

                CREATE TABLE images (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    idx INTEGER NOT NULL,
                    seed INTEGER NOT NULL,           -- the per-image seed (bit pattern of a UInt64)
                    class_index INTEGER,
                    class_name TEXT,
                    path TEXT NOT NULL,
                    format TEXT NOT NULL,
                    width INTEGER NOT NULL,
                    height INTEGER NOT NULL,
                    byte_size INTEGER NOT NULL,
                    sha256 TEXT NOT NULL,
                    record TEXT NOT NULL,            -- the JSON record embedded in the file
                    committed_at REAL NOT NULL,
                    UNIQUE (job_id, idx)
                );
                CREATE INDEX images_sha ON images(sha256);

                CREATE TABLE models (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL,
                    content_hash TEXT NOT NULL,
                    loaded_at REAL NOT NULL,
                    load_seconds REAL NOT NULL,
                    bytes INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX models_name ON models(name, id);

                CREATE TABLE metrics (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id INTEGER REFERENCES jobs(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    value REAL NOT NULL,
                    n INTEGER NOT NULL,
                    details TEXT NOT NULL,           -- JSON
                    recorded_at REAL NOT NULL
                );
                CREATE INDEX metrics_job ON metrics(job_id, name);

                CREATE TABLE heartbeat (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    pid INTEGER NOT NULL,
                    started_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    status TEXT NOT NULL,
                    active_job_id INTEGER,
                    images_done INTEGER NOT NULL DEFAULT 0,
                    images_total INTEGER NOT NULL DEFAULT 0,
                    images_per_second REAL NOT NULL DEFAULT 0,
                    cached_models TEXT NOT NULL DEFAULT '[]' -- JSON array of names
                );
                """)
        }
        migrator.registerMigration("v2-heartbeat-step-progress") { db in
            try db.execute(sql: """
                ALTER TABLE heartbeat ADD COLUMN batch_images INTEGER NOT NULL DEFAULT 0; -- the batch being sampled
                ALTER TABLE heartbeat ADD COLUMN steps_done INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE heartbeat ADD COLUMN steps_total INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE heartbeat ADD COLUMN eta_seconds REAL;                        -- NULL before the first step
                """)
        }
        migrator.registerMigration("v3-job-models") { db in
            try db.execute(sql: """
                CREATE TABLE job_models (
                    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    role TEXT NOT NULL CHECK (role IN ('unet', 'classifier', 'features')),
                    name TEXT NOT NULL,
                    sha256 TEXT NOT NULL,            -- the bundle's content hash when the job used it
                    PRIMARY KEY (job_id, role)
                );
                """)
        }
        // Shards and leases (docs/scale-out.md): a job's image indices in shards, each leased to one
        // worker under a fencing token that every image row names; the claims' history; one
        // heartbeat row per worker. One host holds a whole job as one shard.
        migrator.registerMigration("v4-shards-leases-workers") { db in
            try db.execute(sql: """
                CREATE TABLE shards (
                    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    shard INTEGER NOT NULL,
                    first_index INTEGER NOT NULL,
                    end_index INTEGER NOT NULL,      -- exclusive
                    state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done')),
                    token INTEGER NOT NULL DEFAULT 0, -- the fencing token, bumped at every claim
                    worker TEXT,
                    lease_expires_at REAL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (job_id, shard)
                );
                CREATE TABLE leases (
                    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    shard INTEGER NOT NULL,
                    token INTEGER NOT NULL,
                    worker TEXT NOT NULL,
                    claimed_at REAL NOT NULL,
                    PRIMARY KEY (job_id, shard, token)
                );
                ALTER TABLE images ADD COLUMN worker TEXT;
                ALTER TABLE images ADD COLUMN lease_token INTEGER;
                CREATE TABLE workers (
                    worker TEXT PRIMARY KEY,
                    host TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    started_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    status TEXT NOT NULL,
                    cached_models TEXT NOT NULL DEFAULT '[]',
                    job_id INTEGER,
                    shard INTEGER,
                    first_index INTEGER,
                    end_index INTEGER,
                    lease_token INTEGER,
                    images_done INTEGER NOT NULL DEFAULT 0,
                    images_per_second REAL NOT NULL DEFAULT 0
                );
                """)
        }
    }

    /// The names of all migrations this build knows.
    public static var migrationNames: [String] {
        var m = DatabaseMigrator()
        registerAll(&m)
        return m.migrations
    }
}
