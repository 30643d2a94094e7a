import DaemonTestSupport
import Foundation
import Provenance
import ProvenancePostgres

// The queue stage: the shared store's queue machinery alone. Workers, each with its own connection
// to a throwaway PostgreSQL server on this machine, claim the shards of a pile of jobs, record each
// image's row under the shard's lease (no image is generated or written), and end the shards and
// jobs, as the runner does. Jobs/s against the number of workers, and what a shard costs: its
// claim, the fenced record of a row, its end.

/// One row of the queue stage: `workers` workers through the whole pile.
struct QueueRow: Codable, Sendable {
    var workers: Int
    var jobsPerSecond: Double
    var shardsPerSecond: Double
    /// Medians over every shard, milliseconds.
    var claimMs: Double
    var recordMs: Double
    var finishMs: Double
    /// Jobs/s of every round (this row is the median one).
    var rounds: [Double] = []
}

/// The queue stage's record.
struct QueueResult: Codable, Sendable {
    var jobs: Int
    var imagesPerJob: Int
    var shardImages: Int
    /// Interleaved rounds behind each row's median.
    var rounds: Int
    var rows: [QueueRow]
}

func expectedQueueSeconds(_ options: Options) -> Double { options.quick ? 20 : 90 }

/// Times of one kind, from several threads.
final class Timings: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String: [Double]] = [:]
    func add(_ key: String, _ seconds: Double) { lock.lock(); values[key, default: []].append(seconds); lock.unlock() }
    func count(_ key: String) -> Int { lock.lock(); defer { lock.unlock() }; return values[key]?.count ?? 0 }
    func medianMs(_ key: String) -> Double {
        lock.lock(); defer { lock.unlock() }
        let v = (values[key] ?? []).sorted()
        return v.isEmpty ? 0 : v[v.count / 2] * 1000
    }
}

func runQueueStage(_ options: Options) throws -> StageOutcome<QueueResult> {
    guard let server = PostgresTestServer.shared else {
        return StageOutcome(value: nil, skipped: "PostgreSQL could not be started: \(PostgresTestServer.unavailableReason ?? "unknown")")
    }
    let jobs = options.quick ? 40 : 120, imagesPerJob = 16, shardImages = 4, repeats = options.quick ? 1 : 3
    // A warm-up run (the server's caches, the first connections), then interleaved rounds: each row is
    // the median round, with the spread.
    _ = try queueRun(server: server, workers: 1, jobs: 20, imagesPerJob: imagesPerJob, shardImages: shardImages)
    var runs: [Int: [QueueRow]] = [:]
    for _ in 1 ... repeats {
        for workers in [1, 2, 4, 8] {
            let row = try queueRun(server: server, workers: workers, jobs: jobs, imagesPerJob: imagesPerJob, shardImages: shardImages)
            log(String(format: "queue: %d worker(s): %.1f jobs/s, %.1f shards/s; per shard: claim %.2f ms, record %.2f ms an image, end %.2f ms",
                       workers, row.jobsPerSecond, row.shardsPerSecond, row.claimMs, row.recordMs, row.finishMs))
            runs[workers, default: []].append(row)
        }
    }
    let rows = runs.keys.sorted().map { workers -> QueueRow in
        var (row, rates) = medianRound(runs[workers]!, by: \.jobsPerSecond)
        row.rounds = rates
        return row
    }
    return StageOutcome(value: QueueResult(jobs: jobs, imagesPerJob: imagesPerJob, shardImages: shardImages, rounds: repeats, rows: rows))
}

/// One run of the pile through `workers` worker threads on a fresh database.
func queueRun(server: PostgresTestServer, workers: Int, jobs: Int, imagesPerJob: Int, shardImages: Int) throws -> QueueRow {
    let url = try PostgresStoreURL.parse(server.url(database: try server.createDatabase()))
    let stores = try (0 ..< workers).map { _ in try PostgresJobStore.openDaemon(url: url, password: server.password) }
    for n in 0 ..< jobs {
        _ = try stores[0].insertJob(NewJob(name: "q\(n)", spoolName: "\(n)--q\(n).yml", sourceName: "q\(n).yml", content: [UInt8(n & 0xFF)],
                                           spec: "{}", totalImages: imagesPerJob))
    }
    let timings = Timings()
    let failures = Timings()
    let started = Date()
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let store = stores[w]
        let request = ShardRequest(worker: "w\(w)", maxAttempts: 3, environmentID: nil, shardImages: shardImages, leaseSeconds: 30)
        while true {
            var t = Date()
            guard let outcome = try? store.claimNextShard(request) else { break }
            guard case let .claimed(claim) = outcome else { continue }
            timings.add("claim", Date().timeIntervalSince(t))
            for i in claim.indices {
                t = Date()
                let row = ImageRow(jobID: claim.job.id, index: i, seed: 1, classIndex: nil, className: nil, path: "/q/\(i).png",
                                   format: "png", width: 28, height: 28, byteSize: 100, sha256: String(repeating: "0", count: 64),
                                   record: "{}")
                if (try? store.recordImage(row, under: claim)) == nil { failures.add("record", 0) }
                timings.add("record", Date().timeIntervalSince(t))
            }
            t = Date()
            if (try? store.finishShard(claim)) == .lastShard, (try? store.completeJob(claim)) == nil { failures.add("complete", 0) }
            timings.add("finish", Date().timeIntervalSince(t))
        }
    }
    let wall = Date().timeIntervalSince(started)
    let done = try stores[0].jobs(states: [.done], limit: jobs + 1).count
    guard done == jobs, failures.count("record") == 0, failures.count("complete") == 0 else {
        throw BenchError("\(workers) workers: \(done) of \(jobs) jobs done, "
                         + "\(failures.count("record")) records and \(failures.count("complete")) job ends refused")
    }
    let row = QueueRow(workers: workers, jobsPerSecond: Double(jobs) / wall,
                       shardsPerSecond: Double(jobs * imagesPerJob / shardImages) / wall,
                       claimMs: timings.medianMs("claim"), recordMs: timings.medianMs("record"), finishMs: timings.medianMs("finish"))
    for s in stores { s.close() }
    return row
}
