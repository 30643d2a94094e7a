extension PostgresSchema {
    /// Shards and leases (docs/scale-out.md): a job's image indices in shards, each leased to one
    /// worker under a fencing token that every image row names; the claims' history; one heartbeat
    /// row per worker. The same tables as SQLite's migration of this name.
    static let shardsLeasesWorkers = Migration(name: "v4-shards-leases-workers", statements: [
        """
        CREATE TABLE shards (
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            shard BIGINT NOT NULL,
            first_index BIGINT NOT NULL,
            end_index BIGINT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done')),
            token BIGINT NOT NULL DEFAULT 0,
            worker TEXT,
            lease_expires_at DOUBLE PRECISION,
            attempts BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (job_id, shard)
        )
        """,
        "CREATE INDEX shards_claimable ON shards(state, lease_expires_at)",
        """
        CREATE TABLE leases (
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            shard BIGINT NOT NULL,
            token BIGINT NOT NULL,
            worker TEXT NOT NULL,
            claimed_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (job_id, shard, token)
        )
        """,
        "ALTER TABLE images ADD COLUMN worker TEXT",
        "ALTER TABLE images ADD COLUMN lease_token BIGINT",
        """
        CREATE TABLE workers (
            worker TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            cached_models TEXT NOT NULL DEFAULT '[]',
            job_id BIGINT,
            shard BIGINT,
            first_index BIGINT,
            end_index BIGINT,
            lease_token BIGINT,
            images_done BIGINT NOT NULL DEFAULT 0,
            images_per_second DOUBLE PRECISION NOT NULL DEFAULT 0
        )
        """,
    ])
}
