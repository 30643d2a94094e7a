import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresNIO
import Provenance

/// The provenance record in a PostgreSQL database that daemons on several hosts share: the same
/// tables, states and transitions as `ProvenanceStore`, with claims that never give one job to two
/// daemons (`SELECT ... FOR UPDATE SKIP LOCKED`). Every method is synchronous and safe from any
/// thread: the store holds one connection on an event loop of its own; callers take turns on it
/// (a lock) and wait for its futures on their own threads, never on the event loop. A dropped
/// connection is opened again by the next call (reads retry once on the new one).
public final class PostgresJobStore: JobStore {
    /// The database (no password).
    public let url: PostgresStoreURL
    /// This host's name as its environments record it: start-up recovery takes only the active jobs of this host.
    public let host: String
    let password: String?
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let connection = NIOLockedValueBox<PostgresConnection?>(nil)
    static let connectionIDs = NIOLockedValueBox(0)

    init(url: PostgresStoreURL, password: String?, host: String, logger: Logger) {
        self.url = url
        self.host = host
        self.password = password
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    deinit { close() }

    /// Opens the daemon's store: connects and applies the migrations it lacks (once, whichever
    /// daemon comes first). `host` is the name the daemon records in its environment.
    public static func openDaemon(url: PostgresStoreURL, password: String?, host: String = ProcessInfo.processInfo.hostName,
                                  logger: Logger = Logger(label: "diffusiond.postgres")) throws -> PostgresJobStore {
        let store = PostgresJobStore(url: url, password: password, host: host, logger: logger)
        try store.migrate()
        return store
    }

    /// Opens the store for a client (`diffusionctl`): no migrations are run; fails when none were
    /// applied or the database has migrations this version lacks.
    public static func openClient(url: PostgresStoreURL, password: String?,
                                  logger: Logger = Logger(label: "diffusionctl.postgres")) throws -> PostgresJobStore {
        let store = PostgresJobStore(url: url, password: password, host: ProcessInfo.processInfo.hostName, logger: logger)
        let applied = try store.appliedMigrations()
        if applied.isEmpty { throw ProvenanceError.unknownSchema("no migrations applied in \(url)") }
        try PostgresSchema.checkKnown(applied)
        return store
    }

    /// Closes the connection and stops the event loop; the store cannot be used after.
    public func close() {
        connection.withLockedValue { current in
            if let c = current { _ = try? c.close().wait() }
            current = nil
        }
        try? group.syncShutdownGracefully()
    }

    static var now: Double { Date().timeIntervalSince1970 }

    /// True when `error` is PostgreSQL's disk_full (SQLSTATE 53100).
    public static func isOutOfSpace(_ error: any Error) -> Bool {
        (error as? PostgresStoreError)?.sqlState == PostgresStoreError.diskFull
    }

    /// True when `error` (thrown by this store) is the server's disk_full.
    public func isOutOfSpace(_ error: any Error) -> Bool { Self.isOutOfSpace(error) }

    /// True when `error` (thrown by this store) is a dropped or refused connection (a restarting
    /// server, a cut network): the call may succeed when tried again.
    public func isUnavailable(_ error: any Error) -> Bool { (error as? PostgresStoreError)?.isUnavailable == true }

    // MARK: - Work notices

    /// The channel of `NOTIFY` that tells idle workers there is work (sent with every job inserted
    /// or made pending again, and every shard given back; delivered at commit).
    static let workChannel = "diffusiond_work"

    /// Sends the work notice inside the transaction on `c`.
    func noticeWork(on c: PostgresConnection) throws {
        try execute("SELECT pg_notify(\(Self.workChannel), '')", on: c)
    }

    /// LISTENs on a connection of its own and calls `wake` at every notice, until cancelled; a
    /// dropped connection is opened again (a second later), and a wake-up then covers what was missed.
    public func watchForWork(_ wake: @escaping @Sendable () -> Void) async throws {
        while !Task.isCancelled {
            do {
                let c = try connect()
                do {
                    try await c.listen(on: Self.workChannel) { notices in
                        wake()  // anything inserted while no one listened
                        for try await _ in notices { wake() }
                    }
                } catch {
                    try? await c.close()
                    throw error
                }
                try? await c.close()
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                logger.notice("work notices from the store interrupted; listening again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    // MARK: - Running statements

    func connect() throws -> PostgresConnection {
        var config = PostgresConnection.Configuration(host: url.host, port: url.port, username: url.user,
                                                      password: password, database: url.database, tls: .disable)
        config.options.connectTimeout = TimeAmount.seconds(10)
        let id = Self.connectionIDs.withLockedValue { n in n += 1; return n }
        do {
            return try PostgresConnection.connect(on: group.next(), configuration: config, id: id, logger: logger).wait()
        } catch {
            throw PostgresStoreError(connecting: url, error)
        }
    }

    /// Runs `body` on the store's connection (opened first when there is none or it dropped).
    /// With `retryOnDrop` (reads only), a call whose connection dropped runs once more on a new one.
    func withConnection<T>(retryOnDrop: Bool = false, _ body: (PostgresConnection) throws -> T) throws -> T {
        try connection.withLockedValue { current in
            for attempt in 0 ... 1 {
                let conn: PostgresConnection
                if let c = current, !c.isClosed {
                    conn = c
                } else {
                    if current != nil {
                        logger.notice("connection to the store closed; reconnecting", metadata: ["store": "\(url)"])
                    }
                    current = nil
                    conn = try connect()
                    current = conn
                }
                do {
                    return try body(conn)
                } catch {
                    guard conn.isClosed || PostgresStoreError.isConnectionLoss(error) else {
                        throw PostgresStoreError.passingThrough(error)
                    }
                    current = nil
                    _ = try? conn.close().wait()
                    if !retryOnDrop || attempt == 1 { throw PostgresStoreError.connectionLost(error) }
                    logger.notice("connection to the store dropped; reconnecting", metadata: ["store": "\(url)"])
                }
            }
            preconditionFailure("unreachable: the second attempt returns or throws")
        }
    }

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try withConnection { c in
            try execute("BEGIN", on: c)
            do {
                let value = try body(c)
                try execute("COMMIT", on: c)
                return value
            } catch {
                if !c.isClosed { _ = try? execute("ROLLBACK", on: c) }
                throw error
            }
        }
    }

    /// A read outside any transaction.
    func read<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try withConnection(retryOnDrop: true, body)
    }

    /// How long a statement may wait for the server: past it the connection is closed (a cut network
    /// sends no reset), the statement fails as a lost connection and the next call connects again.
    static let statementTimeout = TimeAmount.seconds(20)

    func rows(_ query: PostgresQuery, on c: PostgresConnection) throws -> [PostgresRow] {
        let watchdog = c.eventLoop.scheduleTask(in: Self.statementTimeout) { let _: EventLoopFuture<Void> = c.close() }
        defer { watchdog.cancel() }
        return try c.query(query, logger: logger).wait().rows
    }

    func execute(_ query: PostgresQuery, on c: PostgresConnection) throws {
        _ = try rows(query, on: c)
    }

    /// The first column of the first row, if any.
    func scalar<T: PostgresDecodable>(_ query: PostgresQuery, as: T.Type, on c: PostgresConnection) throws -> T? {
        guard let row = try rows(query, on: c).first else { return nil }
        return try row.makeRandomAccess()[0].decode(T.self)
    }

    // MARK: - Migrations

    /// Applies the migrations the database lacks, in order, each once, in one transaction that
    /// holds an advisory lock (two daemons starting together apply them once).
    public func migrate() throws {
        try transaction { c in
            try execute("SELECT pg_advisory_xact_lock(\(PostgresSchema.migrationLockKey))", on: c)
            try execute(PostgresQuery(unsafeSQL: PostgresSchema.migrationsTable), on: c)
            let applied = try rows("SELECT name FROM schema_migrations", on: c).map { try $0.makeRandomAccess()[0].decode(String.self) }
            try PostgresSchema.checkKnown(applied)
            for migration in PostgresSchema.migrations where !applied.contains(migration.name) {
                for statement in migration.statements { try execute(PostgresQuery(unsafeSQL: statement), on: c) }
                try execute("INSERT INTO schema_migrations (name, applied_at) VALUES (\(migration.name), \(Self.now))", on: c)
                logger.info("store migration applied", metadata: ["migration": "\(migration.name)", "store": "\(url)"])
            }
        }
    }

    /// The names of the applied migrations, sorted (empty when there is no `schema_migrations`).
    public func appliedMigrations() throws -> [String] {
        try read { c in
            let exists = try scalar("SELECT to_regclass('schema_migrations') IS NOT NULL", as: Bool.self, on: c) ?? false
            guard exists else { return [] }
            return try rows("SELECT name FROM schema_migrations ORDER BY name", on: c)
                .map { try $0.makeRandomAccess()[0].decode(String.self) }
        }
    }
}
