import Foundation
import ImageCodecs
import Logging
import Provenance

/// How one run of a job ended.
public enum JobOutcome: String, Sendable, Equatable {
    case done, failed, canceled
    /// Stopped for a daemon shutdown; the job is pending again and resumes later.
    case interrupted
}

/// Runs jobs from the queue: for each batch of image indices not yet
/// recorded, generate, write each image atomically, then record its row.
///
/// The queue loop and a job's preparation live here; the batches of one job in
/// JobRunner+Batches.swift, the writing of one image in `ImageWriter`, the end of a
/// job (contact sheet, metrics, transitions) in `JobFinisher`. The runner sees the
/// database only through `JobStore`.
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
    /// Encodes, writes and records images; reconciles output folders.
    let writer: ImageWriter
    /// Contact sheet, metrics and the job's final transition.
    let finisher: JobFinisher
    /// How long a job waits before retrying a write that failed for lack of space.
    public let spaceRetryInterval: Duration

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
        finisher = JobFinisher(store: store, spool: spool, logger: logger, activity: activity)
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
            threads: cfg.threads, details: env.details.merging(["precision": env.precision,
                                                                "os": ProcessInfo.processInfo.operatingSystemVersionString]) { a, _ in a }))
        environmentID.set(id)
        return id
    }

    /// Runs queued jobs until the queue is empty or a stop is requested; returns how many ran.
    @discardableResult
    public func runAvailableJobs() async -> Int {
        var ran = 0
        while !isStopping {
            let maxAttempts = config.current.limits.attempts
            let outcome: ClaimOutcome?
            do {
                outcome = try store.claimNext(maxAttempts: maxAttempts, environmentID: environmentID.current)
            } catch {
                logger.error("cannot claim the next job", metadata: ["error": "\(error)"])
                return ran
            }
            guard let outcome else { return ran }
            switch outcome {
            case let .claimed(job):
                _ = await run(job: job)
                ran += 1
            case let .poisoned(job):
                logger.error("poison job failed", metadata: ["job": "\(job.id)", "attempts": "\(job.attempts)"])
                _ = try? spool.fail(spoolName: job.spoolName, error: job.error ?? "poison job")
            case let .canceled(job):
                _ = try? spool.fail(spoolName: job.spoolName, error: "canceled by user before it started")
            case .notPending:
                continue
            }
        }
        return ran
    }

    /// The output folder of a job.
    public func outputDirectory(job: JobRow, spec: JobSpec) -> String {
        config.current.output + "/\(job.id)-\(spec.name)"
    }

    /// The file name of image `index`.
    public static func imageFileName(spec: JobSpec, index: Int) -> String {
        ImageWriter.fileName(spec: spec, index: index)
    }

    /// Makes the output folder agree with the image rows after a crash (see `ImageWriter.reconcile`).
    public func reconcileOutputs(jobID: Int64, spec: JobSpec, directory: String) throws -> (removedFiles: [String], removedRows: [Int]) {
        try writer.reconcile(jobID: jobID, spec: spec, directory: directory)
    }

    /// Runs one claimed (active) job to its end, a cancel, or a stop.
    public func run(job: JobRow) async -> JobOutcome {
        guard let text = job.spec, let spec = try? JobSpec.fromJSON(text) else {
            return finisher.finish(job: job, outcome: .failed, error: "stored job spec is unreadable")
        }
        let dir = outputDirectory(job: job, spec: spec)
        let started = Date().timeIntervalSince1970
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try store.setOutput(jobID: job.id, outputDir: dir, totalImages: spec.totalImages)
            _ = try reconcileOutputs(jobID: job.id, spec: spec, directory: dir)
        } catch {
            return finisher.finish(job: job, outcome: .failed, error: "cannot prepare output folder \(dir): \(error)")
        }
        let missing: [Int]
        do {
            missing = try store.unrecordedIndices(jobID: job.id, total: spec.totalImages)
        } catch {
            return finisher.finish(job: job, outcome: .failed, error: "cannot read recorded images: \(error)")
        }
        activity.withLock {
            $0.startRun(jobID: job.id, status: "running job \(job.id) (\(spec.name))",
                        done: spec.totalImages - missing.count, total: spec.totalImages, at: started)
        }
        defer {
            activity.withLock {
                $0.status = "idle"
                $0.activeJobID = nil
                $0.imagesDone = 0
                $0.imagesTotal = 0
                $0.imagesThisRun = 0
            }
        }
        logger.info("job started", metadata: ["job": "\(job.id)", "name": "\(spec.name)", "attempt": "\(job.attempts)",
                                              "images": "\(spec.totalImages)", "remaining": "\(missing.count)"])

        let models: JobModels
        do {
            for name in [spec.model] + (spec.sampler.classifier.map { [$0] } ?? []) {
                if let loaded = try await generator.preload(model: name) {
                    try? store.recordModelLoad(ModelLoadRow(name: loaded.name, contentHash: loaded.contentHash,
                                                            loadSeconds: loaded.loadSeconds, bytes: loaded.bytes))
                    logger.info("model loaded", metadata: ["model": "\(name)", "seconds": "\(loaded.loadSeconds)"])
                }
            }
            var classifier: GenerationRecord.ModelRef?
            if let name = spec.sampler.classifier, spec.mode == .classifierGuided {
                classifier = .init(name: name, hash: try await generator.modelHash(name))
            }
            models = JobModels(unet: .init(name: spec.model, hash: try await generator.modelHash(spec.model)), classifier: classifier)
            try store.recordJobModel(JobModelRow(jobID: job.id, role: .unet, name: models.unet.name, sha256: models.unet.hash))
            if let classifier {
                try store.recordJobModel(JobModelRow(jobID: job.id, role: .classifier, name: classifier.name, sha256: classifier.hash))
            }
        } catch {
            return finisher.finish(job: job, outcome: .failed, error: "cannot load model \(spec.model): \(error)")
        }
        // Then again for any image whose file went missing meanwhile (its folder removed mid-job):
        // the folder must agree with the rows before the job is done.
        var left = missing
        for pass in 1 ... 3 where !left.isEmpty {
            if pass > 1 {
                logger.notice("images lost from the output folder are made again", metadata: [
                    "job": "\(job.id)", "images": "\(left.count)"])
            }
            if let ended = await runBatches(job: job, spec: spec, missing: left, models: models, directory: dir) {
                return ended
            }
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                _ = try reconcileOutputs(jobID: job.id, spec: spec, directory: dir)
                left = try store.unrecordedIndices(jobID: job.id, total: spec.totalImages)
            } catch {
                return finisher.finish(job: job, outcome: .failed, error: "cannot check output folder \(dir): \(error)")
            }
            activity.withLock { $0.imagesDone = spec.totalImages - left.count }
        }
        if !left.isEmpty {
            return finisher.finish(job: job, outcome: .failed,
                                   error: "\(left.count) images kept disappearing from \(dir); retry with diffusionctl retry \(job.id)")
        }
        await finisher.finishOutputs(job: job, spec: spec, directory: dir, started: started, config: config.current)
        return finisher.finish(job: job, outcome: .done, error: nil)
    }
}
