import DaemonTestSupport
import Foundation
import Provenance
import ProvenancePostgres
import Testing

/// Collects values from several threads.
final class Collected<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Int: [T]] = [:]
    func append(_ item: T, from worker: Int) { lock.lock(); items[worker, default: []].append(item); lock.unlock() }
    func of(_ worker: Int) -> [T] { lock.lock(); defer { lock.unlock() }; return items[worker] ?? [] }
}

/// What only the PostgreSQL store has to show: migrations, claims across connections, reconnection, errors.
@Suite(.enabled(if: PostgresTestServer.isAvailable, "PostgreSQL could not be installed or started (see the test log)"))
struct PostgresStoreTests {
    let server = PostgresTestServer.shared!

    func url(_ database: String) throws -> PostgresStoreURL { try PostgresStoreURL.parse(server.url(database: database)) }

    @Test func migrationsApplyOnceUnderTheSQLiteNamesAndClientsNeedThem() throws {
        let db = try server.createDatabase()
        #expect(throws: ProvenanceError.self) { try PostgresJobStore.openClient(url: url(db), password: server.password) }
        // Two daemons starting together on an empty database: both open it, the migrations run once.
        let opened = Collected<Bool>()
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            let ok = (try? PostgresJobStore.openDaemon(url: url(db), password: server.password)) != nil
            opened.append(ok, from: worker)
        }
        #expect(opened.of(0) == [true] && opened.of(1) == [true])
        let store = try PostgresJobStore.openDaemon(url: url(db), password: server.password)
        #expect(try store.appliedMigrations() == Schema.migrationNames.sorted())
        #expect(PostgresSchema.migrationNames == Schema.migrationNames)
        #expect(try server.psql("SELECT count(*) FROM schema_migrations", database: db) == "\(Schema.migrationNames.count)\n")
        let types = try server.psql("""
            SELECT column_name || ':' || data_type FROM information_schema.columns WHERE table_name = 'jobs'
            AND column_name IN ('id', 'content', 'created_at', 'spec') ORDER BY column_name
            """, database: db)
        #expect(types == "content:bytea\ncreated_at:double precision\nid:bigint\nspec:text\n")
        _ = try insertTestJob(store)
        let client = try PostgresJobStore.openClient(url: url(db), password: server.password)
        #expect(try client.jobs(states: nil, limit: 10).count == 1)
        // A database migrated by a newer version is refused, naming the migration.
        try server.psql("INSERT INTO schema_migrations VALUES ('v9-from-the-future', 0)", database: db)
        let opens: [() throws -> PostgresJobStore] = [{ try PostgresJobStore.openClient(url: url(db), password: server.password) },
                                                      { try PostgresJobStore.openDaemon(url: url(db), password: server.password) }]
        for open in opens {
            do { _ = try open(); Issue.record("opened a newer schema") } catch let ProvenanceError.unknownSchema(what) {
                #expect(what.contains("v9-from-the-future"))
            }
        }
    }

    @Test func twoDaemonsClaimEveryOneOf200JobsExactlyOnce() throws {
        let db = try server.createDatabase()
        let stores = [try PostgresJobStore.openDaemon(url: url(db), password: server.password),
                      try PostgresJobStore.openDaemon(url: url(db), password: server.password)]
        let jobs = try (0 ..< 200).map { try insertTestJob(stores[0], name: "j\($0)", priority: $0 % 3) }
        let claimed = Collected<Int64>()
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            let store = stores[worker]
            while case let .claimed(job)? = try? store.claimNext(maxAttempts: 3, environmentID: nil) {
                claimed.append(job.id, from: worker)
                try? store.transition(jobID: job.id, to: .done, reason: "worker \(worker)", error: nil)
            }
        }
        let first = claimed.of(0), second = claimed.of(1)
        #expect(Set(first).isDisjoint(with: second))
        #expect((first + second).sorted() == jobs.map(\.id).sorted())
        #expect(!first.isEmpty && !second.isEmpty, "both daemons claimed jobs: \(first.count) and \(second.count)")
        // Each worker took its jobs in queue order: priority, then arrival.
        let queueKey = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, Int64(-$0.priority) * 1_000_000 + $0.id) })
        for ids in [first, second] { #expect(ids.map { queueKey[$0]! } == ids.map { queueKey[$0]! }.sorted()) }
        for job in try stores[1].jobs(states: nil, limit: 1000) {
            #expect(job.state == .done && job.attempts == 1)
            #expect(try stores[1].transitions(jobID: job.id).filter { $0.to == .active }.count == 1)
        }
    }

    @Test func twoDaemonsClaimingTheSameJobsByIDGetEachOnce() throws {
        let db = try server.createDatabase()
        let stores = [try PostgresJobStore.openDaemon(url: url(db), password: server.password),
                      try PostgresJobStore.openDaemon(url: url(db), password: server.password)]
        let ids = try (0 ..< 50).map { try insertTestJob(stores[0], name: "j\($0)").id }
        let claimed = Collected<Int64>()
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            for id in ids {
                if case .claimed? = try? stores[worker].claim(jobID: id, maxAttempts: 3, environmentID: nil) { claimed.append(id, from: worker) }
            }
        }
        #expect(Set(claimed.of(0)).isDisjoint(with: claimed.of(1)))
        #expect((claimed.of(0) + claimed.of(1)).sorted() == ids)
    }

    @Test func aStartingDaemonRecoversOnlyTheActiveJobsOfItsOwnHost() throws {
        let db = try server.createDatabase()
        let here = try PostgresJobStore.openDaemon(url: url(db), password: server.password, host: "here")
        let there = try PostgresJobStore.openDaemon(url: url(db), password: server.password, host: "there")
        func environment(_ host: String) throws -> Int64 {
            try here.recordEnvironment(EnvironmentRow(version: "1", host: host, kernel: "test", kernelVersions: [:], threads: 1))
        }
        let mine = try insertTestJob(here, name: "mine"), theirs = try insertTestJob(here, name: "theirs")
        let anonymous = try insertTestJob(here, name: "anonymous")
        _ = try here.claim(jobID: mine.id, maxAttempts: 3, environmentID: try environment("here"))
        _ = try there.claim(jobID: theirs.id, maxAttempts: 3, environmentID: try environment("there"))
        _ = try here.claim(jobID: anonymous.id, maxAttempts: 3, environmentID: nil)
        let recovered = try here.recoverInterruptedJobs(maxAttempts: 3)
        #expect(recovered.requeued == [mine.id, anonymous.id] && recovered.poisoned.isEmpty)
        #expect(try here.job(id: theirs.id)?.state == .active)
        #expect(try there.recoverInterruptedJobs(maxAttempts: 3).requeued == [theirs.id])
    }

    @Test func aDroppedConnectionIsOpenedAgain() throws {
        let db = try server.createDatabase()
        let store = try PostgresJobStore.openDaemon(url: url(db), password: server.password)
        let job = try insertTestJob(store)
        let killed = try server.psql("""
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '\(db)' AND pid <> pg_backend_pid()
            """, database: db)
        #expect(killed == "1\n")
        #expect(try store.queueLength() == 1)
        _ = try insertTestJob(store)
        #expect(try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil) != .notPending)
    }

    @Test func idleWorkersHearOfWorkAnotherConnectionMakes() async throws {
        let db = try server.createDatabase()
        let listener = try PostgresJobStore.openDaemon(url: url(db), password: server.password)
        let submitter = try PostgresJobStore.openClient(url: url(db), password: server.password)
        let heard = Collected<Int>()
        let watching = Task { try await listener.watchForWork { heard.append(1, from: 0) } }
        defer { watching.cancel() }
        // The first wake-up comes as soon as it listens (covering anything inserted before).
        try await waitUntil("the listener to start") { !heard.of(0).isEmpty }
        let before = heard.of(0).count
        _ = try insertTestJob(submitter)
        try await waitUntil("a notice of the inserted job") { heard.of(0).count > before }
        // A shard given back is work too; a claim is not.
        let claim = try claimed(try listener.claimNextShard(shardRequest("w1")))
        try await Task.sleep(for: .milliseconds(300))
        let afterClaim = heard.of(0).count
        try listener.releaseShard(claim, reason: "stopping", refundAttempt: true)
        try await waitUntil("a notice of the shard given back") { heard.of(0).count > afterClaim }
        watching.cancel()
        _ = await watching.result
    }

    /// Polls `condition` every 20 ms for up to 20 s (a notice that never comes fails the test).
    func waitUntil(_ what: String, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while !condition() {
            guard ContinuousClock.now < deadline else { Issue.record("no \(what) within 20 s"); return }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func serverErrorsSayWhatTheServerSaid() throws {
        let db = try server.createDatabase()
        do {
            _ = try PostgresJobStore.openDaemon(url: url(db), password: "not-the-password")
            Issue.record("connected with a wrong password")
        } catch let error as PostgresStoreError {
            #expect(error.description.contains("cannot connect to the store \(server.url(database: db))"))
            #expect(error.description.contains("password authentication failed"))
            #expect(!error.description.contains("not-the-password"))
        }
        let store = try PostgresJobStore.openDaemon(url: url(db), password: server.password)
        let job = try insertTestJob(store)
        try store.recordImage(testImage(job.id, 0))
        do {
            try store.recordImage(testImage(job.id, 0))
            Issue.record("an index was recorded twice")
        } catch {
            #expect((error as? PostgresStoreError)?.sqlState == "23505")
            #expect(!store.isOutOfSpace(error))
        }
        #expect(store.isOutOfSpace(PostgresStoreError(sqlState: "53100", description: "could not extend file: No space left on device")))
    }
}
