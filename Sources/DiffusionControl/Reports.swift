import DiffusionDaemon
import Digests
import Foundation
import Metrics
import ImageCodecs
import Provenance
#if canImport(Glibc)
import Glibc
#endif

/// What `diffusionctl status` shows; built from the database alone, so it
/// works while the daemon is down.
public struct StatusReport: Codable, Sendable {
    public struct DaemonState: Codable, Sendable {
        /// A daemon holds the state directory's lock (or, where the lock cannot be asked, its heartbeat is fresh).
        public var alive: Bool
        /// Alive and writing its heartbeat (false for a stopped or wedged process).
        public var responding: Bool
        /// How `alive` was decided: "lock" or, where the lock file cannot be read, "heartbeat".
        public var liveness: String
        public var pid: Int?
        public var heartbeatAgeSeconds: Double?
        /// What the daemon is doing; nil when it is not running.
        public var status: String?
        public var startedAt: Double?
    }

    public struct Active: Codable, Sendable {
        public var jobID: Int64
        public var name: String
        public var imagesDone: Int
        public var imagesTotal: Int
        public var imagesPerSecond: Double
        public var etaSeconds: Double?
        /// The batch being sampled: its images and the steps done of its total (0 when unknown).
        public var batchImages: Int
        public var stepsDone: Int
        public var stepsTotal: Int
        public var cancelRequested: Bool
    }

    public struct JobSummary: Codable, Sendable {
        public var id: Int64
        public var name: String
        public var state: String
        public var priority: Int
        public var images: Int
        public var imagesDone: Int
        public var attempts: Int
        public var createdAt: Double
        public var finishedAt: Double?
        public var error: String?
    }

    public var daemon: DaemonState
    public var active: Active?
    /// The first jobs of the queue, in the order they will run (`queueLength` in all).
    public var queue: [JobSummary]
    public var queueLength: Int
    public var recent: [JobSummary]
    public var cachedModels: [String]
    /// Every worker's heartbeat row, and the active jobs' progress summed over their shards (StatusReport+Workers.swift).
    public var workers: [Worker] = []
    public var jobs: [JobProgress] = []

    /// A heartbeat older than this means the daemon is not running.
    public static let staleAfter = 5.0

    public static func summary(_ job: JobRow, store: any JobStore) -> JobSummary {
        JobSummary(id: job.id, name: job.name, state: job.state.rawValue, priority: job.priority, images: job.totalImages,
                   imagesDone: (try? store.imageCount(jobID: job.id)) ?? 0, attempts: job.attempts,
                   createdAt: job.createdAt, finishedAt: job.finishedAt, error: job.error)
    }

    /// `lockDirectory`: the state directory, whose lock a running daemon holds (`DaemonLock`);
    /// `queueShown`: how many queued jobs to list (a long queue must not slow the answer down).
    public static func build(store: any JobStore, lockDirectory: String, now: Double = Date().timeIntervalSince1970,
                             recent: Int = 10, queueShown: Int = 20) throws -> StatusReport {
        let hb = try store.heartbeat()
        let age = hb.map { now - $0.updatedAt }
        let alive: Bool
        var pid = hb?.pid
        let liveness: String
        switch DaemonLock.holder(in: lockDirectory) {
        case .held(let holder):
            alive = true
            liveness = "lock"
            pid = holder ?? pid
        case .free:
            alive = false
            liveness = "lock"
        case .unknown:
            // Heartbeat and pid only: what a user without access to the lock file can know.
            liveness = "heartbeat"
            alive = (age ?? .infinity) < staleAfter && hb?.status != "stopping"
                && !(hb.map { kill(pid_t($0.pid), 0) != 0 && errno == ESRCH } ?? false)
        }
        // Responding: this daemon's own heartbeat is fresh (not the last one of a daemon before it).
        let responding = alive && (age ?? .infinity) < staleAfter && (pid == nil || hb?.pid == pid)
        var active: Active?
        // The heartbeat lags the database by up to a second: a job it calls active may be done.
        if responding, let hb, let id = hb.activeJobID, let job = try store.job(id: id), job.state == .active {
            let done = max(hb.imagesDone, (try? store.imageCount(jobID: id)) ?? 0)
            // The heartbeat counts this worker's shard; the job's images are counted over all its shards.
            active = Active(jobID: id, name: job.name, imagesDone: done, imagesTotal: max(hb.imagesTotal, job.totalImages),
                            imagesPerSecond: hb.imagesPerSecond, etaSeconds: hb.etaSeconds, batchImages: hb.batchImages,
                            stepsDone: hb.stepsDone, stepsTotal: hb.stepsTotal, cancelRequested: job.cancelRequested)
        } else if let job = try store.jobs(states: [.active], limit: 1).first {
            // The daemon died mid-job: show what the database knows.
            active = Active(jobID: job.id, name: job.name, imagesDone: (try? store.imageCount(jobID: job.id)) ?? 0,
                            imagesTotal: job.totalImages, imagesPerSecond: 0, etaSeconds: nil, batchImages: 0, stepsDone: 0,
                            stepsTotal: 0, cancelRequested: job.cancelRequested)
        }
        let queue = try store.queue(limit: queueShown).map { summary($0, store: store) }
        let queueLength = try store.queueLength()
        let recentJobs = try store.jobs(states: [.done, .failed, .canceled], limit: recent).map { summary($0, store: store) }
        var status = responding ? hb?.status : nil
        // The heartbeat lags the job rows by up to a second: a job just ended leaves the daemon idle.
        if responding, active == nil, hb?.activeJobID != nil, status?.hasPrefix("running job") == true { status = "idle" }
        var report = StatusReport(daemon: DaemonState(alive: alive, responding: responding, liveness: liveness,
                                                      pid: alive ? pid : hb?.pid, heartbeatAgeSeconds: age, status: status,
                                                      startedAt: hb?.startedAt),
                                  active: active, queue: queue, queueLength: queueLength, recent: recentJobs,
                                  cachedModels: responding ? (hb?.cachedModels ?? []) : [])
        report.workers = try workers(store: store, now: now)
        report.jobs = try progress(store: store)
        return report
    }

    /// The human-readable form.
    public func render(width: Int = 30) -> String {
        var out: [String] = []
        let pid = daemon.pid.map { "pid \($0)" } ?? "pid unknown"
        if daemon.alive && daemon.responding {
            out.append("diffusiond: running (\(pid), heartbeat \(String(format: "%.1f", daemon.heartbeatAgeSeconds ?? 0)) s ago) - \(daemon.status ?? "")")
        } else if daemon.alive {
            let last = daemon.heartbeatAgeSeconds.map { "last heartbeat \(Self.duration($0)) ago" } ?? "no heartbeat yet"
            out.append("diffusiond: running (\(pid)) but not responding: \(last) (stopped, starting or overloaded)")
        } else if let age = daemon.heartbeatAgeSeconds {
            out.append("diffusiond: not running (last heartbeat \(Self.duration(age)) ago)")
        } else {
            out.append("diffusiond: not running (no heartbeat recorded)")
        }
        if let a = active {
            let inBatch = a.stepsTotal > 0 ? Double(a.batchImages * a.stepsDone) / Double(a.stepsTotal) : 0
            let frac = a.imagesTotal > 0 ? min(1, (Double(a.imagesDone) + inBatch) / Double(a.imagesTotal)) : 0
            let filled = Int((frac * Double(width)).rounded(.down))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: max(0, width - filled))
            var line = "active: job \(a.jobID) \(a.name) [\(bar)] " + ProgressText.line(
                imagesDone: a.imagesDone, imagesTotal: a.imagesTotal, batchImages: a.batchImages, stepsDone: a.stepsDone,
                stepsTotal: a.stepsTotal, imagesPerSecond: a.imagesPerSecond, etaSeconds: a.etaSeconds)
            if a.cancelRequested { line += " (cancel requested)" }
            out.append(line)
        } else {
            out.append("active: none")
        }
        out.append("queue: \(queueLength == 0 ? "empty" : "\(queueLength) job(s)")" + (queueLength > queue.count ? " (the first \(queue.count) below)" : ""))
        for j in queue { out.append("  \(j.id)  \(j.name)  priority \(j.priority)  \(j.imagesDone)/\(j.images) images  attempts \(j.attempts)") }
        if !recent.isEmpty {
            out.append("recent:")
            for j in recent {
                out.append("  \(j.id)  \(j.name)  \(j.state)  \(j.imagesDone)/\(j.images) images" + (j.error.map { "  \($0.split(separator: "\n").first ?? "")" } ?? ""))
            }
        }
        out.append("cached models: \(cachedModels.isEmpty ? "none" : cachedModels.joined(separator: ", "))")
        out += renderWorkers()
        return out.joined(separator: "\n")
    }

    public static func duration(_ s: Double) -> String { ProgressText.duration(s) }
}

/// `diffusionctl verify`: checks an image file against its embedded record and the database.
public struct VerifyReport: Codable, Sendable {
    public var path: String
    public var sha256: String
    public var format: String?
    public var hasRecord: Bool
    public var jobID: Int64?
    public var index: Int?
    public var ok: Bool
    public var checks: [String]
    public var problems: [String]

    public static func build(path: String, store: (any JobStore)?) -> VerifyReport {
        var r = VerifyReport(path: path, sha256: "", format: nil, hasRecord: false, ok: false, checks: [], problems: [])
        let bytes: [UInt8]
        do { bytes = try FileBytes.read(path: path) } catch {
            r.problems.append("cannot read: \(error)")
            return r
        }
        r.sha256 = SHA256Hex.of(bytes)
        let decoded: DecodedImageFile
        do { decoded = try ImageFile.decode(bytes) } catch {
            r.problems.append("cannot decode: \(error)")
            return r
        }
        r.format = decoded.format.rawValue
        r.checks.append("decodes as \(decoded.format.rawValue) \(decoded.image.width)x\(decoded.image.height)x\(decoded.image.channels)")
        guard let json = decoded.record.json else {
            r.problems.append("no embedded diffusiond record")
            return r
        }
        r.hasRecord = true
        guard let record = try? GenerationRecord.parse(json) else {
            r.problems.append("embedded record is not a valid \(GenerationRecord.formatVersion) record")
            return r
        }
        r.jobID = record.job.id
        r.index = record.index
        r.checks.append("embedded record: job \(record.job.id) (\(record.job.name)), image \(record.index), seed \(record.seed)")
        if decoded.image.width != record.spec.width || decoded.image.height != record.spec.height {
            r.problems.append("size \(decoded.image.width)x\(decoded.image.height) differs from the record's \(record.spec.width)x\(record.spec.height)")
        }
        guard let store else {
            r.problems.append("no database to check against")
            r.ok = false
            return r
        }
        guard let row = try? store.image(jobID: record.job.id, index: record.index) else {
            r.problems.append("the database has no image \(record.index) of job \(record.job.id)")
            return r
        }
        if row.sha256 == r.sha256 { r.checks.append("SHA-256 matches the database") } else {
            r.problems.append("SHA-256 \(r.sha256) differs from the database's \(row.sha256) (file modified?)")
        }
        if row.record == json { r.checks.append("embedded record matches the database") } else {
            r.problems.append("embedded record differs from the database's")
        }
        if row.seed != record.seed { r.problems.append("seed differs from the database's") }
        if let job = try? store.job(id: record.job.id), job.contentSHA256 != record.job.fileSHA256 {
            r.problems.append("job file hash differs from the database's")
        }
        r.ok = r.problems.isEmpty
        return r
    }

    public func render() -> String {
        var out = ["\(path): \(ok ? "OK" : "FAILED")", "  sha256 \(sha256)"]
        out += checks.map { "  ok: \($0)" }
        out += problems.map { "  problem: \($0)" }
        return out.joined(separator: "\n")
    }
}
