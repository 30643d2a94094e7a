import Foundation
import GRDB

/// The SQLite store: shards and leases. One host runs one daemon on this file (its lock), so a job
/// is one shard of all its images, and its lease never expires (`expiresAt` is infinite: no other
/// worker could take it over); the fencing token still guards every write, and a released shard
/// puts its job back in the queue, as a stopped job always went back.
extension ProvenanceStore {
    /// Claims the next pending job (see `claim`) and leases it whole as shard 0.
    public func claimNextShard(_ request: ShardRequest) throws -> ShardClaimOutcome? {
        guard let next = try queue(limit: 1).first else { return nil }
        return try writer.write { db in
            switch try Self.claimInTransaction(db, jobID: next.id, maxAttempts: request.maxAttempts,
                                               environmentID: request.environmentID) {
            case let .claimed(job):
                try Self.prepareShards(db, job: job, ranges: [0 ..< job.totalImages])
                return .claimed(try Self.lease(db, job: job, shard: 0, request: request))
            case let .poisoned(job): return .poisoned(job)
            case let .canceled(job): return .canceled(job)
            case .notPending: return .notPending
            }
        }
    }

    /// At a job's claim: its shards, made on its first claim; on a later one (a requeued or retried
    /// job) every shard is pending again, its attempts from zero (tokens keep counting).
    static func prepareShards(_ db: Database, job: JobRow, ranges: [Range<Int>]) throws {
        let existing = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM shards WHERE job_id = ?", arguments: [job.id]) ?? 0
        if existing > 0 {
            try db.execute(sql: """
                UPDATE shards SET state = 'pending', worker = NULL, lease_expires_at = NULL, attempts = 0 WHERE job_id = ?
                """, arguments: [job.id])
            return
        }
        for (n, range) in ranges.enumerated() {
            try db.execute(sql: """
                INSERT INTO shards (job_id, shard, first_index, end_index, state) VALUES (?, ?, ?, ?, 'pending')
                """, arguments: [job.id, n, range.lowerBound, range.upperBound])
        }
    }

    /// Leases shard `shard` of the active `job` to the requester: a new token, one more attempt.
    static func lease(_ db: Database, job: JobRow, shard: Int, request: ShardRequest) throws -> ShardClaim {
        let now = Self.now
        try db.execute(sql: """
            UPDATE shards SET state = 'leased', token = token + 1, worker = ?, lease_expires_at = NULL, attempts = attempts + 1
            WHERE job_id = ? AND shard = ?
            """, arguments: [request.worker, job.id, shard])
        let row = try ShardRow.fetchOne(db, sql: "SELECT * FROM shards WHERE job_id = ? AND shard = ?", arguments: [job.id, shard])!
        try db.execute(sql: "INSERT INTO leases (job_id, shard, token, worker, claimed_at) VALUES (?, ?, ?, ?, ?)",
                       arguments: [job.id, shard, row.token, request.worker, now])
        return ShardClaim(job: job, shard: shard, indices: row.firstIndex ..< row.endIndex,
                          lease: ShardLease(token: row.token, worker: request.worker, expiresAt: .infinity),
                          attempt: row.attempts)
    }

    /// Throws `LeaseLost` unless the claim's token is still its shard's, leased, of an active job.
    static func checkLease(_ db: Database, _ claim: ShardClaim) throws {
        let held = try Bool.fetchOne(db, sql: """
            SELECT COUNT(*) > 0 FROM shards s JOIN jobs j ON j.id = s.job_id
            WHERE s.job_id = ? AND s.shard = ? AND s.token = ? AND s.state = 'leased' AND j.state = 'active'
            """, arguments: [claim.job.id, claim.shard, claim.lease.token]) ?? false
        if !held { throw LeaseLost(claim) }
    }

    /// Checks the lease is still held; it never expires on one host.
    public func renewLease(_ claim: ShardClaim, seconds: Double) throws -> ShardLease {
        try writer.read { db in try Self.checkLease(db, claim) }
        return ShardLease(token: claim.lease.token, worker: claim.lease.worker, expiresAt: .infinity)
    }

    /// Records an image of the claim's range with its worker and token, once its lease is checked.
    public func recordImage(_ image: ImageRow, under claim: ShardClaim) throws {
        guard image.jobID == claim.job.id, claim.indices.contains(image.index) else {
            throw ProvenanceError.outsideClaim(job: image.jobID, index: image.index, claim: claim.label)
        }
        try writer.write { db in
            try Self.checkLease(db, claim)
            try db.execute(sql: """
                INSERT INTO images (job_id, idx, seed, class_index, class_name, path, format, width, height,
                                    byte_size, sha256, record, committed_at, worker, lease_token)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (job_id, idx) DO NOTHING
                """, arguments: [image.jobID, image.index, Int64(bitPattern: image.seed), image.classIndex,
                                 image.className, image.path, image.format, image.width, image.height,
                                 image.byteSize, image.sha256, image.record, image.committedAt,
                                 claim.lease.worker, claim.lease.token])
            if db.changesCount == 0 {
                let existing = try String.fetchOne(db, sql: "SELECT sha256 FROM images WHERE job_id = ? AND idx = ?",
                                                   arguments: [image.jobID, image.index])
                if existing != image.sha256 { throw ProvenanceError.alreadyRecorded(job: image.jobID, index: image.index) }
            }
        }
    }

    /// Deletes the rows of `indices` within the claim's range, once its lease is checked.
    public func deleteImages(indices: [Int], under claim: ShardClaim) throws {
        let mine = indices.filter { claim.indices.contains($0) }
        guard !mine.isEmpty else { return }
        try writer.write { db in
            try Self.checkLease(db, claim)
            for i in mine {
                try db.execute(sql: "DELETE FROM images WHERE job_id = ? AND idx = ?", arguments: [claim.job.id, i])
            }
        }
    }

    /// Ends the shard: done, or `.lastShard` when every other shard is done (always, for a whole job).
    public func finishShard(_ claim: ShardClaim) throws -> ShardEnd {
        try writer.write { db in
            try Self.checkLease(db, claim)
            let others = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM shards WHERE job_id = ? AND shard <> ? AND state <> 'done'",
                                          arguments: [claim.job.id, claim.shard]) ?? 0
            if others == 0 { return .lastShard }
            try db.execute(sql: "UPDATE shards SET state = 'done', lease_expires_at = NULL WHERE job_id = ? AND shard = ?",
                           arguments: [claim.job.id, claim.shard])
            return .moreShards
        }
    }

    /// Ends the last shard and its job (done), once every image of the job is recorded.
    public func completeJob(_ claim: ShardClaim) throws {
        try writer.write { db in
            try Self.checkLease(db, claim)
            let job = try Self.fetchJob(db, id: claim.job.id)!
            let recorded = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE job_id = ?", arguments: [job.id]) ?? 0
            guard recorded == job.totalImages else {
                throw ProvenanceError.incomplete(job: job.id, recorded: recorded, total: job.totalImages)
            }
            try db.execute(sql: "UPDATE shards SET state = 'done', lease_expires_at = NULL WHERE job_id = ? AND shard = ?",
                           arguments: [job.id, claim.shard])
            try Self.setState(db, job: job, to: .done, reason: "all images written", error: nil, now: Self.now)
        }
    }

    /// The shard is pending again and, one host holding a whole job, its job goes back to the queue.
    public func releaseShard(_ claim: ShardClaim, reason: String, refundAttempt: Bool) throws {
        try writer.write { db in
            do { try Self.checkLease(db, claim) } catch is LeaseLost { return }
            try db.execute(sql: """
                UPDATE shards SET state = 'pending', worker = NULL, lease_expires_at = NULL,
                       attempts = CASE WHEN ? THEN MAX(attempts - 1, 0) ELSE attempts END
                WHERE job_id = ? AND shard = ?
                """, arguments: [refundAttempt, claim.job.id, claim.shard])
            let job = try Self.fetchJob(db, id: claim.job.id)!
            try Self.setState(db, job: job, to: .pending, reason: reason, error: nil, now: Self.now)
            if refundAttempt {
                try db.execute(sql: "UPDATE jobs SET attempts = MAX(attempts - 1, 0) WHERE id = ?", arguments: [job.id])
            }
        }
    }

    /// Nothing to do: `recoverInterruptedJobs` puts every active job of the one host back in the queue.
    public func releaseLeases(ofWorker worker: String, maxAttempts: Int) throws -> [Int64] { [] }

    /// A job's shards, in order.
    public func shards(jobID: Int64) throws -> [ShardRow] {
        try writer.read { db in
            try ShardRow.fetchAll(db, sql: "SELECT * FROM shards WHERE job_id = ? ORDER BY shard", arguments: [jobID])
        }
    }

    /// A job's claims, oldest first.
    public func leases(jobID: Int64) throws -> [LeaseRow] {
        try writer.read { db in
            try LeaseRow.fetchAll(db, sql: "SELECT * FROM leases WHERE job_id = ? ORDER BY claimed_at, shard, token",
                                  arguments: [jobID])
        }
    }

    // MARK: - Workers

    /// Writes (or replaces) the heartbeat row of `row.worker`.
    public func writeWorker(_ row: WorkerRow) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT OR REPLACE INTO workers (worker, host, pid, started_at, updated_at, status, cached_models, job_id, shard,
                                                first_index, end_index, lease_token, images_done, images_per_second)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [row.worker, row.host, row.pid, row.startedAt, row.updatedAt, row.status,
                                 jsonText(row.cachedModels), row.jobID, row.shard, row.firstIndex, row.endIndex,
                                 row.leaseToken, row.imagesDone, row.imagesPerSecond])
        }
    }

    /// Every worker's heartbeat row, by name.
    public func workers() throws -> [WorkerRow] {
        try writer.read { db in try WorkerRow.fetchAll(db, sql: "SELECT * FROM workers ORDER BY worker") }
    }
}

extension ShardRow: FetchableRecord {
    /// A row of `shards`.
    public init(row: Row) {
        self.init(jobID: row["job_id"], shard: row["shard"], firstIndex: row["first_index"], endIndex: row["end_index"],
                  state: ShardState(rawValue: row["state"]) ?? .pending, token: row["token"], worker: row["worker"],
                  leaseExpiresAt: row["lease_expires_at"], attempts: row["attempts"])
    }
}

extension LeaseRow: FetchableRecord {
    /// A row of `leases`.
    public init(row: Row) {
        self.init(jobID: row["job_id"], shard: row["shard"], token: row["token"], worker: row["worker"], claimedAt: row["claimed_at"])
    }
}

extension WorkerRow: FetchableRecord {
    /// A row of `workers`.
    public init(row: Row) {
        self.init(worker: row["worker"], host: row["host"], pid: row["pid"], startedAt: row["started_at"],
                  updatedAt: row["updated_at"], status: row["status"],
                  cachedModels: jsonValue([String].self, row["cached_models"]) ?? [], jobID: row["job_id"],
                  shard: row["shard"], firstIndex: row["first_index"], endIndex: row["end_index"],
                  leaseToken: row["lease_token"], imagesDone: row["images_done"], imagesPerSecond: row["images_per_second"])
    }
}
