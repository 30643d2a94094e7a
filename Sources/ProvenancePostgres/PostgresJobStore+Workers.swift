import PostgresNIO
import Provenance

/// The PostgreSQL store: one heartbeat row per worker, and the rows of shards, leases and workers.
extension PostgresJobStore {
    /// Writes (or replaces) the heartbeat row of `row.worker`.
    public func writeWorker(_ row: WorkerRow) throws {
        try transaction { c in
            try execute("""
                INSERT INTO workers (worker, host, pid, started_at, updated_at, status, cached_models, job_id, shard,
                                     first_index, end_index, lease_token, images_done, images_per_second)
                VALUES (\(row.worker), \(row.host), \(row.pid), \(row.startedAt), \(row.updatedAt), \(row.status),
                        \(encodeJSON(row.cachedModels)), \(row.jobID), \(row.shard), \(row.firstIndex), \(row.endIndex),
                        \(row.leaseToken), \(row.imagesDone), \(row.imagesPerSecond))
                ON CONFLICT (worker) DO UPDATE SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
                    updated_at = excluded.updated_at, status = excluded.status, cached_models = excluded.cached_models,
                    job_id = excluded.job_id, shard = excluded.shard, first_index = excluded.first_index,
                    end_index = excluded.end_index, lease_token = excluded.lease_token, images_done = excluded.images_done,
                    images_per_second = excluded.images_per_second
                """, on: c)
        }
    }

    /// Every worker's heartbeat row, by name.
    public func workers() throws -> [WorkerRow] {
        try read { c in try rows("SELECT * FROM workers ORDER BY worker", on: c).map(WorkerRow.init(postgres:)) }
    }
}

extension ShardRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(jobID: try c("job_id"), shard: try c("shard"), firstIndex: try c("first_index"), endIndex: try c("end_index"),
                  state: ShardState(rawValue: try c("state")) ?? .pending, token: try c("token"), worker: try c("worker"),
                  leaseExpiresAt: try c("lease_expires_at"), attempts: try c("attempts"))
    }
}

extension LeaseRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(jobID: try c("job_id"), shard: try c("shard"), token: try c("token"), worker: try c("worker"),
                  claimedAt: try c("claimed_at"))
    }
}

extension WorkerRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(worker: try c("worker"), host: try c("host"), pid: try c("pid"), startedAt: try c("started_at"),
                  updatedAt: try c("updated_at"), status: try c("status"),
                  cachedModels: decodeJSON([String].self, try c("cached_models")) ?? [], jobID: try c("job_id"),
                  shard: try c("shard"), firstIndex: try c("first_index"), endIndex: try c("end_index"),
                  leaseToken: try c("lease_token"), imagesDone: try c("images_done"), imagesPerSecond: try c("images_per_second"))
    }
}
