import Foundation
import GRDB

/// The SQLite store: model loads, metrics and environments.
extension ProvenanceStore {
    // MARK: - Models, metrics, environment

    public func recordModelLoad(_ load: ModelLoadRow) throws {
        try writer.write { db in
            try db.execute(sql: "INSERT INTO models (name, content_hash, loaded_at, load_seconds, bytes) VALUES (?, ?, ?, ?, ?)",
                           arguments: [load.name, load.contentHash, load.loadedAt, load.loadSeconds, load.bytes])
        }
    }

    /// Records (or replaces) the bundle a job used in `row.role`.
    public func recordJobModel(_ row: JobModelRow) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT INTO job_models (job_id, role, name, sha256) VALUES (?, ?, ?, ?)
                ON CONFLICT(job_id, role) DO UPDATE SET name = excluded.name, sha256 = excluded.sha256
                """, arguments: [row.jobID, row.role.rawValue, row.name, row.sha256])
        }
    }

    /// The bundles a job used, by role (unet, classifier, features).
    public func jobModels(jobID: Int64) throws -> [JobModelRow] {
        try writer.read { db in
            try JobModelRow.fetchAll(db, sql: """
                SELECT * FROM job_models WHERE job_id = ?
                ORDER BY CASE role WHEN 'unet' THEN 0 WHEN 'classifier' THEN 1 ELSE 2 END
                """, arguments: [jobID])
        }
    }

    /// Every load, newest first.
    public func modelLoads(limit: Int = 100) throws -> [ModelLoadRow] {
        try writer.read { db in
            try ModelLoadRow.fetchAll(db, sql: "SELECT * FROM models ORDER BY id DESC LIMIT ?", arguments: [limit])
        }
    }

    /// Replaces every metric row of a job with `metrics`, in one transaction (a job measured again
    /// after a crash keeps one set of rows).
    public func replaceMetrics(jobID: Int64, with metrics: [MetricRow]) throws {
        try writer.write { db in
            try db.execute(sql: "DELETE FROM metrics WHERE job_id = ?", arguments: [jobID])
            for m in metrics {
                try db.execute(sql: "INSERT INTO metrics (job_id, name, value, n, details, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [jobID, m.name, m.value, m.n, m.details, m.recordedAt])
            }
        }
    }

    public func metrics(jobID: Int64) throws -> [MetricRow] {
        try writer.read { db in
            try MetricRow.fetchAll(db, sql: "SELECT * FROM metrics WHERE job_id = ? ORDER BY id", arguments: [jobID])
        }
    }

    /// Records the environment; an identical one (apart from the time) is reused.
    public func recordEnvironment(_ env: EnvironmentRow) throws -> Int64 {
        try writer.write { db in
            let versions = jsonText(env.kernelVersions), details = jsonText(env.details)
            if let id = try Int64.fetchOne(db, sql: """
                SELECT id FROM environment WHERE version = ? AND host = ? AND kernel = ? AND kernel_versions = ?
                AND threads = ? AND details = ? ORDER BY id DESC LIMIT 1
                """, arguments: [env.version, env.host, env.kernel, versions, env.threads, details]) {
                return id
            }
            try db.execute(sql: """
                INSERT INTO environment (recorded_at, version, host, kernel, kernel_versions, threads, details)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [env.recordedAt, env.version, env.host, env.kernel, versions, env.threads, details])
            return db.lastInsertedRowID
        }
    }

    public func environment(id: Int64) throws -> EnvironmentRow? {
        try writer.read { db in
            try EnvironmentRow.fetchOne(db, sql: "SELECT * FROM environment WHERE id = ?", arguments: [id])
        }
    }
}
