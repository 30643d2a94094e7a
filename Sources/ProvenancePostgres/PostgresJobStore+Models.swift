import PostgresNIO
import Provenance

/// The PostgreSQL store: model loads, the bundles of each job, metrics and environments, with the
/// semantics of `ProvenanceStore+Models.swift`.
extension PostgresJobStore {
    /// Records one load of a model bundle.
    public func recordModelLoad(_ load: ModelLoadRow) throws {
        try transaction { c in
            try execute("""
                INSERT INTO models (name, content_hash, loaded_at, load_seconds, bytes)
                VALUES (\(load.name), \(load.contentHash), \(load.loadedAt), \(load.loadSeconds), \(load.bytes))
                """, on: c)
        }
    }

    /// Records (or replaces) the bundle a job used in `row.role`.
    public func recordJobModel(_ row: JobModelRow) throws {
        try transaction { c in
            try execute("""
                INSERT INTO job_models (job_id, role, name, sha256) VALUES (\(row.jobID), \(row.role.rawValue), \(row.name), \(row.sha256))
                ON CONFLICT (job_id, role) DO UPDATE SET name = excluded.name, sha256 = excluded.sha256
                """, on: c)
        }
    }

    /// The bundles a job used, by role (unet, classifier, features).
    public func jobModels(jobID: Int64) throws -> [JobModelRow] {
        try read { c in
            try rows("""
                SELECT * FROM job_models WHERE job_id = \(jobID)
                ORDER BY CASE role WHEN 'unet' THEN 0 WHEN 'classifier' THEN 1 ELSE 2 END
                """, on: c).map(JobModelRow.init(postgres:))
        }
    }

    /// Every load, newest first.
    public func modelLoads(limit: Int = 100) throws -> [ModelLoadRow] {
        try read { c in
            try rows("SELECT * FROM models ORDER BY id DESC LIMIT \(limit)", on: c).map(ModelLoadRow.init(postgres:))
        }
    }

    /// Replaces every metric row of a job with `metrics`, in one transaction.
    public func replaceMetrics(jobID: Int64, with metrics: [MetricRow]) throws {
        try transaction { c in
            try execute("DELETE FROM metrics WHERE job_id = \(jobID)", on: c)
            for m in metrics {
                try execute("""
                    INSERT INTO metrics (job_id, name, value, n, details, recorded_at)
                    VALUES (\(jobID), \(m.name), \(m.value), \(m.n), \(m.details), \(m.recordedAt))
                    """, on: c)
            }
        }
    }

    /// A job's metric rows, in the order recorded.
    public func metrics(jobID: Int64) throws -> [MetricRow] {
        try read { c in
            try rows("SELECT * FROM metrics WHERE job_id = \(jobID) ORDER BY id", on: c).map(MetricRow.init(postgres:))
        }
    }

    /// Records the environment; an identical one (apart from the time) is reused.
    public func recordEnvironment(_ env: EnvironmentRow) throws -> Int64 {
        try transaction { c in
            let versions = encodeJSON(env.kernelVersions), details = encodeJSON(env.details)
            // Two daemons recording the same environment at once record it once.
            try execute("SELECT pg_advisory_xact_lock(\(PostgresSchema.environmentLockKey))", on: c)
            if let id = try scalar("""
                SELECT id FROM environment WHERE version = \(env.version) AND host = \(env.host) AND kernel = \(env.kernel)
                AND kernel_versions = \(versions) AND threads = \(env.threads) AND details = \(details) ORDER BY id DESC LIMIT 1
                """, as: Int64.self, on: c) {
                return id
            }
            return try scalar("""
                INSERT INTO environment (recorded_at, version, host, kernel, kernel_versions, threads, details)
                VALUES (\(env.recordedAt), \(env.version), \(env.host), \(env.kernel), \(versions), \(env.threads), \(details))
                RETURNING id
                """, as: Int64.self, on: c)!
        }
    }

    /// The environment with this id, if any.
    public func environment(id: Int64) throws -> EnvironmentRow? {
        try read { c in
            try rows("SELECT * FROM environment WHERE id = \(id)", on: c).first.map(EnvironmentRow.init(postgres:))
        }
    }

    // MARK: - Heartbeat

    /// Writes the one heartbeat row (the last daemon to write it is the one `heartbeat()` shows).
    public func writeHeartbeat(_ hb: HeartbeatRow) throws {
        try transaction { c in
            try execute("""
                INSERT INTO heartbeat (id, pid, started_at, updated_at, status, active_job_id, images_done, images_total,
                                       images_per_second, cached_models, batch_images, steps_done, steps_total, eta_seconds)
                VALUES (1, \(hb.pid), \(hb.startedAt), \(hb.updatedAt), \(hb.status), \(hb.activeJobID), \(hb.imagesDone),
                        \(hb.imagesTotal), \(hb.imagesPerSecond), \(encodeJSON(hb.cachedModels)), \(hb.batchImages),
                        \(hb.stepsDone), \(hb.stepsTotal), \(hb.etaSeconds))
                ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,
                    updated_at = excluded.updated_at, status = excluded.status, active_job_id = excluded.active_job_id,
                    images_done = excluded.images_done, images_total = excluded.images_total,
                    images_per_second = excluded.images_per_second, cached_models = excluded.cached_models,
                    batch_images = excluded.batch_images, steps_done = excluded.steps_done,
                    steps_total = excluded.steps_total, eta_seconds = excluded.eta_seconds
                """, on: c)
        }
    }

    /// The heartbeat row, if a daemon wrote one.
    public func heartbeat() throws -> HeartbeatRow? {
        try read { c in try rows("SELECT * FROM heartbeat WHERE id = 1", on: c).first.map(HeartbeatRow.init(postgres:)) }
    }
}
