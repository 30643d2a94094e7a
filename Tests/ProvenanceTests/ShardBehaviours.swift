import DaemonTestSupport
import Foundation
import Provenance
import ProvenancePostgres
import Testing

func shardRequest(_ worker: String, images: Int = 4, lease: Double = 30, attempts: Int = 3) -> ShardRequest {
    ShardRequest(worker: worker, maxAttempts: attempts, environmentID: nil, shardImages: images, leaseSeconds: lease)
}

/// The claimed shard, or a failed expectation.
func claimed(_ outcome: ShardClaimOutcome?, sourceLocation: SourceLocation = #_sourceLocation) throws -> ShardClaim {
    guard case let .claimed(claim)? = outcome else {
        Issue.record("expected a claim, got \(String(describing: outcome))", sourceLocation: sourceLocation)
        throw LeaseLostInTest()
    }
    return claim
}

struct LeaseLostInTest: Error {}

func image(_ claim: ShardClaim, _ index: Int, sha: String = String(repeating: "a", count: 64)) -> ImageRow {
    ImageRow(jobID: claim.job.id, index: index, seed: 7, classIndex: nil, className: nil, path: "/x/\(index).png", format: "png",
             width: 8, height: 8, byteSize: 10, sha256: sha, record: "{}")
}

/// What every store does with shards and leases (a one-host store holds a whole job as one shard).
enum ShardBehaviour: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case claimAndFence, lastShardCompletesTheJob, releaseRefunds, recordingIsIdempotent, workerRows

    var testDescription: String { rawValue }

    func run(on store: any JobStore) throws {
        switch self {
        case .claimAndFence: try claimAndFence(store)
        case .lastShardCompletesTheJob: try lastShardCompletesTheJob(store)
        case .releaseRefunds: try releaseRefunds(store)
        case .recordingIsIdempotent: try recordingIsIdempotent(store)
        case .workerRows: try workerRows(store)
        }
    }

    /// A claim's writes carry its worker and token; once another claim of the shard exists (after a
    /// crash on one host, after the lease expired on a shared store), the old claim records nothing.
    func claimAndFence(_ store: any JobStore) throws {
        let job = try insertTestJob(store, total: 6)
        let first = try claimed(try store.claimNextShard(shardRequest("a", images: 3, lease: 0.3)))
        #expect(first.job.id == job.id && first.job.state == .active && first.shard == 0 && first.lease.worker == "a")
        #expect(first.indices.lowerBound == 0 && (first.indices.upperBound == 3 || first.indices.upperBound == 6))
        try store.recordImage(image(first, 0), under: first)
        #expect(throws: ProvenanceError.self) { try store.recordImage(image(first, 99), under: first) }
        let second: ShardClaim
        if first.indices.count == 6 {
            // One host: a restart puts the job back in the queue, and its next claim is a new lease.
            _ = try store.recoverInterruptedJobs(maxAttempts: 3)
            second = try claimed(try store.claimNextShard(shardRequest("a", images: 3)))
        } else {
            Thread.sleep(forTimeInterval: 0.5)
            second = try claimed(try store.claimNextShard(shardRequest("b", images: 3)))
        }
        #expect(second.shard == first.shard && second.indices == first.indices && second.lease.token > first.lease.token)
        #expect(throws: LeaseLost.self) { try store.recordImage(image(first, 1), under: first) }
        #expect(throws: LeaseLost.self) { try store.renewLease(first, seconds: 30) }
        #expect(throws: LeaseLost.self) { try store.finishShard(first) }
        try store.recordImage(image(second, 1), under: second)
        let rows = try store.images(jobID: job.id)
        #expect(rows.map(\.index) == [0, 1])
        #expect(rows.map(\.leaseToken) == [first.lease.token, second.lease.token])
        #expect(rows.map(\.worker) == ["a", second.lease.worker])
        let renewed = try store.renewLease(second, seconds: 30)
        #expect(renewed.token == second.lease.token && renewed.expiresAt >= second.lease.expiresAt, "a renewal never shortens a lease")
        let history = try store.leases(jobID: job.id).filter { $0.shard == first.shard }
        #expect(history.map(\.token) == [first.lease.token, second.lease.token])
        #expect(history.map(\.worker) == ["a", second.lease.worker])
    }

    /// Every shard ends; the last one reports `.lastShard`, and `completeJob` ends the job once every image is recorded.
    func lastShardCompletesTheJob(_ store: any JobStore) throws {
        let job = try insertTestJob(store, total: 5)
        var claims: [ShardClaim] = []
        while let outcome = try store.claimNextShard(shardRequest("w\(claims.count)", images: 2)) {
            claims.append(try claimed(outcome))
        }
        #expect(claims.flatMap { Array($0.indices) } == Array(0 ..< 5))
        for claim in claims.dropLast() {
            for i in claim.indices { try store.recordImage(image(claim, i), under: claim) }
            #expect(try store.finishShard(claim) == .moreShards)
        }
        let last = claims.last!
        #expect(try store.finishShard(last) == .lastShard)
        #expect(throws: ProvenanceError.self) { try store.completeJob(last) }
        for i in last.indices { try store.recordImage(image(last, i), under: last) }
        try store.completeJob(last)
        #expect(try store.job(id: job.id)?.state == .done)
        #expect(try store.shards(jobID: job.id).allSatisfy { $0.state == .done })
        #expect(try store.transitions(jobID: job.id).map(\.to) == [.pending, .active, .done])
        #expect(throws: LeaseLost.self) { try store.recordImage(image(last, last.indices.lowerBound), under: last) }
    }

    /// A graceful stop gives the shard back without counting its attempt; it is claimed again.
    func releaseRefunds(_ store: any JobStore) throws {
        let job = try insertTestJob(store, total: 3)
        let claim = try claimed(try store.claimNextShard(shardRequest("a", images: 3, attempts: 1)))
        try store.releaseShard(claim, reason: "daemon shutting down", refundAttempt: true)
        #expect(try store.shards(jobID: job.id).map(\.state) == [.pending])
        let again = try claimed(try store.claimNextShard(shardRequest("a", images: 3, attempts: 1)))
        #expect(again.job.id == job.id && again.lease.token == claim.lease.token + 1)
        // Releasing a claim whose lease is gone changes nothing.
        try store.releaseShard(claim, reason: "late", refundAttempt: true)
        #expect(try store.shards(jobID: job.id).map(\.state) == [.leased])
    }

    /// The same row recorded twice (a reply lost to a dropped connection) is one row; other bytes are refused.
    func recordingIsIdempotent(_ store: any JobStore) throws {
        let job = try insertTestJob(store, total: 2)
        let claim = try claimed(try store.claimNextShard(shardRequest("a", images: 2)))
        try store.recordImage(image(claim, 0), under: claim)
        try store.recordImage(image(claim, 0), under: claim)
        #expect(throws: ProvenanceError.self) { try store.recordImage(image(claim, 0, sha: String(repeating: "b", count: 64)), under: claim) }
        #expect(try store.imageCount(jobID: job.id) == 1)
        try store.deleteImages(indices: [0, 5], under: claim)
        #expect(try store.imageCount(jobID: job.id) == 0)
    }

    func workerRows(_ store: any JobStore) throws {
        let a = WorkerRow(worker: "host-a", host: "a.example", pid: 10, startedAt: 1, updatedAt: 2, status: "idle", cachedModels: ["m"])
        var b = WorkerRow(worker: "host-b", host: "b.example", pid: 11, startedAt: 1, updatedAt: 2, status: "running",
                          jobID: 4, shard: 1, firstIndex: 8, endIndex: 16, leaseToken: 3, imagesDone: 5, imagesPerSecond: 2.5)
        try store.writeWorker(a)
        try store.writeWorker(b)
        b.updatedAt = 3
        b.imagesDone = 6
        try store.writeWorker(b)
        #expect(try store.workers() == [a, b])
    }
}

@Suite struct SQLiteShardBehaviourTests {
    @Test(arguments: ShardBehaviour.allCases) func behaves(_ behaviour: ShardBehaviour) throws {
        try behaviour.run(on: try ProvenanceStore.inMemory())
    }

    @Test func oneHostHoldsAWholeJobAsOneShard() throws {
        let store = try ProvenanceStore.inMemory()
        let job = try insertTestJob(store, total: 10)
        let claim = try claimed(try store.claimNextShard(shardRequest("a", images: 3)))
        #expect(claim.indices == 0 ..< 10 && claim.job.id == job.id)
        #expect(try store.claimNextShard(shardRequest("a", images: 3)) == nil)
    }
}

@Suite(.enabled(if: PostgresTestServer.isAvailable, "PostgreSQL could not be installed or started (see the test log)"))
struct PostgresShardBehaviourTests {
    @Test(arguments: ShardBehaviour.allCases) func behaves(_ behaviour: ShardBehaviour) throws {
        try behaviour.run(on: try makePostgresStore())
    }
}
