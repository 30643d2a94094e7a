import Foundation

/// One worker's heartbeat: who it is, where, and what it holds now; rewritten at every heartbeat
/// (one row per `worker_name`, so several daemons sharing a store each keep their own).
public struct WorkerRow: Codable, Sendable, Equatable {
    /// The worker's name (`worker_name`; the host name by default).
    public var worker: String
    /// The host it runs on (`hostname`).
    public var host: String
    public var pid: Int
    public var startedAt: Double
    /// When the row was last written (the worker's clock).
    public var updatedAt: Double
    public var status: String
    /// The models in its cache.
    public var cachedModels: [String]
    /// The shard it holds, if any: job, shard number, index range and fencing token.
    public var jobID: Int64?
    public var shard: Int?
    public var firstIndex: Int?
    public var endIndex: Int?
    public var leaseToken: Int64?
    /// Images of the shard written in this run, and the rate of this run.
    public var imagesDone: Int
    public var imagesPerSecond: Double

    /// A worker row from its values.
    public init(worker: String, host: String, pid: Int, startedAt: Double, updatedAt: Double, status: String,
                cachedModels: [String] = [], jobID: Int64? = nil, shard: Int? = nil, firstIndex: Int? = nil,
                endIndex: Int? = nil, leaseToken: Int64? = nil, imagesDone: Int = 0, imagesPerSecond: Double = 0) {
        self.worker = worker
        self.host = host
        self.pid = pid
        self.startedAt = startedAt
        self.updatedAt = updatedAt
        self.status = status
        self.cachedModels = cachedModels
        self.jobID = jobID
        self.shard = shard
        self.firstIndex = firstIndex
        self.endIndex = endIndex
        self.leaseToken = leaseToken
        self.imagesDone = imagesDone
        self.imagesPerSecond = imagesPerSecond
    }
}
