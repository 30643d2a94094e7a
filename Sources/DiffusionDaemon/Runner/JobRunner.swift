import Foundation
import ImageCodecs
import Logging
import Provenance

/// How one run of a claim (a job's shard, or a whole job on one host) ended.
public enum JobOutcome: String, Sendable, Equatable {
    case done, failed, canceled
    /// Stopped for a daemon shutdown; the shard (on one host: the job) is pending again and resumes later.
    case interrupted
    /// The shard's images are written; other shards of the job are not done yet (other workers end the job).
    case shardDone
    /// The lease ran out or was taken over (the store refused a write, or no renewal got through in
    /// time): nothing more was written; the worker that holds the shard now resumes it.
    case leaseLost
}

/// Runs claimed work from the queue: for each batch of the claim's image indices not yet
/// recorded, generate, write each image atomically, then record its row under the claim's lease.
///
/// The queue loop and a claim's preparation live here; the batches of one claim in
/// JobRunner+Batches.swift, the writing of one image in `ImageWriter`, the end of a claim and of
/// a job (contact sheet, metrics, transitions) in `JobFinisher`. The runner sees the database
/// only through `JobStore`, and holds one claim at a time (`LeaseKeeper`, renewed by the heartbeat).
///
/// Construct one per daemon:
/// ```swift
/// let runner = JobRunner(store: store, generator: myEngine, config: config, spool: spool, logger: logger)
/// await runner.runAvailableJobs()
/// ```
public final class JobRunner: Sendable {
    public let store: any JobStore
    public let generator: any ImageGenerator
    public let spool: Spool
    let config: Locked<DaemonConfig>
    let logger: Logger
    /// What is happening now (read by the heartbeat).
    public let activity = Locked(DaemonActivity())
    let stopRequested = Locked(false)
    let environmentID = Locked<Int64?>(nil)
    let host: String
    /// The claim held now and its lease (renewed by the heartbeat service).
    public let lease = LeaseKeeper()
    /// Encodes, writes and records images; reconciles output folders.
    let writer: ImageWriter
    /// Contact sheet, metrics and the job's final transition.
    let finisher: JobFinisher
    /// How long a job waits before retrying a write that failed for lack of space.
    public let spaceRetryInterval: Duration
    /// Images sampled in a batch shared across jobs, until their claims' runs take them.
    let presampled = Locked<[PresampledKey: [GeneratedImage]]>([:])

    public init(store: any JobStore, generator: any ImageGenerator, config: DaemonConfig, spool: Spool, logger: Logger,
                spaceRetryInterval: Duration = .seconds(5)) {
        self.spaceRetryInterval = spaceRetryInterval
        self.store = store
        self.generator = generator
        self.config = Locked(config)
        self.spool = spool
        self.logger = logger
        let host = ProcessInfo.processInfo.hostName
        self.host = host
        writer = ImageWriter(store: store, generator: generator, host: host, logger: logger)
        finisher = JobFinisher(store: store, spool: spool, logger: logger, activity: activity, lease: lease)
    }

    /// Applies a reloaded config (batch size, limits and metrics settings take effect at the next batch or job).
    public func update(config: DaemonConfig) { self.config.set(config) }

    /// Asks the runner to stop at the next batch boundary (graceful shutdown).
    public func requestStop() { stopRequested.set(true) }
    public var isStopping: Bool { stopRequested.current }

    /// Records the environment row that new jobs will point to.
    @discardableResult
    public func recordEnvironment() throws -> Int64 {
        let env = generator.environment
        let cfg = config.current
        var versions = env.kernelVersions
        for (k, v) in ImageFile.libraryVersions { versions[k] = v }
        let id = try store.recordEnvironment(EnvironmentRow(
            version: DaemonVersion.string, host: host, kernel: env.kernel, kernelVersions: versions,
            threads: cfg.threads, details: env.details.merging(["precision": env.precision, "default_job_precision": cfg.precision.rawValue,
                                                                "os": ProcessInfo.processInfo.operatingSystemVersionString]) { a, _ in a }))
        environmentID.set(id)
        return id
    }

    /// What this worker asks the store for, from the config now.
    var shardRequest: ShardRequest {
        let cfg = config.current
        return ShardRequest(worker: cfg.workerName, maxAttempts: cfg.limits.attempts, environmentID: environmentID.current,
                            shardImages: cfg.shards.images, leaseSeconds: cfg.shards.leaseSeconds)
    }

    /// Runs queued work until there is none or a stop is requested; returns how many claims ran.
    /// A claim with fewer images left than a batch gathers the claims after it into a shared batch.
    @discardableResult
    public func runAvailableJobs() async -> Int {
        var ran = 0
        var next: ShardClaim? = nil  // taken while gathering a shared batch it could not join; held, waiting
        while !isStopping {
            let request = shardRequest
            let claim: ShardClaim
            if let carried = next {
                next = nil
                lease.activate(carried)
                claim = carried
            } else {
                let sent = ContinuousClock.now
                let outcome: ShardClaimOutcome?
                do {
                    outcome = try store.claimNextShard(request)
                } catch {
                    logger.error("cannot claim the next shard", metadata: ["error": "\(error)"])
                    return ran
                }
                guard let outcome else { return ran }
                guard case let .claimed(c) = outcome else {
                    handleUnclaimed(outcome)
                    continue
                }
                lease.start(c, sent: sent, leaseSeconds: request.leaseSeconds)
                claim = c
            }
            let (members, after) = gatherSharedBatch(lead: claim, request: request)
            next = after
            if members.isEmpty {
                _ = await run(claim: claim)
                lease.end()
                ran += 1
                continue
            }
            await presample(members)
            for (i, m) in members.enumerated() {
                if i > 0 { lease.activate(m.claim) }
                _ = await run(claim: m.claim)
                lease.end()
                ran += 1
            }
            dropPresampled(jobs: Set(members.map(\.claim.job.id)))
        }
        if let carried = next {
            // Stopping with a claim taken but not started: it is pending again for whoever runs next.
            lease.activate(carried)
            _ = finisher.interrupt(carried)
            lease.end()
        }
        return ran
    }

    /// What a claim attempt that gave no claim means for the spool.
    func handleUnclaimed(_ outcome: ShardClaimOutcome) {
        switch outcome {
        case let .poisoned(job):
            logger.error("poison job failed", metadata: ["job": "\(job.id)", "attempts": "\(job.attempts)"])
            _ = try? spool.fail(spoolName: job.spoolName, error: job.error ?? "poison job")
        case let .canceled(job):
            _ = try? spool.fail(spoolName: job.spoolName, error: "canceled by user before it started")
        case .claimed, .notPending:
            break
        }
    }

    /// The output folder of a job.
    public func outputDirectory(job: JobRow, spec: JobSpec) -> String {
        config.current.output + "/\(job.id)-\(spec.name)"
    }

    /// The file name of image `index`.
    public static func imageFileName(spec: JobSpec, index: Int) -> String {
        ImageWriter.fileName(spec: spec, index: index)
    }

    /// Makes the claim's part of the output folder agree with its image rows after a crash (see `ImageWriter.reconcile`).
    public func reconcileOutputs(claim: ShardClaim, spec: JobSpec, directory: String) throws -> (removedFiles: [String], removedRows: [Int]) {
        try writer.reconcile(claim: claim, spec: spec, directory: directory)
    }

    /// Runs one claim to its end, a cancel, a stop, or the loss of its lease.
    public func run(claim: ShardClaim) async -> JobOutcome {
        let job = claim.job
        guard let text = job.spec, let spec = try? JobSpec.fromJSON(text) else {
            return finisher.finish(claim, outcome: .failed, error: "stored job spec is unreadable")
        }
        let dir = outputDirectory(job: job, spec: spec)
        let started = Date().timeIntervalSince1970
        // A claim that waited in a shared batch may have lost its lease meanwhile: its folder is
        // another worker's to reconcile now.
        guard lease.isHeld else { return finisher.end(claim, error: LeaseLost(claim), failing: "") }
        let missing: [Int]
        do {
            missing = try await storeCall(claim) {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try store.setOutput(jobID: job.id, outputDir: dir, totalImages: spec.totalImages)
                _ = try reconcileOutputs(claim: claim, spec: spec, directory: dir)
                return try unrecorded(claim)
            }
        } catch {
            return finisher.end(claim, error: error, failing: "cannot prepare output folder \(dir)")
        }
        activity.withLock {
            $0.startRun(jobID: job.id, status: "running job \(job.id) (\(spec.name))" + Self.describe(claim),
                        done: claim.indices.count - missing.count, total: claim.indices.count, at: started)
        }
        defer { activity.withLock { $0.endRun() } }
        logger.info("shard started", metadata: ["job": "\(job.id)", "name": "\(spec.name)", "shard": "\(claim.shard)",
                                                "indices": "\(claim.indices.lowerBound)..<\(claim.indices.upperBound)",
                                                "token": "\(claim.lease.token)", "attempt": "\(claim.attempt)",
                                                "images": "\(spec.totalImages)", "remaining": "\(missing.count)"])
        let models: JobModels
        do {
            models = try await prepareModels(job: job, spec: spec)
        } catch {
            return finisher.end(claim, error: error, failing: "cannot load model \(spec.model)")
        }
        // Then again for any image whose file went missing meanwhile (its folder removed mid-job):
        // the folder must agree with the rows before the shard is done.
        var left = missing
        for pass in 1 ... 3 where !left.isEmpty {
            if pass > 1 {
                logger.notice("images lost from the output folder are made again", metadata: [
                    "job": "\(job.id)", "shard": "\(claim.shard)", "images": "\(left.count)"])
            }
            if let ended = await runBatches(claim: claim, spec: spec, missing: left, models: models, directory: dir) {
                return ended
            }
            do {
                left = try await storeCall(claim) {
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                    _ = try reconcileOutputs(claim: claim, spec: spec, directory: dir)
                    return try unrecorded(claim)
                }
            } catch {
                return finisher.end(claim, error: error, failing: "cannot check output folder \(dir)")
            }
            activity.withLock { $0.imagesDone = claim.indices.count - left.count }
        }
        if !left.isEmpty {
            return finisher.finish(claim, outcome: .failed,
                                   error: "\(left.count) images kept disappearing from \(dir); retry with diffusionctl retry \(job.id)")
        }
        return await endShard(claim, spec: spec, directory: dir, started: started)
    }

    /// " shard 2 [12, 18)", or nothing for a whole job (the status line of one host stays as it was).
    static func describe(_ claim: ShardClaim) -> String {
        claim.indices == 0 ..< claim.job.totalImages && claim.shard == 0 ? "" : " shard \(claim.shard) [\(claim.indices.lowerBound), \(claim.indices.upperBound))"
    }

    /// The claim's indices without a row, ascending.
    func unrecorded(_ claim: ShardClaim) throws -> [Int] {
        let done = try store.recordedIndices(jobID: claim.job.id)
        return claim.indices.filter { !done.contains($0) }
    }
}
