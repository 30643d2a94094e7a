// The fleet stage: real diffusiond workers, each its own process with its own spool and state,
// sharing one PostgreSQL store (a throwaway server on this machine) and one output folder, as
// docs/scale-out.md runs a fleet. Two kinds of rows:
//   queue:  the deterministic test generator, which makes each image in a fixed simulated time
//           (a sleep, no CPU), so the rows measure the queue machinery (claims, leases, fenced
//           records, link(2) placement, files) and not the compute: jobs/s with 1, 2, 4, 8 workers;
//   engine: the diffusion engine, one thread a worker: images/s with 1 and 2 workers.
// Every row is checked afterwards: every image recorded once, one file per row.
import DaemonTestSupport
import DiffusionDaemon
import DiffusionEngine
import Foundation
import Provenance
import ProvenancePostgres
#if canImport(Glibc)
import Glibc
#endif

/// One fleet run: `workers` daemons through a pile of jobs.
struct FleetRow: Codable, Sendable {
    var generator: String
    var workers: Int
    var jobs: Int
    var images: Int
    /// First job inserted -> last job done.
    var seconds: Double
    var jobsPerSecond: Double
    var imagesPerSecond: Double
    /// Against the same generator's one-worker row.
    var speedup: Double
    /// Wall time a worker spent per shard beyond the generator's own time (one-worker rows).
    var overheadPerShardMs: Double?
    /// Images/s of every round (this row is the median one).
    var rounds: [Double] = []
}

/// The fleet stage's record.
struct FleetResult: Codable, Sendable {
    var server: String
    var testDelayMsPerImage: Int
    var queueJob: String
    var queueShardImages: Int
    var engineJob: String
    var engineShardImages: Int
    /// Interleaved rounds behind each row's median.
    var rounds: Int
    var queue: [FleetRow]
    var engine: [FleetRow]
}

func expectedFleetSeconds(_ options: Options) -> Double { options.quick ? 90 : 480 }

func runFleetStage(_ options: Options) throws -> StageOutcome<FleetResult> {
    guard let server = PostgresTestServer.shared else {
        return StageOutcome(value: nil, skipped: "PostgreSQL could not be started: \(PostgresTestServer.unavailableReason ?? "unknown")")
    }
    let delay = options.fleetDelayMs
    let queueJobs = options.quick ? 12 : 24, engineJobs = options.quick ? 2 : 4, repeats = options.quick ? 1 : 3
    let queueJob = { (n: Int) in "name: fleet-\(n)\nmodel: fm\nmode: class-conditional\nimages: 16\nsampler: {kind: ddim, steps: 10}\nseed: \(n)\n" }
    let engineJob = { (n: Int) in "name: fleet-engine-\(n)\nmodel: fashion-mnist\nmode: class-conditional\nimages: 32\nsampler: {kind: ddim, steps: 25}\nseed: \(n)\n" }
    let models = URL(fileURLWithPath: options.models).standardizedFileURL.path
    // Interleaved repeats: every worker count once per round, so slow moments of a shared machine
    // spread over all of them; each row is the median round, with the spread.
    var queueRuns: [Int: [FleetRow]] = [:], engineRuns: [Int: [FleetRow]] = [:]
    for round in 1 ... repeats {
        for workers in [1, 2, 4, 8] {
            let fleet = try Fleet(server: server, bin: options.bin, work: options.work, workers: workers, generator: "test",
                                  delayMs: delay, shardImages: 4, batch: 4, models: nil)
            defer { fleet.stop() }
            let row = try fleet.run(jobs: (0 ..< queueJobs).map(queueJob))
            log(String(format: "fleet round %d: test generator (%d ms an image), %d worker(s): %.2f jobs/s, %.1f images/s",
                       round, delay, workers, row.jobsPerSecond, row.imagesPerSecond))
            queueRuns[workers, default: []].append(row)
        }
        for workers in [1, 2] {
            let fleet = try Fleet(server: server, bin: options.bin, work: options.work, workers: workers, generator: "engine",
                                  delayMs: 0, shardImages: 16, batch: 16, models: models)
            defer { fleet.stop() }
            let row = try fleet.run(jobs: (0 ..< engineJobs).map(engineJob))
            log(String(format: "fleet round %d: engine (one thread a worker), %d worker(s): %.2f images/s", round, workers, row.imagesPerSecond))
            engineRuns[workers, default: []].append(row)
        }
    }
    func medians(_ runs: [Int: [FleetRow]]) -> [FleetRow] {
        let rows = runs.keys.sorted().map { workers -> FleetRow in
            var (row, rates) = medianRound(runs[workers]!, by: \.imagesPerSecond)
            row.rounds = rates
            return row
        }
        return rows.map { r in
            var r = r
            r.speedup = r.imagesPerSecond / rows[0].imagesPerSecond
            return r
        }
    }
    var queue = medians(queueRuns)
    let engine = medians(engineRuns)
    queue[0].overheadPerShardMs = (queue[0].seconds - Double(queue[0].images * delay) / 1000) / Double(queue[0].images / 4) * 1000
    for r in queue + engine {
        log(String(format: "fleet: %@, %d worker(s): %.2f jobs/s, %.1f images/s (rounds %@), %.2fx one worker", r.generator, r.workers,
                   r.jobsPerSecond, r.imagesPerSecond, r.rounds.map { String(format: "%.1f", $0) }.joined(separator: ", "), r.speedup))
    }
    let version = (try? server.psql("SHOW server_version", database: "postgres"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
    return StageOutcome(value: FleetResult(
        server: "PostgreSQL \(version) on 127.0.0.1 (this machine; throwaway data directory, fsync off)",
        testDelayMsPerImage: delay, queueJob: queueJob(0), queueShardImages: 4, engineJob: engineJob(0), engineShardImages: 16,
        rounds: repeats, queue: queue, engine: engine))
}

/// `workers` diffusiond processes on a fresh database of `server`, in `work`/bench-fleet.
final class Fleet {
    let root: String
    let url: String
    let server: PostgresTestServer
    let generator: String
    let validator: JobValidator
    var processes: [Process] = []

    init(server: PostgresTestServer, bin: String, work: String, workers: Int, generator: String, delayMs: Int, shardImages: Int,
         batch: Int, models: String?) throws {
        self.server = server
        self.generator = generator
        let fm = FileManager.default
        root = URL(fileURLWithPath: work).standardizedFileURL.path + "/bench-fleet"
        try? fm.removeItem(atPath: root)
        try TestGeneratorBundle.write(into: root + "/models")
        try "\(server.password)\n".write(toFile: root + "/store-password", atomically: true, encoding: .utf8)
        url = server.url(database: try server.createDatabase())
        let modelsDir = models ?? root + "/models"
        validator = JobValidator(catalog: DirectoryModelCatalog(root: modelsDir), defaultModel: models == nil ? "fm" : "fashion-mnist")
        _ = try client()  // applies the store's migrations before the workers start
        for k in 1 ... workers {
            try """
            spool: w\(k)/spool
            output: out
            state: w\(k)/state
            models: \(modelsDir)
            default_model: \(models == nil ? "fm" : "fashion-mnist")
            preload: [\(models == nil ? "" : "fashion-mnist")]
            batch_size: \(batch)
            threads: 1
            generator: \(generator)
            store: \(url)
            store_password_file: store-password
            worker_name: w\(k)
            shards: {images: \(shardImages), lease_seconds: 30, heartbeat_seconds: 1}
            metrics: {enabled: false}
            log_level: notice
            """.write(toFile: root + "/w\(k).yml", atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin + "/diffusiond")
            p.arguments = ["--config", root + "/w\(k).yml"]
            var env = ProcessInfo.processInfo.environment
            env["DIFFUSIOND_TEST_DELAY_MS"] = String(delayMs)
            env["OMP_WAIT_POLICY"] = "passive"
            for key in ["DIFFUSIOND_TEST_GENERATOR", "NOTIFY_SOCKET", "DIFFUSIOND_CONFIG", KernelSelection.markerVariable] { env[key] = nil }
            p.environment = env
            _ = fm.createFile(atPath: root + "/w\(k).log", contents: nil)
            let log = FileHandle(forWritingAtPath: root + "/w\(k).log")
            p.standardOutput = log
            p.standardError = log
            try p.run()
            processes.append(p)
        }
        let store = try client()
        let deadline = seconds() + 120
        while try store.workers().count < workers {
            guard seconds() < deadline, processes.allSatisfy(\.isRunning) else {
                throw BenchError("fleet of \(workers): not every worker reported a heartbeat; logs: \(root)/w*.log")
            }
            usleep(50_000)
        }
    }

    private var cachedClient: PostgresJobStore?
    func client() throws -> PostgresJobStore {
        if let c = cachedClient { return c }
        let c = try PostgresJobStore.openDaemon(url: PostgresStoreURL.parse(url), password: server.password)
        cachedClient = c
        return c
    }

    /// Inserts the jobs (validated as `diffusionctl submit --store` does), waits until all are done,
    /// checks every image once with one file a row, and times first insert -> last done.
    func run(jobs texts: [String], timeout: Double = 1800) throws -> FleetRow {
        let store = try client()
        let specs = try texts.enumerated().map { n, text in try validator.validate(Array(text.utf8), fileName: "fleet-\(n).yml") }
        let started = wallClock()
        for (n, spec) in specs.enumerated() {
            _ = try store.insertJob(NewJob(name: spec.name, spoolName: "\(n)--fleet-\(n).yml", sourceName: "fleet-\(n).yml",
                                           content: Array(texts[n].utf8), spec: spec.jsonString(), state: .pending,
                                           priority: spec.priority, totalImages: spec.totalImages))
        }
        let t0 = seconds()
        var finished: [JobRow] = []
        while finished.count < specs.count {
            guard seconds() - t0 < timeout else { throw BenchError("fleet: \(finished.count) of \(specs.count) jobs done after \(Int(timeout)) s") }
            guard processes.allSatisfy(\.isRunning) else { throw BenchError("a fleet worker exited; logs: \(root)/w*.log") }
            usleep(20_000)
            finished = try store.jobs(states: [.done, .failed, .canceled], limit: specs.count + 1)
        }
        if let bad = finished.first(where: { $0.state != .done }) {
            throw BenchError("fleet job \(bad.name) \(bad.state.rawValue): \(bad.error ?? "")")
        }
        let seconds = (finished.compactMap(\.finishedAt).max() ?? wallClock()) - started
        let images = specs.reduce(0) { $0 + $1.totalImages }
        var rows = 0
        for job in finished {
            let recorded = try store.images(jobID: job.id)
            guard Set(recorded.map(\.index)) == Set(0 ..< job.totalImages), recorded.count == job.totalImages else {
                throw BenchError("fleet job \(job.name): \(recorded.count) rows for \(job.totalImages) images")
            }
            for image in recorded where !FileManager.default.fileExists(atPath: image.path) {
                throw BenchError("fleet job \(job.name): no file \(image.path) for image \(image.index)")
            }
            rows += recorded.count
        }
        let files = FileManager.default.enumerator(atPath: root + "/out")?.compactMap { $0 as? String }
            .filter { $0.hasSuffix(".png") && !$0.contains("/view/") && !$0.hasSuffix("contact-sheet.png") }.count ?? 0
        guard files == rows else { throw BenchError("fleet: \(files) image files in \(root)/out for \(rows) rows") }
        return FleetRow(generator: generator, workers: processes.count, jobs: specs.count, images: images, seconds: seconds,
                        jobsPerSecond: Double(specs.count) / seconds, imagesPerSecond: Double(images) / seconds, speedup: 1)
    }

    /// SIGTERM to every worker, then waits (SIGKILL after 60 s).
    func stop() {
        for p in processes where p.isRunning { kill(p.processIdentifier, SIGTERM) }
        let t0 = seconds()
        for p in processes {
            while p.isRunning && seconds() - t0 < 60 { usleep(20_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        }
        cachedClient?.close()
        cachedClient = nil
    }
}
