import Foundation
import Provenance
import Testing

func newJob(_ store: ProvenanceStore, name: String = "j", total: Int = 10, priority: Int = 0) throws -> JobRow {
    try store.insertJob(NewJob(name: name, spoolName: "\(UUID().uuidString)--\(name).yml", sourceName: "\(name).yml",
                               content: Array("images: \(total)\n".utf8), spec: "{}", priority: priority, totalImages: total))
}

func image(_ job: Int64, _ index: Int) -> ImageRow {
    ImageRow(jobID: job, index: index, seed: UInt64.max - 1, classIndex: 1, className: "Trouser", path: "/x/\(index).png",
             format: "png", width: 28, height: 28, byteSize: 100, sha256: String(repeating: "0", count: 64), record: "{}")
}

@Suite struct StoreTests {
    @Test func migrationsApplyOnAFreshDatabaseAndAreIdempotent() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("prov-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/db.sqlite"
        #expect(throws: ProvenanceError.self) { try ProvenanceStore.openClient(path: path) }
        do {
            let store = try ProvenanceStore.openDaemon(path: path)
            #expect(try store.appliedMigrations() == Schema.migrationNames.sorted())
            try store.migrate()
            _ = try newJob(store)
        }
        let again = try ProvenanceStore.openDaemon(path: path)
        #expect(try again.appliedMigrations() == Schema.migrationNames.sorted())
        #expect(try again.jobs().count == 1)
        let client = try ProvenanceStore.openClient(path: path)
        #expect(try client.jobs().count == 1)
    }

    @Test func lifecycleRecordsEveryTransition() throws {
        let store = try ProvenanceStore.inMemory()
        let job = try newJob(store)
        #expect(job.state == .pending && job.attempts == 0)
        guard case let .claimed(active) = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil) else {
            Issue.record("not claimed"); return
        }
        #expect(active.state == .active && active.attempts == 1 && active.startedAt != nil)
        #expect(try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil) == .notPending)
        try store.transition(jobID: job.id, to: .done, reason: "ok")
        #expect(throws: ProvenanceError.self) { try store.transition(jobID: job.id, to: .active) }
        let states = try store.transitions(jobID: job.id).map { "\($0.from?.rawValue ?? "-")>\($0.to.rawValue)" }
        #expect(states == ["->pending", "pending>active", "active>done"])
        #expect(try store.job(id: job.id)?.finishedAt != nil)
    }

    @Test func queueOrderIsPriorityThenArrival() throws {
        let store = try ProvenanceStore.inMemory()
        let a = try newJob(store, name: "a")
        let b = try newJob(store, name: "b", priority: 5)
        let c = try newJob(store, name: "c")
        #expect(try store.queue().map(\.id) == [b.id, a.id, c.id])
    }

    @Test func resumeQueryFindsTheFirstGap() throws {
        let store = try ProvenanceStore.inMemory()
        let job = try newJob(store, total: 6)
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6).first == 0)
        for i in [0, 1, 2, 4] { try store.recordImage(image(job.id, i)) }
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6).first == 3)
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6) == [3, 5])
        try store.recordImage(image(job.id, 3))
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6).first == 5)
        try store.recordImage(image(job.id, 5))
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6).first == nil)
        // An index is recorded once.
        #expect(throws: (any Error).self) { try store.recordImage(image(job.id, 5)) }
        #expect(try store.images(jobID: job.id).first?.seed == UInt64.max - 1)
        try store.deleteImages(jobID: job.id, indices: [0])
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6).first == 0)
    }

    @Test func aJobThatCrashesThreeTimesIsAPoisonJob() throws {
        let store = try ProvenanceStore.inMemory()
        let job = try newJob(store)
        for attempt in 1 ... 3 {
            guard case let .claimed(row) = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil) else {
                Issue.record("attempt \(attempt) not claimed"); return
            }
            #expect(row.attempts == attempt)
            // The daemon dies; at the next start the job is recovered.
            let (requeued, poisoned) = try store.recoverInterruptedJobs(maxAttempts: 3)
            if attempt < 3 {
                #expect(requeued == [job.id] && poisoned.isEmpty)
            } else {
                #expect(requeued.isEmpty && poisoned == [job.id])
            }
        }
        let failed = try store.job(id: job.id)!
        #expect(failed.state == .failed)
        #expect(failed.error?.contains("poison job") == true)
    }

    @Test func claimingAJobThatUsedItsAttemptsFailsIt() throws {
        let store = try ProvenanceStore.inMemory()
        let job = try newJob(store)
        _ = try store.claim(jobID: job.id, maxAttempts: 1, environmentID: nil)
        _ = try store.recoverInterruptedJobs(maxAttempts: 5) // a higher limit at that start: requeued
        guard case let .poisoned(row) = try store.claim(jobID: job.id, maxAttempts: 1, environmentID: nil) else {
            Issue.record("not poisoned"); return
        }
        #expect(row.state == .failed)
    }

    @Test func gracefulStopsDoNotCountAsAttempts() throws {
        let store = try ProvenanceStore.inMemory()
        let job = try newJob(store)
        for _ in 0 ..< 5 {
            _ = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil)
            try store.requeue(jobID: job.id, reason: "shutdown", refundAttempt: true)
        }
        #expect(try store.job(id: job.id)?.attempts == 0)
        #expect(try store.job(id: job.id)?.state == .pending)
    }

    @Test func cancel() throws {
        let store = try ProvenanceStore.inMemory()
        let pending = try newJob(store)
        #expect(try store.requestCancel(jobID: pending.id) == .canceled)
        #expect(try store.job(id: pending.id)?.state == .canceled)
        #expect(try store.requestCancel(jobID: pending.id) == .alreadyFinished)
        let running = try newJob(store)
        _ = try store.claim(jobID: running.id, maxAttempts: 3, environmentID: nil)
        #expect(try store.requestCancel(jobID: running.id) == .requested)
        #expect(try store.isCancelRequested(jobID: running.id))
        #expect(try store.job(id: running.id)?.state == .active)
    }

    @Test func environmentHeartbeatModelsMetrics() throws {
        let store = try ProvenanceStore.inMemory()
        let env = EnvironmentRow(version: "1", host: "h", kernel: "test", kernelVersions: ["a": "1"], threads: 2)
        let id = try store.recordEnvironment(env)
        #expect(try store.recordEnvironment(env) == id)
        #expect(try store.environment(id: id)?.kernelVersions == ["a": "1"])
        let hb = HeartbeatRow(pid: 42, startedAt: 1, updatedAt: 2, status: "idle", cachedModels: ["m"])
        try store.writeHeartbeat(hb)
        try store.writeHeartbeat(hb)
        #expect(try store.heartbeat() == hb)
        try store.recordModelLoad(ModelLoadRow(name: "m", contentHash: "abc", loadSeconds: 0.5))
        #expect(try store.modelLoads().first?.name == "m")
        let job = try newJob(store)
        try store.replaceMetrics(jobID: job.id, with: [MetricRow(jobID: job.id, name: "fid", value: 12.5, n: 1000, details: #"{"a":1}"#)])
        #expect(try store.metrics(jobID: job.id).first?.value == 12.5)
    }
}
