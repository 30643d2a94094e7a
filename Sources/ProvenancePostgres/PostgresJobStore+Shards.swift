import PostgresNIO
import Provenance

/// The PostgreSQL store: shards and leases. A job's images are cut into shards when it is first
/// claimed; each shard is leased to one worker at a time under a fencing token bumped at every
/// claim. Leases expire by the server's clock (`clock_timestamp()`), so the hosts' clocks never
/// matter; every write under a lease locks the shard's row and checks its token first, so a
/// worker whose lease was taken over (killed, frozen, cut off) records nothing.
extension PostgresJobStore {
    /// The server's clock, seconds since the epoch.
    func storeClock(_ c: PostgresConnection) throws -> Double {
        try scalar("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8", as: Double.self, on: c) ?? Self.now
    }

    /// Leases, in queue order, a pending or expired shard of an active job or the first shard of the
    /// next pending job, whichever comes first (priority, then arrival). Rows other workers are
    /// claiming at the same moment are passed over (`SKIP LOCKED`).
    public func claimNextShard(_ request: ShardRequest) throws -> ShardClaimOutcome? {
        try transaction { c in
            let now = try storeClock(c)
            let open = try rows("""
                SELECT s.job_id, s.shard, s.attempts, j.priority FROM shards s JOIN jobs j ON j.id = s.job_id
                WHERE j.state = 'active' AND (s.state = 'pending' OR (s.state = 'leased' AND s.lease_expires_at < \(now)))
                ORDER BY j.priority DESC, s.job_id, s.shard LIMIT 1 FOR UPDATE OF s SKIP LOCKED
                """, on: c).first.map { row -> (job: Int64, shard: Int, attempts: Int, priority: Int) in
                let r = row.makeRandomAccess()
                return (try r[0].decode(Int64.self), try r[1].decode(Int.self), try r[2].decode(Int.self), try r[3].decode(Int.self))
            }
            let pending = try fetchJobs("""
                SELECT \(unescaped: JobRow.postgresColumns) FROM jobs WHERE state = 'pending'
                ORDER BY priority DESC, id ASC LIMIT 1 FOR UPDATE SKIP LOCKED
                """, on: c).first
            if let open, pending.map({ open.priority > $0.priority || (open.priority == $0.priority && open.job < $0.id) }) ?? true {
                guard let job = try fetchJob(c, id: open.job) else { return .notPending }
                if job.cancelRequested || open.attempts >= request.maxAttempts {
                    guard let locked = try fetchJob(c, id: open.job, forUpdate: true), locked.state == .active else { return .notPending }
                    if locked.cancelRequested {
                        try setState(c, job: locked, to: .canceled, reason: "canceled by user", error: nil, now: Self.now)
                        return .canceled(try fetchJob(c, id: job.id)!)
                    }
                    let reason = "poison job: shard \(open.shard) started \(open.attempts) times without finishing"
                    try setState(c, job: locked, to: .failed, reason: reason, error: reason, now: Self.now)
                    return .poisoned(try fetchJob(c, id: job.id)!)
                }
                return .claimed(try lease(c, job: job, shard: open.shard, request: request, now: now))
            }
            guard let pending else { return nil }
            switch try claimLocked(c, job: pending, maxAttempts: request.maxAttempts, environmentID: request.environmentID) {
            case let .claimed(job):
                try prepareShards(c, job: job, ranges: shardRanges(total: job.totalImages, size: request.shardImages))
                return .claimed(try lease(c, job: job, shard: 0, request: request, now: now))
            case let .poisoned(job): return .poisoned(job)
            case let .canceled(job): return .canceled(job)
            case .notPending: return .notPending
            }
        }
    }

    /// At a job's claim: its shards, made on its first claim; on a later one (a requeued or retried
    /// job) every shard is pending again, its attempts from zero (tokens keep counting).
    func prepareShards(_ c: PostgresConnection, job: JobRow, ranges: [Range<Int>]) throws {
        let existing = try scalar("SELECT COUNT(*) FROM shards WHERE job_id = \(job.id)", as: Int.self, on: c) ?? 0
        if existing > 0 {
            try execute("""
                UPDATE shards SET state = 'pending', worker = NULL, lease_expires_at = NULL, attempts = 0 WHERE job_id = \(job.id)
                """, on: c)
            return
        }
        for (n, range) in ranges.enumerated() {
            try execute("""
                INSERT INTO shards (job_id, shard, first_index, end_index, state)
                VALUES (\(job.id), \(n), \(range.lowerBound), \(range.upperBound), 'pending')
                """, on: c)
        }
    }

    /// Leases shard `shard` of the active `job` (its row locked by the caller): a new token, one more attempt.
    func lease(_ c: PostgresConnection, job: JobRow, shard: Int, request: ShardRequest, now: Double) throws -> ShardClaim {
        let expires = now + request.leaseSeconds
        guard let row = try rows("""
            UPDATE shards SET state = 'leased', token = token + 1, worker = \(request.worker), lease_expires_at = \(expires),
                   attempts = attempts + 1
            WHERE job_id = \(job.id) AND shard = \(shard) RETURNING *
            """, on: c).first.map(ShardRow.init(postgres:)) else { throw ProvenanceError.noSuchJob(job.id) }
        try execute("""
            INSERT INTO leases (job_id, shard, token, worker, claimed_at) VALUES (\(job.id), \(shard), \(row.token), \(request.worker), \(now))
            """, on: c)
        return ShardClaim(job: job, shard: shard, indices: row.firstIndex ..< row.endIndex,
                          lease: ShardLease(token: row.token, worker: request.worker, expiresAt: expires), attempt: row.attempts)
    }

    /// Locks the claim's shard (and, sharing, its job) and throws `LeaseLost` unless the claim's token
    /// is still the shard's, leased, of an active job. `exclusive` locks the shard for update.
    func checkLease(_ c: PostgresConnection, _ claim: ShardClaim, exclusive: Bool = false) throws {
        let lock = exclusive ? "FOR UPDATE OF s" : "FOR SHARE"
        let held = try rows("""
            SELECT s.token FROM shards s JOIN jobs j ON j.id = s.job_id
            WHERE s.job_id = \(claim.job.id) AND s.shard = \(claim.shard) AND s.token = \(claim.lease.token)
              AND s.state = 'leased' AND j.state = 'active' \(unescaped: lock)
            """, on: c)
        if held.isEmpty { throw LeaseLost(claim) }
    }

    /// Extends the lease by `seconds` from the server's now, while its token is the shard's and the job active.
    public func renewLease(_ claim: ShardClaim, seconds: Double) throws -> ShardLease {
        try transaction { c in
            let renewed = try rows("""
                UPDATE shards SET lease_expires_at = EXTRACT(EPOCH FROM clock_timestamp())::float8 + \(seconds)
                WHERE job_id = \(claim.job.id) AND shard = \(claim.shard) AND token = \(claim.lease.token) AND state = 'leased'
                  AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = shards.job_id AND j.state = 'active')
                RETURNING lease_expires_at
                """, on: c)
            guard let row = renewed.first else { throw LeaseLost(claim) }
            return ShardLease(token: claim.lease.token, worker: claim.lease.worker,
                              expiresAt: try row.makeRandomAccess()[0].decode(Double.self))
        }
    }

    /// Records the row stamped with the server's clock (`committed_at`), so that it compares with
    /// the claims' `claimed_at` whatever the hosts' clocks say. One statement, one round trip: the
    /// fence (the shard's row locked, sharing, with the claim's token, leased, of an active job) and
    /// the insert commit together or not at all; a takeover's claim, which locks the shard's row for
    /// update, waits for it or is waited for and then fails the fence.
    public func recordImage(_ image: ImageRow, under claim: ShardClaim) throws {
        guard image.jobID == claim.job.id, claim.indices.contains(image.index) else {
            throw ProvenanceError.outsideClaim(job: image.jobID, index: image.index, claim: claim.label)
        }
        let outcome = try withConnection { c in
            try rows("""
                WITH held AS (
                    SELECT s.token FROM shards s JOIN jobs j ON j.id = s.job_id
                    WHERE s.job_id = \(claim.job.id) AND s.shard = \(claim.shard) AND s.token = \(claim.lease.token)
                      AND s.state = 'leased' AND j.state = 'active' FOR SHARE
                ), inserted AS (
                    INSERT INTO images (job_id, idx, seed, class_index, class_name, path, format, width, height,
                                        byte_size, sha256, record, committed_at, worker, lease_token)
                    SELECT \(image.jobID), \(image.index), \(Int64(bitPattern: image.seed)), \(image.classIndex),
                           \(image.className), \(image.path), \(image.format), \(image.width), \(image.height),
                           \(image.byteSize), \(image.sha256), \(image.record), EXTRACT(EPOCH FROM clock_timestamp())::float8,
                           \(claim.lease.worker), \(claim.lease.token)
                    FROM held
                    ON CONFLICT (job_id, idx) DO NOTHING RETURNING id
                )
                SELECT (SELECT count(*) FROM held), (SELECT count(*) FROM inserted)
                """, on: c).first.map { row -> (held: Int64, inserted: Int64) in
                let r = row.makeRandomAccess()
                return (try r[0].decode(Int64.self), try r[1].decode(Int64.self))
            }
        }
        guard let outcome, outcome.held > 0 else { throw LeaseLost(claim) }
        if outcome.inserted == 0 {
            // The index has a row already (a retry after a lost reply): the same image is no error.
            let existing = try withConnection { c in
                try scalar("SELECT sha256 FROM images WHERE job_id = \(image.jobID) AND idx = \(image.index)", as: String.self, on: c)
            }
            if existing != image.sha256 { throw ProvenanceError.alreadyRecorded(job: image.jobID, index: image.index) }
        }
    }

    /// Deletes the rows of `indices` within the claim's range, once its lease is checked.
    public func deleteImages(indices: [Int], under claim: ShardClaim) throws {
        let mine = indices.filter { claim.indices.contains($0) }
        guard !mine.isEmpty else { return }
        try transaction { c in
            try checkLease(c, claim)
            try execute("DELETE FROM images WHERE job_id = \(claim.job.id) AND idx = ANY(\(mine))", on: c)
        }
    }

    /// Done, unless every other shard is done already (`.lastShard`): the job row's lock makes two
    /// workers ending the last two shards at once see one another's end.
    public func finishShard(_ claim: ShardClaim) throws -> ShardEnd {
        try transaction { c in
            try checkLease(c, claim, exclusive: true)
            _ = try fetchJob(c, id: claim.job.id, forUpdate: true)
            let others = try scalar("""
                SELECT COUNT(*) FROM shards WHERE job_id = \(claim.job.id) AND shard <> \(claim.shard) AND state <> 'done'
                """, as: Int.self, on: c) ?? 0
            if others == 0 { return .lastShard }
            try execute("UPDATE shards SET state = 'done', lease_expires_at = NULL WHERE job_id = \(claim.job.id) AND shard = \(claim.shard)", on: c)
            return .moreShards
        }
    }

    /// Ends the last shard and its job (done), once every image of the job is recorded.
    public func completeJob(_ claim: ShardClaim) throws {
        try transaction { c in
            try checkLease(c, claim, exclusive: true)
            guard let job = try fetchJob(c, id: claim.job.id, forUpdate: true) else { throw ProvenanceError.noSuchJob(claim.job.id) }
            let recorded = try scalar("SELECT COUNT(*) FROM images WHERE job_id = \(job.id)", as: Int.self, on: c) ?? 0
            guard recorded == job.totalImages else {
                throw ProvenanceError.incomplete(job: job.id, recorded: recorded, total: job.totalImages)
            }
            try execute("UPDATE shards SET state = 'done', lease_expires_at = NULL WHERE job_id = \(job.id) AND shard = \(claim.shard)", on: c)
            try setState(c, job: job, to: .done, reason: "all images written", error: nil, now: Self.now)
        }
    }

    /// The shard is pending again for any worker; its job stays active (other shards may run).
    public func releaseShard(_ claim: ShardClaim, reason: String, refundAttempt: Bool) throws {
        try transaction { c in
            do { try checkLease(c, claim, exclusive: true) } catch is LeaseLost { return }
            try noticeWork(on: c)
            let refund = refundAttempt ? 1 : 0
            try execute("""
                UPDATE shards SET state = 'pending', worker = NULL, lease_expires_at = NULL, attempts = GREATEST(attempts - \(refund), 0)
                WHERE job_id = \(claim.job.id) AND shard = \(claim.shard)
                """, on: c)
        }
    }

    /// The shards `worker` held (it restarted): pending again with their attempt counted, or their job a poison job.
    public func releaseLeases(ofWorker worker: String, maxAttempts: Int) throws -> [Int64] {
        try transaction { c in
            let held = try rows("""
                SELECT s.job_id, s.shard, s.attempts FROM shards s JOIN jobs j ON j.id = s.job_id
                WHERE s.worker = \(worker) AND s.state = 'leased' AND j.state = 'active' ORDER BY s.job_id, s.shard FOR UPDATE OF s
                """, on: c).map { row -> (job: Int64, shard: Int, attempts: Int) in
                let r = row.makeRandomAccess()
                return (try r[0].decode(Int64.self), try r[1].decode(Int.self), try r[2].decode(Int.self))
            }
            var poisoned: [Int64] = []
            for shard in held {
                if shard.attempts >= maxAttempts, let job = try fetchJob(c, id: shard.job, forUpdate: true), job.state == .active {
                    let reason = "poison job: shard \(shard.shard) started \(shard.attempts) times without finishing (its worker died during each)"
                    try setState(c, job: job, to: .failed, reason: reason, error: reason, now: Self.now)
                    poisoned.append(job.id)
                } else if !poisoned.contains(shard.job) {
                    try execute("""
                        UPDATE shards SET state = 'pending', worker = NULL, lease_expires_at = NULL
                        WHERE job_id = \(shard.job) AND shard = \(shard.shard)
                        """, on: c)
                }
            }
            if !held.isEmpty { try noticeWork(on: c) }
            return poisoned
        }
    }

    /// A job's shards, in order.
    public func shards(jobID: Int64) throws -> [ShardRow] {
        try read { c in try rows("SELECT * FROM shards WHERE job_id = \(jobID) ORDER BY shard", on: c).map(ShardRow.init(postgres:)) }
    }

    /// A job's claims, oldest first.
    public func leases(jobID: Int64) throws -> [LeaseRow] {
        try read { c in
            try rows("SELECT * FROM leases WHERE job_id = \(jobID) ORDER BY claimed_at, shard, token", on: c).map(LeaseRow.init(postgres:))
        }
    }
}
