import Digests
import NIOCore
import PostgresNIO
import Provenance

/// The PostgreSQL store: jobs and their transitions, with the semantics of `ProvenanceStore+Jobs.swift`.
extension PostgresJobStore {
    /// Inserts a job with its first transition; returns the row.
    @discardableResult
    public func insertJob(_ job: NewJob) throws -> JobRow {
        try transaction { c in
            let now = Self.now
            let finished: Double? = job.state.isFinal ? now : nil
            let query: PostgresQuery = """
                INSERT INTO jobs (name, spool_name, source_name, content, content_sha256, spec, state, priority,
                                  total_images, error, created_at, updated_at, finished_at)
                VALUES (\(job.name), \(job.spoolName), \(job.sourceName), \(ByteBuffer(bytes: job.content)),
                        \(SHA256Hex.of(job.content)), \(job.spec), \(job.state.rawValue), \(job.priority),
                        \(job.totalImages), \(job.error), \(now), \(now), \(finished))
                RETURNING id
                """
            guard let id = try scalar(query, as: Int64.self, on: c) else { throw ProvenanceError.unknownSchema("INSERT returned no id") }
            try addTransition(c, id: id, from: nil, to: job.state, reason: job.error ?? "received")
            return try fetchJob(c, id: id)!
        }
    }

    /// Records a transition; one to pending (a new job, a requeue, a retry) tells idle workers.
    func addTransition(_ c: PostgresConnection, id: Int64, from: JobState?, to: JobState, reason: String?) throws {
        try execute("""
            INSERT INTO job_transitions (job_id, from_state, to_state, at, reason)
            VALUES (\(id), \(from?.rawValue), \(to.rawValue), \(Self.now), \(reason))
            """, on: c)
        if to == .pending { try noticeWork(on: c) }
    }

    /// The job row; `forUpdate` locks it until the transaction ends.
    func fetchJob(_ c: PostgresConnection, id: Int64, forUpdate: Bool = false) throws -> JobRow? {
        let lock = forUpdate ? " FOR UPDATE" : ""
        let query: PostgresQuery = "SELECT \(unescaped: JobRow.postgresColumns) FROM jobs WHERE id = \(id)\(unescaped: lock)"
        return try rows(query, on: c).first.map(JobRow.init(postgres:))
    }

    func fetchJobs(_ query: PostgresQuery, on c: PostgresConnection) throws -> [JobRow] {
        try rows(query, on: c).map(JobRow.init(postgres:))
    }

    /// The job with this id, if any.
    public func job(id: Int64) throws -> JobRow? {
        try read { c in try fetchJob(c, id: id) }
    }

    /// The job claimed under this file name in spool/active, if any.
    public func job(spoolName: String) throws -> JobRow? {
        try read { c in
            try fetchJobs("SELECT \(unescaped: JobRow.postgresColumns) FROM jobs WHERE spool_name = \(spoolName)", on: c).first
        }
    }

    /// The job file exactly as submitted.
    public func jobContent(id: Int64) throws -> [UInt8]? {
        try read { c in
            try scalar("SELECT content FROM jobs WHERE id = \(id)", as: ByteBuffer.self, on: c).map { Array($0.readableBytesView) }
        }
    }

    /// Jobs in the given states (all when nil), newest first.
    public func jobs(states: [JobState]? = nil, limit: Int = 100) throws -> [JobRow] {
        try read { c in
            if let states {
                return try fetchJobs("""
                    SELECT \(unescaped: JobRow.postgresColumns) FROM jobs WHERE state = ANY(\(states.map(\.rawValue)))
                    ORDER BY id DESC LIMIT \(limit)
                    """, on: c)
            }
            return try fetchJobs("SELECT \(unescaped: JobRow.postgresColumns) FROM jobs ORDER BY id DESC LIMIT \(limit)", on: c)
        }
    }

    /// The pending jobs in the order they will run: priority (higher first), then arrival.
    public func queue(limit: Int? = nil) throws -> [JobRow] {
        try read { c in
            try fetchJobs("""
                SELECT \(unescaped: JobRow.postgresColumns) FROM jobs WHERE state = 'pending'
                ORDER BY priority DESC, id ASC LIMIT \(limit)
                """, on: c)
        }
    }

    /// How many jobs are pending.
    public func queueLength() throws -> Int {
        try read { c in try scalar("SELECT COUNT(*) FROM jobs WHERE state = 'pending'", as: Int.self, on: c) ?? 0 }
    }

    /// Starts the next job in queue order (see `claim`), in one transaction: the row is taken with
    /// `FOR UPDATE SKIP LOCKED`, so a job another daemon is claiming at the same moment is passed
    /// over, never claimed twice.
    public func claimNext(maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome? {
        try transaction { c in
            guard let next = try fetchJobs("""
                SELECT \(unescaped: JobRow.postgresColumns) FROM jobs WHERE state = 'pending'
                ORDER BY priority DESC, id ASC LIMIT 1 FOR UPDATE SKIP LOCKED
                """, on: c).first else { return nil }
            return try claimLocked(c, job: next, maxAttempts: maxAttempts, environmentID: environmentID)
        }
    }

    /// Moves a pending job to active and counts the attempt, in one transaction; a job that used
    /// `maxAttempts` is failed (a poison job), one with a cancel request is canceled.
    public func claim(jobID: Int64, maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome {
        try transaction { c in
            guard let job = try fetchJob(c, id: jobID, forUpdate: true), job.state == .pending else { return .notPending }
            return try claimLocked(c, job: job, maxAttempts: maxAttempts, environmentID: environmentID)
        }
    }

    /// The claim of a pending job whose row this transaction has locked.
    func claimLocked(_ c: PostgresConnection, job: JobRow, maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome {
        let now = Self.now
        if job.cancelRequested {
            try setState(c, job: job, to: .canceled, reason: "canceled before start", error: nil, now: now)
            return .canceled(try fetchJob(c, id: job.id)!)
        }
        if job.attempts >= maxAttempts {
            let reason = "poison job: started \(job.attempts) times without finishing"
            try setState(c, job: job, to: .failed, reason: reason, error: reason, now: now)
            return .poisoned(try fetchJob(c, id: job.id)!)
        }
        try execute("""
            UPDATE jobs SET state = 'active', attempts = attempts + 1, updated_at = \(now),
                   started_at = COALESCE(started_at, \(now)), environment_id = COALESCE(\(environmentID), environment_id)
            WHERE id = \(job.id)
            """, on: c)
        try addTransition(c, id: job.id, from: .pending, to: .active, reason: "attempt \(job.attempts + 1)")
        return .claimed(try fetchJob(c, id: job.id)!)
    }

    func setState(_ c: PostgresConnection, job: JobRow, to: JobState, reason: String?, error: String?, now: Double) throws {
        let finished: Double? = to.isFinal ? now : nil
        try execute("""
            UPDATE jobs SET state = \(to.rawValue), updated_at = \(now), error = COALESCE(\(error), error),
                   finished_at = COALESCE(\(finished), finished_at)
            WHERE id = \(job.id)
            """, on: c)
        try addTransition(c, id: job.id, from: job.state, to: to, reason: reason)
    }

    /// Changes a job's state (recording the transition). Final states are never left.
    public func transition(jobID: Int64, to: JobState, reason: String? = nil, error: String? = nil) throws {
        try transaction { c in
            guard let job = try fetchJob(c, id: jobID, forUpdate: true) else { throw ProvenanceError.noSuchJob(jobID) }
            if job.state.isFinal { throw ProvenanceError.invalidTransition(job: jobID, from: job.state, to: to) }
            try setState(c, job: job, to: to, reason: reason, error: error, now: Self.now)
        }
    }

    /// Puts an active job back in the queue; with `refundAttempt` the attempt does not count.
    public func requeue(jobID: Int64, reason: String, refundAttempt: Bool) throws {
        try transaction { c in
            guard let job = try fetchJob(c, id: jobID, forUpdate: true) else { throw ProvenanceError.noSuchJob(jobID) }
            guard job.state == .active else { return }
            try setState(c, job: job, to: .pending, reason: reason, error: nil, now: Self.now)
            if refundAttempt {
                try execute("UPDATE jobs SET attempts = GREATEST(attempts - 1, 0) WHERE id = \(jobID)", on: c)
            }
        }
    }

    /// Puts a failed or canceled job back in the queue with its attempts at zero (`diffusionctl retry`).
    public func retry(jobID: Int64, reason: String) throws -> JobRow {
        try transaction { c in
            guard let job = try fetchJob(c, id: jobID, forUpdate: true) else { throw ProvenanceError.noSuchJob(jobID) }
            guard job.state == .failed || job.state == .canceled else {
                throw ProvenanceError.notRetryable(job: jobID, why: "it is \(job.state.rawValue); only failed or canceled jobs are retried")
            }
            guard job.spec != nil else {
                throw ProvenanceError.notRetryable(job: jobID, why: "its job file was rejected (\(job.error ?? "invalid")); fix the file and submit it again")
            }
            try execute("""
                UPDATE jobs SET state = 'pending', attempts = 0, cancel_requested = 0, error = NULL, finished_at = NULL,
                       updated_at = \(Self.now) WHERE id = \(jobID)
                """, on: c)
            try addTransition(c, id: jobID, from: job.state, to: .pending, reason: reason)
            return try fetchJob(c, id: jobID)!
        }
    }

    /// At start: every job still `active` that this host claimed whole (its environment names `host`,
    /// or it was claimed with no environment; a job cut into shards is left to the leases of its
    /// shards, `releaseLeases(ofWorker:)`) was interrupted; those that used `maxAttempts` fail as
    /// poison jobs, the others go back to pending (their attempt stays counted). The active jobs
    /// of other hosts are theirs: they run now, or their daemon recovers them when it starts.
    public func recoverInterruptedJobs(maxAttempts: Int) throws -> (requeued: [Int64], poisoned: [Int64]) {
        try transaction { c in
            let active = try fetchJobs("""
                SELECT \(unescaped: JobRow.postgresColumns) FROM jobs WHERE state = 'active'
                AND (environment_id IS NULL OR environment_id IN (SELECT id FROM environment WHERE host = \(host)))
                AND NOT EXISTS (SELECT 1 FROM shards s WHERE s.job_id = jobs.id)
                ORDER BY id FOR UPDATE
                """, on: c)
            var requeued: [Int64] = [], poisoned: [Int64] = []
            let now = Self.now
            for job in active {
                if job.attempts >= maxAttempts {
                    let reason = "poison job: \(job.attempts) attempts did not finish (the daemon died during each)"
                    try setState(c, job: job, to: .failed, reason: reason, error: reason, now: now)
                    poisoned.append(job.id)
                } else {
                    try setState(c, job: job, to: .pending, reason: "interrupted (daemon restarted)", error: nil, now: now)
                    requeued.append(job.id)
                }
            }
            return (requeued, poisoned)
        }
    }

    /// Records the output directory and image count chosen when a job starts.
    public func setOutput(jobID: Int64, outputDir: String, totalImages: Int) throws {
        try transaction { c in
            try execute("""
                UPDATE jobs SET output_dir = \(outputDir), total_images = \(totalImages), updated_at = \(Self.now)
                WHERE id = \(jobID)
                """, on: c)
        }
    }

    /// Asks for a job to stop: a pending job is canceled at once, an active one is flagged.
    public func requestCancel(jobID: Int64) throws -> CancelOutcome {
        try transaction { c in
            guard let job = try fetchJob(c, id: jobID, forUpdate: true) else { throw ProvenanceError.noSuchJob(jobID) }
            switch job.state {
            case .pending:
                try execute("UPDATE jobs SET cancel_requested = 1 WHERE id = \(jobID)", on: c)
                try setState(c, job: job, to: .canceled, reason: "canceled by user", error: nil, now: Self.now)
                return .canceled
            case .active:
                try execute("UPDATE jobs SET cancel_requested = 1, updated_at = \(Self.now) WHERE id = \(jobID)", on: c)
                return .requested
            case .done, .failed, .canceled:
                return .alreadyFinished
            }
        }
    }

    /// True when a cancel of the job was asked for.
    public func isCancelRequested(jobID: Int64) throws -> Bool {
        try read { c in
            try scalar("SELECT cancel_requested FROM jobs WHERE id = \(jobID)", as: Int.self, on: c).map { $0 != 0 } ?? false
        }
    }

    /// A job's state changes, oldest first.
    public func transitions(jobID: Int64) throws -> [TransitionRow] {
        try read { c in
            try rows("SELECT * FROM job_transitions WHERE job_id = \(jobID) ORDER BY id", on: c).map(TransitionRow.init(postgres:))
        }
    }
}
