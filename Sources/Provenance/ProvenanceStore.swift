import Foundation
import GRDB

/// Errors of the provenance store.
public enum ProvenanceError: Error, CustomStringConvertible, Sendable {
    case noDatabase(String)
    case unknownSchema(String)
    case noSuchJob(Int64)
    case invalidTransition(job: Int64, from: JobState, to: JobState)
    /// `retry` of a job that is not failed or canceled, or that never had a valid spec.
    case notRetryable(job: Int64, why: String)
    /// A write under a claim for an image index outside the claim's range.
    case outsideClaim(job: Int64, index: Int, claim: String)
    /// An image index recorded already, with other bytes than the row being recorded.
    case alreadyRecorded(job: Int64, index: Int)
    /// `completeJob` of a job whose images are not all recorded.
    case incomplete(job: Int64, recorded: Int, total: Int)

    public var description: String {
        switch self {
        case let .noDatabase(path): return "no database at \(path) (has diffusiond run yet?)"
        case let .unknownSchema(what): return "database schema not understood by this version: \(what)"
        case let .noSuchJob(id): return "no job \(id)"
        case let .invalidTransition(job, from, to): return "job \(job): cannot go from \(from.rawValue) to \(to.rawValue)"
        case let .notRetryable(job, why): return "job \(job) cannot be retried: \(why)"
        case let .outsideClaim(job, index, claim): return "job \(job): image \(index) is outside the claimed \(claim)"
        case let .alreadyRecorded(job, index): return "job \(job): image \(index) is recorded already, with other bytes"
        case let .incomplete(job, recorded, total): return "job \(job) cannot be done: \(recorded) of its \(total) images are recorded"
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
}

extension ProvenanceStore: JobStore {
    public func isOutOfSpace(_ error: any Error) -> Bool { Self.isOutOfSpace(error) }
    /// Never: the SQLite file is local (a locked database waits out its busy timeout instead).
    public func isUnavailable(_ error: any Error) -> Bool { false }
}
