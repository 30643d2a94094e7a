import Foundation
import GRDB

/// The life of a job: pending -> active -> done | failed | canceled; active may go back to pending.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case pending, active, done, failed, canceled

    /// True for states a job never leaves.
    public var isFinal: Bool { self == .done || self == .failed || self == .canceled }
}

/// One row of `jobs` (without the file content; see `ProvenanceStore.jobContent`).
public struct JobRow: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var spoolName: String
    public var sourceName: String
    public var contentSHA256: String
    /// The validated job spec as JSON, or nil when the file was rejected.
    public var spec: String?
    public var state: JobState
    public var priority: Int
    public var attempts: Int
    public var cancelRequested: Bool
    public var error: String?
    public var totalImages: Int
    public var outputDir: String?
    public var environmentID: Int64?
    public var createdAt: Double
    public var updatedAt: Double
    public var startedAt: Double?
    public var finishedAt: Double?

    public init(row: Row) {
        id = row["id"]
        name = row["name"]
        spoolName = row["spool_name"]
        sourceName = row["source_name"]
        contentSHA256 = row["content_sha256"]
        spec = row["spec"]
        state = JobState(rawValue: row["state"]) ?? .failed
        priority = row["priority"]
        attempts = row["attempts"]
        cancelRequested = row["cancel_requested"]
        error = row["error"]
        totalImages = row["total_images"]
        outputDir = row["output_dir"]
        environmentID = row["environment_id"]
        createdAt = row["created_at"]
        updatedAt = row["updated_at"]
        startedAt = row["started_at"]
        finishedAt = row["finished_at"]
    }

    static let columns = """
        id, name, spool_name, source_name, content_sha256, spec, state, priority, attempts,
        cancel_requested, error, total_images, output_dir, environment_id, created_at, updated_at,
        started_at, finished_at
        """
}

/// What a new job row holds.
public struct NewJob: Sendable {
    public var name: String
    public var spoolName: String
    public var sourceName: String
    public var content: [UInt8]
    public var spec: String?
    public var state: JobState
    public var priority: Int
    public var totalImages: Int
    public var error: String?

    public init(name: String, spoolName: String, sourceName: String, content: [UInt8], spec: String?,
                state: JobState = .pending, priority: Int = 0, totalImages: Int = 0, error: String? = nil) {
        self.name = name
        self.spoolName = spoolName
        self.sourceName = sourceName
        self.content = content
        self.spec = spec
        self.state = state
        self.priority = priority
        self.totalImages = totalImages
        self.error = error
    }
}

/// One state change of a job.
public struct TransitionRow: Codable, Sendable, Equatable {
    public var jobID: Int64
    public var from: JobState?
    public var to: JobState
    public var at: Double
    public var reason: String?
}

/// One written image.
public struct ImageRow: Codable, Sendable, Equatable {
    public var jobID: Int64
    public var index: Int
    /// The per-image seed; stored as the Int64 with the same bit pattern.
    public var seed: UInt64
    public var classIndex: Int?
    public var className: String?
    public var path: String
    public var format: String
    public var width: Int
    public var height: Int
    public var byteSize: Int
    public var sha256: String
    /// The JSON record embedded in the file.
    public var record: String
    public var committedAt: Double
    /// The worker that recorded the row and the fencing token of its lease (nil for a row recorded without a lease).
    public var worker: String?
    public var leaseToken: Int64?

    public init(jobID: Int64, index: Int, seed: UInt64, classIndex: Int?, className: String?, path: String,
                format: String, width: Int, height: Int, byteSize: Int, sha256: String, record: String,
                committedAt: Double = Date().timeIntervalSince1970, worker: String? = nil, leaseToken: Int64? = nil) {
        self.worker = worker
        self.leaseToken = leaseToken
        self.jobID = jobID
        self.index = index
        self.seed = seed
        self.classIndex = classIndex
        self.className = className
        self.path = path
        self.format = format
        self.width = width
        self.height = height
        self.byteSize = byteSize
        self.sha256 = sha256
        self.record = record
        self.committedAt = committedAt
    }

    public init(row: Row) {
        jobID = row["job_id"]
        index = row["idx"]
        seed = UInt64(bitPattern: row["seed"] as Int64)
        classIndex = row["class_index"]
        className = row["class_name"]
        path = row["path"]
        format = row["format"]
        width = row["width"]
        height = row["height"]
        byteSize = row["byte_size"]
        sha256 = row["sha256"]
        record = row["record"]
        committedAt = row["committed_at"]
        worker = row["worker"]
        leaseToken = row["lease_token"]
    }
}

/// One model load.
public struct ModelLoadRow: Codable, Sendable, Equatable {
    public var name: String
    public var contentHash: String
    public var loadedAt: Double
    public var loadSeconds: Double
    public var bytes: Int

    public init(name: String, contentHash: String, loadedAt: Double = Date().timeIntervalSince1970,
                loadSeconds: Double, bytes: Int = 0) {
        self.name = name
        self.contentHash = contentHash
        self.loadedAt = loadedAt
        self.loadSeconds = loadSeconds
        self.bytes = bytes
    }
}

/// One computed metric.
public struct MetricRow: Codable, Sendable, Equatable {
    public var jobID: Int64?
    public var name: String
    public var value: Double
    public var n: Int
    /// JSON text.
    public var details: String
    public var recordedAt: Double

    public init(jobID: Int64?, name: String, value: Double, n: Int, details: String = "{}",
                recordedAt: Double = Date().timeIntervalSince1970) {
        self.jobID = jobID
        self.name = name
        self.value = value
        self.n = n
        self.details = details
        self.recordedAt = recordedAt
    }
}

/// The software and machine a job ran on.
public struct EnvironmentRow: Codable, Sendable, Equatable {
    public var id: Int64?
    public var recordedAt: Double
    public var version: String
    public var host: String
    /// The compute kernel in use, e.g. "openblas+onednn" or "test".
    public var kernel: String
    public var kernelVersions: [String: String]
    public var threads: Int
    public var details: [String: String]

    public init(id: Int64? = nil, recordedAt: Double = Date().timeIntervalSince1970, version: String, host: String,
                kernel: String, kernelVersions: [String: String], threads: Int, details: [String: String] = [:]) {
        self.id = id
        self.recordedAt = recordedAt
        self.version = version
        self.host = host
        self.kernel = kernel
        self.kernelVersions = kernelVersions
        self.threads = threads
        self.details = details
    }
}

/// The daemon's liveness and progress, rewritten about once a second.
public struct HeartbeatRow: Codable, Sendable, Equatable {
    public var pid: Int
    public var startedAt: Double
    public var updatedAt: Double
    public var status: String
    public var activeJobID: Int64?
    public var imagesDone: Int
    public var imagesTotal: Int
    public var imagesPerSecond: Double
    public var cachedModels: [String]
    /// The batch being sampled: its images, and the steps done of its total.
    public var batchImages: Int
    public var stepsDone: Int
    public var stepsTotal: Int
    /// Seconds until the active job's last image, at the pace of this run (nil before its first step).
    public var etaSeconds: Double?

    public init(pid: Int, startedAt: Double, updatedAt: Double, status: String, activeJobID: Int64? = nil,
                imagesDone: Int = 0, imagesTotal: Int = 0, imagesPerSecond: Double = 0, cachedModels: [String] = [],
                batchImages: Int = 0, stepsDone: Int = 0, stepsTotal: Int = 0, etaSeconds: Double? = nil) {
        self.batchImages = batchImages
        self.stepsDone = stepsDone
        self.stepsTotal = stepsTotal
        self.etaSeconds = etaSeconds
        self.pid = pid
        self.startedAt = startedAt
        self.updatedAt = updatedAt
        self.status = status
        self.activeJobID = activeJobID
        self.imagesDone = imagesDone
        self.imagesTotal = imagesTotal
        self.imagesPerSecond = imagesPerSecond
        self.cachedModels = cachedModels
    }
}

func jsonText<T: Encodable>(_ value: T) -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys]
    return (try? String(decoding: enc.encode(value), as: UTF8.self)) ?? "null"
}

func jsonValue<T: Decodable>(_ type: T.Type, _ text: String?) -> T? {
    guard let text else { return nil }
    return try? JSONDecoder().decode(T.self, from: Data(text.utf8))
}
