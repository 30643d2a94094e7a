import Foundation
import Provenance
import Testing

/// A pending job in `store` (the helper of StoreTests.swift takes the SQLite store only).
func insertTestJob(_ store: any JobStore, name: String = "j", total: Int = 10, priority: Int = 0) throws -> JobRow {
    try store.insertJob(NewJob(name: name, spoolName: "\(UUID().uuidString)--\(name).yml", sourceName: "\(name).yml",
                               content: Array("images: \(total)\n".utf8), spec: "{}", priority: priority, totalImages: total))
}

/// What every `JobStore` does, whatever its database: run by StoreBehaviourTests.swift on SQLite and on PostgreSQL.
enum StoreBehaviour: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case lifecycle, queueOrder, claimNext, images, poisonAfterCrashes, claimOfAUsedUpJob, gracefulStops, cancel, retry
    case errors, recover, outputAndContent, environmentHeartbeatModelsMetrics, jobModels, jobListing

    var testDescription: String { rawValue }

    func run(on store: any JobStore) throws {
        switch self {
        case .lifecycle: try lifecycle(store)
        case .queueOrder: try queueOrder(store)
        case .claimNext: try claimNext(store)
        case .images: try images(store)
        case .poisonAfterCrashes: try poisonAfterCrashes(store)
        case .claimOfAUsedUpJob: try claimOfAUsedUpJob(store)
        case .gracefulStops: try gracefulStops(store)
        case .cancel: try cancel(store)
        case .retry: try retry(store)
        case .errors: try errors(store)
        case .recover: try recover(store)
        case .outputAndContent: try outputAndContent(store)
        case .environmentHeartbeatModelsMetrics: try environmentHeartbeatModelsMetrics(store)
        case .jobModels: try jobModels(store)
        case .jobListing: try jobListing(store)
        }
    }

    func lifecycle(_ store: any JobStore) throws {
        let job = try insertTestJob(store)
        #expect(job.state == .pending && job.attempts == 0 && job.finishedAt == nil && job.totalImages == 10)
        guard case let .claimed(active) = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil) else {
            Issue.record("not claimed"); return
        }
        #expect(active.state == .active && active.attempts == 1 && active.startedAt != nil)
        #expect(try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil) == .notPending)
        try store.transition(jobID: job.id, to: .done, reason: "ok")
        #expect(throws: ProvenanceError.self) { try store.transition(jobID: job.id, to: .active) }
        let transitions = try store.transitions(jobID: job.id)
        #expect(transitions.map { "\($0.from?.rawValue ?? "-")>\($0.to.rawValue)" } == ["->pending", "pending>active", "active>done"])
        #expect(transitions.map(\.reason) == ["received", "attempt 1", "ok"])
        #expect(try store.job(id: job.id)?.finishedAt != nil)
        #expect(try store.job(spoolName: job.spoolName)?.id == job.id)
        #expect(try store.job(id: job.id + 1000) == nil)
    }

    func queueOrder(_ store: any JobStore) throws {
        let a = try insertTestJob(store, name: "a")
        let b = try insertTestJob(store, name: "b", priority: 5)
        let c = try insertTestJob(store, name: "c")
        let d = try insertTestJob(store, name: "d", priority: -1)
        #expect(try store.queue(limit: nil).map(\.id) == [b.id, a.id, c.id, d.id])
        #expect(try store.queue(limit: 2).map(\.id) == [b.id, a.id])
        #expect(try store.queueLength() == 4)
    }

    func claimNext(_ store: any JobStore) throws {
        #expect(try store.claimNext(maxAttempts: 3, environmentID: nil) == nil)
        let env = try store.recordEnvironment(EnvironmentRow(version: "1", host: "h", kernel: "test", kernelVersions: [:], threads: 1))
        let low = try insertTestJob(store, name: "low")
        let high = try insertTestJob(store, name: "high", priority: 2)
        let canceled = try insertTestJob(store, name: "canceled", priority: 1)
        _ = try store.claim(jobID: canceled.id, maxAttempts: 3, environmentID: nil)
        #expect(try store.requestCancel(jobID: canceled.id) == .requested)
        try store.requeue(jobID: canceled.id, reason: "shutdown", refundAttempt: true)
        guard case let .claimed(first) = try store.claimNext(maxAttempts: 3, environmentID: env) else {
            Issue.record("the high-priority job was not claimed"); return
        }
        #expect(first.id == high.id && first.environmentID == env)
        // A pending job with a cancel request is canceled when its turn comes.
        guard case let .canceled(second) = try store.claimNext(maxAttempts: 3, environmentID: env) else {
            Issue.record("the job with a cancel request was not canceled"); return
        }
        #expect(second.id == canceled.id && second.state == .canceled)
        #expect(try store.claimNext(maxAttempts: 3, environmentID: nil).map { if case let .claimed(j) = $0 { j.id } else { -1 } } == low.id)
        #expect(try store.claimNext(maxAttempts: 3, environmentID: nil) == nil)
        #expect(try store.queueLength() == 0)
    }

    func images(_ store: any JobStore) throws {
        let job = try insertTestJob(store, total: 6)
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6) == [0, 1, 2, 3, 4, 5])
        for i in [0, 1, 2, 4] { try store.recordImage(testImage(job.id, i)) }
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6) == [3, 5])
        #expect(try store.recordedIndices(jobID: job.id) == [0, 1, 2, 4])
        #expect(try store.imageCount(jobID: job.id) == 4)
        // An index is recorded once.
        #expect(throws: (any Error).self) { try store.recordImage(testImage(job.id, 4)) }
        #expect(try store.imageCount(jobID: job.id) == 4)
        #expect(try store.image(jobID: job.id, index: 2) == testImage(job.id, 2))
        #expect(try store.image(jobID: job.id, index: 3) == nil)
        #expect(try store.images(jobID: job.id).map(\.index) == [0, 1, 2, 4])
        #expect(try store.images(jobID: job.id).first?.seed == UInt64.max - 1)
        try store.deleteImages(jobID: job.id, indices: [0, 4])
        #expect(try store.unrecordedIndices(jobID: job.id, total: 6) == [0, 3, 4, 5])
        try store.deleteImages(jobID: job.id, indices: [])
        #expect(try store.imageCount(jobID: job.id) == 2)
    }

    func poisonAfterCrashes(_ store: any JobStore) throws {
        let job = try insertTestJob(store)
        for attempt in 1 ... 3 {
            guard case let .claimed(row) = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil) else {
                Issue.record("attempt \(attempt) not claimed"); return
            }
            #expect(row.attempts == attempt)
            let (requeued, poisoned) = try store.recoverInterruptedJobs(maxAttempts: 3)
            #expect(attempt < 3 ? (requeued == [job.id] && poisoned.isEmpty) : (requeued.isEmpty && poisoned == [job.id]))
        }
        let failed = try #require(try store.job(id: job.id))
        #expect(failed.state == .failed && failed.error?.contains("poison job") == true && failed.finishedAt != nil)
    }

    func claimOfAUsedUpJob(_ store: any JobStore) throws {
        let job = try insertTestJob(store)
        _ = try store.claim(jobID: job.id, maxAttempts: 1, environmentID: nil)
        _ = try store.recoverInterruptedJobs(maxAttempts: 5)
        guard case let .poisoned(row) = try store.claim(jobID: job.id, maxAttempts: 1, environmentID: nil) else {
            Issue.record("not poisoned"); return
        }
        #expect(row.state == .failed && row.error?.hasPrefix("poison job: started 1 times") == true)
    }

    func gracefulStops(_ store: any JobStore) throws {
        let job = try insertTestJob(store)
        for _ in 0 ..< 5 {
            _ = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil)
            try store.requeue(jobID: job.id, reason: "shutdown", refundAttempt: true)
        }
        #expect(try store.job(id: job.id)?.attempts == 0)
        #expect(try store.job(id: job.id)?.state == .pending)
        _ = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil)
        try store.requeue(jobID: job.id, reason: "crash", refundAttempt: false)
        #expect(try store.job(id: job.id)?.attempts == 1)
        // Requeueing a job that is not active changes nothing.
        try store.requeue(jobID: job.id, reason: "again", refundAttempt: true)
        #expect(try store.job(id: job.id)?.attempts == 1)
    }

    func cancel(_ store: any JobStore) throws {
        let pending = try insertTestJob(store)
        #expect(try store.requestCancel(jobID: pending.id) == .canceled)
        #expect(try store.job(id: pending.id)?.state == .canceled)
        #expect(try store.requestCancel(jobID: pending.id) == .alreadyFinished)
        let running = try insertTestJob(store)
        _ = try store.claim(jobID: running.id, maxAttempts: 3, environmentID: nil)
        #expect(try !store.isCancelRequested(jobID: running.id))
        #expect(try store.requestCancel(jobID: running.id) == .requested)
        #expect(try store.isCancelRequested(jobID: running.id))
        #expect(try store.job(id: running.id)?.state == .active)
    }

    func retry(_ store: any JobStore) throws {
        let job = try insertTestJob(store)
        _ = try store.claim(jobID: job.id, maxAttempts: 3, environmentID: nil)
        #expect(throws: ProvenanceError.self) { try store.retry(jobID: job.id, reason: "retry") }
        try store.recordImage(testImage(job.id, 0))
        try store.transition(jobID: job.id, to: .failed, reason: "write fault", error: "disk")
        #expect(try store.job(id: job.id)?.error == "disk")
        let again = try store.retry(jobID: job.id, reason: "retried by user")
        #expect(again.state == .pending && again.attempts == 0 && again.error == nil && again.finishedAt == nil && !again.cancelRequested)
        #expect(try store.unrecordedIndices(jobID: job.id, total: 2) == [1])
        #expect(try store.transitions(jobID: job.id).last?.reason == "retried by user")
        let rejected = try store.insertJob(NewJob(name: "bad", spoolName: UUID().uuidString, sourceName: "bad.yml", content: [1],
                                                  spec: nil, state: .failed, error: "invalid yaml"))
        #expect(rejected.finishedAt != nil && rejected.error == "invalid yaml")
        do {
            _ = try store.retry(jobID: rejected.id, reason: "retry")
            Issue.record("a rejected job file was retried")
        } catch let ProvenanceError.notRetryable(id, why) {
            #expect(id == rejected.id && why.contains("invalid yaml"))
        }
    }

    func errors(_ store: any JobStore) throws {
        for call in [{ try store.transition(jobID: 999_999, to: .done, reason: nil, error: nil) },
                     { try store.requeue(jobID: 999_999, reason: "x", refundAttempt: false) },
                     { _ = try store.requestCancel(jobID: 999_999) },
                     { _ = try store.retry(jobID: 999_999, reason: "x") }] as [() throws -> Void] {
            do { try call(); Issue.record("no error for a missing job") } catch let ProvenanceError.noSuchJob(id) { #expect(id == 999_999) }
        }
        #expect(try store.claim(jobID: 999_999, maxAttempts: 3, environmentID: nil) == .notPending)
        #expect(try store.isCancelRequested(jobID: 999_999) == false)
        #expect(try store.jobContent(id: 999_999) == nil)
        #expect(!store.isOutOfSpace(ProvenanceError.noSuchJob(1)))
    }

    func recover(_ store: any JobStore) throws {
        let a = try insertTestJob(store, name: "a"), b = try insertTestJob(store, name: "b"), idle = try insertTestJob(store, name: "idle")
        _ = try store.claim(jobID: a.id, maxAttempts: 2, environmentID: nil)
        _ = try store.claim(jobID: b.id, maxAttempts: 2, environmentID: nil)
        try store.requeue(jobID: b.id, reason: "crash", refundAttempt: false)
        _ = try store.claim(jobID: b.id, maxAttempts: 2, environmentID: nil)
        let (requeued, poisoned) = try store.recoverInterruptedJobs(maxAttempts: 2)
        #expect(requeued == [a.id] && poisoned == [b.id])
        #expect(try store.job(id: a.id)?.state == .pending && store.job(id: idle.id)?.state == .pending)
        #expect(try store.transitions(jobID: a.id).last?.reason == "interrupted (daemon restarted)")
        let second = try store.recoverInterruptedJobs(maxAttempts: 2)
        #expect(second.requeued.isEmpty && second.poisoned.isEmpty)
    }

    func outputAndContent(_ store: any JobStore) throws {
        let job = try insertTestJob(store, total: 3)
        try store.setOutput(jobID: job.id, outputDir: "/out/j-1", totalImages: 12)
        let row = try #require(try store.job(id: job.id))
        #expect(row.outputDir == "/out/j-1" && row.totalImages == 12 && row.updatedAt >= job.updatedAt)
        #expect(try store.jobContent(id: job.id) == Array("images: 3\n".utf8))
        let bytes: [UInt8] = [0, 255, 10, 13, 0x27, 0x5C]
        let binary = try store.insertJob(NewJob(name: "b", spoolName: UUID().uuidString, sourceName: "b.yml", content: bytes, spec: nil))
        #expect(try store.jobContent(id: binary.id) == bytes)
        #expect(binary.contentSHA256.count == 64 && binary.contentSHA256 != job.contentSHA256)
    }

    func environmentHeartbeatModelsMetrics(_ store: any JobStore) throws {
        let env = EnvironmentRow(version: "1", host: "h", kernel: "test", kernelVersions: ["a": "1", "b": "2"], threads: 2,
                                 details: ["cpu": "x"])
        let id = try store.recordEnvironment(env)
        #expect(try store.recordEnvironment(env) == id)
        var other = env
        other.threads = 4
        #expect(try store.recordEnvironment(other) != id)
        let read = try #require(try store.environment(id: id))
        #expect(read.kernelVersions == ["a": "1", "b": "2"] && read.details == ["cpu": "x"] && read.threads == 2 && read.id == id)
        #expect(try store.heartbeat() == nil)
        let hb = HeartbeatRow(pid: 42, startedAt: 1, updatedAt: 2, status: "idle", cachedModels: ["m"])
        try store.writeHeartbeat(hb)
        #expect(try store.heartbeat() == hb)
        let busy = HeartbeatRow(pid: 42, startedAt: 1, updatedAt: 3.5, status: "running", activeJobID: 7, imagesDone: 3,
                                imagesTotal: 9, imagesPerSecond: 1.5, cachedModels: ["m", "n"], batchImages: 2, stepsDone: 4,
                                stepsTotal: 10, etaSeconds: 6.25)
        try store.writeHeartbeat(busy)
        #expect(try store.heartbeat() == busy)
        try store.recordModelLoad(ModelLoadRow(name: "m", contentHash: "abc", loadedAt: 10, loadSeconds: 0.5, bytes: 1024))
        try store.recordModelLoad(ModelLoadRow(name: "n", contentHash: "def", loadedAt: 11, loadSeconds: 0.25))
        #expect(try store.modelLoads(limit: 100).map(\.name) == ["n", "m"])
        #expect(try store.modelLoads(limit: 1) == [ModelLoadRow(name: "n", contentHash: "def", loadedAt: 11, loadSeconds: 0.25)])
        let job = try insertTestJob(store)
        try store.replaceMetrics(jobID: job.id, with: [MetricRow(jobID: job.id, name: "fid", value: 12.5, n: 1000, details: #"{"a":1}"#, recordedAt: 5),
                                                       MetricRow(jobID: job.id, name: "kid", value: 0.01, n: 1000, recordedAt: 5)])
        #expect(try store.metrics(jobID: job.id).map(\.name) == ["fid", "kid"])
        try store.replaceMetrics(jobID: job.id, with: [MetricRow(jobID: job.id, name: "fid", value: 11, n: 900, recordedAt: 6)])
        #expect(try store.metrics(jobID: job.id) == [MetricRow(jobID: job.id, name: "fid", value: 11, n: 900, recordedAt: 6)])
    }

    func jobModels(_ store: any JobStore) throws {
        let job = try insertTestJob(store)
        try store.recordJobModel(JobModelRow(jobID: job.id, role: .features, name: "f", sha256: "3"))
        try store.recordJobModel(JobModelRow(jobID: job.id, role: .unet, name: "u", sha256: "1"))
        try store.recordJobModel(JobModelRow(jobID: job.id, role: .classifier, name: "c", sha256: "2"))
        try store.recordJobModel(JobModelRow(jobID: job.id, role: .unet, name: "u2", sha256: "9"))
        #expect(try store.jobModels(jobID: job.id) == [JobModelRow(jobID: job.id, role: .unet, name: "u2", sha256: "9"),
                                                      JobModelRow(jobID: job.id, role: .classifier, name: "c", sha256: "2"),
                                                      JobModelRow(jobID: job.id, role: .features, name: "f", sha256: "3")])
        #expect(try store.jobModels(jobID: job.id + 1).isEmpty)
    }

    func jobListing(_ store: any JobStore) throws {
        let a = try insertTestJob(store, name: "a"), b = try insertTestJob(store, name: "b"), c = try insertTestJob(store, name: "c")
        _ = try store.claim(jobID: b.id, maxAttempts: 3, environmentID: nil)
        try store.transition(jobID: c.id, to: .failed, reason: "x", error: "x")
        #expect(try store.jobs(states: nil, limit: 100).map(\.id) == [c.id, b.id, a.id])
        #expect(try store.jobs(states: nil, limit: 2).map(\.id) == [c.id, b.id])
        #expect(try store.jobs(states: [.pending, .failed], limit: 100).map(\.id) == [c.id, a.id])
        #expect(try store.jobs(states: [.done], limit: 100).isEmpty)
    }
}

func testImage(_ job: Int64, _ index: Int) -> ImageRow {
    ImageRow(jobID: job, index: index, seed: UInt64.max - 1, classIndex: index == 1 ? nil : 1, className: index == 1 ? nil : "Trouser",
             path: "/x/\(index).png", format: "png", width: 28, height: 28, byteSize: 100 + index,
             sha256: String(repeating: "0", count: 64), record: #"{"i":\#(index)}"#, committedAt: 1000.25 + Double(index))
}
