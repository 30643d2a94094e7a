import Foundation

/// The lease under which one worker holds a shard. `token` is the fencing token: bumped at every
/// claim of the shard, named by every write made under the lease; the store refuses a write whose
/// token is no longer the shard's (its lease was taken by another worker meanwhile).
public struct ShardLease: Sendable, Equatable, Codable {
    /// The fencing token.
    public var token: Int64
    /// The worker that holds the lease (`worker_name`).
    public var worker: String
    /// When the store stops honouring the lease unless it is renewed (the store's clock, seconds since the epoch).
    public var expiresAt: Double

    /// A lease from its parts.
    public init(token: Int64, worker: String, expiresAt: Double) {
        self.token = token
        self.worker = worker
        self.expiresAt = expiresAt
    }
}

/// A unit of claimed work: the images `indices` of `job`, held under `lease`. The runner works on
/// claims only; a one-host store hands out a whole job as one claim, a shared store a shard of it.
public struct ShardClaim: Sendable, Equatable {
    /// The job (active), as it was when claimed.
    public var job: JobRow
    /// The shard's number within the job (0 for a whole job).
    public var shard: Int
    /// The image indices of the shard.
    public var indices: Range<Int>
    /// The lease and its fencing token.
    public var lease: ShardLease
    /// How many times the shard has been claimed in this run of the job, this claim included.
    public var attempt: Int

    /// A claim from its parts.
    public init(job: JobRow, shard: Int, indices: Range<Int>, lease: ShardLease, attempt: Int) {
        self.job = job
        self.shard = shard
        self.indices = indices
        self.lease = lease
        self.attempt = attempt
    }

    /// "job 7 shard 2 [12, 18) token 3", for logs and errors.
    public var label: String {
        "job \(job.id) shard \(shard) [\(indices.lowerBound), \(indices.upperBound)) token \(lease.token)"
    }
}

/// What a worker asks for when it claims work.
public struct ShardRequest: Sendable, Equatable {
    /// The worker asking (`worker_name`): it names the lease.
    public var worker: String
    /// Claims of a job (or of one of its shards) that may end in a crash before it fails as a poison job.
    public var maxAttempts: Int
    /// The environment the worker recorded (set on the job at its first claim).
    public var environmentID: Int64?
    /// Images per shard when a job is cut into shards (a one-host store ignores it: one shard per job).
    public var shardImages: Int
    /// How long the lease holds without a renewal.
    public var leaseSeconds: Double

    /// A request from its parts.
    public init(worker: String, maxAttempts: Int, environmentID: Int64?, shardImages: Int, leaseSeconds: Double) {
        self.worker = worker
        self.maxAttempts = maxAttempts
        self.environmentID = environmentID
        self.shardImages = shardImages
        self.leaseSeconds = leaseSeconds
    }
}

/// The outcome of asking for the next shard.
public enum ShardClaimOutcome: Sendable, Equatable {
    /// The shard is leased to the worker; its job is active.
    case claimed(ShardClaim)
    /// The job (or the shard) used up its attempts: the job is now failed.
    case poisoned(JobRow)
    /// A cancel was requested: the job is now canceled.
    case canceled(JobRow)
    /// Someone else took the work meanwhile; ask again.
    case notPending
}

/// What the end of a shard means for its job.
public enum ShardEnd: Sendable, Equatable {
    /// Other shards of the job are not done yet: this shard is done, its lease ended.
    case moreShards
    /// Every other shard is done: the caller finishes the job (contact sheet, metrics) under this
    /// shard's lease, then `completeJob`.
    case lastShard
}

/// A shard's place in its job's run.
public enum ShardState: String, Sendable, Codable, CaseIterable {
    /// Waiting for a worker (new, released, or its holder's lease was recovered).
    case pending
    /// Held by a worker under a lease (that may have expired: the next claim takes it over).
    case leased
    /// Every image recorded.
    case done
}

/// One shard of a job, as the store holds it.
public struct ShardRow: Sendable, Equatable, Codable {
    public var jobID: Int64
    public var shard: Int
    public var firstIndex: Int
    public var endIndex: Int
    public var state: ShardState
    /// The fencing token of the latest claim (0 before any).
    public var token: Int64
    public var worker: String?
    public var leaseExpiresAt: Double?
    public var attempts: Int

    /// A shard row from its column values.
    public init(jobID: Int64, shard: Int, firstIndex: Int, endIndex: Int, state: ShardState, token: Int64,
                worker: String?, leaseExpiresAt: Double?, attempts: Int) {
        self.jobID = jobID
        self.shard = shard
        self.firstIndex = firstIndex
        self.endIndex = endIndex
        self.state = state
        self.token = token
        self.worker = worker
        self.leaseExpiresAt = leaseExpiresAt
        self.attempts = attempts
    }
}

/// One claim of a shard in the store's history: who held which token, since when.
public struct LeaseRow: Sendable, Equatable, Codable {
    public var jobID: Int64
    public var shard: Int
    public var token: Int64
    public var worker: String
    /// When it was claimed (the store's clock).
    public var claimedAt: Double

    /// A lease row from its column values.
    public init(jobID: Int64, shard: Int, token: Int64, worker: String, claimedAt: Double) {
        self.jobID = jobID
        self.shard = shard
        self.token = token
        self.worker = worker
        self.claimedAt = claimedAt
    }
}

/// A write made under a lease that is no longer held: its token is not the shard's any more (another
/// worker claimed the shard after the lease expired), or the job left `active`. Nothing was written.
public struct LeaseLost: Error, CustomStringConvertible, Sendable, Equatable {
    public var jobID: Int64
    public var shard: Int
    public var token: Int64
    public var worker: String

    /// The error for a write under `claim`.
    public init(_ claim: ShardClaim) {
        jobID = claim.job.id
        shard = claim.shard
        token = claim.lease.token
        worker = claim.lease.worker
    }

    public var description: String {
        "the lease of job \(jobID) shard \(shard) (token \(token)) is no longer held by \(worker): "
            + "it expired and another worker took the shard over, or the job ended; nothing was written"
    }
}

/// The shards a job of `total` images is cut into, `size` images each (the last one may be shorter).
public func shardRanges(total: Int, size: Int) -> [Range<Int>] {
    let size = max(1, size)
    return stride(from: 0, to: max(0, total), by: size).map { $0 ..< min(total, $0 + size) }
}
