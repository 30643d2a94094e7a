import Provenance

/// The PostgreSQL schema: the SQLite schema (`Schema`) migration by migration, under the same
/// names, in `schema_migrations`. A migration never changes once it has shipped; later changes
/// are new migrations appended here. Timestamps are seconds since the Unix epoch
/// (DOUBLE PRECISION), integers BIGINT, job files BYTEA.
public enum PostgresSchema {
    /// A named migration: statements run in order, in the transaction that records its name.
    public struct Migration: Sendable {
        public var name: String
        public var statements: [String]
    }

    /// The key of the advisory lock that migrating daemons take.
    static let migrationLockKey = 7_231_916_001
    /// The key of the advisory lock that daemons recording their environment take.
    static let environmentLockKey = 7_231_916_002

    static let migrationsTable = """
        CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)
        """

    /// The names of all migrations this build knows.
    public static var migrationNames: [String] { migrations.map(\.name) }

    /// Throws `unknownSchema` when `applied` holds a migration this build does not know.
    static func checkKnown(_ applied: [String]) throws {
        let known = Set(migrationNames)
        if let unknown = applied.first(where: { !known.contains($0) }) {
            throw ProvenanceError.unknownSchema("migration \(unknown)")
        }
    }

    /// Every migration, in order.
    public static let migrations: [Migration] = [
        Migration(name: "v1-jobs-images-models-metrics-environment", statements: [
            """
            CREATE TABLE environment (
                id BIGSERIAL PRIMARY KEY,
                recorded_at DOUBLE PRECISION NOT NULL,
                version TEXT NOT NULL,
                host TEXT NOT NULL,
                kernel TEXT NOT NULL,
                kernel_versions TEXT NOT NULL,
                threads BIGINT NOT NULL,
                details TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE jobs (
                id BIGSERIAL PRIMARY KEY,
                name TEXT NOT NULL,
                spool_name TEXT NOT NULL UNIQUE,
                source_name TEXT NOT NULL,
                content BYTEA NOT NULL,
                content_sha256 TEXT NOT NULL,
                spec TEXT,
                state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'done', 'failed', 'canceled')),
                priority BIGINT NOT NULL DEFAULT 0,
                attempts BIGINT NOT NULL DEFAULT 0,
                cancel_requested BIGINT NOT NULL DEFAULT 0,
                error TEXT,
                total_images BIGINT NOT NULL DEFAULT 0,
                output_dir TEXT,
                environment_id BIGINT REFERENCES environment(id),
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                started_at DOUBLE PRECISION,
                finished_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX jobs_queue ON jobs(state, priority DESC, id)",
            """
            CREATE TABLE job_transitions (
                id BIGSERIAL PRIMARY KEY,
                job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                from_state TEXT,
                to_state TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                reason TEXT
            )
            """,
            "CREATE INDEX job_transitions_job ON job_transitions(job_id, id)",
            """
            CREATE TABLE images (
                id BIGSERIAL PRIMARY KEY,
                job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                idx BIGINT NOT NULL,
                seed BIGINT NOT NULL,
                class_index BIGINT,
                class_name TEXT,
                path TEXT NOT NULL,
                format TEXT NOT NULL,
                width BIGINT NOT NULL,
                height BIGINT NOT NULL,
                byte_size BIGINT NOT NULL,
                sha256 TEXT NOT NULL,
                record TEXT NOT NULL,
                committed_at DOUBLE PRECISION NOT NULL,
                UNIQUE (job_id, idx)
            )
            """,
            "CREATE INDEX images_sha ON images(sha256)",
            """
            CREATE TABLE models (
                id BIGSERIAL PRIMARY KEY,
                name TEXT NOT NULL,
                content_hash TEXT NOT NULL,
                loaded_at DOUBLE PRECISION NOT NULL,
                load_seconds DOUBLE PRECISION NOT NULL,
                bytes BIGINT NOT NULL DEFAULT 0
            )
            """,
            "CREATE INDEX models_name ON models(name, id)",
            """
            CREATE TABLE metrics (
                id BIGSERIAL PRIMARY KEY,
                job_id BIGINT REFERENCES jobs(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                value DOUBLE PRECISION NOT NULL,
                n BIGINT NOT NULL,
                details TEXT NOT NULL,
                recorded_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX metrics_job ON metrics(job_id, name)",
            """
            CREATE TABLE heartbeat (
                id BIGINT PRIMARY KEY CHECK (id = 1),
                pid BIGINT NOT NULL,
                started_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                active_job_id BIGINT,
                images_done BIGINT NOT NULL DEFAULT 0,
                images_total BIGINT NOT NULL DEFAULT 0,
                images_per_second DOUBLE PRECISION NOT NULL DEFAULT 0,
                cached_models TEXT NOT NULL DEFAULT '[]'
            )
            """,
        ]),
        Migration(name: "v2-heartbeat-step-progress", statements: [
            "ALTER TABLE heartbeat ADD COLUMN batch_images BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE heartbeat ADD COLUMN steps_done BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE heartbeat ADD COLUMN steps_total BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE heartbeat ADD COLUMN eta_seconds DOUBLE PRECISION",
        ]),
        Migration(name: "v3-job-models", statements: [
            """
            CREATE TABLE job_models (
                job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('unet', 'classifier', 'features')),
                name TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                PRIMARY KEY (job_id, role)
            )
            """,
        ]),
        shardsLeasesWorkers,
    ]
}
