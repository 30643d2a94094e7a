import Foundation
import GRDB

/// Errors of the provenance store.
public enum ProvenanceError: Error, CustomStringConvertible, Sendable {
    case noDatabase(String)
    case unknownSchema(String)
    case noSuchJob(Int64)
    case invalidTransition(job: Int64, from: JobState, to: JobState)

    public var description: String {
        switch self {
        case let .noDatabase(path): return "no database at \(path) (has diffusiond run yet?)"
        case let .unknownSchema(what): return "database schema not understood by this version: \(what)"
        case let .noSuchJob(id): return "no job \(id)"
        case let .invalidTransition(job, from, to): return "job \(job): cannot go from \(from.rawValue) to \(to.rawValue)"
        }
    }
}

/// The outcome of trying to start a pending job.
public enum ClaimOutcome: Sendable, Equatable {
    /// The job is now active; its attempts count includes this one.
    case claimed(JobRow)
    /// The job had already used up its attempts and is now failed.
    case poisoned(JobRow)
    /// A cancel was requested; the job is now canceled.
    case canceled(JobRow)
    /// The job was not pending (someone else took it, or it finished).
    case notPending
}

/// The outcome of `requestCancel`.
public enum CancelOutcome: String, Sendable, Codable {
    /// A pending job, canceled at once.
    case canceled
    /// A running job: the runner stops at its next batch boundary.
    case requested
    /// Already finished; nothing to do.
    case alreadyFinished
}

/// The SQLite record of everything the daemon did. All methods are synchronous
/// and safe to call from any thread (GRDB serialises writes).
public final class ProvenanceStore: Sendable {
    /// The database connection(s): a `DatabasePool` (WAL) in the daemon, a
    /// `DatabaseQueue` in short-lived clients.
    public let writer: any DatabaseWriter
    /// The database file, or ":memory:".
    public let path: String

    init(writer: any DatabaseWriter, path: String) {
        self.writer = writer
        self.path = path
    }

    static func configuration(readonly: Bool = false) -> Configuration {
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.foreignKeysEnabled = true
        config.readonly = readonly
        config.prepareDatabase { db in
            if !db.configuration.readonly {
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
            }
        }
        return config
    }

    static func migrator() -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        Schema.registerAll(&migrator)
        return migrator
    }

    /// Opens (creating if needed) the daemon's database: WAL, busy timeout 5 s,
    /// migrations applied.
    public static func openDaemon(path: String) throws -> ProvenanceStore {
        let pool = try DatabasePool(path: path, configuration: configuration())
        try migrator().migrate(pool)
        return ProvenanceStore(writer: pool, path: path)
    }

    /// Opens an existing database for a client (the CLI): no migrations are run;
    /// fails when the file is missing or has migrations this version lacks.
    public static func openClient(path: String) throws -> ProvenanceStore {
        guard FileManager.default.fileExists(atPath: path) else { throw ProvenanceError.noDatabase(path) }
        let queue = try DatabaseQueue(path: path, configuration: configuration())
        let store = ProvenanceStore(writer: queue, path: path)
        let applied = try queue.read { db in try migrator().appliedIdentifiers(db) }
        let known = Set(Schema.migrationNames)
        if let unknown = applied.first(where: { !known.contains($0) }) {
            throw ProvenanceError.unknownSchema("migration \(unknown)")
        }
        if applied.isEmpty { throw ProvenanceError.unknownSchema("no migrations applied") }
        return store
    }

    /// A migrated in-memory database, for tests.
    public static func inMemory() throws -> ProvenanceStore {
        let queue = try DatabaseQueue(configuration: configuration())
        try migrator().migrate(queue)
        return ProvenanceStore(writer: queue, path: ":memory:")
    }

    /// Applies any pending migrations (idempotent).
    public func migrate() throws {
        try Self.migrator().migrate(writer)
    }

    /// The identifiers of the applied migrations.
    public func appliedMigrations() throws -> [String] {
        try writer.read { db in try Self.migrator().appliedIdentifiers(db) }.sorted()
    }

    static var now: Double { Date().timeIntervalSince1970 }

    /// True when `error` is SQLite's "database or disk is full".
    public static func isOutOfSpace(_ error: any Error) -> Bool {
        (error as? DatabaseError)?.resultCode == .SQLITE_FULL
    }

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
        try Row.fetchOne(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE id = ?", arguments: [id]).map(JobRow.init(row:))
    }

    public func job(id: Int64) throws -> JobRow? {
        try writer.read { db in try Self.fetchJob(db, id: id) }
    }

    public func job(spoolName: String) throws -> JobRow? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE spool_name = ?", arguments: [spoolName])
                .map(JobRow.init(row:))
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
                return try Row.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE state IN (\(marks)) ORDER BY id DESC LIMIT ?",
                                        arguments: StatementArguments(states.map(\.rawValue) + [String(limit)]))
                    .map(JobRow.init(row:))
            }
            return try Row.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs ORDER BY id DESC LIMIT ?", arguments: [limit])
                .map(JobRow.init(row:))
        }
    }

    /// The pending jobs in the order they will run: priority (higher first), then arrival;
    /// the first `limit` of them when given.
    public func queue(limit: Int? = nil) throws -> [JobRow] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE state = 'pending' ORDER BY priority DESC, id ASC LIMIT ?",
                             arguments: [limit ?? -1])
                .map(JobRow.init(row:))
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
        try writer.write { db in
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

    /// At start: every job still `active` was interrupted by a crash. Those that
    /// have used `maxAttempts` attempts are failed as poison jobs; the others go
    /// back to pending (their attempt stays counted).
    public func recoverInterruptedJobs(maxAttempts: Int) throws -> (requeued: [Int64], poisoned: [Int64]) {
        try writer.write { db in
            let active = try Row.fetchAll(db, sql: "SELECT \(JobRow.columns) FROM jobs WHERE state = 'active'").map(JobRow.init(row:))
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
            try Row.fetchAll(db, sql: "SELECT * FROM job_transitions WHERE job_id = ? ORDER BY id", arguments: [jobID]).map { row in
                TransitionRow(jobID: row["job_id"], from: (row["from_state"] as String?).flatMap(JobState.init(rawValue:)),
                              to: JobState(rawValue: row["to_state"]) ?? .failed, at: row["at"], reason: row["reason"])
            }
        }
    }

    // MARK: - Images

    /// Records an image whose file has already been renamed into place (and its
    /// directory fsynced). A crash between the rename and this call leaves a
    /// file without a row; `imagesToReconcile` finds those at the next start.
    public func recordImage(_ image: ImageRow) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT INTO images (job_id, idx, seed, class_index, class_name, path, format, width, height,
                                    byte_size, sha256, record, committed_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [image.jobID, image.index, Int64(bitPattern: image.seed), image.classIndex,
                                 image.className, image.path, image.format, image.width, image.height,
                                 image.byteSize, image.sha256, image.record, image.committedAt])
        }
    }

    public func images(jobID: Int64) throws -> [ImageRow] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM images WHERE job_id = ? ORDER BY idx", arguments: [jobID]).map(ImageRow.init(row:))
        }
    }

    public func image(sha256: String) throws -> [ImageRow] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM images WHERE sha256 = ? ORDER BY id", arguments: [sha256]).map(ImageRow.init(row:))
        }
    }

    public func image(jobID: Int64, index: Int) throws -> ImageRow? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM images WHERE job_id = ? AND idx = ?", arguments: [jobID, index])
                .map(ImageRow.init(row:))
        }
    }

    public func recordedIndices(jobID: Int64) throws -> Set<Int> {
        try writer.read { db in
            Set(try Int.fetchAll(db, sql: "SELECT idx FROM images WHERE job_id = ?", arguments: [jobID]))
        }
    }

    public func imageCount(jobID: Int64) throws -> Int {
        try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE job_id = ?", arguments: [jobID]) ?? 0
        }
    }

    /// The first index in 0 ..< total that has no image row (where a resumed
    /// job starts), or nil when all are recorded.
    public func firstUnrecordedIndex(jobID: Int64, total: Int) throws -> Int? {
        try writer.read { db in
            // The smallest idx in 0..<total not present: 0 if 0 is missing, else
            // the smallest recorded idx + 1 whose successor is missing.
            let hasZero = try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM images WHERE job_id = ? AND idx = 0)",
                                            arguments: [jobID]) ?? false
            if !hasZero { return total > 0 ? 0 : nil }
            let gap = try Int.fetchOne(db, sql: """
                SELECT MIN(a.idx) + 1 FROM images a
                WHERE a.job_id = ? AND NOT EXISTS (SELECT 1 FROM images b WHERE b.job_id = a.job_id AND b.idx = a.idx + 1)
                """, arguments: [jobID]) ?? 0
            return gap < total ? gap : nil
        }
    }

    /// Indices in 0 ..< total without a row, ascending.
    public func unrecordedIndices(jobID: Int64, total: Int) throws -> [Int] {
        let done = try recordedIndices(jobID: jobID)
        return (0 ..< total).filter { !done.contains($0) }
    }

    /// Deletes image rows (whose files were found missing at reconciliation).
    public func deleteImages(jobID: Int64, indices: [Int]) throws {
        guard !indices.isEmpty else { return }
        try writer.write { db in
            for i in indices {
                try db.execute(sql: "DELETE FROM images WHERE job_id = ? AND idx = ?", arguments: [jobID, i])
            }
        }
    }

    // MARK: - Models, metrics, environment

    public func recordModelLoad(_ load: ModelLoadRow) throws {
        try writer.write { db in
            try db.execute(sql: "INSERT INTO models (name, content_hash, loaded_at, load_seconds, bytes) VALUES (?, ?, ?, ?, ?)",
                           arguments: [load.name, load.contentHash, load.loadedAt, load.loadSeconds, load.bytes])
        }
    }

    /// Every load, newest first.
    public func modelLoads(limit: Int = 100) throws -> [ModelLoadRow] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM models ORDER BY id DESC LIMIT ?", arguments: [limit]).map { row in
                ModelLoadRow(name: row["name"], contentHash: row["content_hash"], loadedAt: row["loaded_at"],
                             loadSeconds: row["load_seconds"], bytes: row["bytes"])
            }
        }
    }

    public func recordMetric(_ metric: MetricRow) throws {
        try writer.write { db in
            try db.execute(sql: "INSERT INTO metrics (job_id, name, value, n, details, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [metric.jobID, metric.name, metric.value, metric.n, metric.details, metric.recordedAt])
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
            try Row.fetchAll(db, sql: "SELECT * FROM metrics WHERE job_id = ? ORDER BY id", arguments: [jobID]).map { row in
                MetricRow(jobID: row["job_id"], name: row["name"], value: row["value"], n: row["n"],
                          details: row["details"], recordedAt: row["recorded_at"])
            }
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
            try Row.fetchOne(db, sql: "SELECT * FROM environment WHERE id = ?", arguments: [id]).map { row in
                EnvironmentRow(id: row["id"], recordedAt: row["recorded_at"], version: row["version"], host: row["host"],
                               kernel: row["kernel"],
                               kernelVersions: jsonValue([String: String].self, row["kernel_versions"]) ?? [:],
                               threads: row["threads"], details: jsonValue([String: String].self, row["details"]) ?? [:])
            }
        }
    }

    // MARK: - Heartbeat

    public func writeHeartbeat(_ hb: HeartbeatRow) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT INTO heartbeat (id, pid, started_at, updated_at, status, active_job_id, images_done, images_total,
                                       images_per_second, cached_models)
                VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,
                    updated_at = excluded.updated_at, status = excluded.status, active_job_id = excluded.active_job_id,
                    images_done = excluded.images_done, images_total = excluded.images_total,
                    images_per_second = excluded.images_per_second, cached_models = excluded.cached_models
                """, arguments: [hb.pid, hb.startedAt, hb.updatedAt, hb.status, hb.activeJobID, hb.imagesDone,
                                 hb.imagesTotal, hb.imagesPerSecond, jsonText(hb.cachedModels)])
        }
    }

    public func heartbeat() throws -> HeartbeatRow? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM heartbeat WHERE id = 1").map { row in
                HeartbeatRow(pid: row["pid"], startedAt: row["started_at"], updatedAt: row["updated_at"],
                             status: row["status"], activeJobID: row["active_job_id"], imagesDone: row["images_done"],
                             imagesTotal: row["images_total"], imagesPerSecond: row["images_per_second"],
                             cachedModels: jsonValue([String].self, row["cached_models"]) ?? [])
            }
        }
    }
}
