import DaemonTestSupport
import Foundation
import Provenance
import ProvenancePostgres
import Testing

/// What only a shared store does with shards: a job cut across workers, claims across
/// connections, the queue order of shards, a dead worker's leases.
@Suite(.enabled(if: PostgresTestServer.isAvailable, "PostgreSQL could not be installed or started (see the test log)"))
struct PostgresShardTests {
    let server = PostgresTestServer.shared!

    @Test func threeWorkersOnTheirOwnConnectionsClaimEveryShardOf20JobsOnce() throws {
        let db = try server.createDatabase()
        let url = try PostgresStoreURL.parse(server.url(database: db))
        let stores = try (0 ..< 3).map { _ in try PostgresJobStore.openDaemon(url: url, password: server.password) }
        for n in 0 ..< 20 { _ = try insertTestJob(stores[0], name: "j\(n)", total: 10) }
        let got = Collected<String>()
        DispatchQueue.concurrentPerform(iterations: 3) { worker in
            while let outcome = try? stores[worker].claimNextShard(shardRequest("w\(worker)", images: 4)) {
                if case let .claimed(claim) = outcome {
                    got.append("\(claim.job.id):\(claim.indices.lowerBound)", from: worker)
                }
            }
        }
        let all = got.of(0) + got.of(1) + got.of(2)
        #expect(all.count == 60, "20 jobs of 3 shards (4 + 4 + 2 images)")
        #expect(Set(all).count == all.count, "no shard claimed twice")
    }

    @Test func shardsOfAnActiveJobComeBeforeALaterJobAndAfterAMoreUrgentOne() throws {
        let store = try makePostgresStore()
        let first = try insertTestJob(store, name: "first", total: 4)
        let second = try insertTestJob(store, name: "second", total: 4)
        let a = try claimed(try store.claimNextShard(shardRequest("a", images: 2)))
        #expect(a.job.id == first.id && a.indices == 0 ..< 2)
        let urgent = try insertTestJob(store, name: "urgent", total: 2, priority: 5)
        let b = try claimed(try store.claimNextShard(shardRequest("b", images: 2)))
        #expect(b.job.id == urgent.id)
        let c = try claimed(try store.claimNextShard(shardRequest("c", images: 2)))
        #expect(c.job.id == first.id && c.indices == 2 ..< 4, "the rest of the active job before the next pending one")
        let d = try claimed(try store.claimNextShard(shardRequest("d", images: 2)))
        #expect(d.job.id == second.id)
        #expect(try store.shards(jobID: first.id).map(\.worker) == ["a", "c"])
    }

    @Test func aRestartedWorkerGivesBackItsShardsAndAShardThatKeepsDyingPoisonsItsJob() throws {
        let store = try makePostgresStore()
        let job = try insertTestJob(store, total: 4)
        let a = try claimed(try store.claimNextShard(shardRequest("a", images: 2, attempts: 2)))
        let b = try claimed(try store.claimNextShard(shardRequest("b", images: 2, attempts: 2)))
        #expect(try store.releaseLeases(ofWorker: "a", maxAttempts: 2).isEmpty)
        #expect(try store.shards(jobID: job.id).map(\.state) == [.pending, .leased])
        #expect(throws: LeaseLost.self) { try store.renewLease(a, seconds: 30) }
        _ = try store.renewLease(b, seconds: 30)
        // Claimed again and dead again: the second attempt of shard 0 was its last.
        let again = try claimed(try store.claimNextShard(shardRequest("a", images: 2, attempts: 2)))
        #expect(again.shard == 0 && again.attempt == 2)
        #expect(try store.releaseLeases(ofWorker: "a", maxAttempts: 2) == [job.id])
        let failed = try #require(try store.job(id: job.id))
        #expect(failed.state == .failed && failed.error?.contains("poison job: shard 0") == true)
        #expect(throws: LeaseLost.self) { try store.recordImage(image(b, 2), under: b) }
    }

    @Test func aCancelReachesTheWorkersOfEveryShard() throws {
        let store = try makePostgresStore()
        let job = try insertTestJob(store, total: 4)
        let a = try claimed(try store.claimNextShard(shardRequest("a", images: 2)))
        #expect(try store.requestCancel(jobID: job.id) == .requested)
        guard case let .canceled(row)? = try store.claimNextShard(shardRequest("b", images: 2)) else {
            Issue.record("the next shard's claim cancels the job")
            return
        }
        #expect(row.id == job.id && row.state == .canceled)
        #expect(throws: LeaseLost.self) { try store.recordImage(image(a, 0), under: a) }
    }
}
