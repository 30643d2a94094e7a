/// The record the daemon and `diffusionctl` keep, as operations: claims and transitions of jobs,
/// their images, model loads, metrics, the environment and the daemon's heartbeat, and the
/// queries over them. `ProvenanceStore` implements it on SQLite and `PostgresJobStore`
/// (ProvenancePostgres) on a PostgreSQL database several daemons share; the runner, the services
/// and the reports see only this protocol. Every method is synchronous and safe to call from any thread; a
/// write either happens entirely or throws.
public protocol JobStore: Sendable {
    // Jobs (ProvenanceStore+Jobs.swift)
    @discardableResult func insertJob(_ job: NewJob) throws -> JobRow
    func job(id: Int64) throws -> JobRow?
    func job(spoolName: String) throws -> JobRow?
    func jobContent(id: Int64) throws -> [UInt8]?
    func jobs(states: [JobState]?, limit: Int) throws -> [JobRow]
    func queue(limit: Int?) throws -> [JobRow]
    func queueLength() throws -> Int
    func claimNext(maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome?
    func claim(jobID: Int64, maxAttempts: Int, environmentID: Int64?) throws -> ClaimOutcome
    func transition(jobID: Int64, to: JobState, reason: String?, error: String?) throws
    func requeue(jobID: Int64, reason: String, refundAttempt: Bool) throws
    func retry(jobID: Int64, reason: String) throws -> JobRow
    func recoverInterruptedJobs(maxAttempts: Int) throws -> (requeued: [Int64], poisoned: [Int64])
    func setOutput(jobID: Int64, outputDir: String, totalImages: Int) throws
    func requestCancel(jobID: Int64) throws -> CancelOutcome
    func isCancelRequested(jobID: Int64) throws -> Bool
    func transitions(jobID: Int64) throws -> [TransitionRow]

    // Images (ProvenanceStore+Images.swift)
    func recordImage(_ image: ImageRow) throws
    func images(jobID: Int64) throws -> [ImageRow]
    func image(jobID: Int64, index: Int) throws -> ImageRow?
    func recordedIndices(jobID: Int64) throws -> Set<Int>
    func imageCount(jobID: Int64) throws -> Int
    func unrecordedIndices(jobID: Int64, total: Int) throws -> [Int]
    func deleteImages(jobID: Int64, indices: [Int]) throws

    // Models, metrics, environment (ProvenanceStore+Models.swift)
    func recordModelLoad(_ load: ModelLoadRow) throws
    func recordJobModel(_ row: JobModelRow) throws
    func jobModels(jobID: Int64) throws -> [JobModelRow]
    func modelLoads(limit: Int) throws -> [ModelLoadRow]
    func replaceMetrics(jobID: Int64, with metrics: [MetricRow]) throws
    func metrics(jobID: Int64) throws -> [MetricRow]
    @discardableResult func recordEnvironment(_ env: EnvironmentRow) throws -> Int64
    func environment(id: Int64) throws -> EnvironmentRow?

    // Heartbeat (ProvenanceStore+Heartbeat.swift)
    func writeHeartbeat(_ hb: HeartbeatRow) throws
    func heartbeat() throws -> HeartbeatRow?
    /// Writes (or replaces) the heartbeat row of `row.worker`.
    func writeWorker(_ row: WorkerRow) throws
    /// Every worker's heartbeat row, by name.
    func workers() throws -> [WorkerRow]

    // Shards and leases (ProvenanceStore+Shards.swift; docs/scale-out.md)
    /// Leases the next shard in queue order (priority, then arrival): a pending shard, or one whose
    /// lease expired, of an active job, else the first shard of the next pending job (which becomes
    /// active). Nil when there is no work.
    func claimNextShard(_ request: ShardRequest) throws -> ShardClaimOutcome?
    /// Extends the lease of `claim` by `seconds` from now; throws `LeaseLost` when it is no longer held.
    func renewLease(_ claim: ShardClaim, seconds: Double) throws -> ShardLease
    /// Records an image of the claim's range under its lease; throws `LeaseLost` (and records
    /// nothing) when the token is no longer the shard's. Recording the same row again is a no-op.
    func recordImage(_ image: ImageRow, under claim: ShardClaim) throws
    /// Deletes image rows of the claim's range (files found missing) under its lease.
    func deleteImages(indices: [Int], under claim: ShardClaim) throws
    /// Ends a shard whose images are all recorded: done, or `.lastShard` (the caller finishes the job).
    func finishShard(_ claim: ShardClaim) throws -> ShardEnd
    /// The job of the last shard is done: its shard and the job end, in one transaction.
    func completeJob(_ claim: ShardClaim) throws
    /// Gives a shard back (a graceful stop): pending again; with `refundAttempt` its attempt does not count.
    func releaseShard(_ claim: ShardClaim, reason: String, refundAttempt: Bool) throws
    /// At start: the shards `worker` held when it died go back to pending (attempt counted), or fail
    /// their job as a poison job; returns the jobs failed.
    func releaseLeases(ofWorker worker: String, maxAttempts: Int) throws -> [Int64]
    /// A job's shards, in order.
    func shards(jobID: Int64) throws -> [ShardRow]
    /// A job's claims, oldest first: which worker held which token of which shard.
    func leases(jobID: Int64) throws -> [LeaseRow]

    /// True when `error` (thrown by this store) means the database cannot be reached now (a
    /// dropped connection, a restarting server): the call may succeed when tried again.
    func isUnavailable(_ error: any Error) -> Bool

    /// True when `error` (thrown by this store) means the database's disk is full.
    func isOutOfSpace(_ error: any Error) -> Bool

    /// Calls `wake` whenever another process makes work here (a job inserted, a shard given back),
    /// until the task is cancelled; returns at once for a store that no other host writes (SQLite:
    /// its host's spool wakes the runner).
    func watchForWork(_ wake: @escaping @Sendable () -> Void) async throws
}

extension JobStore {
    public func watchForWork(_ wake: @escaping @Sendable () -> Void) async throws {}

    /// A transition without an error text.
    public func transition(jobID: Int64, to: JobState, reason: String? = nil) throws {
        try transition(jobID: jobID, to: to, reason: reason, error: nil)
    }
}
