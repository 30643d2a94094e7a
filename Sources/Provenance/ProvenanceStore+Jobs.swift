import Digests
import Foundation
import GRDB

/// The SQLite store: jobs and their transitions.
extension ProvenanceStore {
    // MARK: - Jobs

    /// Inserts a job with its first transition; returns the row.
    @discardableResult
    public func insertJob(_ job: NewJob) throws -> JobRow {
        try writer.write { db in
            let now = Self.now
            try db.execute(sql: """
                INSERT INTO jobs (name, spool_name, source_name, content, content_sha256, spec, state, priority,
                                  total_images, error, created_at, updated_at, finished_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [job.name, job.spoolName, job.sourceName, Data(job.content),
                                 SHA256Hex.of(job.content), job.spec, job.state.rawValue, job.priority,
                                 job.totalImages, job.error, now, now, job.state.isFinal ? now : nil])
            let id = db.lastInsertedRowID
            try Self.addTransition(db, id: id, from: nil, to: job.state, reason: job.error ?? "received")
            return try Self.fetchJob(db, id: id)!
        }
    }

    static func addTransition(_ db: Database, id: Int64, from: JobState?, to: JobState, reason: String?) throws {
        try db.execute(sql: "INSERT INTO job_transitions (job_id, from_state, to_state, at, reason) VALUES (?, ?, ?, ?, ?)",
                       arguments: [id, from?.rawValue, to.rawValue, now, reason])
    }

    static func fetchJob(_ db: Database, id: Int64) throws -> JobRow? {
        try JobRow.fetchOne(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE id = ?", arguments: [id])
    }

    public func job(id: Int64) throws -> JobRow? {
        try writer.read { db in try Self.fetchJob(db, id: id) }
    }

    public func job(spoolName: String) throws -> JobRow? {
        try writer.read { db in
            try JobRow.fetchOne(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE spool_name = ?", arguments: [spoolName])
        }
    }

    /// The job file exactly as submitted.
    public func jobContent(id: Int64) throws -> [UInt8]? {
        try writer.read { db in
            try Data.fetchOne(db, sql: "SELECT content FROM jobs WHERE id = ?", arguments: [id]).map { [UInt8]($0) }
        }
    }

    /// Jobs in the given states (all when nil), newest first.
    public func jobs(states: [JobState]? = nil, limit: Int = 100) throws -> [JobRow] {
        try writer.read { db in
            if let states {
                let marks = states.map { _ in "?" }.joined(separator: ", ")
                return try JobRow.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE state IN (\(marks)) ORDER BY id DESC LIMIT ?",
                                        arguments: StatementArguments(states.map(\.rawValue) + [String(limit)]))
            }
            return try JobRow.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs ORDER BY id DESC LIMIT ?", arguments: [limit])
        }
    }

    /// The pending jobs in the order they will run: priority (higher first), then arrival;
    /// the first `limit` of them when given.
    public func queue(limit: Int? = nil) throws -> [JobRow] {
        try writer.read { db in
            try JobRow.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE state = 'pending' ORDER BY priority DESC, id ASC LIMIT ?",
                             arguments: [limit ?? -1])
        }
    }

    /// How many jobs are pending.
    public func queueLength() throws -> Int {
        try writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE state = 'pending'") ?? 0 }
    }

    /// Starts the next job in queue order (see `claim`), skipping none.
    public func claimNext(maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome? {
        guard let next = try queue(limit: 1).first else { return nil }
        return try claim(jobID: next.id, maxAttempts: maxAttempts, environmentID: environmentID)
    }

    /// Moves a pending job to active and counts the attempt, in one transaction.
    /// A job that has already been started `maxAttempts` times without
    /// finishing is failed instead (a poison job); a job with a cancel request
    /// is canceled.
    public func claim(jobID: Int64, maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome {
        try writer.write { db in try Self.claimInTransaction(db, jobID: jobID, maxAttempts: maxAttempts, environmentID: environmentID) }
    }

    /// The claim of `claim(jobID:)`, inside the caller's transaction.
    static func claimInTransaction(_ db: Database, jobID: Int64, maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome {
        guard let job = try Self.fetchJob(db, id: jobID), job.state == .pending else { return .notPending }
        let now = Self.now
        if job.cancelRequested {
            try Self.setState(db, job: job, to: .canceled, reason: "canceled before start", error: nil, now: now)
            return .canceled(try Self.fetchJob(db, id: jobID)!)
        }
        if job.attempts >= maxAttempts {
            let reason = "poison job: started \(job.attempts) times without finishing"
            try Self.setState(db, job: job, to: .failed, reason: reason, error: reason, now: now)
            return .poisoned(try Self.fetchJob(db, id: jobID)!)
        }
        try db.execute(sql: """
            UPDATE jobs SET state = 'active', attempts = attempts + 1, updated_at = ?,
                   started_at = COALESCE(started_at, ?), environment_id = COALESCE(?, environment_id)
            WHERE id = ?
            """, arguments: [now, now, environmentID, jobID])
        try Self.addTransition(db, id: jobID, from: .pending, to: .active, reason: "attempt \(job.attempts + 1)")
        return .claimed(try Self.fetchJob(db, id: jobID)!)
    }

    static func setState(_ db: Database, job: JobRow, to: JobState, reason: String?, error: String?, now: Double) throws {
        try db.execute(sql: """
            UPDATE jobs SET state = ?, updated_at = ?, error = COALESCE(?, error),
                   finished_at = CASE WHEN ? THEN ? ELSE finished_at END
            WHERE id = ?
            """, arguments: [to.rawValue, now, error, to.isFinal, now, job.id])
        try addTransition(db, id: job.id, from: job.state, to: to, reason: reason)
    }

    /// Changes a job's state (recording the transition). Final states are never left.
    public func transition(jobID: Int64, to: JobState, reason: String? = nil, error: String? = nil) throws {
        try writer.write { db in
            guard let job = try Self.fetchJob(db, id: jobID) else { throw ProvenanceError.noSuchJob(jobID) }
            if job.state.isFinal { throw ProvenanceError.invalidTransition(job: jobID, from: job.state, to: to) }
            try Self.setState(db, job: job, to: to, reason: reason, error: error, now: Self.now)
        }
    }

    /// Puts an active job back in the queue. With `refundAttempt` (a graceful
    /// stop, not a crash) the attempt does not count towards the poison limit.
    public func requeue(jobID: Int64, reason: String, refundAttempt: Bool) throws {
        try writer.write { db in
            guard let job = try Self.fetchJob(db, id: jobID) else { throw ProvenanceError.noSuchJob(jobID) }
            guard job.state == .active else { return }
            try Self.setState(db, job: job, to: .pending, reason: reason, error: nil, now: Self.now)
            if refundAttempt {
                try db.execute(sql: "UPDATE jobs SET attempts = MAX(attempts - 1, 0) WHERE id = ?", arguments: [jobID])
            }
        }
    }

    /// Puts a failed or canceled job back in the queue (`diffusionctl retry`): the one way out
    /// of a final state. Its attempts start again from zero; its recorded images stay, so the
    /// runner resumes at the first unrecorded one with the same spec and seed.
    public func retry(jobID: Int64, reason: String) throws -> JobRow {
        try writer.write { db in
            guard let job = try Self.fetchJob(db, id: jobID) else { throw ProvenanceError.noSuchJob(jobID) }
            guard job.state == .failed || job.state == .canceled else {
                throw ProvenanceError.notRetryable(job: jobID, why: "it is \(job.state.rawValue); only failed or canceled jobs are retried")
            }
            guard job.spec != nil else {
                throw ProvenanceError.notRetryable(job: jobID, why: "its job file was rejected (\(job.error ?? "invalid")); fix the file and submit it again")
            }
            try db.execute(sql: """
                UPDATE jobs SET state = 'pending', attempts = 0, cancel_requested = 0, error = NULL, finished_at = NULL,
                       updated_at = ? WHERE id = ?
                """, arguments: [Self.now, jobID])
            try Self.addTransition(db, id: jobID, from: job.state, to: .pending, reason: reason)
            return try Self.fetchJob(db, id: jobID)!
        }
    }

    /// At start: every job still `active` was interrupted by a crash. Those that
    /// have used `maxAttempts` attempts are failed as poison jobs; the others go
    /// back to pending (their attempt stays counted).
    public func recoverInterruptedJobs(maxAttempts: Int) throws -> (requeued: [Int64], poisoned: [Int64]) {
        try writer.write { db in
            let active = try JobRow.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE state = 'active'")
            var requeued: [Int64] = [], poisoned: [Int64] = []
            let now = Self.now
            for job in active {
                if job.attempts >= maxAttempts {
                    let reason = "poison job: \(job.attempts) attempts did not finish (the daemon died during each)"
                    try Self.setState(db, job: job, to: .failed, reason: reason, error: reason, now: now)
                    poisoned.append(job.id)
                } else {
                    try Self.setState(db, job: job, to: .pending, reason: "interrupted (daemon restarted)", error: nil, now: now)
                    requeued.append(job.id)
                }
            }
            return (requeued, poisoned)
        }
    }

    /// Records the output directory and image count chosen when a job starts.
    public func setOutput(jobID: Int64, outputDir: String, totalImages: Int) throws {
        try writer.write { db in
            try db.execute(sql: "UPDATE jobs SET output_dir = ?, total_images = ?, updated_at = ? WHERE id = ?",
                           arguments: [outputDir, totalImages, Self.now, jobID])
        }
    }

    /// Asks for a job to stop: a pending job is canceled at once, an active one
    /// is flagged and stops at the runner's next batch boundary.
    public func requestCancel(jobID: Int64) throws -> CancelOutcome {
        try writer.write { db in
            guard let job = try Self.fetchJob(db, id: jobID) else { throw ProvenanceError.noSuchJob(jobID) }
            switch job.state {
            case .pending:
                try db.execute(sql: "UPDATE jobs SET cancel_requested = 1 WHERE id = ?", arguments: [jobID])
                try Self.setState(db, job: job, to: .canceled, reason: "canceled by user", error: nil, now: Self.now)
                return .canceled
            case .active:
                try db.execute(sql: "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                               arguments: [Self.now, jobID])
                return .requested
            case .done, .failed, .canceled:
                return .alreadyFinished
            }
        }
    }

    public func isCancelRequested(jobID: Int64) throws -> Bool {
        try writer.read { db in
            try Bool.fetchOne(db, sql: "SELECT cancel_requested FROM jobs WHERE id = ?", arguments: [jobID]) ?? false
        }
    }

    public func transitions(jobID: Int64) throws -> [TransitionRow] {
        try writer.read { db in
            try TransitionRow.fetchAll(db, sql: "SELECT * FROM job_transitions WHERE job_id = ? ORDER BY id", arguments: [jobID])
        }
    }
}
